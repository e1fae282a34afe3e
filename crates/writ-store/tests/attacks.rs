//! Attacks on a stored log, each by someone with full database access: every one must be caught
//! by `verify_log`, which names what is wrong. Run on both backends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::{Db, entry};
use writ_audit::{Checkpoint, Frontier, NoteSigner, leaf_hash};
use writ_core::Timestamp;
use writ_store::{Store, StoredCheckpoint, VerifyError, VerifyOptions, verify_log};

const ORIGIN: &str = "test.writ.local/audit";

async fn checkpoint(store: &dyn Store, signer: &NoteSigner) -> String {
    let head = store.tree_head().await.unwrap();
    let cp = Checkpoint {
        origin: ORIGIN.into(),
        size: head.size,
        root: head.root,
        extensions: vec![],
    };
    let note = writ_audit::sign_checkpoint(&cp, signer).unwrap();
    store
        .add_checkpoint(StoredCheckpoint {
            tree_size: head.size,
            root_hash: head.root,
            note: note.clone(),
            created_us: Timestamp::now().as_micros(),
        })
        .await
        .unwrap();
    note
}

/// A log of 16 entries with signed checkpoints at 10 and 16; returns the key and the note at 16.
async fn setup(db: &Db) -> (NoteSigner, String) {
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    db.store.append((0..10).map(entry).collect()).await.unwrap();
    checkpoint(db.store.as_ref(), &signer).await;
    db.store
        .append((10..16).map(entry).collect())
        .await
        .unwrap();
    let note = checkpoint(db.store.as_ref(), &signer).await;
    let ok = verify_log(db.store.as_ref(), &options(&signer, Some(&note)), &|_| {})
        .await
        .unwrap();
    assert_eq!(
        (ok.size, ok.checkpoints_checked, ok.trusted_size),
        (16, 2, Some(16))
    );
    (signer, note)
}

fn options(signer: &NoteSigner, trusted: Option<&str>) -> VerifyOptions {
    VerifyOptions {
        verifier: Some(signer.verifier()),
        trusted_checkpoint: trusted.map(str::to_owned),
        batch: 5,
    }
}

async fn verify_fails(db: &Db, opts: &VerifyOptions) -> VerifyError {
    let store = db.reopen().await;
    verify_log(store.as_ref(), opts, &|_| {})
        .await
        .expect_err("the attack went unnoticed")
}

fn assert_mentions(err: &VerifyError, fragment: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains(fragment),
        "{msg:?} does not mention {fragment:?}"
    );
}

async fn modified_payload(db: Db) {
    let (signer, _) = setup(&db).await;
    db.drop_protection().await;
    let row = db.store.entries(3, 1).await.unwrap().remove(0);
    let forged = String::from_utf8(row.entry)
        .unwrap()
        .replace("\"amount\":30", "\"amount\":3000");
    db.exec(&format!(
        "UPDATE audit_entries SET entry = {} WHERE seq = 3",
        db.blob(forged.as_bytes())
    ))
    .await
    .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert_eq!(err.first_bad_seq(), Some(3), "{err}");
    assert_mentions(&err, "do not hash to the stored leaf hash");
    db.cleanup().await;
}
on_both_backends!(modified_payload);

async fn modified_payload_with_leaf_hash_recomputed(db: Db) {
    let (signer, _) = setup(&db).await;
    db.drop_protection().await;
    let row = db.store.entries(3, 1).await.unwrap().remove(0);
    let forged = String::from_utf8(row.entry)
        .unwrap()
        .replace("\"amount\":30", "\"amount\":3000");
    db.exec(&format!(
        "UPDATE audit_entries SET entry = {}, leaf_hash = {} WHERE seq = 3",
        db.blob(forged.as_bytes()),
        db.blob(&leaf_hash(forged.as_bytes()).0)
    ))
    .await
    .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    // The subtree over entries 2..=3 no longer matches.
    assert_eq!(err.first_bad_seq(), Some(2), "{err}");
    assert_mentions(&err, "covering entries 2..=3");
    db.cleanup().await;
}
on_both_backends!(modified_payload_with_leaf_hash_recomputed);

