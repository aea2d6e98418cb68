//! Keeping a copy of the message bodies a purge of the log would take.
//!
//! A message sent by SendMessages keeps its body in the log entry that sent
//! it, and the state holds a [`BodyRef`] (see `sluice_core::queues::bodies`).
//! The log is purged only below a snapshot. So before a snapshot at index
//! `S` is written, [`keep`] copies the body of every reference at or below
//! `S` that the state still holds into the state tree (under [`KEPT`],
//! outside every domain's keys), and drops the copies of references it no
//! longer holds. The snapshot carries those copies with the state, so a node
//! that installs it, or rebuilds from it after a crash, has them too. A
//! reference at or below `S` that the state no longer holds never comes
//! back: references are made only by the send in their own entry, and a move
//! between queues carries the body itself.
//!
//! `raft::bodies` reads the bodies back, from the log or from these copies.

use std::collections::BTreeSet;
use std::ops::Bound;

use sluice_core::queues::bodies::for_each_logged;
use sluice_core::queues::layout::BodyRef;

use super::payload::Payload;
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

fn kept_ref(key: &[u8]) -> Option<BodyRef> {
    let rest = key.strip_prefix(KEPT)?;
    if rest.len() != 16 {
        return None;
    }
    Some(BodyRef {
        index: u64::from_be_bytes(rest[..8].try_into().ok()?),
        command: u32::from_be_bytes(rest[8..12].try_into().ok()?),
        message: u32::from_be_bytes(rest[12..].try_into().ok()?),
    })
}

/// Committed log entries, read by index.
pub trait LoggedEntries: Send + Sync {
    /// The payload of committed entry `index`: `Ok(None)` when the log no
    /// longer holds it (purged), an error when it cannot be read.
    fn payload(&self, index: u64) -> Result<Option<Payload>, String>;
}

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
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Kept {
    /// References at or below the snapshot point the state holds.
    pub live: u64,
    /// Bodies copied out of the log this time.
    pub copied: u64,
    /// Copies dropped, their messages gone.
    pub dropped: u64,
}

/// Before a snapshot of `state` at log index `upto`: keeps in `tree` (the
/// engine's part of `state`, where the copies live) a copy of the body of
/// every reference at or below `upto` that `state` holds, read from `log`,
/// and drops the copies no reference needs any more. Runs while nothing
/// applies to `state`.
pub fn keep(
    state: &dyn StateRead,
    tree: &StateTree,
    log: &dyn LoggedEntries,
    upto: u64,
) -> Result<Kept, StoreError> {
    let mut live = BTreeSet::new();
    for_each_logged(state, |r| {
        if r.index <= upto {
            live.insert(r);
        }
    })
    .map_err(|e| match e {
        crate::error::ApplyError::Store(e) => e,
        other => StoreError::Corrupt {
            key: "queue bodies".into(),
            reason: other.to_string(),
        },
    })?;
    let mut kept = Kept {
        live: live.len() as u64,
        ..Kept::default()
    };
    let mut batch = WriteBatch::default();
    let mut have = BTreeSet::new();
    let end = crate::store::keys::prefix_end(KEPT);
    for kv in state.range(Bound::Included(KEPT.to_vec()), end, false) {
        let (key, _) = kv?;
        match kept_ref(&key) {
            Some(r) if live.contains(&r) => {
                have.insert(r);
            }
            Some(r) if r.index > upto => {}
            _ => {
                batch.delete(key);
                kept.dropped += 1;
            }
        }
    }
    // The references come in log order: each entry is read (from the
    // files, past the cache: decoded whole) once, not once per message.
    let mut entry: Option<(u64, Payload)> = None;
    for r in live.difference(&have) {
        let payload = match &entry {
            Some((index, payload)) if *index == r.index => payload,
            _ => {
                let payload = log
                    .payload(r.index)
                    .map_err(|reason| StoreError::Corrupt {
                        key: format!("log entry {}", r.index),
                        reason,
                    })?
                    .ok_or_else(|| StoreError::Corrupt {
                        key: format!("log entry {}", r.index),
                        reason: "purged while a message's body was still only there".into(),
                    })?;
                &entry.insert((r.index, payload)).1
            }
        };
        let body = body_in(payload, r).map_err(|reason| StoreError::Corrupt {
            key: format!("log entry {}", r.index),
            reason,
        })?;
        batch.put(kept_key(r), codec::encode(&body));
        kept.copied += 1;
    }
    tree.apply(batch)?;
    Ok(kept)
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
    }

    /// A batch of ten messages in one entry: kept with one read of the
    /// entry, not ten; kept again, nothing is read.
    #[test]
    fn an_entry_is_read_once_for_all_its_bodies() {
        let message = |i| {
            NewMessage::validate(
                "m",
                false,
                Outgoing {
                    body: format!("body {i}"),
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
        };
        let copy = tree.get(&kept_key(&r)).unwrap().unwrap();
        assert_eq!(codec::decode::<String>(b"k", &copy).unwrap(), "body 7");
        // Below the snapshot point only what is at or below it is kept.
        assert_eq!(keep(&state, &tree, &log, 4).unwrap().live, 0);
    }
}
