//! What a command and a query are, seen from the domain that owns them.
//!
//! Each domain declares its commands as structs and implements
//! [`Operation`] for them: what the command returns and how it applies. Its
//! reads implement [`Lookup`]. Most declare both in `operations!`, which
//! writes the impls around the one expression each applies or reads. One line per operation in [`crate::command`]
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
    /// An event bus with its rules, by name. A PutEvents also writes to
    /// its rules' queues, topics, streams, functions and buses, as a
    /// publish writes to its queues.
    Bus(&'a str),
    /// Archives and replays (a replay step writes to its bus's targets).
    Archives,
    /// Schedules (a firing writes to its target).
    Schedules,
    /// Failed deliveries waiting to be tried again (a try writes to its
    /// target).
    Retries,
    /// The registry of workers.
    Workers,
    /// Principals, access keys and policies.
    Iam,
}

/// Declares a domain's operations, each as its struct and the one
/// expression it applies or reads, so that the trait impls around them
/// (signatures, the destructuring of the fields) are written once, here.
///
/// ```text
/// operations! {
///     /// Delete a queue.
///     pub struct DeleteQueue {
///         /// Queue name.
///         pub name: String,
///     }
///     applies -> () = |txn, _ctx, _effects| queues::delete(txn, name);
///
///     /// Grow or shrink a buffer; large ones weigh more in a batch.
///     pub struct Resize { pub name: String, pub bytes: Vec<u8> }
///     size 64 + bytes.len();
///     applies -> u32 = |txn, ctx, effects| resize(txn, ctx, name, bytes, effects);
///
///     /// One queue's record.
///     pub struct GetQueue { pub name: String }
///     reads -> Queue = |state| queues::require(state, name);
/// }
/// ```
///
/// Each struct derives `Debug`, `Clone`, `PartialEq`, `Serialize` and
/// `Deserialize`, what the log and the wire need. An `applies` line
/// implements [`Operation`] (with [`Operation::size_hint`] from the `size`
/// line, when there is one), a `reads` line [`Lookup`]. Inside the
/// expressions the struct's fields are bound by reference, under their own
/// names. An operation whose struct is declared elsewhere (a unit struct,
/// or one the API also builds) is registered with `impl Name` instead of
/// the struct, and its expressions name the whole value:
///
/// ```text
/// operations! {
///     impl CreateQueue applies -> bool = |op, txn, ctx, _| queues::create(txn, ctx, op);
///     impl ListQueues reads -> QueuePage = |op, state| queues::list(state, op);
/// }
/// ```
macro_rules! operations {
    () => {};
    // A struct with its expressions: the struct, then the same operation
    // in the `impl` form, its expressions wrapped to bind the fields of
    // `op` (the whole value) under their own names.
    (
        $(#[$meta:meta])*
        pub struct $name:ident $fields:tt
        $(size $size:expr;)?
        applies -> $out:ty = |$txn:pat_param, $ctx:pat_param, $effects:pat_param| $body:expr;
        $($rest:tt)*
    ) => {
        $crate::operation::operations!(@struct $(#[$meta])* $name $fields);
        $crate::operation::operations! {
            impl $name
            $(size $crate::operation::operations!(@bind op, $name $fields in $size);)?
            applies -> $out = |op, $txn, $ctx, $effects|
                $crate::operation::operations!(@bind op, $name $fields in $body);
            $($rest)*
        }
    };
    (
        $(#[$meta:meta])*
        pub struct $name:ident $fields:tt
        reads -> $out:ty = |$state:pat_param| $body:expr;
        $($rest:tt)*
    ) => {
        $crate::operation::operations!(@struct $(#[$meta])* $name $fields);
        $crate::operation::operations! {
            impl $name reads -> $out = |op, $state|
                $crate::operation::operations!(@bind op, $name $fields in $body);
            $($rest)*
        }
    };
    (
        impl $name:ident
        $(size $size:expr;)?
        applies -> $out:ty =
        |$op:pat_param, $txn:pat_param, $ctx:pat_param, $effects:pat_param| $body:expr;
        $($rest:tt)*
    ) => {
        impl $crate::operation::Operation for $name {
            type Output = $out;

            $(
                // A size from a struct's fields need not name them all.
                #[allow(unused_variables)]
                fn size_hint(&self) -> usize {
                    let $op = self;
                    $size
                }
            )?

            fn apply(
                &self,
                $txn: &mut $crate::store::Txn<'_>,
                $ctx: &$crate::apply::Ctx,
                $effects: &mut $crate::apply::Effects,
            ) -> $crate::error::ApplyResult<$out> {
                let $op = self;
                $body
            }
        }

        $crate::operation::operations!($($rest)*);
    };
    (
        impl $name:ident reads -> $out:ty = |$op:pat_param, $state:pat_param| $body:expr;
        $($rest:tt)*
    ) => {
        impl $crate::operation::Lookup for $name {
            type Output = $out;

            fn read(
                &self,
                $state: &dyn $crate::store::StateRead,
            ) -> $crate::error::ApplyResult<$out> {
                let $op = self;
                $body
            }
        }

        $crate::operation::operations!($($rest)*);
    };
    (
        @struct $(#[$meta:meta])* $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $field_ty:ty),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize, ::serde::Deserialize)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $field_ty),*
        }
    };
    (
        @bind $this:ident, $name:ident {
            $($(#[$field_meta:meta])* pub $field:ident: $field_ty:ty),* $(,)?
        } in $body:expr
    ) => {{
        let $name { $($field),* } = $this;
        $body
    }};
}
pub(crate) use operations;
