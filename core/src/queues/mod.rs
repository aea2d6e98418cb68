//! Queues: SQS-style work queues.
//!
//! This module is pure domain logic: functions take a command or query and a
//! store ([`Txn`] / [`StateRead`]) and return a result. No clocks, no I/O; the
//! time comes in the [`Ctx`] the state machine passes.
//!
//! Store layout (see [`crate::store::keys`]):
//!
//! | key | value |
//! | --- | --- |
//! | `queue/{name}` | [`StoredQueue`] |
//! | `qname/{id}` | the queue's name |
//! | `seq/queue-id` | next queue id, `u64` |
//!
//! Messages live under the queue's id; see [`layout`].

pub mod attributes;
pub mod bodies;
pub mod delivery;
pub mod fifo;
pub mod hex_text;
pub mod housekeeping;
pub mod invariants;
pub mod layout;
pub mod message;
pub mod operations;
pub mod receipt;
pub mod redrive;
#[cfg(test)]
mod scenarios;

pub use operations::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{ApplyResult, DomainError};
use crate::names::FIFO_SUFFIX;
use crate::store::keys::{self, Key};
use crate::store::{codec, StateRead, Txn};

pub use attributes::{Attribute, QueueAttributes};

pub use crate::limits::queues::NAME_MAX;
/// Longest page of `ListQueues`.
pub const LIST_MAX_RESULTS: usize = 1000;

/// Checks a queue name: 1-80 characters of `[A-Za-z0-9_-]`, optionally ending
/// in `.fifo`. `field` names the request field in the error.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    crate::names::validate_fifo_name(
        "InvalidParameterValue",
        field,
        name,
        NAME_MAX,
        "must be 1-80 characters of A-Z, a-z, 0-9, '_' and '-', FIFO queue names ending in .fifo",
    )
}

/// True for FIFO queue names.
pub fn is_fifo_name(name: &str) -> bool {
    name.ends_with(FIFO_SUFFIX)
}

/// A queue as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queue {
    /// Queue name.
    pub name: String,
    /// Internal id, unique over the cluster's life: a queue re-created under
    /// the same name gets a new one, so nothing of the old queue leaks in.
    pub id: u64,
    /// State-machine time of creation, ms since the epoch.
    pub created_ms: u64,
    /// State-machine time of the last attribute change.
    pub modified_ms: u64,
    /// Settings.
    pub attributes: QueueAttributes,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

crate::tags::has_tags!(Queue);

/// Versioned envelope of [`Queue`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredQueue {
    /// Version 1.
    V1(Queue),
}

fn queue_key(name: &str) -> Vec<u8> {
    Key::new("queue").str(name).build()
}

fn next_id_key() -> Vec<u8> {
    Key::new("seq").str("queue-id").build()
}

fn name_key(qid: u64) -> Vec<u8> {
    Key::new("qname").u64(qid).build()
}

/// The name of the queue with id `qid`, if it exists.
pub fn name_of(state: &dyn StateRead, qid: u64) -> ApplyResult<Option<String>> {
    Ok(crate::store::record_at(state, &name_key(qid))?)
}

