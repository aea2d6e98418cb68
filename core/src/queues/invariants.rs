//! What must hold between a queue's counters, its messages and its indexes
//! (the table in [`super::layout`]), for the current generation of every
//! queue.
//!
//! * the counters `available`, `delayed` and `in_flight` equal the number of
//!   message heads in each visibility, `leaving` the number of outbox
//!   entries;
//! * every head has its body and its `sent/` entry, and no sequence number
//!   reaches `next_seq`;
//! * a standard queue lists exactly its available messages in `ready/`;
//!   every hidden message has the `due/` timer it waits for;
//! * a FIFO queue lists exactly its messages in their groups' `grp/`; a
//!   group's `in_flight` equals its messages in flight; a group is listed in
//!   `gready/` exactly under its head, and exactly when nothing of it is in
//!   flight and its head is available.

use std::collections::{BTreeMap, BTreeSet};

use super::layout::{load_state, GroupState, Keys, StoredHead, Visibility};
use crate::invariant::{ensure, numbers_under, CheckError, Violation};
use crate::store::keys::{read_str, read_u64};
use crate::store::{codec, StateRead};

const DOMAIN: &str = "queues";

/// A violation unless two sets of sequence numbers are equal, naming a
/// few of each side's extras.
fn same(
    name: &str,
    a: &BTreeSet<u64>,
    a_is: &str,
    b: &BTreeSet<u64>,
    b_is: &str,
) -> Result<(), Violation> {
    ensure(a == b, DOMAIN, || {
        format!(
            "queue {name:?}: {a_is} {:?}; {b_is} {:?}",
            a.difference(b).take(5).collect::<Vec<_>>(),
            b.difference(a).take(5).collect::<Vec<_>>()
        )
    })
}

fn seqs_under(state: &dyn StateRead, prefix: &[u8]) -> Result<BTreeSet<u64>, CheckError> {
    Ok(numbers_under(state, prefix).collect::<Result<_, _>>()?)
}

/// Checks every queue.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    for name in super::all_names(state)? {
        let Some(queue) = super::load(state, &name)? else {
            continue;
        };
        check_queue(state, &name, queue.id, queue.attributes.fifo)?;
    }
    Ok(())
}

/// Checks one queue, unless it holds more than `max_messages` (a check
/// reads all of them; the tests' whole-state checks cover big queues).
pub fn check_one(state: &dyn StateRead, name: &str, max_messages: u64) -> Result<(), CheckError> {
    let Some(queue) = super::load(state, name)? else {
        return Ok(());
    };
    let qs = load_state(state, queue.id)?;
    if qs.available + qs.delayed + qs.in_flight + qs.leaving > max_messages {
        return Ok(());
    }
    check_queue(state, name, queue.id, queue.attributes.fifo)
}

