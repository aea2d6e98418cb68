//! The worker's side of membership: heartbeats to the cluster, carrying
//! what the worker holds, and the environments the cluster asks it to keep
//! ready (provisioned concurrency).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_proto::v1::{HeartbeatRequest, Provisioned, WarmEnvironments};

use crate::host::function_spec;
use crate::Worker;

/// Idle environments are stopped after this long (provisioned ones are
/// kept).
pub const ENVIRONMENT_IDLE_MAX: Duration = Duration::from_secs(300);
/// How often idle environments are looked for.
const REAP_EVERY: Duration = Duration::from_secs(15);
/// Longest wait for a heartbeat's answer.
const HEARTBEAT_WAIT: Duration = Duration::from_secs(5);
/// Heartbeat period until the cluster says otherwise.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

/// The request describing the worker now.
pub fn heartbeat(worker: &Worker) -> HeartbeatRequest {
    HeartbeatRequest {
        worker_id: worker.options.id.clone(),
        address: worker.options.advertise.clone(),
        memory_mb: worker.options.memory_mb,
        memory_used_mb: worker.pool.memory_used_mb(),
        running: worker.pool.running(),
        warm: worker
            .pool
            .held()
            .into_iter()
            .map(|h| WarmEnvironments {
                key: h.key,
                idle: h.idle,
                busy: h.busy,
                starting: h.starting,
            })
            .collect(),
        tls_certificate_sha256: worker.tls_fingerprint(),
    }
}

/// Heartbeats until the task is aborted, and stops idle environments.
pub async fn run(worker: Arc<Worker>) {
    let warming: Arc<Mutex<HashSet<String>>> = Arc::default();
    let mut pollers = Pollers::default();
    let mut interval = DEFAULT_INTERVAL;
    let mut last_reap = Instant::now();
    let mut failing_since: Option<Instant> = None;
    loop {
        let beat = tokio::time::timeout(HEARTBEAT_WAIT, worker.link.heartbeat(heartbeat(&worker)));
        match beat
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer within 5 s")))
        {
            Ok(answer) => {
                if failing_since.take().is_some() {
                    tracing::info!(worker = %worker.options.id, "heartbeats reach the cluster again");
                }
                interval = Duration::from_millis(answer.interval_ms.clamp(100, 10_000));
                if !answer.host_secret.is_empty() {
                    let mut secrets = vec![answer.host_secret];
                    secrets.extend(answer.other_host_secrets);
                    *worker
                        .host_secrets
                        .write()
                        .unwrap_or_else(|e| e.into_inner()) = secrets;
                }
                provision(&worker, &warming, answer.provisioned);
                pollers.reconcile(&worker, answer.leases);
            }
            Err(e) => {
                // Said once per outage, not once per beat.
                if failing_since.is_none() {
                    failing_since = Some(Instant::now());
                    tracing::warn!(worker = %worker.options.id, error = %e, "heartbeat not accepted");
                }
            }
        }
        if last_reap.elapsed() >= REAP_EVERY {
            last_reap = Instant::now();
            let stopped = worker.pool.reap(ENVIRONMENT_IDLE_MAX).await;
            if stopped > 0 {
                tracing::debug!(stopped, "stopped idle execution environments");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

/// The pollers of the mapping slots the worker holds, by [`poller_key`]:
/// the lease they run with, and how to stop them.
#[derive(Default)]
struct Pollers(
    HashMap<
        String,
        (
            sluice_proto::v1::PollLease,
            tokio::sync::watch::Sender<bool>,
        ),
    >,
);

impl Drop for Pollers {
    fn drop(&mut self) {
        for (_, stop) in self.0.values() {
            let _ = stop.send(true);
        }
    }
}

impl Pollers {
    /// Starts a poller per lease not running yet, and restarts one whose
    /// lease changed (new settings, or for a stream a new epoch); a poller
    /// told to stop finishes the batch in hand first, so no invocation is
    /// cut short (a stream poller's checkpoint is then refused if the slot
    /// moved on).
    fn reconcile(&mut self, worker: &Arc<Worker>, leases: Vec<sluice_proto::v1::PollLease>) {
        let held: HashSet<String> = leases.iter().map(poller_key).collect();
        self.0.retain(|key, (_, stop)| {
            let keep = held.contains(key);
            if !keep {
                let _ = stop.send(true);
            }
            keep
        });
        for lease in leases {
            let key = poller_key(&lease);
            if let Some((running, stop)) = self.0.get(&key) {
                // A poller that ended by itself (its checkpoint refused by
                // a node behind the times, its part finished) while the
                // slot is still this worker's starts again: a held slot
                // never goes unpolled.
                if same_work(running, &lease) && !stop.is_closed() {
                    continue;
                }
                let _ = stop.send(true);
            }
            let (stop, stopped) = tokio::sync::watch::channel(false);
            if lease.stream_name.is_empty() {
                tokio::spawn(crate::queue_poller::run(
                    worker.link.clone(),
                    lease.clone(),
                    stopped,
                ));
            } else {
                tokio::spawn(crate::stream_poller::run(
                    worker.link.clone(),
                    worker.options.id.clone(),
                    lease.clone(),
                    stopped,
                ));
            }
            self.0.insert(key, (lease, stop));
        }
    }
}

/// Which poller runs a lease: one per queue mapping (a worker holds at
/// most one of its slots), one per stream mapping slot.
fn poller_key(lease: &sluice_proto::v1::PollLease) -> String {
    if lease.stream_name.is_empty() {
        lease.mapping_uuid.clone()
    } else {
        format!("{}/{}", lease.mapping_uuid, lease.slot)
    }
}

/// Whether a running poller already does what `new` asks: a queue
/// poller's slot and epoch do not matter; a stream poller's checkpoint is
/// the one it moves itself.
fn same_work(running: &sluice_proto::v1::PollLease, new: &sluice_proto::v1::PollLease) -> bool {
    let mut new = new.clone();
    if new.stream_name.is_empty() {
        new.slot = running.slot;
        new.epoch = running.epoch;
    } else {
        new.checkpoint = running.checkpoint.clone();
    }
    *running == new
}

/// Keeps the asked environments: starts the missing ones, one key at a time
/// each, and tells the pool which to keep past their idle time.
fn provision(worker: &Arc<Worker>, warming: &Arc<Mutex<HashSet<String>>>, asked: Vec<Provisioned>) {
    let held: HashMap<String, u32> = worker
        .pool
        .held()
        .into_iter()
        .map(|h| (h.key, h.idle + h.busy + h.starting))
        .collect();
    let mut keep = HashMap::new();
    for p in asked {
        let Some(spec) = p.spec else { continue };
        let Ok(spec) = function_spec(spec) else {
            continue;
        };
        keep.insert(spec.key.clone(), p.count);
        let have = *held.get(&spec.key).unwrap_or(&0);
        if have >= p.count {
            continue;
        }
        if !warming
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(spec.key.clone())
        {
            continue;
        }
        let (worker, warming, missing) = (worker.clone(), warming.clone(), p.count - have);
        tokio::spawn(async move {
            let limit = Duration::from_secs(u64::from(spec.config.timeout_s).max(10));
            for _ in 0..missing {
                let link = worker.link.clone();
                let sha = spec.code_sha256.clone();
                let fetch = move || async move { link.code(&sha).await };
                if let Err(e) = worker.pool.prewarm(&spec, fetch, limit).await {
                    tracing::warn!(function = %spec.config.name, error = %e, "could not start a provisioned environment");
                    break;
                }
            }
            warming
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&spec.key);
        });
    }
    worker.pool.set_keep(keep);
}