/// Reads a queue's record.
pub fn load(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Queue>> {
    Ok(crate::store::record_at(state, &queue_key(name))?.map(|StoredQueue::V1(q)| q))
}

/// Reads a queue's record or fails with `QueueDoesNotExist`.
pub fn require(state: &dyn StateRead, name: &str) -> ApplyResult<Queue> {
    load(state, name)?.ok_or_else(|| does_not_exist(name).into())
}

/// The error for a missing queue.
pub fn does_not_exist(name: &str) -> DomainError {
    DomainError::not_found(
        "QueueDoesNotExist",
        format!("queue {name:?} does not exist"),
    )
}

/// The `CreateQueue` command, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CreateQueue {
    /// Queue name.
    pub name: String,
    /// Attributes the request set (the rest take their defaults).
    pub attributes: Vec<Attribute>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl CreateQueue {
    /// Validates a request at the edge and builds the command.
    pub fn new(
        name: &str,
        attributes: &BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
    ) -> Result<Self, DomainError> {
        validate_name("queue_name", name)?;
        let fifo = is_fifo_name(name);
        // SQS does not infer FIFO from the name: a name ending in .fifo
        // without FifoQueue=true is a standard queue's, and a standard
        // queue's name cannot hold the '.'.
        if fifo && attributes.get("FifoQueue").map(String::as_str) != Some("true") {
            return Err(DomainError::invalid(
                "queue_name",
                "a name ending in .fifo is a FIFO queue's and needs the attribute FifoQueue=true; a standard queue's name is 1-80 characters of A-Z, a-z, 0-9, '_' and '-'",
            ));
        }
        let parsed = attributes::parse(attributes, fifo)?;
        attributes::check_combination(&QueueAttributes::defaults(fifo).with(&parsed))?;
        crate::tags::validate(&tags, crate::tags::invalid_parameter)?;
        Ok(CreateQueue {
            name: name.to_string(),
            attributes: parsed,
            tags,
        })
    }
}

/// Applies `CreateQueue`: creates the queue, or returns `created: false` when
/// it exists with matching attributes, or fails with `QueueNameExists`.
pub fn create(txn: &mut Txn<'_>, ctx: &Ctx, cmd: &CreateQueue) -> ApplyResult<bool> {
    if let Some(existing) = load(txn, &cmd.name)? {
        if existing.attributes.matches(&cmd.attributes) {
            return Ok(false);
        }
        return Err(DomainError::already_exists(
            "QueueNameExists",
            format!(
                "queue {:?} already exists with different attributes",
                cmd.name
            ),
        )
        .into());
    }
    let fifo = is_fifo_name(&cmd.name);
    let attributes = QueueAttributes::defaults(fifo).with(&cmd.attributes);
    let id = txn.next_id(next_id_key())?;
    let queue = Queue {
        name: cmd.name.clone(),
        id,
        created_ms: ctx.now_ms,
        modified_ms: ctx.now_ms,
        attributes,
        tags: cmd.tags.clone(),
    };
    txn.put_record(name_key(id), &cmd.name);
    txn.put_record(queue_key(&cmd.name), &StoredQueue::V1(queue));
    Ok(true)
}

/// Applies `DeleteQueue`: the record goes at once, the messages are
/// collected in the background.
pub fn delete(txn: &mut Txn<'_>, name: &str) -> ApplyResult<()> {
    let q = require(txn, name)?;
    let state = layout::load_state(txn, q.id)?;
    txn.put_record(layout::gc_key(q.id, state.gen), &true);
    txn.delete(name_key(q.id));
    txn.delete(queue_key(name));
    Ok(())
}

/// Writes a queue's record.
pub fn save(txn: &mut Txn<'_>, q: &Queue) {
    txn.put_record(queue_key(&q.name), &StoredQueue::V1(q.clone()));
}

/// Applies `SetQueueAttributes`.
pub fn set_attributes(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    attrs: &[Attribute],
) -> ApplyResult<()> {
    let mut q = require(txn, name)?;
    if attrs
        .iter()
        .any(|a| matches!(a, Attribute::FifoQueue(v) if *v != q.attributes.fifo))
    {
        return Err(DomainError::invalid_with_code(
            "InvalidAttributeName",
            "attributes.FifoQueue",
            "cannot be changed after the queue is created",
        )
        .into());
    }
    let updated = q.attributes.clone().with(attrs);
    attributes::check_combination(&updated)?;
    q.attributes = updated;
    q.modified_ms = ctx.now_ms;
    save(txn, &q);
    Ok(())
}

/// Names of the queues whose redrive policy names `name` as their
/// dead-letter queue, after `after`, at most `limit`.
pub fn dead_letter_sources(
    state: &dyn StateRead,
    name: &str,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<QueuePage> {
    let prefix = Key::new("queue").build();
    let mut names = Vec::new();
    let mut more = false;
    for kv in state.scan_prefix_after(&prefix, after.map(queue_key)) {
        let (k, v) = kv?;
        let StoredQueue::V1(q) = codec::decode(&k, &v)?;
        if q.attributes
            .redrive_policy
            .as_ref()
            .is_some_and(|r| r.dead_letter_queue == name)
        {
            if names.len() == limit {
                more = true;
                break;
            }
            names.push(q.name);
        }
    }
    Ok(QueuePage::new(names, more))
}

/// Every queue name (the leader's housekeeper walks them).
pub fn all_names(state: &dyn StateRead) -> ApplyResult<Vec<String>> {
    Ok(keys::names_after(state, "queue", None, usize::MAX)?.0)
}

/// A `ListQueues` page request, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListQueues {
    /// Only names with this prefix.
    pub prefix: String,
    /// Continue after this name.
    pub after: Option<String>,
    /// Page size, 1-1000.
    pub limit: u32,
}

/// One page of queue names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePage {
    /// Names in order.
    pub names: Vec<String>,
    /// Token for the next page, when there is one.
    pub next_token: Option<String>,
}

impl QueuePage {
    /// A page of `names`, with a token for the next page when `more` follow.
    fn new(names: Vec<String>, more: bool) -> Self {
        let next_token = if more {
            names.last().map(|n| encode_token(n))
        } else {
            None
        };
        QueuePage { names, next_token }
    }
}

