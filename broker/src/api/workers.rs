//! `sluice.v1.Workers`: how workers join the cluster, heartbeat, and fetch
//! code.

use super::status::IntoStatus;
use std::collections::HashMap;

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Reply;

use super::{Consistency, Context};
use crate::clock::now_ms;
use crate::functions::concurrency::ProvisionedConfig;
use crate::functions::events::Destination;
use crate::mappings::checkpoints::{Checkpoint, Commit};
use crate::mappings::leases::{stream_part, SLOTS_MAX};
use crate::mappings::{Mapping, Source, StartingPosition};
use crate::workers::{self, Heartbeat, Warm, WorkerRecord};

/// Serves the workers API.
pub struct WorkersApi {
    ctx: Context,
}

impl WorkersApi {
    /// A workers API over `ctx`.
    pub fn new(ctx: Context) -> Self {
        WorkersApi { ctx }
    }
}

/// The registered workers, from this node's applied state.
pub fn registered(ctx: &Context) -> Result<Vec<WorkerRecord>, Status> {
    ctx.ask_local(crate::workers::ListWorkers)?
        .map_err(super::status::from_domain)
}

/// Every provisioned configuration whose qualifier resolves, with what its
/// environments run (the alias's main version for an alias), from this
/// node's applied state.
pub fn provisioned(
    ctx: &Context,
    function: Option<&str>,
) -> Result<Vec<(ProvisionedConfig, pb::RunSpec)>, Status> {
    let configs = ctx
        .ask_local(crate::functions::Provisioned {
            name: function.map(str::to_string),
        })?
        .map_err(super::status::from_domain)?;
    let mut out = Vec::new();
    for c in configs {
        let target = ctx.ask_local(crate::functions::InvokeTarget {
            name: c.function.clone(),
            qualifier: c.qualifier.clone(),
        })?;
        // A qualifier that no longer resolves (its alias was deleted) keeps
        // nothing warm.
        if let Ok(t) = target {
            let (spec, _) =
                crate::invocation::run_spec(ctx, &t.function, t.version.as_ref(), &c.qualifier);
            out.push((c, spec));
        }
    }
    Ok(out)
}

/// What the leases of one mapping need read: the mapping, its function's
/// timeout, and for a stream its checkpoints and creation time.
type MappingView = (Mapping, u32, Vec<Checkpoint>, u64);

/// Reads one mapping's view (`None` when it or its function is gone).
fn mapping_view(ctx: &Context, uuid: &str) -> Result<Option<MappingView>, Status> {
    let Ok(m) = ctx.ask_local(crate::mappings::GetMapping {
        uuid: uuid.to_string(),
    })?
    else {
        return Ok(None);
    };
    let Ok(f) = ctx.ask_local(crate::functions::GetFunction {
        name: m.function.clone(),
    })?
    else {
        return Ok(None);
    };
    let (checkpoints, since) = match &m.source {
        Source::Queue(_) => (Vec::new(), 0),
        // This node has applied the leases, hence every checkpoint
        // committed under the slots' earlier epochs.
        Source::Stream(_) => match ctx.ask_local(crate::mappings::MappingCheckpoints {
            function: m.function.clone(),
            uuid: uuid.to_string(),
        })? {
            Ok(found) => found,
            Err(_) => return Ok(None),
        },
    };
    Ok(Some((m, f.settings.timeout_s, checkpoints, since)))
}

