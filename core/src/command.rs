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

use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::events;
use crate::functions;
use crate::iam;
use crate::mappings;
pub use crate::operation::{Lookup, Operation, Registered, Resource};
use crate::queues;
use crate::schedules;
use crate::store::{StateRead, Txn};
use crate::streams::{self};
use crate::tags;
use crate::topics::{self, subscriptions};
use crate::workers;

/// One Raft log entry's payload: the commands the leader batched together,
/// with the time it stamped on them.
///
/// Batching is how writes share an fsync: openraft 0.9 appends and flushes
/// one entry at a time, so the leader's proposer (the broker's
/// `raft::proposer`) puts every command that arrived while earlier batches
/// were in flight into one entry.
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

/// What `commands!` and `queries!` both generate from their list of
/// operations: the enum the operations are carried in (`$carrier`), the enum
/// their results come back in (`$reply`, a variant per operation holding the
/// output its `$trait` impl declares), the carrier's names, and each
/// operation's `From` and [`Registered`] impls. The variants keep the order
/// of the list, which is their encoding.
macro_rules! carriers {
    (
        $(#[$carrier_doc:meta])* $carrier:ident,
        $(#[$reply_doc:meta])* $reply:ident,
        $trait:ident,
        $( $(#[$doc:meta])* $name:ident($ty:ty), )*
    ) => {
        $(#[$carrier_doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum $carrier {
            $( $(#[$doc])* $name($ty), )*
        }

        $(#[$reply_doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub enum $reply {
            $(
                #[doc = concat!(
                    "What [`", stringify!($carrier), "::", stringify!($name), "`] returns."
                )]
                $name(<$ty as $trait>::Output),
            )*
        }

        impl $carrier {
            /// Short name for logs and metrics.
            pub fn name(&self) -> &'static str {
                match self {
                    $( $carrier::$name(_) => stringify!($name), )*
                }
            }
        }

        $(
            impl From<$ty> for $carrier {
                fn from(op: $ty) -> $carrier {
                    $carrier::$name(op)
                }
            }

            impl Registered for $ty {
                type Carrier = $carrier;
                type Reply = $reply;
                type Output = <$ty as $trait>::Output;
                const NAME: &'static str = stringify!($name);

                fn carry(self) -> $carrier {
                    $carrier::$name(self)
                }

                fn output(reply: $reply) -> Option<Self::Output> {
                    match reply {
                        $reply::$name(out) => Some(out),
                        #[allow(unreachable_patterns)]
                        _ => None,
                    }
                }
            }
        )*
    };
}

/// Declares the commands, in log order: one line each,
/// `Name(domain::Type) => |op| resource;`, the type the domain declares and
/// the one resource an instance `op` touches. It generates [`Command`]
/// (what the log carries), [`CommandOutput`] (a variant per command holding
/// that command's own output type), their names, resource scoping, the
/// dispatch to each [`Operation`], and each command's [`Registered`] impl
/// (how its output comes back typed).
///
/// The encoding is postcard's: a command is its position in this list and
/// then its fields, so a new command goes at the end, and moving one changes
/// the data format (see [`crate::store::codec`]).
macro_rules! commands {
    ($( $(#[$doc:meta])* $name:ident($ty:ty) => |$op:tt| $resource:expr; )*) => {
        carriers! {
            /// A change of replicated state.
            Command,
            /// The result of a successfully applied command: the command's own
            /// output type, under the command's name.
            CommandOutput,
            Operation,
            $( $(#[$doc])* $name($ty), )*
        }

        impl Command {
            /// Roughly how many bytes the command takes in the log; bounds
            /// batches.
            pub fn size_hint(&self) -> usize {
                match self {
                    $( Command::$name(op) => op.size_hint(), )*
                }
            }

            /// The one resource the command touches.
            pub fn resource(&self) -> Resource<'_> {
                match self {
                    $( Command::$name($op) => $resource, )*
                }
            }

            /// Applies the command through its [`Operation`].
            pub(crate) fn apply(
                &self,
                txn: &mut Txn<'_>,
                ctx: &Ctx,
                effects: &mut Effects,
            ) -> ApplyResult<CommandOutput> {
                match self {
                    $( Command::$name(op) => op.apply(txn, ctx, effects).map(CommandOutput::$name), )*
                }
            }
        }
    };
}

commands! {
    /// Create a queue, or confirm an identical one exists.
    CreateQueue(queues::CreateQueue) => |op| Resource::Queue(&op.name);
    /// Delete a queue (its messages are collected in the background).
    DeleteQueue(queues::DeleteQueue) => |op| Resource::Queue(&op.name);
    /// Change queue attributes.
    SetQueueAttributes(queues::SetQueueAttributes) => |op| Resource::Queue(&op.name);
    /// Delete every message.
    PurgeQueue(queues::PurgeQueue) => |op| Resource::Queue(&op.name);
    /// Send one or more messages (SendMessage, SendMessageBatch).
    SendMessages(queues::SendMessages) => |op| Resource::Queue(&op.queue);
    /// Receive messages.
    ReceiveMessages(queues::ReceiveMessages) => |op| Resource::Queue(&op.queue);
    /// Delete messages by receipt handle.
    DeleteMessages(queues::DeleteMessages) => |op| Resource::Queue(&op.queue);
    /// Change the visibility timeout of in-flight messages.
    ChangeVisibility(queues::ChangeVisibility) => |op| Resource::Queue(&op.queue);
    /// The leader's periodic time-driven work on a queue.
    QueueTick(queues::QueueTick) => |op| Resource::Queue(&op.queue);
    /// Delete a bounded part of a purged generation or deleted queue.
    CollectGarbage(queues::CollectGarbage) => |op| Resource::QueueData(op.qid);
    /// Enqueue messages moved from another queue's outbox.
    AcceptMoved(queues::AcceptMoved) => |op| Resource::Queue(&op.queue);
    /// Clear outbox entries whose destination took them.
    AcknowledgeMoved(queues::AcknowledgeMoved) => |op| Resource::Queue(&op.queue);
    /// Start a dead-letter redrive task.
    StartMoveTask(queues::StartMoveTask) => |op| Resource::Queue(&op.queue);
    /// Cancel a move task.
    CancelMoveTask(queues::CancelMoveTask) => |op| Resource::Queue(&op.queue);
    /// Move the next messages of a queue's running task.
    MoveTaskStep(queues::MoveTaskStep) => |op| Resource::Queue(&op.queue);
    /// Create a stream, or confirm an identical one exists.
    CreateStream(streams::CreateStream) => |op| Resource::Stream(&op.name);
    /// Delete a stream (its records are collected in the background).
    DeleteStream(streams::DeleteStream) => |op| Resource::Stream(&op.name);
    /// Put records (PutRecord, PutRecords).
    PutRecords(streams::PutRecords) => |op| Resource::Stream(&op.stream);
    /// Increase or decrease the retention period.
    SetStreamRetention(streams::SetStreamRetention) => |op| Resource::Stream(&op.name);
    /// Split a shard.
    SplitShard(streams::SplitShard) => |op| Resource::Stream(&op.name);
    /// Merge two adjacent shards.
    MergeShards(streams::MergeShards) => |op| Resource::Stream(&op.name);
    /// Rescale to a number of uniform shards.
    UpdateShardCount(streams::UpdateShardCount) => |op| Resource::Stream(&op.name);
    /// Register an enhanced fan-out consumer.
    RegisterConsumer(streams::RegisterConsumer) => |op| Resource::Stream(&op.name);
    /// Deregister a consumer.
    DeregisterConsumer(streams::DeregisterConsumer) => |op| Resource::Stream(&op.name);
    /// Drop a shard's records past retention (the leader's schedule).
    TrimShard(streams::TrimShard) => |op| Resource::Stream(&op.name);
    /// Delete a bounded part of a deleted stream's records.
    CollectStream(streams::CollectStream) => |op| Resource::StreamData(op.sid);
    /// Create a topic, or confirm an identical one exists.
    CreateTopic(topics::CreateTopic) => |op| Resource::Topic(&op.name);
    /// Delete a topic (its subscriptions and outbox are collected later).
    DeleteTopic(topics::DeleteTopic) => |op| Resource::Topic(&op.name);
    /// Set (or, with an empty value, clear) one topic attribute.
    SetTopicAttribute(topics::SetTopicAttribute) => |op| Resource::Topic(&op.name);
    /// Subscribe an endpoint.
    Subscribe(subscriptions::Subscribe) => |op| Resource::Topic(&op.topic);
    /// Confirm a pending HTTP/S subscription.
    ConfirmSubscription(topics::ConfirmSubscription) => |op| Resource::Topic(&op.topic);
    /// Remove a subscription.
    Unsubscribe(topics::Unsubscribe) => |op| Resource::Topic(&op.topic);
    /// Set (or clear) one subscription attribute.
    SetSubscriptionAttribute(topics::SetSubscriptionAttribute) => |op| Resource::Topic(&op.topic);
    /// Publish messages (Publish, PublishBatch).
    Publish(topics::Publish) => |op| Resource::Topic(&op.topic);
    /// Record the results of outbox deliveries.
    SettleDeliveries(topics::SettleDeliveries) => |op| Resource::Topic(&op.topic);
    /// The leader's periodic time-driven work on a topic.
    TopicTick(topics::TopicTick) => |op| Resource::Topic(&op.topic);
    /// Delete a bounded part of a deleted topic's keys.
    CollectTopic(topics::CollectTopic) => |op| Resource::TopicData(op.tid);
    /// Create a function.
    CreateFunction(functions::CreateFunction) => |op| Resource::Function(&op.name);
    /// Replace a function's code.
    UpdateFunctionCode(functions::UpdateFunctionCode) => |op| Resource::Function(&op.name);
    /// Change a function's settings.
    UpdateFunctionConfiguration(functions::UpdateFunctionConfiguration) => |op| Resource::Function(&op.name);
    /// Delete a function.
    DeleteFunction(functions::DeleteFunction) => |op| Resource::Function(&op.name);
    /// Publish `$LATEST` as a version.
    PublishVersion(functions::PublishVersion) => |op| Resource::Function(&op.name);
    /// Create or update an alias.
    PutAlias(functions::PutAlias) => |op| Resource::Function(&op.name);
    /// Delete an alias.
    DeleteAlias(functions::DeleteAlias) => |op| Resource::Function(&op.name);
    /// Set a function's asynchronous invocation settings.
    PutEventInvokeConfig(functions::PutEventInvokeConfig) => |op| Resource::Function(&op.name);
    /// Accept an asynchronous invocation.
    EnqueueEvent(functions::EnqueueEvent) => |op| Resource::Function(&op.name);
    /// Record how a run of an event ended.
    SettleEvent(functions::SettleEvent) => |op| Resource::Function(&op.name);
    /// A worker's heartbeat (the first registers it).
    WorkerHeartbeat(workers::Heartbeat) => |_| Resource::Workers;
    /// A worker stops.
    WorkerLeave(workers::WorkerLeave) => |_| Resource::Workers;
    /// Set (or with `None` remove) a function's reserved concurrency.
    PutFunctionConcurrency(functions::PutFunctionConcurrency) => |op| Resource::Function(&op.name);
    /// Set (or with `None` remove) a version's or alias's provisioned
    /// concurrency.
    PutProvisionedConcurrency(functions::PutProvisionedConcurrency) => |op| Resource::Function(&op.name);
    /// Create an event source mapping.
    CreateEventSourceMapping(mappings::NewMapping) => |op| Resource::Function(&op.function);
    /// Replace a mapping's settings (validated at the edge against the
    /// mapping as it was then).
    UpdateEventSourceMapping(mappings::UpdateEventSourceMapping) => |op| Resource::Function(&op.function);
    /// Delete an event source mapping.
    DeleteEventSourceMapping(mappings::DeleteEventSourceMapping) => |op| Resource::Function(&op.function);
    /// Hand a mapping's slots to workers (the leader's lease manager).
    AssignLeases(mappings::AssignLeases) => |op| Resource::Function(&op.function);
    /// Move a stream mapping's checkpoint (a worker, under its lease).
    CommitCheckpoint(mappings::checkpoints::Commit) => |op| Resource::Function(&op.function);
    /// Record a mapping's `LastProcessingResult` (a worker's poller).
    SetMappingResult(mappings::SetMappingResult) => |op| Resource::Function(&op.function);
    /// Make a principal, with policies attached.
    CreatePrincipal(iam::CreatePrincipal) => |_| Resource::Iam;
    /// Delete a principal and its access keys.
    DeletePrincipal(iam::DeletePrincipal) => |_| Resource::Iam;
    /// Record an access key made at the edge (its secret already sealed).
    CreateAccessKey(iam::CreateAccessKey) => |_| Resource::Iam;
    /// Delete an access key.
    DeleteAccessKey(iam::DeleteAccessKey) => |_| Resource::Iam;
    /// Create or replace a custom policy.
    PutPolicy(iam::PutPolicy) => |_| Resource::Iam;
    /// Delete a custom policy that nothing has attached.
    DeletePolicy(iam::DeletePolicy) => |_| Resource::Iam;
    /// Attach a policy to a principal.
    AttachPolicy(iam::AttachPolicy) => |_| Resource::Iam;
    /// Detach a policy from a principal.
    DetachPolicy(iam::DetachPolicy) => |_| Resource::Iam;
    /// Add or remove tags on a queue, topic or stream.
    Tag(tags::Tag) => |op| op.resource.scope();
    /// Create an event bus.
    CreateEventBus(events::CreateEventBus) => |op| Resource::Bus(&op.name);
    /// Delete an event bus and its rules.
    DeleteEventBus(events::DeleteEventBus) => |op| Resource::Bus(&op.name);
    /// Create or change a rule.
    PutRule(events::NewRule) => |op| Resource::Bus(&op.bus);
    /// Delete a rule.
    DeleteRule(events::DeleteRule) => |op| Resource::Bus(&op.bus);
    /// Enable or disable a rule.
    SetRuleState(events::SetRuleState) => |op| Resource::Bus(&op.bus);
    /// Add or replace a rule's targets.
    PutTargets(events::PutTargets) => |op| Resource::Bus(&op.bus);
    /// Remove a rule's targets.
    RemoveTargets(events::RemoveTargets) => |op| Resource::Bus(&op.bus);
    /// Put events on a bus (routed to its rules' targets in the command).
    PutEvents(events::PutEvents) => |op| Resource::Bus(&op.bus);
    /// Create an archive of a bus's events.
    CreateArchive(events::archive::NewArchive) => |op| Resource::Bus(&op.bus);
    /// Delete an archive.
    DeleteArchive(events::DeleteArchive) => |_| Resource::Archives;
    /// Delete a bounded part of a deleted archive's events.
    CollectArchive(events::CollectArchive) => |_| Resource::Archives;
    /// Drop an archive's events past retention.
    ArchiveTick(events::ArchiveTick) => |_| Resource::Archives;
    /// Start replaying an archive onto its bus.
    StartReplay(events::archive::NewReplay) => |op| Resource::Bus(&op.bus);
    /// Stop a running replay.
    CancelReplay(events::CancelReplay) => |_| Resource::Archives;
    /// Route the next archived events of a replay.
    ReplayStep(events::ReplayStep) => |_| Resource::Archives;
    /// Create a schedule.
    CreateSchedule(schedules::NewSchedule) => |_| Resource::Schedules;
    /// Replace a schedule's settings.
    UpdateSchedule(schedules::UpdateSchedule) => |_| Resource::Schedules;
    /// Delete a schedule.
    DeleteSchedule(schedules::DeleteSchedule) => |_| Resource::Schedules;
    /// Fire a schedule's due time (delivering to its target).
    FireSchedule(schedules::FireSchedule) => |_| Resource::Schedules;
    /// Try a failed delivery to a rule's or schedule's target again.
    RetryDelivery(events::RetryDelivery) => |_| Resource::Retries;
}

/// The result of one command.
pub type CommandResult = Result<CommandOutput, DomainError>;

/// The state machine's reply to one log entry: a result per command of its
/// [`Proposal`] (none for blank and membership entries).
pub type EntryResponse = Vec<CommandResult>;

/// Declares the reads, one line each, `Name(domain::Type);`: it generates
/// [`Query`] (what the wire carries to the leader), [`QueryOutput`] (a
/// variant per read holding that read's own output type), their names, the
/// dispatch to each [`Lookup`], and each read's [`Registered`] impl.
macro_rules! queries {
    ($( $(#[$doc:meta])* $name:ident($ty:ty); )*) => {
        carriers! {
            /// A read of replicated state.
            Query,
            /// The result of a read: the read's own output type, under its name.
            QueryOutput,
            Lookup,
            $( $(#[$doc])* $name($ty), )*
        }

        impl Query {
            /// Answers the read through its [`Lookup`].
            pub(crate) fn read(&self, state: &dyn StateRead) -> ApplyResult<QueryOutput> {
                match self {
                    $( Query::$name(op) => op.read(state).map(QueryOutput::$name), )*
                }
            }
        }
    };
}

queries! {
    /// One queue's record.
    GetQueue(queues::GetQueue);
    /// A page of queue names.
    ListQueues(queues::ListQueues);
    /// A queue's record with its message counts.
    QueueDetails(queues::QueueDetails);
    /// The name of the queue with an id.
    QueueName(queues::QueueName);
    /// Queues that use a queue as their dead-letter queue.
    DeadLetterSources(queues::DeadLetterSources);
    /// A queue's move tasks, newest first.
    MoveTasks(queues::MoveTasks);
    /// A stream's record (settings, shard map, consumers).
    DescribeStream(streams::DescribeStream);
    /// A page of stream names.
    ListStreams(streams::ListStreams);
    /// Records of a shard from a position.
    ReadShard(streams::ReadShard);
    /// A topic with its subscription and outbox counts.
    GetTopic(topics::GetTopic);
    /// A page of topic names.
    ListTopics(topics::ListTopics);
    /// One subscription.
    GetSubscription(topics::GetSubscription);
    /// A page of subscriptions, of one topic or of all.
    ListSubscriptions(topics::ListSubscriptions);
    /// A function's record.
    GetFunction(functions::GetFunction);
    /// A page of functions.
    ListFunctions(functions::ListFunctions);
    /// A function's published versions.
    ListVersions(functions::ListVersions);
    /// A function's aliases.
    ListAliases(functions::ListAliases);
    /// What an invocation with a qualifier runs.
    InvokeTarget(functions::InvokeTarget);
    /// A function's asynchronous invocation settings.
    EventInvokeConfig(functions::EventInvokeConfig);
    /// A code package by hash.
    FunctionCode(functions::FunctionCode);
    /// Where a starting position points in a shard.
    ResolvePosition(streams::ResolvePosition);
    /// The registered workers.
    ListWorkers(workers::ListWorkers);
    /// A function's reserved concurrency.
    FunctionConcurrency(functions::FunctionConcurrency);
    /// Provisioned concurrency configurations: one function's, or all.
    Provisioned(functions::Provisioned);
    /// One event source mapping.
    GetMapping(mappings::GetMapping);
    /// Event source mappings: one function's, or all.
    ListMappings(mappings::ListMappings);
    /// Every mapping lease.
    ListLeases(mappings::ListLeases);
    /// A stream mapping's checkpoints, and when it was created.
    MappingCheckpoints(mappings::MappingCheckpoints);
    /// One principal.
    GetPrincipal(iam::GetPrincipal);
    /// A page of principals.
    ListPrincipals(iam::ListPrincipals);
    /// An access key and its principal.
    GetAccessKey(iam::GetAccessKey);
    /// One custom policy.
    GetPolicy(iam::GetPolicy);
    /// Every custom policy.
    ListPolicies(iam::ListPolicies);
    /// The IAM generation.
    IamGeneration(iam::Generation);
    /// Whether a receive could find a message now.
    Receivable(queues::Receivable);
    /// One event bus.
    DescribeEventBus(events::DescribeEventBus);
    /// A page of event buses.
    ListEventBuses(events::ListEventBuses);
    /// One rule with its targets.
    DescribeRule(events::DescribeRule);
    /// A page of a bus's rules.
    ListRules(events::ListRules);
    /// One archive.
    DescribeArchive(events::DescribeArchive);
    /// Every archive.
    ListArchives(events::ListArchives);
    /// One replay.
    DescribeReplay(events::DescribeReplay);
    /// Every replay.
    ListReplays(events::ListReplays);
    /// One schedule.
    GetSchedule(schedules::GetSchedule);
    /// A page of schedules.
    ListSchedules(schedules::ListSchedules);
}

/// The reply to a query.
pub type QueryResponse = Result<QueryOutput, DomainError>;

impl Command {
    /// The body `r` names when this is the command at `r.command` of
    /// entry `r.index`: message `r.message` of a SendMessages command.
    /// `None` when it is not (the reference and the log disagree: damage).
    /// See `queues::bodies`.
    pub fn sent_body(&self, r: &crate::queues::layout::BodyRef) -> Option<&str> {
        match self {
            Command::SendMessages(send) => send
                .messages
                .get(r.message as usize)
                .map(|m| m.body.as_str()),
            _ => None,
        }
    }
}
