//! Delegated tokens an attacker might present, made from a real one. Most are signed with the
//! server's own token key (read from its data directory, as only the operator could), so that
//! each one tests the check after the signature: expiry, audience, issuer, presenter, grant.

use std::collections::HashMap;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{Value, json};

fn encode(v: &Value) -> String {
    B64.encode(v.to_string())
}

fn decode(part: &str) -> Value {
    serde_json::from_slice(&B64.decode(part).unwrap()).unwrap()
}

fn sign(header: &Value, claims: &Value, key: &SigningKey) -> String {
    let input = format!("{}.{}", encode(header), encode(claims));
    let sig = key.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

/// The crafted tokens, by variable name (`tok.expired`, …), from `broad` (a real token of the
/// broad grant) and the id of the narrow grant.
pub fn tokens(data_dir: &Path, broad: &str, narrow_grant: &str) -> HashMap<String, String> {
    let hex_key = std::fs::read_to_string(data_dir.join("token.key")).unwrap();
    let bytes: [u8; 32] = hex::decode(hex_key.trim()).unwrap().try_into().unwrap();
    let server = SigningKey::from_bytes(&bytes);
    let attacker = SigningKey::from_bytes(&[7u8; 32]);
    let mut parts = broad.split('.');
    let header = decode(parts.next().unwrap());
    let claims = decode(parts.next().unwrap());
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;

    let with = |edit: &dyn Fn(&mut Value)| {
        let mut c = claims.clone();
        edit(&mut c);
        c
    };
    let header_with = |edit: &dyn Fn(&mut Value)| {
        let mut h = header.clone();
        edit(&mut h);
        h
    };
    let mut out = HashMap::new();
    let mut add = |name: &str, token: String| {
        out.insert(format!("tok.{name}"), token);
    };
    // Algorithms Writ must never accept, whatever the signature.
    add(
        "none",
        format!(
            "{}.{}.",
            encode(&header_with(&|h| h["alg"] = json!("none"))),
            encode(&claims)
        ),
    );
    add(
        "hs256",
        format!(
            "{}.{}.{}",
            encode(&header_with(&|h| h["alg"] = json!("HS256"))),
            encode(&claims),
            B64.encode([1u8; 32])
        ),
    );
    // Another key: under the server's key id, and under its own.
    add("foreign_key", sign(&header, &claims, &attacker));
    add(
        "unknown_kid",
        sign(
            &header_with(&|h| h["kid"] = json!("attacker-key")),
            &claims,
            &attacker,
        ),
    );
    // Signed by the server's key, but wrong in one claim each.
    add(
        "expired",
        sign(
            &header,
            &with(&|c| {
                c["iat"] = json!(now - 7200);
                c["nbf"] = json!(now - 7200);
                c["exp"] = json!(now - 3600);
            }),
            &server,
        ),
    );
    add(
        "future",
        sign(
            &header,
            &with(&|c| {
                c["iat"] = json!(now + 3600);
                c["nbf"] = json!(now + 3600);
                c["exp"] = json!(now + 7200);
            }),
            &server,
        ),
    );
    add(
        "audience",
        sign(
            &header,
            &with(&|c| c["aud"] = json!("https://other.example")),
            &server,
        ),
    );
    add(
        "issuer",
        sign(
            &header,
            &with(&|c| c["iss"] = json!("https://evil.example")),
            &server,
        ),
    );
    add(
        "typ",
        sign(&header_with(&|h| h["typ"] = json!("JWT")), &claims, &server),
    );
    add(
        "crit",
        sign(
            &header_with(&|h| h["crit"] = json!(["exp"])),
            &claims,
            &server,
        ),
    );
    // The presenter (`act.sub`) and the client (`client_id`) disagree.
    add(
        "client_id",
        sign(
            &header,
            &with(&|c| c["client_id"] = json!("intruder")),
            &server,
        ),
    );
    // Another agent, or another user, claiming alice's grant to helper.
    add(
        "act_other",
        sign(
            &header,
            &with(&|c| {
                c["act"]["sub"] = json!("intruder");
                c["client_id"] = json!("intruder");
            }),
            &server,
        ),
    );
    add(
        "sub_other",
        sign(&header, &with(&|c| c["sub"] = json!("mallory")), &server),
    );
    // A grant that does not exist; a grant named with more actions than it allows; two grants.
    let grant = claims["authorization_details"][0]["grant_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let missing = format!("{}{}", &grant[..grant.len() - 4], "0000");
    add(
        "no_grant",
        sign(
            &header,
            &with(&|c| c["authorization_details"][0]["grant_id"] = json!(missing)),
            &server,
        ),
    );
    add(
        "wider",
        sign(
            &header,
            &with(&|c| {
                c["authorization_details"][0]["grant_id"] = json!(narrow_grant);
                c["authorization_details"][0]["actions"] =
                    json!(["github.create_issue", "payments.*"]);
            }),
            &server,
        ),
    );
    add(
        "two_grants",
        sign(
            &header,
            &with(&|c| {
                let d = c["authorization_details"][0].clone();
                let mut other = d.clone();
                other["grant_id"] = json!(narrow_grant);
                c["authorization_details"] = json!([d, other]);
            }),
            &server,
        ),
    );
    // The real token with its payload swapped for a more generous one, old signature kept.
    let mut swapped = broad.split('.').map(str::to_owned).collect::<Vec<_>>();
    swapped[1] = encode(&with(&|c| c["exp"] = json!(now + 10 * 365 * 86_400)));
    add("swapped", swapped.join("."));
    add("oversized", format!("{}.{}.x", "e".repeat(9000), "e"));
    out
}
