//! The log's behaviour through the `Store` trait, on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{Db, entry};
use writ_audit::{MemoryTree, leaf_hash};
use writ_core::{EntryKind, Timestamp};
use writ_store::{EntryFilter, VerifyOptions};

async fn appends_are_sequenced_and_provable(db: Db) {
    let store = db.store.clone();
    assert_eq!(store.size().await.unwrap(), 0);
    assert_eq!(
        store.tree_head().await.unwrap().root,
        writ_audit::empty_root()
    );
    let mut reference = MemoryTree::new();
    for chunk in [1u64, 2, 5, 1, 8, 3, 13] {
        let start = store.size().await.unwrap();
        let receipts = store
            .append((start..start + chunk).map(entry).collect())
            .await
            .unwrap();
        let seqs: Vec<u64> = receipts.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, (start..start + chunk).collect::<Vec<_>>());
        for r in &receipts {
            reference.push(r.leaf_hash);
        }
    }
    let n = store.size().await.unwrap();
    assert_eq!(n, 33);
    // Stored bytes are the canonical entries whose leaf hashes the receipts returned.
    let rows = store.entries(0, 1000).await.unwrap();
    assert_eq!(rows.len() as u64, n);
    for row in &rows {
        assert_eq!(leaf_hash(&row.entry), row.leaf_hash);
        let e = row.decode().unwrap();
        assert_eq!(e.seq, row.seq);
        assert_eq!(e.action_id.as_str(), format!("act_{}", row.seq));
    }
    // Times never go backwards.
    assert!(rows.windows(2).all(|w| w[0].time_us <= w[1].time_us));
    for size in 0..=n {
        let root = store.root_at(size).await.unwrap();
        assert_eq!(root, reference.root(size).unwrap(), "root at {size}");
        for seq in 0..size {
            let proof = store.inclusion_proof(seq, size).await.unwrap();
            assert_eq!(proof, reference.inclusion_proof(seq, size).unwrap());
            writ_audit::verify_inclusion(&rows[seq as usize].leaf_hash, seq, size, &proof, &root)
                .unwrap();
        }
        for old in 1..=size {
            let proof = store.consistency_proof(old, size).await.unwrap();
            let old_root = store.root_at(old).await.unwrap();
            writ_audit::verify_consistency(old, size, &old_root, &root, &proof).unwrap();
        }
    }
    assert!(store.inclusion_proof(n, n).await.is_err());
    assert!(
        store
            .root_at(n + 1)
            .await
            .unwrap_err()
            .to_string()
            .contains("no root at size")
    );
    assert!(store.consistency_proof(1, n + 1).await.is_err());

    // A fresh process resumes the tree where it was.
    drop(store);
    let store = db.reopen().await;
    store.append(vec![entry(100)]).await.unwrap();
    let r = store.tree_head().await.unwrap();
    assert_eq!(r.size, n + 1);
    let report = writ_store::verify_log(store.as_ref(), &VerifyOptions::default(), &|_| {})
        .await
        .unwrap();
    assert_eq!(report.size, n + 1);
    assert_eq!(report.root, r.root.to_hex());
    drop(store);
    db.cleanup().await;
}
on_both_backends!(appends_are_sequenced_and_provable);

async fn concurrent_appends_group_commit(db: Db) {
    let store = db.store.clone();
    let mut tasks = Vec::new();
    for w in 0..64u64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..20 {
                let r = store
                    .append(vec![entry(w * 1000 + i), entry(w * 1000 + i + 500)])
                    .await
                    .unwrap();
                // One append's entries are consecutive: a group is never interleaved.
                assert_eq!(r[1].seq, r[0].seq + 1);
                seqs.extend(r.iter().map(|r| r.seq));
            }
            seqs
        }));
    }
    let mut all = BTreeSet::new();
    for t in tasks {
        for seq in t.await.unwrap() {
            assert!(all.insert(seq), "sequence number {seq} given twice");
        }
    }
    assert_eq!(all.len(), 64 * 20 * 2);
    assert_eq!(
        all.iter().copied().collect::<Vec<_>>(),
        (0..2560).collect::<Vec<_>>()
    );
    // A second store on the same database (another process) appends safely in between.
    let other = db.reopen().await;
    other.append(vec![entry(9999)]).await.unwrap();
    store.append(vec![entry(10000)]).await.unwrap();
    assert_eq!(store.size().await.unwrap(), 2562);
    writ_store::verify_log(store.as_ref(), &VerifyOptions::default(), &|_| {})
        .await
        .unwrap();
    drop((store, other));
    db.cleanup().await;
}
on_both_backends!(concurrent_appends_group_commit);

