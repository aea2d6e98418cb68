//! Hosts for the nodes of a chaos run: one network namespace per node, each
//! with its own address on a private bridge, so that partitions can cut the
//! links between nodes with `nft` rules inside each namespace. Where
//! namespaces cannot be made (not root, no `ip`), every node is a process
//! on loopback and partitions are not available.
//!
//! The test process stays in the root namespace and reaches every node
//! through the bridge's own address: clients are never partitioned from the
//! nodes, only nodes from each other.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::process::{Command, Stdio};

/// A node's id (1-based).
pub type NodeId = u64;

/// The port every node listens on inside its namespace.
const NODE_PORT: u16 = 7070;

/// Who drops packets from whom: `grudge[a]` holds the nodes whose packets
/// `a` discards. A grudge need not be symmetric (one-way loss).
pub type Grudge = BTreeMap<NodeId, BTreeSet<NodeId>>;

/// How the nodes are hosted.
#[derive(Debug)]
pub enum Net {
    /// A network namespace per node on a bridge.
    Namespaces(Namespaces),
    /// Processes on loopback, each with its own ports (public, cluster).
    Loopback {
        /// `host:port` of each node's public port.
        addrs: BTreeMap<NodeId, String>,
        /// `host:port` of each node's cluster listener.
        cluster: BTreeMap<NodeId, String>,
    },
}

/// The namespaces, veth pairs and bridge of a run.
#[derive(Debug)]
pub struct Namespaces {
    /// Prefix of every name this run made (namespaces, links).
    prefix: String,
    /// First three octets of the subnet, e.g. "10.77.12".
    subnet: String,
    nodes: Vec<NodeId>,
    /// Whether `nft` is available for partitions.
    nft: bool,
}

fn run(args: &[&str]) -> Result<(), String> {
    run_with_input(args, "")
}

/// Runs a command with `input` on its stdin; its stderr is the error.
fn run_with_input(args: &[&str], input: &str) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| format!("{}: {e}", args.join(" "));
    let mut child = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(&e))?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(input.as_bytes())
        .map_err(|e| fail(&e))?;
    let out = child.wait_with_output().map_err(|e| fail(&e))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(fail(&String::from_utf8_lossy(&out.stderr).trim()))
    }
}

impl Net {
    /// Hosts for `nodes` nodes: namespaces if this process can make them,
    /// else loopback. `loopback_ports` gives the ports to use on loopback.
    pub fn create(nodes: u64, loopback_ports: impl Fn() -> u16) -> Net {
        match Namespaces::create(nodes) {
            Ok(ns) => Net::Namespaces(ns),
            Err(why) => {
                eprintln!("chaos: no network namespaces ({why}); nodes run on loopback and partitions are skipped");
                Net::loopback(nodes, loopback_ports)
            }
        }
    }

    /// Loopback hosts, whatever the machine can do.
    pub fn loopback(nodes: u64, loopback_ports: impl Fn() -> u16) -> Net {
        let ports = || format!("127.0.0.1:{}", loopback_ports());
        let addrs = (1..=nodes).map(|id| (id, ports())).collect();
        let cluster = (1..=nodes).map(|id| (id, ports())).collect();
        Net::Loopback { addrs, cluster }
    }

    /// `host:port` of a node's cluster listener, as other nodes reach it.
    pub fn cluster_addr(&self, id: NodeId) -> String {
        match self {
            Net::Namespaces(ns) => format!("{}.{id}:{}", ns.subnet, NODE_PORT + 1),
            Net::Loopback { cluster, .. } => cluster[&id].clone(),
        }
    }

    /// The address the nodes reach the test process at (the bridge's own
    /// address, or loopback).
    pub fn test_host(&self) -> String {
        match self {
            Net::Namespaces(ns) => format!("{}.254", ns.subnet),
            Net::Loopback { .. } => "127.0.0.1".into(),
        }
    }

    /// The IP address of a node's host (what its certificates name).
    pub fn host(&self, id: NodeId) -> String {
        let a = self.addr(id);
        a.rsplit_once(':').map(|(h, _)| h.to_string()).unwrap_or(a)
    }

    /// `host:port` of a node, as other nodes and the clients reach it.
    pub fn addr(&self, id: NodeId) -> String {
        match self {
            Net::Namespaces(ns) => format!("{}.{id}:{NODE_PORT}", ns.subnet),
            Net::Loopback { addrs, .. } => addrs[&id].clone(),
        }
    }

