//! `writ actions` and `writ approvals` against the real `writ serve` binary on a random port, with
//! a GitHub-like upstream on loopback: listing, the audit timeline with verified inclusion
//! proofs, self-approval refused, a maintainer's approval that runs the action, JSON output, and
//! no token in any output or error.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Config, Env, Server, Upstream, writ_command};
use serde_json::{Value, json};

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

/// `writ ARGS` as a client of `server`, authenticated with `token`.
fn writ(server: &Server, token: &str, args: &[&str]) -> Run {
    let out = writ_command()
        .args(args)
        .env("WRIT_URL", &server.url)
        .env("WRIT_TOKEN", token)
        .output()
        .unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

/// A run that must succeed; its output is kept to check for leaked tokens.
fn ok(outputs: &mut String, run: Run) -> Run {
    assert_eq!(
        run.code, 0,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    outputs.push_str(&run.stdout);
    outputs.push_str(&run.stderr);
    run
}

#[test]
fn actions_and_approvals_through_the_api() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(Upstream::start(None));
    let env = Env::new(None);
    env.write_config(&Config::plain(&upstream.url));
    let server = env.serve();
    let api = server.api();
    let admin = server.admin();
    let call = |method: &str, path: &str, token: &str, body: Option<Value>| {
        rt.block_on(api.call(method, path, token, body))
    };

    // Users, an agent and a grant, through the API.
    let mut keys = std::collections::BTreeMap::new();
    for (user, group) in [("alice", "eng"), ("bob", "maintainers")] {
        let (status, body) = call(
            "POST",
            "/v1/admin/users",
            &admin,
            Some(json!({"id": user, "groups": [group]})),
        );
        assert_eq!(status, 201, "{body}");
        keys.insert(user, body["api_key"].as_str().unwrap().to_owned());
    }
    let (alice, bob) = (keys["alice"].clone(), keys["bob"].clone());
    let (status, body) = call(
        "POST",
        "/v1/admin/agents",
        &admin,
        Some(json!({"id": "bot", "owner": "alice"})),
    );
    assert_eq!(status, 201, "{body}");
    let agent = body["api_key"].as_str().unwrap().to_owned();
    let (status, body) = call(
        "POST",
        "/v1/grants",
        &alice,
        Some(json!({"agent": "bot", "actions": ["github.*"], "expires_in": 3600})),
    );
    assert_eq!(status, 201, "{body}");
    let grant = body["id"].as_str().unwrap().to_owned();

    // The agent acts: one allowed action, one that waits for a maintainer.
    let (status, issue) = call(
        "POST",
        "/v1/actions",
        &agent,
        Some(json!({
            "connector": "github", "operation": "create_issue",
            "args": {"title": "flaky test"}, "intent": "report a flaky test", "grant_id": grant,
        })),
    );
    assert_eq!(status, 200, "{issue}");
    let issue_id = issue["action_id"].as_str().unwrap().to_owned();
    let (status, merge) = call(
        "POST",
        "/v1/actions",
        &agent,
        Some(json!({
            "connector": "github", "operation": "merge_pull_request",
            "args": {"pull_number": 7, "base": "main"}, "intent": "ship the fix", "grant_id": grant,
        })),
    );
    assert_eq!(status, 202, "{merge}");
    let merge_id = merge["action_id"].as_str().unwrap().to_owned();
    let approval_id = merge["approval"]["id"].as_str().unwrap().to_owned();
    let merge_hash = merge["action_hash"].as_str().unwrap().to_owned();
    assert_eq!(upstream.count("issues"), 1);
    assert_eq!(upstream.count("merge"), 0);

    let secrets = [admin.as_str(), alice.as_str(), bob.as_str(), agent.as_str()];
    let mut outputs = String::new();

    // writ actions list: both actions, as a table and as JSON.
    let list = ok(&mut outputs, writ(&server, &admin, &["actions", "list"]));
    assert!(list.stdout.contains(&issue_id), "{}", list.stdout);
    assert!(list.stdout.contains(&merge_id), "{}", list.stdout);
    assert!(
        list.stdout.contains("github.create_issue"),
        "{}",
        list.stdout
    );
    assert!(list.stdout.contains("pending_approval"), "{}", list.stdout);
    let list = ok(
        &mut outputs,
        writ(&server, &admin, &["--json", "actions", "list"]),
    );
    let json: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(json["actions"].as_array().unwrap().len(), 2, "{json}");
    let list = ok(
        &mut outputs,
        writ(
            &server,
            &admin,
            &["actions", "list", "--verdict", "approval", "--json"],
        ),
    );
    let json: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(json["actions"][0]["action_id"], merge_id.as_str(), "{json}");

    // writ actions show: the timeline, each entry proven against the checkpoint.
    let show = ok(
        &mut outputs,
        writ(&server, &admin, &["actions", "show", &issue_id]),
    );
    for kind in ["requested", "evaluated", "executed", "responded"] {
        assert!(
            show.stdout.contains(kind),
            "{kind} missing:\n{}",
            show.stdout
        );
    }
    assert!(
        show.stdout.contains("report a flaky test"),
        "{}",
        show.stdout
    );
    assert!(show.stdout.contains("HTTP 200"), "{}", show.stdout);
    assert!(!show.stdout.contains("FAILED"), "{}", show.stdout);
    assert_eq!(
        show.stdout.matches("included in").count(),
        4,
        "{}",
        show.stdout
    );
    let show = ok(
        &mut outputs,
        writ(&server, &admin, &["actions", "show", &issue_id, "--json"]),
    );
    let json: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(json["status"], "succeeded");

    // writ approvals list as bob: the pending merge, his to decide.
    let approvals = ok(&mut outputs, writ(&server, &bob, &["approvals", "list"]));
    assert!(
        approvals.stdout.contains(&approval_id),
        "{}",
        approvals.stdout
    );
    assert!(
        approvals.stdout.contains("group:maintainers"),
        "{}",
        approvals.stdout
    );
    assert!(approvals.stdout.contains("yes"), "{}", approvals.stdout);
    let approvals = ok(
        &mut outputs,
        writ(&server, &bob, &["approvals", "list", "--json"]),
    );
    let json: Value = serde_json::from_str(&approvals.stdout).unwrap();
    assert_eq!(json["approvals"][0]["you_may_decide"], true, "{json}");

    // Alice's agent asked: she may not approve it.
    let refused = writ(
        &server,
        &alice,
        &["approvals", "approve", &approval_id, "--comment", "ok"],
    );
    assert_ne!(refused.code, 0, "{}", refused.stdout);
    assert!(
        refused
            .stderr
            .contains("error: 403 self_approval: user alice"),
        "{}",
        refused.stderr
    );
    outputs.push_str(&refused.stdout);
    outputs.push_str(&refused.stderr);
    assert_eq!(upstream.count("merge"), 0);

    // Bob approves the hash he reviewed: the merge runs.
    let approved = ok(
        &mut outputs,
        writ(
            &server,
            &bob,
            &[
                "approvals",
                "approve",
                &approval_id,
                "--comment",
                "ok",
                "--action-hash",
                &merge_hash,
            ],
        ),
    );
    assert!(approved.stdout.contains("succeeded"), "{}", approved.stdout);
    assert_eq!(upstream.count("merge"), 1);
    let show = ok(
        &mut outputs,
        writ(
            &server,
            &bob,
            &["--json", "actions", "show", &merge_id, "--wait", "5s"],
        ),
    );
    let json: Value = serde_json::from_str(&show.stdout).unwrap();
    assert_eq!(json["status"], "succeeded", "{json}");
    let kinds: Vec<&str> = json["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert!(kinds.contains(&"approval_requested"), "{kinds:?}");
    assert!(kinds.contains(&"approval_decided"), "{kinds:?}");
    assert!(kinds.contains(&"executed"), "{kinds:?}");
    let show = ok(
        &mut outputs,
        writ(&server, &bob, &["actions", "show", &merge_id]),
    );
    assert!(show.stdout.contains("approve"), "{}", show.stdout);
    assert!(
        show.stdout.contains("refused: user alice cannot approve"),
        "{}",
        show.stdout
    );
    assert!(
        show.stdout.contains("re-evaluated, approved by bob"),
        "{}",
        show.stdout
    );
    assert!(!show.stdout.contains("FAILED"), "{}", show.stdout);
    assert_eq!(
        show.stdout.matches("included in").count(),
        kinds.len(),
        "{}",
        show.stdout
    );

    // An unreachable server: what to do, and no token.
    let down = writ_command()
        .args(["actions", "list", "--url", "http://127.0.0.1:1", "--token"])
        .arg(&admin)
        .output()
        .unwrap();
    let stderr = String::from_utf8(down.stderr).unwrap();
    assert!(!down.status.success());
    assert!(
        stderr.contains("cannot reach Writ at http://127.0.0.1:1") && stderr.contains("writ serve"),
        "{stderr}"
    );
    outputs.push_str(&stderr);

    // The identity commands go through the server when WRIT_URL is set.
    let added = ok(
        &mut outputs,
        writ(
            &server,
            &admin,
            &["users", "add", "eve", "--group", "finance", "--json"],
        ),
    );
    let eve: Value = serde_json::from_str(&added.stdout).unwrap();
    let eve_key = eve["api_key"].as_str().unwrap().to_owned();
    assert_eq!(eve["user"]["groups"], json!(["finance"]));
    let users = ok(&mut outputs, writ(&server, &admin, &["users", "list"]));
    assert!(
        users.stdout.contains("eve") && users.stdout.contains("finance"),
        "{}",
        users.stdout
    );
    let agent = ok(
        &mut outputs,
        writ(
            &server,
            &eve_key,
            &["agents", "add", "eve-bot", "--owner", "eve", "--json"],
        ),
    );
    let agent: Value = serde_json::from_str(&agent.stdout).unwrap();
    assert!(agent["api_key"].as_str().unwrap().starts_with("writ_ak_"));
    let created = ok(
        &mut outputs,
        writ(
            &server,
            &eve_key,
            &[
                "grants",
                "create",
                "--agent",
                "eve-bot",
                "--action",
                "github.create_issue",
                "--expires-in",
                "2h",
                "--json",
            ],
        ),
    );
    let grant: Value = serde_json::from_str(&created.stdout).unwrap();
    let grant_id = grant["id"].as_str().unwrap().to_owned();
    assert_eq!(grant["user"], "eve");
    // bob cannot revoke eve's grant; eve can.
    let refused = writ(&server, &bob, &["grants", "revoke", &grant_id]);
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("403"), "{}", refused.stderr);
    outputs.push_str(&refused.stderr);
    ok(
        &mut outputs,
        writ(&server, &eve_key, &["grants", "revoke", &grant_id]),
    );
    let listed = ok(&mut outputs, writ(&server, &eve_key, &["grants", "list"]));
    assert!(
        listed.stdout.contains(&grant_id) && listed.stdout.contains("REVOKED"),
        "{}",
        listed.stdout
    );
    // The vault lists names and versions; secrets never travel through the API.
    let vault = ok(&mut outputs, writ(&server, &admin, &["vault", "list"]));
    assert!(vault.stdout.contains("CREDENTIAL"), "{}", vault.stdout);
    let put = writ(
        &server,
        &admin,
        &["vault", "put", "x", "--from-env", "HOME"],
    );
    assert_ne!(put.code, 0);
    assert!(
        put.stderr.contains("never travel through the API"),
        "{}",
        put.stderr
    );

    // No credential appears in any output or error of the CLI.
    for secret in secrets {
        assert!(!outputs.contains(secret), "a token leaked into the output");
    }
}
