//! Routing invocations to workers.
//!
//! The node that takes an invocation picks a live worker from the
//! replicated registry (`workers`): one reporting an idle environment for
//! the invocation's key first (a warm start), else the one with the most
//! memory free; it then calls the worker's `WorkerHost.Run`. The registry
//! lags by up to a heartbeat, so the node also counts what it sent itself.
//! A worker that cannot be connected to is skipped for a while and the next
//! one tried; a worker lost while running the invocation makes the outcome
//! unknown, which the caller handles (a synchronous invoke fails, an
//! asynchronous event is run again).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_proto::v1::worker_host_client::WorkerHostClient;
use sluice_proto::v1::{LogsRequest, LogsResponse, RunRequest, RunResponse, RunSpec};

use sluice_security::signer::{SignedChannel, Signer};
use sluice_security::Credentials;

use crate::auth::caller::NODE_OWNER;
use crate::auth::NodeSecurity;
use crate::clock::now_ms;
use crate::raft::network::{is_connect_error, Channels};
use crate::raft::state_machine::StateHandle;
use crate::waiters::Waiters;
use crate::workers::{self, WorkerRecord};

/// How long a finished invocation's environment counts as idle on its
/// worker without a heartbeat saying so.
const FINISHED_FOR: Duration = Duration::from_secs(3);
/// A worker that refused connections is not tried again for this long.
const SUSPECT_FOR: Duration = Duration::from_secs(5);
/// Time allowed on top of the function's timeout (fetching and unpacking
/// code, starting the runtime).
const RUN_SLACK: Duration = Duration::from_secs(30);
use sluice_core::limits::requests::WORKER_MESSAGE_MAX as MESSAGE_MAX;
/// How long an invocation waits for a worker to register when there is
/// none (a cluster just started, or its workers restarting).
pub const WORKER_WAIT: Duration = Duration::from_secs(10);

/// Why an invocation did not run to an answer.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// No live worker could be reached.
    #[error("no live worker can run functions ({0})")]
    NoWorker(String),
    /// The worker could not run it for now (it could not fetch the code):
    /// nothing ran.
    #[error("{0}")]
    NotRun(String),
    /// The worker was lost while it ran the invocation: whether the function
    /// ran is unknown.
    #[error("worker {worker} was lost while running the invocation: {why}")]
    Lost {
        /// The worker.
        worker: String,
        /// What the transport said.
        why: String,
    },
    /// The worker answered with an error (the code could not be run).
    #[error("{}", .0.message())]
    Refused(tonic::Status),
}

/// What a node knows beyond the registry.
pub struct Dispatcher {
    /// To other nodes (an invocation forwarded to the leader).
    nodes: Channels,
    /// To workers, by how they are dialled.
    workers: Mutex<HashMap<WorkerDial, SignedChannel>>,
    security: Arc<NodeSecurity>,
    local: Mutex<Local>,
}

/// Everything a channel to a worker depends on: its address, its pinned
/// certificate, and the principal and id the call signatures are made for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WorkerDial {
    address: String,
    fingerprint: String,
    owner: String,
    id: String,
}

#[derive(Default)]
struct Local {
    /// Invocations this node has running, by worker.
    running: HashMap<String, u32>,
    /// Of those, by worker and environment key.
    running_key: HashMap<(String, String), u32>,
    /// Workers that refused a connection, and when.
    suspect: HashMap<String, Instant>,
    /// When invocations this node sent finished, by worker and key, oldest
    /// first: their environments are idle there before the worker's next
    /// heartbeat says so. Pushed under the lock with the time read there,
    /// so in order: the expired are popped from the front, and looking
    /// costs what expired since the last look, not what the window holds
    /// (thousands at a few thousand invocations a second).
    finished: HashMap<(String, String), VecDeque<Instant>>,
}

/// Marks an invocation running on a worker for as long as it lives.
struct Running<'a> {
    dispatcher: &'a Dispatcher,
    worker: String,
    key: String,
}

impl<'a> Running<'a> {
    fn new(dispatcher: &'a Dispatcher, worker: &str, key: &str) -> Self {
        let mut local = dispatcher.local();
        *local.running.entry(worker.to_string()).or_default() += 1;
        *local
            .running_key
            .entry((worker.to_string(), key.to_string()))
            .or_default() += 1;
        Running {
            dispatcher,
            worker: worker.to_string(),
            key: key.to_string(),
        }
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut local = self.dispatcher.local();
        if let Some(n) = local.running.get_mut(&self.worker) {
            *n = n.saturating_sub(1);
        }
        let k = (self.worker.clone(), self.key.clone());
        if let Some(n) = local.running_key.get_mut(&k) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                local.running_key.remove(&k);
            }
        }
    }
}

