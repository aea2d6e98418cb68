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
//!
//! A poller scales with the backlog, as Lambda's SQS pollers do: it runs
//! *lanes*, each receiving and handing over one batch at a time, and keeps
//! one lane waiting for messages while the others hand theirs over. A lane
//! that receives a batch while no other waits starts another (up to the
//! slot's share of the mapping's maximum concurrency); a lane that finds
//! another already waiting ends. So a message that arrives is received at
//! once whatever the function is busy with, and an idle mapping holds one
//! long poll per worker.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use sluice_filter::{FilterPolicy, Message as FilterMessage};
use sluice_proto::v1 as pb;
use tokio::sync::watch;

use crate::poll_lease::{compile_filters, invoke_limit, reported_failures};
use crate::processing_result::{self, Reporter};
use crate::ClusterLink;

/// Pause after the cluster could not be reached.
const BACKOFF: Duration = Duration::from_secs(1);
/// Largest event one invocation gets, bytes (a synchronous payload is at
/// most 6 MiB): a batch that serialises larger is handed over in parts.
const EVENT_BYTES_MAX: usize = (6 << 20) - (64 << 10);

/// What the lanes of one poller share.
struct Poller {
    link: Arc<ClusterLink>,
    lease: pb::PollLease,
    filters: Vec<FilterPolicy>,
    stop: watch::Receiver<bool>,
    lanes: Mutex<Lanes>,
    reporter: tokio::sync::Mutex<Reporter>,
}

/// How many lanes run, and how many of them wait for messages.
#[derive(Debug)]
struct Lanes {
    running: u32,
    waiting: u32,
    /// The most that may run: the lease's concurrency.
    cap: u32,
    /// When a lane was last started for a backlog.
    grown_at: Option<Instant>,
}

/// A backlog adds a lane at most this often: lanes that cannot help (the
/// machine is busy, not idle between round trips) are not piled up at once.
const GROW_EVERY: Duration = Duration::from_millis(100);

impl Lanes {
    fn new(cap: u32) -> Lanes {
        Lanes {
            running: 1,
            waiting: 0,
            cap: cap.max(1),
            grown_at: None,
        }
    }

    /// A lane is about to wait for messages: whether it should end instead,
    /// counting it out if so. It ends when another lane already waits and
    /// its last batch was not full (the queue had no backlog behind it).
    fn end_instead_of_waiting(&mut self, had_backlog: bool) -> bool {
        if !had_backlog && self.waiting > 0 && self.running > 1 {
            self.running -= 1;
            return true;
        }
        self.waiting += 1;
        false
    }

    /// A lane's invocation could not be made (no room on the workers, the
    /// function throttled): whether it should end, counting it out if so.
    fn end_after_failed_invoke(&mut self) -> bool {
        if self.running > 1 {
            self.running -= 1;
            return true;
        }
        false
    }

    /// A waiting lane got messages, `full` when as many as it asked for
    /// (more are likely queued): whether to start another lane, counting it
    /// in if so. One starts when no other lane is left waiting (so that a
    /// message arriving now is taken at once), or for a backlog at most
    /// once per [`GROW_EVERY`]; never past the cap.
    fn got_messages(&mut self, full: bool, now: Instant) -> bool {
        assert!(
            self.waiting > 0,
            "a lane got messages without waiting: {self:?}"
        );
        self.waiting -= 1;
        if self.running >= self.cap {
            return false;
        }
        let grow = full
            && self
                .grown_at
                .is_none_or(|t| now.duration_since(t) >= GROW_EVERY);
        if self.waiting == 0 || grow {
            if grow {
                self.grown_at = Some(now);
            }
            self.running += 1;
            return true;
        }
        false
    }

    /// A waiting lane stopped waiting without messages.
    fn waited_in_vain(&mut self) {
        assert!(
            self.waiting > 0,
            "a lane stopped waiting without waiting: {self:?}"
        );
        self.waiting -= 1;
    }
}

