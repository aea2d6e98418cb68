//! The server half of the node-to-node transport
//! (`sluice.internal.v1.Raft`): decodes openraft messages and hands them to
//! the local Raft instance.
//!
//! Two votes are refused here, before openraft sees them:
//!
//! * while the node is *rejoining*: it started with an empty data directory
//!   although its cluster already exists, so it has forgotten whom it voted
//!   for; until a leader has reached it (and with it the current term), a vote
//!   could be a second vote in a term it already voted in;
//! * for candidates that are not voters in the node's membership: a removed
//!   node that keeps campaigning must not disturb the cluster;
//! * while the node's damaged log is repaired ([`super::repair`]), for a
//!   candidate whose log ends before the log this node held before the
//!   damage (for every candidate while that is unknown): it lost entries it
//!   may have acknowledged, so its cut log no longer says whom it may elect.
//!
//! A leader's appends also tell a repair that waits for it how far the log
//! must reach ([`super::repair::Target::FromLeader`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use openraft::raft::{AppendEntriesResponse, VoteRequest, VoteResponse};
use openraft::Snapshot;
use sluice_proto::internal::{RaftPayload, SnapshotChunk};
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::snapshot::{self, Meta, SnapshotDir};
use super::snapshot_data::SnapshotFile;
use super::{NodeId, Raft};
use crate::auth::caller::Caller;
use crate::store::codec;

/// Whether this node may vote yet (see the module documentation), and when
/// a leader last reached it.
pub struct VoteGuard {
    rejoining: AtomicBool,
    last_contact: std::sync::Mutex<Option<std::time::Instant>>,
    repair: Arc<super::repair::Repair>,
}

impl VoteGuard {
    /// A guard that also holds back votes while `repair` is pending.
    pub fn new(repair: Arc<super::repair::Repair>) -> Self {
        VoteGuard {
            rejoining: AtomicBool::new(false),
            last_contact: std::sync::Mutex::new(None),
            repair,
        }
    }

    /// The repair of the node's damaged log.
    pub fn repair(&self) -> &super::repair::Repair {
        &self.repair
    }

    /// Refuse votes until a leader reaches this node.
    pub fn set_rejoining(&self) {
        self.rejoining.store(true, Ordering::SeqCst);
    }

    /// Allow votes again: the node turned out to be forming a new cluster.
    pub fn clear(&self) {
        self.rejoining.store(false, Ordering::SeqCst);
    }

    /// True while votes are refused.
    pub fn is_rejoining(&self) -> bool {
        self.rejoining.load(Ordering::SeqCst)
    }

    /// How long ago a leader's entries or snapshot last reached this node
    /// (`None`: never since it started).
    pub fn since_leader_contact(&self) -> Option<std::time::Duration> {
        self.last_contact
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .map(|t| t.elapsed())
    }

    fn leader_reached(&self) {
        *self.last_contact.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(std::time::Instant::now());
        if self.rejoining.swap(false, Ordering::SeqCst) {
            tracing::info!("a leader reached this rejoining node; it may vote again");
        }
    }
}

/// Serves `sluice.internal.v1.Raft`.
pub struct RaftService {
    raft: Raft,
    snapshots: Arc<SnapshotDir>,
    guard: Arc<VoteGuard>,
    /// How long appends that carry entries take (looked up once: every
    /// AppendEntries records into it).
    append_entries: metrics::Histogram,
}

impl RaftService {
    /// The vote guard, which also knows when a leader last reached the node.
    pub fn guard(&self) -> Arc<VoteGuard> {
        self.guard.clone()
    }

    /// Serves `raft`, receiving snapshots into `snapshots`.
    pub fn new(raft: Raft, snapshots: Arc<SnapshotDir>, guard: Arc<VoteGuard>) -> Self {
        RaftService {
            raft,
            snapshots,
            guard,
            append_entries: metrics::histogram!("sluice_append_entries_seconds"),
        }
    }

    /// Refuses Raft traffic from a node this one does not know as a member
    /// or learner, unless it leads a term newer than any this node has
    /// seen (a leader of a configuration this node has not caught up with)
    /// or this node belongs to no cluster yet (it is joining). The caller
    /// already proved it holds the cluster key (the guard layer).
    fn check_sender<T>(
        &self,
        request: &Request<T>,
        vote: Option<&openraft::Vote<NodeId>>,
    ) -> Result<(), Status> {
        let Some(Caller::Node(from)) = request.extensions().get::<Caller>() else {
            return Err(Status::permission_denied(
                "Raft traffic is taken from the cluster's nodes only",
            ));
        };
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let known = membership.nodes().next().is_none() || membership.get_node(from).is_some();
        let newer = vote.is_some_and(|v| v.leader_id().term > metrics.vote.leader_id().term);
        if known || newer {
            return Ok(());
        }
        tracing::warn!(target: "sluice::audit", from, "refused Raft traffic from a node that is not a member or learner");
        Err(Status::permission_denied(format!(
            "node {from} is not a member or learner of this cluster"
        )))
    }