impl ListQueues {
    /// Validates a request at the edge.
    pub fn new(prefix: &str, max_results: i32, next_token: &str) -> Result<Self, DomainError> {
        if !prefix.is_empty() {
            // A prefix follows the name rules except for length at the low end.
            if !crate::names::is_valid(prefix, NAME_MAX, "_-.") {
                return Err(DomainError::invalid(
                    "queue_name_prefix",
                    "must be at most 80 characters of A-Z, a-z, 0-9, '_', '-' and '.'",
                ));
            }
        }
        let limit = match max_results {
            0 => LIST_MAX_RESULTS as u32,
            n if (1..=LIST_MAX_RESULTS as i32).contains(&n) => n as u32,
            n => {
                return Err(DomainError::invalid(
                    "max_results",
                    format!("must be from 1 to {LIST_MAX_RESULTS} (or 0 for the default), got {n}"),
                ))
            }
        };
        let after = if next_token.is_empty() {
            None
        } else {
            let name = decode_token(next_token).ok_or_else(|| {
                DomainError::invalid("next_token", "is not a token returned by ListQueues")
            })?;
            Some(name)
        };
        Ok(ListQueues {
            prefix: prefix.to_string(),
            after,
            limit,
        })
    }
}

fn encode_token(name: &str) -> String {
    name.bytes().map(|b| format!("{b:02x}")).collect()
}

/// Reads a page token; `None` when it is not one this cluster issued.
pub fn decode_token(token: &str) -> Option<String> {
    if !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    let name = String::from_utf8(bytes?).ok()?;
    validate_name("next_token", &name).ok()?;
    Some(name)
}

