//! Keeping the message bodies a purge of the log would take.
//!
//! A message sent by SendMessages keeps its body in the log entry that sent
//! it, and the state holds a [`BodyRef`] (see `sluice_core::queues::bodies`).
//! The log is purged only below a snapshot. So before a snapshot at index
//! `S` is written, [`keep`] looks at every reference at or below `S` that
//! the state still holds, segment by segment of the log:
//!
//! - a segment whose live bodies are at least half its bytes is *kept*: the
//!   purge moves it into `log/kept/` instead of deleting it, and the bodies
//!   are read there (a deep backlog is written once, not copied);
//! - the live bodies of a sparser segment are *copied* into the state tree
//!   (under [`KEPT`], outside every domain's keys), and the snapshot carries
//!   the copies; the segment is then deleted (an old message does not pin
//!   64 MiB).
//!
//! Copies of references the state no longer holds are dropped. A reference
//! at or below `S` that the state no longer holds never comes back:
//! references are made only by the send in their own entry, and a move
//! between queues carries the body itself.
//!
//! A node that rebuilds its state from its own snapshot after a crash finds
//! the bodies in its kept segments. A snapshot sent to another node carries
//! them: [`with_bodies`] streams the snapshot with a copy of every body it
//! only references, read from the log as it is sent.
//!
//! A snapshot therefore depends on the log: on its kept segments, and on
//! segments that straddle it, whose bodies wait for a later snapshot. A
//! node whose log loses entries at or below its snapshot gives the snapshot
//! up (`raft::repair`).
//!
//! `raft::bodies` reads the bodies back, from the log or from the copies.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use sluice_core::queues::bodies::{for_each_logged, logged_in};
use sluice_core::queues::layout::BodyRef;

use super::payload::Payload;
use crate::store::log::Span;
use crate::store::{codec, StateRead, StateTree, StoreError, WriteBatch};

/// Where the state tree keeps bodies whose log entries may be purged:
/// `KEPT`, then the reference's index, command and message, big-endian.
pub const KEPT: &[u8] = b"\x00sm/body/";

/// The key of the kept copy of `r`'s body.
pub fn kept_key(r: &BodyRef) -> Vec<u8> {
    let mut k = Vec::with_capacity(KEPT.len() + 16);
    k.extend_from_slice(KEPT);
    k.extend_from_slice(&r.index.to_be_bytes());
    k.extend_from_slice(&r.command.to_be_bytes());
    k.extend_from_slice(&r.message.to_be_bytes());
    k
}

/// What names a body: its entry, command and message (a [`BodyRef`] less
/// its length).
type Position = (u64, u32, u32);

fn position(r: &BodyRef) -> Position {
    (r.index, r.command, r.message)
}

/// The position a kept copy's key names.
pub fn kept_position(key: &[u8]) -> Option<Position> {
    let rest = key.strip_prefix(KEPT)?;
    if rest.len() != 16 {
        return None;
    }
    Some((
        u64::from_be_bytes(rest[..8].try_into().ok()?),
        u32::from_be_bytes(rest[8..12].try_into().ok()?),
        u32::from_be_bytes(rest[12..].try_into().ok()?),
    ))
}

/// Committed log entries, read by index, and the segments that hold them.
pub trait LoggedEntries: Send + Sync {
    /// The payload of committed entry `index`: `Ok(None)` when the log no
    /// longer holds it (purged), an error when it cannot be read.
    fn payload(&self, index: u64) -> Result<Option<Payload>, String>;

    /// The log's segments, in index order, those kept past a purge
    /// included.
    fn spans(&self) -> Vec<Span>;

    /// Says which segments (by first index) a purge keeps for their bodies.
    fn pin(&self, segments: BTreeSet<u64>);

    /// Records durably that this node lost the body of a message sent in
    /// entry `index` ([`StoreError::BodyLost`]): the next start gives up
    /// the snapshots and the state that name it and is repaired from
    /// another node (`raft::repair::open_log`).
    fn record_body_lost(&self, index: u64) -> Result<(), String>;

    /// Keeps the segments that hold entries up to `index` while the
    /// returned hold lives, whatever the pins say: a snapshot at `index`
    /// being sent reads its bodies there.
    fn hold_through(&self, index: u64) -> Hold;
}

/// Keeps log segments from deletion until dropped
/// ([`LoggedEntries::hold_through`]).
pub type Hold = Box<dyn std::any::Any + Send + Sync>;

