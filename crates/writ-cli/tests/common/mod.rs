//! The harness shared by the tests that run the real `writ serve` binary: a GitHub-like upstream
//! on loopback, the `writ.toml` that connects to it, a project directory with its `writ`
//! commands, the server process and a client for its JSON API.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod echo;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use axum::extract::{Path as PathParam, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{post, put};
use serde_json::{Value, json};

/// The credential stored in the vault; it must never appear in an answer or in the log.
pub const SECRET: &str = "ghp_test_secret_0123456789";

/// One call the upstream received.
#[derive(Clone, Debug)]
pub struct Call {
    /// `issues` or `merge/N`.
    pub path: String,
    /// The Authorization header, if any.
    pub authorization: Option<String>,
    pub body: Value,
}

/// A GitHub-like upstream on loopback that records every call. It echoes the Authorization
/// header back, as a careless API might, so that tests can check the agent never sees it.
pub struct Upstream {
    pub url: String,
    seen: Arc<Mutex<Vec<Call>>>,
}

#[derive(Clone)]
struct UpstreamState {
    seen: Arc<Mutex<Vec<Call>>>,
    slow_pull: Option<u64>,
}

impl UpstreamState {
    fn record(&self, path: String, headers: &HeaderMap, body: &Value) -> Option<String> {
        let authorization = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        self.seen.lock().unwrap().push(Call {
            path,
            authorization: authorization.clone(),
            body: body.clone(),
        });
        authorization
    }
}

impl Upstream {
    /// Starts the upstream on the current Tokio runtime. A merge of pull request `slow_pull`
    /// is recorded, then answered only after a minute, so that a test can kill the server
    /// while it waits.
    pub async fn start(slow_pull: Option<u64>) -> Upstream {
        let state = UpstreamState {
            seen: Arc::default(),
            slow_pull,
        };
        let app = axum::Router::new()
            .route(
                "/repos/acme/web/issues",
                post(
                    |State(s): State<UpstreamState>,
                     headers: HeaderMap,
                     body: axum::Json<Value>| async move {
                        let echoed = s.record("issues".to_owned(), &headers, &body);
                        (
                            StatusCode::CREATED,
                            axum::Json(json!({
                                "number": 42,
                                "title": body["title"],
                                "echo": echoed.unwrap_or_default()
                            })),
                        )
                    },
                ),
            )
            .route(
                "/repos/acme/web/pulls/{n}/merge",
                put(
                    |State(s): State<UpstreamState>,
                     PathParam(n): PathParam<u64>,
                     headers: HeaderMap,
                     body: axum::Json<Value>| async move {
                        s.record(format!("merge/{n}"), &headers, &body);
                        if s.slow_pull == Some(n) {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                        }
                        axum::Json(json!({"merged": true, "pull_number": n}))
                    },
                ),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Upstream {
            url: format!("http://{addr}"),
            seen: state.seen,
        }
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        self.seen.lock().unwrap().clone()
    }

    /// The paths of every call so far, in order.
    pub fn paths(&self) -> Vec<String> {
        self.calls().into_iter().map(|c| c.path).collect()
    }

    /// How many calls had a path starting with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path.starts_with(prefix))
            .count()
    }
}

/// A `writ.toml` with a `github` connector for the upstream: `create_issue` and
/// `merge_pull_request` on the repository acme/web.
pub struct Config<'a> {
    pub upstream: &'a str,
    /// `[policy] dir`; without it the server uses its default.
    pub policies: Option<&'a Path>,
    /// The connector's timeout.
    pub timeout_ms: u64,
    /// A timeout of `merge_pull_request` alone.
    pub merge_timeout_ms: Option<u64>,
    /// Whether the operations inject the vault's `github-token` as a bearer token.
    pub credential: bool,
    /// More TOML, such as `[audit]` or `[limits]` tables.
    pub extra: &'a str,
}

