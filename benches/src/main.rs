//! `sluice-bench`: a load generator, closed- or open-loop.
//!
//! Closed loop (the default): `C` workers each keep one request in flight
//! for the run's duration. Open loop (`--rate R`): requests start on a fixed
//! schedule of `R` a second whatever the latency, at most `C` in flight; a
//! request's latency counts from its scheduled start, so time spent waiting
//! for a free slot behind slow requests is counted (no coordinated
//! omission). Latencies go into an HDR histogram. Before and after the run the tool reads
//! every node's metrics, so the report also gives the fsyncs per second and
//! the commands per fsync (the group commit batch).
//!
//! ```text
//! cargo build --release --bins
//! target/release/sluice-bench --spawn 3 --workload send --batch 10 --concurrency 64
//! target/release/sluice-bench --spawn 3 --workload receive-delete --prefill 200000
//! target/release/sluice-bench --spawn 3 --workload receive-depth --depth 1000000
//! target/release/sluice-bench --spawn 3 --workload put-records --batch 500 --message-bytes 1024 --concurrency 8
//! target/release/sluice-bench --spawn 3 --workload get-records --batch 10000 --prefill 200000 --concurrency 4
//! target/release/sluice-bench --spawn 3 --workload put-to-read --shards 1
//! target/release/sluice-bench --spawn 3 --workload send --rate 2000 --concurrency 256
//! ```

mod compare;
mod functions;
mod mappings;
mod queues;
mod reference;
mod streams;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use cluster_tests::pki::https_get;
use cluster_tests::{metric_value, scrape, Cluster, WorkerProcess};
use hdrhistogram::Histogram;
use sluice_client::{Client, Options};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Workload {
    /// CreateQueue with a fresh name per request: one small replicated
    /// command each, the shape of every metadata write.
    CreateQueue,
    /// SendMessage (--batch 1) or SendMessageBatch (--batch 2-10).
    Send,
    /// ReceiveMessage of up to --batch messages, then DeleteMessage each
    /// (--batch 1) or DeleteMessageBatch; the queue is filled first.
    ReceiveDelete,
    /// ReceiveMessage of one message with visibility 0 on a queue holding
    /// --depth messages: the cost of a receive at that depth.
    ReceiveDepth,
    /// PutRecords of --batch records (1-500) of --message-bytes each, over
    /// --shards shards with random partition keys.
    PutRecords,
    /// GetRecords of up to --batch records (1-10000), each worker reading
    /// one shard of a stream filled with --prefill records, from its oldest
    /// record and again from the start at its end.
    GetRecords,
    /// PutRecord of one record, timed until a SubscribeToShard subscriber
    /// on another node (a follower, when --target is the leader) receives
    /// it: the put-to-read latency.
    PutToRead,
    /// Comparison: SendMessage (or the peer's publish with confirm) of one
    /// message per request, --concurrency in flight. Runs on every --system.
    QueueSend,
    /// Comparison: queue-send producers plus consumers that receive and
    /// delete (acknowledge) each message; end-to-end latency.
    QueuePipeline,
    /// Comparison: PutRecord (or the peer's publish to a stream) producers
    /// plus consumers reading the stream; end-to-end latency.
    StreamPipeline,
    /// Comparison: Publish to a topic with --subscriptions queue
    /// subscriptions (raw delivery), consumers receiving and deleting from
    /// every queue; publishes a second and publish-to-receive latency.
    TopicFanout,
    /// Function start-up: --invocations warm invocations of a Python function
    /// (awslambdaric), then as many cold ones, then as many first invocations
    /// of versions with provisioned concurrency (each cold one after a configuration
    /// change, so it needs a new environment); their latencies.
    FunctionStarts,
    /// Event source mappings: --concurrency producers each put a stream
    /// record and send a queue message in turn; a Python function on the
    /// workers notes when it sees each. Send-to-function latency and the
    /// throughput reached. With --spawn, the nodes run no in-process worker
    /// and --workers `sluice worker` processes run the function.
    MappingLatency,
}

impl Workload {
    /// The comparison shape, for the workloads that run on every system.
    fn shape(self) -> Option<compare::Shape> {
        match self {
            Workload::QueueSend => Some(compare::Shape::QueueSend),
            Workload::QueuePipeline => Some(compare::Shape::QueuePipeline),
            Workload::StreamPipeline => Some(compare::Shape::StreamPipeline),
            Workload::TopicFanout => Some(compare::Shape::TopicFanout),
            _ => None,
        }
    }

