//! A policy bundle: a directory of `*.cedar` files and one `*.cedarschema`, validated strictly and
//! compiled into an indexed, immutable value that evaluates requests.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Effect, Entities, Policy, PolicyId, PolicySet, Request, Schema, ValidationMode, Validator,
};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::error::{BundleError, RequestError, SourceError, from_diagnostic, line_col};
use crate::request::{EntityModel, PolicyRequest};
use crate::slice::{Authorization, SliceStats, SlicedPolicySet};
use crate::verdict::{
    ApprovalRequirement, DEFAULT_EXPIRY, Explanation, Gate, Verdict, parse_duration,
};

/// The directory inside a bundle that holds case files; never part of the policy.
pub const TESTS_DIR: &str = "tests";

/// The reason given for the default Deny.
pub const NO_PERMIT_REASON: &str = "no policy permits this action";

/// What identifies the exact policy that decided: the SHA-256 of the bundle's policy and schema
/// files (path-sorted, each with its relative path), and the git commit when the directory is in a
/// git work tree (`<commit>-dirty` when the directory has uncommitted changes; the SHA-256 is what
/// identifies the content either way).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BundleVersion {
    /// Lowercase hex.
    pub sha256: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub git_commit: Option<String>,
}

impl fmt::Display for BundleVersion {
    /// `sha256:<hex>`, followed by `+git:<commit>` when known.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.sha256)?;
        if let Some(commit) = &self.git_commit {
            write!(f, "+git:{commit}")?;
        }
        Ok(())
    }
}

/// One policy and where it comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyInfo {
    /// The `@id` annotation, or `<file>:<line>` when there is none.
    pub id: String,
    pub file: PathBuf,
    pub line: u32,
    pub column: u32,
    pub effect: PolicyEffect,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<Gate>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyEffect {
    Permit,
    Forbid,
}

/// A bundle file in memory: its path relative to the bundle root, and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub path: PathBuf,
    pub text: String,
}

/// A loaded, validated, indexed policy bundle. Immutable; cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct Bundle {
    root: PathBuf,
    dir: Option<PathBuf>,
    version: BundleVersion,
    version_text: String,
    schema: Schema,
    policies: PolicySet,
    infos: Vec<PolicyInfo>,
    by_id: HashMap<PolicyId, usize>,
    sliced: SlicedPolicySet,
    model: EntityModel,
    warnings: Vec<SourceError>,
}

