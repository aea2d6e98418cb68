//! What a command and a query are, seen from the domain that owns them.
//!
//! Each domain declares its commands as structs and implements
//! [`Operation`] for them: what the command returns and how it applies. Its
//! reads implement [`Lookup`]. One line per operation in [`crate::command`]
//! registers it, with the [`Resource`] it is scoped to; that generates the
//! [`crate::command::Command`] and [`crate::command::Query`] enums (the log's
//! and the wire's encoding), their names, resource scoping, dispatch and the
//! typed way back from an output to the operation's own result type
//! ([`Registered`]). A leaf: the domain modules use it, and it uses nothing
//! of theirs.

use crate::apply::{Ctx, Effects};
use crate::error::ApplyResult;
use crate::store::{StateRead, Txn};

/// A change of replicated state, as its domain defines it.
pub trait Operation {
    /// What the command returns when it applies.
    type Output;

    /// Roughly how many bytes the command takes in the log; bounds batches.
    fn size_hint(&self) -> usize {
        64
    }

    /// Applies the command. Writes go to `txn`; on error the caller discards
    /// them and the effects recorded meanwhile. Deterministic: the clock is
    /// `ctx`, and nothing else outside `txn` is read.
    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output>;
}

/// A read of replicated state, as its domain defines it.
pub trait Lookup {
    /// What the read returns.
    type Output;

    /// Answers the read from `state`.
    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output>;
}

/// What the registration in [`crate::command`] adds to an operation: its
/// name, how it becomes the enum the log and the wire carry, and how the
/// enum's output becomes the operation's own result again. Generated, never
/// written by hand.
pub trait Registered: Sized {
    /// The enum it is carried in ([`crate::command::Command`] or
    /// [`crate::command::Query`]).
    type Carrier;
    /// The enum its result comes back in.
    type Reply;
    /// Its own result type.
    type Output;
    /// Its name, for logs, metrics and errors.
    const NAME: &'static str;
    /// Wraps it for the log or the wire.
    fn carry(self) -> Self::Carrier;
    /// Its own result, or `None` if `reply` belongs to another operation
    /// (which the registration makes impossible for a reply to this one).
    fn output(reply: Self::Reply) -> Option<Self::Output>;
}

/// The resource a command is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Resource<'a> {
    /// A queue, by name.
    Queue(&'a str),
    /// The stored data of a queue (possibly deleted), by id.
    QueueData(u64),
    /// A stream (its shards are part of it), by name.
    Stream(&'a str),
    /// The stored data of a deleted stream, by id.
    StreamData(u64),
    /// A topic with its subscriptions and outbox, by name. A publish also
    /// writes to the subscribed queues: the one deliberate exception to
    /// single-resource commands (spec, invariant 4).
    Topic(&'a str),
    /// The stored data of a deleted topic, by id.
    TopicData(u64),
    /// A function, by name (its code package is shared by content hash).
    Function(&'a str),
    /// The registry of workers.
    Workers,
    /// Principals, access keys and policies.
    Iam,
}