/// Lists queue names.
pub fn list(state: &dyn StateRead, req: &ListQueues) -> ApplyResult<QueuePage> {
    let prefix = Key::new("queue").raw(req.prefix.as_bytes()).build();
    let space_len = Key::new("queue").build().len();
    let pairs = state.scan_prefix_after(&prefix, req.after.as_deref().map(queue_key));
    let (names, more) = crate::store::page(pairs, req.limit as usize, |(k, _)| {
        let (name, _) =
            keys::read_str(&k, space_len).ok_or_else(|| crate::store::StoreError::Corrupt {
                key: keys::display(&k),
                reason: "queue key without a name".into(),
            })?;
        Ok::<_, crate::store::StoreError>(Some(name.to_string()))
    })?;
    Ok(QueuePage::new(names, more))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemState;
    use crate::testing::map;

    fn ctx(now_ms: u64) -> Ctx {
        Ctx::at(now_ms)
    }

    fn create_cmd(name: &str, attrs: &[(&str, &str)]) -> CreateQueue {
        CreateQueue::new(name, &map(attrs), BTreeMap::new()).unwrap()
    }

    fn run_create(state: &mut MemState, cmd: &CreateQueue) -> ApplyResult<bool> {
        state.run(|txn| create(txn, &ctx(1000), cmd))
    }

    #[test]
    fn names_follow_the_sqs_rules() {
        for ok in [
            "a",
            "orders",
            "A-b_9",
            "x.fifo",
            &"n".repeat(80),
            &format!("{}.fifo", "n".repeat(75)),
        ] {
            assert!(validate_name("queue_name", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".fifo",
            "has space",
            "dot.ted",
            "ünï",
            &"n".repeat(81),
            &format!("{}.fifo", "n".repeat(76)),
        ] {
            let err = validate_name("queue_name", bad).unwrap_err();
            assert_eq!(err.field.as_deref(), Some("queue_name"), "{bad}");
            assert!(
                err.message.starts_with("queue_name: must be 1-80"),
                "{}",
                err.message
            );
        }
    }

    #[test]
    fn a_fifo_name_needs_the_fifo_attribute() {
        // SQS refuses a name ending in .fifo without FifoQueue=true (such a
        // name is not a standard queue's); it does not infer FIFO from it.
        for attrs in [&[][..], &[("VisibilityTimeout", "60")][..]] {
            let err = CreateQueue::new("jobs.fifo", &map(attrs), BTreeMap::new()).unwrap_err();
            assert_eq!(err.kind, crate::error::ErrorKind::InvalidArgument);
            assert_eq!(err.code, "InvalidParameterValue");
            assert_eq!(err.field.as_deref(), Some("queue_name"));
            assert!(
                err.message.starts_with("queue_name: ") && err.message.contains("FifoQueue=true"),
                "{}",
                err.message
            );
        }
        // FifoQueue=false on a .fifo name, and FifoQueue=true without it,
        // are refused as before.
        for (name, value) in [("jobs.fifo", "false"), ("jobs", "true")] {
            let attrs = BTreeMap::from([("FifoQueue".to_string(), value.to_string())]);
            assert!(
                CreateQueue::new(name, &attrs, BTreeMap::new()).is_err(),
                "{name}"
            );
        }
        let mut state = MemState::default();
        run_create(
            &mut state,
            &create_cmd("jobs.fifo", &[("FifoQueue", "true")]),
        )
        .unwrap();
        assert!(require(&state, "jobs.fifo").unwrap().attributes.fifo);
        run_create(&mut state, &create_cmd("jobs", &[])).unwrap();
        assert!(!require(&state, "jobs").unwrap().attributes.fifo);
    }

    #[test]
    fn create_is_idempotent_for_matching_attributes() {
        let mut state = MemState::default();
        let cmd = create_cmd("jobs", &[("VisibilityTimeout", "60")]);
        assert!(run_create(&mut state, &cmd).unwrap());
        assert!(!run_create(&mut state, &cmd).unwrap());
        // Omitting attributes matches too, as in SQS.
        assert!(!run_create(&mut state, &create_cmd("jobs", &[])).unwrap());
        let err = run_create(
            &mut state,
            &create_cmd("jobs", &[("VisibilityTimeout", "5")]),
        )
        .unwrap_err();
        match err {
            crate::error::ApplyError::Rejected(e) => {
                assert_eq!(e.code, "QueueNameExists");
                assert_eq!(e.kind, crate::error::ErrorKind::AlreadyExists);
            }
            other => panic!("unexpected {other:?}"),
        }
        let q = require(&state, "jobs").unwrap();
        assert_eq!(q.attributes.visibility_timeout, 60);
        assert_eq!(q.created_ms, 1000);
    }

    #[test]
    fn recreated_queue_gets_a_new_id() {
        let mut state = MemState::default();
        run_create(&mut state, &create_cmd("a", &[])).unwrap();
        let first = require(&state, "a").unwrap().id;
        state.run(|txn| delete(txn, "a")).unwrap();
        assert!(load(&state, "a").unwrap().is_none());
        run_create(&mut state, &create_cmd("a", &[])).unwrap();
        assert_ne!(require(&state, "a").unwrap().id, first);
    }

    #[test]
    fn delete_of_missing_queue_is_not_found() {
        let state = MemState::default();
        let mut txn = Txn::new(&state);
        match delete(&mut txn, "nope") {
            Err(crate::error::ApplyError::Rejected(e)) => assert_eq!(e.code, "QueueDoesNotExist"),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn list_pages_through_prefixed_names_in_order() {
        let mut state = MemState::default();
        for n in ["b1", "a1", "a2", "a3", "a10", "c"] {
            run_create(&mut state, &create_cmd(n, &[])).unwrap();
        }
        let req = ListQueues::new("a", 2, "").unwrap();
        let p1 = list(&state, &req).unwrap();
        assert_eq!(p1.names, ["a1", "a10"]);
        let token = p1.next_token.unwrap();
        let p2 = list(&state, &ListQueues::new("a", 2, &token).unwrap()).unwrap();
        assert_eq!(p2.names, ["a2", "a3"]);
        // Exactly a full last page: SQS-style, a token is given only when
        // more names follow.
        assert_eq!(p2.next_token, None);
        let all = list(&state, &ListQueues::new("", 0, "").unwrap()).unwrap();
        assert_eq!(all.names, ["a1", "a10", "a2", "a3", "b1", "c"]);
    }

    #[test]
    fn list_rejects_bad_parameters() {
        assert_eq!(
            ListQueues::new("", 1001, "").unwrap_err().field.as_deref(),
            Some("max_results")
        );
        assert_eq!(
            ListQueues::new("", -1, "").unwrap_err().field.as_deref(),
            Some("max_results")
        );
        assert_eq!(
            ListQueues::new("", 10, "zz").unwrap_err().field.as_deref(),
            Some("next_token")
        );
        assert_eq!(
            ListQueues::new("a b", 10, "").unwrap_err().field.as_deref(),
            Some("queue_name_prefix")
        );
    }

    #[test]
    fn tags_are_limited() {
        let many: BTreeMap<String, String> = (0..51)
            .map(|i| (format!("k{i}"), "v".to_string()))
            .collect();
        assert_eq!(
            CreateQueue::new("q", &BTreeMap::new(), many)
                .unwrap_err()
                .field
                .as_deref(),
            Some("tags")
        );
        let reserved = BTreeMap::from([("aws:x".to_string(), "v".to_string())]);
        assert!(CreateQueue::new("q", &BTreeMap::new(), reserved).is_err());
    }
}