/// The mapping slots `worker` holds, with their mappings' settings, from
/// this node's applied state (each mapping read once).
fn poll_leases(ctx: &Context, worker: &str) -> Result<Vec<pb::PollLease>, Status> {
    let leases = ctx
        .ask_local(crate::mappings::ListLeases)?
        .map_err(super::status::from_domain)?;
    let mut slots: HashMap<String, u32> = HashMap::new();
    for l in &leases {
        *slots.entry(l.uuid.clone()).or_default() += 1;
    }
    let mut views: HashMap<String, Option<MappingView>> = HashMap::new();
    let mut out = Vec::new();
    for l in leases.into_iter().filter(|l| l.worker == worker) {
        if !views.contains_key(&l.uuid) {
            views.insert(l.uuid.clone(), mapping_view(ctx, &l.uuid)?);
        }
        let Some((m, function_timeout_s, cps, since)) = &views[&l.uuid] else {
            continue;
        };
        let (function_timeout_s, since) = (*function_timeout_s, *since);
        let s = &m.settings;
        let mut lease = pb::PollLease {
            function_timeout_s,
            mapping_uuid: l.uuid.clone(),
            slot: l.slot,
            epoch: l.epoch,
            function_name: m.function.clone(),
            region: ctx.identity.region.clone(),
            batch_size: s.batch_size,
            batching_window_s: s.batching_window_s,
            report_batch_item_failures: s.report_batch_item_failures,
            filters: s.filters.clone(),
            ..Default::default()
        };
        match &m.source {
            Source::Queue(queue) => {
                lease.queue_name = queue.clone();
                lease.event_source_arn = ctx.identity.queue_arn(queue);
                lease.concurrency = queue_concurrency(
                    s.maximum_concurrency.unwrap_or(SLOTS_MAX),
                    slots[&l.uuid],
                    l.slot,
                );
            }
            Source::Stream(stream) => {
                let (shard, part) = stream_part(l.slot);
                lease.stream_name = stream.clone();
                lease.event_source_arn = ctx.identity.stream_arn(stream);
                lease.shard_id = crate::streams::shard_id(shard);
                lease.part = part;
                lease.parallelization_factor = s.parallelization_factor.max(1);
                if let Some(cp) = cps.iter().find(|c| c.slot == l.slot) {
                    lease.checkpoint = crate::streams::sequence_number(cp.seq, shard);
                }
                let (position, at) = match s.starting_position {
                    Some(StartingPosition::AtTimestamp(t)) => ("AT_TIMESTAMP", t),
                    Some(StartingPosition::Latest) => ("AT_TIMESTAMP", since),
                    _ => ("TRIM_HORIZON", 0),
                };
                lease.starting_position = position.into();
                lease.starting_timestamp_ms = at as i64;
                lease.bisect_on_error = s.bisect_on_error;
                lease.maximum_retry_attempts = s.maximum_retry_attempts;
                lease.maximum_record_age_s = s.maximum_record_age_s;
                if !s.on_failure.is_empty() {
                    match Destination::parse("on_failure", &s.on_failure) {
                        Ok(Destination::Queue(q)) => lease.on_failure_queue = q,
                        Ok(Destination::Topic(t)) => {
                            lease.on_failure_topic = ctx.identity.topic_arn(&t)
                        }
                        _ => {}
                    }
                }
                lease.function_arn = ctx.identity.function_arn(&m.function);
            }
        }
        out.push(lease);
    }
    Ok(out)
}

/// The batches the holder of `slot` (of a queue mapping's `slots`) may run
/// at once: its share of the mapping's `cap`, the first slots taking the
/// remainder, and at least one.
fn queue_concurrency(cap: u32, slots: u32, slot: u32) -> u32 {
    let n = slots.max(1);
    (cap / n + u32::from(slot < cap % n)).max(1)
}

/// Environments ready for `key` on the live workers (idle, or running an
/// invocation; not those still starting).
pub fn available(workers: &[WorkerRecord], key: &str, now: u64) -> u32 {
    workers
        .iter()
        .filter(|w| workers::is_live(w, now))
        .flat_map(|w| w.report.warm.iter())
        .filter(|e| e.key == key)
        .map(|e| e.idle + e.busy)
        .sum()
}

/// Worker `id`'s share of `count` environments spread over the live
/// workers (in id order, the first ones taking the remainder).
fn share(live: &[String], id: &str, count: u32) -> u32 {
    let n = live.len().max(1) as u32;
    let i = live.iter().position(|w| w == id).unwrap_or(live.len()) as u32;
    count / n + u32::from(i < count % n)
}

