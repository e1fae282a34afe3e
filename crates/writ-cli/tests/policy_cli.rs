//! The `writ policy` commands, end to end through the real executable and real bundle directories.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use serde_json::Value;

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

/// Runs `writ ARGS` and returns (exit code, stdout, stderr).
fn writ(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_writ"))
        .args(args)
        .env_remove("WRIT_DATABASE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Copies the example bundle (policies, schema, tests) into a fresh directory to modify it.
fn copy_examples(to: &Path) {
    for entry in std::fs::read_dir(examples()).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
    std::fs::create_dir_all(to.join("tests")).unwrap();
    for entry in std::fs::read_dir(examples().join("tests")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join("tests").join(entry.file_name())).unwrap();
    }
}

const PAYMENT: &str = r#"
principal: { agent: ops-agent, user: alice, groups: [engineering] }
action: payments.create_payment
resource: { type: Payee, id: supplier-17, attributes: { country: DE } }
context:
  args: { amount_cents: 250000, currency: EUR }
  grant: { id: g1, scopes: [payments.write], expires_at: 1893456000 }
  intent: pay invoice 113
  time: "2026-05-04T10:00:00+02:00"
"#;

#[test]
fn the_example_bundle_validates_and_all_its_cases_pass() {
    let dir = examples();
    let (code, out, err) = writ(&["policy", "validate", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("is valid: 18 policies"), "{out}");

    // This is the CI check of the example bundle: `writ policy test examples/policies`.
    let (code, out, err) = writ(&["policy", "test", s(&dir)]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(
            "PASS tests/payments.yaml: a payment of 1,000.01 needs one approver from finance"
        ),
        "{out}"
    );
    assert!(out.contains(" 0 failed"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");

    let (code, out, _) = writ(&["--json", "policy", "test", s(&dir)]);
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["failed"], 0);
    assert_eq!(
        report["passed"].as_u64().unwrap() as usize,
        report["cases"].as_array().unwrap().len()
    );
    assert!(
        report["bundle_version"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
}

#[test]
fn validate_refuses_an_undeclared_attribute_with_its_location() {
    let tmp = tempfile::tempdir().unwrap();
    copy_examples(tmp.path());
    std::fs::write(
        tmp.path().join("extra.cedar"),
        "@id(\"bad\")\n@reason(\"r\")\npermit (principal, action == Action::\"email.send\", resource)\nwhen { resource.tld == \"com\" };\n",
    )
    .unwrap();
    let (code, out, err) = writ(&["policy", "validate", s(tmp.path())]);
    assert_eq!(code, 1, "{out}{err}");
    let expected = format!("error: {}:4:8: ", tmp.path().join("extra.cedar").display());
    assert!(err.contains(&expected), "{err}");
    assert!(err.contains("tld"), "{err}");
    assert!(err.contains("the bundle is refused"), "{err}");

    let (code, out, _) = writ(&["--json", "policy", "validate", s(tmp.path())]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    let e = &v["errors"][0];
    assert_eq!(e["file"], "extra.cedar");
    assert_eq!(e["line"], 4);
    assert_eq!(e["column"], 8);
    assert_eq!(e["policy_id"], "bad");
}

#[test]
fn validate_refuses_an_undeclared_action() {
    let tmp = tempfile::tempdir().unwrap();
    copy_examples(tmp.path());
    std::fs::write(
        tmp.path().join("extra.cedar"),
        "\n@id(\"refunds\")\npermit (principal, action == Action::\"payments.refund\", resource);\n",
    )
    .unwrap();
    let (code, _, _) = writ(&["policy", "test", s(tmp.path())]);
    assert_eq!(code, 1, "an invalid bundle is not tested");
    let (code, out, _) = writ(&["--json", "policy", "validate", s(tmp.path())]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    let e = &v["errors"][0];
    assert_eq!(e["file"], "extra.cedar");
    assert_eq!(e["line"], 3);
    assert!(
        e["message"].as_str().unwrap().contains("payments.refund"),
        "{e}"
    );
}

#[test]
fn test_reports_each_failing_case_and_exits_non_zero() {
    let tmp = tempfile::tempdir().unwrap();
    copy_examples(tmp.path());
    // Loosen the rule: payments no longer need finance. The cases that say so must fail.
    std::fs::remove_file(tmp.path().join("payments.cedar")).unwrap();
    std::fs::write(
        tmp.path().join("payments.cedar"),
        "@id(\"payments-within-grant\")\n@reason(\"payments are allowed within the grant's payments.write scope\")\npermit (principal, action in Action::\"payments.write\", resource)\nwhen { context.grant.scopes.contains(\"payments.write\") };\n",
    )
    .unwrap();
    let (code, out, _) = writ(&["policy", "test", s(tmp.path())]);
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains(
            "FAIL tests/payments.yaml: a payment of 1,000.01 needs one approver from finance"
        ),
        "{out}"
    );
    assert!(
        out.contains("expected require_approval, got allow"),
        "{out}"
    );
    assert!(out.contains("PASS tests/email.yaml"), "{out}");

    let (code, out, _) = writ(&["--json", "policy", "test", s(tmp.path())]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert!(v["failed"].as_u64().unwrap() >= 1);
}

#[test]
fn explain_prints_verdict_policies_reasons_and_version() {
    let tmp = tempfile::tempdir().unwrap();
    let req = tmp.path().join("req.yaml");
    std::fs::write(&req, PAYMENT).unwrap();
    let (code, out, err) = writ(&["policy", "explain", s(&examples()), "--request", s(&req)]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("require_approval (1 of group:finance, expires in 30m)"),
        "{out}"
    );
    assert!(
        out.contains(
            "policy large-payment-needs-finance: payments over 1,000.00 need the approval"
        ),
        "{out}"
    );
    assert!(out.contains("bundle: sha256:"), "{out}");

    // The same request after finance approved: Allow.
    let approved =
        format!("{PAYMENT}  approval: {{ granted: true, approvers: [\"user:carol\"] }}\n");
    std::fs::write(&req, approved).unwrap();
    let (code, out, _) = writ(&[
        "--json",
        "policy",
        "explain",
        s(&examples()),
        "--request",
        s(&req),
    ]);
    assert_eq!(code, 0);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "allow");
    assert_eq!(
        v["explanation"]["determining_policies"][0],
        "payments-within-grant"
    );

    // A request file that is not a request names the file and the problem.
    std::fs::write(&req, "principal: 3\n").unwrap();
    let (code, _, err) = writ(&["policy", "explain", s(&examples()), "--request", s(&req)]);
    assert_eq!(code, 1);
    assert!(err.contains("req.yaml"), "{err}");
}

#[test]
fn diff_lists_the_requests_whose_verdict_changes() {
    let tmp = tempfile::tempdir().unwrap();
    let new = tmp.path().join("new");
    std::fs::create_dir(&new).unwrap();
    copy_examples(&new);
    // The new bundle lets email go to a partner domain as well.
    let email = std::fs::read_to_string(new.join("email.cedar")).unwrap();
    std::fs::write(
        new.join("email.cedar"),
        email.replace(
            "unless { resource.domain == \"example.com\" }",
            "unless { resource.domain == \"example.com\" || resource.domain == \"gmail.com\" }",
        ),
    )
    .unwrap();
    let requests = examples().join("tests/email.yaml");
    let (code, out, err) = writ(&[
        "policy",
        "diff",
        s(&examples()),
        s(&new),
        "--requests",
        s(&requests),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("email outside the company is denied with the reason: deny -> allow"),
        "{out}"
    );
    assert!(out.contains("1 of 3 requests change verdict"), "{out}");

    let (code, out, _) = writ(&[
        "--json",
        "policy",
        "diff",
        s(&examples()),
        s(&new),
        "--requests",
        s(&requests),
        "--exit-code",
    ]);
    assert_eq!(code, 1);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["changed"].as_array().unwrap().len(), 1);
    assert_eq!(v["changed"][0]["old"]["verdict"], "deny");
    assert_eq!(v["changed"][0]["new"]["verdict"], "allow");
}
