//! The replicated command model.
//!
//! Every change of state is a [`Command`] in the Raft log, wrapped in a
//! [`Proposal`] that carries the time the leader stamped on it. Reads that must
//! be linearizable are [`Query`]s, run on the leader after it has confirmed
//! its leadership. Both are scoped to one resource (see
//! [`Command::resource`]) so that the keyspace can later be split across
//! several Raft groups.
//!
//! Encoding: these types are postcard-encoded in the log and between nodes;
//! new variants are only ever appended (see [`crate::store::codec`]).

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::functions;
use crate::mappings;
use crate::queues;
use crate::queues::delivery::{ReceiveOutcome, ReceiveRequest, SentMessage};
use crate::queues::housekeeping::Tick;
use crate::queues::layout::{MoveTask, Moving, QueueState};
use crate::queues::message::NewMessage;
use crate::queues::receipt::Receipt;
use crate::queues::redrive::Step;
use crate::streams::iterator::Position;
use crate::streams::records::{NewRecord, Placed, Read};
use crate::streams::{self, ConsumerMeta, Stream};
use crate::topics::{self, outbox, publish, subscription, subscriptions};
use crate::workers;

/// One Raft log entry's payload: the commands the leader batched together,
/// with the time it stamped on them.
///
/// Batching is how writes share an fsync: openraft 0.9 appends and flushes
/// one entry at a time, so the leader's [`crate::raft::proposer`] puts every
/// command that arrived while earlier batches were in flight into one entry.
/// Each command still succeeds or fails on its own.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Proposal {
    /// Milliseconds since the Unix epoch on the leader when it proposed the
    /// batch. The state machine's clock is the largest stamp applied so far,
    /// so time never runs backwards across leader changes.
    pub time_ms: u64,
    /// What to do, in order.
    pub commands: Vec<Command>,
}

impl std::fmt::Display for Proposal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} commands@{}", self.commands.len(), self.time_ms)
    }
}

