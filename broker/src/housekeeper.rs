//! The leader's schedule of time-driven commands.
//!
//! Time passes without commands, but the state machine only changes through
//! them. Every node runs this task; while it leads, it looks at its own state
//! every [`INTERVAL`] and proposes what is due: a tick for queues with hidden
//! messages coming due, messages past retention or expired deduplication
//! entries; the moves of messages waiting in outboxes (accept at the
//! destination, then acknowledge at the source); steps of running move
//! tasks; and collection of purged generations and deleted queues. The
//! commands re-check everything against the state machine's clock, so a
//! stale look costs a no-op, never a wrong change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::command::{Command, CommandOutput, Registered};
use crate::queues::{self, housekeeping};
use crate::router::Router;
use crate::streams;
use crate::topics;
use crate::waiters::Waiters;

/// How often the leader looks for due work.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// Outbox entries moved per queue per round.
const OUTBOX_BATCH: usize = 100;
/// Rounds of a queue's tick or a collection while they report more work.
const MAX_REPEAT: usize = 20;

/// Starts the housekeeper.
pub fn spawn(router: Router, waiters: Arc<Waiters>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut interval = tokio::time::interval(INTERVAL);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            waiters.prune();
            let leads = router.raft().metrics().borrow().current_leader == Some(router.id());
            if leads {
                if let Err(e) = round(&router).await {
                    tracing::debug!(error = %e, "housekeeping round stopped early");
                }
            }
        }
    })
}

async fn write<O>(router: &Router, op: O) -> Result<O::Output, String>
where
    O: Registered<Carrier = Command, Reply = CommandOutput>,
{
    match router.write(op.carry()).await {
        Ok(Ok(out)) => O::output(out).ok_or_else(|| format!("unexpected reply to {}", O::NAME)),
        Ok(Err(rejected)) => Err(rejected.to_string()),
        Err(e) => Err(e.to_string()),
    }
}

async fn round(router: &Router) -> Result<(), String> {
    let names = router
        .state()
        .read(queues::all_names)
        .map_err(|e| e.to_string())?;
    for name in names {
        let now = now_ms();
        let needs = match router
            .state()
            .read(|s| housekeeping::needs(s, &name, now, OUTBOX_BATCH))
        {
            Ok(n) => n,
            Err(_) => continue, // deleted meanwhile
        };
        if needs.tick {
            for _ in 0..MAX_REPEAT {
                if !write(
                    router,
                    crate::queues::QueueTick {
                        queue: name.clone(),
                    },
                )
                .await?
                .more
                {
                    break;
                }
            }
        }
        if !needs.outbox.is_empty() {
            move_outbox(router, &name, needs.qid, needs.outbox).await?;
        }
        if needs.move_task {
            write(
                router,
                crate::queues::MoveTaskStep {
                    queue: name.clone(),
                },
            )
            .await?;
        }
    }
    streams_round(router).await?;
    topics_round(router).await?;
    let garbage = router
        .state()
        .read(|s| housekeeping::garbage(s, 100))
        .map_err(|e| e.to_string())?;
    for g in garbage {
        for _ in 0..MAX_REPEAT {
            if write(
                router,
                crate::queues::CollectGarbage {
                    qid: g.qid,
                    gen: g.gen,
                },
            )
            .await?
            {
                break;
            }
        }
    }
    Ok(())
}

/// Trims shards past retention (dropping closed, emptied shards) and
/// collects deleted streams.
async fn streams_round(router: &Router) -> Result<(), String> {
    let now = now_ms();
    let due: Vec<(String, u32)> = router
        .state()
        .read(
            |s| -> Result<Vec<(String, u32)>, crate::error::ApplyError> {
                let mut due = Vec::new();
                for name in streams::all_names(s)? {
                    let Some(stream) = streams::load(s, &name)? else {
                        continue;
                    };
                    for shard in &stream.shards {
                        if streams::records::needs_trim(s, &stream, shard, now)? {
                            due.push((name.clone(), shard.index));
                        }
                    }
                }
                Ok(due)
            },
        )
        .map_err(|e| e.to_string())?;
    for (name, shard) in due {
        for _ in 0..MAX_REPEAT {
            if !write(
                router,
                crate::streams::TrimShard {
                    name: name.clone(),
                    shard,
                },
            )
            .await?
            .more
            {
                break;
            }
        }
    }
    let garbage = router
        .state()
        .read(|s| streams::records::garbage(s, 100))
        .map_err(|e| e.to_string())?;
    for sid in garbage {
        for _ in 0..MAX_REPEAT {
            if write(router, crate::streams::CollectStream { sid }).await? {
                break;
            }
        }
    }
    Ok(())
}

/// Forgets expired FIFO deduplication ids of topics and collects deleted
/// topics.
async fn topics_round(router: &Router) -> Result<(), String> {
    let now = now_ms();
    let due: Vec<String> = router
        .state()
        .read(|s| -> Result<Vec<String>, crate::error::ApplyError> {
            let mut due = Vec::new();
            for (tid, name) in topics::all(s)? {
                if topics::publish::next_expiry(s, tid)?.is_some_and(|t| t <= now) {
                    due.push(name);
                }
            }
            Ok(due)
        })
        .map_err(|e| e.to_string())?;
    for topic in due {
        for _ in 0..MAX_REPEAT {
            if !write(
                router,
                crate::topics::TopicTick {
                    topic: topic.clone(),
                },
            )
            .await?
            {
                break;
            }
        }
    }
    let garbage = router
        .state()
        .read(|s| topics::garbage(s, 100))
        .map_err(|e| e.to_string())?;
    for tid in garbage {
        for _ in 0..MAX_REPEAT {
            if write(router, crate::topics::CollectTopic { tid }).await? {
                break;
            }
        }
    }
    Ok(())
}

async fn move_outbox(
    router: &Router,
    source: &str,
    qid: u64,
    outbox: Vec<(u64, u64, queues::layout::Outbox)>,
) -> Result<(), String> {
    let mut by_destination: BTreeMap<String, Vec<(u64, u64, queues::layout::Moving)>> =
        BTreeMap::new();
    for (gen, seq, entry) in outbox {
        by_destination
            .entry(entry.destination)
            .or_default()
            .push((gen, seq, entry.message));
    }
    for (destination, entries) in by_destination {
        let gen = entries[0].0;
        let seqs: Vec<u64> = entries.iter().map(|(_, s, _)| *s).collect();
        let messages = entries.into_iter().map(|(_, s, m)| (s, m)).collect();
        match write(
            router,
            crate::queues::AcceptMoved {
                queue: destination.clone(),
                from: qid,
                messages,
            },
        )
        .await
        {
            Ok(_) => {
                write(
                    router,
                    crate::queues::AcknowledgeMoved {
                        queue: source.to_string(),
                        gen,
                        seqs,
                    },
                )
                .await?;
            }
            // The destination is gone (or refuses): the messages wait in the
            // outbox until it exists again.
            Err(e) => tracing::debug!(%source, %destination, error = %e, "messages wait to move"),
        }
    }
    Ok(())
}
