//! `sluice-bench`: a closed-loop load generator.
//!
//! `C` workers each keep one request in flight for the run's duration;
//! latencies go into an HDR histogram. Before and after the run the tool reads
//! every node's metrics, so the report also gives the fsyncs per second and
//! the commands per fsync (the group commit batch).
//!
//! ```text
//! cargo build --release --bins
//! target/release/sluice-bench --spawn 3 --workload send --batch 10 --concurrency 64
//! target/release/sluice-bench --spawn 3 --workload receive-delete --prefill 200000
//! target/release/sluice-bench --spawn 3 --workload receive-depth --depth 1000000
//! ```

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use cluster_tests::{metric_value, scrape, Cluster};
use hdrhistogram::Histogram;
use sluice_client::sluice_proto::v1 as pb;
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
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Target {
    /// Send every request to the leader.
    Leader,
    /// Send every request to a follower, which forwards it.
    Follower,
}

/// Closed-loop load generator for Sluice.
#[derive(Parser, Debug)]
#[command(name = "sluice-bench")]
struct Args {
    /// Nodes of a running cluster, comma-separated HOST:PORT.
    #[arg(long, conflicts_with = "spawn")]
    cluster: Option<String>,
    /// Start a cluster of this many nodes (binaries from --bin-dir) for the run.
    #[arg(long)]
    spawn: Option<u64>,
    /// Where `sluice` is, for --spawn [default: next to this binary].
    #[arg(long)]
    bin_dir: Option<std::path::PathBuf>,
    /// What to send.
    #[arg(long, value_enum, default_value = "create-queue")]
    workload: Workload,
    /// Which node receives the requests.
    #[arg(long, value_enum, default_value = "leader")]
    target: Target,
    /// Requests in flight.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Seconds of measured load.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Seconds of unmeasured load first.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Messages per request (1-10) for the queue workloads.
    #[arg(long, default_value_t = 1)]
    batch: usize,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 1024)]
    message_bytes: usize,
    /// Messages to put in the queue before receive-delete.
    #[arg(long, default_value_t = 100_000)]
    prefill: u64,
    /// Messages in the queue for receive-depth.
    #[arg(long, default_value_t = 10)]
    depth: u64,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct Run {
    histogram: Histogram<u64>,
    errors: u64,
    messages: u64,
}

/// One request of the workload; returns how many messages it moved.
async fn op(args: &Args, client: &Client, queue: &str, id: usize, i: u64) -> Result<u64, String> {
    let e = |e: sluice_client::Error| e.to_string();
    match args.workload {
        Workload::CreateQueue => {
            let name = format!("b{}-{id}-{i}", std::process::id());
            client
                .create_queue(&name, Default::default())
                .await
                .map_err(e)?;
            Ok(1)
        }
        Workload::Send => {
            let body = "x".repeat(args.message_bytes);
            if args.batch == 1 {
                client
                    .send_message(pb::SendMessageRequest {
                        queue_name: queue.into(),
                        message_body: body,
                        ..Default::default()
                    })
                    .await
                    .map_err(e)?;
                Ok(1)
            } else {
                let entries = (0..args.batch)
                    .map(|n| pb::SendMessageBatchRequestEntry {
                        id: format!("e{n}"),
                        message_body: body.clone(),
                        ..Default::default()
                    })
                    .collect();
                let r = client
                    .send_message_batch(pb::SendMessageBatchRequest {
                        queue_name: queue.into(),
                        entries,
                    })
                    .await
                    .map_err(e)?;
                Ok(r.successful.len() as u64)
            }
        }
        Workload::ReceiveDelete => {
            let r = client
                .receive_message(pb::ReceiveMessageRequest {
                    queue_name: queue.into(),
                    max_number_of_messages: args.batch as i32,
                    visibility_timeout: Some(300),
                    wait_time_seconds: Some(0),
                    ..Default::default()
                })
                .await
                .map_err(e)?;
            if args.batch == 1 {
                for m in &r.messages {
                    client
                        .delete_message(queue, &m.receipt_handle)
                        .await
                        .map_err(e)?;
                }
            } else if !r.messages.is_empty() {
                let entries = r
                    .messages
                    .iter()
                    .enumerate()
                    .map(|(n, m)| pb::DeleteMessageBatchRequestEntry {
                        id: format!("d{n}"),
                        receipt_handle: m.receipt_handle.clone(),
                    })
                    .collect();
                client
                    .delete_message_batch(pb::DeleteMessageBatchRequest {
                        queue_name: queue.into(),
                        entries,
                    })
                    .await
                    .map_err(e)?;
            }
            if r.messages.is_empty() {
                return Err("the queue ran empty: raise --prefill".into());
            }
            Ok(r.messages.len() as u64)
        }
        Workload::ReceiveDepth => {
            let r = client
                .receive_message(pb::ReceiveMessageRequest {
                    queue_name: queue.into(),
                    max_number_of_messages: 1,
                    visibility_timeout: Some(0),
                    wait_time_seconds: Some(0),
                    ..Default::default()
                })
                .await
                .map_err(e)?;
            Ok(r.messages.len() as u64)
        }
    }
}

