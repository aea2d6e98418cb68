//! Where a queue's messages live in the store, and the records kept there.
//!
//! A queue has an id, never reused, and a *generation* that PurgeQueue bumps:
//! every message key sits under `m/{id}/{generation}/`, so a purge or a
//! DeleteQueue only switches generation (or removes the queue record) and
//! leaves the old keys to be collected in bounded steps.
//!
//! | key under `m/{id}/{gen}/` | value | what for |
//! | --- | --- | --- |
//! | `head/{seq}` | [`Head`] | a message's changing state |
//! | `body/{seq}` | [`Body`] | its immutable content; a sent message's text stays in the log ([`BodyText`]) |
//! | `sent/{sent_ms}/{seq}` | () | retention, oldest first |
//! | `ready/{seq}` | () | standard: messages to receive, oldest first |
//! | `due/{at_ms}/{seq}` | () | delayed and in-flight messages, by when they show |
//! | `grp/{group}/{seq}` | () | FIFO: a group's messages in order |
//! | `gready/{head seq}/{group}` | () | FIFO: groups with a message to give |
//! | `gstate/{group}` | [`GroupState`] | FIFO: messages in flight, ready entry |
//! | `dedup/{scope}/{id}`, `dedupexp/{at}/{scope}/{id}` | [`Dedup`] | FIFO deduplication window |
//! | `attempt/{id}`, `attemptexp/{at}/{id}` | [`Attempt`] | FIFO receive retries |
//! | `out/{seq}` | [`Outbox`] | messages leaving for another queue |
//!
//! Outside the generation: `qstate/{id}` ([`QueueState`]), `movedin/{id}/{from}/{seq}`
//! and `movedinexp/{id}/{at}/{from}/{seq}` (arrivals already taken),
//! `tasks/{id}` (move tasks) and `gc/{id}/{gen}` (generations to collect).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::message::AttributeValue;
use crate::error::ApplyResult;
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

/// The changing state of a queue's messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueState {
    /// Current generation.
    pub gen: u64,
    /// Next message sequence number (never reused in the queue).
    pub next_seq: u64,
    /// Messages that can be received now (approximately: due messages count
    /// once they have been promoted).
    pub available: u64,
    /// Messages waiting out a delay.
    pub delayed: u64,
    /// Messages received and not yet deleted or visible again.
    pub in_flight: u64,
    /// Messages waiting in the outbox to move to another queue.
    pub leaving: u64,
    /// When the last purge happened.
    pub last_purge_ms: Option<u64>,
}

/// Versioned envelope of [`QueueState`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredQueueState {
    /// Version 1.
    V1(QueueState),
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Visibility {
    /// Can be received.
    Available,
    /// Waiting out a delay until the time given.
    Delayed(u64),
    /// Received; hidden until the time given.
    InFlight(u64),
}

/// A message's changing state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    /// Where it is.
    pub visibility: Visibility,
    /// Times received.
    pub receive_count: u32,
    /// First receive, ms.
    pub first_receive_ms: Option<u64>,
    /// When it was sent (kept by a move to a DLQ, renewed by a redrive), ms.
    pub sent_ms: u64,
    /// FIFO (or standard with a group id): its group.
    pub group_id: Option<String>,
}

/// Versioned envelope of [`Head`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredHead {
    /// Version 1.
    V1(Head),
}

/// A message's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// MessageId (kept by a move to a DLQ, new after a redrive).
    #[serde(with = "super::hex_text")]
    pub message_id: String,
    /// The body, or where it is in the log.
    pub body: BodyText,
    /// Message attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// `AWSTraceHeader`.
    pub trace_header: Option<String>,
    /// Hex MD5 of the body.
    #[serde(with = "super::hex_text")]
    pub md5_of_body: String,
    /// Hex MD5 of the attributes.
    pub md5_of_attributes: Option<String>,
    /// FIFO deduplication id.
    pub dedup_id: Option<String>,
    /// Name of the queue it was dead-lettered from.
    pub dead_letter_source: Option<String>,
}

