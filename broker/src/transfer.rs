//! Leadership transfer.
//!
//! openraft 0.9 has no TimeoutNow message, and its followers refuse to vote
//! while the leader's lease (the maximum election timeout since its last
//! message) runs. The leader therefore hands over like this:
//!
//! 1. hold new writes on this node;
//! 2. wait until the target's log matches the leader's;
//! 3. stop sending heartbeats, and wait one lease so the followers will vote;
//! 4. ask the target to start an election: with the most up-to-date log and
//!    the others' election timers still running, it wins;
//! 5. wait until another node leads, then resume (held writes are then
//!    forwarded to the new leader).
//!
//! Heartbeats and writes resume on every path out, including errors.

use std::time::Duration;

use sluice_proto::internal::node_client::NodeClient;
use sluice_proto::internal::StartElectionRequest;

use crate::error::DomainError;
use crate::raft::{NodeId, Raft, RaftMetrics, Timing};
use crate::router::Router;

/// How long the target may take to catch up.
const CATCH_UP_WAIT: Duration = Duration::from_secs(5);

/// Who led before and after a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// The node that led.
    pub previous: NodeId,
    /// The node that leads now.
    pub new: NodeId,
    /// The new leader's term.
    pub term: u64,
}

struct HeartbeatsOff<'a>(&'a Raft);

impl Drop for HeartbeatsOff<'_> {
    fn drop(&mut self) {
        self.0.runtime_config().heartbeat(true);
    }
}

fn matched(m: &RaftMetrics, node: NodeId) -> u64 {
    m.replication
        .as_ref()
        .and_then(|r| r.get(&node).cloned().flatten())
        .map(|l| l.index)
        .unwrap_or(0)
}

/// Picks the target: `to` if it is another voter, else the most caught-up
/// other voter.
pub fn choose_target(
    m: &RaftMetrics,
    me: NodeId,
    to: Option<NodeId>,
) -> Result<NodeId, DomainError> {
    let membership = m.membership_config.membership();
    match to {
        Some(t) if crate::raft::is_voter(membership, t) => Ok(t),
        Some(t) if membership.get_node(&t).is_some() => Err(DomainError::invalid(
            "to_node_id",
            format!("node {t} is a learner; promote it before making it leader"),
        )),
        Some(t) => Err(DomainError::not_found(
            "NodeNotFound",
            format!("to_node_id: node {t} is not a member of the cluster"),
        )),
        None => membership
            .voter_ids()
            .filter(|v| *v != me)
            .max_by_key(|v| (matched(m, *v), std::cmp::Reverse(*v)))
            .ok_or_else(|| {
                DomainError::precondition(
                    "NoOtherVoter",
                    "the cluster has no other voter to hand leadership to",
                )
            }),
    }
}

/// Hands leadership from this node (which must lead) to `to`, or to the most
/// caught-up other voter.
pub async fn transfer(
    router: &Router,
    timing: &Timing,
    to: Option<NodeId>,
) -> Result<Outcome, DomainError> {
    let raft = router.raft();
    let me = router.id();
    let m = raft.metrics().borrow().clone();
    if m.current_leader != Some(me) {
        return Err(DomainError::precondition(
            "NotLeader",
            format!("node {me} no longer leads"),
        ));
    }
    if to == Some(me) {
        return Ok(Outcome {
            previous: me,
            new: me,
            term: m.current_term,
        });
    }
    let target = choose_target(&m, me, to)?;
    let addr = m
        .membership_config
        .membership()
        .get_node(&target)
        .map(|n| n.addr.clone())
        .unwrap_or_default();
    tracing::info!(target, "transferring leadership");

    let _paused = router.pause_writes();
    let caught_up = raft
        .wait(Some(CATCH_UP_WAIT))
        .metrics(
            move |m| matched(m, target) >= m.last_log_index.unwrap_or(0),
            "target caught up",
        )
        .await
        .map_err(|_| {
            DomainError::precondition(
                "TransferTimedOut",
                format!(
                    "node {target} did not catch up with the leader within {} s",
                    CATCH_UP_WAIT.as_secs()
                ),
            )
        })?;
    let last_index = caught_up.last_log_index.unwrap_or(0);

    raft.runtime_config().heartbeat(false);
    let _heartbeats = HeartbeatsOff(raft);
    // Waiting out the followers' leader lease is part of the protocol: until
    // it lapses they refuse to vote for the target.
    tokio::time::sleep(timing.election_max + timing.heartbeat).await;

    let channel = router
        .channels()
        .get(&addr)
        .map_err(|e| DomainError::precondition("TransferFailed", e))?;
    let mut request = tonic::Request::new(StartElectionRequest {
        min_log_index: last_index,
    });
    request.set_timeout(CATCH_UP_WAIT);
    NodeClient::new(channel)
        .start_election(request)
        .await
        .map_err(|s| {
            DomainError::precondition(
                "TransferFailed",
                format!("node {target} could not start an election: {}", s.message()),
            )
        })?;

    let after = raft
        .wait(Some(timing.election_max * 4))
        .metrics(
            move |m| m.current_leader.is_some_and(|l| l != me),
            "another node leads",
        )
        .await
        .map_err(|_| {
            DomainError::precondition(
                "TransferTimedOut",
                format!(
                    "no other node took over within {:?}",
                    timing.election_max * 4
                ),
            )
        })?;
    let new = after.current_leader.unwrap_or(target);
    tracing::info!(
        previous = me,
        new,
        term = after.current_term,
        "leadership transferred"
    );
    Ok(Outcome {
        previous: me,
        new,
        term: after.current_term,
    })
}
