//! The durable delivery outbox of a topic.
//!
//! Deliveries that leave the cluster (HTTP/S posts, and function invocations
//! once workers exist) cannot happen inside a command. A publish therefore
//! writes one outbox entry per matching subscription; the leader's
//! deliverer (the broker's `deliverer`) posts the entries that are due and
//! reports each result back with a `SettleDeliveries` command, which deletes
//! a delivered entry, reschedules a failed one per the delivery policy, or,
//! once retries are used up, moves it to the subscription's dead-letter
//! queue. The entries live in the replicated state, so a new leader picks
//! them up where the old one stopped: delivery is at least once, and an
//! entry is only repeated when its result was not committed.
//!
//! Function entries are due like the others; until workers run functions
//! (issue 8) the deliverer settles them as failed, so they follow the
//! retry policy to the dead-letter queue instead of piling up.

use serde::{Deserialize, Serialize};

use super::policy::DeliveryPolicy;
use super::subscription::{self, Subscription};
use super::Topic;
use crate::apply::{Ctx, Effect, Effects};
use crate::error::ApplyResult;
use crate::queues::message::{AttributeValue, NewMessage, Outgoing};
use crate::store::keys::{prefix_end, read_u64, Key};
use crate::store::{StateRead, Txn};

/// What an entry delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A published message: the body to post (envelope or raw).
    Notification {
        /// The topic message id.
        message_id: String,
        /// The body.
        body: String,
        /// Raw delivery (the body is the message alone).
        raw: bool,
    },
    /// The confirmation request of a new HTTP/S subscription.
    Confirmation {
        /// The token to confirm with.
        token: String,
    },
}

/// One pending delivery.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The subscription id.
    pub subscription: String,
    /// What to deliver.
    pub kind: Kind,
    /// Failed attempts so far.
    pub attempts: u32,
    /// State-machine time it was created.
    pub created_ms: u64,
    /// When it is due (`None` only for an entry written straight to a
    /// dead-letter queue, never stored).
    pub due_ms: Option<u64>,
    /// The last failure.
    pub last_error: Option<String>,
}

/// The result of one delivery attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// The endpoint took it (HTTP 2xx).
    Delivered,
    /// It did not; why.
    Failed(String),
}

/// What a settle did with the entries.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settled {
    /// Entries delivered and removed.
    pub delivered: u32,
    /// Entries rescheduled.
    pub retried: u32,
    /// Entries moved to a dead-letter queue.
    pub dead_lettered: u32,
    /// Entries dropped (retries used up without a dead-letter queue, or the
    /// subscription is gone).
    pub dropped: u32,
}

fn entry_key(tid: u64, seq: u64) -> Vec<u8> {
    Key::new("tout").u64(tid).u64(seq).build()
}

fn due_key(tid: u64, due: u64, seq: u64) -> Vec<u8> {
    Key::new("tdue").u64(tid).u64(due).u64(seq).build()
}

fn save(txn: &mut Txn<'_>, tid: u64, seq: u64, e: &Entry) {
    txn.put_record(entry_key(tid, seq), e);
    if let Some(due) = e.due_ms {
        txn.put_record(due_key(tid, due, seq), &());
    }
}

/// Adds an entry for `sub` to the topic's outbox (the caller saves the
/// topic, whose entry counter this advances).
pub fn push(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    topic: &mut Topic,
    sub: &Subscription,
    kind: Kind,
    effects: &mut Effects,
) {
    topic.outbox_seq += 1;
    let e = Entry {
        subscription: sub.id.clone(),
        kind,
        attempts: 0,
        created_ms: ctx.now_ms,
        due_ms: Some(ctx.now_ms),
        last_error: None,
    };
    save(txn, topic.id, topic.outbox_seq, &e);
    effects.push(Effect::OutboxReady);
}

/// Reads an entry.
pub fn load(state: &dyn StateRead, tid: u64, seq: u64) -> ApplyResult<Option<Entry>> {
    Ok(crate::store::record_at(state, &entry_key(tid, seq))?)
}

/// An entry that is due, with what the deliverer needs to post it.
#[derive(Debug, Clone, PartialEq)]
pub struct Due {
    /// Topic name.
    pub topic: String,
    /// Topic id.
    pub topic_id: u64,
    /// Entry number.
    pub seq: u64,
    /// The entry.
    pub entry: Entry,
    /// Its subscription, `None` when it is gone (settle drops the entry).
    pub subscription: Option<Subscription>,
    /// Effective delivery policy.
    pub policy: DeliveryPolicy,
}

/// Entries due at `now_ms`, oldest due first within a topic: at most
/// `per_topic` from each topic (so that a topic with a backlog does not
/// starve the others) and `limit` in all, leaving out those `skip` names
/// by (topic id, entry number), such as entries already being posted.
pub fn due(
    state: &dyn StateRead,
    now_ms: u64,
    per_topic: usize,
    limit: usize,
    skip: &dyn Fn(u64, u64) -> bool,
) -> ApplyResult<Vec<Due>> {
    let mut out = Vec::new();
    for (tid, name) in super::all(state)? {
        if out.len() >= limit {
            break;
        }
        let mut taken = 0;
        let Some(topic) = super::load(state, &name)? else {
            continue;
        };
        let prefix = Key::new("tdue").u64(tid).build();
        let end = Key::new("tdue")
            .u64(tid)
            .u64(now_ms.saturating_add(1))
            .build();
        let topic_policy = topic.delivery_policy();
        for kv in state.range(
            std::ops::Bound::Included(prefix.clone()),
            std::ops::Bound::Excluded(end),
            false,
        ) {
            if out.len() == limit || taken == per_topic {
                break;
            }
            let (k, _) = kv?;
            let Some(seq) = read_u64(&k, prefix.len() + 8) else {
                continue;
            };
            if skip(tid, seq) {
                continue;
            }
            taken += 1;
            let Some(entry) = load(state, tid, seq)? else {
                continue;
            };
            let subscription = subscription::load(state, tid, &entry.subscription)?;
            let policy = DeliveryPolicy::effective(
                topic_policy.as_ref(),
                subscription
                    .as_ref()
                    .and_then(|s| s.settings.delivery.as_ref()),
            );
            out.push(Due {
                topic: name.clone(),
                topic_id: tid,
                seq,
                entry,
                subscription,
                policy,
            });
        }
    }
    Ok(out)
}

