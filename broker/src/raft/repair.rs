//! Opening the Raft log, and repairing a node of a cluster whose log is
//! damaged (see [`crate::store::log`] for how damage is told from a torn
//! final write).
//!
//! A node's log may hold entries it acknowledged; if damage makes it lose
//! them, the cluster holds fewer copies than Raft counts on, and a vote from
//! this node could elect a candidate that lacks committed entries. So:
//!
//! * a node alone in its cluster has no other copy: it refuses to start,
//!   naming the file and offset. `sluice cut-log` accepts the loss.
//! * a node of a cluster cuts its log at the damage (the damaged files are
//!   kept aside) and records a *repair target*: the last log id it found in
//!   the damaged log, in `log/repair`, so that a restart meanwhile keeps the
//!   repair going. When how far the log went is unknown (its last segment
//!   was cut short), it votes for no one until a leader has told it: see
//!   [`Target::FromLeader`]. Until its log reaches the target again (the leader
//!   re-sends the damaged range, or installs a snapshot past it), the node
//!   votes only for a candidate whose log reaches the target (the vote it
//!   would have given before the damage: refusing every vote could leave a
//!   cluster with a member down unable to elect the leader that would
//!   repair it), does not campaign and refuses leadership, reports it in
//!   its status and readiness, and sets `sluice_log_repair_pending`. It
//!   still answers the leader's appends, which is how it is repaired: an
//!   append succeeds only where the log matches, so the leader learns from
//!   the first conflict where the log ends and re-sends from there. For the
//!   same reason it acknowledges no new entry before the damaged range is
//!   back: an entry past the damage is accepted only after every entry
//!   before it, so until it is repaired the node adds no copy to any new
//!   write's quorum.

use std::path::Path;
use std::sync::{Arc, Mutex};

use openraft::{Entry, EntryPayload, LogId, Membership, Vote};
use serde::{Deserialize, Serialize};

use super::log_store::{self, SEGMENT_BYTES};
use super::recovery::lock_stopped_log;
use super::snapshot::SnapshotDir;
use super::{Node, NodeId, Raft, TypeConfig};
use crate::store::codec;
use crate::store::log::{self, Damage, LogFiles, MetaFile, OnDamage};
use crate::store::StoreError;

/// How far a node's cut log must reach again before it votes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// The last log id the node held before the damage.
    Reach(LogId<NodeId>),
    /// How far the log went is unknown (its last segment was cut short, or
    /// its header damaged): the node held no entry of a term after `term`
    /// (its vote's), so any leader of `term` or later holds every committed
    /// entry it may have acknowledged. Once such a leader has committed an
    /// entry of its own term, its commit point covers them all, and becomes
    /// the target (never below `at_least`, the last entry the damaged log
    /// still showed).
    FromLeader {
        term: u64,
        at_least: Option<LogId<NodeId>>,
    },
}

/// The repair state of a node whose log was cut at damage.
pub struct Repair {
    file: MetaFile,
    target: Mutex<Option<Target>>,
    changed: tokio::sync::Notify,
}

impl Repair {
    /// The repair state recorded in `log_dir`.
    fn load(log_dir: &Path) -> Result<Repair, String> {
        let file = MetaFile::new(&log_dir.join("repair"));
        let target = match file.read().map_err(|e| e.to_string())? {
            None => None,
            Some(bytes) => Some(codec::decode_message::<Target>("repair target", &bytes)?),
        };
        Ok(Repair {
            file,
            target: Mutex::new(target),
            changed: tokio::sync::Notify::new(),
        })
    }

    /// A node with nothing to repair (tests and tools).
    pub fn none(log_dir: &Path) -> Repair {
        Repair {
            file: MetaFile::new(&log_dir.join("repair")),
            target: Mutex::new(None),
            changed: tokio::sync::Notify::new(),
        }
    }

    /// Whether the node is being repaired.
    pub fn is_active(&self) -> bool {
        self.target().is_some()
    }

    /// While the node is being repaired: the index its log must reach
    /// again, or 0 while no leader has told it yet.
    pub fn pending(&self) -> Option<u64> {
        self.target().map(|t| match t {
            Target::Reach(id) => id.index,
            Target::FromLeader { .. } => 0,
        })
    }