impl Bundle {
    /// Reads and validates the bundle in `dir`. Any parse or validation error refuses it whole.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, BundleError> {
        let dir = dir.as_ref();
        let files = read_bundle_files(dir)?;
        let mut bundle = Self::from_sources(dir, files)?;
        bundle.version.git_commit = git_commit(dir);
        bundle.dir = Some(dir.to_path_buf());
        bundle.version_text = bundle.version.to_string();
        Ok(bundle)
    }

    /// Validates a bundle given as files in memory (paths relative to `root`, which is only used
    /// in messages). The version is the hash of these files; no git commit.
    pub fn from_sources(
        root: impl Into<PathBuf>,
        mut files: Vec<SourceFile>,
    ) -> Result<Self, BundleError> {
        let root = root.into();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let version = BundleVersion {
            sha256: content_digest(&files),
            git_commit: None,
        };
        let schemas: Vec<&SourceFile> = files
            .iter()
            .filter(|f| has_ext(&f.path, "cedarschema"))
            .collect();
        let schema_file = match schemas.as_slice() {
            [one] => *one,
            [] => {
                return Err(BundleError::Layout {
                    dir: root,
                    problem:
                        "it has no *.cedarschema file; add one schema declaring the entity types, \
                              actions and context (see examples/policies)"
                            .into(),
                });
            }
            many => {
                let names: Vec<String> =
                    many.iter().map(|f| f.path.display().to_string()).collect();
                return Err(BundleError::Layout {
                    dir: root,
                    problem: format!(
                        "it has {} schema files ({}); keep exactly one",
                        many.len(),
                        names.join(", ")
                    ),
                });
            }
        };

        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let schema = match Schema::from_cedarschema_str(&schema_file.text) {
            Ok((schema, schema_warnings)) => {
                for w in schema_warnings {
                    warnings.push(from_diagnostic(&schema_file.path, &schema_file.text, &w));
                }
                Some(schema)
            }
            Err(e) => {
                errors.push(from_diagnostic(&schema_file.path, &schema_file.text, &e));
                None
            }
        };

        let mut policies = PolicySet::new();
        let mut infos: Vec<PolicyInfo> = Vec::new();
        let mut by_id: HashMap<PolicyId, usize> = HashMap::new();
        let mut texts: HashMap<PolicyId, &SourceFile> = HashMap::new();
        for file in files.iter().filter(|f| has_ext(&f.path, "cedar")) {
            for parsed in parse_policy_file(file, &mut errors) {
                let ParsedPolicy {
                    policy,
                    line,
                    column,
                } = parsed;
                let located = |message: String| {
                    SourceError::in_file(&file.path, message).at(Some((line, column)))
                };
                let id = match policy.annotation("id") {
                    Some("") => {
                        errors.push(located(
                            "@id(\"\") is empty; give the policy a unique id".into(),
                        ));
                        continue;
                    }
                    Some(id) => id.to_owned(),
                    None => {
                        let id = format!("{}:{line}", file.path.display());
                        warnings.push(located(format!(
                            "policy has no @id annotation; it is reported as `{id}`, which changes when lines move"
                        )));
                        id
                    }
                };
                let policy_id = PolicyId::new(&id);
                if let Some(&first) = by_id.get(&policy_id) {
                    let f = &infos[first];
                    errors.push(
                        located(format!(
                            "duplicate policy id `{id}` (first defined at {}:{}:{})",
                            f.file.display(),
                            f.line,
                            f.column
                        ))
                        .with_policy(&id),
                    );
                    continue;
                }
                let gate = match gate_of(&policy, &id) {
                    Ok(gate) => gate,
                    Err(message) => {
                        errors.push(located(message).with_policy(&id));
                        continue;
                    }
                };
                let reason = policy.annotation("reason").map(str::to_owned);
                if reason.is_none() {
                    warnings.push(
                        located("policy has no @reason annotation; its verdicts will explain themselves by id only".into())
                            .with_policy(&id),
                    );
                }
                let effect = match policy.effect() {
                    Effect::Permit => PolicyEffect::Permit,
                    Effect::Forbid => PolicyEffect::Forbid,
                };
                if let Err(e) = policies.add(policy.new_id(policy_id.clone())) {
                    errors.push(located(e.to_string()).with_policy(&id));
                    continue;
                }
                by_id.insert(policy_id.clone(), infos.len());
                texts.insert(policy_id, file);
                infos.push(PolicyInfo {
                    id,
                    file: file.path.clone(),
                    line,
                    column,
                    effect,
                    reason,
                    gate,
                });
            }
        }

        let Some(schema) = schema else {
            return Err(BundleError::Invalid { dir: root, errors });
        };
        let result = Validator::new(schema.clone()).validate(&policies, ValidationMode::Strict);
        for e in result.validation_errors() {
            let error = match texts.get(e.policy_id()) {
                Some(file) => from_diagnostic(&file.path, &file.text, e),
                None => SourceError::in_file(Path::new("?"), e.to_string()),
            };
            errors.push(error.with_policy(e.policy_id().to_string()));
        }
        for w in result.validation_warnings() {
            if let Some(file) = texts.get(w.policy_id()) {
                warnings.push(
                    from_diagnostic(&file.path, &file.text, w)
                        .with_policy(w.policy_id().to_string()),
                );
            }
        }
        if !errors.is_empty() {
            return Err(BundleError::Invalid { dir: root, errors });
        }
        let sliced =
            SlicedPolicySet::new(&policies, &schema).map_err(|e| BundleError::Invalid {
                dir: root.clone(),
                errors: vec![SourceError::in_file(
                    &root,
                    format!("cannot index the policies: {e}"),
                )],
            })?;
        Ok(Self {
            model: EntityModel::new(&schema),
            version_text: version.to_string(),
            root,
            dir: None,
            version,
            schema,
            policies,
            infos,
            by_id,
            sliced,
            warnings,
        })
    }

    /// The bundle directory, or the label given to [`Self::from_sources`]; used in messages.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory the bundle was loaded from (`None` when built from sources in memory).
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    pub fn version(&self) -> &BundleVersion {
        &self.version
    }

    /// The policies in file and line order.
    pub fn policies(&self) -> &[PolicyInfo] {
        &self.infos
    }

    pub fn policy(&self, id: &str) -> Option<&PolicyInfo> {
        self.by_id.get(&PolicyId::new(id)).map(|&i| &self.infos[i])
    }

    /// Problems that do not refuse the bundle (missing `@id` or `@reason`, Cedar lints).
    pub fn warnings(&self) -> &[SourceError] {
        &self.warnings
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Every policy of the bundle, with its `@id` as the Cedar policy id.
    pub fn policy_set(&self) -> &PolicySet {
        &self.policies
    }

    pub fn slice_stats(&self) -> SliceStats {
        self.sliced.stats()
    }

    /// The name of every action the schema declares, action groups included (`github.write`,
    /// `github.create_issue`).
    pub fn actions(&self) -> impl Iterator<Item = &str> {
        self.schema.actions().map(|a| a.id().unescaped())
    }

    /// The action groups `action` is in, per the schema (`github.write` for
    /// `github.create_issue`).
    pub fn action_groups(&self, action: &str) -> Vec<String> {
        self.model.action_groups(action)
    }

    /// The Cedar request and entities Writ evaluates for `request` (validated against the schema).
    pub fn to_cedar(&self, request: &PolicyRequest) -> Result<(Request, Entities), RequestError> {
        self.model.to_cedar(request)
    }

    /// The verdict for `request`. Never fails: a request that does not fit the schema is denied
    /// with the reason (fail closed).
    pub fn evaluate(&self, request: &PolicyRequest) -> Verdict {
        match self.model.to_cedar(request) {
            Ok((r, e)) => self.evaluate_cedar(&r, &e),
            Err(e) => Verdict::deny_because(
                format!("the request does not fit this policy bundle, so it is denied: {e}"),
                vec![e.0],
                &self.version_text,
            ),
        }
    }

    /// The verdict for a Cedar request already built (with the schema's action entities).
    pub fn evaluate_cedar(&self, request: &Request, entities: &Entities) -> Verdict {
        let auth = self.sliced.authorize(request, entities);
        self.verdict(auth, || self.sliced.satisfied_permits(request, entities))
    }

    fn order(&self, id: &PolicyId) -> usize {
        self.by_id.get(id).copied().unwrap_or(usize::MAX)
    }

    fn gate(&self, id: &PolicyId) -> Option<&Gate> {
        self.by_id
            .get(id)
            .and_then(|&i| self.infos[i].gate.as_ref())
    }

    fn explain(&self, mut ids: Vec<PolicyId>, errors: Vec<String>) -> Explanation {
        ids.sort_by_key(|id| self.order(id));
        ids.dedup();
        let reasons = ids
            .iter()
            .map(|id| {
                match self
                    .by_id
                    .get(id)
                    .and_then(|&i| self.infos[i].reason.clone())
                {
                    Some(reason) => reason,
                    None => format!("policy `{id}`"),
                }
            })
            .collect();
        Explanation {
            determining_policies: ids.iter().map(ToString::to_string).collect(),
            reasons,
            errors,
            bundle_version: self.version_text.clone(),
        }
    }

    fn verdict(&self, auth: Authorization, permits: impl FnOnce() -> Vec<PolicyId>) -> Verdict {
        if !auth.errors.is_empty() {
            let ids = auth.errors.iter().map(|(id, _)| id.clone()).collect();
            let messages = auth.errors.into_iter().map(|(_, m)| m).collect();
            let mut explanation = self.explain(ids, messages);
            explanation.reasons = vec![
                "a policy could not be evaluated, so the action is denied (fail closed)".to_owned(),
            ];
            return Verdict::Deny { explanation };
        }
        if !auth.forbids.is_empty() {
            let (gates, plain): (Vec<PolicyId>, Vec<PolicyId>) = auth
                .forbids
                .into_iter()
                .partition(|id| self.gate(id).is_some());
            if !plain.is_empty() {
                return Verdict::Deny {
                    explanation: self.explain(plain, Vec::new()),
                };
            }
            if permits().is_empty() {
                return Verdict::deny_because(NO_PERMIT_REASON, Vec::new(), &self.version_text);
            }
            let explanation = self.explain(gates, Vec::new());
            let gates = explanation
                .determining_policies
                .iter()
                .filter_map(|id| self.gate(&PolicyId::new(id)).cloned())
                .collect();
            return Verdict::RequireApproval {
                approval: ApprovalRequirement::merge(gates),
                explanation,
            };
        }
        if auth.permits.is_empty() {
            return Verdict::deny_because(NO_PERMIT_REASON, Vec::new(), &self.version_text);
        }
        Verdict::Allow {
            explanation: self.explain(auth.permits, Vec::new()),
        }
    }
}