async fn history_rewritten_with_every_hash_recomputed(db: Db) {
    let (signer, trusted) = setup(&db).await;
    db.drop_protection().await;
    // Rewrite entry 3 *and* every hash above it, so the database is self-consistent.
    let mut rows = db.store.entries(0, 100).await.unwrap();
    let forged = String::from_utf8(rows[3].entry.clone())
        .unwrap()
        .replace("\"amount\":30", "\"amount\":3000");
    rows[3].entry = forged.into_bytes();
    let mut sql = String::from("DELETE FROM audit_nodes;");
    let mut frontier = Frontier::new();
    for row in &rows {
        let leaf = leaf_hash(&row.entry);
        for (id, hash) in frontier.append(leaf) {
            if id.level > 0 {
                sql.push_str(&format!(
                    "INSERT INTO audit_nodes (level, idx, hash) VALUES ({}, {}, {});",
                    id.level,
                    id.index,
                    db.blob(&hash.0)
                ));
            }
        }
    }
    sql.push_str(&format!(
        "UPDATE audit_entries SET entry = {}, leaf_hash = {} WHERE seq = 3;",
        db.blob(&rows[3].entry),
        db.blob(&leaf_hash(&rows[3].entry).0)
    ));
    db.exec(&sql).await.unwrap();
    // The stored checkpoints, signed before the rewrite, expose it...
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert!(
        matches!(err, VerifyError::Checkpoint { size: 10, .. }),
        "{err}"
    );
    assert_mentions(&err, "changed after it was signed");
    // ...and if the attacker also deleted them, the trusted checkpoint still does.
    db.exec("DELETE FROM audit_checkpoints").await.unwrap();
    verify_log(db.reopen().await.as_ref(), &options(&signer, None), &|_| {})
        .await
        .unwrap();
    let err = verify_fails(&db, &options(&signer, Some(&trusted))).await;
    assert_mentions(&err, "history was rewritten");
    db.cleanup().await;
}
on_both_backends!(history_rewritten_with_every_hash_recomputed);

async fn deleted_row(db: Db) {
    let (signer, _) = setup(&db).await;
    db.drop_protection().await;
    db.exec("DELETE FROM audit_entries WHERE seq = 5")
        .await
        .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert_eq!(err.first_bad_seq(), Some(5), "{err}");
    assert_mentions(&err, "missing");
    db.cleanup().await;
}
on_both_backends!(deleted_row);

async fn swapped_rows(db: Db) {
    let (signer, _) = setup(&db).await;
    db.drop_protection().await;
    let rows = db.store.entries(6, 2).await.unwrap();
    let set = |target: u64, r: &writ_store::StoredEntry| {
        format!(
            "UPDATE audit_entries SET time_us = {}, action_id = '{}', kind = '{}', actor = {}, entry = {}, leaf_hash = {} WHERE seq = {target};",
            r.time_us,
            r.action_id,
            r.kind,
            r.actor
                .as_ref()
                .map_or("NULL".to_owned(), |a| format!("'{a}'")),
            db.blob(&r.entry),
            db.blob(&r.leaf_hash.0)
        )
    };
    db.exec(&format!("{}{}", set(6, &rows[1]), set(7, &rows[0])))
        .await
        .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert_eq!(err.first_bad_seq(), Some(6), "{err}");
    assert_mentions(&err, "rows were moved");
    db.cleanup().await;
}
on_both_backends!(swapped_rows);

async fn altered_query_column(db: Db) {
    let (signer, _) = setup(&db).await;
    db.drop_protection().await;
    // Hide an action from queries by renaming its indexed column, leaving the bytes intact.
    db.exec("UPDATE audit_entries SET action_id = 'act_innocent' WHERE seq = 4")
        .await
        .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert_eq!(err.first_bad_seq(), Some(4), "{err}");
    assert_mentions(&err, "stored column action_id");
    db.cleanup().await;
}
on_both_backends!(altered_query_column);

async fn truncated_tail(db: Db) {
    let (signer, trusted) = setup(&db).await;
    db.drop_protection().await;
    db.exec("DELETE FROM audit_entries WHERE seq >= 12")
        .await
        .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert!(
        matches!(err, VerifyError::Checkpoint { size: 16, .. }),
        "{err}"
    );
    assert_mentions(&err, "log has only 12");
    // Without the checkpoint, the orphaned subtree hashes still give it away.
    db.exec("DELETE FROM audit_checkpoints WHERE tree_size = 16")
        .await
        .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert_mentions(&err, "node rows are stored where a tree of 12 entries has");
    // And the trusted checkpoint, kept outside the database, always does.
    let err = verify_fails(&db, &options(&signer, Some(&trusted))).await;
    assert_mentions(&err, "rolled back");
    db.cleanup().await;
}
on_both_backends!(truncated_tail);

