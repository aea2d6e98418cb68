//! Time-driven work the leader proposes on a schedule, in bounded steps:
//! making due messages visible, dropping messages past retention, forgetting
//! expired deduplication entries, receive attempts and arrival markers, and
//! collecting purged generations and deleted queues.
//!
//! [`needs`] tells the leader, from its local state, which queues have work;
//! the commands re-check everything against the state machine's clock.

use serde::{Deserialize, Serialize};

use super::delivery::{self, Open};
use super::layout::{self, gc_key, gc_prefix, load_head, Keys};
use crate::apply::{Ctx, Effects};
use crate::error::ApplyResult;
use crate::store::keys::{read_u64, Key};
use crate::store::{StateRead, Txn};

/// Items each kind of work handles per tick.
pub const TICK_LIMIT: usize = 1000;
/// Keys a collection step deletes.
pub const COLLECT_LIMIT: usize = 2000;

/// What a tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tick {
    /// Messages made visible.
    pub promoted: u64,
    /// Messages dropped past retention.
    pub expired: u64,
    /// Expired bookkeeping entries removed.
    pub forgotten: u64,
    /// Whether a limit was hit and more work is due now.
    pub more: bool,
}

/// Keys in `prefix` whose first component (a big-endian time) is due at
/// `now`, at most `limit`.
fn due_keys(
    state: &dyn StateRead,
    prefix: &[u8],
    now: u64,
    limit: usize,
) -> ApplyResult<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    for kv in state.scan_prefix(prefix).take(limit) {
        let (k, _) = kv?;
        if read_u64(&k, prefix.len()).unwrap_or(u64::MAX) > now {
            break;
        }
        out.push(k);
    }
    Ok(out)
}

/// One tick of a queue's time-driven work.
pub fn tick(txn: &mut Txn<'_>, ctx: &Ctx, name: &str, effects: &mut Effects) -> ApplyResult<Tick> {
    let mut q = Open::new(txn, name)?;
    let now = ctx.now_ms;
    let mut t = Tick::default();

    let promoted = delivery::promote_due(txn, ctx, &mut q, TICK_LIMIT)?;
    t.promoted = promoted as u64;
    t.more |= promoted == TICK_LIMIT;
    effects.queue_ready(name, t.promoted);

    // Retention, oldest first; a message moved here keeps its first send
    // time, so `sent/` (not the sequence) gives the order.
    let retention_ms = u64::from(q.queue.attributes.retention_period) * 1000;
    let prefix = q.keys.sent_prefix();
    let mut old = Vec::new();
    for kv in txn.scan_prefix(&prefix).take(TICK_LIMIT) {
        let (k, _) = kv?;
        let sent = read_u64(&k, prefix.len()).unwrap_or(u64::MAX);
        if sent.saturating_add(retention_ms) > now {
            break;
        }
        old.push(read_u64(&k, prefix.len() + 8).unwrap_or(0));
    }
    t.more |= old.len() == TICK_LIMIT;
    let mut groups = std::collections::BTreeSet::new();
    for seq in old {
        if let Some(head) = load_head(txn, &q.keys, seq)? {
            delivery::remove(txn, &mut q, seq, &head)?;
            if let Some(g) = head.group_id.filter(|_| q.queue.attributes.fifo) {
                groups.insert(g);
            }
            t.expired += 1;
        }
    }
    for g in groups {
        super::fifo::refresh(txn, &q.keys, &g)?;
    }

    // Deduplication entries and receive attempts past their window.
    for (exp_prefix, kind) in [
        (q.keys.dedup_exp_prefix(), 0),
        (q.keys.attempt_exp_prefix(), 1),
    ] {
        let keys = due_keys(txn, &exp_prefix, now, TICK_LIMIT)?;
        t.more |= keys.len() == TICK_LIMIT;
        for k in keys {
            if kind == 0 {
                let (scope, next) = crate::store::keys::read_str(&k, exp_prefix.len() + 8)
                    .map(|(s, n)| (s.to_string(), n))
                    .unwrap_or_default();
                let id = crate::store::keys::read_str(&k, next)
                    .map(|(s, _)| s.to_string())
                    .unwrap_or_default();
                let entry = q.keys.dedup(&scope, &id);
                // Only if the entry was not renewed by a later send.
                if let Some(d) = layout::get::<layout::Dedup>(txn, &entry)? {
                    if d.expires_ms <= now {
                        txn.delete(entry);
                    }
                }
            } else {
                let id = crate::store::keys::read_str(&k, exp_prefix.len() + 8)
                    .map(|(s, _)| s.to_string())
                    .unwrap_or_default();
                let entry = q.keys.attempt(&id);
                if let Some(a) = layout::get::<layout::Attempt>(txn, &entry)? {
                    if a.expires_ms <= now {
                        txn.delete(entry);
                    }
                }
            }
            txn.delete(k);
            t.forgotten += 1;
        }
    }

    // Arrival markers of moved messages.
    let exp_prefix = layout::moved_in_exp_prefix(q.queue.id);
    let keys = due_keys(txn, &exp_prefix, now, TICK_LIMIT)?;
    t.more |= keys.len() == TICK_LIMIT;
    for k in keys {
        let from = read_u64(&k, exp_prefix.len() + 8).unwrap_or(0);
        let seq = read_u64(&k, exp_prefix.len() + 16).unwrap_or(0);
        txn.delete(layout::moved_in_key(q.queue.id, from, seq));
        txn.delete(k);
        t.forgotten += 1;
    }

    q.close(txn);
    Ok(t)
}