    fn refuse_vote(&self, req: &VoteRequest<NodeId>) -> Option<String> {
        if self.guard.is_rejoining() {
            return Some("this node is rejoining and has not heard from a leader yet".into());
        }
        if let Some(reason) = self.guard.repair.refuses(req.last_log_id) {
            return Some(reason);
        }
        let candidate = req.vote.leader_id().voted_for()?;
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let membership = metrics.membership_config.membership();
        let has_config = membership.voter_ids().next().is_some();
        if has_config && !super::is_voter(membership, candidate) {
            return Some(format!("node {candidate} is not a voter of this cluster"));
        }
        None
    }
}

fn payload<T: serde::Serialize>(value: &T) -> Response<RaftPayload> {
    Response::new(RaftPayload {
        data: codec::encode(value),
    })
}

fn decode<T: serde::de::DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, Status> {
    codec::decode_message(what, bytes).map_err(Status::invalid_argument)
}

#[tonic::async_trait]
impl sluice_proto::internal::raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::AppendEntriesRequest<super::TypeConfig> =
            decode("append-entries request", &request.get_ref().data)?;
        self.check_sender(&request, Some(&rpc.vote))?;
        if self.guard.repair.wants(&rpc.vote, rpc.leader_commit) {
            let (repair, vote, commit) = (self.guard.repair.clone(), rpc.vote, rpc.leader_commit);
            let learned = tokio::task::spawn_blocking(move || repair.learn(&vote, commit))
                .await
                .map_err(|e| Status::internal(e.to_string()))?;
            if let Err(e) = learned {
                tracing::error!(error = %e, "could not record the repair target");
            }
        }
        let started = (!rpc.entries.is_empty()).then(std::time::Instant::now);
        let result = self.raft.append_entries(rpc).await;
        if let Some(t) = started {
            self.append_entries.record(t.elapsed().as_secs_f64());
        }
        if matches!(
            result,
            Ok(AppendEntriesResponse::Success | AppendEntriesResponse::PartialSuccess(_))
        ) {
            self.guard.leader_reached();
        }
        Ok(payload(&result))
    }

    async fn vote(&self, request: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc: VoteRequest<NodeId> = decode("vote request", &request.get_ref().data)?;
        self.check_sender(&request, None)?;
        if let Some(reason) = self.refuse_vote(&rpc) {
            tracing::info!(candidate = %rpc.vote, %reason, "refusing vote");
            let vote = self.raft.metrics().borrow().vote;
            // The candidate reads `last_log_id` of a refusal only to delay its
            // next election when ours is newer; leaving it out is safe.
            let reply: Result<VoteResponse<NodeId>, openraft::error::RaftError<NodeId>> =
                Ok(VoteResponse::new(vote, None, false));
            return Ok(payload(&reply));
        }
        let result = self.raft.vote(rpc).await;
        Ok(payload(&result))
    }

    async fn install_snapshot(
        &self,
        request: Request<Streaming<SnapshotChunk>>,
    ) -> Result<Response<RaftPayload>, Status> {
        let caller = request.extensions().get::<Caller>().cloned();
        let mut stream = request.into_inner();
        let first = stream
            .message()
            .await?
            .ok_or_else(|| Status::invalid_argument("empty snapshot stream"))?;
        let (vote, meta): (openraft::Vote<NodeId>, Meta) =
            decode("snapshot header", &first.header)?;
        let mut probe = Request::new(());
        if let Some(c) = caller {
            probe.extensions_mut().insert(c);
        }
        self.check_sender(&probe, Some(&vote))?;
        tracing::info!(snapshot = %meta, leader = %vote, "receiving snapshot");
        let path = self.snapshots.temp_path("recv");
        let received = async {
            let mut file = tokio::fs::File::create(&path).await?;
            file.write_all(&first.data).await?;
            while let Some(chunk) = stream.message().await.map_err(std::io::Error::other)? {
                file.write_all(&chunk.data).await?;
            }
            file.sync_all().await?;
            let check = path.clone();
            tokio::task::spawn_blocking(move || snapshot::verify(&check))
                .await
                .map_err(std::io::Error::other)?
        }
        .await;
        let file_meta = match received {
            Ok(m) => m,
            Err(e) => {
                let _ = tokio::fs::remove_file(&path).await;
                return Err(Status::data_loss(format!(
                    "received snapshot is unusable: {e}"
                )));
            }
        };
        if file_meta != meta {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(Status::data_loss(
                "received snapshot does not match its header",
            ));
        }
        let result = self
            .raft
            .install_full_snapshot(
                vote,
                Snapshot {
                    meta,
                    snapshot: Box::new(SnapshotFile::whole(path.clone())),
                },
            )
            .await;
        // Installed snapshots were moved into place; anything left was refused.
        let _ = tokio::fs::remove_file(&path).await;
        if result.is_ok() {
            self.guard.leader_reached();
        }
        Ok(payload(&result))
    }
}
