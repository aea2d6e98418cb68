//! Every operation the public listener serves, in one table: the IAM action
//! it is, the resource it acts on, and who may call it at all. The guard
//! layer (`api::guard`) authorises each call from this table before any
//! handler runs; a path not in it is refused.
//!
//! Actions follow AWS's names where AWS has the operation (`sqs:SendMessage`
//! covers `SendMessageBatch`, as on AWS); Sluice's own operations are
//! `sluice:*` (cluster and workers) and `iam:*` (principals and policies).
//! The resource is an ARN built from one request field (the first non-empty
//! of those listed), with the same parsing the handler uses, so the
//! resource authorised is the one acted on; a field that does not parse
//! stays as given (only a policy allowing `*` matches it, and the handler
//! then refuses it). Operations on several resources (a subscription's
//! endpoint, a move task's destination) are authorised on their main one.
//!
//! The table is checked against the proto descriptors when it is built: a
//! public RPC without an entry, or an entry naming a field its request does
//! not have, fails every test that starts an API.

use std::collections::HashMap;

use prost::Message;

use crate::identity::Identity;

/// Who may call an operation at all, before policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    /// Anyone, unauthenticated: health checks, reflection, probes, metrics,
    /// subscription confirmation links (their token authorises them).
    Public,
    /// Any authenticated caller, with no policy to pass (who am I).
    Authenticated,
    /// Callers whose policies allow the action on the resource.
    Callers,
    /// Worker principals (and nodes), whose policies allow it.
    Workers,
}

/// The request fields a resource is read from, the first non-empty one
/// naming it.
pub type Fields = &'static [&'static str];

/// How the resource of an operation is found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Res {
    /// `*`: lists, and operations on no one resource.
    Any,
    /// The cluster itself.
    Cluster,
    /// A queue by name or URL.
    Queue(Fields),
    /// A queue by ARN.
    QueueArn(Fields),
    /// A message move task's source queue, by the task's handle.
    MoveTask(Fields),
    /// A topic by ARN or name.
    Topic(Fields),
    /// A subscription's topic, by the subscription's ARN.
    Subscription(Fields),
    /// A stream by name, stream ARN or consumer ARN.
    Stream(Fields),
    /// A stream, by a shard iterator it issued.
    Iterator(Fields),
    /// A function by name or ARN.
    Function(Fields),
    /// An event source mapping by UUID.
    Mapping(Fields),
    /// A worker by id.
    Worker(Fields),
    /// A principal by name.
    Principal(Fields),
    /// A policy by name.
    Policy(Fields),
    /// An event bus by name or ARN; empty is the default bus.
    Bus(Fields),
    /// A rule: the first field names its bus (empty: the default bus), the
    /// second the rule.
    Rule(Fields),
    /// An event archive by name or ARN.
    Archive(Fields),
    /// An event replay by name.
    Replay(Fields),
    /// A schedule: the first field names its group (empty: the default
    /// group), the second the schedule.
    Schedule(Fields),
}

impl Res {
    /// The request fields it is read from.
    pub fn fields(&self) -> Fields {
        match self {
            Res::Any | Res::Cluster => &[],
            Res::Queue(f)
            | Res::QueueArn(f)
            | Res::MoveTask(f)
            | Res::Topic(f)
            | Res::Subscription(f)
            | Res::Stream(f)
            | Res::Iterator(f)
            | Res::Function(f)
            | Res::Mapping(f)
            | Res::Worker(f)
            | Res::Principal(f)
            | Res::Policy(f)
            | Res::Bus(f)
            | Res::Rule(f)
            | Res::Archive(f)
            | Res::Replay(f)
            | Res::Schedule(f) => f,
        }
    }
}

/// One operation.
#[derive(Debug, Clone, Copy)]
pub struct Rpc {
    /// gRPC service, e.g. `sluice.v1.Queues` (or `http` for plain routes).
    pub service: &'static str,
    /// Method, e.g. `SendMessage` (or the route's path).
    pub method: &'static str,
    /// IAM action.
    pub action: &'static str,
    /// Its resource.
    pub resource: Res,
    /// Who may call it.
    pub who: Who,
    /// An administrative action: every call is written to the audit log.
    pub admin: bool,
}

const fn op(
    service: &'static str,
    method: &'static str,
    action: &'static str,
    resource: Res,
) -> Rpc {
    Rpc {
        service,
        method,
        action,
        resource,
        who: Who::Callers,
        admin: false,
    }
}

