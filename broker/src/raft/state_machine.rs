//! The replicated state machine as openraft sees it.
//!
//! Committed entries are applied through [`machine::apply`] into one
//! transaction per `apply` call, with the last applied log id, the
//! membership and the clock. Its writes join the recent writes held in
//! memory over the state tree ([`StateHandle`]); once
//! [`RECENT_WRITES_BYTES`] of them gather, a blocking thread copies them into
//! the tree while apply goes on. Keys written and removed in between (most
//! of a queue message's: sent, received, deleted) never reach the tree.
//! Queue message keys (`m/...`: heads, body references, the ready, due and
//! sent indexes) are not copied into the tree at all but kept in memory
//! over it, packed ([`Packed`]), up to [`RESIDENT_MESSAGES_BYTES`];
//! snapshots read them there, a snapshot loaded puts them back there, and a
//! clean stop writes them to a file of its own (`queue-index/sm.{n}`) that
//! the next start reads back. Past the budget newer ones go to the tree, so
//! a deep backlog does not take the node's memory.
//!
//! The state lives in a tree `sm.{generation}`; installing a snapshot loads
//! it into the other generation's tree (generations alternate between two
//! trees) and switches over with one durable write, so a crash mid-install
//! leaves the old state intact. The tree left behind is emptied key by key,
//! never dropped: sled 0.34's `drop_tree` can loop forever, allocating, on a
//! tree with a node merge in progress (a node killed mid-write hung that way
//! at start).
//!
//! The state is not flushed on apply, and its writes are not atomic across
//! a crash (see [`Tree::apply`]): the log is the durable copy. A node that
//! stops cleanly copies what is in memory into the tree (queue message
//! keys into their index file), flushes it and marks it clean
//! ([`mark_clean`]); one that opens a state not marked clean (killed,
//! crashed, power lost) cannot trust it, since it may hold part of a
//! batch, and rebuilds it from the latest snapshot (or from empty when
//! none was taken yet). openraft then re-applies the log from there.
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Instant;

use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StoredMembership,
};

use super::copy_gate::{CopyGate, Frozen};
use super::kept_bodies::LoggedEntries;
use super::snapshot::{Meta, SnapshotDir, SnapshotReader, SnapshotWriter};
use super::snapshot_data::{LogBodies, SnapshotFile};
use super::{storage_error, storage_read_error, Node, NodeId, TypeConfig};
use crate::apply::{Counter, Ctx, Effect, Effects};
use crate::command::{EntryResponse, Query, QueryResponse};
use crate::error::ApplyError;
use crate::machine;
use crate::store::packed::{self, Packed};
use crate::store::records::RecordFiles;
use crate::store::{
    codec, lay_over, Changes, Db, KvIter, StateRead, StateTree, StoreError, Tree, Txn, WriteBatch,
};
use crate::waiters::Waiters;

const APPLIED: &[u8] = b"\x00sm/applied";
const MEMBERSHIP: &[u8] = b"\x00sm/membership";
const CLOCK: &[u8] = b"\x00sm/clock";
const ACTIVE: &[u8] = b"active";
/// In `sm-meta`: present only while the node is stopped after a clean stop.
const CLEAN: &[u8] = b"clean";
/// Records per batch when loading a snapshot.
const INSTALL_BATCH: usize = 10_000;

/// Encoded bytes of recent writes held in memory before they are copied
/// into the state tree. Most of a queue message's keys are written and
/// removed within moments (sent, received, deleted): in memory they cancel
/// out and never reach the tree. A copy runs beside apply; apply waits for
/// it only when the next one is due first. Small, so that a copy is a short
/// burst: on three nodes sharing 2 cores, 16 MiB copies doubled the p99
/// latency of every workload and 1 MiB copies still added a third to queue
/// sends' (docs/bench/log-store-first-steps.md). At 256 KiB a copy holds
/// about a tenth of a second of a busy pipeline's messages, most of them
/// already deleted.
pub const RECENT_WRITES_BYTES: usize = 256 * 1024;

/// Encoded bytes of recent writes that may gather in memory while a
/// snapshot is built (copies wait for it meanwhile); past them apply waits
/// for the build too. Queue message keys do not gather: they go into the
/// packed index as a copy would put them ([`Layers::pack_recent`]); the
/// rest (queue counters, stream records) does.
pub const RECENT_WRITES_WHILE_FROZEN_BYTES: usize = 256 * 1024 * 1024;

/// What an entry of the recent writes costs beyond its key and value (the
/// map's node share), about: so that removals count against the budget too.
const ENTRY_OVERHEAD: usize = 64;

/// Bytes of queue message keys (heads, body references, the ready, due and
/// sent indexes: everything under `m/`) held in memory instead of the tree.
/// They are written and rewritten at every send, receive and delete, which
/// in sled costs a leaf rewrite each; in memory the queue's index costs a
/// map insert. Past this budget (a deep backlog) newer messages' keys go to
/// the tree as before, and the node's memory stays bounded. Packed, a
/// message of a standard queue takes about 95 bytes (its keys share their
/// prefixes; its body reference, id and MD5 are most of it), so some
/// 11 million messages stay in memory. The default of `--queue-index-mb`.
/// Memory holds no removals: that of a key the tree holds is written to
/// the tree.
pub const RESIDENT_MESSAGES_BYTES: usize = 1024 * 1024 * 1024;

/// Bytes an entry of a layer takes, roughly.
fn entry_bytes(key: &[u8], value: &Option<Vec<u8>>) -> usize {
    ENTRY_OVERHEAD + key.len() + value.as_ref().map_or(0, Vec::len)
}

/// Whether `key` is a queue message's, which stays in memory.
fn is_message_key(key: &[u8]) -> bool {
    key.starts_with(sluice_core::queues::layout::MESSAGES)
}

/// Read access to the applied state, shared by the API and the state
/// machine. Reads never see half of an applied batch.
#[derive(Clone)]
pub struct StateHandle {
    layers: Arc<RwLock<Layers>>,
    /// Entered while writes are copied into the tree: two copies never
    /// interleave, so an older value is never written over a newer one;
    /// frozen while a snapshot reads the tree and `resident`.
    copy_gate: Arc<CopyGate>,
}

/// The applied state: the newest writes in memory, laid over the state
/// tree (the engine's copy).
struct Layers {
    /// Writes of the latest batches, not in the tree yet.
    recent: Changes,
    /// Encoded bytes in `recent` (keys and values, roughly).
    recent_bytes: usize,
    /// Older writes being copied into the tree (empty when none).
    copying: Arc<Changes>,
    /// Queue message keys copied out of `copying` into memory rather than
    /// the tree (up to [`RESIDENT_MESSAGES_BYTES`]), packed: newer than the
    /// tree, older than `copying`. A snapshot reads them with the tree; a
    /// clean stop writes them to the queue index file. A snapshot being
    /// written reads a clone (its blocks are shared, and copied on write).
    resident: Packed,
    /// Whether the tree may hold queue message keys (opened from disk, a
    /// snapshot installed, a spill past the budget, a persist): a copy then
    /// looks up each removed message key there, and removes it there too.
    tree_has_messages: bool,
    /// [`RESIDENT_MESSAGES_BYTES`] (smaller in tests).
    resident_budget: usize,
    tree: StateTree,
}

impl Layers {
    fn over(tree: StateTree) -> Layers {
        let messages = sluice_core::queues::layout::MESSAGES.to_vec();
        let tree_has_messages = tree
            .range(
                Bound::Included(messages.clone()),
                crate::store::keys::prefix_end(&messages),
                false,
            )
            .next()
            .is_some();
        Layers {
            recent: Changes::new(),
            recent_bytes: 0,
            copying: Arc::new(Changes::new()),
            resident: Packed::new(),
            tree_has_messages,
            resident_budget: RESIDENT_MESSAGES_BYTES,
            tree,
        }
    }

    fn add(&mut self, changes: Changes) {
        self.recent_bytes += changes
            .iter()
            .map(|(k, v)| entry_bytes(k, v))
            .sum::<usize>();
        sluice_core::store::merge_changes(&mut self.recent, changes);
    }

    /// Moves the queue message keys of the recent writes into `resident`,
    /// as a copy would, leaving the rest: what stands in for copies while a
    /// snapshot holds the tree still. A snapshot reads a clone of
    /// `resident`, whose blocks are copied on write, so it is not
    /// disturbed. Not while the tree may hold message keys (their removals
    /// go there) or `resident` is full.
    fn pack_recent(&mut self) {
        if self.tree_has_messages || self.resident.bytes() >= self.resident_budget {
            return;
        }
        let messages = sluice_core::queues::layout::MESSAGES.to_vec();
        let mut held = self.recent.split_off(&messages);
        if let Bound::Excluded(end) = crate::store::keys::prefix_end(&messages) {
            self.recent.append(&mut held.split_off(&end));
        }
        self.recent_bytes -= held.iter().map(|(k, v)| entry_bytes(k, v)).sum::<usize>();
        self.hold_message_keys(&held, false);
    }

    /// Takes the queue message keys `written` sets into `resident` (or,
    /// when `spilled`, out of it: they went to the tree with the rest) and
    /// those it removes out of it. A removal is never kept: one of a key
    /// the tree holds went to the tree ([`removed_from_tree`]).
    fn hold_message_keys(&mut self, written: &Changes, spilled: bool) {
        let messages = sluice_core::queues::layout::MESSAGES.to_vec();
        let end = crate::store::keys::prefix_end(&messages);
        let held = written.range((Bound::Included(messages), end));
        self.resident.apply(held.map(|(k, v)| {
            let v = if spilled { None } else { v.as_deref() };
            (k.as_slice(), v)
        }));
        if spilled {
            self.tree_has_messages = true;
        }
    }
}

/// The queue message keys `writes` removes that `tree` holds (from before a
/// restart, a snapshot install or a spill): those removals go to the tree.
/// Looked up only when the tree may hold any.
fn removed_from_tree(
    tree: &StateTree,
    writes: &Changes,
    tree_has_messages: bool,
) -> Result<std::collections::BTreeSet<Vec<u8>>, StoreError> {
    let mut held = std::collections::BTreeSet::new();
    if tree_has_messages {
        for (k, v) in writes {
            if v.is_none() && is_message_key(k) && tree.get(k)?.is_some() {
                held.insert(k.clone());
            }
        }
    }
    Ok(held)
}

/// Writes into `tree` what of `writes` belongs there: all of it when
/// `spill`, else all but queue message keys, and the removals of those the
/// tree holds.
fn write_to_tree(
    tree: &StateTree,
    writes: &Changes,
    spill: bool,
    tree_has_messages: bool,
) -> Result<(), StoreError> {
    let held = if spill {
        Default::default()
    } else {
        removed_from_tree(tree, writes, tree_has_messages)?
    };
    tree.apply_changes_where(writes, |k| spill || !is_message_key(k) || held.contains(k))
}

/// The value under `key` in the engine's copy: `resident` over `tree`.
fn settled_get(
    tree: &StateTree,
    resident: &Packed,
    key: &[u8],
) -> Result<Option<Vec<u8>>, StoreError> {
    match is_message_key(key).then(|| resident.get(key)).flatten() {
        Some(v) => Ok(Some(v)),
        None => tree.get(key),
    }
}

/// A range of the engine's copy: `resident` over `tree`.
fn settled_range<'a>(
    tree: &'a StateTree,
    resident: &'a Packed,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
) -> KvIter<'a> {
    let lower = tree.range(start.clone(), end.clone(), reverse);
    packed::over(resident.range(start, end, reverse), lower, reverse)
}

