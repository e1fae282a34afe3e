//! The pipeline in process, as a table: (grant, request) → (state, verdict, the entries recorded,
//! the calls that reached the upstream), against a gateway assembled by `Gateway::from_config`
//! on a temporary SQLite with the built-in example bundle and a GitHub-like upstream on
//! loopback. Adding a case is one entry of `CASES`; approvals have their own table below. The
//! end-to-end tests of the binary stay in `writ-cli/tests`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};

use axum::routing::{post, put};
use serde_json::{Value, json};
use writ_core::Timestamp;
use writ_gateway::admin::{Actor, GrantRequest};
use writ_gateway::auth::{self, Who};
use writ_gateway::pipeline::{self, ActionRequest, DecisionRequest};
use writ_gateway::{Config, Gateway};
use writ_identity::{AgentId, GrantId, UserId};
use writ_store::identity::UserRecord;
use writ_store::{ActionState, Decision, EntryFilter};

/// A GitHub-like upstream that counts the calls it receives.
struct Upstream {
    url: String,
    calls: Arc<Mutex<Vec<String>>>,
}

async fn upstream() -> Upstream {
    let calls: Arc<Mutex<Vec<String>>> = Arc::default();
    let (issues, merges) = (calls.clone(), calls.clone());
    let app = axum::Router::new()
        .route(
            "/repos/acme/web/issues",
            post(move || async move {
                issues.lock().unwrap().push("issues".into());
                axum::Json(json!({"number": 42}))
            }),
        )
        .route(
            "/repos/acme/web/pulls/{n}/merge",
            put(
                move |axum::extract::Path(n): axum::extract::Path<u64>| async move {
                    merges.lock().unwrap().push(format!("merge/{n}"));
                    axum::Json(json!({"merged": true}))
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Upstream { url, calls }
}

/// The gateway, its upstream, and the people: alice (eng) owns agent `bot`, bob is a
/// maintainer, carol is in eng.
struct World {
    gw: Arc<Gateway>,
    upstream: Upstream,
    users: Vec<UserRecord>,
    _dir: tempfile::TempDir,
}

impl World {
    async fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let upstream = upstream().await;
        let toml = format!(
            r#"
[server]
listen = "127.0.0.1:0"

[storage]
data_dir = "{data}"

[audit]
checkpoint_interval_secs = 0

[connectors.github]
kind = "http"
base_url = "{url}"
timeout_ms = 2000

[connectors.github.operations.create_issue]
method = "POST"
path = "/repos/acme/web/issues"
args_schema = {{ type = "object", required = ["title"], properties = {{ title = {{ type = "string" }} }}, additionalProperties = false }}
resource = {{ type = "Repo", id = "acme/web", attributes = {{ owner = "acme", name = "web", visibility = "private" }} }}

[connectors.github.operations.merge_pull_request]
method = "PUT"
path = "/repos/acme/web/pulls/{{pull_number}}/merge"
args_schema = {{ type = "object", required = ["pull_number"], properties = {{ pull_number = {{ type = "integer" }}, base = {{ type = "string" }}, merge_method = {{ type = "string" }} }}, additionalProperties = false }}
resource = {{ type = "Repo", id = "acme/web", attributes = {{ owner = "acme", name = "web", visibility = "private" }} }}
"#,
            data = dir.path().join("data").display(),
            url = upstream.url,
        );
        let config = Config::from_toml(&toml, "the test", std::iter::empty()).unwrap();
        let assembled = Gateway::from_config(&config).await.unwrap();
        let gw = assembled.gateway;
        let admin = gw.admin();
        let mut users = Vec::new();
        for (id, groups) in [
            ("alice", vec!["eng"]),
            ("bob", vec!["maintainers"]),
            ("carol", vec!["eng"]),
        ] {
            let user = UserRecord {
                id: UserId::new(id).unwrap(),
                display_name: id.into(),
                admin: false,
                groups: groups.into_iter().map(str::to_owned).collect(),
                created_at: Timestamp::now(),
            };
            admin
                .create_user(&Actor::Operator, &user, false)
                .await
                .unwrap();
            users.push(user);
        }
        admin
            .create_agent(
                &Actor::User(users[0].clone()),
                AgentId::new("bot").unwrap(),
                None,
                None,
            )
            .await
            .unwrap();
        World {
            gw,
            upstream,
            users,
            _dir: dir,
        }
    }

    fn user(&self, id: &str) -> UserRecord {
        self.users
            .iter()
            .find(|u| u.id.as_str() == id)
            .cloned()
            .unwrap()
    }

    /// A grant from alice to her agent.
    async fn grant(&self, grant: Value) -> GrantId {
        let mut req = json!({"agent": "bot"});
        for (k, v) in grant.as_object().unwrap() {
            req[k] = v.clone();
        }
        let req: GrantRequest = serde_json::from_value(req).unwrap();
        let alice = self.user("alice");
        let spec = req.into_spec(&alice.id, Timestamp::now()).unwrap();
        self.gw
            .admin()
            .issue_grant(&Actor::User(alice), spec)
            .await
            .unwrap()
            .id
    }

    /// The agent asks for `request` under `grant`.
    async fn submit(
        &self,
        grant: &GrantId,
        request: Value,
    ) -> Result<pipeline::Outcome, writ_gateway::Error> {
        let who = Who::Agent(AgentId::new("bot").unwrap());
        let caller = auth::caller(&self.gw, who, Some(grant.as_str())).await?;
        let req: ActionRequest = serde_json::from_value(request).unwrap();
        pipeline::submit(&self.gw, &caller, req).await
    }

    /// The kinds of the entries recorded for `action`, in log order.
    async fn entries(&self, action: &writ_core::ActionId) -> Vec<String> {
        self.gw
            .reads()
            .query(&EntryFilter {
                action_id: Some(action.as_str().to_owned()),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    fn calls(&self) -> usize {
        self.upstream.calls.lock().unwrap().len()
    }
}

/// One row of the table.
struct Case {
    name: &'static str,
    /// The grant alice gives her agent (fields of `POST /v1/grants`, `agent` implied).
    grant: fn() -> Value,
    /// What the agent asks for (`POST /v1/actions`).
    request: fn() -> Value,
    /// The action's state after the request, or the refusal's code when it never became one.
    expect: Expect,
    /// The entry kinds recorded for the action.
    entries: &'static [&'static str],
    /// Calls that reached the upstream.
    calls: usize,
    /// Words the verdict's reasons hold.
    reason: Option<&'static str>,
    /// The same request made this many times first (to spend a budget).
    before: usize,
}

enum Expect {
    State(ActionState),
    Refused(&'static str),
}

const ALLOWED: &[&str] = &["requested", "evaluated", "executed", "responded"];
const DENIED: &[&str] = &["requested", "evaluated", "responded"];
const PENDING: &[&str] = &["requested", "evaluated", "approval_requested", "responded"];

fn issue() -> Value {
    json!({"connector": "github", "operation": "create_issue", "args": {"title": "flaky"}})
}

fn github() -> Value {
    json!({"actions": ["github.*"]})
}

const CASES: &[Case] = &[
    Case {
        name: "an issue within the grant executes",
        grant: github,
        request: issue,
        expect: Expect::State(ActionState::Succeeded),
        entries: ALLOWED,
        calls: 1,
        reason: None,
        before: 0,
    },
    Case {
        name: "an action the grant does not name is denied by the grant",
        grant: || json!({"actions": ["github.create_issue"]}),
        request: || json!({"connector": "github", "operation": "merge_pull_request", "args": {"pull_number": 1}}),
        expect: Expect::State(ActionState::Denied),
        entries: DENIED,
        calls: 0,
        reason: Some("the grant does not cover this action"),
        before: 0,
    },
    Case {
        name: "every merge waits for a maintainer, whatever base it names",
        grant: github,
        request: || json!({"connector": "github", "operation": "merge_pull_request", "args": {"pull_number": 2, "base": "refs/heads/main"}}),
        expect: Expect::State(ActionState::PendingApproval),
        entries: PENDING,
        calls: 0,
        reason: Some("needs the approval of a maintainer"),
        before: 0,
    },
    Case {
        name: "a rebase merge is denied outright, never sent for approval",
        grant: github,
        request: || json!({"connector": "github", "operation": "merge_pull_request", "args": {"pull_number": 3, "merge_method": "rebase"}}),
        expect: Expect::State(ActionState::Denied),
        entries: DENIED,
        calls: 0,
        reason: Some("rebase merges rewrite history"),
        before: 0,
    },
    Case {
        name: "a constraint on the arguments is checked before policy",
        grant: || json!({"actions": ["github.*"], "constraints": [{"pointer": "/title", "rule": "equals", "value": "only this"}]}),
        request: issue,
        expect: Expect::State(ActionState::Denied),
        entries: DENIED,
        calls: 0,
        reason: Some("does not allow these arguments"),
        before: 0,
    },
    Case {
        name: "arguments outside the schema never become an action",
        grant: github,
        request: || json!({"connector": "github", "operation": "create_issue", "args": {"title": 5}}),
        expect: Expect::Refused("invalid_request"),
        entries: &[],
        calls: 0,
        reason: None,
        before: 0,
    },
    Case {
        name: "an unknown connector never becomes an action",
        grant: github,
        request: || json!({"connector": "gitlab", "operation": "create_issue", "args": {}}),
        expect: Expect::Refused("not_found"),
        entries: &[],
        calls: 0,
        reason: None,
        before: 0,
    },
    Case {
        name: "a grant used up denies the next use",
        grant: || json!({"actions": ["github.*"], "max_uses": 1}),
        request: issue,
        expect: Expect::State(ActionState::Denied),
        entries: DENIED,
        calls: 0,
        reason: Some("its limit"),
        before: 1,
    },
];

#[tokio::test]
async fn the_pipeline_table() {
    let world = World::new().await;
    for case in CASES {
        let grant = world.grant((case.grant)()).await;
        for _ in 0..case.before {
            world.submit(&grant, (case.request)()).await.unwrap();
        }
        let before = world.calls();
        let result = world.submit(&grant, (case.request)()).await;
        match (&case.expect, result) {
            (Expect::State(state), Ok(outcome)) => {
                assert_eq!(outcome.action.state, *state, "{}", case.name);
                assert_eq!(
                    world.entries(&outcome.action.id).await,
                    case.entries,
                    "{}",
                    case.name
                );
                if let Some(words) = case.reason {
                    let reasons = outcome
                        .action
                        .result
                        .as_ref()
                        .and_then(|r| r.pointer("/verdict/reasons"))
                        .map(Value::to_string)
                        .unwrap_or_default();
                    assert!(reasons.contains(words), "{}: {reasons}", case.name);
                }
            }
            (Expect::Refused(code), Err(e)) => assert_eq!(e.code, *code, "{}: {e}", case.name),
            (_, other) => panic!("{}: unexpected {other:?}", case.name),
        }
        assert_eq!(world.calls() - before, case.calls, "{}", case.name);
    }
}

/// Approvals: who decides a pending merge, and what happens then.
#[tokio::test]
async fn approvals_table() {
    let world = World::new().await;
    // (who decides, their decision, the refusal code or the state the action reaches).
    let rows: &[(&str, Decision, Result<ActionState, &str>)] = &[
        // The user the agent acts for, who also owns it, never approves.
        ("alice", Decision::Approve, Err("self_approval")),
        // Carol is no maintainer.
        ("carol", Decision::Approve, Err("not_an_approver")),
        // Bob is: the merge executes.
        ("bob", Decision::Approve, Ok(ActionState::Succeeded)),
    ];
    let grant = world.grant(github()).await;
    let pending = world
        .submit(
            &grant,
            json!({"connector": "github", "operation": "merge_pull_request", "args": {"pull_number": 7}}),
        )
        .await
        .unwrap();
    let approval = pending.approval.clone().unwrap();
    for (who, decision, expect) in rows {
        let before = world.calls();
        let decided = pipeline::decide(
            &world.gw,
            &UserId::new(*who).unwrap(),
            &approval.id,
            DecisionRequest {
                decision: *decision,
                comment: None,
                action_hash: Some(approval.action_hash.clone()),
            },
        )
        .await;
        match (expect, decided) {
            (Ok(state), Ok(outcome)) => {
                assert_eq!(outcome.action.state, *state, "{who}");
                assert_eq!(world.calls() - before, 1, "{who}: the merge ran once");
            }
            (Err(code), Err(e)) => {
                assert_eq!(e.code, *code, "{who}: {e}");
                assert_eq!(world.calls(), before, "{who}: nothing ran");
            }
            (_, other) => panic!("{who}: unexpected {other:?}"),
        }
    }
    // Every attempt is evidence: the refused ones too.
    let kinds = world.entries(&pending.action.id).await;
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
            "evaluated",
            "executed",
            "responded",
        ]
    );
    // A grant to an agent its user does not own is refused.
    let bob = world.user("bob");
    let spec =
        serde_json::from_value::<GrantRequest>(json!({"agent": "bot", "actions": ["github.*"]}))
            .unwrap()
            .into_spec(&bob.id, Timestamp::now())
            .unwrap();
    let refused = world
        .gw
        .admin()
        .issue_grant(&Actor::User(bob), spec)
        .await
        .unwrap_err();
    assert!(
        refused.message.contains("belongs to user alice"),
        "{refused}"
    );
}
