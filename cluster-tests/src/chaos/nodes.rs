//! The broker nodes of a chaos run, on the hosts of [`super::net`]: start,
//! `kill -9`, power loss, pause, clock offsets, wipe and rejoin.
//!
//! Power loss needs each node's data directory on `sluice-lazyfs` (a FUSE
//! filesystem that holds writes until they are fsynced): killing the node
//! and then telling the filesystem to crash throws away every write the
//! node had not made durable. Clock offsets use libfaketime, preloaded into
//! the node with a per-node offset file (wall clock only: timers keep the
//! real monotonic clock).

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use sluice_client::{Client, Options};

use super::net::{Net, NodeId};
use crate::binary;
use crate::lazyfs::LazyFs;

/// Where Debian's libfaketime lives.
const LIBFAKETIME: &str = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1";

/// How a chaos cluster is set up.
#[derive(Debug, Clone)]
pub struct Setup {
    /// Number of nodes.
    pub nodes: u64,
    /// Data directories on `sluice-lazyfs` (for power-loss faults).
    pub lazyfs: bool,
    /// Nodes run under libfaketime (for clock faults).
    pub faketime: bool,
    /// Extra `sluice serve` flags for every node.
    pub extra_args: Vec<String>,
    /// Nodes run secured: TLS on the public port, mutual TLS between nodes,
    /// and authentication (every client signs as the administrator).
    pub secure: bool,
    /// Each node's files on a small tmpfs of its own (for disk-full
    /// faults).
    pub small_disks: bool,
}

/// Size of a node's own filesystem with `small_disks`, MiB.
pub const SMALL_DISK_MB: u64 = 512;
/// The free space a node keeps on it (`--disk-reserve-mb`), MiB.
pub const SMALL_DISK_RESERVE_MB: u64 = 64;

/// The keys and certificates of a secured run, in its directory.
struct Secrets {
    /// The CA every node's certificate comes from (cluster and public).
    ca: PathBuf,
    /// The cluster key.
    key: PathBuf,
    /// The administrator's access key.
    admin: sluice_client::Credentials,
    admin_file: PathBuf,
}

impl Secrets {
    /// Makes a CA, a certificate per node naming its host, a cluster key
    /// and an administrator's access key under `dir`.
    fn make(dir: &Path, net: &Net, ids: &[NodeId]) -> Result<Secrets, String> {
        let write = |name: &str, text: &str| {
            let p = dir.join(name);
            std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
            Ok::<_, String>(p)
        };
        let ca = sluice_security::pki::Authority::new("chaos ca")?;
        let ca_path = write("ca.pem", &ca.cert_pem())?;
        for id in ids {
            let host = net.host(*id);
            let issued = ca.issue(
                &format!("node-{id}"),
                &[host.as_str(), "127.0.0.1"],
                sluice_security::pki::Validity::Days(2),
            )?;
            write(&format!("n{id}.pem"), &issued.cert_pem)?;
            write(&format!("n{id}.key"), &issued.key_pem)?;
        }
        let key = write(
            "cluster.key",
            &format!("{}\n", sluice_security::key::Key::generate().to_hex()),
        )?;
        let admin = sluice_client::Credentials::generate();
        let admin_file = write("admin.credentials", &admin.to_file_text())?;
        Ok(Secrets {
            ca: ca_path,
            key,
            admin,
            admin_file,
        })
    }
}

/// Whether this machine can run nodes over `sluice-lazyfs`.
pub fn lazyfs_available() -> bool {
    crate::lazyfs::unavailable().is_none()
}

/// Whether this process may mount filesystems (root) and `mount` exists.
pub fn small_disks_available() -> bool {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    root && Command::new("mount")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// How a stopped node's files are damaged.
#[derive(Debug, Clone, Copy)]
pub enum Damage {
    /// 16 bytes flipped in the middle of what a log segment holds.
    LogFlip,
    /// A log segment cut short somewhere in what it holds (fsynced records
    /// lost off its end).
    LogTruncate,
    /// 16 bytes flipped in the snapshot file.
    SnapshotFlip,
    /// Garbage written over the state store's file in places.
    StateGarbage,
}

/// Every kind of damage.
pub const DAMAGES: [Damage; 4] = [
    Damage::LogFlip,
    Damage::LogTruncate,
    Damage::SnapshotFlip,
    Damage::StateGarbage,
];

/// Where the records of a log segment end.
fn data_end(path: &Path) -> Result<u64, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    Ok(crate::data_end(&bytes) as u64)
}

