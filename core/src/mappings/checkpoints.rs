//! Stream checkpoints: how far a stream mapping has processed each part of
//! each shard.
//!
//! A worker commits a checkpoint after each batch it is done with (the
//! function succeeded, or the records were sent to the on-failure
//! destination), naming the slot's lease epoch: a worker whose slot moved
//! on cannot move the checkpoint, so the new holder resumes exactly where
//! the last acknowledged batch ended. A checkpoint only moves forward, and
//! `finished` says the part was read to the end of its closed shard (the
//! shard's children may start).
//!
//! | key | value |
//! | --- | --- |
//! | `esmckpt/{function}/{uuid}/{slot}` | [`Checkpoint`] |
//! | `esmsince/{function}/{uuid}` | when the mapping was created, ms (`LATEST`'s point) |

use serde::{Deserialize, Serialize};

use super::leases::{self, stream_part, stream_slot, SLOTS_MAX};
use super::{mapping_key, slot_key};
use crate::error::{ApplyResult, DomainError};
use crate::store::{StateRead, Txn};

/// Where checkpoints are kept, by mapping and slot.
const CHECKPOINTS: &str = "esmckpt";
/// Where each stream mapping's creation time is kept.
const SINCE: &str = "esmsince";

/// How far one part of one shard has been processed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The slot (see [`leases::stream_slot`]).
    pub slot: u32,
    /// The last sequence number done with (records of other parts
    /// included): reading resumes after it.
    pub seq: u64,
    /// The part was read to the end of its closed shard.
    pub finished: bool,
}

impl Checkpoint {
    /// The shard it belongs to.
    pub fn shard(&self) -> u32 {
        stream_part(self.slot).0
    }
}

/// A checkpoint commit, as a worker sends it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Commit {
    /// The mapping's function.
    pub function: String,
    /// The mapping.
    pub uuid: String,
    /// The slot.
    pub slot: u32,
    /// The lease epoch the worker polls under.
    pub epoch: u64,
    /// The worker.
    pub worker: String,
    /// The last sequence number done with.
    pub seq: u64,
    /// Read to the end of the closed shard.
    pub finished: bool,
}

fn key(function: &str, uuid: &str, slot: u32) -> Vec<u8> {
    slot_key(CHECKPOINTS, function, uuid, slot)
}

/// A mapping's checkpoints, by slot.
pub fn of_mapping(
    state: &dyn StateRead,
    function: &str,
    uuid: &str,
) -> ApplyResult<Vec<Checkpoint>> {
    Ok(crate::store::records_under(
        state,
        &mapping_key(CHECKPOINTS, function, uuid),
    )?)
}

/// Records when a stream mapping was created (where `LATEST` starts).
pub fn set_since(txn: &mut Txn<'_>, function: &str, uuid: &str, now_ms: u64) {
    txn.put_record(mapping_key(SINCE, function, uuid), &now_ms);
}

/// When a stream mapping was created, ms (0 when unknown).
pub fn since(state: &dyn StateRead, function: &str, uuid: &str) -> ApplyResult<u64> {
    Ok(crate::store::record_at(state, &mapping_key(SINCE, function, uuid))?.unwrap_or(0))
}

/// Applies `CommitCheckpoint`: refused unless the worker holds the slot
/// under that epoch, or when it would move the checkpoint back.
pub fn commit(txn: &mut Txn<'_>, c: &Commit) -> ApplyResult<Checkpoint> {
    let lease = leases::load(txn, &c.function, &c.uuid, c.slot)?;
    match lease {
        Some(l) if l.epoch == c.epoch && l.worker == c.worker => {}
        _ => {
            return Err(DomainError::precondition(
                "LeaseLostException",
                format!(
                    "worker {:?} does not hold slot {} of event source mapping {:?} under epoch {}",
                    c.worker, c.slot, c.uuid, c.epoch
                ),
            )
            .into())
        }
    }
    let k = key(&c.function, &c.uuid, c.slot);
    if let Some(old) = crate::store::record_at::<Checkpoint>(txn, &k)? {
        if c.seq < old.seq || (old.finished && !c.finished) {
            return Err(DomainError::invalid(
                "sequence_number",
                format!(
                    "checkpoints only move forward: slot {} is at {}{}, got {}",
                    c.slot,
                    old.seq,
                    if old.finished { " (finished)" } else { "" },
                    c.seq
                ),
            )
            .into());
        }
    }
    let cp = Checkpoint {
        slot: c.slot,
        seq: c.seq,
        finished: c.finished,
    };
    txn.put_record(k, &cp);
    Ok(cp)
}

