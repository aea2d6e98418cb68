//! The mapping-latency workload: producers put stream records and send
//! queue messages, each stamped with the time it was sent; event source
//! mappings hand them to a Python function on the workers, which notes when
//! it saw each one. End-to-end latency is seen minus sent (one machine, one
//! clock); throughput is what was handed over per second.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cluster_tests::requests::put_data;
use hdrhistogram::Histogram;
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

use crate::{p50_p99_text, quantiles_ms};

/// Notes, for each record it is handed, its kind, the sent stamp it
/// carries and when the function saw it (ns), for a message when the
/// leader accepted it and first handed it out (its `SentTimestamp` and
/// `ApproximateFirstReceiveTimestamp`, ms), and last the invocation's
/// request id (records per invocation), in one POST per call to the
/// bench's recorder (functions run sandboxed and can write nowhere but
/// their own /tmp), over a connection kept from call to call so that the
/// note costs the machine little.
const APP: &str = r#"
import base64, http.client, os, time, urllib.parse

SEEN = urllib.parse.urlsplit(os.environ["SEEN"])
conn = None

def note(body):
    global conn
    for attempt in (0, 1):
        try:
            if conn is None:
                conn = http.client.HTTPConnection(SEEN.netloc, timeout=5)
            conn.request("POST", SEEN.path, body)
            conn.getresponse().read()
            return
        except (OSError, http.client.HTTPException):
            conn = None
            if attempt:
                raise

def handler(event, context):
    now = time.time_ns()
    lines = []
    for r in event["Records"]:
        if r["eventSource"] == "aws:kinesis":
            lines.append("stream %s %d %s\n" % (base64.b64decode(r["kinesis"]["data"]).decode(), now, context.aws_request_id))
        else:
            a = r["attributes"]
            lines.append("queue %s %d %s %s %s\n" % (r["body"], now, a["SentTimestamp"], a["ApproximateFirstReceiveTimestamp"], context.aws_request_id))
    note("".join(lines).encode())
"#;

/// What a run measured.
pub struct Latency {
    /// Send-to-function latency of stream records, µs.
    pub stream: Histogram<u64>,
    /// Send-to-function latency of queue messages, µs.
    pub queue: Histogram<u64>,
    /// The same in stages, µs (whole milliseconds): sent to accepted by
    /// the leader, accepted to first received, received to the function.
    pub queue_stages: [Histogram<u64>; 3],
    /// Records and messages handed over per second of the run.
    pub per_second: f64,
    /// Records per invocation of the stream's mapping, and messages per
    /// invocation of the queue's (each counted once).
    pub per_invocation: [f64; 2],
    /// Sent and never seen within a minute of the end (0 expected).
    pub missing: usize,
}