/// For callers whose policies allow it: a row as [`op`] makes it.
const fn callers(rpc: Rpc) -> Rpc {
    rpc
}

/// An administrative operation: every call is audited.
const fn admin(rpc: Rpc) -> Rpc {
    Rpc { admin: true, ..rpc }
}

/// For worker principals (and nodes), whose policies allow it.
const fn workers(rpc: Rpc) -> Rpc {
    Rpc {
        who: Who::Workers,
        ..rpc
    }
}

/// For any authenticated caller, with no policy to pass.
const fn authenticated(rpc: Rpc) -> Rpc {
    Rpc {
        who: Who::Authenticated,
        ..rpc
    }
}

const fn public(service: &'static str, method: &'static str) -> Rpc {
    Rpc {
        who: Who::Public,
        ..op(service, method, "", Res::Any)
    }
}

/// The rows of one service that share who may call them (`callers`,
/// `admin`, ...) and an IAM prefix. `"Method" => resource` is the row of
/// `Method`, its action `prefix:Method`; `"Method" as "Action" =>
/// resource` names another action under the prefix (a batch is
/// authorised as its single call: `SendMessageBatch` is
/// `sqs:SendMessage`).
macro_rules! rows {
    ($who:ident, $service:ident, $prefix:literal, {
        $($method:literal $(as $action:literal)? => $resource:expr,)*
    }) => {
        [$($who(op($service, $method, action!($prefix, $method $(, $action)?), $resource))),*]
    };
}

/// A row's IAM action: `prefix:Method`, or `prefix:Action` when the row
/// names one.
macro_rules! action {
    ($prefix:literal, $method:literal) => {
        concat!($prefix, ":", $method)
    };
    ($prefix:literal, $method:literal, $action:literal) => {
        concat!($prefix, ":", $action)
    };
}

const QUEUES: &str = "sluice.v1.Queues";
const TOPICS: &str = "sluice.v1.Topics";
const STREAMS: &str = "sluice.v1.Streams";
const FUNCTIONS: &str = "sluice.v1.Functions";
const CLUSTER: &str = "sluice.v1.Cluster";
const WORKERS: &str = "sluice.v1.Workers";
const IAM: &str = "sluice.v1.Iam";
const EVENTS: &str = "sluice.v1.Events";
const SCHEDULER: &str = "sluice.v1.Scheduler";
const SCALER: &str = "externalscaler.ExternalScaler";
/// Plain HTTP routes on the public port.
pub const HTTP: &str = "http";

const QUEUE: Res = Res::Queue(&["queue_name"]);
const TOPIC: Res = Res::Topic(&["topic_arn"]);
const SUBSCRIPTION: Res = Res::Subscription(&["subscription_arn"]);
const STREAM: Res = Res::Stream(&["stream_name"]);
const FUNCTION: Res = Res::Function(&["function_name"]);
const MAPPING: Res = Res::Mapping(&["uuid"]);
const PRINCIPAL: Res = Res::Principal(&["name"]);
const POLICY: Res = Res::Policy(&["name"]);
const TAGGED_TOPIC: Res = Res::Topic(&["resource_arn"]);
const BUS: Res = Res::Bus(&["name"]);
const SCHEDULE: Res = Res::Schedule(&["group_name", "name"]);
const RULE: Res = Res::Rule(&["event_bus_name", "name"]);
const RULE_TARGETS: Res = Res::Rule(&["event_bus_name", "rule"]);

