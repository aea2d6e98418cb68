//! Moving messages between queues: dead-lettering and redrive tasks.
//!
//! Commands are scoped to one queue, so a move takes three steps, each its
//! own command: the source puts the message in its outbox (a receive that
//! finds it over `maxReceiveCount`, or a move task step); the leader's
//! housekeeper proposes [`accept`] on the destination, which enqueues it
//! unless it already took that (source, sequence) pair; then [`acknowledge`]
//! on the source clears the outbox entry. A leader change between the steps
//! repeats a step, never loses or duplicates the message.

use serde::{Deserialize, Serialize};

use super::delivery::{insert, Open, Take};
use super::layout::{
    get, moved_in_exp_key, moved_in_key, tasks_key, Head, MoveStatus, MoveTask, Moving, Visibility,
};
use super::{delivery, fifo};
use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::store::{StateRead, Txn};

/// How long a destination remembers a message it accepted, ms.
pub const MOVED_MEMORY_MS: u64 = 60 * 60 * 1000;
/// Messages a task moves per step when it has no rate.
pub const STEP_MAX: usize = 100;
/// Move tasks remembered per queue.
pub const TASKS_KEPT: usize = 10;

/// Accepts messages moved from queue `from` (by id); returns how many were
/// new.
pub fn accept(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    from: u64,
    messages: &[(u64, Moving)],
    effects: &mut Effects,
) -> ApplyResult<u32> {
    // A reference into the log is valid only while its message lives where
    // the send put it: the mover reads moved bodies out of the log first.
    if let Some(i) = messages
        .iter()
        .position(|(_, m)| matches!(m.body.body, super::layout::BodyText::Logged(_)))
    {
        return Err(DomainError::invalid(
            format!("messages[{i}].body"),
            "a moved message carries its body, not a reference into the log",
        )
        .into());
    }
    let mut q = Open::new(txn, name)?;
    let mut accepted = 0;
    let mut groups = Vec::new();
    for (src_seq, m) in messages {
        let marker = moved_in_key(q.queue.id, from, *src_seq);
        if txn.get(&marker)?.is_some() {
            continue;
        }
        let expires = ctx.now_ms + MOVED_MEMORY_MS;
        txn.put_record(marker, &expires);
        txn.put(
            moved_in_exp_key(q.queue.id, expires, from, *src_seq),
            Vec::new(),
        );
        let seq = q.state.next_seq;
        q.state.next_seq += 1;
        let group_id = if q.queue.attributes.fifo {
            Some(m.group_id.clone().unwrap_or_else(|| "default".into()))
        } else {
            m.group_id.clone()
        };
        let head = Head {
            visibility: Visibility::Available,
            receive_count: m.receive_count,
            first_receive_ms: m.first_receive_ms,
            sent_ms: m.sent_ms,
            group_id: group_id.clone(),
        };
        insert(txn, &mut q, seq, head, m.body.clone());
        if let Some(g) = group_id.filter(|_| q.queue.attributes.fifo) {
            groups.push(g);
        }
        accepted += 1;
    }
    for g in groups {
        fifo::refresh(txn, &q.keys, &g)?;
    }
    effects.queue_ready(name, accepted as u64);
    q.close(txn);
    Ok(accepted)
}

/// Clears outbox entries of generation `gen` once their destination took
/// them.
pub fn acknowledge(txn: &mut Txn<'_>, name: &str, gen: u64, seqs: &[u64]) -> ApplyResult<()> {
    let mut q = Open::new(txn, name)?;
    if gen == q.keys.gen {
        for seq in seqs {
            let key = q.keys.out(*seq);
            if txn.get(&key)?.is_some() {
                txn.delete(key);
                crate::invariant::decrement(&mut q.state.leaving, "leaving");
            }
        }
    }
    q.close(txn);
    Ok(())
}

/// Reads a queue's move tasks, newest first.
pub fn tasks(state: &dyn crate::store::StateRead, qid: u64) -> ApplyResult<Vec<MoveTask>> {
    Ok(get::<Vec<MoveTask>>(state, &tasks_key(qid))?.unwrap_or_default())
}

