//! The metadata workload: processes create, delete and look up a handful of
//! queues by name, concurrently, so that the history of each name can be
//! checked for linearizability on a present/absent register.
//!
//! The names change every [`EPOCH`]: a name's history is then a few
//! thousand operations, which the checker decides in moments, where one
//! name for a 10-minute run (over 100 000 operations, hundreds of them of
//! unknown outcome, each of which may take effect at any later time)
//! defeats the search. An operation of unknown outcome from an old epoch
//! can only affect its own name, which nobody looks at any more.

use std::collections::HashMap;

use sluice_client::Consistency;
use tokio::time::Instant;

use super::{join_all, ticker, Ctx, Process, FAILURE_PAUSE};
use crate::chaos::history::{Call, Outcome, Reply};
use crate::chaos::nemesis::Rng;

/// Queue names the processes contend on.
pub const NAMES: u64 = 4;
/// Concurrent processes.
const WORKERS: usize = 5;
/// Operations per second of each worker, at most.
const RATE: u64 = 40;
/// How long the workers contend on one set of names.
pub const EPOCH: std::time::Duration = std::time::Duration::from_secs(20);

/// Runs the workers until `until`.
pub async fn run(ctx: &Ctx, until: Instant) {
    let mut tasks = Vec::new();
    for w in 0..WORKERS {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move { work(&ctx, w, until).await }));
    }
    join_all(tasks).await;
}

async fn work(ctx: &Ctx, w: usize, until: Instant) {
    let client = ctx.client(w);
    let mut p = Process::new(ctx);
    let mut rng = Rng::new(ctx.seed ^ (0x3E7A + w as u64));
    let mut tick = ticker(RATE);
    while Instant::now() < until {
        tick.tick().await;
        // The recorder's clock is the run's: every worker agrees on it.
        let epoch = ctx.recorder.now_ns() / EPOCH.as_nanos() as u64;
        let name = format!("meta-{epoch}-{}", rng.next_u64() % NAMES);
        let outcome = match rng.next_u64() % 3 {
            0 => {
                p.perform(ctx, Call::Create { name: name.clone() }, || async {
                    client
                        .create_queue(&name, HashMap::new())
                        .await
                        .map(|_| Reply::Done)
                })
                .await
            }
            1 => {
                p.perform(ctx, Call::Remove { name: name.clone() }, || async {
                    client.delete_queue(&name).await.map(|()| Reply::Done)
                })
                .await
            }
            _ => {
                p.perform(ctx, Call::Get { name: name.clone() }, || async {
                    match client.get_queue_url(&name, Consistency::Linearizable).await {
                        Ok(_) => Ok(Reply::Exists { present: true }),
                        // Not found is an answer: the queue is absent.
                        Err(e) if e.code() == Some("QueueDoesNotExist") => {
                            Ok(Reply::Exists { present: false })
                        }
                        Err(e) => Err(e),
                    }
                })
                .await
            }
        };
        if !matches!(outcome, Outcome::Ok { .. } | Outcome::Fail { .. }) {
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
    }
}
