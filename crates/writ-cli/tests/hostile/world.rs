//! The world the cases run in: one `writ serve` per backend with an echoing upstream, the
//! example policy bundle plus the suite's own actions, hostile secrets in the vault, and the
//! people, agents, grants and tokens every case may use; fixtures a case needs fresh; and the
//! client that sends a case's requests.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use writ_store::Database;

use super::case::{Answer, Fixture, Request, parse_json};
use super::common::echo::EchoUpstream;
use super::common::{Api, Config, Env, SECRET, Server};
use super::secrets::{self, BASIC_USER, HOSTILE, Secret};
use super::{forge, wire};

pub type Vars = HashMap<String, String>;

/// A server of its own with small timeouts and a connection limit, for the slow clients.
pub struct SlowServer {
    server: Server,
    _env: Env,
    _upstream: EchoUpstream,
}

pub struct World {
    // Fields drop in order: the server dies before its directory is removed.
    pub server: Server,
    pub env: Env,
    pub echo: EchoUpstream,
    pub http: reqwest::Client,
    pub store: Arc<dyn Database>,
    pub vars: Vars,
    pub secrets: Vec<Secret>,
    /// The server's log (its standard error).
    pub log: PathBuf,
    next: AtomicU64,
    consoles: tokio::sync::Mutex<HashMap<String, (String, String)>>,
    slow: tokio::sync::Mutex<Option<Result<Arc<SlowServer>, String>>>,
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

impl World {
    /// Starts the server on `database_url` (SQLite in the project directory without one) and
    /// makes the people, agents, grants and tokens.
    pub async fn start(database_url: Option<String>) -> World {
        let env = Env::new(database_url.clone());
        let echo = EchoUpstream::start().await;

        // The example bundle as `writ init` writes it (github.cedar unchanged: the merge gate is
        // under test), without office hours (time of day must not decide a case), plus the
        // suite's own actions and policies.
        env.init_with_secret(|github| github);
        for file in [
            "policies/office-hours.cedar",
            "policies/tests/office-hours.yaml",
        ] {
            let _ = std::fs::remove_file(env.path(file));
        }
        let (echo_toml, echo_ops) = echo_connector(&echo.url);
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
        let extra = format!(
            "[audit]\ncheckpoint_interval_secs = 0\n\n[identity]\ntoken_ttl_secs = 3600\n\n[limits]\nactions_per_agent_per_minute = 0\nmax_wait_secs = 2\nmax_args_bytes = 4096\nmax_body_bytes = 65536\n{echo_toml}{}",
            other_connectors(&echo.url)
        );
        let policies = env.path("policies");
        env.write_config(&Config {
            upstream: &echo.url,
            policies: Some(&policies),
            timeout_ms: 2000,
            merge_timeout_ms: None,
            credential: true,
            extra: &extra,
        });
        let log = env.path("serve.log");
        let server = env.serve_logged(&["--config", "writ.toml"], &[], &log);
        let store = writ_store::open_database(database_url.as_deref(), &env.path("data"))
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        let mut secrets = vec![Secret::new("github-token", SECRET)];
        secrets.extend(HOSTILE.iter().map(|(n, s)| Secret::new(n, s)));
        let mut world = World {
            server,
            env,
            echo,
            http,
            store,
            vars: Vars::new(),
            secrets,
            log,
            next: AtomicU64::new(1000),
            consoles: Default::default(),
            slow: Default::default(),
        };
        world.people().await;
        world
    }

    fn api(&self) -> Api {
        self.server.api()
    }

    /// One API call at set-up; panics unless it gets `want`.
    async fn setup_call(&self, path: &str, key: &str, body: Value, want: u16) -> Value {
        let (status, v) = self.api().call("POST", path, key, Some(body)).await;
        assert_eq!(status, want, "set-up POST {path}: {v}");
        v
    }

    fn var(&self, name: &str) -> String {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("no variable {name}"))
            .clone()
    }

