//! One chaos run from start to verdict: hosts, nodes, the workload under the
//! nemesis, healing, draining, checking, and the results folder.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Client, Options};
use tokio::time::Instant;

use super::checkers::{self, Verdict};
use super::history::{self, Recorder};
use super::nemesis::{self, Kind, Schedule};
use super::net::Net;
use super::nodes::{self, ChaosCluster, Setup};
use super::report::{self, Summary};
use super::workloads::mapping::MappingWorkload;
use super::workloads::schedule::ScheduleWorkload;
use super::workloads::{self, metadata, queue::QueueWorkload, stream::StreamWorkload, topic, Ctx};

/// What the clients do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    /// Standard and FIFO queues with a dead-letter queue.
    Queue,
    /// A sharded stream with two readers.
    Stream,
    /// Creating, deleting and looking up queues by name.
    Metadata,
    /// A topic fanning out to three filtered queues.
    Topic,
    /// A stream and a queue feeding a function on the nodes' workers.
    Mapping,
    /// Rate, cron and one-time schedules firing into a queue.
    Schedule,
}

impl Workload {
    /// Every workload.
    pub const ALL: [Workload; 6] = [
        Workload::Queue,
        Workload::Stream,
        Workload::Metadata,
        Workload::Topic,
        Workload::Mapping,
        Workload::Schedule,
    ];
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Workload::Queue => "queue",
            Workload::Stream => "stream",
            Workload::Metadata => "metadata",
            Workload::Topic => "topic",
            Workload::Mapping => "mapping",
            Workload::Schedule => "schedule",
        })
    }
}

impl FromStr for Workload {
    type Err = String;

    fn from_str(s: &str) -> Result<Workload, String> {
        super::parse_named(&Workload::ALL, s, "workload")
    }
}

/// A run's settings.
#[derive(Debug, Clone)]
pub struct Config {
    pub workload: Workload,
    pub nemesis: Vec<Kind>,
    pub nodes: u64,
    /// How long the workload runs under faults (the drain comes after).
    pub time_limit: Duration,
    pub seed: u64,
    /// Where results folders go.
    pub out: PathBuf,
    /// Run the nodes on loopback even where namespaces are possible.
    pub loopback: bool,
    /// Run the nodes without TLS and authentication (secured by default:
    /// TLS, mutual TLS between nodes, signed calls).
    pub insecure: bool,
    /// Healthy time between faults, seconds.
    pub calm_s: (u64, u64),
    /// Length of a fault, seconds.
    pub fault_s: (u64, u64),
}

impl Config {
    /// Defaults for `workload`: 5 nodes, every nemesis, 60 s.
    pub fn new(workload: Workload, seed: u64, out: &Path) -> Config {
        Config {
            workload,
            nemesis: Kind::ALL.to_vec(),
            nodes: 5,
            time_limit: Duration::from_secs(60),
            seed,
            out: out.to_path_buf(),
            loopback: false,
            insecure: false,
            calm_s: (2, 5),
            fault_s: (3, 8),
        }
    }
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The results folder.
    pub dir: PathBuf,
    pub summary: Summary,
}

/// How long the cluster gets to recover once the faults are healed.
const RECOVERY: Duration = Duration::from_secs(90);
/// How long the drain may take.
const DRAIN: Duration = Duration::from_secs(120);

