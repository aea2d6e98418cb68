//! Queue pollers: a worker's side of an event source mapping slot.
//!
//! Each queue mapping slot the worker holds runs one poller. It long-polls
//! the queue, gathers a batch (up to the batch size, within the batching
//! window counted from the first message), drops and deletes the messages
//! the mapping's filter patterns reject (as Lambda does), invokes the
//! function synchronously with the `aws:sqs` event, and deletes what
//! succeeded: the whole batch, or with `ReportBatchItemFailures` all but the
//! items the function named. A function error deletes nothing: the messages
//! reappear after their visibility timeout and reach the queue's
//! dead-letter queue after its `maxReceiveCount`.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_filter::{FilterPolicy, Message as FilterMessage, Scope};
use sluice_proto::v1 as pb;

use crate::ClusterLink;

/// Pause after the cluster could not be reached.
const BACKOFF: Duration = Duration::from_secs(1);

/// Runs the poller of one queue mapping slot until the task is aborted.
pub async fn run_queue(link: Arc<ClusterLink>, lease: pb::PollLease) {
    let filters: Vec<FilterPolicy> = lease
        .filters
        .iter()
        .filter_map(|f| FilterPolicy::parse(f, Scope::MessageBody).ok())
        .collect();
    tracing::info!(mapping = %lease.mapping_uuid, slot = lease.slot, queue = %lease.queue_name, function = %lease.function_name, "queue poller started");
    loop {
        let batch = match gather(&link, &lease).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(queue = %lease.queue_name, error = %e, "receive failed");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        if batch.is_empty() {
            continue;
        }
        let records: Vec<Value> = batch.iter().map(|m| record(&lease, m)).collect();
        let (pass, rejected): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| passes(&filters, &records[i]));
        let mut done: Vec<usize> = rejected;
        if !pass.is_empty() {
            let event =
                json!({ "Records": pass.iter().map(|&i| records[i].clone()).collect::<Vec<_>>() });
            match link
                .invoke(&lease.function_name, event.to_string().into_bytes())
                .await
            {
                Ok(r) if r.function_error.is_empty() => {
                    let failed = if lease.report_batch_item_failures {
                        reported_failures(&r.payload)
                    } else {
                        Some(HashSet::new())
                    };
                    match failed {
                        Some(failed) => done.extend(
                            pass.iter()
                                .copied()
                                .filter(|&i| !failed.contains(&batch[i].message_id)),
                        ),
                        // An answer that cannot be read fails the batch.
                        None => {
                            tracing::debug!(queue = %lease.queue_name, "unreadable batchItemFailures: the batch stays")
                        }
                    }
                }
                Ok(r) => {
                    tracing::debug!(queue = %lease.queue_name, error = %String::from_utf8_lossy(&r.payload), "function failed: the batch stays");
                }
                Err(e) => {
                    tracing::debug!(queue = %lease.queue_name, error = %e, "invoke failed: the batch stays");
                    tokio::time::sleep(BACKOFF).await;
                }
            }
        }
        for chunk in done.chunks(10) {
            let handles = chunk
                .iter()
                .map(|&i| (i.to_string(), batch[i].receipt_handle.clone()))
                .collect();
            if let Err(e) = link.delete(&lease.queue_name, handles).await {
                // Left to reappear: at least once.
                tracing::debug!(queue = %lease.queue_name, error = %e, "delete failed");
            }
        }
    }
}

/// Receives a batch: up to the batch size, waiting up to 20 s for the first
/// message and then up to the batching window for more.
async fn gather(
    link: &ClusterLink,
    lease: &pb::PollLease,
) -> Result<Vec<pb::Message>, tonic::Status> {
    let size = lease.batch_size.max(1) as usize;
    let window = Duration::from_secs(u64::from(lease.batching_window_s));
    let mut batch: Vec<pb::Message> = Vec::new();
    let mut first_at: Option<Instant> = None;
    loop {
        let wait = match first_at {
            None => 20,
            Some(t) => {
                let left = window.saturating_sub(t.elapsed());
                if left.is_zero() {
                    return Ok(batch);
                }
                left.as_secs().min(20) as u32
            }
        };
        let want = (size - batch.len()).min(10) as u32;
        let got = match link.receive(&lease.queue_name, want, wait).await {
            Ok(got) => got,
            // What was gathered is handed on; the error waits for the next.
            Err(_) if !batch.is_empty() => return Ok(batch),
            Err(e) => return Err(e),
        };
        batch.extend(got);
        if !batch.is_empty() && first_at.is_none() {
            first_at = Some(Instant::now());
        }
        // No window: what one receive returned is the batch.
        if batch.len() >= size || (window.is_zero() && !batch.is_empty()) {
            return Ok(batch);
        }
    }
}

