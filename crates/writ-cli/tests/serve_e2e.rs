//! End to end, on SQLite and on PostgreSQL: the real `writ serve` binary on a random port, a real
//! upstream HTTP server on loopback, users, an agent, a grant and a delegated token made through
//! the API, then allowed, denied and approved actions, quorum, self-approval, changed arguments,
//! idempotent retries, a server killed mid-execution, and `writ audit verify` afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::{Config, Env, SECRET, Upstream};
use serde_json::json;

async fn scenario(database_url: Option<String>) {
    let env = Env::new(database_url);
    let upstream = Upstream::start(Some(999)).await;

    // Policies: the example bundle, with merges to main needing two maintainers. The credential
    // goes into the vault before the server starts (same data dir, same key).
    // Two maintainers approve, and (in this test's bundle) only merges into main wait for them,
    // so that a merge into dev executes at once and can be killed while it executes.
    env.init_with_secret(|t| {
        t.replace("@expires(\"4h\")", "@quorum(\"2\")\n@expires(\"4h\")")
            .replace(
                "resource)\nunless { context.approval.granted };",
                "resource)\nwhen { context.args has base && context.args.base == \"main\" }\nunless { context.approval.granted };",
            )
    });
    env.write_config(&Config {
        upstream: &upstream.url,
        policies: Some(&env.path("policies")),
        timeout_ms: 1000,
        merge_timeout_ms: Some(4000),
        credential: true,
        extra: "[audit]\ncheckpoint_interval_secs = 0\n\n[limits]\nactions_per_agent_per_minute = 0\n",
    });

    let server = env.serve();
    let admin = server.admin();
    let api = server.api();
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

    let token = api.token(&keys["alice"], &agent_key, &grant).await;

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
    let calls = upstream.calls();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].authorization.as_deref(),
        Some(format!("Bearer {SECRET}").as_str())
    );
    assert_eq!(calls[0].body, json!({"title": "Flaky test"}));
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
    assert_eq!(upstream.calls().len(), 1);

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
    assert_eq!(upstream.calls().len(), 2);
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
    assert_eq!(upstream.calls().len(), 2);
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
    assert!(upstream.paths().iter().all(|p| !p.starts_with("merge")));
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
    let merges: Vec<_> = upstream
        .paths()
        .into_iter()
        .filter(|p| p.starts_with("merge"))
        .collect();
    assert_eq!(merges.len(), 1);
    assert_eq!(merges[0], "merge/7", "only the approved arguments run");
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
    let metrics = api.metrics().await;
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
    while !upstream.paths().iter().any(|p| p == "merge/999") {
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
    let api = server.api();
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
        upstream
            .paths()
            .iter()
            .filter(|p| *p == "merge/999")
            .count(),
        1
    );
    drop(server);

    // The log verifies, and the credential is nowhere in it.
    env.run(&["audit", "verify", "--json"]);
    let log = env.run(&["audit", "export", "--format", "jsonl"]);
    assert!(log.contains("github-token@1"));
    assert!(
        !log.contains(SECRET),
        "the credential reached the audit log"
    );
}

/// `writ serve` with no configuration at all: a working gateway on SQLite in the data
/// directory, keys generated (owner-only), the built-in example bundle, the admin key printed once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_configuration_start() {
    let env = Env::new(None);
    let server = env.serve_with(&[]);
    let admin = server.admin();
    let api = server.api();
    let ready = api.send("GET", "/readyz", None, None).await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(ready.body["store"], "ok");
    assert!(
        ready.body["policy"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    let (s, policy) = api.call("GET", "/v1/admin/policy", &admin, None).await;
    assert_eq!(s, 200, "{policy}");
    assert!(
        policy["policies"].as_array().unwrap().len() >= 10,
        "{policy}"
    );
    let (s, users) = api.call("GET", "/v1/admin/users", &admin, None).await;
    assert_eq!(s, 200, "{users}");
    assert_eq!(users["users"][0]["id"], "admin");
    for file in ["writ.db", "log.key", "token.key", "master.key"] {
        let path = env.path("data").join(file);
        let meta = std::fs::metadata(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if file != "writ.db" {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                meta.permissions().mode() & 0o077,
                0,
                "{file} is readable by others"
            );
        }
    }
    // A second start keeps the admin and prints no key.
    drop(server);
    let again = env.serve_with(&[]);
    assert!(again.admin_key.is_none());
    let (s, _) = again
        .api()
        .call("GET", "/v1/admin/users", &admin, None)
        .await;
    assert_eq!(s, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_end_to_end_on_sqlite() {
    scenario(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipeline_end_to_end_on_postgres() {
    let Some(pg) = common::PgSchema::create("writ_e2e").await else {
        return;
    };
    scenario(Some(pg.url.clone())).await;
    pg.drop_schema().await;
}
