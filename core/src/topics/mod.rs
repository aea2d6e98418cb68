//! Topics: SNS-style publish and fan-out.
//!
//! Pure domain logic like [`crate::queues`]: commands and queries over a
//! store, no clocks or I/O. A publish is one command that evaluates every
//! subscription's filter policy and delivers to the matching queues in the
//! same transaction (the one deliberate cross-resource command, see the
//! spec's invariant 4); deliveries to HTTP endpoints and functions become
//! entries of the topic's durable outbox ([`outbox`]), which the leader's
//! deliverer works and settles with further commands.
//!
//! Store layout:
//!
//! | key | value |
//! | --- | --- |
//! | `topic/{name}` | [`StoredTopic`] |
//! | `tname/{id}` | the topic's name |
//! | `seq/topic-id` | next topic id |
//! | `tsub/{id}/{subscription id}` | [`subscription::Subscription`] |
//! | `tout/{id}/{seq}` | [`outbox::Entry`] |
//! | `tdue/{id}/{due ms}/{seq}` | due index of HTTP outbox entries |
//! | `tdedup/{id}/{dedup id}` | [`publish::Dedup`] (FIFO topics) |
//! | `tdedupx/{id}/{expiry ms}/{dedup id}` | expiry index of the above |
//! | `tgc/{id}` | a deleted topic whose keys are still being collected |

pub mod envelope;
pub mod invariants;
pub mod operations;
pub mod outbox;
pub mod policy;
pub mod publish;
#[cfg(test)]
mod scenarios;
pub mod subscription;
pub mod subscriptions;

pub use operations::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{ApplyResult, DomainError};
use crate::store::keys::{self, read_u64, Key};
use crate::store::{codec, StateRead, Txn};

pub use crate::limits::topics::{FAN_OUT_BYTES_MAX, MESSAGE_BYTES_MAX, NAME_MAX};
/// Most subscriptions with a filter policy on one topic.
pub const FILTER_POLICIES_MAX: usize = 200;
/// Most subscriptions on one topic (SNS allows millions; every publish
/// evaluates each, inside one command).
pub const SUBSCRIPTIONS_MAX: usize = 10_000;
/// Keys removed per collection step of a deleted topic.
const COLLECT_STEP: usize = 1000;

/// Bad input to a topic call: `INVALID_ARGUMENT` with SNS's code,
/// `InvalidParameter` (SQS's is `InvalidParameterValue`), naming the field
/// and the rule.
pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> DomainError {
    DomainError::invalid_with_code("InvalidParameter", field, rule)
}

/// The SNS error for a broken tag rule: `InvalidParameter`.
pub fn invalid_tag(field: String, rule: String) -> DomainError {
    invalid(field, rule)
}

/// A refusal from a rule topics share with queues (a message body, a FIFO
/// id, a queue name), with SNS's code instead of SQS's.
pub fn with_sns_code(e: DomainError) -> DomainError {
    if e.code == "InvalidParameterValue" {
        DomainError {
            code: "InvalidParameter".into(),
            ..e
        }
    } else {
        e
    }
}

/// Checks a topic name: 1-256 characters of `[A-Za-z0-9_-]`, FIFO topics
/// ending in `.fifo`; SNS's `InvalidParameter` when it breaks the rule.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    crate::names::validate_fifo_name(
        "InvalidParameter",
        field,
        name,
        NAME_MAX,
        "must be 1-256 characters of A-Z, a-z, 0-9, '_' and '-', FIFO topic names ending in .fifo",
    )
}

/// The topic name in an SNS topic ARN (`arn:aws:sns:REGION:ACCOUNT:NAME`), or
/// a bare name as given.
pub fn name_from_ref(given: &str) -> &str {
    match given.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            if parts.len() == 5 && parts[1] == "sns" {
                parts[4]
            } else {
                given
            }
        }
        None => given,
    }
}

/// A topic as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// Name.
    pub name: String,
    /// Internal id, never reused.
    pub id: u64,
    /// FIFO topic.
    pub fifo: bool,
    /// State-machine time of creation.
    pub created_ms: u64,
    /// Settable attributes by their SNS names, as given.
    pub attributes: BTreeMap<String, String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Messages published so far (the next publish's number).
    pub published: u64,
    /// Outbox entries created so far.
    pub outbox_seq: u64,
}