/// Re-partitions a mapping's checkpoints when its parallelization factor
/// changes from `old` to `new`: every new part of a shard starts from the
/// least advanced old part (records in between are processed again: at
/// least once), and is finished only when every old part was.
pub fn repartition(
    txn: &mut Txn<'_>,
    function: &str,
    uuid: &str,
    old: u32,
    new: u32,
) -> ApplyResult<()> {
    let all = of_mapping(txn, function, uuid)?;
    let mut shards: std::collections::BTreeMap<u32, Vec<Checkpoint>> = Default::default();
    for cp in all {
        txn.delete(key(function, uuid, cp.slot));
        shards.entry(cp.shard()).or_default().push(cp);
    }
    for (shard, parts) in shards {
        // A part without a checkpoint has processed nothing: its shard
        // starts over from the mapping's starting position. Only the old
        // parts count.
        let parts: Vec<Checkpoint> = parts
            .into_iter()
            .filter(|c| stream_part(c.slot).1 < old)
            .collect();
        if parts.len() < old as usize {
            continue;
        }
        let seq = parts.iter().map(|c| c.seq).min().unwrap_or(0);
        let finished = parts.iter().all(|c| c.finished);
        for part in 0..new {
            let slot = stream_slot(shard, part);
            txn.put_record(
                key(function, uuid, slot),
                &Checkpoint {
                    slot,
                    seq,
                    finished,
                },
            );
        }
    }
    leases::revoke_all(txn, function, uuid)
}

