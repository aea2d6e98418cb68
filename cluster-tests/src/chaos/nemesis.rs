//! The nemesis: faults on a seeded random schedule, one at a time, each held
//! for a while and then healed. The same seed gives the same choices (which
//! fault, which nodes, how long); the cluster's own timing still varies.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use sluice_client::{Client, Options};

use super::history::Fault;
use super::net::{Grudge, NodeId};
use super::nodes::{ChaosCluster, Damage, DAMAGES};

/// A kind of fault, as named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    /// Network partitions: one node isolated, the leader isolated,
    /// majority/minority halves, a bridge node seeing both sides, one-way
    /// loss.
    Partition,
    /// `kill -9` of a node (sometimes the leader), restarted later.
    Kill,
    /// `SIGSTOP` of a node (sometimes the leader), `SIGCONT` later.
    Pause,
    /// Power loss (needs lazyfs): `kill -9` and loss of every write not
    /// fsynced, on one node or on a majority at once.
    Power,
    /// Leadership transfer to another voter.
    Transfer,
    /// Membership change: a node removed, wiped, and added back.
    Member,
    /// A node's wall clock moved by up to two minutes either way (needs
    /// libfaketime).
    Clock,
    /// A stopped node's files damaged (bit flips in its log or snapshot,
    /// garbage in its state store), then the node started again.
    Corrupt,
    /// A node's own small filesystem filled (to nothing, or to below its
    /// reserve), then freed (needs root, for the tmpfs mounts).
    DiskFull,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 9] = [
        Kind::Partition,
        Kind::Kill,
        Kind::Pause,
        Kind::Power,
        Kind::Transfer,
        Kind::Member,
        Kind::Clock,
        Kind::Corrupt,
        Kind::DiskFull,
    ];

    /// Its command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Partition => "partition",
            Kind::Kill => "kill",
            Kind::Pause => "pause",
            Kind::Power => "power",
            Kind::Transfer => "transfer",
            Kind::Member => "member",
            Kind::Clock => "clock",
            Kind::Corrupt => "corrupt",
            Kind::DiskFull => "disk-full",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Kind {
    type Err = String;

    fn from_str(s: &str) -> Result<Kind, String> {
        super::parse_named(&Kind::ALL, s, "nemesis")
    }
}

/// Parses a comma-separated list of kinds ("all" for every kind).
pub fn parse_kinds(s: &str) -> Result<Vec<Kind>, String> {
    if s == "all" {
        return Ok(Kind::ALL.to_vec());
    }
    let mut kinds: Vec<Kind> = s
        .split(',')
        .filter(|p| !p.trim().is_empty())
        .map(|p| p.trim().parse())
        .collect::<Result<_, _>>()?;
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

/// A small deterministic generator (SplitMix64): the schedule's only
/// source of choices, so a seed reproduces it.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// One of `items`.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.next_u64() as usize % items.len()]
    }

    /// `items` in a random order.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.next_u64() as usize % (i + 1);
            items.swap(i, j);
        }
    }
}

/// What the nemesis is allowed to do, and when.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub kinds: Vec<Kind>,
    pub seed: u64,
    /// Healthy time between faults, seconds (inclusive range).
    pub calm_s: (u64, u64),
    /// How long a fault lasts, seconds (inclusive range).
    pub fault_s: (u64, u64),
}

/// The kinds this cluster can actually do, with the reasons for any left
/// out.
pub fn feasible(kinds: &[Kind], cluster: &ChaosCluster) -> (Vec<Kind>, Vec<String>) {
    let mut ok = Vec::new();
    let mut skipped = Vec::new();
    for &k in kinds {
        let why = match k {
            Kind::Partition if !cluster.net().can_partition() => {
                Some("partition: needs network namespaces and nft")
            }
            Kind::Power if !cluster.setup().lazyfs => Some("power: needs lazyfs"),
            Kind::Clock if !cluster.setup().faketime => Some("clock: needs libfaketime"),
            Kind::DiskFull if !cluster.setup().small_disks => {
                Some("disk-full: needs root to mount small filesystems")
            }
            Kind::Member | Kind::Transfer if cluster.ids().len() < 3 => {
                Some("member/transfer: need 3 nodes")
            }
            _ => None,
        };
        match why {
            Some(w) => skipped.push(w.to_string()),
            None => ok.push(k),
        }
    }
    (ok, skipped)
}

/// An admin client that retries (membership and leadership changes).
fn admin(cluster: &ChaosCluster) -> Client {
    Client::with_options(
        cluster.addrs(),
        cluster.client_options(Options {
            deadline: Duration::from_secs(20),
            attempt_timeout: Duration::from_secs(10),
            ..Options::default()
        }),
    )
    .expect("client")
}

