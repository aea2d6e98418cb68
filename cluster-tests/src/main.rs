//! The chaos test runner:
//!
//! ```text
//! cargo run -p cluster-tests --release -- --workload queue \
//!     --nemesis partition,kill,pause --nodes 5 --time-limit 120 --seed 42
//! ```
//!
//! Runs the broker binaries of the same target directory (build them first
//! with `cargo build --release --bins`), writes a results folder under
//! `--out`, prints the verdict, and exits non-zero when a checker found an
//! anomaly.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use cluster_tests::chaos::nemesis;
use cluster_tests::chaos::run::{self, Config, Workload};

/// Jepsen-style chaos testing of a Sluice cluster.
#[derive(Parser, Debug)]
#[command(name = "cluster-tests")]
struct Args {
    /// queue, stream or metadata.
    #[arg(long, default_value = "queue")]
    workload: Workload,
    /// Faults, comma-separated: partition, kill, pause, power, transfer,
    /// member, clock; or "all", or "none".
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Number of nodes.
    #[arg(long, default_value_t = 5)]
    nodes: u64,
    /// Seconds of workload under faults.
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Seed of the fault schedule and the workload's choices [default: from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Where results folders go.
    #[arg(long, default_value = "chaos-results")]
    out: PathBuf,
    /// Run the nodes on loopback even where network namespaces are possible.
    #[arg(long)]
    loopback: bool,
    /// Run the nodes without TLS and authentication (they run secured by
    /// default: TLS, mutual TLS between nodes, signed calls).
    #[arg(long)]
    insecure: bool,
    /// Healthy seconds between faults, as MIN-MAX.
    #[arg(long, default_value = "2-5", value_parser = parse_range)]
    calm: (u64, u64),
    /// Seconds a fault lasts, as MIN-MAX.
    #[arg(long, default_value = "3-8", value_parser = parse_range)]
    fault: (u64, u64),
}

fn parse_range(s: &str) -> Result<(u64, u64), String> {
    let (a, b) = s
        .split_once('-')
        .ok_or_else(|| format!("expected MIN-MAX, got {s:?}"))?;
    let a: u64 = a.parse().map_err(|_| format!("{a:?} is not a number"))?;
    let b: u64 = b.parse().map_err(|_| format!("{b:?} is not a number"))?;
    if a == 0 || a > b {
        return Err(format!("expected 0 < MIN <= MAX, got {s:?}"));
    }
    Ok((a, b))
}

fn main() -> ExitCode {
    let args = Args::parse();
    let nemesis = if args.nemesis == "none" {
        Vec::new()
    } else {
        match nemesis::parse_kinds(&args.nemesis) {
            Ok(k) => k,
            Err(e) => {
                eprintln!("cluster-tests: --nemesis: {e}");
                return ExitCode::from(2);
            }
        }
    };
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let mut cfg = Config::new(args.workload, seed, &args.out);
    cfg.nemesis = nemesis;
    cfg.nodes = args.nodes;
    cfg.time_limit = Duration::from_secs(args.time_limit);
    cfg.loopback = args.loopback;
    cfg.insecure = args.insecure;
    cfg.calm_s = args.calm;
    cfg.fault_s = args.fault;
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run::run(&cfg)) {
        Ok(out) => {
            let s = &out.summary;
            println!(
                "{} workload, seed {}: {}",
                s.workload,
                s.seed,
                if s.valid { "valid" } else { "INVALID" }
            );
            for v in &s.verdicts {
                let counts: Vec<String> =
                    v.counts.iter().map(|(k, n)| format!("{k} {n}")).collect();
                println!(
                    "  {}: {} ({})",
                    v.checker,
                    if v.valid { "valid" } else { "INVALID" },
                    counts.join(", ")
                );
                for a in v.anomalies.iter().take(5) {
                    println!("    {a}");
                }
            }
            println!(
                "  faults: {:?}; availability (succeeded) {:.1}% during faults, {:.1}% outside",
                s.faults,
                s.availability_in_faults * 100.0,
                s.availability_outside_faults * 100.0
            );
            for n in &s.notes {
                println!("  note: {n}");
            }
            println!("  results: {}", out.dir.join("index.html").display());
            if s.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("cluster-tests: {e}");
            ExitCode::from(2)
        }
    }
}