    /// What the repair waits for, in words ("until entry 812").
    pub fn until(&self) -> Option<String> {
        self.target().map(|t| match t {
            Target::Reach(id) => format!("until entry {}", id.index),
            Target::FromLeader { .. } => {
                "until a leader has told it how far its log must reach".to_string()
            }
        })
    }

    /// The repair target, while the node is being repaired.
    pub fn target(&self) -> Option<Target> {
        *self.target.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Why a vote for a candidate whose log ends at `last` is refused, if
    /// it is: the node votes only as it would have before the damage, for
    /// candidates whose log reaches what it held, so that it never helps
    /// elect one lacking entries it may have acknowledged. While it does
    /// not know what it held, it votes for none.
    pub fn refuses(&self, last: Option<LogId<NodeId>>) -> Option<String> {
        match self.target()? {
            Target::Reach(target) if last < Some(target) => Some(format!(
                "this node's damaged log is being repaired (until entry {}) and the candidate's log ends before it",
                target.index
            )),
            Target::Reach(_) => None,
            Target::FromLeader { .. } => Some(
                "this node's log lost an unknown part of its end and is being repaired; it votes for no one until a leader has repaired it".to_string(),
            ),
        }
    }

    /// Whether a leader's append, sent with `vote` and `leader_commit`,
    /// tells the target of a repair that waits for one.
    pub fn wants(&self, vote: &Vote<NodeId>, leader_commit: Option<LogId<NodeId>>) -> bool {
        self.learned(vote, leader_commit).is_some()
    }

    fn learned(
        &self,
        vote: &Vote<NodeId>,
        leader_commit: Option<LogId<NodeId>>,
    ) -> Option<LogId<NodeId>> {
        let Some(Target::FromLeader { term, at_least }) = self.target() else {
            return None;
        };
        let leader_term = vote.leader_id().term;
        let commit = leader_commit?;
        (vote.committed && leader_term >= term && commit.leader_id.term == leader_term)
            .then(|| at_least.max(Some(commit)).unwrap_or(commit))
    }

    /// Takes the target from a leader's append (see [`Target::FromLeader`]);
    /// says whether it did. Blocks on a file write.
    pub fn learn(
        &self,
        vote: &Vote<NodeId>,
        leader_commit: Option<LogId<NodeId>>,
    ) -> Result<bool, String> {
        let Some(target) = self.learned(vote, leader_commit) else {
            return Ok(false);
        };
        self.set(Target::Reach(target))?;
        tracing::warn!(
            repair_target = target.index,
            leader = %vote,
            "the leader's commit point is the repair target: this node votes again once its log reaches entry {}",
            target.index
        );
        Ok(true)
    }

    /// Records, durably, that the log must reach `target` again (the later
    /// of it and any target already recorded).
    fn begin(&self, target: LogId<NodeId>) -> Result<(), String> {
        match self.target() {
            Some(Target::Reach(old)) => self.set(Target::Reach(old.max(target))),
            // Still unknown: what was lost reaches at least this far.
            Some(Target::FromLeader { term, at_least }) => self.set(Target::FromLeader {
                term,
                at_least: at_least.max(Some(target)),
            }),
            None => self.set(Target::Reach(target)),
        }
    }

    /// Records, durably, that how far the log went is unknown.
    fn begin_unknown(&self, term: u64, at_least: Option<LogId<NodeId>>) -> Result<(), String> {
        let at_least = match self.target() {
            Some(Target::Reach(old)) => at_least.max(Some(old)),
            Some(Target::FromLeader { at_least: old, .. }) => at_least.max(old),
            None => at_least,
        };
        self.set(Target::FromLeader { term, at_least })
    }

    fn set(&self, target: Target) -> Result<(), String> {
        self.file
            .write(&codec::encode(&target))
            .map_err(|e| e.to_string())?;
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
        self.publish();
        self.changed.notify_one();
        Ok(())
    }

    /// Ends the repair: the record goes, and the node may vote again.
    fn finish(&self) -> Result<(), String> {
        self.file.remove().map_err(|e| e.to_string())?;
        *self.target.lock().unwrap_or_else(|e| e.into_inner()) = None;
        Ok(())
    }

    /// Publishes the repair state as metrics.
    fn publish(&self) {
        let pending = self.pending();
        metrics::gauge!("sluice_log_repair_pending").set(if pending.is_some() { 1.0 } else { 0.0 });
        metrics::gauge!("sluice_log_repair_target_index").set(pending.unwrap_or(0) as f64);
    }
}

/// The log a node starts with.
pub struct OpenedLog {
    /// The log files.
    pub log: Arc<LogFiles>,
    /// Whether the node is being repaired.
    pub repair: Arc<Repair>,
    /// Why the snapshot was given up, when the damage cut entries it may
    /// need (for [`check_snapshots`] to say).
    pub gave_up: Option<String>,
}

/// Before the log loses the entries from `first_lost` on (cut at damage,
/// or kept segments set aside): gives up the snapshots and the closed state
/// at or past `first_lost`. They may name message bodies that only those
/// entries held (a queued message's body stays in its log entry, and a
/// segment of such bodies is kept past the purge instead of copied; see
/// `raft::kept_bodies`), and the repair would never bring them back: the
/// leader re-sends only what lies past the node's snapshot. The state is
/// then rebuilt from what the log still holds, or, once that is not
/// enough, installed from the leader (see [`check_snapshots`]). Done
/// before the cut, so that a crash in between repeats it.
fn give_up_from(
    data_dir: &Path,
    db: &crate::store::Db,
    first_lost: u64,
) -> Result<Option<String>, String> {
    let snapshots =
        SnapshotDir::open(&data_dir.join("snapshots")).map_err(|e| format!("snapshots: {e}"))?;
    let removed = snapshots
        .remove_from(first_lost)
        .map_err(|e| format!("snapshots: {e}"))?;
    if super::state_machine::trusted_applied(db)
        .map_err(|e| e.to_string())?
        .is_some_and(|applied| applied.index >= first_lost)
    {
        super::state_machine::mark_unclean(db).map_err(|e| e.to_string())?;
    }
    Ok(removed.first().map(|meta| {
        let why = format!(
            "the snapshot at entry {} was given up, since the damage lost entries from {first_lost} on, which it may need",
            meta.last_log_id.map_or(0, |l| l.index)
        );
        tracing::error!("{why}");
        why
    }))
}

/// Gives up the snapshots and the state from entry `first_lost` on (which
/// name bodies `what` says are gone) and begins a repair that an install
/// from the leader ends. Refused on a node alone in its cluster: no other
/// holds a copy.
fn repair_by_install(
    data_dir: &Path,
    db: &crate::store::Db,
    me: NodeId,
    log: &LogFiles,
    repair: &Repair,
    first_lost: u64,
    what: &str,
) -> Result<Option<String>, String> {
    metrics::counter!("sluice_log_damage_found_total").increment(1);
    let log_dir = data_dir.join("log");
    let snapshots =
        SnapshotDir::open(&data_dir.join("snapshots")).map_err(|e| format!("snapshots: {e}"))?;
    let Left { membership, .. } = what_is_left(&log_dir, &snapshots)?;
    if membership.is_none_or(|m| m.nodes().all(|(id, _)| *id == me)) {
        return Err(format!(
            "{what}. This node is alone in its cluster, so no other node holds a copy to repair it from, and it will not start. Restore the data directory from a backup"
        ));
    }
    let last = last_held(&log_dir, log, &snapshots)?
        .ok_or_else(|| format!("{what}, and the node holds no other entry"))?;
    tracing::error!("{what}; giving up the snapshot and repairing from the leader");
    repair.begin(last)?;
    give_up_from(data_dir, db, first_lost)
}

/// The entry whose message body this node recorded lost, if it did
/// ([`LogFiles::body_lost_file`]).
fn body_lost(log: &LogFiles) -> Result<Option<u64>, String> {
    let Some(bytes) = log
        .body_lost_file()
        .read()
        .map_err(|e| format!("log: {e}"))?
    else {
        return Ok(None);
    };
    let index: [u8; 8] = bytes
        .as_slice()
        .try_into()
        .map_err(|_| "log: the record of a lost body is not an entry index".to_string())?;
    Ok(Some(u64::from_be_bytes(index)))
}

/// The last entry the node holds anywhere: in its log, at its purge point
/// or in its snapshot.
fn last_held(
    log_dir: &Path,
    log: &LogFiles,
    snapshots: &SnapshotDir,
) -> Result<Option<LogId<NodeId>>, String> {
    let purged = log_store::read_meta(&MetaFile::new(&log_dir.join("meta")))?.purged;
    let in_snapshot = snapshots
        .latest()
        .map_err(|e| format!("snapshots: {e}"))?
        .and_then(|(m, _)| m.last_log_id);
    Ok([log_store::last_log_id(log)?, purged, in_snapshot]
        .into_iter()
        .flatten()
        .max_by_key(|l| l.index))
}

/// What a damaged log still says.
struct Left {
    /// The last membership its valid records (or, failing that, the latest
    /// snapshot) name.
    membership: Option<Membership<NodeId, Node>>,
    /// The last log id among its valid records.
    last: Option<LogId<NodeId>>,
}

/// Reads what the valid records of a damaged log still say.
fn what_is_left(log_dir: &Path, snapshots: &SnapshotDir) -> Result<Left, String> {
    let mut found: Option<(u64, Membership<NodeId, Node>)> = None;
    let mut last: Option<LogId<NodeId>> = None;
    log::visit_valid(log_dir, |index, bytes| {
        if let Ok(entry) = codec::decode_message::<Entry<TypeConfig>>("log entry", bytes) {
            last = last.max(Some(entry.log_id));
            if let EntryPayload::Membership(m) = entry.payload {
                if found.as_ref().is_none_or(|(i, _)| *i < index) {
                    found = Some((index, m));
                }
            }
        }
    })
    .map_err(|e| e.to_string())?;
    let membership = match found {
        Some((_, m)) => Some(m),
        None => snapshots
            .latest()
            .map_err(|e| format!("snapshots: {e}"))?
            .map(|(meta, _)| meta.last_membership.membership().clone()),
    };
    Ok(Left { membership, last })
}

/// After the log was cut, the commit point recorded beside it may lie past
/// its end; openraft would re-apply entries the log no longer has. The
/// leader tells the commit point again.
fn clamp_committed(log_dir: &Path, log: &LogFiles) -> Result<(), String> {
    let meta_file = MetaFile::new(&log_dir.join("meta"));
    let mut meta = log_store::read_meta(&meta_file)?;
    if log_store::past_log_end(meta.committed, log.last_index(), meta.purged) {
        meta.committed = None;
        log_store::write_meta(&meta_file, &meta)?;
    }
    Ok(())
}

fn refusal(damage: &Damage, data_dir: &Path) -> String {
    let lost = match damage.last_seen {
        Some(last) => format!("entries {}..={last}", damage.first_lost),
        None => format!("every entry from {} on", damage.first_lost),
    };
    format!(
        "{damage}. This node is alone in its cluster, so no other node holds a copy to repair the log from, and it will not start. Restore the data directory from a backup; or, accepting the loss of {lost}, run `sluice cut-log --data-dir {}`, which cuts the log at the damage and keeps the damaged files aside",
        data_dir.display()
    )
}

/// Opens the log of the node `me` in `data_dir`: see the module
/// documentation for what happens to damage. New segments are created
/// `segment_bytes` long.
///
/// `db` is the node's state: a closed state that names entries the damage
/// cut is no longer trusted (see [`give_up_from`]).
pub fn open_log(
    data_dir: &Path,
    me: NodeId,
    segment_bytes: u64,
    db: &crate::store::Db,
) -> Result<OpenedLog, String> {
    let log_dir = data_dir.join("log");
    std::fs::create_dir_all(&log_dir).map_err(|e| format!("{}: {e}", log_dir.display()))?;
    let repair = Repair::load(&log_dir)?;
    let mut gave_up = None;
    let log = match LogFiles::open(&log_dir, segment_bytes) {
        Ok(log) => log,
        Err(StoreError::LogDamaged(damage)) => {
            metrics::counter!("sluice_log_damage_found_total").increment(1);
            let snapshots = SnapshotDir::open(&data_dir.join("snapshots"))
                .map_err(|e| format!("snapshots: {e}"))?;
            let Left { membership, last } = what_is_left(&log_dir, &snapshots)?;
            let alone = membership.is_none_or(|m| m.nodes().all(|(id, _)| *id == me));
            if alone {
                return Err(refusal(&damage, data_dir));
            }
            tracing::error!("{damage}; cutting it there and repairing it from the leader");
            // Recorded before the cut: a crash in between must not leave a
            // short log that votes.
            match damage.last_seen {
                Some(_) => {
                    let last =
                        last.ok_or_else(|| format!("{damage}, and no entry of it decodes"))?;
                    repair.begin(last)?;
                }
                None => {
                    let vote = log_store::read_meta(&MetaFile::new(&log_dir.join("meta")))?.vote;
                    let term = vote.map_or(0, |v| v.leader_id().term);
                    // Entries seen past the damage were held too.
                    repair.begin_unknown(term, last)?;
                }
            }
            gave_up = give_up_from(data_dir, db, damage.first_lost)?;
            let (log, _) = LogFiles::open_with(&log_dir, segment_bytes, OnDamage::CutAndSetAside)
                .map_err(|e| format!("log: {e}"))?;
            clamp_committed(&log_dir, &log)?;
            log
        }
        Err(e) => return Err(format!("log: {e}")),
    };
    // Bodies the snapshot and the state only name are gone: in a damaged
    // kept segment, or found lost while a snapshot was being built (which
    // stopped the node). Both go, and the node is repaired by an install,
    // whose snapshot carries every body.
    if let Some(damage) = log.kept_damage() {
        let what = damage.to_string();
        let repaired =
            repair_by_install(data_dir, db, me, &log, &repair, damage.first_lost, &what)?;
        gave_up = repaired.or(gave_up);
        log.set_kept_aside().map_err(|e| format!("log: {e}"))?;
    }
    if let Some(index) = body_lost(&log)? {
        let what = format!(
            "the body of a message sent in log entry {index} was found lost (see the log of the previous run)"
        );
        gave_up = repair_by_install(data_dir, db, me, &log, &repair, index, &what)?.or(gave_up);
        log.body_lost_file()
            .remove()
            .map_err(|e| format!("log: {e}"))?;
    }
    if let Some(until) = repair.until() {
        tracing::warn!(
            repair_target = repair.pending(),
            last_index = log.last_index(),
            "this node's log is being repaired from the leader: it will not vote or lead {until}"
        );
    }
    Ok(OpenedLog {
        log: Arc::new(log),
        repair: Arc::new(repair),
        gave_up,
    })
}

/// Makes sure the state can be rebuilt although a snapshot is damaged or
/// missing. Damaged snapshot files are set aside first. Nothing more is
/// needed when a good snapshot remains, when the log still holds every
/// entry (nothing was purged), or when the state was closed cleanly at or
/// past the purge point (a new snapshot is built from it). Otherwise the
/// entries up to the purge point exist nowhere on this node: one alone in
/// its cluster refuses to start; one of a cluster empties its log and
/// state, keeping its vote, and is repaired from the leader (a snapshot
/// install) up to the last entry it held.
///
/// `gave_up` says why [`open_log`] gave the snapshot up, if it did.
pub fn check_snapshots(
    data_dir: &Path,
    me: NodeId,
    repair: &Repair,
    log: &LogFiles,
    db: &crate::store::Db,
    gave_up: Option<&str>,
) -> Result<(), String> {
    let snapshots =
        SnapshotDir::open(&data_dir.join("snapshots")).map_err(|e| format!("snapshots: {e}"))?;
    let damaged = snapshots
        .set_aside_damaged()
        .map_err(|e| format!("snapshots: {e}"))?;
    if snapshots
        .latest()
        .map_err(|e| format!("snapshots: {e}"))?
        .is_some()
    {
        return Ok(());
    }
    let log_dir = data_dir.join("log");
    let meta_file = MetaFile::new(&log_dir.join("meta"));
    let mut meta = log_store::read_meta(&meta_file)?;
    let Some(purged) = meta.purged else {
        return Ok(());
    };
    let trusted = super::state_machine::trusted_applied(db).map_err(|e| e.to_string())?;
    if trusted.is_some_and(|applied| applied >= purged) {
        return Ok(());
    }
    let what = match (damaged.first(), gave_up) {
        (Some((path, why)), _) => format!("the snapshot {} is damaged ({why})", path.display()),
        (None, Some(why)) => why.to_string(),
        (None, None) => "the snapshot is missing".to_string(),
    };
    // What the node still knows of its cluster: the log, the damaged
    // snapshot's header (written before its body), the state's record.
    let membership = match what_is_left(&log_dir, &snapshots)?.membership {
        Some(m) => Some(m),
        None => damaged
            .iter()
            .find_map(|(path, _)| {
                super::snapshot::SnapshotReader::open(&path.with_extension("snap.damaged"))
                    .ok()
                    .map(|(_, meta)| meta.last_membership.membership().clone())
            })
            .or(super::state_machine::stored_membership(db)
                .ok()
                .flatten()
                .map(|m| m.membership().clone())),
    };
    // A snapshot given up by `open_log` was given up on a node it found
    // to have peers (their membership may have been only in it).
    let alone = gave_up.is_none() && membership.is_none_or(|m| m.nodes().all(|(id, _)| *id == me));
    if alone {
        return Err(format!(
            "{what}, and the log before entry {} was purged, so the state cannot be rebuilt; this node is alone in its cluster, so no other node holds a copy: restore the data directory from a backup",
            purged.index + 1
        ));
    }
    let in_log = log_store::last_log_id(log)?;
    let target = in_log.max(Some(purged)).unwrap_or(purged);
    tracing::error!(
        repair_target = target.index,
        "{what} and the log before it was purged: emptying the log and the state, keeping the vote; the leader will send a snapshot"
    );
    repair.begin(target)?;
    log.truncate_from(0).map_err(|e| format!("log: {e}"))?;
    log.sync().map_err(|e| format!("log: {e}"))?;
    meta.purged = None;
    meta.committed = None;
    log_store::write_meta(&meta_file, &meta)?;
    super::state_machine::mark_unclean(db).map_err(|e| e.to_string())
}

/// Cuts the damaged log of a stopped node alone in its cluster, accepting
/// the loss of the entries after the damage (`sluice cut-log`). Returns the
/// damage cut, or `None` when the log was not damaged.
///
/// A cut at or below the latest snapshot gives the snapshot up too (it may
/// name bodies only the cut entries held); when the log was purged, the
/// state could then not be rebuilt, so the cut is refused.
pub fn cut_log(data_dir: &Path) -> Result<Option<Damage>, String> {
    let (log_dir, _lock) = lock_stopped_log(data_dir, "")?;
    match LogFiles::open(&log_dir, SEGMENT_BYTES) {
        Ok(log) => {
            if let Some(damage) = log.kept_damage() {
                return Err(format!(
                    "{damage}. Cutting the log cannot mend that: restore the data directory from a backup"
                ));
            }
            return Ok(None);
        }
        Err(StoreError::LogDamaged(damage)) => {
            let snapshots = SnapshotDir::open(&data_dir.join("snapshots"))
                .map_err(|e| format!("snapshots: {e}"))?;
            let in_snapshot = snapshots
                .latest()
                .map_err(|e| format!("snapshots: {e}"))?
                .and_then(|(m, _)| m.last_log_id);
            let purged = log_store::read_meta(&MetaFile::new(&log_dir.join("meta")))?.purged;
            if let (Some(snap), Some(_)) = (in_snapshot, purged) {
                if snap.index >= damage.first_lost {
                    return Err(format!(
                        "{damage}. The latest snapshot (entry {}) may need entries the cut would lose, and the log before it was purged, so the state could not be rebuilt: restore the data directory from a backup",
                        snap.index
                    ));
                }
            }
            let db = crate::store::Db::open(&data_dir.join("db"), &Default::default())
                .map_err(|e| format!("db: {e}"))?;
            give_up_from(data_dir, &db, damage.first_lost)?;
            db.flush().map_err(|e| format!("db: {e}"))?;
        }
        Err(e) => return Err(format!("log: {e}")),
    }
    let (log, damage) = LogFiles::open_with(&log_dir, SEGMENT_BYTES, OnDamage::CutAndSetAside)
        .map_err(|e| format!("log: {e}"))?;
    clamp_committed(&log_dir, &log)?;
    Ok(damage)
}

/// Holds the node out of elections while it is repaired, and ends the
/// repair once its log reaches the target again and is synced.
pub fn spawn_watch(raft: Raft, repair: Arc<Repair>, log: Arc<LogFiles>) {
    repair.publish();
    if !repair.is_active() {
        return;
    }
    raft.runtime_config().elect(false);
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        loop {
            let target = match repair.target() {
                Some(Target::Reach(target)) => Some(target.index),
                // Waits for a leader's append to tell it.
                Some(Target::FromLeader { .. }) => None,
                None => return,
            };
            let reached = target
                .is_some_and(|target| metrics.borrow().last_log_index.is_some_and(|i| i >= target));
            if reached {
                // What openraft counts as appended is durable only once
                // synced; the flush thread may not have run yet.
                let synced = {
                    let log = log.clone();
                    tokio::task::spawn_blocking(move || log.sync()).await
                };
                match synced
                    .map_err(|e| e.to_string())
                    .and_then(|r| r.map_err(|e| e.to_string()))
                {
                    Ok(()) => match repair.finish() {
                        Ok(()) => {
                            raft.runtime_config().elect(true);
                            repair.publish();
                            tracing::info!(
                                repair_target = target,
                                "the log is repaired: this node holds every entry it held before the damage, and votes again"
                            );
                            return;
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "could not record the end of the log repair")
                        }
                    },
                    Err(e) => tracing::error!(error = %e, "could not sync the repaired log"),
                }
            }
            tokio::select! {
                changed = metrics.changed() => {
                    if changed.is_err() {
                        return;
                    }
                }
                () = repair.changed.notified() => {}
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::CommittedLeaderId;

    fn id(term: u64, index: u64) -> LogId<NodeId> {
        LogId::new(CommittedLeaderId::new(term, 1), index)
    }

    #[test]
    fn a_known_target_refuses_only_candidates_behind_it() {
        let dir = tempfile::tempdir().unwrap();
        let repair = Repair::load(dir.path()).unwrap();
        repair.begin(id(3, 100)).unwrap();
        assert!(repair.refuses(Some(id(3, 99))).is_some());
        assert!(repair.refuses(Some(id(2, 500))).is_some());
        assert!(repair.refuses(Some(id(3, 100))).is_none());
        assert!(repair.refuses(Some(id(4, 50))).is_none());
        // A leader's append changes nothing.
        assert!(!repair
            .learn(&Vote::new_committed(5, 2), Some(id(5, 10)))
            .unwrap());
        assert_eq!(repair.pending(), Some(100));
    }

    #[test]
    fn an_unknown_target_is_taken_from_a_leader_that_committed_in_its_own_term() {
        let dir = tempfile::tempdir().unwrap();
        let repair = Repair::load(dir.path()).unwrap();
        repair.begin_unknown(4, Some(id(3, 40))).unwrap();
        assert_eq!(repair.pending(), Some(0));
        assert!(
            repair.refuses(Some(id(9, 1000))).is_some(),
            "no vote at all"
        );
        // A leader of an older term, an uncommitted vote, or a commit point
        // of an earlier term (not yet known to cover everything) tell nothing.
        assert!(!repair
            .learn(&Vote::new_committed(3, 2), Some(id(3, 90)))
            .unwrap());
        assert!(!repair.learn(&Vote::new(5, 2), Some(id(5, 90))).unwrap());
        assert!(!repair
            .learn(&Vote::new_committed(5, 2), Some(id(4, 90)))
            .unwrap());
        assert!(!repair.learn(&Vote::new_committed(5, 2), None).unwrap());
        assert_eq!(repair.pending(), Some(0));
        assert!(repair
            .learn(&Vote::new_committed(5, 2), Some(id(5, 120)))
            .unwrap());
        assert_eq!(repair.target(), Some(Target::Reach(id(5, 120))));
        // Recorded: a restart keeps it.
        let again = Repair::load(dir.path()).unwrap();
        assert_eq!(again.target(), Some(Target::Reach(id(5, 120))));
    }

    #[test]
    fn a_known_target_does_not_end_an_unknown_one() {
        let dir = tempfile::tempdir().unwrap();
        let repair = Repair::load(dir.path()).unwrap();
        repair.begin_unknown(4, None).unwrap();
        repair.begin(id(4, 70)).unwrap();
        assert_eq!(
            repair.target(),
            Some(Target::FromLeader {
                term: 4,
                at_least: Some(id(4, 70))
            })
        );
    }
}
