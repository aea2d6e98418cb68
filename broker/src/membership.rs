//! Keeps a `--peer-dns` cluster's members in line with the peers whose names
//! resolve, so scaling the StatefulSet is the only step an operator takes.
//!
//! The leader looks every [`ROUND`] and makes at most one change a round:
//!
//! 1. a peer whose name resolves, that answers as the node its ordinal
//!    names, and that is not a member is added as a learner;
//! 2. a learner the template names that has caught up (within
//!    [`PROMOTE_MAX_LAG`] entries) becomes a voter;
//! 3. a member whose name has not resolved, and who has not answered, for
//!    `--remove-after-s` is removed (a voter leaves the voters and the
//!    cluster). A pod that restarts keeps its name and comes back within
//!    seconds; one scaled away does not.
//!
//! Only members at the template's address for their id are managed: a node
//! added by hand under another address is left alone. Nothing is removed
//! while the leader cannot resolve its own name (the resolver is down, not
//! the peers), and the last voter is never removed. A new leader starts
//! its absence clocks afresh, so a leadership change only delays removals.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use openraft::ChangeMembers;

use crate::config::DnsPeers;
use crate::raft::network::Channels;
use crate::raft::{Node, NodeId, Raft};

/// How often the leader looks.
const ROUND: Duration = Duration::from_secs(1);
/// A learner this close to the leader's log is promoted.
const PROMOTE_MAX_LAG: u64 = 1000;

/// Runs the reconciler for this node's life.
pub fn spawn(
    raft: Raft,
    me: NodeId,
    dns: DnsPeers,
    channels: Channels,
    security: std::sync::Arc<crate::auth::NodeSecurity>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut gone_since: HashMap<NodeId, Instant> = HashMap::new();
        loop {
            tokio::time::sleep(ROUND).await;
            let m = raft.metrics().borrow().clone();
            if m.current_leader != Some(me) {
                gone_since.clear();
                continue;
            }
            if let Err(e) = round(&raft, me, &dns, &channels, &security, &mut gone_since).await {
                tracing::warn!(error = %e, "membership round failed");
            }
        }
    })
}

/// A peer as this round found it.
struct Peer {
    id: NodeId,
    addr: String,
    resolves: bool,
}

async fn round(
    raft: &Raft,
    me: NodeId,
    dns: &DnsPeers,
    channels: &Channels,
    security: &crate::auth::NodeSecurity,
    gone_since: &mut HashMap<NodeId, Instant>,
) -> Result<(), String> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.get_joint_config().len() > 1 {
        // A change is under way; the next round sees its outcome.
        return Ok(());
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    let mut peers = Vec::new();
    for ordinal in 0..dns.max_nodes {
        let addr = dns.template.addr(ordinal);
        let resolves = crate::discovery::resolves(&addr).await;
        peers.push(Peer {
            id: ordinal + 1,
            addr,
            resolves,
        });
    }
    let managed = |p: &Peer| membership.get_node(&p.id).is_some_and(|n| n.addr == p.addr);

    // 1. Add a peer that has appeared.
    for p in peers.iter().filter(|p| p.resolves) {
        gone_since.remove(&p.id);
        if membership.get_node(&p.id).is_some() {
            continue;
        }
        if let Err(why) = crate::bootstrap::prove(channels, security, &p.addr, p.id).await {
            tracing::warn!(addr = %p.addr, node_id = p.id, reason = %why, "not adding a peer found by DNS");
            continue;
        }
        raft.add_learner(p.id, Node::new(p.addr.clone()), false)
            .await
            .map_err(|e| format!("adding node {} as a learner: {e}", p.id))?;
        tracing::info!(node_id = p.id, addr = %p.addr, "added a peer found by DNS as a learner");
        return Ok(());
    }

    // 2. Promote a learner that has caught up.
    let last = m.last_log_index.unwrap_or(0);
    for p in peers
        .iter()
        .filter(|p| managed(p) && !voters.contains(&p.id))
    {
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&p.id).copied().flatten())
            .map(|l| l.index);
        if matched.is_some_and(|i| last.saturating_sub(i) <= PROMOTE_MAX_LAG) {
            raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([p.id])), false)
                .await
                .map_err(|e| format!("promoting node {}: {e}", p.id))?;
            tracing::info!(node_id = p.id, "promoted a caught-up learner to voter");
            return Ok(());
        }
    }

    // 3. Remove a member gone for long enough.
    let my_name_resolves = peers.iter().any(|p| p.id == me && p.resolves);
    if !my_name_resolves {
        return Ok(());
    }
    let now = Instant::now();
    for p in peers
        .iter()
        .filter(|p| p.id != me && !p.resolves && managed(p))
    {
        let since = *gone_since.entry(p.id).or_insert(now);
        if now.duration_since(since) < dns.remove_after {
            continue;
        }
        if crate::bootstrap::ask(channels, &p.addr).await.is_some() {
            // Still answering under a name that no longer resolves: wait.
            continue;
        }
        let change = if voters.contains(&p.id) {
            if voters.len() == 1 {
                continue;
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([p.id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([p.id]))
        };
        raft.change_membership(change, false)
            .await
            .map_err(|e| format!("removing node {}: {e}", p.id))?;
        gone_since.remove(&p.id);
        tracing::info!(
            node_id = p.id,
            gone_s = dns.remove_after.as_secs(),
            "removed a member whose name no longer resolves"
        );
        return Ok(());
    }
    Ok(())
}