    /// Users, agents, grants, tokens, a few actions and the crafted tokens.
    async fn people(&mut self) {
        let admin = self.server.admin();
        self.vars.insert("key.admin".into(), admin.clone());
        let api = self.api();
        for (id, groups) in [
            ("alice", json!(["eng"])),
            ("bob", json!(["maintainers"])),
            ("carol", json!(["maintainers"])),
            ("dave", json!([])),
            ("erin", json!(["finance"])),
            ("mallory", json!(["eng"])),
        ] {
            let key = api
                .add_user(&admin, json!({"id": id, "groups": groups}))
                .await;
            self.vars.insert(format!("key.{id}"), key);
        }
        for (agent, owner) in [
            ("helper", "alice"),
            ("bobs-agent", "bob"),
            ("intruder", "mallory"),
        ] {
            let v = self
                .setup_call(
                    "/v1/admin/agents",
                    &self.var(&format!("key.{owner}")),
                    json!({"id": agent}),
                    201,
                )
                .await;
            self.vars.insert(
                format!("agent.{agent}"),
                v["api_key"].as_str().unwrap().to_owned(),
            );
        }
        // The grant that expires first, so that it has expired when the cases start.
        let expiring = Instant::now();
        let alice = self.var("key.alice");
        let grants: Vec<(&str, &str, Value)> = vec![
            (
                "expired",
                "alice",
                json!({"agent": "helper", "actions": ["github.*"], "expires_in": 1}),
            ),
            (
                "broad",
                "alice",
                json!({"agent": "helper", "actions": ["github.*"]}),
            ),
            (
                "narrow",
                "alice",
                json!({"agent": "helper", "actions": ["github.create_issue"]}),
            ),
            (
                "titled",
                "alice",
                json!({"agent": "helper", "actions": ["github.create_issue"],
                "constraints": [{"pointer": "/title", "rule": "glob", "pattern": "bug: *"}]}),
            ),
            (
                "scoped",
                "alice",
                json!({"agent": "helper", "actions": ["github.*"], "resources": ["acme/other"]}),
            ),
            (
                "echo",
                "alice",
                json!({"agent": "helper", "actions": ["echo.*"]}),
            ),
            (
                "pay",
                "alice",
                json!({"agent": "helper", "actions": ["payments.create_payment"],
                "constraints": [{"pointer": "/amount_cents", "rule": "at_most", "value": 500000}]}),
            ),
            (
                "pay_both",
                "alice",
                json!({"agent": "helper", "actions": ["payments.create_payment"],
                "constraints": [{"pointer": "/amount_cents", "rule": "at_least", "value": 1},
                                {"pointer": "/amount_cents", "rule": "at_most", "value": 500000}]}),
            ),
            (
                "mail",
                "alice",
                json!({"agent": "helper", "actions": ["mail.send"],
                "constraints": [{"pointer": "/to", "rule": "email_domain_in", "domains": ["example.com"]}]}),
            ),
            (
                "revoked",
                "alice",
                json!({"agent": "helper", "actions": ["github.*"]}),
            ),
            (
                "once",
                "alice",
                json!({"agent": "helper", "actions": ["github.create_issue"], "max_uses": 1}),
            ),
            (
                "mal",
                "mallory",
                json!({"agent": "intruder", "actions": ["github.*"]}),
            ),
            // An admin may lend a user's authority to any agent: alice's, to bob's agent.
            (
                "cross",
                "admin",
                json!({"user": "alice", "agent": "bobs-agent", "actions": ["github.*"]}),
            ),
        ];
        for (name, by, body) in grants {
            let key = self.var(&format!("key.{by}"));
            let v = self.setup_call("/v1/grants", &key, body, 201).await;
            self.vars.insert(
                format!("grant.{name}"),
                v["id"].as_str().unwrap().to_owned(),
            );
        }
        for (name, user, agent) in [
            ("broad", "alice", "helper"),
            ("narrow", "alice", "helper"),
            ("titled", "alice", "helper"),
            ("scoped", "alice", "helper"),
            ("echo", "alice", "helper"),
            ("pay", "alice", "helper"),
            ("pay_both", "alice", "helper"),
            ("mail", "alice", "helper"),
            ("revoked", "alice", "helper"),
            ("once", "alice", "helper"),
            ("mal", "mallory", "intruder"),
        ] {
            let token = api
                .token(
                    &self.var(&format!("key.{user}")),
                    &self.var(&format!("agent.{agent}")),
                    &self.var(&format!("grant.{name}")),
                )
                .await;
            self.vars.insert(format!("tok.{name}"), token);
        }
        // A token narrowed, at the exchange, to one action of its grant (RFC 9396
        // `authorization_details.actions`).
        let form = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            ("subject_token", alice.clone()),
            (
                "subject_token_type",
                "urn:writ:params:oauth:token-type:api-key".to_owned(),
            ),
            ("actor_token", self.var("agent.helper")),
            (
                "actor_token_type",
                "urn:writ:params:oauth:token-type:api-key".to_owned(),
            ),
            (
                "authorization_details",
                json!([{"type": "writ_grant", "grant_id": self.var("grant.broad"),
                        "actions": ["github.merge_pull_request"]}])
                .to_string(),
            ),
        ];
        let v: Value = self
            .http
            .post(format!("{}/oauth/token", self.server.url))
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        self.vars.insert(
            "tok.merge_only".into(),
            v["access_token"]
                .as_str()
                .unwrap_or_else(|| panic!("{v}"))
                .to_owned(),
        );
        let revoked = self.var("grant.revoked");
        self.setup_call(
            &format!("/v1/grants/{revoked}/revoke"),
            &alice,
            json!({}),
            200,
        )
        .await;
        // Actions that exist before any case: helper's issue, intruder's issue, and a merge of
        // helper's waiting for a maintainer.
        let issue = |title: &str| json!({"connector": "github", "operation": "create_issue", "args": {"title": title}});
        let v = self
            .setup_call(
                "/v1/actions",
                &self.var("tok.broad"),
                issue("helper's issue"),
                200,
            )
            .await;
        self.vars.insert(
            "action.helper".into(),
            v["action_id"].as_str().unwrap().to_owned(),
        );
        let v = self
            .setup_call(
                "/v1/actions",
                &self.var("tok.mal"),
                issue("intruder's issue"),
                200,
            )
            .await;
        self.vars.insert(
            "action.mal".into(),
            v["action_id"].as_str().unwrap().to_owned(),
        );
        let merge = json!({"connector": "github", "operation": "merge_pull_request",
            "args": {"pull_number": 1, "base": "main"}, "intent": "a pending fixture"});
        let v = self
            .setup_call("/v1/actions", &self.var("tok.broad"), merge, 202)
            .await;
        self.vars.insert(
            "action.pending".into(),
            v["action_id"].as_str().unwrap().to_owned(),
        );
        self.vars.insert(
            "approval.fixed".into(),
            v["approval"]["id"].as_str().unwrap().to_owned(),
        );
        // Texts too long to write in the table.
        self.vars.insert("text.5k".into(), "x".repeat(5000));
        self.vars.insert("text.64k".into(), "y".repeat(64 * 1024));
        self.vars.insert(
            "text.deep".into(),
            format!("{}{}", "[".repeat(300), "]".repeat(300)),
        );
        let forged = forge::tokens(
            &self.env.path("data"),
            &self.var("tok.broad"),
            &self.var("grant.narrow"),
        );
        self.vars.extend(forged);
        if let Some(left) = Duration::from_millis(1500).checked_sub(expiring.elapsed()) {
            tokio::time::sleep(left).await;
        }
    }

    /// A number unique within this world.
    pub fn next(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed)
    }

    pub async fn audit_size(&self) -> u64 {
        self.store.size().await.unwrap()
    }

    /// The entries from `from` on: (action id, kind or admin event, canonical text).
    pub async fn entries_since(&self, from: u64) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        let mut next = from;
        loop {
            let batch = self.store.entries(next, 500).await.unwrap();
            if batch.is_empty() {
                return out;
            }
            for e in &batch {
                let text = String::from_utf8_lossy(&e.entry).into_owned();
                let name = if e.kind == "admin" {
                    serde_json::from_str::<Value>(&text)
                        .ok()
                        .and_then(|v| v["payload"]["event"].as_str().map(str::to_owned))
                        .unwrap_or_else(|| "admin".into())
                } else {
                    e.kind.clone()
                };
                out.push((e.action_id.clone(), name, text));
                next = e.seq + 1;
            }
        }
    }

    /// The fixture's variables.
    pub async fn fixture(&self, f: Fixture, n: u64) -> Result<Vars, String> {
        let mut vars = Vars::new();
        let pending = |token: String, grant: Option<String>, pull: u64| {
            let mut body = json!({"connector": "github", "operation": "merge_pull_request",
                "args": {"pull_number": pull, "base": "main"}, "intent": "ship it"});
            if let Some(g) = grant {
                body["grant_id"] = json!(g);
            }
            (token, body)
        };
        let (token, body) = match f {
            Fixture::PendingMerge => pending(self.var("tok.broad"), None, n),
            Fixture::PendingCross => pending(
                self.var("agent.bobs-agent"),
                Some(self.var("grant.cross")),
                n,
            ),
            Fixture::PendingShort => (
                self.var("tok.echo"),
                json!({"connector": "echo", "operation": "gated", "args": {"note": format!("short {n}")}}),
            ),
            Fixture::FreshAgent => return self.fresh_agent(n).await,
            Fixture::McpHelper | Fixture::McpNarrow | Fixture::McpEcho => {
                let token = match f {
                    Fixture::McpHelper => "tok.broad",
                    Fixture::McpNarrow => "tok.narrow",
                    _ => "tok.echo",
                };
                let session = self.mcp_session(&self.var(token)).await?;
                vars.insert("mcp.session".into(), session);
                return Ok(vars);
            }
            Fixture::SlowServer => {
                let slow = self.slow_server().await?;
                vars.insert("slow.url".into(), slow.server.url.clone());
                return Ok(vars);
            }
        };
        let (status, v) = self
            .api()
            .call("POST", "/v1/actions", &token, Some(body))
            .await;
        if status != 202 {
            return Err(format!("the pending action got {status}: {v}"));
        }
        let action = v["action_id"].as_str().unwrap_or_default().to_owned();
        vars.insert("action".into(), action.clone());
        vars.insert(
            "approval".into(),
            v["approval"]["id"].as_str().unwrap_or_default().to_owned(),
        );
        vars.insert(
            "hash".into(),
            v["action_hash"].as_str().unwrap_or_default().to_owned(),
        );
        vars.insert("pull".into(), n.to_string());
        if f == Fixture::PendingShort {
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                let (_, v) = self
                    .api()
                    .call(
                        "GET",
                        &format!("/v1/actions/{action}"),
                        &self.var("key.admin"),
                        None,
                    )
                    .await;
                if v["status"] == "expired" {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!("the approval never expired: {v}"));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Ok(vars)
    }

    async fn fresh_agent(&self, n: u64) -> Result<Vars, String> {
        let api = self.api();
        let alice = self.var("key.alice");
        let id = format!("temp-{n}");
        let (s, v) = api
            .call("POST", "/v1/admin/agents", &alice, Some(json!({"id": id})))
            .await;
        if s != 201 {
            return Err(format!("registering {id}: {s} {v}"));
        }
        let key = v["api_key"].as_str().unwrap_or_default().to_owned();
        let (s, v) = api
            .call(
                "POST",
                "/v1/grants",
                &alice,
                Some(json!({"agent": id, "actions": ["github.*"]})),
            )
            .await;
        if s != 201 {
            return Err(format!("a grant for {id}: {s} {v}"));
        }
        let grant = v["id"].as_str().unwrap_or_default().to_owned();
        let token = api.token(&alice, &key, &grant).await;
        Ok(Vars::from([
            ("fresh.id".to_owned(), id),
            ("fresh.key".to_owned(), key),
            ("fresh.grant".to_owned(), grant),
            ("fresh.token".to_owned(), token),
        ]))
    }

    /// Opens an MCP session (initialize, initialized) with `token`; its id.
    async fn mcp_session(&self, token: &str) -> Result<String, String> {
        let url = format!("{}/mcp", self.server.url);
        let post = |body: Value, session: Option<String>| {
            let mut req = self
                .http
                .post(&url)
                .bearer_auth(token)
                .header("accept", "application/json, text/event-stream")
                .json(&body);
            if let Some(s) = session {
                req = req.header("mcp-session-id", s);
            }
            req.send()
        };
        let resp = post(initialize(), None).await.map_err(|e| e.to_string())?;
        let session = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| format!("initialize answered {} without a session", resp.status()))?;
        let _ = resp.text().await;
        let resp = post(
            json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
            Some(session.clone()),
        )
        .await
        .map_err(|e| e.to_string())?;
        let _ = resp.text().await;
        Ok(session)
    }

    /// Signs `user` in to the console with their API key (once); the session cookie and the
    /// session's CSRF token.
    async fn console(&self, user: &str) -> Result<(String, String), String> {
        let mut consoles = self.consoles.lock().await;
        if let Some(c) = consoles.get(user) {
            return Ok(c.clone());
        }
        let key = self
            .vars
            .get(&format!("key.{user}"))
            .ok_or_else(|| format!("no user {user}"))?;
        let base = &self.server.url;
        let page = self
            .http
            .get(format!("{base}/console/login"))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let login = cookie_value(page.headers(), "writ_login")?;
        let text = page.text().await.map_err(|e| e.to_string())?;
        let csrf = csrf_of(&text)?;
        let signed = self
            .http
            .post(format!("{base}/console/login"))
            .header("cookie", format!("writ_login={login}"))
            .form(&[("csrf", csrf.as_str()), ("api_key", key.as_str())])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let session = cookie_value(signed.headers(), "writ_session")?;
        let page = self
            .http
            .get(format!("{base}/console/approvals"))
            .header("cookie", format!("writ_session={session}"))
            .send()
            .await
            .map_err(|e| e.to_string())?
            .text()
            .await
            .map_err(|e| e.to_string())?;
        let csrf = csrf_of(&page)?;
        consoles.insert(user.to_owned(), (session.clone(), csrf.clone()));
        Ok((session, csrf))
    }

    /// The slow-client server (started on first use, on SQLite, with one-second timeouts and
    /// at most four connections).
    async fn slow_server(&self) -> Result<Arc<SlowServer>, String> {
        let mut slot = self.slow.lock().await;
        if let Some(s) = slot.as_ref() {
            return s.clone();
        }
        let upstream = EchoUpstream::start().await;
        let url = upstream.url.clone();
        let started = tokio::task::spawn_blocking(move || {
            let env = Env::new(None);
            env.write_config(&Config {
                extra: "[server]\nheader_timeout_ms = 1000\nbody_timeout_ms = 1000\nidle_timeout_ms = 1000\nmax_connections = 4\n",
                ..Config::plain(&url)
            });
            let server = env.serve();
            (server, env)
        })
        .await;
        let result = match started {
            Ok((server, env)) => Ok(Arc::new(SlowServer {
                server,
                _env: env,
                _upstream: upstream,
            })),
            Err(e) => Err(format!(
                "the server with [server] header_timeout_ms, body_timeout_ms, idle_timeout_ms and max_connections did not start: {e}"
            )),
        };
        *slot = Some(result.clone());
        result
    }

    /// `${name}` replaced from `vars`; an unknown name is an error.
    pub fn expand(text: &str, vars: &Vars) -> Result<String, String> {
        let mut out = String::with_capacity(text.len());
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("unclosed ${{ in {text:?}"))?;
            let name = &after[..end];
            out.push_str(
                vars.get(name)
                    .ok_or_else(|| format!("no variable {name:?}"))?,
            );
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }

    /// Adds the console variables (`console.USER.cookie`, `console.USER.csrf`) that `texts`
    /// name, signing those users in.
    async fn console_vars(&self, texts: &[&str], vars: &mut Vars) -> Result<(), String> {
        for text in texts {
            let mut rest = *text;
            while let Some(start) = rest.find("${console.") {
                let after = &rest[start + 10..];
                let user = after.split('.').next().unwrap_or_default().to_owned();
                let (cookie, csrf) = self.console(&user).await?;
                vars.insert(format!("console.{user}.cookie"), cookie);
                vars.insert(format!("console.{user}.csrf"), csrf);
                rest = after;
            }
        }
        Ok(())
    }

    /// Sends `r` (every copy of it, with `times`); the answers.
    pub async fn send(&self, r: &Request, vars: &Vars) -> Result<Vec<Answer>, String> {
        let mut vars = vars.clone();
        let json_text = r.json.as_ref().map(Value::to_string);
        let mcp_text = r.mcp.as_ref().map(Value::to_string);
        let mut texts: Vec<&str> = Vec::new();
        texts.extend(r.form.as_deref());
        texts.extend(r.raw.as_deref());
        texts.extend(json_text.as_deref());
        texts.extend(r.headers.values().map(String::as_str));
        self.console_vars(&texts, &mut vars).await?;
        let x = |t: &str| World::expand(t, &vars);

        if let Some(args) = &r.cli {
            let args = args.iter().map(|a| x(a)).collect::<Result<Vec<_>, _>>()?;
            let mut cmd = self.env.writ();
            cmd.args(&args);
            let out = tokio::task::spawn_blocking(move || cmd.output())
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| e.to_string())?;
            let status = if out.status.success() { 200 } else { 500 };
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            return Ok(vec![Answer::text(status, text)]);
        }
        if let Some(kind) = r.tcp {
            let url = vars
                .get("slow.url")
                .ok_or("a tcp case needs the slow_server fixture")?;
            return Ok(vec![wire::slow(url, kind).await]);
        }
        if let Some(bytes) = &r.wire {
            return Ok(vec![
                wire::raw(&self.server.url, x(bytes)?.as_bytes()).await,
            ]);
        }

        let (method, path) = match (&r.req, &r.mcp) {
            (Some(req), _) => {
                let (m, p) = req
                    .split_once(' ')
                    .ok_or_else(|| format!("req {req:?}: METHOD /path"))?;
                (m.to_owned(), x(p)?)
            }
            (None, Some(_)) => ("POST".to_owned(), "/mcp".to_owned()),
            (None, None) => return Err("nothing to send".into()),
        };
        let method = reqwest::Method::from_bytes(method.as_bytes()).map_err(|e| e.to_string())?;
        let mut headers: Vec<(String, String)> = Vec::new();
        let mut body: Option<Vec<u8>> = None;
        let mut content_type: Option<String> = None;
        if let Some(auth) = &r.auth {
            let auth = x(auth)?;
            let value = match auth.strip_prefix("raw:") {
                Some(raw) => raw.to_owned(),
                None => format!("Bearer {auth}"),
            };
            headers.push(("authorization".into(), value));
        }
        if let Some(user) = &r.cookie {
            let (cookie, _) = self.console(user).await?;
            headers.push(("cookie".into(), format!("writ_session={cookie}")));
        }
        if let Some(m) = &mcp_text {
            let mut call: Value = serde_json::from_str(&x(m)?).map_err(|e| e.to_string())?;
            let name = call["method"].as_str().unwrap_or_default().to_owned();
            if name == "initialize" && call.get("params").is_none() {
                call = initialize();
            } else {
                call["jsonrpc"] = json!("2.0");
                if !name.starts_with("notifications/") {
                    call["id"] = json!(7);
                }
            }
            headers.push((
                "accept".into(),
                "application/json, text/event-stream".into(),
            ));
            if method != reqwest::Method::GET && method != reqwest::Method::DELETE {
                body = Some(call.to_string().into_bytes());
                content_type = Some("application/json".into());
            }
        }
        if let Some(s) = &r.session {
            headers.push(("mcp-session-id".into(), x(s)?));
        }
        if let Some(j) = &json_text {
            body = Some(x(j)?.into_bytes());
            content_type = Some("application/json".into());
        }
        if let Some(f) = &r.form {
            body = Some(x(f)?.into_bytes());
            content_type = Some("application/x-www-form-urlencoded".into());
        }
        if let Some(t) = &r.raw {
            let t = x(t)?;
            body = Some(if r.utf16 {
                t.encode_utf16().flat_map(u16::to_le_bytes).collect()
            } else {
                t.into_bytes()
            });
        }
        if let Some(n) = r.pad {
            let mut b = String::from("{\"connector\": \"github\", \"pad\": \"");
            b.push_str(&"p".repeat(n.saturating_sub(b.len() + 2)));
            b.push_str("\"}");
            body = Some(b.into_bytes());
            content_type = Some("application/json".into());
        }
        match r.content_type.as_deref() {
            Some("none") => content_type = None,
            Some(ct) => content_type = Some(ct.to_owned()),
            None => {}
        }
        if let Some(ct) = content_type {
            headers.push(("content-type".into(), ct));
        }
        for (k, v) in &r.headers {
            headers.push((k.to_lowercase(), x(v)?));
        }
        let url = format!("{}{path}", self.server.url);
        let copies = r.times.unwrap_or(1);
        let one = || {
            let mut req = self.http.request(method.clone(), &url);
            for (k, v) in &headers {
                req = req.header(k.as_str(), v.as_str());
            }
            if let Some(b) = &body {
                req = req.body(b.clone());
            }
            read(req, r.stream)
        };
        let answers = futures::future::join_all((0..copies).map(|_| one())).await;
        answers.into_iter().collect()
    }

    /// Leaks of any vault secret in `text` (and its JSON), in words.
    pub fn leaks(&self, what: &str, text: &str, json: Option<&Value>) -> Vec<String> {
        secrets::leaks(&self.secrets, what, text, json)
    }
}

