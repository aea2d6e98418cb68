//! Request routing: any node accepts any call.
//!
//! Writes and linearizable reads run on the leader. On the leader, a write is
//! stamped with the leader's clock and proposed to Raft; a read first confirms
//! leadership with a quorum (so a deposed leader cannot serve stale data).
//! A follower forwards the call to the leader over the cluster's own gRPC
//! channel (`sluice.internal.v1.Node`). While no leader is known (an
//! election), the call waits for one, at most `leader_wait`, then fails with
//! [`RouteError::NoLeader`].
//!
//! A node resends a write only when it knows the write was not appended (the
//! node it reached did not lead, or could not be connected to). When the
//! outcome is unknown (the leader changed, the connection broke, the leader
//! stopped or timed out mid-write) the call answers `UNAVAILABLE` with a code
//! saying so, and the client decides: a client that retries gets at least
//! once, the commands are written to make that harmless where the API
//! promises it (CreateQueue is idempotent, FIFO queues deduplicate).

use std::future::Future;
use std::time::{Duration, Instant};

use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};

use crate::raft::proposer::{BatchError, Limits, Proposer, Submitted};
use sluice_proto::internal::node_client::NodeClient;
use sluice_proto::internal::Payload;
use sluice_security::signer::SignedChannel;

use crate::command::{Command, CommandResult, Proposal, Query, QueryResponse};
use crate::raft::network::Channels;
use crate::raft::state_machine::StateHandle;
use crate::raft::{NodeId, Raft, RaftMetrics};
use crate::store::{codec, StoreError};

pub use sluice_proto::{ERROR_CODE_HEADER, FORWARDED_HEADER};

/// Why a call could not be routed to a leader, or failed there.
#[derive(Debug, thiserror::Error)]
pub enum RouteError {
    /// No leader was known within the wait.
    #[error("no leader was elected within {waited_ms} ms; retry shortly")]
    NoLeader {
        /// How long the call waited.
        waited_ms: u64,
    },
    /// This node does not belong to a cluster (yet).
    #[error(
        "node {node_id} is not a member of a cluster yet: add it with `sluicectl cluster add-learner`, or call a member"
    )]
    NotMember {
        /// This node.
        node_id: NodeId,
    },
    /// A call forwarded to this node found it no longer leads.
    #[error("node {node_id} is not the leader")]
    NotLeader {
        /// This node.
        node_id: NodeId,
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// The leader changed while a forwarded write was in flight to the old
    /// one, which may or may not have appended it.
    #[error("the leader changed (node {from} to node {to}) while the request was in flight; it may or may not have been applied; retry")]
    LeaderChanged {
        /// The leader the request went to.
        from: NodeId,
        /// The leader now known.
        to: NodeId,
    },
    /// The leader did not answer in time; the write may or may not apply.
    #[error("the leader did not answer within the deadline; the request may or may not have been applied")]
    LeaderTimeout,
    /// The leader could not commit (or confirm its leadership) in time,
    /// typically because it cannot reach a quorum.
    #[error("no quorum confirmed the request within {waited_ms} ms; retry shortly (a write may still be applied)")]
    NoQuorum {
        /// How long the call waited.
        waited_ms: u64,
    },
    /// The node is stopping.
    #[error("node is shutting down")]
    ShuttingDown,
    /// The leader's disk has less free space than its reserve.
    #[error("disk full: the leader's data directory {dir} has {free} bytes free, below its reserve of {reserve}; writes are refused until space is freed (reads go on)")]
    DiskFull {
        /// The data directory.
        dir: String,
        /// Free bytes last seen.
        free: u64,
        /// The reserve, bytes.
        reserve: u64,
    },
    /// The leader holds as many writes waiting for Raft as it may.
    #[error(
        "the leader has {queued} writes waiting to be proposed, as many as it holds; retry shortly"
    )]
    Overloaded {
        /// How many writes wait.
        queued: usize,
    },
    /// The node stopped after a write was handed to Raft: it may have been
    /// appended and may still commit.
    #[error("the node stopped while the request was in flight; it may or may not have been applied; retry")]
    Abandoned,
    /// The connection to the leader broke while a forwarded write was in
    /// flight: the leader may have appended it.
    #[error("the connection to the leader broke while the request was in flight ({reason}); it may or may not have been applied; retry")]
    LeaderLost {
        /// What the transport said.
        reason: String,
    },
    /// The leader answered with an error, passed on as it is.
    #[error("{}", .0.message())]
    Remote(tonic::Status),
    /// This node's storage failed.
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    /// Anything else: a bug or a protocol mismatch between nodes.
    #[error("{0}")]
    Internal(String),
}

