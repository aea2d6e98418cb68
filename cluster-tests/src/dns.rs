//! A cluster that finds itself by DNS name, the way a Kubernetes
//! StatefulSet's pods do (`sluice serve --peer-dns`), on loopback.
//!
//! Each "pod" (ordinal k) gets its own loopback address and the same port,
//! and the name `sluice-k.sluice-peers.test`. The names are served by a
//! hosts-style file the nodes read (`SLUICE_HOSTS_FILE`): a name is listed
//! while its pod exists, as a headless Service with `publishNotReadyAddresses`
//! publishes it, so starting a pod lists it, a pod whose process has exited
//! is unlisted, and a rescheduled pod is listed at its new address.

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::PathBuf;
use std::time::Duration;

use sluice_client::{Client, Options};

use crate::{http_get, patient_client, wait_for, Node, NodeId, TIMING};

/// The most pods a test cluster has (`--max-nodes`).
pub const MAX_NODES: u64 = 7;

/// A `--peer-dns` cluster of `sluice serve` processes.
pub struct DnsCluster {
    dir: tempfile::TempDir,
    hosts: PathBuf,
    port: u16,
    /// The pods by ordinal (node id = ordinal + 1).
    pub pods: BTreeMap<u64, Node>,
    /// Where each pod's name points, while it exists.
    listed: BTreeMap<u64, String>,
    /// Moves so far: a rescheduled pod's address changes.
    generation: BTreeMap<u64, u64>,
    remove_after_s: u64,
}

