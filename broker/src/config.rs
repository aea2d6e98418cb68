//! Node configuration: command-line flags, an optional TOML file with the
//! same keys, and their validation. Flags override the file; both override
//! the defaults, which make `sluice serve` a single-node cluster on
//! `127.0.0.1:7070` with its data in `./sluice-data`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use crate::auth::settings::{ClusterTls, Mode, Security};
use crate::discovery::PeerTemplate;
use crate::identity::Identity;
use crate::raft::{Compaction, NodeId, Timing};
pub use sluice_security::tls::CertFiles;

/// The default budget of request bytes in flight on a node
/// (`--request-memory-mb`; see `api::bounds`).
pub const REQUEST_MEMORY_DEFAULT: usize = 256 << 20;

/// How a node finds its cluster when its data directory is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bootstrap {
    /// A cluster of this node alone.
    Single,
    /// A fixed initial member list. The lowest id initialises the cluster,
    /// once it has reached every peer and none belongs to a cluster yet.
    Static(BTreeMap<NodeId, String>),
    /// Wait to be added to an existing cluster as a learner.
    Join,
    /// Peers found by DNS name (a StatefulSet behind a headless Service).
    Dns(DnsPeers),
}

/// `--peer-dns`: where the peers are and how the leader keeps the voters in
/// line with the names that resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsPeers {
    /// The peers' `host:port` by ordinal.
    pub template: PeerTemplate,
    /// This node's ordinal (its id is the ordinal + 1).
    pub ordinal: u64,
    /// Ordinals looked up: `0..max_nodes`.
    pub max_nodes: u64,
    /// Ordinal 0 founds a cluster only once ordinals `1..bootstrap_expect`
    /// have all answered that they hold nothing: the StatefulSet's initial
    /// size.
    pub bootstrap_expect: u64,
    /// How long a voter's name must be gone, and the node silent, before the
    /// leader removes it from the cluster.
    pub remove_after: Duration,
}

/// Everything a node needs to start.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's id, positive and unique in the cluster.
    pub node_id: NodeId,
    /// Socket the public gRPC server binds.
    pub listen: SocketAddr,
    /// `host:port` clients reach this node at (queue URLs, subscription
    /// confirmation links).
    pub advertise: String,
    /// Socket the cluster listener binds: node-to-node services.
    pub cluster_listen: SocketAddr,
    /// `host:port` other nodes reach this node's cluster listener at: its
    /// address in the membership.
    pub cluster_advertise: String,
    /// TLS, authentication, the cluster key, outbound destinations.
    pub security: Security,
    /// How to form or join a cluster on first start.
    pub bootstrap: Bootstrap,
    /// Where the node keeps its data.
    pub data_dir: PathBuf,
    /// Region and account for ARNs.
    pub identity: Identity,
    /// Raft timing.
    pub timing: Timing,
    /// Snapshot and log purge settings.
    pub compaction: Compaction,
    /// How long a call waits for a leader during an election.
    pub leader_wait: Duration,
    /// Page cache of the storage engine, bytes.
    pub cache_capacity: u64,
    /// Bytes of queue message index held in memory before newer entries
    /// go to the storage engine.
    pub queue_index_memory: usize,
    /// Bytes of requests the node holds at once, at most.
    pub request_memory: usize,
    /// Connections the node keeps open at most (both listeners).
    pub max_connections: usize,
    /// How long a connection may sit idle before it is closed.
    pub idle_timeout: Duration,
    /// Free bytes the data directory's filesystem must keep; below it
    /// writes are refused.
    pub disk_reserve: u64,
    /// How long a stop (SIGTERM) may take before the process exits anyway.
    pub shutdown_grace: Duration,
    /// Delay before the first retry of a failed asynchronous invocation
    /// (the second waits twice as long); Lambda waits a minute.
    pub event_retry_delay: Duration,
    /// Whether the node runs a worker in-process (registered like any
    /// other); clusters with separate `sluice worker` processes turn it
    /// off.
    pub in_process_worker: bool,
    /// Where the in-process worker finds its managed runtimes' clients.
    pub runtimes_dir: Option<PathBuf>,
    /// Threads that run the node's tasks; `None`: one per core the process
    /// may use (its CPU quota counts).
    pub threads: Option<usize>,
}

