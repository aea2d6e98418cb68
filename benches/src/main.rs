//! `sluice-bench`: a closed-loop load generator.
//!
//! `C` workers each keep one request in flight for the run's duration;
//! latencies go into an HDR histogram. Before and after the run the tool reads
//! every node's metrics, so the report also gives the fsyncs per second and
//! the commands per fsync (the group commit batch).
//!
//! ```text
//! cargo build --release --bins
//! target/release/sluice-bench --spawn 3 --workload create-queue --concurrency 64 --duration 10
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, ValueEnum};
use cluster_tests::{metric_value, scrape, Cluster};
use hdrhistogram::Histogram;
use sluice_client::{Client, Options};

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq, Debug)]
enum Workload {
    /// CreateQueue with a fresh name per request: one small replicated
    /// command each, the shape of every metadata write.
    CreateQueue,
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
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

struct Run {
    histogram: Histogram<u64>,
    errors: u64,
}

async fn worker(client: Arc<Client>, id: usize, until: Instant, measure_from: Instant) -> Run {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    let mut i = 0u64;
    let run = std::process::id();
    loop {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let name = format!("b{run}-{id}-{i}");
        i += 1;
        let started = Instant::now();
        let result = client.create_queue(&name, Default::default()).await;
        let micros = started.elapsed().as_micros() as u64;
        if started >= measure_from {
            match result {
                Ok(_) => histogram.saturating_record(micros.max(1)),
                Err(_) => errors += 1,
            }
        }
    }
    Run { histogram, errors }
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
    let args = Args::parse();
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

    let start = Instant::now();
    let measure_from = start + Duration::from_secs(args.warmup);
    let until = measure_from + Duration::from_secs(args.duration);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|id| tokio::spawn(worker(client.clone(), id, until, measure_from)))
        .collect();
    tokio::time::sleep_until(measure_from.into()).await;
    let node_addrs: Vec<String> = status.members.iter().map(|m| m.address.clone()).collect();
    let before: Vec<NodeCounters> = node_addrs.iter().map(|a| counters(a)).collect();
    let measured_start = Instant::now();
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    let mut errors = 0;
    for w in workers {
        let run = w.await.expect("worker");
        histogram.add(&run.histogram).expect("merge histograms");
        errors += run.errors;
    }
    let elapsed = measured_start.elapsed().as_secs_f64();
    let after: Vec<NodeCounters> = node_addrs.iter().map(|a| counters(a)).collect();

    let ops = histogram.len();
    let throughput = ops as f64 / elapsed;
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
        "seconds": elapsed,
        "ops": ops,
        "errors": errors,
        "ops_per_s": throughput,
        "latency_ms": {"p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p999": q(0.999), "max": histogram.max() as f64 / 1000.0},
        "per_node": per_node,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{:?} on {} node(s), {} in flight, to the {:?}: {} ops in {:.1} s = {:.0} ops/s, {} errors",
            args.workload,
            node_addrs.len(),
            args.concurrency,
            args.target,
            ops,
            elapsed,
            throughput,
            errors
        );
        println!(
            "latency ms: p50 {:.2}  p90 {:.2}  p99 {:.2}  p99.9 {:.2}  max {:.2}",
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
