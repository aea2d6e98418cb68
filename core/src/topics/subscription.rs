//! A subscription: who receives a topic's messages, which of them, and
//! how; the record, its settings and where it is kept. The commands that
//! change subscriptions are in `subscriptions`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::policy::{self, DeliveryPolicy};
use crate::error::{ApplyResult, DomainError};
use crate::filter::{FilterPolicy, Scope};
use crate::queues::attributes::queue_name_from_arn;
use crate::store::keys::Key;
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

    pub(crate) fn is_http(self) -> bool {
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
    crate::queues::validate_name(&format!("{field}.deadLetterTargetArn"), name)
        .map_err(super::with_sns_code)?;
    Ok(name.to_string())
}

/// Checks an endpoint for `protocol` and returns it in stored form (a queue
/// or function name, or the URL).
pub fn normalize_endpoint(protocol: Protocol, endpoint: &str) -> Result<String, DomainError> {
    let field = "endpoint";
    match protocol {
        Protocol::Sqs => {
            let name = queue_name_from_arn(endpoint).unwrap_or(endpoint);
            crate::queues::validate_name(field, name).map_err(super::with_sns_code)?;
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
                            return Err(super::invalid(
                                field,
                                "must be a function name or a Lambda function ARN",
                            ))
                        }
                    }
                }
                None => endpoint,
            };
            if !crate::names::is_valid(name, 64, "-_") {
                return Err(super::invalid(
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
                super::invalid(
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
                return Err(super::invalid(
                    field,
                    "must be an absolute URL with a host, at most 2048 characters, without spaces",
                ));
            }
            Ok(endpoint.to_string())
        }
    }
}

pub(crate) fn sub_key(tid: u64, id: &str) -> Vec<u8> {
    Key::new("tsub").u64(tid).str(id).build()
}

fn sub_prefix(tid: u64) -> Vec<u8> {
    Key::new("tsub").u64(tid).build()
}

/// Reads a subscription.
pub fn load(state: &dyn StateRead, tid: u64, id: &str) -> ApplyResult<Option<Subscription>> {
    Ok(crate::store::record_at(state, &sub_key(tid, id))?)
}

fn not_found(id: &str) -> DomainError {
    DomainError::not_found("NotFound", format!("subscription {id:?} does not exist"))
}

/// Reads a subscription or fails with `NotFound`.
pub fn require_sub(state: &dyn StateRead, tid: u64, id: &str) -> ApplyResult<Subscription> {
    load(state, tid, id)?.ok_or_else(|| not_found(id).into())
}

pub(crate) fn save(txn: &mut Txn<'_>, s: &Subscription) {
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
    let pairs = state.scan_prefix_after(&sub_prefix(tid), after.map(|a| sub_key(tid, a)));
    Ok(crate::store::page(pairs, limit, |(k, v)| {
        codec::decode(&k, &v).map(Some)
    })?)
}
