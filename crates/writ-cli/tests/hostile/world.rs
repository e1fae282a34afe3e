//! The world the cases run in: one `writ serve` per backend with an echoing upstream (the project
//! on disk is `config.rs`'s), the people, agents, grants and tokens every case may use, and the
//! fixtures a case needs fresh. How requests are sent is `client.rs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use writ_store::Database;

use super::case::Fixture;
use super::common::echo::EchoUpstream;
use super::common::{Api, Config, Env, SECRET, Server};
use super::forge;
use super::secrets::{self, HOSTILE, Secret};

pub type Vars = HashMap<String, String>;

/// A server of its own with small timeouts and a connection limit, for the slow clients.
pub struct SlowServer {
    pub server: Server,
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
    /// Console sessions by user: the cookie and the session's CSRF token.
    pub consoles: tokio::sync::Mutex<HashMap<String, (String, String)>>,
    slow: tokio::sync::Mutex<Option<Result<Arc<SlowServer>, String>>>,
}

impl World {
    /// Starts the server on `database_url` (SQLite in the project directory without one) and
    /// makes the people, agents, grants and tokens.
    pub async fn start(database_url: Option<String>) -> World {
        let env = Env::new(database_url.clone());
        let echo = EchoUpstream::start().await;

        super::config::write_project(&env, &echo.url);
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

    /// Leaks of any vault secret in `text` (and its JSON), in words.
    pub fn leaks(&self, what: &str, text: &str, json: Option<&Value>) -> Vec<String> {
        secrets::leaks(&self.secrets, what, text, json)
    }
}
