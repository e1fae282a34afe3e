//! `writ policy …`: validate, test, explain and diff Cedar policy bundles, offline.
//!
//! Exit codes: 0 when the command did what was asked (the bundle is valid, every case passed);
//! 1 when the answer is "no" (invalid bundle, failing case, `diff --exit-code` with changes) or the
//! command could not run.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use serde_json::json;
use writ_policy::{
    Bundle, BundleError, NamedRequest, SourceError, Verdict, diff, load_requests, run_bundle_tests,
};

use crate::Global;

#[derive(Debug, clap::Subcommand)]
pub enum PolicyCommand {
    /// Load a bundle and validate it strictly against its schema; print every error with
    /// file:line:column.
    Validate {
        /// The bundle directory (`*.cedar`, one `*.cedarschema`, `tests/`).
        dir: PathBuf,
    },
    /// Run the case files in DIR/tests/ and print pass/fail per case; exit 1 on any failure.
    Test { dir: PathBuf },
    /// Print the verdict, determining policies and reasons for the request(s) in FILE.
    Explain {
        dir: PathBuf,
        /// A request (YAML or JSON), a list of requests, or a case file.
        #[arg(long)]
        request: PathBuf,
    },
    /// List the requests whose verdict changes from the OLD bundle to the NEW one.
    Diff {
        old: PathBuf,
        new: PathBuf,
        /// Requests to compare on: a request, a list of requests, or a case file.
        #[arg(long)]
        requests: PathBuf,
        /// Exit 1 when any verdict changes (like `git diff --exit-code`).
        #[arg(long)]
        exit_code: bool,
    },
}

pub fn run(cmd: PolicyCommand, global: &Global) -> anyhow::Result<ExitCode> {
    match cmd {
        PolicyCommand::Validate { dir } => validate(&dir, global),
        PolicyCommand::Test { dir } => test(&dir, global),
        PolicyCommand::Explain { dir, request } => explain(&dir, &request, global),
        PolicyCommand::Diff {
            old,
            new,
            requests,
            exit_code,
        } => diff_bundles(&old, &new, &requests, exit_code, global),
    }
}

