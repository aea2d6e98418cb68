//! Test harness: runs real `sluice serve` processes on loopback, each with its
//! own port and data directory, and controls them the way an operator (or a
//! fault) would: start, `kill -9`, SIGTERM, wipe, restart.
//!
//! The binaries are taken from the cargo target directory of the test
//! executable (`target/debug/sluice`), or from `$SLUICE_BIN_DIR`; build them
//! first with `cargo build --bins`.

pub mod chaos;
pub mod dns;
pub mod lazyfs;

use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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

/// Holds the other cluster tests of this test binary off while one runs: on
/// a 2-core machine, two clusters electing at once starve each other.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
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

/// One `sluice serve` process and its data directory.
pub struct Node {
    /// Node id.
    pub id: NodeId,
    /// `127.0.0.1:port`.
    pub addr: String,
    /// Data directory.
    pub data_dir: PathBuf,
    log: PathBuf,
    args: Vec<String>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Node {
    fn new(id: NodeId, addr: String, dir: &Path, args: Vec<String>) -> Node {
        Node {
            id,
            addr,
            data_dir: dir.join(format!("node-{id}")),
            log: dir.join(format!("node-{id}.log")),
            args,
            env: Vec::new(),
            child: None,
        }
    }

    /// A node (not started) with its data and log under `dir`, reached at
    /// `addr`, run with `args` (a `--data-dir` is added) and `env`.
    pub fn with(
        id: NodeId,
        addr: String,
        dir: &Path,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Node {
        let mut node = Node::new(id, addr, dir, args);
        node.env = env;
        args_with_data_dir(&mut node);
        node
    }

    /// Changes the `--listen` address and `addr` (a rescheduled pod gets a
    /// new address); takes effect at the next start.
    pub fn move_to(&mut self, addr: String) {
        if let Some(i) = self.args.iter().position(|a| a == "--listen") {
            self.args[i + 1] = addr.clone();
        }
        self.addr = addr;
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

    /// A client that talks to this node only.
    pub fn client(&self, deadline: Duration) -> Client {
        Client::with_options(
            [self.addr.as_str()],
            Options {
                deadline,
                ..Options::default()
            },
        )
        .expect("client")
    }

    /// Fetches this node's Prometheus metrics.
    pub fn metrics(&self) -> String {
        scrape(&self.addr)
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
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
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
    use sluice_client::sluice_proto::v1 as pb;
    let mut seen = std::collections::BTreeSet::new();
    let mut empty_rounds = 0;
    while !want.is_subset(&seen) && empty_rounds < 5 {
        let r = client
            .receive_message(pb::ReceiveMessageRequest {
                queue_name: queue.into(),
                max_number_of_messages: 10,
                visibility_timeout: Some(3600),
                wait_time_seconds: Some(0),
                ..Default::default()
            })
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

/// A cluster of `sluice` processes in a temporary directory.
pub struct Cluster {
    dir: tempfile::TempDir,
    /// The nodes by id.
    pub nodes: BTreeMap<NodeId, Node>,
    extra: Vec<String>,
}

impl Cluster {
    /// Starts `n` nodes (ids 1..=n) forming a cluster by `--peers`, each
    /// also given `extra` flags.
    pub fn start(n: u64, extra: &[&str]) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-cluster-")
            .tempdir()
            .expect("temp dir");
        let addrs: BTreeMap<NodeId, String> = (1..=n)
            .map(|id| (id, format!("127.0.0.1:{}", free_port())))
            .collect();
        let peers = addrs
            .iter()
            .map(|(id, a)| format!("{id}={a}"))
            .collect::<Vec<_>>()
            .join(",");
        let extra: Vec<String> = TIMING.iter().chain(extra).map(|s| s.to_string()).collect();
        let mut nodes = BTreeMap::new();
        for (id, addr) in &addrs {
            let mut args = vec![
                "--node-id".to_string(),
                id.to_string(),
                "--listen".into(),
                addr.clone(),
                "--peers".into(),
                peers.clone(),
            ];
            args.extend(extra.iter().cloned());
            let mut node = Node::new(*id, addr.clone(), dir.path(), args);
            args_with_data_dir(&mut node);
            node.start();
            nodes.insert(*id, node);
        }
        Cluster { dir, nodes, extra }
    }

    /// Starts a new node with `--join`; it waits to be added.
    pub fn start_joining(&mut self, id: NodeId) -> String {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--join".into(),
        ];
        args.extend(self.extra.iter().cloned());
        let mut node = Node::new(id, addr.clone(), self.dir.path(), args);
        args_with_data_dir(&mut node);
        node.start();
        self.nodes.insert(id, node);
        addr
    }

    /// The node with `id`.
    pub fn node(&mut self, id: NodeId) -> &mut Node {
        self.nodes.get_mut(&id).expect("no such node")
    }

    /// Addresses of every node, running or not.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// A client of every node.
    pub fn client(&self) -> Client {
        Client::new(self.addrs()).expect("client")
    }

    /// A client of every node that tries the `first`-th (0-based, wrapping)
    /// first, and retries for up to a minute: one per simulated
    /// application, to spread them over the nodes.
    pub fn client_from(&self, first: usize) -> Client {
        let mut addrs = self.addrs();
        let n = addrs.len();
        addrs.rotate_left(first % n);
        patient_client(addrs)
    }

    /// A client of every node except `except`.
    pub fn client_without(&self, except: NodeId) -> Client {
        Client::new(
            self.nodes
                .values()
                .filter(|n| n.id != except)
                .map(|n| n.addr.clone()),
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
        wait_for(timeout, "a leader", || {
            let running = running.clone();
            async move {
                for (id, addr) in running {
                    let client = Client::with_options(
                        [addr.as_str()],
                        Options {
                            deadline: Duration::from_millis(200),
                            attempt_timeout: Duration::from_millis(500),
                            ..Options::default()
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

/// Writes `app` as `app.py` next to the Python bootstrap of the custom
/// runtime convention (`python3 -m awslambdaric "$_HANDLER"`, the
/// official runtime interface client) and zips the directory.
pub fn python_function(dir: &Path, app: &str) -> Vec<u8> {
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
        let addr = format!("127.0.0.1:{}", free_port());
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
            .arg("--data-dir")
            .arg(cluster.dir().join(id))
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG").unwrap_or_else(|_| "info,h2=warn".into()),
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