async fn forged_checkpoint(db: Db) {
    let (signer, _) = setup(&db).await;
    let genuine = db.store.checkpoints().await.unwrap().remove(0);
    // Claim a different root at a new size, reusing the genuine signature line.
    let other_root = writ_audit::leaf_hash(b"forged");
    let lines: Vec<&str> = genuine.note.lines().collect();
    let forged_note = format!(
        "{}\n12\n{}\n\n{}\n",
        lines[0],
        other_root.to_base64(),
        lines[4]
    );
    db.store
        .add_checkpoint(StoredCheckpoint {
            tree_size: 12,
            root_hash: other_root,
            note: forged_note,
            created_us: 0,
        })
        .await
        .unwrap();
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert!(
        matches!(err, VerifyError::Checkpoint { size: 12, .. }),
        "{err}"
    );
    assert_mentions(&err, "signature does not verify");
    // Without any key the signature cannot be checked, but the root still can.
    let err = verify_fails(&db, &VerifyOptions::default()).await;
    assert_mentions(&err, "changed after it was signed");
    db.cleanup().await;
}
on_both_backends!(forged_checkpoint);

async fn checkpoint_signed_by_another_key(db: Db) {
    let (signer, _) = setup(&db).await;
    let intruder = NoteSigner::generate(ORIGIN).unwrap();
    db.store.append(vec![entry(16)]).await.unwrap();
    checkpoint(db.store.as_ref(), &intruder).await;
    let err = verify_fails(&db, &options(&signer, None)).await;
    assert!(
        matches!(err, VerifyError::Checkpoint { size: 17, .. }),
        "{err}"
    );
    assert_mentions(&err, "signature does not verify");
    // A trusted checkpoint from the intruder's key is refused too.
    let forged_trusted = db.store.latest_checkpoint().await.unwrap().unwrap().note;
    let opts = VerifyOptions {
        verifier: Some(signer.verifier()),
        trusted_checkpoint: Some(forged_trusted),
        batch: 0,
    };
    let err = verify_fails(&db, &opts).await;
    assert_mentions(&err, "trusted checkpoint: signature does not verify");
    db.cleanup().await;
}
on_both_backends!(checkpoint_signed_by_another_key);

/// The database is put back exactly as it was at size 10 (entries, nodes and checkpoints): on its
/// own it verifies, and only a newer checkpoint kept elsewhere exposes the rollback.
async fn rollback_to_an_older_state(db: Db) {
    let (signer, trusted_at_16) = setup(&db).await;
    db.drop_protection().await;
    db.exec(
        "DELETE FROM audit_entries WHERE seq >= 10;
         DELETE FROM audit_nodes WHERE ((idx + 1) << level) > 10;
         DELETE FROM audit_checkpoints WHERE tree_size > 10;",
    )
    .await
    .unwrap();
    let alone = verify_log(db.reopen().await.as_ref(), &options(&signer, None), &|_| {})
        .await
        .unwrap();
    assert_eq!(alone.size, 10);
    let err = verify_fails(&db, &options(&signer, Some(&trusted_at_16))).await;
    assert_mentions(&err, "commits to 16 entries but the log has only 10");
    assert_mentions(&err, "rolled back");
    db.cleanup().await;
}
on_both_backends!(rollback_to_an_older_state);

/// The same with a real file copy of the SQLite database, restored over the newer one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_file_restored_from_an_old_copy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("writ.db");
    let copy = dir.path().join("old-copy.db");
    let signer = NoteSigner::generate(ORIGIN).unwrap();
    {
        let store = writ_store::sqlite::SqliteStore::open(&path).await.unwrap();
        store.append((0..10).map(entry).collect()).await.unwrap();
        checkpoint(&store, &signer).await;
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute("VACUUM INTO ?1", [copy.to_str().unwrap()])
            .unwrap();
    }
    let trusted = {
        let store = writ_store::sqlite::SqliteStore::open(&path).await.unwrap();
        store.append((10..20).map(entry).collect()).await.unwrap();
        checkpoint(&store, &signer).await
    };
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
    std::fs::copy(&copy, &path).unwrap();
    let store = writ_store::sqlite::SqliteStore::open(&path).await.unwrap();
    assert_eq!(store.size().await.unwrap(), 10);
    let err = verify_log(&store, &options(&signer, Some(&trusted)), &|_| {})
        .await
        .unwrap_err();
    assert_mentions(&err, "commits to 20 entries but the log has only 10");
}
