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
use sluice_filter::{FilterPolicy, Message as FilterMessage};
use sluice_proto::v1 as pb;

use crate::poll_lease::{compile_filters, invoke_limit, reported_failures};
use crate::processing_result::{self, Reporter};
use crate::ClusterLink;

/// Pause after the cluster could not be reached.
const BACKOFF: Duration = Duration::from_secs(1);
/// Largest event one invocation gets, bytes (a synchronous payload is at
/// most 6 MiB): a batch that serialises larger is handed over in parts.
const EVENT_BYTES_MAX: usize = (6 << 20) - (64 << 10);

/// Runs the poller of one queue mapping slot until `stop` is set (checked
/// between batches, so a batch in hand is invoked and deleted first) or the
/// task is aborted.
pub async fn run(
    link: Arc<ClusterLink>,
    lease: pb::PollLease,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    let Some(filters) = compile_filters(&lease) else {
        return;
    };
    tracing::info!(mapping = %lease.mapping_uuid, slot = lease.slot, queue = %lease.queue_name, function = %lease.function_name, "queue poller started");
    let mut reporter = Reporter::default();
    while !*stop.borrow() {
        let batch = match gather(&link, &lease, &stop).await {
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
        tracing::debug!(mapping = %lease.mapping_uuid, slot = lease.slot, messages = batch.len(), "batch received");
        let records: Vec<Value> = batch.iter().map(|m| record(&lease, m)).collect();
        let (pass, rejected): (Vec<usize>, Vec<usize>) =
            (0..batch.len()).partition(|&i| passes(&filters, &records[i]));
        // Rejected by the filters: deleted unseen, as Lambda does.
        let mut done: Vec<usize> = rejected;
        for part in parts(&pass, &records) {
            let (ok, result) = invoke_part(&link, &lease, &batch, &records, &part).await;
            done.extend(ok);
            reporter
                .report(&link, &lease.function_name, &lease.mapping_uuid, result)
                .await;
        }
        for chunk in done.chunks(10) {
            let handles = chunk
                .iter()
                .map(|&i| (i.to_string(), batch[i].receipt_handle.clone()))
                .collect();
            match link.delete(&lease.queue_name, handles).await {
                Ok(failed) if failed.is_empty() => {}
                // Left to reappear: at least once.
                Ok(failed) => {
                    tracing::warn!(queue = %lease.queue_name, entries = failed.len(), "deletes refused (receipt handles expired?)")
                }
                Err(e) => tracing::warn!(queue = %lease.queue_name, error = %e, "delete failed"),
            }
        }
    }
    tracing::info!(mapping = %lease.mapping_uuid, slot = lease.slot, "queue poller stopped");
}

/// The records of `pass` in parts whose event stays under the payload
/// limit.
fn parts(pass: &[usize], records: &[Value]) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for &i in pass {
        let n = records[i].to_string().len() + 1;
        if out.is_empty() || size + n > EVENT_BYTES_MAX {
            out.push(Vec::new());
            size = 16;
        }
        size += n;
        out.last_mut().expect("pushed above").push(i);
    }
    out
}

/// Invokes the function with the records of `part`; the ones to delete,
/// and the processing result.
async fn invoke_part(
    link: &ClusterLink,
    lease: &pb::PollLease,
    batch: &[pb::Message],
    records: &[Value],
    part: &[usize],
) -> (Vec<usize>, &'static str) {
    let event = json!({ "Records": part.iter().map(|&i| records[i].clone()).collect::<Vec<_>>() });
    match link
        .invoke(
            &lease.function_name,
            event.to_string().into_bytes(),
            invoke_limit(lease),
        )
        .await
    {
        Ok(r) if r.function_error.is_empty() => {
            if !lease.report_batch_item_failures {
                return (part.to_vec(), processing_result::OK);
            }
            let ids: HashSet<&str> = part.iter().map(|&i| batch[i].message_id.as_str()).collect();
            match reported_failures(&r.payload, &ids) {
                Some(failed) => (
                    part.iter()
                        .copied()
                        .filter(|&i| !failed.contains(&batch[i].message_id))
                        .collect(),
                    processing_result::OK,
                ),
                // An answer that cannot be read, or that names a message
                // not in the batch, fails the whole batch (as on Lambda).
                None => {
                    tracing::warn!(queue = %lease.queue_name, "unreadable batchItemFailures: the batch stays");
                    (Vec::new(), processing_result::FUNCTION_FAILED)
                }
            }
        }
        Ok(r) => {
            tracing::debug!(queue = %lease.queue_name, error = %String::from_utf8_lossy(&r.payload), "function failed: the batch stays");
            (Vec::new(), processing_result::FUNCTION_FAILED)
        }
        Err(e) => {
            tracing::debug!(queue = %lease.queue_name, error = %e, "invoke failed: the batch stays");
            tokio::time::sleep(BACKOFF).await;
            (Vec::new(), processing_result::INVOKE_FAILED)
        }
    }
}

/// Receives a batch: up to the batch size, waiting up to 20 s for the first
/// message and then up to the batching window for more.
async fn gather(
    link: &ClusterLink,
    lease: &pb::PollLease,
    stop: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<pb::Message>, tonic::Status> {
    let size = lease.batch_size.max(1) as usize;
    let window = Duration::from_secs(u64::from(lease.batching_window_s));
    let mut batch: Vec<pb::Message> = Vec::new();
    let mut first_at: Option<Instant> = None;
    loop {
        if *stop.borrow() && batch.is_empty() {
            return Ok(batch);
        }
        let wait = match first_at {
            None => 20,
            Some(t) => {
                let left = window.saturating_sub(t.elapsed());
                if left.is_zero() {
                    return Ok(batch);
                }
                // Rounded up: a zero wait would spin through the last
                // second of the window.
                left.as_millis().div_ceil(1000).clamp(1, 20) as u32
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_batches_are_handed_over_in_parts_under_the_payload_limit() {
        let big = json!({"body": "x".repeat(1 << 20)});
        let records = vec![big; 12];
        let pass: Vec<usize> = (0..12).collect();
        let split = parts(&pass, &records);
        assert!(split.len() >= 2, "{}", split.len());
        assert_eq!(split.iter().map(Vec::len).sum::<usize>(), 12);
        for p in &split {
            let size: usize = p.iter().map(|&i| records[i].to_string().len() + 1).sum();
            assert!(size < EVENT_BYTES_MAX);
        }
        assert!(parts(&[], &records).is_empty());
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
        let f = |p: &str| vec![FilterPolicy::parse(p, sluice_filter::Scope::MessageBody).unwrap()];
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
