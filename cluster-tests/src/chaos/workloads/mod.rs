//! Workloads: clients that run operations against the cluster while the
//! nemesis works, recording each in the history, then drain what is left
//! once the faults are healed.

pub mod mapping;
pub mod metadata;
pub mod queue;
pub mod schedule;
pub mod stream;
pub mod topic;

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sluice_client::{Client, Error};
use tonic::Code;

use super::history::{Call, Outcome, Recorder, Reply};

/// What every worker of a run shares.
#[derive(Clone)]
pub struct Ctx {
    pub recorder: Arc<Recorder>,
    /// One client per node, each starting at its node and moving on after
    /// a failure; one attempt per call.
    pub clients: Vec<Client>,
    /// Next fresh process id.
    next_process: Arc<AtomicU64>,
    /// Seed for the workload's own choices (keys, which queue).
    pub seed: u64,
}

impl Ctx {
    /// A context over `clients`.
    pub fn new(recorder: Arc<Recorder>, clients: Vec<Client>, seed: u64) -> Ctx {
        Ctx {
            recorder,
            clients,
            next_process: Arc::new(AtomicU64::new(1)),
            seed,
        }
    }

    /// A process id never used before in this run.
    pub fn fresh_process(&self) -> u64 {
        self.next_process.fetch_add(1, Ordering::Relaxed)
    }

    /// The client worker `n` uses.
    pub fn client(&self, n: usize) -> &Client {
        &self.clients[n % self.clients.len()]
    }
}

/// A worker's identity in the history: its process id changes after an
/// operation with an unknown outcome (the old process may still act).
pub struct Process {
    pub id: u64,
}

impl Process {
    /// A new process.
    pub fn new(ctx: &Ctx) -> Process {
        Process {
            id: ctx.fresh_process(),
        }
    }

    /// Runs `call` by `work`, recording its invocation and outcome; moves
    /// to a fresh process id when the outcome is unknown.
    pub async fn perform<F, Fut>(&mut self, ctx: &Ctx, call: Call, work: F) -> Outcome
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Reply, Error>>,
    {
        self.perform_with(ctx, call, || async { work().await.map(|r| (r, ())) })
            .await
            .0
    }

    /// Like [`Process::perform`], for work that also returns something the
    /// history does not record (a next iterator).
    pub async fn perform_with<T, F, Fut>(
        &mut self,
        ctx: &Ctx,
        call: Call,
        work: F,
    ) -> (Outcome, Option<T>)
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<(Reply, T), Error>>,
    {
        ctx.recorder.invoke(self.id, &call);
        let (outcome, extra) = match work().await {
            Ok((reply, extra)) => (Outcome::Ok { reply }, Some(extra)),
            Err(e) => (classify(&e), None),
        };
        ctx.recorder.complete(self.id, outcome.clone());
        if outcome.is_unknown() {
            self.id = ctx.fresh_process();
        }
        (outcome, extra)
    }
}

/// A ticker at `per_second`, which skips ticks it missed (a call that
/// timed out) rather than bursting to catch up.
pub fn ticker(per_second: u64) -> tokio::time::Interval {
    let mut t = tokio::time::interval(Duration::from_micros(1_000_000 / per_second));
    t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    t
}

/// A worker's pace: ticks at a steady rate (see [`ticker`]) until a
/// deadline, numbered from 0.
pub struct Pace {
    ticker: tokio::time::Interval,
    next: u64,
    until: tokio::time::Instant,
}

impl Pace {
    /// `per_second` ticks until `until`.
    pub fn new(per_second: u64, until: tokio::time::Instant) -> Pace {
        Pace {
            ticker: ticker(per_second),
            next: 0,
            until,
        }
    }

    /// Waits for the next tick and returns its number, or `None` once
    /// `until` has passed.
    pub async fn next(&mut self) -> Option<u64> {
        if tokio::time::Instant::now() >= self.until {
            return None;
        }
        self.ticker.tick().await;
        let n = self.next;
        self.next += 1;
        Some(n)
    }
}

/// Pauses for [`FAILURE_PAUSE`] after a call that did not succeed.
pub async fn pause_unless_ok(outcome: &Outcome) {
    if !matches!(outcome, Outcome::Ok { .. }) {
        tokio::time::sleep(FAILURE_PAUSE).await;
    }
}

/// Waits for every one of `tasks` to end, however it ends.
pub async fn join_all<T>(tasks: Vec<tokio::task::JoinHandle<T>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// How a producer sends: a unary call per message, or over its own
/// streaming call (SendMessageStream, PutRecordStream), still one message
/// at a time, so that the history's operations stay those of one process.
pub enum Via<'a, S> {
    /// A unary call each.
    Unary(&'a Client),
    /// Over the sender's call.
    Stream(S),
}

impl<'a, K: sluice_client::Kind> Via<'a, sluice_client::Sender<K>> {
    /// Sends to `destination` through `client`: over a streaming call when
    /// `stream`, else a unary call each.
    pub fn new(client: &'a Client, destination: &str, stream: bool) -> Self {
        if stream {
            Via::Stream(client.sender::<K>(destination))
        } else {
            Via::Unary(client)
        }
    }
}

/// A streamed message's reply, or an unknown outcome after [`OP_TIMEOUT`]
/// (as a unary call's attempt is bounded): the sender keeps the message
/// and may still send it, or fail it when its call breaks.
pub async fn streamed<T>(reply: impl Future<Output = Result<T, Error>>) -> Result<T, Error> {
    tokio::time::timeout(OP_TIMEOUT, reply)
        .await
        .unwrap_or_else(|_| {
            Err(Error::from(tonic::Status::deadline_exceeded(format!(
                "no reply on the stream within {OP_TIMEOUT:?}"
            ))))
        })
}

/// Sorts an error into a definite failure (the broker refused the call
/// without effect) or an unknown outcome (it may have happened).
pub fn classify(e: &Error) -> Outcome {
    match e {
        // A transport error (an h2 reset, say) carries no broker code: the
        // client names it after its status, and it proves nothing.
        Error::Call {
            status,
            code,
            message,
        } if definite(*status) && *code != format!("{status:?}") => Outcome::Fail {
            code: code.clone(),
            message: message.clone(),
        },
        other => Outcome::Unknown {
            message: other.to_string(),
        },
    }
}

/// Status codes the broker answers only for a request it refused before
/// changing anything.
fn definite(status: Code) -> bool {
    matches!(
        status,
        Code::InvalidArgument
            | Code::NotFound
            | Code::AlreadyExists
            | Code::FailedPrecondition
            | Code::ResourceExhausted
            | Code::OutOfRange
            | Code::PermissionDenied
    )
}

/// How long one call may take before its outcome counts as unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(5);

/// A pause between a worker's calls when the last one failed, so a down
/// cluster is not hammered; not a synchronisation.
pub const FAILURE_PAUSE: Duration = Duration::from_millis(100);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_are_definite_and_everything_else_is_unknown() {
        let refused = Error::Call {
            status: Code::NotFound,
            code: "QueueDoesNotExist".into(),
            message: "no queue".into(),
        };
        assert!(
            matches!(classify(&refused), Outcome::Fail { code, .. } if code == "QueueDoesNotExist")
        );
        for status in [
            Code::Unavailable,
            Code::DeadlineExceeded,
            Code::Unknown,
            Code::Internal,
        ] {
            let e = Error::Call {
                status,
                code: "X".into(),
                message: String::new(),
            };
            assert!(classify(&e).is_unknown(), "{status:?}");
        }
    }
}
