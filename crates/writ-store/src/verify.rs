//! Full verification of a stored log: what `writ audit verify` runs.
//!
//! It trusts nothing the database says about hashes. It re-reads every entry, checks that the
//! bytes are the canonical form of the entry they decode to and that the query columns beside them
//! agree, recomputes every leaf hash, rebuilds the tree, and compares every stored subtree hash,
//! every stored checkpoint (signature and root) and, when given, a checkpoint the caller trusts
//! from outside the database — which is what catches a rollback to an older copy or a rewrite of
//! history by someone who recomputed all the hashes.

use std::collections::{BTreeMap, BTreeSet};

use writ_audit::{Checkpoint, Frontier, Hash, NoteVerifier};
use writ_core::Timestamp;

use crate::{Store, StoreError, StoredEntry};

/// What to verify against.
#[derive(Default)]
pub struct VerifyOptions {
    /// The log's verifier key. Without it, stored checkpoints are checked against the tree but
    /// their signatures cannot be.
    pub verifier: Option<NoteVerifier>,
    /// A signed checkpoint obtained earlier, outside this database.
    pub trusted_checkpoint: Option<String>,
    /// Entries read per round trip (0 = default).
    pub batch: u32,
}

/// What a successful verification covered.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    pub size: u64,
    pub root: String,
    pub entries_checked: u64,
    pub nodes_checked: u64,
    pub checkpoints_checked: u64,
    pub checkpoint_signatures_checked: bool,
    pub trusted_size: Option<u64>,
}