/// Entries waiting in a topic's outbox (for GetTopicAttributes).
pub fn pending(state: &dyn StateRead, tid: u64) -> ApplyResult<u64> {
    let prefix = Key::new("tout").u64(tid).build();
    let mut n = 0;
    for kv in state.range(
        std::ops::Bound::Included(prefix.clone()),
        prefix_end(&prefix),
        false,
    ) {
        kv?;
        n += 1;
    }
    Ok(n)
}

/// Applies `SettleDeliveries`: records the results of delivery attempts
/// on the entries of topic `topic_id` (results for an older topic of the
/// same name change nothing).
pub fn settle(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    topic: &str,
    topic_id: u64,
    results: &[(u64, Outcome)],
    effects: &mut Effects,
) -> ApplyResult<Settled> {
    let t = super::require(txn, topic)?;
    if t.id != topic_id {
        return Ok(Settled::default());
    }
    let topic_policy = t.delivery_policy();
    let mut settled = Settled::default();
    for (seq, outcome) in results {
        let Some(mut e) = load(txn, t.id, *seq)? else {
            continue; // settled before (a repeated report)
        };
        txn.delete(entry_key(t.id, *seq));
        if let Some(due) = e.due_ms {
            txn.delete(due_key(t.id, due, *seq));
        }
        let error = match outcome {
            Outcome::Delivered => {
                settled.delivered += 1;
                continue;
            }
            Outcome::Failed(why) => why,
        };
        let Some(sub) = subscription::load(txn, t.id, &e.subscription)? else {
            settled.dropped += 1;
            continue;
        };
        e.attempts += 1;
        e.last_error = Some(truncate(error, 512));
        let policy =
            DeliveryPolicy::effective(topic_policy.as_ref(), sub.settings.delivery.as_ref());
        let retry = policy.retry.unwrap_or_default();
        if let Some(delay) = retry.delay_ms(e.attempts) {
            e.due_ms = Some(ctx.now_ms + delay);
            save(txn, t.id, *seq, &e);
            settled.retried += 1;
            continue;
        }
        match (&e.kind, &sub.settings.dead_letter_queue) {
            (Kind::Notification { body, .. }, Some(dlq)) => {
                if dead_letter(txn, ctx, &t, &sub, dlq, body, &e, effects)? {
                    settled.dead_lettered += 1;
                } else {
                    settled.dropped += 1;
                }
            }
            _ => settled.dropped += 1,
        }
    }
    Ok(settled)
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

fn string_attr(v: String) -> AttributeValue {
    AttributeValue {
        data_type: "String".into(),
        string_value: Some(v),
        binary_value: None,
    }
}

/// Sends a message that could not be delivered to the subscription's
/// dead-letter queue, with why and how often it failed as message
/// attributes. False when the queue does not take it (missing, or the
/// message breaks its rules): the message is then dropped, as SNS does.
#[allow(clippy::too_many_arguments)]
pub fn dead_letter(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    topic: &Topic,
    sub: &Subscription,
    dlq: &str,
    body: &str,
    e: &Entry,
    effects: &mut Effects,
) -> ApplyResult<bool> {
    let fifo = dlq.ends_with(".fifo");
    let mut attributes = std::collections::BTreeMap::new();
    attributes.insert(
        "ErrorMessage".to_string(),
        string_attr(e.last_error.clone().unwrap_or_default()),
    );
    attributes.insert(
        "DeliveryAttempts".to_string(),
        AttributeValue {
            data_type: "Number".into(),
            string_value: Some(e.attempts.to_string()),
            binary_value: None,
        },
    );
    attributes.insert("SubscriptionId".to_string(), string_attr(sub.id.clone()));
    attributes.insert("TopicName".to_string(), string_attr(topic.name.clone()));
    let message_id = match &e.kind {
        Kind::Notification { message_id, .. } => message_id.clone(),
        Kind::Confirmation { token } => token.clone(),
    };
    let out = Outgoing {
        body: body.to_string(),
        delay_seconds: None,
        attributes,
        system_attributes: Default::default(),
        dedup_id: if fifo {
            format!("{}-{}", message_id, &sub.id[..sub.id.len().min(32)])
                .chars()
                .take(128)
                .collect()
        } else {
            String::new()
        },
        group_id: if fifo { sub.id.clone() } else { String::new() },
    };
    let Ok(m) = NewMessage::validate("", fifo, out) else {
        return Ok(false);
    };
    send_to_queue(txn, ctx, dlq, m, effects)
}

/// Sends one message to a queue inside the current command; false when the
/// queue is missing or refuses it.
pub fn send_to_queue(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    queue: &str,
    m: NewMessage,
    effects: &mut Effects,
) -> ApplyResult<bool> {
    match crate::queues::delivery::send(txn, ctx, queue, std::slice::from_ref(&m), None, effects) {
        Ok(results) => Ok(results.into_iter().all(|r| r.is_ok())),
        Err(crate::error::ApplyError::Rejected(_)) => Ok(false),
        Err(e) => Err(e),
    }
}
