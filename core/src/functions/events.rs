//! Asynchronous invocation: events committed before Invoke answers 202,
//! run by the leader's invoker with retries, then sent to destinations.
//!
//! An `Event` invocation is a command that stores the event under its
//! function, due at once. The leader's invoker (`crate::invoker`) runs due
//! events and settles each with another command: success goes to the
//! on-success destination; a failure is retried after the delay the leader
//! chose (the first retry after one delay, the second after two), until the
//! function's `maximum_retry_attempts` (0-2, default 2) or its maximum event
//! age (60 s - 6 h, default 6 h) is used up; then the on-failure
//! destination gets the AWS destination record. An event whose run was cut
//! short (its node died) is still stored and due, so another node runs it:
//! at least once.
//!
//! Destinations are written in the settling command itself (a queue
//! message, a topic publish, a stream record, or another function's
//! event), the same deliberate cross-resource step as topic fan-out.

use serde::{Deserialize, Serialize};

use super::{require, save};
use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::queues::message::{NewMessage, Outgoing};
use crate::store::keys::{read_u64, Key};
use crate::store::{codec, StateRead, Txn};
use crate::topics::publish::{Publication, PublishInput};

/// Most asynchronous invocations waiting per function.
pub const EVENTS_MAX: u64 = 100_000;

/// Where a destination record goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// A queue, by name.
    Queue(String),
    /// A topic, by name.
    Topic(String),
    /// A function, by name (the record becomes its event).
    Function(String),
    /// A stream, by name.
    Stream(String),
}

impl Destination {
    /// Reads a destination ARN (SQS, SNS, Lambda or Kinesis).
    pub fn parse(field: &str, arn: &str) -> Result<Destination, DomainError> {
        let bad = || {
            DomainError::invalid(
                field,
                format!("{arn:?} is not the ARN of a queue, topic, function or stream"),
            )
        };
        let rest = arn.strip_prefix("arn:").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.splitn(5, ':').collect();
        let [_, service, _, _, resource] = parts.as_slice() else {
            return Err(bad());
        };
        let d = match *service {
            "sqs" => {
                crate::queues::validate_name(field, resource)?;
                Destination::Queue(resource.to_string())
            }
            "sns" => {
                // A function's setting: refused with the code of the
                // function API's other refusals, not SNS's InvalidParameter.
                crate::topics::validate_name(field, resource).map_err(|e| DomainError {
                    code: "InvalidParameterValue".into(),
                    ..e
                })?;
                Destination::Topic(resource.to_string())
            }
            "lambda" => {
                let name = resource
                    .strip_prefix("function:")
                    .map(|n| n.split(':').next().unwrap_or(n))
                    .ok_or_else(bad)?;
                super::validate_name(field, name)?;
                Destination::Function(name.to_string())
            }
            "kinesis" => {
                let name = resource.strip_prefix("stream/").ok_or_else(bad)?;
                crate::streams::validate_name(field, name)?;
                Destination::Stream(name.to_string())
            }
            _ => return Err(bad()),
        };
        Ok(d)
    }
}

/// A function's asynchronous invocation settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventConfig {
    /// Retries after the first failure, 0-2.
    pub max_retries: u32,
    /// Oldest event still run, seconds (60-21600).
    pub max_age_s: u32,
    /// Where successful results go.
    pub on_success: Option<Destination>,
    /// Where events that could not be processed go.
    pub on_failure: Option<Destination>,
}

impl Default for EventConfig {
    fn default() -> Self {
        EventConfig {
            max_retries: 2,
            max_age_s: 21_600,
            on_success: None,
            on_failure: None,
        }
    }
}

impl EventConfig {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), DomainError> {
        if self.max_retries > 2 {
            return Err(DomainError::invalid(
                "maximum_retry_attempts",
                format!("must be from 0 to 2, got {}", self.max_retries),
            ));
        }
        if !(60..=21_600).contains(&self.max_age_s) {
            return Err(DomainError::invalid(
                "maximum_event_age_in_seconds",
                format!("must be from 60 to 21600, got {}", self.max_age_s),
            ));
        }
        Ok(())
    }
}

