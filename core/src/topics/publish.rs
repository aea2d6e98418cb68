//! Publish: one message in, one copy per matching subscription out.
//!
//! Queue subscriptions receive their copy inside the publish command, so a
//! publish is delivered to every matching queue or to none, and exactly
//! once per command. HTTP/S and function subscriptions get an outbox entry.
//! FIFO topics deduplicate publishes for five minutes and hand the group and
//! deduplication ids on to their FIFO queues, which keeps each group's order
//! in every queue.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::envelope::{self, Notification};
use super::outbox::{self, Kind};
use super::subscription::{self, Protocol, Subscription};
use super::{invalid, require, with_sns_code, Topic, FAN_OUT_BYTES_MAX, MESSAGE_BYTES_MAX};
use crate::apply::{Counter, Ctx, Effect, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::filter::{AttributeRef, Message};
use crate::queues::message::{
    validate_attributes, validate_body, validate_fifo_id, AttributeValue, NewMessage, Outgoing,
};
use crate::store::keys::{read_u64, Key};
use crate::store::{codec, StateRead, Txn};

/// How long a FIFO topic remembers a deduplication id.
pub const DEDUP_WINDOW_MS: u64 = 5 * 60 * 1000;
pub use crate::limits::topics::BATCH_MAX;
/// Longest subject.
pub const SUBJECT_MAX: usize = 100;

/// A message to publish, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Publication {
    /// The message (with `MessageStructure` json: the default text).
    pub message: String,
    /// Per-protocol texts (`MessageStructure` json), by SNS protocol name.
    pub per_protocol: BTreeMap<String, String>,
    /// Subject (in the envelope).
    pub subject: Option<String>,
    /// Message attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// FIFO: message group.
    pub group_id: Option<String>,
    /// FIFO: deduplication id.
    pub dedup_id: Option<String>,
}

/// The raw fields of a publish request, before validation.
#[derive(Debug, Default)]
pub struct PublishInput {
    /// Message.
    pub message: String,
    /// Subject.
    pub subject: String,
    /// `""` or `"json"`.
    pub structure: String,
    /// Attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// Group id.
    pub group_id: String,
    /// Deduplication id.
    pub dedup_id: String,
}

