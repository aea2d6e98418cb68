//! The Raft log and vote, stored in two [`Tree`]s of the node's [`Db`].
//!
//! | tree | key | value |
//! | --- | --- | --- |
//! | `raft-log` | log index, big-endian `u64` | postcard `Entry` |
//! | `raft-meta` | `vote`, `committed`, `purged` | postcard `Vote` / `LogId` |
//!
//! Appends are written at once and made durable by [`GroupCommit`]; the vote
//! is flushed before `save_vote` returns, as Raft requires.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};

use super::group_commit::GroupCommit;
use super::{storage_error, storage_read_error, NodeId, TypeConfig};
use crate::store::{codec, Db, StateRead, Tree, WriteBatch};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const PURGED: &[u8] = b"purged";

/// Entries removed per batch when purging or truncating.
const REMOVE_BATCH: usize = 4096;

/// The Raft log store. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct LogStore {
    log: Tree,
    meta: Tree,
    flusher: GroupCommit,
}

impl LogStore {
    /// Opens the log in `db`, flushing through `flusher`.
    pub fn open(db: &Db, flusher: GroupCommit) -> Result<Self, crate::store::StoreError> {
        Ok(LogStore {
            log: db.tree("raft-log")?,
            meta: db.tree("raft-meta")?,
            flusher,
        })
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
    ) -> Result<Option<T>, StorageError<NodeId>> {
        let bytes = self
            .meta
            .get(key)
            .map_err(|e| storage_read_error("reading raft metadata", e))?;
        bytes
            .map(|b| codec::decode(key, &b))
            .transpose()
            .map_err(|e| storage_read_error("decoding raft metadata", e))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
    ) -> Result<(), StorageError<NodeId>> {
        self.meta
            .insert(key, codec::encode(value))
            .map_err(|e| storage_error("writing raft metadata", e))
    }

    /// Removes log entries with index in `range`, in bounded batches.
    fn remove_range(&self, start: u64, end: Bound<u64>) -> Result<(), StorageError<NodeId>> {
        let end = match end {
            Bound::Included(e) => Bound::Included(e.to_be_bytes().to_vec()),
            Bound::Excluded(e) => Bound::Excluded(e.to_be_bytes().to_vec()),
            Bound::Unbounded => Bound::Unbounded,
        };
        loop {
            let mut batch = WriteBatch::default();
            for kv in self
                .log
                .range(
                    Bound::Included(start.to_be_bytes().to_vec()),
                    end.clone(),
                    false,
                )
                .take(REMOVE_BATCH)
            {
                let (k, _) = kv.map_err(|e| storage_read_error("reading the log", e))?;
                batch.delete(k);
            }
            if batch.is_empty() {
                return Ok(());
            }
            self.log
                .apply(batch)
                .map_err(|e| storage_error("removing log entries", e))?;
        }
    }
}

fn index_bound(b: Bound<&u64>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(i) => Bound::Included(i.to_be_bytes().to_vec()),
        Bound::Excluded(i) => Bound::Excluded(i.to_be_bytes().to_vec()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let start = index_bound(range.start_bound());
        let end = index_bound(range.end_bound());
        let mut entries = Vec::new();
        for kv in self.log.range(start, end, false) {
            let (k, v) = kv.map_err(|e| storage_read_error("reading the log", e))?;
            let entry: Entry<TypeConfig> =
                codec::decode(&k, &v).map_err(|e| storage_read_error("decoding a log entry", e))?;
            entries.push(entry);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.read_meta(PURGED)?;
        let last = self
            .log
            .last()
            .map_err(|e| storage_read_error("reading the log", e))?;
        let last_log_id = match last {
            Some((k, v)) => {
                let entry: Entry<TypeConfig> = codec::decode(&k, &v)
                    .map_err(|e| storage_read_error("decoding a log entry", e))?;
                Some(entry.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.write_meta(VOTE, vote)?;
        self.flusher
            .flush()
            .await
            .map_err(|e| storage_error("flushing the vote", e))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Not flushed on its own: it only lets a restarting node re-apply
        // committed entries sooner, and rides along with the next flush.
        metrics::gauge!("sluice_raft_committed_index")
            .set(committed.map(|c| c.index).unwrap_or(0) as f64);
        self.write_meta(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(self
            .read_meta::<Option<LogId<NodeId>>>(COMMITTED)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut batch = WriteBatch::default();
        for entry in entries {
            batch.put(
                entry.log_id.index.to_be_bytes().to_vec(),
                codec::encode(&entry),
            );
        }
        let n = batch.len();
        self.log
            .apply(batch)
            .map_err(|e| storage_error("appending to the log", e))?;
        self.flusher
            .submit(n, Box::new(move |r| callback.log_io_completed(r)));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "truncating the log");
        self.remove_range(log_id.index, Bound::Unbounded)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "purging the log");
        // Record the purge point first: if the node stops half-way, the
        // entries left below it are ignored.
        self.write_meta(PURGED, &log_id)?;
        self.remove_range(0, Bound::Included(log_id.index))
    }
}
