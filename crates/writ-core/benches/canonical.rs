//! The per-entry CPU cost of the log: canonicalising an entry and checking stored bytes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use writ_core::{ActionId, AuditEntry, EntryKind, NewEntry, Timestamp};

fn entry() -> NewEntry {
    NewEntry::new(
        ActionId::new("act_0192f3a4b5c6d7e8f90123456789abcd").unwrap(),
        EntryKind::Executed,
        Some("agent:deploy-bot".into()),
        json!({
            "connector": "github", "operation": "merge_pull_request",
            "args": {"repo": "acme/api", "pull_number": 1234, "merge_method": "squash"},
            "user": "user:alice", "grant": "grant_01J9Z3", "credential": "github-app@3",
            "intent": "merge the approved fix for the login timeout", "outcome": "success"
        }),
    )
    .unwrap()
}

fn bench(c: &mut Criterion) {
    let time = Timestamp::now();
    c.bench_function("prepare entry (caller side)", |b| {
        b.iter(|| entry().prepare().unwrap())
    });
    let prepared = entry().prepare().unwrap();
    c.bench_function("sequence prepared entry (writer side)", |b| {
        b.iter(|| prepared.canonical_bytes(123_456, time))
    });
    let bytes = prepared.canonical_bytes(123_456, time);
    c.bench_function("decode + check canonical entry (verifier)", |b| {
        b.iter(|| AuditEntry::from_canonical(&bytes).unwrap())
    });
    c.bench_function("check canonical entry header (verifier fast path)", |b| {
        b.iter(|| AuditEntry::check_canonical(&bytes).unwrap().seq)
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