/// A stored event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// The request id Invoke returned.
    pub request_id: String,
    /// `$LATEST`, a version or an alias.
    pub qualifier: String,
    /// The event.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
    /// Runs that failed so far.
    pub attempts: u32,
    /// State-machine time it was accepted.
    pub created_ms: u64,
    /// When it is due.
    pub due_ms: u64,
}

/// How a run of an event ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunOutcome {
    /// The function returned `response`.
    Success {
        /// The function's result.
        #[serde(with = "serde_bytes")]
        response: Vec<u8>,
        /// The version that ran.
        executed_version: String,
    },
    /// The function failed (a function error, or it could not run).
    Failure {
        /// The error document.
        #[serde(with = "serde_bytes")]
        response: Vec<u8>,
        /// The version that ran.
        executed_version: String,
        /// The leader's base delay before a retry, ms.
        retry_delay_ms: u64,
    },
    /// Not run: older than the maximum event age.
    Expired,
}

fn config_key(name: &str) -> Vec<u8> {
    Key::new("fevcfg").str(name).build()
}

fn event_key(name: &str, seq: u64) -> Vec<u8> {
    Key::new("fevent").str(name).u64(seq).build()
}

fn due_key(name: &str, due: u64, seq: u64) -> Vec<u8> {
    Key::new("fedue").str(name).u64(due).u64(seq).build()
}

/// A function's event settings (the defaults when never set).
pub fn config(state: &dyn StateRead, name: &str) -> ApplyResult<EventConfig> {
    Ok(crate::store::record_at(state, &config_key(name))?.unwrap_or_default())
}

/// Applies `PutFunctionEventInvokeConfig`.
pub fn put_config(txn: &mut Txn<'_>, name: &str, c: &EventConfig) -> ApplyResult<()> {
    require(txn, name)?;
    c.validate()?;
    txn.put_record(config_key(name), c);
    Ok(())
}

/// Applies an `Event` invocation: stores the event, due now.
pub fn enqueue(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    qualifier: &str,
    request_id: &str,
    payload: &[u8],
    effects: &mut Effects,
) -> ApplyResult<()> {
    let mut f = require(txn, name)?;
    if f.pending_events >= EVENTS_MAX {
        return Err(DomainError::limit(
            "TooManyRequestsException",
            format!("function {name:?} has {EVENTS_MAX} asynchronous invocations waiting"),
        )
        .into());
    }
    f.event_seq += 1;
    f.pending_events += 1;
    let e = Event {
        request_id: request_id.to_string(),
        qualifier: qualifier.to_string(),
        payload: payload.to_vec(),
        attempts: 0,
        created_ms: ctx.now_ms,
        due_ms: ctx.now_ms,
    };
    txn.put_record(event_key(name, f.event_seq), &e);
    txn.put_record(due_key(name, e.due_ms, f.event_seq), &());
    save(txn, &f);
    effects.push(crate::apply::Effect::EventReady);
    Ok(())
}

/// A due event with its function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEvent {
    /// Function name.
    pub function: String,
    /// Event number.
    pub seq: u64,
    /// The event.
    pub event: Event,
    /// Whether it is past the function's maximum event age.
    pub expired: bool,
}

/// Up to `limit` events due at `now_ms`, over all functions, leaving out
/// those `skip` names.
pub fn due(
    state: &dyn StateRead,
    now_ms: u64,
    limit: usize,
    skip: &dyn Fn(&str, u64) -> bool,
) -> ApplyResult<Vec<DueEvent>> {
    let mut out = Vec::new();
    let names = crate::store::keys::names_after(state, "function", None, usize::MAX)?.0;
    for name in names {
        if out.len() >= limit {
            break;
        }
        let prefix = Key::new("fedue").str(&name).build();
        let end = Key::new("fedue")
            .str(&name)
            .u64(now_ms.saturating_add(1))
            .build();
        let cfg = config(state, &name)?;
        for kv in state.range(
            std::ops::Bound::Included(prefix.clone()),
            std::ops::Bound::Excluded(end),
            false,
        ) {
            if out.len() >= limit {
                break;
            }
            let (k, _) = kv?;
            let Some(seq) = read_u64(&k, prefix.len() + 8) else {
                continue;
            };
            if skip(&name, seq) {
                continue;
            }
            let key = event_key(&name, seq);
            let Some(b) = state.get(&key)? else { continue };
            let event: Event = codec::decode(&key, &b)?;
            let expired = now_ms.saturating_sub(event.created_ms) > u64::from(cfg.max_age_s) * 1000;
            out.push(DueEvent {
                function: name.clone(),
                seq,
                event,
                expired,
            });
        }
    }
    Ok(out)
}