async fn worker(
    args: Arc<Args>,
    client: Arc<Client>,
    queue: Arc<String>,
    id: usize,
    until: Instant,
    measure_from: Instant,
) -> Run {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let mut messages = 0;
    let mut i = 0u64;
    while Instant::now() < until {
        let started = Instant::now();
        let result = op(&args, &client, &queue, id, i).await;
        i += 1;
        let micros = started.elapsed().as_micros() as u64;
        if started >= measure_from {
            match result {
                Ok(n) => {
                    histogram.saturating_record(micros.max(1));
                    messages += n;
                }
                Err(e) => {
                    if errors == 0 {
                        eprintln!("worker {id}: {e}");
                    }
                    errors += 1;
                }
            }
        }
    }
    Run {
        histogram,
        errors,
        messages,
    }
}

/// Fills `queue` with `count` messages of `bytes` bytes, 10 per request.
async fn fill(client: Arc<Client>, queue: &str, count: u64, bytes: usize) {
    if count == 0 {
        return;
    }
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(count.div_ceil(10)));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let client = client.clone();
            let left = left.clone();
            let queue = queue.to_string();
            tokio::spawn(async move {
                let body = "x".repeat(bytes);
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let entries = (0..10)
                        .map(|n| pb::SendMessageBatchRequestEntry {
                            id: format!("e{n}"),
                            message_body: body.clone(),
                            ..Default::default()
                        })
                        .collect();
                    client
                        .send_message_batch(pb::SendMessageBatchRequest {
                            queue_name: queue.clone(),
                            entries,
                        })
                        .await
                        .expect("filling the queue");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("fill task");
    }
    eprintln!(
        "filled {queue} with {count} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

struct NodeCounters {
    fsyncs: f64,
    commands: f64,
}

fn counters(addr: &str) -> NodeCounters {
    let text = scrape(addr);
    NodeCounters {
        fsyncs: metric_value(&text, "sluice_log_fsyncs_total"),
        commands: metric_value(&text, "sluice_applied_commands_total"),
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    assert!(
        (1..=10).contains(&args.batch),
        "--batch: must be from 1 to 10"
    );
    if let Some(dir) = &args.bin_dir {
        std::env::set_var("SLUICE_BIN_DIR", dir);
    }
    let mut spawned = args.spawn.map(|n| Cluster::start(n, &[]));
    let addrs: Vec<String> = match (&args.cluster, &spawned) {
        (Some(list), _) => list.split(',').map(str::to_string).collect(),
        (None, Some(c)) => c.addrs(),
        (None, None) => vec!["127.0.0.1:7070".into()],
    };
    let all = Client::new(&addrs).expect("client");
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
    let leader_addr = status
        .members
        .iter()
        .find(|m| m.node_id == leader)
        .map(|m| m.address.clone())
        .expect("leader address");
    let target_addr = match args.target {
        Target::Leader => leader_addr.clone(),
        Target::Follower => status
            .members
            .iter()
            .find(|m| m.node_id != leader)
            .map(|m| m.address.clone())
            .expect("a follower (single-node clusters have none)"),
    };
    let client = Arc::new(
        Client::with_options(
            [target_addr.as_str()],
            Options {
                deadline: Duration::from_secs(5),
                ..Options::default()
            },
        )
        .expect("client"),
    );
    let queue = Arc::new(format!("bench-{}", std::process::id()));
    if args.workload != Workload::CreateQueue {
        client
            .create_queue(&queue, Default::default())
            .await
            .expect("creating the bench queue");
        let (count, bytes) = match args.workload {
            Workload::ReceiveDelete => (args.prefill, args.message_bytes),
            Workload::ReceiveDepth => (args.depth, 100),
            _ => (0, 0),
        };
        fill(client.clone(), &queue, count, bytes).await;
    }

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|id| {
            tokio::spawn(worker(
                args.clone(),
                client.clone(),
                queue.clone(),
                id,
                until,
                measure_from,
            ))
        })
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let node_addrs: Vec<String> = status.members.iter().map(|m| m.address.clone()).collect();
    let before: Vec<NodeCounters> = node_addrs.iter().map(|a| counters(a)).collect();
    let measured_start = Instant::now();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let mut messages = 0;
    for w in workers {
        let run = w.await.expect("worker");
        histogram.add(&run.histogram).expect("merge histograms");
        errors += run.errors;
        messages += run.messages;
    }
    let elapsed = measured_start.elapsed().as_secs_f64();
    let after: Vec<NodeCounters> = node_addrs.iter().map(|a| counters(a)).collect();

    let ops = histogram.len();
    let q = |p: f64| histogram.value_at_quantile(p) as f64 / 1000.0;
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
        "batch": args.batch,
        "message_bytes": args.message_bytes,
        "depth": args.depth,
        "seconds": elapsed,
        "ops": ops,
        "errors": errors,
        "ops_per_s": ops as f64 / elapsed,
        "messages_per_s": messages as f64 / elapsed,
        "latency_ms": {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999), "max": histogram.max() as f64 / 1000.0},
        "per_node": per_node,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{:?} on {} node(s), {} in flight, batch {}, to the {:?}: {} ops in {:.1} s = {:.0} ops/s, {:.0} messages/s, {} errors",
            args.workload,
            node_addrs.len(),
            args.concurrency,
            args.batch,
            args.target,
            ops,
            elapsed,
            ops as f64 / elapsed,
            messages as f64 / elapsed,
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