impl Dispatcher {
    /// A dispatcher of `security`'s node, reaching other nodes through
    /// `nodes`.
    pub fn new(security: Arc<NodeSecurity>, nodes: Channels) -> Dispatcher {
        Dispatcher {
            nodes,
            workers: Mutex::default(),
            security,
            local: Mutex::default(),
        }
    }

    /// The (shared, lazily connected) channel to the node at `addr`.
    pub fn channel(&self, addr: &str) -> Result<SignedChannel, String> {
        self.nodes.get(addr)
    }

    /// The channel to a worker: its own node's worker on the cluster
    /// listener like any node; another worker over TLS to the certificate
    /// it registered, each call signed with the secret derived for it. A
    /// worker that registered no certificate is called in plain gRPC only
    /// while the cluster runs without TLS.
    fn worker_channel(&self, w: &WorkerRecord) -> Result<SignedChannel, String> {
        let r = &w.report;
        let dial = WorkerDial {
            address: r.address.clone(),
            fingerprint: r.tls_fingerprint.clone(),
            owner: r.owner.clone(),
            id: r.id.clone(),
        };
        let mut cache = self.workers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = cache.get(&dial) {
            return Ok(c.clone());
        }
        let node = r.owner.starts_with(NODE_OWNER);
        if !node && r.tls_fingerprint.is_empty() && self.security.cluster_tls() {
            return Err(format!(
                "worker {} registered no TLS certificate; this cluster calls workers over TLS only",
                r.id
            ));
        }
        let connector = self.security.worker_connector(node, &r.tls_fingerprint);
        let endpoint = tonic::transport::Endpoint::from_shared(format!(
            "http://{}",
            crate::discovery::dialable(&r.address)
        ))
        .map_err(|e| format!("worker {} address {:?}: {e}", r.id, r.address))?
        .connect_timeout(Duration::from_millis(500))
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
        let credentials = if node {
            self.security.node_credentials.clone()
        } else {
            Credentials {
                access_key_id: self.security.node_credentials.access_key_id.clone(),
                secret_access_key: self.security.worker_host_secret(&r.owner, &r.id),
            }
        };
        let channel = Signer::new(connector.channel(endpoint), Some(credentials), "cluster");
        if cache.len() > 4 * crate::workers::WORKERS_MAX {
            cache.clear();
        }
        cache.insert(dial, channel.clone());
        Ok(channel)
    }

    fn local(&self) -> std::sync::MutexGuard<'_, Local> {
        self.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The live workers in the order to try them for `key`.
    fn candidates(&self, all: Vec<WorkerRecord>, key: &str, now: u64) -> Vec<WorkerRecord> {
        let mut local = self.local();
        let clock = Instant::now();
        local
            .suspect
            .retain(|_, since| clock.duration_since(*since) < SUSPECT_FOR);
        local.finished.retain(|_, at| {
            while at
                .front()
                .is_some_and(|t| clock.duration_since(*t) >= FINISHED_FOR)
            {
                at.pop_front();
            }
            !at.is_empty()
        });
        let mut scored: Vec<(u8, i64, u64, WorkerRecord)> = all
            .into_iter()
            .filter(|w| workers::is_live(w, now) && !local.suspect.contains_key(&w.report.id))
            .map(|w| {
                let id = &w.report.id;
                let idle = w
                    .report
                    .warm
                    .iter()
                    .find(|e| e.key == key)
                    .map_or(0, |e| e.idle);
                let k = (id.clone(), key.to_string());
                let mine_on_key = *local.running_key.get(&k).unwrap_or(&0);
                let finished = local.finished.get(&k).map_or(0, VecDeque::len) as u32;
                let warm = idle.max(finished) > mine_on_key;
                let mine = i64::from(*local.running.get(id).unwrap_or(&0));
                let free = w.report.memory_mb as i64 - w.report.memory_used_mb as i64;
                // Ties are broken by a random draw so that nodes do not all
                // pick the same worker.
                let draw = uuid::Uuid::new_v4().as_u128() as u64;
                (u8::from(!warm), -(free - mine * 128), draw, w)
            })
            .collect();
        scored.sort_by_key(|s| (s.0, s.1, s.2));
        scored.into_iter().map(|s| s.3).collect()
    }

