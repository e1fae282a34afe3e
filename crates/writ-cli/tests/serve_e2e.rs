//! End to end, on SQLite and on PostgreSQL: the real `writ serve` binary on a random port, a real
//! upstream HTTP server on loopback, users, an agent, a grant and a delegated token made through
//! the API, then allowed, denied and approved actions, quorum, self-approval, changed arguments,
//! idempotent retries, a server killed mid-execution, and `writ audit verify` afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::{post, put};
use serde_json::{Value, json};

const SECRET: &str = "ghp_test_secret_0123456789";

/// What the upstream saw.
#[derive(Default)]
struct Seen {
    calls: Vec<(String, Option<String>, Value)>,
}

type Upstream = Arc<Mutex<Seen>>;

fn record(seen: &Upstream, path: &str, headers: &HeaderMap, body: &Value) {
    let auth = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    seen.lock()
        .unwrap()
        .calls
        .push((path.to_owned(), auth, body.clone()));
}

/// A GitHub-like upstream on loopback. It echoes the Authorization header back, as a careless
/// API might, so the test can check the agent never sees it.
async fn start_upstream() -> (String, Upstream) {
    let seen: Upstream = Arc::default();
    let app = axum::Router::new()
        .route(
            "/repos/acme/web/issues",
            post(
                |State(s): State<Upstream>, headers: HeaderMap, body: axum::Json<Value>| async move {
                    record(&s, "issues", &headers, &body);
                    let echoed = headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    axum::Json(json!({"number": 42, "title": body["title"], "echo": echoed}))
                },
            ),
        )
        .route(
            "/repos/acme/web/pulls/{n}/merge",
            put(
                |State(s): State<Upstream>,
                 axum::extract::Path(n): axum::extract::Path<u64>,
                 headers: HeaderMap,
                 body: axum::Json<Value>| async move {
                    record(&s, &format!("merge/{n}"), &headers, &body);
                    if n == 999 {
                        // A slow upstream: the server is killed while it waits.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    axum::Json(json!({"merged": true, "pull_number": n}))
                },
            ),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), seen)
}

fn config(upstream: &str, policies: &Path) -> String {
    let resource = r#"resource = { type = "Repo", id = "acme/web", attributes = { owner = "acme", name = "web", visibility = "private" } }"#;
    format!(
        r#"
[policy]
dir = "{policies}"

[audit]
checkpoint_interval_secs = 0

[limits]
actions_per_agent_per_minute = 0

[connectors.github]
kind = "http"
base_url = "{upstream}"
timeout_ms = 1000

[connectors.github.operations.create_issue]
method = "POST"
path = "/repos/acme/web/issues"
args_schema = {{ type = "object", required = ["title"], properties = {{ title = {{ type = "string" }}, body = {{ type = "string" }} }}, additionalProperties = false }}
{resource}
credential = {{ name = "github-token", inject = "bearer" }}

[connectors.github.operations.merge_pull_request]
method = "PUT"
path = "/repos/acme/web/pulls/{{pull_number}}/merge"
timeout_ms = 4000
args_schema = {{ type = "object", required = ["pull_number", "base"], properties = {{ pull_number = {{ type = "integer" }}, base = {{ type = "string" }}, merge_method = {{ type = "string" }} }}, additionalProperties = false }}
{resource}
credential = {{ name = "github-token", inject = "bearer" }}
"#,
        policies = policies.display()
    )
}

/// A running `writ serve`, killed on drop.
struct Server {
    child: Child,
    url: String,
    admin_key: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Env {
    dir: PathBuf,
    database_url: Option<String>,
}

impl Env {
    fn writ(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_writ"));
        c.current_dir(&self.dir)
            .env("WRIT_DATA_DIR", self.dir.join("data"))
            .env_remove("WRIT_DATABASE_URL")
            .env_remove("WRIT_MASTER_KEY");
        if let Some(url) = &self.database_url {
            c.env("WRIT_DATABASE_URL", url);
        }
        c
    }

