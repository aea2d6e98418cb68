//! `sluice.internal.v1.Node`: calls between nodes for routing and
//! coordination.

use std::time::Duration;

use sluice_proto::internal as pb;
use tonic::{Request, Response, Status};

use super::Reply;

use super::Context;
use crate::command::{Command, Query};
use crate::raft::is_voter;
use crate::store::codec;

/// Serves the internal node service.
pub struct NodeApi {
    ctx: Context,
    /// When an election was last started on request.
    last_election: std::sync::Mutex<Option<std::time::Instant>>,
}

impl NodeApi {
    /// The service over a node's context.
    pub fn new(ctx: Context) -> Self {
        NodeApi {
            ctx,
            last_election: std::sync::Mutex::new(None),
        }
    }
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Status> {
    codec::decode_message(what, bytes).map_err(Status::invalid_argument)
}

#[tonic::async_trait]
impl pb::node_server::Node for NodeApi {
    async fn propose(&self, request: Request<pb::Payload>) -> Reply<pb::Payload> {
        let command: Command = decode("forwarded command", &request.into_inner().data)?;
        let reply = self.ctx.router.write_as_leader(command).await?;
        Ok(Response::new(pb::Payload {
            data: codec::encode(&reply),
        }))
    }

    async fn read(&self, request: Request<pb::Payload>) -> Reply<pb::Payload> {
        let query: Query = decode("forwarded query", &request.into_inner().data)?;
        let reply = self.ctx.router.read_as_leader(query).await?;
        Ok(Response::new(pb::Payload {
            data: codec::encode(&reply),
        }))
    }

    async fn info(&self, request: Request<pb::InfoRequest>) -> Reply<pb::InfoResponse> {
        let challenge = request.into_inner().challenge;
        if challenge.len() > 64 {
            return Err(Status::invalid_argument("challenge: at most 64 bytes"));
        }
        let me = self.ctx.router.id();
        let challenge_answer = if challenge.is_empty() {
            String::new()
        } else {
            self.ctx
                .security
                .challenge_answers(&challenge, me)
                .swap_remove(0)
        };
        let raft = self.ctx.router.raft();
        let m = raft.metrics().borrow().clone();
        let initialized = m
            .membership_config
            .membership()
            .voter_ids()
            .next()
            .is_some();
        Ok(Response::new(pb::InfoResponse {
            challenge_answer,
            node_id: me,
            initialized,
            leader_id: m.current_leader,
            term: m.current_term,
            last_log_index: m.last_log_index.unwrap_or(0),
        }))
    }

    async fn start_election(
        &self,
        request: Request<pb::StartElectionRequest>,
    ) -> Reply<pb::StartElectionResponse> {
        let min_index = request.into_inner().min_log_index;
        let raft = self.ctx.router.raft();
        let id = self.ctx.router.id();
        if let Some(until) = self.ctx.repair.until() {
            return Err(Status::failed_precondition(format!(
                "node {id} is repairing a damaged log ({until}) and cannot lead"
            )));
        }
        // A transfer asks once; anything more often only churns terms.
        let min_gap = self.ctx.timing.election_max;
        {
            let mut last = self.last_election.lock().unwrap_or_else(|e| e.into_inner());
            if last.is_some_and(|t| t.elapsed() < min_gap) {
                return Err(Status::resource_exhausted(format!(
                    "an election was started on request less than {} ms ago; at most one per {} ms",
                    min_gap.as_millis(),
                    min_gap.as_millis()
                )));
            }
            *last = Some(std::time::Instant::now());
        }
        {
            let m = raft.metrics().borrow().clone();
            if !is_voter(m.membership_config.membership(), id) {
                return Err(Status::failed_precondition(format!(
                    "node {id} is not a voter and cannot lead"
                )));
            }
        }
        // The leader sends this once it has seen this node's log reach
        // `min_index`; wait for the local view to agree before campaigning,
        // or the other voters would refuse an out-of-date candidate.
        raft.wait(Some(Duration::from_secs(5)))
            .log_index_at_least(Some(min_index), "caught up for leadership transfer")
            .await
            .map_err(|e| Status::failed_precondition(format!("not caught up: {e}")))?;
        raft.trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        Ok(Response::new(pb::StartElectionResponse {}))
    }
}