/// Runs faults until `until`, then heals everything; returns the faults
/// with their windows (nanoseconds on `clock`). Kinds are dealt from a
/// shuffled deck, so every kind comes once before any comes twice and a
/// short run still sees the whole mix.
pub async fn run(
    cluster: &mut ChaosCluster,
    schedule: &Schedule,
    until: tokio::time::Instant,
    clock: &dyn Fn() -> u64,
) -> Vec<Fault> {
    let mut rng = Rng::new(schedule.seed);
    let mut faults = Vec::new();
    if schedule.kinds.is_empty() {
        tokio::time::sleep_until(until).await;
        return faults;
    }
    let mut deck: Vec<Kind> = Vec::new();
    let mut damages: Vec<Damage> = Vec::new();
    loop {
        let calm = Duration::from_secs(rng.range(schedule.calm_s.0, schedule.calm_s.1));
        if tokio::time::Instant::now() + calm >= until {
            tokio::time::sleep_until(until).await;
            break;
        }
        tokio::time::sleep(calm).await;
        if deck.is_empty() {
            deck = schedule.kinds.clone();
            rng.shuffle(&mut deck);
        }
        let kind = deck.pop().expect("refilled above");
        let hold = Duration::from_secs(rng.range(schedule.fault_s.0, schedule.fault_s.1));
        let start_ns = clock();
        let detail = match inject(cluster, kind, &mut rng, &mut damages).await {
            Ok(d) => d,
            Err(e) => format!("not injected: {e}"),
        };
        let end = (tokio::time::Instant::now() + hold).min(until);
        tokio::time::sleep_until(end).await;
        let healed = heal(cluster, kind).await;
        let detail = match healed {
            Ok(()) => detail,
            Err(e) => format!("{detail}; heal: {e}"),
        };
        faults.push(Fault {
            kind: kind.name().into(),
            detail,
            start_ns,
            end_ns: clock(),
        });
        if tokio::time::Instant::now() >= until {
            break;
        }
    }
    faults
}

/// Nodes other than `id`.
fn others(cluster: &ChaosCluster, id: NodeId) -> BTreeSet<NodeId> {
    cluster.ids().into_iter().filter(|n| *n != id).collect()
}

/// A grudge cutting `side` off from everyone else, both ways.
fn cut(cluster: &ChaosCluster, side: &BTreeSet<NodeId>) -> Grudge {
    let all: BTreeSet<NodeId> = cluster.ids().into_iter().collect();
    let rest: BTreeSet<NodeId> = all.difference(side).copied().collect();
    let mut g = Grudge::new();
    for n in side {
        g.insert(*n, rest.clone());
    }
    for n in &rest {
        g.insert(*n, side.clone());
    }
    g
}

/// A node to hit: the leader half of the time (when one is known).
async fn victim(cluster: &ChaosCluster, rng: &mut Rng) -> (NodeId, bool) {
    let ids = cluster.ids();
    if rng.next_u64().is_multiple_of(2) {
        if let Some(l) = cluster.leader().await {
            return (l, true);
        }
    }
    (*rng.pick(&ids), false)
}

fn who(id: NodeId, leader: bool) -> String {
    if leader {
        format!("n{id} (leader)")
    } else {
        format!("n{id}")
    }
}

/// Deals the next kind of damage from `deck`, refilled shuffled: every
/// kind of damage comes once before any comes twice.
fn deal(deck: &mut Vec<Damage>, rng: &mut Rng) -> Damage {
    if deck.is_empty() {
        *deck = DAMAGES.to_vec();
        rng.shuffle(deck);
    }
    deck.pop().expect("refilled above")
}

