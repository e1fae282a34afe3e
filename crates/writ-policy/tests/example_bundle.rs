//! The example bundle at `examples/policies` validates and every one of its cases passes. This is
//! what CI relies on to keep the default policy honest.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;

use writ_policy::{Bundle, run_bundle_tests};

fn example_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../examples/policies")
}

#[test]
fn example_bundle_validates_without_warnings() {
    let bundle = Bundle::load(example_dir()).unwrap_or_else(|e| panic!("{e}"));
    assert!(bundle.warnings().is_empty(), "{:?}", bundle.warnings());
    assert!(bundle.policies().len() >= 10);
    assert!(bundle.policies().iter().all(|p| p.reason.is_some()));
}

#[test]
fn example_bundle_cases_all_pass() {
    let dir = example_dir();
    let bundle = Bundle::load(&dir).unwrap();
    let report = run_bundle_tests(&bundle, &dir).unwrap();
    let failures: Vec<String> = report
        .cases
        .iter()
        .filter(|c| !c.passed)
        .map(|c| {
            format!(
                "{} / {}: {}",
                c.file.display(),
                c.name,
                c.failures.join("; ")
            )
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert!(report.passed >= 25, "only {} cases", report.passed);
}

/// Every policy of the example is exercised by some case as a determining policy, so no rule
/// goes untested.
#[test]
fn every_example_policy_determines_some_case() {
    let dir = example_dir();
    let bundle = Bundle::load(&dir).unwrap();
    let report = run_bundle_tests(&bundle, &dir).unwrap();
    for p in bundle.policies() {
        assert!(
            report.cases.iter().any(|c| c
                .verdict
                .explanation()
                .determining_policies
                .contains(&p.id)),
            "no case is decided by `{}`",
            p.id
        );
    }
}