/// Loads a bundle; an invalid one is an error whose text lists every located problem.
fn load(dir: &Path) -> anyhow::Result<Bundle> {
    Bundle::load(dir).map_err(|e| {
        anyhow::anyhow!(
            "{e}\nrun `writ policy validate {}` for details",
            dir.display()
        )
    })
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn validate(dir: &Path, global: &Global) -> anyhow::Result<ExitCode> {
    match Bundle::load(dir) {
        Ok(bundle) => {
            let stats = bundle.slice_stats();
            if global.json {
                print_json(&json!({
                    "valid": true,
                    "dir": dir,
                    "version": bundle.version(),
                    "policies": bundle.policies(),
                    "slices": stats,
                    "warnings": bundle.warnings(),
                    "errors": [],
                }))?;
            } else {
                for w in bundle.warnings() {
                    eprintln!("warning: {}", indent(w));
                }
                println!(
                    "ok: {} is valid: {} policies over {} actions, version {}",
                    dir.display(),
                    bundle.policies().len(),
                    stats.actions,
                    bundle.version()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (BundleError::Invalid { .. } | BundleError::Layout { .. })) => {
            let errors: Vec<SourceError> = match &e {
                BundleError::Layout { problem, .. } => {
                    vec![SourceError {
                        file: PathBuf::from("."),
                        line: None,
                        column: None,
                        policy_id: None,
                        message: problem.clone(),
                        help: None,
                    }]
                }
                other => other.source_errors().to_vec(),
            };
            if global.json {
                print_json(&json!({
                    "valid": false,
                    "dir": dir,
                    "errors": errors,
                }))?;
            } else {
                for err in &errors {
                    eprintln!("error: {}", indent(&err_in(dir, err)));
                }
                eprintln!(
                    "{} is invalid ({} error{}); the bundle is refused",
                    dir.display(),
                    errors.len(),
                    if errors.len() == 1 { "" } else { "s" }
                );
            }
            Ok(ExitCode::FAILURE)
        }
        Err(e) => Err(e.into()),
    }
}

/// The error with its file shown under the bundle directory, so it can be opened as printed.
fn err_in(dir: &Path, e: &SourceError) -> SourceError {
    let mut e = e.clone();
    if e.file != Path::new(".") {
        e.file = dir.join(&e.file);
    } else {
        e.file = dir.to_path_buf();
    }
    e
}

fn indent(e: &SourceError) -> String {
    e.to_string().replace('\n', "\n  ")
}

fn test(dir: &Path, global: &Global) -> anyhow::Result<ExitCode> {
    let bundle = load(dir)?;
    let report = run_bundle_tests(&bundle, dir)?;
    if report.cases.is_empty() {
        anyhow::bail!(
            "no test cases in {}: add case files (*.yaml) with `cases:` there",
            dir.join("tests").display()
        );
    }
    if global.json {
        print_json(&report)?;
    } else {
        for c in &report.cases {
            let file = c.file.strip_prefix(dir).unwrap_or(&c.file);
            if c.passed {
                println!("PASS {}: {} ({})", file.display(), c.name, c.verdict.kind());
            } else {
                println!("FAIL {}: {}", file.display(), c.name);
                for f in &c.failures {
                    println!("     {f}");
                }
            }
        }
        println!(
            "\n{} passed, {} failed ({} cases, bundle {})",
            report.passed,
            report.failed,
            report.cases.len(),
            report.bundle_version
        );
    }
    Ok(if report.all_passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn print_verdict(name: &str, verdict: &Verdict) {
    let e = verdict.explanation();
    println!("{name}: {verdict}");
    if e.determining_policies.is_empty() {
        for r in &e.reasons {
            println!("  reason: {r}");
        }
    }
    for (i, id) in e.determining_policies.iter().enumerate() {
        match e.reasons.get(i) {
            Some(r) if e.reasons.len() == e.determining_policies.len() => {
                println!("  policy {id}: {r}")
            }
            _ => println!("  policy {id}"),
        }
    }
    if e.reasons.len() != e.determining_policies.len() && !e.determining_policies.is_empty() {
        for r in &e.reasons {
            println!("  reason: {r}");
        }
    }
    for err in &e.errors {
        println!("  error: {err}");
    }
    println!("  bundle: {}", e.bundle_version);
}

fn read_requests(path: &Path) -> anyhow::Result<Vec<NamedRequest>> {
    load_requests(path).with_context(|| format!("cannot use {} as requests", path.display()))
}

fn explain(dir: &Path, request: &Path, global: &Global) -> anyhow::Result<ExitCode> {
    let bundle = load(dir)?;
    let requests = read_requests(request)?;
    let verdicts: Vec<(String, Verdict)> = requests
        .into_iter()
        .map(|r| {
            let v = bundle.evaluate(&r.request);
            (r.name, v)
        })
        .collect();
    if global.json {
        let items: Vec<_> = verdicts
            .iter()
            .map(|(name, v)| json!({"name": name, "verdict": v}))
            .collect();
        // One request: the verdict itself; several: a list.
        match items.as_slice() {
            [one] => print_json(&one["verdict"])?,
            _ => print_json(&items)?,
        }
    } else {
        for (name, v) in &verdicts {
            print_verdict(name, v);
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn diff_bundles(
    old: &Path,
    new: &Path,
    requests: &Path,
    exit_code: bool,
    global: &Global,
) -> anyhow::Result<ExitCode> {
    let old_bundle = load(old)?;
    let new_bundle = load(new)?;
    let requests = read_requests(requests)?;
    let changes = diff(&old_bundle, &new_bundle, &requests);
    if global.json {
        print_json(&json!({
            "old_version": old_bundle.version().to_string(),
            "new_version": new_bundle.version().to_string(),
            "requests": requests.len(),
            "changed": changes,
        }))?;
    } else {
        for c in &changes {
            println!("{}: {} -> {}", c.name, c.old, c.new);
            let reasons = &c.new.explanation().reasons;
            if !reasons.is_empty() {
                println!("  now: {}", reasons.join("; "));
            }
        }
        println!(
            "{} of {} requests change verdict ({} -> {})",
            changes.len(),
            requests.len(),
            old_bundle.version(),
            new_bundle.version()
        );
    }
    Ok(if exit_code && !changes.is_empty() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
