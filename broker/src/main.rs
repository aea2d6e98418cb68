//! `sluice`: the broker node binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use sluice_broker::config::Settings;
use sluice_broker::node::RunningNode;

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
    Serve(ServeArgs),
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
    /// Build a snapshot after this many log entries [default: 20000].
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Log entries kept after a snapshot for slow followers [default: 1000].
    #[arg(long)]
    keep_after_snapshot: Option<u64>,
    /// How long a call waits for a leader during an election [default: 5000].
    #[arg(long)]
    leader_wait_ms: Option<u64>,
    /// Storage engine page cache in MiB [default: 256].
    #[arg(long)]
    cache_mb: Option<u64>,
    /// Delay before the first retry of a failed asynchronous invocation;
    /// the second waits twice as long [default: 60000, as Lambda].
    #[arg(long)]
    event_retry_delay_ms: Option<u64>,
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
            leader_wait_ms: self.leader_wait_ms,
            cache_mb: self.cache_mb,
            event_retry_delay_ms: self.event_retry_delay_ms,
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

fn serve(args: ServeArgs) -> ExitCode {
    let file = match args.config.as_deref().map(Settings::from_file).transpose() {
        Ok(f) => f.unwrap_or_default(),
        Err(e) => {
            eprintln!("sluice serve: {e}");
            return ExitCode::from(2);
        }
    };
    let config = match args.settings().or(file).resolve() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("sluice serve: {e}");
            return ExitCode::from(2);
        }
    };
    init_tracing(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluice serve: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
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
        node.shutdown().await;
        match failure {
            None => ExitCode::SUCCESS,
            Some(e) => {
                eprintln!("sluice serve: {e}");
                ExitCode::FAILURE
            }
        }
    })
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Serve(args) => serve(args),
    }
}