    fn serve(&self) -> Server {
        let mut child = self
            .writ()
            .args(["serve", "--listen", "127.0.0.1:0", "--config", "writ.toml"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let (mut url, mut admin_key) = (None, None);
        // The banner ends with the health line; the admin key comes before it on first start.
        for line in lines.by_ref().map_while(Result::ok) {
            if let Some(u) = line.strip_prefix("Writ is serving on ") {
                url = Some(u.trim().to_owned());
            }
            if let Some(k) = line.trim().strip_prefix("WRIT_TOKEN=") {
                admin_key = Some(k.to_owned());
            }
            if line.trim_start().starts_with("health:") {
                break;
            }
        }
        // Keep draining stdout so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
        Server {
            child,
            url: url.expect("the server did not print its URL"),
            admin_key,
        }
    }
}

struct Api {
    client: reqwest::Client,
    url: String,
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let url = format!("{}{path}", self.url);
        let mut req = match method {
            "GET" => self.client.get(url),
            _ => self.client.post(url),
        }
        .bearer_auth(token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        assert!(
            !text.contains(SECRET),
            "a response carried the credential: {text}"
        );
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }
}

async fn scenario(database_url: Option<String>) {
    let tmp = tempfile::tempdir().unwrap();
    let env = Env {
        dir: tmp.path().to_path_buf(),
        database_url,
    };
    let (upstream, seen) = start_upstream().await;

    // Policies: the example bundle, with merges to main needing two maintainers.
    let out = env.writ().args(["init", "."]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let github = env.dir.join("policies/github.cedar");
    let text = std::fs::read_to_string(&github).unwrap();
    std::fs::write(
        &github,
        text.replace("@expires(\"4h\")", "@quorum(\"2\")\n@expires(\"4h\")"),
    )
    .unwrap();
    std::fs::write(
        env.dir.join("writ.toml"),
        config(&upstream, &env.dir.join("policies")),
    )
    .unwrap();

    // The credential goes into the vault before the server starts (same data dir, same key).
    std::fs::write(env.dir.join("secret.txt"), SECRET).unwrap();
    let out = env
        .writ()
        .args(["vault", "put", "github-token", "--from-file", "secret.txt"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let server = env.serve();
    let admin = server
        .admin_key
        .clone()
        .expect("first start prints the admin key");
    let api = Api {
        client: reqwest::Client::new(),
        url: server.url.clone(),
    };
    let (s, ready) = api.call("GET", "/readyz", "", None).await;
    assert_eq!(s, 200, "{ready}");

    // Users, an agent, grants, a delegated token.
    let mut keys = std::collections::HashMap::new();
    for (id, groups) in [
        ("alice", vec!["eng"]),
        ("bob", vec!["maintainers"]),
        ("carol", vec!["maintainers"]),
        ("dave", vec![]),
    ] {
        let (s, v) = api
            .call(
                "POST",
                "/v1/admin/users",
                &admin,
                Some(json!({"id": id, "groups": groups})),
            )
            .await;
        assert_eq!(s, 201, "{v}");
        keys.insert(id, v["api_key"].as_str().unwrap().to_owned());
    }
    let (s, v) = api
        .call(
            "POST",
            "/v1/admin/agents",
            &keys["alice"],
            Some(json!({"id": "bot"})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let agent_key = v["api_key"].as_str().unwrap().to_owned();
    let (s, v) = api
        .call(
            "POST",
            "/v1/grants",
            &keys["alice"],
            Some(json!({"agent": "bot", "actions": ["github.*"], "expires_in": 3600})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let grant = v["id"].as_str().unwrap().to_owned();
    // Another user cannot grant for alice; an agent cannot grant at all.
    let (s, _) = api
        .call(
            "POST",
            "/v1/grants",
            &keys["dave"],
            Some(json!({"user": "alice", "agent": "bot", "actions": ["github.*"]})),
        )
        .await;
    assert_eq!(s, 403);
    let (s, _) = api
        .call(
            "POST",
            "/v1/grants",
            &agent_key,
            Some(json!({"agent": "bot", "actions": ["github.*"]})),
        )
        .await;
    assert_eq!(s, 403);

    let form = [
        (
            "grant_type",
            "urn:ietf:params:oauth:grant-type:token-exchange".to_owned(),
        ),
        ("subject_token", keys["alice"].clone()),
        (
            "subject_token_type",
            "urn:writ:params:oauth:token-type:api-key".to_owned(),
        ),
        ("actor_token", agent_key.clone()),
        (
            "actor_token_type",
            "urn:writ:params:oauth:token-type:api-key".to_owned(),
        ),
        (
            "authorization_details",
            json!([{"type": "writ_grant", "grant_id": grant}]).to_string(),
        ),
    ];
    let resp = api
        .client
        .post(format!("{}/oauth/token", api.url))
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap().to_owned();

    // Allowed: the upstream sees the credential, the agent's answer never does.
    let (s, v) = api
        .call("POST", "/v1/actions", &token, Some(json!({
            "connector": "github", "operation": "create_issue",
            "args": {"title": "Flaky test"}, "intent": "track the flaky test", "rationale": "CI failed twice",
            "idempotency_key": "issue-1"
        })))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["result"]["body"]["number"], 42);
    assert_eq!(v["result"]["credential"], "github-token@1");
    assert_eq!(v["audit"]["seqs"].as_array().unwrap().len(), 4, "{v}");
    let issue_action = v["action_id"].as_str().unwrap().to_owned();
    {
        let seen = seen.lock().unwrap();
        assert_eq!(seen.calls.len(), 1);
        assert_eq!(
            seen.calls[0].1.as_deref(),
            Some(format!("Bearer {SECRET}").as_str())
        );
        assert_eq!(seen.calls[0].2, json!({"title": "Flaky test"}));
    }
    // Idempotent retry: the same answer, no second call. The same key for other arguments: 409.
    let (s, v) = api
        .call("POST", "/v1/actions", &token, Some(json!({
            "connector": "github", "operation": "create_issue",
            "args": {"title": "Flaky test"}, "intent": "track the flaky test", "rationale": "CI failed twice",
            "idempotency_key": "issue-1"
        })))
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["action_id"], issue_action.as_str());
    assert_eq!(v["replayed"], true);
    let (s, v) = api
        .call(
            "POST",
            "/v1/actions",
            &token,
            Some(json!({
                "connector": "github", "operation": "create_issue",
                "args": {"title": "Something else"}, "idempotency_key": "issue-1"
            })),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "idempotency_key_reused");
    assert_eq!(seen.lock().unwrap().calls.len(), 1);

    // Denied by policy (a plain forbid, with its id and reason). The upstream is never called.
    let (s, v) = api
        .call(
            "POST",
            "/v1/actions",
            &token,
            Some(json!({
                "connector": "github", "operation": "merge_pull_request",
                "args": {"pull_number": 3, "base": "dev", "merge_method": "rebase"}, "intent": "test"
            })),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["status"], "denied");
    assert_eq!(v["policy_ids"], json!(["no-rebase-merges"]), "{v}");
    assert!(v["reasons"][0].as_str().unwrap().contains("rebase"), "{v}");
    assert!(v["bundle_version"].as_str().unwrap().starts_with("sha256:"));
    let denied_action = v["action_id"].as_str().unwrap().to_owned();
    // A grant for issues only: issues are allowed under it (the grant covers the action, so
    // policy sees its github.write group as granted), merges are refused by the grant itself.
    let (s, v) = api
        .call(
            "POST",
            "/v1/grants",
            &keys["alice"],
            Some(json!({"agent": "bot", "actions": ["github.create_issue"], "expires_in": 3600})),
        )
        .await;
    assert_eq!(s, 201, "{v}");
    let narrow = v["id"].as_str().unwrap().to_owned();
    let (s, v) = api
        .call(
            "POST",
            "/v1/actions",
            &agent_key,
            Some(json!({
                "connector": "github", "operation": "create_issue", "grant_id": narrow,
                "args": {"title": "Under the narrow grant"}, "intent": "test"
            })),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(seen.lock().unwrap().calls.len(), 2);
    // Denied by the grant: an operation it does not cover.
    let (s, v) = api
        .call(
            "POST",
            "/v1/actions",
            &agent_key,
            Some(json!({
                "connector": "github", "operation": "merge_pull_request", "grant_id": narrow,
                "args": {"pull_number": 1, "base": "dev"}
            })),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert!(v["reasons"][0].as_str().unwrap().contains("grant"), "{v}");
    // Invalid arguments never reach policy or the upstream.
    let (s, v) = api
        .call(
            "POST",
            "/v1/actions",
            &token,
            Some(json!({
                "connector": "github", "operation": "create_issue", "args": {"title": 5}
            })),
        )
        .await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(seen.lock().unwrap().calls.len(), 2);
    // A forged token is refused.
    let forged = format!("{}x", &token[..token.len() - 1]);
    let (s, _) = api
        .call(
            "POST",
            "/v1/actions",
            &forged,
            Some(
                json!({"connector": "github", "operation": "create_issue", "args": {"title": "x"}}),
            ),
        )
        .await;
    assert_eq!(s, 401);

    // Approval: a merge into main needs two maintainers.
    let merge = |n: u64| {
        json!({
            "connector": "github", "operation": "merge_pull_request",
            "args": {"pull_number": n, "base": "main"}, "intent": "ship the fix", "rationale": "tests pass"
        })
    };
    let (s, v) = api
        .call("POST", "/v1/actions?wait=1s", &token, Some(merge(7)))
        .await;
    assert_eq!(s, 202, "{v}");
    assert_eq!(v["status"], "pending_approval");
    let approval = v["approval"]["id"].as_str().unwrap().to_owned();
    let merge_action = v["action_id"].as_str().unwrap().to_owned();
    let merge_hash = v["action_hash"].as_str().unwrap().to_owned();
    assert_eq!(v["approval"]["quorum"], 2);
    // A second pending merge, other arguments: its approval is a different one.
    let (s, other) = api
        .call("POST", "/v1/actions", &token, Some(merge(8)))
        .await;
    assert_eq!(s, 202);
    assert_ne!(other["approval"]["id"], approval.as_str());
    let decision_path = format!("/v1/approvals/{approval}/decision");

    // bob sees it in his inbox and may decide; dave does not see it.
    let (_, inbox) = api
        .call("GET", "/v1/approvals?state=pending", &keys["bob"], None)
        .await;
    let mine = inbox["approvals"].as_array().unwrap();
    assert!(
        mine.iter()
            .any(|a| a["id"] == approval.as_str() && a["you_may_decide"] == true),
        "{inbox}"
    );
    let (_, inbox) = api
        .call("GET", "/v1/approvals?state=pending", &keys["dave"], None)
        .await;
    assert!(inbox["approvals"].as_array().unwrap().is_empty(), "{inbox}");

    // Approving other arguments than the ones reviewed is refused.
    let (s, v) = api
        .call(
            "POST",
            &decision_path,
            &keys["bob"],
            Some(json!({"decision": "approve", "action_hash": other["action_hash"]})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "action_changed");
    // Self-approval and non-approvers are refused.
    let (s, v) = api
        .call(
            "POST",
            &decision_path,
            &keys["alice"],
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"], "self_approval");
    let (s, v) = api
        .call(
            "POST",
            &decision_path,
            &keys["dave"],
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, 403, "{v}");
    assert_eq!(v["error"], "not_an_approver");
    // First maintainer: still pending. Twice: refused.
    let (s, v) = api
        .call(
            "POST",
            &decision_path,
            &keys["bob"],
            Some(json!({"decision": "approve", "comment": "LGTM", "action_hash": merge_hash})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "pending_approval");
    let (s, v) = api
        .call(
            "POST",
            &decision_path,
            &keys["bob"],
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(s, 409, "{v}");
    assert_eq!(v["error"], "already_decided");
    assert!(
        seen.lock()
            .unwrap()
            .calls
            .iter()
            .all(|c| !c.0.starts_with("merge"))
    );
    // Second maintainer: quorum, re-evaluation, execution by Writ itself.
    let (s, v) = api
        .call(
            "POST",
            &decision_path,
            &keys["carol"],
            Some(json!({"decision": "approve", "comment": "ok"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "succeeded", "{v}");
    {
        let seen = seen.lock().unwrap();
        let merges: Vec<_> = seen
            .calls
            .iter()
            .filter(|c| c.0.starts_with("merge"))
            .collect();
        assert_eq!(merges.len(), 1);
        assert_eq!(merges[0].0, "merge/7", "only the approved arguments run");
    }
    // The agent's long-poll sees the outcome; the record holds every step with proofs.
    let (s, record) = api
        .call(
            "GET",
            &format!("/v1/actions/{merge_action}?wait=5s"),
            &token,
            None,
        )
        .await;
    assert_eq!(s, 200, "{record}");
    let kinds: Vec<&str> = record["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    // Every step, including the three refused attempts to decide (evidence too).
    assert_eq!(
        kinds,
        [
            "requested",
            "evaluated",
            "approval_requested",
            "responded",
            "approval_decided",
            "approval_decided",
            "approval_decided",
            "approval_decided",
            "approval_decided",
            "evaluated",
            "executed",
            "responded"
        ]
    );
    let decided: Vec<(&str, bool)> = record["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "approval_decided")
        .map(|e| {
            (
                e["actor"].as_str().unwrap(),
                e["payload"]["accepted"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        decided,
        [
            ("user:bob", false),
            ("user:alice", false),
            ("user:dave", false),
            ("user:bob", true),
            ("user:carol", true)
        ]
    );
    assert!(
        record["entries"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["inclusion_proof"].is_array())
    );
    assert_eq!(record["approval"]["decisions"].as_array().unwrap().len(), 2);
    // Denying the other one closes it.
    let (s, v) = api
        .call(
            "POST",
            &format!(
                "/v1/approvals/{}/decision",
                other["approval"]["id"].as_str().unwrap()
            ),
            &keys["bob"],
            Some(json!({"decision": "deny", "comment": "not now"})),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["status"], "rejected");

    // Search.
    let (s, v) = api
        .call("GET", "/v1/actions?verdict=deny", &admin, None)
        .await;
    assert_eq!(s, 200);
    let ids: Vec<&str> = v["actions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["action_id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&denied_action.as_str()), "{v}");
    assert!(!ids.contains(&issue_action.as_str()));
    let (_, v) = api.call("GET", "/v1/actions", &keys["dave"], None).await;
    assert!(
        v["actions"].as_array().unwrap().is_empty(),
        "dave acts for no one: {v}"
    );

    // Metrics reflect it.
    let metrics = api
        .client
        .get(format!("{}/metrics", api.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("writ_actions_total{verdict=\"allow\",connector=\"github\"}"),
        "{metrics}"
    );

    // Killed while executing: after restart the action is *outcome unknown*, never re-run.
    let merge_grant = grant.clone();
    let client = api.client.clone();
    let url = api.url.clone();
    let key = agent_key.clone();
    let slow = tokio::spawn(async move {
        client
            .post(format!("{url}/v1/actions"))
            .bearer_auth(key)
            .json(&json!({"connector": "github", "operation": "merge_pull_request", "grant_id": merge_grant,
                          "args": {"pull_number": 999, "base": "dev"}}))
            .send()
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !seen
        .lock()
        .unwrap()
        .calls
        .iter()
        .any(|c| c.0 == "merge/999")
    {
        assert!(
            Instant::now() < deadline,
            "the slow call never reached the upstream"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(server); // SIGKILL
    assert!(slow.await.unwrap().is_err(), "the killed server answered");
    let server = env.serve();
    assert!(
        server.admin_key.is_none(),
        "the admin key is printed only on first start"
    );
    let api = Api {
        client: reqwest::Client::new(),
        url: server.url.clone(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let interrupted = loop {
        let (_, v) = api
            .call("GET", "/v1/actions?state=outcome_unknown", &admin, None)
            .await;
        if let Some(a) = v["actions"].as_array().and_then(|a| a.first()).cloned() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "the interrupted action was never settled"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(interrupted["status"], "outcome_unknown");
    assert!(interrupted["error"].as_str().unwrap().contains("unknown"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        seen.lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.0 == "merge/999")
            .count(),
        1
    );
    drop(server);

    // The log verifies, and the credential is nowhere in it.
    let out = env
        .writ()
        .args(["audit", "verify", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = env
        .writ()
        .args(["audit", "export", "--format", "jsonl"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(log.contains("github-token@1"));
    assert!(
        !log.contains(SECRET),
        "the credential reached the audit log"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_end_to_end_on_sqlite() {
    scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_end_to_end_on_postgres() {
    let Some(base) = std::env::var("WRIT_TEST_POSTGRES_URL")
        .ok()
        .filter(|u| !u.is_empty())
    else {
        assert!(
            std::env::var("CI").is_err(),
            "CI must set WRIT_TEST_POSTGRES_URL"
        );
        eprintln!("skipping: WRIT_TEST_POSTGRES_URL is not set");
        return;
    };
    let schema = format!("writ_e2e_{}", uuid_like());
    let url = writ_store::postgres::url_with_fresh_schema(&base, &schema)
        .await
        .unwrap();
    scenario(Some(url)).await;
    writ_store::postgres::drop_schema(&base, &schema)
        .await
        .unwrap();
}

fn uuid_like() -> String {
    format!(
        "{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros()
    )
}