impl Latency {
    /// The run's report, as JSON and as a line of text: `nodes` nodes,
    /// `workers` (a count, or "external"), `concurrency` producers.
    pub fn report(
        &self,
        nodes: usize,
        workers: String,
        concurrency: usize,
        streamed: bool,
    ) -> (serde_json::Value, String) {
        let sends = if streamed { "stream" } else { "unary" };
        let json = serde_json::json!({
            "workload": "MappingLatency",
            "sluice_sends": sends,
            "nodes": nodes,
            "workers": workers,
            "concurrency": concurrency,
            "per_second": self.per_second,
            "missing": self.missing,
            "stream_per_invocation": self.per_invocation[0],
            "queue_per_invocation": self.per_invocation[1],
            "stream_ms": quantiles_ms(&self.stream),
            "queue_ms": quantiles_ms(&self.queue),
            "queue_stages_ms": {
                "send_to_accepted": quantiles_ms(&self.queue_stages[0]),
                "accepted_to_received": quantiles_ms(&self.queue_stages[1]),
                "received_to_function": quantiles_ms(&self.queue_stages[2]),
            },
        });
        let text = format!(
            "mapping latency, {nodes} nodes, concurrency {concurrency}, {sends} sends: {:.0} records+messages/s handed over ({} missing), {:.1} records and {:.1} messages per invocation; stream put->function {}; queue send->function {} (sent->accepted {}, accepted->received {}, received->function {})",
            self.per_second,
            self.missing,
            self.per_invocation[0],
            self.per_invocation[1],
            p50_p99_text(&self.stream),
            p50_p99_text(&self.queue),
            p50_p99_text(&self.queue_stages[0]),
            p50_p99_text(&self.queue_stages[1]),
            p50_p99_text(&self.queue_stages[2]),
        );
        (json, text)
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// Sets up `name` (function, queue, stream with `shards` shards, two
/// mappings) and runs `concurrency` producers for `duration`, each putting
/// a record then sending a message, after a warm-up; `streamed`: through
/// the client's streaming senders (PutRecordStream, SendMessageStream),
/// else a unary call each.
pub async fn run(
    client: &Client,
    name: &str,
    shards: i32,
    concurrency: usize,
    duration: Duration,
    streamed: bool,
) -> Result<Latency, String> {
    let e = |e: sluice_client::Error| e.to_string();
    let work = tempfile::tempdir().map_err(|e| e.to_string())?;
    let seen = cluster_tests::Recorder::start("127.0.0.1").await;
    let code = work.path().join("code");
    std::fs::create_dir_all(&code).map_err(|e| e.to_string())?;
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: name.into(),
            handler: "app.handler".into(),
            environment: HashMap::from([("SEEN".to_string(), format!("{}/seen", seen.url))]),
            zip_file: cluster_tests::python_function(&code, APP),
            ..Default::default()
        })
        .await
        .map_err(e)?;
    client.create_queue(name, HashMap::new()).await.map_err(e)?;
    client
        .create_unthrottled_stream(name, shards)
        .await
        .map_err(e)?;
    for (arn, position) in [
        (
            format!("arn:aws:kinesis:us-east-1:000000000000:stream/{name}"),
            "LATEST",
        ),
        (format!("arn:aws:sqs:us-east-1:000000000000:{name}"), ""),
    ] {
        client
            .create_event_source_mapping(pb::EventSourceMappingRequest {
                function_name: name.into(),
                event_source_arn: arn,
                starting_position: position.into(),
                ..Default::default()
            })
            .await
            .map_err(e)?;
    }
    // Warm-up: until a record and a message went through (the pollers
    // started, environments are warm).
    let started = Instant::now();
    loop {
        produce_one(client, name, "warm").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let text = seen.text("/seen");
        if text.contains("stream warm") && text.contains("queue warm") {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            return Err("nothing reached the function within 60 s".into());
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Messages share one sender: a standard queue keeps no order, so the
    // node runs as many of its commands at once as come. Records keep the
    // order of their sender's calls (one command in flight per call), which
    // independent producers do not ask of each other: each has its own.
    let messages = streamed.then(|| client.message_sender(name));
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, name, stop) = (client.clone(), name.to_string(), stop.clone());
        let senders = messages.clone().map(|m| (client.record_sender(&name), m));
        tasks.push(tokio::spawn(async move {
            // What was acknowledged: (kind, stamp).
            let mut sent: Vec<(&'static str, u128)> = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let stamp = now_ns();
                let data = stamp.to_string();
                let put = match &senders {
                    Some((records, _)) => records
                        .send(pb::PutRecordRequest {
                            partition_key: data.clone(),
                            data: data.into_bytes(),
                            ..Default::default()
                        })
                        .await
                        .is_ok(),
                    None => put_data(&client, &name, &data, data.clone()).await.is_ok(),
                };
                if put {
                    sent.push(("stream", stamp));
                }
                // Stamped apart: the send's latency does not include the put's.
                let stamp = now_ns();
                let send = match &senders {
                    Some((_, messages)) => messages
                        .send(pb::SendMessageRequest {
                            message_body: stamp.to_string(),
                            ..Default::default()
                        })
                        .await
                        .is_ok(),
                    None => client.send_body(&name, &stamp.to_string()).await.is_ok(),
                };
                if send {
                    sent.push(("queue", stamp));
                }
            }
            sent
        }));
    }
    let began = Instant::now();
    // What scripts/profile waits for before it records.
    eprintln!("sluice-bench: measuring for {} s", duration.as_secs());
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = Vec::new();
    for t in tasks {
        sent.extend(t.await.unwrap_or_default());
    }
    let ran = began.elapsed();
    // Everything sent is handed over, or a minute passes.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut lines;
    let mut missing: Vec<(&str, u128)>;
    loop {
        lines = read(&seen.text("/seen"));
        let got: HashSet<(&str, u128)> = lines.iter().map(|l| (l.kind.as_str(), l.sent)).collect();
        missing = sent.iter().filter(|k| !got.contains(*k)).copied().collect();
        if missing.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Which ones, and when they were sent, for whoever looks into it.
    let start_ns = now_ns() - Instant::now().duration_since(began).as_nanos();
    for (kind, stamp) in missing.iter().take(10) {
        let at = stamp.saturating_sub(start_ns) as f64 / 1e9;
        eprintln!("missing: {kind} {stamp} (sent {at:.3} s into the run)");
    }
    let mut out = Latency {
        stream: crate::histogram(),
        queue: crate::histogram(),
        queue_stages: [crate::histogram(), crate::histogram(), crate::histogram()],
        per_second: 0.0,
        missing: missing.len(),
        per_invocation: [
            per_invocation(&lines, "stream"),
            per_invocation(&lines, "queue"),
        ],
    };
    let mut counted = 0usize;
    for l in lines {
        let us = l.seen.saturating_sub(l.sent) / 1000;
        let h = if l.kind == "stream" {
            &mut out.stream
        } else {
            &mut out.queue
        };
        h.saturating_record(us as u64);
        if let Some((accepted_ms, received_ms)) = l.stages {
            let points = [
                l.sent / 1000,
                accepted_ms * 1000,
                received_ms * 1000,
                l.seen / 1000,
            ];
            for (i, stage) in out.queue_stages.iter_mut().enumerate() {
                stage.saturating_record(points[i + 1].saturating_sub(points[i]) as u64);
            }
        }
        counted += 1;
    }
    out.per_second = counted as f64 / ran.as_secs_f64();
    Ok(out)
}

/// Puts one record and sends one message with `stamp` as their data.
async fn produce_one(client: &Client, name: &str, stamp: &str) {
    let _ = put_data(client, name, stamp, stamp).await;
    let _ = client.send_body(name, stamp).await;
}

/// One record or message the function reported.
struct Seen {
    kind: String,
    /// When it was sent, ns.
    sent: u128,
    /// When the function saw it, ns.
    seen: u128,
    /// A message's `SentTimestamp` and `ApproximateFirstReceiveTimestamp`,
    /// ms.
    stages: Option<(u128, u128)>,
    /// The request id of the invocation that handed it over first.
    invocation: String,
}

/// Records of `kind` per invocation that handed any over.
fn per_invocation(lines: &[Seen], kind: &str) -> f64 {
    let of_kind = lines.iter().filter(|l| l.kind == kind);
    let calls: HashSet<&str> = of_kind.clone().map(|l| l.invocation.as_str()).collect();
    of_kind.count() as f64 / calls.len().max(1) as f64
}

/// The stamped lines the function reported (warm-up lines left out),
/// each seen once (repeats of at-least-once delivery count once).
fn read(text: &str) -> Vec<Seen> {
    let mut first = HashMap::new();
    for l in text.lines() {
        let f: Vec<&str> = l.split(' ').collect();
        let n = |i: usize| f.get(i).and_then(|x| x.parse::<u128>().ok());
        let (Some(sent), Some(seen)) = (n(1), n(2)) else {
            continue;
        };
        let stages = n(3).zip(n(4));
        let invocation = f.last().copied().unwrap_or_default().to_string();
        first
            .entry((f[0].to_string(), sent))
            .or_insert((seen, stages, invocation));
    }
    first
        .into_iter()
        .map(|((kind, sent), (seen, stages, invocation))| Seen {
            kind,
            sent,
            seen,
            stages,
            invocation,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_counted_once_each_and_per_invocation() {
        let text = "stream warm 5 r0\n\
                    stream 100 150 r1\n\
                    stream 101 150 r1\n\
                    stream 102 160 r2\n\
                    queue 200 250 1 2 r3\n\
                    queue 201 250 1 2 r3\n\
                    queue 201 300 1 2 r4\n";
        let lines = read(text);
        // The warm-up line is left out; the message handed over twice
        // counts once, as first reported.
        assert_eq!(lines.len(), 5);
        let again = lines
            .iter()
            .find(|l| l.kind == "queue" && l.sent == 201)
            .unwrap();
        assert_eq!((again.seen, again.invocation.as_str()), (250, "r3"));
        assert_eq!(again.stages, Some((1, 2)));
        assert_eq!(per_invocation(&lines, "stream"), 1.5);
        assert_eq!(per_invocation(&lines, "queue"), 2.0);
        assert_eq!(per_invocation(&[], "queue"), 0.0);
    }
}