/// The body `r` names in `payload`.
pub fn body_in(payload: &Payload, r: &BodyRef) -> Result<String, String> {
    payload
        .proposal()
        .commands
        .get(r.command as usize)
        .and_then(|c| c.sent_body(r))
        .map(str::to_string)
        .ok_or_else(|| {
            format!(
                "log entry {} has no message {} in a send at position {}",
                r.index, r.message, r.command
            )
        })
}

/// What [`keep`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Kept {
    /// References at or below the snapshot point the state holds.
    pub live: u64,
    /// Bodies copied out of the log this time.
    pub copied: u64,
    /// Copies dropped, their messages gone.
    pub dropped: u64,
    /// Segments (by first index) wholly at or below the snapshot point
    /// that the log keeps for the bodies they hold.
    pub pinned: BTreeSet<u64>,
}

/// Reads bodies out of the log, each entry once while its references come
/// in order.
struct Reader<'a> {
    log: &'a dyn LoggedEntries,
    entry: Option<(u64, Payload)>,
}

impl Reader<'_> {
    fn body(&mut self, r: &BodyRef) -> Result<String, StoreError> {
        let lost = |reason: String| StoreError::Corrupt {
            key: format!("log entry {}", r.index),
            reason,
        };
        if !matches!(&self.entry, Some((index, _)) if *index == r.index) {
            let payload = self
                .log
                .payload(r.index)
                .map_err(lost)?
                .ok_or(StoreError::BodyLost { index: r.index })?;
            self.entry = Some((r.index, payload));
        }
        let (_, payload) = self.entry.as_ref().expect("just read");
        body_in(payload, r).map_err(lost)
    }
}

/// Before a snapshot of `state` at log index `upto`: makes sure that every
/// body a reference at or below `upto` names survives the purges this
/// snapshot allows, and drops the copies in `tree` (the engine's part of
/// `state`) that no reference needs any more. Runs while nothing applies
/// to `state`.
///
/// The log keeps a segment wholly at or below `upto` whose live bodies
/// (those without a copy) are at least half its bytes ([`Kept::pinned`]);
/// the live bodies of the other such segments are copied into `tree`, so
/// that a purge can delete them. The log's disk use then stays within
/// about twice the live bodies, and a deep backlog is not written again.
/// A segment that also holds entries above `upto` is not purged yet and is
/// left for a later snapshot. Pass the pinned set to
/// [`LoggedEntries::pin`] once the snapshot is durable.
pub fn keep(
    state: &dyn StateRead,
    tree: &StateTree,
    log: &dyn LoggedEntries,
    upto: u64,
) -> Result<Kept, StoreError> {
    // A sorted vector rather than a map: a deep backlog holds millions of
    // references, and a map's insert per reference cost seconds while
    // nothing applies.
    let mut live = Vec::new();
    for_each_logged(state, |r| {
        if r.index <= upto {
            live.push(r);
        }
    })
    .map_err(|e| match e {
        crate::error::ApplyError::Store(e) => e,
        other => StoreError::Corrupt {
            key: "queue bodies".into(),
            reason: other.to_string(),
        },
    })?;
    live.sort_unstable_by_key(position);
    live.dedup_by_key(|r| position(r));
    // Those with a copy already, found below.
    let mut has_copy = vec![false; live.len()];
    let mut kept = Kept {
        live: live.len() as u64,
        ..Kept::default()
    };
    let mut batch = WriteBatch::default();
    let end = crate::store::keys::prefix_end(KEPT);
    for kv in state.range(Bound::Included(KEPT.to_vec()), end, false) {
        let (key, _) = kv?;
        let found = kept_position(&key).and_then(|p| live.binary_search_by_key(&p, position).ok());
        match kept_position(&key) {
            Some(_) if found.is_some_and(|i| !std::mem::replace(&mut has_copy[i], true)) => {}
            Some((index, ..)) if index > upto => {}
            _ => {
                batch.delete(key);
                kept.dropped += 1;
            }
        }
        if batch.len() >= KEEP_BATCH {
            tree.apply(std::mem::take(&mut batch))?;
        }
    }
    // What is left of `live` has no copy: segment by segment, keep the
    // segment or copy its bodies.
    let mut reader = Reader { log, entry: None };
    let mut refs = live
        .iter()
        .zip(&has_copy)
        .filter(|(_, copied)| !**copied)
        .map(|(r, _)| r)
        .peekable();
    for span in log.spans() {
        let mut in_span = Vec::new();
        while let Some(r) = refs.next_if(|r| r.index <= span.last) {
            if r.index >= span.first {
                in_span.push(*r);
            } else {
                // In no segment: read below.
                copy(&mut reader, &mut batch, &mut kept, tree, r)?;
            }
        }
        if span.last > upto || in_span.is_empty() {
            continue;
        }
        let bytes: u64 = in_span.iter().map(|r| u64::from(r.bytes)).sum();
        if bytes * 2 >= span.bytes {
            kept.pinned.insert(span.first);
        } else {
            for r in &in_span {
                copy(&mut reader, &mut batch, &mut kept, tree, r)?;
            }
        }
    }
    // In no segment: the log lost them, which the copy reports.
    for r in refs {
        copy(&mut reader, &mut batch, &mut kept, tree, r)?;
    }
    tree.apply(batch)?;
    Ok(kept)
}