/// A change of replicated state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Create a queue, or confirm an identical one exists.
    CreateQueue(queues::CreateQueue),
    /// Delete a queue (its messages are collected in the background).
    DeleteQueue {
        /// Queue name.
        name: String,
    },
    /// Change queue attributes.
    SetQueueAttributes {
        /// Queue name.
        name: String,
        /// Attributes to set.
        attributes: Vec<queues::Attribute>,
    },
    /// Delete every message.
    PurgeQueue {
        /// Queue name.
        name: String,
    },
    /// Send one or more messages (SendMessage, SendMessageBatch).
    SendMessages {
        /// Queue name.
        queue: String,
        /// The messages.
        messages: Vec<NewMessage>,
    },
    /// Receive messages.
    ReceiveMessages {
        /// Queue name.
        queue: String,
        /// What to receive.
        request: ReceiveRequest,
    },
    /// Delete messages by receipt handle.
    DeleteMessages {
        /// Queue name.
        queue: String,
        /// The handles, parsed.
        receipts: Vec<Receipt>,
    },
    /// Change the visibility timeout of in-flight messages.
    ChangeVisibility {
        /// Queue name.
        queue: String,
        /// Handle and new timeout in seconds.
        changes: Vec<(Receipt, u32)>,
    },
    /// The leader's periodic time-driven work on a queue.
    QueueTick {
        /// Queue name.
        queue: String,
    },
    /// Delete a bounded part of a purged generation or deleted queue.
    CollectGarbage {
        /// Queue id.
        qid: u64,
        /// Generation.
        gen: u64,
    },
    /// Enqueue messages moved from another queue's outbox.
    AcceptMoved {
        /// Destination queue name.
        queue: String,
        /// Source queue id.
        from: u64,
        /// (source sequence, message).
        messages: Vec<(u64, Moving)>,
    },
    /// Clear outbox entries whose destination took them.
    AcknowledgeMoved {
        /// Source queue name.
        queue: String,
        /// Generation of the entries.
        gen: u64,
        /// Their sequence numbers.
        seqs: Vec<u64>,
    },
    /// Start a dead-letter redrive task.
    StartMoveTask {
        /// The dead-letter queue.
        queue: String,
        /// Destination; `None`: each message's source.
        destination: Option<String>,
        /// Messages per second.
        rate: Option<u32>,
    },
    /// Cancel a move task.
    CancelMoveTask {
        /// The dead-letter queue.
        queue: String,
        /// Task handle.
        handle: String,
    },
    /// Move the next messages of a queue's running task.
    MoveTaskStep {
        /// The dead-letter queue.
        queue: String,
    },
    /// Create a stream, or confirm an identical one exists.
    CreateStream(streams::CreateStream),
    /// Delete a stream (its records are collected in the background).
    DeleteStream {
        /// Stream name.
        name: String,
    },
    /// Put records (PutRecord, PutRecords).
    PutRecords {
        /// Stream name.
        stream: String,
        /// The records.
        records: Vec<NewRecord>,
    },
    /// Increase or decrease the retention period.
    SetStreamRetention {
        /// Stream name.
        name: String,
        /// Hours.
        hours: u32,
        /// IncreaseStreamRetentionPeriod (else Decrease...).
        increase: bool,
    },
    /// Split a shard.
    SplitShard {
        /// Stream name.
        name: String,
        /// Shard index.
        shard: u32,
        /// First hash key of the second child.
        new_start: u128,
    },
    /// Merge two adjacent shards.
    MergeShards {
        /// Stream name.
        name: String,
        /// Shard index.
        shard: u32,
        /// The adjacent shard's index.
        adjacent: u32,
    },
    /// Rescale to a number of uniform shards.
    UpdateShardCount {
        /// Stream name.
        name: String,
        /// Target open shards.
        target: u32,
    },
    /// Register an enhanced fan-out consumer.
    RegisterConsumer {
        /// Stream name.
        name: String,
        /// Consumer name.
        consumer: String,
    },
    /// Deregister a consumer.
    DeregisterConsumer {
        /// Stream name.
        name: String,
        /// Consumer name.
        consumer: String,
    },
    /// Drop a shard's records past retention (the leader's schedule).
    TrimShard {
        /// Stream name.
        name: String,
        /// Shard index.
        shard: u32,
    },
    /// Delete a bounded part of a deleted stream's records.
    CollectStream {
        /// Stream id.
        sid: u64,
    },
    /// Create a topic, or confirm an identical one exists.
    CreateTopic(topics::CreateTopic),
    /// Delete a topic (its subscriptions and outbox are collected later).
    DeleteTopic {
        /// Topic name.
        name: String,
    },
    /// Set (or, with an empty value, clear) one topic attribute.
    SetTopicAttribute {
        /// Topic name.
        name: String,
        /// Attribute name.
        attribute: String,
        /// Value.
        value: String,
    },
    /// Subscribe an endpoint.
    Subscribe(subscriptions::Subscribe),
    /// Confirm a pending HTTP/S subscription.
    ConfirmSubscription {
        /// Topic name.
        topic: String,
        /// The token sent to the endpoint.
        token: String,
    },
    /// Remove a subscription.
    Unsubscribe {
        /// Topic name.
        topic: String,
        /// Subscription id.
        id: String,
    },
    /// Set (or clear) one subscription attribute.
    SetSubscriptionAttribute {
        /// Topic name.
        topic: String,
        /// Subscription id.
        id: String,
        /// Attribute name.
        attribute: String,
        /// Value.
        value: String,
    },
    /// Publish messages (Publish, PublishBatch).
    Publish {
        /// Topic name.
        topic: String,
        /// The topic's ARN, for the envelopes.
        topic_arn: String,
        /// The messages.
        messages: Vec<publish::Publication>,
    },
    /// Record the results of outbox deliveries.
    SettleDeliveries {
        /// Topic name.
        topic: String,
        /// The topic's id when the entries were read: results for a topic
        /// since deleted (and perhaps created again) are ignored.
        topic_id: u64,
        /// Entry number and result.
        results: Vec<(u64, outbox::Outcome)>,
    },
    /// The leader's periodic time-driven work on a topic.
    TopicTick {
        /// Topic name.
        topic: String,
    },
    /// Delete a bounded part of a deleted topic's keys.
    CollectTopic {
        /// Topic id.
        tid: u64,
    },
    /// Create a function.
    CreateFunction(functions::CreateFunction),
    /// Replace a function's code.
    UpdateFunctionCode {
        /// Function name.
        name: String,
        /// The new package.
        code: functions::Code,
    },
    /// Change a function's settings.
    UpdateFunctionConfiguration {
        /// Function name.
        name: String,
        /// What changes.
        change: functions::SettingsChange,
    },
    /// Delete a function.
    DeleteFunction {
        /// Function name.
        name: String,
    },
    /// Publish `$LATEST` as a version.
    PublishVersion {
        /// Function name.
        name: String,
        /// Publish only if `$LATEST`'s code has this hash.
        expected_sha256: Option<String>,
    },
    /// Create or update an alias.
    PutAlias {
        /// Function name.
        name: String,
        /// The alias.
        spec: functions::AliasSpec,
        /// CreateAlias (else UpdateAlias).
        create: bool,
    },
    /// Delete an alias.
    DeleteAlias {
        /// Function name.
        name: String,
        /// Alias name.
        alias: String,
    },
    /// Set a function's asynchronous invocation settings.
    PutEventInvokeConfig {
        /// Function name.
        name: String,
        /// The settings.
        config: functions::events::EventConfig,
    },
    /// Accept an asynchronous invocation.
    EnqueueEvent {
        /// Function name.
        name: String,
        /// `$LATEST`, a version or an alias.
        qualifier: String,
        /// The request id Invoke returns.
        request_id: String,
        /// The event.
        #[serde(with = "serde_bytes")]
        payload: Vec<u8>,
    },
    /// Record how a run of an event ended.
    SettleEvent {
        /// Function name.
        name: String,
        /// ARNs for the destination record.
        arns: functions::events::Arns,
        /// Event number.
        seq: u64,
        /// The event's request id (guards against a function re-created
        /// under the same name).
        request_id: String,
        /// The outcome.
        outcome: functions::events::RunOutcome,
    },
    /// A worker's heartbeat (the first registers it).
    WorkerHeartbeat(workers::Heartbeat),
    /// A worker stops.
    WorkerLeave {
        /// Worker id.
        id: String,
        /// Who asks (must be who registered it).
        owner: String,
    },
    /// Set (or with `None` remove) a function's reserved concurrency.
    PutFunctionConcurrency {
        /// Function name.
        name: String,
        /// Invocations at once, at most.
        reserved: Option<u32>,
    },
    /// Set (or with `None` remove) a version's or alias's provisioned
    /// concurrency.
    PutProvisionedConcurrency {
        /// Function name.
        name: String,
        /// Version number or alias.
        qualifier: String,
        /// Environments to keep ready.
        requested: Option<u32>,
    },
    /// Create an event source mapping.
    CreateEventSourceMapping(mappings::NewMapping),
    /// Replace a mapping's settings (validated at the edge against the
    /// mapping as it was then).
    UpdateEventSourceMapping {
        /// Its function.
        function: String,
        /// Its id.
        uuid: String,
        /// Its `modified_ms` when read at the edge.
        expected_ms: u64,
        /// The new settings.
        settings: mappings::Settings,
    },
    /// Delete an event source mapping.
    DeleteEventSourceMapping {
        /// Its function.
        function: String,
        /// Its id.
        uuid: String,
    },
    /// Hand a mapping's slots to workers (the leader's lease manager).
    AssignLeases {
        /// Its function.
        function: String,
        /// The mapping.
        uuid: String,
        /// Each slot's holder; slots not listed are dropped.
        slots: Vec<(u32, String)>,
    },
    /// Move a stream mapping's checkpoint (a worker, under its lease).
    CommitCheckpoint(mappings::checkpoints::Commit),
    /// Record a mapping's `LastProcessingResult` (a worker's poller).
    SetMappingResult {
        /// Its function.
        function: String,
        /// The mapping.
        uuid: String,
        /// `OK`, or `PROBLEM: ...`.
        result: String,
    },
    /// Change principals, access keys or policies.
    Iam(crate::iam::IamCommand),
    /// Add or remove tags on a queue, topic or stream.
    Tag(crate::tags::Tag),
}