async fn log_tables_refuse_update_and_delete(db: Db) {
    db.store.append((0..4).map(entry).collect()).await.unwrap();
    for sql in [
        "UPDATE audit_entries SET actor = 'x' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq = 3",
        "UPDATE audit_nodes SET idx = idx + 10",
        "DELETE FROM audit_nodes",
    ] {
        let err = db.exec(sql).await.unwrap_err();
        assert!(err.contains("append-only"), "{sql}: {err}");
    }
    if let common::Kind::Postgres { .. } = db.kind {
        let err = db.exec("TRUNCATE audit_entries").await.unwrap_err();
        assert!(err.contains("append-only"), "{err}");
    }
    assert_eq!(db.store.size().await.unwrap(), 4);
    writ_store::verify_log(db.store.as_ref(), &VerifyOptions::default(), &|_| {})
        .await
        .unwrap();
    db.cleanup().await;
}
on_both_backends!(log_tables_refuse_update_and_delete);

async fn queries_filter_and_page(db: Db) {
    let store = db.store.clone();
    let before = Timestamp::now();
    store.append((0..50).map(entry).collect()).await.unwrap();
    let q = |f: EntryFilter| {
        let store = store.clone();
        async move {
            store
                .query(&EntryFilter { limit: 1000, ..f })
                .await
                .unwrap()
        }
    };
    let by_action = q(EntryFilter {
        action_id: Some("act_7".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(by_action.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![7]);
    let by_kind = q(EntryFilter {
        kind: Some(EntryKind::Executed),
        ..Default::default()
    })
    .await;
    assert_eq!(by_kind.len(), (0..50).filter(|i| i % 7 == 4).count());
    assert!(by_kind.iter().all(|e| e.kind == "executed"));
    let by_actor = q(EntryFilter {
        actor: Some("agent:bot-1".into()),
        ..Default::default()
    })
    .await;
    assert_eq!(
        by_actor.len(),
        (0..50u64).filter(|i| i % 3 != 0 && i % 4 == 1).count()
    );
    let in_time = q(EntryFilter {
        since: Some(before),
        ..Default::default()
    })
    .await;
    assert_eq!(in_time.len(), 50);
    let future = Timestamp::from_micros(Timestamp::now().as_micros() + 60_000_000).unwrap();
    assert!(
        q(EntryFilter {
            since: Some(future),
            ..Default::default()
        })
        .await
        .is_empty()
    );
    assert_eq!(
        q(EntryFilter {
            until: Some(before),
            ..Default::default()
        })
        .await
        .len(),
        0
    );
    let page = store
        .query(&EntryFilter {
            after_seq: Some(45),
            limit: 3,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        page.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![46, 47, 48]
    );
    drop(store);
    db.cleanup().await;
}
on_both_backends!(queries_filter_and_page);

#[tokio::test]
async fn bad_urls_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "mysql://x",
        "sqlite://",
        "http://localhost",
        "mysql://root:hunter2-secret@db/x",
    ] {
        let err = writ_store::open(Some(url), dir.path())
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("unsupported database URL"), "{url}: {err}");
        assert!(!err.contains("hunter2"), "{url}: {err}");
    }
    // A wrong password never appears in the error.
    let err = writ_store::open(
        Some("postgres://writ:hunter2-secret@127.0.0.1:1/nope"),
        dir.path(),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(!err.contains("hunter2-secret"), "{err}");
}

#[tokio::test]
async fn invalid_entries_append_nothing() {
    let db = Db::sqlite().await;
    db.store.append(vec![entry(0)]).await.unwrap();
    let mut bad = entry(1);
    bad.payload = serde_json::json!({"x": "y".repeat(writ_core::MAX_ENTRY_BYTES)});
    let err = db
        .store
        .append(vec![entry(2), bad])
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("limit"), "{err}");
    assert_eq!(db.store.size().await.unwrap(), 1);
}