/// Writes to `out` what is sent of snapshot file `from` to another node:
/// its records, then a copy of the body of every reference at or below its
/// index that it holds without one, read from `log`, all in the snapshot
/// format. The node that installs it may never have held those entries.
/// Returns how many bodies it added, and `out`.
pub fn with_bodies<W: std::io::Write>(
    from: &std::path::Path,
    out: W,
    log: &dyn LoggedEntries,
) -> Result<(u64, W), StoreError> {
    use super::snapshot::{SnapshotReader, SnapshotWriter};
    let io = |what: &'static str, path: &std::path::Path| {
        let path = path.to_path_buf();
        move |e: std::io::Error| StoreError::io(what, &path, e)
    };
    let (mut reader, meta) = SnapshotReader::open(from).map_err(io("opening snapshot", from))?;
    let upto = meta.last_log_id.map_or(0, |l| l.index);
    let mut writer = SnapshotWriter::to(out, &meta).map_err(io("streaming snapshot", from))?;
    let mut copies = BTreeSet::new();
    let mut referenced = BTreeMap::new();
    while let Some((key, value)) = reader.next_record().map_err(io("reading snapshot", from))? {
        if let Some(p) = kept_position(&key) {
            copies.insert(p);
        } else if let Some(r) = logged_in(&key, &value).map_err(|e| StoreError::Corrupt {
            key: from.display().to_string(),
            reason: e.to_string(),
        })? {
            if r.index <= upto {
                referenced.insert(position(&r), r);
            }
        }
        writer
            .record(&key, &value)
            .map_err(io("streaming snapshot", from))?;
    }
    let mut bodies = Reader { log, entry: None };
    let mut added = 0;
    for (p, r) in &referenced {
        if copies.contains(p) {
            continue;
        }
        writer
            .record(&kept_key(r), &codec::encode(&bodies.body(r)?))
            .map_err(io("streaming snapshot", from))?;
        added += 1;
    }
    let (_, out) = writer.end().map_err(io("streaming snapshot", from))?;
    Ok((added, out))
}

/// Writes in batches of this many keys: a copy of many bodies is never
/// held in memory at once.
const KEEP_BATCH: usize = 10_000;