    fn is_stream(self) -> bool {
        matches!(
            self,
            Workload::PutRecords | Workload::GetRecords | Workload::PutToRead
        )
    }

    /// The allowed --batch.
    fn batch_range(self) -> std::ops::RangeInclusive<usize> {
        match self {
            Workload::PutRecords => 1..=500,
            Workload::GetRecords => 1..=10_000,
            Workload::PutToRead
            | Workload::CreateQueue
            | Workload::QueueSend
            | Workload::QueuePipeline
            | Workload::StreamPipeline
            | Workload::TopicFanout => 1..=1,
            _ => 1..=10,
        }
    }
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Target {
    /// Send every request to the leader.
    Leader,
    /// Send every request to a follower, which forwards it.
    Follower,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum System {
    /// Sluice (--cluster, --spawn, or 127.0.0.1:7070).
    Sluice,
    /// NATS JetStream at --peer-url (R3 file streams).
    Nats,
    /// RabbitMQ at --peer-url (queue type from --rabbitmq-queue; streams
    /// for stream-pipeline).
    Rabbitmq,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum RabbitQueue {
    /// Quorum queue: replicated to every node, fsynced before the confirm.
    Quorum,
    /// Classic queue: the default type, one replica.
    Classic,
}

/// Closed- or open-loop load generator for Sluice.
#[derive(Parser, Debug)]
#[command(name = "sluice-bench")]
struct Args {
    /// Nodes of a running cluster, comma-separated HOST:PORT.
    #[arg(long, conflicts_with = "spawn")]
    cluster: Option<String>,
    /// Start a cluster of this many nodes (binaries from --bin-dir) for the run.
    #[arg(long)]
    spawn: Option<u64>,
    /// With --spawn: run the nodes secured (TLS on both listeners, mutual
    /// TLS between nodes, every call signed), the bench acting as the
    /// administrator.
    #[arg(long, requires = "spawn")]
    secure: bool,
    /// With --spawn: `--threads` for each node and worker (the runtime
    /// threads of each process) [default: theirs, one per core].
    #[arg(long, requires = "spawn")]
    node_threads: Option<u64>,
    /// Where `sluice` is, for --spawn [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// What to send.
    #[arg(long, value_enum, default_value = "create-queue")]
    workload: Workload,
    /// Which node receives the requests.
    #[arg(long, value_enum, default_value = "leader")]
    target: Target,
    /// Requests in flight (closed loop), or the most in flight (open loop).
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Open loop: start this many requests a second on a fixed schedule
    /// (0: closed loop). Not for get-records, whose workers each read a
    /// shard in turn.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Messages per request (1-10) for the queue workloads; records per
    /// PutRecords (1-500) or most records per GetRecords (1-10000).
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Message body (or record) size in bytes.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Messages to put in the queue before receive-delete, or records in
    /// the stream before get-records.
    #[arg(long, default_value_t = 100_000)]
    prefill: u64,
    /// Warm and cold invocations each, for function-starts.
    #[arg(long, default_value_t = 100)]
    invocations: usize,
    /// `sluice worker` processes beside --spawn's nodes, for
    /// mapping-latency.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Queue subscriptions of the topic for topic-fanout.
    #[arg(long, default_value_t = 1)]
    subscriptions: usize,
    /// Shards of the bench stream.
    #[arg(long, default_value_t = 4)]
    shards: i32,
    /// Messages in the queue for receive-depth.
    #[arg(long, default_value_t = 10)]
    depth: u64,
    /// Measure this machine instead of Sluice: fsyncs per second of a file
    /// in this directory (put it on the data disk) and loopback TCP
    /// bandwidth, --duration seconds each.
    #[arg(long)]
    reference: Option<std::path::PathBuf>,
    /// The broker to load: peers run only queue-send, queue-pipeline and
    /// stream-pipeline.
    #[arg(long, value_enum, default_value = "sluice")]
    system: System,
    /// Sluice's queue sends, receives and stream puts in the comparison
    /// workloads: unary calls (SendMessage, ReceiveMessage then
    /// DeleteMessageBatch, PutRecord) instead of the streaming client (one
    /// SendMessageStream, ReceiveMessageStream or PutRecordStream call
    /// carrying them all); and mapping-latency's producers (PutRecord and
    /// SendMessage instead of PutRecordStream and SendMessageStream).
    #[arg(long)]
    unary: bool,
    /// The peer's address, e.g. nats://127.0.0.1:4221 or
    /// amqp://127.0.0.1:5672/%2f.
    #[arg(long)]
    peer_url: Option<String>,
    /// RabbitMQ queue type for the queue workloads.
    #[arg(long, value_enum, default_value = "quorum")]
    rabbitmq_queue: RabbitQueue,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// What one request did.
pub struct Done {
    /// Messages or records moved.
    pub items: u64,
    /// Bytes of message bodies or record data moved.
    pub bytes: u64,
    /// For put-to-read: (put start to delivery, put ack to delivery).
    pub extra: Option<(Duration, Duration)>,
}

impl Done {
    /// `items` of `bytes` bytes each.
    pub fn items(items: u64, bytes: usize) -> Done {
        Done {
            items,
            bytes: items * bytes as u64,
            extra: None,
        }
    }
}

/// The quantile `q` of a histogram of microseconds, in milliseconds.
fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// "p50 X ms p99 Y ms" of a histogram of microseconds.
fn p50_p99_text(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms p99 {:.2} ms",
        quantile_ms(h, 0.5),
        quantile_ms(h, 0.99)
    )
}

/// p50, p90, p99 and max of a histogram of microseconds, in milliseconds.
fn quantiles_ms(h: &Histogram<u64>) -> serde_json::Value {
    serde_json::json!({
        "p50": quantile_ms(h, 0.5),
        "p90": quantile_ms(h, 0.9),
        "p99": quantile_ms(h, 0.99),
        "max": h.max() as f64 / 1000.0,
    })
}

/// Prints a one-line result: the JSON report with --json, else the text.
fn print_report(json: bool, report: &serde_json::Value, text: impl std::fmt::Display) {
    if json {
        println!("{report}");
    } else {
        println!("{text}");
    }
}

/// Puts `count` items with `tasks` tasks at once, each request carrying at
/// most `per_request` of them: `put(task, request, n)` sends a task's
/// `request`th request (from 1) of `n` items. Says how long it took.
async fn fill_in_requests<F, Fut>(what: String, tasks: usize, count: u64, per_request: u64, put: F)
where
    F: Fn(usize, u64, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    if count == 0 {
        return;
    }
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(count));
    let tasks: Vec<_> = (0..tasks)
        .map(|t| {
            let left = left.clone();
            let put = put.clone();
            tokio::spawn(async move {
                let mut i = 0;
                while let Ok(had) = left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    n.checked_sub(n.min(per_request)).filter(|_| n > 0)
                }) {
                    i += 1;
                    put(t, i, had.min(per_request) as usize).await;
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("fill task");
    }
    eprintln!("filled {what} in {:.1} s", started.elapsed().as_secs_f64());
}

fn histogram() -> Histogram<u64> {
    Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram")
}

/// What the workers share.
struct Bench {
    args: Args,
    client: Client,
    queue: String,
    stream: String,
    deliveries: streams::Deliveries,
}

struct Run {
    histogram: Histogram<u64>,
    /// put-to-read: put start to delivery, and put ack to delivery.
    to_read: Histogram<u64>,
    ack_to_read: Histogram<u64>,
    errors: u64,
    items: u64,
    bytes: u64,
}

impl Run {
    /// Counts one request of worker `id` that took `latency`.
    fn record(&mut self, id: usize, latency: Duration, result: Result<Done, String>) {
        match result {
            Ok(done) => {
                self.histogram
                    .saturating_record((latency.as_micros() as u64).max(1));
                self.items += done.items;
                self.bytes += done.bytes;
                if let Some((to_read, ack_to_read)) = done.extra {
                    self.to_read
                        .saturating_record((to_read.as_micros() as u64).max(1));
                    self.ack_to_read
                        .saturating_record((ack_to_read.as_micros() as u64).max(1));
                }
            }
            Err(e) => {
                if self.errors == 0 {
                    eprintln!("worker {id}: {e}");
                }
                self.errors += 1;
            }
        }
    }
}

impl Default for Run {
    fn default() -> Run {
        Run {
            histogram: histogram(),
            to_read: histogram(),
            ack_to_read: histogram(),
            errors: 0,
            items: 0,
            bytes: 0,
        }
    }
}

async fn worker(bench: Arc<Bench>, id: usize, until: Instant, measure_from: Instant) -> Run {
    let mut run = Run::default();
    let mut reader = streams::Reader::default();
    let mut i = 0u64;
    while Instant::now() < until {
        let started = Instant::now();
        let result = op(&bench, &mut reader, id, i).await;
        i += 1;
        if started >= measure_from {
            run.record(id, started.elapsed(), result);
        }
    }
    run
}

/// One request of the run's workload; `reader` is the worker's place in
/// its shard (get-records only).
async fn op(
    bench: &Bench,
    reader: &mut streams::Reader,
    id: usize,
    i: u64,
) -> Result<Done, String> {
    if bench.args.workload.is_stream() {
        streams::op(bench, reader, id, i).await
    } else {
        queues::op(bench, id, i).await
    }
}

/// Starts requests at `rate` a second from now until `until`, at most
/// `window` in flight, and records those scheduled from `measure_from`,
/// each from its scheduled start.
async fn open_loop(
    bench: Arc<Bench>,
    rate: f64,
    window: usize,
    until: Instant,
    measure_from: Instant,
) -> Run {
    let slots = Arc::new(tokio::sync::Semaphore::new(window));
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let start = Instant::now();
    let interval = Duration::from_secs_f64(1.0 / rate);
    let mut i = 0u64;
    loop {
        let scheduled = start + interval.mul_f64(i as f64);
        if scheduled >= until {
            break;
        }
        tokio::time::sleep_until(scheduled.into()).await;
        // A full window holds the schedule back; the wait counts in the
        // latency of the requests it delays.
        let slot = slots.clone().acquire_owned().await.expect("semaphore open");
        let (bench, done_tx) = (bench.clone(), done_tx.clone());
        tokio::spawn(async move {
            let mut reader = streams::Reader::default();
            let result = op(&bench, &mut reader, (i as usize) % window, i).await;
            drop(slot);
            let _ = done_tx.send((scheduled, scheduled.elapsed(), result));
        });
        i += 1;
    }
    drop(done_tx);
    let mut run = Run::default();
    while let Some((scheduled, latency, result)) = done_rx.recv().await {
        if scheduled >= measure_from {
            run.record(0, latency, result);
        }
    }
    run
}

struct NodeCounters {
    fsyncs: f64,
    commands: f64,
}

async fn counters(addr: &str, ca: Option<&Path>) -> NodeCounters {
    let text = match ca {
        Some(ca) => https_get(ca, addr, "/metrics")
            .await
            .unwrap_or_else(|e| panic!("GET /metrics: {e}")),
        None => scrape(addr),
    };
    NodeCounters {
        fsyncs: metric_value(&text, "sluice_log_fsyncs_total"),
        commands: metric_value(&text, "sluice_applied_commands_total"),
    }
}

/// Which node answers at each of `addrs` (their client addresses), asked of
/// each node itself.
async fn public_addrs(addrs: &[String], base: &Options) -> BTreeMap<u64, String> {
    let mut public = BTreeMap::new();
    for a in addrs {
        let one = Client::with_options([a.as_str()], base.clone()).expect("client");
        let status = one
            .cluster_status(true)
            .await
            .unwrap_or_else(|e| panic!("{a}: cluster status: {e}"));
        public.insert(status.node_id, a.clone());
    }
    public
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.reference {
        let duration = Duration::from_secs(args.duration);
        let r = reference::measure(dir, duration)
            .await
            .unwrap_or_else(|e| panic!("--reference {}: {e}", dir.display()));
        let report = serde_json::json!({
            "reference": dir.display().to_string(),
            "seconds_each": args.duration,
            "fsyncs_per_s": r.fsyncs_per_s,
            "fsync_ms": {"p50": r.fsync_ms.0, "p99": r.fsync_ms.1, "max": r.fsync_ms.2},
            "loopback_mb_per_s": r.loopback_mb_per_s,
        });
        print_report(
            args.json,
            &report,
            format_args!(
                "{}: {:.0} fsyncs/s (1 KiB append + fdatasync; p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms); loopback TCP {:.0} MB/s",
                dir.display(),
                r.fsyncs_per_s,
                r.fsync_ms.0,
                r.fsync_ms.1,
                r.fsync_ms.2,
                r.loopback_mb_per_s
            ),
        );
        return;
    }
    let batches = args.workload.batch_range();
    assert!(
        batches.contains(&args.batch),
        "--batch: must be from {} to {} for {:?}",
        batches.start(),
        batches.end(),
        args.workload
    );
    assert!(
        args.rate >= 0.0 && args.rate.is_finite(),
        "--rate: must be a number of requests per second, 0 for a closed loop"
    );
    assert!(
        args.rate == 0.0 || args.workload != Workload::GetRecords,
        "--rate: get-records runs closed-loop only (each worker reads its own shard in turn)"
    );
    assert!(args.concurrency >= 1, "--concurrency: must be at least 1");
    assert!(
        args.rate == 0.0 || args.workload.shape().is_none(),
        "--rate: the comparison workloads run closed-loop only"
    );
    if args.system != System::Sluice {
        let shape = args.workload.shape().unwrap_or_else(|| {
            panic!(
                "--workload: {:?} runs on Sluice only; peers run queue-send, queue-pipeline, stream-pipeline and topic-fanout",
                args.workload
            )
        });
        let url = args
            .peer_url
            .clone()
            .expect("--peer-url: required with --system nats or rabbitmq");
        let name = format!("bench-{}", std::process::id());
        let outcome = match args.system {
            System::Nats => {
                let broker =
                    compare::nats::Nats::setup(&url, shape, name, args.subscriptions).await;
                compare_run(&args, broker.map(Arc::new), shape).await
            }
            _ => {
                let queue_type = match args.rabbitmq_queue {
                    RabbitQueue::Quorum => compare::rabbitmq::QueueType::Quorum,
                    RabbitQueue::Classic => compare::rabbitmq::QueueType::Classic,
                };
                let broker = compare::rabbitmq::Rabbit::setup(
                    &url,
                    shape,
                    queue_type,
                    name,
                    args.subscriptions,
                )
                .await;
                compare_run(&args, broker.map(Arc::new), shape).await
            }
        };
        compare_report(&args, &outcome, None);
        return;
    }
    if let Some(dir) = &args.bin_dir {
        std::env::set_var("SLUICE_BIN_DIR", dir);
    }
    let threads: Vec<String> = args
        .node_threads
        .map(|n| vec!["--threads".to_string(), n.to_string()])
        .unwrap_or_default();
    let threads: Vec<&str> = threads.iter().map(String::as_str).collect();
    let mut node_args = threads.clone();
    if args.workload == Workload::MappingLatency {
        node_args.extend(["--in-process-worker", "false"]);
    }
    let node_args = &node_args[..];
    assert!(
        !(args.secure && args.workload == Workload::MappingLatency),
        "--secure: mapping-latency's workers run unauthenticated; run it without --secure"
    );
    let mut spawned = args.spawn.map(|n| {
        if args.secure {
            Cluster::start_secured(n, node_args)
        } else {
            Cluster::start(n, node_args)
        }
    });
    let base = match &spawned {
        Some(c) => c.admin_options(Options::default()),
        None => Options::default(),
    };
    // The CA to scrape secured nodes' metrics with.
    let ca = spawned
        .as_ref()
        .and_then(|c| c.pki.as_ref().map(|p| p.ca.clone()));
    let worker_processes: Vec<WorkerProcess> = match (&spawned, args.workload) {
        (Some(c), Workload::MappingLatency) => (0..args.workers)
            .map(|i| WorkerProcess::start_with_args(c, &format!("bench-w{i}"), None, &threads))
            .collect(),
        _ => Vec::new(),
    };
    let addrs: Vec<String> = match (&args.cluster, &spawned) {
        (Some(list), _) => list.split(',').map(str::to_string).collect(),
        (None, Some(c)) => c.addrs(),
        (None, None) => vec!["127.0.0.1:7070".into()],
    };
    let all = Client::with_options(&addrs, base.clone()).expect("client");
    // Wait for the cluster to elect a leader and serve.
    let wait_until = Instant::now() + Duration::from_secs(30);
    let (status, leader) = loop {
        let status = all.cluster_status(false).await.expect("cluster status");
        if let Some(leader) = status.leader_id {
            break (status, leader);
        }
        assert!(Instant::now() < wait_until, "no leader within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Members are known by their cluster addresses; clients call the public
    // ones, so ask each address which node answers there.
    let public = public_addrs(&addrs, &base).await;
    let leader_addr = public
        .get(&leader)
        .cloned()
        .unwrap_or_else(|| panic!("--cluster: node {leader} leads; list its client address too"));
    let target_addr = match args.target {
        Target::Leader => leader_addr.clone(),
        Target::Follower => public
            .iter()
            .find(|(id, _)| **id != leader)
            .map(|(_, a)| a.clone())
            .expect("a follower (single-node clusters have none)"),
    };
    let client = Client::with_options(
        [target_addr.as_str()],
        Options {
            deadline: Duration::from_secs(5),
            ..base.clone()
        },
    )
    .expect("client");
    let queue = format!("bench-{}", std::process::id());
    let stream = queue.clone();
    // Stream readers sit on another node than the one written to.
    let other = public
        .values()
        .find(|a| **a != target_addr)
        .cloned()
        .unwrap_or_else(|| target_addr.clone());
    if args.workload == Workload::MappingLatency {
        let duration = Duration::from_secs(args.duration);
        let m = mappings::run(
            &client,
            &queue,
            args.shards,
            args.concurrency,
            duration,
            !args.unary,
        )
        .await
        .unwrap_or_else(|e| panic!("mapping latency: {e}"));
        let workers = if worker_processes.is_empty() {
            "external".to_string()
        } else {
            worker_processes.len().to_string()
        };
        let (report, text) = m.report(status.members.len(), workers, args.concurrency, !args.unary);
        print_report(args.json, &report, text);
        drop(worker_processes);
        drop(spawned.take());
        return;
    }
    if args.workload == Workload::FunctionStarts {
        let n = args.invocations;
        let s = functions::starts(&client, &queue, n)
            .await
            .unwrap_or_else(|e| panic!("function starts: {e}"));
        let (report, text) = s.report(n);
        print_report(args.json, &report, text);
        drop(spawned.take());
        return;
    }
    if let Some(shape) = args.workload.shape() {
        let reader = Client::with_options([other.as_str()], base.clone()).expect("client");
        let broker = compare::sluice::Sluice::setup(
            client,
            reader,
            shape,
            queue,
            args.shards,
            args.subscriptions,
            !args.unary,
        )
        .await;
        let outcome = compare_run(&args, broker.map(Arc::new), shape).await;
        compare_report(&args, &outcome, Some(status.members.len()));
        drop(spawned.take());
        return;
    }
    let deliveries = streams::Deliveries::default();
    if args.workload.is_stream() {
        streams::create(&client, &stream, args.shards).await;
        if args.workload == Workload::GetRecords {
            streams::fill(
                Arc::new(client.clone()),
                &stream,
                args.prefill,
                args.message_bytes,
            )
            .await;
        }
        if args.workload == Workload::PutToRead {
            let sub = Client::with_options([other.as_str()], base.clone()).expect("client");
            streams::subscribe(sub, &stream, args.shards, deliveries.clone()).await;
        }
    } else if args.workload != Workload::CreateQueue {
        client
            .create_queue(&queue, Default::default())
            .await
            .expect("creating the bench queue");
        let (count, bytes) = match args.workload {
            Workload::ReceiveDelete => (args.prefill, args.message_bytes),
            Workload::ReceiveDepth => (args.depth, args.message_bytes),
            _ => (0, 0),
        };
        queues::fill(Arc::new(client.clone()), &queue, count, bytes).await;
    }
    let bench = Arc::new(Bench {
        args,
        client,
        queue,
        stream,
        deliveries,
    });
    let args = &bench.args;

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.duration);
    let workers: Vec<_> = if args.rate > 0.0 {
        vec![tokio::spawn(open_loop(
            bench.clone(),
            args.rate,
            args.concurrency,
            until,
            measure_from,
        ))]
    } else {
        (0..args.concurrency)
            .map(|id| tokio::spawn(worker(bench.clone(), id, until, measure_from)))
            .collect()
    };
    tokio::time::sleep_until(measure_from.into()).await;
    // For tools that watch the run (scripts/profile): the warm-up is over.
    eprintln!("sluice-bench: measuring for {} s", args.duration);
    let node_addrs: Vec<String> = public.values().cloned().collect();
    let mut before: Vec<NodeCounters> = Vec::new();
    for a in &node_addrs {
        before.push(counters(a, ca.as_deref()).await);
    }
    let measured_start = Instant::now();
    let mut total = Run::default();
    for w in workers {
        let run = w.await.expect("worker");
        total
            .histogram
            .add(&run.histogram)
            .expect("merge histograms");
        total.to_read.add(&run.to_read).expect("merge histograms");
        total
            .ack_to_read
            .add(&run.ack_to_read)
            .expect("merge histograms");
        total.errors += run.errors;
        total.items += run.items;
        total.bytes += run.bytes;
    }
    let (histogram, errors, messages) = (&total.histogram, total.errors, total.items);
    let elapsed = measured_start.elapsed().as_secs_f64();
    let mut after: Vec<NodeCounters> = Vec::new();
    for a in &node_addrs {
        after.push(counters(a, ca.as_deref()).await);
    }

    let ops = histogram.len();
    let q = |p: f64| quantile_ms(histogram, p);
    let per_node: Vec<serde_json::Value> = node_addrs
        .iter()
        .zip(before.iter().zip(&after))
        .map(|(addr, (b, a))| {
            let fsyncs = a.fsyncs - b.fsyncs;
            serde_json::json!({
                "node": addr,
                "leader": *addr == leader_addr,
                "fsyncs_per_s": fsyncs / elapsed,
                "commands_per_fsync": if fsyncs > 0.0 { (a.commands - b.commands) / fsyncs } else { 0.0 },
            })
        })
        .collect();
    let report = serde_json::json!({
        "workload": format!("{:?}", args.workload),
        "nodes": node_addrs.len(),
        "target": format!("{:?}", args.target),
        "concurrency": args.concurrency,
        "mode": if args.rate > 0.0 { "open" } else { "closed" },
        "target_rate": (args.rate > 0.0).then_some(args.rate),
        "batch": args.batch,
        "message_bytes": args.message_bytes,
        "depth": args.depth,
        "seconds": elapsed,
        "ops": ops,
        "errors": errors,
        "ops_per_s": ops as f64 / elapsed,
        "messages_per_s": messages as f64 / elapsed,
        "mb_per_s": total.bytes as f64 / elapsed / 1e6,
        "shards": if args.workload.is_stream() { Some(args.shards) } else { None },
        "put_to_read_ms": (args.workload == Workload::PutToRead).then(|| quantiles_ms(&total.to_read)),
        "ack_to_read_ms": (args.workload == Workload::PutToRead).then(|| quantiles_ms(&total.ack_to_read)),
        "latency_ms": {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999), "max": histogram.max() as f64 / 1000.0},
        "per_node": per_node,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{:?} on {} node(s), {}, batch {}, to the {:?}: {} ops in {:.1} s = {:.0} ops/s, {:.0} messages or records/s, {:.1} MB/s, {} errors",
            args.workload,
            node_addrs.len(),
            if args.rate > 0.0 {
                format!("open loop at {} requests/s, at most {} in flight", args.rate, args.concurrency)
            } else {
                format!("{} in flight", args.concurrency)
            },
            args.batch,
            args.target,
            ops,
            elapsed,
            ops as f64 / elapsed,
            messages as f64 / elapsed,
            total.bytes as f64 / elapsed / 1e6,
            errors
        );
        println!(
            "latency ms per request: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
            q(0.5),
            q(0.9),
            q(0.99),
            q(0.999),
            histogram.max() as f64 / 1000.0
        );
        if args.workload == Workload::PutToRead {
            for (what, key) in [
                ("put start to delivery", "put_to_read_ms"),
                ("put ack to delivery", "ack_to_read_ms"),
            ] {
                let h = &report[key];
                println!(
                    "{what} ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2}",
                    h["p50"].as_f64().unwrap_or(0.0),
                    h["p90"].as_f64().unwrap_or(0.0),
                    h["p99"].as_f64().unwrap_or(0.0),
                    h["max"].as_f64().unwrap_or(0.0)
                );
            }
        }
        for n in report["per_node"].as_array().expect("array") {
            println!(
                "  {}{}: {:.0} fsyncs/s, {:.1} commands per fsync",
                n["node"].as_str().unwrap_or(""),
                if n["leader"].as_bool() == Some(true) {
                    " (leader)"
                } else {
                    ""
                },
                n["fsyncs_per_s"].as_f64().unwrap_or(0.0),
                n["commands_per_fsync"].as_f64().unwrap_or(0.0)
            );
        }
    }
    drop(spawned.take());
}

/// Runs a comparison workload on a broker that was set up (or failed to be).
async fn compare_run<B: compare::Broker>(
    args: &Args,
    broker: Result<Arc<B>, String>,
    shape: compare::Shape,
) -> compare::Outcome {
    let broker = broker.unwrap_or_else(|e| panic!("{:?}: {e}", args.system));
    compare::run(
        broker,
        shape,
        compare::RunSpec {
            concurrency: args.concurrency,
            message_bytes: args.message_bytes,
            fanout: if shape == compare::Shape::TopicFanout {
                args.subscriptions.max(1)
            } else {
                1
            },
            warmup: Duration::from_secs(args.warmup),
            duration: Duration::from_secs(args.duration),
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{:?}: {e}", args.system))
}

/// Prints a comparison run: the headline is sends a second and their
/// latency for queue-send, messages consumed a second and the end-to-end
/// latency for the pipelines. `nodes` is known for Sluice only.
fn compare_report(args: &Args, o: &compare::Outcome, nodes: Option<usize>) {
    let shape = args.workload.shape();
    let consumes = shape.is_some_and(|s| s.consumes());
    let fanout = shape == Some(compare::Shape::TopicFanout);
    let (throughput, latency) = if fanout {
        // Publishes a second, and publish-to-receive latency.
        (o.sent as f64 / o.seconds, quantiles_ms(&o.end_to_end))
    } else if consumes {
        (o.received as f64 / o.seconds, quantiles_ms(&o.end_to_end))
    } else {
        (o.sent as f64 / o.seconds, quantiles_ms(&o.send_latency))
    };
    let report = serde_json::json!({
        "system": format!("{:?}", args.system).to_lowercase(),
        "sluice_sends": (args.system == System::Sluice).then_some(if args.unary { "unary" } else { "stream" }),
        "rabbitmq_queue": (args.system == System::Rabbitmq).then(|| format!("{:?}", args.rabbitmq_queue).to_lowercase()),
        "workload": format!("{:?}", args.workload),
        "nodes": nodes,
        "concurrency": args.concurrency,
        "subscriptions": fanout.then_some(args.subscriptions),
        "message_bytes": args.message_bytes,
        "seconds": o.seconds,
        "throughput_per_s": throughput,
        "latency_ms": latency,
        "sent_per_s": o.sent as f64 / o.seconds,
        "send_latency_ms": quantiles_ms(&o.send_latency),
        "send_errors": o.send_errors,
        "received_per_s": o.received as f64 / o.seconds,
        "end_to_end_ms": quantiles_ms(&o.end_to_end),
        "malformed": o.malformed,
    });
    if args.json {
        println!("{report}");
        return;
    }
    println!(
        "{:?} {:?}, {} in flight, {} B: {:.0} msg/s, latency ms p50 {:.2} p99 {:.2}",
        args.system,
        args.workload,
        args.concurrency,
        args.message_bytes,
        throughput,
        latency["p50"].as_f64().unwrap_or(0.0),
        latency["p99"].as_f64().unwrap_or(0.0),
    );
    println!(
        "  sent {:.0}/s (ack p50 {:.2} p99 {:.2} ms, {} errors); received {:.0}/s (end to end p50 {:.2} p99 {:.2} ms)",
        o.sent as f64 / o.seconds,
        report["send_latency_ms"]["p50"].as_f64().unwrap_or(0.0),
        report["send_latency_ms"]["p99"].as_f64().unwrap_or(0.0),
        o.send_errors,
        o.received as f64 / o.seconds,
        report["end_to_end_ms"]["p50"].as_f64().unwrap_or(0.0),
        report["end_to_end_ms"]["p99"].as_f64().unwrap_or(0.0),
    );
}
