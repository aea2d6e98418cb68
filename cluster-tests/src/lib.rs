//! Test harness: runs real `sluice serve` processes on loopback, each with its
//! own port and data directory, and controls them the way an operator (or a
//! fault) would: start, `kill -9`, SIGTERM, wipe, restart.
//!
//! The binaries are taken from the cargo target directory of the test
//! executable (`target/debug/sluice`), or from `$SLUICE_BIN_DIR`; build them
//! first with `cargo build --bins`.

pub mod chaos;
pub mod disk;
pub mod dns;
pub mod lazyfs;
pub mod leader_kill;
pub mod pki;
pub mod recorder;
pub mod requests;

pub use recorder::Recorder;
pub use requests::{
    create_app_function, create_principal, create_queue_with_dlq, create_queues, delete_batch,
    delete_entries, entry, invoke_ok, member_ids, put_all, put_data, put_policy, queue_names,
    receive_until_empty, receive_waiting, receive_with_attributes, send_batch, send_entry,
    set_mapping_enabled, split_shard_at, stream_mapping, string_map, trim_horizon,
    wait_listed_locally,
};

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sluice_client::sluice_proto::v1::GetClusterStatusResponse;
use sluice_client::{Client, Options};

/// A node's id.
pub type NodeId = u64;

/// Raft timing flags for test clusters: the defaults, spelled out so the
/// tests' waits can be reasoned about.
pub const TIMING: &[&str] = &[
    "--heartbeat-ms",
    "150",
    "--election-timeout-min-ms",
    "750",
    "--election-timeout-max-ms",
    "1500",
];

/// How long the tests wait for a leader to be elected.
pub const ELECTION: Duration = Duration::from_secs(20);

/// What [`serial`] returns: the other tests wait while it lives.
pub type SerialGuard = tokio::sync::MutexGuard<'static, ()>;

/// Holds the other cluster tests of this test binary off while one runs: on
/// a 2-core machine, two clusters electing at once starve each other.
pub async fn serial() -> SerialGuard {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Takes the [`serial`] lock, then starts `n` nodes with `extra` flags (see
/// [`Cluster::start`]). Keep the guard for the whole test (bind it to
/// `_serial`, not to `_`).
pub async fn serial_cluster(n: u64, extra: &[&str]) -> (SerialGuard, Cluster) {
    let serial = serial().await;
    (serial, Cluster::start(n, extra))
}

/// How most tests begin: [`serial_cluster`], then a wait of up to
/// [`ELECTION`] for a leader.
pub async fn elected_cluster(n: u64, extra: &[&str]) -> (SerialGuard, Cluster, NodeId) {
    let (serial, mut c) = serial_cluster(n, extra).await;
    let leader = c.leader(ELECTION).await;
    (serial, c, leader)
}

/// Like [`elected_cluster`], secured (see [`Cluster::start_secured`]).
pub async fn elected_secured_cluster(n: u64, extra: &[&str]) -> (SerialGuard, Cluster, NodeId) {
    let serial = serial().await;
    let mut c = Cluster::start_secured(n, extra);
    let leader = c.leader(ELECTION).await;
    (serial, c, leader)
}

/// Environment variable `name` parsed, or `default` when it is unset or
/// does not parse: how a test's size or seed is overridden.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Path of a workspace binary (`sluice`, `sluicectl`).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("SLUICE_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            // Tests run from target/{profile}/deps, binaries from
            // target/{profile}; the workspace binaries are in the latter.
            let exe = std::env::current_exe().expect("executable path");
            let dir = exe.parent().expect("executable has a directory");
            if dir.ends_with("deps") {
                dir.parent().expect("target/{profile}").to_path_buf()
            } else {
                dir.to_path_buf()
            }
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found: build the binaries first with `cargo build --bins` (or set SLUICE_BIN_DIR)",
        path.display()
    );
    path
}

