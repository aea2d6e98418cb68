//! The Raft layer: openraft plugged into the store and a tonic network.
//!
//! * [`proposer`]: batches the writes that arrive while earlier ones are in
//!   flight into one log entry, so that many writes share one append and one
//!   fsync;
//! * [`log_store`]: the Raft log and vote in [`crate::store`] trees, flushed
//!   by [`group_commit`] off the async runtime;
//! * [`state_machine`]: applies committed entries through [`crate::machine`]
//!   and builds and installs [`snapshot`] files;
//! * [`network`] and [`service`]: the client and server halves of the
//!   node-to-node transport (`sluice.internal.v1.Raft`);
//! * [`repair`]: opening the log, and repairing a node whose log is damaged;

// openraft's traits fix the error types (StorageError, RPCError, ConfigError),
// and they are large; boxing them here would only add conversions.
#![allow(clippy::result_large_err)]

pub mod bodies;
pub mod copy_gate;
pub mod entry_cache;
pub mod group_commit;
pub mod kept_bodies;
pub mod log_store;
pub mod network;
pub mod payload;
pub mod proposer;
pub mod recovery;
pub mod repair;
pub mod service;
pub mod snapshot;
pub mod snapshot_data;
pub mod snapshot_pacer;
pub mod state_machine;

use std::time::Duration;

use openraft::{AnyError, StorageError, StorageIOError};

use crate::command::EntryResponse;

pub use crate::node_id::NodeId;

/// A node's address as the other nodes reach it.
pub type Node = openraft::BasicNode;

openraft::declare_raft_types!(
    /// openraft's type configuration for Sluice.
    pub TypeConfig:
        D = payload::Payload,
        R = EntryResponse,
        NodeId = NodeId,
        Node = Node,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = snapshot_data::SnapshotFile,
        AsyncRuntime = openraft::TokioRuntime,
);

/// The Raft instance of a node.
pub type Raft = openraft::Raft<TypeConfig>;

/// The metrics openraft publishes.
pub type RaftMetrics = openraft::RaftMetrics<NodeId, Node>;

/// Timing of the Raft protocol.
#[derive(Debug, Clone)]
pub struct Timing {
    /// Interval between leader heartbeats. Also the timeout of one
    /// AppendEntries call, so it must exceed a follower's fsync time.
    pub heartbeat: Duration,
    /// Lower bound of the randomised election timeout.
    pub election_min: Duration,
    /// Upper bound of the randomised election timeout; also the leader lease
    /// during which followers refuse to vote for another candidate.
    pub election_max: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            heartbeat: Duration::from_millis(150),
            election_min: Duration::from_millis(750),
            election_max: Duration::from_millis(1500),
        }
    }
}

/// Log compaction settings.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// Build a snapshot after this many entries since the last one (paced:
    /// see [`snapshot_pacer`]).
    pub snapshot_every: u64,
    /// Entries already in a snapshot kept in the log for slow followers.
    pub keep_after_snapshot: u64,
    /// Size of a new log segment file: a purge, and keeping queued bodies
    /// past one, go by whole segments.
    pub segment_bytes: u64,
}

impl Default for Compaction {
    fn default() -> Self {
        Compaction {
            snapshot_every: 20_000,
            keep_after_snapshot: 1_000,
            segment_bytes: log_store::SEGMENT_BYTES,
        }
    }
}

/// Builds openraft's configuration.
pub fn config(
    cluster_name: &str,
    timing: &Timing,
    compaction: &Compaction,
) -> Result<openraft::Config, openraft::ConfigError> {
    openraft::Config {
        cluster_name: cluster_name.to_string(),
        heartbeat_interval: timing.heartbeat.as_millis() as u64,
        election_timeout_min: timing.election_min.as_millis() as u64,
        election_timeout_max: timing.election_max.as_millis() as u64,
        // Snapshots are streamed as files; this bounds the whole transfer.
        install_snapshot_timeout: 60_000,
        // An entry is a batch of up to PROPOSAL_MAX_BYTES; this bounds one
        // AppendEntries message.
        max_payload_entries: 64,
        // Builds are asked for by `snapshot_pacer`, which also bounds the
        // time they take.
        snapshot_policy: openraft::SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: compaction.keep_after_snapshot,
        replication_lag_threshold: compaction.snapshot_every + compaction.keep_after_snapshot,
        ..Default::default()
    }
    .validate()
}

/// True when `id` is a voter of `membership`.
pub fn is_voter(membership: &openraft::Membership<NodeId, Node>, id: NodeId) -> bool {
    membership.voter_ids().any(|v| v == id)
}

pub(crate) fn storage_error(verb: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::write(AnyError::error(format!("{verb}: {e}"))),
    }
}

pub(crate) fn storage_read_error(what: &str, e: impl std::fmt::Display) -> StorageError<NodeId> {
    StorageError::IO {
        source: StorageIOError::read(AnyError::error(format!("{what}: {e}"))),
    }
}
