//! The hostile suite: attacks on Writ by a hostile agent, a curious or malicious user, a holder
//! of a stolen key or token, and an upstream that echoes everything it receives, run as data
//! (`tests/hostile/cases.yaml`) against the real `writ serve` binary, on SQLite and on
//! PostgreSQL.
//!
//! Each case names its family, what it needs set up, the request (HTTP, MCP, the console, a
//! `writ` command, or bytes on a socket), and what must come back: the status, words that must
//! and must not be in the answer, how many requests reached the upstream, and which audit
//! entries were appended. After every case, and whatever the case says, the suite checks that no
//! vault secret — in any encoding: as it is, JSON- or HTML-escaped, percent-encoded, inside HTTP
//! Basic's base64, or hidden in `\uXXXX` escapes — is in any answer of the case, in the record
//! (`GET /v1/actions/{id}`) of any action the case touched, or in the log entries it appended.
//! At the end it verifies the whole log (`writ audit verify`), searches the JSON Lines and OCSF
//! exports for the secrets, and the server's own log for secrets, API keys and tokens.
//!
//! A case marked `since: holeN` waits for the fix of that hole of issue 14: it fails on a tree
//! without the fix. The run prints every case with its outcome, then a summary by family and
//! the failures grouped by the fix they wait for.
//!
//! `HOSTILE_CASE=words` runs only the cases whose name contains these words, `HOSTILE_FAMILY=mcp`
//! only one family, and `HOSTILE_SHOW=1` prints every answer. The PostgreSQL run needs `WRIT_TEST_POSTGRES_URL` (under CI it must be set);
//! without it that half is skipped with a reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

#[path = "hostile/case.rs"]
mod case;
#[path = "hostile/client.rs"]
mod client;
#[path = "hostile/config.rs"]
mod config;
#[path = "hostile/forge.rs"]
mod forge;
#[path = "hostile/secrets.rs"]
mod secrets;
#[path = "hostile/wire.rs"]
mod wire;
#[path = "hostile/world.rs"]
mod world;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use case::{AuditExpect, Backend, Case, Family};
use world::{Vars, World};

