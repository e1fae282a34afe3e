//! Loading, validation errors, the three-way verdict, the approval round trip, fail-closed
//! evaluation, shadow mode, diff and hot reload, on real files.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use writ_policy::{
    Bundle, BundleError, NamedRequest, PolicyEngine, PolicyRequest, ReloadOutcome, SourceFile,
    VerdictKind, diff,
};

const SCHEMA: &str = r#"
entity Group;
entity User in [Group];
entity Agent in [User, Group] { user: User };
entity Payee { country: String };
type Time = { unix: Long, hour: Long, minute: Long, weekday: Long };
type Approval = { granted: Bool, approvers: Set<String> };
type Grant = { id: String, scopes: Set<String>, expires_at: Long };
action "payments.write";
action "payments.create_payment" in ["payments.write"] appliesTo {
  principal: [Agent], resource: [Payee],
  context: { args: { amount_cents: Long }, grant: Grant, intent: String, time: Time, approval: Approval },
};
"#;

const PERMIT: &str = r#"
@id("pay")
@reason("payments are allowed")
permit (principal, action in Action::"payments.write", resource);
"#;

const GATE: &str = r#"
@id("big-needs-finance")
@reason("big payments need finance")
@approval("group:finance")
@quorum("2")
@expires("30m")
forbid (principal, action == Action::"payments.create_payment", resource)
when { context.args.amount_cents > 100000 }
unless { context.approval.granted };
"#;

fn bundle(policies: &[(&str, &str)]) -> Result<Bundle, BundleError> {
    let mut files = vec![SourceFile {
        path: "schema.cedarschema".into(),
        text: SCHEMA.into(),
    }];
    files.extend(policies.iter().map(|(p, t)| SourceFile {
        path: PathBuf::from(p),
        text: (*t).to_owned(),
    }));
    Bundle::from_sources("test-bundle", files)
}

fn request(amount: i64, approved: bool) -> PolicyRequest {
    serde_json::from_value(json!({
        "principal": {"agent": "bot", "user": "alice", "groups": ["eng"]},
        "action": "payments.create_payment",
        "resource": {"type": "Payee", "id": "p1", "attributes": {"country": "DE"}},
        "context": {
            "args": {"amount_cents": amount},
            "grant": {"id": "g", "scopes": ["payments.write"], "expires_at": 1_893_456_000},
            "intent": "pay the invoice",
            "time": "2026-05-04T10:00:00Z",
            "approval": {"granted": approved, "approvers": if approved { vec!["user:carol"] } else { vec![] }},
        }
    }))
    .unwrap()
}

fn only_error(result: Result<Bundle, BundleError>) -> writ_policy::SourceError {
    let err = result.expect_err("the bundle must be refused");
    let errors = err.source_errors();
    assert_eq!(errors.len(), 1, "{err}");
    errors[0].clone()
}

#[test]
fn undeclared_action_is_refused_with_file_line_and_column() {
    let text = "@id(\"p\")\n@reason(\"r\")\npermit (principal, action == Action::\"payments.refund\", resource);\n";
    let e = only_error(bundle(&[("pay.cedar", text)]));
    assert_eq!(e.file, Path::new("pay.cedar"));
    assert_eq!(e.line, Some(3));
    assert!(e.column.is_some());
    assert_eq!(e.policy_id.as_deref(), Some("p"));
    assert!(e.message.contains("payments.refund"), "{}", e.message);
}

#[test]
fn undeclared_attribute_is_refused_with_file_line_and_column() {
    let text = "// payments\n\n@id(\"p\")\n@reason(\"r\")\npermit (principal, action, resource)\nwhen {\n  context.args.amount > 5\n};\n";
    let e = only_error(bundle(&[("pay.cedar", text)]));
    assert_eq!(e.file, Path::new("pay.cedar"));
    assert_eq!(e.line, Some(7), "{e}");
    assert_eq!(e.column, Some(3), "{e}");
    assert!(e.message.contains("amount"), "{}", e.message);
    // The whole error reads like a compiler's.
    assert!(e.to_string().starts_with("pay.cedar:7:3: "), "{e}");
}

#[test]
fn parse_error_is_located() {
    let text =
        "@id(\"p\")\npermit (principal, action, resource)\nwhen { context.args.amount_cents > };\n";
    let e = bundle(&[("bad.cedar", text)]).unwrap_err();
    let first = &e.source_errors()[0];
    assert_eq!(first.file, Path::new("bad.cedar"));
    assert_eq!(first.line, Some(3), "{e}");
}

