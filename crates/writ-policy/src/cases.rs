//! Case files and request files: policy tested offline, like code.
//!
//! A case file (`<bundle>/tests/*.yaml`) is a list of requests with the verdict each must get:
//!
//! ```yaml
//! defaults:            # merged under every case's request (objects merge, the case wins)
//!   principal: { agent: deploy-bot, user: alice, groups: [eng] }
//!   context: { time: "2026-05-04T10:00:00Z", grant: { id: g1, scopes: [github.read] } }
//! cases:
//!   - name: reading a repository is allowed within the grant
//!     request: { action: github.get_file, resource: { type: Repo, id: acme/api } }
//!     expect: allow
//!     reasons: ["within the grant"]     # optional: each must appear in one of the reasons
//!     policies: [reads-within-grant]    # optional: each must be a determining policy
//!     approvers: [group:finance]        # optional, for require_approval
//! ```
//!
//! A request file (`writ policy explain --request`, `writ policy diff --requests`) holds one request,
//! a list of requests (each may carry a `name`), or a case file whose requests are taken.
//! YAML is a superset of JSON, so JSON files work too.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::bundle::{Bundle, TESTS_DIR};
use crate::engine::ShadowResult;
use crate::error::CaseError;
use crate::request::PolicyRequest;
use crate::verdict::{Verdict, VerdictKind};

/// One file of cases.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseFileRepr {
    #[serde(default)]
    defaults: Option<Value>,
    cases: Vec<CaseRepr>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct CaseRepr {
    name: String,
    request: Value,
    expect: VerdictKind,
    #[serde(default)]
    reasons: Vec<String>,
    #[serde(default)]
    policies: Vec<String>,
    #[serde(default)]
    approvers: Option<Vec<String>>,
}

/// A case: a named request and what its verdict must be.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Case {
    /// The file it comes from (as given to [`load_case_file`]).
    pub file: PathBuf,
    pub name: String,
    pub request: PolicyRequest,
    pub expect: VerdictKind,
    /// Each must be a substring of one of the verdict's reasons.
    pub reasons: Vec<String>,
    /// Each must be a determining policy id.
    pub policies: Vec<String>,
    /// For `require_approval`: the merged approvers, exactly (order ignored).
    pub approvers: Option<Vec<String>>,
}

/// What one case gave.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CaseOutcome {
    pub file: PathBuf,
    pub name: String,
    pub expected: VerdictKind,
    pub verdict: Verdict,
    pub passed: bool,
    /// Why it failed; empty when it passed.
    pub failures: Vec<String>,
}

/// The result of running every case of a bundle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestReport {
    pub bundle_version: String,
    pub passed: usize,
    pub failed: usize,
    pub cases: Vec<CaseOutcome>,
}

impl TestReport {
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }
}

/// A request with an optional name, as read from a request file.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NamedRequest {
    pub name: String,
    pub request: PolicyRequest,
}

