//! The Raft log and vote, in the node's own durable files (see
//! [`crate::store::log`]):
//!
//! ```text
//! {data-dir}/log/*.seg   the entries (postcard `Entry`), one record each
//! {data-dir}/log/meta    vote, last purged log id, last committed log id
//! ```
//!
//! Appends are written at once and made durable by [`GroupCommit`]'s flush
//! thread; a vote and a purge point are written to `meta` (fsynced, renamed,
//! directory fsynced) before the call returns.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, Mutex};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, RaftLogReader, StorageError, Vote};
use serde::{Deserialize, Serialize};

use super::entry_cache::{EntryCache, ENTRY_CACHE_BYTES};
use super::group_commit::GroupCommit;
use super::{storage_error, storage_read_error, NodeId, TypeConfig};
use crate::store::codec;
use crate::store::log::{LogFiles, MetaFile};

/// Segment size of the log files.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;

/// What `meta` holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
enum StoredMeta {
    #[default]
    Empty,
    V1 {
        vote: Option<Vote<NodeId>>,
        purged: Option<LogId<NodeId>>,
        committed: Option<LogId<NodeId>>,
    },
}

/// The vote, purge point and commit point of the log.
#[derive(Debug, Clone, Default)]
pub(crate) struct Meta {
    pub(crate) vote: Option<Vote<NodeId>>,
    pub(crate) purged: Option<LogId<NodeId>>,
    pub(crate) committed: Option<LogId<NodeId>>,
}

/// The Raft log store. Cloning gives another handle to the same log.
#[derive(Clone)]
pub struct LogStore {
    log: Arc<LogFiles>,
    /// The newest entries, decoded: always a suffix of what the files hold
    /// (truncated and purged under its lock with them), possibly a few
    /// entries short of their end while an append is being written.
    cache: Arc<Mutex<EntryCache>>,
    meta_file: Arc<MetaFile>,
    meta: Arc<Mutex<Meta>>,
    /// What the files hold durably, which bounds the commit point written.
    durable: Arc<Mutex<Durable>>,
    /// Held while the metadata file is written: writes never cross, and
    /// each writes the newest metadata.
    meta_write: Arc<tokio::sync::Mutex<()>>,
    /// The commit point's write behind, while one runs.
    committed_write: Arc<Mutex<Option<tokio::task::JoinHandle<()>>>>,
    flusher: GroupCommit,
    disk: Arc<crate::disk::DiskGuard>,
}

/// Entries the commit point may move past the one the metadata file holds
/// before it is written again (besides with each vote and purge), behind
/// Raft's back. A node that restarts re-applies the log up to the written
/// one in openraft's 64-entry steps, but everything past it in one read
/// once it hears of the commit point again: a few hundred entries (each at
/// most about a MiB), not the whole log since the snapshot.
pub const COMMITTED_WRITE_EVERY: u64 = 256;

/// What the log files and the metadata file hold durably.
#[derive(Debug, Default)]
struct Durable {
    /// The last entry the log files hold synced.
    log_index: Option<u64>,
    /// The commit point the metadata file holds.
    committed: Option<LogId<NodeId>>,
}

impl Durable {
    /// The commit point that may be written now: `committed` when the log
    /// holds it durably (or purged it), else the one already written. A
    /// follower learns of a commit point before its own copy of those
    /// entries is synced; written then and followed by a power loss, it
    /// would name entries the log no longer has.
    fn writable(
        &self,
        committed: Option<LogId<NodeId>>,
        purged: Option<LogId<NodeId>>,
    ) -> Option<LogId<NodeId>> {
        if committed.is_some() && !past_log_end(committed, self.log_index, purged) {
            committed
        } else {
            self.committed
        }
    }
}

/// True when `committed` lies past the end of a log whose last entry is
/// `last` and whose purge point is `purged`: openraft would re-apply
/// entries the log does not have.
pub(crate) fn past_log_end(
    committed: Option<LogId<NodeId>>,
    last: Option<u64>,
    purged: Option<LogId<NodeId>>,
) -> bool {
    let end = last.max(purged.map(|p| p.index));
    committed.is_some_and(|c| end.is_none_or(|e| c.index > e))
}