/// Every operation of the public listener, service by service.
pub const RPCS: &[&[Rpc]] = &[
    &rows!(callers, QUEUES, "sqs", {
        "CreateQueue" => QUEUE,
        "GetQueueUrl" => QUEUE,
        "ListQueues" => Res::Any,
        "DeleteQueue" => QUEUE,
        "GetQueueAttributes" => QUEUE,
        "SetQueueAttributes" => QUEUE,
        "TagQueue" => QUEUE,
        "UntagQueue" => QUEUE,
        "ListQueueTags" => QUEUE,
        "PurgeQueue" => QUEUE,
        "SendMessage" => QUEUE,
        "SendMessageBatch" as "SendMessage" => QUEUE,
        "SendMessageStream" as "SendMessage" => QUEUE,
        "ReceiveMessage" => QUEUE,
        // Its deletes and visibility changes are authorised as they come,
        // as sqs:DeleteMessage and sqs:ChangeMessageVisibility on the
        // queue (api/receive_stream.rs).
        "ReceiveMessageStream" as "ReceiveMessage" => QUEUE,
        "DeleteMessage" => QUEUE,
        "DeleteMessageBatch" as "DeleteMessage" => QUEUE,
        "ChangeMessageVisibility" => QUEUE,
        "ChangeMessageVisibilityBatch" as "ChangeMessageVisibility" => QUEUE,
        "ListDeadLetterSourceQueues" => QUEUE,
        "StartMessageMoveTask" => Res::QueueArn(&["source_arn"]),
        "ListMessageMoveTasks" => Res::QueueArn(&["source_arn"]),
        "CancelMessageMoveTask" => Res::MoveTask(&["task_handle"]),
    }),
    &rows!(callers, TOPICS, "sns", {
        "CreateTopic" => Res::Topic(&["name"]),
        "DeleteTopic" => TOPIC,
        "ListTopics" => Res::Any,
        "GetTopicAttributes" => TOPIC,
        "SetTopicAttributes" => TOPIC,
        "Subscribe" => TOPIC,
        "ConfirmSubscription" => TOPIC,
        "Unsubscribe" => SUBSCRIPTION,
        "ListSubscriptions" => Res::Any,
        "ListSubscriptionsByTopic" => TOPIC,
        "GetSubscriptionAttributes" => SUBSCRIPTION,
        "SetSubscriptionAttributes" => SUBSCRIPTION,
        "Publish" => TOPIC,
        "PublishBatch" as "Publish" => TOPIC,
        "PublishStream" as "Publish" => TOPIC,
        "TagResource" => TAGGED_TOPIC,
        "UntagResource" => TAGGED_TOPIC,
        "ListTagsForResource" => TAGGED_TOPIC,
    }),
    &rows!(callers, STREAMS, "kinesis", {
        "CreateStream" => STREAM,
        "DeleteStream" => STREAM,
        "ListStreams" => Res::Any,
        "DescribeStream" => STREAM,
        "DescribeStreamSummary" => STREAM,
        "ListShards" => STREAM,
        "PutRecord" => STREAM,
        "PutRecordStream" as "PutRecord" => STREAM,
        "PutRecords" => STREAM,
        "GetShardIterator" => STREAM,
        "GetRecords" => Res::Iterator(&["shard_iterator"]),
        "IncreaseStreamRetentionPeriod" => STREAM,
        "DecreaseStreamRetentionPeriod" => STREAM,
        "SplitShard" => STREAM,
        "MergeShards" => STREAM,
        "UpdateShardCount" => STREAM,
        "AddTagsToStream" => STREAM,
        "RemoveTagsFromStream" => STREAM,
        "ListTagsForStream" => STREAM,
        "RegisterStreamConsumer" => Res::Stream(&["stream_arn"]),
        "DeregisterStreamConsumer" => Res::Stream(&["stream_arn", "consumer_arn"]),
        "ListStreamConsumers" => Res::Stream(&["stream_arn"]),
        "SubscribeToShard" => Res::Stream(&["consumer_arn"]),
    }),
    &rows!(callers, FUNCTIONS, "lambda", {
        "CreateFunction" => FUNCTION,
        "GetFunction" => FUNCTION,
        "ListFunctions" => Res::Any,
        "DeleteFunction" => FUNCTION,
        "UpdateFunctionCode" => FUNCTION,
        "UpdateFunctionConfiguration" => FUNCTION,
        "Invoke" as "InvokeFunction" => FUNCTION,
        "PutFunctionEventInvokeConfig" => FUNCTION,
        "GetFunctionEventInvokeConfig" => FUNCTION,
        "PublishVersion" => FUNCTION,
        "ListVersionsByFunction" => FUNCTION,
        "CreateAlias" => FUNCTION,
        "UpdateAlias" => FUNCTION,
        "GetAlias" => FUNCTION,
        "DeleteAlias" => FUNCTION,
        "ListAliases" => FUNCTION,
        "GetFunctionLogs" => FUNCTION,
        "PutFunctionConcurrency" => FUNCTION,
        "GetFunctionConcurrency" => FUNCTION,
        "DeleteFunctionConcurrency" => FUNCTION,
        "PutProvisionedConcurrencyConfig" => FUNCTION,
        "GetProvisionedConcurrencyConfig" => FUNCTION,
        "DeleteProvisionedConcurrencyConfig" => FUNCTION,
        "CreateEventSourceMapping" => FUNCTION,
        "UpdateEventSourceMapping" => MAPPING,
        "GetEventSourceMapping" => MAPPING,
        "DeleteEventSourceMapping" => MAPPING,
        "ListEventSourceMappings" => Res::Any,
    }),
    &rows!(callers, EVENTS, "events", {
        "CreateEventBus" => BUS,
        "DeleteEventBus" => BUS,
        "DescribeEventBus" => BUS,
        "ListEventBuses" => Res::Any,
        "PutRule" => RULE,
        "DeleteRule" => RULE,
        "DescribeRule" => RULE,
        "ListRules" => Res::Bus(&["event_bus_name"]),
        "EnableRule" => RULE,
        "DisableRule" => RULE,
        "PutTargets" => RULE_TARGETS,
        "RemoveTargets" => RULE_TARGETS,
        "ListTargetsByRule" => RULE_TARGETS,
        "TestEventPattern" => Res::Any,
        // An archive reads its bus: authorised on the bus.
        "CreateArchive" => Res::Bus(&["event_source_arn"]),
        "DescribeArchive" => Res::Archive(&["archive_name"]),
        "ListArchives" => Res::Any,
        "DeleteArchive" => Res::Archive(&["archive_name"]),
        // A replay reads its archive (and is authorised on it here) and
        // writes to its bus (authorised in api/events.rs).
        "StartReplay" => Res::Archive(&["event_source_arn"]),
        "DescribeReplay" => Res::Replay(&["replay_name"]),
        "ListReplays" => Res::Any,
        "CancelReplay" => Res::Replay(&["replay_name"]),
    }),
    // Its entries name their own buses: the call is authorised as
    // events:PutEvents on each of them, before any is put (api/events.rs).
    &rows!(authenticated, EVENTS, "events", {
        "PutEvents" => Res::Any,
    }),
    // A schedule writes to its target: the caller is also authorised for
    // the target's actions (api/scheduler.rs).
    &rows!(callers, SCHEDULER, "scheduler", {
        "CreateSchedule" => SCHEDULE,
        "UpdateSchedule" => SCHEDULE,
        "GetSchedule" => SCHEDULE,
        "DeleteSchedule" => SCHEDULE,
        "ListSchedules" => Res::Any,
    }),
    &rows!(callers, CLUSTER, "sluice", {
        "GetClusterStatus" => Res::Cluster,
    }),
    &rows!(admin, CLUSTER, "sluice", {
        "AddLearner" => Res::Cluster,
        "PromoteLearner" => Res::Cluster,
        "RemoveMember" => Res::Cluster,
        "TransferLeadership" => Res::Cluster,
        "TriggerSnapshot" => Res::Cluster,
    }),
    &rows!(workers, WORKERS, "sluice", {
        "Heartbeat" => Res::Worker(&["worker_id"]),
        "Leave" as "LeaveWorker" => Res::Worker(&["worker_id"]),
        "GetCode" => Res::Any,
        "CommitCheckpoint" => FUNCTION,
        "ReportMappingResult" => FUNCTION,
    }),
    &rows!(callers, WORKERS, "sluice", {
        "ListWorkers" => Res::Any,
    }),
    &rows!(admin, IAM, "iam", {
        "CreatePrincipal" => PRINCIPAL,
        "DeletePrincipal" => PRINCIPAL,
        "CreateAccessKey" => PRINCIPAL,
        "DeleteAccessKey" => PRINCIPAL,
        "PutPolicy" => POLICY,
        "DeletePolicy" => POLICY,
        "AttachPolicy" => PRINCIPAL,
        "DetachPolicy" => PRINCIPAL,
    }),
    &rows!(callers, IAM, "iam", {
        "GetPrincipal" => PRINCIPAL,
        "ListPrincipals" => Res::Any,
        "GetPolicy" => POLICY,
        "ListPolicies" => Res::Any,
    }),
    &rows!(authenticated, IAM, "sts", {
        "GetCallerIdentity" => Res::Any,
    }),
    &rows!(callers, SCALER, "sluice", {
        "IsActive" as "GetScalerMetrics" => Res::Any,
        "StreamIsActive" as "GetScalerMetrics" => Res::Any,
        "GetMetricSpec" as "GetScalerMetrics" => Res::Any,
        "GetMetrics" as "GetScalerMetrics" => Res::Any,
    }),
    &[
        public("grpc.health.v1.Health", "Check"),
        public("grpc.health.v1.Health", "Watch"),
        public(
            "grpc.reflection.v1.ServerReflection",
            "ServerReflectionInfo",
        ),
        public(
            "grpc.reflection.v1alpha.ServerReflection",
            "ServerReflectionInfo",
        ),
        public(HTTP, "/metrics"),
        public(HTTP, "/live"),
        public(HTTP, "/ready"),
        public(HTTP, "/topics/confirm"),
    ],
];