/// A generation (or a whole deleted queue) waiting to be collected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Garbage {
    /// Queue id.
    pub qid: u64,
    /// Generation.
    pub gen: u64,
    /// The queue itself was deleted: its state and bookkeeping go too.
    pub whole_queue: bool,
}

/// Every pending collection.
pub fn garbage(state: &dyn StateRead, limit: usize) -> ApplyResult<Vec<Garbage>> {
    let prefix = gc_prefix();
    let mut out = Vec::new();
    for kv in state.scan_prefix(&prefix).take(limit) {
        let (k, v) = kv?;
        out.push(Garbage {
            qid: read_u64(&k, prefix.len()).unwrap_or(0),
            gen: read_u64(&k, prefix.len() + 8).unwrap_or(0),
            whole_queue: crate::store::codec::decode::<bool>(&k, &v)?,
        });
    }
    Ok(out)
}

/// Deletes up to [`COLLECT_LIMIT`] keys of a collected generation; returns
/// true when nothing is left.
pub fn collect(txn: &mut Txn<'_>, qid: u64, gen: u64) -> ApplyResult<bool> {
    let marker = gc_key(qid, gen);
    let Some(v) = txn.get(&marker)? else {
        return Ok(true);
    };
    let whole_queue: bool = crate::store::codec::decode(&marker, &v)?;
    let mut prefixes = vec![Keys { qid, gen }.root()];
    if whole_queue {
        prefixes.push(Key::new("movedin").u64(qid).build());
        prefixes.push(layout::moved_in_exp_prefix(qid));
    }
    if !txn.delete_prefixes(&prefixes, COLLECT_LIMIT)? {
        return Ok(false);
    }
    if whole_queue {
        txn.delete(layout::state_key(qid));
        txn.delete(layout::tasks_key(qid));
    }
    txn.delete(marker);
    Ok(true)
}

/// Work a queue has, as the leader sees it at `now_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Needs {
    /// The queue's id.
    pub qid: u64,
    /// Time-driven work: propose a tick.
    pub tick: bool,
    /// Outbox entries: (generation, sequence, destination, message).
    pub outbox: Vec<(u64, u64, layout::Outbox)>,
    /// A move task runs.
    pub move_task: bool,
}

/// Reads what a queue needs (a leader-side, read-only look).
pub fn needs(
    state: &dyn StateRead,
    name: &str,
    now_ms: u64,
    outbox_limit: usize,
) -> ApplyResult<Needs> {
    let q = Open::new(state, name)?;
    let mut n = Needs {
        qid: q.queue.id,
        ..Needs::default()
    };
    let first_time = |prefix: Vec<u8>| -> ApplyResult<Option<u64>> {
        Ok(state
            .first_with_prefix(&prefix)?
            .and_then(|(k, _)| read_u64(&k, prefix.len())))
    };
    let retention_ms = u64::from(q.queue.attributes.retention_period) * 1000;
    n.tick = first_time(q.keys.due_prefix())?.is_some_and(|t| t <= now_ms)
        || first_time(q.keys.sent_prefix())?.is_some_and(|t| t + retention_ms <= now_ms)
        || first_time(q.keys.dedup_exp_prefix())?.is_some_and(|t| t <= now_ms)
        || first_time(q.keys.attempt_exp_prefix())?.is_some_and(|t| t <= now_ms)
        || first_time(layout::moved_in_exp_prefix(q.queue.id))?.is_some_and(|t| t <= now_ms);
    let prefix = q.keys.out_prefix();
    for kv in state.scan_prefix(&prefix).take(outbox_limit) {
        let (k, v) = kv?;
        let seq = read_u64(&k, prefix.len()).unwrap_or(0);
        let entry: layout::Outbox = crate::store::codec::decode(&k, &v)?;
        n.outbox.push((q.keys.gen, seq, entry));
    }
    n.move_task = super::redrive::tasks(state, q.queue.id)?
        .iter()
        .any(|t| t.status == layout::MoveStatus::Running);
    Ok(n)
}
