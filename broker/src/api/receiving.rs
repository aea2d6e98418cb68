//! Receiving from a queue: the long-poll loop and a received message as the
//! wire carries it, shared by `ReceiveMessage` (queues.rs) and the push
//! consumer `ReceiveMessageStream` (receive_stream.rs).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use sluice_proto::v1 as pb;
use tonic::Status;

use super::queue_messages::from_value;
use super::Context;
use crate::clock::now_ms;
use crate::error::DomainError;
use crate::queues::delivery::{ReceiveRequest, Received};
use crate::queues::layout::BodyText;
use crate::queues::message::{self, AttributeValue};
use crate::queues::receipt::Receipt;

/// The attributes a receive returns with each message.
pub struct Names {
    /// System attribute names ("All", "SentTimestamp", ...).
    pub system: Vec<String>,
    /// Message attribute names, "All" or prefixes ("order.*").
    pub attributes: Vec<String>,
}

/// Counts a long poll as waiting (`sluice_long_polls_waiting`) while held,
/// also when the call is cancelled.
struct Waiting;

impl Waiting {
    fn start() -> Waiting {
        metrics::gauge!("sluice_long_polls_waiting").increment(1.0);
        Waiting
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        metrics::gauge!("sluice_long_polls_waiting").decrement(1.0);
    }
}
/// Seconds from 0 to `max`.
pub fn seconds_in(field: &str, v: i32, max: u32) -> Result<u32, DomainError> {
    if (0..=max as i32).contains(&v) {
        Ok(v as u32)
    } else {
        Err(DomainError::invalid(
            field,
            format!("must be from 0 to {max}, got {v}"),
        ))
    }
}

/// System attribute names ReceiveMessage can return.
pub const SYSTEM_ATTRIBUTES: &[&str] = &[
    "ApproximateReceiveCount",
    "ApproximateFirstReceiveTimestamp",
    "SentTimestamp",
    "SenderId",
    "MessageGroupId",
    "MessageDeduplicationId",
    "SequenceNumber",
    "AWSTraceHeader",
    "DeadLetterQueueSourceArn",
];

