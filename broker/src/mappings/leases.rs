//! Leases: which worker polls which part of a mapping's source.
//!
//! A queue mapping has one slot per poller (one per live worker, up to its
//! maximum concurrency). The leader's lease manager (`crate::leases`)
//! decides who holds each slot and commits it with `AssignLeases`; a slot
//! that changes hands gets a new epoch, so a worker that lost a slot can be
//! told apart from the one holding it (the stream checkpoints will be
//! fenced by it). Workers learn their leases from heartbeat answers.
//!
//! | key | value |
//! | --- | --- |
//! | `esmlease/{function}/{uuid}/{slot}` | [`Lease`] |

use serde::{Deserialize, Serialize};

use crate::error::{ApplyResult, DomainError};
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

/// Slots of one mapping, at most (queue maximum concurrency's cap).
pub const SLOTS_MAX: u32 = 1000;

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

fn prefix(function: &str, uuid: &str) -> Vec<u8> {
    Key::new("esmlease").str(function).str(uuid).build()
}

fn key(function: &str, uuid: &str, slot: u32) -> Vec<u8> {
    Key::new("esmlease")
        .str(function)
        .str(uuid)
        .u64(u64::from(slot))
        .build()
}

/// The key space deleted with a function.
pub const SPACE: &str = "esmlease";

/// A mapping's leases, by slot.
pub fn of_mapping(state: &dyn StateRead, function: &str, uuid: &str) -> ApplyResult<Vec<Lease>> {
    Ok(crate::store::records_under(state, &prefix(function, uuid))?)
}

/// Every lease.
pub fn all(state: &dyn StateRead) -> ApplyResult<Vec<Lease>> {
    Ok(crate::store::records_under(
        state,
        &Key::new("esmlease").build(),
    )?)
}

/// Applies `AssignLeases`: slot `i` goes to `workers[i]`; slots past the
/// list are dropped. A slot keeps its epoch while its holder stays.
pub fn assign(
    txn: &mut Txn<'_>,
    function: &str,
    uuid: &str,
    workers: &[String],
) -> ApplyResult<Vec<Lease>> {
    if workers.len() > SLOTS_MAX as usize {
        return Err(DomainError::invalid(
            "workers",
            format!("at most {SLOTS_MAX} slots, got {}", workers.len()),
        )
        .into());
    }
    // A mapping deleted meanwhile gets no leases.
    if super::load(txn, uuid)?.is_none_or(|m| m.function != function) {
        return Err(DomainError::not_found(
            "ResourceNotFoundException",
            format!("event source mapping {uuid:?} does not exist"),
        )
        .into());
    }
    let old = of_mapping(txn, function, uuid)?;
    for l in old.iter().filter(|l| l.slot as usize >= workers.len()) {
        txn.delete(key(function, uuid, l.slot));
    }
    let mut out = Vec::with_capacity(workers.len());
    for (slot, worker) in workers.iter().enumerate() {
        let slot = slot as u32;
        let lease = match old.iter().find(|l| l.slot == slot) {
            Some(l) if &l.worker == worker => l.clone(),
            Some(l) => Lease {
                worker: worker.clone(),
                epoch: l.epoch + 1,
                ..l.clone()
            },
            None => Lease {
                uuid: uuid.to_string(),
                function: function.to_string(),
                slot,
                worker: worker.clone(),
                epoch: 1,
            },
        };
        txn.put_record(key(function, uuid, slot), &lease);
        out.push(lease);
    }
    Ok(out)
}

/// Deletes a mapping's leases (with the mapping).
pub fn drop_mapping(txn: &mut Txn<'_>, function: &str, uuid: &str) -> ApplyResult<()> {
    txn.delete_prefixes(&[prefix(function, uuid)], SLOTS_MAX as usize + 1)?;
    Ok(())
}
