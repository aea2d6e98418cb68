//! When a node builds a snapshot: once `--snapshot-every` entries were
//! applied since the last one, as openraft's own policy would, but never
//! for more than a fifth of the time.
//!
//! A snapshot costs what the state holds (some 1.5 s a million queued
//! messages on a 2-core machine), while its interval counts entries. A
//! node with a deep backlog that a busy queue works through then built
//! snapshots back to back, each taking a core: receives at 10 million
//! queued messages ran at half their rate at depth 10. Spacing builds by
//! what the last one took bounds their share; the log past the snapshot
//! grows by as much more as the builds take longer, and a restart
//! re-applies that much more.

use std::time::{Duration, Instant};

use super::{NodeId, Raft};
use openraft::LogId;

/// Builds take at most one part in this many of the time: after a build
/// that took `d`, the next starts no sooner than `(BUILD_SHARE - 1) * d`
/// later.
pub const BUILD_SHARE: u32 = 5;

/// How long past a deferred build's time it is looked at again when
/// nothing else wakes the pacer.
const RECHECK: Duration = Duration::from_millis(100);

/// A build that has not finished after this long is taken for lost (it
/// failed, or openraft dropped the request) and asked for again.
const GIVE_UP: Duration = Duration::from_secs(600);

/// The pacing rule, apart from the clock and openraft (see the module
/// docs).
#[derive(Debug)]
pub struct Pacer {
    every: u64,
    not_before: Instant,
    /// The build asked for: when, and the snapshot there was then.
    building: Option<(Instant, Option<u64>)>,
}

impl Pacer {
    /// A build every `every` entries, the first as soon as they are in.
    pub fn new(every: u64, now: Instant) -> Pacer {
        Pacer {
            every,
            not_before: now,
            building: None,
        }
    }

    /// Whether to ask for a build at `now`, given the index applied and
    /// the index of the current snapshot.
    pub fn due(&mut self, now: Instant, applied: Option<u64>, snapshot: Option<u64>) -> bool {
        if let Some((asked, before)) = self.building {
            if snapshot != before {
                // Built (or one installed): space the next by what it took.
                self.not_before = now + (now - asked) * (BUILD_SHARE - 1);
                self.building = None;
            } else if now - asked < GIVE_UP {
                return false;
            }
        }
        let since = applied.unwrap_or(0).saturating_sub(snapshot.unwrap_or(0));
        if since < self.every || now < self.not_before {
            return false;
        }
        self.building = Some((now, snapshot));
        true
    }
}

/// Asks `raft` for snapshots by the [`Pacer`]'s rule until it shuts down,
/// looking each time it applies entries or its snapshot changes.
pub fn spawn(raft: Raft, every: u64) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut pacer = Pacer::new(every, Instant::now());
        loop {
            let (applied, snapshot) = {
                let m = metrics.borrow_and_update();
                let index = |l: Option<LogId<NodeId>>| l.map(|l| l.index);
                (index(m.last_applied), index(m.snapshot))
            };
            if pacer.due(Instant::now(), applied, snapshot)
                && raft.trigger().snapshot().await.is_err()
            {
                return; // shut down
            }
            // Deferred builds are looked at again when their time comes,
            // even if nothing is applied meanwhile.
            let wake =
                tokio::time::Instant::from_std(pacer.not_before.max(Instant::now())) + RECHECK;
            tokio::select! {
                changed = metrics.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_come_every_so_many_entries_and_take_at_most_their_share() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut p = Pacer::new(100, t0);
        assert!(!p.due(t0, Some(99), None), "not before 100 entries");
        assert!(p.due(t0, Some(100), None));
        assert!(!p.due(t0 + s(1), Some(400), None), "one at a time");
        // It took 10 s: the next waits 40 s more, however many entries.
        assert!(!p.due(t0 + s(10), Some(900), Some(100)));
        assert!(!p.due(t0 + s(49), Some(2_000), Some(100)));
        assert!(p.due(t0 + s(50), Some(2_000), Some(100)));
        // A quick one lets the next follow at once.
        assert!(!p.due(t0 + s(50), Some(2_000), Some(2_000)));
        assert!(!p.due(t0 + s(50), Some(2_099), Some(2_000)));
        assert!(p.due(t0 + s(50), Some(2_100), Some(2_000)));
        // One that never finishes is asked for again.
        assert!(!p.due(t0 + s(600), Some(9_000), Some(2_000)));
        assert!(p.due(t0 + s(650), Some(9_000), Some(2_000)));
    }
}