/// The `aws:sqs` record of a message, as Lambda builds it.
fn record(lease: &pb::PollLease, m: &pb::Message) -> Value {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let attributes: BTreeMap<&String, &String> = m.attributes.iter().collect();
    let message_attributes: BTreeMap<&String, Value> = m
        .message_attributes
        .iter()
        .map(|(k, v)| {
            let binary = (!v.binary_value.is_empty()).then(|| b64(&v.binary_value));
            let string = (v.binary_value.is_empty()).then(|| v.string_value.clone());
            (
                k,
                json!({"stringValue": string, "binaryValue": binary, "stringListValues": [],
                       "binaryListValues": [], "dataType": v.data_type}),
            )
        })
        .collect();
    json!({
        "messageId": m.message_id,
        "receiptHandle": m.receipt_handle,
        "body": m.body,
        "attributes": attributes,
        "messageAttributes": message_attributes,
        "md5OfBody": m.md5_of_body,
        "eventSource": "aws:sqs",
        "eventSourceARN": lease.event_source_arn,
        "awsRegion": lease.region,
    })
}

/// Whether a record passes the mapping's filters (any of them; all pass
/// when there are none). As on Lambda, a JSON body is matched as JSON.
fn passes(filters: &[FilterPolicy], record: &Value) -> bool {
    if filters.is_empty() {
        return true;
    }
    let mut doc = record.clone();
    if let Some(body) = record["body"].as_str() {
        if let Ok(parsed) = serde_json::from_str::<Value>(body) {
            if parsed.is_object() {
                doc["body"] = parsed;
            }
        }
    }
    let text = doc.to_string();
    let message = FilterMessage::new(Default::default(), &text);
    filters.iter().any(|f| f.matches(&message))
}

/// The message ids a function reported failed (`{"batchItemFailures":
/// [{"itemIdentifier": id}]}`); `None` when the answer cannot be read,
/// which fails the whole batch as on Lambda. An empty or null answer
/// reports none.
fn reported_failures(payload: &[u8]) -> Option<HashSet<String>> {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) if payload.is_empty() => return Some(HashSet::new()),
        Err(_) => return None,
    };
    match &v["batchItemFailures"] {
        Value::Null => Some(HashSet::new()),
        Value::Array(items) => items
            .iter()
            .map(|i| i["itemIdentifier"].as_str().map(str::to_string))
            .collect(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_failures_follow_lambda() {
        let ok = reported_failures(br#"{"batchItemFailures": [{"itemIdentifier": "a"}]}"#);
        assert_eq!(ok, Some(HashSet::from(["a".to_string()])));
        assert_eq!(reported_failures(b"null"), Some(HashSet::new()));
        assert_eq!(reported_failures(b""), Some(HashSet::new()));
        assert_eq!(reported_failures(b"{}"), Some(HashSet::new()));
        assert_eq!(
            reported_failures(br#"{"batchItemFailures": [{"x": 1}]}"#),
            None
        );
        assert_eq!(reported_failures(br#"{"batchItemFailures": 3}"#), None);
        assert_eq!(reported_failures(b"not json"), None);
    }

    #[test]
    fn filters_match_the_record_with_a_json_body() {
        let lease = pb::PollLease::default();
        let m = pb::Message {
            message_id: "m".into(),
            body: r#"{"kind": "order", "n": 5}"#.into(),
            ..Default::default()
        };
        let r = record(&lease, &m);
        let f = |p: &str| vec![FilterPolicy::parse(p, Scope::MessageBody).unwrap()];
        assert!(passes(&[], &r));
        assert!(passes(&f(r#"{"body": {"kind": ["order"]}}"#), &r));
        assert!(!passes(&f(r#"{"body": {"kind": ["refund"]}}"#), &r));
        assert!(passes(
            &f(r#"{"body": {"n": [{"numeric": [">", 3]}]}}"#),
            &r
        ));
        assert!(passes(&f(r#"{"eventSource": ["aws:sqs"]}"#), &r));
    }
}