    /// A command that runs `program` on node `id`'s host.
    pub fn command(&self, id: NodeId, program: &std::path::Path) -> Command {
        match self {
            Net::Namespaces(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns.netns(id)]).arg(program);
                c
            }
            Net::Loopback { .. } => Command::new(program),
        }
    }

    /// Whether partitions can be made.
    pub fn can_partition(&self) -> bool {
        matches!(self, Net::Namespaces(ns) if ns.nft)
    }

    /// Makes each node drop packets from the nodes in its grudge (and only
    /// those: a node not named keeps every link).
    pub fn partition(&self, grudge: &Grudge) -> Result<(), String> {
        let Net::Namespaces(ns) = self else {
            return Err("partitions need network namespaces".into());
        };
        for &id in &ns.nodes {
            let from = grudge.get(&id).cloned().unwrap_or_default();
            ns.set_drops(id, &from)?;
        }
        Ok(())
    }

    /// Restores every link.
    pub fn heal(&self) -> Result<(), String> {
        match self {
            Net::Namespaces(ns) if ns.nft => {
                for &id in &ns.nodes {
                    ns.set_drops(id, &BTreeSet::new())?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// What the hosts are, for the report.
    pub fn describe(&self) -> String {
        match self {
            Net::Namespaces(ns) => format!(
                "a network namespace per node on bridge {}-br, subnet {}.0/24{}",
                ns.prefix,
                ns.subnet,
                if ns.nft {
                    ""
                } else {
                    " (no nft: partitions skipped)"
                }
            ),
            Net::Loopback { .. } => "processes on loopback (partitions skipped)".into(),
        }
    }
}

impl Namespaces {
    fn create(nodes: u64) -> Result<Namespaces, String> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not root".into());
        }
        let pid = std::process::id();
        let prefix = format!("sc{}", pid % 100_000);
        let subnet = format!("10.{}.{}", 100 + (pid / 250) % 150, pid % 250);
        let mut ns = Namespaces {
            prefix,
            subnet,
            nodes: (1..=nodes).collect(),
            nft: false,
        };
        // Drop tears down whatever was made if a step fails.
        let bridge = ns.bridge();
        run(&["ip", "link", "add", &bridge, "type", "bridge"])?;
        run(&[
            "ip",
            "addr",
            "add",
            &format!("{}.254/24", ns.subnet),
            "dev",
            &bridge,
        ])?;
        run(&["ip", "link", "set", &bridge, "up"])?;
        for id in 1..=nodes {
            let netns = ns.netns(id);
            let veth = format!("{}-v{id}", ns.prefix);
            run(&["ip", "netns", "add", &netns])?;
            run(&[
                "ip", "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
            ])?;
            run(&["ip", "link", "set", &veth, "master", &bridge, "up"])?;
            run(&[
                "ip",
                "-n",
                &netns,
                "addr",
                "add",
                &format!("{}.{id}/24", ns.subnet),
                "dev",
                "eth0",
            ])?;
            run(&["ip", "-n", &netns, "link", "set", "eth0", "up"])?;
            run(&["ip", "-n", &netns, "link", "set", "lo", "up"])?;
        }
        ns.nft = Command::new("nft")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if ns.nft {
            for id in 1..=nodes {
                ns.set_drops(id, &BTreeSet::new())?;
            }
        }
        Ok(ns)
    }

    fn bridge(&self) -> String {
        format!("{}-br", self.prefix)
    }

    fn netns(&self, id: NodeId) -> String {
        format!("{}-n{id}", self.prefix)
    }

    /// Replaces node `id`'s input filter: drop packets from `from`. One
    /// `nft -f` script, applied atomically.
    fn set_drops(&self, id: NodeId, from: &BTreeSet<NodeId>) -> Result<(), String> {
        let mut script = String::from(
            "table inet sluice_chaos\ndelete table inet sluice_chaos\ntable inet sluice_chaos {\n  chain input {\n    type filter hook input priority 0; policy accept;\n",
        );
        if !from.is_empty() {
            let addrs: Vec<String> = from
                .iter()
                .map(|n| format!("{}.{n}", self.subnet))
                .collect();
            script.push_str(&format!("    ip saddr {{ {} }} drop\n", addrs.join(", ")));
        }
        script.push_str("  }\n}\n");
        run_with_input(
            &["ip", "netns", "exec", &self.netns(id), "nft", "-f", "-"],
            &script,
        )
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for &id in &self.nodes {
            let _ = run(&["ip", "netns", "del", &self.netns(id)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge()]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_have_distinct_addresses_and_cannot_partition() {
        let next = std::sync::atomic::AtomicU16::new(30_000);
        let net = Net::loopback(3, || {
            next.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        });
        assert_eq!(net.addr(1), "127.0.0.1:30000");
        assert_eq!(net.addr(3), "127.0.0.1:30002");
        assert_eq!(net.cluster_addr(1), "127.0.0.1:30003");
        assert_eq!(net.host(2), "127.0.0.1");
        assert!(!net.can_partition());
        assert!(net.partition(&Grudge::new()).is_err());
        assert!(net.heal().is_ok());
    }
}