    /// Runs one invocation on a worker: a warm one when there is one.
    /// Returns the worker's answer and its id.
    pub async fn run(
        &self,
        state: &StateHandle,
        waiters: &Waiters,
        spec: RunSpec,
        request_id: &str,
        payload: Vec<u8>,
    ) -> Result<(RunResponse, String), DispatchError> {
        let wake = waiters.of(Waiters::WORKERS);
        let give_up = Instant::now() + WORKER_WAIT;
        let candidates = loop {
            let changed = wake.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let all = state
                .read(|s| workers::list(s))
                .map_err(|e| DispatchError::NoWorker(format!("reading the registry: {e}")))?;
            let registered = all.len();
            let candidates = self.candidates(all, &spec.key, now_ms());
            if !candidates.is_empty() {
                break candidates;
            }
            // Woken when a heartbeat is applied here.
            if tokio::time::timeout_at(give_up.into(), changed)
                .await
                .is_err()
            {
                return Err(DispatchError::NoWorker(format!(
                    "{registered} registered, none live"
                )));
            }
        };
        let limit = Duration::from_secs(u64::from(spec.timeout_s)) + RUN_SLACK;
        let mut refused = Vec::new();
        for w in candidates {
            let id = w.report.id.clone();
            let channel = match self.worker_channel(&w) {
                Ok(c) => c,
                Err(e) => {
                    refused.push(format!("{id}: {e}"));
                    continue;
                }
            };
            let mut client = WorkerHostClient::new(channel)
                .max_decoding_message_size(MESSAGE_MAX)
                .max_encoding_message_size(MESSAGE_MAX);
            let mut request = tonic::Request::new(RunRequest {
                spec: Some(spec.clone()),
                request_id: request_id.to_string(),
                payload: payload.clone(),
            });
            request.set_timeout(limit);
            let running = Running::new(self, &id, &spec.key);
            // The deadline travels to the worker, but a worker that stopped
            // answering (paused, cut off) must not hold the call forever.
            let bounded = tokio::time::timeout(limit + Duration::from_secs(5), client.run(request));
            let answered = bounded.await.unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(
                    "the worker did not answer within the function's timeout",
                ))
            });
            match answered {
                Ok(answer) => {
                    drop(running);
                    self.local()
                        .finished
                        .entry((id.clone(), spec.key.clone()))
                        .or_default()
                        .push_back(Instant::now());
                    return Ok((answer.into_inner(), id));
                }
                Err(status) if is_connect_error(&status) => {
                    self.local().suspect.insert(id.clone(), Instant::now());
                    refused.push(format!("{id}: {}", status.message()));
                }
                // The worker could not get the code: nothing ran.
                Err(status)
                    if status.code() == tonic::Code::Unavailable
                        && status
                            .metadata()
                            .get(sluice_proto::ERROR_CODE_HEADER)
                            .is_some() =>
                {
                    return Err(DispatchError::NotRun(format!(
                        "worker {id} could not fetch the code: {}",
                        status.message()
                    )));
                }
                Err(status)
                    if status
                        .metadata()
                        .get(sluice_proto::ERROR_CODE_HEADER)
                        .is_some()
                        || status.code() == tonic::Code::InvalidArgument =>
                {
                    return Err(DispatchError::Refused(status));
                }
                Err(status) => {
                    // Not the first choice for the next try.
                    self.local().suspect.insert(id.clone(), Instant::now());
                    return Err(DispatchError::Lost {
                        worker: id,
                        why: format!("{:?}: {}", status.code(), status.message()),
                    });
                }
            }
        }
        Err(DispatchError::NoWorker(format!(
            "none could be reached: {}",
            refused.join("; ")
        )))
    }

    /// Asks every live worker for the logs of `function`; newest first, at
    /// most `limit`. Workers that do not answer are left out.
    pub async fn logs(
        &self,
        state: &StateHandle,
        function: &str,
        request_id: &str,
        limit: u32,
    ) -> Result<LogsResponse, String> {
        let all = state
            .read(|s| workers::list(s))
            .map_err(|e| format!("reading the registry: {e}"))?;
        let now = now_ms();
        let calls = all
            .into_iter()
            .filter(|w| workers::is_live(w, now))
            .filter_map(|w| self.worker_channel(&w).ok())
            .map(|channel| {
                let req = LogsRequest {
                    function_name: function.to_string(),
                    request_id: request_id.to_string(),
                    limit,
                };
                async move {
                    let mut client =
                        WorkerHostClient::new(channel).max_decoding_message_size(MESSAGE_MAX);
                    let mut request = tonic::Request::new(req);
                    request.set_timeout(Duration::from_secs(5));
                    client.logs(request).await.map(|r| r.into_inner().logs)
                }
            });
        let mut logs: Vec<_> = futures::future::join_all(calls)
            .await
            .into_iter()
            .filter_map(Result::ok)
            .flatten()
            .collect();
        logs.sort_by_key(|l| std::cmp::Reverse(l.started_ms));
        logs.truncate(limit as usize);
        // The answer must fit a reply: the newest entries that do.
        logs.truncate(sluice_worker::host::fitting(
            logs.iter().map(|l| &l.lines),
            12 << 20,
        ));
        Ok(LogsResponse { logs })
    }
}

