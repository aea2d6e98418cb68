//! Re-applying the committed log at start, a bounded step at a time.
//!
//! A node that was not stopped cleanly rebuilds its state from the latest
//! snapshot, and every committed entry after it must be applied again.
//! Left to openraft 0.9, that is one read of the whole range and one call
//! to apply: with millions of queued messages since the snapshot, several
//! GB of entries and their changes in memory at once. So before Raft
//! starts the node applies the entries up to the commit point the log's
//! metadata holds, [`STEP_ENTRIES`] at a time, through the same apply; the
//! state machine copies each step's writes on as it does in service.
//! openraft then finds little left to apply: the log store writes the
//! commit point every [`COMMITTED_WRITE_EVERY`] entries.
//!
//! [`COMMITTED_WRITE_EVERY`]: super::log_store::COMMITTED_WRITE_EVERY

use openraft::storage::RaftStateMachine;
use openraft::{LogId, RaftLogReader, StorageError};

use super::{NodeId, TypeConfig};

/// Entries read and applied in one step (each at most about a MiB).
pub const STEP_ENTRIES: u64 = 64;

/// What a replay did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replayed {
    /// Entries applied.
    pub entries: u64,
    /// The last entry applied before the replay, and after it.
    pub from: Option<u64>,
    /// See `from`.
    pub to: Option<u64>,
}

/// Applies the entries of `log` after the state machine's last applied one
/// up to `committed`, [`STEP_ENTRIES`] at a time.
pub async fn catch_up<L, S>(
    log: &mut L,
    state_machine: &mut S,
    committed: Option<LogId<NodeId>>,
) -> Result<Replayed, StorageError<NodeId>>
where
    L: RaftLogReader<TypeConfig>,
    S: RaftStateMachine<TypeConfig>,
{
    let (applied, _) = state_machine.applied_state().await?;
    let from = applied.map(|l| l.index);
    let mut replayed = Replayed {
        entries: 0,
        from,
        to: from,
    };
    let Some(committed) = committed else {
        return Ok(replayed);
    };
    let mut next = from.map_or(0, |i| i + 1);
    while next <= committed.index {
        let end = (next + STEP_ENTRIES).min(committed.index + 1);
        let mut entries = log.try_get_log_entries(next..end).await?;
        // Only what follows on from the state: a log short of the commit
        // point (one being repaired) leaves the rest to openraft, as before.
        let contiguous = entries
            .iter()
            .zip(next..)
            .take_while(|(e, i)| e.log_id.index == *i)
            .count();
        entries.truncate(contiguous);
        let Some(last) = entries.last().map(|e| e.log_id.index) else {
            break;
        };
        state_machine.apply(entries).await?;
        replayed.entries += last + 1 - next;
        replayed.to = Some(last);
        if last + 1 < end {
            break;
        }
        next = end;
    }
    Ok(replayed)
}
