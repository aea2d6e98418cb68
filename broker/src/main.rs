//! `sluice`: the broker node binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_broker::config::Settings;
use sluice_broker::node::RunningNode;

/// mimalloc rather than glibc malloc: a node allocates many small buffers
/// per request and frees them on other threads, where glibc's arena
/// bookkeeping took 14% of the machine in a three-node queue-send profile
/// (docs/bench/allocator.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Sluice: a clustered message and stream broker with AWS-shaped queues,
/// topics, streams and functions.
#[derive(Parser)]
#[command(name = "sluice", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker node. With no flags: a single-node cluster on
    /// 127.0.0.1:7070 with its data in ./sluice-data.
    Serve(Box<ServeArgs>),
    /// Run a worker node: it registers with the cluster, heartbeats, and
    /// runs the function invocations the cluster routes to it.
    Worker(Box<WorkerArgs>),
    /// After losing a majority: make this stopped node the only voter of
    /// its cluster (unsafe: writes only the lost nodes held are gone; run
    /// it on the most up-to-date survivor). Start the node afterwards and
    /// add the others back as new members.
    Recover(RecoverArgs),
    /// Cut the damaged Raft log of a stopped node at the damage, accepting
    /// the loss of the entries after it (a node alone in its cluster refuses
    /// to start on such a log; one of a cluster repairs itself from the
    /// leader and needs no such step). The damaged files are kept aside.
    CutLog(CutLogArgs),
    /// Print a new cluster key (for --cluster-key-file), or with
    /// --credentials a new access key (for --admin-credentials-file).
    Keygen(KeygenArgs),
    /// Make a CA and certificates for a laptop or a test cluster: ca.pem,
    /// and NAME.pem / NAME.key for each --cert NAME=HOSTS (nodes, clients).
    Certs(CertsArgs),
}

#[derive(Args)]
struct KeygenArgs {
    /// An access key id and secret, as a credentials file, instead.
    #[arg(long)]
    credentials: bool,
}

#[derive(Args)]
struct CertsArgs {
    /// Where to write the files (made if missing; existing files are kept).
    #[arg(long)]
    out: PathBuf,
    /// Certificates to make, NAME=HOST,HOST... (the NAME is the subject's
    /// common name: a node's, or a client principal's); repeatable.
    #[arg(long = "cert", value_name = "NAME=HOSTS")]
    certs: Vec<String>,
}

#[derive(Args)]
struct CutLogArgs {
    /// The stopped node's data directory.
    #[arg(long)]
    data_dir: PathBuf,
}

#[derive(Args)]
struct RecoverArgs {
    /// The stopped node's data directory.
    #[arg(long)]
    data_dir: PathBuf,
    /// The node's id.
    #[arg(long)]
    node_id: u64,
    /// HOST:PORT the other nodes will reach the node's cluster listener at
    /// (its --cluster-advertise).
    #[arg(long)]
    cluster_advertise: String,
}