/// Runs the poller of one queue mapping slot until `stop` is set (checked
/// between batches, so a batch in hand is invoked and deleted first) or the
/// task is aborted; its lanes run as tasks of their own, and end with it
/// (the last one to end drops the last `stop` receiver, which the agent
/// sees).
pub async fn run(link: Arc<ClusterLink>, lease: pb::PollLease, stop: watch::Receiver<bool>) {
    let Some(filters) = compile_filters(&lease) else {
        return;
    };
    let cap = lease.concurrency.max(1);
    tracing::info!(mapping = %lease.mapping_uuid, slot = lease.slot, queue = %lease.queue_name, function = %lease.function_name, concurrency = cap, "queue poller started");
    let poller = Arc::new(Poller {
        link,
        lease,
        filters,
        stop,
        lanes: Mutex::new(Lanes::new(cap)),
        reporter: Default::default(),
    });
    lane(poller).await
}

/// One lane: receives a batch and hands it over, until the poller stops or
/// another lane waits for messages in its place. (Boxed: a lane may start
/// another, so its future's type names itself.)
fn lane(p: Arc<Poller>) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
    Box::pin(run_lane(p))
}

async fn run_lane(p: Arc<Poller>) {
    let mut had_backlog = false;
    loop {
        if *p.stop.borrow() {
            let left = {
                let mut lanes = p.lanes();
                lanes.running -= 1;
                lanes.running
            };
            if left == 0 {
                tracing::info!(mapping = %p.lease.mapping_uuid, slot = p.lease.slot, "queue poller stopped");
            }
            return;
        }
        if p.lanes().end_instead_of_waiting(had_backlog) {
            return;
        }
        let (batch, full) = match gather(&p).await {
            Ok(b) => b,
            Err(e) => {
                tracing::debug!(queue = %p.lease.queue_name, error = %e, "receive failed");
                tokio::time::sleep(BACKOFF).await;
                continue;
            }
        };
        had_backlog = full;
        if batch.is_empty() {
            continue;
        }
        tracing::debug!(mapping = %p.lease.mapping_uuid, slot = p.lease.slot, messages = batch.len(), "batch received");
        // (The failed invocation has paused already.)
        if !hand_over(&p, batch).await && p.lanes().end_after_failed_invoke() {
            return;
        }
    }
}