const CASES: &str = include_str!("hostile/cases.yaml");

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_sqlite() {
    suite(Backend::Sqlite, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_postgres() {
    let Some(pg) = common::PgSchema::create("writ_hostile").await else {
        return;
    };
    // The schema goes whatever the outcome; then the outcome is the test's.
    let outcome = tokio::spawn(suite(Backend::Postgres, Some(pg.url.clone()))).await;
    pg.drop_schema().await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// The cases as data: at least 100, every family covered.
#[test]
fn the_table_is_complete() {
    let cases = case::parse(CASES);
    assert!(cases.len() >= 100, "only {} cases", cases.len());
    for family in Family::ALL {
        assert!(
            cases.iter().filter(|c| c.family == family).count() >= 3,
            "family {family:?} has fewer than three cases"
        );
    }
}

fn selected(case: &Case, backend: Backend) -> bool {
    let name = std::env::var("HOSTILE_CASE").unwrap_or_default();
    let family = std::env::var("HOSTILE_FAMILY").unwrap_or_default();
    case.name.contains(&name)
        && (family.is_empty() || format!("{:?}", case.family).eq_ignore_ascii_case(&family))
        && case.backends.as_ref().is_none_or(|b| b.contains(&backend))
}

async fn suite(backend: Backend, database_url: Option<String>) {
    let label = format!("{backend:?}").to_lowercase();
    let started = Instant::now();
    let world = Arc::new(World::start(database_url).await);
    eprintln!(
        "[{label}] world ready in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    let cases: Vec<Case> = case::parse(CASES)
        .into_iter()
        .filter(|c| selected(c, backend))
        .collect();
    let mut failures: Vec<(Case, Vec<String>)> = Vec::new();
    let mut by_family: BTreeMap<Family, (usize, usize)> = BTreeMap::new();
    for case in cases {
        let w = world.clone();
        let c = case.clone();
        let t = Instant::now();
        let problems = match tokio::spawn(async move { run(&w, &c).await }).await {
            Ok(p) => p,
            Err(e) => vec![format!("the case panicked: {e}")],
        };
        let tally = by_family.entry(case.family).or_default();
        tally.0 += 1;
        let since = case
            .since
            .map(|f| format!(" (since {f:?})"))
            .unwrap_or_default();
        if problems.is_empty() {
            eprintln!(
                "[{label}] ok    {:?}: {} ({:.2} s)",
                case.family,
                case.name,
                t.elapsed().as_secs_f64()
            );
        } else {
            tally.1 += 1;
            eprintln!(
                "[{label}] FAIL  {:?}: {}{since}\n        {}",
                case.family,
                case.name,
                problems.join("\n        ")
            );
            failures.push((case, problems));
        }
    }
    let mut end = Vec::new();
    let all_cases =
        std::env::var("HOSTILE_CASE").is_err() && std::env::var("HOSTILE_FAMILY").is_err();
    if all_cases {
        end = final_checks(&world).await;
    }

    eprintln!(
        "[{label}] {} cases in {:.1} s:",
        by_family.values().map(|t| t.0).sum::<usize>(),
        started.elapsed().as_secs_f64()
    );
    for (family, (n, failed)) in &by_family {
        eprintln!("[{label}]   {family:?}: {n} cases, {failed} failed");
    }
    let mut waiting: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (c, _) in &failures {
        let key = c.since.map_or_else(
            || "no fix named: a regression".to_owned(),
            |f| format!("{f:?}"),
        );
        waiting.entry(key).or_default().push(c.name.clone());
    }
    for (fix, names) in &waiting {
        eprintln!(
            "[{label}]   failing, waiting for {fix}: {}",
            names.join("; ")
        );
    }
    for problem in &end {
        eprintln!("[{label}]   FAIL at the end: {problem}");
    }
    assert!(
        failures.is_empty() && end.is_empty(),
        "[{label}] {} of the hostile cases failed, {} end checks failed (see above)",
        failures.len(),
        end.len()
    );
}

/// Runs one case; what went wrong, in words (empty when it passed).
async fn run(world: &World, case: &Case) -> Vec<String> {
    let mut problems = Vec::new();
    let mut vars: Vars = world.vars.clone();
    let n = world.next();
    vars.insert("n".into(), n.to_string());
    let audit_start = world.audit_size().await;
    let mut seen: Vec<(String, case::Answer)> = Vec::new();

    for fixture in &case.setup {
        match world.fixture(*fixture, n).await {
            Ok(v) => vars.extend(v),
            Err(e) => return vec![format!("set-up {fixture:?} failed: {e}")],
        }
    }
    for (i, step) in case.before.iter().enumerate() {
        let answers = match world.send(&step.request, &vars).await {
            Ok(a) => a,
            Err(e) => return vec![format!("step {} could not be sent: {e}", i + 1)],
        };
        for a in &answers {
            if let Some(want) = &step.status
                && !want.contains(&a.status)
            {
                problems.push(format!(
                    "step {} got {} (expected {want:?}): {}",
                    i + 1,
                    a.status,
                    short(&a.full())
                ));
            }
            for (name, pointer) in &step.request.capture {
                match a
                    .json
                    .as_ref()
                    .and_then(|j| j.pointer(pointer))
                    .and_then(|v| v.as_str())
                {
                    Some(v) => {
                        vars.insert(name.clone(), v.to_owned());
                    }
                    None => problems.push(format!("step {} has no {pointer}", i + 1)),
                }
            }
            seen.push((format!("the answer to step {}", i + 1), a.clone()));
        }
    }
    if !problems.is_empty() {
        return problems;
    }

    let calls_before = world.echo.count();
    let audit_before = world.audit_size().await;
    let answers = match world.send(&case.send, &vars).await {
        Ok(a) => a,
        Err(e) => return vec![format!("the request could not be sent: {e}")],
    };
    let calls = world.echo.count() - calls_before;
    let new = world.entries_since(audit_before).await;

    let mut full = String::new();
    for a in &answers {
        if std::env::var_os("HOSTILE_SHOW").is_some() {
            eprintln!("        {}: {} {}", case.name, a.status, short(&a.body));
        }
        if !case.status.contains(&a.status) {
            problems.push(format!(
                "status {} (expected {:?}): {}",
                a.status,
                case.status,
                short(&a.full())
            ));
        }
        full.push_str(&a.full());
        full.push('\n');
        seen.push(("the answer".into(), a.clone()));
    }
    for w in &case.words {
        let w = World::expand(w, &vars).unwrap_or_else(|e| e);
        if !full.contains(w.as_str()) {
            problems.push(format!("{w:?} is not in the answer: {}", short(&full)));
        }
    }
    for w in &case.absent {
        let w = World::expand(w, &vars).unwrap_or_else(|e| e);
        if full.contains(w.as_str()) {
            problems.push(format!("{w:?} is in the answer: {}", short(&full)));
        }
    }
    if calls != case.calls {
        problems.push(format!(
            "{calls} requests reached the upstream (expected {})",
            case.calls
        ));
    }
    let kinds: Vec<String> = new.iter().map(|(_, k, _)| k.clone()).collect();
    let sorted = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v
    };
    match &case.audit {
        AuditExpect::Any => {}
        AuditExpect::Exactly(want) if sorted(want) != sorted(&kinds) => {
            problems.push(format!("audit entries {kinds:?} (expected {want:?})"))
        }
        AuditExpect::Has(want) => {
            let mut left = kinds.clone();
            for w in want {
                match left.iter().position(|k| k == w) {
                    Some(i) => {
                        left.remove(i);
                    }
                    None => problems.push(format!("no {w} entry among {kinds:?}")),
                }
            }
        }
        AuditExpect::Exactly(_) => {}
    }

    // Whatever the case expects: no secret in its answers, its records or its entries.
    for (what, a) in &seen {
        problems.extend(world.leaks(what, &a.full(), a.json.as_ref()));
    }
    let entries = world.entries_since(audit_start).await;
    let mut actions = BTreeSet::new();
    for (action, kind, text) in &entries {
        let json = serde_json::from_str(text).ok();
        problems.extend(world.leaks(&format!("a {kind} entry"), text, json.as_ref()));
        if !kind.contains('.') && kind != "admin" {
            actions.insert(action.clone());
        }
    }
    let admin = vars["key.admin"].clone();
    for action in actions {
        let record = world
            .http
            .get(format!("{}/v1/actions/{action}", world.server.url))
            .bearer_auth(&admin)
            .send()
            .await;
        if let Ok(r) = record {
            let text = r.text().await.unwrap_or_default();
            let json = serde_json::from_str(&text).ok();
            problems.extend(world.leaks(&format!("the record of {action}"), &text, json.as_ref()));
        }
    }
    problems
}

/// The whole log verifies; the exports and the server's log hold no secret, key or token.
async fn final_checks(world: &World) -> Vec<String> {
    let mut problems = Vec::new();
    let run = |args: &[&str]| {
        let out = world.env.writ().args(args).output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let (ok, text) = run(&["audit", "verify"]);
    if !ok {
        problems.push(format!("writ audit verify failed: {}", short(&text)));
    }
    for format in ["jsonl", "ocsf"] {
        let (ok, text) = run(&["audit", "export", "--format", format]);
        if !ok {
            problems.push(format!("writ audit export --format {format} failed"));
        }
        // One line per export: the cases above name the entries that leaked.
        let mut lines = 0;
        let mut names = BTreeSet::new();
        for line in text.lines() {
            let json = serde_json::from_str(line).ok();
            let found = world.leaks("", line, json.as_ref()).join(" ");
            if !found.is_empty() {
                lines += 1;
                for s in &world.secrets {
                    if found.contains(&format!("credential {} ", s.name)) {
                        names.insert(s.name.clone());
                    }
                }
            }
        }
        if lines > 0 {
            problems.push(format!(
                "{lines} lines of the {format} export hold credentials ({})",
                names.into_iter().collect::<Vec<_>>().join(", ")
            ));
        }
    }
    let log = std::fs::read_to_string(&world.log).unwrap_or_default();
    problems.extend(world.leaks("the server's log", &log, None));
    for (name, value) in &world.vars {
        let real = name.starts_with("key.")
            || name.starts_with("agent.")
            || (name.starts_with("tok.") && value.len() > 100);
        if real && log.contains(value.as_str()) {
            problems.push(format!("the server's log holds {name}"));
        }
    }
    problems
}

fn short(text: &str) -> String {
    let text = text.replace('\n', " ");
    if text.chars().count() > 600 {
        format!("{}…", text.chars().take(600).collect::<String>())
    } else {
        text
    }
}
