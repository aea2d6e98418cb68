//! `sluice.v1.Cluster`: status and membership.
//!
//! Membership changes and leadership transfer run on the leader. A follower
//! forwards them with the public API itself, marked with the
//! `sluice-forwarded` metadata so the receiver runs them only if it leads.

use super::status::IntoStatus;
use std::collections::BTreeSet;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use sluice_proto::v1 as pb;
use sluice_proto::v1::cluster_client::ClusterClient;
use sluice_security::signer::SignedChannel;
use tonic::{Request, Response, Status};

use super::Reply;

use super::Context;
use crate::error::DomainError;
use crate::raft::{is_voter, Node, NodeId, RaftMetrics};
use crate::router::{
    hop_from_status, Hop, RouteError, Routed, Router, ERROR_CODE_HEADER, FORWARDED_HEADER,
};
use crate::transfer;

/// Most entries a learner may be behind and still be promoted.
const PROMOTE_MAX_LAG: u64 = 1000;
/// How long AddLearner waits for the learner to catch up before answering.
const LEARNER_CATCH_UP_WAIT: Duration = Duration::from_secs(30);
/// Bound of one attempt at a membership change or transfer.
const ADMIN_ATTEMPT: Duration = Duration::from_secs(60);

/// Serves the cluster API.
pub struct ClusterApi {
    ctx: Context,
}

/// A leader-only cluster operation.
#[derive(Clone)]
enum Op {
    Status,
    AddLearner(pb::AddLearnerRequest),
    Promote(pb::PromoteLearnerRequest),
    Remove(pb::RemoveMemberRequest),
    Transfer(pb::TransferLeadershipRequest),
}

enum AdminReply {
    Status(pb::GetClusterStatusResponse),
    Membership(pb::MembershipResponse),
    Transfer(pb::TransferLeadershipResponse),
}

struct Admin<'a> {
    ctx: &'a Context,
    op: Op,
}

fn state_name(s: ServerState) -> &'static str {
    match s {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    }
}

/// The members as `m` shows them, with replication progress when `m` is a
/// leader's.
pub fn members(m: &RaftMetrics) -> Vec<pb::MemberStatus> {
    let membership = m.membership_config.membership();
    let last = m.last_log_index.unwrap_or(0);
    membership
        .nodes()
        .map(|(id, node)| {
            let matched = m
                .replication
                .as_ref()
                .and_then(|r| r.get(id))
                .map(|l| l.map(|l| l.index).unwrap_or(0));
            pb::MemberStatus {
                node_id: *id,
                address: node.addr.clone(),
                role: if is_voter(membership, *id) {
                    "voter"
                } else {
                    "learner"
                }
                .into(),
                matched_index: matched,
                lag: matched.map(|mi| last.saturating_sub(mi)),
            }
        })
        .collect()
}

/// This node's view of the cluster.
pub fn local_status(ctx: &Context) -> pb::GetClusterStatusResponse {
    let m = ctx.router.raft().metrics().borrow().clone();
    pb::GetClusterStatusResponse {
        node_id: ctx.router.id(),
        state: state_name(m.state).into(),
        leader_id: m.current_leader,
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        snapshot_index: m.snapshot.map(|l| l.index),
        purged_index: m.purged.map(|l| l.index),
        members: members(&m),
        region: ctx.identity.region.clone(),
        account_id: ctx.identity.account_id.clone(),
        repair_target: ctx.repair.pending(),
    }
}

fn membership_error(
    me: NodeId,
    e: RaftError<NodeId, ClientWriteError<NodeId, Node>>,
) -> Hop<AdminReply> {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
            Hop::Retry(RouteError::NotLeader {
                node_id: me,
                leader: f.leader_id,
            })
        }
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Hop::Fail(RouteError::Remote(
                DomainError::precondition("MembershipChangeRejected", e.to_string()).into_status(),
            ))
        }
        RaftError::Fatal(_) => Hop::Fail(RouteError::ShuttingDown),
    }
}

fn rejected(e: DomainError) -> Hop<AdminReply> {
    Hop::Fail(RouteError::Remote(e.into_status()))
}