impl Topic {
    /// True when `ContentBasedDeduplication` is on.
    pub fn content_based_dedup(&self) -> bool {
        self.attributes
            .get("ContentBasedDeduplication")
            .is_some_and(|v| v == "true")
    }

    /// The topic's delivery policy, if it has one.
    pub fn delivery_policy(&self) -> Option<policy::DeliveryPolicy> {
        self.attributes
            .get("DeliveryPolicy")
            .and_then(|t| policy::parse_topic("DeliveryPolicy", t).ok())
    }
}

crate::tags::has_tags!(Topic, invalid_tag);

/// Versioned envelope of [`Topic`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredTopic {
    /// Version 1.
    V1(Topic),
}

fn topic_key(name: &str) -> Vec<u8> {
    Key::new("topic").str(name).build()
}

fn name_key(id: u64) -> Vec<u8> {
    Key::new("tname").u64(id).build()
}

fn gc_key(id: u64) -> Vec<u8> {
    Key::new("tgc").u64(id).build()
}

/// Reads a topic.
pub fn load(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Topic>> {
    Ok(crate::store::record_at(state, &topic_key(name))?.map(|StoredTopic::V1(t)| t))
}

/// Reads a topic or fails with `NotFound`.
pub fn require(state: &dyn StateRead, name: &str) -> ApplyResult<Topic> {
    load(state, name)?.ok_or_else(|| does_not_exist(name).into())
}

/// The name of topic `id`, if it exists.
pub fn name_of(state: &dyn StateRead, id: u64) -> ApplyResult<Option<String>> {
    Ok(crate::store::record_at(state, &name_key(id))?)
}

/// The error for a missing topic.
pub fn does_not_exist(name: &str) -> DomainError {
    DomainError::not_found("NotFound", format!("topic {name:?} does not exist"))
}

/// Writes a topic's record.
pub fn save(txn: &mut Txn<'_>, t: &Topic) {
    txn.put_record(topic_key(&t.name), &StoredTopic::V1(t.clone()));
}

/// Checks one settable topic attribute; `creating` allows `FifoTopic`.
pub fn validate_attribute(
    name: &str,
    value: &str,
    fifo: bool,
    creating: bool,
) -> Result<(), DomainError> {
    let field = format!("attributes.{name}");
    let boolean = || {
        if value == "true" || value == "false" {
            Ok(())
        } else {
            Err(DomainError::invalid_with_code(
                "InvalidParameter",
                &field,
                format!("must be \"true\" or \"false\", got {value:?}"),
            ))
        }
    };
    match name {
        "DisplayName" if value.chars().count() <= 100 => Ok(()),
        "DisplayName" => Err(DomainError::invalid_with_code(
            "InvalidParameter",
            &field,
            "must be at most 100 characters",
        )),
        "Policy" | "DataProtectionPolicy" => {
            if value.is_empty() {
                return Ok(());
            }
            match serde_json::from_str::<serde_json::Value>(value) {
                Ok(serde_json::Value::Object(_)) if value.len() <= 30_720 => Ok(()),
                _ => Err(DomainError::invalid_with_code(
                    "InvalidParameter",
                    &field,
                    "must be a JSON policy document of at most 30 KiB",
                )),
            }
        }
        "DeliveryPolicy" => {
            if !value.is_empty() {
                policy::parse_topic(&field, value)?;
            }
            Ok(())
        }
        "FifoTopic" if creating => {
            boolean()?;
            if (value == "true") != fifo {
                return Err(DomainError::invalid_with_code(
                    "InvalidParameter",
                    &field,
                    "must be \"true\" exactly when the name ends in .fifo",
                ));
            }
            Ok(())
        }
        "FifoTopic" => Err(DomainError::invalid_with_code(
            "InvalidParameter",
            &field,
            "cannot be changed after the topic is created",
        )),
        "ContentBasedDeduplication" => {
            boolean()?;
            if !fifo && value == "true" {
                return Err(DomainError::invalid_with_code(
                    "InvalidParameter",
                    &field,
                    "applies only to FIFO topics",
                ));
            }
            Ok(())
        }
        "KmsMasterKeyId" if value.len() <= 2048 => Ok(()),
        "SignatureVersion" if value == "1" || value == "2" => Ok(()),
        "TracingConfig" if value == "PassThrough" || value == "Active" => Ok(()),
        "KmsMasterKeyId" | "SignatureVersion" | "TracingConfig" => Err(
            DomainError::invalid_with_code("InvalidParameter", &field, format!("invalid value {value:?}")),
        ),
        other => Err(DomainError::invalid_with_code(
            "InvalidParameter",
            "attributes",
            format!(
                "unknown topic attribute {other:?}; settable are DisplayName, Policy, DeliveryPolicy, FifoTopic (at creation), ContentBasedDeduplication, KmsMasterKeyId, SignatureVersion, TracingConfig, DataProtectionPolicy"
            ),
        )),
    }
}

/// The `CreateTopic` command, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    /// Name.
    pub name: String,
    /// Settable attributes.
    pub attributes: BTreeMap<String, String>,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

impl CreateTopic {
    /// Validates a request at the edge.
    pub fn new(
        name: &str,
        attributes: BTreeMap<String, String>,
        tags: BTreeMap<String, String>,
    ) -> Result<Self, DomainError> {
        validate_name("name", name)?;
        let fifo = name.ends_with(".fifo");
        if fifo && attributes.get("FifoTopic").map(String::as_str) != Some("true") {
            return Err(DomainError::invalid_with_code(
                "InvalidParameter",
                "attributes.FifoTopic",
                "must be \"true\" for a topic whose name ends in .fifo",
            ));
        }
        for (k, v) in &attributes {
            validate_attribute(k, v, fifo, true)?;
        }
        crate::tags::validate(&tags, invalid_tag)?;
        let attributes = attributes
            .into_iter()
            .filter(|(k, _)| k != "FifoTopic")
            .collect();
        Ok(CreateTopic {
            name: name.to_string(),
            attributes,
            tags,
        })
    }
}

/// Applies `CreateTopic`: creates the topic, or returns false when it exists
/// with the same attributes (SNS's idempotent create).
pub fn create(txn: &mut Txn<'_>, ctx: &Ctx, c: &CreateTopic) -> ApplyResult<bool> {
    if let Some(t) = load(txn, &c.name)? {
        if c.attributes
            .iter()
            .all(|(k, v)| t.attributes.get(k) == Some(v))
        {
            return Ok(false);
        }
        return Err(DomainError::invalid_with_code(
            "InvalidParameter",
            "attributes",
            format!(
                "topic {:?} already exists with different attributes",
                c.name
            ),
        )
        .into());
    }
    let id = txn.next_id(Key::new("seq").str("topic-id").build())?;
    let t = Topic {
        name: c.name.clone(),
        id,
        fifo: c.name.ends_with(".fifo"),
        created_ms: ctx.now_ms,
        attributes: c.attributes.clone(),
        tags: c.tags.clone(),
        published: 0,
        outbox_seq: 0,
    };
    txn.put_record(name_key(id), &c.name);
    save(txn, &t);
    Ok(true)
}

/// Applies `DeleteTopic`: the topic goes at once, its subscriptions and
/// outbox are collected in the background. Deleting a missing topic
/// succeeds, as in SNS.
pub fn delete(txn: &mut Txn<'_>, name: &str) -> ApplyResult<()> {
    let Some(t) = load(txn, name)? else {
        return Ok(());
    };
    txn.delete(topic_key(name));
    txn.delete(name_key(t.id));
    txn.put_record(gc_key(t.id), &true);
    Ok(())
}

/// Applies `CollectTopic`: deletes a bounded part of a deleted topic's keys;
/// true when nothing is left.
pub fn collect(txn: &mut Txn<'_>, id: u64) -> ApplyResult<bool> {
    // Only a deleted topic's data, which its marker names (see streams).
    if txn.get(&gc_key(id))?.is_none() {
        return Ok(true);
    }
    let prefixes =
        ["tsub", "tout", "tdue", "tdedup", "tdedupx"].map(|s| Key::new(s).u64(id).build());
    if !txn.delete_prefixes(&prefixes, COLLECT_STEP)? {
        return Ok(false);
    }
    txn.delete(gc_key(id));
    Ok(true)
}

/// Deleted topics waiting to be collected.
pub fn garbage(state: &dyn StateRead, limit: usize) -> ApplyResult<Vec<u64>> {
    let prefix = Key::new("tgc").build();
    let mut out = Vec::new();
    for kv in state.scan_prefix(&prefix).take(limit) {
        let (k, _) = kv?;
        out.push(read_u64(&k, prefix.len()).unwrap_or(0));
    }
    Ok(out)
}

/// Applies `SetTopicAttributes` (one attribute, as SNS).
pub fn set_attribute(txn: &mut Txn<'_>, name: &str, attr: &str, value: &str) -> ApplyResult<()> {
    let mut t = require(txn, name)?;
    validate_attribute(attr, value, t.fifo, false)?;
    if value.is_empty() {
        t.attributes.remove(attr);
    } else {
        t.attributes.insert(attr.to_string(), value.to_string());
    }
    save(txn, &t);
    Ok(())
}

/// A page of topic names after `after`, and whether more follow.
pub fn list(
    state: &dyn StateRead,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<(Vec<String>, bool)> {
    Ok(keys::names_after(state, "topic", after, limit)?)
}

/// Every topic id with its name (the housekeeper walks them).
pub fn all(state: &dyn StateRead) -> ApplyResult<Vec<(u64, String)>> {
    let prefix = Key::new("tname").build();
    let mut out = Vec::new();
    for kv in state.scan_prefix(&prefix) {
        let (k, v) = kv?;
        let id = read_u64(&k, prefix.len()).unwrap_or(0);
        out.push((id, codec::decode(&k, &v)?));
    }
    Ok(out)
}

/// Counts GetTopicAttributes reports.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicCounts {
    /// Confirmed subscriptions.
    pub confirmed: u64,
    /// Subscriptions awaiting confirmation.
    pub pending: u64,
    /// Outbox entries not yet delivered.
    pub outbox: u64,
}

/// A topic with its counts.
pub fn details(state: &dyn StateRead, name: &str) -> ApplyResult<(Topic, TopicCounts)> {
    let t = require(state, name)?;
    let mut c = TopicCounts::default();
    for s in subscription::all(state, t.id)? {
        if s.confirmed() {
            c.confirmed += 1;
        } else {
            c.pending += 1;
        }
    }
    c.outbox = outbox::pending(state, t.id)?;
    Ok((t, c))
}

/// A page of subscriptions of one topic (`topic`) or of every topic, after
/// `(topic, id)`; with where the next page starts.
pub fn list_subscriptions(
    state: &dyn StateRead,
    topic: Option<&str>,
    after: Option<(&str, &str)>,
    limit: usize,
) -> ApplyResult<SubscriptionPage> {
    let mut out = Vec::new();
    // Fills `out` from one topic; the next page's start when it is full.
    let take = |name: &str, out: &mut Vec<_>| -> ApplyResult<Option<(String, String)>> {
        let Some(t) = load(state, name)? else {
            return Ok(None);
        };
        let start = after.filter(|(at, _)| *at == name).map(|(_, id)| id);
        let (subs, more) = subscription::page(state, t.id, start, limit - out.len())?;
        let last = subs.last().map(|s| s.id.clone());
        out.extend(subs.into_iter().map(|s| (t.clone(), s)));
        Ok(if more || out.len() == limit {
            last.map(|id| (name.to_string(), id))
        } else {
            None
        })
    };
    if let Some(t) = topic {
        require(state, t)?;
        let next = take(t, &mut out)?;
        return Ok((out, next));
    }
    // Every topic in name order from the one the page left off at
    // (inclusive), a page of names at a time, until the page is full.
    let mut from = after.map(|(t, _)| t.to_string());
    if let Some(f) = &from {
        if let Some(next) = take(f, &mut out)? {
            return Ok((out, Some(next)));
        }
    }
    loop {
        let (names, more) = list(state, from.as_deref(), 100)?;
        for name in &names {
            if let Some(next) = take(name, &mut out)? {
                return Ok((out, Some(next)));
            }
        }
        if !more {
            return Ok((out, None));
        }
        from = names.last().cloned();
    }
}

/// Subscriptions with their topics, and where the next page starts.
pub type SubscriptionPage = (
    Vec<(Topic, subscription::Subscription)>,
    Option<(String, String)>,
);
