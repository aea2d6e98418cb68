//! Leases: which worker polls which part of a mapping's source.
//!
//! A queue mapping has one slot per poller (one per live worker, up to its
//! maximum concurrency). A stream mapping has one slot per shard it reads
//! and part of that shard (its parallelization factor): see
//! [`stream_slot`]. The leader's lease manager (`crate::leases`) decides
//! who holds each slot and commits it with `AssignLeases`; a slot that
//! changes hands gets a new epoch, drawn from a counter per mapping, so a
//! worker that lost a slot can be told apart from the one holding it: the
//! stream checkpoints are fenced by it ([`super::checkpoints`]). Workers
//! learn their leases from heartbeat answers.
//!
//! | key | value |
//! | --- | --- |
//! | `esmlease/{function}/{uuid}/{slot}` | [`Lease`] |
//! | `esmepoch/{function}/{uuid}` | the mapping's last epoch (`u64`) |

use serde::{Deserialize, Serialize};

use super::{mapping_key, slot_key};
use crate::error::{ApplyResult, DomainError};
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

/// Where leases are kept, by mapping and slot.
const LEASES: &str = "esmlease";
/// Where each mapping's last epoch is kept.
const EPOCHS: &str = "esmepoch";

/// Slots of one mapping, at most (queue maximum concurrency's cap, and
/// the most a stream mapping's shards and parallelization take at once).
pub const SLOTS_MAX: u32 = 1000;

/// A stream mapping's parallelization factor, at most (Lambda's 10): the
/// stride of [`stream_slot`].
pub const PARALLELIZATION_MAX: u32 = 10;

/// The slot of part `part` (below the parallelization factor) of shard
/// `shard`, in a stream mapping.
pub fn stream_slot(shard: u32, part: u32) -> u32 {
    shard * PARALLELIZATION_MAX + part
}

/// The shard and part of a stream mapping's slot.
pub fn stream_part(slot: u32) -> (u32, u32) {
    (slot / PARALLELIZATION_MAX, slot % PARALLELIZATION_MAX)
}

/// Who holds a slot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The mapping.
    pub uuid: String,
    /// Its function.
    pub function: String,
    /// The slot.
    pub slot: u32,
    /// The worker holding it.
    pub worker: String,
    /// Bumped whenever the slot changes hands.
    pub epoch: u64,
}

/// The lease of one slot.
pub fn load(
    state: &dyn StateRead,
    function: &str,
    uuid: &str,
    slot: u32,
) -> ApplyResult<Option<Lease>> {
    Ok(crate::store::record_at(
        state,
        &slot_key(LEASES, function, uuid, slot),
    )?)
}

/// A mapping's leases, by slot.
pub fn of_mapping(state: &dyn StateRead, function: &str, uuid: &str) -> ApplyResult<Vec<Lease>> {
    Ok(crate::store::records_under(
        state,
        &mapping_key(LEASES, function, uuid),
    )?)
}

/// Every lease.
pub fn all(state: &dyn StateRead) -> ApplyResult<Vec<Lease>> {
    Ok(crate::store::records_under(
        state,
        &Key::new(LEASES).build(),
    )?)
}

/// Applies `AssignLeases`: each `(slot, worker)` pair gives the slot to
/// the worker; slots not listed are dropped. A slot keeps its epoch while
/// its holder stays; a new holder gets the mapping's next epoch.
pub fn assign(
    txn: &mut Txn<'_>,
    function: &str,
    uuid: &str,
    slots: &[(u32, String)],
) -> ApplyResult<Vec<Lease>> {
    if slots.len() > SLOTS_MAX as usize {
        return Err(DomainError::invalid(
            "slots",
            format!("at most {SLOTS_MAX} slots, got {}", slots.len()),
        )
        .into());
    }
    let mut seen = std::collections::HashSet::new();
    if let Some((dup, _)) = slots.iter().find(|(s, _)| !seen.insert(*s)) {
        return Err(DomainError::invalid("slots", format!("slot {dup} is given twice")).into());
    }
    // A mapping deleted meanwhile gets no leases.
    let Some(m) = super::load(txn, uuid)?.filter(|m| m.function == function) else {
        return Err(DomainError::not_found(
            "ResourceNotFoundException",
            format!("event source mapping {uuid:?} does not exist"),
        )
        .into());
    };
    // An assignment computed before the parallelization factor changed
    // names parts that no longer exist: refused, so no stray part commits.
    if matches!(m.source, super::Source::Stream(_)) {
        let pf = m.settings.parallelization_factor.max(1);
        if let Some((slot, _)) = slots.iter().find(|(s, _)| stream_part(*s).1 >= pf) {
            return Err(DomainError::invalid(
                "slots",
                format!("slot {slot} names a part at or past the parallelization factor {pf}"),
            )
            .into());
        }
    }
    let old = of_mapping(txn, function, uuid)?;
    for l in old
        .iter()
        .filter(|l| !slots.iter().any(|(s, _)| *s == l.slot))
    {
        txn.delete(slot_key(LEASES, function, uuid, l.slot));
    }
    let ek = mapping_key(EPOCHS, function, uuid);
    let mut epoch: u64 = crate::store::record_at(txn, &ek)?.unwrap_or(0);
    let last = epoch;
    let mut out = Vec::with_capacity(slots.len());
    for (slot, worker) in slots {
        let lease = match old.iter().find(|l| l.slot == *slot) {
            Some(l) if &l.worker == worker => l.clone(),
            _ => {
                epoch += 1;
                Lease {
                    uuid: uuid.to_string(),
                    function: function.to_string(),
                    slot: *slot,
                    worker: worker.clone(),
                    epoch,
                }
            }
        };
        txn.put_record(slot_key(LEASES, function, uuid, *slot), &lease);
        out.push(lease);
    }
    if epoch != last {
        txn.put_record(ek, &epoch);
    }
    Ok(out)
}

/// Takes every slot of a mapping back (its partitioning changed): the
/// next holders get new epochs, so no poller of the old partitioning can
/// move a checkpoint.
pub fn revoke_all(txn: &mut Txn<'_>, function: &str, uuid: &str) -> ApplyResult<()> {
    txn.delete_prefixes(
        &[mapping_key(LEASES, function, uuid)],
        SLOTS_MAX as usize + 1,
    )?;
    Ok(())
}

/// Deletes a mapping's leases and epoch counter (with the mapping).
pub fn drop_mapping(txn: &mut Txn<'_>, function: &str, uuid: &str) -> ApplyResult<()> {
    revoke_all(txn, function, uuid)?;
    txn.delete(mapping_key(EPOCHS, function, uuid));
    Ok(())
}