/// Starts moving the messages of dead-letter queue `name` to `destination`
/// (or each message's source queue).
pub fn start_task(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    destination: Option<String>,
    rate: Option<u32>,
) -> ApplyResult<String> {
    let q = Open::new(txn, name)?;
    let mut list = tasks(txn, q.queue.id)?;
    if list.iter().any(|t| t.status == MoveStatus::Running) {
        return Err(DomainError::precondition(
            "UnsupportedOperation",
            format!("queue {name:?} already has a running message move task"),
        )
        .into());
    }
    let handle = task_handle(q.queue.id, ctx.now_ms, list.len() as u64);
    list.insert(
        0,
        MoveTask {
            handle: handle.clone(),
            destination,
            rate,
            status: MoveStatus::Running,
            moved: 0,
            to_move: q.state.available + q.state.delayed + q.state.in_flight,
            started_ms: ctx.now_ms,
            last_step_ms: ctx.now_ms,
            failure: None,
        },
    );
    list.truncate(TASKS_KEPT);
    txn.put_record(tasks_key(q.queue.id), &list);
    Ok(handle)
}

/// A task handle: the queue id it belongs to, then a unique part.
pub fn task_handle(qid: u64, started_ms: u64, n: u64) -> String {
    format!("{qid:x}-{started_ms:x}-{n:x}")
}

/// The queue id a task handle belongs to.
pub fn task_queue(handle: &str) -> Option<u64> {
    let (qid, rest) = handle.split_once('-')?;
    rest.contains('-')
        .then(|| u64::from_str_radix(qid, 16).ok())
        .flatten()
}

/// Cancels a running task; returns how many messages it moved.
pub fn cancel_task(txn: &mut Txn<'_>, name: &str, handle: &str) -> ApplyResult<u64> {
    let q = Open::new(txn, name)?;
    let mut list = tasks(txn, q.queue.id)?;
    let Some(task) = list.iter_mut().find(|t| t.handle == handle) else {
        return Err(DomainError::not_found(
            "ResourceNotFoundException",
            format!("task_handle: no message move task {handle:?}"),
        )
        .into());
    };
    if task.status != MoveStatus::Running {
        return Err(DomainError::precondition(
            "UnsupportedOperation",
            format!(
                "task_handle: the task is {}, not RUNNING",
                task.status.as_str()
            ),
        )
        .into());
    }
    task.status = MoveStatus::Cancelled;
    let moved = task.moved;
    txn.put_record(tasks_key(q.queue.id), &list);
    Ok(moved)
}

/// Outcome of a task step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// Messages moved to the outbox in this step.
    pub moved: u64,
    /// Whether the task still runs.
    pub running: bool,
}

/// Moves the next messages of the queue's running task into the outbox.
pub fn step_task(txn: &mut Txn<'_>, ctx: &Ctx, name: &str) -> ApplyResult<Step> {
    let mut q = Open::new(txn, name)?;
    let mut list = tasks(txn, q.queue.id)?;
    let Some(task) = list.iter_mut().find(|t| t.status == MoveStatus::Running) else {
        return Ok(Step {
            moved: 0,
            running: false,
        });
    };
    let allowed = match task.rate {
        None => STEP_MAX,
        Some(rate) => {
            let elapsed = ctx.now_ms.saturating_sub(task.last_step_ms);
            ((u64::from(rate) * elapsed) / 1000).min(STEP_MAX as u64) as usize
        }
    };
    let mut moved = 0;
    if allowed > 0 {
        delivery::promote_due(txn, ctx, &mut q, delivery::PROMOTE_ON_RECEIVE)?;
        let taken = delivery::take(
            txn,
            ctx,
            &mut q,
            allowed,
            &Take::Move {
                destination: task.destination.clone(),
            },
        )?;
        moved = taken.moved;
        task.moved += moved;
        task.last_step_ms = ctx.now_ms;
        if let Some(id) = taken.stranded.first() {
            task.status = MoveStatus::Failed;
            task.failure = Some(format!(
                "message {id} has no source queue to return to; give a destination"
            ));
        } else if task.moved >= task.to_move
            || q.state.available + q.state.in_flight + q.state.delayed == 0
        {
            // Done once it moved what was there, or nothing is left (messages
            // in flight or delayed come back and are moved then).
            task.status = MoveStatus::Completed;
        }
    }
    let running = task.status == MoveStatus::Running;
    txn.put_record(tasks_key(q.queue.id), &list);
    q.close(txn);
    Ok(Step { moved, running })
}
