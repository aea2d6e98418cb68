//! The subscription commands: subscribe, confirm, unsubscribe, set an
//! attribute.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::outbox::{self, Kind};
use super::policy::DeliveryPolicy;
use super::subscription::{all, require_sub, save, sub_key, Protocol, Settings, Subscription};
use super::{require, Topic, FILTER_POLICIES_MAX, SUBSCRIPTIONS_MAX};
use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::store::{StateRead, Txn};

/// The `Subscribe` command, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Topic name.
    pub topic: String,
    /// Protocol.
    pub protocol: Protocol,
    /// Stored form of the endpoint.
    pub endpoint: String,
    /// Settable attributes.
    pub attributes: BTreeMap<String, String>,
    /// A fresh id for the subscription, drawn at the edge.
    pub id: String,
    /// A fresh confirmation token (HTTP/S), drawn at the edge.
    pub token: String,
}

/// What `Subscribe` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscribed {
    /// The subscription's id (new or existing).
    pub id: String,
    /// Awaiting confirmation.
    pub pending: bool,
}

/// Whether a topic can deliver to the endpoint, as SNS decides: a FIFO
/// topic delivers only to queues, FIFO ones (in group order, deduplicated)
/// and standard ones (best-effort order, at least once); a FIFO queue takes
/// only a FIFO topic's messages.
fn check_fits(topic: &Topic, protocol: Protocol, endpoint: &str) -> Result<(), DomainError> {
    let fifo_queue = protocol == Protocol::Sqs && crate::queues::is_fifo_name(endpoint);
    if topic.fifo && protocol != Protocol::Sqs {
        return Err(DomainError::invalid_with_code(
            "InvalidParameter",
            "protocol",
            "a FIFO topic delivers only to queues (protocol sqs), FIFO or standard",
        ));
    }
    if !topic.fifo && fifo_queue {
        return Err(DomainError::invalid_with_code(
            "InvalidParameter",
            "endpoint",
            "a FIFO queue can subscribe only to a FIFO topic",
        ));
    }
    Ok(())
}

fn check_filter_limit(
    state: &dyn StateRead,
    topic: &Topic,
    except: Option<&str>,
) -> ApplyResult<()> {
    let with_filters = all(state, topic.id)?
        .iter()
        .filter(|s| s.settings.filter.is_some() && Some(s.id.as_str()) != except)
        .count();
    if with_filters >= FILTER_POLICIES_MAX {
        return Err(at_limit(
            topic,
            "FilterPolicyLimitExceeded",
            FILTER_POLICIES_MAX,
            "subscriptions with a filter policy",
        ));
    }
    Ok(())
}

/// The refusal of one more subscription on `topic`, which already has the
/// most (`max`) of `what` it may have.
fn at_limit(topic: &Topic, code: &str, max: usize, what: &str) -> crate::error::ApplyError {
    DomainError::limit(
        code,
        format!("topic {:?} already has {max} {what}", topic.name),
    )
    .into()
}

/// Applies `Subscribe`.
pub fn subscribe(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    c: &Subscribe,
    effects: &mut Effects,
) -> ApplyResult<Subscribed> {
    let mut topic = require(txn, &c.topic)?;
    check_fits(&topic, c.protocol, &c.endpoint)?;
    let settings = Settings::parse(c.protocol, &c.attributes)?;
    let current = all(txn, topic.id)?;
    let count = current.len();
    if let Some(existing) = current
        .into_iter()
        .find(|s| s.protocol == c.protocol && s.endpoint == c.endpoint)
    {
        if existing.attributes != c.attributes && !c.attributes.is_empty() {
            return Err(DomainError::invalid_with_code(
                "InvalidParameter",
                "attributes",
                "the endpoint is already subscribed with different attributes",
            )
            .into());
        }
        // Subscribing a pending endpoint again sends the confirmation
        // request again, as SNS does.
        if let Some(token) = existing.pending_token.clone() {
            outbox::push(
                txn,
                ctx,
                &mut topic,
                &existing,
                Kind::Confirmation { token },
                effects,
            );
            super::save(txn, &topic);
        }
        return Ok(Subscribed {
            pending: !existing.confirmed(),
            id: existing.id,
        });
    }
    if count >= SUBSCRIPTIONS_MAX {
        return Err(at_limit(
            &topic,
            "SubscriptionLimitExceeded",
            SUBSCRIPTIONS_MAX,
            "subscriptions",
        ));
    }
    if settings.filter.is_some() {
        check_filter_limit(txn, &topic, None)?;
    }
    let pending = c.protocol.is_http();
    let sub = Subscription {
        id: c.id.clone(),
        topic_id: topic.id,
        protocol: c.protocol,
        endpoint: c.endpoint.clone(),
        attributes: c.attributes.clone(),
        settings,
        pending_token: pending.then(|| c.token.clone()),
        created_ms: ctx.now_ms,
    };
    save(txn, &sub);
    if pending {
        outbox::push(
            txn,
            ctx,
            &mut topic,
            &sub,
            Kind::Confirmation {
                token: c.token.clone(),
            },
            effects,
        );
        super::save(txn, &topic);
    }
    Ok(Subscribed {
        id: c.id.clone(),
        pending,
    })
}