#[test]
fn malformed_gates_are_refused() {
    let no_unless = "@id(\"g\")\n@approval(\"group:finance\")\nforbid (principal, action, resource) when { context.args.amount_cents > 1 };\n";
    let e = only_error(bundle(&[("g.cedar", no_unless)]));
    assert!(
        e.message.contains("unless { context.approval.granted }"),
        "{e}"
    );

    let permit_gate =
        "@id(\"g\")\n@approval(\"group:finance\")\npermit (principal, action, resource);\n";
    assert!(
        only_error(bundle(&[("g.cedar", permit_gate)]))
            .message
            .contains("forbid")
    );

    let bad_quorum = GATE.replace("@quorum(\"2\")", "@quorum(\"two\")");
    assert!(
        only_error(bundle(&[("g.cedar", &bad_quorum)]))
            .message
            .contains("@quorum")
    );

    let bad_expiry = GATE.replace("30m", "soon");
    assert!(
        only_error(bundle(&[("g.cedar", &bad_expiry)]))
            .message
            .contains("@expires")
    );

    let bad_approver = GATE.replace("group:finance", "finance");
    assert!(
        only_error(bundle(&[("g.cedar", &bad_approver)]))
            .message
            .contains("group:<name>")
    );
}

#[test]
fn duplicate_ids_and_missing_schema_are_refused() {
    let e = only_error(bundle(&[("a.cedar", PERMIT), ("b.cedar", PERMIT)]));
    assert!(e.message.contains("duplicate policy id `pay`"), "{e}");
    assert!(e.message.contains("a.cedar:2"), "{e}");

    let no_schema = Bundle::from_sources(
        "x",
        vec![SourceFile {
            path: "a.cedar".into(),
            text: PERMIT.into(),
        }],
    );
    assert!(matches!(no_schema, Err(BundleError::Layout { .. })));
}

#[test]
fn default_is_deny_and_permit_allows() {
    let empty = bundle(&[]).unwrap();
    let v = empty.evaluate(&request(10, false));
    assert_eq!(v.kind(), VerdictKind::Deny);
    assert_eq!(v.explanation().reasons, [writ_policy::NO_PERMIT_REASON]);

    let b = bundle(&[("pay.cedar", PERMIT)]).unwrap();
    let v = b.evaluate(&request(10, false));
    assert_eq!(v.kind(), VerdictKind::Allow);
    assert_eq!(v.explanation().determining_policies, ["pay"]);
    assert_eq!(v.explanation().reasons, ["payments are allowed"]);
    assert_eq!(v.explanation().bundle_version, b.version().to_string());
}

#[test]
fn require_approval_then_approve_then_allow() {
    let b = bundle(&[("pay.cedar", PERMIT), ("gate.cedar", GATE)]).unwrap();
    assert_eq!(b.evaluate(&request(500, false)).kind(), VerdictKind::Allow);

    let first = b.evaluate(&request(250_000, false));
    assert_eq!(first.kind(), VerdictKind::RequireApproval, "{first:?}");
    let approval = first.approval().unwrap();
    assert_eq!(approval.approvers, ["group:finance"]);
    assert_eq!(approval.quorum, 2);
    assert_eq!(approval.expires, Duration::from_secs(1800));
    assert_eq!(
        first.explanation().determining_policies,
        ["big-needs-finance"]
    );
    assert_eq!(first.explanation().reasons, ["big payments need finance"]);

    // The approvers decided: Writ evaluates again with the approval facts.
    let second = b.evaluate(&request(250_000, true));
    assert_eq!(second.kind(), VerdictKind::Allow, "{second:?}");
    assert_eq!(second.explanation().determining_policies, ["pay"]);
}

#[test]
fn plain_forbid_beats_gates_and_gates_without_permit_deny() {
    let plain = "@id(\"no-de\")\n@reason(\"no payments to DE\")\nforbid (principal, action, resource) when { resource.country == \"DE\" };\n";
    let b = bundle(&[
        ("pay.cedar", PERMIT),
        ("gate.cedar", GATE),
        ("plain.cedar", plain),
    ])
    .unwrap();
    let v = b.evaluate(&request(250_000, false));
    assert_eq!(v.kind(), VerdictKind::Deny);
    assert_eq!(v.explanation().determining_policies, ["no-de"]);
    assert_eq!(v.explanation().reasons, ["no payments to DE"]);
    // Approval does not lift a plain forbid.
    assert_eq!(
        b.evaluate(&request(250_000, true)).kind(),
        VerdictKind::Deny
    );

    // A gate with nothing to permit the action afterwards: approving could not help, so Deny.
    let gate_only = bundle(&[("gate.cedar", GATE)]).unwrap();
    assert_eq!(
        gate_only.evaluate(&request(250_000, false)).kind(),
        VerdictKind::Deny
    );
}