/// `sluicectl` against the node at `addr`, giving each call `timeout_s`
/// seconds.
pub fn sluicectl(addr: &str, timeout_s: u32) -> Command {
    let mut cmd = Command::new(binary("sluicectl"));
    cmd.args(["--cluster", addr, "--timeout", &timeout_s.to_string()]);
    cmd
}

/// Runs `cmd` with `input` on its stdin (closed once written); its output.
pub fn output_with_input(cmd: &mut Command, input: &str) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting the command");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .expect("writing the command's stdin");
    child.wait_with_output().expect("the command's output")
}

/// A free loopback port, never handed out twice by this process. Ports come
/// from below Linux's ephemeral range so that a node restarting on its port
/// does not find it taken by some outgoing connection.
pub fn free_port() -> u16 {
    static USED: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let mut used = USED.lock().unwrap_or_else(|e| e.into_inner());
    let used = used.get_or_insert_with(HashSet::new);
    let start = 20_000 + (std::process::id() * 37 % 10_000) as u16;
    for port in (start..32_000).chain(20_000..start) {
        if used.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            used.insert(port);
            return port;
        }
    }
    panic!("no free port between 20000 and 32000");
}

/// Writes a new cluster key to `dir/cluster.key` (if there is none) and
/// returns its path: every node of a test cluster shares it.
pub fn cluster_key(dir: &Path) -> PathBuf {
    let path = dir.join("cluster.key");
    if !path.exists() {
        let out = Command::new(binary("sluice"))
            .arg("keygen")
            .output()
            .expect("sluice keygen");
        assert!(out.status.success(), "sluice keygen failed");
        std::fs::write(&path, &out.stdout).expect("writing the cluster key");
    }
    path
}

/// One `sluice serve` process and its data directory.
pub struct Node {
    /// Node id.
    pub id: NodeId,
    /// `127.0.0.1:port` of its public port.
    pub addr: String,
    /// `127.0.0.1:port` of its cluster listener: its address in the
    /// membership.
    pub cluster_addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
    /// What its clients need (TLS, the administrator's key) when the node
    /// is secured.
    client_base: Options,
}

impl Node {
    fn new(
        id: NodeId,
        addr: String,
        cluster_addr: String,
        dir: &Path,
        mut args: Vec<String>,
    ) -> Node {
        if !args.iter().any(|a| a == "--cluster-listen") {
            args.push("--cluster-listen".into());
            args.push(cluster_addr.clone());
        }
        Node {
            id,
            addr,
            cluster_addr,
            data_dir: dir.join(format!("node-{id}")),
            log: dir.join(format!("node-{id}.log")),
            args,
            env: Vec::new(),
            child: None,
            client_base: Options::default(),
        }
    }

