//! The replicated command model.
//!
//! Every change of state is a [`Command`] in the Raft log, wrapped in a
//! [`Request`] that carries the time the leader stamped on it. Reads that must
//! be linearizable are [`Query`]s, run on the leader after it has confirmed
//! its leadership. Both are scoped to one resource (see
//! [`Command::resource`]) so that the keyspace can later be split across
//! several Raft groups.
//!
//! Encoding: these types are postcard-encoded in the log and between nodes;
//! new variants are only ever appended (see [`crate::store::codec`]).

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::queues;

/// A command as it sits in the Raft log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Milliseconds since the Unix epoch on the leader when it proposed the
    /// command. The state machine's clock is the largest stamp applied so
    /// far, so time never runs backwards across leader changes.
    pub time_ms: u64,
    /// What to do.
    pub command: Command,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.command.name(), self.time_ms)
    }
}

/// A change of replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create a queue, or confirm an identical one exists.
    CreateQueue(queues::CreateQueue),
    /// Delete a queue.
    DeleteQueue {
        /// Queue name.
        name: String,
    },
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateQueue(_) => "CreateQueue",
            Command::DeleteQueue { .. } => "DeleteQueue",
        }
    }

    /// The one resource the command touches.
    pub fn resource(&self) -> Resource<'_> {
        match self {
            Command::CreateQueue(c) => Resource::Queue(&c.name),
            Command::DeleteQueue { name } => Resource::Queue(name),
        }
    }
}

/// The resource a command is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A queue, by name.
    Queue(&'a str),
}

/// The result of a successfully applied command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    /// The entry carried no command (a blank or membership entry).
    Nothing,
    /// `CreateQueue` succeeded; `created` is false when it already existed.
    QueueCreated {
        /// Whether this command created the queue.
        created: bool,
    },
    /// `DeleteQueue` succeeded.
    QueueDeleted,
}

/// The state machine's reply to one log entry, returned to the proposer.
pub type Response = Result<CommandOutput, DomainError>;

/// A read of replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Query {
    /// One queue's record.
    GetQueue {
        /// Queue name.
        name: String,
    },
    /// A page of queue names.
    ListQueues(queues::ListQueues),
}

impl Query {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Query::GetQueue { .. } => "GetQueue",
            Query::ListQueues(_) => "ListQueues",
        }
    }
}

/// The result of a query.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum QueryOutput {
    /// A queue's record.
    Queue(queues::Queue),
    /// A page of queue names.
    Queues(queues::QueuePage),
}

/// The reply to a query.
pub type QueryResponse = Result<QueryOutput, DomainError>;
