//! The queue operations: the commands that change queues and their
//! messages (what each returns and how it applies, through the modules of
//! [`crate::queues`]) and the reads of them.

use serde::{Deserialize, Serialize};

use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::operation::{Lookup, Operation};
use crate::queues::delivery::{ReceiveOutcome, ReceiveRequest, SentMessage};
use crate::queues::housekeeping::Tick;
use crate::queues::layout::{self, MoveTask, Moving, QueueState};
use crate::queues::message::NewMessage;
use crate::queues::receipt::Receipt;
use crate::queues::redrive::Step;
use crate::queues::{self, delivery, housekeeping, redrive, CreateQueue};
use crate::queues::{ListQueues, Queue, QueuePage};
use crate::store::{StateRead, Txn};

impl Operation for CreateQueue {
    type Output = bool;

    fn size_hint(&self) -> usize {
        64 + self.name.len()
            + self.attributes.len() * 16
            + self
                .tags
                .iter()
                .map(|(k, v)| k.len() + v.len() + 4)
                .sum::<usize>()
    }

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        queues::create(txn, ctx, self)
    }
}

/// Delete a queue (its messages are collected in the background).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteQueue {
    /// Queue name.
    pub name: String,
}

impl Operation for DeleteQueue {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        queues::delete(txn, &self.name)
    }
}

/// Change queue attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetQueueAttributes {
    /// Queue name.
    pub name: String,
    /// Attributes to set.
    pub attributes: Vec<queues::Attribute>,
}

impl Operation for SetQueueAttributes {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let SetQueueAttributes { name, attributes } = self;
        queues::set_attributes(txn, ctx, name, attributes)
    }
}

/// Delete every message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PurgeQueue {
    /// Queue name.
    pub name: String,
}

impl Operation for PurgeQueue {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let PurgeQueue { name } = self;
        delivery::purge(txn, ctx, name)
    }
}

/// Send one or more messages (SendMessage, SendMessageBatch).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendMessages {
    /// Queue name.
    pub queue: String,
    /// The messages.
    pub messages: Vec<NewMessage>,
}

impl Operation for SendMessages {
    type Output = Vec<Result<SentMessage, DomainError>>;

    fn size_hint(&self) -> usize {
        32 + self.queue.len() + self.messages.iter().map(|m| m.size() + 128).sum::<usize>()
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let SendMessages { queue, messages } = self;
        delivery::send(txn, ctx, queue, messages, effects)
    }
}

/// Receive messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReceiveMessages {
    /// Queue name.
    pub queue: String,
    /// What to receive.
    pub request: ReceiveRequest,
}

impl Operation for ReceiveMessages {
    type Output = ReceiveOutcome;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let ReceiveMessages { queue, request } = self;
        delivery::receive(txn, ctx, queue, request, effects)
    }
}

/// Delete messages by receipt handle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteMessages {
    /// Queue name.
    pub queue: String,
    /// The handles, parsed.
    pub receipts: Vec<Receipt>,
}

impl Operation for DeleteMessages {
    type Output = Vec<Result<(), DomainError>>;

    fn size_hint(&self) -> usize {
        32 + self.receipts.len() * 32
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let DeleteMessages { queue, receipts } = self;
        delivery::delete(txn, queue, receipts, effects)
    }
}

/// Change the visibility timeout of in-flight messages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChangeVisibility {
    /// Queue name.
    pub queue: String,
    /// Handle and new timeout in seconds.
    pub changes: Vec<(Receipt, u32)>,
}

impl Operation for ChangeVisibility {
    type Output = Vec<Result<(), DomainError>>;

    fn size_hint(&self) -> usize {
        32 + self.changes.len() * 40
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let ChangeVisibility { queue, changes } = self;
        delivery::change_visibility(txn, ctx, queue, changes, effects)
    }
}

/// The leader's periodic time-driven work on a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueTick {
    /// Queue name.
    pub queue: String,
}

impl Operation for QueueTick {
    type Output = Tick;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let QueueTick { queue } = self;
        housekeeping::tick(txn, ctx, queue, effects)
    }
}