impl Publication {
    /// Validates a publish request for a topic (FIFO when `fifo`); `prefix`
    /// names the batch entry in errors.
    pub fn validate(prefix: &str, fifo: bool, p: PublishInput) -> Result<Self, DomainError> {
        let f = |name: &str| crate::error::field_in(prefix, name);
        if p.message.is_empty() {
            return Err(invalid(f("message"), "must not be empty"));
        }
        validate_body(&f("message"), &p.message).map_err(with_sns_code)?;
        let mut per_protocol = BTreeMap::new();
        let message = match p.structure.as_str() {
            "" => p.message,
            "json" => {
                let v: serde_json::Value = serde_json::from_str(&p.message).map_err(|e| {
                    invalid(
                        f("message"),
                        format!("with message_structure \"json\" must be a JSON object: {e}"),
                    )
                })?;
                let o = v.as_object().ok_or_else(|| {
                    invalid(
                        f("message"),
                        "with message_structure \"json\" must be a JSON object",
                    )
                })?;
                for (k, v) in o {
                    let s = v.as_str().ok_or_else(|| {
                        invalid(
                            f("message"),
                            format!("the value for {k:?} must be a string"),
                        )
                    })?;
                    if s.is_empty() {
                        return Err(invalid(
                            f("message"),
                            format!("the text for {k:?} must not be empty"),
                        ));
                    }
                    validate_body(&format!("{}.{k}", f("message")), s).map_err(with_sns_code)?;
                    per_protocol.insert(k.clone(), s.to_string());
                }
                per_protocol.remove("default").ok_or_else(|| {
                    invalid(
                        f("message"),
                        "with message_structure \"json\" needs a \"default\" key",
                    )
                })?
            }
            other => {
                return Err(invalid(
                    f("message_structure"),
                    format!("must be empty or \"json\", got {other:?}"),
                ))
            }
        };
        let subject = if p.subject.is_empty() {
            None
        } else if p.subject.chars().count() > SUBJECT_MAX
            || !p
                .subject
                .starts_with(|c: char| c.is_ascii_alphanumeric() || c.is_ascii_punctuation())
            || p.subject.chars().any(|c| c.is_control())
        {
            return Err(invalid(
                f("subject"),
                format!("must be 1-{SUBJECT_MAX} characters without line breaks or control characters, starting with a letter, digit or punctuation"),
            ));
        } else {
            Some(p.subject)
        };
        validate_attributes(&f("message_attributes"), &p.attributes, |field, v| {
            if v.data_type == "String.Array" {
                let ok = v
                    .string_value
                    .as_deref()
                    .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                    .is_some_and(|j| {
                        j.as_array()
                            .is_some_and(|a| a.iter().all(|x| !x.is_object() && !x.is_array()))
                    });
                if !ok {
                    return Err(DomainError::invalid(
                        field,
                        "a String.Array value must be a JSON array of strings, numbers, booleans or null",
                    ));
                }
            }
            Ok(())
        })?;
        let size = message.len()
            + per_protocol.values().map(String::len).sum::<usize>()
            + p.attributes.iter().map(|(k, v)| v.size(k)).sum::<usize>();
        if size > MESSAGE_BYTES_MAX {
            return Err(invalid(
                f("message"),
                format!(
                    "the message is {size} bytes with its attributes; at most {MESSAGE_BYTES_MAX}"
                ),
            ));
        }
        let (group_id, dedup_id) = if fifo {
            if p.group_id.is_empty() {
                return Err(DomainError::invalid_with_code(
                    "InvalidParameter",
                    f("message_group_id"),
                    "is required on FIFO topics",
                ));
            }
            validate_fifo_id(&f("message_group_id"), &p.group_id).map_err(with_sns_code)?;
            let dedup = if p.dedup_id.is_empty() {
                None
            } else {
                validate_fifo_id(&f("message_deduplication_id"), &p.dedup_id)
                    .map_err(with_sns_code)?;
                Some(p.dedup_id)
            };
            (Some(p.group_id), dedup)
        } else {
            for (name, v) in [
                ("message_group_id", &p.group_id),
                ("message_deduplication_id", &p.dedup_id),
            ] {
                if !v.is_empty() {
                    return Err(DomainError::invalid_with_code(
                        "InvalidParameter",
                        f(name),
                        "is only valid on FIFO topics",
                    ));
                }
            }
            (None, None)
        };
        Ok(Publication {
            message,
            per_protocol,
            subject,
            attributes: p.attributes,
            group_id,
            dedup_id,
        })
    }

    /// The text for a subscription's protocol.
    fn text_for(&self, protocol: Protocol) -> &str {
        self.per_protocol
            .get(protocol.as_str())
            .unwrap_or(&self.message)
    }

    /// Bytes it takes in the log, roughly.
    pub fn size(&self) -> usize {
        self.message.len()
            + self.per_protocol.values().map(String::len).sum::<usize>()
            + self
                .attributes
                .iter()
                .map(|(k, v)| v.size(k))
                .sum::<usize>()
            + 64
    }
}

/// The result of one publish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    /// Message id.
    pub message_id: String,
    /// FIFO topics: the sequence number.
    pub sequence_number: Option<String>,
}

/// A remembered FIFO deduplication id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dedup {
    /// The first publish's result.
    pub published: Published,
    /// When it is forgotten.
    pub expires_ms: u64,
}

fn dedup_key(tid: u64, id: &str) -> Vec<u8> {
    Key::new("tdedup").u64(tid).str(id).build()
}

fn dedup_expiry_key(tid: u64, expires: u64, id: &str) -> Vec<u8> {
    Key::new("tdedupx").u64(tid).u64(expires).str(id).build()
}

/// The MessageId of publish `seq` of topic `tid`, derived like queue
/// message ids so every replica computes the same one.
pub fn message_id(tid: u64, seq: u64) -> String {
    crate::queues::message::derived_uuid(b"sluice/topic-message-id", tid, seq)
}