fn read_yaml(path: &Path) -> Result<Value, CaseError> {
    let text = std::fs::read_to_string(path).map_err(|source| CaseError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_yaml_ng::from_str::<Value>(&text).map_err(|e| CaseError::Invalid {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Merges `over` into `base`: objects member by member (recursively), anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn to_request(path: &Path, what: &str, value: Value) -> Result<PolicyRequest, CaseError> {
    serde_json::from_value(value).map_err(|e| CaseError::Invalid {
        path: path.to_path_buf(),
        message: format!("{what}: not a policy request: {e}"),
    })
}

fn parse_cases(path: &Path, value: Value) -> Result<Vec<Case>, CaseError> {
    let file: CaseFileRepr = serde_json::from_value(value).map_err(|e| CaseError::Invalid {
        path: path.to_path_buf(),
        message: format!("not a case file (expected `cases:` and optionally `defaults:`): {e}"),
    })?;
    let mut out = Vec::with_capacity(file.cases.len());
    for (i, c) in file.cases.into_iter().enumerate() {
        let mut request = file
            .defaults
            .clone()
            .unwrap_or_else(|| Value::Object(Map::new()));
        merge(&mut request, c.request);
        let what = format!("case {} (`{}`)", i + 1, c.name);
        out.push(Case {
            file: path.to_path_buf(),
            request: to_request(path, &what, request)?,
            name: c.name,
            expect: c.expect,
            reasons: c.reasons,
            policies: c.policies,
            approvers: c.approvers,
        });
    }
    Ok(out)
}

/// Reads one case file.
pub fn load_case_file(path: impl AsRef<Path>) -> Result<Vec<Case>, CaseError> {
    let path = path.as_ref();
    parse_cases(path, read_yaml(path)?)
}

/// The case files of a bundle: `<dir>/tests/*.yaml` and `*.yml` (recursively), path-sorted.
pub fn case_files(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>, CaseError> {
    let root = dir.as_ref().join(TESTS_DIR);
    let mut out = Vec::new();
    if !root.is_dir() {
        return Ok(out);
    }
    let mut pending = vec![root];
    while let Some(d) = pending.pop() {
        let entries = std::fs::read_dir(&d).map_err(|source| CaseError::Io {
            path: d.clone(),
            source,
        })?;
        for entry in entries {
            let entry = entry.map_err(|source| CaseError::Io {
                path: d.clone(),
                source,
            })?;
            let path = entry.path();
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Reads requests: one request, a list of requests (each optionally with `name`), or a case file.
pub fn load_requests(path: impl AsRef<Path>) -> Result<Vec<NamedRequest>, CaseError> {
    let path = path.as_ref();
    let value = read_yaml(path)?;
    let invalid = |message: String| CaseError::Invalid {
        path: path.to_path_buf(),
        message,
    };
    match value {
        Value::Object(ref m) if m.contains_key("cases") => Ok(parse_cases(path, value)?
            .into_iter()
            .map(|c| NamedRequest {
                name: c.name,
                request: c.request,
            })
            .collect()),
        Value::Object(_) => Ok(vec![named(path, 0, value)?]),
        Value::Array(items) => {
            if items.is_empty() {
                return Err(invalid("the file holds no requests".into()));
            }
            items
                .into_iter()
                .enumerate()
                .map(|(i, v)| named(path, i, v))
                .collect()
        }
        _ => Err(invalid(
            "expected a request (a mapping), a list of requests, or a case file".into(),
        )),
    }
}

fn named(path: &Path, index: usize, mut value: Value) -> Result<NamedRequest, CaseError> {
    let name = match value.as_object_mut().and_then(|m| m.remove("name")) {
        Some(Value::String(s)) => s,
        Some(_) => {
            return Err(CaseError::Invalid {
                path: path.to_path_buf(),
                message: format!("request {}: `name` must be a string", index + 1),
            });
        }
        None => format!("request {}", index + 1),
    };
    let request = to_request(path, &format!("request {} (`{name}`)", index + 1), value)?;
    Ok(NamedRequest { name, request })
}

/// Runs one case against `bundle`.
pub fn run_case(bundle: &Bundle, case: &Case) -> CaseOutcome {
    let mut failures = Vec::new();
    // A request that does not fit the schema is a mistake in the case, not a passing Deny.
    if let Err(e) = bundle.to_cedar(&case.request) {
        failures.push(format!("the request does not fit the bundle's schema: {e}"));
    }
    let verdict = bundle.evaluate(&case.request);
    let explanation = verdict.explanation();
    if verdict.kind() != case.expect {
        failures.push(format!(
            "expected {}, got {} ({})",
            case.expect,
            verdict.kind(),
            explanation.reasons.join("; ")
        ));
    }
    for r in &case.reasons {
        if !explanation.reasons.iter().any(|have| have.contains(r)) {
            failures.push(format!(
                "no reason contains {r:?}; reasons: {:?}",
                explanation.reasons
            ));
        }
    }
    for p in &case.policies {
        if !explanation.determining_policies.contains(p) {
            failures.push(format!(
                "policy `{p}` is not determining; determining: {:?}",
                explanation.determining_policies
            ));
        }
    }
    if let Some(expected) = &case.approvers {
        let mut want = expected.clone();
        want.sort();
        let mut have = verdict
            .approval()
            .map(|a| a.approvers.clone())
            .unwrap_or_default();
        have.sort();
        if want != have {
            failures.push(format!("expected approvers {want:?}, got {have:?}"));
        }
    }
    CaseOutcome {
        file: case.file.clone(),
        name: case.name.clone(),
        expected: case.expect,
        passed: failures.is_empty(),
        failures,
        verdict,
    }
}

/// Runs every case file of the bundle loaded from `dir` (`dir/tests/`).
pub fn run_bundle_tests(bundle: &Bundle, dir: impl AsRef<Path>) -> Result<TestReport, CaseError> {
    let mut cases = Vec::new();
    for file in case_files(dir)? {
        for case in load_case_file(&file)? {
            cases.push(run_case(bundle, &case));
        }
    }
    let passed = cases.iter().filter(|c| c.passed).count();
    Ok(TestReport {
        bundle_version: bundle.version().to_string(),
        failed: cases.len() - passed,
        passed,
        cases,
    })
}

/// A request whose outcome differs between two bundles.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VerdictChange {
    pub name: String,
    pub old: Verdict,
    pub new: Verdict,
}

/// The requests whose verdict (kind, or approval requirement) differs between `old` and `new`.
pub fn diff(old: &Bundle, new: &Bundle, requests: &[NamedRequest]) -> Vec<VerdictChange> {
    requests
        .iter()
        .filter_map(|r| {
            let s = ShadowResult::compare(old, new, &r.request);
            s.disagrees.then(|| VerdictChange {
                name: r.name.clone(),
                old: s.live,
                new: s.candidate,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_is_deep_and_the_case_wins() {
        let mut base = json!({"a": {"x": 1, "y": [1]}, "b": 1});
        merge(&mut base, json!({"a": {"y": [2], "z": 3}, "c": 4}));
        assert_eq!(
            base,
            json!({"a": {"x": 1, "y": [2], "z": 3}, "b": 1, "c": 4})
        );
    }
}