/// A message's body: in the state, or left where the log holds it.
///
/// A message sent by SendMessage(Batch) keeps its body in the log entry that
/// sent it: every node holds the same entry, so the reference means the same
/// everywhere, and the state keeps some 12 bytes instead of the body. The
/// node serving a receive reads the body from its log (or, once the log is
/// purged past it, from the copy its snapshot made) after the commit, off the
/// apply path. Bodies the state machine makes itself (topic deliveries,
/// function results) and those of messages moved between queues are inline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BodyText {
    /// The body itself.
    Inline(String),
    /// The body of message `message` of the SendMessages command at
    /// `position` of a log entry.
    Logged(BodyRef),
}

impl BodyText {
    /// The body, when it is inline.
    pub fn inline(&self) -> Option<&str> {
        match self {
            BodyText::Inline(s) => Some(s),
            BodyText::Logged(_) => None,
        }
    }

    /// Bytes it takes in a command or a record (a reference's few).
    pub fn size(&self) -> usize {
        match self {
            BodyText::Inline(s) => s.len(),
            BodyText::Logged(_) => 20,
        }
    }
}

/// Where a message's body is in the log: message `message` of the
/// SendMessages command `command` of entry `index`, `bytes` long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct BodyRef {
    /// Log index of the entry.
    pub index: u64,
    /// Position of the command in the entry.
    pub command: u32,
    /// Position of the message in the command.
    pub message: u32,
    /// Length of the body in bytes: what keeping the entry holds live (a
    /// log segment whose live bodies are few is not kept whole).
    pub bytes: u32,
}

/// Versioned envelope of [`Body`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredBody {
    /// Version 1.
    V1(Body),
}

/// A FIFO group's state; present while the group has messages.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupState {
    /// Messages of the group in flight; the group gives nothing while > 0.
    pub in_flight: u32,
    /// Head sequence under which the group is listed in `gready`.
    pub ready_head: Option<u64>,
}

/// A deduplication entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    /// When it stops counting, ms.
    pub expires_ms: u64,
    /// What the first send returned.
    pub message_id: String,
    /// Its sequence number.
    pub seq: u64,
}

/// A FIFO receive attempt: what it returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// When it stops counting, ms.
    pub expires_ms: u64,
    /// (sequence, receive count) of each message returned.
    pub received: Vec<(u64, u32)>,
}

/// A message on its way to another queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbox {
    /// Name of the queue it goes to.
    pub destination: String,
    /// The message.
    pub message: Moving,
}

/// A message as it moves between queues.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moving {
    /// Content.
    pub body: Body,
    /// Send time, ms: the original one for a dead letter, the move's for a
    /// redriven message.
    pub sent_ms: u64,
    /// Receive count it arrives with.
    pub receive_count: u32,
    /// First receive it arrives with.
    pub first_receive_ms: Option<u64>,
    /// FIFO group.
    pub group_id: Option<String>,
}

/// A dead-letter redrive task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MoveTask {
    /// Opaque handle.
    pub handle: String,
    /// Where messages go; `None`: each message's source queue.
    pub destination: Option<String>,
    /// Messages per second, if limited.
    pub rate: Option<u32>,
    /// What the task is doing.
    pub status: MoveStatus,
    /// Moved so far.
    pub moved: u64,
    /// Messages in the queue when it started.
    pub to_move: u64,
    /// Start, ms.
    pub started_ms: u64,
    /// Last step, ms (paces rate-limited tasks).
    pub last_step_ms: u64,
    /// Why it failed.
    pub failure: Option<String>,
}

/// A move task's status, as SQS names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MoveStatus {
    /// Moving.
    Running,
    /// Done.
    Completed,
    /// Stopped by CancelMessageMoveTask.
    Cancelled,
    /// Stopped by an error.
    Failed,
}

impl MoveStatus {
    /// The SQS name.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveStatus::Running => "RUNNING",
            MoveStatus::Completed => "COMPLETED",
            MoveStatus::Cancelled => "CANCELLED",
            MoveStatus::Failed => "FAILED",
        }
    }
}

