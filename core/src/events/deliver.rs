//! Handing a rendered input to a target: the delivery primitives rules
//! ([`super::put`]), retries ([`super::retry`]) and schedules share. Each
//! runs in a child transaction, kept only if the target took it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::target::Destination;
use super::DEFAULT_BUS;
use crate::apply::{Ctx, Effects};
use crate::error::{ApplyError, ApplyResult, DomainError};
use crate::queues::message::{AttributeValue, NewMessage, Outgoing};
use crate::store::Txn;

/// Where the events are taken: the account and region the envelopes and
/// ARNs name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Origin {
    /// Account id.
    pub account: String,
    /// Region.
    pub region: String,
}

impl Origin {
    /// A rule's ARN.
    pub fn rule_arn(&self, bus: &str, rule: &str) -> String {
        let Origin { account, region } = self;
        if bus == DEFAULT_BUS {
            format!("arn:aws:events:{region}:{account}:rule/{rule}")
        } else {
            format!("arn:aws:events:{region}:{account}:rule/{bus}/{rule}")
        }
    }
}

/// Runs one delivery in a child transaction, kept only if it succeeds;
/// its refusal comes back as the reason. Shared by rules and schedules.
pub fn attempt(
    txn: &mut Txn<'_>,
    effects: &mut Effects,
    deliver: impl FnOnce(&mut Txn<'_>, &mut Effects) -> ApplyResult<Result<(), DomainError>>,
) -> ApplyResult<Result<(), DomainError>> {
    let before = effects.len();
    let (outcome, writes) = {
        let mut child = Txn::new(&*txn);
        let outcome = match deliver(&mut child, effects) {
            Ok(r) => r,
            Err(ApplyError::Rejected(e)) => Err(e),
            Err(e @ ApplyError::Store(_)) => return Err(e),
        };
        (outcome, child.into_writes())
    };
    match outcome {
        Ok(()) => {
            txn.merge(writes);
            Ok(Ok(()))
        }
        Err(e) => {
            effects.truncate(before);
            Ok(Err(e))
        }
    }
}

/// The ids a delivery outside a bus carries.
pub struct Handover<'a> {
    /// The event's id: a FIFO target's deduplication id.
    pub id: &'a str,
    /// A stream target's partition key.
    pub key: &'a str,
    /// A function target's request id.
    pub request: &'a str,
}

/// Hands `body` to a queue, topic, stream or function target in the
/// transaction; a refusal comes back as the reason. Shared by rules and
/// schedules; a bus target is the caller's to route.
pub fn hand_over(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    origin: &Origin,
    destination: &Destination,
    body: &str,
    to: &Handover<'_>,
    effects: &mut Effects,
) -> ApplyResult<Result<(), DomainError>> {
    match destination {
        Destination::Queue { name, group_id } => {
            let out = Outgoing {
                body: body.into(),
                delay_seconds: None,
                attributes: BTreeMap::new(),
                system_attributes: BTreeMap::new(),
                dedup_id: group_id
                    .as_ref()
                    .map(|_| to.id.to_string())
                    .unwrap_or_default(),
                group_id: group_id.clone().unwrap_or_default(),
            };
            match NewMessage::validate("", group_id.is_some(), out) {
                Ok(m) => send_one(txn, ctx, name, m, effects),
                Err(e) => Ok(Err(e)),
            }
        }
        Destination::Topic { name, group_id } => {
            let input = crate::topics::publish::PublishInput {
                message: body.into(),
                group_id: group_id.clone().unwrap_or_default(),
                dedup_id: group_id
                    .as_ref()
                    .map(|_| to.id.to_string())
                    .unwrap_or_default(),
                ..Default::default()
            };
            let p = match crate::topics::publish::Publication::validate(
                "",
                group_id.is_some(),
                input,
            ) {
                Ok(p) => p,
                Err(e) => return Ok(Err(e)),
            };
            let Origin { account, region } = origin;
            let arn = format!("arn:aws:sns:{region}:{account}:{name}");
            let mut r = crate::topics::publish::publish(txn, ctx, name, &arn, &[p], effects)?;
            Ok(r.pop().expect("one result a publication").map(|_| ()))
        }
        Destination::Stream { name, .. } => {
            let record = match crate::streams::records::NewRecord::new(
                "",
                body.as_bytes().to_vec(),
                to.key.to_string(),
                "",
            ) {
                Ok(r) => r,
                Err(e) => return Ok(Err(e)),
            };
            let mut r = crate::streams::records::put(txn, ctx, name, &[record], effects)?;
            Ok(r.pop().expect("one result a record").map(|_| ()))
        }
        Destination::Function { name, qualifier } => {
            if body.len() > crate::limits::functions::EVENT_PAYLOAD_MAX {
                return Ok(Err(DomainError::limit(
                    "RequestEntityTooLargeException",
                    format!(
                        "the input is {} bytes; an asynchronous invocation takes at most {}",
                        body.len(),
                        crate::limits::functions::EVENT_PAYLOAD_MAX
                    ),
                )));
            }
            crate::functions::events::enqueue(
                txn,
                ctx,
                name,
                qualifier,
                to.request,
                body.as_bytes(),
                effects,
            )?;
            Ok(Ok(()))
        }
        Destination::Bus { .. } => unreachable!("a bus target is routed by its caller"),
    }
}

/// Sends one message to a queue; a refusal comes back as the reason.
pub fn send_one(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    queue: &str,
    m: NewMessage,
    effects: &mut Effects,
) -> ApplyResult<Result<(), DomainError>> {
    let mut r =
        crate::queues::delivery::send(txn, ctx, queue, std::slice::from_ref(&m), None, effects)?;
    Ok(r.pop().expect("one result a message").map(|_| ()))
}

/// The message a dead-letter queue takes for a failed delivery: the input,
/// with what failed in its attributes, as EventBridge sends it.
pub fn dead_letter(
    body: &str,
    rule_arn: &str,
    target_arn: &str,
    why: &DomainError,
) -> Result<NewMessage, DomainError> {
    let attr = |v: &str| AttributeValue {
        data_type: "String".into(),
        string_value: Some(crate::error::cut(v, 1024)),
        binary_value: None,
    };
    let attributes = BTreeMap::from([
        ("RULE_ARN".to_string(), attr(rule_arn)),
        ("TARGET_ARN".to_string(), attr(target_arn)),
        ("ERROR_CODE".to_string(), attr(&why.code)),
        ("ERROR_MESSAGE".to_string(), attr(&why.message)),
    ]);
    let out = Outgoing {
        body: body.into(),
        delay_seconds: None,
        attributes,
        system_attributes: BTreeMap::new(),
        dedup_id: String::new(),
        group_id: String::new(),
    };
    NewMessage::validate("", false, out)
}
