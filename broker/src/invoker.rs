//! The leader's runner of asynchronous invocations.
//!
//! Every node runs this task; only the leader works. It reads the due
//! events from the applied state, runs each that is not already running on
//! this node's in-process worker, and commits the outcome as a
//! `SettleEvent` command (which retries, or writes the destination record).
//! When the leader dies mid-run, its events stay stored and due, and the
//! next leader runs them again: at least once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Semaphore};

use crate::api::functions::run_invocation;
use crate::api::Context;
use crate::command::Command;
use crate::functions::events::{self, Arns, DueEvent, RunOutcome};
use crate::router::now_ms;
use crate::waiters::Waiters;
use sluice_worker::Invoked;

/// How often the leader looks for due events without a wake-up.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Events run at once.
const CONCURRENCY: usize = 16;

/// Starts the runner; failed events are retried after `retry_delay`
/// (then twice that).
pub fn spawn(ctx: Context, retry_delay: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(ctx, retry_delay))
}

/// A finished run: function, event number, request id, outcome.
type Done = (String, u64, String, RunOutcome);

async fn run(ctx: Context, retry_delay: Duration) {
    let slots = Arc::new(Semaphore::new(CONCURRENCY));
    let mut running: HashSet<(String, u64)> = HashSet::new();
    let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
    let wake = ctx.waiters.of(Waiters::EVENTS);
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let router = &ctx.router;
        let leads = router.raft().metrics().borrow().current_leader == Some(router.id());
        if leads {
            let busy = &running;
            let due = router.state().read(|s| {
                events::due(s, now_ms(), CONCURRENCY * 4, &|f, seq| {
                    busy.contains(&(f.to_string(), seq))
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
            Some((function, seq, request_id, outcome)) = rx.recv() => {
                let arns = Arns {
                    function: ctx.identity.function_arn(&function),
                    sns_prefix: format!(
                        "arn:aws:sns:{}:{}:",
                        ctx.identity.region, ctx.identity.account_id
                    ),
                };
                let settled = ctx
                    .router
                    .write(Command::SettleEvent {
                        name: function.clone(),
                        arns,
                        seq,
                        request_id,
                        outcome,
                    })
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
        return (d.function, d.seq, d.event.request_id, RunOutcome::Expired);
    }
    let request_id = d.event.request_id.clone();
    let outcome = match run_invocation(
        ctx,
        &d.function,
        &d.event.qualifier,
        &request_id,
        Bytes::from(d.event.payload.clone()),
    )
    .await
    {
        Ok((ran, version)) => match ran.invoked {
            Invoked::Ok(body) => RunOutcome::Success {
                response: body.to_vec(),
                executed_version: version,
            },
            Invoked::FunctionError(doc) => RunOutcome::Failure {
                response: doc.to_vec(),
                executed_version: version,
                retry_delay_ms: retry_delay.as_millis() as u64,
            },
        },
        // The function could not run (bad code, or it is gone): a failure
        // like any other, so the retry policy and destinations apply.
        Err(status) => RunOutcome::Failure {
            response: serde_json::json!({
                "errorType": "Sluice.InvocationFailed",
                "errorMessage": status.message(),
            })
            .to_string()
            .into_bytes(),
            executed_version: "$LATEST".into(),
            retry_delay_ms: retry_delay.as_millis() as u64,
        },
    };
    (d.function, d.seq, request_id, outcome)
}