    /// A node (not started) with its data and log under `dir`, reached at
    /// `addr` (public) and `cluster_addr`, run with `args` (a `--data-dir`,
    /// and `--cluster-listen` unless given, are added) and `env`.
    pub fn with(
        id: NodeId,
        addr: String,
        cluster_addr: String,
        dir: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Node {
        let mut node = Node::new(id, addr, cluster_addr, dir, args);
        node.env = env;
        args_with_data_dir(&mut node);
        node
    }

    /// Changes the `--listen` and `--cluster-listen` addresses (a
    /// rescheduled pod gets new ones); takes effect at the next start.
    pub fn move_to(&mut self, addr: String, cluster_addr: String) {
        for (flag, value) in [("--listen", &addr), ("--cluster-listen", &cluster_addr)] {
            if let Some(i) = self.args.iter().position(|a| a == flag) {
                self.args[i + 1] = value.clone();
            }
        }
        self.addr = addr;
        self.cluster_addr = cluster_addr;
    }

    /// Starts the process (again) with its original flags.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "node {} is already running", self.id);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("node log file");
        let child = Command::new(binary("sluice"))
            .arg("serve")
            .args(&self.args)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn".into()),
            )
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning sluice");
        self.child = Some(child);
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9`: the process dies at once, losing nothing that was fsynced.
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Sends SIGTERM and waits for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> ExitStatus {
        let mut c = self.child.take().expect("node is running");
        unsafe {
            libc::kill(c.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = c.try_wait().expect("waiting for sluice") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                panic!(
                    "node {} did not exit within {timeout:?} of SIGTERM",
                    self.id
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for the process to exit by itself (a node that
    /// refuses to start), returning how it exited.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.child.as_mut()?;
            if let Some(status) = c.try_wait().expect("waiting for sluice") {
                self.child = None;
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Deletes the data directory (the node must be stopped).
    pub fn wipe(&mut self) {
        assert!(!self.is_running(), "stop node {} before wiping it", self.id);
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }

    /// Everything the node has logged so far.
    pub fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let _ = f.read_to_string(&mut s);
        }
        s
    }

    /// A client that talks to this node only (as the administrator, over
    /// TLS, when the node is secured).
    pub fn client(&self, deadline: Duration) -> Client {
        Client::with_options(
            [self.addr.as_str()],
            Options {
                deadline,
                ..self.client_base.clone()
            },
        )
        .expect("client")
    }

    /// Waits until the node's public port accepts connections (the node
    /// binds it before it announces itself); panics after `timeout`.
    pub async fn wait_listening(&self, timeout: Duration) {
        let addr = self.addr.clone();
        let what = format!("node {} to listen on {addr}", self.id);
        wait_for(timeout, &what, || {
            let addr = addr.clone();
            async move { tokio::net::TcpStream::connect(&addr).await.ok().map(drop) }
        })
        .await
    }

    /// What this node's clients are given (TLS, credentials).
    pub fn client_options(&self) -> Options {
        self.client_base.clone()
    }

    /// Fetches this node's Prometheus metrics.
    pub fn metrics(&self) -> String {
        scrape(&self.addr)
    }

    /// This node's own view of the cluster (a local status call with
    /// `deadline`); fails the test if it does not answer.
    pub async fn local_status(&self, deadline: Duration) -> GetClusterStatusResponse {
        self.client(deadline)
            .cluster_status(true)
            .await
            .expect("the node's own status")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// GET /metrics over plain HTTP/1.1.
pub fn scrape(addr: &str) -> String {
    http_get(addr, "/metrics")
        .map(|(_, body)| body)
        .expect("GET /metrics")
}

/// GET `path` over plain HTTP/1.1: the status code and the whole response
/// text, or `None` if the node does not answer.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    let sock: std::net::SocketAddr = addr.parse().ok()?;
    // Bounded throughout: a paused process must not hang a test's wait.
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s.set_write_timeout(Some(Duration::from_secs(5))).ok();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    let code = text.split_whitespace().nth(1)?.parse().ok()?;
    Some((code, text))
}

/// Sum of every series of metric `name` in Prometheus text.
pub fn metric_value(text: &str, name: &str) -> f64 {
    metric_series(text, name, "")
}

/// Sum of the series of metric `name` whose line contains `label` (say
/// `proposed="true"`; empty: every series).
pub fn metric_series(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name).is_some_and(|rest| {
                (rest.starts_with(' ') || rest.starts_with('{')) && rest.contains(label)
            })
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// A client of `addrs` (tried in order) that retries a call for up to a
/// minute: through elections, restarts and membership changes.
pub fn patient_client(addrs: Vec<String>) -> Client {
    Client::with_options(
        addrs,
        Options {
            deadline: Duration::from_secs(60),
            ..Options::default()
        },
    )
    .expect("client")
}

/// Receives from `queue` (without deleting, each message hidden for an
/// hour) until every body in `want` was seen or the queue has nothing more
/// to give; returns the bodies seen.
pub async fn receive_bodies(
    client: &Client,
    queue: &str,
    want: &std::collections::BTreeSet<String>,
) -> std::collections::BTreeSet<String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut empty_rounds = 0;
    while !want.is_subset(&seen) && empty_rounds < 5 {
        let r = client
            .receive_from(queue, 10, Some(3600), Some(0))
            .await
            .expect("receive");
        if r.messages.is_empty() {
            empty_rounds += 1;
        }
        seen.extend(r.messages.into_iter().map(|m| m.body));
    }
    seen
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after
/// `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `client`'s own status (a local status call) every 50 ms until
/// `pick` takes it, and returns what `pick` made of it; panics after
/// `timeout` naming `what`.
pub async fn wait_for_status<T>(
    client: &Client,
    timeout: Duration,
    what: &str,
    pick: impl Fn(GetClusterStatusResponse) -> Option<T>,
) -> T {
    wait_for(timeout, what, || async {
        client.cluster_status(true).await.ok().and_then(&pick)
    })
    .await
}

/// A cluster of `sluice` processes in a temporary directory.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    extra: Vec<String>,
    /// Its keys and certificates, when secured.
    pub pki: Option<pki::Pki>,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) forming a cluster by `--peers`, each
    /// also given `extra` flags.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        Self::start_with(n, extra, false, None)
    }

    /// Like [`Cluster::start`], with the nodes' directories under `parent`
    /// rather than the system's temporary directory (where a function's
    /// private /tmp would hide them from it).
    pub fn start_in(parent: &Path, n: u64, extra: &[&str]) -> Cluster {
        Self::start_with(n, extra, false, Some(parent))
    }

    /// Like [`Cluster::start`], secured: TLS on both listeners, mutual TLS
    /// between nodes, authentication; [`Cluster::client`] and the nodes'
    /// clients act as the administrator.
    pub fn start_secured(n: u64, extra: &[&str]) -> Cluster {
        Self::start_with(n, extra, true, None)
    }

    fn start_with(n: u64, extra: &[&str], secured: bool, parent: Option<&Path>) -> Cluster {
        let mut builder = tempfile::Builder::new();
        builder.prefix("sluice-cluster-");
        let dir = match parent {
            Some(parent) => builder.tempdir_in(parent),
            None => builder.tempdir(),
        }
        .expect("temp dir");
        let pki = secured.then(|| pki::Pki::new(dir.path()));
        let addrs: BTreeMap<NodeId, (String, String)> = (1..=n)
            .map(|id| {
                (
                    id,
                    (
                        format!("127.0.0.1:{}", free_port()),
                        format!("127.0.0.1:{}", free_port()),
                    ),
                )
            })
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, (_, cluster))| format!("{id}={cluster}"))
            .collect::<Vec<_>>()
            .join(",");
        let key = cluster_key(dir.path());
        let extra: Vec<String> = TIMING
            .iter()
            .chain(extra)
            .map(|s| s.to_string())
            .chain(["--cluster-key-file".to_string(), key.display().to_string()])
            .collect();
        let mut nodes = BTreeMap::new();
        for (id, (addr, cluster)) in &addrs {
            let mut args = vec![
                "--node-id".to_string(),
                id.to_string(),
                "--listen".into(),
                addr.clone(),
                "--peers".into(),
                peers.clone(),
            ];
            args.extend(extra.iter().cloned());
            if let Some(p) = &pki {
                args.extend(p.node_args(*id));
            }
            let mut node = Node::new(*id, addr.clone(), cluster.clone(), dir.path(), args);
            if let Some(p) = &pki {
                node.client_base = p.options(Options::default(), Some(p.admin.clone()));
            }
            args_with_data_dir(&mut node);
            node.start();
            nodes.insert(*id, node);
        }
        Cluster {
            dir,
            nodes,
            extra,
            pki,
        }
    }

    /// Options for a client of this cluster: TLS and `credentials` when
    /// secured.
    pub fn options(
        &self,
        base: Options,
        credentials: Option<sluice_client::Credentials>,
    ) -> Options {
        match &self.pki {
            Some(p) => p.options(base, credentials),
            None => base,
        }
    }

    /// The administrator's options (TLS and key when secured).
    pub fn admin_options(&self, base: Options) -> Options {
        let admin = self.pki.as_ref().map(|p| p.admin.clone());
        self.options(base, admin)
    }

    /// Starts a new node with `--join`; it waits to be added. Returns its
    /// cluster address (what `add-learner` takes).
    pub fn start_joining(&mut self, id: NodeId) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let cluster = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--join".into(),
        ];
        args.extend(self.extra.iter().cloned());
        if let Some(p) = &self.pki {
            args.extend(p.node_args(id));
        }
        let mut node = Node::new(id, addr, cluster.clone(), self.dir.path(), args);
        node.client_base = self.admin_options(Options::default());
        args_with_data_dir(&mut node);
        node.start();
        self.nodes.insert(id, node);
        cluster
    }

    /// The node with `id`.
    pub fn node(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// The ids of every node but `id` (the followers, when `id` leads), in
    /// order.
    pub fn others(&self, id: NodeId) -> Vec<NodeId> {
        self.nodes.keys().copied().filter(|n| *n != id).collect()
    }

    /// A client of the first node but `leader` alone (a follower, which
    /// forwards what it cannot answer), each call given `deadline`.
    pub fn follower_client(&self, leader: NodeId, deadline: Duration) -> Client {
        self.nodes[&self.others(leader)[0]].client(deadline)
    }

    /// Addresses of every node, running or not.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// What an AWS SDK is pointed at: every node's `https://ADDR`, comma
    /// separated, and the CA its certificates chain to (a secured cluster).
    pub fn sdk_endpoints(&self) -> (String, PathBuf) {
        let endpoints = self
            .addrs()
            .iter()
            .map(|a| format!("https://{a}"))
            .collect::<Vec<_>>()
            .join(",");
        let ca = self.pki.as_ref().expect("a secured cluster").ca.clone();
        (endpoints, ca)
    }

    /// A client of every node (the administrator, when secured).
    pub fn client(&self) -> Client {
        Client::with_options(self.addrs(), self.admin_options(Options::default())).expect("client")
    }

    /// A client of every node that tries the `first`-th (0-based, wrapping)
    /// first, and retries for up to a minute: one per simulated
    /// application, to spread them over the nodes.
    pub fn client_from(&self, first: usize) -> Client {
        let mut addrs = self.addrs();
        let n = addrs.len();
        addrs.rotate_left(first % n);
        Client::with_options(
            addrs,
            self.admin_options(Options {
                deadline: Duration::from_secs(60),
                ..Options::default()
            }),
        )
        .expect("client")
    }

    /// A client of every node that signs with `credentials` (anonymous when
    /// `None`) and makes a single attempt per call.
    pub fn single_attempt_client(&self, credentials: Option<sluice_client::Credentials>) -> Client {
        Client::with_options(
            self.addrs(),
            self.options(
                Options {
                    deadline: Duration::ZERO,
                    ..Options::default()
                },
                credentials,
            ),
        )
        .expect("client")
    }

    /// A client of user principal `name`, made (through `admin`) with a
    /// policy of its own allowing `action` on `resource` and nothing else,
    /// making a single attempt per call: the caller of the authorisation
    /// tests.
    pub async fn client_allowed(
        &self,
        admin: &Client,
        name: &str,
        action: &str,
        resource: &str,
    ) -> Client {
        let policy = format!("{name}-policy");
        let document = serde_json::json!({
            "Statement": {"Effect": "Allow", "Action": action, "Resource": resource}
        });
        put_policy(admin, &policy, &document.to_string())
            .await
            .expect("put policy");
        let credentials = create_principal(admin, name, "user", &[&policy]).await;
        self.single_attempt_client(Some(credentials))
    }

    /// A client of every node except `except`.
    pub fn client_without(&self, except: NodeId) -> Client {
        Client::with_options(
            self.nodes
                .values()
                .filter(|n| n.id != except)
                .map(|n| n.addr.clone()),
            self.admin_options(Options::default()),
        )
        .expect("client")
    }

    /// Waits until a running node reports itself leader, and returns it.
    pub async fn leader(&mut self, timeout: Duration) -> NodeId {
        let running: Vec<(NodeId, String)> = self
            .nodes
            .values_mut()
            .filter_map(|n| n.is_running().then(|| (n.id, n.addr.clone())))
            .collect();
        let base = self.admin_options(Options::default());
        wait_for(timeout, "a leader", || {
            let running = running.clone();
            let base = base.clone();
            async move {
                for (id, addr) in running {
                    let client = Client::with_options(
                        [addr.as_str()],
                        Options {
                            deadline: Duration::from_millis(200),
                            attempt_timeout: Duration::from_millis(500),
                            ..base.clone()
                        },
                    )
                    .ok()?;
                    if let Ok(s) = client.cluster_status(true).await {
                        if s.state == "leader" && s.leader_id == Some(id) {
                            return Some(id);
                        }
                    }
                }
                None
            }
        })
        .await
    }

    /// The cluster directory (logs and data).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

/// The Python packages a function vendors: the official runtime interface
/// client and what it needs.
const RUNTIME_PACKAGES: &[&str] = &["awslambdaric", "simplejson", "snapshot-restore-py"];

/// Copies the runtime interface client's packages, as this machine's
/// `python3` has them installed, into `dir`: a function's code carries its
/// dependencies, as a Lambda deployment package does, so it runs wherever
/// the worker runs it (as an unprivileged user that cannot read a Python
/// installed under root's home).
pub fn vendor_runtime(dir: &Path) {
    let script = r#"
import importlib.metadata as m, os, shutil, sys
dest = sys.argv[1]
for name in sys.argv[2:]:
    dist = m.distribution(name)
    for f in dist.files or []:
        p = str(f)
        if p.startswith("..") or ".dist-info" in p or "__pycache__" in p:
            continue
        target = os.path.join(dest, p)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy(dist.locate_file(f), target)
"#;
    let mut args: Vec<&OsStr> = vec!["-c".as_ref(), script.as_ref(), dir.as_os_str()];
    args.extend(RUNTIME_PACKAGES.iter().map(OsStr::new));
    run_python(&args, "vendoring the Python runtime client");
}

/// Runs `python3` with `args`; fails the test, naming `what` and showing
/// its standard error, unless it succeeds. Returns its standard output.
pub fn run_python(args: &[&OsStr], what: &str) -> String {
    run_python_with(args, None, what)
}

/// [`run_python`] with `path` first on `PYTHONPATH` (a second version of
/// a package, installed with `pip install --target`).
pub fn run_python_with(args: &[&OsStr], path: Option<&Path>, what: &str) -> String {
    let mut command = Command::new("python3");
    command.args(args);
    if let Some(path) = path {
        command.env("PYTHONPATH", path);
    }
    let out = command.output().expect("running python3");
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Writes `app` as `app.py` next to the Python bootstrap of the custom
/// runtime convention (`python3 -m awslambdaric "$_HANDLER"`, the
/// official runtime interface client, vendored into the package) and zips
/// the directory.
pub fn python_function(dir: &Path, app: &str) -> Vec<u8> {
    vendor_runtime(dir);
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(dir.join("app.py"), app).expect("writing app.py");
    let bootstrap = dir.join("bootstrap");
    std::fs::write(
        &bootstrap,
        "#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n",
    )
    .expect("writing bootstrap");
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))
        .expect("making bootstrap executable");
    sluice_client::zip_directory(dir).expect("zipping the function")
}