impl Command {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Command::CreateQueue(_) => "CreateQueue",
            Command::DeleteQueue { .. } => "DeleteQueue",
            Command::SetQueueAttributes { .. } => "SetQueueAttributes",
            Command::PurgeQueue { .. } => "PurgeQueue",
            Command::SendMessages { .. } => "SendMessages",
            Command::ReceiveMessages { .. } => "ReceiveMessages",
            Command::DeleteMessages { .. } => "DeleteMessages",
            Command::ChangeVisibility { .. } => "ChangeVisibility",
            Command::QueueTick { .. } => "QueueTick",
            Command::CollectGarbage { .. } => "CollectGarbage",
            Command::AcceptMoved { .. } => "AcceptMoved",
            Command::AcknowledgeMoved { .. } => "AcknowledgeMoved",
            Command::StartMoveTask { .. } => "StartMoveTask",
            Command::CancelMoveTask { .. } => "CancelMoveTask",
            Command::MoveTaskStep { .. } => "MoveTaskStep",
            Command::CreateStream(_) => "CreateStream",
            Command::DeleteStream { .. } => "DeleteStream",
            Command::PutRecords { .. } => "PutRecords",
            Command::SetStreamRetention { .. } => "SetStreamRetention",
            Command::SplitShard { .. } => "SplitShard",
            Command::MergeShards { .. } => "MergeShards",
            Command::UpdateShardCount { .. } => "UpdateShardCount",
            Command::RegisterConsumer { .. } => "RegisterConsumer",
            Command::DeregisterConsumer { .. } => "DeregisterConsumer",
            Command::TrimShard { .. } => "TrimShard",
            Command::CollectStream { .. } => "CollectStream",
            Command::CreateTopic(_) => "CreateTopic",
            Command::DeleteTopic { .. } => "DeleteTopic",
            Command::SetTopicAttribute { .. } => "SetTopicAttribute",
            Command::Subscribe(_) => "Subscribe",
            Command::ConfirmSubscription { .. } => "ConfirmSubscription",
            Command::Unsubscribe { .. } => "Unsubscribe",
            Command::SetSubscriptionAttribute { .. } => "SetSubscriptionAttribute",
            Command::Publish { .. } => "Publish",
            Command::SettleDeliveries { .. } => "SettleDeliveries",
            Command::TopicTick { .. } => "TopicTick",
            Command::CollectTopic { .. } => "CollectTopic",
            Command::CreateFunction(_) => "CreateFunction",
            Command::UpdateFunctionCode { .. } => "UpdateFunctionCode",
            Command::UpdateFunctionConfiguration { .. } => "UpdateFunctionConfiguration",
            Command::DeleteFunction { .. } => "DeleteFunction",
            Command::PublishVersion { .. } => "PublishVersion",
            Command::PutAlias { .. } => "PutAlias",
            Command::DeleteAlias { .. } => "DeleteAlias",
            Command::PutEventInvokeConfig { .. } => "PutEventInvokeConfig",
            Command::EnqueueEvent { .. } => "EnqueueEvent",
            Command::SettleEvent { .. } => "SettleEvent",
            Command::WorkerHeartbeat(_) => "WorkerHeartbeat",
            Command::WorkerLeave { .. } => "WorkerLeave",
            Command::PutFunctionConcurrency { .. } => "PutFunctionConcurrency",
            Command::PutProvisionedConcurrency { .. } => "PutProvisionedConcurrency",
            Command::CreateEventSourceMapping(_) => "CreateEventSourceMapping",
            Command::UpdateEventSourceMapping { .. } => "UpdateEventSourceMapping",
            Command::DeleteEventSourceMapping { .. } => "DeleteEventSourceMapping",
            Command::AssignLeases { .. } => "AssignLeases",
            Command::CommitCheckpoint(_) => "CommitCheckpoint",
            Command::SetMappingResult { .. } => "SetMappingResult",
            Command::Iam(_) => "Iam",
            Command::Tag(_) => "Tag",
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
            Command::SendMessages { queue, messages } => {
                32 + queue.len() + messages.iter().map(|m| m.size() + 128).sum::<usize>()
            }
            Command::AcceptMoved { messages, .. } => {
                64 + messages
                    .iter()
                    .map(|(_, m)| m.body.body.len() + 256)
                    .sum::<usize>()
            }
            Command::PutRecords { records, .. } => {
                32 + records.iter().map(|r| r.size() + 32).sum::<usize>()
            }
            Command::DeleteMessages { receipts, .. } => 32 + receipts.len() * 32,
            Command::Publish {
                topic_arn,
                messages,
                ..
            } => 64 + topic_arn.len() + messages.iter().map(|m| m.size()).sum::<usize>(),
            Command::SettleDeliveries { results, .. } => 32 + results.len() * 64,
            Command::CreateFunction(c) => 512 + c.code.zip.len(),
            Command::UpdateFunctionCode { code, .. } => 256 + code.zip.len(),
            Command::EnqueueEvent { payload, .. } => 256 + payload.len(),
            Command::SettleEvent { outcome, .. } => {
                512 + match outcome {
                    functions::events::RunOutcome::Success { response, .. }
                    | functions::events::RunOutcome::Failure { response, .. } => response.len(),
                    functions::events::RunOutcome::Expired => 0,
                }
            }
            Command::ChangeVisibility { changes, .. } => 32 + changes.len() * 40,
            _ => 64,
        }
    }

    /// The one resource the command touches.
    pub fn resource(&self) -> Resource<'_> {
        match self {
            Command::CreateQueue(c) => Resource::Queue(&c.name),
            Command::DeleteQueue { name }
            | Command::SetQueueAttributes { name, .. }
            | Command::PurgeQueue { name } => Resource::Queue(name),
            Command::SendMessages { queue, .. }
            | Command::ReceiveMessages { queue, .. }
            | Command::DeleteMessages { queue, .. }
            | Command::ChangeVisibility { queue, .. }
            | Command::QueueTick { queue }
            | Command::AcceptMoved { queue, .. }
            | Command::AcknowledgeMoved { queue, .. }
            | Command::StartMoveTask { queue, .. }
            | Command::CancelMoveTask { queue, .. }
            | Command::MoveTaskStep { queue } => Resource::Queue(queue),
            Command::CollectGarbage { qid, .. } => Resource::QueueData(*qid),
            Command::CreateStream(c) => Resource::Stream(&c.name),
            Command::DeleteStream { name }
            | Command::SetStreamRetention { name, .. }
            | Command::SplitShard { name, .. }
            | Command::MergeShards { name, .. }
            | Command::UpdateShardCount { name, .. }
            | Command::RegisterConsumer { name, .. }
            | Command::DeregisterConsumer { name, .. }
            | Command::TrimShard { name, .. } => Resource::Stream(name),
            Command::PutRecords { stream, .. } => Resource::Stream(stream),
            Command::CollectStream { sid } => Resource::StreamData(*sid),
            Command::CreateTopic(c) => Resource::Topic(&c.name),
            Command::Subscribe(c) => Resource::Topic(&c.topic),
            Command::DeleteTopic { name } | Command::SetTopicAttribute { name, .. } => {
                Resource::Topic(name)
            }
            Command::ConfirmSubscription { topic, .. }
            | Command::Unsubscribe { topic, .. }
            | Command::SetSubscriptionAttribute { topic, .. }
            | Command::Publish { topic, .. }
            | Command::SettleDeliveries { topic, .. }
            | Command::TopicTick { topic } => Resource::Topic(topic),
            Command::CollectTopic { tid } => Resource::TopicData(*tid),
            Command::CreateFunction(c) => Resource::Function(&c.name),
            Command::UpdateFunctionCode { name, .. }
            | Command::UpdateFunctionConfiguration { name, .. }
            | Command::DeleteFunction { name }
            | Command::PublishVersion { name, .. }
            | Command::PutAlias { name, .. }
            | Command::DeleteAlias { name, .. }
            | Command::PutEventInvokeConfig { name, .. }
            | Command::EnqueueEvent { name, .. }
            | Command::SettleEvent { name, .. }
            | Command::PutFunctionConcurrency { name, .. }
            | Command::PutProvisionedConcurrency { name, .. } => Resource::Function(name),
            Command::CreateEventSourceMapping(m) => Resource::Function(&m.function),
            Command::UpdateEventSourceMapping { function, .. }
            | Command::DeleteEventSourceMapping { function, .. }
            | Command::AssignLeases { function, .. }
            | Command::SetMappingResult { function, .. } => Resource::Function(function),
            Command::CommitCheckpoint(c) => Resource::Function(&c.function),
            Command::WorkerHeartbeat(_) | Command::WorkerLeave { .. } => Resource::Workers,
            Command::Iam(_) => Resource::Iam,
            Command::Tag(t) => match &t.resource {
                crate::tags::Tagged::Queue(name) => Resource::Queue(name),
                crate::tags::Tagged::Topic(name) => Resource::Topic(name),
                crate::tags::Tagged::Stream(name) => Resource::Stream(name),
            },
        }
    }
}

