//! Subscriptions: who receives a topic's messages, which of them, and how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::outbox::{self, Kind};
use super::policy::{self, DeliveryPolicy};
use super::{require, Topic, FILTER_POLICIES_MAX, SUBSCRIPTIONS_MAX};
use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::filter::{FilterPolicy, Scope};
use crate::queues::attributes::queue_name_from_arn;
use crate::store::keys::{self, Key};
use crate::store::{codec, StateRead, Txn};

/// Where a subscription delivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Protocol {
    /// A Sluice queue (SNS `sqs`).
    Sqs,
    /// A function (SNS `lambda`), invoked by workers.
    Lambda,
    /// An HTTP endpoint.
    Http,
    /// An HTTPS endpoint.
    Https,
}

impl Protocol {
    /// Reads a protocol: the SNS names, or `queue` and `function`.
    pub fn parse(s: &str) -> Option<Protocol> {
        match s {
            "sqs" | "queue" => Some(Protocol::Sqs),
            "lambda" | "function" => Some(Protocol::Lambda),
            "http" => Some(Protocol::Http),
            "https" => Some(Protocol::Https),
            _ => None,
        }
    }

    /// The SNS name.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Sqs => "sqs",
            Protocol::Lambda => "lambda",
            Protocol::Http => "http",
            Protocol::Https => "https",
        }
    }

    fn is_http(self) -> bool {
        matches!(self, Protocol::Http | Protocol::Https)
    }
}

/// A subscription as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    /// The id: the last part of the subscription ARN.
    pub id: String,
    /// Topic id.
    pub topic_id: u64,
    /// Protocol.
    pub protocol: Protocol,
    /// Queue name (sqs), function name (lambda) or URL (http/https).
    pub endpoint: String,
    /// Settable attributes as given.
    pub attributes: BTreeMap<String, String>,
    /// What the attributes mean.
    pub settings: Settings,
    /// The confirmation token while an HTTP/S subscription awaits
    /// confirmation.
    pub pending_token: Option<String>,
    /// State-machine time of creation.
    pub created_ms: u64,
}

impl Subscription {
    /// True once deliveries may start.
    pub fn confirmed(&self) -> bool {
        self.pending_token.is_none()
    }
}

/// The parsed settable attributes of a subscription.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Settings {
    /// Deliver the message alone instead of the JSON envelope.
    pub raw: bool,
    /// The filter policy.
    pub filter: Option<FilterPolicy>,
    /// Dead-letter queue name.
    pub dead_letter_queue: Option<String>,
    /// HTTP/S delivery policy.
    pub delivery: Option<DeliveryPolicy>,
}

impl Settings {
    /// Validates a subscription's attributes for `protocol`.
    pub fn parse(
        protocol: Protocol,
        attrs: &BTreeMap<String, String>,
    ) -> Result<Settings, DomainError> {
        let bad = |name: &str, rule: String| {
            DomainError::invalid_with_code("InvalidParameter", format!("attributes.{name}"), rule)
        };
        let mut s = Settings::default();
        let scope = match attrs.get("FilterPolicyScope").map(String::as_str) {
            None | Some("") => Scope::MessageAttributes,
            Some(v) => Scope::parse(v).ok_or_else(|| {
                bad(
                    "FilterPolicyScope",
                    format!("must be MessageAttributes or MessageBody, got {v:?}"),
                )
            })?,
        };
        for (k, v) in attrs {
            match k.as_str() {
                "RawMessageDelivery" => {
                    s.raw = match v.as_str() {
                        "true" => true,
                        "false" | "" => false,
                        _ => return Err(bad(k, format!("must be \"true\" or \"false\", got {v:?}"))),
                    };
                    if s.raw && protocol == Protocol::Lambda {
                        return Err(bad(k, "is not supported for lambda subscriptions".into()));
                    }
                }
                "FilterPolicy" if v.is_empty() => {}
                "FilterPolicy" => {
                    s.filter = Some(
                        FilterPolicy::parse(v, scope)
                            .map_err(|e| bad(k, format!("invalid filter policy: {e}")))?,
                    )
                }
                "FilterPolicyScope" | "SubscriptionRoleArn" => {}
                "DeliveryPolicy" if v.is_empty() => {}
                "DeliveryPolicy" if protocol.is_http() => {
                    s.delivery = Some(policy::parse_subscription(&format!("attributes.{k}"), v)?)
                }
                "DeliveryPolicy" => {
                    return Err(bad(k, "applies only to http and https subscriptions".into()))
                }
                "RedrivePolicy" if v.is_empty() => {}
                "RedrivePolicy" => s.dead_letter_queue = Some(parse_redrive(v)?),
                other => {
                    return Err(DomainError::invalid_with_code(
                        "InvalidParameter",
                        "attributes",
                        format!(
                            "unknown subscription attribute {other:?}; settable are RawMessageDelivery, FilterPolicy, FilterPolicyScope, DeliveryPolicy, RedrivePolicy, SubscriptionRoleArn"
                        ),
                    ))
                }
            }
        }
        Ok(s)
    }
}