/// Applies `ConfirmSubscription`: the subscription holding `token` starts
/// receiving. Confirming again succeeds.
pub fn confirm(txn: &mut Txn<'_>, topic: &str, token: &str) -> ApplyResult<String> {
    let t = require(txn, topic)?;
    let subs = all(txn, t.id)?;
    if let Some(mut s) = subs
        .iter()
        .find(|s| s.pending_token.as_deref() == Some(token))
        .cloned()
    {
        s.pending_token = None;
        save(txn, &s);
        return Ok(s.id);
    }
    Err(DomainError::invalid_with_code(
        "InvalidParameter",
        "token",
        "is not a pending confirmation token of this topic",
    )
    .into())
}

/// Applies `Unsubscribe`. Its outbox entries are dropped as they come due.
pub fn unsubscribe(txn: &mut Txn<'_>, topic: &str, id: &str) -> ApplyResult<()> {
    let t = require(txn, topic)?;
    require_sub(txn, t.id, id)?;
    txn.delete(sub_key(t.id, id));
    Ok(())
}

/// Applies `SetSubscriptionAttributes` (one attribute, as SNS).
pub fn set_attribute(
    txn: &mut Txn<'_>,
    topic: &str,
    id: &str,
    name: &str,
    value: &str,
) -> ApplyResult<()> {
    let t = require(txn, topic)?;
    let mut s = require_sub(txn, t.id, id)?;
    let mut attrs = s.attributes.clone();
    if value.is_empty() {
        attrs.remove(name);
    } else {
        attrs.insert(name.to_string(), value.to_string());
    }
    if !attrs.contains_key(name) && !s.attributes.contains_key(name) {
        // Validate the name even when clearing an unset attribute.
        Settings::parse(
            s.protocol,
            &BTreeMap::from([(name.to_string(), String::new())]),
        )?;
    }
    let settings = Settings::parse(s.protocol, &attrs)?;
    if settings.filter.is_some() && s.settings.filter.is_none() {
        check_filter_limit(txn, &t, Some(id))?;
    }
    s.attributes = attrs;
    s.settings = settings;
    save(txn, &s);
    Ok(())
}

/// The attributes GetSubscriptionAttributes shows, without the ARNs (the
/// edge adds those).
pub fn describe(topic: &Topic, s: &Subscription) -> BTreeMap<String, String> {
    let mut out = s.attributes.clone();
    out.insert("Protocol".into(), s.protocol.as_str().into());
    out.insert("PendingConfirmation".into(), (!s.confirmed()).to_string());
    out.insert("ConfirmationWasAuthenticated".into(), "true".into());
    out.insert("RawMessageDelivery".into(), s.settings.raw.to_string());
    if s.settings.filter.is_some() && !out.contains_key("FilterPolicyScope") {
        out.insert("FilterPolicyScope".into(), "MessageAttributes".into());
    }
    if s.protocol.is_http() {
        out.insert(
            "EffectiveDeliveryPolicy".into(),
            DeliveryPolicy::effective(
                topic.delivery_policy().as_ref(),
                s.settings.delivery.as_ref(),
            )
            .to_json(),
        );
    }
    out
}
