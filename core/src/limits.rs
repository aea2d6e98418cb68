//! The limits that bound what one request, one command and one log entry
//! may carry, stated once and grouped by resource, with the relations
//! between them checked when the crate compiles.
//!
//! A request's bytes travel a chain: the gRPC decoder's cap on the public
//! listener, the command in a Raft entry, the entry in a log record and in
//! an AppendEntries call between nodes, and the stored value in a snapshot.
//! Each link must hold the largest thing the one before lets through; the
//! `const` assertions at the end of this file fail the build when a change
//! to one limit breaks the chain. The domain modules re-export the limits
//! they enforce (`queues::NAME_MAX` is `limits::queues::NAME_MAX`); limits
//! that concern one module only (page sizes, step sizes of housekeeping)
//! stay with it.

/// Queues (SQS's limits).
pub mod queues {
    /// Longest queue name, including any `.fifo` suffix.
    pub const NAME_MAX: usize = 80;
    /// Largest message (body and attributes) any queue accepts, bytes; also
    /// the top of the settable `MaximumMessageSize` range.
    pub const MESSAGE_BYTES_MAX: usize = 1_048_576;
    /// Entries in a batch request (SendMessageBatch, DeleteMessageBatch, ...).
    pub const BATCH_MAX: usize = 10;
    /// Messages of one SendMessageStream that may wait for their replies at
    /// once; the node reads no further from the stream until replies go
    /// out, so a stream holds at most this many messages in memory.
    pub const STREAM_IN_FLIGHT: usize = 1024;
    /// Bytes of messages of one SendMessageStream waiting for their replies
    /// at once (the other bound on what a stream holds).
    pub const STREAM_IN_FLIGHT_BYTES: usize = 8 * MESSAGE_BYTES_MAX;
    /// Messages of a stream that arrive together and go into one command,
    /// as a batch does; together at most [`MESSAGE_BYTES_MAX`] bytes, the
    /// bound of a batch.
    pub const STREAM_COMMAND_MAX: usize = 64;
    /// Credit a ReceiveMessageStream may hold (messages the client has
    /// room for); grants past it are capped.
    pub const RECEIVE_STREAM_CREDIT_MAX: u64 = 10_000;
    /// Receives of one ReceiveMessageStream in flight at once (each of up
    /// to [`RECEIVE_MAX`] messages, as ReceiveMessage's).
    pub const RECEIVE_STREAM_RECEIVES: usize = 16;
    /// Deletes and visibility changes of one ReceiveMessageStream waiting
    /// to be settled; past it the node reads no further from the stream.
    pub const RECEIVE_STREAM_SETTLING: usize = 1024;
    /// Deletes (or visibility changes) that arrive together and go into
    /// one command.
    pub const RECEIVE_STREAM_SETTLE_COMMAND_MAX: usize = 100;
    /// Most messages one ReceiveMessage returns.
    pub const RECEIVE_MAX: u32 = 10;
}

/// Tags, alike on queues, topics and streams.
pub mod tags {
    /// Most tags on one resource.
    pub const TAGS_MAX: usize = 50;
    /// Longest tag key, characters.
    pub const KEY_MAX: usize = 128;
    /// Longest tag value, characters.
    pub const VALUE_MAX: usize = 256;
}

/// Topics (SNS's limits).
pub mod topics {
    /// Longest topic name, including any `.fifo` suffix.
    pub const NAME_MAX: usize = 256;
    /// Largest message (body and attributes), bytes.
    pub const MESSAGE_BYTES_MAX: usize = 262_144;
    /// Most entries in a PublishBatch.
    pub const BATCH_MAX: usize = 10;
    /// Most bytes one publish command may copy to its subscriptions: a
    /// deterministic bound on the memory a command takes to apply.
    pub const FAN_OUT_BYTES_MAX: usize = 64 << 20;
    /// Messages of one PublishStream waiting for their replies at once;
    /// the node reads no further from the stream until replies go out.
    pub const PUBLISH_STREAM_IN_FLIGHT: usize = 1024;
    /// Bytes of messages of one PublishStream waiting for their replies
    /// at once.
    pub const PUBLISH_STREAM_IN_FLIGHT_BYTES: usize = 32 * MESSAGE_BYTES_MAX;
    /// Messages of a PublishStream that arrive together go into one
    /// command within a PublishBatch's bounds (this many, and
    /// [`MESSAGE_BYTES_MAX`] bytes in all), so that a command's fan-out is
    /// what a batch's is.
    pub const PUBLISH_STREAM_COMMAND_MAX: usize = BATCH_MAX;
}