impl Poller {
    fn lanes(&self) -> std::sync::MutexGuard<'_, Lanes> {
        self.lanes.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Hands a batch to the function, and deletes what it is done with;
/// false if an invocation could not be made (the function did not run).
async fn hand_over(p: &Poller, batch: Vec<pb::Message>) -> bool {
    let lease = &p.lease;
    let records: Vec<Value> = batch.iter().map(|m| record(lease, m)).collect();
    let (pass, rejected): (Vec<usize>, Vec<usize>) =
        (0..batch.len()).partition(|&i| passes(&p.filters, &records[i]));
    // Rejected by the filters: deleted unseen, as Lambda does.
    let mut done: Vec<usize> = rejected;
    let mut invoked = true;
    for part in parts(&pass, &records) {
        let (ok, result) = invoke_part(&p.link, lease, &batch, &records, &part).await;
        invoked &= result != processing_result::INVOKE_FAILED;
        done.extend(ok);
        p.reporter
            .lock()
            .await
            .report(&p.link, &lease.function_name, &lease.mapping_uuid, result)
            .await;
    }
    for chunk in done.chunks(10) {
        let handles = chunk
            .iter()
            .map(|&i| (i.to_string(), batch[i].receipt_handle.clone()))
            .collect();
        match p.link.delete(&lease.queue_name, handles).await {
            Ok(failed) if failed.is_empty() => {}
            // Left to reappear: at least once.
            Ok(failed) => {
                tracing::warn!(queue = %lease.queue_name, entries = failed.len(), "deletes refused (receipt handles expired?)")
            }
            Err(e) => tracing::warn!(queue = %lease.queue_name, error = %e, "delete failed"),
        }
    }
    invoked
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
/// message and then up to the batching window for more; and whether the
/// last receive got as many as it asked for (more are likely queued). The
/// lane counts as waiting until the first message arrives (then another may
/// start) or it gives up.
async fn gather(p: &Arc<Poller>) -> Result<(Vec<pb::Message>, bool), tonic::Status> {
    let (lease, stop) = (&p.lease, &p.stop);
    let size = lease.batch_size.max(1) as usize;
    let window = Duration::from_secs(u64::from(lease.batching_window_s));
    let mut batch: Vec<pb::Message> = Vec::new();
    let mut first_at: Option<Instant> = None;
    let gave_up = |p: &Poller| p.lanes().waited_in_vain();
    loop {
        if *stop.borrow() && batch.is_empty() {
            gave_up(p);
            return Ok((batch, false));
        }
        let wait = match first_at {
            None => 20,
            Some(t) => {
                let left = window.saturating_sub(t.elapsed());
                if left.is_zero() {
                    return Ok((batch, false));
                }
                // Rounded up: a zero wait would spin through the last
                // second of the window.
                left.as_millis().div_ceil(1000).clamp(1, 20) as u32
            }
        };
        let want = (size - batch.len()).min(10);
        let got = match p.link.receive(&lease.queue_name, want as u32, wait).await {
            Ok(got) => got,
            // What was gathered is handed on; the error waits for the next.
            Err(_) if !batch.is_empty() => return Ok((batch, false)),
            Err(e) => {
                gave_up(p);
                return Err(e);
            }
        };
        let full = got.len() >= want;
        batch.extend(got);
        if !batch.is_empty() && first_at.is_none() {
            first_at = Some(Instant::now());
            if p.lanes().got_messages(full, Instant::now()) {
                tracing::trace!(mapping = %lease.mapping_uuid, lanes = ?p.lanes(), "lane started");
                tokio::spawn(lane(p.clone()));
            }
        }
        // No window: what one receive returned is the batch.
        if batch.len() >= size || (window.is_zero() && !batch.is_empty()) {
            return Ok((batch, full));
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
    fn lanes_grow_while_batches_come_and_shrink_to_one_waiting() {
        let t0 = Instant::now();
        let mut l = Lanes::new(3);
        // The first lane waits, gets a few messages: a second starts and
        // waits.
        assert!(!l.end_instead_of_waiting(false));
        assert!(l.got_messages(false, t0));
        assert!(!l.end_instead_of_waiting(false));
        // The second gets some too while the first is busy: a third.
        assert!(l.got_messages(false, t0));
        assert!(!l.end_instead_of_waiting(false));
        // The third gets some: the cap is reached, none starts.
        assert!(!l.got_messages(false, t0));
        assert_eq!((l.running, l.waiting), (3, 0));
        // The first is done and waits; the second, done, ends, and so does
        // the third: one lane is left, waiting.
        assert!(!l.end_instead_of_waiting(false));
        assert!(l.end_instead_of_waiting(false));
        assert!(l.end_instead_of_waiting(false));
        assert_eq!((l.running, l.waiting), (1, 1));
        // The last never ends for want of work.
        l.waited_in_vain();
        assert!(!l.end_instead_of_waiting(false));
        assert_eq!((l.running, l.waiting), (1, 1));
    }

    #[test]
    fn a_backlog_adds_lanes_at_a_bounded_pace_and_keeps_them() {
        let t0 = Instant::now();
        let mut l = Lanes::new(10);
        // A waits and gets a full batch; none else waits: B starts.
        assert!(!l.end_instead_of_waiting(false));
        assert!(l.got_messages(true, t0));
        assert!(!l.end_instead_of_waiting(false));
        // A, done with a full batch, waits again though B waits.
        assert!(!l.end_instead_of_waiting(true));
        assert_eq!((l.running, l.waiting), (2, 2));
        // B comes back full while A waits: too soon after the last start.
        assert!(!l.got_messages(true, t0 + GROW_EVERY / 2));
        assert!(!l.end_instead_of_waiting(true));
        // A comes back full later, B waiting: the backlog adds a lane.
        assert!(l.got_messages(true, t0 + GROW_EVERY));
        assert_eq!((l.running, l.waiting), (3, 1));
        // The backlog gone, a lane that finds another waiting ends.
        assert!(l.end_instead_of_waiting(false));
        assert_eq!((l.running, l.waiting), (2, 1));
        // A lane whose invocation could not be made ends; the last stays.
        assert!(l.end_after_failed_invoke());
        assert!(!l.end_after_failed_invoke());
        assert_eq!(l.running, 1);
    }

    #[test]
    fn a_lease_of_concurrency_one_keeps_one_lane() {
        let mut l = Lanes::new(1);
        assert!(!l.end_instead_of_waiting(false));
        assert!(!l.got_messages(true, Instant::now()));
        assert_eq!((l.running, l.waiting), (1, 0));
        assert!(Lanes::new(0).cap == 1);
    }

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