impl<'a> Config<'a> {
    /// The connector for `upstream` with the server's default policies, a 2 s timeout and no
    /// credential.
    pub fn plain(upstream: &'a str) -> Config<'a> {
        Config {
            upstream,
            policies: None,
            timeout_ms: 2000,
            merge_timeout_ms: None,
            credential: false,
            extra: "",
        }
    }

    pub fn render(&self) -> String {
        let mut toml = String::new();
        if let Some(dir) = self.policies {
            toml.push_str(&format!("[policy]\ndir = \"{}\"\n\n", dir.display()));
        }
        toml.push_str(self.extra);
        let resource = r#"resource = { type = "Repo", id = "acme/web", attributes = { owner = "acme", name = "web", visibility = "private" } }"#;
        let credential = if self.credential {
            "credential = { name = \"github-token\", inject = \"bearer\" }\n"
        } else {
            ""
        };
        let merge_timeout = self
            .merge_timeout_ms
            .map(|ms| format!("timeout_ms = {ms}\n"))
            .unwrap_or_default();
        toml.push_str(&format!(
            r#"
[connectors.github]
kind = "http"
base_url = "{upstream}"
timeout_ms = {timeout_ms}

[connectors.github.operations.create_issue]
method = "POST"
path = "/repos/acme/web/issues"
args_schema = {{ type = "object", required = ["title"], properties = {{ title = {{ type = "string" }}, body = {{ type = "string" }} }}, additionalProperties = false }}
{resource}
{credential}
[connectors.github.operations.merge_pull_request]
method = "PUT"
path = "/repos/acme/web/pulls/{{pull_number}}/merge"
{merge_timeout}args_schema = {{ type = "object", required = ["pull_number", "base"], properties = {{ pull_number = {{ type = "integer" }}, base = {{ type = "string" }}, merge_method = {{ type = "string" }} }}, additionalProperties = false }}
{resource}
{credential}"#,
            upstream = self.upstream,
            timeout_ms = self.timeout_ms,
        ));
        toml
    }
}

/// `writ` with none of the caller's Writ settings and no standard input.
pub fn writ_command() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_writ"));
    for var in [
        "WRIT_DATABASE_URL",
        "WRIT_MASTER_KEY",
        "WRIT_CONFIG",
        "WRIT_TOKEN",
        "WRIT_URL",
    ] {
        c.env_remove(var);
    }
    c.stdin(Stdio::null());
    c
}

/// A project directory (removed on drop) with its data, on SQLite or on PostgreSQL.
pub struct Env {
    tmp: tempfile::TempDir,
    database_url: Option<String>,
}

impl Env {
    pub fn new(database_url: Option<String>) -> Env {
        Env {
            tmp: tempfile::tempdir().unwrap(),
            database_url,
        }
    }

