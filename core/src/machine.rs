//! The deterministic core of the state machine: one command in, one result
//! out, over a store.
//!
//! [`apply`] and [`query`] are what every replica runs for each log entry and
//! read. They read no clock (the time is in [`Ctx`]), draw no random numbers
//! and do no I/O other than through the store they are given, so every node
//! that applies the same log reaches the same state. What a command means for
//! the world outside the state (a queue now has messages for waiting
//! receivers) it reports as [`Effect`]s, which the caller acts on after the
//! commit. The Raft plumbing around them lives in
//! [`crate::raft::state_machine`].

use crate::apply::{Ctx, Effects};
use crate::command::{Command, CommandOutput, Query, QueryOutput};
use crate::error::{ApplyError, ApplyResult, DomainError};
use crate::functions::{self, DeleteFunction};
use crate::invariant::CheckError;
use crate::operation::Operation;
use crate::queues::{self};
use crate::store::{StateRead, StoreError, Txn};
use crate::streams::{self};
use crate::tags::{Tag, Tagged};
use crate::topics::{self};

/// Applies the commands of one log entry on top of `batch`, the overlay of
/// the entries applied before it in the same batch. Each command gets its
/// own transaction: a rejected one leaves no trace (writes or effects), the
/// others still apply. A store failure stops the batch: it is local, not a
/// result every replica would share.
pub fn apply_entry(
    batch: &mut Txn<'_>,
    ctx: &Ctx,
    commands: &[Command],
    effects: &mut Effects,
) -> Result<Vec<Result<CommandOutput, DomainError>>, StoreError> {
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        let mut txn = Txn::new(&*batch);
        let before = effects.len();
        match apply(&mut txn, ctx, command, effects) {
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
    Ok(results)
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
            Tagged::Queue(name) => queues::retag(txn, name, &self.change),
            Tagged::Topic(name) => topics::retag(txn, name, &self.change),
            Tagged::Stream(name) => streams::retag(txn, name, &self.change),
        }
    }
}

/// Answers one query from `state`.
pub fn query(state: &dyn StateRead, query: &Query) -> ApplyResult<QueryOutput> {
    query.read(state)
}