#[tonic::async_trait]
impl pb::workers_server::Workers for WorkersApi {
    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Reply<pb::HeartbeatResponse> {
        let owner = super::caller(&request)?.owner();
        let r = request.into_inner();
        if self.ctx.security.cluster_tls()
            && r.tls_certificate_sha256.is_empty()
            && !owner.starts_with(crate::auth::caller::NODE_OWNER)
        {
            return Err(crate::error::DomainError::precondition(
                "WorkerTlsRequired",
                "tls_certificate_sha256: this cluster calls workers over TLS only; the worker must serve WorkerHost with a certificate",
            )
            .into_status());
        }
        let mut other_host_secrets = self.ctx.security.worker_host_secrets(&owner, &r.worker_id);
        let host_secret = other_host_secrets.remove(0);
        let report = Heartbeat {
            owner,
            tls_fingerprint: r.tls_certificate_sha256,
            id: r.worker_id,
            address: r.address,
            memory_mb: r.memory_mb,
            memory_used_mb: r.memory_used_mb,
            running: r.running,
            warm: r
                .warm
                .into_iter()
                .map(|w| Warm {
                    key: w.key,
                    idle: w.idle,
                    busy: w.busy,
                    starting: w.starting,
                })
                .collect(),
        };
        report.validate().map_err(super::status::from_domain)?;
        let all = registered(&self.ctx)?;
        let now = now_ms();
        let stored = all.iter().find(|w| w.report.id == report.id);
        if workers::worth_committing(stored, &report, now) {
            self.ctx.run(report.clone()).await?;
        }
        let mut live: Vec<String> = all
            .iter()
            .filter(|w| workers::is_live(w, now))
            .map(|w| w.report.id.clone())
            .collect();
        if !live.contains(&report.id) {
            live.push(report.id.clone());
        }
        live.sort();
        let provisioned = provisioned(&self.ctx, None)?
            .into_iter()
            .filter_map(|(c, spec)| {
                let count = share(&live, &report.id, c.requested);
                (count > 0).then_some(pb::Provisioned {
                    spec: Some(spec),
                    count,
                })
            })
            .collect();
        Ok(Response::new(pb::HeartbeatResponse {
            interval_ms: workers::HEARTBEAT_MS,
            provisioned,
            leases: poll_leases(&self.ctx, &report.id)?,
            host_secret,
            other_host_secrets,
        }))
    }

    async fn leave(&self, request: Request<pb::LeaveRequest>) -> Reply<pb::LeaveResponse> {
        let owner = super::caller(&request)?.owner();
        let id = request.into_inner().worker_id;
        sluice_worker::validate_id(&id).map_err(|e| super::status::invalid("worker_id", e))?;
        self.ctx
            .run(crate::workers::WorkerLeave { id, owner })
            .await?;
        Ok(Response::new(pb::LeaveResponse {}))
    }