/// Checks attribute names against the `known` ones (or "All").
pub fn check_names(field: &str, names: &[String], known: &[&str]) -> Result<(), DomainError> {
    for n in names {
        if n != "All" && !known.contains(&n.as_str()) {
            return Err(DomainError::invalid_with_code(
                "InvalidAttributeName",
                field,
                format!(
                    "unknown attribute {n:?}; use \"All\" or one of {}",
                    known.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

fn wants(names: &[String], name: &str) -> bool {
    names.iter().any(|n| n == "All" || n == name)
}

fn wants_message_attribute(names: &[String], name: &str) -> bool {
    names.iter().any(|n| {
        n == "All"
            || n == ".*"
            || n == name
            || n.strip_suffix(".*")
                .is_some_and(|p| name.starts_with(&format!("{p}.")))
    })
}

/// Receives per `request` from `queue`, waiting until `deadline` for
/// a message (long polling); the messages with the attributes `names`
/// asks for. Shared by ReceiveMessage and ReceiveMessageStream.
pub async fn receive_until(
    ctx: &Context,
    queue: &str,
    request: &ReceiveRequest,
    names: &Names,
    deadline: Instant,
) -> Result<Vec<pb::Message>, Status> {
    let wake = ctx.waiters.of(queue);
    // The first look always asks the leader (a FIFO receive retried
    // with its attempt id must get the same messages back, and this
    // node may not have applied the latest sends); so does a look at
    // the time a hidden message comes due.
    let mut propose = true;
    let mut next_due_ms = None;
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !propose {
            // Woken by a message made receivable here (this node has
            // applied it), or at the end of the wait: this node's own
            // state says whether a receive can find one (another may
            // have taken it). A receive that would return nothing is
            // not proposed.
            let check = crate::queues::Receivable {
                name: queue.to_string(),
                now_ms: now_ms(),
            };
            propose = !matches!(ctx.ask_local(check), Ok(Ok(false)));
            let proposed = if propose { "true" } else { "false" };
            metrics::counter!("sluice_long_poll_wakeups_total", "proposed" => proposed)
                .increment(1);
        }
        if propose {
            let outcome = ctx
                .run(crate::queues::ReceiveMessages {
                    queue: queue.to_string(),
                    request: request.clone(),
                })
                .await?;
            if !outcome.messages.is_empty() || Instant::now() >= deadline {
                return outcome
                    .messages
                    .into_iter()
                    .map(|r| message_out(ctx, r, names))
                    .collect();
            }
            next_due_ms = outcome.next_due_ms;
        } else if Instant::now() >= deadline {
            return Ok(Vec::new());
        }
        // Nothing yet: wait for a send anywhere in the cluster (this
        // node applies it and wakes us), for the next hidden message
        // to come due, or for the end of the wait.
        let now = Instant::now();
        let mut until = deadline;
        if let Some(due) = next_due_ms {
            let in_ms = due.saturating_sub(now_ms());
            until = until.min(now + Duration::from_millis(in_ms + 1));
        }
        // At a due time the leader is asked (this node's state does not
        // show the message visible until a receive or a tick promotes
        // it); at the end of the wait, as on a wake-up, this node's
        // state is checked first.
        let comes_due = until < deadline;
        let _waiting = Waiting::start();
        tokio::select! {
            _ = &mut notified => propose = false,
            _ = tokio::time::sleep_until(until.into()) => propose = comes_due,
        }
    }
}

/// A received message as the wire carries it, with the attributes
/// `names` asks for and a sealed receipt handle.
pub fn message_out(ctx: &Context, r: Received, names: &Names) -> Result<pb::Message, Status> {
    let (system_names, attribute_names) = (&names.system, &names.attributes);
    let mut attributes = HashMap::new();
    let mut put = |name: &str, value: Option<String>| {
        if let Some(v) = value {
            if wants(system_names, name) {
                attributes.insert(name.to_string(), v);
            }
        }
    };
    put(
        "ApproximateReceiveCount",
        Some(r.head.receive_count.to_string()),
    );
    put(
        "ApproximateFirstReceiveTimestamp",
        r.head.first_receive_ms.map(|t| t.to_string()),
    );
    put("SentTimestamp", Some(r.head.sent_ms.to_string()));
    put("SenderId", Some(ctx.identity.account_id.clone()));
    put("MessageGroupId", r.head.group_id.clone());
    put("MessageDeduplicationId", r.body.dedup_id.clone());
    put("SequenceNumber", r.sequence_number.clone());
    put("AWSTraceHeader", r.body.trace_header.clone());
    put(
        "DeadLetterQueueSourceArn",
        r.body
            .dead_letter_source
            .as_deref()
            .map(|s| ctx.identity.queue_arn(s)),
    );
    let chosen: BTreeMap<String, AttributeValue> = r
        .body
        .attributes
        .into_iter()
        .filter(|(n, _)| wants_message_attribute(attribute_names, n))
        .collect();
    // The leader read every body out of the log before it answered.
    let BodyText::Inline(body) = r.body.body else {
        return Err(Status::internal(format!(
            "message {} came back without its body",
            r.body.message_id
        )));
    };
    Ok(pb::Message {
        message_id: r.body.message_id,
        receipt_handle: ctx.security.receipts.seal(&r.receipt.fields()),
        md5_of_body: r.body.md5_of_body,
        body,
        attributes,
        md5_of_message_attributes: message::md5_of_attributes(&chosen).unwrap_or_default(),
        message_attributes: chosen
            .iter()
            .map(|(n, v)| (n.clone(), from_value(v)))
            .collect(),
    })
}

/// The receipt a handle names, if this cluster sealed it.
pub fn open_receipt(ctx: &Context, field: &str, handle: &str) -> Result<Receipt, DomainError> {
    ctx.security
        .receipts
        .open(handle)
        .and_then(|f| Receipt::from_fields(&f))
        .ok_or_else(|| crate::queues::receipt::invalid_handle(field))
}
