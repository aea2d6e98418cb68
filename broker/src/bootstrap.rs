//! Forming a cluster, or finding the one a node belongs to, when its data
//! directory is empty.
//!
//! A node with data resumes from it and skips all of this. Otherwise:
//!
//! * single-node: initialise a cluster of this node;
//! * `--join`: wait to be added as a learner;
//! * `--peers`: ask every peer what it knows. If a peer belongs to an
//!   established cluster (it has a leader, or entries past the initial
//!   membership), this node lost its data and rejoins: it may not vote until a
//!   leader reaches it ([`VoteGuard`]). If every peer answers and none belongs
//!   to a cluster, the peer with the lowest id initialises the cluster with
//!   the whole list. Until the question is settled, the node refuses votes.
//! * `--peer-dns`: ordinal 0 asks every peer whose name resolves; if one
//!   belongs to a cluster it rejoins as above. It initialises a cluster of
//!   itself only once every peer whose name resolves has answered, none
//!   belongs to a cluster, and among them are all of ordinals
//!   `1..--bootstrap-expect` (the StatefulSet's initial size): an empty
//!   ordinal 0 that cannot see its peers (not created yet, or DNS down)
//!   waits rather than found a second cluster.
//!   Every other ordinal waits: the leader adds it as a learner when its
//!   name resolves and promotes it once caught up ([`crate::membership`]).
//!   Until a leader reaches it, an empty node refuses votes (it may be a
//!   voter that lost its data).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use sluice_proto::internal::node_client::NodeClient;
use sluice_proto::internal::{InfoRequest, InfoResponse};

use crate::config::{Bootstrap, DnsPeers};
use crate::raft::network::Channels;
use crate::raft::service::VoteGuard;
use crate::raft::{Node, NodeId, Raft};

/// How often a forming node asks its peers again.
const POLL: Duration = Duration::from_millis(300);
/// How long a node about to be added as a learner may take to answer
/// (it may be starting).
const PROVE_WAIT: Duration = Duration::from_secs(15);

/// Forms or finds the cluster. Returns once this node knows its role; with
/// `--peers`, that may take until enough peers are up (the caller runs it in
/// the background).
pub async fn run(
    raft: Raft,
    me: NodeId,
    advertise: String,
    mode: Bootstrap,
    channels: Channels,
    guard: Arc<VoteGuard>,
) {
    match raft.is_initialized().await {
        Ok(true) => {
            tracing::info!("resuming from the data directory");
            return;
        }
        Ok(false) => {}
        Err(e) => {
            tracing::error!(error = %e, "raft stopped before bootstrap");
            return;
        }
    }
    match mode {
        Bootstrap::Single => {
            let members = BTreeMap::from([(me, Node::new(advertise))]);
            initialize(&raft, members).await;
        }
        Bootstrap::Join => {
            tracing::info!(
                node_id = me,
                "empty data directory: waiting to be added with `sluicectl cluster add-learner {me} {advertise}`"
            );
        }
        Bootstrap::Static(peers) => {
            guard.set_rejoining();
            form(&raft, me, &peers, &channels, &guard).await;
        }
        Bootstrap::Dns(dns) => {
            guard.set_rejoining();
            if dns.ordinal == 0 {
                find_or_found(&raft, me, &advertise, &dns, &channels, &guard).await;
            } else {
                tracing::info!(
                    node_id = me,
                    "empty data directory: waiting for the leader to add this node (found by DNS)"
                );
            }
        }
    }
}

/// Ordinal 0 of a `--peer-dns` cluster: rejoins the cluster if a peer
/// belongs to one, or founds it once every peer that exists has answered.
async fn find_or_found(
    raft: &Raft,
    me: NodeId,
    advertise: &str,
    dns: &DnsPeers,
    channels: &Channels,
    guard: &VoteGuard,
) {
    let mut logged_waiting = false;
    loop {
        if raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let mut silent = Vec::new();
        for ordinal in 1..dns.max_nodes {
            let addr = dns.template.addr(ordinal);
            if !crate::discovery::resolves(&addr).await {
                // No such pod (or no answer from DNS): nothing to ask, but
                // the initial members must be seen.
                if ordinal < dns.bootstrap_expect {
                    silent.push(addr);
                }
                continue;
            }
            match ask(channels, &addr).await {
                Some(a) if a.leader_id.is_some() || a.last_log_index > 0 => {
                    tracing::warn!(
                        peer = %addr,
                        "a cluster exists but this node's data directory is empty: rejoining; \
                         it will not vote until a leader has reached it"
                    );
                    return;
                }
                Some(_) => {}
                None => silent.push(addr),
            }
        }
        if silent.is_empty() {
            guard.clear();
            initialize(
                raft,
                BTreeMap::from([(me, Node::new(advertise.to_string()))]),
            )
            .await;
            return;
        }
        if !logged_waiting {
            tracing::info!(
                ?silent,
                "waiting for the initial peers and every peer whose name resolves to answer before founding the cluster"
            );
            logged_waiting = true;
        }
        tokio::time::sleep(POLL).await;
    }
}

