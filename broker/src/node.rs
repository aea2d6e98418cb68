//! A running broker node: storage, Raft, the gRPC server, bootstrap, and an
//! orderly shutdown that hands leadership over first.
//!
//! Data directory layout:
//!
//! ```text
//! {data-dir}/log/         the Raft log segments and vote (durable: fdatasync)
//! {data-dir}/snapshots/   the current snapshot file (durable: fsync)
//! {data-dir}/db/          the state machine in sled: a cache of snapshot + log
//! ```

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::api::{self, Context};
use crate::bootstrap;
use crate::config::NodeConfig;
use crate::metrics::{self, Exporter};
use crate::raft::group_commit::GroupCommit;
use crate::raft::log_store::{self, LogStore};
use crate::raft::network::{Channels, Network};
use crate::raft::service::{RaftService, VoteGuard};
use crate::raft::snapshot::SnapshotDir;
use crate::raft::state_machine::StateMachineStore;
use crate::raft::{self, transfer, Raft};
use crate::router::Router;
use crate::store::log::{LogFiles, MetaFile};
use crate::store::{Db, DbOptions, StoreError};
use crate::waiters::Waiters;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory or its contents could not be used.
    #[error("--data-dir {path}: {reason}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// The listen address could not be bound.
    #[error("--listen {addr}: {reason}")]
    Listen {
        /// The address.
        addr: String,
        /// What went wrong.
        reason: String,
    },
    /// Raft refused the configuration or failed to start.
    #[error("raft: {0}")]
    Raft(String),
    /// The in-process worker could not be set up.
    #[error("in-process worker: {0}")]
    Worker(String),
}

/// Opens the state machine's database. It only caches what the snapshot and
/// the log hold, so one the engine cannot open (sled 0.34 has reports of
/// corruption after a killed process) is moved aside and rebuilt from them.
fn open_state_db(path: &std::path::Path, cache_capacity: u64) -> Result<Db, StoreError> {
    let options = DbOptions { cache_capacity };
    match Db::open(path, &options) {
        Ok(db) => Ok(db),
        Err(e) if path.exists() => {
            let aside = path.with_extension(format!(
                "broken-{}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0)
            ));
            tracing::error!(
                error = %e,
                moved_to = %aside.display(),
                "the state machine database does not open; rebuilding it from the snapshot and the log"
            );
            std::fs::rename(path, &aside).map_err(|e| StoreError::io("moving aside", path, e))?;
            Db::open(path, &options)
        }
        Err(e) => Err(e),
    }
}

/// A started node.
pub struct RunningNode {
    config: NodeConfig,
    raft: Raft,
    router: Router,
    db: Db,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    stop_server: Option<oneshot::Sender<()>>,
    bootstrap: JoinHandle<()>,
    housekeeper: JoinHandle<()>,
    deliverer: JoinHandle<()>,
    invoker: JoinHandle<()>,
    worker_agent: Option<JoinHandle<()>>,
    lease_manager: JoinHandle<()>,
    membership: Option<JoinHandle<()>>,
    worker: Option<Arc<sluice_worker::Worker>>,
    local_addr: std::net::SocketAddr,
    /// Held for the node's life: no other process writes its files.
    _dir_lock: crate::store::lock::DirLock,
}