/// What a membership operation comes to: a reply, or the hop that ends it
/// otherwise (a refusal, a retry elsewhere).
type Outcome = Result<AdminReply, Hop<AdminReply>>;

/// The hop an outcome makes.
fn hop(outcome: Outcome) -> Hop<AdminReply> {
    outcome.map_or_else(|hop| hop, Hop::Done)
}

fn validate_node_id(id: u64) -> Result<NodeId, DomainError> {
    if id == 0 {
        return Err(DomainError::invalid(
            "node_id",
            "must be a positive integer",
        ));
    }
    Ok(id)
}

/// Checks a `host:port` address.
pub fn validate_address(field: &str, addr: &str) -> Result<(), DomainError> {
    let rule = "must be host:port with a port from 1 to 65535";
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| DomainError::invalid(field, format!("{rule}, got {addr:?}")))?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p > 0);
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-._[]:".contains(c));
    if !port_ok || !host_ok {
        return Err(DomainError::invalid(field, format!("{rule}, got {addr:?}")));
    }
    Ok(())
}

impl Admin<'_> {
    /// This node's Raft metrics now.
    fn metrics(&self) -> RaftMetrics {
        self.ctx.router.raft().metrics().borrow().clone()
    }

    fn membership_reply(&self, log_index: u64) -> AdminReply {
        AdminReply::Membership(pb::MembershipResponse {
            members: members(&self.metrics()),
            log_index,
        })
    }

    /// The reply when the membership already is as asked: the members as
    /// of the last membership change in `m`.
    fn unchanged(&self, m: &RaftMetrics) -> AdminReply {
        self.membership_reply(m.membership_config.log_id().map(|l| l.index).unwrap_or(0))
    }

    /// The metrics now and the node `node_id` names, which must be a
    /// member (`hint` tells the caller what to do otherwise).
    fn member(&self, node_id: u64, hint: &str) -> Result<(RaftMetrics, NodeId), DomainError> {
        let id = validate_node_id(node_id)?;
        let m = self.metrics();
        if m.membership_config.membership().get_node(&id).is_none() {
            return Err(DomainError::not_found(
                "NodeNotFound",
                format!("node_id: node {id} is not a member of the cluster{hint}"),
            ));
        }
        Ok((m, id))
    }

    /// Commits a membership change and replies with the members after it.
    async fn change(&self, change: ChangeMembers<NodeId, Node>) -> Outcome {
        let r = self
            .ctx
            .router
            .raft()
            .change_membership(change, false)
            .await
            .map_err(|e| membership_error(self.ctx.router.id(), e))?;
        Ok(self.membership_reply(r.log_id.index))
    }

    async fn add_learner(&self, req: &pb::AddLearnerRequest) -> Outcome {
        let raft = self.ctx.router.raft();
        let id = validate_node_id(req.node_id).map_err(rejected)?;
        validate_address("address", &req.address).map_err(rejected)?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if let Some(node) = membership.get_node(&id) {
            if node.addr == req.address {
                return Ok(self.unchanged(&m));
            }
            return Err(rejected(DomainError::already_exists(
                "NodeExists",
                format!("node_id: node {id} is already a member at {}", node.addr),
            )));
        }
        if let Some((other, _)) = membership.nodes().find(|(_, n)| n.addr == req.address) {
            return Err(rejected(DomainError::already_exists(
                "AddressInUse",
                format!("address: {} is already node {other}'s", req.address),
            )));
        }
        // Only a node that proves it holds the cluster key is sent the log.
        if let Err(why) = crate::bootstrap::prove(
            self.ctx.router.channels(),
            &self.ctx.security,
            &req.address,
            id,
        )
        .await
        {
            return Err(rejected(DomainError::denied(
                "NodeNotAuthenticated",
                format!("address: {why}; node {id} was not added"),
            )));
        }
        let reply = raft
            .add_learner(id, Node::new(req.address.clone()), false)
            .await
            .map_err(|e| membership_error(self.ctx.router.id(), e))?;
        // Answer once the learner has caught up (or the wait ran out; the
        // reply's lag shows which).
        let _ = raft
            .wait(Some(LEARNER_CATCH_UP_WAIT))
            .metrics(
                move |m| {
                    let matched = m
                        .replication
                        .as_ref()
                        .and_then(|r| r.get(&id).cloned().flatten())
                        .map(|l| l.index)
                        .unwrap_or(0);
                    matched >= m.last_log_index.unwrap_or(0)
                },
                "learner caught up",
            )
            .await;
        Ok(self.membership_reply(reply.log_id.index))
    }

    async fn promote(&self, req: &pb::PromoteLearnerRequest) -> Outcome {
        let (m, id) = self
            .member(req.node_id, "; add it as a learner first")
            .map_err(rejected)?;
        if is_voter(m.membership_config.membership(), id) {
            return Ok(self.unchanged(&m));
        }
        let lag = members(&m)
            .into_iter()
            .find(|s| s.node_id == id)
            .and_then(|s| s.lag)
            .unwrap_or(u64::MAX);
        if lag > PROMOTE_MAX_LAG {
            return Err(rejected(DomainError::precondition(
                "LearnerLagging",
                format!("node_id: node {id} is behind the leader by more than {PROMOTE_MAX_LAG} entries; promote it once it has caught up"),
            )));
        }
        self.change(ChangeMembers::AddVoterIds(BTreeSet::from([id])))
            .await
    }

    async fn remove(&self, req: &pb::RemoveMemberRequest) -> Outcome {
        let (m, id) = self.member(req.node_id, "").map_err(rejected)?;
        let membership = m.membership_config.membership();
        let change = if is_voter(membership, id) {
            if membership.voter_ids().count() == 1 {
                return Err(rejected(DomainError::precondition(
                    "LastVoter",
                    format!("node_id: node {id} is the cluster's only voter"),
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        self.change(change).await
    }
}

impl Routed for Admin<'_> {
    type Output = AdminReply;

    async fn here(&self, _router: &Router) -> Hop<AdminReply> {
        match &self.op {
            Op::Status => Hop::Done(AdminReply::Status(local_status(self.ctx))),
            Op::AddLearner(req) => hop(self.add_learner(req).await),
            Op::Promote(req) => hop(self.promote(req).await),
            Op::Remove(req) => hop(self.remove(req).await),
            Op::Transfer(req) => {
                match transfer::transfer(&self.ctx.router, &self.ctx.timing, req.to_node_id).await {
                    Ok(o) => Hop::Done(AdminReply::Transfer(pb::TransferLeadershipResponse {
                        previous_leader_id: o.previous,
                        new_leader_id: o.new,
                        term: o.term,
                    })),
                    Err(e) => rejected(e),
                }
            }
        }
    }

    fn leader_changed(&self, from: NodeId, to: NodeId) -> Option<Hop<AdminReply>> {
        match self.op {
            Op::Status => Some(Hop::Retry(RouteError::LeaderChanged { from, to })),
            // A transfer changes the leader itself, and a membership change
            // must not run twice: wait for the old leader's answer.
            _ => None,
        }
    }

    fn attempt_limit(&self, remaining: Duration) -> Duration {
        // A learner catching up, a lease running out: membership changes and
        // transfers take their own, separately bounded time.
        remaining.max(ADMIN_ATTEMPT)
    }

    async fn forward(&self, channel: SignedChannel, _timeout: Duration) -> Hop<AdminReply> {
        fn forwarded<T>(msg: T) -> Request<T> {
            let mut r = Request::new(msg);
            r.metadata_mut().insert(
                FORWARDED_HEADER,
                tonic::metadata::MetadataValue::from_static("1"),
            );
            r
        }
        let mut client = ClusterClient::new(channel);
        let membership =
            |r: Reply<pb::MembershipResponse>| r.map(|r| AdminReply::Membership(r.into_inner()));
        let result = match self.op.clone() {
            Op::Status => client
                .get_cluster_status(forwarded(pb::GetClusterStatusRequest { local: false }))
                .await
                .map(|r| AdminReply::Status(r.into_inner())),
            Op::AddLearner(req) => membership(client.add_learner(forwarded(req)).await),
            Op::Promote(req) => membership(client.promote_learner(forwarded(req)).await),
            Op::Remove(req) => membership(client.remove_member(forwarded(req)).await),
            Op::Transfer(req) => client
                .transfer_leadership(forwarded(req))
                .await
                .map(|r| AdminReply::Transfer(r.into_inner())),
        };
        match result {
            Ok(reply) => Hop::Done(reply),
            Err(status) => hop_from_status(status),
        }
    }
}

impl ClusterApi {
    /// The service over a node's context.
    pub fn new(ctx: Context) -> Self {
        ClusterApi { ctx }
    }

    async fn run<T>(
        &self,
        request: Request<T>,
        op: impl FnOnce(T) -> Op,
    ) -> Result<AdminReply, Status> {
        let forwarded = request.metadata().get(FORWARDED_HEADER).is_some();
        let admin = Admin {
            ctx: &self.ctx,
            op: op(request.into_inner()),
        };
        let reply = if forwarded {
            self.ctx.router.as_leader(&admin).await
        } else {
            self.ctx.router.route(&admin).await
        };
        Ok(reply?)
    }
}

impl ClusterApi {
    async fn membership<T>(
        &self,
        request: Request<T>,
        op: impl FnOnce(T) -> Op,
    ) -> Reply<pb::MembershipResponse> {
        match self.run(request, op).await? {
            AdminReply::Membership(m) => Ok(Response::new(m)),
            _ => Err(unexpected()),
        }
    }
}

fn unexpected() -> Status {
    super::status::internal("unexpected reply kind")
}

#[tonic::async_trait]
impl pb::cluster_server::Cluster for ClusterApi {
    async fn get_cluster_status(
        &self,
        request: Request<pb::GetClusterStatusRequest>,
    ) -> Reply<pb::GetClusterStatusResponse> {
        if request.get_ref().local {
            return Ok(Response::new(local_status(&self.ctx)));
        }
        match self.run(request, |_| Op::Status).await {
            Ok(AdminReply::Status(s)) => Ok(Response::new(s)),
            Ok(_) => Err(unexpected()),
            // A member with no leader to ask shows what it knows; a node
            // outside the cluster says so, and clients move on.
            Err(s)
                if s.code() == tonic::Code::Unavailable
                    && s.metadata()
                        .get(ERROR_CODE_HEADER)
                        .is_some_and(|c| c != "NotClusterMember") =>
            {
                Ok(Response::new(local_status(&self.ctx)))
            }
            Err(s) => Err(s),
        }
    }

    async fn add_learner(
        &self,
        request: Request<pb::AddLearnerRequest>,
    ) -> Reply<pb::MembershipResponse> {
        self.membership(request, Op::AddLearner).await
    }

    async fn promote_learner(
        &self,
        request: Request<pb::PromoteLearnerRequest>,
    ) -> Reply<pb::MembershipResponse> {
        self.membership(request, Op::Promote).await
    }

    async fn remove_member(
        &self,
        request: Request<pb::RemoveMemberRequest>,
    ) -> Reply<pb::MembershipResponse> {
        self.membership(request, Op::Remove).await
    }

    async fn transfer_leadership(
        &self,
        request: Request<pb::TransferLeadershipRequest>,
    ) -> Reply<pb::TransferLeadershipResponse> {
        match self.run(request, Op::Transfer).await? {
            AdminReply::Transfer(t) => Ok(Response::new(t)),
            _ => Err(unexpected()),
        }
    }

    async fn trigger_snapshot(
        &self,
        _request: Request<pb::TriggerSnapshotRequest>,
    ) -> Reply<pb::TriggerSnapshotResponse> {
        let raft = self.ctx.router.raft();
        let applied = raft
            .metrics()
            .borrow()
            .last_applied
            .map(|l| l.index)
            .unwrap_or(0);
        raft.trigger()
            .snapshot()
            .await
            .map_err(|_| Status::from(RouteError::ShuttingDown))?;
        let m = raft
            .wait(Some(Duration::from_secs(120)))
            .metrics(
                move |m| m.snapshot.is_some_and(|s| s.index >= applied),
                "snapshot built",
            )
            .await
            .map_err(|e| super::status::timeout(format!("snapshot not built: {e}")))?;
        Ok(Response::new(pb::TriggerSnapshotResponse {
            node_id: self.ctx.router.id(),
            snapshot_index: m.snapshot.map(|s| s.index).unwrap_or(0),
        }))
    }
}
