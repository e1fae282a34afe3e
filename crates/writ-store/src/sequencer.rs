//! The part of appending that both backends share: gathering the waiting appends into one
//! batch, giving entries their sequence numbers and times, computing leaf hashes and the
//! perfect-subtree hashes each entry completes, and answering every caller once the batch is
//! committed or failed. Pure: each backend's writer loads the state, calls
//! [`LogState::sequence`], writes the rows and commits.

use std::collections::HashMap;

use tokio::sync::oneshot;
use writ_audit::{Frontier, Hash, NodeId};
use writ_core::{NewEntry, PreparedEntry, Timestamp};

use crate::actions::Change;
use crate::{AppendReceipt, StoreError, StoredEntry};

type Reply = oneshot::Sender<Result<Vec<AppendReceipt>, StoreError>>;
type Answer = oneshot::Receiver<Result<Vec<AppendReceipt>, StoreError>>;

/// One caller's append, on its way to the writer: entries canonicalised in the caller's task,
/// so that the single writer only sequences them.
pub(crate) struct AppendJob {
    /// State changes the writer applies, under a savepoint, before sequencing `entries`.
    pub changes: Vec<Change>,
    pub entries: Vec<PreparedEntry>,
    pub reply: Reply,
}

impl AppendJob {
    /// The job that applies `changes` and appends `entries` in one transaction, and where its
    /// answer will arrive; None for nothing to do.
    pub fn prepare_with(
        changes: Vec<Change>,
        entries: Vec<NewEntry>,
    ) -> Result<Option<(AppendJob, Answer)>, StoreError> {
        if entries.is_empty() && changes.is_empty() {
            return Ok(None);
        }
        let entries = entries
            .into_iter()
            .map(NewEntry::prepare)
            .collect::<Result<Vec<_>, _>>()?;
        let (reply, answer) = oneshot::channel();
        Ok(Some((
            AppendJob {
                changes,
                entries,
                reply,
            },
            answer,
        )))
    }
}

/// Waits for the writer's answer to a job.
pub(crate) async fn wait(answer: Answer) -> Result<Vec<AppendReceipt>, StoreError> {
    answer.await.map_err(|_| StoreError::WriterGone)?
}

/// Each job's answer: the receipts of accepted jobs, in order, and the error of refused ones
/// (whose state changes were rolled back and whose entries were not sequenced).
pub(crate) fn job_results(
    refused: Vec<Option<StoreError>>,
    receipts: Vec<Vec<AppendReceipt>>,
) -> Vec<Result<Vec<AppendReceipt>, StoreError>> {
    let mut receipts = receipts.into_iter();
    refused
        .into_iter()
        .map(|refusal| match refusal {
            Some(err) => Err(err),
            None => Ok(receipts.next().unwrap_or_default()),
        })
        .collect()
}

/// The entries of the jobs whose changes applied.
pub(crate) fn accepted<'a>(
    jobs: &'a [AppendJob],
    refused: &[Option<StoreError>],
) -> Vec<&'a [PreparedEntry]> {
    jobs.iter()
        .zip(refused)
        .filter(|(_, refusal)| refusal.is_none())
        .map(|(job, _)| job.entries.as_slice())
        .collect()
}

/// Upper bound on entries in one group commit, so that one transaction stays short.
pub(crate) const MAX_BATCH_ENTRIES: usize = 8192;

/// One group commit's jobs: `first`, and whatever else is already waiting (`next` answers
/// without blocking), up to [`MAX_BATCH_ENTRIES`] entries.
pub(crate) fn gather(
    first: AppendJob,
    mut next: impl FnMut() -> Option<AppendJob>,
) -> Vec<AppendJob> {
    let mut queued = first.entries.len();
    let mut jobs = vec![first];
    while queued < MAX_BATCH_ENTRIES {
        match next() {
            Some(job) => {
                queued += job.entries.len();
                jobs.push(job);
            }
            None => break,
        }
    }
    jobs
}

/// Answers every job of a batch with the outcome of its commit. A failed commit wrote nothing:
/// every caller gets the error, and the writer's in-memory `state`, which may be ahead of the
/// database, is dropped so that the next batch reloads it.
pub(crate) fn answer(
    jobs: Vec<AppendJob>,
    outcome: Result<Vec<Result<Vec<AppendReceipt>, StoreError>>, StoreError>,
    state: &mut Option<LogState>,
) {
    match outcome {
        Ok(results) => {
            for (job, result) in jobs.into_iter().zip(results) {
                let _ = job.reply.send(result);
            }
        }
        Err(err) => {
            *state = None;
            tracing::error!(error = %err, "audit append failed; nothing of this batch was committed");
            let message = err.to_string();
            for job in jobs {
                let _ = job.reply.send(Err(StoreError::Database {
                    op: "append",
                    message: message.clone(),
                }));
            }
        }
    }
}

/// What the single writer knows about the end of the log.
pub(crate) struct LogState {
    pub frontier: Frontier,
    /// Time of the last entry: entry times never go backwards, even if the clock does.
    pub last_time: Timestamp,
}

/// The rows of one group commit.
#[derive(Default)]
pub(crate) struct Batch {
    pub entries: Vec<StoredEntry>,
    /// Completed perfect subtrees above the leaves (level ≥ 1).
    pub nodes: Vec<(NodeId, Hash)>,
}

impl LogState {
    /// The state of a log of `size` entries, from the nodes on the right edge of its tree (the
    /// hashes found for [`Frontier::nodes_for_size`]) and the time of its last entry.
    pub fn load(
        size: u64,
        found: &HashMap<NodeId, Hash>,
        last_time_us: Option<i64>,
    ) -> Result<LogState, StoreError> {
        let hashes = Frontier::nodes_for_size(size)
            .iter()
            .map(|id| {
                found.get(id).copied().ok_or_else(|| {
                    StoreError::Corrupt(format!(
                        "node level {} index {} is missing",
                        id.level, id.index
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let frontier = Frontier::from_nodes(size, hashes)?;
        let last_time = match last_time_us {
            None => Timestamp::UNIX_EPOCH,
            Some(micros) => Timestamp::from_micros(micros).map_err(|e| {
                StoreError::Corrupt(format!(
                    "entry {}: time {micros}: {e}",
                    size.saturating_sub(1)
                ))
            })?,
        };
        Ok(LogState {
            frontier,
            last_time,
        })
    }

    /// Sequences each group of entries in order, appending the rows to `batch`; returns the
    /// receipts of each group.
    pub fn sequence(
        &mut self,
        groups: &[&[PreparedEntry]],
        batch: &mut Batch,
    ) -> Vec<Vec<AppendReceipt>> {
        let time = Timestamp::now().max(self.last_time);
        self.last_time = time;
        groups
            .iter()
            .map(|group| {
                group
                    .iter()
                    .map(|prepared| {
                        let seq = self.frontier.size();
                        let bytes = prepared.canonical_bytes(seq, time);
                        let leaf = writ_audit::leaf_hash(&bytes);
                        for (id, hash) in self.frontier.append(leaf) {
                            if id.level > 0 {
                                batch.nodes.push((id, hash));
                            }
                        }
                        let entry = prepared.entry();
                        batch.entries.push(StoredEntry {
                            seq,
                            time_us: time.as_micros(),
                            action_id: entry.action_id.as_str().to_owned(),
                            kind: entry.kind.as_str().to_owned(),
                            actor: entry.actor.clone(),
                            entry: bytes,
                            leaf_hash: leaf,
                        });
                        AppendReceipt {
                            seq,
                            time,
                            leaf_hash: leaf,
                        }
                    })
                    .collect()
            })
            .collect()
    }
}
