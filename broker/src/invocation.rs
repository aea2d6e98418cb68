//! Running one invocation of a function: resolving what it runs, drawing
//! an alias's version, counting reserved concurrency on this node, and
//! handing it to a worker. Shared by the synchronous `Invoke` call and the
//! leader's runner of asynchronous events ([`crate::invoker`]); errors are
//! this module's own, mapped to gRPC statuses by the API.

use sha2::{Digest, Sha256};
use sluice_proto::v1 as pb;

use crate::command::Query;
use crate::context::Context;
use crate::dispatch::DispatchError;
use crate::error::{DomainError, ErrorKind};
use crate::functions::{self, Function, Version};
use crate::router::RouteError;

/// Resolves what an invocation runs, linearizably (so a just-updated
/// function runs its new code).
pub async fn resolve(
    ctx: &Context,
    name: &str,
    qualifier: &str,
) -> Result<functions::Target, ResolveError> {
    resolve_with(ctx, false, name, qualifier).await
}

/// Like [`resolve`], from this node's applied state when `local`: for an
/// event source mapping's poller, which learnt of the function from that
/// state. It may run code a few milliseconds old, as Lambda may just after
/// an update, and skips the read index, which under load waits for the
/// writes in flight to commit. A function this node does not know yet is
/// looked up on the leader.
pub async fn resolve_with(
    ctx: &Context,
    local: bool,
    name: &str,
    qualifier: &str,
) -> Result<functions::Target, ResolveError> {
    let query = Query::InvokeTarget(crate::functions::InvokeTarget {
        name: name.to_string(),
        qualifier: qualifier.to_string(),
    });
    let reply = if local {
        match ctx.router.read_local(&query).map_err(ResolveError::Route)? {
            Err(e) if e.kind == ErrorKind::NotFound => ctx.router.read(query).await,
            answer => Ok(answer),
        }
    } else {
        ctx.router.read(query).await
    }
    .map_err(ResolveError::Route)?;
    let out = reply.map_err(ResolveError::Domain)?;
    <crate::functions::InvokeTarget as crate::command::Registered>::output(out)
        .ok_or(ResolveError::Unexpected)
}

/// Why an invocation's function could not be resolved.
#[derive(Debug)]
pub enum ResolveError {
    /// Not answered: no leader, say.
    Route(RouteError),
    /// Refused: no such function, version or alias.
    Domain(DomainError),
    /// The state machine answered with another output (a bug).
    Unexpected,
}

/// The version an invocation of `target` runs: an alias with a second
/// version sends it its share, drawn here (the state machine draws
/// nothing). `None` is `$LATEST`.
pub fn pick(target: &functions::Target) -> Option<&Version> {
    match (&target.version, &target.additional) {
        (Some(v), Some((extra, weight))) => {
            let draw = (uuid::Uuid::new_v4().as_u128() % u128::from(functions::WEIGHT_ONE)) as u32;
            Some(if draw < *weight { extra } else { v })
        }
        (v, _) => v.as_ref(),
    }
}

/// What a worker needs to run version `v` of `f` (`None`: `$LATEST`),
/// invoked as `qualifier`; and the version's name.
pub fn run_spec(
    ctx: &Context,
    f: &Function,
    v: Option<&Version>,
    qualifier: &str,
) -> (pb::RunSpec, String) {
    let (version, settings, code_sha256, revision) = match v {
        Some(v) => (
            v.number.to_string(),
            &v.settings,
            v.code_sha256.clone(),
            v.from_revision,
        ),
        None => (
            "$LATEST".to_string(),
            &f.settings,
            f.code_sha256.clone(),
            f.revision,
        ),
    };
    // Environments are shared only by invocations of the same code and
    // settings (a function deleted and created again starts its revisions
    // over, so the revision alone would not tell).
    let settings_digest = hex::encode(&Sha256::digest(format!("{settings:?}").as_bytes())[..8]);
    let key = format!(
        "{}#{version}#{revision}#{code_sha256}#{settings_digest}",
        f.name
    );
    let arn = if qualifier.is_empty() {
        ctx.identity.function_arn(&f.name)
    } else {
        format!("{}:{qualifier}", ctx.identity.function_arn(&f.name))
    };
    let spec = pb::RunSpec {
        key,
        code_sha256,
        function_name: f.name.clone(),
        version: version.clone(),
        function_arn: arn,
        handler: settings.handler.clone(),
        memory_mb: settings.memory_mb,
        timeout_s: settings.timeout_s,
        ephemeral_mb: 512,
        region: ctx.identity.region.clone(),
        environment: settings.environment.clone().into_iter().collect(),
        runtime: settings.runtime.clone(),
    };
    (spec, version)
}

