//! The queue operations: the commands that change queues and their
//! messages (what each returns and how it applies, through the modules of
//! [`crate::queues`]) and the reads of them.

use crate::error::DomainError;
use crate::operation::operations;
use crate::queues::delivery::{ReceiveOutcome, ReceiveRequest, SentMessage};
use crate::queues::housekeeping::Tick;
use crate::queues::layout::{self, MoveTask, Moving, QueueState};
use crate::queues::message::NewMessage;
use crate::queues::receipt::Receipt;
use crate::queues::redrive::Step;
use crate::queues::{self, delivery, housekeeping, redrive, CreateQueue};
use crate::queues::{ListQueues, Queue, QueuePage};

operations! {
    impl CreateQueue
    size 64
        + op.name.len()
        + op.attributes.len() * 16
        + op.tags.iter().map(|(k, v)| k.len() + v.len() + 4).sum::<usize>();
    applies -> bool = |op, txn, ctx, _| queues::create(txn, ctx, op);

    /// Delete a queue (its messages are collected in the background).
    pub struct DeleteQueue {
        /// Queue name.
        pub name: String,
    }
    applies -> () = |txn, _, _| queues::delete(txn, name);

    /// Change queue attributes.
    pub struct SetQueueAttributes {
        /// Queue name.
        pub name: String,
        /// Attributes to set.
        pub attributes: Vec<queues::Attribute>,
    }
    applies -> () = |txn, ctx, _| queues::set_attributes(txn, ctx, name, attributes);

    /// Delete every message.
    pub struct PurgeQueue {
        /// Queue name.
        pub name: String,
    }
    applies -> () = |txn, ctx, _| delivery::purge(txn, ctx, name);

    /// Send one or more messages (SendMessage, SendMessageBatch).
    pub struct SendMessages {
        /// Queue name.
        pub queue: String,
        /// The messages.
        pub messages: Vec<NewMessage>,
    }
    size 32 + queue.len() + messages.iter().map(|m| m.size() + 128).sum::<usize>();
    applies -> Vec<Result<SentMessage, DomainError>> = |txn, ctx, effects| {
        delivery::send(txn, ctx, queue, messages, ctx.log, effects)
    };

    /// Receive messages.
    pub struct ReceiveMessages {
        /// Queue name.
        pub queue: String,
        /// What to receive.
        pub request: ReceiveRequest,
    }
    applies -> ReceiveOutcome = |txn, ctx, effects| {
        delivery::receive(txn, ctx, queue, request, effects)
    };

    /// Delete messages by receipt handle.
    pub struct DeleteMessages {
        /// Queue name.
        pub queue: String,
        /// The handles, parsed.
        pub receipts: Vec<Receipt>,
    }
    size 32 + receipts.len() * 32;
    applies -> Vec<Result<(), DomainError>> = |txn, _, effects| {
        delivery::delete(txn, queue, receipts, effects)
    };

    /// Change the visibility timeout of in-flight messages.
    pub struct ChangeVisibility {
        /// Queue name.
        pub queue: String,
        /// Handle and new timeout in seconds.
        pub changes: Vec<(Receipt, u32)>,
    }
    size 32 + changes.len() * 40;
    applies -> Vec<Result<(), DomainError>> = |txn, ctx, effects| {
        delivery::change_visibility(txn, ctx, queue, changes, effects)
    };

    /// The leader's periodic time-driven work on a queue.
    pub struct QueueTick {
        /// Queue name.
        pub queue: String,
    }
    applies -> Tick = |txn, ctx, effects| housekeeping::tick(txn, ctx, queue, effects);

    /// Delete a bounded part of a purged generation or deleted queue.
    pub struct CollectGarbage {
        /// Queue id.
        pub qid: u64,
        /// Generation.
        pub gen: u64,
    }
    applies -> bool = |txn, _, _| housekeeping::collect(txn, *qid, *gen);

    /// Enqueue messages moved from another queue's outbox.
    pub struct AcceptMoved {
        /// Destination queue name.
        pub queue: String,
        /// Source queue id.
        pub from: u64,
        /// (source sequence, message).
        pub messages: Vec<(u64, Moving)>,
    }
    size 64 + messages .iter() .map(|(_, m)| m.body.body.size() + 256) .sum::<usize>();
    applies -> u32 = |txn, ctx, effects| redrive::accept(txn, ctx, queue, *from, messages, effects);

    /// Clear outbox entries whose destination took them.
    pub struct AcknowledgeMoved {
        /// Source queue name.
        pub queue: String,
        /// Generation of the entries.
        pub gen: u64,
        /// Their sequence numbers.
        pub seqs: Vec<u64>,
    }
    applies -> () = |txn, _, _| redrive::acknowledge(txn, queue, *gen, seqs);

    /// Start a dead-letter redrive task.
    pub struct StartMoveTask {
        /// The dead-letter queue.
        pub queue: String,
        /// Destination; `None`: each message's source.
        pub destination: Option<String>,
        /// Messages per second.
        pub rate: Option<u32>,
    }
    applies -> String = |txn, ctx, _| {
        redrive::start_task(txn, ctx, queue, destination.clone(), *rate)
    };

    /// Cancel a move task.
    pub struct CancelMoveTask {
        /// The dead-letter queue.
        pub queue: String,
        /// Task handle.
        pub handle: String,
    }
    applies -> u64 = |txn, _, _| redrive::cancel_task(txn, queue, handle);

    /// Move the next messages of a queue's running task.
    pub struct MoveTaskStep {
        /// The dead-letter queue.
        pub queue: String,
    }
    applies -> Step = |txn, ctx, _| redrive::step_task(txn, ctx, queue);

    /// One queue's record.
    pub struct GetQueue {
        /// Queue name.
        pub name: String,
    }
    reads -> Queue = |state| queues::require(state, name);

    impl ListQueues reads -> QueuePage = |op, state| queues::list(state, op);

    /// A queue's record with its message counts.
    pub struct QueueDetails {
        /// Queue name.
        pub name: String,
    }
    reads -> (Queue, QueueState) = |state| {
        let q = queues::require(state, name)?;
        let s = layout::load_state(state, q.id)?;
        Ok((q, s))
    };

    /// Whether a receive at `now_ms` could find a message. A long poll
    /// woken on a node asks the node's own state before it proposes.
    pub struct Receivable {
        /// Queue name.
        pub name: String,
        /// The asking node's clock, ms since the epoch.
        pub now_ms: u64,
    }
    reads -> bool = |state| delivery::receivable(state, name, *now_ms);

    /// The name of the queue with an id.
    pub struct QueueName {
        /// Queue id.
        pub qid: u64,
    }
    reads -> Option<String> = |state| queues::name_of(state, *qid);

    /// Queues that use a queue as their dead-letter queue.
    pub struct DeadLetterSources {
        /// The dead-letter queue.
        pub name: String,
        /// Continue after this name.
        pub after: Option<String>,
        /// Page size.
        pub limit: u32,
    }
    reads -> QueuePage = |state| {
        queues::require(state, name)?;
        queues::dead_letter_sources(state, name, after.as_deref(), *limit as usize)
    };

    /// A queue's move tasks, newest first.
    pub struct MoveTasks {
        /// Queue name.
        pub name: String,
    }
    reads -> Vec<MoveTask> = |state| {
        let q = queues::require(state, name)?;
        redrive::tasks(state, q.id)
    };
}