async fn initialize(raft: &Raft, members: BTreeMap<NodeId, Node>) {
    match raft.initialize(members.clone()).await {
        Ok(()) => {
            tracing::info!(members = ?members.keys().collect::<Vec<_>>(), "initialised a new cluster")
        }
        Err(e) => tracing::info!(error = %e, "cluster already initialised"),
    }
}

/// What the node at `addr` says of itself, or `None` if it does not answer
/// within a second.
/// Checks that the node at `addr` is node `id` and holds the cluster key
/// (before it is sent the log as a learner). Its certificate was checked
/// already when the cluster runs mutual TLS; this catches a node of another
/// cluster, or anything else listening there.
///
/// A node that cannot be reached (still starting) is asked again for up to
/// [`PROVE_WAIT`]; one that answers wrongly is refused at once.
pub(crate) async fn prove(
    channels: &Channels,
    security: &crate::auth::NodeSecurity,
    addr: &str,
    id: NodeId,
) -> Result<(), String> {
    use ring::rand::SecureRandom;
    let mut challenge = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut challenge)
        .map_err(|_| "no random numbers".to_string())?;
    let channel = channels.get(addr)?;
    let give_up = tokio::time::Instant::now() + PROVE_WAIT;
    let answer = loop {
        let mut request = tonic::Request::new(InfoRequest {
            challenge: challenge.to_vec(),
        });
        request.set_timeout(Duration::from_secs(5));
        match NodeClient::new(channel.clone()).info(request).await {
            Ok(a) => break a.into_inner(),
            Err(e)
                if crate::raft::network::is_connect_error(&e)
                    && tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(POLL).await;
            }
            Err(e) => {
                return Err(format!(
                    "the node at {addr} did not answer: {}",
                    e.message()
                ))
            }
        }
    };
    if answer.node_id != id {
        return Err(format!(
            "the node at {addr} is node {}, not node {id}",
            answer.node_id
        ));
    }
    if !security
        .challenge_answers(&challenge, id)
        .contains(&answer.challenge_answer)
    {
        return Err(format!(
            "the node at {addr} did not prove it holds this cluster's key (--cluster-key-file)"
        ));
    }
    Ok(())
}

pub(crate) async fn ask(channels: &Channels, addr: &str) -> Option<InfoResponse> {
    let channel = channels.get(addr).ok()?;
    let mut request = tonic::Request::new(InfoRequest::default());
    request.set_timeout(Duration::from_secs(1));
    NodeClient::new(channel)
        .info(request)
        .await
        .ok()
        .map(|r| r.into_inner())
}

async fn form(
    raft: &Raft,
    me: NodeId,
    peers: &BTreeMap<NodeId, String>,
    channels: &Channels,
    guard: &VoteGuard,
) {
    let lowest = *peers.keys().next().expect("peer list is not empty");
    let mut logged_waiting = false;
    loop {
        if raft.is_initialized().await.unwrap_or(true) {
            // Reached by a leader (or initialised) meanwhile.
            return;
        }
        let mut answers = Vec::new();
        for (id, addr) in peers.iter().filter(|(id, _)| **id != me) {
            answers.push((*id, ask(channels, addr).await));
        }
        if let Some((id, _)) = answers.iter().find(|(_, a)| {
            a.as_ref()
                .is_some_and(|a| a.leader_id.is_some() || a.last_log_index > 0)
        }) {
            tracing::warn!(
                peer = id,
                "the cluster exists but this node's data directory is empty: rejoining; \
                 it will not vote until a leader has reached it"
            );
            return;
        }
        if answers.iter().all(|(_, a)| a.is_some()) {
            // Every peer answered and none belongs to an established cluster:
            // this is a new cluster.
            guard.clear();
            if me == lowest {
                let members = peers
                    .iter()
                    .map(|(id, addr)| (*id, Node::new(addr.clone())))
                    .collect();
                initialize(raft, members).await;
            }
            return;
        }
        if !logged_waiting {
            let missing: Vec<NodeId> = answers
                .iter()
                .filter(|(_, a)| a.is_none())
                .map(|(id, _)| *id)
                .collect();
            tracing::info!(
                ?missing,
                "waiting for every peer to answer before forming the cluster"
            );
            logged_waiting = true;
        }
        tokio::time::sleep(POLL).await;
    }
}