/// Where every queue message key starts (`m/{id}/{gen}/...`): a node may
/// keep these in memory rather than in its storage engine.
pub const MESSAGES: &[u8] = b"m/";

/// The keys of one generation of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keys {
    /// Queue id.
    pub qid: u64,
    /// Generation.
    pub gen: u64,
}

impl Keys {
    /// Everything of this generation.
    pub fn root(&self) -> Vec<u8> {
        Key::new("m").u64(self.qid).u64(self.gen).build()
    }
    fn k(&self, part: &str) -> Key {
        Key::new("m").u64(self.qid).u64(self.gen).str(part)
    }
    /// `head/{seq}`
    pub fn head(&self, seq: u64) -> Vec<u8> {
        self.k("head").u64(seq).build()
    }
    /// `body/{seq}`
    pub fn body(&self, seq: u64) -> Vec<u8> {
        self.k("body").u64(seq).build()
    }
    /// `sent/{ms}/{seq}`
    pub fn sent(&self, ms: u64, seq: u64) -> Vec<u8> {
        self.k("sent").u64(ms).u64(seq).build()
    }
    /// Prefix of `sent/`.
    pub fn sent_prefix(&self) -> Vec<u8> {
        self.k("sent").build()
    }
    /// `ready/{seq}`
    pub fn ready(&self, seq: u64) -> Vec<u8> {
        self.k("ready").u64(seq).build()
    }
    /// Prefix of `ready/`.
    pub fn ready_prefix(&self) -> Vec<u8> {
        self.k("ready").build()
    }
    /// `due/{at}/{seq}`
    pub fn due(&self, at_ms: u64, seq: u64) -> Vec<u8> {
        self.k("due").u64(at_ms).u64(seq).build()
    }
    /// Prefix of `due/`.
    pub fn due_prefix(&self) -> Vec<u8> {
        self.k("due").build()
    }
    /// `grp/{group}/{seq}`
    pub fn grp(&self, group: &str, seq: u64) -> Vec<u8> {
        self.k("grp").str(group).u64(seq).build()
    }
    /// Prefix of one group's messages.
    pub fn grp_prefix(&self, group: &str) -> Vec<u8> {
        self.k("grp").str(group).build()
    }
    /// `gready/{head}/{group}`
    pub fn gready(&self, head: u64, group: &str) -> Vec<u8> {
        self.k("gready").u64(head).str(group).build()
    }
    /// Prefix of `gready/`.
    pub fn gready_prefix(&self) -> Vec<u8> {
        self.k("gready").build()
    }
    /// `gstate/{group}`
    pub fn gstate(&self, group: &str) -> Vec<u8> {
        self.k("gstate").str(group).build()
    }
    /// `dedup/{scope}/{id}`
    pub fn dedup(&self, scope: &str, id: &str) -> Vec<u8> {
        self.k("dedup").str(scope).str(id).build()
    }
    /// `dedupexp/{at}/{scope}/{id}`
    pub fn dedup_exp(&self, at_ms: u64, scope: &str, id: &str) -> Vec<u8> {
        self.k("dedupexp").u64(at_ms).str(scope).str(id).build()
    }
    /// Prefix of `dedupexp/`.
    pub fn dedup_exp_prefix(&self) -> Vec<u8> {
        self.k("dedupexp").build()
    }
    /// `attempt/{id}`
    pub fn attempt(&self, id: &str) -> Vec<u8> {
        self.k("attempt").str(id).build()
    }
    /// `attemptexp/{at}/{id}`
    pub fn attempt_exp(&self, at_ms: u64, id: &str) -> Vec<u8> {
        self.k("attemptexp").u64(at_ms).str(id).build()
    }
    /// Prefix of `attemptexp/`.
    pub fn attempt_exp_prefix(&self) -> Vec<u8> {
        self.k("attemptexp").build()
    }
    /// `out/{seq}`
    pub fn out(&self, seq: u64) -> Vec<u8> {
        self.k("out").u64(seq).build()
    }
    /// Prefix of `out/`.
    pub fn out_prefix(&self) -> Vec<u8> {
        self.k("out").build()
    }
}