/// Files of `dir` whose name ends with `ext`, in order.
fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == ext))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// Writes `bytes` at `offset` of `path` and fsyncs it (through lazyfs, the
/// damage is then on the disk, not in its cache).
fn write_at(path: &Path, offset: u64, bytes: &[u8]) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let f = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    f.write_all_at(bytes, offset)
        .and_then(|()| f.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Whether libfaketime is installed.
pub fn faketime_available() -> bool {
    Path::new(LIBFAKETIME).exists()
}

/// A node's data directory on `sluice-lazyfs`.
struct LazyDisk {
    backing: PathBuf,
    control: PathBuf,
    mounted: Option<LazyFs>,
}

/// One node: its process, and its filesystem when on lazyfs.
struct ChaosNode {
    id: NodeId,
    addr: String,
    /// What the node is given as its data directory (the lazyfs mount point
    /// when on lazyfs).
    data_dir: PathBuf,
    /// lazyfs: where its disk is, and the mounted filesystem.
    fs: Option<LazyDisk>,
    /// libfaketime offset file.
    clock_file: Option<PathBuf>,
    /// The node's own small filesystem (a tmpfs mount point), holding its
    /// data (or lazyfs's backing directory) and the ballast that fills it.
    disk: Option<PathBuf>,
    log: PathBuf,
    child: Option<Child>,
    paused: bool,
}

impl ChaosNode {
    fn spawn(&mut self, net: &Net, args: &[String]) -> Result<(), String> {
        if self.child.is_some() {
            return Err(format!("node {} is already running", self.id));
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| e.to_string())?;
        let mut cmd = net.command(self.id, &binary("sluice"));
        cmd.arg("serve")
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("SLUICE_TEST_LOG")
                    .unwrap_or_else(|_| "info,openraft=warn,sled=warn,h2=warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        if let Some(clock) = &self.clock_file {
            cmd.env("LD_PRELOAD", LIBFAKETIME)
                .env("FAKETIME_TIMESTAMP_FILE", clock)
                .env("FAKETIME_CACHE_DURATION", "1")
                .env("DONT_FAKE_MONOTONIC", "1");
        }
        self.child = Some(cmd.spawn().map_err(|e| format!("spawning sluice: {e}"))?);
        self.paused = false;
        Ok(())
    }

    fn signal(&self, sig: i32) {
        if let Some(c) = &self.child {
            // SAFETY: plain signal to our own child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.paused = false;
    }
}

/// The nodes of a chaos run.
pub struct ChaosCluster {
    net: Net,
    setup: Setup,
    dir: PathBuf,
    nodes: BTreeMap<NodeId, ChaosNode>,
    peers: String,
    secrets: Secrets,
}

impl ChaosCluster {
    /// Starts `setup.nodes` nodes on `net`, keeping data and logs under
    /// `dir`; they form a cluster by `--peers`.
    pub fn start(net: Net, setup: Setup, dir: &Path) -> Result<ChaosCluster, String> {
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let peers = (1..=setup.nodes)
            .map(|id| format!("{id}={}", net.cluster_addr(id)))
            .collect::<Vec<_>>()
            .join(",");
        let ids: Vec<NodeId> = (1..=setup.nodes).collect();
        let secrets = Secrets::make(dir, &net, &ids)?;
        let mut nodes = BTreeMap::new();
        for id in 1..=setup.nodes {
            let disk = setup.small_disks.then(|| dir.join(format!("n{id}-fs")));
            if let Some(d) = &disk {
                std::fs::create_dir_all(d).map_err(|e| e.to_string())?;
                let mounted = Command::new("mount")
                    .args([
                        "-t",
                        "tmpfs",
                        "-o",
                        &format!("size={SMALL_DISK_MB}m"),
                        "tmpfs",
                    ])
                    .arg(d)
                    .status()
                    .map_err(|e| format!("mount: {e}"))?;
                if !mounted.success() {
                    return Err(format!("mounting a tmpfs at {} failed", d.display()));
                }
            }
            let under = disk.clone().unwrap_or_else(|| dir.to_path_buf());
            let data_dir = under.join(format!("n{id}-data"));
            let fs = setup.lazyfs.then(|| LazyDisk {
                backing: under.join(format!("n{id}-disk")),
                control: dir.join(format!("n{id}-lazyfs.sock")),
                mounted: None,
            });
            let clock_file = setup.faketime.then(|| dir.join(format!("n{id}-clock")));
            if let Some(f) = &clock_file {
                std::fs::write(f, "+0\n").map_err(|e| e.to_string())?;
            }
            nodes.insert(
                id,
                ChaosNode {
                    id,
                    addr: net.addr(id),
                    data_dir,
                    fs,
                    clock_file,
                    disk,
                    log: dir.join(format!("n{id}.log")),
                    child: None,
                    paused: false,
                },
            );
        }
        let mut c = ChaosCluster {
            net,
            setup,
            dir: dir.to_path_buf(),
            nodes,
            peers,
            secrets,
        };
        for id in c.ids() {
            let node = c.nodes.get_mut(&id).expect("node");
            if let Some(fs) = node.fs.as_mut() {
                std::fs::create_dir_all(&fs.backing).map_err(|e| e.to_string())?;
                std::fs::create_dir_all(&node.data_dir).map_err(|e| e.to_string())?;
                let mounted = LazyFs::start(&fs.backing, &node.data_dir, &fs.control)
                    .map_err(|e| format!("mounting lazyfs for node {id}: {e}"))?;
                fs.mounted = Some(mounted);
            } else {
                std::fs::create_dir_all(&node.data_dir).map_err(|e| e.to_string())?;
            }
            c.start_node(id)?;
        }
        Ok(c)
    }

    /// Node ids.
    pub fn ids(&self) -> Vec<NodeId> {
        self.nodes.keys().copied().collect()
    }

    /// The hosts.
    pub fn net(&self) -> &Net {
        &self.net
    }

    /// The setup.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// Every node's address.
    pub fn addrs(&self) -> Vec<String> {
        self.nodes.values().map(|n| n.addr.clone()).collect()
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: NodeId) -> String {
        self.nodes[&id].addr.clone()
    }

    /// Node `id`'s cluster listener's address (its address in the
    /// membership).
    pub fn cluster_addr(&self, id: NodeId) -> String {
        self.net.cluster_addr(id)
    }

    /// `base` with what a client of this run needs: TLS trusting its CA and
    /// the administrator's access key, when the run is secured.
    pub fn client_options(&self, base: Options) -> Options {
        if !self.setup.secure {
            return base;
        }
        Options {
            tls: sluice_client::ClientTls {
                enabled: true,
                ca: Some(self.secrets.ca.clone()),
                ..Default::default()
            },
            credentials: Some(self.secrets.admin.clone()),
            ..base
        }
    }

    fn args(&self, id: NodeId, join: bool) -> Vec<String> {
        let node = &self.nodes[&id];
        let path = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--node-id".to_string(),
            id.to_string(),
            "--listen".into(),
            node.addr.clone(),
            "--cluster-listen".into(),
            self.net.cluster_addr(id),
            "--data-dir".into(),
            path(&node.data_dir),
            "--cluster-key-file".into(),
            path(&self.secrets.key),
        ];
        if self.setup.secure {
            let cert = self.dir.join(format!("n{id}.pem"));
            let key = self.dir.join(format!("n{id}.key"));
            args.extend([
                "--tls-cert".into(),
                path(&cert),
                "--tls-key".into(),
                path(&key),
                "--cluster-ca".into(),
                path(&self.secrets.ca),
                "--auth".into(),
                "--admin-credentials-file".into(),
                path(&self.secrets.admin_file),
            ]);
        } else if matches!(self.net, Net::Namespaces(_)) {
            args.push("--insecure".into());
        }
        if join {
            args.push("--join".into());
        } else {
            args.push("--peers".into());
            args.push(self.peers.clone());
        }
        args.extend(crate::TIMING.iter().map(|s| s.to_string()));
        if self.setup.small_disks {
            args.extend([
                "--disk-reserve-mb".to_string(),
                SMALL_DISK_RESERVE_MB.to_string(),
            ]);
        }
        args.extend(self.setup.extra_args.iter().cloned());
        args
    }

    /// Starts a stopped node with the cluster's peer list (it resumes from
    /// its data directory).
    pub fn start_node(&mut self, id: NodeId) -> Result<(), String> {
        let args = self.args(id, false);
        let net = &self.net;
        self.nodes.get_mut(&id).expect("node").spawn(net, &args)
    }

    /// Starts a wiped node that waits to be added as a learner.
    pub fn start_joining(&mut self, id: NodeId) -> Result<(), String> {
        let args = self.args(id, true);
        let net = &self.net;
        self.nodes.get_mut(&id).expect("node").spawn(net, &args)
    }

    /// Whether node `id` has a process (running or paused).
    /// A node that exited by itself (it refused to start, or stopped after
    /// a storage failure) is reaped, so that it can be started again.
    pub fn is_up(&mut self, id: NodeId) -> bool {
        let node = self.nodes.get_mut(&id).expect("node");
        let exited = match &mut node.child {
            Some(c) => !matches!(c.try_wait(), Ok(None)),
            None => return false,
        };
        if exited {
            node.child = None;
            node.paused = false;
        }
        !exited
    }

    /// `kill -9`.
    pub fn kill(&mut self, id: NodeId) {
        self.nodes.get_mut(&id).expect("node").kill9();
    }

    /// Power loss: `kill -9`, then every write the node had not fsynced is
    /// lost. Without lazyfs it is a plain kill.
    pub fn lose_power(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("node");
        node.kill9();
        match node.fs.as_ref().and_then(|f| f.mounted.as_ref()) {
            Some(fs) => fs.crash().map_err(|e| format!("lazyfs crash: {e}")),
            None => Ok(()),
        }
    }

    /// `SIGSTOP`.
    pub fn pause(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        node.signal(libc::SIGSTOP);
        node.paused = true;
    }

    /// `SIGCONT`.
    pub fn resume(&mut self, id: NodeId) {
        let node = self.nodes.get_mut(&id).expect("node");
        node.signal(libc::SIGCONT);
        node.paused = false;
    }

    /// Sets node `id`'s wall clock `seconds` away from the real one (libfaketime
    /// rereads its offset file within a second).
    pub fn set_clock_offset(&mut self, id: NodeId, seconds: i64) -> Result<(), String> {
        let node = &self.nodes[&id];
        let Some(f) = &node.clock_file else {
            return Err("clock faults need libfaketime".into());
        };
        // Write and rename, so the library never reads half a line.
        let tmp = f.with_extension("tmp");
        std::fs::write(&tmp, format!("{seconds:+}\n")).map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, f).map_err(|e| e.to_string())
    }

    /// Fills node `id`'s own filesystem until `leave` bytes are free.
    pub fn fill_disk(&self, id: NodeId, leave: u64) -> Result<u64, String> {
        let Some(disk) = &self.nodes[&id].disk else {
            return Err("disk-full faults need small disks".into());
        };
        crate::disk::fill(disk, leave).map(|(_, written)| written)
    }

    /// Removes the ballast from node `id`'s filesystem.
    pub fn free_disk(&self, id: NodeId) -> Result<(), String> {
        if let Some(disk) = &self.nodes[&id].disk {
            match std::fs::remove_file(disk.join(crate::disk::BALLAST)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(())
    }

    /// Damages a stopped node's files; says what was done, or why nothing
    /// could be (no such file yet).
    pub fn damage(&mut self, id: NodeId, damage: Damage, pick: u64) -> Result<String, String> {
        let node = &self.nodes[&id];
        if node.child.is_some() {
            return Err(format!("stop node {id} before damaging it"));
        }
        let data = &node.data_dir;
        let segments = files_with(&data.join("log"), "seg");
        let garbage = |n: usize| -> Vec<u8> {
            (0..n as u64)
                .map(|i| (pick.wrapping_add(i).wrapping_mul(0x9E37_79B9) >> 11) as u8)
                .collect()
        };
        match damage {
            Damage::LogFlip => {
                // Kept segments (purged, holding queued bodies) too.
                let mut segments = segments;
                segments.extend(files_with(&data.join("log").join("kept"), "seg"));
                let Some(seg) = segments.get(pick as usize % segments.len().max(1)) else {
                    return Err("no log segment".into());
                };
                let len = data_end(seg)?;
                if len < 64 {
                    return Err("log segment too short".into());
                }
                let at = len / 4 + pick % (len / 2);
                let mut bytes = vec![0u8; 16];
                {
                    use std::os::unix::fs::FileExt;
                    File::open(seg)
                        .and_then(|f| f.read_exact_at(&mut bytes, at))
                        .map_err(|e| e.to_string())?;
                }
                for b in &mut bytes {
                    *b ^= 0xff;
                }
                write_at(seg, at, &bytes)?;
                Ok(format!("16 bytes flipped at {at} of {}", seg.display()))
            }
            Damage::LogTruncate => {
                // The last segment: where the log's end is.
                let Some(seg) = segments.last() else {
                    return Err("no log segment".into());
                };
                let len = data_end(seg)?;
                if len < 64 {
                    return Err("log segment too short".into());
                }
                let at = len / 2 + pick % (len / 2);
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(seg)
                    .map_err(|e| e.to_string())?;
                f.set_len(at)
                    .and_then(|()| f.sync_all())
                    .map_err(|e| e.to_string())?;
                Ok(format!(
                    "{} cut to {at} bytes ({} held)",
                    seg.display(),
                    len
                ))
            }
            Damage::SnapshotFlip => {
                let snaps = files_with(&data.join("snapshots"), "snap");
                let Some(snap) = snaps.last() else {
                    return Err("no snapshot".into());
                };
                let len = std::fs::metadata(snap).map_err(|e| e.to_string())?.len();
                let at = pick % len.max(1);
                write_at(snap, at, &garbage(16))?;
                Ok(format!("16 bytes of garbage at {at} of {}", snap.display()))
            }
            Damage::StateGarbage => {
                let db = data.join("db").join("db");
                let len = std::fs::metadata(&db).map_err(|e| e.to_string())?.len();
                for part in 1..4 {
                    write_at(&db, len * part / 4, &garbage(4096.min(len as usize / 8)))?;
                }
                Ok(format!("garbage in three places of {}", db.display()))
            }
        }
    }

    /// Empties a stopped node's data directory.
    pub fn wipe(&mut self, id: NodeId) -> Result<(), String> {
        let node = self.nodes.get_mut(&id).expect("node");
        if node.child.is_some() {
            return Err(format!("stop node {id} before wiping it"));
        }
        let entries = std::fs::read_dir(&node.data_dir).map_err(|e| e.to_string())?;
        for e in entries {
            let path = e.map_err(|e| e.to_string())?.path();
            let r = if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            };
            r.map_err(|e| format!("wiping {}: {e}", path.display()))?;
        }
        Ok(())
    }

    /// A client of node `id` only, making one attempt per call.
    pub fn client_of(&self, id: NodeId, timeout: Duration) -> Client {
        Client::with_options(
            [self.addr(id)],
            self.client_options(single_attempt(timeout)),
        )
        .expect("client")
    }

    /// A client of every node, making one attempt per call and moving to
    /// the next node after a failure; starts at node `first`.
    pub fn client_from(&self, first: NodeId, timeout: Duration) -> Client {
        let mut addrs = self.addrs();
        let n = addrs.len();
        addrs.rotate_left((first as usize + n - 1) % n);
        Client::with_options(addrs, self.client_options(single_attempt(timeout))).expect("client")
    }

    /// The leader, as the first node that answers says; None if none knows.
    pub async fn leader(&self) -> Option<NodeId> {
        for id in self.nodes.keys() {
            let c = self.client_of(*id, Duration::from_millis(500));
            if let Ok(s) = c.cluster_status(true).await {
                if let Some(l) = s.leader_id {
                    return Some(l);
                }
            }
        }
        None
    }

    /// Copies every node's log into `dest`.
    pub fn collect_logs(&self, dest: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dest)?;
        for node in self.nodes.values() {
            let mut text = String::new();
            if let Ok(mut f) = File::open(&node.log) {
                f.read_to_string(&mut text)?;
            }
            std::fs::write(dest.join(format!("n{}.log", node.id)), text)?;
        }
        Ok(())
    }

    /// The directory of the run's data.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Options for one attempt per call: the history records each call's one
/// outcome, and a retry of an ambiguous failure would be a second call.
fn single_attempt(timeout: Duration) -> Options {
    Options {
        deadline: Duration::ZERO,
        attempt_timeout: timeout,
        ..Options::default()
    }
}

impl Drop for ChaosCluster {
    fn drop(&mut self) {
        let _ = self.net.heal();
        for node in self.nodes.values_mut() {
            if node.paused {
                node.signal(libc::SIGCONT);
            }
            node.kill9();
        }
        // Unmount only once every node is gone, so that no node process (nor
        // the mount namespace `ip netns exec` gave it) still holds a mount.
        for node in self.nodes.values_mut() {
            if let Some(fs) = node.fs.as_mut() {
                // Dropping it unmounts.
                fs.mounted = None;
            }
            if let Some(d) = &node.disk {
                let _ = Command::new("umount").arg("-l").arg(d).status();
            }
        }
    }
}