/// Why an invocation has no result.
#[derive(Debug)]
pub enum RunFailure {
    /// The worker refused it: the function's code could not be run
    /// ([`DispatchError::Refused`]).
    Rejected(DispatchError),
    /// The function's reserved concurrency is taken.
    Throttled(DomainError),
    /// It could not be run on a worker, or its worker was lost.
    Dispatch(DispatchError),
}

/// A finished invocation: the worker's answer and the version that ran.
pub struct Ran {
    /// What the worker answered.
    pub answer: pb::RunResponse,
    /// `$LATEST` or a version number.
    pub version: String,
}

/// Counts an invocation in the concurrent executions gauge while it lives.
struct Executing(String);

impl Executing {
    fn new(function: &str) -> Self {
        metrics::gauge!("sluice_function_concurrent_executions", "function" => function.to_string())
            .increment(1.0);
        Executing(function.to_string())
    }
}

impl Drop for Executing {
    fn drop(&mut self) {
        metrics::gauge!("sluice_function_concurrent_executions", "function" => self.0.clone())
            .decrement(1.0);
    }
}

/// Runs one invocation of `target` (resolved from `qualifier`) on a
/// worker; shared by synchronous Invoke and the leader's runner of
/// asynchronous events. Reserved concurrency is counted on this node.
pub async fn run_invocation(
    ctx: &Context,
    target: &functions::Target,
    qualifier: &str,
    request_id: &str,
    payload: Vec<u8>,
) -> Result<Ran, RunFailure> {
    let f = &target.function;
    let name = f.name.clone();
    let _slot = match target.reserved {
        Some(limit) => Some(ctx.slots.try_take(&name, limit).ok_or_else(|| {
            metrics::counter!("sluice_function_throttles_total", "function" => name.clone())
                .increment(1);
            RunFailure::Throttled(DomainError::limit(
                "TooManyRequestsException",
                format!(
                    "Rate Exceeded: function {name:?} has a reserved concurrency of {limit} and that many invocations running"
                ),
            ))
        })?),
        None => None,
    };
    let (spec, version) = run_spec(ctx, f, pick(target), qualifier);
    let _executing = Executing::new(&name);
    let started = std::time::Instant::now();
    let ran = ctx
        .dispatcher
        .run(ctx.router.state(), &ctx.waiters, spec, request_id, payload)
        .await;
    metrics::counter!("sluice_function_invocations_total", "function" => name.clone()).increment(1);
    metrics::histogram!("sluice_function_duration_seconds", "function" => name.clone())
        .record(started.elapsed().as_secs_f64());
    match ran {
        Ok((answer, _worker)) => {
            if answer.cold_start {
                metrics::counter!("sluice_function_cold_starts_total", "function" => name.clone())
                    .increment(1);
            }
            if answer.function_error {
                metrics::counter!("sluice_function_errors_total", "function" => name).increment(1);
            }
            Ok(Ran { answer, version })
        }
        Err(e) => {
            metrics::counter!("sluice_function_errors_total", "function" => name).increment(1);
            Err(match e {
                DispatchError::Refused(_) => RunFailure::Rejected(e),
                e => RunFailure::Dispatch(e),
            })
        }
    }
}