fn check_queue(state: &dyn StateRead, name: &str, qid: u64, fifo: bool) -> Result<(), CheckError> {
    let qs = load_state(state, qid)?;
    let k = Keys { qid, gen: qs.gen };
    let v = |what: String| Violation {
        domain: DOMAIN,
        what: format!("queue {name:?}: {what}"),
    };

    let head_prefix = Keys::head(&k, 0);
    let head_prefix = &head_prefix[..head_prefix.len() - 8];
    let mut heads = BTreeMap::new();
    for kv in state.scan_prefix(head_prefix) {
        let (key, bytes) = kv?;
        let seq = read_u64(&key, head_prefix.len()).unwrap_or(u64::MAX);
        let StoredHead::V1(h) = codec::decode(&key, &bytes)?;
        heads.insert(seq, h);
    }
    let count = |f: &dyn Fn(&Visibility) -> bool| {
        heads.values().filter(|h| f(&h.visibility)).count() as u64
    };
    let available = count(&|v| *v == Visibility::Available);
    let delayed = count(&|v| matches!(v, Visibility::Delayed(_)));
    let in_flight = count(&|v| matches!(v, Visibility::InFlight(_)));
    let leaving = seqs_under(state, &k.out_prefix())?.len() as u64;
    ensure(
        (qs.available, qs.delayed, qs.in_flight, qs.leaving)
            == (available, delayed, in_flight, leaving),
        DOMAIN,
        || {
            format!(
                "queue {name:?}: counters (available, delayed, in flight, leaving) say {:?}, the messages {:?}",
                (qs.available, qs.delayed, qs.in_flight, qs.leaving),
                (available, delayed, in_flight, leaving)
            )
        },
    )?;

    let body_prefix = k.body(0);
    let bodies = seqs_under(state, &body_prefix[..body_prefix.len() - 8])?;
    let heads_seqs: BTreeSet<u64> = heads.keys().copied().collect();
    same(
        name,
        &heads_seqs,
        "messages with a head but no body",
        &bodies,
        "with a body but no head",
    )?;
    if let Some(&last) = heads_seqs.last() {
        ensure(last < qs.next_seq, DOMAIN, || {
            format!(
                "queue {name:?}: message {last} is not below next_seq {}",
                qs.next_seq
            )
        })?;
    }
    for (&seq, h) in &heads {
        if state.get(&k.sent(h.sent_ms, seq))?.is_none() {
            return Err(v(format!("message {seq} has no sent/ entry")).into());
        }
        if let Visibility::Delayed(at) | Visibility::InFlight(at) = h.visibility {
            if state.get(&k.due(at, seq))?.is_none() {
                return Err(v(format!("hidden message {seq} has no due/ timer for {at}")).into());
            }
        }
    }
    let sent = state.scan_prefix(&k.sent_prefix()).count();
    ensure(sent == heads.len(), DOMAIN, || {
        format!(
            "queue {name:?}: {sent} sent/ entries for {} messages",
            heads.len()
        )
    })?;

    if !fifo {
        let ready = seqs_under(state, &k.ready_prefix())?;
        let want: BTreeSet<u64> = heads
            .iter()
            .filter(|(_, h)| h.visibility == Visibility::Available)
            .map(|(s, _)| *s)
            .collect();
        same(
            name,
            &ready,
            "ready/ lists messages not available",
            &want,
            "and misses available ones",
        )?;
        return Ok(());
    }

    // FIFO: groups.
    let mut groups: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (&seq, h) in &heads {
        groups
            .entry(h.group_id.clone().unwrap_or_default())
            .or_default()
            .push(seq);
    }
    let grp_prefix = k.grp_prefix("");
    let grp_root = &grp_prefix[..grp_prefix.len() - 1];
    let mut listed: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for kv in state.scan_prefix(grp_root) {
        let (key, _) = kv?;
        let Some((group, end)) = read_str(&key, grp_root.len()) else {
            return Err(v("a grp/ key does not read back".into()).into());
        };
        listed
            .entry(group.to_string())
            .or_default()
            .push(read_u64(&key, end).unwrap_or(u64::MAX));
    }
    ensure(listed == groups, DOMAIN, || {
        format!("queue {name:?}: grp/ lists {listed:?}, the messages' groups are {groups:?}")
    })?;
    let gready_prefix = k.gready_prefix();
    let mut gready: BTreeMap<String, u64> = BTreeMap::new();
    for kv in state.scan_prefix(&gready_prefix) {
        let (key, _) = kv?;
        let head = read_u64(&key, gready_prefix.len()).unwrap_or(u64::MAX);
        let Some((group, _)) = read_str(&key, gready_prefix.len() + 8) else {
            return Err(v("a gready/ key does not read back".into()).into());
        };
        if gready.insert(group.to_string(), head).is_some() {
            return Err(v(format!("group {group:?} is listed in gready/ twice")).into());
        }
    }
    for (group, seqs) in &groups {
        let gs: GroupState = super::layout::get(state, &k.gstate(group))?.unwrap_or_default();
        let flying = seqs
            .iter()
            .filter(|s| matches!(heads[s].visibility, Visibility::InFlight(_)))
            .count() as u32;
        ensure(gs.in_flight == flying, DOMAIN, || {
            format!(
                "queue {name:?}: group {group:?} counts {} in flight, its messages {flying}",
                gs.in_flight
            )
        })?;
        let head = seqs[0];
        let ready = flying == 0 && heads[&head].visibility == Visibility::Available;
        let want = ready.then_some(head);
        ensure(
            gs.ready_head == want && gready.get(group).copied() == want,
            DOMAIN,
            || {
                format!(
                "queue {name:?}: group {group:?} with head {head} ({:?}, {flying} in flight) should be listed under {want:?}; its state says {:?}, gready/ {:?}",
                heads[&head].visibility,
                gs.ready_head,
                gready.get(group)
            )
            },
        )?;
    }
    for group in gready.keys() {
        ensure(groups.contains_key(group), DOMAIN, || {
            format!("queue {name:?}: empty group {group:?} is listed in gready/")
        })?;
    }
    Ok(())
}