struct ParsedPolicy {
    policy: Policy,
    line: u32,
    column: u32,
}

/// Parses one `.cedar` file into its policies in source order, with their positions.
fn parse_policy_file(file: &SourceFile, errors: &mut Vec<SourceError>) -> Vec<ParsedPolicy> {
    let set = match PolicySet::from_str(&file.text) {
        Ok(set) => set,
        Err(e) => {
            errors.extend(
                e.iter()
                    .map(|pe| from_diagnostic(&file.path, &file.text, pe)),
            );
            return Vec::new();
        }
    };
    // Cedar numbers the statements of a file policy0, policy1, … in source order.
    let index = |id: &PolicyId| {
        id.to_string()
            .trim_start_matches("policy")
            .parse::<usize>()
            .unwrap_or(usize::MAX)
    };
    let mut statements: Vec<(usize, Option<&Policy>, String)> = set
        .policies()
        .map(|p| (index(p.id()), Some(p), p.to_cedar().unwrap_or_default()))
        .chain(set.templates().map(|t| (index(t.id()), None, t.to_cedar())))
        .collect();
    statements.sort_by_key(|(i, _, _)| *i);
    let mut cursor = 0;
    let mut out = Vec::new();
    for (_, policy, text) in statements {
        let offset = match file
            .text
            .get(cursor..)
            .and_then(|rest| rest.find(text.as_str()))
        {
            Some(o) if !text.is_empty() => cursor + o,
            _ => cursor,
        };
        cursor = offset + text.len();
        let (line, column) = line_col(&file.text, offset);
        match policy {
            Some(policy) => out.push(ParsedPolicy { policy: policy.clone(), line, column }),
            None => errors.push(
                SourceError::in_file(&file.path, "templates (policies with ?principal or ?resource) cannot be linked in a bundle yet")
                    .at(Some((line, column)))
                    .with_help(Some("write the policy with concrete entities instead".into())),
            ),
        }
    }
    out
}