/// The JSON-RPC `initialize` request.
fn initialize() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {},
        "clientInfo": {"name": "hostile", "version": "1"}}})
}

/// Sends one request and reads its answer (only status and headers for a stream).
async fn read(req: reqwest::RequestBuilder, stream: bool) -> Result<Answer, String> {
    let resp = match req.send().await {
        Ok(r) => r,
        // A request the client cannot even send (a header with a newline) is an answer too.
        Err(e) if e.is_builder() => return Ok(Answer::text(0, format!("not sent: {e}"))),
        Err(e) => return Err(format!("the request failed: {e}")),
    };
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| format!("{k}: {}", String::from_utf8_lossy(v.as_bytes())))
        .collect::<Vec<_>>()
        .join("\n");
    let body = if stream {
        String::new()
    } else {
        match tokio::time::timeout(Duration::from_secs(20), resp.bytes()).await {
            Ok(Ok(b)) => String::from_utf8_lossy(&b).into_owned(),
            Ok(Err(e)) => format!("(body unreadable: {e})"),
            Err(_) => "(body not finished within 20 s)".into(),
        }
    };
    Ok(Answer {
        status,
        headers,
        json: parse_json(&body),
        body,
    })
}

fn cookie_value(headers: &reqwest::header::HeaderMap, name: &str) -> Result<String, String> {
    headers
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix(&format!("{name}=")))
        .and_then(|c| c.split(';').next())
        .map(str::to_owned)
        .ok_or_else(|| format!("no {name} cookie was set"))
}

fn csrf_of(page: &str) -> Result<String, String> {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .map(str::to_owned)
        .ok_or_else(|| "no CSRF token on the page".to_owned())
}