/// Applies `Publish`: each message succeeds or fails on its own.
pub fn publish(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    topic: &str,
    topic_arn: &str,
    messages: &[Publication],
    effects: &mut Effects,
) -> ApplyResult<Vec<Result<Published, DomainError>>> {
    let mut t = require(txn, topic)?;
    let subs: Vec<Subscription> = subscription::all(txn, t.id)?
        .into_iter()
        .filter(Subscription::confirmed)
        .collect();
    let mut results = Vec::with_capacity(messages.len());
    let mut budget = FAN_OUT_BYTES_MAX;
    for p in messages {
        results.push(publish_one(
            txn,
            ctx,
            &mut t,
            topic_arn,
            &subs,
            p,
            &mut budget,
            effects,
        )?);
    }
    super::save(txn, &t);
    Ok(results)
}

#[allow(clippy::too_many_arguments)]
fn publish_one(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    t: &mut Topic,
    topic_arn: &str,
    subs: &[Subscription],
    p: &Publication,
    budget: &mut usize,
    effects: &mut Effects,
) -> ApplyResult<Result<Published, DomainError>> {
    let dedup_id = if t.fifo {
        let id = match (&p.dedup_id, t.content_based_dedup()) {
            (Some(id), _) => id.clone(),
            (None, true) => hex::encode(Sha256::digest(p.message.as_bytes())),
            (None, false) => {
                return Ok(Err(DomainError::invalid_with_code(
                    "InvalidParameter",
                    "message_deduplication_id",
                    "is required unless the topic has ContentBasedDeduplication",
                )))
            }
        };
        let key = dedup_key(t.id, &id);
        if let Some(b) = txn.get(&key)? {
            let d: Dedup = codec::decode(&key, &b)?;
            if d.expires_ms > ctx.now_ms {
                return Ok(Ok(d.published));
            }
        }
        Some(id)
    } else {
        None
    };
    let attrs = p
        .attributes
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                AttributeRef {
                    data_type: &v.data_type,
                    value: v.string_value.as_deref(),
                },
            )
        })
        .collect();
    let filter_view = Message::new(attrs, &p.message);
    let matching: Vec<&Subscription> = subs
        .iter()
        .filter(|s| {
            s.settings
                .filter
                .as_ref()
                .is_none_or(|f| f.matches(&filter_view))
        })
        .collect();
    // Each copy is at most the message, escaped in its envelope (JSON at
    // most doubles the characters a body may hold), and the envelope.
    let copies = (2 * p.size() + 1024) * matching.len();
    if copies > *budget {
        return Ok(Err(DomainError::limit(
            "FanOutLimitExceeded",
            format!(
                "the publish would copy about {copies} bytes to {} subscriptions; one request copies at most {FAN_OUT_BYTES_MAX}",
                matching.len()
            ),
        )));
    }
    *budget -= copies;
    t.published += 1;
    let seq = t.published;
    let published = Published {
        message_id: message_id(t.id, seq),
        sequence_number: t.fifo.then(|| format!("{seq:020}")),
    };
    for sub in matching {
        let text = p.text_for(sub.protocol);
        let body = if sub.settings.raw {
            text.to_string()
        } else {
            envelope::notification(&Notification {
                message_id: &published.message_id,
                topic_arn,
                subject: p.subject.as_deref(),
                message: text,
                timestamp_ms: ctx.now_ms,
                attributes: &p.attributes,
                sequence_number: published.sequence_number.as_deref(),
            })
        };
        match sub.protocol {
            Protocol::Sqs => deliver_to_queue(
                txn,
                ctx,
                t,
                sub,
                p,
                body,
                dedup_id.as_deref(),
                &published,
                effects,
            )?,
            Protocol::Http | Protocol::Https | Protocol::Lambda => outbox::push(
                txn,
                ctx,
                t,
                sub,
                Kind::Notification {
                    message_id: published.message_id.clone(),
                    body,
                    raw: sub.settings.raw,
                },
                effects,
            ),
        }
    }
    if let Some(id) = dedup_id {
        let expires_ms = ctx.now_ms + DEDUP_WINDOW_MS;
        txn.put_record(
            dedup_key(t.id, &id),
            &Dedup {
                published: published.clone(),
                expires_ms,
            },
        );
        txn.put_record(dedup_expiry_key(t.id, expires_ms, &id), &());
    }
    Ok(Ok(published))
}

