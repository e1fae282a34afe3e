//! The limits of the API, through the real `writ serve` binary on SQLite: the per-agent rate
//! limit, argument and body sizes, approval expiry by the background sweep, a grant's budget
//! spent only by approved actions that run, and requests that are unauthenticated or
//! authenticated as the wrong party. Each test runs its own server with its own `writ.toml`, so
//! that one limit never masks another.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Answer, Api, Config, Env, Server, Upstream};
use serde_json::{Value, json};

/// A server with users alice (eng), bob (maintainers) and carol (eng), and an upstream.
/// Fields drop in order: the server dies before its directory is removed.
struct World {
    server: Server,
    api: Api,
    upstream: Upstream,
    keys: HashMap<&'static str, String>,
    env: Env,
}

impl World {
    /// Starts a server with `limits` for `[limits]`; `edit_policies` may rewrite the example
    /// bundle's github.cedar before the server reads it.
    async fn start(limits: &str, edit_policies: impl FnOnce(String) -> String) -> World {
        let env = Env::new(None);
        let upstream = Upstream::start(None).await;
        env.init_with_secret(edit_policies);
        env.write_config(&Config {
            upstream: &upstream.url,
            policies: Some(&env.path("policies")),
            timeout_ms: 2000,
            merge_timeout_ms: None,
            credential: true,
            extra: &format!("[audit]\ncheckpoint_interval_secs = 0\n\n[limits]\n{limits}\n"),
        });
        let server = env.serve();
        let mut world = World {
            api: server.api(),
            server,
            upstream,
            keys: HashMap::new(),
            env,
        };
        let admin = world.server.admin();
        for (id, groups) in [
            ("alice", vec!["eng"]),
            ("bob", vec!["maintainers"]),
            ("carol", vec!["eng"]),
        ] {
            let a = world
                .call(
                    "POST",
                    "/v1/admin/users",
                    Some(&admin),
                    Some(json!({"id": id, "groups": groups})),
                )
                .await;
            assert_eq!(a.status, 201, "{}", a.body);
            world
                .keys
                .insert(id, a.body["api_key"].as_str().unwrap().to_owned());
        }
        world
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Answer {
        self.api.send(method, path, token, body).await
    }

    /// Registers agent `id` for `user` and returns its API key.
    async fn agent(&self, user: &str, id: &str) -> String {
        let a = self
            .call(
                "POST",
                "/v1/admin/agents",
                Some(&self.keys[user]),
                Some(json!({"id": id})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["api_key"].as_str().unwrap().to_owned()
    }

    /// A grant of `github.*` from `user` to `agent`; returns its id.
    async fn grant(&self, user: &str, agent: &str) -> String {
        let a = self
            .call(
                "POST",
                "/v1/grants",
                Some(&self.keys[user]),
                Some(json!({"agent": agent, "actions": ["github.*"], "expires_in": 3600})),
            )
            .await;
        assert_eq!(a.status, 201, "{}", a.body);
        a.body["id"].as_str().unwrap().to_owned()
    }

    /// A delegated token for `grant`, exchanged from `user`'s key and the agent's key.
    async fn token(&self, user: &str, agent_key: &str, grant: &str) -> String {
        self.api.token(&self.keys[user], agent_key, grant).await
    }

    async fn metrics(&self) -> String {
        self.api.metrics().await
    }

    /// The paths the upstream was called on, in order.
    fn upstream_calls(&self) -> Vec<String> {
        self.upstream.paths()
    }

    /// The log's `requested` entries that record a refusal, read with `writ audit query`.
    fn refusals(&self) -> Vec<Value> {
        let out = self.env.run(&[
            "audit",
            "query",
            "--kind",
            "requested",
            "--limit",
            "1000",
            "--json",
        ]);
        let entries: Value = serde_json::from_str(&out).unwrap();
        entries
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["payload"]["refused"].is_string())
            .cloned()
            .collect()
    }
}

fn issue(title: &str) -> Value {
    json!({"connector": "github", "operation": "create_issue", "args": {"title": title}, "intent": "test"})
}

fn with_grant(mut request: Value, grant: &str) -> Value {
    request["grant_id"] = json!(grant);
    request
}

/// The value of an unlabelled metric line `name value`.
fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_per_agent_recorded_and_counted() {
    let w = World::start("actions_per_agent_per_minute = 2", |t| t).await;
    let bot = w.agent("alice", "bot").await;
    let other = w.agent("alice", "other-bot").await;
    let bot_grant = w.grant("alice", "bot").await;
    let other_grant = w.grant("alice", "other-bot").await;

    for n in 1..=2 {
        let a = w
            .call(
                "POST",
                "/v1/actions",
                Some(&bot),
                Some(with_grant(issue(&format!("issue {n}")), &bot_grant)),
            )
            .await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.body["status"], "succeeded");
    }
    // The third within the minute is refused before anything else happens.
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&bot),
            Some(with_grant(issue("issue 3"), &bot_grant)),
        )
        .await;
    assert_eq!(a.status, 429, "{}", a.body);
    assert_eq!(a.body["error"], "rate_limited", "{}", a.body);
    assert!(a.body["message"].is_string(), "{}", a.body);
    let retry_after: u64 = a
        .headers
        .get("retry-after")
        .expect("a 429 carries Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .expect("Retry-After is whole seconds");
    assert!(retry_after >= 1, "Retry-After: {retry_after}");
    assert_eq!(w.upstream_calls().len(), 2);

    // Another agent has its own budget.
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&other),
            Some(with_grant(issue("from the other bot"), &other_grant)),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(w.upstream_calls().len(), 3);

    let metrics = w.metrics().await;
    assert!(
        metric(&metrics, "writ_rate_limited_total") >= 1.0,
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"writ_requests_refused_total{reason="rate_limited"}"#),
        "{metrics}"
    );

    // The refusal is evidence: a `requested` entry by the agent, saying why.
    let refusals = w.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    let r = &refusals[0];
    assert_eq!(r["actor"], "agent:bot", "{r}");
    assert_eq!(r["payload"]["refused"], "rate_limited", "{r}");
    assert_eq!(r["payload"]["grant"], bot_grant.as_str(), "{r}");
    assert_eq!(r["payload"]["operation"], "create_issue", "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_arguments_and_bodies_are_refused_with_json() {
    let w = World::start(
        "actions_per_agent_per_minute = 0\nmax_args_bytes = 200\nmax_body_bytes = 4096",
        |t| t,
    )
    .await;
    let bot = w.agent("alice", "bot").await;
    let grant = w.grant("alice", "bot").await;

    // Within both limits: allowed.
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&bot),
            Some(with_grant(issue("small"), &grant)),
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(w.upstream_calls().len(), 1);

    // Arguments over 200 bytes, in a body well under 4096: 413, and no upstream call.
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&bot),
            Some(with_grant(issue(&"x".repeat(300)), &grant)),
        )
        .await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.body["error"], "args_too_large", "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap().contains("200"),
        "{}",
        a.body
    );
    assert_eq!(w.upstream_calls().len(), 1);

    // A 10 KB body: 413 as the API's JSON error, before authentication or parsing.
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&bot),
            Some(with_grant(issue(&"y".repeat(10 * 1024)), &grant)),
        )
        .await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.body["error"], "body_too_large", "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap().contains("4096 bytes"),
        "{}",
        a.body
    );
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    // The same on another endpoint that takes a body.
    let a = w
        .call(
            "POST",
            "/v1/grants",
            Some(&w.keys["alice"]),
            Some(
                json!({"agent": "bot", "actions": ["github.*"], "padding": "z".repeat(10 * 1024)}),
            ),
        )
        .await;
    assert_eq!(a.status, 413, "{}", a.body);
    assert_eq!(a.body["error"], "body_too_large", "{}", a.body);
    assert_eq!(w.upstream_calls().len(), 1);

    let metrics = w.metrics().await;
    assert!(
        metrics.contains(r#"writ_requests_refused_total{reason="args_too_large"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"writ_requests_refused_total{reason="body_too_large"} 2"#),
        "{metrics}"
    );

    // The argument refusal is recorded (the body refusal comes before any caller is known).
    let refusals = w.refusals();
    assert_eq!(refusals.len(), 1, "{refusals:?}");
    assert_eq!(refusals[0]["payload"]["refused"], "args_too_large");
    assert_eq!(refusals[0]["actor"], "agent:bot");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_approval_expires() {
    let w = World::start("actions_per_agent_per_minute = 0", |t| {
        assert!(t.contains("@expires(\"4h\")"), "the example bundle changed");
        t.replace("@expires(\"4h\")", "@expires(\"2s\")")
    })
    .await;
    let bot = w.agent("alice", "bot").await;
    let grant = w.grant("alice", "bot").await;
    let token = w.token("alice", &bot, &grant).await;

    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&token),
            Some(json!({
                "connector": "github", "operation": "merge_pull_request",
                "args": {"pull_number": 7, "base": "main"}, "intent": "ship the fix"
            })),
        )
        .await;
    assert_eq!(a.status, 202, "{}", a.body);
    assert_eq!(a.body["status"], "pending_approval");
    let action = a.body["action_id"].as_str().unwrap().to_owned();
    let approval = a.body["approval"]["id"].as_str().unwrap().to_owned();

    // Nobody answers; the background sweep expires it.
    let deadline = Instant::now() + Duration::from_secs(30);
    let expired = loop {
        let a = w
            .call("GET", &format!("/v1/actions/{action}"), Some(&token), None)
            .await;
        if a.body["status"] == "expired" {
            break a;
        }
        assert_eq!(a.body["status"], "pending_approval", "{}", a.body);
        assert!(
            Instant::now() < deadline,
            "the approval never expired: {}",
            a.body
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(expired.status, 410, "{}", expired.body);
    assert_eq!(
        expired.body["approval"]["state"], "expired",
        "{}",
        expired.body
    );
    let kinds: Vec<&str> = expired.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "requested",
            "evaluated",
            "approval_requested",
            "responded",
            "approval_decided",
            "responded"
        ],
        "{}",
        expired.body
    );

    // A maintainer who comes back too late cannot revive it.
    let a = w
        .call(
            "POST",
            &format!("/v1/approvals/{approval}/decision"),
            Some(&w.keys["bob"]),
            Some(json!({"decision": "approve"})),
        )
        .await;
    assert_eq!(a.status, 409, "{}", a.body);
    assert!(
        a.body["error"] == "approval_closed" || a.body["error"] == "approval_expired",
        "{}",
        a.body
    );
    let a = w
        .call("GET", &format!("/v1/actions/{action}"), Some(&token), None)
        .await;
    assert_eq!(a.body["status"], "expired", "{}", a.body);
    assert!(
        w.upstream_calls().iter().all(|c| !c.starts_with("merge")),
        "{:?}",
        w.upstream_calls()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actions_need_the_right_credentials() {
    let w = World::start("actions_per_agent_per_minute = 0", |t| t).await;
    let bot = w.agent("alice", "bot").await;
    let grant = w.grant("alice", "bot").await;
    let carols_bot = w.agent("carol", "carols-bot").await;
    let carols_grant = w.grant("carol", "carols-bot").await;

    // No credential at all.
    let a = w
        .call("POST", "/v1/actions", None, Some(issue("anonymous")))
        .await;
    assert_eq!(a.status, 401, "{}", a.body);
    assert_eq!(a.body["error"], "unauthenticated", "{}", a.body);
    assert!(
        a.headers
            .get("www-authenticate")
            .is_some_and(|v| v.to_str().unwrap().starts_with("Bearer")),
        "{:?}",
        a.headers
    );
    // A user key: users do not submit actions, their agents do.
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&w.keys["alice"]),
            Some(with_grant(issue("as alice"), &grant)),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    // An agent key without a grant id.
    let a = w
        .call("POST", "/v1/actions", Some(&bot), Some(issue("no grant")))
        .await;
    assert_eq!(a.status, 400, "{}", a.body);
    assert!(
        a.body["message"].as_str().unwrap().contains("grant_id"),
        "{}",
        a.body
    );
    // An agent key with a grant given to another agent (of another user).
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&bot),
            Some(with_grant(issue("borrowed"), &carols_grant)),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&carols_bot),
            Some(with_grant(issue("borrowed"), &grant)),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(w.upstream_calls().is_empty());

    // A delegated token works until its grant is revoked, then stops at once.
    let token = w.token("alice", &bot, &grant).await;
    let a = w
        .call("POST", "/v1/actions", Some(&token), Some(issue("before")))
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(w.upstream_calls().len(), 1);
    // carol cannot revoke alice's grant; alice can.
    let a = w
        .call(
            "POST",
            &format!("/v1/grants/{grant}/revoke"),
            Some(&w.keys["carol"]),
            None,
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    let a = w
        .call(
            "POST",
            &format!("/v1/grants/{grant}/revoke"),
            Some(&w.keys["alice"]),
            None,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    let a = w
        .call("POST", "/v1/actions", Some(&token), Some(issue("after")))
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    // The agent key under the revoked grant is refused too.
    let a = w
        .call(
            "POST",
            "/v1/actions",
            Some(&bot),
            Some(with_grant(issue("after, by key"), &grant)),
        )
        .await;
    assert_eq!(a.status, 403, "{}", a.body);
    assert_eq!(w.upstream_calls().len(), 1, "{:?}", w.upstream_calls());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approved_actions_spend_the_grant_budget_when_they_run() {
    let w = World::start("actions_per_agent_per_minute = 0", |t| t).await;
    let bot = w.agent("alice", "bot").await;
    let a = w
        .call(
            "POST",
            "/v1/grants",
            Some(&w.keys["alice"]),
            Some(
                json!({"agent": "bot", "actions": ["github.*"], "expires_in": 3600, "max_uses": 1}),
            ),
        )
        .await;
    assert_eq!(a.status, 201, "{}", a.body);
    let grant = a.body["id"].as_str().unwrap().to_owned();
    let token = w.token("alice", &bot, &grant).await;

    // Two merges wait for a maintainer; waiting spends nothing, so both are accepted.
    let mut pending = Vec::new();
    for pr in [7, 8] {
        let a = w
            .call(
                "POST",
                "/v1/actions",
                Some(&token),
                Some(json!({
                    "connector": "github", "operation": "merge_pull_request",
                    "args": {"pull_number": pr, "base": "main"}, "intent": "ship"
                })),
            )
            .await;
        assert_eq!(a.status, 202, "{}", a.body);
        pending.push((
            a.body["action_id"].as_str().unwrap().to_owned(),
            a.body["approval"]["id"].as_str().unwrap().to_owned(),
        ));
    }

    // A maintainer approves both at once: the one use the grant allows goes to exactly one.
    let decide = |approval: &str| {
        let path = format!("/v1/approvals/{approval}/decision");
        let w = &w;
        async move {
            w.call(
                "POST",
                &path,
                Some(&w.keys["bob"]),
                Some(json!({"decision": "approve"})),
            )
            .await
        }
    };
    let (first, second) = tokio::join!(decide(&pending[0].1), decide(&pending[1].1));
    let mut statuses = [first.body["status"].clone(), second.body["status"].clone()];
    statuses.sort_by_key(|s| s.to_string());
    assert_eq!(
        statuses,
        [json!("denied"), json!("succeeded")],
        "{} {}",
        first.body,
        second.body
    );
    let merges = w
        .upstream_calls()
        .iter()
        .filter(|c| c.contains("merge"))
        .count();
    assert_eq!(merges, 1, "{:?}", w.upstream_calls());

    // The refused one says why, and its record shows the grant's refusal as the evaluation.
    let denied = if first.body["status"] == "denied" {
        &first
    } else {
        &second
    };
    // The decision itself was taken (200); the action it released was denied.
    assert_eq!(denied.status, 200, "{}", denied.body);
    let id = denied.body["action_id"].as_str().unwrap();
    let record = w
        .call("GET", &format!("/v1/actions/{id}"), Some(&token), None)
        .await;
    let reasons = record.body["reasons"].to_string();
    assert!(
        reasons.contains("used 1 times, its limit"),
        "{}",
        record.body
    );
    let evaluations: Vec<&Value> = record.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "evaluated")
        .collect();
    let last = evaluations.last().unwrap();
    assert_eq!(last["payload"]["verdict"]["verdict"], "deny", "{last}");
    assert!(
        last["payload"]["grant_check"]
            .as_str()
            .unwrap()
            .contains("its limit"),
        "{last}"
    );

    // Exactly one use was spent.
    let grants = w
        .call("GET", "/v1/grants", Some(&w.keys["alice"]), None)
        .await;
    let ours = grants.body["grants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["id"] == grant.as_str())
        .unwrap()
        .clone();
    assert_eq!(ours["usage"]["uses"], 1, "{ours}");
}
