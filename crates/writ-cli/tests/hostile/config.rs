//! The project the hostile world runs in, on disk: the example policy bundle with the suite's own
//! actions and policies, the hostile secrets in the vault, and a `writ.toml` whose connectors
//! all lead to the echoing upstream.

use super::common::{Config, Env};
use super::secrets::{BASIC_USER, HOSTILE};

/// Writes the project into `env` for an upstream at `echo_url`.
pub fn write_project(env: &Env, echo_url: &str) {
    // The example bundle as `writ init` writes it (github.cedar unchanged: the merge gate is
    // under test), without office hours (time of day must not decide a case), plus the suite's
    // own actions and policies.
    env.init_with_secret(|github| github);
    for file in [
        "policies/office-hours.cedar",
        "policies/tests/office-hours.yaml",
    ] {
        let _ = std::fs::remove_file(env.path(file));
    }
    let (echo_toml, echo_ops) = echo_connector(echo_url);
    let schema = env.path("policies/writ.cedarschema");
    let mut text = std::fs::read_to_string(&schema).unwrap();
    text.push_str(&schema_additions(&echo_ops));
    std::fs::write(&schema, text).unwrap();
    std::fs::write(env.path("policies/hostile.cedar"), HOSTILE_POLICIES).unwrap();
    for (name, secret) in HOSTILE {
        let file = env.path(&format!("{name}.txt"));
        std::fs::write(&file, secret).unwrap();
        env.run(&["vault", "put", name, "--from-file", file.to_str().unwrap()]);
        std::fs::remove_file(file).unwrap();
    }
    // Tokens live an hour (the suite checks the setting is obeyed); no rate limit; small sizes so
    // that the size cases are cheap.
    let extra = format!(
        "[audit]\ncheckpoint_interval_secs = 0\n\n[identity]\ntoken_ttl_secs = 3600\n\n[limits]\nactions_per_agent_per_minute = 0\nmax_wait_secs = 2\nmax_args_bytes = 4096\nmax_body_bytes = 65536\n{echo_toml}{}",
        other_connectors(echo_url)
    );
    let policies = env.path("policies");
    env.write_config(&Config {
        upstream: echo_url,
        policies: Some(&policies),
        timeout_ms: 2000,
        merge_timeout_ms: None,
        credential: true,
        extra: &extra,
    });
}

/// The suite's own actions, appended to the example schema: the echo connector's operations,
/// and mail with its recipient in the arguments (where a grant's `email_domain_in` looks).
fn schema_additions(echo_ops: &[String]) -> String {
    let context = "context: { args: HostileArgs, grant: Grant, intent: String, time: Time, approval: Approval }";
    let mut s = String::from(
        "\n// The hostile suite's actions (crates/writ-cli/tests/hostile.rs).\n\
         type HostileArgs = { form?: String, name?: String, note?: String, q?: String };\n\
         type MailArgs = { to: String, subject: String };\n\
         action \"echo.read\";\naction \"mail.write\";\n\
         action \"mail.send\" in [\"mail.write\"] appliesTo {\n  principal: [Agent], resource: [Recipient],\n  \
         context: { args: MailArgs, grant: Grant, intent: String, time: Time, approval: Approval },\n};\n",
    );
    for op in echo_ops {
        s.push_str(&format!(
            "action \"echo.{op}\" in [\"echo.read\"] appliesTo {{\n  principal: [Agent], resource: [Repo],\n  {context},\n}};\n"
        ));
    }
    s
}

const HOSTILE_POLICIES: &str = r#"// The hostile suite's actions: within the grant; echo.gated waits for an approval that
// expires after a second.

@id("hostile-echo-within-grant")
@reason("the echo operations are allowed within the grant's echo.read scope")
permit (principal, action in Action::"echo.read", resource)
when { context.grant.scopes.contains("echo.read") };

@id("hostile-gate-expires-fast")
@reason("echo.gated needs a maintainer's approval, given within a second")
@approval("group:maintainers")
@expires("1s")
forbid (principal, action == Action::"echo.gated", resource)
unless { context.approval.granted };

@id("hostile-mail-within-grant")
@reason("mail is allowed within the grant's mail.write scope")
permit (principal, action in Action::"mail.write", resource)
when { context.grant.scopes.contains("mail.write") };
"#;

