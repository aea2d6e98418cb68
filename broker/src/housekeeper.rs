//! The leader's schedule of time-driven commands.
//!
//! Time passes without commands, but the state machine only changes through
//! them. Every node runs this task; while it leads, it looks at its own state
//! every [`INTERVAL`] and proposes what is due: a tick for queues with hidden
//! messages coming due, messages past retention or expired deduplication
//! entries; the moves of messages waiting in outboxes (accept at the
//! destination, then acknowledge at the source); steps of running move
//! tasks; steps of running event replays and archive retention; the
//! schedules' due times; failed deliveries due to be tried again; and
//! collection of purged generations, deleted queues and archives. The
//! commands re-check everything against the state machine's clock, so a
//! stale look costs a no-op, never a wrong change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::now_ms;
use crate::command::{Command, CommandOutput, Registered};
use crate::queues::{self, housekeeping};
use crate::router::Router;
use crate::store::StateRead;
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

/// Proposes the command `op` makes, and again while `more` finds more
/// work reported in its output, at most [`MAX_REPEAT`] times.
async fn repeat<O>(
    router: &Router,
    op: impl Fn() -> O,
    more: impl Fn(&O::Output) -> bool,
) -> Result<(), String>
where
    O: Registered<Carrier = Command, Reply = CommandOutput>,
{
    for _ in 0..MAX_REPEAT {
        if !more(&write(router, op()).await?) {
            break;
        }
    }
    Ok(())
}

/// Reads this node's state; a failure becomes its message.
fn read<T, E: ToString>(
    router: &Router,
    f: impl FnOnce(&dyn StateRead) -> Result<T, E>,
) -> Result<T, String> {
    router.state().read(f).map_err(|e| e.to_string())
}

/// A collection's output: whether it finished, so more is left when not.
fn unfinished(done: &bool) -> bool {
    !*done
}

async fn round(router: &Router) -> Result<(), String> {
    let names = read(router, queues::all_names)?;
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
            let tick = || crate::queues::QueueTick {
                queue: name.clone(),
            };
            repeat(router, tick, |o| o.more).await?;
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
    events_round(router).await?;
    schedules_round(router).await?;
    retries_round(router).await?;
    for g in read(router, |s| housekeeping::garbage(s, 100))? {
        let collect = || crate::queues::CollectGarbage {
            qid: g.qid,
            gen: g.gen,
        };
        repeat(router, collect, unfinished).await?;
    }
    Ok(())
}

/// Trims shards past retention (dropping closed, emptied shards) and
/// collects deleted streams.
async fn streams_round(router: &Router) -> Result<(), String> {
    let now = now_ms();
    let due = read(router, |s| -> Result<_, crate::error::ApplyError> {
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
    })?;
    for (name, shard) in due {
        let trim = || crate::streams::TrimShard {
            name: name.clone(),
            shard,
        };
        repeat(router, trim, |o| o.more).await?;
    }
    for sid in read(router, |s| streams::records::garbage(s, 100))? {
        repeat(router, || crate::streams::CollectStream { sid }, unfinished).await?;
    }
    Ok(())
}

/// Works running replays step by step, drops archived events past
/// retention and collects deleted archives.
async fn events_round(router: &Router) -> Result<(), String> {
    use crate::events::archive::{self, ReplayState};
    let now = now_ms();
    let (running, due) = read(router, |s| -> Result<_, crate::error::ApplyError> {
        let running: Vec<String> = archive::replays(s)?
            .into_iter()
            .filter(|r| r.state == ReplayState::Running)
            .map(|r| r.name)
            .collect();
        let mut due = Vec::new();
        for a in archive::archives(s)? {
            if archive::needs_trim(s, &a, now)? {
                due.push(a.name);
            }
        }
        Ok((running, due))
    })?;
    for name in running {
        let step = || crate::events::ReplayStep { name: name.clone() };
        repeat(router, step, |more| *more).await?;
    }
    for name in due {
        let tick = || crate::events::ArchiveTick { name: name.clone() };
        repeat(router, tick, |more| *more).await?;
    }
    for id in read(router, |s| archive::garbage(s, 100))? {
        repeat(router, || crate::events::CollectArchive { id }, unfinished).await?;
    }
    Ok(())
}

/// Schedules fired per round, at most: a long outage's catch-up takes
/// several rounds rather than one long one.
const FIRINGS_PER_ROUND: usize = 200;

/// Fires the schedules that are due, each due time by its own command
/// (which delivers only if that due time is still the schedule's next:
/// a look at a stale state, or a firing another leader made, costs a
/// no-op). A schedule that catches up fires again in the same round.
async fn schedules_round(router: &Router) -> Result<(), String> {
    let mut left = FIRINGS_PER_ROUND;
    while left > 0 {
        let due = read(router, |s| crate::schedules::due(s, now_ms(), left))?;
        if due.is_empty() {
            break;
        }
        let mut fired = 0;
        for (group, name, due_ms) in due {
            let op = crate::schedules::FireSchedule {
                group,
                name,
                due_ms,
            };
            if write(router, op).await? {
                fired += 1;
            }
        }
        if fired == 0 {
            break;
        }
        left = left.saturating_sub(fired);
    }
    Ok(())
}

/// Tries again the failed deliveries that are due, each by its own command
/// (a stale look costs a no-op: the command finds it gone or not due).
async fn retries_round(router: &Router) -> Result<(), String> {
    let due = read(router, |s| {
        crate::events::retry::due(s, now_ms(), FIRINGS_PER_ROUND)
    })?;
    for (due_ms, seq) in due {
        write(router, crate::events::RetryDelivery { due_ms, seq }).await?;
    }
    Ok(())
}

/// Forgets expired FIFO deduplication ids of topics and collects deleted
/// topics.
async fn topics_round(router: &Router) -> Result<(), String> {
    let now = now_ms();
    let due = read(router, |s| -> Result<_, crate::error::ApplyError> {
        let mut due = Vec::new();
        for (tid, name) in topics::all(s)? {
            if topics::publish::next_expiry(s, tid)?.is_some_and(|t| t <= now) {
                due.push(name);
            }
        }
        Ok(due)
    })?;
    for topic in due {
        let tick = || crate::topics::TopicTick {
            topic: topic.clone(),
        };
        repeat(router, tick, |more| *more).await?;
    }
    for tid in read(router, |s| topics::garbage(s, 100))? {
        repeat(router, || crate::topics::CollectTopic { tid }, unfinished).await?;
    }
    Ok(())
}

async fn move_outbox(
    router: &Router,
    source: &str,
    qid: u64,
    outbox: Vec<(u64, u64, queues::layout::Outbox)>,
) -> Result<(), String> {
    // A moved message carries its body: those still in the log are read
    // out of it here (the destination refuses references).
    let bodies = router.bodies().clone();
    let outbox = tokio::task::spawn_blocking(move || {
        let mut outbox = outbox;
        for (_, _, entry) in &mut outbox {
            bodies.inline(&mut entry.message.body.body)?;
        }
        Ok::<_, String>(outbox)
    })
    .await
    .map_err(|e| format!("reading moved bodies: {e}"))??;
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
