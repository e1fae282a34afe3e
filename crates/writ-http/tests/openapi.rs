//! The OpenAPI document served at `/openapi.json` cannot drift from the router: every route in
//! `api::router` is documented with the same methods, nothing else is, and every `$ref` resolves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_json::Value;

const API_SOURCE: &str = include_str!("../src/api/mod.rs");
/// `api::router` merges `mcp::router`: its routes are the API's too.
const MCP_SOURCE: &str = include_str!("../src/mcp/mod.rs");
const METHODS: &[&str] = &["get", "post", "put", "patch", "delete"];

fn document() -> Value {
    serde_json::from_str(writ_http::api::OPENAPI).expect("openapi.json is valid JSON")
}

/// `(path, method)` for every `.route("PATH", get(..).post(..))` (or `get_service(..)`) in
/// `router()` of api.rs and of mcp.rs.
fn routes_in_source() -> BTreeSet<(String, String)> {
    let mut routes = BTreeSet::new();
    let start = API_SOURCE
        .find("pub fn router(")
        .expect("api.rs defines router()");
    let body = &API_SOURCE[start..];
    let body = &body[..body
        .find(".fallback(")
        .expect("router() ends with a fallback")];
    scan_routes(body, &mut routes);
    let start = MCP_SOURCE
        .find("pub fn router(")
        .expect("mcp.rs defines router()");
    let body = &MCP_SOURCE[start..];
    let body = &body[..body.find("\n}\n").expect("router() ends")];
    scan_routes(body, &mut routes);
    routes
}

fn scan_routes(body: &str, routes: &mut BTreeSet<(String, String)>) {
    for chunk in body.split(".route(").skip(1) {
        let path = chunk
            .split('"')
            .nth(1)
            .expect("a route starts with its path literal");
        let after_path = &chunk[chunk.find(',').expect("a route has a method router")..];
        let mut found = false;
        for method in METHODS {
            for call in [format!("{method}("), format!("{method}_service(")] {
                let mut rest = after_path;
                while let Some(i) = rest.find(&call) {
                    let before = rest[..i].chars().next_back();
                    if !before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                        routes.insert((path.to_owned(), (*method).to_owned()));
                        found = true;
                    }
                    rest = &rest[i + call.len()..];
                }
            }
        }
        assert!(found, "route {path} has no method this test recognizes");
    }
}

fn routes_in_document(doc: &Value) -> BTreeSet<(String, String)> {
    let paths = doc["paths"].as_object().expect("the document has paths");
    let mut routes = BTreeSet::new();
    for (path, item) in paths {
        for key in item.as_object().expect("a path item is an object").keys() {
            if METHODS.contains(&key.as_str()) {
                routes.insert((path.clone(), key.clone()));
            }
        }
    }
    routes
}

#[test]
fn is_openapi_3_1() {
    let doc = document();
    let version = doc["openapi"].as_str().expect("an openapi version");
    assert!(
        version.starts_with("3.1"),
        "openapi is {version}, want 3.1.x"
    );
    assert_eq!(doc["info"]["title"], "Writ");
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
}

#[test]
fn the_scan_sees_the_router() {
    let routes = routes_in_source();
    // Guards the scan itself: a route with two methods, and one spread over several lines.
    assert!(routes.contains(&("/v1/actions".into(), "post".into())));
    assert!(routes.contains(&("/v1/actions".into(), "get".into())));
    assert!(routes.contains(&("/v1/audit/checkpoint".into(), "get".into())));
    assert!(routes.contains(&("/v1/audit/checkpoint".into(), "post".into())));
    assert!(routes.contains(&("/mcp".into(), "delete".into())));
    assert!(
        routes.len() >= 20,
        "only {} routes found in api.rs",
        routes.len()
    );
}

#[test]
fn every_route_is_documented_and_nothing_else() {
    let in_code = routes_in_source();
    let in_doc = routes_in_document(&document());
    let undocumented: Vec<_> = in_code.difference(&in_doc).collect();
    let not_served: Vec<_> = in_doc.difference(&in_code).collect();
    assert!(
        undocumented.is_empty(),
        "routes in api::router missing from openapi.json: {undocumented:?}"
    );
    assert!(
        not_served.is_empty(),
        "operations in openapi.json that api::router does not serve: {not_served:?}"
    );
}

#[test]
fn path_parameters_are_declared() {
    let doc = document();
    for (path, item) in doc["paths"].as_object().unwrap() {
        let names: Vec<&str> = path
            .split('{')
            .skip(1)
            .filter_map(|s| s.split('}').next())
            .collect();
        for (method, op) in item.as_object().unwrap() {
            let declared: Vec<&str> = op["parameters"]
                .as_array()
                .map(|ps| {
                    ps.iter()
                        .filter(|p| p["in"] == "path")
                        .filter_map(|p| p["name"].as_str())
                        .collect()
                })
                .unwrap_or_default();
            for name in &names {
                assert!(
                    declared.contains(name),
                    "{method} {path} does not declare path parameter {name}"
                );
            }
        }
    }
}

#[test]
fn public_endpoints_need_no_credential() {
    let doc = document();
    let public = [
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/.well-known/jwks.json", "get"),
        ("/.well-known/oauth-authorization-server", "get"),
        ("/.well-known/oauth-protected-resource", "get"),
        ("/v1/audit/checkpoint", "get"),
        ("/oauth/token", "post"),
    ];
    for (path, method) in public {
        assert_eq!(
            doc["paths"][path][method]["security"],
            serde_json::json!([]),
            "{method} {path} should have `security: []`"
        );
    }
}

#[test]
fn every_ref_resolves() {
    fn walk(v: &Value, doc: &Value, refs: &mut usize) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref") {
                    let r = r.as_str().expect("a $ref is a string");
                    let pointer = r
                        .strip_prefix('#')
                        .unwrap_or_else(|| panic!("{r} is not a local reference"));
                    assert!(
                        pointer.starts_with("/components/"),
                        "{r} is not a component"
                    );
                    assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
                    *refs += 1;
                }
                map.values().for_each(|x| walk(x, doc, refs));
            }
            Value::Array(items) => items.iter().for_each(|x| walk(x, doc, refs)),
            _ => {}
        }
    }
    let doc = document();
    let mut refs = 0;
    walk(&doc, &doc, &mut refs);
    assert!(refs > 0, "the document has no $ref at all");
}