#[test]
fn two_gates_merge_their_requirements() {
    let second_gate = r#"
@id("ceo-for-huge")
@reason("huge payments need the CEO")
@approval("user:ceo, group:finance")
@expires("10m")
forbid (principal, action, resource)
when { context.args.amount_cents > 1000000 }
unless { context.approval.granted };
"#;
    let b = bundle(&[
        ("pay.cedar", PERMIT),
        ("gate.cedar", GATE),
        ("zz-ceo.cedar", second_gate),
    ])
    .unwrap();
    let v = b.evaluate(&request(5_000_000, false));
    let a = v.approval().unwrap();
    assert_eq!(a.approvers, ["group:finance", "user:ceo"]);
    assert_eq!(a.quorum, 2);
    assert_eq!(a.expires, Duration::from_secs(600));
    assert_eq!(a.gates.len(), 2);
    assert_eq!(
        v.explanation().determining_policies,
        ["big-needs-finance", "ceo-for-huge"]
    );
}

#[test]
fn evaluation_errors_fail_closed_with_the_reason() {
    let overflow = "@id(\"overflow\")\n@reason(\"r\")\npermit (principal, action, resource) when { context.args.amount_cents * 1000000000000 > 0 };\n";
    let b = bundle(&[("pay.cedar", PERMIT), ("o.cedar", overflow)]).unwrap();
    assert_eq!(b.evaluate(&request(1, false)).kind(), VerdictKind::Allow);
    let v = b.evaluate(&request(100_000_000, false));
    assert_eq!(v.kind(), VerdictKind::Deny);
    assert_eq!(v.explanation().determining_policies, ["overflow"]);
    assert!(v.explanation().errors[0].contains("overflow"), "{v:?}");
    assert!(v.explanation().reasons[0].contains("fail closed"));
}

#[test]
fn a_request_that_does_not_fit_the_schema_is_denied_with_the_reason() {
    let b = bundle(&[("pay.cedar", PERMIT)]).unwrap();
    let mut r = request(10, false);
    r.context.args = json!({"amount_cents": "ten"});
    let v = b.evaluate(&r);
    assert_eq!(v.kind(), VerdictKind::Deny);
    assert!(v.explanation().reasons[0].contains("does not fit"), "{v:?}");
    assert!(!v.explanation().errors.is_empty());

    let mut r = request(10, false);
    r.action = "payments.refund".into();
    assert_eq!(b.evaluate(&r).kind(), VerdictKind::Deny);

    // Undeclared arguments, missing arguments, wrong resource attributes: all refused.
    for (args, attrs) in [
        (
            json!({"amount_cents": 10, "memo": "x"}),
            json!({"country": "DE"}),
        ),
        (json!({}), json!({"country": "DE"})),
        (json!({"amount_cents": 10}), json!({"country": 49})),
        (
            json!({"amount_cents": 10}),
            json!({"country": "DE", "iban": "x"}),
        ),
        (json!({"amount_cents": 10}), json!({})),
    ] {
        let mut r = request(10, false);
        r.context.args = args.clone();
        r.resource.attributes = attrs.as_object().unwrap().clone();
        let v = b.evaluate(&r);
        assert_eq!(v.kind(), VerdictKind::Deny, "{args} {attrs}: {v:?}");
        assert!(v.explanation().reasons[0].contains("does not fit"), "{v:?}");
    }
}