/// What a metadata write does when the disk is full.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WhenFull {
    /// Waits for space (a vote must be durable before it is cast).
    Wait,
    /// Fails (the commit point can wait for the next write).
    Fail,
}

/// How long a write that found the disk full waits before it tries again.
pub(super) const DISK_FULL_RETRY: std::time::Duration = std::time::Duration::from_millis(250);

/// True when `e` is a write that failed for want of space.
pub(super) fn is_disk_full(e: &crate::store::StoreError) -> bool {
    matches!(e, crate::store::StoreError::Io { source, .. } if crate::disk::is_enospc(source))
}

impl LogStore {
    /// Opens the log files and metadata; `flusher` must sync `log`; a
    /// write that finds the disk full tells `disk` and waits for space.
    pub fn open(
        log: Arc<LogFiles>,
        meta_file: MetaFile,
        flusher: GroupCommit,
        disk: Arc<crate::disk::DiskGuard>,
    ) -> Result<Self, crate::store::StoreError> {
        let meta = match meta_file.read()? {
            None => Meta::default(),
            Some(bytes) => match codec::decode_message::<StoredMeta>("log metadata", &bytes)
                .map_err(|reason| crate::store::StoreError::Corrupt {
                    key: "log/meta".into(),
                    reason,
                })? {
                StoredMeta::Empty => Meta::default(),
                StoredMeta::V1 {
                    vote,
                    purged,
                    committed,
                } => Meta {
                    vote,
                    purged,
                    committed,
                },
            },
        };
        let mut meta = meta;
        let log_index = log.last_index();
        // A commit point past what the log holds (written by an older build
        // before a power loss) would have openraft re-apply entries it no
        // longer has: forget it; the leader tells it again.
        if past_log_end(meta.committed, log_index, meta.purged) {
            tracing::warn!(committed = ?meta.committed, last = ?log_index, "the recorded commit point lies past the log's end; it is forgotten");
            meta.committed = None;
        }
        let durable = Durable {
            log_index,
            committed: meta.committed,
        };
        Ok(LogStore {
            log,
            cache: Arc::new(Mutex::new(EntryCache::new(ENTRY_CACHE_BYTES))),
            meta_file: Arc::new(meta_file),
            meta: Arc::new(Mutex::new(meta)),
            durable: Arc::new(Mutex::new(durable)),
            meta_write: Arc::new(tokio::sync::Mutex::new(())),
            committed_write: Arc::new(Mutex::new(None)),
            flusher,
            disk,
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, EntryCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn meta(&self) -> Meta {
        self.meta.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the log files' changes so far are on disk; `what`
    /// names the sync in an error.
    async fn sync(&self, what: &str) -> Result<(), StorageError<NodeId>> {
        self.flusher
            .flush()
            .await
            .map_err(|e| storage_error(what, e))
    }

    fn durable(&self) -> std::sync::MutexGuard<'_, Durable> {
        self.durable.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Writes the metadata, for its commit point, in a task of its own
    /// (unless one is under way): Raft does not wait for it. A full disk
    /// leaves it for the next write.
    fn write_committed_behind(&self) {
        let mut pending = self
            .committed_write
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if pending.as_ref().is_some_and(|w| !w.is_finished()) {
            return;
        }
        let store = self.clone();
        *pending = Some(tokio::spawn(async move {
            if let Err(e) = store.update_meta(|_| {}, WhenFull::Fail).await {
                tracing::warn!(error = %e, "the commit point was not written; the next write carries it");
            }
        }));
    }

    /// Waits for the commit point's write behind, if one runs.
    #[cfg(test)]
    async fn committed_written(&self) {
        let pending = self
            .committed_write
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(w) = pending {
            w.await.unwrap();
        }
    }

    /// Changes the metadata and writes it durably.
    async fn update_meta(
        &self,
        change: impl FnOnce(&mut Meta),
        when_full: WhenFull,
    ) -> Result<(), StorageError<NodeId>> {
        let _writing = self.meta_write.lock().await;
        let m = {
            let mut m = self.meta.lock().unwrap_or_else(|e| e.into_inner());
            change(&mut m);
            m.clone()
        };
        let committed = self.durable().writable(m.committed, m.purged);
        let bytes = codec::encode(&StoredMeta::V1 {
            vote: m.vote,
            purged: m.purged,
            committed,
        });
        loop {
            let (file, bytes) = (self.meta_file.clone(), bytes.clone());
            let written = tokio::task::spawn_blocking(move || file.write(&bytes))
                .await
                .map_err(|e| storage_error("writing log metadata", e))?;
            match written {
                Ok(()) => {
                    self.durable().committed = committed;
                    return Ok(());
                }
                // A vote must be durable before it is cast: wait for room
                // rather than stop Raft.
                Err(e) if is_disk_full(&e) => {
                    self.disk.hit_enospc();
                    if when_full == WhenFull::Fail {
                        return Err(storage_error("writing log metadata", e));
                    }
                    tracing::warn!(error = %e, "the disk is full: the log metadata waits for space");
                    tokio::time::sleep(DISK_FULL_RETRY).await;
                }
                Err(e) => return Err(storage_error("writing log metadata", e)),
            }
        }
    }
}

/// The vote, purge point and commit point `meta` holds (offline tools).
pub(crate) fn read_meta(file: &MetaFile) -> Result<Meta, String> {
    match file.read().map_err(|e| e.to_string())? {
        None => Ok(Meta::default()),
        Some(bytes) => match codec::decode_message::<StoredMeta>("log metadata", &bytes)? {
            StoredMeta::Empty => Ok(Meta::default()),
            StoredMeta::V1 {
                vote,
                purged,
                committed,
            } => Ok(Meta {
                vote,
                purged,
                committed,
            }),
        },
    }
}

/// Turns a leader's own committed vote, left from before a restart, into an
/// uncommitted one (keeping its term and whom it names), and says whether it
/// did.
///
/// openraft 0.9 resumes leadership at once when it starts with a committed
/// vote for itself, in the same term. A leader that restarts may have lost
/// its log's tail: the part not yet synced at a power loss (its followers
/// may hold those entries, replicated before the leader's own fsync), or a
/// damaged range cut off. Leading again in the same term, it would write
/// new entries under the log ids its followers hold for other entries, and
/// since Raft takes equal log ids for equal entries, the logs and states
/// would silently diverge. An uncommitted vote keeps the node from voting
/// for another in that term, as before, but makes it start as a follower;
/// it then wins or loses a new term's election like any other candidate.
pub(crate) fn step_down(file: &MetaFile, me: NodeId) -> Result<bool, String> {
    let mut meta = read_meta(file)?;
    let Some(vote) = meta.vote.as_mut() else {
        return Ok(false);
    };
    if !vote.committed || vote.leader_id().voted_for() != Some(me) {
        return Ok(false);
    }
    vote.committed = false;
    write_meta(file, &meta)?;
    Ok(true)
}

/// The log id of the last entry in `log` (offline tools).
pub(crate) fn last_log_id(log: &LogFiles) -> Result<Option<LogId<NodeId>>, String> {
    match log.last().map_err(|e| format!("log: {e}"))? {
        Some((i, bytes)) => Ok(Some(
            codec::decode_message::<Entry<TypeConfig>>("log entry", &bytes)
                .map_err(|e| format!("log entry {i}: {e}"))?
                .log_id,
        )),
        None => Ok(None),
    }
}

/// Writes `meta` durably (offline tools).
pub(crate) fn write_meta(file: &MetaFile, meta: &Meta) -> Result<(), String> {
    let bytes = codec::encode(&StoredMeta::V1 {
        vote: meta.vote,
        purged: meta.purged,
        committed: meta.committed,
    });
    file.write(&bytes).map_err(|e| e.to_string())
}

fn start_of(b: Bound<&u64>) -> u64 {
    match b {
        Bound::Included(i) => *i,
        Bound::Excluded(i) => i + 1,
        Bound::Unbounded => 0,
    }
}

fn end_of(b: Bound<&u64>) -> u64 {
    match b {
        Bound::Included(i) => i + 1,
        Bound::Excluded(i) => *i,
        Bound::Unbounded => u64::MAX,
    }
}

impl LogStore {
    /// Entries `from..to` as the files hold them, checked and decoded.
    fn read_files(
        &self,
        from: u64,
        to: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let raw = self
            .log
            .read(from, to)
            .map_err(|e| storage_read_error("reading the log", e))?;
        raw.into_iter()
            .map(|(i, bytes)| {
                codec::decode_message::<Entry<TypeConfig>>("log entry", &bytes)
                    .map_err(|e| storage_read_error(&format!("decoding log entry {i}"), e))
            })
            .collect()
    }
}

impl super::kept_bodies::LoggedEntries for LogStore {
    fn payload(&self, index: u64) -> Result<Option<super::payload::Payload>, String> {
        let cached = {
            let cache = self.cache();
            cache
                .start_within(index, index + 1)
                .and_then(|_| cache.get(index, index + 1).pop())
        };
        let entry = match cached {
            Some(e) => e,
            None => {
                if self.meta().purged.is_some_and(|p| p.index >= index) {
                    // Purged: a kept segment may hold it still.
                    return match self.log.read_retained(index) {
                        Ok(None) => Ok(None),
                        Ok(Some(bytes)) => {
                            codec::decode_message::<Entry<TypeConfig>>("log entry", &bytes)
                                .map_err(|e| format!("decoding log entry {index}: {e}"))
                                .and_then(|e| match e.payload {
                                    openraft::EntryPayload::Normal(p) => Ok(Some(p)),
                                    _ => Err(format!("log entry {index} carries no commands")),
                                })
                        }
                        Err(e) => Err(e.to_string()),
                    };
                }
                match self.read_files(index, index + 1) {
                    Ok(mut read) => match read.pop() {
                        Some(e) => e,
                        // Purged since the look at the purge point.
                        None => return Ok(None),
                    },
                    Err(e) if self.meta().purged.is_some_and(|p| p.index >= index) => {
                        tracing::debug!(index, error = %e, "log entry purged while read");
                        return Ok(None);
                    }
                    Err(e) => return Err(e.to_string()),
                }
            }
        };
        match entry.payload {
            openraft::EntryPayload::Normal(p) => Ok(Some(p)),
            _ => Err(format!("log entry {index} carries no commands")),
        }
    }

    fn spans(&self) -> Vec<crate::store::log::Span> {
        self.log.spans()
    }

    fn pin(&self, segments: std::collections::BTreeSet<u64>) {
        self.log.set_pins(segments);
    }

    fn record_body_lost(&self, index: u64) -> Result<(), String> {
        self.log
            .body_lost_file()
            .write(&index.to_be_bytes())
            .map_err(|e| e.to_string())
    }

    fn hold_through(&self, index: u64) -> super::kept_bodies::Hold {
        Box::new(self.log.hold_through(index))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let from = start_of(range.start_bound());
        let to = end_of(range.end_bound());
        // The newest entries come from memory; older ones are read, checked
        // and decoded from the files, and so are any appended to the files
        // but not yet to the cache.
        let (files_to, cached) = {
            let cache = self.cache();
            match cache.start_within(from, to) {
                Some(start) => (start, cache.get(start, to)),
                None => (to, Vec::new()),
            }
        };
        let after = files_to + cached.len() as u64;
        let mut entries = self.read_files(from, files_to)?;
        entries.extend(cached);
        if after > files_to && after < to {
            entries.extend(self.read_files(after, to)?);
        }
        Ok(entries)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id = self.meta().purged;
        let last = self
            .log
            .last()
            .map_err(|e| storage_read_error("reading the log", e))?;
        let last_log_id = match last {
            Some((i, bytes)) => {
                let entry: Entry<TypeConfig> = codec::decode_message("log entry", &bytes)
                    .map_err(|e| storage_read_error(&format!("decoding log entry {i}"), e))?;
                Some(entry.log_id).max(last_purged_log_id)
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
        let vote = *vote;
        self.update_meta(|m| m.vote = Some(vote), WhenFull::Wait)
            .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(self.meta().vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Kept in memory; written with the next vote or purge, and behind
        // Raft's back once it has moved COMMITTED_WRITE_EVERY entries on.
        let index = committed.map_or(0, |c| c.index);
        metrics::gauge!("sluice_raft_committed_index").set(index as f64);
        self.meta
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .committed = committed;
        let written = self.durable().committed.map_or(0, |c| c.index);
        if index >= written.saturating_add(COMMITTED_WRITE_EVERY) {
            self.write_committed_behind();
        }
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        // (The metadata file's may be older: see COMMITTED_WRITE_EVERY.)
        Ok(self.meta().committed)
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
        let mut entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let encoded: Vec<(u64, Vec<u8>)> = entries
            .iter()
            .map(|e| (e.log_id.index, codec::encode(e)))
            .collect();
        let n = encoded.len();
        // An append that finds the disk full waits for space (a failed
        // write leaves the log's end where it was, so it is simply written
        // again) rather than stop Raft, which would leave a node that
        // answers nothing until restarted.
        let mut waited = false;
        loop {
            // Written to the files first, then to the cache: a read between
            // the two finds the new entries in the files.
            match self.log.append(&encoded) {
                Ok(()) => {
                    let mut cache = self.cache();
                    for (e, (_, bytes)) in entries.drain(..).zip(&encoded) {
                        cache.push(e, bytes.len());
                    }
                    break;
                }
                Err(e) if is_disk_full(&e) => {
                    self.disk.hit_enospc();
                    if !waited {
                        tracing::error!(error = %e, "the disk is full: the log append waits for space");
                        waited = true;
                    }
                    tokio::time::sleep(DISK_FULL_RETRY).await;
                }
                Err(e) => return Err(storage_error("appending to the log", e)),
            }
        }
        let last = encoded.last().map(|(i, _)| *i);
        let durable = self.durable.clone();
        self.flusher.submit(
            n,
            Box::new(move |r| {
                if r.is_ok() {
                    let mut d = durable.lock().unwrap_or_else(|e| e.into_inner());
                    d.log_index = d.log_index.max(last);
                }
                callback.log_io_completed(r)
            }),
        );
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "truncating the log");
        {
            let mut cache = self.cache();
            cache.truncate_from(log_id.index);
            self.log
                .truncate_from(log_id.index)
                .map_err(|e| storage_error("truncating the log", e))?;
        }
        self.sync("syncing the truncated log").await?;
        // After the sync: the flushes of appends issued before it, which
        // raise the synced end, have all completed.
        let mut d = self.durable();
        d.log_index = d.log_index.min(log_id.index.checked_sub(1));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        tracing::debug!(%log_id, "purging the log");
        // Record the purge point first: if the node stops half-way, the
        // entries left below it are ignored.
        self.update_meta(|m| m.purged = Some(log_id), WhenFull::Wait)
            .await?;
        {
            let mut cache = self.cache();
            cache.purge_through(log_id.index);
            self.log
                .purge_through(log_id.index)
                .map_err(|e| storage_error("purging the log", e))?;
        }
        self.sync("syncing the purged log").await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn meta_with(vote: Vote<NodeId>) -> (tempfile::TempDir, MetaFile) {
        let dir = tempfile::tempdir().unwrap();
        let file = MetaFile::new(&dir.path().join("meta"));
        let meta = Meta {
            vote: Some(vote),
            purged: None,
            committed: Some(LogId::new(CommittedLeaderId::new(4, 1), 10)),
        };
        write_meta(&file, &meta).unwrap();
        (dir, file)
    }

    /// A log store over `dir` whose log holds entries 0 to `last`.
    fn store_with_entries(dir: &std::path::Path, last: u64) -> LogStore {
        let log = Arc::new(LogFiles::open(&dir.join("log"), SEGMENT_BYTES).unwrap());
        if log.last_index().is_none() {
            let entries: Vec<_> = (0..=last)
                .map(|i| {
                    let entry = Entry::<TypeConfig> {
                        log_id: LogId::new(CommittedLeaderId::new(1, 1), i),
                        payload: openraft::EntryPayload::Blank,
                    };
                    (i, codec::encode(&entry))
                })
                .collect();
            log.append(&entries).unwrap();
            log.sync().unwrap();
        }
        let flusher = {
            let log = log.clone();
            GroupCommit::start("test-flush", move || log.sync().map_err(|e| e.to_string()))
        };
        let disk = crate::disk::DiskGuard::new(dir, 0);
        LogStore::open(log, MetaFile::new(&dir.join("meta")), flusher, disk).unwrap()
    }

    #[tokio::test]
    async fn the_commit_point_is_written_every_so_many_entries_and_never_past_the_synced_log() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = store_with_entries(dir.path(), 999);
        let at = |i| Some(LogId::new(CommittedLeaderId::new(1, 1), i));
        let on_disk = || {
            read_meta(&MetaFile::new(&dir.path().join("meta")))
                .unwrap()
                .committed
        };
        let commit = async |store: &mut LogStore, i| {
            store.save_committed(at(i)).await.unwrap();
            store.committed_written().await;
        };
        commit(&mut store, COMMITTED_WRITE_EVERY - 1).await;
        assert_eq!(on_disk(), None, "not yet written");
        commit(&mut store, COMMITTED_WRITE_EVERY).await;
        assert_eq!(on_disk(), at(COMMITTED_WRITE_EVERY));
        commit(&mut store, 2 * COMMITTED_WRITE_EVERY - 1).await;
        assert_eq!(on_disk(), at(COMMITTED_WRITE_EVERY));
        assert_eq!(
            store.read_committed().await.unwrap(),
            at(2 * COMMITTED_WRITE_EVERY - 1)
        );
        // A vote writes the commit point along.
        store.save_vote(&Vote::new(2, 1)).await.unwrap();
        assert_eq!(on_disk(), at(2 * COMMITTED_WRITE_EVERY - 1));
        commit(&mut store, 3 * COMMITTED_WRITE_EVERY - 1).await;
        assert_eq!(on_disk(), at(3 * COMMITTED_WRITE_EVERY - 1));
        // Past the log's synced end (a follower hears of a commit point
        // before its copy of the entries is synced): the written one stays.
        commit(&mut store, 1_100).await;
        assert_eq!(on_disk(), at(3 * COMMITTED_WRITE_EVERY - 1));
        store.save_vote(&Vote::new(3, 1)).await.unwrap();
        assert_eq!(on_disk(), at(3 * COMMITTED_WRITE_EVERY - 1));
        assert_eq!(store.read_committed().await.unwrap(), at(1_100));
    }

    #[tokio::test]
    async fn a_recorded_commit_point_past_the_log_is_forgotten_at_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(store_with_entries(dir.path(), 99));
        let file = MetaFile::new(&dir.path().join("meta"));
        let at = |i| Some(LogId::new(CommittedLeaderId::new(1, 1), i));
        let mut meta = read_meta(&file).unwrap();
        meta.committed = at(150);
        write_meta(&file, &meta).unwrap();
        let mut store = store_with_entries(dir.path(), 99);
        assert_eq!(store.read_committed().await.unwrap(), None);
        // Within the log, it stands.
        meta.committed = at(99);
        write_meta(&file, &meta).unwrap();
        let mut store2 = store_with_entries(dir.path(), 99);
        assert_eq!(store2.read_committed().await.unwrap(), at(99));
        drop(store);
    }

    #[test]
    fn a_restarted_leader_steps_down_keeping_its_term() {
        let (_dir, file) = meta_with(Vote::new_committed(4, 1));
        assert!(step_down(&file, 1).unwrap());
        let meta = read_meta(&file).unwrap();
        let vote = meta.vote.unwrap();
        assert!(!vote.committed);
        assert_eq!(
            (vote.leader_id().term, vote.leader_id().voted_for()),
            (4, Some(1))
        );
        assert_eq!(meta.committed.map(|c| c.index), Some(10));
        // Once is enough.
        assert!(!step_down(&file, 1).unwrap());
    }

    #[test]
    fn a_follower_keeps_its_vote() {
        let (_dir, file) = meta_with(Vote::new_committed(4, 2));
        assert!(!step_down(&file, 1).unwrap());
        assert!(read_meta(&file).unwrap().vote.unwrap().committed);
    }
}