    pub fn dir(&self) -> &Path {
        self.tmp.path()
    }

    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir().join(relative)
    }

    /// `writ` in the project directory, with its data directory and database.
    pub fn writ(&self) -> Command {
        let mut c = writ_command();
        c.current_dir(self.dir())
            .env("WRIT_DATA_DIR", self.path("data"));
        if let Some(url) = &self.database_url {
            c.env("WRIT_DATABASE_URL", url);
        }
        c
    }

    /// Runs `writ ARGS` and returns its standard output; fails the test if it fails.
    pub fn run(&self, args: &[&str]) -> String {
        let out = self.writ().args(args).output().unwrap();
        assert!(
            out.status.success(),
            "writ {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `writ init` with the example bundle, its github.cedar rewritten by `edit_policies`, and
    /// [`SECRET`] in the vault as `github-token` (same data directory, same key as the server).
    pub fn init_with_secret(&self, edit_policies: impl FnOnce(String) -> String) {
        self.run(&["init", "."]);
        let github = self.path("policies/github.cedar");
        let text = std::fs::read_to_string(&github).unwrap();
        std::fs::write(&github, edit_policies(text)).unwrap();
        std::fs::write(self.path("secret.txt"), SECRET).unwrap();
        self.run(&["vault", "put", "github-token", "--from-file", "secret.txt"]);
    }

    pub fn write_config(&self, config: &Config<'_>) {
        std::fs::write(self.path("writ.toml"), config.render()).unwrap();
    }

    /// Starts `writ serve` on a random port with the project's writ.toml, and waits for its
    /// banner.
    pub fn serve(&self) -> Server {
        self.serve_with(&["--config", "writ.toml"])
    }

    /// Starts `writ serve --listen 127.0.0.1:0 ARGS` (no configuration file unless ARGS names
    /// one), and waits for its banner.
    pub fn serve_with(&self, args: &[&str]) -> Server {
        self.serve_with_env(args, &[])
    }

    /// [`Env::serve_with`], with more environment variables for the server process.
    pub fn serve_with_env(&self, args: &[&str], vars: &[(&str, &str)]) -> Server {
        self.serve_at("127.0.0.1:0", args, vars)
    }

    /// [`Env::serve_with_env`] on a given address (for a test that must know the URL before
    /// the server starts).
    pub fn serve_at(&self, listen: &str, args: &[&str], vars: &[(&str, &str)]) -> Server {
        self.serve_to(listen, args, vars, Stdio::inherit())
    }

    /// [`Env::serve_with_env`] with the server's log (its standard error, `WRIT_LOG=info`)
    /// written to `log`, so that a test can read what the server logged.
    pub fn serve_logged(&self, args: &[&str], vars: &[(&str, &str)], log: &Path) -> Server {
        let file = std::fs::File::create(log).unwrap();
        let mut vars = vars.to_vec();
        vars.push(("WRIT_LOG", "info"));
        self.serve_to("127.0.0.1:0", args, &vars, Stdio::from(file))
    }

    fn serve_to(
        &self,
        listen: &str,
        args: &[&str],
        vars: &[(&str, &str)],
        stderr: Stdio,
    ) -> Server {
        let mut child = self
            .writ()
            .args(["serve", "--listen", listen])
            .args(args)
            .env("WRIT_LOG", "warn")
            .envs(vars.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        // Built before reading, so that a server that never prints is killed by the guard.
        let mut server = Server {
            child,
            url: String::new(),
            admin_key: None,
            banner: Vec::new(),
        };
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keeps draining stdout so that the server never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        // The banner ends with the health line; the admin key comes before it on first start.
        loop {
            let line = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("writ serve did not print its banner in time");
            server.banner.push(line.clone());
            if let Some(url) = line.strip_prefix("Writ is serving on ") {
                server.url = url.trim().to_owned();
            } else if let Some(key) = line.trim().strip_prefix("WRIT_TOKEN=") {
                server.admin_key = Some(key.to_owned());
            } else if line.trim_start().starts_with("health:") {
                break;
            }
        }
        assert!(!server.url.is_empty(), "the server did not print its URL");
        server
    }
}

/// A running `writ serve`, killed on drop (also when a test panics).
pub struct Server {
    child: Child,
    pub url: String,
    /// Printed only on the first start.
    pub admin_key: Option<String>,
    /// The lines of the startup banner.
    pub banner: Vec<String>,
}

impl Server {
    /// The admin key of a first start.
    pub fn admin(&self) -> String {
        self.admin_key
            .clone()
            .expect("first start prints the admin key")
    }

    pub fn api(&self) -> Api {
        Api {
            client: reqwest::Client::new(),
            url: self.url.clone(),
        }
    }
}

impl Server {
    /// Sends SIGTERM (what a service manager sends) and waits up to `within` for the server to
    /// exit; `None` if it is still running then.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + within;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the API answered: status, headers, JSON body (or the text as a JSON string).
pub struct Answer {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

/// A client of the server's API.
pub struct Api {
    pub client: reqwest::Client,
    pub url: String,
}

impl Api {
    /// One request; fails the test if the answer carries [`SECRET`].
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut req = self.client.request(method, format!("{}{path}", self.url));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains(SECRET),
            "a response carried the credential: {text}"
        );
        Answer {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
        }
    }

    /// [`Api::send`] with a token, for status and body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let a = self.send(method, path, Some(token), body).await;
        (a.status, a.body)
    }

    /// A delegated token for `grant`, exchanged from a user's key and the agent's key.
    pub async fn token(&self, user_key: &str, agent_key: &str, grant: &str) -> String {
        let form = [
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
            ),
            ("subject_token", user_key.to_owned()),
            (
                "subject_token_type",
                "urn:writ:params:oauth:token-type:api-key".to_owned(),
            ),
            ("actor_token", agent_key.to_owned()),
            (
                "actor_token_type",
                "urn:writ:params:oauth:token-type:api-key".to_owned(),
            ),
            (
                "authorization_details",
                json!([{"type": "writ_grant", "grant_id": grant}]).to_string(),
            ),
        ];
        let resp = self
            .client
            .post(format!("{}/oauth/token", self.url))
            .form(&form)
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_owned()
    }

    /// The Prometheus text of /metrics.
    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
}