#[test]
fn shadow_and_diff_report_disagreements_as_data() {
    let live = bundle(&[("pay.cedar", PERMIT)]).unwrap();
    let candidate = bundle(&[("pay.cedar", PERMIT), ("gate.cedar", GATE)]).unwrap();
    let engine = PolicyEngine::new(live);
    engine.set_candidate(Some(candidate));

    let (verdict, shadow) = engine.evaluate_with_shadow(&request(250_000, false));
    assert_eq!(
        verdict.kind(),
        VerdictKind::Allow,
        "the live verdict takes effect"
    );
    let shadow = shadow.unwrap();
    assert!(shadow.disagrees);
    assert_eq!(shadow.candidate.kind(), VerdictKind::RequireApproval);

    let (_, shadow) = engine.evaluate_with_shadow(&request(10, false));
    assert!(!shadow.unwrap().disagrees);

    let requests: Vec<NamedRequest> = [(10, "small"), (250_000, "big")]
        .into_iter()
        .map(|(a, n)| NamedRequest {
            name: n.into(),
            request: request(a, false),
        })
        .collect();
    let changes = diff(&engine.current(), &engine.candidate().unwrap(), &requests);
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].name, "big");
}

fn write_bundle(dir: &Path, policies: &str) {
    std::fs::write(dir.join("schema.cedarschema"), SCHEMA).unwrap();
    std::fs::write(dir.join("policies.cedar"), policies).unwrap();
}

#[test]
fn version_is_the_hash_of_the_files() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    write_bundle(a.path(), PERMIT);
    write_bundle(b.path(), PERMIT);
    // Case files are not policy: they do not change the version.
    std::fs::create_dir(b.path().join("tests")).unwrap();
    std::fs::write(b.path().join("tests/x.yaml"), "cases: []\n").unwrap();
    let va = Bundle::load(a.path()).unwrap().version().clone();
    let vb = Bundle::load(b.path()).unwrap().version().clone();
    assert_eq!(va.sha256, vb.sha256);
    assert_eq!(va.sha256.len(), 64);
    write_bundle(b.path(), &format!("{PERMIT}\n"));
    assert_ne!(Bundle::load(b.path()).unwrap().version().sha256, va.sha256);
}

#[test]
fn on_demand_reload_refuses_a_broken_bundle_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), PERMIT);
    let engine = PolicyEngine::load(dir.path()).unwrap();
    let good = engine.version();
    assert!(matches!(
        engine.reload().unwrap(),
        ReloadOutcome::Unchanged { .. }
    ));

    std::fs::write(
        dir.path().join("policies.cedar"),
        "permit (principal, action == Action::\"nope\", resource);",
    )
    .unwrap();
    let err = engine.reload().unwrap_err();
    assert!(err.to_string().contains("policies.cedar:1:"), "{err}");
    assert_eq!(engine.version(), good);
    assert!(engine.last_reload_error().is_some());
    assert_eq!(
        engine.evaluate(&request(10, false)).kind(),
        VerdictKind::Allow
    );

    write_bundle(dir.path(), &format!("{PERMIT}{GATE}"));
    assert!(matches!(
        engine.reload().unwrap(),
        ReloadOutcome::Reloaded { .. }
    ));
    assert!(engine.last_reload_error().is_none());
    assert_eq!(
        engine.evaluate(&request(250_000, false)).kind(),
        VerdictKind::RequireApproval
    );
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

#[test]
fn watcher_reloads_on_change_and_keeps_the_last_good_bundle_on_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    write_bundle(dir.path(), PERMIT);
    let engine = Arc::new(PolicyEngine::load(dir.path()).unwrap());
    let _watcher = engine.watch(Duration::from_millis(50)).unwrap();
    let first = engine.version();

    // A valid change is picked up.
    write_bundle(dir.path(), &format!("{PERMIT}{GATE}"));
    wait_until("the valid bundle to load", || engine.version() != first);
    let second = engine.version();
    assert_eq!(
        engine.evaluate(&request(250_000, false)).kind(),
        VerdictKind::RequireApproval
    );

    // A broken change is refused; the last good bundle keeps serving.
    std::fs::write(
        dir.path().join("policies.cedar"),
        "permit (principal, action, resource) when { context.nope };",
    )
    .unwrap();
    wait_until("the broken bundle to be refused", || {
        engine.last_reload_error().is_some()
    });
    assert_eq!(engine.version(), second);
    assert_eq!(
        engine.evaluate(&request(250_000, false)).kind(),
        VerdictKind::RequireApproval
    );

    // Fixing it recovers. (The files are written one by one, so a reload may first see a
    // half-written bundle: wait for the final one, not for the first change.)
    write_bundle(dir.path(), PERMIT);
    wait_until("the fixed bundle to load", || {
        engine.last_reload_error().is_none() && engine.version() == first
    });
    assert_eq!(engine.version(), first);
    assert_eq!(
        engine.evaluate(&request(250_000, false)).kind(),
        VerdictKind::Allow
    );
}
