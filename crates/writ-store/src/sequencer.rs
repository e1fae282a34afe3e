//! The part of appending that both backends share: giving entries their sequence numbers and
//! times, computing leaf hashes, and the perfect-subtree hashes each entry completes. Pure: the
//! backends load the state, call [`LogState::sequence`], write the rows and commit.

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

/// Converts a stored integer to the u64 it must be, or says the row is corrupt.
pub(crate) fn to_u64(value: i64, what: &str) -> Result<u64, crate::StoreError> {
    u64::try_from(value)
        .map_err(|_| crate::StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// Converts a u64 to the i64 both databases store, refusing values that do not fit.
pub(crate) fn to_i64(value: u64, what: &str) -> Result<i64, crate::StoreError> {
    i64::try_from(value)
        .map_err(|_| crate::StoreError::InvalidRequest(format!("{what} {value} is too large")))
}

/// Reads a 32-byte hash column.
pub(crate) fn to_hash(bytes: &[u8], what: &str) -> Result<Hash, crate::StoreError> {
    let array: [u8; 32] = bytes.try_into().map_err(|_| {
        crate::StoreError::Corrupt(format!("{what} is {} bytes, not 32", bytes.len()))
    })?;
    Ok(Hash(array))
}