impl StateRead for Layers {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.recent.get(key).or_else(|| self.copying.get(key)) {
            Some(v) => Ok(v.clone()),
            None => settled_get(&self.tree, &self.resident, key),
        }
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_> {
        let (s, e) = (start.clone(), end.clone());
        let lowest = settled_range(&self.tree, &self.resident, s, e, reverse);
        let lower = lay_over(&self.copying, lowest, start.clone(), end.clone(), reverse);
        lay_over(&self.recent, lower, start, end, reverse)
    }
}

/// The engine's copy of the state, settled at a snapshot's index and held
/// still (the copy gate frozen) while the snapshot reads it; apply goes on
/// above it meanwhile.
struct FrozenState {
    tree: StateTree,
    resident: Packed,
    /// Thaws the gate when the snapshot is done with the state.
    _frozen: Frozen,
}

impl StateRead for FrozenState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        settled_get(&self.tree, &self.resident, key)
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_> {
        settled_range(&self.tree, &self.resident, start, end, reverse)
    }
}

impl StateHandle {
    fn over(tree: StateTree) -> StateHandle {
        StateHandle {
            layers: Arc::new(RwLock::new(Layers::over(tree))),
            copy_gate: Arc::new(CopyGate::default()),
        }
    }

    fn layers(&self) -> RwLockReadGuard<'_, Layers> {
        self.layers.read().unwrap_or_else(|e| e.into_inner())
    }

    fn layers_mut(&self) -> RwLockWriteGuard<'_, Layers> {
        self.layers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` over the current state.
    pub fn read<T>(&self, f: impl FnOnce(&dyn StateRead) -> T) -> T {
        f(&*self.layers())
    }

    /// Answers a query from this node's applied state.
    pub fn query(&self, q: &Query) -> Result<QueryResponse, StoreError> {
        self.read(|state| match machine::query(state, q) {
            Ok(out) => Ok(Ok(out)),
            Err(ApplyError::Rejected(e)) => Ok(Err(e)),
            Err(ApplyError::Store(e)) => Err(e),
        })
    }

    /// Adds an applied batch's writes; returns the bytes of recent writes
    /// gathered in memory, to be copied into the tree past
    /// [`RECENT_WRITES_BYTES`].
    fn add(&self, changes: Changes) -> usize {
        let mut layers = self.layers_mut();
        layers.add(changes);
        layers.recent_bytes
    }

    /// Whether a snapshot build holds the engine's copy still: a copy
    /// started now would wait for it.
    fn is_frozen(&self) -> bool {
        self.copy_gate.is_frozen()
    }

    /// See [`Layers::pack_recent`]; returns the bytes of recent writes
    /// left.
    fn pack_recent(&self) -> usize {
        let mut layers = self.layers_mut();
        layers.pack_recent();
        layers.recent_bytes
    }

    /// Waits, on a blocking thread, until no snapshot build holds the
    /// engine's copy still.
    async fn thawed(&self) -> Result<(), tokio::task::JoinError> {
        let gate = self.copy_gate.clone();
        tokio::task::spawn_blocking(move || gate.wait_thawed()).await
    }

    /// Settles every write (see [`StateHandle::settle_in`]) and holds the
    /// engine's copy still until the returned state drops: what a snapshot
    /// reads while apply goes on above it. Blocks while another holds it.
    fn freeze(&self) -> Result<FrozenState, StoreError> {
        let entered = self.copy_gate.enter();
        let mut layers = self.layers_mut();
        Self::settle_in(&mut layers)?;
        let (tree, resident) = (layers.tree.clone(), layers.resident.clone());
        drop(layers);
        Ok(FrozenState {
            tree,
            resident,
            _frozen: self.copy_gate.freeze(entered),
        })
    }

    /// Moves the recent writes aside and copies them into the tree on a
    /// blocking thread (queue message keys into `resident` instead, while
    /// it has room). The caller waits for the copy before it first.
    fn start_copy(&self) -> tokio::task::JoinHandle<Result<(), StoreError>> {
        let (tree, writes, spill) = {
            let _held = self.copy_gate.enter();
            let mut layers = self.layers_mut();
            let mut writes = std::mem::take(&mut layers.recent);
            if !layers.copying.is_empty() {
                // Left by a copy that failed: copied again, under the newer.
                let mut older = (*layers.copying).clone();
                older.append(&mut writes);
                writes = older;
            }
            let writes = Arc::new(writes);
            layers.recent_bytes = 0;
            layers.copying = writes.clone();
            let spill = layers.resident.bytes() >= layers.resident_budget;
            (layers.tree.clone(), writes, spill)
        };
        let handle = self.clone();
        tokio::task::spawn_blocking(move || {
            let _held = handle.copy_gate.enter();
            // A persist or a switch of trees that came first took them.
            if !Arc::ptr_eq(&handle.layers().copying, &writes) {
                return Ok(());
            }
            // On failure the writes stay readable in `copying`, and the
            // caller stops applying (as a failed write in apply would).
            let tree_has_messages = handle.layers().tree_has_messages;
            write_to_tree(&tree, &writes, spill, tree_has_messages)?;
            let mut layers = handle.layers_mut();
            layers.hold_message_keys(&writes, spill);
            layers.copying = Arc::new(Changes::new());
            Ok(())
        })
    }

    /// [`StateHandle::settle_in`], entering the gate first.
    #[cfg(test)]
    fn settle(&self) -> Result<(), StoreError> {
        let _held = self.copy_gate.enter();
        Self::settle_in(&mut self.layers_mut())
    }

    /// Settles every write still in memory as a copy would (the tree, or
    /// `resident` for queue message keys): what a snapshot needs before it
    /// reads the tree and `resident`. Call with the copy gate entered.
    fn settle_in(layers: &mut Layers) -> Result<(), StoreError> {
        // One batch of both, the newer writes over the older.
        let mut writes = std::mem::take(Arc::make_mut(&mut layers.copying));
        writes.append(&mut layers.recent);
        let spill = layers.resident.bytes() >= layers.resident_budget;
        let written = write_to_tree(&layers.tree, &writes, spill, layers.tree_has_messages);
        if written.is_ok() {
            layers.hold_message_keys(&writes, spill);
            layers.recent_bytes = 0;
        } else {
            // Still readable, and written again by the next copy.
            layers.recent = writes;
        }
        written
    }

    /// Settles every write still in memory (see [`StateHandle::settle_in`]),
    /// waiting for a copy in progress, makes the tree and the record files
    /// durable, and writes the queue message keys held in memory to
    /// `index`, a file of a few large blocks that the next start reads
    /// back in one go: what a clean stop needs. Written into the tree
    /// instead, a million messages' keys took sled 20 s, and the start
    /// after an unclean stop as long again to remove them.
    pub fn persist(&self, index: &std::path::Path) -> Result<(), StoreError> {
        let _held = self.copy_gate.enter();
        let mut layers = self.layers_mut();
        Self::settle_in(&mut layers)?;
        layers.tree.sync()?;
        layers
            .resident
            .write_file(index)
            .map_err(|e| StoreError::io("writing the queue index", index, e))
    }

    /// Makes `tree` the state, with the queue message keys `resident` in
    /// memory over it and nothing else; returns the tree it was. Writes
    /// still in memory are dropped: they belonged to the state being
    /// replaced.
    fn replace(&self, tree: StateTree, resident: Packed) -> StateTree {
        let _held = self.copy_gate.enter();
        let mut layers = self.layers_mut();
        let mut next = Layers::over(tree);
        next.resident = resident;
        next.resident_budget = layers.resident_budget;
        std::mem::replace(&mut *layers, next).tree
    }

    /// How many bytes of queue message keys memory holds at most.
    fn resident_budget(&self) -> usize {
        self.layers().resident_budget
    }
}

/// The state machine store handed to openraft.
pub struct StateMachineStore {
    db: Db,
    sm_meta: Tree,
    generation: u64,
    state: StateHandle,
    snapshots: Arc<SnapshotDir>,
    node_id: NodeId,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, Node>,
    clock: u64,
    /// The latest snapshot, set by builds that run beside apply too.
    current_snapshot: Arc<Mutex<Option<(Meta, PathBuf)>>>,
    snapshot_seq: u64,
    waiters: Arc<Waiters>,
    /// The copy of recent writes into the tree under way, if any.
    copy: Option<tokio::task::JoinHandle<Result<(), StoreError>>>,
    /// The log, for the bodies a snapshot keeps (`raft::bodies`).
    entries: Arc<dyn LoggedEntries>,
}

/// Where generation `generation`'s stream records live: beside the
/// database, in `records/sm.{generation}`.
fn records_dir(db: &Db, generation: u64) -> PathBuf {
    let parent = db.path().parent().unwrap_or(std::path::Path::new("."));
    parent.join("records").join(format!("sm.{generation}"))
}

/// Where a clean stop writes generation `generation`'s queue message keys
/// held in memory ([`StateHandle::persist`]): beside the database, in
/// `queue-index/sm.{generation}`.
fn index_path(db: &Db, generation: u64) -> PathBuf {
    let parent = db.path().parent().unwrap_or(std::path::Path::new("."));
    parent.join("queue-index").join(format!("sm.{generation}"))
}

/// The queue message keys a clean stop of generation `generation` left,
/// or why they cannot be trusted.
fn read_index(db: &Db, generation: u64) -> Result<Packed, StoreError> {
    let path = index_path(db, generation);
    Packed::read_file(&path).map_err(|e| StoreError::io("reading the queue index", &path, e))
}

fn read_record<T: serde::de::DeserializeOwned>(
    tree: &dyn StateRead,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    tree.get(key)?.map(|b| codec::decode(key, &b)).transpose()
}

impl StateMachineStore {
    /// Opens the state machine in `db`, with snapshots in `snapshots`, holding
    /// up to `queue_index_memory` bytes of queue message keys in memory.
    pub async fn open(
        db: &Db,
        snapshots: Arc<SnapshotDir>,
        node_id: NodeId,
        waiters: Arc<Waiters>,
        entries: Arc<dyn LoggedEntries>,
        queue_index_memory: usize,
    ) -> Result<Self, StoreError> {
        let sm_meta = db.tree("sm-meta")?;
        let generation: u64 = read_record(&sm_meta, ACTIVE)?.unwrap_or(0);
        let active_name = format!("sm.{generation}");
        for name in db.tree_names() {
            if name.starts_with("sm.") && name != active_name {
                // Left over from a snapshot install that did not finish,
                // or from the switch before it.
                db.tree(&name)?.clear()?;
            }
        }
        let mut clean = sm_meta.get(CLEAN)?.is_some();
        let mut resident = Packed::new();
        if clean {
            match read_index(db, generation) {
                Ok(index) => resident = index,
                Err(e) => {
                    tracing::error!(error = %e, "the queue index a clean stop wrote does not read; rebuilding the state from the snapshot and the log");
                    metrics::counter!("sluice_state_rebuilds_total", "reason" => "damaged")
                        .increment(1);
                    clean = false;
                }
            }
        }
        // Read or not trusted, a queue index is spent: the next clean stop
        // writes the state as it is then.
        for g in [0, 1] {
            let path = index_path(db, g);
            if let Err(e) = std::fs::remove_file(&path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    return Err(StoreError::io("removing the queue index", &path, e));
                }
            }
        }
        RecordFiles::open(&records_dir(db, generation ^ 1), false)?;
        let records = match RecordFiles::open(&records_dir(db, generation), clean) {
            Ok(r) => r,
            Err(e) if clean => {
                tracing::error!(error = %e, "the stream record files do not open; rebuilding the state from the snapshot and the log");
                metrics::counter!("sluice_state_rebuilds_total", "reason" => "damaged")
                    .increment(1);
                clean = false;
                RecordFiles::open(&records_dir(db, generation), false)?
            }
            Err(e) => return Err(e),
        };
        let tree = StateTree::new(db.tree(&active_name)?, records);
        let current_snapshot = snapshots
            .latest()
            .map_err(|e| StoreError::io("reading snapshots in", std::path::Path::new("."), e))?;
        let mut sm = StateMachineStore {
            db: db.clone(),
            sm_meta,
            generation,
            state: StateHandle::over(tree.clone()),
            snapshots,
            node_id,
            last_applied: read_record(&tree, APPLIED)?.flatten(),
            membership: read_record(&tree, MEMBERSHIP)?.unwrap_or_default(),
            clock: read_record(&tree, CLOCK)?.unwrap_or(0),
            current_snapshot: Arc::new(Mutex::new(current_snapshot)),
            snapshot_seq: 0,
            waiters,
            copy: None,
            entries,
        };
        {
            let mut layers = sm.state.layers_mut();
            layers.resident = resident;
            layers.resident_budget = queue_index_memory;
        }
        if sm.sm_meta.get(CLEAN)?.is_some() {
            // From here on a crash must not pass for a clean stop.
            sm.sm_meta.remove(CLEAN)?;
            db.flush()?;
        }
        match sm.current() {
            // A snapshot newer than the state comes from an install cut short
            // between publishing the file and switching trees, or from an
            // unclean stop; since the log before it may be purged, load it.
            Some((meta, path)) if !clean || meta.last_log_id > sm.last_applied => {
                tracing::warn!(snapshot = %meta, clean, "rebuilding the state from the latest snapshot");
                sm.load_snapshot(&meta, &path)?;
            }
            None if !clean && (sm.last_applied.is_some() || !tree.is_empty()?) => {
                tracing::warn!("the state was not closed cleanly and there is no snapshot; rebuilding it from the log");
                sm.load_empty()?;
            }
            _ => {}
        }
        Ok(sm)
    }

    /// The latest snapshot and its file.
    fn current(&self) -> Option<(Meta, PathBuf)> {
        self.current_snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A handle for reading the applied state.
    pub fn handle(&self) -> StateHandle {
        self.state.clone()
    }

    /// Switches to a fresh, empty state (openraft re-applies the whole log).
    fn load_empty(&mut self) -> Result<(), StoreError> {
        let (next, tree) = self.next_tree()?;
        self.switch_to(next, tree, Packed::new())?;
        self.last_applied = None;
        self.membership = StoredMembership::default();
        self.clock = 0;
        Ok(())
    }

    /// The generation after this one and its tree, emptied: the two trees
    /// alternate.
    fn next_tree(&self) -> Result<(u64, StateTree), StoreError> {
        let next = self.generation ^ 1;
        let tree = self.db.tree(&format!("sm.{next}"))?;
        tree.clear()?;
        let records = RecordFiles::open(&records_dir(&self.db, next), false)?;
        Ok((next, StateTree::new(tree, records)))
    }

    /// Makes `tree` generation `next` the state, durably, and empties the
    /// previous one.
    /// `resident`, queue message keys, go in memory over it.
    fn switch_to(
        &mut self,
        next: u64,
        tree: StateTree,
        resident: Packed,
    ) -> Result<(), StoreError> {
        self.db.flush()?;
        self.sm_meta.insert(ACTIVE, codec::encode(&next))?;
        self.db.flush()?;
        let previous = self.state.replace(tree, resident);
        previous.clear()?;
        self.generation = next;
        Ok(())
    }

    /// Loads a verified snapshot file into a fresh tree and switches to it.
    fn load_snapshot(&mut self, meta: &Meta, path: &std::path::Path) -> Result<(), StoreError> {
        let (next, tree) = self.next_tree()?;
        let (mut reader, file_meta) =
            SnapshotReader::open(path).map_err(|e| StoreError::io("opening snapshot", path, e))?;
        if file_meta.last_log_id != meta.last_log_id {
            return Err(StoreError::Corrupt {
                key: path.display().to_string(),
                reason: format!(
                    "snapshot file is at {:?}, expected {:?}",
                    file_meta.last_log_id, meta.last_log_id
                ),
            });
        }
        let started = Instant::now();
        let mut records = 0u64;
        let mut batch = WriteBatch::default();
        // Queue message keys go in memory, as they were on the node that
        // made the snapshot, up to the budget (far faster than the tree,
        // which takes some 50 000 keys a second); the rest to the tree.
        let budget = self.state.resident_budget();
        let mut resident = Packed::new();
        while let Some((k, v)) = reader
            .next_record()
            .map_err(|e| StoreError::io("reading snapshot", path, e))?
        {
            records += 1;
            if is_message_key(&k) && resident.bytes() < budget {
                resident.push(&k, &v);
                continue;
            }
            batch.put(k, v);
            if batch.len() >= INSTALL_BATCH {
                tree.apply(std::mem::take(&mut batch))?;
            }
        }
        batch.put(APPLIED.to_vec(), codec::encode(&meta.last_log_id));
        batch.put(MEMBERSHIP.to_vec(), codec::encode(&meta.last_membership));
        tree.apply(batch)?;
        let resident_bytes = resident.bytes();
        self.switch_to(next, tree.clone(), resident)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.clock = read_record(&tree, CLOCK)?.unwrap_or(0);
        tracing::info!(
            snapshot = %meta,
            records,
            in_memory_bytes = resident_bytes,
            seconds = started.elapsed().as_secs_f64(),
            "loaded snapshot"
        );
        Ok(())
    }

    /// Settles the state at `last_applied` and holds the engine's copy
    /// still for a snapshot of it, which [`SnapshotJob::build`] then writes
    /// while apply goes on. Briefly stops apply (openraft waits for this).
    async fn prepare_snapshot(&mut self) -> Result<SnapshotJob, StorageError<NodeId>> {
        let started = Instant::now();
        self.snapshot_seq += 1;
        let meta = Meta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: format!(
                "{}-{}-n{}-{}",
                self.last_applied.map(|l| l.leader_id.term).unwrap_or(0),
                self.last_applied.map(|l| l.index).unwrap_or(0),
                self.node_id,
                self.snapshot_seq
            ),
        };
        if let Some(copy) = self.copy.take() {
            copy.await
                .map_err(|e| storage_error("copying applied writes", e))?
                .map_err(|e| storage_error("copying applied writes", e))?;
        }
        // The snapshot reads the tree and the queue message keys held in
        // memory over it, with every write in one or the other; it waits
        // out a build still under way.
        let state = self.state.clone();
        let frozen = tokio::task::spawn_blocking(move || state.freeze())
            .await
            .map_err(|e| storage_error("building a snapshot", e))?
            .map_err(|e| storage_error("building a snapshot", e))?;
        metrics::histogram!("sluice_snapshot_freeze_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(SnapshotJob {
            meta,
            frozen,
            snapshots: self.snapshots.clone(),
            entries: self.entries.clone(),
            current: self.current_snapshot.clone(),
            started,
        })
    }
}

/// Where a snapshot this node built at `meta` reads the bodies it only
/// references when it is sent.
fn log_bodies(entries: Arc<dyn LoggedEntries>, meta: &Meta) -> LogBodies {
    LogBodies::through(entries, meta.last_log_id.map_or(0, |l| l.index))
}

/// A snapshot to write of a state held still at its index (see
/// [`StateMachineStore::prepare_snapshot`]).
struct SnapshotJob {
    meta: Meta,
    frozen: FrozenState,
    snapshots: Arc<SnapshotDir>,
    entries: Arc<dyn LoggedEntries>,
    current: Arc<Mutex<Option<(Meta, PathBuf)>>>,
    started: Instant,
}

impl SnapshotJob {
    /// Writes the snapshot on a blocking thread, publishes it and makes it
    /// the current one, then lets copies into the engine's copy go on.
    async fn build(self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let SnapshotJob {
            meta,
            frozen,
            snapshots,
            entries,
            current,
            started,
        } = self;
        let file_meta = meta.clone();
        let log = entries.clone();
        let upto = meta.last_log_id.map_or(0, |l| l.index);
        // The frozen state comes back, to be thawed only once the snapshot
        // is the current one: an install waits for the thaw, so it never
        // publishes before a build that started first.
        let (frozen, written) = tokio::task::spawn_blocking(move || {
            let written = Self::write(&frozen, &snapshots, &*log, &file_meta, upto);
            (frozen, written)
        })
        .await
        .map_err(|e| storage_error("building a snapshot", e))?;
        let (path, records, pinned) =
            written.map_err(|e| storage_error("building a snapshot", e))?;
        // Only now that the snapshot is durable may purges drop what the
        // one before it needed.
        metrics::gauge!("sluice_log_kept_segments").set(pinned.len() as f64);
        entries.pin(pinned);
        metrics::histogram!("sluice_snapshot_build_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(snapshot = %meta, records, path = %path.display(), "built snapshot");
        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), path.clone()));
        drop(frozen);
        let bodies = Some(log_bodies(entries, &meta));
        Ok(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path, bodies }),
        })
    }

    /// Keeps the bodies the snapshot references and writes its file: the
    /// path, the records written and the log segments to keep.
    fn write(
        state: &FrozenState,
        snapshots: &SnapshotDir,
        log: &dyn LoggedEntries,
        meta: &Meta,
        upto: u64,
    ) -> std::io::Result<(PathBuf, u64, std::collections::BTreeSet<u64>)> {
        // The log may be purged up to here once the snapshot exists: the
        // bodies still only there are kept in their segments or copied
        // into the tree first (keys apply never writes).
        let kept = match super::kept_bodies::keep(state, &state.tree, log, upto) {
            Ok(kept) => kept,
            Err(StoreError::BodyLost { index }) => {
                // Not served, not dropped: recorded, so that the start
                // after this one gives up what names it and takes the
                // state from another node, which holds the body.
                tracing::error!(
                    index,
                    "a queued message's body is lost on this node; it will be repaired from the leader when it restarts"
                );
                // (Counted as damage found by the start that repairs it.)
                log.record_body_lost(index).map_err(std::io::Error::other)?;
                return Err(std::io::Error::other(StoreError::BodyLost { index }));
            }
            Err(e) => return Err(std::io::Error::other(e)),
        };
        tracing::info!(
            live = kept.live,
            copied = kept.copied,
            dropped = kept.dropped,
            kept_segments = kept.pinned.len(),
            upto,
            "kept the bodies of messages below the snapshot"
        );
        let tmp = snapshots.temp_path("build");
        let write = || -> std::io::Result<(PathBuf, u64)> {
            let mut w = SnapshotWriter::create(&tmp, meta)?;
            for kv in state.range(Bound::Unbounded, Bound::Unbounded, false) {
                let (k, v) = kv.map_err(std::io::Error::other)?;
                w.record(&k, &v)?;
            }
            let n = w.finish()?;
            Ok((snapshots.publish(&tmp, meta)?, n))
        };
        let r = write();
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r.map(|(path, records)| (path, records, kept.pinned))
    }
}

/// Flushes the state and marks it clean, so that the next open trusts it.
/// Call only once nothing applies to it any more (after openraft stopped).
pub fn mark_clean(db: &Db, state: &StateHandle) -> Result<(), StoreError> {
    let generation: u64 = read_record(&db.tree("sm-meta")?, ACTIVE)?.unwrap_or(0);
    state.persist(&index_path(db, generation))?;
    db.flush()?;
    db.tree("sm-meta")?.insert(CLEAN, Vec::new())?;
    db.flush()
}

/// Makes the next open distrust the state and rebuild it (from the latest
/// snapshot, or from empty).
pub fn mark_unclean(db: &Db) -> Result<(), StoreError> {
    db.tree("sm-meta")?.remove(CLEAN)?;
    db.flush()
}

/// The applied log id of a state that was closed cleanly (and so holds
/// everything up to it); `None` for one that must be rebuilt.
pub fn trusted_applied(db: &Db) -> Result<Option<LogId<NodeId>>, StoreError> {
    let sm_meta = db.tree("sm-meta")?;
    if sm_meta.get(CLEAN)?.is_none() {
        return Ok(None);
    }
    let generation: u64 = read_record(&sm_meta, ACTIVE)?.unwrap_or(0);
    // Record files that will not open make the start rebuild the state.
    if !RecordFiles::opens_trusted(&records_dir(db, generation))
        || read_index(db, generation).is_err()
    {
        return Ok(None);
    }
    let tree = db.tree(&format!("sm.{generation}"))?;
    Ok(read_record::<Option<LogId<NodeId>>>(&tree, APPLIED)?.flatten())
}

/// The membership the state records, trusted or not: what a node that
/// lost its snapshot still knows of its cluster.
pub fn stored_membership(db: &Db) -> Result<Option<StoredMembership<NodeId, Node>>, StoreError> {
    let sm_meta = db.tree("sm-meta")?;
    let generation: u64 = read_record(&sm_meta, ACTIVE)?.unwrap_or(0);
    read_record(&db.tree(&format!("sm.{generation}"))?, MEMBERSHIP)
}

/// A snapshot prepared when openraft asked for a builder, written when it
/// runs the builder, in a task of its own: the state is settled and held
/// still in the first step (apply waits), and written in the second while
/// apply goes on (see [`StateMachineStore::get_snapshot_builder`]).
pub struct PreparedSnapshot {
    job: Option<Result<SnapshotJob, StorageError<NodeId>>>,
}

impl RaftSnapshotBuilder<TypeConfig> for PreparedSnapshot {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        match self.job.take() {
            Some(job) => job?.build().await,
            None => Err(storage_error("building a snapshot", "builder used twice")),
        }
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = PreparedSnapshot;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), StorageError<NodeId>> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<EntryResponse>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let started = Instant::now();
        let mut responses = Vec::new();
        let mut last_applied = self.last_applied;
        let mut membership = None;
        let mut clock = self.clock;
        let mut commands = 0u64;
        let mut effects = Effects::default();
        // Commands read the state under a read lock (held across no await):
        // readers go on meanwhile and see the batch only once it is added.
        let changes = {
            let layers = self.state.layers();
            let mut batch = Txn::new(&*layers);
            for entry in entries {
                last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => responses.push(Vec::new()),
                    EntryPayload::Membership(m) => {
                        membership = Some(StoredMembership::new(Some(entry.log_id), m));
                        responses.push(Vec::new());
                    }
                    EntryPayload::Normal(payload) => {
                        let request = payload.proposal();
                        clock = clock.max(request.time_ms);
                        // Sent bodies stay in this entry; the state keeps
                        // where (`raft::bodies`).
                        let ctx = Ctx::in_entry(clock, entry.log_id.index);
                        // Each command gets its own transaction: a rejected one
                        // leaves no trace, the others still apply.
                        let results =
                            machine::apply_entry(&mut batch, &ctx, &request.commands, &mut effects)
                                .map_err(|e| storage_read_error("applying a command", e))?;
                        commands += results.len() as u64;
                        responses.push(results);
                    }
                }
            }
            batch.put_record(APPLIED.to_vec(), &last_applied);
            batch.put_record(CLOCK.to_vec(), &clock);
            if let Some(m) = &membership {
                batch.put_record(MEMBERSHIP.to_vec(), m);
            }
            batch.into_changes()
        };
        let n = responses.len();
        // A membership is copied into the tree at once: a node that lost its
        // snapshot reads it there (`stored_membership`). While a snapshot is
        // built, queue message keys go into memory as a copy would put them,
        // and the other writes gather in memory, up to a bound.
        let recent = self.state.add(changes);
        let frozen_until = match membership {
            Some(_) => 0,
            None => RECENT_WRITES_WHILE_FROZEN_BYTES,
        };
        let due = recent >= RECENT_WRITES_BYTES || membership.is_some();
        let frozen = due && self.state.is_frozen();
        if frozen && self.state.pack_recent() >= frozen_until {
            self.state
                .thawed()
                .await
                .map_err(|e| storage_error("waiting for a snapshot build", e))?;
        }
        if due && !self.state.is_frozen() {
            if let Some(copy) = self.copy.take() {
                copy.await
                    .map_err(|e| storage_error("copying applied writes", e))?
                    .map_err(|e| storage_error("copying applied writes", e))?;
            }
            self.copy = Some(self.state.start_copy());
        }
        self.last_applied = last_applied;
        self.clock = clock;
        if let Some(m) = membership {
            self.membership = m;
        }
        // Acted on only once the batch is committed to the state.
        for effect in effects.drain() {
            match effect {
                Effect::QueueReady { queue, messages } => {
                    self.waiters.wake_receivers(&queue, messages)
                }
                Effect::ShardAppended { stream, shard } => {
                    self.waiters.wake(&Waiters::shard_key(stream, shard))
                }
                Effect::OutboxReady => self.waiters.wake(Waiters::OUTBOX),
                Effect::EventReady => self.waiters.wake(Waiters::EVENTS),
                Effect::WorkersChanged => self.waiters.wake(Waiters::WORKERS),
                Effect::Count(Counter::TopicQueueDeliveryFailure) => {
                    metrics::counter!("sluice_topic_queue_delivery_failures_total").increment(1)
                }
                Effect::EventRouted {
                    bus,
                    rule,
                    target: None,
                    ..
                } => metrics::counter!("sluice_events_matched_total", "bus" => bus, "rule" => rule)
                    .increment(1),
                Effect::EventRouted {
                    bus,
                    rule,
                    target: Some(target),
                    delivered,
                } => {
                    let outcome = if delivered { "delivered" } else { "failed" };
                    metrics::counter!(
                        "sluice_events_deliveries_total",
                        "bus" => bus,
                        "rule" => rule,
                        "target" => target,
                        "outcome" => outcome
                    )
                    .increment(1)
                }
                Effect::ScheduleFired {
                    schedule,
                    delivered,
                    skipped,
                } => {
                    let outcome = match (skipped, delivered) {
                        (true, _) => "skipped",
                        (false, true) => "delivered",
                        (false, false) => "failed",
                    };
                    metrics::counter!(
                        "sluice_schedules_fired_total",
                        "schedule" => schedule,
                        "outcome" => outcome
                    )
                    .increment(1)
                }
            }
        }
        metrics::histogram!("sluice_apply_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("sluice_applied_entries_total").increment(n as u64);
        metrics::counter!("sluice_applied_commands_total").increment(commands);
        Ok(responses)
    }

    /// Settles the state and holds the engine's copy still; the snapshot
    /// is written by the builder, beside apply. Before, the whole build ran
    /// here while apply waited: some 2 s a million queued messages, past a
    /// write's quorum wait at a few million.
    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        PreparedSnapshot {
            job: Some(self.prepare_snapshot().await),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<SnapshotFile>, StorageError<NodeId>> {
        Ok(Box::new(SnapshotFile::whole(
            self.snapshots.temp_path("recv"),
        )))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError<NodeId>> {
        let started = Instant::now();
        tracing::info!(snapshot = %meta, "installing snapshot");
        // A build still under way publishes its snapshot first: published
        // after this one, the older would replace it.
        self.state
            .thawed()
            .await
            .map_err(|e| storage_error("installing a snapshot", e))?;
        // Publish first: the file then survives a crash during the load, and
        // `open` finishes the install from it.
        let path = self
            .snapshots
            .publish(&snapshot.path, meta)
            .map_err(|e| storage_error("keeping the received snapshot", e))?;
        tokio::task::block_in_place(|| self.load_snapshot(meta, &path))
            .map_err(|e| storage_error("installing a snapshot", e))?;
        // A received snapshot carries every body it references: no segment
        // of this node's log is needed for them.
        self.entries.pin(Default::default());
        *self
            .current_snapshot
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some((meta.clone(), path));
        metrics::histogram!("sluice_snapshot_install_seconds")
            .record(started.elapsed().as_secs_f64());
        tracing::info!(snapshot = %meta, "installed snapshot");
        Ok(())
    }

    /// The current snapshot, checked whole first: openraft asks for it to
    /// send it to a follower, and a damaged file must never be sent. One
    /// found damaged is set aside and replaced by a snapshot of the state
    /// now.
    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let Some((meta, path)) = self.current() else {
            return Ok(None);
        };
        let snapshots = self.snapshots.clone();
        let damaged = tokio::task::spawn_blocking(move || snapshots.set_aside_damaged())
            .await
            .map_err(|e| storage_read_error("checking the snapshot", e))?
            .map_err(|e| storage_read_error("checking the snapshot", e))?;
        let (meta, path) = if damaged.iter().any(|(p, _)| *p == path) {
            tracing::warn!(snapshot = %meta, "replacing the damaged snapshot with one of the current state");
            *self
                .current_snapshot
                .lock()
                .unwrap_or_else(|e| e.into_inner()) = None;
            let built = self.prepare_snapshot().await?.build().await?;
            (built.meta, built.snapshot.path)
        } else {
            (meta, path)
        };
        // What is sent carries the bodies this node keeps in its log: they
        // are read from it as the snapshot is streamed, so a deep backlog
        // is not written to disk a second time to be sent.
        let bodies = Some(log_bodies(self.entries.clone(), &meta));
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(SnapshotFile { path, bodies }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use openraft::{CommittedLeaderId, Entry, LogId};

    use super::*;
    use crate::command::{Command, CommandOutput, Proposal};
    use crate::queues::delivery::ReceiveRequest;
    use crate::queues::message::{NewMessage, Outgoing};
    use crate::queues::CreateQueue;
    use crate::raft::payload::Payload;

    struct Node {
        dir: tempfile::TempDir,
        db: Db,
        sm: StateMachineStore,
        index: u64,
        log: Arc<TestLog>,
    }

    /// The entries a test node applied, as its log would hold them: each
    /// in a segment of its own.
    #[derive(Default)]
    struct TestLog {
        entries: std::sync::Mutex<BTreeMap<u64, Payload>>,
        /// What the state machine last pinned (`None`: keep everything).
        pins: std::sync::Mutex<Option<std::collections::BTreeSet<u64>>>,
        /// The indexes of the holds alive ([`LoggedEntries::hold_through`]).
        holds: Arc<std::sync::Mutex<Vec<u64>>>,
        /// What [`LoggedEntries::record_body_lost`] recorded.
        body_lost: std::sync::Mutex<Option<u64>>,
    }

    /// A hold on a [`TestLog`]: drops its index from the list.
    struct TestHold(Arc<std::sync::Mutex<Vec<u64>>>, u64);

    impl Drop for TestHold {
        fn drop(&mut self) {
            let mut holds = self.0.lock().unwrap();
            let at = holds.iter().position(|i| *i == self.1).expect("held");
            holds.remove(at);
        }
    }

    impl TestLog {
        /// Drops entries up to `index` but the pinned and held ones, as a
        /// purge does.
        fn purge_through(&self, index: u64) {
            let pins = self.pins.lock().unwrap().clone();
            let held = self.holds.lock().unwrap().iter().max().copied();
            self.entries.lock().unwrap().retain(|i, _| {
                *i > index
                    || held.is_some_and(|h| *i <= h)
                    || pins.as_ref().is_none_or(|p| p.contains(i))
            });
        }
    }

    impl LoggedEntries for TestLog {
        fn payload(&self, index: u64) -> Result<Option<Payload>, String> {
            Ok(self.entries.lock().unwrap().get(&index).cloned())
        }

        fn spans(&self) -> Vec<crate::store::log::Span> {
            self.entries
                .lock()
                .unwrap()
                .iter()
                .map(|(i, p)| crate::store::log::Span {
                    first: *i,
                    last: *i,
                    bytes: p.bytes().len() as u64,
                })
                .collect()
        }

        fn pin(&self, segments: std::collections::BTreeSet<u64>) {
            *self.pins.lock().unwrap() = Some(segments);
        }

        fn record_body_lost(&self, index: u64) -> Result<(), String> {
            *self.body_lost.lock().unwrap() = Some(index);
            Ok(())
        }

        fn hold_through(&self, index: u64) -> super::super::kept_bodies::Hold {
            self.holds.lock().unwrap().push(index);
            Box::new(TestHold(self.holds.clone(), index))
        }
    }

    async fn open_in(dir: tempfile::TempDir) -> Node {
        open_with(dir, Arc::default()).await
    }

    async fn open_with(dir: tempfile::TempDir, log: Arc<TestLog>) -> Node {
        // sled releases its file lock when its background writer threads
        // finish, a moment after the last handle is dropped: a reopen in the
        // same process may find it still held (a restarted node cannot, its
        // predecessor is gone).
        let mut tries = 0;
        let db = loop {
            match Db::open(&dir.path().join("db"), &Default::default()) {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("lock") && tries < 100 => {
                    tries += 1;
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Err(e) => panic!("opening the state database: {e}"),
            }
        };
        let snapshots = Arc::new(SnapshotDir::open(&dir.path().join("snapshots")).unwrap());
        let sm = StateMachineStore::open(
            &db,
            snapshots,
            1,
            Arc::new(Waiters::default()),
            log.clone(),
            RESIDENT_MESSAGES_BYTES,
        )
        .await
        .unwrap();
        Node {
            dir,
            db,
            sm,
            index: 0,
            log,
        }
    }

    async fn node() -> Node {
        open_in(tempfile::tempdir().unwrap()).await
    }

    impl Node {
        /// Stops the node, cleanly (`mark_clean`, as a graceful shutdown
        /// does) or not (as a kill does), and opens it again.
        async fn restart(self, clean: bool) -> Node {
            let Node {
                dir, db, sm, log, ..
            } = self;
            let state = sm.handle();
            drop(sm);
            if clean {
                mark_clean(&db, &state).unwrap();
            }
            drop(state);
            drop(db);
            open_with(dir, log).await
        }

        /// Applies the log past what the state holds, as openraft does at
        /// a start.
        async fn replay(&mut self) {
            let from = self.applied_index().await.map_or(1, |i| i + 1);
            let entries: Vec<_> = self
                .log
                .entries
                .lock()
                .unwrap()
                .range(from..)
                .map(|(i, p)| (*i, p.clone()))
                .collect();
            for (index, payload) in entries {
                let entry = Entry {
                    log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
                    payload: EntryPayload::Normal(payload),
                };
                self.sm.apply([entry]).await.unwrap();
            }
        }

        /// Reads message bodies as this node serves them.
        fn bodies(&self) -> crate::raft::bodies::Bodies {
            crate::raft::bodies::Bodies::new(self.log.clone(), self.sm.handle())
        }

        async fn applied_index(&mut self) -> Option<u64> {
            self.sm.applied_state().await.unwrap().0.map(|l| l.index)
        }

        async fn apply(&mut self, time_ms: u64, commands: Vec<Command>) -> EntryResponse {
            self.index += 1;
            let entry = entry(self.index, time_ms, commands);
            if let EntryPayload::Normal(p) = &entry.payload {
                self.log
                    .entries
                    .lock()
                    .unwrap()
                    .insert(self.index, p.clone());
            }
            self.sm.apply([entry]).await.unwrap().remove(0)
        }

        /// Creates queue `q` at 1 000 and sends it `count` messages, one
        /// an entry: `m0` at 2 000, `m1` at 2 001, ...
        async fn fill_queue(&mut self, count: u64) {
            self.apply(1_000, vec![create("q", &[])]).await;
            for i in 0..count {
                self.apply(2_000 + i, vec![send("q", &format!("m{i}"))])
                    .await;
            }
        }

        /// Builds a snapshot of the applied state.
        async fn snapshot(&mut self) -> Snapshot<TypeConfig> {
            self.sm
                .get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap()
        }
    }

    /// A body lost from the log and from the copies (damage no check saw)
    /// stops the next snapshot instead of being dropped or served empty,
    /// and is recorded, so that the next start repairs the node.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lost_body_stops_the_snapshot_and_is_recorded() {
        let mut n = node().await;
        n.fill_queue(3).await;
        let upto = n.snapshot().await.meta.last_log_id.unwrap().index;
        n.log.purge_through(upto);
        // Entry 3 sent m1: its copy goes too.
        let r = sluice_core::queues::layout::BodyRef {
            index: 3,
            command: 0,
            message: 0,
            bytes: 2,
        };
        let mut batch = WriteBatch::default();
        batch.delete(crate::raft::kept_bodies::kept_key(&r));
        n.sm.state.layers().tree.apply(batch).unwrap();
        n.apply(5_000, vec![send("q", "m3")]).await;
        let err =
            n.sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap_err();
        assert!(err.to_string().contains("log entry 3 is lost"), "{err}");
        assert_eq!(*n.log.body_lost.lock().unwrap(), Some(3));
    }

    /// A node whose queue `q` was sent `count` messages (see
    /// [`Node::fill_queue`]), and a snapshot of it then.
    async fn snapshotted(count: u64) -> (Node, Snapshot<TypeConfig>) {
        let mut n = node().await;
        n.fill_queue(count).await;
        let snapshot = n.snapshot().await;
        (n, snapshot)
    }

    fn entry(index: u64, time_ms: u64, commands: Vec<Command>) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Payload::new(Proposal { time_ms, commands })),
        }
    }

    fn create(name: &str, attrs: &[(&str, &str)]) -> Command {
        let attrs: BTreeMap<String, String> = attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Command::CreateQueue(CreateQueue::new(name, &attrs, BTreeMap::new()).unwrap())
    }

    fn send(queue: &str, body: &str) -> Command {
        let m = NewMessage::validate(
            "",
            false,
            Outgoing {
                body: body.into(),
                ..Outgoing::default()
            },
        )
        .unwrap();
        Command::SendMessages(crate::queues::SendMessages {
            queue: queue.into(),
            messages: vec![m],
        })
    }

    /// A receive of one message, hidden for `vt` seconds.
    fn receive(queue: &str, vt: u32) -> Command {
        receive_up_to(queue, 1, vt)
    }

    /// A receive of as many messages as a call takes, hidden for 30 s.
    fn receive_all(queue: &str) -> Command {
        receive_up_to(queue, 10, 30)
    }

    fn receive_up_to(queue: &str, max: u32, vt: u32) -> Command {
        Command::ReceiveMessages(crate::queues::ReceiveMessages {
            queue: queue.into(),
            request: ReceiveRequest {
                max,
                visibility_timeout: Some(vt),
                attempt_id: None,
            },
        })
    }

    fn received(r: &EntryResponse) -> usize {
        match &r[0] {
            Ok(CommandOutput::ReceiveMessages(o)) => o.messages.len(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_damaged_snapshot_is_never_handed_out_for_sending_but_replaced() {
        let mut n = node().await;
        n.fill_queue(1).await;
        let built = n.snapshot().await;
        let path = built.snapshot.path.clone();
        let mut bytes = std::fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x40;
        std::fs::write(&path, bytes).unwrap();

        let current =
            n.sm.get_current_snapshot()
                .await
                .unwrap()
                .expect("a snapshot");
        assert_ne!(current.snapshot.path, path, "a new file");
        assert_eq!(current.meta.last_log_id, built.meta.last_log_id);
        assert_eq!(
            super::super::snapshot::verify(&current.snapshot.path).unwrap(),
            current.meta
        );
        assert!(path.with_extension("snap.damaged").exists());
        // A sound snapshot is handed out as it is.
        let again = n.sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(again.snapshot.path, current.snapshot.path);
    }

    #[tokio::test]
    async fn the_clock_never_runs_backwards() {
        let mut n = node().await;
        n.apply(1_000, vec![create("q", &[])]).await;
        n.apply(5_000, vec![send("q", "m")]).await;
        // A new leader with a slower clock stamps 3 000: the receive still
        // happens at 5 000, so the message is hidden until 15 000.
        assert_eq!(received(&n.apply(3_000, vec![receive("q", 10)]).await), 1);
        assert_eq!(received(&n.apply(14_999, vec![receive("q", 10)]).await), 0);
        assert_eq!(received(&n.apply(15_000, vec![receive("q", 10)]).await), 1);
    }

    #[tokio::test]
    async fn a_rejected_command_leaves_the_rest_of_its_batch_applied() {
        let mut n = node().await;
        let results = n
            .apply(
                1_000,
                vec![
                    create("q", &[]),
                    create("q", &[("VisibilityTimeout", "1")]),
                    send("q", "kept"),
                    send("missing", "refused"),
                ],
            )
            .await;
        assert!(matches!(results[0], Ok(CommandOutput::CreateQueue(true))));
        assert_eq!(results[1].as_ref().unwrap_err().code, "QueueNameExists");
        assert!(results[2].is_ok());
        assert_eq!(results[3].as_ref().unwrap_err().code, "QueueDoesNotExist");
        assert_eq!(received(&n.apply(2_000, vec![receive("q", 30)]).await), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_carries_the_whole_state_to_another_node() {
        let (a, snapshot) = snapshotted(50).await;
        let mut b = node().await;
        let file = b.sm.begin_receiving_snapshot().await.unwrap();
        std::fs::copy(&snapshot.snapshot.path, &file.path).unwrap();
        b.sm.install_snapshot(&snapshot.meta, file).await.unwrap();
        let (applied, _) = b.sm.applied_state().await.unwrap();
        assert_eq!(applied, snapshot.meta.last_log_id);
        // The clock came along: 50 messages, all receivable at 2 049.
        b.index = a.index;
        let r = b.apply(0, vec![receive_all("q")]).await;
        // The bodies stayed in a's log, which b never had: b serves the
        // copies the snapshot kept.
        let served = b
            .bodies()
            .serve(r.into_iter().next().unwrap())
            .await
            .unwrap();
        match &served {
            Ok(CommandOutput::ReceiveMessages(o)) => {
                assert_eq!(o.messages.len(), 10);
                assert_eq!(o.messages[0].body.body.inline(), Some("m0"));
                assert_eq!(o.messages[9].body.body.inline(), Some("m9"));
                assert!(o.messages[0].head.first_receive_ms >= Some(2_049));
            }
            other => panic!("{other:?}"),
        }
    }

    /// Installs `snapshot` on a fresh node.
    async fn installed(snapshot: &Snapshot<TypeConfig>) -> Node {
        let mut b = node().await;
        let file = b.sm.begin_receiving_snapshot().await.unwrap();
        std::fs::copy(&snapshot.snapshot.path, &file.path).unwrap();
        b.sm.install_snapshot(&snapshot.meta, file).await.unwrap();
        b
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn apply_goes_on_while_a_snapshot_is_written_and_the_snapshot_is_the_state_at_its_index()
    {
        let mut a = node().await;
        a.fill_queue(50).await;
        let at_freeze = dump(&a);
        let frozen_at = a.index;
        let mut builder = a.sm.get_snapshot_builder().await;
        assert!(a.sm.state.is_frozen());
        let packed = a.sm.state.layers().resident.len();
        // Applied while the snapshot holds the engine's copy still: more
        // than a copy's worth, whose message keys are packed in memory
        // (copied on write), and receives that change messages the
        // snapshot holds.
        for i in 0..60 {
            let sends = (0..10)
                .map(|j| send("q", &format!("late{i}-{j}")))
                .collect();
            a.apply(3_000 + i, sends).await;
        }
        assert_eq!(received(&a.apply(4_000, vec![receive_all("q")]).await), 10);
        assert!(a.sm.copy.is_none(), "no copy started while frozen");
        assert!(a.sm.state.layers().recent_bytes < RECENT_WRITES_BYTES);
        assert!(a.sm.state.layers().resident.len() >= packed + 600 * 3);
        let snapshot = builder.build_snapshot().await.unwrap();
        assert!(!a.sm.state.is_frozen());
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(frozen_at));
        // The next apply copies what gathered.
        a.apply(5_000, vec![send("q", "after")]).await;
        a.copied().await;
        assert!(a.sm.state.layers().recent_bytes < RECENT_WRITES_BYTES);

        let mut b = installed(&snapshot).await;
        assert_eq!(
            dump(&b),
            at_freeze,
            "the snapshot is the state at its index"
        );
        // Given the log past it, b reaches a's state.
        *b.log.entries.lock().unwrap() = a.log.entries.lock().unwrap().clone();
        b.replay().await;
        assert_eq!(dump(&b), dump(&a));
    }

    /// The bodies a receive returns, as the node serves them.
    async fn served_bodies(n: &Node, r: EntryResponse) -> Vec<String> {
        match n
            .bodies()
            .serve(r.into_iter().next().unwrap())
            .await
            .unwrap()
        {
            Ok(CommandOutput::ReceiveMessages(o)) => o
                .messages
                .into_iter()
                .map(|m| m.body.body.inline().unwrap().to_string())
                .collect(),
            other => panic!("{other:?}"),
        }
    }

    /// A body stays in its log entry until a snapshot covers the entry; the
    /// snapshot keeps the bodies of the messages still queued, and only
    /// those, so the log can be purged under them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_snapshot_keeps_the_bodies_still_queued_and_drops_the_rest() {
        let mut n = node().await;
        n.fill_queue(3).await;
        let kept = |n: &Node, i: u64| {
            let r = sluice_core::queues::layout::BodyRef {
                index: i,
                command: 0,
                message: 0,
                bytes: 2,
            };
            n.sm.handle()
                .read(|s| s.get(&crate::raft::kept_bodies::kept_key(&r)))
                .unwrap()
                .is_some()
        };
        // Entries 2, 3, 4 sent m0, m1, m2: nothing is kept before a snapshot.
        assert!(!kept(&n, 2));
        n.snapshot().await;
        assert!((2..=4).all(|i| kept(&n, i)));
        // m0 is received and deleted, m3 sent after the snapshot.
        let r = n.apply(3_000, vec![receive("q", 30)]).await;
        let Ok(CommandOutput::ReceiveMessages(o)) = &r[0] else {
            panic!("{r:?}")
        };
        let receipt = o.messages[0].receipt;
        n.apply(
            3_001,
            vec![Command::DeleteMessages(crate::queues::DeleteMessages {
                queue: "q".into(),
                receipts: vec![receipt],
            })],
        )
        .await;
        n.apply(3_002, vec![send("q", "m3")]).await;
        // (Dropped at once, as openraft drops what it built: a snapshot
        // being sent holds the log under it.)
        let upto = n.snapshot().await.meta.last_log_id.unwrap().index;
        assert!(!kept(&n, 2), "a deleted message's body is dropped");
        assert!(kept(&n, 3) && kept(&n, 4) && kept(&n, 7));
        // The log purged up to the snapshot: the queue is still served.
        n.log.purge_through(upto);
        let r = n.apply(4_000, vec![receive_up_to("q", 10, 30)]).await;
        assert_eq!(served_bodies(&n, r).await, ["m1", "m2", "m3"]);
        // A body found nowhere is an error, never an empty body.
        let lost = sluice_core::queues::layout::BodyRef {
            index: 2,
            command: 0,
            message: 0,
            bytes: 2,
        };
        let err = n.bodies().text(&lost).unwrap_err();
        assert!(err.contains("lost"), "{err}");
    }

    /// Bodies that make up most of their segment are not copied: the
    /// segment is kept past the purge, an unclean restart serves them from
    /// it, and a snapshot sent to another node carries them, read from the
    /// segment as it is sent.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn dense_bodies_stay_in_their_kept_segments_and_travel_with_a_sent_snapshot() {
        let big = |i: u64| format!("m{i}-{}", "x".repeat(1_000));
        let mut n = node().await;
        n.apply(1_000, vec![create("q", &[])]).await;
        for i in 0..3 {
            n.apply(2_000 + i, vec![send("q", &big(i))]).await;
        }
        let snapshot = n.snapshot().await;
        let copies =
            n.sm.handle()
                .read(|s| {
                    let end = crate::store::keys::prefix_end(crate::raft::kept_bodies::KEPT);
                    Ok::<_, StoreError>(
                        s.range(
                            Bound::Included(crate::raft::kept_bodies::KEPT.to_vec()),
                            end,
                            false,
                        )
                        .count(),
                    )
                })
                .unwrap();
        assert_eq!(copies, 0, "dense bodies are kept in the log, not copied");
        assert_eq!(
            n.log.pins.lock().unwrap().clone(),
            Some(std::collections::BTreeSet::from([2, 3, 4]))
        );
        let upto = snapshot.meta.last_log_id.unwrap().index;
        let path = snapshot.snapshot.path.clone();
        drop(snapshot);
        n.log.purge_through(upto);
        assert_eq!(n.log.entries.lock().unwrap().len(), 3, "the pinned stay");

        // What is sent to another node carries the bodies, read from the
        // kept segments as it is sent; nothing more is written here.
        let sent = n.sm.get_current_snapshot().await.unwrap().unwrap();
        assert_eq!(sent.snapshot.path, path);
        // A newer snapshot that pins nothing does not take them mid-send.
        let pins = n.log.pins.lock().unwrap().take();
        n.log.pin(Default::default());
        n.log.purge_through(upto);
        assert_eq!(n.log.entries.lock().unwrap().len(), 3, "held while sent");
        *n.log.pins.lock().unwrap() = pins;
        let mut b = node().await;
        let file = b.sm.begin_receiving_snapshot().await.unwrap();
        sent.snapshot
            .send_to(std::fs::File::create(&file.path).unwrap())
            .unwrap();
        let held = std::fs::read_dir(n.dir.path().join("snapshots"))
            .unwrap()
            .count();
        assert_eq!(held, 1, "only the snapshot itself is on disk");
        b.sm.install_snapshot(&sent.meta, file).await.unwrap();
        assert_eq!(*b.log.pins.lock().unwrap(), Some(Default::default()));
        b.index = n.index;
        let r = b.apply(3_000, vec![receive_all("q")]).await;
        assert_eq!(served_bodies(&b, r).await, [big(0), big(1), big(2)]);

        // Killed: rebuilt from the snapshot, the bodies read from the log.
        let mut n = n.restart(false).await;
        n.index = upto;
        let r = n.apply(3_000, vec![receive_all("q")]).await;
        assert_eq!(served_bodies(&n, r).await, [big(0), big(1), big(2)]);
    }

    #[tokio::test]
    async fn a_cleanly_stopped_state_is_kept() {
        let mut n = node().await;
        n.fill_queue(1).await;
        let mut n = n.restart(true).await;
        assert_eq!(n.applied_index().await, Some(2));
        n.index = 2;
        assert_eq!(received(&n.apply(3_000, vec![receive("q", 30)]).await), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_unclean_stop_rebuilds_the_state_from_the_latest_snapshot() {
        let (mut n, snapshot) = snapshotted(5).await;
        assert_eq!(snapshot.meta.last_log_id.map(|l| l.index), Some(6));
        for i in 5..9 {
            n.apply(3_000 + i, vec![send("q", &format!("m{i}"))]).await;
        }
        // Killed: the state may hold part of a batch, so it is not trusted;
        // it is the snapshot's, and openraft re-applies entries 7 to 10.
        let mut n = n.restart(false).await;
        assert_eq!(n.applied_index().await, Some(6));
        n.index = 6;
        assert_eq!(received(&n.apply(4_000, vec![receive_all("q")]).await), 5);
    }

    #[tokio::test]
    async fn an_unclean_stop_without_a_snapshot_starts_from_empty() {
        let mut n = node().await;
        n.fill_queue(1).await;
        let mut n = n.restart(false).await;
        assert_eq!(n.applied_index().await, None);
        let r = n.apply(3_000, vec![send("q", "m")]).await;
        assert_eq!(r[0].as_ref().unwrap_err().code, "QueueDoesNotExist");
    }

    fn create_stream(name: &str) -> Command {
        let op = crate::streams::CreateStream::new(
            name,
            2,
            None,
            None,
            Some(0),
            Some(0),
            BTreeMap::new(),
        );
        Command::CreateStream(op.unwrap())
    }

    fn put_records(stream: &str, from: u64, count: u64) -> Command {
        let records = (from..from + count)
            .map(|i| {
                crate::streams::records::NewRecord::new(
                    "",
                    format!("r{i}").into_bytes(),
                    format!("k{i}"),
                    "",
                )
                .unwrap()
            })
            .collect();
        Command::PutRecords(crate::streams::PutRecords {
            stream: stream.into(),
            records,
        })
    }

    /// The data of every stream record the node holds, in key order.
    fn stream_records(n: &Node) -> Vec<String> {
        n.sm.handle().read(|state| {
            state
                .scan_prefix(sluice_core::streams::records::RECORDS)
                .map(|kv| {
                    let (k, v) = kv.unwrap();
                    let sluice_core::streams::records::StoredRecord::V1(r) =
                        codec::decode(&k, &v).unwrap();
                    String::from_utf8(r.data).unwrap()
                })
                .collect()
        })
    }

    fn sorted(mut v: Vec<String>) -> Vec<String> {
        v.sort();
        v
    }

    /// Stream records live in files beside the tree: a clean stop keeps
    /// them, an unclean one rebuilds them from the snapshot, and only the
    /// active generation's files stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stream_records_in_their_files_survive_clean_and_unclean_stops() {
        let mut n = node().await;
        n.apply(1_000, vec![create_stream("s")]).await;
        for b in 0..4 {
            n.apply(2_000 + b, vec![put_records("s", b * 100, 100)])
                .await;
        }
        let all: Vec<String> = (0..400).map(|i| format!("r{i}")).collect();
        assert_eq!(sorted(stream_records(&n)), sorted(all.clone()));
        let mut n = n.restart(true).await;
        n.index = 5;
        assert_eq!(sorted(stream_records(&n)), sorted(all.clone()));
        let records = n.dir.path().join("records");
        assert!(std::fs::read_dir(records.join("sm.0")).unwrap().count() >= 2);

        n.snapshot().await;
        n.apply(3_000, vec![put_records("s", 400, 50)]).await;
        assert_eq!(stream_records(&n).len(), 450);
        // Killed: the files are not trusted; the snapshot's records are
        // loaded into the other generation, and openraft re-applies the rest.
        let n = n.restart(false).await;
        assert_eq!(sorted(stream_records(&n)), sorted(all));
        assert_eq!(std::fs::read_dir(records.join("sm.0")).unwrap().count(), 0);
        assert!(std::fs::read_dir(records.join("sm.1")).unwrap().count() >= 2);
    }

    /// Record files damaged after a clean stop are not trusted: the state
    /// is rebuilt from the snapshot, and a repair would not count on it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damaged_record_files_after_a_clean_stop_are_rebuilt_not_trusted() {
        let mut n = node().await;
        n.apply(1_000, vec![create_stream("s")]).await;
        n.apply(2_000, vec![put_records("s", 0, 100)]).await;
        n.snapshot().await;
        let n = damaged_after_a_clean_stop(n, "records/sm.0/positions", 20, 0xff).await;
        assert_eq!(stream_records(&n).len(), 100);
    }

    /// Stops `n` cleanly, flips bits `flip` of byte `at` of `file` (in its
    /// data directory), checks that the state is no longer trusted, and
    /// starts the node again.
    async fn damaged_after_a_clean_stop(n: Node, file: &str, at: usize, flip: u8) -> Node {
        let Node {
            dir, db, sm, log, ..
        } = n;
        let state = sm.handle();
        drop(sm);
        mark_clean(&db, &state).unwrap();
        assert!(trusted_applied(&db).unwrap().is_some());
        let path = dir.path().join(file);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[at] ^= flip;
        std::fs::write(&path, bytes).unwrap();
        assert_eq!(trusted_applied(&db).unwrap(), None);
        drop(state);
        drop(db);
        open_with(dir, log).await
    }

    /// A queue index damaged after a clean stop is not trusted: the state
    /// is rebuilt from the snapshot (and the log), and every message is
    /// still there.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_damaged_queue_index_after_a_clean_stop_is_rebuilt_not_trusted() {
        let (n, _) = snapshotted(300).await;
        let before = dump(&n);
        let mut n = damaged_after_a_clean_stop(n, "queue-index/sm.0", 100, 0x10).await;
        assert_eq!(n.applied_index().await, Some(301), "from the snapshot");
        assert_eq!(dump(&n), before);
    }

    /// The queue index as the state machine keeps it (recent writes, the
    /// copy under way, the packed keys in memory, the tree past the
    /// budget), put through a seeded run of random queue commands and
    /// random copies, snapshots, installs and clean and unclean restarts,
    /// against the same commands applied to a plain in-memory store:
    /// after every entry both give the same results, and after every
    /// operation the same state. A failure names the seed and the step.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_index_simulation_agrees_with_a_plain_store() {
        use crate::queues::receipt::Receipt;
        use crate::store::test_rng::Rng;
        use crate::store::MemState;

        /// The commands of one entry, and what the model's results teach.
        fn commands(
            rng: &mut Rng,
            receipts: &mut Vec<(String, Receipt)>,
            n: &mut u64,
        ) -> Vec<Command> {
            let queue = |rng: &mut Rng| ["q", "f.fifo"][rng.below(2) as usize].to_string();
            let mut out = Vec::new();
            for _ in 0..1 + rng.below(3) {
                let q = queue(rng);
                let fifo = q.ends_with(".fifo");
                out.push(match rng.below(100) {
                    0..=39 => {
                        let messages = (0..1 + rng.below(4))
                            .map(|_| {
                                *n += 1;
                                let body = format!("m{n}-{}", "x".repeat(rng.below(200) as usize));
                                let outgoing = Outgoing {
                                    body,
                                    delay_seconds: (!fifo && rng.below(5) == 0)
                                        .then(|| rng.below(4) as i32),
                                    group_id: if fifo {
                                        format!("g{}", rng.below(3))
                                    } else {
                                        String::new()
                                    },
                                    dedup_id: if fifo { format!("d{n}") } else { String::new() },
                                    ..Outgoing::default()
                                };
                                NewMessage::validate("", fifo, outgoing).unwrap()
                            })
                            .collect();
                        Command::SendMessages(crate::queues::SendMessages { queue: q, messages })
                    }
                    40..=69 => receive_up_to(&q, 1 + rng.below(10) as u32, rng.below(4) as u32),
                    70..=89 if !receipts.is_empty() => {
                        let take = (1 + rng.below(5) as usize).min(receipts.len());
                        let at = rng.below((receipts.len() - take + 1) as u64) as usize;
                        let (q, r): (Vec<_>, Vec<_>) = receipts.drain(at..at + take).unzip();
                        Command::DeleteMessages(crate::queues::DeleteMessages {
                            queue: q[0].clone(),
                            receipts: r
                                .into_iter()
                                .zip(&q)
                                .filter(|(_, qq)| **qq == q[0])
                                .map(|(r, _)| r)
                                .collect(),
                        })
                    }
                    90..=97 if !receipts.is_empty() => {
                        let (q, r) = receipts[rng.below(receipts.len() as u64) as usize].clone();
                        Command::ChangeVisibility(crate::queues::ChangeVisibility {
                            queue: q,
                            changes: vec![(r, rng.below(3) as u32)],
                        })
                    }
                    98 => Command::PurgeQueue(crate::queues::PurgeQueue { name: q }),
                    _ => receive_up_to(&q, 10, 0),
                });
            }
            out
        }

        fn model_apply(
            model: &mut MemState,
            now: u64,
            index: u64,
            cmds: &[Command],
        ) -> EntryResponse {
            let ctx = crate::apply::Ctx::in_entry(now, index);
            let mut effects = Effects::default();
            let (results, batch) = {
                let mut txn = Txn::new(&*model);
                let r = machine::apply_entry(&mut txn, &ctx, cmds, &mut effects).unwrap();
                (r, txn.into_batch())
            };
            model.apply(batch);
            results
        }

        fn model_dump(model: &MemState) -> Vec<(Vec<u8>, Vec<u8>)> {
            model.scan_prefix(b"").map(|kv| kv.unwrap()).collect()
        }

        /// The node and the model apply one entry of random commands at
        /// `now` and must answer alike; receipts are kept for later steps.
        async fn apply_both(
            node: &mut Node,
            model: &mut MemState,
            rng: &mut Rng,
            receipts: &mut Vec<(String, Receipt)>,
            sent: &mut u64,
            now: u64,
            at: &str,
        ) {
            let cmds = commands(rng, receipts, sent);
            let got = node.apply(now, cmds.clone()).await;
            let want = model_apply(model, now, node.index, &cmds);
            assert_eq!(format!("{got:?}"), format!("{want:?}"), "{at}: results");
            for (cmd, result) in cmds.iter().zip(&want) {
                if let (Command::ReceiveMessages(r), Ok(CommandOutput::ReceiveMessages(o))) =
                    (cmd, result)
                {
                    receipts.extend(o.messages.iter().map(|m| (r.queue.clone(), m.receipt)));
                }
            }
            receipts.truncate(64);
        }

        let seeds: u64 = std::env::var("SLUICE_SIM_SEEDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(6);
        for seed in 1..=seeds {
            let mut rng = Rng(seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1);
            let mut node = node().await;
            // Half the seeds keep a few blocks in memory and spill the rest.
            let budget = if seed % 2 == 0 {
                4 * 1024
            } else {
                RESIDENT_MESSAGES_BYTES
            };
            node.sm.state.layers_mut().resident_budget = budget;
            let mut model = MemState::default();
            let mut receipts = Vec::new();
            let (mut now, mut sent) = (1_000, 0);
            let setup = vec![create("q", &[]), create("f.fifo", &[("FifoQueue", "true")])];
            node.apply(now, setup.clone()).await;
            model_apply(&mut model, now, 1, &setup);
            for step in 0..250 {
                let at = |what: &str| format!("seed {seed} step {step}: {what}");
                now += rng.below(1_500);
                let (model, rng, receipts, sent) = (&mut model, &mut rng, &mut receipts, &mut sent);
                apply_both(&mut node, model, rng, receipts, sent, now, &at("")).await;
                match rng.below(100) {
                    0..=19 => node.sm.state.start_copy().await.unwrap().unwrap(),
                    20..=24 => node.copied().await,
                    25..=27 => {
                        // The log is purged up to the snapshot once it is
                        // durable, but for what the pins keep.
                        let upto = node.snapshot().await.meta.last_log_id.map(|l| l.index);
                        if rng.below(2) == 0 {
                            node.log.purge_through(upto.unwrap_or(0));
                        }
                    }
                    28 => {
                        // Written while a few more entries apply, then
                        // installed on a fresh node, which replays them
                        // and carries on.
                        let mut builder = node.sm.get_snapshot_builder().await;
                        let frozen = model_dump(model);
                        for _ in 0..rng.below(4) {
                            now += rng.below(1_500);
                            let at = at("beside a snapshot");
                            apply_both(&mut node, model, rng, receipts, sent, now, &at).await;
                            if rng.below(2) == 0 {
                                // As apply does once a copy is due.
                                node.sm.state.pack_recent();
                            }
                        }
                        let snapshot = builder.build_snapshot().await.unwrap();
                        let mut fresh = super::tests::node().await;
                        fresh.sm.state.layers_mut().resident_budget = budget;
                        let file = fresh.sm.begin_receiving_snapshot().await.unwrap();
                        std::fs::copy(&snapshot.snapshot.path, &file.path).unwrap();
                        fresh
                            .sm
                            .install_snapshot(&snapshot.meta, file)
                            .await
                            .unwrap();
                        assert!(dump(&fresh) == frozen, "{}", at("the snapshot's state"));
                        fresh.index = node.index;
                        *fresh.log.entries.lock().unwrap() =
                            node.log.entries.lock().unwrap().clone();
                        fresh.replay().await;
                        node = fresh;
                    }
                    29 | 30 => {
                        let (clean, index) = (rng.below(2) == 0, node.index);
                        node = node.restart(clean).await;
                        node.index = index;
                        node.sm.state.layers_mut().resident_budget = budget;
                        node.replay().await;
                    }
                    _ => {}
                }
                // Every body the state references reads back, from the
                // log or from a copy.
                let bodies = node.bodies();
                let refs = node.sm.handle().read(|s| {
                    let mut refs = Vec::new();
                    sluice_core::queues::bodies::for_each_logged(s, |r| refs.push(r)).unwrap();
                    refs
                });
                for r in refs {
                    if let Err(e) = bodies.text(&r) {
                        panic!("{}: {e}", at("a body"));
                    }
                }
                let (got, want) = (dump(&node), model_dump(model));
                if got != want {
                    let g: BTreeMap<_, _> = got.into_iter().collect();
                    let w: BTreeMap<_, _> = want.into_iter().collect();
                    let differ: Vec<String> = g
                        .keys()
                        .chain(w.keys())
                        .filter(|k| g.get(*k) != w.get(*k))
                        .map(|k| {
                            format!(
                                "{}: node {:?}, plain {:?}",
                                crate::store::keys::display(k),
                                g.get(k).map(|v| crate::store::keys::display(v)),
                                w.get(k).map(|v| crate::store::keys::display(v))
                            )
                        })
                        .take(6)
                        .collect();
                    panic!("{}: {differ:#?}", at("state"));
                }
            }
        }
    }

    /// The `sm.*` trees, each with its number of keys.
    fn state_trees(db: &Db) -> BTreeMap<String, usize> {
        db.tree_names()
            .into_iter()
            .filter(|n| n.starts_with("sm."))
            .map(|n| {
                let keys = db
                    .tree(&n)
                    .unwrap()
                    .range(Bound::Unbounded, Bound::Unbounded, false)
                    .count();
                (n, keys)
            })
            .collect()
    }

    #[tokio::test]
    async fn state_trees_alternate_and_the_one_left_behind_is_emptied_not_dropped() {
        let mut n = node().await;
        for round in 0..4u64 {
            n.index = n.applied_index().await.unwrap_or(0);
            n.apply(1_000 + round, vec![create(&format!("q{round}"), &[])])
                .await;
            for i in 0..300 {
                n.apply(2_000 + i, vec![send(&format!("q{round}"), "m")])
                    .await;
            }
            // The applied writes reach the tree (as a copy does once enough
            // gather), then the node is killed: the state is rebuilt in the
            // other tree.
            let index = n.db.path().with_extension("index");
            n.sm.handle().persist(&index).unwrap();
            n = n.restart(false).await;
            let trees = state_trees(&n.db);
            assert_eq!(trees.len(), 2, "round {round}: {trees:?}");
            // Both empty: the new state (openraft re-applies the log into
            // it) and the old one, emptied key by key.
            assert!(trees.values().all(|k| *k == 0), "round {round}: {trees:?}");
        }
    }

    fn changes(pairs: &[(&str, Option<&str>)]) -> Changes {
        pairs
            .iter()
            .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
            .collect()
    }

    fn pairs(state: &dyn StateRead) -> Vec<(String, String)> {
        state
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect()
    }

    #[tokio::test]
    async fn writes_in_memory_read_as_if_in_the_tree_and_those_undone_never_reach_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), &Default::default()).unwrap();
        let tree = StateTree::for_test(&db, "t");
        tree.apply_changes(&changes(&[("a", Some("tree")), ("b", Some("tree"))]))
            .unwrap();
        let state = StateHandle::over(tree.clone());

        // A message's keys: written, then removed before any copy.
        state.add(changes(&[("m/1", Some("body")), ("a", Some("new"))]));
        state.add(changes(&[("m/1", None), ("b", None), ("c", Some("c"))]));
        let seen = |state: &StateHandle| state.read(pairs);
        let expected = vec![
            ("a".to_string(), "new".to_string()),
            ("c".to_string(), "c".to_string()),
        ];
        assert_eq!(seen(&state), expected);
        assert_eq!(state.read(|s| s.get(b"b").unwrap()), None);
        let reversed: Vec<_> = state.read(|s| {
            s.range(Bound::Unbounded, Bound::Unbounded, true)
                .map(|kv| kv.unwrap().0)
                .collect()
        });
        assert_eq!(reversed, vec![b"c".to_vec(), b"a".to_vec()]);
        // A page token past the end of a listing: empty, not a panic.
        let inverted = state.read(|s| {
            s.range(
                Bound::Excluded(b"z".to_vec()),
                Bound::Excluded(b"b".to_vec()),
                false,
            )
            .count()
        });
        assert_eq!(inverted, 0);
        assert_eq!(pairs(&tree).len(), 2, "nothing copied yet");

        state.start_copy().await.unwrap().unwrap();
        assert_eq!(seen(&state), expected);
        assert_eq!(pairs(&tree), expected, "the tree holds the same state");
        assert!(state.layers().recent.is_empty() && state.layers().copying.is_empty());
    }

    /// The keys of queue messages (`m/...`) under the tree.
    fn message_keys(tree: &StateTree) -> usize {
        tree.range(
            Bound::Included(b"m/".to_vec()),
            Bound::Excluded(b"m0".to_vec()),
            false,
        )
        .count()
    }

    impl Node {
        /// Waits for the copy of recent writes under way, if any.
        async fn copied(&mut self) {
            if let Some(copy) = self.sm.copy.take() {
                copy.await.unwrap().unwrap();
            }
        }
    }

    /// Queue message keys stay in memory: copies take the rest into the
    /// tree, a snapshot reads them from memory, and only a clean stop
    /// writes them into the tree, which the node then reads them from.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queue_message_keys_stay_in_memory_until_a_clean_stop() {
        let mut n = node().await;
        n.fill_queue(1_500).await;
        n.copied().await;
        let tree = n.sm.state.layers().tree.clone();
        assert!(tree.get(APPLIED).unwrap().is_some(), "copies ran");
        assert_eq!(message_keys(&tree), 0);
        assert!(n.sm.state.layers().resident.len() >= 1_500 * 3);
        let snapshot = n.snapshot().await;
        assert_eq!(message_keys(&tree), 0, "a snapshot leaves them in memory");
        let mut b = node().await;
        let file = b.sm.begin_receiving_snapshot().await.unwrap();
        std::fs::copy(&snapshot.snapshot.path, &file.path).unwrap();
        b.sm.install_snapshot(&snapshot.meta, file).await.unwrap();
        assert_eq!(dump(&b), dump(&n), "the snapshot holds them");
        // Installed, they are in memory again, not in the tree.
        assert_eq!(message_keys(&b.sm.state.layers().tree), 0);
        assert!(b.sm.state.layers().resident.len() >= 1_500 * 3);
        // With a smaller budget, what does not fit goes to the tree.
        let mut c = node().await;
        c.sm.state.layers_mut().resident_budget = 16 * 1024;
        let file = c.sm.begin_receiving_snapshot().await.unwrap();
        std::fs::copy(&snapshot.snapshot.path, &file.path).unwrap();
        c.sm.install_snapshot(&snapshot.meta, file).await.unwrap();
        assert_eq!(dump(&c), dump(&n));
        assert!(message_keys(&c.sm.state.layers().tree) > 0);
        assert!(c.sm.state.layers().resident.bytes() <= 16 * 1024 + 2 * packed::BLOCK_BYTES);
        c.index = 1_501;
        let r = c.apply(10_000, vec![receive_up_to("q", 10, 30)]).await;
        assert_eq!(served_bodies(&c, r).await[0], "m0");

        drop(tree);
        let before = dump(&n);
        let mut n = n.restart(true).await;
        // Back in memory from the index file the clean stop wrote, which
        // the start then removed; never in the tree.
        let tree = n.sm.state.layers().tree.clone();
        assert_eq!(message_keys(&tree), 0);
        assert!(n.sm.state.layers().resident.len() >= 1_500 * 3);
        assert_eq!(dump(&n), before);
        assert!(!n.dir.path().join("queue-index/sm.0").exists());
        n.index = 1_501;
        let r = n.apply(10_000, vec![receive_up_to("q", 10, 30)]).await;
        assert_eq!(served_bodies(&n, r).await[0], "m0");
    }

    /// Past its budget the memory takes no more: newer message keys go to
    /// the tree, and a message whose keys are in the tree is still
    /// received and deleted through the layers (a removal hides the tree's
    /// keys until it reaches them).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn past_the_budget_message_keys_spill_into_the_tree() {
        let mut n = node().await;
        n.sm.state.layers_mut().resident_budget = 16 * 1024;
        n.fill_queue(1_500).await;
        n.copied().await;
        let tree = n.sm.state.layers().tree.clone();
        let spilled = message_keys(&tree);
        assert!(spilled > 0);
        let resident = n.sm.state.layers().resident.bytes();
        assert!(resident < 16 * 1024 + RECENT_WRITES_BYTES, "{resident}");
        // Every message, wherever its keys are, is received once, in order.
        let mut bodies = Vec::new();
        let mut receipts = Vec::new();
        for _ in 0..150 {
            let r = n.apply(10_000, vec![receive_up_to("q", 10, 300)]).await;
            if let Ok(CommandOutput::ReceiveMessages(o)) = &r[0] {
                receipts.extend(o.messages.iter().map(|m| m.receipt));
            }
            bodies.extend(served_bodies(&n, r).await);
        }
        let expected: Vec<String> = (0..1_500).map(|i| format!("m{i}")).collect();
        assert_eq!(bodies, expected);
        for chunk in receipts.chunks(10) {
            n.apply(
                10_001,
                vec![Command::DeleteMessages(crate::queues::DeleteMessages {
                    queue: "q".into(),
                    receipts: chunk.to_vec(),
                })],
            )
            .await;
        }
        n.copied().await;
        let q = n.sm.state.read(|s| {
            let id = crate::queues::load(s, "q").unwrap().unwrap().id;
            crate::queues::layout::load_state(s, id).unwrap()
        });
        assert_eq!((q.available, q.in_flight), (0, 0));
        let left = n.sm.state.read(|s| {
            s.range(
                Bound::Included(b"m/".to_vec()),
                Bound::Excluded(b"m0".to_vec()),
                false,
            )
            .count()
        });
        assert_eq!(left, 0, "every message's keys are gone, wherever they were");
        // The removals of keys in the tree went to the tree; memory keeps
        // no removal.
        n.sm.state.settle().unwrap();
        assert_eq!(message_keys(&tree), 0);
        assert!(
            n.sm.state.layers().resident.is_empty(),
            "no key of a deleted message stays in memory"
        );
    }

    /// A clean stop writes the layers oldest first: a message key held in
    /// memory and changed or removed since is written as it is now, never
    /// as it was.
    #[tokio::test]
    async fn a_persist_writes_resident_keys_under_the_newer_writes() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), &Default::default()).unwrap();
        let tree = StateTree::for_test(&db, "t");
        let state = StateHandle::over(tree.clone());
        state.add(changes(&[
            ("m/1", Some("old")),
            ("m/2", Some("old")),
            ("k", Some("old")),
        ]));
        state.start_copy().await.unwrap().unwrap();
        assert_eq!(state.layers().resident.len(), 2);
        state.add(changes(&[
            ("m/1", None),
            ("m/2", Some("new")),
            ("k", Some("new")),
        ]));
        let index = dir.path().join("index");
        state.persist(&index).unwrap();
        // The tree holds the rest, the index the message keys, as they are now.
        assert_eq!(pairs(&tree), vec![("k".to_string(), "new".to_string())]);
        let read = Packed::read_file(&index).unwrap();
        let read: Vec<_> = read
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .map(|(k, v)| (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap()))
            .collect();
        assert_eq!(read, vec![("m/2".to_string(), "new".to_string())]);
    }

    #[tokio::test]
    async fn a_copy_never_writes_an_older_value_over_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), &Default::default()).unwrap();
        for round in 0..50 {
            let tree = StateTree::for_test(&db, &format!("t{round}"));
            let state = StateHandle::over(tree.clone());
            state.add(changes(&[("k", Some("old")), ("gone", Some("x"))]));
            let copy = state.start_copy();
            state.add(changes(&[("k", Some("new")), ("gone", None)]));
            // A clean stop may come before, during or after the copy.
            state.persist(&dir.path().join("index")).unwrap();
            copy.await.unwrap().unwrap();
            assert_eq!(
                pairs(&tree),
                vec![("k".to_string(), "new".to_string())],
                "round {round}"
            );
            assert_eq!(state.read(pairs), pairs(&tree), "round {round}");
        }
    }

    #[tokio::test]
    async fn the_clean_mark_serves_one_start_only() {
        let mut n = node().await;
        n.apply(1_000, vec![create("q", &[])]).await;
        let n = n.restart(true).await;
        // Started from the clean state, then killed: not clean any more.
        let mut n = n.restart(false).await;
        assert_eq!(n.applied_index().await, None);
    }

    fn dump(n: &Node) -> Vec<(Vec<u8>, Vec<u8>)> {
        n.sm.handle().read(|s| {
            s.range(Bound::Unbounded, Bound::Unbounded, false)
                .map(|kv| kv.unwrap())
                .filter(|(k, _)| !k.starts_with(b"\x00sm/"))
                .collect()
        })
    }

    #[tokio::test]
    async fn entries_applied_together_or_one_by_one_give_the_same_state() {
        // A replay after an unclean stop applies thousands of entries per
        // call where the live node applied them one or a few at a time.
        let mut seed = 7u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut entries = Vec::new();
        for i in 0..600u64 {
            let name = format!("q{}", next() % 4);
            let command = match next() % 3 {
                0 => create(&name, &[]),
                1 => Command::DeleteQueue(crate::queues::DeleteQueue { name }),
                _ => send(&name, "m"),
            };
            entries.push((1_000 + i, vec![command]));
        }
        let mut one_by_one = node().await;
        for (t, commands) in &entries {
            one_by_one.apply(*t, commands.clone()).await;
        }
        let mut together = node().await;
        let batch: Vec<_> = entries
            .iter()
            .enumerate()
            .map(|(i, (t, commands))| entry(i as u64 + 1, *t, commands.clone()))
            .collect();
        together.sm.apply(batch).await.unwrap();
        assert_eq!(dump(&one_by_one), dump(&together));
    }
}