async fn inject(
    cluster: &mut ChaosCluster,
    kind: Kind,
    rng: &mut Rng,
    damages: &mut Vec<Damage>,
) -> Result<String, String> {
    let ids = cluster.ids();
    match kind {
        Kind::Partition => {
            let shapes = [
                "isolate-one",
                "isolate-leader",
                "halves",
                "bridge",
                "one-way",
            ];
            let shape = *rng.pick(&shapes);
            let mut shuffled = ids.clone();
            rng.shuffle(&mut shuffled);
            let (grudge, detail) = match shape {
                "isolate-one" | "isolate-leader" => {
                    let (n, leader) = if shape == "isolate-leader" {
                        match cluster.leader().await {
                            Some(l) => (l, true),
                            None => (shuffled[0], false),
                        }
                    } else {
                        (shuffled[0], false)
                    };
                    let side: BTreeSet<NodeId> = [n].into();
                    (
                        cut(cluster, &side),
                        format!("{shape}: {} cut off", who(n, leader)),
                    )
                }
                "halves" => {
                    let minority: BTreeSet<NodeId> =
                        shuffled[..ids.len() / 2].iter().copied().collect();
                    (
                        cut(cluster, &minority),
                        format!("halves: {minority:?} | rest"),
                    )
                }
                "bridge" => {
                    // Two sides that cannot see each other; one node sees both.
                    let bridge = shuffled[0];
                    let rest = &shuffled[1..];
                    let (a, b) = rest.split_at(rest.len() / 2);
                    let a: BTreeSet<NodeId> = a.iter().copied().collect();
                    let b: BTreeSet<NodeId> = b.iter().copied().collect();
                    let mut g = Grudge::new();
                    for n in &a {
                        g.insert(*n, b.clone());
                    }
                    for n in &b {
                        g.insert(*n, a.clone());
                    }
                    (g, format!("bridge: n{bridge} between {a:?} and {b:?}"))
                }
                _ => {
                    // One-way: a node stops hearing from the others, who
                    // still hear it.
                    let n = shuffled[0];
                    let mut g = Grudge::new();
                    g.insert(n, others(cluster, n));
                    (g, format!("one-way: n{n} hears nobody, everyone hears it"))
                }
            };
            cluster.net().partition(&grudge)?;
            Ok(format!("partition {detail}"))
        }
        Kind::Kill => {
            let (n, leader) = victim(cluster, rng).await;
            cluster.kill(n);
            Ok(format!("kill -9 {}", who(n, leader)))
        }
        Kind::Pause => {
            let (n, leader) = victim(cluster, rng).await;
            cluster.pause(n);
            Ok(format!("SIGSTOP {}", who(n, leader)))
        }
        Kind::Power => {
            // One node, or a majority at once: then only what was fsynced on
            // a majority can survive.
            let mut shuffled = ids.clone();
            rng.shuffle(&mut shuffled);
            let count = if rng.next_u64().is_multiple_of(2) {
                1
            } else {
                ids.len() / 2 + 1
            };
            let hit: Vec<NodeId> = shuffled[..count].to_vec();
            for n in &hit {
                cluster.lose_power(*n)?;
            }
            Ok(format!("power loss on {hit:?}"))
        }
        Kind::Transfer => {
            let to = *rng.pick(&ids);
            let r = admin(cluster)
                .transfer_leadership(Some(to))
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "leadership n{} -> n{}",
                r.previous_leader_id, r.new_leader_id
            ))
        }
        Kind::Member => {
            let n = *rng.pick(&ids);
            let admin = admin(cluster);
            admin.remove_member(n).await.map_err(|e| e.to_string())?;
            add_back(cluster, &admin, n).await?;
            Ok(format!("n{n} removed, wiped, added back and promoted"))
        }
        Kind::Corrupt => {
            // A minority: one node, stopped while its files are damaged.
            let (n, leader) = victim(cluster, rng).await;
            cluster.kill(n);
            // A kind of damage the node's files do not allow yet (no
            // snapshot so far, say) makes way for the next one dealt.
            let mut skipped = Vec::new();
            let done = loop {
                let damage = deal(damages, rng);
                match cluster.damage(n, damage, rng.next_u64()) {
                    Ok(what) => break Ok(format!("{damage:?}: {what}")),
                    Err(why) => skipped.push(format!("{damage:?} not done: {why}")),
                }
                if skipped.len() == DAMAGES.len() {
                    break Err(skipped.join("; "));
                }
            };
            cluster.start_node(n)?;
            match done {
                Ok(what) => Ok(format!("{} stopped, {what}", who(n, leader))),
                Err(why) => Ok(format!("{} stopped, {why}", who(n, leader))),
            }
        }
        Kind::DiskFull => {
            let (n, leader) = victim(cluster, rng).await;
            let leave = *rng.pick(&[0u64, 16 << 20]);
            let written = cluster.fill_disk(n, leave)?;
            Ok(format!(
                "{}'s disk filled with {} MiB, {} MiB left",
                who(n, leader),
                written >> 20,
                leave >> 20
            ))
        }
        Kind::Clock => {
            let n = *rng.pick(&ids);
            let offset = rng.range(10, 120) as i64
                * if rng.next_u64().is_multiple_of(2) {
                    1
                } else {
                    -1
                };
            cluster.set_clock_offset(n, offset)?;
            Ok(format!("n{n} clock {offset:+} s"))
        }
    }
}