/// The resource a command is scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

/// The result of a successfully applied command.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutput {
    /// `CreateQueue` succeeded; `created` is false when it already existed.
    QueueCreated {
        /// Whether this command created the queue.
        created: bool,
    },
    /// The command changed what it was asked to; nothing to return.
    Done,
    /// A result per message sent.
    Sent(Vec<Result<SentMessage, DomainError>>),
    /// Received messages.
    Received(ReceiveOutcome),
    /// A result per receipt handle (delete or visibility change).
    PerEntry(Vec<Result<(), DomainError>>),
    /// What a tick did.
    Ticked(Tick),
    /// A garbage collection step; `finished` when nothing is left.
    Collected {
        /// Whether the generation is gone.
        finished: bool,
    },
    /// How many moved messages were new to the destination.
    Accepted(u32),
    /// A move task started.
    MoveTaskStarted {
        /// Its handle.
        handle: String,
    },
    /// A move task was cancelled after moving this many messages.
    MoveTaskCancelled {
        /// Messages moved.
        moved: u64,
    },
    /// A move task step.
    MoveTaskStepped(Step),
    /// `CreateStream` succeeded; `created` is false when it already existed.
    StreamCreated {
        /// Whether this command created it.
        created: bool,
    },
    /// A result per record put.
    Put(Vec<Result<Placed, DomainError>>),
    /// The children of a split.
    Split([u32; 2]),
    /// The child of a merge.
    Merged(u32),
    /// Open shards before a rescale.
    Rescaled {
        /// Open shards before.
        previous: u32,
    },
    /// A registered consumer.
    Consumer(ConsumerMeta),
    /// `CreateTopic` succeeded; `created` is false when it already existed.
    TopicCreated {
        /// Whether this command created it.
        created: bool,
    },
    /// A subscription (new or existing).
    Subscribed(subscriptions::Subscribed),
    /// A confirmed subscription's id.
    Confirmed {
        /// Subscription id.
        id: String,
    },
    /// A result per message published.
    Published(Vec<Result<publish::Published, DomainError>>),
    /// What a settle did.
    Settled(outbox::Settled),
    /// A function's record after the change.
    Function(functions::Function),
    /// A published version.
    Version(functions::Version),
    /// An alias after the change.
    Alias(functions::Alias),
    /// What a settle of an event did.
    EventSettled(functions::events::Settled),
    /// A topic tick; `more` when work is left.
    TopicTicked {
        /// More to do now.
        more: bool,
    },
    /// A trim step: records dropped and whether more are due.
    Trimmed {
        /// Records dropped.
        dropped: u64,
        /// More to do now.
        more: bool,
    },
    /// An event source mapping as the command left it.
    Mapping(mappings::Mapping),
    /// What an IAM command returns.
    Iam(crate::iam::IamOutput),
}