impl RunningNode {
    /// Opens the data directory, starts Raft and the server, and begins
    /// forming or joining the cluster.
    pub async fn start(config: NodeConfig) -> Result<RunningNode, StartError> {
        let data_err = |reason: String| StartError::DataDir {
            path: config.data_dir.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(&config.data_dir).map_err(|e| data_err(e.to_string()))?;
        let dir_lock = crate::store::lock::DirLock::acquire(&config.data_dir).map_err(data_err)?;
        let log_dir = config.data_dir.join("log");
        let log = Arc::new(
            LogFiles::open(&log_dir, log_store::SEGMENT_BYTES)
                .map_err(|e| data_err(format!("log: {e}")))?,
        );
        let flusher = {
            let log = log.clone();
            GroupCommit::start("sluice-log-flush", move || {
                log.sync().map_err(|e| e.to_string())
            })
        };
        let log_store = LogStore::open(log, MetaFile::new(&log_dir.join("meta")), flusher)
            .map_err(|e| data_err(format!("log: {e}")))?;
        let db = open_state_db(&config.data_dir.join("db"), config.cache_capacity)
            .map_err(|e| data_err(e.to_string()))?;
        let snapshots = Arc::new(
            SnapshotDir::open(&config.data_dir.join("snapshots"))
                .map_err(|e| data_err(format!("snapshots: {e}")))?,
        );
        let waiters = Arc::new(Waiters::default());
        let state_machine =
            StateMachineStore::open(&db, snapshots.clone(), config.node_id, waiters.clone())
                .await
                .map_err(|e| data_err(e.to_string()))?;
        let state = state_machine.handle();

        let raft_config = raft::config("sluice", &config.timing, &config.compaction)
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let channels = Channels::default();
        let raft = Raft::new(
            config.node_id,
            Arc::new(raft_config),
            Network::new(channels.clone()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;

        let exporter = Exporter::global();
        metrics::spawn_raft_gauges(raft.clone());

        let router = Router::new(
            config.node_id,
            raft.clone(),
            state,
            channels.clone(),
            config.leader_wait,
        );
        let ctx = Context {
            router: router.clone(),
            identity: config.identity.clone(),
            advertise: config.advertise.clone(),
            timing: config.timing.clone(),
            waiters: waiters.clone(),
            dispatcher: Arc::default(),
            slots: Arc::default(),
            worker: None,
        };
        // The in-process worker registers through this node's own address,
        // like any other worker.
        let worker = if config.in_process_worker {
            let options = sluice_worker::WorkerOptions {
                id: format!("node-{}", config.node_id),
                advertise: config.advertise.clone(),
                cluster: vec![config.advertise.clone()],
                dir: config.data_dir.join("worker"),
                memory_mb: sluice_worker::default_memory_mb(),
            };
            Some(sluice_worker::Worker::new(options).map_err(StartError::Worker)?)
        } else {
            None
        };
        let ctx = Context { worker, ..ctx };
        let guard = Arc::new(VoteGuard::default());
        let raft_service = RaftService::new(raft.clone(), snapshots, guard.clone());

        let listener = TcpListener::bind(config.listen)
            .await
            .map_err(|e| StartError::Listen {
                addr: config.listen.to_string(),
                reason: e.to_string(),
            })?;
        let local_addr = listener.local_addr().map_err(|e| StartError::Listen {
            addr: config.listen.to_string(),
            reason: e.to_string(),
        })?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let server = tokio::spawn(api::serve(
            listener,
            ctx.clone(),
            raft_service,
            exporter,
            async {
                let _ = stop_rx.await;
            },
        ));
        tracing::info!(
            node_id = config.node_id,
            listen = %local_addr,
            advertise = %config.advertise,
            data_dir = %config.data_dir.display(),
            "node started"
        );

        let deliverer = crate::deliverer::spawn(
            router.clone(),
            config.identity.clone(),
            config.advertise.clone(),
            waiters.clone(),
        );
        let invoker = crate::invoker::spawn(ctx.clone(), config.event_retry_delay);
        let lease_manager = crate::leases::spawn(router.clone(), ctx.waiters.clone());
        let worker_agent = ctx.worker.as_ref().map(|w| w.spawn());
        let housekeeper = crate::housekeeper::spawn(router.clone(), waiters);
        let membership = match &config.bootstrap {
            crate::config::Bootstrap::Dns(dns) => Some(crate::membership::spawn(
                raft.clone(),
                config.node_id,
                dns.clone(),
                channels.clone(),
            )),
            _ => None,
        };
        let bootstrap = tokio::spawn(bootstrap::run(
            raft.clone(),
            config.node_id,
            config.advertise.clone(),
            config.bootstrap.clone(),
            channels,
            guard,
        ));

        Ok(RunningNode {
            config,
            raft,
            router,
            db,
            server,
            stop_server: Some(stop_tx),
            bootstrap,
            housekeeper,
            deliverer,
            invoker,
            worker_agent,
            lease_manager,
            membership,
            worker: ctx.worker.clone(),
            local_addr,
            _dir_lock: dir_lock,
        })
    }

    /// The address the server is bound to.
    pub fn local_addr(&self) -> std::net::SocketAddr {
        self.local_addr
    }

    /// The node's Raft instance.
    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// Stops the node. A leader first hands leadership to another voter, if
    /// there is one, so the cluster does not wait out an election timeout.
    pub async fn shutdown(mut self) {
        let me = self.config.node_id;
        let m = self.raft.metrics().borrow().clone();
        let others = m
            .membership_config
            .membership()
            .voter_ids()
            .filter(|v| *v != me)
            .count();
        if m.current_leader == Some(me) && others > 0 {
            let handover = transfer::transfer(&self.router, &self.config.timing, None);
            match tokio::time::timeout(Duration::from_secs(15), handover).await {
                Ok(Ok(o)) => tracing::info!(
                    new_leader = o.new,
                    term = o.term,
                    "handed leadership over before shutting down"
                ),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not hand leadership over"),
                Err(_) => tracing::warn!("leadership hand-over timed out"),
            }
        }
        if let Some(agent) = &self.worker_agent {
            agent.abort();
        }
        if let Some(worker) = &self.worker {
            // Invocations stop coming here before the node goes.
            let _ = tokio::time::timeout(Duration::from_secs(2), worker.leave()).await;
        }
        self.bootstrap.abort();
        self.housekeeper.abort();
        self.deliverer.abort();
        self.invoker.abort();
        self.lease_manager.abort();
        if let Some(m) = &self.membership {
            m.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft did not stop cleanly");
        }
        if let Some(stop) = self.stop_server.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.server).await;
        if let Err(e) = crate::raft::state_machine::mark_clean(&self.db) {
            tracing::error!(error = %e, "final flush failed; the next start rebuilds the state");
        }
        tracing::info!(node_id = me, "node stopped");
    }

    /// Waits until the server stops by itself (an error), returning it.
    pub async fn serve_until_error(&mut self) -> String {
        match (&mut self.server).await {
            Ok(Ok(())) => "server stopped".into(),
            Ok(Err(e)) => format!("server failed: {e}"),
            Err(e) => format!("server task failed: {e}"),
        }
    }
}