/// The outcome of one attempt to run a routed operation.
pub enum Hop<T> {
    /// Finished.
    Done(T),
    /// Try again once the leader may have changed.
    Retry(RouteError),
    /// Give up with this error.
    Fail(RouteError),
}

/// An operation that must run on the leader.
pub trait Routed {
    /// What it returns.
    type Output;

    /// Runs it here; called only while this node believes it leads.
    fn here(&self, router: &Router) -> impl Future<Output = Hop<Self::Output>> + Send;

    /// How long one attempt may take when `remaining` is left of the call's
    /// wait for a leader. Commands and queries take no longer than that;
    /// slow administrative operations say how long they need.
    fn attempt_limit(&self, remaining: Duration) -> Duration {
        remaining
    }

    /// Forwards it to the leader over `channel`, giving the leader `timeout`.
    fn forward(
        &self,
        channel: SignedChannel,
        timeout: Duration,
    ) -> impl Future<Output = Hop<Self::Output>> + Send;

    /// What to do when a new leader `to` is known while the call is still
    /// forwarded to `from` (paused, or cut off and not yet aware): `Some`
    /// abandons the forward for that outcome, `None` waits for the forward
    /// to finish. By default the call goes to the new leader.
    fn leader_changed(&self, from: NodeId, to: NodeId) -> Option<Hop<Self::Output>> {
        Some(Hop::Retry(RouteError::LeaderChanged { from, to }))
    }
}

/// Resolves with the new leader once this node knows of a leader other
/// than `leader`; never while it knows of none (an election in progress
/// says nothing of the request's fate at `leader`).
async fn deposed(mut metrics: tokio::sync::watch::Receiver<RaftMetrics>, leader: NodeId) -> NodeId {
    loop {
        if let Some(l) = metrics.borrow_and_update().current_leader {
            if l != leader {
                return l;
            }
        }
        if metrics.changed().await.is_err() {
            // The node is stopping: the forward's own outcome decides.
            return std::future::pending().await;
        }
    }
}

