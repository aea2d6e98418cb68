//! The leader's runner of asynchronous invocations.
//!
//! Every node runs this task; only the leader works. It reads the due
//! events from the applied state, runs each that is not already running on
//! a worker (`dispatch`), and commits the outcome as a `SettleEvent`
//! command (which retries, or writes the destination record). An event
//! that could not run (no worker, its worker lost mid-run, or its
//! function's reserved concurrency taken) is not settled: it stays due and
//! runs again shortly, on another worker, without using up a retry. When
//! the leader dies mid-run, its events stay stored and due, and the next
//! leader runs them again: at least once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};

use crate::clock::now_ms;
use crate::command::Command;
use crate::context::Context;
use crate::error::ErrorKind;
use crate::functions::events::{self, Arns, DueEvent, RunOutcome};
use crate::invocation::{resolve, run_invocation, ResolveError, RunFailure};
use crate::waiters::Waiters;

/// How often the leader looks for due events without a wake-up.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Events run at once.
const CONCURRENCY: usize = 16;
/// An event that could not run waits this long before the next try.
const NOT_RUN_DELAY: Duration = Duration::from_millis(500);

/// Starts the runner; failed events are retried after `retry_delay`
/// (then twice that).
pub fn spawn(ctx: Context, retry_delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx, retry_delay))
}

/// How a run ended.
enum Ran {
    /// With an outcome to settle.
    Settle(RunOutcome),
    /// Not run (no worker, no leader to read from, reserved concurrency
    /// taken): try again shortly.
    NotRun,
    /// Its worker was lost mid-run: whether it ran is unknown.
    Lost(String),
}

/// A finished run: function, event number, request id, how it ended.
type Done = (String, u64, String, Ran);

/// Runs of one event lost with their worker before the loss counts as a
/// failed attempt (so a function that kills its worker does not take
/// worker after worker down until its event is too old).
const LOSSES_MAX: u32 = 3;