/// The gate a policy declares with `@approval`, checked for the shape Writ relies on.
fn gate_of(policy: &Policy, id: &str) -> Result<Option<Gate>, String> {
    let approval = policy.annotation("approval");
    let quorum = policy.annotation("quorum");
    let expires = policy.annotation("expires");
    let Some(approval) = approval else {
        if quorum.is_some() || expires.is_some() {
            return Err("@quorum and @expires only apply to an approval gate; add @approval(\"group:<name>\")".into());
        }
        return Ok(None);
    };
    if policy.effect() != Effect::Forbid {
        return Err("@approval marks an approval gate, which must be a `forbid` policy".into());
    }
    let mut approvers = Vec::new();
    for a in approval.split(',').map(str::trim).filter(|a| !a.is_empty()) {
        match a.split_once(':') {
            Some(("group" | "user", name)) if !name.trim().is_empty() => {
                approvers.push(a.to_owned())
            }
            _ => {
                return Err(format!(
                    "@approval lists `{a}`; write approvers as group:<name> or user:<id>, separated by commas"
                ));
            }
        }
    }
    if approvers.is_empty() {
        return Err("@approval lists no approver; write @approval(\"group:<name>\")".into());
    }
    let quorum = match quorum {
        None => 1,
        Some(q) => match q.trim().parse::<u32>() {
            Ok(n) if n >= 1 => n,
            _ => {
                return Err(format!(
                    "@quorum(\"{q}\") must be a whole number of approvers, at least 1"
                ));
            }
        },
    };
    if approvers.iter().all(|a| a.starts_with("user:")) && quorum as usize > approvers.len() {
        return Err(format!(
            "@quorum(\"{quorum}\") can never be met: only {} user(s) are listed in @approval",
            approvers.len()
        ));
    }
    let expires = match expires {
        None => DEFAULT_EXPIRY,
        Some(e) => parse_duration(e).map_err(|m| format!("@expires: {m}"))?,
    };
    if !ends_with_approval_unless(policy) {
        return Err(
            "an approval gate must end with `unless { context.approval.granted }`, or approving it could never allow the action"
                .into(),
        );
    }
    Ok(Some(Gate {
        policy_id: id.to_owned(),
        approvers,
        quorum,
        expires,
    }))
}