/// What a settle did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Settled {
    /// Done: the event is gone (delivered to a destination if there is one).
    Done,
    /// Scheduled for another run.
    Retrying,
    /// Nothing to settle (settled before, or the function is gone).
    Unknown,
}

/// The ARNs a settle writes into destination records and envelopes,
/// chosen by the leader (the state machine knows only names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Arns {
    /// The function's ARN, without a qualifier.
    pub function: String,
    /// `arn:aws:sns:{region}:{account}:`, for a topic destination.
    pub sns_prefix: String,
}

/// Applies `SettleEvent` for the event `seq` of `name` with request id
/// `request_id` (an event of a function since deleted and created again
/// has another id, and is left alone).
#[allow(clippy::too_many_arguments)]
pub fn settle(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    arns: &Arns,
    seq: u64,
    request_id: &str,
    outcome: &RunOutcome,
    effects: &mut Effects,
) -> ApplyResult<Settled> {
    let Some(mut f) = super::load(txn, name)? else {
        return Ok(Settled::Unknown);
    };
    let key = event_key(name, seq);
    let Some(b) = txn.get(&key)? else {
        return Ok(Settled::Unknown);
    };
    let mut e: Event = codec::decode(&key, &b)?;
    if e.request_id != request_id {
        return Ok(Settled::Unknown);
    }
    let cfg = config(txn, name)?;
    txn.delete(key.clone());
    txn.delete(due_key(name, e.due_ms, seq));
    let (condition, destination, response, version, status) = match outcome {
        RunOutcome::Success {
            response,
            executed_version,
        } => (
            "Success",
            &cfg.on_success,
            Some(response.as_slice()),
            executed_version.as_str(),
            None,
        ),
        RunOutcome::Failure {
            response,
            executed_version,
            retry_delay_ms,
        } => {
            e.attempts += 1;
            let old = ctx.now_ms.saturating_sub(e.created_ms) > u64::from(cfg.max_age_s) * 1000;
            if e.attempts <= cfg.max_retries && !old {
                e.due_ms = ctx.now_ms + retry_delay_ms * u64::from(e.attempts);
                txn.put_record(key, &e);
                txn.put_record(due_key(name, e.due_ms, seq), &());
                return Ok(Settled::Retrying);
            }
            (
                if old {
                    "EventAgeExceeded"
                } else {
                    "RetriesExhausted"
                },
                &cfg.on_failure,
                Some(response.as_slice()),
                executed_version.as_str(),
                Some("Unhandled"),
            )
        }
        RunOutcome::Expired => ("EventAgeExceeded", &cfg.on_failure, None, "$LATEST", None),
    };
    crate::invariant::decrement(&mut f.pending_events, "pending_events");
    save(txn, &f);
    if let Some(d) = destination {
        let record = record(
            ctx,
            &e,
            &arns.function,
            condition,
            response,
            version,
            status,
        );
        send(txn, ctx, d, &e, record, &arns.sns_prefix, effects)?;
    }
    Ok(Settled::Done)
}

/// The AWS destination record.
fn record(
    ctx: &Ctx,
    e: &Event,
    function_arn: &str,
    condition: &str,
    response: Option<&[u8]>,
    version: &str,
    function_error: Option<&str>,
) -> String {
    let payload = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(b).into_owned()))
    };
    let invoke_count = if condition == "Success" {
        e.attempts + 1
    } else {
        e.attempts
    };
    let mut v = serde_json::json!({
        "version": "1.0",
        "timestamp": crate::time::timestamp(ctx.now_ms),
        "requestContext": {
            "requestId": e.request_id,
            "functionArn": format!("{function_arn}:{}", if e.qualifier.is_empty() { "$LATEST" } else { &e.qualifier }),
            "condition": condition,
            "approximateInvokeCount": invoke_count,
        },
        "requestPayload": payload(&e.payload),
    });
    if let Some(r) = response {
        let mut rc = serde_json::json!({ "statusCode": 200, "executedVersion": version });
        if let Some(fe) = function_error {
            rc["functionError"] = serde_json::json!(fe);
        }
        v["responseContext"] = rc;
        v["responsePayload"] = payload(r);
    }
    v.to_string()
}

