//! Keeps the house in order, as rust-analyzer's `tidy` does: every crate's source files stay
//! under 800 lines (a file that grows past it is split by feature), every `lib.rs` says in its
//! crate doc what each of its modules is, the gateway's state is reached through its methods only
//! (no `pub` field: nothing outside the core takes the database and appends around the
//! pipeline), and admin events are named only by `AdminEvent` (one fact, one word).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `.rs` file under each crate's `src/`, except test modules kept in their own files
/// (`tests.rs`, `tests/…`).
fn sources() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack: Vec<PathBuf> = std::fs::read_dir(crates_dir())
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .filter(|p| p.is_dir())
        .collect();
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                if name != "tests" {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") && name != "tests.rs" {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn shown(path: &Path) -> String {
    path.strip_prefix(crates_dir())
        .unwrap_or(path)
        .display()
        .to_string()
}

#[test]
fn no_source_file_is_over_800_lines() {
    let long: Vec<String> = sources()
        .iter()
        .filter_map(|p| {
            let n = std::fs::read_to_string(p).unwrap().lines().count();
            (n > MAX_LINES).then(|| format!("{} ({n} lines)", shown(p)))
        })
        .collect();
    assert!(
        long.is_empty(),
        "source files over {MAX_LINES} lines; split them by feature: {long:#?}"
    );
}

#[test]
fn every_crate_doc_names_its_modules() {
    let mut missing = Vec::new();
    for lib in sources().iter().filter(|p| p.ends_with("lib.rs")) {
        let text = std::fs::read_to_string(lib).unwrap();
        let doc: String = text
            .lines()
            .filter(|l| l.starts_with("//!"))
            .collect::<Vec<_>>()
            .join("\n");
        assert!(!doc.is_empty(), "{} has no crate doc", shown(lib));
        for line in text.lines() {
            let line = line.trim();
            let module = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))
                .and_then(|rest| rest.strip_suffix(';'));
            if let Some(m) = module
                && !doc.contains(&format!("`{m}`"))
                && !doc.contains(&format!("`{m}/`"))
                && !doc.contains(&format!("`{m}.rs`"))
            {
                missing.push(format!("{}: {m}", shown(lib)));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "modules the crate doc does not name (write one line on what each is): {missing:#?}"
    );
}

#[test]
fn the_gateway_has_no_public_field() {
    let text =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/gateway.rs"))
            .unwrap();
    let start = text
        .find("pub struct Gateway {")
        .expect("gateway.rs defines Gateway");
    let body = &text[start..];
    let body = &body[..body.find("\n}").expect("the struct ends")];
    let public: Vec<&str> = body
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| l.starts_with("pub ") && !l.starts_with("pub(crate)"))
        .collect();
    assert!(
        public.is_empty(),
        "Gateway fields must be private (reach them through methods): {public:#?}"
    );
}

#[test]
fn admin_events_are_named_only_by_the_enum() {
    let vocabulary = crates_dir().join("writ-gateway/src/admin/events.rs");
    let offenders: Vec<String> = sources()
        .iter()
        .filter(|p| **p != vocabulary)
        .filter(|p| std::fs::read_to_string(p).unwrap().contains("\"event\":"))
        .map(|p| shown(p))
        .collect();
    assert!(
        offenders.is_empty(),
        "admin entries built by hand; use writ_gateway::admin::AdminEvent: {offenders:#?}"
    );
}