/// Settings as they come from flags or the file; unset means "not given".
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// `--node-id`
    pub node_id: Option<u64>,
    /// `--listen`
    pub listen: Option<String>,
    /// `--advertise`
    pub advertise: Option<String>,
    /// `--peers`, as `ID=HOST:PORT,...`
    pub peers: Option<String>,
    /// `--join`
    pub join: Option<bool>,
    /// `--data-dir`
    pub data_dir: Option<PathBuf>,
    /// `--region`
    pub region: Option<String>,
    /// `--account-id`
    pub account_id: Option<String>,
    /// `--heartbeat-ms`
    pub heartbeat_ms: Option<u64>,
    /// `--election-timeout-min-ms`
    pub election_timeout_min_ms: Option<u64>,
    /// `--election-timeout-max-ms`
    pub election_timeout_max_ms: Option<u64>,
    /// `--snapshot-every`
    pub snapshot_every: Option<u64>,
    /// `--keep-after-snapshot`
    pub keep_after_snapshot: Option<u64>,
    /// `--log-segment-mb`
    pub log_segment_mb: Option<u64>,
    /// `--leader-wait-ms`
    pub leader_wait_ms: Option<u64>,
    /// `--cache-mb`
    pub cache_mb: Option<u64>,
    /// `--queue-index-mb`
    pub queue_index_mb: Option<u64>,
    /// `--request-memory-mb`
    pub request_memory_mb: Option<u64>,
    /// `--max-connections`
    pub max_connections: Option<u64>,
    /// `--idle-timeout-secs`
    pub idle_timeout_secs: Option<u64>,
    /// `--disk-reserve-mb`
    pub disk_reserve_mb: Option<u64>,
    /// `--shutdown-grace-secs`
    pub shutdown_grace_secs: Option<u64>,
    /// `--event-retry-delay-ms`
    pub event_retry_delay_ms: Option<u64>,
    /// `--in-process-worker`
    pub in_process_worker: Option<bool>,
    /// `--runtimes-dir`
    pub runtimes_dir: Option<PathBuf>,
    /// `--threads`
    pub threads: Option<u64>,
    /// `--peer-dns`
    pub peer_dns: Option<String>,
    /// `--ordinal`
    pub ordinal: Option<u64>,
    /// `--max-nodes`
    pub max_nodes: Option<u64>,
    /// `--remove-after-s`
    pub remove_after_s: Option<u64>,
    /// `--bootstrap-expect`
    pub bootstrap_expect: Option<u64>,
    /// `--cluster-listen`
    pub cluster_listen: Option<String>,
    /// `--cluster-advertise`
    pub cluster_advertise: Option<String>,
    /// `--cluster-key-file`
    pub cluster_key_file: Option<PathBuf>,
    /// `--tls-cert`
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`
    pub tls_key: Option<PathBuf>,
    /// `--tls-client-ca`
    pub tls_client_ca: Option<PathBuf>,
    /// `--cluster-ca`
    pub cluster_ca: Option<PathBuf>,
    /// `--cluster-tls-cert`
    pub cluster_tls_cert: Option<PathBuf>,
    /// `--cluster-tls-key`
    pub cluster_tls_key: Option<PathBuf>,
    /// `--auth`
    pub auth: Option<bool>,
    /// `--admin-credentials-file`
    pub admin_credentials_file: Option<PathBuf>,
    /// `--insecure`
    pub insecure: Option<bool>,
    /// `--http-allow`, as `CIDR,...`
    pub http_allow: Option<String>,
    /// `--http-deny`, as `CIDR,...`
    pub http_deny: Option<String>,
    /// `--function-user`
    pub function_user: Option<String>,
    /// The host name `ordinal` was taken from, if it was (for messages).
    #[serde(skip)]
    pub ordinal_from_hostname: Option<String>,
}

impl Settings {
    /// Reads settings from a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("--config {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("--config {}: {e}", path.display()))
    }

    /// These settings, with `other`'s where these are unset.
    pub fn or(self, other: Settings) -> Settings {
        Settings {
            node_id: self.node_id.or(other.node_id),
            listen: self.listen.or(other.listen),
            advertise: self.advertise.or(other.advertise),
            peers: self.peers.or(other.peers),
            join: self.join.or(other.join),
            data_dir: self.data_dir.or(other.data_dir),
            region: self.region.or(other.region),
            account_id: self.account_id.or(other.account_id),
            heartbeat_ms: self.heartbeat_ms.or(other.heartbeat_ms),
            election_timeout_min_ms: self
                .election_timeout_min_ms
                .or(other.election_timeout_min_ms),
            election_timeout_max_ms: self
                .election_timeout_max_ms
                .or(other.election_timeout_max_ms),
            snapshot_every: self.snapshot_every.or(other.snapshot_every),
            keep_after_snapshot: self.keep_after_snapshot.or(other.keep_after_snapshot),
            log_segment_mb: self.log_segment_mb.or(other.log_segment_mb),
            leader_wait_ms: self.leader_wait_ms.or(other.leader_wait_ms),
            event_retry_delay_ms: self.event_retry_delay_ms.or(other.event_retry_delay_ms),
            in_process_worker: self.in_process_worker.or(other.in_process_worker),
            runtimes_dir: self.runtimes_dir.or(other.runtimes_dir),
            threads: self.threads.or(other.threads),
            cache_mb: self.cache_mb.or(other.cache_mb),
            queue_index_mb: self.queue_index_mb.or(other.queue_index_mb),
            request_memory_mb: self.request_memory_mb.or(other.request_memory_mb),
            max_connections: self.max_connections.or(other.max_connections),
            idle_timeout_secs: self.idle_timeout_secs.or(other.idle_timeout_secs),
            disk_reserve_mb: self.disk_reserve_mb.or(other.disk_reserve_mb),
            shutdown_grace_secs: self.shutdown_grace_secs.or(other.shutdown_grace_secs),
            peer_dns: self.peer_dns.or(other.peer_dns),
            ordinal: self.ordinal.or(other.ordinal),
            max_nodes: self.max_nodes.or(other.max_nodes),
            remove_after_s: self.remove_after_s.or(other.remove_after_s),
            bootstrap_expect: self.bootstrap_expect.or(other.bootstrap_expect),
            cluster_listen: self.cluster_listen.or(other.cluster_listen),
            cluster_advertise: self.cluster_advertise.or(other.cluster_advertise),
            cluster_key_file: self.cluster_key_file.or(other.cluster_key_file),
            tls_cert: self.tls_cert.or(other.tls_cert),
            tls_key: self.tls_key.or(other.tls_key),
            tls_client_ca: self.tls_client_ca.or(other.tls_client_ca),
            cluster_ca: self.cluster_ca.or(other.cluster_ca),
            cluster_tls_cert: self.cluster_tls_cert.or(other.cluster_tls_cert),
            cluster_tls_key: self.cluster_tls_key.or(other.cluster_tls_key),
            auth: self.auth.or(other.auth),
            admin_credentials_file: self.admin_credentials_file.or(other.admin_credentials_file),
            insecure: self.insecure.or(other.insecure),
            http_allow: self.http_allow.or(other.http_allow),
            http_deny: self.http_deny.or(other.http_deny),
            function_user: self.function_user.or(other.function_user),
            ordinal_from_hostname: self.ordinal_from_hostname.or(other.ordinal_from_hostname),
        }
    }

    /// Validates the settings and fills in defaults.
    pub fn resolve(self) -> Result<NodeConfig, String> {
        let dns = self.dns_peers()?;
        let node_id = match (&dns, self.node_id) {
            (Some(d), Some(id)) if id != d.ordinal + 1 => {
                return Err(format!(
                    "--node-id: with --peer-dns the id is the ordinal + 1 ({}), got {id}",
                    d.ordinal + 1
                ))
            }
            (Some(d), _) => d.ordinal + 1,
            (None, id) => id.unwrap_or(1),
        };
        if node_id == 0 {
            return Err("--node-id: must be a positive integer".into());
        }
        let listen_text = self
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:7070".into());
        let listen: SocketAddr = listen_text.parse().map_err(|_| {
            format!("--listen: must be IP:PORT, e.g. 127.0.0.1:7070, got {listen_text:?}")
        })?;
        let join = self.join.unwrap_or(false);
        let peers = self.peers.as_deref().map(parse_peers).transpose()?;
        if dns.is_some() && (peers.is_some() || join) {
            return Err("--peer-dns: give it alone, without --peers or --join (it finds the peers and joins by itself)".into());
        }
        let bootstrap = match (peers, join) {
            _ if dns.is_some() => Bootstrap::Dns(dns.clone().expect("checked")),
            (Some(_), true) => {
                return Err("--join and --peers: give one (--peers forms a new cluster, --join waits to be added to one)".into())
            }
            (Some(p), false) => {
                if !p.contains_key(&node_id) {
                    return Err(format!(
                        "--peers: must include this node's own id {node_id} (set with --node-id)"
                    ));
                }
                Bootstrap::Static(p)
            }
            (None, true) => Bootstrap::Join,
            (None, false) => Bootstrap::Single,
        };
        let cluster_listen_text = match &self.cluster_listen {
            Some(c) => c.clone(),
            None => {
                let port = listen.port().checked_add(1).filter(|_| listen.port() != 0).ok_or_else(|| {
                    format!("--cluster-listen: required when --listen's port is {} (the default is the next port)", listen.port())
                })?;
                SocketAddr::new(listen.ip(), port).to_string()
            }
        };
        let cluster_listen: SocketAddr = cluster_listen_text.parse().map_err(|_| {
            format!("--cluster-listen: must be IP:PORT, e.g. 127.0.0.1:7071, got {cluster_listen_text:?}")
        })?;
        if cluster_listen == listen {
            return Err(format!(
                "--cluster-listen: must differ from --listen ({listen}): node-to-node services never share the public port"
            ));
        }
        let cluster_advertise = match (&self.cluster_advertise, &bootstrap) {
            (Some(a), Bootstrap::Dns(d)) if d.template.addr(d.ordinal) != *a => {
                return Err(format!(
                    "--cluster-advertise: with --peer-dns a node is reached at its name ({}), got {a}",
                    d.template.addr(d.ordinal)
                ))
            }
            (Some(a), Bootstrap::Static(p)) if p[&node_id] != *a => {
                return Err(format!(
                    "--cluster-advertise: {a} differs from this node's entry in --peers ({})",
                    p[&node_id]
                ))
            }
            (Some(a), _) => a.clone(),
            (None, Bootstrap::Static(p)) => p[&node_id].clone(),
            (None, Bootstrap::Dns(d)) => d.template.addr(d.ordinal),
            (None, _) => cluster_listen_text.clone(),
        };
        check_host_port("--cluster-advertise", &cluster_advertise)?;
        // Clients reach the node by the host other nodes do, on the public
        // port, unless told otherwise.
        let advertise = match &self.advertise {
            Some(a) => a.clone(),
            None if matches!(bootstrap, Bootstrap::Static(_) | Bootstrap::Dns(_)) => {
                let host = cluster_advertise
                    .rsplit_once(':')
                    .map(|(h, _)| h)
                    .unwrap_or(&cluster_advertise);
                format!("{host}:{}", listen.port())
            }
            None => listen_text.clone(),
        };
        check_host_port("--advertise", &advertise)?;
        let security = self.security(&listen, &cluster_listen, &bootstrap)?;
        let identity = Identity {
            region: self.region.unwrap_or_else(|| Identity::default().region),
            account_id: self
                .account_id
                .unwrap_or_else(|| Identity::default().account_id),
        };
        identity.validate()?;
        let defaults = Timing::default();
        let heartbeat = self
            .heartbeat_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.heartbeat);
        let election_min = self
            .election_timeout_min_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.election_min);
        let election_max = self
            .election_timeout_max_ms
            .map(Duration::from_millis)
            .unwrap_or(defaults.election_max);
        if heartbeat.is_zero() || election_min <= heartbeat || election_max <= election_min {
            return Err(format!(
                "--heartbeat-ms, --election-timeout-min-ms, --election-timeout-max-ms: must satisfy 0 < heartbeat < min < max, got {} < {} < {}",
                heartbeat.as_millis(),
                election_min.as_millis(),
                election_max.as_millis()
            ));
        }
        let compaction_defaults = Compaction::default();
        let snapshot_every = self
            .snapshot_every
            .unwrap_or(compaction_defaults.snapshot_every);
        if snapshot_every == 0 {
            return Err("--snapshot-every: must be at least 1".into());
        }
        let segment_bytes = match self.log_segment_mb {
            None => compaction_defaults.segment_bytes,
            Some(mb) if (1..=1024).contains(&mb) => mb << 20,
            Some(_) => return Err("--log-segment-mb: must be 1 to 1024 (MiB)".into()),
        };
        let leader_wait = Duration::from_millis(self.leader_wait_ms.unwrap_or(5000));
        if leader_wait.is_zero() {
            return Err("--leader-wait-ms: must be at least 1".into());
        }
        let request_memory = match self.request_memory_mb {
            None => REQUEST_MEMORY_DEFAULT,
            Some(mb) if (32..=65_536).contains(&mb) => (mb as usize) << 20,
            Some(_) => return Err(
                "--request-memory-mb: must be 32 to 65536 (MiB), as the largest request is 16 MiB"
                    .into(),
            ),
        };
        let max_connections = match self.max_connections {
            None => default_max_connections(),
            Some(n) if n >= 16 => n as usize,
            Some(_) => return Err("--max-connections: must be at least 16".into()),
        };
        let idle_timeout_secs = match self.idle_timeout_secs {
            None => 300,
            Some(s) if (1..=86_400).contains(&s) => s,
            Some(_) => return Err("--idle-timeout-secs: must be 1 to 86400".into()),
        };
        let shutdown_grace = match self.shutdown_grace_secs {
            None => Duration::from_secs(45),
            Some(s) if (1..=3600).contains(&s) => Duration::from_secs(s),
            Some(_) => return Err("--shutdown-grace-secs: must be 1 to 3600".into()),
        };
        let threads = self.threads.map(runtime_threads).transpose()?;
        let cache_mb = self.cache_mb.unwrap_or(256);
        if cache_mb == 0 {
            return Err("--cache-mb: must be at least 1".into());
        }
        let queue_index_mb = self
            .queue_index_mb
            .unwrap_or(crate::raft::state_machine::RESIDENT_MESSAGES_BYTES as u64 >> 20);
        if !(1..=1 << 20).contains(&queue_index_mb) {
            return Err("--queue-index-mb: must be 1 to 1048576".into());
        }
        Ok(NodeConfig {
            node_id,
            listen,
            advertise,
            cluster_listen,
            cluster_advertise,
            security,
            bootstrap,
            data_dir: self
                .data_dir
                .unwrap_or_else(|| PathBuf::from("./sluice-data")),
            identity,
            timing: Timing {
                heartbeat,
                election_min,
                election_max,
            },
            compaction: Compaction {
                snapshot_every,
                keep_after_snapshot: self
                    .keep_after_snapshot
                    .unwrap_or(compaction_defaults.keep_after_snapshot),
                segment_bytes,
            },
            leader_wait,
            cache_capacity: cache_mb * 1024 * 1024,
            queue_index_memory: (queue_index_mb << 20) as usize,
            request_memory,
            max_connections,
            idle_timeout: Duration::from_secs(idle_timeout_secs),
            disk_reserve: self
                .disk_reserve_mb
                .map_or(crate::disk::RESERVE_DEFAULT, |mb| mb << 20),
            shutdown_grace,
            event_retry_delay: Duration::from_millis(self.event_retry_delay_ms.unwrap_or(60_000)),
            in_process_worker: self.in_process_worker.unwrap_or(true),
            runtimes_dir: self.runtimes_dir.clone(),
            threads,
        })
    }
}

/// Most runtime threads `--threads` takes.
pub const THREADS_MAX: u64 = 1024;

/// `--threads` checked: 1 to [`THREADS_MAX`]. Shared by `sluice serve` and
/// `sluice worker`.
pub fn runtime_threads(n: u64) -> Result<usize, String> {
    if (1..=THREADS_MAX).contains(&n) {
        Ok(n as usize)
    } else {
        Err(format!("--threads: must be 1 to {THREADS_MAX}, got {n}"))
    }
}

impl Settings {
    /// The security flags, checked against the listen addresses: a node
    /// reachable beyond this machine needs TLS on both listeners and
    /// authentication, or `--insecure`.
    fn security(
        &self,
        listen: &SocketAddr,
        cluster_listen: &SocketAddr,
        bootstrap: &Bootstrap,
    ) -> Result<Security, String> {
        let pair = |cert: &Option<PathBuf>, key: &Option<PathBuf>, flags: &str| match (cert, key) {
            (Some(c), Some(k)) => Ok(Some(CertFiles {
                cert: c.clone(),
                key: k.clone(),
            })),
            (None, None) => Ok(None),
            _ => Err(format!("{flags}: give both or neither")),
        };
        let tls = pair(&self.tls_cert, &self.tls_key, "--tls-cert and --tls-key")?;
        if self.tls_client_ca.is_some() && tls.is_none() {
            return Err("--tls-client-ca: only meaningful with --tls-cert and --tls-key".into());
        }
        let cluster_cert = pair(
            &self.cluster_tls_cert,
            &self.cluster_tls_key,
            "--cluster-tls-cert and --cluster-tls-key",
        )?;
        let cluster_tls = match (&self.cluster_ca, cluster_cert.or_else(|| tls.clone())) {
            (Some(ca), Some(cert)) => Some(ClusterTls { cert, ca: ca.clone() }),
            (Some(_), None) => return Err("--cluster-ca: needs this node's certificate: --cluster-tls-cert and --cluster-tls-key (or --tls-cert and --tls-key)".into()),
            (None, _) if self.cluster_tls_cert.is_some() => {
                return Err("--cluster-tls-cert: needs --cluster-ca, the CA the nodes' certificates come from".into())
            }
            (None, _) => None,
        };
        let auth = self.auth.unwrap_or(false);
        if self.admin_credentials_file.is_some() && !auth {
            return Err("--admin-credentials-file: only meaningful with --auth".into());
        }
        let insecure = self.insecure.unwrap_or(false);
        let loopback = listen.ip().is_loopback() && cluster_listen.ip().is_loopback();
        let protected = tls.is_some() && cluster_tls.is_some() && auth;
        let mode = if auth {
            Mode::Secured
        } else if insecure {
            Mode::Insecure
        } else {
            Mode::Development
        };
        if !loopback && !protected && !insecure {
            let mut missing = Vec::new();
            if tls.is_none() {
                missing.push("TLS on the public port (--tls-cert, --tls-key)");
            }
            if cluster_tls.is_none() {
                missing.push("mutual TLS between nodes (--cluster-ca)");
            }
            if !auth {
                missing.push("authentication (--auth)");
            }
            return Err(format!(
                "--listen {listen} / --cluster-listen {cluster_listen}: a node reachable beyond this machine needs {}; give them, or --insecure to run without (never on a network you do not trust)",
                missing.join(", ")
            ));
        }
        if self.cluster_key_file.is_none() && !matches!(bootstrap, Bootstrap::Single) {
            return Err("--cluster-key-file: required for a cluster of several nodes: every node needs the same key (make one with `sluice keygen`; a single node keeps its own in {data-dir}/cluster.key)".into());
        }
        let dev = mode == Mode::Development;
        let destinations = crate::outbound::Destinations::parse(
            self.http_allow.as_deref(),
            self.http_deny.as_deref(),
            dev,
        )?;
        Ok(Security {
            mode,
            tls,
            client_ca: self.tls_client_ca.clone(),
            cluster_tls,
            auth,
            admin_credentials_file: self.admin_credentials_file.clone(),
            cluster_key_file: self.cluster_key_file.clone(),
            destinations,
            function_user: self.function_user.clone(),
        })
    }

    /// `--peer-dns` and the flags that go with it, checked.
    fn dns_peers(&self) -> Result<Option<DnsPeers>, String> {
        let Some(text) = &self.peer_dns else {
            for (set, flag) in [
                (self.ordinal.is_some(), "--ordinal"),
                (self.max_nodes.is_some(), "--max-nodes"),
                (self.remove_after_s.is_some(), "--remove-after-s"),
                (self.bootstrap_expect.is_some(), "--bootstrap-expect"),
            ] {
                if set {
                    return Err(format!("{flag}: only meaningful with --peer-dns"));
                }
            }
            return Ok(None);
        };
        let template = PeerTemplate::parse(text)?;
        let max_nodes = self.max_nodes.unwrap_or(7);
        if !(1..=100).contains(&max_nodes) {
            return Err(format!("--max-nodes: must be 1-100, got {max_nodes}"));
        }
        let Some(ordinal) = self.ordinal else {
            return Err("--ordinal: required with --peer-dns when the host name does not end in -N (a StatefulSet pod's does)".into());
        };
        if ordinal >= max_nodes {
            return Err(match &self.ordinal_from_hostname {
                Some(h) => format!(
                    "--ordinal: the ordinal {ordinal} (from host name {h}) must be below --max-nodes ({max_nodes})"
                ),
                None => format!("--ordinal: must be below --max-nodes ({max_nodes}), got {ordinal}"),
            });
        }
        let bootstrap_expect = self.bootstrap_expect.unwrap_or(1);
        if !(1..=max_nodes).contains(&bootstrap_expect) {
            return Err(format!(
                "--bootstrap-expect: must be 1 to --max-nodes ({max_nodes}), got {bootstrap_expect}"
            ));
        }
        let remove_after_s = self.remove_after_s.unwrap_or(120);
        if remove_after_s == 0 {
            return Err("--remove-after-s: must be at least 1".into());
        }
        Ok(Some(DnsPeers {
            template,
            ordinal,
            max_nodes,
            bootstrap_expect,
            remove_after: Duration::from_secs(remove_after_s),
        }))
    }
}

fn check_host_port(flag: &str, addr: &str) -> Result<(), String> {
    let ok = addr
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0));
    if ok {
        Ok(())
    } else {
        Err(format!("{flag}: must be HOST:PORT, got {addr:?}"))
    }
}

/// Parses `ID=HOST:PORT,ID=HOST:PORT,...`.
pub fn parse_peers(list: &str) -> Result<BTreeMap<NodeId, String>, String> {
    let mut peers = BTreeMap::new();
    for entry in list.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let rule = "each entry must be ID=HOST:PORT with ID a positive integer";
        let (id, addr) = entry
            .split_once('=')
            .ok_or_else(|| format!("--peers: {rule}, got {entry:?}"))?;
        let id: NodeId = id
            .trim()
            .parse()
            .ok()
            .filter(|id| *id > 0)
            .ok_or_else(|| format!("--peers: {rule}, got {entry:?}"))?;
        let addr = addr.trim();
        check_host_port("--peers", addr).map_err(|_| format!("--peers: {rule}, got {entry:?}"))?;
        if peers.values().any(|a| a == addr) {
            return Err(format!("--peers: address {addr} is listed twice"));
        }
        if peers.insert(id, addr.to_string()).is_some() {
            return Err(format!("--peers: node id {id} is listed twice"));
        }
    }
    if peers.is_empty() {
        return Err("--peers: must list at least one ID=HOST:PORT".into());
    }
    Ok(peers)
}

/// Descriptors kept for the node's own files (log segments, the state
/// store, snapshots, function processes) when the connection limit is
/// derived from the process's descriptor limit.
const DESCRIPTORS_RESERVED: u64 = 256;

/// 10 000 connections, or fewer when the descriptor limit (`ulimit -n`)
/// leaves less room beside the node's own files.
fn default_max_connections() -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct it is given.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0 {
        limit.rlim_cur
    } else {
        u64::MAX
    };
    soft.saturating_sub(DESCRIPTORS_RESERVED).clamp(16, 10_000) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_embedded_single_node() {
        let c = Settings::default().resolve().unwrap();
        assert_eq!(c.node_id, 1);
        assert_eq!(c.listen.to_string(), "127.0.0.1:7070");
        assert_eq!(c.advertise, "127.0.0.1:7070");
        assert_eq!(c.bootstrap, Bootstrap::Single);
        assert_eq!(c.data_dir, PathBuf::from("./sluice-data"));
        assert_eq!(c.cluster_listen.to_string(), "127.0.0.1:7071");
        assert_eq!(c.cluster_advertise, "127.0.0.1:7071");
        assert_eq!(c.security.mode, Mode::Development);
        assert!(c.security.cluster_key_file.is_none());
    }

    /// A cluster of several nodes on a network, run insecurely on purpose.
    fn networked() -> Settings {
        Settings {
            insecure: Some(true),
            cluster_key_file: Some("cluster.key".into()),
            ..Default::default()
        }
    }

    /// Why `s` is refused.
    fn refusal(s: Settings) -> String {
        s.resolve().unwrap_err()
    }

    /// A change to a node's settings.
    type Edit = fn(&mut Settings);

    /// Checks that `base`, changed by each edit, is refused with an error
    /// that starts with the edit's text.
    fn assert_refusals(base: &Settings, cases: &[(Edit, &str)]) {
        for (edit, needle) in cases {
            let mut s = base.clone();
            edit(&mut s);
            let err = refusal(s);
            assert!(err.starts_with(needle), "{err}");
        }
    }

    #[test]
    fn peers_parse_and_give_the_advertised_address() {
        let s = Settings {
            node_id: Some(2),
            listen: Some("0.0.0.0:7070".into()),
            peers: Some("1=a:7071, 2=b:7072,3=c:7073".into()),
            ..networked()
        };
        let c = s.resolve().unwrap();
        assert_eq!(c.cluster_advertise, "b:7072");
        assert_eq!(c.advertise, "b:7070", "the peer's host, the public port");
        assert_eq!(c.cluster_listen.to_string(), "0.0.0.0:7071");
        assert_eq!(c.security.mode, Mode::Insecure);
        match c.bootstrap {
            Bootstrap::Static(p) => assert_eq!(p.len(), 3),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_peer_lists_name_the_flag_and_rule() {
        for (list, needle) in [
            ("1=a:1,garbage", "each entry must be ID=HOST:PORT"),
            ("0=a:1", "positive integer"),
            ("x=a:1", "positive integer"),
            ("1=a", "ID=HOST:PORT"),
            ("1=a:0", "ID=HOST:PORT"),
            ("1=a:1,1=b:2", "listed twice"),
            ("1=a:1,2=a:1", "listed twice"),
            ("", "at least one"),
        ] {
            let err = parse_peers(list).unwrap_err();
            assert!(err.starts_with("--peers:"), "{err}");
            assert!(err.contains(needle), "{list:?}: {err}");
        }
    }

    #[test]
    fn own_id_must_be_in_the_peer_list() {
        let s = Settings {
            node_id: Some(4),
            peers: Some("1=a:1,2=b:2,3=c:3".into()),
            ..Default::default()
        };
        assert!(refusal(s).contains("own id 4"));
    }

    #[test]
    fn conflicting_and_invalid_flags_are_refused() {
        let both = Settings {
            peers: Some("1=a:1".into()),
            join: Some(true),
            ..Default::default()
        };
        assert!(refusal(both).starts_with("--join and --peers"));
        let bad_listen = Settings {
            listen: Some("localhost".into()),
            ..Default::default()
        };
        assert!(refusal(bad_listen).starts_with("--listen"));
        let bad_timing = Settings {
            heartbeat_ms: Some(500),
            election_timeout_min_ms: Some(400),
            ..Default::default()
        };
        assert!(refusal(bad_timing).contains("0 < heartbeat < min < max"));
        let mismatch = Settings {
            node_id: Some(1),
            cluster_advertise: Some("x:1".into()),
            peers: Some("1=a:1".into()),
            ..networked()
        };
        assert!(refusal(mismatch).starts_with("--cluster-advertise"));
        let same_port = Settings {
            cluster_listen: Some("127.0.0.1:7070".into()),
            ..Default::default()
        };
        assert!(refusal(same_port).contains("never share the public port"));
        for mb in [0, (1 << 20) + 1] {
            let index = Settings {
                queue_index_mb: Some(mb),
                ..Default::default()
            };
            assert!(refusal(index).starts_with("--queue-index-mb: must be 1 to"));
        }
        let index = Settings {
            queue_index_mb: Some(64),
            ..Default::default()
        };
        let config = index.resolve().unwrap();
        assert_eq!(config.queue_index_memory, 64 << 20);
    }

    #[test]
    fn a_node_beyond_loopback_needs_tls_and_authentication_or_insecure() {
        let open = Settings {
            listen: Some("0.0.0.0:7070".into()),
            ..Default::default()
        };
        let e = open.clone().resolve().unwrap_err();
        assert!(e.contains("TLS on the public port"), "{e}");
        assert!(e.contains("mutual TLS between nodes (--cluster-ca)"), "{e}");
        assert!(e.contains("authentication (--auth)"), "{e}");
        assert!(e.contains("--insecure"), "{e}");
        // The cluster listener alone off loopback counts too.
        let half = Settings {
            cluster_listen: Some("10.0.0.1:7071".into()),
            ..Default::default()
        };
        assert!(half.resolve().is_err());
        let insecure = Settings {
            insecure: Some(true),
            ..open.clone()
        };
        assert_eq!(insecure.resolve().unwrap().security.mode, Mode::Insecure);
        let secured = Settings {
            tls_cert: Some("n.pem".into()),
            tls_key: Some("n.key".into()),
            cluster_ca: Some("ca.pem".into()),
            auth: Some(true),
            ..open
        };
        let c = secured.resolve().unwrap();
        assert_eq!(c.security.mode, Mode::Secured);
        let t = c.security.cluster_tls.expect("cluster TLS");
        assert_eq!(
            t.cert.cert,
            PathBuf::from("n.pem"),
            "the public certificate by default"
        );
    }

    #[test]
    fn incomplete_security_flags_name_what_is_missing() {
        assert_refusals(
            &Settings::default(),
            &[
                (
                    |s| s.tls_cert = Some("c".into()),
                    "--tls-cert and --tls-key: give both or neither",
                ),
                (
                    |s| s.cluster_ca = Some("ca".into()),
                    "--cluster-ca: needs this node's certificate",
                ),
                (
                    |s| s.tls_client_ca = Some("ca".into()),
                    "--tls-client-ca: only meaningful with --tls-cert",
                ),
                (
                    |s| s.admin_credentials_file = Some("a".into()),
                    "--admin-credentials-file: only meaningful with --auth",
                ),
                (
                    |s| s.peers = Some("1=127.0.0.1:7071".into()),
                    "--cluster-key-file: required for a cluster of several nodes",
                ),
                (
                    |s| s.http_allow = Some("10.0.0.0/40".into()),
                    "--http-allow",
                ),
            ],
        );
    }

    #[test]
    fn threads_are_one_per_core_unless_given() {
        assert_eq!(Settings::default().resolve().unwrap().threads, None);
        let one = Settings {
            threads: Some(1),
            ..Default::default()
        };
        assert_eq!(one.resolve().unwrap().threads, Some(1));
        assert_refusals(
            &Settings::default(),
            &[
                (
                    |s| s.threads = Some(0),
                    "--threads: must be 1 to 1024, got 0",
                ),
                (
                    |s| s.threads = Some(1025),
                    "--threads: must be 1 to 1024, got 1025",
                ),
            ],
        );
    }

    #[test]
    fn dns_peers_give_the_id_and_address_from_the_ordinal() {
        let s = Settings {
            peer_dns: Some("sluice-{ordinal}.peers:7071".into()),
            ordinal: Some(2),
            listen: Some("0.0.0.0:7070".into()),
            ..networked()
        };
        let c = s.clone().resolve().unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.cluster_advertise, "sluice-2.peers:7071");
        assert_eq!(c.advertise, "sluice-2.peers:7070");
        match &c.bootstrap {
            Bootstrap::Dns(d) => {
                assert_eq!((d.ordinal, d.max_nodes), (2, 7));
                assert_eq!(d.remove_after, Duration::from_secs(120));
                assert_eq!(d.bootstrap_expect, 1);
            }
            other => panic!("{other:?}"),
        }
        assert_refusals(
            &s,
            &[
                (
                    |s| s.node_id = Some(1),
                    "--node-id: with --peer-dns the id is the ordinal + 1 (3)",
                ),
                (|s| s.ordinal = None, "--ordinal: required"),
                (
                    |s| s.ordinal = Some(7),
                    "--ordinal: must be below --max-nodes (7)",
                ),
                (|s| s.join = Some(true), "--peer-dns: give it alone"),
                (|s| s.remove_after_s = Some(0), "--remove-after-s"),
                (
                    |s| s.bootstrap_expect = Some(8),
                    "--bootstrap-expect: must be 1 to --max-nodes (7)",
                ),
                (
                    |s| s.cluster_advertise = Some("10.0.0.5:7071".into()),
                    "--cluster-advertise: with --peer-dns a node is reached at its name (sluice-2.peers:7071)",
                ),
                (
                    |s| {
                        s.ordinal = Some(9);
                        s.ordinal_from_hostname = Some("sluice-9".into());
                    },
                    "--ordinal: the ordinal 9 (from host name sluice-9) must be below --max-nodes (7)",
                ),
                (
                    |s| s.peer_dns = None,
                    "--ordinal: only meaningful with --peer-dns",
                ),
            ],
        );
    }

    #[test]
    fn file_settings_fill_what_flags_leave_unset() {
        let file: Settings =
            toml::from_str("node-id = 3\nlisten = \"127.0.0.1:9000\"\nregion = \"eu-west-1\"\n")
                .unwrap();
        let flags = Settings {
            listen: Some("127.0.0.1:9100".into()),
            ..Default::default()
        };
        let c = flags.or(file).resolve().unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.listen.to_string(), "127.0.0.1:9100");
        assert_eq!(c.identity.region, "eu-west-1");
        let unknown: Result<Settings, _> = toml::from_str("colour = 1\n");
        assert!(unknown.is_err());
    }
}
