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
pub mod host_guard;
pub mod logs;
pub mod output;
pub mod poll_lease;
pub mod pool;
pub mod processing_result;
pub mod queue_poller;
pub mod runtime_api;
pub mod runtimes;
pub mod sandbox;
pub mod stream_poller;

use std::path::PathBuf;
use std::sync::Arc;

pub use cluster::ClusterLink;
pub use environment::{Environment, FunctionConfig, InvokeError, Invoked};
pub use pool::{unpacked_size, FunctionSpec, Held, Pool, PoolError, Ran, UNPACKED_MAX};
use sluice_proto::v1::worker_host_server::WorkerHostServer;
use sluice_security::tls::{Connector, ReloadingCert};
use sluice_security::Credentials;

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
    /// How the cluster is dialled (TLS, and whom to trust, or not).
    pub connector: Connector,
    /// What its calls to the cluster are signed with (a worker principal's
    /// access key; the node's credential for the in-process worker).
    pub credentials: Option<Credentials>,
    /// The certificate its `WorkerHost` serves TLS with, registered with
    /// the cluster so nodes accept no other; `None`: plain gRPC (clusters
    /// without TLS, and the in-process worker, which the node serves).
    pub host_tls: Option<Arc<ReloadingCert>>,
    /// Who functions run as.
    pub sandbox: sandbox::Sandbox,
    /// The managed runtimes offered to packages without a `bootstrap`.
    pub runtimes: runtimes::Runtimes,
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
    /// The secrets nodes sign their calls to this worker with (one per
    /// cluster key), once a heartbeat has brought them.
    pub host_secrets: Arc<std::sync::RwLock<Vec<String>>>,
}

impl Worker {
    /// A worker with `options`; nothing runs until [`Worker::spawn`].
    pub fn new(options: WorkerOptions) -> Result<Arc<Worker>, String> {
        validate_id(&options.id)?;
        let link = Arc::new(ClusterLink::new(
            &options.cluster,
            &options.connector,
            options.credentials.clone(),
        )?);
        Ok(Arc::new(Worker {
            pool: Arc::new(Pool::new(
                &options.dir,
                options.sandbox.clone(),
                options.runtimes.clone(),
            )),
            logs: Arc::default(),
            link,
            host_secrets: Arc::default(),
            options,
        }))
    }

    /// SHA-256 of the certificate `WorkerHost` serves, if it serves TLS.
    pub fn tls_fingerprint(&self) -> String {
        self.options
            .host_tls
            .as_ref()
            .map(|c| c.fingerprint())
            .unwrap_or_default()
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

pub use sluice_core::workers::validate_id;

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
    let accept = sluice_security::tls::Accept {
        tls: worker
            .options
            .host_tls
            .clone()
            .map(|cert| sluice_security::tls::server_config(cert, None)),
        handshake_timeout: std::time::Duration::from_secs(10),
        limits: Default::default(),
    };
    let incoming = sluice_security::tls::incoming(listener, accept);
    let served = tonic::transport::Server::builder()
        .layer(host_guard::HostGuardLayer::new(worker.host_secrets.clone()))
        .add_service(worker.service())
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    agent.abort();
    worker.leave().await;
    served.map_err(|e| format!("serving WorkerHost: {e}"))
}