/// Delete a bounded part of a purged generation or deleted queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectGarbage {
    /// Queue id.
    pub qid: u64,
    /// Generation.
    pub gen: u64,
}

impl Operation for CollectGarbage {
    type Output = bool;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let CollectGarbage { qid, gen } = self;
        housekeeping::collect(txn, *qid, *gen)
    }
}

/// Enqueue messages moved from another queue's outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcceptMoved {
    /// Destination queue name.
    pub queue: String,
    /// Source queue id.
    pub from: u64,
    /// (source sequence, message).
    pub messages: Vec<(u64, Moving)>,
}

impl Operation for AcceptMoved {
    type Output = u32;

    fn size_hint(&self) -> usize {
        64 + self
            .messages
            .iter()
            .map(|(_, m)| m.body.body.len() + 256)
            .sum::<usize>()
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let AcceptMoved {
            queue,
            from,
            messages,
        } = self;
        redrive::accept(txn, ctx, queue, *from, messages, effects)
    }
}

/// Clear outbox entries whose destination took them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AcknowledgeMoved {
    /// Source queue name.
    pub queue: String,
    /// Generation of the entries.
    pub gen: u64,
    /// Their sequence numbers.
    pub seqs: Vec<u64>,
}

impl Operation for AcknowledgeMoved {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let AcknowledgeMoved { queue, gen, seqs } = self;
        redrive::acknowledge(txn, queue, *gen, seqs)
    }
}

/// Start a dead-letter redrive task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StartMoveTask {
    /// The dead-letter queue.
    pub queue: String,
    /// Destination; `None`: each message's source.
    pub destination: Option<String>,
    /// Messages per second.
    pub rate: Option<u32>,
}

impl Operation for StartMoveTask {
    type Output = String;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let StartMoveTask {
            queue,
            destination,
            rate,
        } = self;
        redrive::start_task(txn, ctx, queue, destination.clone(), *rate)
    }
}

/// Cancel a move task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CancelMoveTask {
    /// The dead-letter queue.
    pub queue: String,
    /// Task handle.
    pub handle: String,
}

impl Operation for CancelMoveTask {
    type Output = u64;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let CancelMoveTask { queue, handle } = self;
        redrive::cancel_task(txn, queue, handle)
    }
}

/// Move the next messages of a queue's running task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MoveTaskStep {
    /// The dead-letter queue.
    pub queue: String,
}

impl Operation for MoveTaskStep {
    type Output = Step;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let MoveTaskStep { queue } = self;
        redrive::step_task(txn, ctx, queue)
    }
}

/// One queue's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetQueue {
    /// Queue name.
    pub name: String,
}

impl Lookup for GetQueue {
    type Output = Queue;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let GetQueue { name } = self;
        queues::require(state, name)
    }
}

impl Lookup for ListQueues {
    type Output = QueuePage;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let req = self;
        queues::list(state, req)
    }
}

/// A queue's record with its message counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDetails {
    /// Queue name.
    pub name: String,
}

impl Lookup for QueueDetails {
    type Output = (Queue, QueueState);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let QueueDetails { name } = self;
        let q = queues::require(state, name)?;
        let s = layout::load_state(state, q.id)?;
        Ok((q, s))
    }
}

/// The name of the queue with an id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueName {
    /// Queue id.
    pub qid: u64,
}

impl Lookup for QueueName {
    type Output = Option<String>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let QueueName { qid } = self;
        queues::name_of(state, *qid)
    }
}

/// Queues that use a queue as their dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeadLetterSources {
    /// The dead-letter queue.
    pub name: String,
    /// Continue after this name.
    pub after: Option<String>,
    /// Page size.
    pub limit: u32,
}

impl Lookup for DeadLetterSources {
    type Output = QueuePage;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let DeadLetterSources { name, after, limit } = self;
        queues::require(state, name)?;
        queues::dead_letter_sources(state, name, after.as_deref(), *limit as usize)
    }
}

/// A queue's move tasks, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveTasks {
    /// Queue name.
    pub name: String,
}

impl Lookup for MoveTasks {
    type Output = Vec<MoveTask>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let MoveTasks { name } = self;
        let q = queues::require(state, name)?;
        redrive::tasks(state, q.id)
    }
}
