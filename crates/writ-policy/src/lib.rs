//! Writ's policy engine: Cedar policy bundles, three-way verdicts and their explanations.
//!
//! This crate loads a policy bundle (a directory of `*.cedar` files and one `*.cedarschema`),
//! validates it strictly, and answers one question for the pipeline: may this agent, acting for this
//! user, perform this action on this resource now? The answer is a [`Verdict`]: `Allow`, `Deny`, or
//! `RequireApproval` (when the only obstacles are approval gates), always with an [`Explanation`]
//! naming the determining policies, their reasons and the bundle version. It also runs case files
//! (`writ policy test`), evaluates a candidate bundle in shadow, reloads a bundle when its directory
//! changes, and slices the policy set so a request evaluates only the policies that can apply.
//!
//! It is not the pipeline: it does not authenticate, check grants, hold approvals, call connectors
//! or write the audit log. It does no network or database I/O and needs no async runtime; the only
//! I/O is reading bundle files, asking `git` for the commit, and watching the directory.
//!
//! Modules: `bundle` (load, validate, version, verdict logic), `request` (the `PolicyRequest` and
//! its mapping onto Cedar), `verdict` (`Verdict`, `Explanation`, approval requirements), `slice`
//! (policies indexed by action and principal), `engine` (the serving bundle, reload, watch,
//! shadow), `cases` (case files and their runner), `error` (load and case errors with file:line).

mod bundle;
mod cases;
mod engine;
mod error;
mod request;
mod slice;
mod verdict;

pub use bundle::{
    Bundle, BundleVersion, NO_PERMIT_REASON, PolicyEffect, PolicyInfo, SourceFile, TESTS_DIR,
};
pub use cases::{
    Case, CaseOutcome, NamedRequest, TestReport, VerdictChange, case_files, diff, load_case_file,
    load_requests, run_bundle_tests, run_case,
};
pub use engine::{BundleWatcher, PolicyEngine, ReloadOutcome, ShadowResult};
pub use error::{BundleError, CaseError, RequestError, SourceError, WatchError};
pub use request::{
    ApprovalFacts, EntityRef, PolicyRequest, Principal, RequestContext, RequestTime, Resource,
    ToolFacts,
};
pub use slice::{Authorization, SliceStats, SlicedPolicySet};
pub use verdict::{ApprovalRequirement, DEFAULT_EXPIRY, Explanation, Gate, Verdict, VerdictKind};

/// The Cedar crate this engine is built on, for callers that build Cedar values directly.
pub use cedar_policy;
