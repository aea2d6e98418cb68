//! The deterministic core of the state machine: one command in, one result
//! out, over a store.
//!
//! [`apply`] and [`query`] are what every replica runs for each log entry and
//! read. They read no clock (the time is in [`Ctx`]), draw no random numbers
//! and do no I/O other than through the store they are given, so every node
//! that applies the same log reaches the same state. What a command means for
//! the world outside the state (a queue now has messages for waiting
//! receivers) it reports as [`Effect`](crate::apply::Effect)s, which the
//! caller acts on after the commit. The Raft plumbing around them lives in
//! the broker's `raft::state_machine`.

use crate::apply::{Ctx, Effects};
use crate::command::{Command, CommandOutput, Query, QueryOutput};
use crate::error::{ApplyError, ApplyResult, DomainError};
use crate::functions::{self, DeleteFunction};
use crate::invariant::CheckError;
use crate::operation::{Operation, Resource};
use crate::queues::{self};
use crate::store::{StateRead, StoreError, Txn};
use crate::streams::{self};
use crate::tags::{retag, Tag, Tagged};
use crate::topics::{self};

/// Applies the commands of one log entry on top of `batch`, the overlay of
/// the entries applied before it in the same batch. Each command gets its
/// own transaction: a rejected one leaves no trace (writes or effects), the
/// others still apply. A store failure stops the batch: it is local, not a
/// result every replica would share.
///
/// In debug builds it then checks the invariants of what the entry touched
/// ([`check_touched`]) and panics on a violation: every node, cluster test
/// and scenario test built with debug assertions checks itself as it goes.
///
/// `ctx.log`, when set, names where `commands[0]` sits in the log (its
/// entry, and its position there: 0 for a whole entry); each command is
/// applied with its own position.
pub fn apply_entry(
    batch: &mut Txn<'_>,
    ctx: &Ctx,
    commands: &[Command],
    effects: &mut Effects,
) -> Result<Vec<Result<CommandOutput, DomainError>>, StoreError> {
    let mut results = Vec::with_capacity(commands.len());
    for (position, command) in commands.iter().enumerate() {
        let mut txn = Txn::new(&*batch);
        let before = effects.len();
        let ctx = Ctx {
            log: ctx.log.map(|l| crate::apply::LogPosition {
                index: l.index,
                command: l.command + position as u32,
            }),
            ..*ctx
        };
        match apply(&mut txn, &ctx, command, effects) {
            Ok(out) => {
                let writes = txn.into_writes();
                batch.merge(writes);
                results.push(Ok(out));
            }
            Err(ApplyError::Rejected(e)) => {
                effects.truncate(before);
                results.push(Err(e));
            }
            Err(ApplyError::Store(e)) => return Err(e),
        }
    }
    #[cfg(debug_assertions)]
    if let Err(e) = check_touched(&*batch, commands.iter().map(Command::resource)) {
        panic!("after an entry of {} commands: {e}", commands.len());
    }
    Ok(results)
}

/// The most messages (of a queue) or records (of a stream) the check after
/// each entry reads; a bigger resource is left to the whole-state
/// [`check`] the tests run, so that a deep backlog does not make a debug
/// build's apply quadratic.
pub const TOUCHED_CHECK_MAX: u64 = 2_000;

/// Checks the invariants of the resources `touched` names (see [`check`]):
/// a queue, stream or topic on its own (up to [`TOUCHED_CHECK_MAX`]), the
/// function, mapping, worker and IAM domains whole (they are small). The
/// collection of a deleted resource's data has nothing left to check.
pub fn check_touched<'a>(
    state: &dyn StateRead,
    touched: impl IntoIterator<Item = Resource<'a>>,
) -> Result<(), CheckError> {
    let touched: std::collections::BTreeSet<Resource<'a>> = touched.into_iter().collect();
    for r in touched {
        match r {
            Resource::Queue(name) => queues::invariants::check_one(state, name, TOUCHED_CHECK_MAX)?,
            Resource::Stream(name) => {
                streams::invariants::check_one(state, name, TOUCHED_CHECK_MAX)?
            }
            Resource::Topic(name) => topics::invariants::check_one(state, name)?,
            Resource::Function(_) => {
                functions::invariants::check(state)?;
                crate::mappings::invariants::check(state)?;
                crate::events::invariants::check(state)?;
            }
            Resource::Bus(name) => crate::events::invariants::check_one(state, name)?,
            Resource::Archives => crate::events::invariants::check_archives(state)?,
            Resource::Schedules => {
                crate::schedules::invariants::check(state)?;
                crate::events::invariants::check_retries(state)?;
            }
            Resource::Retries => crate::events::invariants::check_retries(state)?,
            Resource::Workers => crate::workers::check(state)?,
            Resource::Iam => crate::iam::check(state)?,
            Resource::QueueData(_) | Resource::StreamData(_) | Resource::TopicData(_) => {}
        }
    }
    Ok(())
}