/// Undoes a fault: links restored, nodes started and resumed, clocks reset.
async fn heal(cluster: &mut ChaosCluster, kind: Kind) -> Result<(), String> {
    match kind {
        Kind::Partition => cluster.net().heal(),
        Kind::Clock => {
            for n in cluster.ids() {
                cluster.set_clock_offset(n, 0)?;
            }
            Ok(())
        }
        Kind::Member => {
            heal_nodes(cluster).await?;
            repair_membership(cluster).await
        }
        Kind::DiskFull => {
            for n in cluster.ids() {
                cluster.free_disk(n)?;
            }
            heal_nodes(cluster).await
        }
        _ => heal_nodes(cluster).await,
    }
}

/// Starts every node that is down and resumes every paused one.
pub async fn heal_nodes(cluster: &mut ChaosCluster) -> Result<(), String> {
    for n in cluster.ids() {
        cluster.resume(n);
        if !cluster.is_up(n) {
            cluster.start_node(n)?;
        }
    }
    Ok(())
}

/// Heals everything at the end of a run.
pub async fn heal_all(cluster: &mut ChaosCluster) -> Result<(), String> {
    cluster.net().heal()?;
    for n in cluster.ids() {
        cluster.free_disk(n)?;
    }
    if cluster.setup().faketime {
        for n in cluster.ids() {
            cluster.set_clock_offset(n, 0)?;
        }
    }
    heal_nodes(cluster).await?;
    repair_membership(cluster).await
}

/// Makes every node a voter again after a membership change that stopped
/// half way: a node the cluster no longer counts is wiped and added back,
/// a learner promoted.
pub async fn repair_membership(cluster: &mut ChaosCluster) -> Result<(), String> {
    let admin = admin(cluster);
    // Only the leader's view counts: a node with no leader to ask answers
    // with what it knows, and one being rebuilt (its state given up, an
    // install to come) knows no members; read as the truth, that view
    // would have every node wiped.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        match admin.cluster_status(false).await {
            Ok(s) if s.state == "leader" => break s,
            Ok(s) if tokio::time::Instant::now() >= deadline => {
                return Err(format!(
                    "no leader answered the cluster status (node {} is {})",
                    s.node_id, s.state
                ))
            }
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e.to_string()),
            _ => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    for n in cluster.ids() {
        match status.members.iter().find(|m| m.node_id == n) {
            Some(m) if m.role == "voter" => {}
            Some(_) => {
                admin.promote_learner(n).await.map_err(|e| e.to_string())?;
            }
            None => add_back(cluster, &admin, n).await?,
        }
    }
    Ok(())
}

/// Stops node `n` (no longer a member), wipes it, and adds it back as a
/// new voter.
async fn add_back(cluster: &mut ChaosCluster, admin: &Client, n: NodeId) -> Result<(), String> {
    cluster.kill(n);
    cluster.wipe(n)?;
    cluster.start_joining(n)?;
    admin
        .add_learner(n, &cluster.cluster_addr(n))
        .await
        .map_err(|e| e.to_string())?;
    admin.promote_learner(n).await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Faults counted by kind.
pub fn counts(faults: &[Fault]) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    for f in faults {
        *m.entry(f.kind.clone()).or_default() += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_choices() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<u64> = (0..20).map(|_| a.range(1, 6)).collect();
        let ys: Vec<u64> = (0..20).map(|_| b.range(1, 6)).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|x| (1..=6).contains(x)));
        let mut c = Rng::new(43);
        let zs: Vec<u64> = (0..20).map(|_| c.range(1, 6)).collect();
        assert_ne!(xs, zs);
    }

    #[test]
    fn every_kind_of_damage_comes_once_before_any_comes_twice() {
        let mut rng = Rng::new(1119);
        let mut deck = Vec::new();
        for _ in 0..3 {
            let mut round: Vec<String> = (0..DAMAGES.len())
                .map(|_| format!("{:?}", deal(&mut deck, &mut rng)))
                .collect();
            round.sort();
            let mut all: Vec<String> = DAMAGES.iter().map(|d| format!("{d:?}")).collect();
            all.sort();
            assert_eq!(round, all);
        }
    }

    #[test]
    fn kinds_parse_by_name() {
        assert_eq!(
            parse_kinds("partition,kill,pause").unwrap(),
            [Kind::Partition, Kind::Kill, Kind::Pause]
        );
        assert_eq!(parse_kinds("all").unwrap().len(), Kind::ALL.len());
        assert!(parse_kinds("partition,flood")
            .unwrap_err()
            .contains("flood"));
    }
}
