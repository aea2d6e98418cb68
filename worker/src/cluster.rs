//! The worker's connection to the cluster: any broker node answers, so
//! calls go to the last node that answered and move on to the next one
//! when it does not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_proto::v1::workers_client::WorkersClient;
use sluice_proto::v1::{GetCodeRequest, HeartbeatRequest, HeartbeatResponse, LeaveRequest};
use tonic::transport::{Channel, Endpoint};

/// Largest message exchanged with the cluster: a code package.
pub const MESSAGE_MAX: usize = 16 << 20;

/// Broker nodes to call, tried in turn.
pub struct ClusterLink {
    nodes: Vec<(String, Channel)>,
    current: AtomicUsize,
}

impl ClusterLink {
    /// A link to the nodes at `addrs` (`host:port`); connections are made
    /// on first use.
    pub fn new(addrs: &[String]) -> Result<ClusterLink, String> {
        if addrs.is_empty() {
            return Err("no cluster address given".into());
        }
        let nodes = addrs
            .iter()
            .map(|a| {
                let endpoint = Endpoint::from_shared(format!("http://{a}"))
                    .map_err(|e| format!("bad cluster address {a:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    // A node that accepted the connection and went silent
                    // must not hold a fetch (and the unpack lock) forever.
                    .timeout(Duration::from_secs(60))
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true)
                    .tcp_nodelay(true);
                Ok((a.clone(), endpoint.connect_lazy()))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ClusterLink {
            nodes,
            current: AtomicUsize::new(0),
        })
    }

    fn client(&self, i: usize) -> WorkersClient<Channel> {
        WorkersClient::new(self.nodes[i % self.nodes.len()].1.clone())
            .max_decoding_message_size(MESSAGE_MAX)
    }

    /// Runs `call` on the nodes in turn, from the last one that answered,
    /// until one answers; the last error when none does.
    async fn each<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(WorkersClient<Channel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = tonic::Status::unavailable("no cluster node answered");
        for k in 0..self.nodes.len() {
            let i = (start + k) % self.nodes.len();
            match call(self.client(i)).await {
                Ok(v) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) => {
                    tracing::debug!(node = %self.nodes[i].0, error = %e, "cluster node did not answer");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(
        &self,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, tonic::Status> {
        self.each(|mut c| {
            let req = req.clone();
            async move { c.heartbeat(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Deregisters the worker.
    pub async fn leave(&self, worker_id: &str) -> Result<(), tonic::Status> {
        self.each(|mut c| {
            let req = LeaveRequest {
                worker_id: worker_id.to_string(),
            };
            async move { c.leave(req).await.map(|_| ()) }
        })
        .await
    }

    /// Fetches a code package.
    pub async fn code(&self, sha256: &str) -> Result<Vec<u8>, String> {
        self.each(|mut c| {
            let req = GetCodeRequest {
                sha256: sha256.to_string(),
            };
            async move { c.get_code(req).await.map(|r| r.into_inner().zip) }
        })
        .await
        .map_err(|e| format!("fetching the code from the cluster: {}", e.message()))
    }
}