/// The first problem found.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("entry {seq}: {reason}")]
    Entry { seq: u64, reason: String },
    #[error(
        "stored tree node (level {level}, index {index}, covering entries {first}..={last}): {reason}"
    )]
    Node {
        level: u8,
        index: u64,
        first: u64,
        last: u64,
        reason: String,
    },
    #[error("stored checkpoint at size {size}: {reason}")]
    Checkpoint { size: u64, reason: String },
    #[error("trusted checkpoint: {0}")]
    Trusted(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl VerifyError {
    /// The first sequence number the problem concerns, where there is one.
    pub fn first_bad_seq(&self) -> Option<u64> {
        match self {
            VerifyError::Entry { seq, .. } => Some(*seq),
            VerifyError::Node { first, .. } => Some(*first),
            _ => None,
        }
    }
}

/// Verifies the whole log in `store`. `progress` is called with the number of entries checked.
pub async fn verify_log(
    store: &dyn Store,
    options: &VerifyOptions,
    progress: &(dyn Fn(u64) + Send + Sync),
) -> Result<VerifyReport, VerifyError> {
    let batch = if options.batch == 0 {
        16_384
    } else {
        options.batch
    };
    let size = store.size().await?;

    // The trusted checkpoint first: it is the caller's evidence, checked before anything stored.
    let mut wanted: BTreeSet<u64> = BTreeSet::new();
    let trusted = match &options.trusted_checkpoint {
        None => None,
        Some(note) => {
            let key = options.verifier.as_ref().ok_or_else(|| {
                VerifyError::Trusted("a verifier key is needed to check its signature".into())
            })?;
            let cp = writ_audit::open_checkpoint(note, key, Some(key.name()))
                .map_err(|e| VerifyError::Trusted(format!("signature does not verify: {e}")))?;
            if cp.size > size {
                return Err(VerifyError::Trusted(format!(
                    "it commits to {} entries but the log has only {size}: entries were removed or the database was rolled back to an older copy",
                    cp.size
                )));
            }
            wanted.insert(cp.size);
            Some(cp)
        }
    };

    // Then every stored checkpoint: their signatures need no tree; their roots are compared as we pass.
    let stored = store.checkpoints().await?;
    for cp in &stored {
        if cp.tree_size > size {
            return Err(VerifyError::Checkpoint {
                size: cp.tree_size,
                reason: format!(
                    "it commits to {} entries but the log has only {size}: entries were removed or the database was rolled back",
                    cp.tree_size
                ),
            });
        }
        let body = match &options.verifier {
            Some(key) => {
                writ_audit::open_checkpoint(&cp.note, key, Some(key.name())).map_err(|e| {
                    VerifyError::Checkpoint {
                        size: cp.tree_size,
                        reason: format!("signature does not verify: {e}"),
                    }
                })?
            }
            None => unverified_body(&cp.note).map_err(|reason| VerifyError::Checkpoint {
                size: cp.tree_size,
                reason,
            })?,
        };
        if body.size != cp.tree_size || body.root != cp.root_hash {
            return Err(VerifyError::Checkpoint {
                size: cp.tree_size,
                reason: format!(
                    "the signed note says size {} root {}, the stored columns say size {} root {}",
                    body.size,
                    body.root.to_hex(),
                    cp.tree_size,
                    cp.root_hash.to_hex()
                ),
            });
        }
        wanted.insert(cp.tree_size);
    }
    let mut roots: BTreeMap<u64, Hash> = BTreeMap::new();
    if wanted.contains(&0) {
        roots.insert(0, writ_audit::empty_root());
    }
    let mut frontier = Frontier::new();
    let mut last_time = Timestamp::UNIX_EPOCH;
    let mut nodes_checked = 0u64;
    // Reading the next batch from the database overlaps with checking this one, and the checks of
    // one batch (leaf hash, canonical form, columns) run on every core. The order-dependent steps
    // (sequence, time order, tree) then run in order, so the first bad entry is the one reported.
    let mut fetched = if size > 0 {
        store.entries(0, batch).await?
    } else {
        Vec::new()
    };
    while frontier.size() < size {
        let next = frontier.size();
        let rows = std::mem::take(&mut fetched);
        if rows.is_empty() {
            return Err(VerifyError::Entry {
                seq: next,
                reason: "missing: the log ends early".into(),
            });
        }
        let after = next + rows.len() as u64;
        let read_next = async {
            if after < size {
                store.entries(after, batch).await
            } else {
                Ok(Vec::new())
            }
        };
        let check = tokio::task::spawn_blocking(move || {
            let results = check_rows(&rows);
            (rows, results)
        });
        let (read, checked) = tokio::join!(read_next, check);
        let (rows, results) =
            checked.map_err(|e| StoreError::Corrupt(format!("verification task failed: {e}")))?;
        let mut completed: BTreeMap<u8, Vec<(u64, Hash)>> = BTreeMap::new();
        for (row, result) in rows.iter().zip(results) {
            let seq = frontier.size();
            if row.seq != seq {
                return Err(VerifyError::Entry {
                    seq,
                    reason: format!("missing (the next stored entry is {})", row.seq),
                });
            }
            let time = result?;
            if time < last_time {
                return Err(VerifyError::Entry {
                    seq,
                    reason: format!("its time {time} is before the previous entry's {last_time}"),
                });
            }
            last_time = time;
            frontier.append_with(row.leaf_hash, |id, hash| {
                if id.level > 0 {
                    completed
                        .entry(id.level)
                        .or_default()
                        .push((id.index, hash));
                }
            });
            if wanted.contains(&frontier.size()) {
                roots.insert(frontier.size(), frontier.root());
            }
        }
        fetched = read?;
        nodes_checked += check_nodes(store, completed).await?;
        progress(frontier.size());
    }

    let expected_nodes = size - u64::from(size.count_ones());
    let stored_nodes = store.node_count().await?;
    if stored_nodes != expected_nodes {
        return Err(VerifyError::Node {
            level: 0,
            index: 0,
            first: 0,
            last: size.saturating_sub(1),
            reason: format!(
                "{stored_nodes} node rows are stored where a tree of {size} entries has {expected_nodes}"
            ),
        });
    }
    for cp in &stored {
        if roots.get(&cp.tree_size) != Some(&cp.root_hash) {
            return Err(VerifyError::Checkpoint {
                size: cp.tree_size,
                reason: "its root differs from the root recomputed from the entries: the log was changed after it was signed".into(),
            });
        }
    }
    let root = frontier.root();
    if let Some(cp) = &trusted {
        if roots.get(&cp.size) != Some(&cp.root) {
            return Err(VerifyError::Trusted(format!(
                "the log's first {} entries no longer hash to its root: history was rewritten",
                cp.size
            )));
        }
        // The same fact, shown the way a monitor would check it: a consistency proof from the
        // store, verified against the trusted root and the recomputed one.
        if cp.size > 0 && cp.size < size {
            let proof = store.consistency_proof(cp.size, size).await?;
            writ_audit::verify_consistency(cp.size, size, &cp.root, &root, &proof)
                .map_err(|e| VerifyError::Trusted(format!("consistency proof fails: {e}")))?;
        }
    }
    Ok(VerifyReport {
        size,
        root: root.to_hex(),
        entries_checked: size,
        nodes_checked,
        checkpoints_checked: stored.len() as u64,
        checkpoint_signatures_checked: options.verifier.is_some(),
        trusted_size: trusted.map(|cp| cp.size),
    })
}

/// Checks rows against their own bytes, in parallel; one result per row, in order.
fn check_rows(rows: &[StoredEntry]) -> Vec<Result<Timestamp, VerifyError>> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if threads < 2 || rows.len() < 1024 {
        return rows.iter().map(check_entry).collect();
    }
    let chunk = rows.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().map(check_entry).collect::<Vec<_>>()))
            .collect();
        let mut out = Vec::with_capacity(rows.len());
        for (handle, part) in handles.into_iter().zip(rows.chunks(chunk)) {
            match handle.join() {
                Ok(results) => out.extend(results),
                Err(_) => out.extend(part.iter().map(|row| {
                    Err(VerifyError::Entry {
                        seq: row.seq,
                        reason: "its check panicked".into(),
                    })
                })),
            }
        }
        out
    })
}