async fn run(ctx: Context, retry_delay: Duration) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut running: HashSet<(String, u64)> = HashSet::new();
    // Events that could not run, and when they may be tried again.
    let mut later: HashMap<(String, u64), Instant> = HashMap::new();
    // Runs lost with their worker, by event (on this leader).
    let mut losses: HashMap<(String, u64), u32> = HashMap::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let wake = ctx.waiters.of(Waiters::EVENTS);
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let router = &ctx.router;
        let leads = router.raft().metrics().borrow().current_leader == Some(router.id());
        if !leads {
            // A later term starts afresh.
            later.clear();
            losses.clear();
        }
        if leads {
            later.retain(|_, until| *until > Instant::now());
            let (busy, later) = (&running, &later);
            let due = router.state().read(|s| {
                events::due(s, now_ms(), CONCURRENCY * 4, &|f, seq| {
                    let k = (f.to_string(), seq);
                    busy.contains(&k) || later.contains_key(&k)
                })
            });
            match due {
                Ok(due) => {
                    for d in due {
                        let Ok(permit) = slots.clone().try_acquire_owned() else {
                            break;
                        };
                        running.insert((d.function.clone(), d.seq));
                        let (ctx, tx) = (ctx.clone(), tx.clone());
                        tokio::spawn(async move {
                            let done = run_one(&ctx, d, retry_delay).await;
                            drop(permit);
                            let _ = tx.send(done);
                        });
                    }
                }
                Err(e) => tracing::debug!(error = %e, "could not read the due events"),
            }
        }
        tokio::select! {
            Some((function, seq, request_id, ran)) = rx.recv() => {
                let k = (function.clone(), seq);
                let outcome = match ran {
                    Ran::Settle(outcome) => outcome,
                    Ran::NotRun => {
                        running.remove(&k);
                        later.insert(k, Instant::now() + NOT_RUN_DELAY);
                        continue;
                    }
                    Ran::Lost(why) => {
                        let n = losses.entry(k.clone()).or_default();
                        *n += 1;
                        if *n < LOSSES_MAX {
                            // Backs off: 0.5 s, then 1 s.
                            let delay = NOT_RUN_DELAY * (1 << (*n - 1));
                            running.remove(&k);
                            later.insert(k, Instant::now() + delay);
                            continue;
                        }
                        losses.remove(&k);
                        RunOutcome::Failure {
                            response: serde_json::json!({
                                "errorType": "Sluice.WorkerLost",
                                "errorMessage": format!(
                                    "the worker running the event was lost {LOSSES_MAX} times: {why}"
                                ),
                            })
                            .to_string()
                            .into_bytes(),
                            executed_version: "$LATEST".into(),
                            retry_delay_ms: retry_delay.as_millis() as u64,
                        }
                    }
                };
                losses.remove(&k);
                let arns = Arns {
                    function: ctx.identity.function_arn(&function),
                    sns_prefix: format!(
                        "arn:aws:sns:{}:{}:",
                        ctx.identity.region, ctx.identity.account_id
                    ),
                };
                let settled = ctx
                    .router
                    .write(Command::SettleEvent(crate::functions::SettleEvent {
                        name: function.clone(),
                        arns,
                        seq,
                        request_id,
                        outcome,
                    }))
                    .await;
                if let Err(e) = settled {
                    // Not settled: the event stays due, and the leader (this
                    // node or the next) runs it again.
                    tracing::debug!(function, seq, error = %e, "could not settle an event");
                }
                running.remove(&(function, seq));
            }
            _ = &mut notified => {}
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

async fn run_one(ctx: &Context, d: DueEvent, retry_delay: Duration) -> Done {
    if d.expired {
        return (
            d.function,
            d.seq,
            d.event.request_id,
            Ran::Settle(RunOutcome::Expired),
        );
    }
    let request_id = d.event.request_id.clone();
    let retry_delay_ms = retry_delay.as_millis() as u64;
    let failure = |message: &str, version: String| RunOutcome::Failure {
        response: serde_json::json!({
            "errorType": "Sluice.InvocationFailed",
            "errorMessage": message,
        })
        .to_string()
        .into_bytes(),
        executed_version: version,
        retry_delay_ms,
    };
    let outcome = match resolve(ctx, &d.function, &d.event.qualifier).await {
        // The function or its qualifier is gone: a failure like any
        // other, so the retry policy and destinations apply.
        Err(ResolveError::Domain(e)) if e.kind == ErrorKind::NotFound => {
            Ran::Settle(failure(&e.message, "$LATEST".into()))
        }
        // Not answered (no leader now): run it later.
        Err(_) => Ran::NotRun,
        Ok(target) => {
            match run_invocation(
                ctx,
                &target,
                &d.event.qualifier,
                &request_id,
                d.event.payload.clone(),
            )
            .await
            {
                Ok(ran) if ran.answer.function_error => Ran::Settle(RunOutcome::Failure {
                    response: ran.answer.payload,
                    executed_version: ran.version,
                    retry_delay_ms,
                }),
                Ok(ran) => Ran::Settle(RunOutcome::Success {
                    response: ran.answer.payload,
                    executed_version: ran.version,
                }),
                // The code could not be run: a function failure.
                Err(RunFailure::Rejected(e)) => {
                    Ran::Settle(failure(&e.to_string(), "$LATEST".into()))
                }
                Err(RunFailure::Throttled(_)) => Ran::NotRun,
                Err(RunFailure::Dispatch(crate::dispatch::DispatchError::Lost { worker, why })) => {
                    tracing::info!(function = %d.function, seq = d.seq, %worker, %why, "event's worker lost; running it again");
                    Ran::Lost(format!("worker {worker}: {why}"))
                }
                Err(RunFailure::Dispatch(e)) => {
                    tracing::debug!(function = %d.function, seq = d.seq, error = %e, "event not run; trying again");
                    Ran::NotRun
                }
            }
        }
    };
    (d.function, d.seq, request_id, outcome)
}