/// `qstate/{id}`
pub fn state_key(qid: u64) -> Vec<u8> {
    Key::new("qstate").u64(qid).build()
}

/// `tasks/{id}`
pub fn tasks_key(qid: u64) -> Vec<u8> {
    Key::new("tasks").u64(qid).build()
}

/// `movedin/{id}/{from}/{seq}`
pub fn moved_in_key(qid: u64, from: u64, seq: u64) -> Vec<u8> {
    Key::new("movedin").u64(qid).u64(from).u64(seq).build()
}

/// `movedinexp/{id}/{at}/{from}/{seq}`
pub fn moved_in_exp_key(qid: u64, at_ms: u64, from: u64, seq: u64) -> Vec<u8> {
    Key::new("movedinexp")
        .u64(qid)
        .u64(at_ms)
        .u64(from)
        .u64(seq)
        .build()
}

/// Prefix of one queue's `movedinexp/`.
pub fn moved_in_exp_prefix(qid: u64) -> Vec<u8> {
    Key::new("movedinexp").u64(qid).build()
}

/// `gc/{id}/{gen}`: a generation (or a deleted queue's data) to collect.
pub fn gc_key(qid: u64, gen: u64) -> Vec<u8> {
    Key::new("gc").u64(qid).u64(gen).build()
}

/// Prefix of every `gc/` marker.
pub fn gc_prefix() -> Vec<u8> {
    Key::new("gc").build()
}

/// Reads the `u64` at `offset` of a key.
pub fn u64_at(key: &[u8], offset: usize) -> u64 {
    crate::store::keys::read_u64(key, offset).unwrap_or(0)
}

/// Reads a record.
pub fn get<T: serde::de::DeserializeOwned>(
    state: &dyn StateRead,
    key: &[u8],
) -> ApplyResult<Option<T>> {
    Ok(crate::store::record_at(state, key)?)
}

/// Reads the queue state.
pub fn load_state(state: &dyn StateRead, qid: u64) -> ApplyResult<QueueState> {
    Ok(match get::<StoredQueueState>(state, &state_key(qid))? {
        Some(StoredQueueState::V1(s)) => s,
        None => QueueState::default(),
    })
}

/// Writes the queue state.
pub fn save_state(txn: &mut Txn<'_>, qid: u64, s: &QueueState) {
    txn.put_record(state_key(qid), &StoredQueueState::V1(s.clone()));
}

/// Reads a message's head.
pub fn load_head(state: &dyn StateRead, keys: &Keys, seq: u64) -> ApplyResult<Option<Head>> {
    Ok(get::<StoredHead>(state, &keys.head(seq))?.map(|StoredHead::V1(h)| h))
}

/// Reads a message's body.
pub fn load_body(state: &dyn StateRead, keys: &Keys, seq: u64) -> ApplyResult<Option<Body>> {
    Ok(get::<StoredBody>(state, &keys.body(seq))?.map(|StoredBody::V1(b)| b))
}

/// Writes a message's head.
pub fn save_head(txn: &mut Txn<'_>, keys: &Keys, seq: u64, head: &Head) {
    txn.put_record(keys.head(seq), &StoredHead::V1(head.clone()));
}

/// Offset of the first component after `prefix` in a key that starts with it.
pub fn after(prefix: &[u8]) -> usize {
    prefix.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a node keeps in memory under [`MESSAGES`] is every key of a
    /// queue's messages, and nothing of the queue's own records.
    #[test]
    fn every_message_key_is_under_the_messages_prefix() {
        let k = Keys { qid: 3, gen: 1 };
        for key in [
            k.root(),
            k.head(9),
            k.body(9),
            k.ready(9),
            k.due(5, 9),
            k.out(9),
        ] {
            assert!(key.starts_with(MESSAGES), "{key:?}");
        }
        assert!(!state_key(3).starts_with(MESSAGES));
        assert!(!tasks_key(3).starts_with(MESSAGES));
    }
}