/// Checks one row against its own bytes; returns the time it commits to.
fn check_entry(row: &StoredEntry) -> Result<Timestamp, VerifyError> {
    let seq = row.seq;
    let fail = |reason: String| VerifyError::Entry { seq, reason };
    if writ_audit::leaf_hash(&row.entry) != row.leaf_hash {
        return Err(fail(
            "its bytes do not hash to the stored leaf hash: the entry was modified".into(),
        ));
    }
    let entry = writ_core::AuditEntry::check_canonical(&row.entry)
        .map_err(|e| fail(format!("not a valid canonical entry: {e}")))?;
    if entry.seq != seq {
        return Err(fail(format!(
            "the entry says it is entry {}: rows were moved",
            entry.seq
        )));
    }
    // The query columns must say what the committed bytes say (compared without allocating;
    // words only on a mismatch).
    let differs = |name: &str, stored: String, committed: String| {
        fail(format!(
            "the stored column {name} ({stored}) differs from the committed entry ({committed})"
        ))
    };
    if row.time_us != entry.time.as_micros() {
        return Err(differs(
            "time_us",
            row.time_us.to_string(),
            entry.time.as_micros().to_string(),
        ));
    }
    if row.action_id != entry.action_id.as_str() {
        return Err(differs(
            "action_id",
            row.action_id.clone(),
            entry.action_id.as_str().to_owned(),
        ));
    }
    if row.kind != entry.kind.as_str() {
        return Err(differs("kind", row.kind.clone(), entry.kind.to_string()));
    }
    if row.actor != entry.actor {
        return Err(differs(
            "actor",
            format!("{:?}", row.actor),
            format!("{:?}", entry.actor),
        ));
    }
    Ok(entry.time)
}

/// Compares the subtree hashes completed by a chunk with the stored ones.
async fn check_nodes(
    store: &dyn Store,
    completed: BTreeMap<u8, Vec<(u64, Hash)>>,
) -> Result<u64, VerifyError> {
    let mut checked = 0;
    for (level, expected) in completed {
        let (Some(&(lo, _)), Some(&(hi, _))) = (expected.first(), expected.last()) else {
            continue;
        };
        let stored: BTreeMap<u64, Hash> = store
            .nodes_at_level(level, lo, hi)
            .await?
            .into_iter()
            .collect();
        for (index, hash) in expected {
            let reason = match stored.get(&index) {
                Some(h) if *h == hash => {
                    checked += 1;
                    continue;
                }
                Some(_) => "its hash differs from the one recomputed from the entries",
                None => "missing",
            };
            let first = index << level;
            return Err(VerifyError::Node {
                level,
                index,
                first,
                last: first + (1u64 << level) - 1,
                reason: reason.into(),
            });
        }
    }
    Ok(checked)
}

/// The checkpoint body of a note, without checking its signature.
fn unverified_body(note: &str) -> Result<Checkpoint, String> {
    let body = note
        .split_once("\n\n")
        .map(|(body, _)| format!("{body}\n"))
        .ok_or("not a signed note (no blank line before the signatures)")?;
    Checkpoint::parse(&body).map_err(|e| e.to_string())
}