const REPO: &str = r#"resource = { type = "Repo", id = "acme/echo", attributes = { owner = "acme", name = "echo", visibility = "private" } }"#;

/// The echo connector: one operation per injection mode and hostile secret (`bearer_quote`,
/// `basic_nl`, …) that POSTs to `/echo/{form}`, and `item` (a path segment), `query` (a query
/// parameter), `gated` (needs approval) and `missing` (a credential the vault does not have).
fn echo_connector(url: &str) -> (String, Vec<String>) {
    let modes = [
        ("bearer", r#"inject = "bearer""#.to_owned()),
        (
            "header",
            r#"inject = "header", header = "X-Api-Key", prefix = "token ""#.to_owned(),
        ),
        (
            "basic",
            format!(r#"inject = "basic", username = "{BASIC_USER}""#),
        ),
    ];
    let form_args = r#"args_schema = { type = "object", required = ["form"], properties = { form = { type = "string" }, note = { type = "string" } }, additionalProperties = false }"#;
    let mut toml =
        format!("\n[connectors.echo]\nkind = \"http\"\nbase_url = \"{url}\"\ntimeout_ms = 2000\n");
    let mut ops = Vec::new();
    for (mode, inject) in &modes {
        for (name, _) in HOSTILE {
            let op = format!("{mode}_{}", name.trim_start_matches("s-"));
            toml.push_str(&format!(
                "\n[connectors.echo.operations.{op}]\nmethod = \"POST\"\npath = \"/echo/{{form}}\"\n{form_args}\n{REPO}\ncredential = {{ name = \"{name}\", {inject} }}\n"
            ));
            ops.push(op);
        }
    }
    toml.push_str(&format!(
        r#"
[connectors.echo.operations.item]
method = "POST"
path = "/echo/item/{{name}}"
args_schema = {{ type = "object", required = ["name"], properties = {{ name = {{ type = "string" }} }}, additionalProperties = false }}
{REPO}
credential = {{ name = "s-plain", inject = "bearer" }}

[connectors.echo.operations.query]
method = "GET"
path = "/echo/json"
query = ["q"]
args_schema = {{ type = "object", required = ["q"], properties = {{ q = {{ type = "string" }} }}, additionalProperties = false }}
{REPO}
credential = {{ name = "s-plain", inject = "bearer" }}

[connectors.echo.operations.gated]
method = "POST"
path = "/echo/json"
args_schema = {{ type = "object", properties = {{ note = {{ type = "string" }} }}, additionalProperties = false }}
{REPO}
credential = {{ name = "s-plain", inject = "bearer" }}

[connectors.echo.operations.missing]
method = "POST"
path = "/echo/json"
args_schema = {{ type = "object", properties = {{ note = {{ type = "string" }} }}, additionalProperties = false }}
{REPO}
credential = {{ name = "s-missing", inject = "bearer" }}
"#
    ));
    ops.extend(["item", "query", "gated", "missing"].map(str::to_owned));
    (toml, ops)
}

/// Payments (the example bundle's `payments.create_payment`, with no bound of its own on the
/// amount: the grant and the policy are what stand in the way) and mail.
fn other_connectors(url: &str) -> String {
    format!(
        r#"
[connectors.payments]
kind = "http"
base_url = "{url}"

[connectors.payments.operations.create_payment]
method = "POST"
path = "/payments"
args_schema = {{ type = "object", required = ["amount_cents", "currency"], properties = {{ amount_cents = {{ type = "integer" }}, currency = {{ type = "string" }}, memo = {{ type = "string" }} }}, additionalProperties = false }}
resource = {{ type = "Payee", id = "supplier-17", attributes = {{ country = "DE" }} }}
credential = {{ name = "s-plain", inject = "bearer" }}

[connectors.mail]
kind = "http"
base_url = "{url}"

# The recipient's domain attribute is fixed, so that the grant's e-mail constraint is the only
# guard under test.
[connectors.mail.operations.send]
method = "POST"
path = "/mail"
args_schema = {{ type = "object", required = ["to", "subject"], properties = {{ to = {{ type = "string" }}, subject = {{ type = "string" }} }}, additionalProperties = false }}
resource = {{ type = "Recipient", id = "{{to}}", attributes = {{ domain = "example.com" }} }}
"#
    )
}
