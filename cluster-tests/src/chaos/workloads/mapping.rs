//! The mapping workload: a stream and a queue feed one function through
//! event source mappings, run by the nodes' in-process workers (a node
//! killed, paused or cut off takes its worker and its pollers with it).
//! Producers put records under keys they own, one at a time, and send
//! queue messages; the function appends what it is handed to one file
//! with a single `O_APPEND` write per invocation, so the file's order is
//! the order invocations finished. After the faults heal, the workload
//! waits for every acknowledged record and message to show up there.

use std::collections::{HashMap, HashSet};

use std::time::Duration;

use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Error};
use tokio::time::Instant;

use super::{join_all, pause_unless_ok, Ctx, Pace, Process, Via};
use crate::chaos::history::{self, Call, Outcome};
use crate::requests::stream_mapping;

/// The stream.
pub const STREAM: &str = "chaos-m-stream";
/// The queue.
pub const QUEUE: &str = "chaos-m-queue";
/// The function.
pub const FUNCTION: &str = "chaos-m-recorder";
/// Stream producers; each owns its keys.
const PRODUCERS: usize = 2;
/// Keys per producer.
const KEYS: usize = 4;
/// Puts per second of each producer.
const RATE: u64 = 25;
/// Queue sends per second.
const SEND_RATE: u64 = 25;

/// Appends each record it is handed to `$SEEN`, one line per record
/// ("stream KEY DATA" or "queue BODY"), in one write per invocation.
const RECORDER: &str = r#"
import base64, os, urllib.request

def handler(event, context):
    lines = []
    for r in event["Records"]:
        if r["eventSource"] == "aws:kinesis":
            data = base64.b64decode(r["kinesis"]["data"]).decode()
            lines.append("stream %s %s\n" % (r["kinesis"]["partitionKey"], data))
        else:
            lines.append("queue %s\n" % r["body"])
    # One POST per batch keeps the batch's order; a failed POST fails the
    # batch, which then comes again.
    urllib.request.urlopen(os.environ["SEEN"], data="".join(lines).encode(), timeout=5).read()
    return None
"#;

/// What the workload set up: where the function reports.
pub struct MappingWorkload {
    /// The function's record of what it was handed.
    pub seen: crate::Recorder,
    _code: tempfile::TempDir,
}

impl MappingWorkload {
    /// Creates the function, the stream, the queue and the two mappings;
    /// the function reports to a recorder on `test_host` (where the nodes
    /// reach the test process).
    pub async fn setup(admin: &Client, test_host: &str) -> Result<MappingWorkload, String> {
        let e = |e: Error| e.to_string();
        let code = tempfile::tempdir().map_err(|e| e.to_string())?;
        let seen = crate::Recorder::start(test_host).await;
        admin
            .create_function(pb::CreateFunctionRequest {
                function_name: FUNCTION.into(),
                handler: "app.handler".into(),
                timeout: 10,
                environment: HashMap::from([("SEEN".to_string(), format!("{}/seen", seen.url))]),
                zip_file: crate::python_function(code.path(), RECORDER),
                ..Default::default()
            })
            .await
            .map_err(e)?;
        admin
            .create_unthrottled_stream(STREAM, 2)
            .await
            .map_err(e)?;
        admin.create_queue(QUEUE, HashMap::new()).await.map_err(e)?;
        let arn = |kind: &str, name: &str| match kind {
            "sqs" => format!("arn:aws:sqs:us-east-1:000000000000:{name}"),
            _ => format!("arn:aws:kinesis:us-east-1:000000000000:stream/{name}"),
        };
        admin
            .create_event_source_mapping(pb::EventSourceMappingRequest {
                batch_size: Some(50),
                ..stream_mapping(FUNCTION, &arn("kinesis", STREAM))
            })
            .await
            .map_err(e)?;
        admin
            .create_event_source_mapping(pb::EventSourceMappingRequest {
                function_name: FUNCTION.into(),
                event_source_arn: arn("sqs", QUEUE),
                batch_size: Some(10),
                ..Default::default()
            })
            .await
            .map_err(e)?;
        Ok(MappingWorkload { seen, _code: code })
    }

    /// Producers until `until`.
    pub async fn run(&self, ctx: &Ctx, until: Instant) {
        let mut tasks = Vec::new();
        for w in 0..PRODUCERS {
            let ctx = ctx.clone();
            tasks.push(tokio::spawn(async move { put(&ctx, w, until).await }));
        }
        let c = ctx.clone();
        tasks.push(tokio::spawn(async move { send(&c, until).await }));
        join_all(tasks).await;
    }

    /// Waits (up to `limit`) until everything acknowledged was handed to
    /// the function.
    pub async fn drain(&self, ctx: &Ctx, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        loop {
            let ops = history::pair(&ctx.recorder.events());
            let seen: HashSet<Seen> = read_seen(&self.seen).into_iter().collect();
            let missing = acknowledged(&ops)
                .into_iter()
                .filter(|a| !seen.contains(a))
                .count();
            if missing == 0 {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{missing} acknowledged records or messages not processed within {limit:?}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// What the function was handed, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seen {
    /// A stream record: key and data.
    Record(String, String),
    /// A queue message's body.
    Message(String),
}

/// Reads what the function reported, in the order it reported it.
pub fn read_seen(recorder: &crate::Recorder) -> Vec<Seen> {
    recorder
        .text("/seen")
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ' ');
            match (f.next()?, f.next()?, f.next()) {
                ("stream", key, Some(data)) => Some(Seen::Record(key.into(), data.into())),
                ("queue", body, None) => Some(Seen::Message(body.into())),
                _ => None,
            }
        })
        .collect()
}

/// The records and messages whose put or send was acknowledged.
pub fn acknowledged(ops: &[history::Op]) -> Vec<Seen> {
    let mut out = Vec::new();
    let mut done = HashSet::new();
    for op in ops {
        if !matches!(op.outcome, Outcome::Ok { .. }) {
            continue;
        }
        let s = match &op.call {
            Call::Put { key, data, .. } => Seen::Record(key.clone(), data.clone()),
            Call::Send { body, .. } => Seen::Message(body.clone()),
            _ => continue,
        };
        if done.insert(s.clone()) {
            out.push(s);
        }
    }
    out
}

/// The data of producer `w`'s `n`th put under `key`.
fn data_of(key: &str, n: u64) -> String {
    format!("{key}-{n}")
}

/// The put number in a record's data.
pub fn number_of(data: &str) -> Option<u64> {
    data.rsplit_once('-')?.1.parse().ok()
}

async fn put(ctx: &Ctx, w: usize, until: Instant) {
    // Every other producer streams (PutRecordStream).
    let via = Via::new(ctx.client(w), STREAM, w.is_multiple_of(2));
    let mut p = Process::new(ctx);
    let mut counters = [0u64; KEYS];
    let mut pace = Pace::new(RATE, until);
    while let Some(i) = pace.next().await {
        let k = i as usize % KEYS;
        let key = format!("p{w}k{k}");
        let data = data_of(&key, counters[k]);
        counters[k] += 1;
        super::stream::put(ctx, &mut p, &via, STREAM, &key, &data).await;
    }
}

async fn send(ctx: &Ctx, until: Instant) {
    let via = Via::new(ctx.client(PRODUCERS), QUEUE, true);
    let mut p = Process::new(ctx);
    let mut pace = Pace::new(SEND_RATE, until);
    while let Some(n) = pace.next().await {
        let body = format!("m-{n}");
        let outcome = super::queue::send(ctx, &mut p, &via, QUEUE, &body, None, 0).await;
        pause_unless_ok(&outcome).await;
    }
}
