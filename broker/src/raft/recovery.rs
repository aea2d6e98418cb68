//! Unsafe recovery after losing a majority (`sluice recover`): makes a
//! stopped node the only voter of its cluster, so it can elect itself and
//! serve again from what it holds. The other members are then added back
//! as new (`--peer-dns` does it by itself).
//!
//! It appends to the node's log a membership entry naming this node alone,
//! in a term past any the node has seen, and votes for itself in that term.
//! On start, openraft takes the last membership entry of the log as the
//! configuration, the node wins its own election, and its first entry as
//! leader commits the change. Writes that only the lost nodes held (none
//! that was acknowledged, if this node was the leader or up to date) are
//! gone: run it on the member with the highest last log index.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, Vote};

use super::log_store::{self, SEGMENT_BYTES};
use super::snapshot::SnapshotDir;
use super::{Node, NodeId, TypeConfig};
use crate::store::codec;
use crate::store::lock::DirLock;
use crate::store::log::{LogFiles, MetaFile};

/// What a recovery did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The last entry the node held before.
    pub last_before: LogId<NodeId>,
    /// The membership entry appended after it.
    pub membership_entry: LogId<NodeId>,
}

/// The log directory of the stopped node in `data_dir`, and the lock on
/// `data_dir` that keeps a node from starting while it is held. Without
/// a log the error says so, followed by `missing`.
pub(super) fn lock_stopped_log(
    data_dir: &Path,
    missing: &str,
) -> Result<(PathBuf, DirLock), String> {
    let log_dir = data_dir.join("log");
    if !log_dir.is_dir() {
        return Err(format!(
            "--data-dir {}: holds no Raft log (log/){missing}",
            data_dir.display()
        ));
    }
    // A running node holds the directory's lock for its life.
    let lock = DirLock::acquire(data_dir).map_err(|e| format!("--data-dir {e}"))?;
    Ok((log_dir, lock))
}

/// Makes the stopped node in `data_dir` the only voter, reachable at
/// `advertise`, with id `me`.
pub fn force_single_voter(
    data_dir: &Path,
    me: NodeId,
    advertise: &str,
) -> Result<Recovered, String> {
    let (log_dir, _lock) = lock_stopped_log(data_dir, ": nothing to recover")?;
    let log = LogFiles::open(&log_dir, SEGMENT_BYTES).map_err(|e| format!("log: {e}"))?;
    let meta = MetaFile::new(&log_dir.join("meta"));
    let mut stored = log_store::read_meta(&meta)?;
    let in_log = log_store::last_log_id(&log)?;
    let snapshots =
        SnapshotDir::open(&data_dir.join("snapshots")).map_err(|e| format!("snapshots: {e}"))?;
    let in_snapshot = snapshots
        .latest()
        .map_err(|e| format!("snapshots: {e}"))?
        .and_then(|(m, _)| m.last_log_id);
    let last = [in_log, stored.purged, in_snapshot]
        .into_iter()
        .flatten()
        .max_by_key(|l| l.index)
        .ok_or_else(|| {
            format!(
                "--data-dir {}: the node holds no entries: nothing to recover",
                data_dir.display()
            )
        })?;
    let term = stored
        .vote
        .map(|v| v.leader_id().term)
        .unwrap_or(0)
        .max(last.leader_id.term)
        + 1;
    let entry = Entry::<TypeConfig> {
        log_id: LogId::new(CommittedLeaderId::new(term, me), last.index + 1),
        payload: EntryPayload::Membership(Membership::new(
            vec![BTreeSet::from([me])],
            BTreeMap::from([(me, Node::new(advertise.to_string()))]),
        )),
    };
    let restart_log = in_log.is_none_or(|l| l.index < last.index);
    // The vote for the new term goes first, as Raft needs it before any
    // entry of that term; a crash past this point leaves a valid node that
    // a second run recovers (in a term higher still).
    stored.vote = Some(Vote::new(term, me));
    if restart_log {
        // The snapshot (or purge point) is past the log's end: the log
        // restarts after it, as it does after a purge.
        stored.purged = Some(last);
    }
    log_store::write_meta(&meta, &stored)?;
    if restart_log {
        log.truncate_from(0).map_err(|e| format!("log: {e}"))?;
    }
    log.append(&[(entry.log_id.index, codec::encode(&entry))])
        .map_err(|e| format!("log: {e}"))?;
    log.sync().map_err(|e| format!("log: {e}"))?;
    Ok(Recovered {
        last_before: last,
        membership_entry: entry.log_id,
    })
}
