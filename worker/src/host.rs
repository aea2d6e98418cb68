//! The `WorkerHost` service: how broker nodes hand a worker invocations
//! and read its logs.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use sluice_proto::v1::worker_host_server::WorkerHost;
use sluice_proto::v1::{
    InvocationLog, LogsRequest, LogsResponse, RunRequest, RunResponse, RunSpec,
};
use tonic::{Request, Response, Status};

use crate::environment::{FunctionConfig, Invoked};
use crate::logs::{Entry, Logs};
use crate::pool::{FunctionSpec, Pool, PoolError};
use crate::ClusterLink;

/// Most log entries one `Logs` call returns.
pub const LOGS_LIMIT_MAX: u32 = 1000;
/// Most bytes of log lines one `Logs` answer carries (the newest entries
/// that fit).
pub const LOGS_BYTES_MAX: usize = 9 << 20;

/// The service over one worker's pool.
pub struct Host {
    /// This worker's id.
    pub worker_id: String,
    /// Its environments.
    pub pool: Arc<Pool>,
    /// Its invocations' logs.
    pub logs: Arc<Logs>,
    /// Where code comes from.
    pub link: Arc<ClusterLink>,
}

/// How many of `entries` (each its log lines), from the first, fit in
/// `budget` bytes of lines.
pub fn fitting<'a>(entries: impl Iterator<Item = &'a Vec<String>>, budget: usize) -> usize {
    let mut left = budget;
    entries
        .take_while(|lines| {
            let size: usize = lines.iter().map(String::len).sum();
            let fits = size <= left;
            left = left.saturating_sub(size);
            fits
        })
        .count()
}

/// The pool's description of what a [`RunSpec`] asks to run.
pub fn function_spec(spec: RunSpec) -> Result<FunctionSpec, Status> {
    if spec.key.is_empty() {
        return Err(Status::invalid_argument("spec.key: must not be empty"));
    }
    if spec.function_name.is_empty() {
        return Err(Status::invalid_argument(
            "spec.function_name: must not be empty",
        ));
    }
    // The registry's bounds, checked again: the service is reachable on
    // the network.
    if !(128..=10_240).contains(&spec.memory_mb) {
        return Err(Status::invalid_argument(format!(
            "spec.memory_mb: must be from 128 to 10240, got {}",
            spec.memory_mb
        )));
    }
    if !(1..=900).contains(&spec.timeout_s) {
        return Err(Status::invalid_argument(format!(
            "spec.timeout_s: must be from 1 to 900, got {}",
            spec.timeout_s
        )));
    }
    if spec.ephemeral_mb > 10_240 {
        return Err(Status::invalid_argument(format!(
            "spec.ephemeral_mb: at most 10240, got {}",
            spec.ephemeral_mb
        )));
    }
    Ok(FunctionSpec {
        key: spec.key,
        code_sha256: spec.code_sha256,
        config: FunctionConfig {
            name: spec.function_name,
            version: spec.version,
            arn: spec.function_arn,
            handler: spec.handler,
            memory_mb: spec.memory_mb,
            timeout_s: spec.timeout_s,
            ephemeral_mb: spec.ephemeral_mb.max(512),
            region: spec.region,
            environment: spec.environment.into_iter().collect(),
            runtime: spec.runtime,
        },
    })
}

/// A status carrying Sluice's error code header.
fn coded(code: tonic::Code, error_code: &str, message: String) -> Status {
    let mut status = Status::new(code, message);
    if let Ok(v) = error_code.parse() {
        status
            .metadata_mut()
            .insert(sluice_proto::ERROR_CODE_HEADER, v);
    }
    status
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[tonic::async_trait]
impl WorkerHost for Host {
    async fn run(&self, request: Request<RunRequest>) -> Result<Response<RunResponse>, Status> {
        let req = request.into_inner();
        let spec = function_spec(req.spec.unwrap_or_default())?;
        if req.request_id.is_empty() {
            return Err(Status::invalid_argument("request_id: must not be empty"));
        }
        let link = self.link.clone();
        let sha = spec.code_sha256.clone();
        let fetch = move || async move { link.code(&sha).await };
        let started_ms = now_ms();
        let started = Instant::now();
        let ran = self
            .pool
            .invoke(&spec, fetch, &req.request_id, Bytes::from(req.payload))
            .await
            .map_err(|e| match e {
                PoolError::Code(why) => coded(
                    tonic::Code::FailedPrecondition,
                    "InvalidZipFileException",
                    why,
                ),
                PoolError::Fetch(why) => coded(tonic::Code::Unavailable, "CodeUnavailable", why),
                PoolError::Start(why) => coded(
                    tonic::Code::FailedPrecondition,
                    "InvalidRuntimeException",
                    why.to_string(),
                ),
            })?;
        let duration_us = started.elapsed().as_micros() as u64;
        let (function_error, payload) = match ran.invoked {
            Invoked::Ok(body) => (false, body.to_vec()),
            Invoked::FunctionError(doc) => (true, doc.to_vec()),
        };
        self.logs.push(Entry {
            request_id: req.request_id,
            function: spec.config.name,
            version: spec.config.version,
            started_ms,
            duration_us,
            function_error,
            cold_start: ran.cold,
            lines: ran.log.clone(),
        });
        Ok(Response::new(RunResponse {
            function_error,
            payload,
            log: ran.log,
            cold_start: ran.cold,
            duration_us,
        }))
    }

    async fn logs(&self, request: Request<LogsRequest>) -> Result<Response<LogsResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 50,
            n if n <= LOGS_LIMIT_MAX => n,
            n => {
                return Err(Status::invalid_argument(format!(
                    "limit: must be from 1 to {LOGS_LIMIT_MAX}, got {n}"
                )))
            }
        };
        let mut found = self
            .logs
            .find(&req.function_name, &req.request_id, limit as usize);
        found.truncate(fitting(found.iter().map(|e| &e.lines), LOGS_BYTES_MAX));
        let logs = found
            .into_iter()
            .map(|e| InvocationLog {
                request_id: e.request_id,
                function_name: e.function,
                version: e.version,
                started_ms: e.started_ms,
                duration_us: e.duration_us,
                function_error: e.function_error,
                cold_start: e.cold_start,
                worker_id: self.worker_id.clone(),
                lines: e.lines,
            })
            .collect();
        Ok(Response::new(LogsResponse { logs }))
    }
}
