//! HTTP probes for orchestrators, served on the gRPC port.
//!
//! - `GET /live`: 200 while the node's Raft core runs; 503 once it stopped
//!   on a fatal error (restart the process).
//! - `GET /ready`: 200 when the node is a caught-up voter: a voter of the
//!   current configuration, with a leader, and (unless it is the leader)
//!   reached by the leader within an election timeout and no more than
//!   [`READY_MAX_LAG`] entries behind the leader's log, asked of the leader
//!   itself. A rolling restart that waits for readiness
//!   therefore never takes a second node down before the first is back in
//!   the quorum. 503 with the reason otherwise.

use std::time::Duration;

use axum::http::StatusCode;
use sluice_proto::internal::node_client::NodeClient;
use sluice_proto::internal::InfoRequest;

use crate::raft::service::VoteGuard;
use crate::router::Router;

/// A follower this far behind the leader's log is not ready.
pub const READY_MAX_LAG: u64 = 1000;

/// `GET /live`.
pub async fn live(router: Router) -> (StatusCode, String) {
    let m = router.raft().metrics().borrow().clone();
    match &m.running_state {
        Ok(()) => (StatusCode::OK, "live\n".into()),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("raft stopped: {e}\n"),
        ),
    }
}

/// `GET /ready`.
pub async fn ready(
    router: Router,
    contact: std::sync::Arc<VoteGuard>,
    contact_max: Duration,
) -> (StatusCode, String) {
    match readiness(&router, &contact, contact_max).await {
        Ok(()) => (StatusCode::OK, "ready\n".into()),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        ),
    }
}

async fn readiness(
    router: &Router,
    contact: &VoteGuard,
    contact_max: Duration,
) -> Result<(), String> {
    let me = router.id();
    if let Some(until) = contact.repair().until() {
        return Err(format!("repairing a damaged log from the leader ({until})"));
    }
    let m = router.raft().metrics().borrow().clone();
    m.running_state
        .as_ref()
        .map_err(|e| format!("raft stopped: {e}"))?;
    let membership = m.membership_config.membership();
    if !membership.voter_ids().any(|v| v == me) {
        return Err(if membership.get_node(&me).is_some() {
            "a learner, not yet a voter".into()
        } else {
            "not a member of the cluster".into()
        });
    }
    let Some(leader) = m.current_leader else {
        return Err("no leader known".into());
    };
    if leader == me {
        return Ok(());
    }
    // Knowing a leader is not enough: a restarted follower remembers the
    // last one even when it cannot reach this node.
    match contact.since_leader_contact() {
        Some(d) if d <= contact_max => {}
        Some(d) => {
            return Err(format!(
                "leader {leader} last reached this node {} ms ago",
                d.as_millis()
            ))
        }
        None => return Err(format!("leader {leader} has not reached this node yet")),
    }
    let addr = membership
        .get_node(&leader)
        .map(|n| n.addr.clone())
        .ok_or_else(|| format!("leader {leader} has no address"))?;
    let channel = router
        .channels()
        .get(&addr)
        .map_err(|e| format!("leader {leader}: {e}"))?;
    let mut request = tonic::Request::new(InfoRequest::default());
    request.set_timeout(Duration::from_secs(1));
    let info = NodeClient::new(channel)
        .info(request)
        .await
        .map_err(|e| format!("leader {leader} does not answer: {}", e.message()))?
        .into_inner();
    let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
    let lag = info.last_log_index.saturating_sub(applied);
    if lag > READY_MAX_LAG {
        return Err(format!(
            "{lag} entries behind leader {leader} (ready within {READY_MAX_LAG})"
        ));
    }
    Ok(())
}