/// Streams (Kinesis's limits).
pub mod streams {
    /// Longest stream (and consumer) name.
    pub const NAME_MAX: usize = 128;
    /// Largest settable record, bytes.
    pub const RECORD_BYTES_MAX: u32 = 10_485_760;
    /// Most records in one PutRecords.
    pub const PUT_RECORDS_MAX: usize = 500;
    /// Most bytes in one PutRecords (data and partition keys).
    pub const PUT_BYTES_MAX: usize = 5 * 1024 * 1024;
    /// Room for the partition and hash keys of a full PutRecords.
    pub const PUT_KEYS_BYTES: usize = 512 * 1024;
    /// Most bytes of data one GetRecords returns (a single larger record is
    /// still returned alone, so a reader is never stuck behind it).
    pub const READ_BYTES_MAX: u64 = 10 << 20;
    /// Longest a GetRecords waits for a record to be appended when there is
    /// nothing after its iterator (Sluice's `wait_time_ms`; an SQS long
    /// poll's 20 s).
    pub const READ_WAIT_MS_MAX: u32 = 20_000;
    /// Records of one PutRecordStream waiting for their replies at once;
    /// the node reads no further from the stream until replies go out.
    pub const PUT_STREAM_IN_FLIGHT: usize = 1024;
    /// Bytes of records of one PutRecordStream waiting for their replies
    /// at once (plus the one record read last, which may be larger).
    pub const PUT_STREAM_IN_FLIGHT_BYTES: usize = 8 << 20;
    /// Records of a PutRecordStream that arrive together go into one
    /// command, as a PutRecords does, within its bounds.
    pub const PUT_STREAM_COMMAND_MAX: usize = PUT_RECORDS_MAX;
}

/// Functions (Lambda's limits).
pub mod functions {
    /// Longest function name.
    pub const NAME_MAX: usize = 64;
    /// Largest code package, bytes: it travels in a Raft entry.
    pub const CODE_BYTES_MAX: usize = 10 << 20;
    /// Largest synchronous invocation payload, bytes.
    pub const INVOKE_PAYLOAD_MAX: usize = 6 << 20;
    /// Largest asynchronous (`Event`) invocation payload, bytes.
    pub const EVENT_PAYLOAD_MAX: usize = 256 << 10;
}

/// Event buses (EventBridge's limits).
pub mod events {
    /// Longest event bus name.
    pub const BUS_NAME_MAX: usize = 256;
    /// Longest rule name, and longest target id.
    pub const RULE_NAME_MAX: usize = 64;
    /// Most event buses, the default one included.
    pub const BUSES_MAX: usize = 100;
    /// Most rules on one bus.
    pub const RULES_PER_BUS_MAX: usize = 300;
    /// Most targets of one rule.
    pub const TARGETS_PER_RULE_MAX: usize = 5;
    /// Most entries in one PutEvents.
    pub const PUT_EVENTS_MAX: usize = 10;
    /// Most bytes of one PutEvents' entries, counted as EventBridge counts
    /// them (source, detail type, detail, resources, 14 for a time).
    pub const PUT_EVENTS_BYTES_MAX: usize = 256 * 1024;
    /// Most bytes one PutEvents command may copy to its rules' targets: a
    /// deterministic bound on the memory a command takes to apply.
    pub const FAN_OUT_BYTES_MAX: usize = 64 << 20;
    /// Most hops an event takes from bus to bus within one PutEvents.
    pub const BUS_HOPS_MAX: usize = 2;
    /// Most failed deliveries waiting to be tried again; past it a failure
    /// is final (the dead-letter queue takes it).
    pub const RETRIES_MAX: usize = 100_000;
    /// Most tries after the first a retry policy may ask for.
    pub const RETRY_ATTEMPTS_MAX: u32 = 185;
    /// Shortest and longest age a retry policy may give a delivery, s.
    pub const RETRY_AGE_S: (u32, u32) = (60, 86_400);
}

/// Schedules (EventBridge Scheduler's limits).
pub mod schedules {
    /// Longest schedule name.
    pub const NAME_MAX: usize = 64;
    /// Most schedules.
    pub const SCHEDULES_MAX: usize = 10_000;
    /// Longest description, characters.
    pub const DESCRIPTION_MAX: usize = 512;
    /// Longest target input, bytes (the largest payload a target takes).
    pub const INPUT_MAX: usize = 256 * 1024;
    /// Widest flexible time window, minutes.
    pub const WINDOW_MINUTES_MAX: u32 = 1440;
    /// Shortest and longest age of a due time still fired late, seconds
    /// (a target's retry policy's bounds, [`super::events::RETRY_AGE_S`]).
    pub const EVENT_AGE_S: (u32, u32) = super::events::RETRY_AGE_S;
    /// Most retry attempts a target may name.
    pub const RETRY_ATTEMPTS_MAX: u32 = super::events::RETRY_ATTEMPTS_MAX;
}

/// IAM.
pub mod iam {
    /// Longest principal or policy name.
    pub const NAME_MAX: usize = 64;
}