#[derive(Args)]
struct WorkerArgs {
    /// Broker nodes to register with, HOST:PORT,... (any one answering is
    /// enough).
    #[arg(long, value_delimiter = ',', required = true)]
    cluster: Vec<String>,
    /// IP:PORT the worker's gRPC server binds [default: 127.0.0.1:7080].
    #[arg(long, default_value = "127.0.0.1:7080")]
    listen: String,
    /// HOST:PORT broker nodes reach this worker at [default: --listen].
    #[arg(long)]
    advertise: Option<String>,
    /// Unique worker id [default: the host name and the listen port].
    #[arg(long)]
    id: Option<String>,
    /// Where code and execution environments live [default: ./sluice-worker].
    #[arg(long, default_value = "sluice-worker")]
    data_dir: PathBuf,
    /// Memory offered to functions, MB [default: three quarters of the
    /// machine's].
    #[arg(long)]
    memory_mb: Option<u64>,
    /// Threads running the worker's own work (1-1024; functions run in
    /// processes of their own) [default: one per core the process may use].
    #[arg(long)]
    threads: Option<u64>,
    #[command(flatten)]
    tls: ClientTlsArgs,
    /// A file with the worker principal's access_key_id and
    /// secret_access_key [default: SLUICE_ACCESS_KEY_ID and
    /// SLUICE_SECRET_ACCESS_KEY, if set].
    #[arg(long, env = "SLUICE_CREDENTIALS_FILE")]
    credentials_file: Option<PathBuf>,
    /// The certificate this worker's WorkerHost serves TLS with (PEM);
    /// nodes accept this certificate only, by the fingerprint the worker
    /// registers [default with TLS: a certificate made at start].
    #[arg(long, requires = "host_tls_key")]
    host_tls_cert: Option<PathBuf>,
    /// The key of --host-tls-cert (PEM).
    #[arg(long, requires = "host_tls_cert")]
    host_tls_key: Option<PathBuf>,
    /// The user functions run as when the worker runs as root
    /// [default: nobody].
    #[arg(long)]
    function_user: Option<String>,
    /// Where the managed runtimes' clients are (`python/` holding
    /// awslambdaric); without it, Python functions without a bootstrap need
    /// awslambdaric in the worker's own python3.
    #[arg(long)]
    runtimes_dir: Option<PathBuf>,
    /// Log output format; the level comes from RUST_LOG [default: info].
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

/// How a client of the cluster's public port connects.
#[derive(Args, Clone)]
struct ClientTlsArgs {
    /// Connect with TLS (implied by --tls-ca and --tls-cert).
    #[arg(long)]
    tls: bool,
    /// Trust the cluster's certificates from this CA (PEM) [default with
    /// --tls: the public web PKI].
    #[arg(long, env = "SLUICE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Present this client certificate (PEM), as a principal named by its
    /// subject's common name.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The name the cluster's certificates carry, when not the host dialled.
    #[arg(long)]
    tls_server_name: Option<String>,
}

impl ClientTlsArgs {
    fn options(&self) -> sluice_security::tls::ClientTls {
        sluice_security::tls::ClientTls {
            enabled: self.tls,
            ca: self.tls_ca.clone(),
            cert: self
                .tls_cert
                .clone()
                .zip(self.tls_key.clone())
                .map(|(cert, key)| sluice_security::tls::CertFiles { cert, key }),
            server_name: self.tls_server_name.clone(),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args)]
struct ServeArgs {
    /// TOML file with the same keys as the flags (kebab-case); flags win.
    #[arg(long)]
    config: Option<PathBuf>,
    /// This node's id: a positive integer, unique in the cluster [default: 1].
    #[arg(long)]
    node_id: Option<u64>,
    /// IP:PORT the gRPC server binds [default: 127.0.0.1:7070].
    #[arg(long)]
    listen: Option<String>,
    /// HOST:PORT the other nodes and clients reach this node at [default: this
    /// node's entry in --peers, else --listen].
    #[arg(long)]
    advertise: Option<String>,
    /// Initial members of a new cluster, ID=HOST:PORT,... including this node.
    #[arg(long)]
    peers: Option<String>,
    /// Start empty and wait to be added to an existing cluster as a learner.
    #[arg(long)]
    join: bool,
    /// Where the node keeps its data [default: ./sluice-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Region in ARNs [default: us-east-1].
    #[arg(long)]
    region: Option<String>,
    /// Account id in ARNs and queue URLs [default: 000000000000].
    #[arg(long)]
    account_id: Option<String>,
    /// Leader heartbeat interval [default: 150].
    #[arg(long)]
    heartbeat_ms: Option<u64>,
    /// Lower bound of the election timeout [default: 750].
    #[arg(long)]
    election_timeout_min_ms: Option<u64>,
    /// Upper bound of the election timeout; also the leader lease [default: 1500].
    #[arg(long)]
    election_timeout_max_ms: Option<u64>,
    /// Build a snapshot after this many log entries, and no sooner than
    /// four times the last build's length after it [default: 20000].
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Log entries kept after a snapshot for slow followers [default: 1000].
    #[arg(long)]
    keep_after_snapshot: Option<u64>,
    /// Size of a Raft log segment file, in MiB (1-1024): the log is purged,
    /// and kept for queued messages' bodies, by whole segments [default: 64].
    #[arg(long)]
    log_segment_mb: Option<u64>,
    /// How long a call waits for a leader during an election [default: 5000].
    #[arg(long)]
    leader_wait_ms: Option<u64>,
    /// Storage engine page cache in MiB [default: 256].
    #[arg(long)]
    cache_mb: Option<u64>,
    /// Memory for the index of queued messages, in MiB (some 95 bytes a
    /// message); past it, newer messages are indexed in the storage
    /// engine, which is slower [default: 1024].
    #[arg(long)]
    queue_index_mb: Option<u64>,
    /// Bytes of requests the node holds at once, in MiB; calls past it are
    /// refused with RESOURCE_EXHAUSTED (RequestMemoryExhausted) [default: 256].
    #[arg(long)]
    request_memory_mb: Option<u64>,
    /// Connections kept open at most, over both listeners; more are closed
    /// as soon as accepted [default: 10000, or the descriptor limit
    /// (`ulimit -n`) less 256 when that is lower].
    #[arg(long)]
    max_connections: Option<u64>,
    /// A connection with no call in progress and no traffic for this long
    /// is closed [default: 300].
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Free space, in MiB, the data directory's filesystem must keep: below
    /// it the node refuses writes (RESOURCE_EXHAUSTED DiskFull) and takes
    /// them again once space is freed; reads go on [default: 256].
    #[arg(long)]
    disk_reserve_mb: Option<u64>,
    /// How long a stop (SIGTERM) may take, handing leadership over and
    /// flushing, before the process exits anyway; keep it below the
    /// orchestrator's grace period [default: 45].
    #[arg(long)]
    shutdown_grace_secs: Option<u64>,
    /// Delay before the first retry of a failed asynchronous invocation;
    /// the second waits twice as long [default: 60000, as Lambda].
    #[arg(long)]
    event_retry_delay_ms: Option<u64>,
    /// Run a worker inside the node [default: true]; turn off when separate
    /// `sluice worker` processes run the functions.
    #[arg(long)]
    in_process_worker: Option<bool>,
    /// Where the in-process worker finds the managed runtimes' clients
    /// (`python/` holding awslambdaric); without it, Python functions
    /// without a bootstrap need awslambdaric in the worker's own python3.
    #[arg(long)]
    runtimes_dir: Option<PathBuf>,
    /// Threads running the node's work (1-1024); where several nodes and
    /// workers share a few cores, give each its share [default: one per
    /// core the process may use].
    #[arg(long)]
    threads: Option<u64>,
    /// Find the peers by DNS: HOST:PORT with {ordinal} in the host, e.g.
    /// sluice-{ordinal}.sluice-peers:7070 (a StatefulSet's pods behind a
    /// headless Service). Ordinal 0 forms the cluster when none exists; the
    /// leader adds the others as they appear and removes those gone.
    #[arg(long)]
    peer_dns: Option<String>,
    /// This node's ordinal with --peer-dns; its id is the ordinal + 1
    /// [default: the number ending the host name].
    #[arg(long)]
    ordinal: Option<u64>,
    /// Ordinals looked up with --peer-dns: 0 to this - 1 [default: 7].
    #[arg(long)]
    max_nodes: Option<u64>,
    /// With --peer-dns: seconds a voter's name must be gone, and the node
    /// silent, before the leader removes it [default: 120].
    #[arg(long)]
    remove_after_s: Option<u64>,
    /// With --peer-dns: ordinal 0 founds a cluster only once ordinals 1 to
    /// this - 1 all answer that they hold nothing (set it to the
    /// StatefulSet's initial size) [default: 1].
    #[arg(long, env = "SLUICE_BOOTSTRAP_EXPECT")]
    bootstrap_expect: Option<u64>,
    /// IP:PORT the cluster listener binds: the node-to-node services, never
    /// served on the public port [default: --listen's address, next port].
    #[arg(long)]
    cluster_listen: Option<String>,
    /// HOST:PORT the other nodes reach the cluster listener at [default:
    /// this node's entry in --peers, else --cluster-listen].
    #[arg(long)]
    cluster_advertise: Option<String>,
    /// The cluster key: the secret every node of the cluster shares (make
    /// one with `sluice keygen`). Required with --peers, --join and
    /// --peer-dns [default: {data-dir}/cluster.key, made on first start].
    #[arg(long, env = "SLUICE_CLUSTER_KEY_FILE")]
    cluster_key_file: Option<PathBuf>,
    /// TLS on the public port: the certificate chain (PEM); read again when
    /// the file changes. (No environment variable: sluicectl's
    /// SLUICE_TLS_CERT is a client certificate.)
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS on the public port: the private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Clients may present a certificate issued by this CA (PEM); its
    /// subject's common name is the principal they act as.
    #[arg(long, env = "SLUICE_TLS_CLIENT_CA")]
    tls_client_ca: Option<PathBuf>,
    /// Mutual TLS between nodes: the CA the nodes' certificates come from.
    #[arg(long, env = "SLUICE_CLUSTER_CA")]
    cluster_ca: Option<PathBuf>,
    /// This node's certificate on the cluster listener [default: --tls-cert].
    #[arg(long, env = "SLUICE_CLUSTER_TLS_CERT")]
    cluster_tls_cert: Option<PathBuf>,
    /// This node's key on the cluster listener [default: --tls-key].
    #[arg(long, env = "SLUICE_CLUSTER_TLS_KEY")]
    cluster_tls_key: Option<PathBuf>,
    /// Callers must authenticate (signed requests with an access key, or a
    /// client certificate); the first administrator's key comes from
    /// --admin-credentials-file or SLUICE_ADMIN_ACCESS_KEY_ID and
    /// SLUICE_ADMIN_SECRET_ACCESS_KEY.
    #[arg(long)]
    auth: bool,
    /// A file with the first administrator's access_key_id and
    /// secret_access_key (with --auth).
    #[arg(long, env = "SLUICE_ADMIN_CREDENTIALS_FILE")]
    admin_credentials_file: Option<PathBuf>,
    /// Listen beyond loopback without TLS or authentication. Anyone who can
    /// reach the node can do anything: never on a network you do not trust.
    #[arg(long)]
    insecure: bool,
    /// Address blocks topic subscriptions may deliver to although they are
    /// loopback, private or link-local (CIDR,...).
    #[arg(long)]
    http_allow: Option<String>,
    /// Address blocks topic subscriptions may never deliver to (CIDR,...).
    #[arg(long)]
    http_deny: Option<String>,
    /// The user the in-process worker's functions run as when the node runs
    /// as root [default: nobody].
    #[arg(long)]
    function_user: Option<String>,
    /// Log output format; the level comes from RUST_LOG [default: info].
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

impl ServeArgs {
    fn settings(&self) -> Settings {
        Settings {
            node_id: self.node_id,
            listen: self.listen.clone(),
            advertise: self.advertise.clone(),
            peers: self.peers.clone(),
            join: self.join.then_some(true),
            data_dir: self.data_dir.clone(),
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            heartbeat_ms: self.heartbeat_ms,
            election_timeout_min_ms: self.election_timeout_min_ms,
            election_timeout_max_ms: self.election_timeout_max_ms,
            snapshot_every: self.snapshot_every,
            keep_after_snapshot: self.keep_after_snapshot,
            log_segment_mb: self.log_segment_mb,
            leader_wait_ms: self.leader_wait_ms,
            cache_mb: self.cache_mb,
            queue_index_mb: self.queue_index_mb,
            request_memory_mb: self.request_memory_mb,
            max_connections: self.max_connections,
            idle_timeout_secs: self.idle_timeout_secs,
            disk_reserve_mb: self.disk_reserve_mb,
            shutdown_grace_secs: self.shutdown_grace_secs,
            event_retry_delay_ms: self.event_retry_delay_ms,
            in_process_worker: self.in_process_worker,
            runtimes_dir: self.runtimes_dir.clone(),
            threads: self.threads,
            peer_dns: self.peer_dns.clone(),
            ordinal: self.ordinal,
            max_nodes: self.max_nodes,
            remove_after_s: self.remove_after_s,
            bootstrap_expect: self.bootstrap_expect,
            cluster_listen: self.cluster_listen.clone(),
            cluster_advertise: self.cluster_advertise.clone(),
            cluster_key_file: self.cluster_key_file.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_client_ca: self.tls_client_ca.clone(),
            cluster_ca: self.cluster_ca.clone(),
            cluster_tls_cert: self.cluster_tls_cert.clone(),
            cluster_tls_key: self.cluster_tls_key.clone(),
            auth: self.auth.then_some(true),
            admin_credentials_file: self.admin_credentials_file.clone(),
            insecure: self.insecure.then_some(true),
            http_allow: self.http_allow.clone(),
            http_deny: self.http_deny.clone(),
            function_user: self.function_user.clone(),
            ordinal_from_hostname: None,
        }
    }
}

fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn,tower=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The multi-threaded runtime with `threads` workers (default: one per
/// core the process may use), or `None` after saying why it failed.
fn runtime(command: &str, threads: Option<usize>) -> Option<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = threads {
        builder.worker_threads(n);
    }
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("sluice {command}: cannot start the runtime: {e}");
            None
        }
    }
}

fn serve(args: ServeArgs) -> ExitCode {
    let file = match args.config.as_deref().map(Settings::from_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("sluice serve: {e}");
            return ExitCode::from(2);
        }
    };
    let mut settings = args.settings().or(file);
    if settings.peer_dns.is_some() && settings.ordinal.is_none() {
        let host = sluice_broker::discovery::hostname();
        settings.ordinal = host
            .as_deref()
            .and_then(sluice_broker::discovery::ordinal_of_hostname);
        if settings.ordinal.is_some() {
            settings.ordinal_from_hostname = host;
        }
    }
    let config = match settings.resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice serve: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(args.log_format);
    let Some(runtime) = runtime("serve", config.threads) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let mut node = match RunningNode::start(config).await {
            Ok(n) => n,
            Err(e) => {
                eprintln!("sluice serve: {e}");
                return ExitCode::FAILURE;
            }
        };
        let mut sigterm =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("sluice serve: cannot handle SIGTERM: {e}");
                    return ExitCode::FAILURE;
                }
            };
        let failure = tokio::select! {
            _ = sigterm.recv() => { tracing::info!("SIGTERM: shutting down"); None }
            _ = tokio::signal::ctrl_c() => { tracing::info!("SIGINT: shutting down"); None }
            e = node.serve_until_error() => Some(e),
        };
        // A stop that hangs (a storage engine stuck on a full disk, say)
        // must not outlive the orchestrator's patience.
        let grace = node.shutdown_grace();
        if tokio::time::timeout(grace, node.shutdown()).await.is_err() {
            eprintln!(
                "sluice serve: the shutdown did not finish within {} s (--shutdown-grace-secs); exiting now, the next start recovers from the log",
                grace.as_secs()
            );
            std::process::exit(1);
        }
        match failure {
            None => ExitCode::SUCCESS,
            Some(e) => {
                eprintln!("sluice serve: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn worker(args: WorkerArgs) -> ExitCode {
    init_tracing(args.log_format);
    let threads = match args
        .threads
        .map(sluice_broker::config::runtime_threads)
        .transpose()
    {
        Ok(t) => t,
        Err(e) => {
            eprintln!("sluice worker: {e}");
            return ExitCode::from(2);
        }
    };
    let Some(runtime) = runtime("worker", threads) else {
        return ExitCode::FAILURE;
    };
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(&args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("sluice worker: --listen {}: {e}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
        let advertise = args.advertise.clone().unwrap_or_else(|| {
            listener
                .local_addr()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| args.listen.clone())
        });
        let id = args.id.clone().unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "worker".into());
            format!("{host}-{port}")
        });
        let options = match worker_options(&args, id, advertise) {
            Ok(o) => o,
            Err(e) => {
                eprintln!("sluice worker: {e}");
                return ExitCode::from(2);
            }
        };
        let shutdown = async {
            let mut sigterm =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(_) => {
                        let _ = tokio::signal::ctrl_c().await;
                        return;
                    }
                };
            tokio::select! {
                _ = sigterm.recv() => tracing::info!("SIGTERM: shutting down"),
                _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
            }
        };
        tracing::info!(
            threads = tokio::runtime::Handle::current().metrics().num_workers(),
            worker = %options.id,
            "worker starting"
        );
        match sluice_worker::serve(options, listener, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sluice worker: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

/// A worker's options from its flags: how it reaches the cluster, what it
/// signs with, and the certificate its WorkerHost serves (its own, made now,
/// when it talks TLS and was given none).
fn worker_options(
    args: &WorkerArgs,
    id: String,
    advertise: String,
) -> Result<sluice_worker::WorkerOptions, String> {
    let tls = args.tls.options();
    let connector = tls
        .connector()
        .map_err(|e| format!("--tls-ca/--tls-cert: {e}"))?;
    let credentials = match &args.credentials_file {
        Some(p) => Some(
            sluice_security::Credentials::from_file(p)
                .map_err(|e| format!("--credentials-file: {e}"))?,
        ),
        None => sluice_security::Credentials::from_env()?,
    };
    let host_tls = match (&args.host_tls_cert, &args.host_tls_key) {
        (Some(cert), Some(key)) => Some(
            sluice_security::tls::ReloadingCert::load(sluice_security::tls::CertFiles {
                cert: cert.clone(),
                key: key.clone(),
            })
            .map_err(|e| format!("--host-tls-cert: {e}"))?,
        ),
        _ if connector.is_tls() => {
            let host = advertise
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(&advertise);
            let own = sluice_security::pki::self_signed(&id, &[host])
                .map_err(|e| format!("making the worker's certificate: {e}"))?;
            Some(sluice_security::tls::ReloadingCert::fixed(own))
        }
        _ => None,
    };
    let sandbox = sluice_worker::sandbox::Sandbox::resolve(args.function_user.as_deref())?;
    if sandbox.user.is_none() {
        sluice_worker::sandbox::close_to_functions()?;
        tracing::warn!(
            "the worker is not root: functions run as its own user and can read the files it can (not its memory or environment)"
        );
    }
    Ok(sluice_worker::WorkerOptions {
        id,
        advertise,
        cluster: args.cluster.clone(),
        dir: args.data_dir.clone(),
        memory_mb: args
            .memory_mb
            .unwrap_or_else(sluice_worker::default_memory_mb),
        connector,
        credentials,
        host_tls,
        sandbox,
        runtimes: sluice_worker::runtimes::Runtimes {
            dir: args.runtimes_dir.clone(),
        },
    })
}

fn recover(args: RecoverArgs) -> ExitCode {
    if args.node_id == 0 {
        eprintln!("sluice recover: --node-id: must be a positive integer");
        return ExitCode::from(2);
    }
    if args
        .cluster_advertise
        .rsplit_once(':')
        .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().map_or(true, |p| p == 0))
    {
        eprintln!(
            "sluice recover: --cluster-advertise: must be HOST:PORT, got {:?}",
            args.cluster_advertise
        );
        return ExitCode::from(2);
    }
    match sluice_broker::raft::recovery::force_single_voter(
        &args.data_dir,
        args.node_id,
        &args.cluster_advertise,
    ) {
        Ok(r) => {
            println!(
                "node {} is now the only voter (membership entry {} after {}); start it, then add the other members back",
                args.node_id, r.membership_entry, r.last_before
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice recover: {e}");
            ExitCode::FAILURE
        }
    }
}

fn cut_log(args: CutLogArgs) -> ExitCode {
    match sluice_broker::raft::repair::cut_log(&args.data_dir) {
        Ok(Some(damage)) => {
            let held = match damage.last_seen {
                Some(last) => format!("the log held entries up to {last}"),
                None => "how far the log went is unknown".to_string(),
            };
            println!(
                "cut the log at byte {} of {}: entries from {} on are gone ({held}); the damaged files are kept in {}",
                damage.offset,
                damage.path.display(),
                damage.first_lost,
                args.data_dir.join("log").display()
            );
            ExitCode::SUCCESS
        }
        Ok(None) => {
            println!("the log is not damaged: nothing was cut");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice cut-log: {e}");
            ExitCode::FAILURE
        }
    }
}

fn keygen(args: KeygenArgs) -> ExitCode {
    if args.credentials {
        print!(
            "{}",
            sluice_security::Credentials::generate().to_file_text()
        );
    } else {
        println!("{}", sluice_security::key::Key::generate().to_hex());
    }
    ExitCode::SUCCESS
}

fn certs(args: CertsArgs) -> ExitCode {
    let run = || -> Result<(), String> {
        std::fs::create_dir_all(&args.out)
            .map_err(|e| format!("--out {}: {e}", args.out.display()))?;
        let ca = sluice_security::pki::Authority::new("Sluice local CA")?;
        let write = |name: &str, text: &str, private: bool| -> Result<(), String> {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let path = args.out.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(if private { 0o600 } else { 0o644 })
                .open(&path)
                .map_err(|e| format!("{}: {e}", path.display()))?;
            f.write_all(text.as_bytes())
                .map_err(|e| format!("{}: {e}", path.display()))?;
            println!("wrote {}", path.display());
            Ok(())
        };
        write("ca.pem", &ca.cert_pem(), false)?;
        for spec in &args.certs {
            let (name, hosts) = spec
                .split_once('=')
                .ok_or_else(|| format!("--cert: must be NAME=HOST,HOST..., got {spec:?}"))?;
            let hosts: Vec<&str> = hosts.split(',').filter(|h| !h.is_empty()).collect();
            let issued = ca.issue(name, &hosts, sluice_security::pki::Validity::Days(825))?;
            write(&format!("{name}.pem"), &issued.cert_pem, false)?;
            write(&format!("{name}.key"), &issued.key_pem, true)?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("sluice certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(*args),
        Command::Worker(args) => worker(*args),
        Command::Recover(args) => recover(args),
        Command::CutLog(args) => cut_log(args),
        Command::Keygen(args) => keygen(args),
        Command::Certs(args) => certs(args),
    }
}