/// Waits until every node answers and agrees on a leader that counts every
/// node a member.
async fn wait_healthy(cluster: &ChaosCluster, limit: Duration) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let n = cluster.ids().len();
    loop {
        let mut leaders = Vec::new();
        for id in cluster.ids() {
            let c = cluster.client_of(id, Duration::from_secs(1));
            match c.cluster_status(true).await {
                Ok(s) => leaders.push(s.leader_id),
                Err(_) => leaders.push(None),
            }
        }
        let agreed = leaders[0].is_some() && leaders.iter().all(|l| *l == leaders[0]);
        if agreed {
            let c = cluster.client_from(1, Duration::from_secs(2));
            if let Ok(s) = c.cluster_status(false).await {
                let voters = s.members.iter().filter(|m| m.role == "voter").count();
                if voters == n {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the cluster was not healthy within {limit:?} (leaders seen: {leaders:?})"
            ));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A client that retries, for setting up and for the drain's bookkeeping.
fn admin(cluster: &ChaosCluster) -> Client {
    Client::with_options(
        cluster.addrs(),
        cluster.client_options(Options {
            deadline: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(10),
            ..Options::default()
        }),
    )
    .expect("client")
}

/// Runs `cfg` and writes its results folder.
pub async fn run(cfg: &Config) -> Result<Outcome, String> {
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = cfg
        .out
        .join(format!("{}-seed{}-{stamp}", cfg.workload, cfg.seed));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let data = tempfile::Builder::new()
        .prefix("sluice-chaos-")
        .tempdir()
        .map_err(|e| e.to_string())?;
    let net = if cfg.loopback {
        Net::loopback(cfg.nodes, crate::free_port)
    } else {
        Net::create(cfg.nodes, crate::free_port)
    };
    let setup = Setup {
        nodes: cfg.nodes,
        lazyfs: cfg.nemesis.contains(&Kind::Power) && nodes::lazyfs_available(),
        faketime: cfg.nemesis.contains(&Kind::Clock) && nodes::faketime_available(),
        // Frequent snapshots and small log segments, so that snapshot
        // builds, the bodies they copy, the segments kept for the others,
        // log purges and snapshot installs all happen within a run, under
        // its faults (at the default 20 000 entries and 64 MiB most runs
        // built none).
        extra_args: ["--snapshot-every", "1000", "--log-segment-mb", "1"]
            .map(String::from)
            .to_vec(),
        secure: !cfg.insecure,
        small_disks: cfg.nemesis.contains(&Kind::DiskFull) && nodes::small_disks_available(),
    };
    let mut cluster = ChaosCluster::start(net, setup, data.path())?;
    let (kinds, skipped) = nemesis::feasible(&cfg.nemesis, &cluster);
    let result = run_in(cfg, &dir, &mut cluster, kinds, skipped).await;
    let _ = cluster.collect_logs(&dir.join("logs"));
    drop(cluster);
    result.map(|summary| Outcome { dir, summary })
}

async fn run_in(
    cfg: &Config,
    dir: &Path,
    cluster: &mut ChaosCluster,
    kinds: Vec<Kind>,
    skipped: Vec<String>,
) -> Result<Summary, String> {
    wait_healthy(cluster, Duration::from_secs(60)).await?;
    let admin = admin(cluster);
    let recorder =
        Arc::new(Recorder::new(Some(&dir.join("history.jsonl"))).map_err(|e| e.to_string())?);
    let clients = cluster
        .ids()
        .into_iter()
        .map(|id| cluster.client_from(id, workloads::OP_TIMEOUT))
        .collect();
    let ctx = Ctx::new(recorder.clone(), clients, cfg.seed);
    let schedule = Schedule {
        kinds: kinds.clone(),
        seed: cfg.seed,
        calm_s: cfg.calm_s,
        fault_s: cfg.fault_s,
    };
    let mut notes = Vec::new();
    let queue = match cfg.workload {
        Workload::Queue => Some(QueueWorkload::setup(&admin).await?),
        _ => None,
    };
    let stream = match cfg.workload {
        Workload::Stream => Some(StreamWorkload::setup(&admin).await?),
        _ => None,
    };
    let topic_queues = match cfg.workload {
        Workload::Topic => Some(topic::setup(&admin).await?),
        _ => None,
    };
    let mapping = match cfg.workload {
        Workload::Mapping => {
            Some(MappingWorkload::setup(&admin, &cluster.net().test_host()).await?)
        }
        _ => None,
    };
    let scheduled = match cfg.workload {
        Workload::Schedule => Some(ScheduleWorkload::setup(&admin, cfg.time_limit).await?),
        _ => None,
    };
    let until = Instant::now() + cfg.time_limit;
    let end_ms = workloads::schedule::now_ms() + cfg.time_limit.as_millis() as u64;
    let until_ns = recorder.now_ns() + cfg.time_limit.as_nanos() as u64;
    let clock = {
        let r = recorder.clone();
        move || r.now_ns()
    };
    // The nemesis, then healing, alongside the workload.
    let faults_and_health = async {
        let faults = nemesis::run(cluster, &schedule, until, &clock).await;
        let healed = nemesis::heal_all(cluster).await;
        let health = match healed {
            Ok(()) => wait_healthy(cluster, RECOVERY).await,
            Err(e) => Err(e),
        };
        (faults, health)
    };
    let work = async {
        match cfg.workload {
            Workload::Queue => {
                if let Some(w) = &queue {
                    w.run(&ctx, until).await;
                }
                Ok(())
            }
            Workload::Stream => match &stream {
                Some(w) => w.run(&ctx, until, RECOVERY + DRAIN).await,
                None => Ok(()),
            },
            Workload::Metadata => {
                metadata::run(&ctx, until).await;
                Ok(())
            }
            Workload::Topic => {
                if let Some(q) = &topic_queues {
                    topic::run(&ctx, q, until).await;
                }
                Ok(())
            }
            Workload::Mapping => {
                if let Some(w) = &mapping {
                    w.run(&ctx, until).await;
                }
                Ok(())
            }
            Workload::Schedule => {
                if let Some(w) = &scheduled {
                    w.run(&ctx, until).await;
                }
                Ok(())
            }
        }
    };
    let ((faults, health), worked) = tokio::join!(faults_and_health, work);
    if let Err(e) = &health {
        notes.push(format!("recovery: {e}"));
    }
    if let Err(e) = worked {
        notes.push(format!("workload: {e}"));
    }
    if let (Some(w), Ok(())) = (&queue, &health) {
        if let Err(e) = w.drain(&ctx, &admin, DRAIN).await {
            notes.push(format!("drain: {e}"));
        }
    }
    if let (Some(q), Ok(())) = (&topic_queues, &health) {
        if let Err(e) = workloads::queue::drain_queues(&ctx, &admin, q, DRAIN).await {
            notes.push(format!("drain: {e}"));
        }
    }
    if let (Some(w), Ok(())) = (&mapping, &health) {
        if let Err(e) = w.drain(&ctx, DRAIN).await {
            notes.push(format!("drain: {e}"));
        }
    }
    if let (Some(w), Ok(())) = (&scheduled, &health) {
        // Catch-up after the faults takes up to a few rounds of firings.
        if let Err(e) = w.drain(&ctx, &admin, end_ms, DRAIN + RECOVERY).await {
            notes.push(format!("drain: {e}"));
        }
    }
    recorder.flush().map_err(|e| e.to_string())?;
    let ops = history::pair(&recorder.events());
    let verdicts: Vec<Verdict> = match cfg.workload {
        Workload::Queue => {
            let fifo = queue.as_ref().map(|w| w.fifo_queues()).unwrap_or_default();
            vec![checkers::queue::check(&ops, &fifo)]
        }
        Workload::Stream => vec![checkers::stream::check(&ops)],
        Workload::Metadata => vec![checkers::linear::check(&ops)],
        Workload::Topic => {
            let routes: Vec<checkers::topic::Route> = topic::routes()
                .into_iter()
                .map(|r| (r.queue.to_string(), r.matches))
                .collect();
            vec![checkers::topic::check(&ops, &routes, topic::number_of)]
        }
        Workload::Mapping => {
            if let Some(w) = &mapping {
                // What the function reported, for the results folder.
                let _ = std::fs::write(dir.join("seen.txt"), w.seen.text("/seen"));
            }
            let seen = mapping
                .as_ref()
                .map(|w| workloads::mapping::read_seen(&w.seen))
                .unwrap_or_default();
            vec![checkers::mapping::check(&ops, &seen)]
        }
        Workload::Schedule => {
            let schedules = scheduled
                .as_ref()
                .map(|w| w.schedules.clone())
                .unwrap_or_default();
            vec![checkers::schedule::check(&ops, &schedules, end_ms)]
        }
    };
    let availability = report::availability(&ops, &faults, until_ns);
    let valid = verdicts.iter().all(|v| v.valid) && health.is_ok();
    let summary = Summary {
        workload: cfg.workload.to_string(),
        seed: cfg.seed,
        nodes: cfg.nodes,
        hosts: cluster.net().describe(),
        nemesis: kinds.iter().map(|k| k.to_string()).collect(),
        skipped_nemesis: skipped,
        time_limit_s: cfg.time_limit.as_secs(),
        valid,
        operations: report::op_counts(&ops),
        faults: nemesis::counts(&faults),
        availability_in_faults: availability.during(),
        availability_outside_faults: availability.outside(),
        availability,
        verdicts,
        notes,
    };
    report::write(dir, &summary, &ops, &faults).map_err(|e| e.to_string())?;
    Ok(summary)
}