fn send(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    d: &Destination,
    e: &Event,
    record: String,
    sns_prefix: &str,
    effects: &mut Effects,
) -> ApplyResult<()> {
    match d {
        Destination::Queue(q) => {
            let fifo = q.ends_with(".fifo");
            let out = Outgoing {
                body: record,
                delay_seconds: None,
                attributes: Default::default(),
                system_attributes: Default::default(),
                dedup_id: if fifo {
                    e.request_id.clone()
                } else {
                    String::new()
                },
                group_id: if fifo { "lambda".into() } else { String::new() },
            };
            if let Ok(m) = NewMessage::validate("", fifo, out) {
                crate::topics::outbox::send_to_queue(txn, ctx, q, m, effects)?;
            }
        }
        Destination::Topic(t) => {
            let fifo = t.ends_with(".fifo");
            let input = PublishInput {
                message: record,
                group_id: if fifo { "lambda".into() } else { String::new() },
                dedup_id: if fifo {
                    e.request_id.clone()
                } else {
                    String::new()
                },
                ..Default::default()
            };
            if let Ok(p) = Publication::validate("", fifo, input) {
                let arn = format!("{sns_prefix}{t}");
                match crate::topics::publish::publish(txn, ctx, t, &arn, &[p], effects) {
                    Ok(_) | Err(crate::error::ApplyError::Rejected(_)) => {}
                    Err(err) => return Err(err),
                }
            }
        }
        Destination::Function(f) => {
            if super::load(txn, f)?.is_some() {
                let id = crate::queues::message::derived_uuid(
                    b"sluice/destination",
                    e.created_ms,
                    e.attempts.into(),
                );
                enqueue(txn, ctx, f, "", &id, record.as_bytes(), effects)?;
            }
        }
        Destination::Stream(s) => {
            let rec = crate::streams::records::NewRecord::keyed(
                record.into_bytes(),
                e.request_id.clone(),
            );
            match crate::streams::records::put(txn, ctx, s, &[rec], effects) {
                Ok(_) | Err(crate::error::ApplyError::Rejected(_)) => {}
                Err(err) => return Err(err),
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::functions::{create, delete};
    use crate::store::MemState;

    fn make(s: &mut MemState) {
        s.run(|t| create(t, &Ctx::at(1), &crate::testing::new_function("f")))
            .unwrap();
    }

    #[test]
    fn a_late_result_for_a_deleted_function_leaves_its_successor_alone() {
        let mut s = MemState::default();
        let ctx = Ctx::at(5);
        let mut fx = Effects::default();
        make(&mut s);
        s.run(|t| enqueue(t, &ctx, "f", "", "old-request", b"{}", &mut fx))
            .unwrap();
        s.run(|t| delete(t, "f")).unwrap();
        make(&mut s);
        s.run(|t| enqueue(t, &ctx, "f", "", "new-request", b"{}", &mut fx))
            .unwrap();
        let arns = Arns {
            function: "arn".into(),
            sns_prefix: "p:".into(),
        };
        let success = RunOutcome::Success {
            response: b"1".to_vec(),
            executed_version: "$LATEST".into(),
        };
        let stale = s
            .run(|t| settle(t, &ctx, "f", &arns, 1, "old-request", &success, &mut fx))
            .unwrap();
        assert_eq!(stale, Settled::Unknown);
        let due_now = due(&s, 10, 10, &|_, _| false).unwrap();
        assert_eq!(due_now.len(), 1);
        assert_eq!(due_now[0].event.request_id, "new-request");
        let done = s
            .run(|t| settle(t, &ctx, "f", &arns, 1, "new-request", &success, &mut fx))
            .unwrap();
        assert_eq!(done, Settled::Done);
        assert_eq!(
            crate::functions::require(&s, "f").unwrap().pending_events,
            0
        );
    }
}