/// Whether the tests that drive Writ with the official Python MCP client (`pip install mcp`)
/// can run; `modules` are the client modules they import. When they cannot, the reason is
/// printed and the test should return, except under CI (env `CI` set), where it fails.
pub fn python_mcp_available(modules: &str) -> bool {
    let why = match Command::new("python3")
        .args(["-c", &format!("import mcp, {modules}")])
        .output()
    {
        Err(e) => format!("python3 cannot be started: {e}"),
        Ok(out) if !out.status.success() => format!(
            "the Python `mcp` package is not installed (python3 -m pip install mcp): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Ok(_) => return true,
    };
    if std::env::var_os("CI").is_some() {
        panic!("under CI the MCP end-to-end tests must run: {why}");
    }
    eprintln!("skipping an MCP end-to-end test: {why}");
    false
}

/// The reference MCP server `@modelcontextprotocol/server-everything` (from npm), for the tests
/// of the MCP upstream connector: the path in `WRIT_TEST_MCP_EVERYTHING` (`.ci/run` installs it
/// and sets it). Without it the test is skipped with a reason, except under CI, where it fails.
pub fn mcp_everything() -> Option<PathBuf> {
    match std::env::var_os("WRIT_TEST_MCP_EVERYTHING") {
        Some(p) if Path::new(&p).exists() => Some(PathBuf::from(p)),
        other => {
            let why = match other {
                Some(p) => format!("WRIT_TEST_MCP_EVERYTHING={} does not exist", Path::new(&p).display()),
                None => "WRIT_TEST_MCP_EVERYTHING is not set (npm install @modelcontextprotocol/server-everything, then point it at node_modules/.bin/mcp-server-everything)".to_owned(),
            };
            if std::env::var_os("CI").is_some() {
                panic!("under CI the MCP upstream tests must run: {why}");
            }
            eprintln!("skipping an MCP upstream test: {why}");
            None
        }
    }
}

/// The project of the MCP tests: the example bundle (with [`SECRET`] in the vault), a `github`
/// connector for `upstream`, no rate limit, approval waits of at most 2 s.
pub fn mcp_env(upstream: &Upstream) -> Env {
    let env = Env::new(None);
    env.init_with_secret(|policies| policies);
    let policies = env.path("policies");
    env.write_config(&Config {
        upstream: &upstream.url,
        policies: Some(&policies),
        timeout_ms: 2000,
        merge_timeout_ms: None,
        credential: true,
        extra: "[audit]\ncheckpoint_interval_secs = 0\n\n[limits]\nactions_per_agent_per_minute = 0\nmax_wait_secs = 2\n",
    });
    env
}

/// Who acts in the MCP tests: users alice (eng) and bob (maintainers), alice's agent `bot` with
/// a broad grant (`github.*`) and a narrow one (`github.create_issue`), and a delegated token for
/// the broad grant.
pub struct Delegation {
    /// The API key of each user.
    pub keys: std::collections::HashMap<&'static str, String>,
    pub agent_key: String,
    /// The broad grant, then the narrow one.
    pub grants: Vec<String>,
    pub token: String,
}

impl Api {
    /// Creates a user (`{"id": …, "groups": …}` as `POST /v1/admin/users` takes it) with the
    /// admin key; the user's API key.
    pub async fn add_user(&self, admin: &str, user: Value) -> String {
        let (s, v) = self
            .call("POST", "/v1/admin/users", admin, Some(user))
            .await;
        assert_eq!(s, 201, "{v}");
        v["api_key"].as_str().unwrap().to_owned()
    }

    /// Creates the users, the agent, its grants and a delegated token of [`Delegation`].
    pub async fn delegation(&self, admin: &str) -> Delegation {
        let mut keys = std::collections::HashMap::new();
        for (id, groups) in [("alice", vec!["eng"]), ("bob", vec!["maintainers"])] {
            let key = self
                .add_user(admin, json!({"id": id, "groups": groups}))
                .await;
            keys.insert(id, key);
        }
        let (s, v) = self
            .call(
                "POST",
                "/v1/admin/agents",
                &keys["alice"],
                Some(json!({"id": "bot"})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        let agent_key = v["api_key"].as_str().unwrap().to_owned();
        let mut grants = Vec::new();
        for actions in [json!(["github.*"]), json!(["github.create_issue"])] {
            let (s, v) = self
                .call(
                    "POST",
                    "/v1/grants",
                    &keys["alice"],
                    Some(json!({"agent": "bot", "actions": actions, "expires_in": 3600})),
                )
                .await;
            assert_eq!(s, 201, "{v}");
            grants.push(v["id"].as_str().unwrap().to_owned());
        }
        let token = self.token(&keys["alice"], &agent_key, &grants[0]).await;
        Delegation {
            keys,
            agent_key,
            grants,
            token,
        }
    }
}

/// The text blocks of an MCP tool result, joined by newlines.
pub fn text_of(result: &Value) -> String {
    result["content"]
        .as_array()
        .map(|blocks| {
            blocks
                .iter()
                .filter_map(|b| b["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
}

/// The tool names of an MCP `tools/list` answer (`{"tools": [...]}`).
pub fn tool_names(list: &Value) -> Vec<String> {
    list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_owned())
        .collect()
}

/// A private PostgreSQL schema for one test, at `WRIT_TEST_POSTGRES_URL`.
pub struct PgSchema {
    base: String,
    schema: String,
    /// The database URL that uses the schema.
    pub url: String,
}

impl PgSchema {
    /// A fresh schema named `<prefix>_<pid>_<µs>`, or `None` (with the reason printed) when
    /// `WRIT_TEST_POSTGRES_URL` is not set; under CI (env `CI` set) that is a failure.
    pub async fn create(prefix: &str) -> Option<PgSchema> {
        let Some(base) = std::env::var("WRIT_TEST_POSTGRES_URL")
            .ok()
            .filter(|u| !u.is_empty())
        else {
            assert!(
                std::env::var("CI").is_err(),
                "CI must set WRIT_TEST_POSTGRES_URL"
            );
            eprintln!("skipping the PostgreSQL variant: WRIT_TEST_POSTGRES_URL is not set");
            return None;
        };
        let schema = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_micros()
        );
        let url = writ_store::postgres::url_with_fresh_schema(&base, &schema)
            .await
            .unwrap();
        Some(PgSchema { base, schema, url })
    }

    /// Drops the schema.
    pub async fn drop_schema(self) {
        writ_store::postgres::drop_schema(&self.base, &self.schema)
            .await
            .unwrap();
    }
}