/// Invocations running by function, for reserved concurrency. The leader's
/// count is the one that matters: synchronous invocations of a function
/// with reserved concurrency are forwarded to the leader, and the leader
/// runs the asynchronous ones. A new leader starts counting from zero, so
/// during a leadership change the cap may be exceeded by the invocations
/// still running under the old one.
#[derive(Default)]
pub struct Slots {
    running: Mutex<HashMap<String, u32>>,
}

/// One invocation counted against its function's reserved concurrency.
pub struct Slot<'a> {
    slots: &'a Slots,
    function: String,
}

impl Slots {
    /// Takes a slot of `function` when fewer than `limit` are taken.
    pub fn try_take(&self, function: &str, limit: u32) -> Option<Slot<'_>> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        // No entry is left behind for a refusal (a function throttled to 0).
        if *running.get(function).unwrap_or(&0) >= limit {
            return None;
        }
        *running.entry(function.to_string()).or_default() += 1;
        Some(Slot {
            slots: self,
            function: function.to_string(),
        })
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut running = self.slots.running.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = running.get_mut(&self.function) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                running.remove(&self.function);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workers::{Heartbeat, Warm};

    fn worker(id: &str, free_mb: u64, warm: &[(&str, u32)]) -> WorkerRecord {
        WorkerRecord {
            report: Heartbeat {
                id: id.into(),
                address: format!("{id}:1"),
                memory_mb: 10_000,
                memory_used_mb: 10_000 - free_mb,
                running: 0,
                warm: warm
                    .iter()
                    .map(|(k, idle)| Warm {
                        key: k.to_string(),
                        idle: *idle,
                        busy: 0,
                        starting: 0,
                    })
                    .collect(),
                owner: "principal/w".into(),
                tls_fingerprint: String::new(),
            },
            last_seen_ms: 1_000,
        }
    }

    fn dispatcher() -> Dispatcher {
        let security = Arc::new(NodeSecurity::for_tests(1));
        let nodes = Channels::of(&security);
        Dispatcher::new(security, nodes)
    }

    fn order(d: &Dispatcher, all: Vec<WorkerRecord>, key: &str, now: u64) -> Vec<String> {
        d.candidates(all, key, now)
            .into_iter()
            .map(|w| w.report.id)
            .collect()
    }

    #[test]
    fn warm_workers_first_then_the_most_memory_free() {
        let d = dispatcher();
        let all = vec![
            worker("roomy", 9_000, &[]),
            worker("warm", 1_000, &[("k", 1)]),
            worker("tight", 500, &[("other", 3)]),
        ];
        assert_eq!(
            order(&d, all.clone(), "k", 2_000),
            ["warm", "roomy", "tight"]
        );
        // The one idle environment is taken by an invocation this node sent:
        // the worker no longer counts as warm for the next.
        let _busy = Running::new(&d, "warm", "k");
        assert_eq!(
            order(&d, all.clone(), "k", 2_000),
            ["roomy", "warm", "tight"]
        );
        // Silent workers and suspected ones are left out.
        assert!(order(&d, all.clone(), "k", 1_000 + workers::LIVE_FOR_MS).is_empty());
        d.local().suspect.insert("roomy".into(), Instant::now());
        assert_eq!(order(&d, all, "k", 2_000), ["warm", "tight"]);
    }

    #[test]
    fn a_finished_invocation_counts_as_warm_for_a_while_the_oldest_leaving_first() {
        let d = dispatcher();
        let all = vec![worker("roomy", 9_000, &[]), worker("used", 1_000, &[])];
        assert_eq!(order(&d, all.clone(), "k", 2_000), ["roomy", "used"]);
        let now = Instant::now();
        let expired = now
            .checked_sub(FINISHED_FOR + Duration::from_secs(1))
            .expect("the monotonic clock runs longer than that");
        let key = ("used".to_string(), "k".to_string());
        d.local()
            .finished
            .insert(key.clone(), VecDeque::from([expired, now]));
        // One finished within the window: warm; the expired one is gone.
        assert_eq!(order(&d, all.clone(), "k", 2_000), ["used", "roomy"]);
        assert_eq!(d.local().finished[&key], VecDeque::from([now]));
        // Only expired ones: not warm, and nothing is kept for the key.
        d.local()
            .finished
            .insert(key.clone(), VecDeque::from([expired, expired]));
        assert_eq!(order(&d, all, "k", 2_000), ["roomy", "used"]);
        assert!(d.local().finished.is_empty());
    }

    #[test]
    fn slots_cap_running_invocations() {
        let slots = Slots::default();
        let a = slots.try_take("f", 2).unwrap();
        let _b = slots.try_take("f", 2).unwrap();
        assert!(slots.try_take("f", 2).is_none());
        assert!(slots.try_take("g", 1).is_some());
        drop(a);
        // A released slot is free again.
        assert!(slots.try_take("f", 2).is_some());
        assert!(slots.try_take("h", 0).is_none());
    }
}