fn parse_redrive(v: &str) -> Result<String, DomainError> {
    let field = "attributes.RedrivePolicy";
    let json: serde_json::Value = serde_json::from_str(v).map_err(|e| {
        DomainError::invalid_with_code("InvalidParameter", field, format!("must be JSON: {e}"))
    })?;
    let arn = json
        .get("deadLetterTargetArn")
        .and_then(|a| a.as_str())
        .ok_or_else(|| {
            DomainError::invalid_with_code(
                "InvalidParameter",
                field,
                "must be {\"deadLetterTargetArn\": \"arn:aws:sqs:REGION:ACCOUNT:QUEUE\"}",
            )
        })?;
    let name = queue_name_from_arn(arn).ok_or_else(|| {
        DomainError::invalid_with_code(
            "InvalidParameter",
            format!("{field}.deadLetterTargetArn"),
            format!("{arn:?} is not an SQS queue ARN"),
        )
    })?;
    crate::queues::validate_name(&format!("{field}.deadLetterTargetArn"), name)?;
    Ok(name.to_string())
}

/// Checks an endpoint for `protocol` and returns it in stored form (a queue
/// or function name, or the URL).
pub fn normalize_endpoint(protocol: Protocol, endpoint: &str) -> Result<String, DomainError> {
    let field = "endpoint";
    match protocol {
        Protocol::Sqs => {
            let name = queue_name_from_arn(endpoint).unwrap_or(endpoint);
            crate::queues::validate_name(field, name)?;
            Ok(name.to_string())
        }
        Protocol::Lambda => {
            // arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER], or NAME.
            let name = match endpoint.strip_prefix("arn:") {
                Some(rest) => {
                    let parts: Vec<&str> = rest.split(':').collect();
                    match parts.as_slice() {
                        [_, "lambda", _, _, "function", name, ..] => *name,
                        _ => {
                            return Err(DomainError::invalid(
                                field,
                                "must be a function name or a Lambda function ARN",
                            ))
                        }
                    }
                }
                None => endpoint,
            };
            if name.is_empty()
                || name.len() > 64
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(DomainError::invalid(
                    field,
                    "a function name is 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
                ));
            }
            Ok(name.to_string())
        }
        Protocol::Http | Protocol::Https => {
            let scheme = if protocol == Protocol::Http {
                "http://"
            } else {
                "https://"
            };
            let rest = endpoint.strip_prefix(scheme).ok_or_else(|| {
                DomainError::invalid(
                    field,
                    format!(
                        "an {} endpoint is a URL starting with {scheme}",
                        protocol.as_str()
                    ),
                )
            })?;
            let host = rest.split(['/', '?']).next().unwrap_or("");
            if host.is_empty()
                || endpoint.len() > 2048
                || endpoint
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(DomainError::invalid(
                    field,
                    "must be an absolute URL with a host, at most 2048 characters, without spaces",
                ));
            }
            Ok(endpoint.to_string())
        }
    }
}

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

fn sub_key(tid: u64, id: &str) -> Vec<u8> {
    Key::new("tsub").u64(tid).str(id).build()
}

fn sub_prefix(tid: u64) -> Vec<u8> {
    Key::new("tsub").u64(tid).build()
}

/// Reads a subscription.
pub fn load(state: &dyn StateRead, tid: u64, id: &str) -> ApplyResult<Option<Subscription>> {
    let key = sub_key(tid, id);
    match state.get(&key)? {
        None => Ok(None),
        Some(b) => Ok(Some(codec::decode(&key, &b)?)),
    }
}

fn not_found(id: &str) -> DomainError {
    DomainError::not_found("NotFound", format!("subscription {id:?} does not exist"))
}

/// Reads a subscription or fails with `NotFound`.
pub fn require_sub(state: &dyn StateRead, tid: u64, id: &str) -> ApplyResult<Subscription> {
    load(state, tid, id)?.ok_or_else(|| not_found(id).into())
}

fn save(txn: &mut Txn<'_>, s: &Subscription) {
    txn.put_record(sub_key(s.topic_id, &s.id), s);
}

/// Every subscription of a topic, in id order.
pub fn all(state: &dyn StateRead, tid: u64) -> ApplyResult<Vec<Subscription>> {
    Ok(crate::store::records_under(state, &sub_prefix(tid))?)
}

/// A page of a topic's subscriptions after id `after`, and whether more
/// follow.
pub fn page(
    state: &dyn StateRead,
    tid: u64,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<(Vec<Subscription>, bool)> {
    let prefix = sub_prefix(tid);
    let start = match after {
        Some(a) => std::ops::Bound::Excluded(sub_key(tid, a)),
        None => std::ops::Bound::Included(prefix.clone()),
    };
    let mut out = Vec::new();
    for kv in state.range(start, keys::prefix_end(&prefix), false) {
        let (k, v) = kv?;
        if out.len() == limit {
            return Ok((out, true));
        }
        out.push(codec::decode(&k, &v)?);
    }
    Ok((out, false))
}

fn check_fits(topic: &Topic, protocol: Protocol, endpoint: &str) -> Result<(), DomainError> {
    let fifo_queue = protocol == Protocol::Sqs && endpoint.ends_with(".fifo");
    if topic.fifo && !fifo_queue {
        return Err(DomainError::invalid_with_code(
            "InvalidParameter",
            "protocol",
            "a FIFO topic delivers only to FIFO queues (protocol sqs, a queue ending in .fifo)",
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
        return Err(DomainError::limit(
            "FilterPolicyLimitExceeded",
            format!(
                "topic {:?} already has {FILTER_POLICIES_MAX} subscriptions with a filter policy",
                topic.name
            ),
        )
        .into());
    }
    Ok(())
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
        return Err(DomainError::limit(
            "SubscriptionLimitExceeded",
            format!(
                "topic {:?} already has {SUBSCRIPTIONS_MAX} subscriptions",
                topic.name
            ),
        )
        .into());
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