/// Requests on the node's listeners.
pub mod requests {
    /// Room for a request's fields besides its payload.
    pub const SLACK: usize = 64 * 1024;
    /// What a call without a payload may send.
    pub const DEFAULT_BYTES: usize = (1 << 20) + SLACK;
    /// Largest public request: a batch of ten 1 MiB messages with attributes,
    /// a code package.
    pub const PUBLIC_MESSAGE_MAX: usize = 16 * 1024 * 1024;
    /// Largest message the internal services accept: Raft batches carry many
    /// client requests, and forwarded calls carry public ones.
    pub const INTERNAL_MESSAGE_MAX: usize = 512 * 1024 * 1024;
    /// Largest message between a node and a worker: a code package, an
    /// invocation's payload or result.
    pub const WORKER_MESSAGE_MAX: usize = 16 << 20;
}

/// Replication and storage of the log.
pub mod replication {
    /// Approximate bytes of commands the proposer puts in one entry; the
    /// first command of an entry always goes in, whatever its size.
    pub const PROPOSAL_BYTES: usize = 1 << 20;
    /// About how many bytes of entries one AppendEntries carries; the first
    /// entry always goes, whatever its size.
    pub const APPEND_BYTES_MAX: usize = 8 << 20;
    /// Bytes of snapshot data per streamed chunk.
    pub const SNAPSHOT_CHUNK: usize = 1 << 20;
    /// Largest log record (one entry) the log files accept.
    pub const LOG_RECORD_MAX: u32 = 1 << 30;
    /// Largest key or value in a snapshot file.
    pub const SNAPSHOT_FIELD_MAX: u32 = 256 * 1024 * 1024;
}

use replication::*;
use requests::*;

/// The largest command one public request can become (its payload; the
/// command's own fields are within the slack).
const LARGEST_REQUEST: usize = PUBLIC_MESSAGE_MAX;
/// The largest entry: a proposal filled up to its size, plus the one
/// command that crossed it.
const LARGEST_ENTRY: usize = PROPOSAL_BYTES + LARGEST_REQUEST;

// Every request the API accepts fits the public listener's decoder.
const _: () = assert!(queues::BATCH_MAX * queues::MESSAGE_BYTES_MAX + SLACK <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(topics::BATCH_MAX * topics::MESSAGE_BYTES_MAX + SLACK <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(streams::RECORD_BYTES_MAX as usize + SLACK <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(streams::PUT_BYTES_MAX + streams::PUT_KEYS_BYTES <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(functions::CODE_BYTES_MAX + SLACK <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(functions::INVOKE_PAYLOAD_MAX + SLACK <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(DEFAULT_BYTES <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(functions::EVENT_PAYLOAD_MAX <= functions::INVOKE_PAYLOAD_MAX);
// What a worker fetches or is handed (code, payloads) fits its channel.
const _: () = assert!(functions::CODE_BYTES_MAX + SLACK <= WORKER_MESSAGE_MAX);
const _: () = assert!(functions::INVOKE_PAYLOAD_MAX + SLACK <= WORKER_MESSAGE_MAX);
// A record a stream accepts can be read back.
const _: () = assert!(streams::RECORD_BYTES_MAX as u64 <= streams::READ_BYTES_MAX);
// A publish of the largest message reaches at least a few subscriptions.
const _: () = assert!(topics::FAN_OUT_BYTES_MAX >= 16 * topics::MESSAGE_BYTES_MAX);
// A PutEvents fits the public listener, and its largest entry reaches
// every target of a few rules.
const _: () = assert!(events::PUT_EVENTS_BYTES_MAX + SLACK <= PUBLIC_MESSAGE_MAX);
const _: () = assert!(
    events::FAN_OUT_BYTES_MAX >= 8 * events::TARGETS_PER_RULE_MAX * events::PUT_EVENTS_BYTES_MAX
);
// A call forwarded to the leader fits the internal listener.
const _: () = assert!(PUBLIC_MESSAGE_MAX + SLACK <= INTERNAL_MESSAGE_MAX);
// The largest entry fits a log record, and an AppendEntries that carries it
// (with a full batch before it) fits the internal listener.
const _: () = assert!(LARGEST_ENTRY <= LOG_RECORD_MAX as usize);
const _: () = assert!(APPEND_BYTES_MAX + LARGEST_ENTRY + SLACK <= INTERNAL_MESSAGE_MAX);
// The largest value the state stores (a code package, a record) fits a
// snapshot field, and a snapshot chunk fits the internal listener.
const _: () = assert!(functions::CODE_BYTES_MAX <= SNAPSHOT_FIELD_MAX as usize);
const _: () = assert!(streams::RECORD_BYTES_MAX <= SNAPSHOT_FIELD_MAX);
const _: () = assert!(SNAPSHOT_CHUNK + SLACK <= INTERNAL_MESSAGE_MAX);