/// An operation as the guard looks it up: its row, and the numbers of the
/// request fields its resource is read from.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The row.
    pub rpc: Rpc,
    /// Field numbers, in the order of [`Res::fields`].
    pub field_numbers: Vec<u32>,
}

/// The table by request path.
#[derive(Debug)]
pub struct Table {
    by_path: HashMap<String, Entry>,
}

/// Services whose methods must all be in the table.
const CHECKED_SERVICES: &[&str] = &[
    QUEUES, TOPICS, STREAMS, FUNCTIONS, EVENTS, CLUSTER, WORKERS, IAM,
];

impl Table {
    /// Builds the table, checking it against the proto descriptors. Panics
    /// if they disagree: a build in which an RPC has no access rule must not
    /// serve.
    pub fn build() -> Table {
        let fds = prost_types::FileDescriptorSet::decode(sluice_proto::FILE_DESCRIPTOR_SET)
            .expect("the generated descriptor set decodes");
        let mut methods: HashMap<String, String> = HashMap::new();
        let mut messages: HashMap<String, &prost_types::DescriptorProto> = HashMap::new();
        for file in &fds.file {
            let pkg = file.package();
            for m in &file.message_type {
                messages.insert(format!(".{pkg}.{}", m.name()), m);
            }
            for s in &file.service {
                for m in &s.method {
                    methods.insert(
                        format!("{pkg}.{}/{}", s.name(), m.name()),
                        m.input_type().to_string(),
                    );
                }
            }
        }
        let mut by_path = HashMap::new();
        for rpc in RPCS.iter().copied().flatten() {
            let path = if rpc.service == HTTP {
                rpc.method.to_string()
            } else {
                format!("/{}/{}", rpc.service, rpc.method)
            };
            let mut field_numbers = Vec::new();
            if !rpc.resource.fields().is_empty() {
                let key = format!("{}/{}", rpc.service, rpc.method);
                let input = methods
                    .get(&key)
                    .unwrap_or_else(|| panic!("access table: {key} is not an RPC"));
                let msg = messages
                    .get(input)
                    .unwrap_or_else(|| panic!("access table: no message {input}"));
                for f in rpc.resource.fields() {
                    let field = msg
                        .field
                        .iter()
                        .find(|x| x.name() == *f)
                        .unwrap_or_else(|| panic!("access table: {key}: {input} has no field {f}"));
                    assert_eq!(
                        field.r#type(),
                        prost_types::field_descriptor_proto::Type::String,
                        "access table: {key}: {f} must be a string"
                    );
                    field_numbers.push(field.number() as u32);
                }
            }
            let previous = by_path.insert(
                path.clone(),
                Entry {
                    rpc: *rpc,
                    field_numbers,
                },
            );
            assert!(previous.is_none(), "access table: {path} is listed twice");
        }
        for key in methods.keys() {
            let (service, _) = key.split_once('/').expect("service/method");
            if CHECKED_SERVICES.contains(&service) {
                assert!(
                    by_path.contains_key(&format!("/{key}")),
                    "access table: {key} has no access rule"
                );
            }
        }
        Table { by_path }
    }