#[allow(clippy::too_many_arguments)]
fn deliver_to_queue(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    t: &Topic,
    sub: &Subscription,
    p: &Publication,
    body: String,
    dedup_id: Option<&str>,
    published: &Published,
    effects: &mut Effects,
) -> ApplyResult<()> {
    // A FIFO topic's standard queues get the message without its group and
    // deduplication ids, which a standard queue does not take: best-effort
    // order, at least once, as SNS delivers them.
    let fifo = crate::queues::is_fifo_name(&sub.endpoint);
    let out = Outgoing {
        body: body.clone(),
        delay_seconds: None,
        attributes: if sub.settings.raw {
            p.attributes.clone()
        } else {
            BTreeMap::new()
        },
        system_attributes: BTreeMap::new(),
        dedup_id: if fifo {
            dedup_id.unwrap_or(&published.message_id).to_string()
        } else {
            String::new()
        },
        group_id: if fifo {
            p.group_id.clone().unwrap_or_default()
        } else {
            String::new()
        },
    };
    let error = match NewMessage::validate("", fifo, out) {
        Ok(m) => {
            if outbox::send_to_queue(txn, ctx, &sub.endpoint, m, effects)? {
                return Ok(());
            }
            format!(
                "queue {:?} does not exist or refused the message",
                sub.endpoint
            )
        }
        Err(e) => e.message,
    };
    effects.push(Effect::Count(Counter::TopicQueueDeliveryFailure));
    if let Some(dlq) = &sub.settings.dead_letter_queue {
        let entry = outbox::Entry {
            subscription: sub.id.clone(),
            kind: Kind::Notification {
                message_id: published.message_id.clone(),
                body: body.clone(),
                raw: sub.settings.raw,
            },
            attempts: 1,
            created_ms: ctx.now_ms,
            due_ms: None,
            last_error: Some(error),
        };
        outbox::dead_letter(txn, ctx, t, sub, dlq, &body, &entry, effects)?;
    }
    Ok(())
}

/// Applies `TopicTick`: forgets expired deduplication ids, a bounded number
/// per call; true when more are due.
pub fn expire_dedup(txn: &mut Txn<'_>, ctx: &Ctx, topic: &str, limit: usize) -> ApplyResult<bool> {
    let t = require(txn, topic)?;
    let prefix = Key::new("tdedupx").u64(t.id).build();
    let end = Key::new("tdedupx")
        .u64(t.id)
        .u64(ctx.now_ms.saturating_add(1))
        .build();
    let mut expired = Vec::new();
    for kv in txn.range(
        std::ops::Bound::Included(prefix.clone()),
        std::ops::Bound::Excluded(end),
        false,
    ) {
        let (k, _) = kv?;
        if expired.len() == limit {
            break;
        }
        expired.push(k);
    }
    let more = expired.len() == limit;
    for k in expired {
        if let Some((id, _)) = crate::store::keys::read_str(&k, prefix.len() + 8) {
            let dk = dedup_key(t.id, id);
            // Only if not renewed by a later publish.
            if let Some(b) = txn.get(&dk)? {
                let d: Dedup = codec::decode(&dk, &b)?;
                if d.expires_ms <= ctx.now_ms {
                    txn.delete(dk);
                }
            }
        }
        txn.delete(k);
    }
    Ok(more)
}

/// The earliest dedup expiry of a topic, for the housekeeper.
pub fn next_expiry(state: &dyn StateRead, tid: u64) -> ApplyResult<Option<u64>> {
    let prefix = Key::new("tdedupx").u64(tid).build();
    Ok(state
        .first_with_prefix(&prefix)?
        .and_then(|(k, _)| read_u64(&k, prefix.len())))
}