    async fn get_code(&self, request: Request<pb::GetCodeRequest>) -> Reply<pb::GetCodeResponse> {
        let sha256 = request.into_inner().sha256;
        if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(super::status::invalid(
                "sha256",
                "must be 64 hexadecimal digits",
            ));
        }
        // A package never changes under its hash: this node's copy will
        // do, unless it has not applied the function yet.
        let query = crate::functions::FunctionCode { sha256 };
        let mut found = self.ctx.ask(Consistency::Local, query.clone()).await?;
        if found.is_none() {
            found = self.ctx.ask(Consistency::Linearizable, query).await?;
        }
        let zip = found.ok_or_else(|| {
            super::status::from_domain(crate::error::DomainError::not_found(
                "ResourceNotFoundException",
                "no code package has that hash (the function changed or was deleted)",
            ))
        })?;
        Ok(Response::new(pb::GetCodeResponse { zip }))
    }

    async fn commit_checkpoint(
        &self,
        request: Request<pb::CommitCheckpointRequest>,
    ) -> Reply<pb::CommitCheckpointResponse> {
        let r = request.into_inner();
        sluice_worker::validate_id(&r.worker_id)
            .map_err(|e| super::status::invalid("worker_id", e))?;
        let (seq, shard) =
            crate::streams::parse_sequence_number("sequence_number", &r.sequence_number)
                .map_err(super::status::from_domain)?;
        if shard != stream_part(r.slot).0 {
            return Err(super::status::invalid(
                "sequence_number",
                format!("belongs to shard {shard}, not to slot {}'s", r.slot),
            ));
        }
        let commit = Commit {
            function: r.function_name,
            uuid: r.mapping_uuid,
            slot: r.slot,
            epoch: r.epoch,
            worker: r.worker_id,
            seq,
            finished: r.finished,
        };
        self.ctx.run(commit).await?;
        Ok(Response::new(pb::CommitCheckpointResponse {}))
    }

    async fn report_mapping_result(
        &self,
        request: Request<pb::ReportMappingResultRequest>,
    ) -> Reply<pb::ReportMappingResultResponse> {
        let r = request.into_inner();
        // Pollers of one mapping report the same result over and over:
        // what this node already has needs no write.
        if let Ok(m) = self.ctx.ask_local(crate::mappings::GetMapping {
            uuid: r.mapping_uuid.clone(),
        })? {
            if m.function == r.function_name && m.last_result == r.result {
                return Ok(Response::new(pb::ReportMappingResultResponse {}));
            }
        }
        self.ctx
            .run(crate::mappings::SetMappingResult {
                function: r.function_name,
                uuid: r.mapping_uuid,
                result: r.result,
            })
            .await?;
        Ok(Response::new(pb::ReportMappingResultResponse {}))
    }

    async fn list_workers(
        &self,
        _request: Request<pb::ListWorkersRequest>,
    ) -> Reply<pb::ListWorkersResponse> {
        let now = now_ms();
        let workers = registered(&self.ctx)?
            .into_iter()
            .map(|w| pb::WorkerInfo {
                live: workers::is_live(&w, now),
                last_seen_ago_ms: now.saturating_sub(w.last_seen_ms),
                worker_id: w.report.id,
                address: w.report.address,
                tls_certificate_sha256: w.report.tls_fingerprint,
                owner: w.report.owner,
                memory_mb: w.report.memory_mb,
                memory_used_mb: w.report.memory_used_mb,
                running: w.report.running,
                warm: w
                    .report
                    .warm
                    .into_iter()
                    .map(|e| pb::WarmEnvironments {
                        key: e.key,
                        idle: e.idle,
                        busy: e.busy,
                        starting: e.starting,
                    })
                    .collect(),
            })
            .collect();
        Ok(Response::new(pb::ListWorkersResponse { workers }))
    }
}

#[cfg(test)]
mod tests {
    use super::{available, queue_concurrency, share};
    use crate::workers::{Heartbeat, Warm, WorkerRecord, LIVE_FOR_MS};

    #[test]
    fn a_queue_mappings_concurrency_is_shared_by_its_slots() {
        // 10 over 3 slots: 4, 3, 3; every batch allowed, none twice.
        let shares: Vec<u32> = (0..3).map(|s| queue_concurrency(10, 3, s)).collect();
        assert_eq!(shares, [4, 3, 3]);
        // A cap below the slots still lets each holder run one.
        assert_eq!(queue_concurrency(2, 3, 2), 1);
        assert_eq!(queue_concurrency(1000, 0, 0), 1000);
    }

    #[test]
    fn environments_still_starting_are_not_available() {
        let worker = |id: &str, seen: u64| WorkerRecord {
            report: Heartbeat {
                id: id.into(),
                address: "h:1".into(),
                memory_mb: 1,
                memory_used_mb: 0,
                running: 0,
                warm: vec![Warm {
                    key: "k".into(),
                    idle: 1,
                    busy: 1,
                    starting: 2,
                }],
                owner: "w".into(),
                tls_fingerprint: String::new(),
            },
            last_seen_ms: seen,
        };
        let ws = [worker("a", 1_000), worker("gone", 0)];
        assert_eq!(available(&ws, "k", LIVE_FOR_MS), 2);
        assert_eq!(available(&ws, "other", LIVE_FOR_MS), 0);
    }

    #[test]
    fn shares_add_up_and_differ_by_at_most_one() {
        let live: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        for count in 0..20 {
            let shares: Vec<u32> = live.iter().map(|w| share(&live, w, count)).collect();
            assert_eq!(shares.iter().sum::<u32>(), count, "{shares:?}");
            let (lo, hi) = (shares.iter().min().unwrap(), shares.iter().max().unwrap());
            assert!(hi - lo <= 1, "{shares:?}");
        }
        assert_eq!(share(&live, "zz", 2), 0);
    }
}