    /// The operation at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.by_path.get(path)
    }
}

/// The last value of string field `number` in an encoded protobuf message
/// (protobuf's rule: the last occurrence wins, as the handler's decoder
/// will see it), skipping everything else without copying it. `None` if
/// the field is absent or the message does not parse.
pub fn string_field(mut msg: &[u8], number: u32) -> Option<&str> {
    fn varint(b: &mut &[u8]) -> Option<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let (&byte, rest) = b.split_first()?;
            *b = rest;
            v |= u64::from(byte & 0x7f) << (7 * i);
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    let mut found = None;
    while !msg.is_empty() {
        let key = varint(&mut msg)?;
        let (field, wire) = ((key >> 3) as u32, key & 7);
        match wire {
            0 => {
                varint(&mut msg)?;
            }
            1 => msg = msg.get(8..)?,
            2 => {
                let len = usize::try_from(varint(&mut msg)?).ok()?;
                let value = msg.get(..len)?;
                msg = &msg[len..];
                if field == number {
                    found = Some(std::str::from_utf8(value).ok()?);
                }
            }
            5 => msg = msg.get(4..)?,
            _ => return None,
        }
    }
    found
}

/// The ARN `res` names for a request whose string fields are `values` (in
/// the order of [`Res::fields`]), with `lookup` answering what only the
/// state knows (a move task's queue by the queue id in its handle, a shard
/// iterator's stream).
pub fn resource(
    res: &Res,
    values: &[Option<&str>],
    id: &Identity,
    lookup: &dyn Fn(&Res, &str) -> Option<String>,
) -> String {
    let given = values.iter().flatten().find(|v| !v.is_empty()).copied();
    let Some(v) = given else {
        return match res {
            Res::Cluster => id.sluice_arn("cluster"),
            Res::Bus(_) => id.bus_arn(crate::events::DEFAULT_BUS),
            _ => "*".into(),
        };
    };
    let named = match res {
        Res::Any => return "*".into(),
        Res::Cluster => return id.sluice_arn("cluster"),
        Res::Queue(_) => super::queue_messages::queue_ref(id, "", v)
            .ok()
            .map(|n| id.queue_arn(&n)),
        Res::QueueArn(_) => crate::queues::attributes::queue_name_from_arn(v)
            .filter(|n| crate::queues::validate_name("", n).is_ok())
            .map(|n| id.queue_arn(n)),
        Res::MoveTask(_) | Res::Iterator(_) => lookup(res, v),
        Res::Topic(_) => super::refs::topic_ref("", v).ok().map(|n| id.topic_arn(&n)),
        Res::Subscription(_) => super::topics::subscription_ref("", v)
            .ok()
            .map(|(t, _)| id.topic_arn(&t)),
        Res::Stream(_) => super::refs::stream_ref("", v)
            .ok()
            .map(|n| id.stream_arn(&n)),
        Res::Function(_) => super::functions::name_ref("", v)
            .ok()
            .map(|n| id.function_arn(&n)),
        Res::Mapping(_) => (v.len() <= 64
            && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'))
        .then(|| id.mapping_arn(v)),
        Res::Worker(_) => sluice_worker::validate_id(v)
            .ok()
            .map(|_| id.sluice_arn(&format!("worker/{v}"))),
        Res::Principal(_) => crate::iam::validate_name("", v)
            .ok()
            .map(|_| id.principal_arn(v)),
        Res::Policy(_) => crate::iam::validate_name("", v)
            .ok()
            .map(|_| id.policy_arn(v)),
        Res::Bus(_) => super::events::bus_ref("", v).ok().map(|b| id.bus_arn(&b)),
        Res::Archive(_) => super::events::archive_ref("", v)
            .ok()
            .map(|a| id.events_arn("archive", &a)),
        Res::Replay(_) => {
            sluice_core::names::is_valid(v, 64, "._-").then(|| id.events_arn("replay", v))
        }
        Res::Schedule(_) => {
            let field = |i: usize| values.get(i).copied().flatten().unwrap_or("");
            let group = match field(0) {
                "" => crate::schedules::DEFAULT_GROUP,
                g => g,
            };
            let name = field(1);
            (crate::schedules::validate_name("", name).is_ok()
                && sluice_core::names::is_valid(group, 64, "._-"))
            .then(|| id.schedule_arn(group, name))
        }
        Res::Rule(_) => {
            let field = |i: usize| values.get(i).copied().flatten().unwrap_or("");
            let bus = super::events::bus_ref("", field(0)).ok();
            let rule = field(1);
            bus.filter(|_| crate::events::validate_rule_name("", rule).is_ok())
                .map(|b| id.rule_arn(&b, rule))
        }
    };
    // What does not parse stays as given (cut short): only `*` matches it.
    named.unwrap_or_else(|| v.chars().take(256).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_public_rpc_has_one_rule_and_its_fields_exist() {
        let t = Table::build();
        let e = t.get("/sluice.v1.Queues/SendMessageBatch").unwrap();
        assert_eq!(e.rpc.action, "sqs:SendMessage");
        assert_eq!(e.field_numbers, vec![1]);
        assert!(t.get("/sluice.internal.v1.Raft/AppendEntries").is_none());
        assert!(t.get("/sluice.v1.WorkerHost/Run").is_none());
    }

    #[test]
    fn the_scanner_finds_the_last_value_of_a_field_and_skips_the_rest() {
        use sluice_proto::v1 as pb;
        let m = pb::SendMessageRequest {
            queue_name: "orders".into(),
            message_body: "x".repeat(300),
            delay_seconds: Some(5),
            ..Default::default()
        };
        let bytes = m.encode_to_vec();
        assert_eq!(string_field(&bytes, 1), Some("orders"));
        assert_eq!(string_field(&bytes, 2).map(str::len), Some(300));
        assert_eq!(string_field(&bytes, 9), None);
        // The same field twice: the decoder keeps the last, and so must we.
        let mut twice = bytes.clone();
        twice.extend(
            pb::SendMessageRequest {
                queue_name: "secrets".into(),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        assert_eq!(
            pb::SendMessageRequest::decode(twice.as_slice())
                .unwrap()
                .queue_name,
            "secrets"
        );
        assert_eq!(string_field(&twice, 1), Some("secrets"));
        assert_eq!(string_field(&[0x0a, 0x05, b'a'], 1), None, "truncated");
    }

    #[test]
    fn resources_are_the_arns_the_handlers_act_on() {
        let id = Identity::default();
        let none = |_: &Res, _: &str| None;
        let r = |res: Res, v: &str| resource(&res, &[Some(v)], &id, &none);
        assert_eq!(
            r(QUEUE, "orders"),
            "arn:aws:sqs:us-east-1:000000000000:orders"
        );
        assert_eq!(
            r(QUEUE, "http://h:7070/000000000000/orders"),
            "arn:aws:sqs:us-east-1:000000000000:orders"
        );
        assert_eq!(
            r(TOPIC, "arn:aws:sns:eu-west-1:111:alerts"),
            "arn:aws:sns:us-east-1:000000000000:alerts"
        );
        assert_eq!(
            r(
                SUBSCRIPTION,
                "arn:aws:sns:us-east-1:000000000000:alerts:abc-1"
            ),
            "arn:aws:sns:us-east-1:000000000000:alerts"
        );
        assert_eq!(
            r(
                Res::Stream(&["consumer_arn"]),
                "arn:aws:kinesis:us-east-1:000000000000:stream/clicks/consumer/c:1"
            ),
            "arn:aws:kinesis:us-east-1:000000000000:stream/clicks"
        );
        assert_eq!(
            r(FUNCTION, "arn:aws:lambda:us-east-1:000000000000:function:f"),
            "arn:aws:lambda:us-east-1:000000000000:function:f"
        );
        assert_eq!(r(QUEUE, "bad name!"), "bad name!");
        assert_eq!(resource(&QUEUE, &[None], &id, &none), "*");
        assert_eq!(
            resource(
                &Res::Stream(&["stream_arn", "consumer_arn"]),
                &[Some(""), Some("arn:aws:kinesis:r:a:stream/s/consumer/c:1")],
                &id,
                &none
            ),
            "arn:aws:kinesis:us-east-1:000000000000:stream/s"
        );
        // A bus by name or ARN; none is the default bus.
        assert_eq!(
            r(BUS, "arn:aws:events:eu-west-1:111:event-bus/app"),
            "arn:aws:events:us-east-1:000000000000:event-bus/app"
        );
        assert_eq!(
            resource(&BUS, &[Some("")], &id, &none),
            "arn:aws:events:us-east-1:000000000000:event-bus/default"
        );
        // A rule on the default bus leaves the bus out of its ARN.
        let rule = |bus: &str, name: &str| resource(&RULE, &[Some(bus), Some(name)], &id, &none);
        assert_eq!(
            rule("", "orders"),
            "arn:aws:events:us-east-1:000000000000:rule/orders"
        );
        assert_eq!(
            rule("app", "orders"),
            "arn:aws:events:us-east-1:000000000000:rule/app/orders"
        );
        assert_eq!(rule("app", "bad name"), "app");
    }
}