/// Checks every domain's invariants over `state` (see [`crate::invariant`]).
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    queues::invariants::check(state)?;
    streams::invariants::check(state)?;
    topics::invariants::check(state)?;
    functions::invariants::check(state)?;
    crate::mappings::invariants::check(state)?;
    crate::workers::check(state)?;
    crate::iam::check(state)?;
    crate::schedules::invariants::check(state)?;
    crate::events::invariants::check_retries(state)?;
    Ok(())
}

/// Applies one command. Writes go to `txn`; on error the caller discards them
/// (and the effects recorded meanwhile).
pub fn apply(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    command: &Command,
    effects: &mut Effects,
) -> ApplyResult<CommandOutput> {
    command.apply(txn, ctx, effects)
}

// The commands that span domains are applied here, above the domains, so
// that no domain module imports another's writes.

impl Operation for DeleteFunction {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        functions::delete(txn, &self.name)?;
        // Its event source mappings go with it (at most 100).
        crate::mappings::delete_of_function(txn, &self.name)
    }
}

impl Operation for Tag {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        match &self.resource {
            Tagged::Queue(name) => retag(txn, name, &self.change, queues::require, queues::save),
            Tagged::Topic(name) => retag(txn, name, &self.change, topics::require, topics::save),
            Tagged::Stream(name) => retag(txn, name, &self.change, streams::require, streams::save),
        }
    }
}

/// Answers one query from `state`.
pub fn query(state: &dyn StateRead, query: &Query) -> ApplyResult<QueryOutput> {
    query.read(state)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use crate::queues::layout::{load_state, state_key, StoredQueueState};
    use crate::store::{codec, MemState};

    fn entry(state: &mut MemState, commands: &[Command]) {
        let mut effects = Effects::default();
        let mut txn = Txn::new(&*state);
        apply_entry(&mut txn, &Ctx::at(1_000), commands, &mut effects).unwrap();
        let batch = txn.into_batch();
        state.apply(batch);
    }

    fn one_message(queue: &str) -> Command {
        let m = crate::queues::message::NewMessage::validate(
            "message",
            false,
            crate::queues::message::Outgoing {
                body: "m".into(),
                ..Default::default()
            },
        )
        .unwrap();
        queues::SendMessages {
            queue: queue.into(),
            messages: vec![m],
        }
        .into()
    }

    /// A counter broken between two entries is found by the next entry
    /// that touches its queue: in debug builds the apply checks itself.
    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "counters (available, delayed, in flight, leaving)")]
    fn an_entry_touching_a_broken_queue_fails_loudly() {
        let mut state = MemState::default();
        let create = queues::CreateQueue::new("q", &Default::default(), Default::default())
            .unwrap()
            .into();
        entry(&mut state, &[create, one_message("q")]);
        let q = queues::load(&state, "q").unwrap().unwrap();
        let mut st = load_state(&state, q.id).unwrap();
        st.available += 1;
        state.insert(state_key(q.id), codec::encode(&StoredQueueState::V1(st)));
        entry(&mut state, &[one_message("q")]);
    }

    /// What the entry did not touch is not read: a broken queue does not
    /// stop another queue's commands.
    #[test]
    fn the_check_reads_only_what_the_entry_touched() {
        let mut state = MemState::default();
        let a = queues::CreateQueue::new("a", &Default::default(), Default::default())
            .unwrap()
            .into();
        let b = queues::CreateQueue::new("b", &Default::default(), Default::default())
            .unwrap()
            .into();
        entry(&mut state, &[a, b, one_message("a")]);
        let q = queues::load(&state, "a").unwrap().unwrap();
        let mut st = load_state(&state, q.id).unwrap();
        st.available += 1;
        state.insert(state_key(q.id), codec::encode(&StoredQueueState::V1(st)));
        entry(&mut state, &[one_message("b")]);
        assert!(check_touched(&state, [Resource::Queue("b")]).is_ok());
        assert!(check_touched(&state, [Resource::Queue("a")]).is_err());
    }
}
