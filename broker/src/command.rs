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

/// One Raft log entry's payload: the commands the leader batched together,
/// with the time it stamped on them.
///
/// Batching is how writes share an fsync: openraft 0.9 appends and flushes
/// one entry at a time, so the leader's [`crate::raft::proposer`] puts every
/// command that arrived while earlier batches were in flight into one entry.
/// Each command still succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Milliseconds since the Unix epoch on the leader when it proposed the
    /// batch. The state machine's clock is the largest stamp applied so far,
    /// so time never runs backwards across leader changes.
    pub time_ms: u64,
    /// What to do, in order.
    pub commands: Vec<Command>,
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} commands@{}", self.commands.len(), self.time_ms)
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

    /// Roughly how many bytes the command takes in the log; bounds batches.
    pub fn size_hint(&self) -> usize {
        match self {
            Command::CreateQueue(c) => {
                64 + c.name.len()
                    + c.attributes.len() * 16
                    + c.tags
                        .iter()
                        .map(|(k, v)| k.len() + v.len() + 4)
                        .sum::<usize>()
            }
            Command::DeleteQueue { name } => 16 + name.len(),
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
    /// `CreateQueue` succeeded; `created` is false when it already existed.
    QueueCreated {
        /// Whether this command created the queue.
        created: bool,
    },
    /// `DeleteQueue` succeeded.
    QueueDeleted,
}

/// The result of one command.
pub type Response = Result<CommandOutput, DomainError>;

/// The state machine's reply to one log entry: a result per command of its
/// [`Request`] (none for blank and membership entries).
pub type EntryResponse = Vec<Response>;

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