/// Classifies an error status from a forwarded call.
pub fn hop_from_status<T>(status: tonic::Status) -> Hop<T> {
    let code = status
        .metadata()
        .get(ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if matches!(
        code,
        "NotLeader" | "NoLeader" | "ShuttingDown" | "NotClusterMember"
    ) {
        // The node we reached does not lead (any more): find the one that does.
        Hop::Retry(RouteError::Remote(status))
    } else if sluice_proto::is_retryable(&status) && code.is_empty() {
        // The leader was unreachable or the connection broke mid-call: it
        // may be gone. (Writes do not come here when the request may have
        // reached it: see `in_flight_when_lost`.)
        Hop::Retry(RouteError::Remote(status))
    } else if status.code() == tonic::Code::DeadlineExceeded && code.is_empty() {
        Hop::Fail(RouteError::LeaderTimeout)
    } else {
        Hop::Fail(RouteError::Remote(status))
    }
}

impl From<BatchError> for RouteError {
    fn from(e: BatchError) -> Self {
        match e {
            BatchError::Overloaded { queued } => RouteError::Overloaded { queued },
            BatchError::NotLeader { node_id, leader } => RouteError::NotLeader { node_id, leader },
            BatchError::ShuttingDown => RouteError::ShuttingDown,
            BatchError::Abandoned => RouteError::Abandoned,
            BatchError::Internal(m) => RouteError::Internal(m),
        }
    }
}

/// Routes calls to the leader. Cheap to clone.
#[derive(Clone)]
pub struct Router {
    inner: std::sync::Arc<Inner>,
}

struct Inner {
    id: NodeId,
    raft: Raft,
    proposer: Proposer,
    state: StateHandle,
    bodies: crate::raft::bodies::Bodies,
    channels: Channels,
    leader_wait: Duration,
    paused: tokio::sync::watch::Sender<bool>,
    disk: std::sync::Arc<crate::disk::DiskGuard>,
}

/// Whether `id` is a voter or learner in the membership `metrics` show.
pub fn is_member(metrics: &RaftMetrics, id: NodeId) -> bool {
    metrics
        .membership_config
        .membership()
        .get_node(&id)
        .is_some()
}

impl Router {
    /// A router for node `id`; `bodies` reads the message bodies a receive
    /// on this node returns.
    pub fn new(
        id: NodeId,
        raft: Raft,
        state: StateHandle,
        bodies: crate::raft::bodies::Bodies,
        channels: Channels,
        leader_wait: Duration,
        disk: std::sync::Arc<crate::disk::DiskGuard>,
    ) -> Self {
        let proposer = {
            let raft = raft.clone();
            Proposer::start(Limits::default(), move |request| {
                submit(raft.clone(), id, request)
            })
        };
        Router {
            inner: std::sync::Arc::new(Inner {
                id,
                raft,
                proposer,
                state,
                bodies,
                channels,
                leader_wait,
                paused: tokio::sync::watch::channel(false).0,
                disk,
            }),
        }
    }

    /// Reads message bodies left in the log.
    pub fn bodies(&self) -> &crate::raft::bodies::Bodies {
        &self.inner.bodies
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// The local Raft instance.
    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    /// The local applied state.
    pub fn state(&self) -> &StateHandle {
        &self.inner.state
    }

    /// The channel pool.
    pub fn channels(&self) -> &Channels {
        &self.inner.channels
    }

    /// How long a call waits for a leader.
    pub fn leader_wait(&self) -> Duration {
        self.inner.leader_wait
    }

    /// Holds new writes on this node (while it hands leadership over) until
    /// the returned guard is dropped.
    pub fn pause_writes(&self) -> PauseGuard {
        self.inner.paused.send_replace(true);
        PauseGuard {
            router: self.clone(),
        }
    }

    /// The current leader's id and address, when one is known.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.inner.raft.metrics().borrow().clone();
        let l = m.current_leader?;
        let addr = m.membership_config.membership().get_node(&l)?.addr.clone();
        Some((l, addr))
    }

    /// Runs `op` on the leader, wherever it is.
    pub async fn route<R: Routed>(&self, op: &R) -> Result<R::Output, RouteError> {
        let started = Instant::now();
        let deadline = started + self.inner.leader_wait;
        let mut metrics = self.inner.raft.metrics();
        loop {
            let (leader, leader_addr, member) = {
                let m = metrics.borrow_and_update();
                let leader = m.current_leader;
                let addr = leader.and_then(|l| {
                    m.membership_config
                        .membership()
                        .get_node(&l)
                        .map(|n| n.addr.clone())
                });
                (leader, addr, is_member(&m, self.inner.id))
            };
            if !member {
                return Err(RouteError::NotMember {
                    node_id: self.inner.id,
                });
            }
            // Every attempt is bounded by what is left of the call's wait.
            let remaining = op.attempt_limit(
                deadline
                    .saturating_duration_since(Instant::now())
                    .max(MIN_ATTEMPT),
            );
            let attempt = async {
                match (leader, leader_addr) {
                    (Some(l), _) if l == self.inner.id => op.here(self).await,
                    (Some(l), Some(addr)) => match self.inner.channels.get(&addr) {
                        // A paused or cut-off leader holds a forward until
                        // its deadline; a newly elected one frees it.
                        Ok(channel) => {
                            let forward = op.forward(channel, remaining);
                            tokio::pin!(forward);
                            tokio::select! {
                                hop = &mut forward => hop,
                                to = deposed(self.inner.raft.metrics(), l) => {
                                    match op.leader_changed(l, to) {
                                        Some(hop) => hop,
                                        None => forward.await,
                                    }
                                }
                            }
                        }
                        Err(e) => Hop::Fail(RouteError::Internal(e)),
                    },
                    _ => Hop::Retry(RouteError::NoLeader { waited_ms: 0 }),
                }
            };
            let Ok(hop) = tokio::time::timeout(remaining, attempt).await else {
                return Err(RouteError::NoQuorum {
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            };
            match hop {
                Hop::Done(v) => return Ok(v),
                Hop::Fail(e) => return Err(e),
                Hop::Retry(reason) => {
                    tracing::debug!(%reason, "retrying routed call");
                }
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(RouteError::NoLeader {
                    waited_ms: started.elapsed().as_millis() as u64,
                });
            }
            // Wake on a leadership change, or after a short back-off when the
            // known leader could not be reached.
            let backoff = Duration::from_millis(50).min(deadline - now);
            tokio::select! {
                _ = metrics.changed() => {}
                _ = tokio::time::sleep(backoff) => {}
            }
        }
    }

    /// Proposes a write, wherever the leader is.
    pub async fn write(&self, command: Command) -> Result<CommandResult, RouteError> {
        self.route(&Write(command)).await
    }

    /// Answers a query linearizably, on the leader.
    pub async fn read(&self, query: Query) -> Result<QueryResponse, RouteError> {
        self.route(&Read(query)).await
    }

    /// Answers a query from this node's applied state, which may lag the
    /// leader's.
    pub fn read_local(&self, query: &Query) -> Result<QueryResponse, RouteError> {
        Ok(self.inner.state.query(query)?)
    }

    /// Runs a write forwarded by a follower: here if this node leads, else
    /// [`RouteError::NotLeader`].
    pub async fn write_as_leader(&self, command: Command) -> Result<CommandResult, RouteError> {
        self.as_leader(&Write(command)).await
    }

    /// Runs a read forwarded by a follower.
    pub async fn read_as_leader(&self, query: Query) -> Result<QueryResponse, RouteError> {
        self.as_leader(&Read(query)).await
    }

    /// Runs `op` here if this node leads, else fails with
    /// [`RouteError::NotLeader`]; for calls a follower forwarded.
    pub async fn as_leader<R: Routed>(&self, op: &R) -> Result<R::Output, RouteError> {
        let leader = self.inner.raft.metrics().borrow().current_leader;
        if leader != Some(self.inner.id) {
            return Err(RouteError::NotLeader {
                node_id: self.inner.id,
                leader,
            });
        }
        let started = Instant::now();
        let limit = op.attempt_limit(self.inner.leader_wait);
        match tokio::time::timeout(limit, op.here(self)).await {
            Ok(Hop::Done(v)) => Ok(v),
            Ok(Hop::Retry(e) | Hop::Fail(e)) => Err(e),
            Err(_) => Err(RouteError::NoQuorum {
                waited_ms: started.elapsed().as_millis() as u64,
            }),
        }
    }

    async fn wait_unpaused(&self) {
        let mut rx = self.inner.paused.subscribe();
        let limit = tokio::time::sleep(self.inner.leader_wait);
        tokio::pin!(limit);
        while *rx.borrow_and_update() {
            tokio::select! {
                r = rx.changed() => if r.is_err() { return },
                _ = &mut limit => return,
            }
        }
    }
}

/// Resumes writes when dropped.
pub struct PauseGuard {
    router: Router,
}

impl Drop for PauseGuard {
    fn drop(&mut self) {
        self.router.inner.paused.send_replace(false);
    }
}

/// Hands a batch to Raft (in call order) and returns a future of its results.
async fn submit(raft: Raft, me: NodeId, request: Proposal) -> Submitted {
    match raft
        .client_write_ff(crate::raft::payload::Payload::new(request))
        .await
    {
        Err(_) => Box::pin(std::future::ready(Err(BatchError::ShuttingDown))),
        Ok(rx) => Box::pin(async move {
            match rx.await {
                Ok(Ok(reply)) => Ok(reply.data),
                Ok(Err(ClientWriteError::ForwardToLeader(f))) => Err(BatchError::NotLeader {
                    node_id: me,
                    leader: f.leader_id,
                }),
                Ok(Err(ClientWriteError::ChangeMembershipError(e))) => {
                    Err(BatchError::Internal(e.to_string()))
                }
                Err(_) => Err(BatchError::Abandoned),
            }
        }),
    }
}

/// The least time one attempt gets, even when the call's wait is spent.
const MIN_ATTEMPT: Duration = Duration::from_millis(100);

fn forward_request(data: Vec<u8>, timeout: Duration) -> tonic::Request<Payload> {
    let mut request = tonic::Request::new(Payload { data });
    request.set_timeout(timeout);
    request
}

/// The hop of a forwarded call's reply: `what` decoded from its payload.
fn decoded<T: serde::de::DeserializeOwned>(what: &str, reply: tonic::Response<Payload>) -> Hop<T> {
    match codec::decode_message(what, &reply.into_inner().data) {
        Ok(r) => Hop::Done(r),
        Err(e) => Hop::Fail(RouteError::Internal(e)),
    }
}

struct Write(Command);

impl Routed for Write {
    type Output = CommandResult;

    async fn here(&self, router: &Router) -> Hop<CommandResult> {
        router.wait_unpaused().await;
        let disk = &router.inner.disk;
        if let Some(free) = disk.full() {
            return Hop::Fail(RouteError::DiskFull {
                dir: disk.dir().display().to_string(),
                free,
                reserve: disk.reserve(),
            });
        }
        match router.inner.proposer.propose(self.0.clone()).await {
            // Bodies left in the log are read here, on the leader that
            // applied the receive, before the answer goes anywhere.
            Ok(response) => match router.inner.bodies.serve(response).await {
                Ok(served) => Hop::Done(served),
                Err(e) => Hop::Fail(RouteError::Internal(e)),
            },
            Err(e @ BatchError::NotLeader { .. }) => Hop::Retry(e.into()),
            Err(e) => Hop::Fail(e.into()),
        }
    }

    /// The old leader may have appended the write and may still commit it
    /// (a new leader keeps what a majority holds): the outcome is unknown,
    /// and resending it here could apply it twice. The caller decides.
    fn leader_changed(&self, from: NodeId, to: NodeId) -> Option<Hop<CommandResult>> {
        Some(Hop::Fail(RouteError::LeaderChanged { from, to }))
    }

    async fn forward(&self, channel: SignedChannel, timeout: Duration) -> Hop<CommandResult> {
        let request = forward_request(codec::encode(&self.0), timeout);
        match NodeClient::new(channel).propose(request).await {
            Ok(reply) => decoded("forwarded write reply", reply),
            Err(status) if in_flight_when_lost(&status) => Hop::Fail(RouteError::LeaderLost {
                reason: status.message().to_string(),
            }),
            Err(status) => hop_from_status(status),
        }
    }
}

/// Whether a forwarded call failed in the transport after it may have
/// reached the leader: any transport failure (no broker error code) other
/// than failing to connect, which proves the request was never sent.
/// Retrying such a write could apply it twice, so it is answered as of
/// unknown outcome instead; an unrecognised transport message errs on that
/// side.
fn in_flight_when_lost(status: &tonic::Status) -> bool {
    let from_broker = status.metadata().get(ERROR_CODE_HEADER).is_some();
    !from_broker && !sluice_proto::never_sent(status) && sluice_proto::is_retryable(status)
}

struct Read(Query);

impl Routed for Read {
    type Output = QueryResponse;

    async fn here(&self, router: &Router) -> Hop<QueryResponse> {
        let raft = &router.inner.raft;
        match raft.get_read_log_id().await {
            Ok((read_log_id, _)) => {
                // openraft's read index is the commit index this leader
                // knows. A leader restarted within its own term (restored
                // from its committed vote) knows only the index saved with
                // that vote, possibly far behind, while its state was rebuilt
                // from a snapshot. Its log holds every committed entry, so
                // the read waits until all of it, as of now, is applied.
                let last_log = raft.metrics().borrow().last_log_index;
                let read_index = read_log_id.map(|l| l.index).max(last_log);
                let applied = raft
                    .wait(Some(router.inner.leader_wait))
                    .applied_index_at_least(read_index, "linearizable read")
                    .await;
                if applied.is_err() {
                    return Hop::Retry(RouteError::NoLeader {
                        waited_ms: router.inner.leader_wait.as_millis() as u64,
                    });
                }
                match router.inner.state.query(&self.0) {
                    Ok(r) => Hop::Done(r),
                    Err(e) => Hop::Fail(RouteError::Store(e)),
                }
            }
            Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                Hop::Retry(RouteError::NotLeader {
                    node_id: router.inner.id,
                    leader: f.leader_id,
                })
            }
            // Leadership could not be confirmed with a quorum: this node may
            // be a deposed leader behind a partition.
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_))) => {
                Hop::Retry(RouteError::NoLeader { waited_ms: 0 })
            }
            Err(RaftError::Fatal(_)) => Hop::Fail(RouteError::ShuttingDown),
        }
    }

    async fn forward(&self, channel: SignedChannel, timeout: Duration) -> Hop<QueryResponse> {
        let request = forward_request(codec::encode(&self.0), timeout);
        match NodeClient::new(channel).read(request).await {
            Ok(reply) => decoded("forwarded read reply", reply),
            Err(status) => hop_from_status(status),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from_broker(code: tonic::Code, error_code: &'static str) -> tonic::Status {
        let mut s = tonic::Status::new(code, "answered by a node");
        s.metadata_mut().insert(
            ERROR_CODE_HEADER,
            tonic::metadata::MetadataValue::from_static(error_code),
        );
        s
    }

    #[test]
    fn a_write_is_resent_only_when_it_cannot_have_reached_the_leader() {
        use tonic::{Code, Status};
        // Never sent: connecting failed.
        assert!(!in_flight_when_lost(&Status::unavailable(
            "tcp connect error"
        )));
        // Sent, then the connection broke or the call was cut off.
        assert!(in_flight_when_lost(&Status::unavailable(
            "error reading a body from connection"
        )));
        assert!(in_flight_when_lost(&Status::unknown("h2 protocol error")));
        assert!(in_flight_when_lost(&Status::cancelled("Timeout expired")));
        // The broker's own answers are classified by their code instead.
        assert!(!in_flight_when_lost(&from_broker(
            Code::Unavailable,
            "NotLeader"
        )));
        assert!(!in_flight_when_lost(&from_broker(
            Code::Unavailable,
            "NoQuorum"
        )));
        assert!(!in_flight_when_lost(&Status::invalid_argument("bad")));
        assert!(matches!(
            hop_from_status::<()>(from_broker(Code::Unavailable, "NotLeader")),
            Hop::Retry(_)
        ));
        assert!(matches!(
            hop_from_status::<()>(from_broker(Code::Unavailable, "Abandoned")),
            Hop::Fail(_)
        ));
    }

    /// What the transport really answers when the leader's port is closed
    /// (its process was killed): a refusal, so nothing was sent and the
    /// write can be retried on the next leader. Found by the event-bus
    /// test, where a killed leader turned two thirds of the writes into
    /// unknown outcomes: tonic's message is now the system's, not hyper's
    /// "tcp connect error".
    #[tokio::test]
    async fn a_refused_connection_is_never_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let channel = tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_lazy();
        let status = NodeClient::new(channel)
            .propose(forward_request(Vec::new(), Duration::from_secs(1)))
            .await
            .expect_err("nothing listens");
        assert!(sluice_proto::never_sent(&status), "{status:?}");
        assert!(!in_flight_when_lost(&status), "{status:?}");
    }
}