/// The result of one command.
pub type CommandResult = Result<CommandOutput, DomainError>;

/// The state machine's reply to one log entry: a result per command of its
/// [`Proposal`] (none for blank and membership entries).
pub type EntryResponse = Vec<CommandResult>;

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
    /// A queue's record with its message counts.
    QueueDetails {
        /// Queue name.
        name: String,
    },
    /// The name of the queue with an id.
    QueueName {
        /// Queue id.
        qid: u64,
    },
    /// Queues that use a queue as their dead-letter queue.
    DeadLetterSources {
        /// The dead-letter queue.
        name: String,
        /// Continue after this name.
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// A queue's move tasks, newest first.
    MoveTasks {
        /// Queue name.
        name: String,
    },
    /// A stream's record (settings, shard map, consumers).
    DescribeStream {
        /// Stream name.
        name: String,
    },
    /// A page of stream names.
    ListStreams {
        /// Continue after this name.
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// Records of a shard from a position.
    ReadShard {
        /// Stream id.
        stream: u64,
        /// Shard index.
        shard: u32,
        /// First record number wanted.
        from: u64,
        /// Most records.
        limit: u32,
        /// About this many bytes at most.
        max_bytes: u64,
    },
    /// A topic with its subscription and outbox counts.
    GetTopic {
        /// Topic name.
        name: String,
    },
    /// A page of topic names.
    ListTopics {
        /// Continue after this name.
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// One subscription.
    GetSubscription {
        /// Topic name.
        topic: String,
        /// Subscription id.
        id: String,
    },
    /// A page of subscriptions, of one topic or of all.
    ListSubscriptions {
        /// Only this topic's.
        topic: Option<String>,
        /// Continue after this (topic, subscription id).
        after: Option<(String, String)>,
        /// Page size.
        limit: u32,
    },
    /// A function's record.
    GetFunction {
        /// Function name.
        name: String,
    },
    /// A page of functions.
    ListFunctions {
        /// Continue after this name.
        after: Option<String>,
        /// Page size.
        limit: u32,
    },
    /// A function's published versions.
    ListVersions {
        /// Function name.
        name: String,
    },
    /// A function's aliases.
    ListAliases {
        /// Function name.
        name: String,
    },
    /// What an invocation with a qualifier runs.
    InvokeTarget {
        /// Function name.
        name: String,
        /// `$LATEST`, a version or an alias.
        qualifier: String,
    },
    /// A function's asynchronous invocation settings.
    EventInvokeConfig {
        /// Function name.
        name: String,
    },
    /// A code package by hash.
    FunctionCode {
        /// Hex SHA-256.
        sha256: String,
    },
    /// Where a starting position points in a shard.
    ResolvePosition {
        /// Stream name.
        name: String,
        /// Shard index.
        shard: u32,
        /// The position.
        position: Position,
    },
    /// The registered workers.
    ListWorkers,
    /// A function's reserved concurrency.
    FunctionConcurrency {
        /// Function name.
        name: String,
    },
    /// Provisioned concurrency configurations: one function's, or all.
    Provisioned {
        /// Function name; every function's when `None`.
        name: Option<String>,
    },
    /// One event source mapping.
    GetMapping {
        /// Its id.
        uuid: String,
    },
    /// Event source mappings: one function's, or all.
    ListMappings {
        /// Function name; every function's when `None`.
        function: Option<String>,
    },
    /// Every mapping lease.
    ListLeases,
    /// A stream mapping's checkpoints, and when it was created.
    MappingCheckpoints {
        /// Its function.
        function: String,
        /// The mapping.
        uuid: String,
    },
    /// Principals, access keys and policies.
    Iam(crate::iam::IamQuery),
}

impl Query {
    /// Short name for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Query::GetQueue { .. } => "GetQueue",
            Query::ListQueues(_) => "ListQueues",
            Query::QueueDetails { .. } => "QueueDetails",
            Query::QueueName { .. } => "QueueName",
            Query::DeadLetterSources { .. } => "DeadLetterSources",
            Query::MoveTasks { .. } => "MoveTasks",
            Query::DescribeStream { .. } => "DescribeStream",
            Query::ListStreams { .. } => "ListStreams",
            Query::ReadShard { .. } => "ReadShard",
            Query::ResolvePosition { .. } => "ResolvePosition",
            Query::GetTopic { .. } => "GetTopic",
            Query::ListTopics { .. } => "ListTopics",
            Query::GetSubscription { .. } => "GetSubscription",
            Query::ListSubscriptions { .. } => "ListSubscriptions",
            Query::GetFunction { .. } => "GetFunction",
            Query::ListFunctions { .. } => "ListFunctions",
            Query::FunctionCode { .. } => "FunctionCode",
            Query::ListVersions { .. } => "ListVersions",
            Query::ListAliases { .. } => "ListAliases",
            Query::InvokeTarget { .. } => "InvokeTarget",
            Query::EventInvokeConfig { .. } => "EventInvokeConfig",
            Query::ListWorkers => "ListWorkers",
            Query::FunctionConcurrency { .. } => "FunctionConcurrency",
            Query::Provisioned { .. } => "Provisioned",
            Query::GetMapping { .. } => "GetMapping",
            Query::ListMappings { .. } => "ListMappings",
            Query::ListLeases => "ListLeases",
            Query::MappingCheckpoints { .. } => "MappingCheckpoints",
            Query::Iam(_) => "Iam",
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
    /// A queue's record and message state.
    QueueDetails(queues::Queue, QueueState),
    /// A queue name, if the id exists.
    QueueName(Option<String>),
    /// Move tasks.
    MoveTasks(Vec<MoveTask>),
    /// A stream.
    Stream(Stream),
    /// Stream names, and whether more follow.
    Streams(Vec<String>, bool),
    /// Records read from a shard.
    Records(Read),
    /// A topic and its counts.
    Topic(topics::Topic, topics::TopicCounts),
    /// Topic names, and whether more follow.
    Topics(Vec<String>, bool),
    /// A subscription with its topic.
    Subscription(topics::Topic, subscription::Subscription),
    /// Subscriptions with their topics, and where the next page starts.
    Subscriptions(
        Vec<(topics::Topic, subscription::Subscription)>,
        Option<(String, String)>,
    ),
    /// A function.
    Function(functions::Function),
    /// Functions, and whether more follow.
    Functions(Vec<functions::Function>, bool),
    /// A code package, if stored.
    Code(Option<Vec<u8>>),
    /// A function and its versions.
    Versions(functions::Function, Vec<functions::Version>),
    /// A function's aliases.
    Aliases(Vec<functions::Alias>),
    /// What an invocation runs.
    Target(functions::Target),
    /// Asynchronous invocation settings.
    EventConfig(functions::events::EventConfig),
    /// A resolved position: stream id and record number.
    Position {
        /// Stream id.
        stream: u64,
        /// Record number.
        seq: u64,
    },
    /// Registered workers.
    Workers(Vec<workers::WorkerRecord>),
    /// A reserved concurrency, if set.
    Concurrency(Option<u32>),
    /// Provisioned concurrency configurations.
    Provisioned(Vec<functions::concurrency::ProvisionedConfig>),
    /// One event source mapping.
    Mapping(mappings::Mapping),
    /// Event source mappings.
    Mappings(Vec<mappings::Mapping>),
    /// Mapping leases.
    Leases(Vec<mappings::leases::Lease>),
    /// A stream mapping's checkpoints (by slot), and when it was created
    /// (ms).
    Checkpoints(Vec<mappings::checkpoints::Checkpoint>, u64),
    /// What an IAM query returns.
    Iam(crate::iam::IamQueryOutput),
}

/// The reply to a query.
pub type QueryResponse = Result<QueryOutput, DomainError>;