/// Deletes a mapping's checkpoints (with the mapping).
pub fn drop_mapping(txn: &mut Txn<'_>, function: &str, uuid: &str) -> ApplyResult<()> {
    // Shards are bounded by the slot cap only while open; closed ones may
    // add more: delete generously, in one go.
    txn.delete_prefixes(
        &[mapping_key(CHECKPOINTS, function, uuid)],
        20 * SLOTS_MAX as usize,
    )?;
    txn.delete(mapping_key(SINCE, function, uuid));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::mappings::{settle, NewMapping, SettingsChange, Source};
    use crate::streams::CreateStream;
    use crate::testing::{new_function, World};

    fn world() -> World {
        let mut w = World::new();
        w.run(new_function("f")).unwrap();
        let s = CreateStream::new("s", 2, None, None, None, None, Default::default()).unwrap();
        w.run(s).unwrap();
        let source = Source::Stream("s".into());
        let change = SettingsChange {
            starting_position: Some("TRIM_HORIZON".into()),
            ..Default::default()
        };
        w.run(NewMapping {
            uuid: "m".into(),
            function: "f".into(),
            settings: settle(None, &source, false, &change).unwrap(),
            source,
        })
        .unwrap();
        w
    }

    fn assign(w: &mut World, slots: &[(u32, &str)]) {
        w.run(crate::mappings::AssignLeases {
            function: "f".into(),
            uuid: "m".into(),
            slots: slots.iter().map(|(s, n)| (*s, n.to_string())).collect(),
        })
        .unwrap();
    }

    fn epoch(w: &World, slot: u32) -> u64 {
        {
            let l = w.ask(crate::mappings::ListLeases).unwrap();
            l.iter().find(|l| l.slot == slot).unwrap().epoch
        }
    }

    fn commit(
        w: &mut World,
        worker: &str,
        slot: u32,
        epoch: u64,
        seq: u64,
        finished: bool,
    ) -> Result<(), String> {
        w.run(Commit {
            function: "f".into(),
            uuid: "m".into(),
            slot,
            epoch,
            worker: worker.into(),
            seq,
            finished,
        })
        .map(|_| ())
        .map_err(|e| e.code)
    }

    fn checkpoints(w: &World) -> Vec<(u32, u64, bool)> {
        {
            let (c, _) = w
                .ask(crate::mappings::MappingCheckpoints {
                    function: "f".into(),
                    uuid: "m".into(),
                })
                .unwrap();
            c.iter().map(|c| (c.slot, c.seq, c.finished)).collect()
        }
    }

    #[test]
    fn only_the_current_holder_moves_a_checkpoint_and_only_forward() {
        let mut w = world();
        assign(&mut w, &[(0, "a"), (10, "b")]);
        let e0 = epoch(&w, 0);
        commit(&mut w, "a", 0, e0, 5, false).unwrap();
        // Another worker, or the holder under another epoch: refused.
        assert_eq!(
            commit(&mut w, "b", 0, e0, 6, false).unwrap_err(),
            "LeaseLostException"
        );
        assert_eq!(
            commit(&mut w, "a", 0, e0 + 1, 6, false).unwrap_err(),
            "LeaseLostException"
        );
        // Backwards: refused; the same point again: accepted (a retried
        // commit).
        assert_eq!(
            commit(&mut w, "a", 0, e0, 4, false).unwrap_err(),
            "InvalidParameterValue"
        );
        commit(&mut w, "a", 0, e0, 5, false).unwrap();
        // The slot moves to c: a is fenced off; c goes on from 5.
        assign(&mut w, &[(0, "c"), (10, "b")]);
        let e1 = epoch(&w, 0);
        assert!(e1 > e0);
        assert_eq!(
            commit(&mut w, "a", 0, e0, 9, false).unwrap_err(),
            "LeaseLostException"
        );
        commit(&mut w, "c", 0, e1, 9, true).unwrap();
        assert!(
            commit(&mut w, "c", 0, e1, 10, false).is_err(),
            "a finished part stays finished"
        );
        // Back to a: a new epoch again, never an old one.
        assign(&mut w, &[(0, "a")]);
        assert!(epoch(&w, 0) > e1);
        assert_eq!(checkpoints(&w), [(0, 9, true)]);
    }

    #[test]
    fn a_new_parallelization_restarts_parts_from_the_least_advanced_and_revokes_leases() {
        let mut w = world();
        let m = w
            .ask(crate::mappings::GetMapping { uuid: "m".into() })
            .unwrap();
        let change = |pf| SettingsChange {
            parallelization_factor: Some(pf),
            ..Default::default()
        };
        let two = settle(Some(&m.settings), &m.source, false, &change(2)).unwrap();
        let update = |w: &mut World, settings, expected_ms| {
            w.run(crate::mappings::UpdateEventSourceMapping {
                function: "f".into(),
                uuid: "m".into(),
                expected_ms,
                settings,
            })
            .unwrap()
        };
        update(&mut w, two.clone(), m.modified_ms);
        assign(&mut w, &[(0, "a"), (1, "b"), (10, "a")]);
        let (e0, e1) = (epoch(&w, 0), epoch(&w, 1));
        commit(&mut w, "a", 0, e0, 7, false).unwrap();
        commit(&mut w, "b", 1, e1, 3, false).unwrap();
        let m = w
            .ask(crate::mappings::GetMapping { uuid: "m".into() })
            .unwrap();
        let three = settle(Some(&two), &m.source, false, &change(3)).unwrap();
        update(&mut w, three, m.modified_ms);
        // Shard 0's parts all start after 3; shard 1 had no complete set
        // of checkpoints and starts over.
        assert_eq!(
            checkpoints(&w),
            [(0, 3, false), (1, 3, false), (2, 3, false)]
        );
        {
            let l = w.ask(crate::mappings::ListLeases).unwrap();
            assert!(l.is_empty(), "{l:?}")
        }
        assert_eq!(
            commit(&mut w, "a", 0, e0, 8, false).unwrap_err(),
            "LeaseLostException"
        );
        // An assignment computed for another factor is refused.
        let stale = w.run(crate::mappings::AssignLeases {
            function: "f".into(),
            uuid: "m".into(),
            slots: vec![(3, "a".into())],
        });
        assert_eq!(stale.unwrap_err().field.as_deref(), Some("slots"));
    }
}
