//! Node configuration: command-line flags, an optional TOML file with the
//! same keys, and their validation. Flags override the file; both override
//! the defaults, which make `sluice serve` a single-node cluster on
//! `127.0.0.1:7070` with its data in `./sluice-data`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::discovery::PeerTemplate;
use crate::identity::Identity;
use crate::raft::{Compaction, NodeId, Timing};

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
    /// Socket the gRPC server binds.
    pub listen: SocketAddr,
    /// `host:port` other nodes and clients reach this node at.
    pub advertise: String,
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
    /// Delay before the first retry of a failed asynchronous invocation
    /// (the second waits twice as long); Lambda waits a minute.
    pub event_retry_delay: Duration,
    /// Whether the node runs a worker in-process (registered like any
    /// other); clusters with separate `sluice worker` processes turn it
    /// off.
    pub in_process_worker: bool,
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
    /// `--leader-wait-ms`
    pub leader_wait_ms: Option<u64>,
    /// `--cache-mb`
    pub cache_mb: Option<u64>,
    /// `--event-retry-delay-ms`
    pub event_retry_delay_ms: Option<u64>,
    /// `--in-process-worker`
    pub in_process_worker: Option<bool>,
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
            leader_wait_ms: self.leader_wait_ms.or(other.leader_wait_ms),
            event_retry_delay_ms: self.event_retry_delay_ms.or(other.event_retry_delay_ms),
            in_process_worker: self.in_process_worker.or(other.in_process_worker),
            cache_mb: self.cache_mb.or(other.cache_mb),
            peer_dns: self.peer_dns.or(other.peer_dns),
            ordinal: self.ordinal.or(other.ordinal),
            max_nodes: self.max_nodes.or(other.max_nodes),
            remove_after_s: self.remove_after_s.or(other.remove_after_s),
            bootstrap_expect: self.bootstrap_expect.or(other.bootstrap_expect),
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
        let listen_text = self.listen.unwrap_or_else(|| "127.0.0.1:7070".into());
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
        let advertise = match (&self.advertise, &bootstrap) {
            (Some(a), Bootstrap::Dns(d)) if d.template.addr(d.ordinal) != *a => {
                return Err(format!(
                    "--advertise: with --peer-dns a node is reached at its name ({}), got {a}",
                    d.template.addr(d.ordinal)
                ))
            }
            (Some(a), Bootstrap::Static(p)) if p[&node_id] != *a => {
                return Err(format!(
                    "--advertise: {a} differs from this node's entry in --peers ({})",
                    p[&node_id]
                ))
            }
            (Some(a), _) => a.clone(),
            (None, Bootstrap::Static(p)) => p[&node_id].clone(),
            (None, Bootstrap::Dns(d)) => d.template.addr(d.ordinal),
            (None, _) => listen_text.clone(),
        };
        check_host_port("--advertise", &advertise)?;
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
        let leader_wait = Duration::from_millis(self.leader_wait_ms.unwrap_or(5000));
        if leader_wait.is_zero() {
            return Err("--leader-wait-ms: must be at least 1".into());
        }
        let cache_mb = self.cache_mb.unwrap_or(256);
        if cache_mb == 0 {
            return Err("--cache-mb: must be at least 1".into());
        }
        Ok(NodeConfig {
            node_id,
            listen,
            advertise,
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
            },
            leader_wait,
            cache_capacity: cache_mb * 1024 * 1024,
            event_retry_delay: Duration::from_millis(self.event_retry_delay_ms.unwrap_or(60_000)),
            in_process_worker: self.in_process_worker.unwrap_or(true),
        })
    }
}

impl Settings {
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
    }

    #[test]
    fn peers_parse_and_give_the_advertised_address() {
        let s = Settings {
            node_id: Some(2),
            listen: Some("0.0.0.0:7072".into()),
            peers: Some("1=a:7071, 2=b:7072,3=c:7073".into()),
            ..Default::default()
        };
        let c = s.resolve().unwrap();
        assert_eq!(c.advertise, "b:7072");
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
        assert!(s.resolve().unwrap_err().contains("own id 4"));
    }

    #[test]
    fn conflicting_and_invalid_flags_are_refused() {
        let both = Settings {
            peers: Some("1=a:1".into()),
            join: Some(true),
            ..Default::default()
        };
        assert!(both
            .resolve()
            .unwrap_err()
            .starts_with("--join and --peers"));
        let bad_listen = Settings {
            listen: Some("localhost".into()),
            ..Default::default()
        };
        assert!(bad_listen.resolve().unwrap_err().starts_with("--listen"));
        let bad_timing = Settings {
            heartbeat_ms: Some(500),
            election_timeout_min_ms: Some(400),
            ..Default::default()
        };
        assert!(bad_timing
            .resolve()
            .unwrap_err()
            .contains("0 < heartbeat < min < max"));
        let mismatch = Settings {
            node_id: Some(1),
            advertise: Some("x:1".into()),
            peers: Some("1=a:1".into()),
            ..Default::default()
        };
        assert!(mismatch.resolve().unwrap_err().starts_with("--advertise"));
    }

    #[test]
    fn dns_peers_give_the_id_and_address_from_the_ordinal() {
        let s = Settings {
            peer_dns: Some("sluice-{ordinal}.peers:7070".into()),
            ordinal: Some(2),
            listen: Some("0.0.0.0:7070".into()),
            ..Default::default()
        };
        let c = s.clone().resolve().unwrap();
        assert_eq!(c.node_id, 3);
        assert_eq!(c.advertise, "sluice-2.peers:7070");
        match &c.bootstrap {
            Bootstrap::Dns(d) => {
                assert_eq!((d.ordinal, d.max_nodes), (2, 7));
                assert_eq!(d.remove_after, Duration::from_secs(120));
                assert_eq!(d.bootstrap_expect, 1);
            }
            other => panic!("{other:?}"),
        }
        for (bad, needle) in [
            (
                Settings {
                    node_id: Some(1),
                    ..s.clone()
                },
                "--node-id: with --peer-dns the id is the ordinal + 1 (3)",
            ),
            (
                Settings {
                    ordinal: None,
                    ..s.clone()
                },
                "--ordinal: required",
            ),
            (
                Settings {
                    ordinal: Some(7),
                    ..s.clone()
                },
                "--ordinal: must be below --max-nodes (7)",
            ),
            (
                Settings {
                    join: Some(true),
                    ..s.clone()
                },
                "--peer-dns: give it alone",
            ),
            (
                Settings {
                    remove_after_s: Some(0),
                    ..s.clone()
                },
                "--remove-after-s",
            ),
            (
                Settings {
                    bootstrap_expect: Some(8),
                    ..s.clone()
                },
                "--bootstrap-expect: must be 1 to --max-nodes (7)",
            ),
            (
                Settings {
                    advertise: Some("10.0.0.5:7070".into()),
                    ..s.clone()
                },
                "--advertise: with --peer-dns a node is reached at its name (sluice-2.peers:7070)",
            ),
            (
                Settings {
                    ordinal: Some(9),
                    ordinal_from_hostname: Some("sluice-9".into()),
                    ..s.clone()
                },
                "--ordinal: the ordinal 9 (from host name sluice-9) must be below --max-nodes (7)",
            ),
            (
                Settings {
                    peer_dns: None,
                    ..s.clone()
                },
                "--ordinal: only meaningful with --peer-dns",
            ),
        ] {
            let err = bad.resolve().unwrap_err();
            assert!(err.starts_with(needle), "{err}");
        }
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