impl DnsCluster {
    /// An empty cluster (no pods yet) whose leader removes a member gone for
    /// `remove_after_s`; ordinal 0 founds it once ordinals 1 and 2 answer
    /// (`--bootstrap-expect 3`).
    pub fn new(remove_after_s: u64) -> DnsCluster {
        let dir = tempfile::Builder::new()
            .prefix("sluice-dns-")
            .tempdir()
            .expect("temp dir");
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "").expect("hosts file");
        let port = (0..200)
            .map(|i| 20_000 + ((std::process::id() as u16).wrapping_mul(31) % 10_000) + i * 7)
            .find(|p| {
                (0..MAX_NODES * 3).all(|k| {
                    TcpListener::bind((ip(k).as_str(), *p)).is_ok()
                        && TcpListener::bind((ip(k).as_str(), *p + 1)).is_ok()
                })
            })
            .expect("a port free on every test address");
        DnsCluster {
            dir,
            hosts,
            port,
            pods: BTreeMap::new(),
            listed: BTreeMap::new(),
            generation: BTreeMap::new(),
            remove_after_s,
        }
    }

    /// The pod's DNS name.
    pub fn name(ordinal: u64) -> String {
        format!("sluice-{ordinal}.sluice-peers.test")
    }

    /// The pod's current public `ip:port`.
    pub fn addr(&self, ordinal: u64) -> String {
        let slot = ordinal + MAX_NODES * self.generation.get(&ordinal).copied().unwrap_or(0);
        format!("{}:{}", ip(slot), self.port)
    }

    /// The pod's current cluster `ip:port` (the public port's next).
    pub fn cluster_addr(&self, ordinal: u64) -> String {
        let slot = ordinal + MAX_NODES * self.generation.get(&ordinal).copied().unwrap_or(0);
        format!("{}:{}", ip(slot), self.port + 1)
    }

    fn write_hosts(&self) {
        let text: String = self
            .listed
            .iter()
            .map(|(k, a)| {
                let ip = a.rsplit_once(':').expect("ip:port").0;
                format!("{ip} {}\n", DnsCluster::name(*k))
            })
            .collect();
        let tmp = self.hosts.with_extension("new");
        std::fs::write(&tmp, text).expect("hosts file");
        std::fs::rename(&tmp, &self.hosts).expect("hosts file");
    }

    /// Creates (or recreates, with its volume) and starts pod `ordinal`,
    /// then publishes its name.
    pub fn start(&mut self, ordinal: u64) {
        let addr = self.addr(ordinal);
        let cluster_addr = self.cluster_addr(ordinal);
        if !self.pods.contains_key(&ordinal) {
            let key = crate::cluster_key(self.dir.path());
            let mut args: Vec<String> = vec![
                "--cluster-key-file".into(),
                key.display().to_string(),
                "--peer-dns".into(),
                format!("sluice-{{ordinal}}.sluice-peers.test:{}", self.port + 1),
                "--ordinal".into(),
                ordinal.to_string(),
                "--listen".into(),
                addr.clone(),
                "--max-nodes".into(),
                MAX_NODES.to_string(),
                "--remove-after-s".into(),
                self.remove_after_s.to_string(),
                "--bootstrap-expect".into(),
                "3".into(),
                "--in-process-worker".into(),
                "false".into(),
            ];
            args.extend(TIMING.iter().map(|s| s.to_string()));
            let env = vec![(
                "SLUICE_HOSTS_FILE".to_string(),
                self.hosts.display().to_string(),
            )];
            let node = Node::with(
                ordinal + 1,
                addr.clone(),
                cluster_addr.clone(),
                self.dir.path(),
                args,
                env,
            );
            self.pods.insert(ordinal, node);
        }
        let pod = self.pods.get_mut(&ordinal).expect("pod");
        pod.move_to(addr.clone(), cluster_addr);
        pod.start();
        self.listed.insert(ordinal, addr);
        self.write_hosts();
    }

    /// Deletes pod `ordinal` the way Kubernetes does: SIGTERM, and once the
    /// process has exited its name stops resolving (the headless Service
    /// publishes not-ready addresses, which keeps a terminating pod's name
    /// until the pod is gone).
    pub fn stop(&mut self, ordinal: u64) {
        let pod = self.pods.get_mut(&ordinal).expect("pod");
        let status = pod.terminate(Duration::from_secs(40));
        assert!(status.success(), "pod {ordinal} exit on SIGTERM: {status}");
        self.listed.remove(&ordinal);
        self.write_hosts();
    }

    /// Gives pod `ordinal` a new address for its next start (a pod
    /// rescheduled onto another host keeps its name and volume).
    pub fn reschedule(&mut self, ordinal: u64) {
        *self.generation.entry(ordinal).or_insert(0) += 1;
    }

    /// A client of every address a pod has or may have, retrying for a
    /// minute.
    pub fn client(&self) -> Client {
        patient_client(
            (0..MAX_NODES * 3)
                .map(|slot| format!("{}:{}", ip(slot), self.port))
                .collect(),
        )
    }

    /// `GET /ready` of pod `ordinal`: its status code, if it answers.
    pub fn ready_code(&self, ordinal: u64) -> Option<u16> {
        http_get(&self.addr(ordinal), "/ready").map(|(code, _)| code)
    }

    /// The members, `node id → (role, address)`, as the leader sees them.
    pub async fn members(&self) -> Option<HashMap<NodeId, (String, String)>> {
        let client = Client::with_options(
            self.listed.values().cloned().collect::<Vec<_>>(),
            Options {
                deadline: Duration::from_secs(2),
                ..Options::default()
            },
        )
        .ok()?;
        let s = client.cluster_status(false).await.ok()?;
        Some(
            s.members
                .into_iter()
                .map(|m| (m.node_id, (m.role, m.address)))
                .collect(),
        )
    }

    /// Waits until the voters are exactly `ids`, with no learners, and
    /// every pod listed answers ready.
    pub async fn wait_for_voters(&self, ids: &[NodeId], timeout: Duration) {
        let what = format!("voters {ids:?}, all ready");
        wait_for(timeout, &what, || async {
            let members = self.members().await?;
            let mut voters: Vec<NodeId> = members
                .iter()
                .filter(|(_, (role, _))| role == "voter")
                .map(|(id, _)| *id)
                .collect();
            voters.sort();
            if voters != ids || members.len() != ids.len() {
                return None;
            }
            let all_ready = ids.iter().all(|id| self.ready_code(id - 1) == Some(200));
            all_ready.then_some(())
        })
        .await
    }
}

/// The loopback address of address slot `k` (all of 127.0.0.0/8 reaches
/// this host, with no setup).
fn ip(k: u64) -> String {
    format!("127.0.0.{}", 11 + k)
}

impl Drop for DnsCluster {
    fn drop(&mut self) {
        for pod in self.pods.values_mut() {
            pod.kill9();
        }
        if std::thread::panicking() {
            for (k, pod) in &self.pods {
                let log = pod.log_text();
                // A panic's message may be far above the last lines.
                let lines: Vec<&str> = log.lines().collect();
                for (i, l) in lines.iter().enumerate() {
                    if l.contains("panicked at") {
                        eprintln!("--- pod {k} panicked ---");
                        for l in &lines[i..(i + 4).min(lines.len())] {
                            eprintln!("{l}");
                        }
                    }
                }
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                eprintln!("--- pod {k} (last 40 lines) ---");
                for l in tail.into_iter().rev() {
                    eprintln!("{l}");
                }
            }
        }
    }
}