fn copy(
    reader: &mut Reader<'_>,
    batch: &mut WriteBatch,
    kept: &mut Kept,
    tree: &StateTree,
    r: &BodyRef,
) -> Result<(), StoreError> {
    batch.put(kept_key(r), codec::encode(&reader.body(r)?));
    kept.copied += 1;
    if batch.len() >= KEEP_BATCH {
        tree.apply(std::mem::take(batch))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::apply::{Ctx, Effects};
    use crate::command::{Command, Proposal};
    use crate::queues::message::{NewMessage, Outgoing};
    use crate::queues::{CreateQueue, SendMessages};
    use crate::store::{Db, MemState};

    /// One entry, counting its reads.
    struct OneEntry {
        index: u64,
        payload: Payload,
        reads: AtomicUsize,
    }

    impl LoggedEntries for OneEntry {
        fn payload(&self, index: u64) -> Result<Option<Payload>, String> {
            self.reads.fetch_add(1, Ordering::Relaxed);
            Ok((index == self.index).then(|| self.payload.clone()))
        }

        /// The entry alone in its segment.
        fn spans(&self) -> Vec<Span> {
            vec![Span {
                first: self.index,
                last: self.index,
                bytes: self.payload.bytes().len() as u64,
            }]
        }

        fn pin(&self, _: BTreeSet<u64>) {}

        fn record_body_lost(&self, _: u64) -> Result<(), String> {
            Ok(())
        }

        fn hold_through(&self, _: u64) -> Hold {
            Box::new(())
        }
    }

    /// Queue `q` and ten messages of `body(i)` sent in entry 5, applied.
    fn sent_in_entry_5(body: impl Fn(usize) -> String) -> (MemState, OneEntry) {
        let message = |i| {
            NewMessage::validate(
                "m",
                false,
                Outgoing {
                    body: body(i),
                    ..Default::default()
                },
            )
            .unwrap()
        };
        let commands: Vec<Command> = vec![
            CreateQueue::new("q", &Default::default(), Default::default())
                .unwrap()
                .into(),
            SendMessages {
                queue: "q".into(),
                messages: (0..10).map(message).collect(),
            }
            .into(),
        ];
        let mut state = MemState::default();
        let ctx = Ctx::in_entry(1, 5);
        state
            .run(|txn| crate::machine::apply_entry(txn, &ctx, &commands, &mut Effects::default()))
            .unwrap();
        let log = OneEntry {
            index: 5,
            payload: Payload::new(Proposal {
                time_ms: 1,
                commands,
            }),
            reads: AtomicUsize::new(0),
        };
        (state, log)
    }

    /// A segment mostly made of live bodies is kept whole, and nothing is
    /// copied or read; once most of them are gone, the rest are copied and
    /// the segment is let go.
    #[test]
    fn a_dense_segment_is_kept_and_a_sparse_one_copied() {
        let (mut state, log) = sent_in_entry_5(|i| format!("{i}").repeat(1_000));
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), &Default::default()).unwrap();
        let tree = StateTree::for_test(&db, "t");
        let kept = keep(&state, &tree, &log, 5).unwrap();
        assert_eq!((kept.live, kept.copied), (10, 0));
        assert_eq!(kept.pinned, BTreeSet::from([5]));
        assert_eq!(log.reads.load(Ordering::Relaxed), 0);
        // Below the segment's end it is not purged yet: neither.
        let kept = keep(&state, &tree, &log, 4).unwrap();
        assert_eq!((kept.live, kept.copied, kept.pinned.len()), (0, 0, 0));
        // Eight of the ten received and deleted: two thousand bytes of
        // some ten thousand are live.
        let receive = Command::ReceiveMessages(crate::queues::ReceiveMessages {
            queue: "q".into(),
            request: crate::queues::delivery::ReceiveRequest {
                max: 8,
                visibility_timeout: Some(30),
                attempt_id: None,
            },
        });
        let out = state
            .run(|txn| {
                crate::machine::apply_entry(txn, &Ctx::at(2), &[receive], &mut Effects::default())
            })
            .unwrap();
        let Ok(crate::command::CommandOutput::ReceiveMessages(o)) = &out[0] else {
            panic!("{out:?}")
        };
        let delete = Command::DeleteMessages(crate::queues::DeleteMessages {
            queue: "q".into(),
            receipts: o.messages.iter().map(|m| m.receipt).collect(),
        });
        state
            .run(|txn| {
                crate::machine::apply_entry(txn, &Ctx::at(3), &[delete], &mut Effects::default())
            })
            .unwrap();
        let kept = keep(&state, &tree, &log, 5).unwrap();
        assert_eq!((kept.live, kept.copied, kept.pinned.len()), (2, 2, 0));
        assert_eq!(log.reads.load(Ordering::Relaxed), 1);
    }

    /// A batch of ten messages in one entry: kept with one read of the
    /// entry, not ten; kept again, nothing is read.
    #[test]
    fn an_entry_is_read_once_for_all_its_bodies() {
        let (state, log) = sent_in_entry_5(|i| format!("body {i}"));
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), &Default::default()).unwrap();
        let tree = StateTree::for_test(&db, "t");
        let kept = keep(&state, &tree, &log, 5).unwrap();
        assert_eq!((kept.live, kept.copied, kept.dropped), (10, 10, 0));
        assert_eq!(log.reads.load(Ordering::Relaxed), 1);
        let r = BodyRef {
            index: 5,
            command: 1,
            message: 7,
            bytes: 6,
        };
        let copy = tree.get(&kept_key(&r)).unwrap().unwrap();
        assert_eq!(codec::decode::<String>(b"k", &copy).unwrap(), "body 7");
        // Below the snapshot point only what is at or below it is kept.
        assert_eq!(keep(&state, &tree, &log, 4).unwrap().live, 0);
    }
}