fn ends_with_approval_unless(policy: &Policy) -> bool {
    static EXPECTED: OnceLock<Option<serde_json::Value>> = OnceLock::new();
    let expected = EXPECTED.get_or_init(|| {
        let reference = Policy::from_str(
            "forbid(principal, action, resource) unless { context.approval.granted };",
        )
        .ok()?;
        reference.to_json().ok()?.get("conditions")?.get(0).cloned()
    });
    let last = policy.to_json().ok().and_then(|j| {
        j.get("conditions")
            .and_then(|c| c.as_array())
            .and_then(|c| c.last().cloned())
    });
    matches!((expected, last), (Some(e), Some(l)) if *e == l)
}

fn has_ext(path: &Path, ext: &str) -> bool {
    path.extension().is_some_and(|e| e == ext)
}

/// SHA-256 over `path \0 length(u64 BE) bytes` for each policy and schema file, path-sorted.
fn content_digest(files: &[SourceFile]) -> String {
    let mut h = Sha256::new();
    for f in files
        .iter()
        .filter(|f| has_ext(&f.path, "cedar") || has_ext(&f.path, "cedarschema"))
    {
        let path = f.path.to_string_lossy().replace('\\', "/");
        h.update(path.as_bytes());
        h.update([0]);
        h.update((f.text.len() as u64).to_be_bytes());
        h.update(f.text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// The policy and schema files under `dir` (recursively, skipping `tests/` and hidden entries).
fn read_bundle_files(dir: &Path) -> Result<Vec<SourceFile>, BundleError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| BundleError::Io { path, source }
    };
    if !dir.is_dir() {
        return Err(BundleError::Layout {
            dir: dir.to_path_buf(),
            problem: "it is not a directory".into(),
        });
    }
    let mut files = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let abs = dir.join(&rel);
        for entry in std::fs::read_dir(&abs).map_err(io(&abs))? {
            let entry = entry.map_err(io(&abs))?;
            let name = entry.file_name();
            let name_text = name.to_string_lossy();
            if name_text.starts_with('.') || (rel.as_os_str().is_empty() && name_text == TESTS_DIR)
            {
                continue;
            }
            let rel_path = rel.join(&name);
            let file_type = entry.file_type().map_err(io(&entry.path()))?;
            if file_type.is_dir() {
                pending.push(rel_path);
            } else if has_ext(&rel_path, "cedar") || has_ext(&rel_path, "cedarschema") {
                let text = std::fs::read_to_string(entry.path()).map_err(io(&entry.path()))?;
                files.push(SourceFile {
                    path: rel_path,
                    text,
                });
            }
        }
    }
    Ok(files)
}

/// `git rev-parse HEAD` in `dir`, when git is installed and `dir` is in a work tree, with `-dirty`
/// appended when files under `dir` differ from that commit.
fn git_commit(dir: &Path) -> Option<String> {
    let out = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "--verify", "--quiet", "HEAD"])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    if !(out.status.success()
        && commit.len() >= 40
        && commit.chars().all(|c| c.is_ascii_hexdigit()))
    {
        return None;
    }
    // Files changed since that commit are not what the commit names: say so, like `git describe`.
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["status", "--porcelain", "--untracked-files=all", "--", "."])
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let dirty = !status.status.success() || !status.stdout.is_empty();
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}
