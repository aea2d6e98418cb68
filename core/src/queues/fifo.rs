//! FIFO queues: message groups and deduplication.
//!
//! Every message of a FIFO queue sits in its group's list (`grp/`) in send
//! order until deleted. A group is listed in `gready/` under its head message
//! while it can give one: no message of the group is in flight and the head
//! is not delayed. A receive takes groups oldest head first and, from each,
//! consecutive available messages in order; the group is then blocked until
//! none of its messages is in flight (deleted, or visible again, in which
//! case it is redelivered first).

use super::layout::{get, load_head, GroupState, Keys, Visibility};
use crate::error::ApplyResult;
use crate::store::keys::read_u64;
use crate::store::{StateRead, Txn};

/// Reads a group's state.
pub fn load_group(state: &dyn StateRead, keys: &Keys, group: &str) -> ApplyResult<GroupState> {
    Ok(get::<GroupState>(state, &keys.gstate(group))?.unwrap_or_default())
}

fn save_group(txn: &mut Txn<'_>, keys: &Keys, group: &str, gs: &GroupState, empty: bool) {
    if empty && gs.in_flight == 0 && gs.ready_head.is_none() {
        txn.delete(keys.gstate(group));
    } else {
        txn.put_record(keys.gstate(group), gs);
    }
}

/// The first message of a group, if any.
pub fn group_head(state: &dyn StateRead, keys: &Keys, group: &str) -> ApplyResult<Option<u64>> {
    let prefix = keys.grp_prefix(group);
    Ok(state
        .first_with_prefix(&prefix)?
        .and_then(|(k, _)| read_u64(&k, prefix.len())))
}

/// Up to `n` sequence numbers of a group's messages, in order.
pub fn group_messages(
    state: &dyn StateRead,
    keys: &Keys,
    group: &str,
    n: usize,
) -> ApplyResult<Vec<u64>> {
    let prefix = keys.grp_prefix(group);
    let mut out = Vec::new();
    for kv in state.scan_prefix(&prefix).take(n) {
        let (k, _) = kv?;
        if let Some(seq) = read_u64(&k, prefix.len()) {
            out.push(seq);
        }
    }
    Ok(out)
}

/// Changes a group's in-flight count by `delta`.
pub fn add_in_flight(txn: &mut Txn<'_>, keys: &Keys, group: &str, delta: i64) -> ApplyResult<()> {
    let mut gs = load_group(txn, keys, group)?;
    let n = i64::from(gs.in_flight) + delta;
    debug_assert!(
        n >= 0,
        "group {group:?}: in-flight count would go below zero"
    );
    gs.in_flight = n.max(0) as u32;
    save_group(txn, keys, group, &gs, false);
    Ok(())
}

/// Lists or unlists the group in `gready/` to match its state. Returns true
/// when the group can give a message now.
pub fn refresh(txn: &mut Txn<'_>, keys: &Keys, group: &str) -> ApplyResult<bool> {
    let mut gs = load_group(txn, keys, group)?;
    if let Some(h) = gs.ready_head.take() {
        txn.delete(keys.gready(h, group));
    }
    let head = group_head(txn, keys, group)?;
    let mut ready = false;
    if gs.in_flight == 0 {
        if let Some(seq) = head {
            let available =
                load_head(txn, keys, seq)?.is_some_and(|h| h.visibility == Visibility::Available);
            if available {
                txn.put(keys.gready(seq, group), Vec::new());
                gs.ready_head = Some(seq);
                ready = true;
            }
        }
    }
    save_group(txn, keys, group, &gs, head.is_none());
    Ok(ready)
}

/// Up to `n` groups that can give a message, oldest head first.
pub fn ready_groups(state: &dyn StateRead, keys: &Keys, n: usize) -> ApplyResult<Vec<String>> {
    let prefix = keys.gready_prefix();
    let mut out = Vec::new();
    for kv in state.scan_prefix(&prefix).take(n) {
        let (k, _) = kv?;
        if let Some((group, _)) = crate::store::keys::read_str(&k, prefix.len() + 8) {
            out.push(group.to_string());
        }
    }
    Ok(out)
}
