//! The deterministic core of the state machine: one command in, one result
//! out, over a store.
//!
//! [`apply`] and [`query`] are what every replica runs for each log entry and
//! read. They read no clock (the time is in [`Ctx`]), draw no random numbers
//! and do no I/O other than through the store they are given, so every node
//! that applies the same log reaches the same state. The Raft plumbing around
//! them lives in [`crate::raft::state_machine`].

use crate::command::{Command, CommandOutput, Query, QueryOutput};
use crate::error::ApplyResult;
use crate::queues;
use crate::store::{StateRead, Txn};

/// What a command may know besides its arguments and the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The state machine's clock: the largest leader time stamp applied so
    /// far, ms since the Unix epoch.
    pub now_ms: u64,
}

/// Applies one command. Writes go to `txn`; on error the caller discards them.
pub fn apply(txn: &mut Txn<'_>, ctx: &Ctx, command: &Command) -> ApplyResult<CommandOutput> {
    match command {
        Command::CreateQueue(c) => {
            let created = queues::create(txn, ctx, c)?;
            Ok(CommandOutput::QueueCreated { created })
        }
        Command::DeleteQueue { name } => {
            queues::delete(txn, name)?;
            Ok(CommandOutput::QueueDeleted)
        }
    }
}

/// Answers one query from `state`.
pub fn query(state: &dyn StateRead, query: &Query) -> ApplyResult<QueryOutput> {
    match query {
        Query::GetQueue { name } => Ok(QueryOutput::Queue(queues::require(state, name)?)),
        Query::ListQueues(req) => Ok(QueryOutput::Queues(queues::list(state, req)?)),
    }
}