/// Kills a child process, if any, and reaps it.
fn kill_child(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// One `sluice worker` process registered with a cluster.
pub struct WorkerProcess {
    /// Worker id.
    pub id: String,
    /// `127.0.0.1:port` of its WorkerHost service.
    pub addr: String,
    log: PathBuf,
    child: Option<Child>,
}

impl WorkerProcess {
    /// Starts `sluice worker` with id `id`, registering with every node of
    /// `cluster`; its files go in the cluster's directory.
    pub fn start(cluster: &Cluster, id: &str) -> WorkerProcess {
        Self::start_with(cluster, id, None)
    }

    /// Like [`WorkerProcess::start`]; on a secured cluster it trusts the
    /// cluster's CA and signs with `credentials` (a worker principal's
    /// access key, written to a file for `--credentials-file`).
    pub fn start_with(
        cluster: &Cluster,
        id: &str,
        credentials: Option<&sluice_client::Credentials>,
    ) -> WorkerProcess {
        Self::start_with_args(cluster, id, credentials, &[])
    }

    /// Like [`WorkerProcess::start_with`], with `extra` flags for `sluice
    /// worker`.
    pub fn start_with_args(
        cluster: &Cluster,
        id: &str,
        credentials: Option<&sluice_client::Credentials>,
        extra: &[&str],
    ) -> WorkerProcess {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut secured: Vec<String> = Vec::new();
        if let Some(p) = &cluster.pki {
            secured.extend(["--tls-ca".into(), p.ca.display().to_string()]);
        }
        if let Some(c) = credentials {
            let file = cluster.dir().join(format!("{id}.credentials"));
            std::fs::write(&file, c.to_file_text()).expect("writing worker credentials");
            secured.extend(["--credentials-file".into(), file.display().to_string()]);
        }
        let log_path = cluster.dir().join(format!("{id}.log"));
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("worker log file");
        let child = Command::new(binary("sluice"))
            .arg("worker")
            .args(["--cluster", &cluster.addrs().join(",")])
            .args(["--listen", &addr, "--id", id])
            .args(&secured)
            .args(extra)
            .arg("--data-dir")
            .arg(cluster.dir().join(id))
            .env(
                "RUST_LOG",
                // The queue pollers' batches: which worker polled what.
                std::env::var("SLUICE_TEST_LOG")
                    .unwrap_or_else(|_| "info,h2=warn,sluice_worker::queue_poller=debug".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .expect("spawning sluice worker");
        WorkerProcess {
            id: id.to_string(),
            addr,
            log: log_path,
            child: Some(child),
        }
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// `kill -9` (its functions die with it).
    pub fn kill9(&mut self) {
        kill_child(&mut self.child);
    }

    /// Everything the worker has logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- worker {} log ----\n{}", self.id, self.log_text());
        }
        self.kill9();
    }
}

fn args_with_data_dir(node: &mut Node) {
    node.args.push("--data-dir".into());
    node.args.push(node.data_dir.display().to_string());
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            node.kill9();
        }
        if std::thread::panicking() {
            for node in self.nodes.values() {
                let log = node.log_text();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("---- node {} log (last {} lines) ----", node.id, tail.len());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Where the records of a log segment (allocated ahead, zero-filled) end:
/// the segment's records are walked from its 32-byte header, each a 16-byte
/// header (payload length first) and its payload, up to the first all-zero
/// header. (The last non-zero byte is not it: a record may end in zeros.)
pub fn data_end(bytes: &[u8]) -> usize {
    const SEGMENT_HEADER: usize = 32;
    const RECORD_HEADER: usize = 16;
    let mut at = SEGMENT_HEADER.min(bytes.len());
    while let Some(header) = bytes.get(at..at + RECORD_HEADER) {
        if header.iter().all(|b| *b == 0) {
            break;
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let next = at + RECORD_HEADER + len;
        if next > bytes.len() {
            break;
        }
        at = next;
    }
    at
}
