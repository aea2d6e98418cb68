//! Sluice workers: where functions run.
//!
//! A worker holds no Raft state (the spec's invariant 6). It runs each
//! function in an [`environment::Environment`]: a private directory with the
//! function's code and its own temporary space, a child process started
//! from the code's `bootstrap`, and the Lambda Runtime API
//! ([`runtime_api`]) served to that process on a loopback port. Because the
//! process speaks the same API as on AWS Lambda, a function built with the
//! official runtime interface clients (Python `awslambdaric`, Rust
//! `lambda_runtime`, ...) runs unmodified.
//!
//! A [`Worker`] joins a cluster by heartbeating to it ([`agent`]) and
//! serves the `WorkerHost` gRPC service ([`host`]) that broker nodes hand
//! invocations to. `sluice worker --cluster ADDRS` runs one as its own
//! process ([`serve`]); `sluice serve` runs one inside the node.

pub mod agent;
pub mod cgroup;
pub mod cluster;
pub mod environment;
pub mod host;
pub mod logs;
pub mod pool;
pub mod processing_result;
pub mod queue_poller;
pub mod runtime_api;
pub mod stream_poller;

use std::path::PathBuf;
use std::sync::Arc;

pub use cluster::ClusterLink;
pub use environment::{Environment, FunctionConfig, InvokeError, Invoked};
pub use pool::{unpacked_size, FunctionSpec, Held, Pool, PoolError, Ran, UNPACKED_MAX};
use sluice_proto::v1::worker_host_server::WorkerHostServer;

/// How a worker runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Unique among the cluster's workers.
    pub id: String,
    /// `host:port` where broker nodes reach its `WorkerHost` service.
    pub advertise: String,
    /// Broker nodes to heartbeat to (`host:port`).
    pub cluster: Vec<String>,
    /// Where code and environments live.
    pub dir: PathBuf,
    /// Memory offered to functions, MB.
    pub memory_mb: u64,
}

/// A worker: its environments, its logs and its link to the cluster.
pub struct Worker {
    /// How it runs.
    pub options: WorkerOptions,
    /// Its execution environments.
    pub pool: Arc<Pool>,
    /// Its invocations' logs.
    pub logs: Arc<logs::Logs>,
    /// The cluster it belongs to.
    pub link: Arc<ClusterLink>,
}

impl Worker {
    /// A worker with `options`; nothing runs until [`Worker::spawn`].
    pub fn new(options: WorkerOptions) -> Result<Arc<Worker>, String> {
        validate_id(&options.id)?;
        let link = Arc::new(ClusterLink::new(&options.cluster)?);
        Ok(Arc::new(Worker {
            pool: Arc::new(Pool::new(&options.dir)),
            logs: Arc::default(),
            link,
            options,
        }))
    }

    /// The `WorkerHost` service to serve.
    pub fn service(&self) -> WorkerHostServer<host::Host> {
        WorkerHostServer::new(host::Host {
            worker_id: self.options.id.clone(),
            pool: self.pool.clone(),
            logs: self.logs.clone(),
            link: self.link.clone(),
        })
        .max_decoding_message_size(cluster::MESSAGE_MAX)
        .max_encoding_message_size(cluster::MESSAGE_MAX)
    }

    /// Starts heartbeating (and reaping idle environments).
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(agent::run(self.clone()))
    }

    /// Tells the cluster the worker is going away.
    pub async fn leave(&self) {
        if let Err(e) = self.link.leave(&self.options.id).await {
            tracing::warn!(error = %e, "could not deregister the worker");
        }
    }
}

/// Checks a worker id: 1-128 characters of `[A-Za-z0-9._-]`.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty()
        || id.len() > 128
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
    {
        return Err(format!(
            "worker id {id:?}: must be 1-128 characters of letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Three quarters of the machine's memory, MB: what a worker offers by
/// default.
pub fn default_memory_mb() -> u64 {
    let total_kb = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .unwrap_or(4 << 20);
    total_kb * 3 / 4 / 1024
}

/// Runs a worker as its own process: serves `WorkerHost` on `listener` and
/// heartbeats until `shutdown` completes, then deregisters.
pub async fn serve(
    options: WorkerOptions,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let worker = Worker::new(options)?;
    let agent = worker.spawn();
    tracing::info!(
        worker = %worker.options.id,
        advertise = %worker.options.advertise,
        cluster = ?worker.options.cluster,
        memory_mb = worker.options.memory_mb,
        "worker started"
    );
    let incoming = tokio_stream_listener(listener);
    let served = tonic::transport::Server::builder()
        .add_service(worker.service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    agent.abort();
    worker.leave().await;
    served.map_err(|e| format!("serving WorkerHost: {e}"))
}

fn tokio_stream_listener(
    listener: tokio::net::TcpListener,
) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}
