//! The leader's lease manager: hands the slots of event source mappings to
//! live workers.
//!
//! Every node runs this task; only the leader works. Each second, and
//! whenever a worker's record changes, it compares every mapping's leases
//! with what they should be and commits `AssignLeases` where they differ.
//! An enabled queue mapping has one slot per live worker, up to its
//! maximum concurrency; a disabled one has none. An enabled stream mapping
//! has a slot per part (its parallelization factor) of each shard it is
//! reading: shards whose parents it has read to their end (or whose
//! parents are gone), until it has read them to theirs. A holder that is
//! still live keeps its slot (its epoch stays) unless it holds more than
//! its share, so a worker joining or leaving moves only the slots it must.
//!
//! The leader also exports each mapping's lag: queue depth, and for each
//! shard part the age of the oldest record not yet processed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use crate::clock::now_ms;
use crate::command::Command;
use crate::mappings::checkpoints::Checkpoint;
use crate::mappings::leases::{stream_slot, Lease, SLOTS_MAX};
use crate::mappings::{Mapping, Source};
use crate::router::Router;
use crate::streams::Stream;
use crate::waiters::Waiters;
use crate::workers;

/// How often the leases are checked without a wake-up.
const INTERVAL: Duration = Duration::from_secs(1);

/// Starts the lease manager.
pub fn spawn(router: Router, waiters: std::sync::Arc<Waiters>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(router, waiters))
}

async fn run(router: Router, waiters: std::sync::Arc<Waiters>) {
    let wake = waiters.of(Waiters::WORKERS);
    loop {
        let changed = wake.notified();
        tokio::pin!(changed);
        changed.as_mut().enable();
        let leads = router.raft().metrics().borrow().current_leader == Some(router.id());
        if leads {
            if let Err(e) = balance(&router).await {
                tracing::debug!(error = %e, "could not balance the mapping leases");
            }
        }
        tokio::select! {
            _ = &mut changed => {}
            _ = tokio::time::sleep(INTERVAL) => {}
        }
    }
}

/// What the lease manager reads of a stream mapping's source.
struct StreamView {
    stream: Stream,
    checkpoints: Vec<Checkpoint>,
}

async fn balance(router: &Router) -> Result<(), String> {
    let (mappings, workers, leases, streams) = router
        .state()
        .read(|s| {
            let mappings = crate::mappings::all(s)?;
            let mut streams = HashMap::new();
            for m in &mappings {
                if let Source::Stream(name) = &m.source {
                    if let Some(stream) = crate::streams::load(s, name)? {
                        let checkpoints =
                            crate::mappings::checkpoints::of_mapping(s, &m.function, &m.uuid)?;
                        crate::lag::report_stream(s, m, &stream, &checkpoints, now_ms())?;
                        streams.insert(
                            m.uuid.clone(),
                            StreamView {
                                stream,
                                checkpoints,
                            },
                        );
                    }
                } else {
                    crate::lag::report_queue(s, m)?;
                }
            }
            Ok::<_, crate::error::ApplyError>((
                mappings,
                workers::list(s)?,
                crate::mappings::leases::all(s)?,
                streams,
            ))
        })
        .map_err(|e| e.to_string())?;
    let now = now_ms();
    let mut live: Vec<String> = workers
        .iter()
        .filter(|w| workers::is_live(w, now))
        .map(|w| w.report.id.clone())
        .collect();
    live.sort();
    for m in &mappings {
        let mut current: Vec<&Lease> = leases.iter().filter(|l| l.uuid == m.uuid).collect();
        current.sort_by_key(|l| l.slot);
        let mut want = match streams.get(&m.uuid) {
            Some(v) if m.settings.enabled => {
                spread(&stream_slots(m, &v.stream, &v.checkpoints), &live, &current)
            }
            _ if matches!(m.source, Source::Stream(_)) => Vec::new(),
            _ => desired(m, &live, &current)
                .into_iter()
                .enumerate()
                .map(|(i, w)| (i as u32, w))
                .collect(),
        };
        want.sort();
        let have: Vec<(u32, String)> = current.iter().map(|l| (l.slot, l.worker.clone())).collect();
        if want != have {
            let wrote = router
                .write(Command::AssignLeases(crate::mappings::AssignLeases {
                    function: m.function.clone(),
                    uuid: m.uuid.clone(),
                    slots: want,
                }))
                .await;
            match wrote {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::debug!(mapping = %m.uuid, error = %e, "lease assignment refused")
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    }
    Ok(())
}

/// The slots a stream mapping should have now, in order: each part not
/// finished of each shard whose parents are finished or gone, up to
/// [`SLOTS_MAX`].
pub fn stream_slots(m: &Mapping, stream: &Stream, checkpoints: &[Checkpoint]) -> Vec<u32> {
    let pf = m.settings.parallelization_factor.max(1);
    let done: HashSet<u32> = checkpoints
        .iter()
        .filter(|c| c.finished)
        .map(|c| c.slot)
        .collect();
    let finished = |shard: u32| (0..pf).all(|p| done.contains(&stream_slot(shard, p)));
    let exists = |shard: u32| stream.shards.iter().any(|s| s.index == shard);
    let mut out = Vec::new();
    for s in &stream.shards {
        if !s.parents.iter().all(|&p| !exists(p) || finished(p)) {
            continue;
        }
        for p in 0..pf {
            let slot = stream_slot(s.index, p);
            if !done.contains(&slot) {
                out.push(slot);
            }
        }
    }
    out.truncate(SLOTS_MAX as usize);
    out
}

/// Holders for `slots` (in order) among the live workers (sorted), given
/// the current leases: a live holder keeps its slot while it holds no more
/// than its share (the slots over the workers, rounded up); the others go
/// to the live worker holding the fewest.
pub fn spread(slots: &[u32], live: &[String], current: &[&Lease]) -> Vec<(u32, String)> {
    if live.is_empty() {
        return Vec::new();
    }
    let share = slots.len().div_ceil(live.len());
    let mut load: BTreeMap<&str, usize> = live.iter().map(|w| (w.as_str(), 0)).collect();
    let mut holder: BTreeMap<u32, String> = BTreeMap::new();
    for &slot in slots {
        if let Some(l) = current.iter().find(|l| l.slot == slot) {
            if let Some(n) = load.get_mut(l.worker.as_str()) {
                if *n < share {
                    *n += 1;
                    holder.insert(slot, l.worker.clone());
                }
            }
        }
    }
    for &slot in slots {
        if holder.contains_key(&slot) {
            continue;
        }
        let (w, n) = load
            .iter_mut()
            .min_by_key(|(w, n)| (**n, **w))
            .expect("live is not empty");
        *n += 1;
        holder.insert(slot, w.to_string());
    }
    slots.iter().map(|s| (*s, holder[s].clone())).collect()
}

/// The holders a queue mapping's slots should have, slot by slot, given
/// the live workers (sorted) and its current leases (by slot).
pub fn desired(m: &Mapping, live: &[String], current: &[&Lease]) -> Vec<String> {
    if !m.settings.enabled || live.is_empty() || matches!(m.source, Source::Stream(_)) {
        return Vec::new();
    }
    let cap = m.settings.maximum_concurrency.unwrap_or(SLOTS_MAX) as usize;
    let k = live.len().min(cap);
    let mut slots: Vec<Option<String>> = vec![None; k];
    let mut used = HashSet::new();
    for l in current {
        let s = l.slot as usize;
        if s < k && live.contains(&l.worker) && used.insert(l.worker.clone()) {
            slots[s] = Some(l.worker.clone());
        }
    }
    // New holders: the live workers from a place that depends on the
    // mapping, so that mappings capped below the number of workers spread.
    let start = m
        .uuid
        .bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
        % live.len();
    let mut free = live
        .iter()
        .cycle()
        .skip(start)
        .take(live.len())
        .filter(|w| !used.contains(*w));
    for s in slots.iter_mut() {
        if s.is_none() {
            *s = free.next().cloned();
        }
    }
    slots.into_iter().flatten().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mappings::{settle, SettingsChange};

    fn mapping(max: Option<u32>, enabled: bool) -> Mapping {
        let mut settings = settle(
            None,
            &Source::Queue("q".into()),
            false,
            &SettingsChange {
                maximum_concurrency: max,
                ..Default::default()
            },
        )
        .unwrap();
        settings.enabled = enabled;
        Mapping {
            uuid: "m-1".into(),
            function: "f".into(),
            source: Source::Queue("q".into()),
            settings,
            modified_ms: 0,
            last_result: String::new(),
        }
    }

    fn lease(slot: u32, worker: &str) -> Lease {
        Lease {
            uuid: "m-1".into(),
            function: "f".into(),
            slot,
            worker: worker.into(),
            epoch: 1,
        }
    }

    fn names(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn assigning_keeps_epochs_of_holders_and_drops_extra_slots() {
        use crate::testing::{new_function, World};
        let mut w = World::new();
        w.run(new_function("f")).unwrap();
        let m = mapping(None, true);
        w.run(crate::mappings::NewMapping {
            uuid: m.uuid.clone(),
            function: "f".into(),
            source: m.source.clone(),
            settings: m.settings.clone(),
        })
        .unwrap();
        let assign = |w: &mut World, who: &[&str]| {
            w.run(crate::mappings::AssignLeases {
                function: "f".into(),
                uuid: m.uuid.clone(),
                slots: names(who)
                    .into_iter()
                    .enumerate()
                    .map(|(i, w)| (i as u32, w))
                    .collect(),
            })
        };
        let leases = |w: &World| {
            w.ask(crate::mappings::ListLeases)
                .unwrap()
                .into_iter()
                .map(|l| (l.slot, l.worker, l.epoch))
                .collect::<Vec<_>>()
        };
        assign(&mut w, &["a", "b", "c"]).unwrap();
        assign(&mut w, &["a", "x"]).unwrap();
        assert_eq!(
            leases(&w),
            [(0, "a".to_string(), 1), (1, "x".to_string(), 4)]
        );
        // Refused for a mapping of another function, or a deleted one.
        let e = w
            .run(crate::mappings::AssignLeases {
                function: "g".into(),
                uuid: m.uuid.clone(),
                slots: vec![(0, "a".into())],
            })
            .unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
        w.run(crate::mappings::DeleteEventSourceMapping {
            function: "f".into(),
            uuid: m.uuid.clone(),
        })
        .unwrap();
        assert!(leases(&w).is_empty());
        assert!(assign(&mut w, &["a"]).is_err());
    }

    #[test]
    fn stream_slots_follow_lineage_and_spread_evenly() {
        use crate::mappings::checkpoints::Checkpoint;
        use crate::streams::{CreateStream, Stream};
        use crate::testing::World;
        let mut w = World::new();
        let c = CreateStream::new("s", 2, None, None, None, None, Default::default()).unwrap();
        w.run(c).unwrap();
        // Split shard 0: shards 2 and 3 are its children.
        w.run(crate::streams::SplitShard {
            name: "s".into(),
            shard: 0,
            new_start: 1 << 64,
        })
        .unwrap();
        let stream: Stream = w
            .ask(crate::streams::DescribeStream { name: "s".into() })
            .unwrap();
        let mut m = mapping(None, true);
        m.source = Source::Stream("s".into());
        m.settings.parallelization_factor = 2;
        let cp = |slot, finished| Checkpoint {
            slot,
            seq: 1,
            finished,
        };
        // Parent 0 not finished: its children wait.
        assert_eq!(stream_slots(&m, &stream, &[]), [0, 1, 10, 11]);
        // One part finished is not enough.
        assert_eq!(stream_slots(&m, &stream, &[cp(0, true)]), [1, 10, 11]);
        // Both parts finished: the children start.
        assert_eq!(
            stream_slots(&m, &stream, &[cp(0, true), cp(1, true), cp(10, false)]),
            [10, 11, 20, 21, 30, 31]
        );
        // Spread: 6 slots over 2 workers, 3 each; holders keep their
        // share, a third worker takes the excess.
        let live = names(&["a", "b"]);
        let slots = [10, 11, 20, 21, 30, 31];
        let first = spread(&slots, &live, &[]);
        let count = |v: &[(u32, String)], who: &str| v.iter().filter(|(_, w)| w == who).count();
        assert_eq!((count(&first, "a"), count(&first, "b")), (3, 3));
        let held: Vec<Lease> = first
            .iter()
            .map(|(s, w)| Lease {
                slot: *s,
                ..lease(0, w)
            })
            .collect();
        let refs: Vec<&Lease> = held.iter().collect();
        let grown = spread(&slots, &names(&["a", "b", "c"]), &refs);
        assert_eq!(
            (count(&grown, "a"), count(&grown, "b"), count(&grown, "c")),
            (2, 2, 2)
        );
        let moved = grown.iter().filter(|g| !first.contains(g)).count();
        assert_eq!(moved, 2, "only the slots c takes move");
        // b dies: a keeps its three, b's go to a.
        let shrunk = spread(&slots, &names(&["a"]), &refs);
        assert_eq!(count(&shrunk, "a"), 6);
    }

    #[test]
    fn one_slot_per_live_worker_up_to_the_cap_and_holders_stay() {
        let live = names(&["a", "b", "c"]);
        let all = desired(&mapping(None, true), &live, &[]);
        let mut sorted = all.clone();
        sorted.sort();
        assert_eq!(sorted, live);
        assert_eq!(desired(&mapping(Some(2), true), &live, &[]).len(), 2);
        assert!(desired(&mapping(None, false), &live, &[]).is_empty());
        // b dies: two slots are left; a keeps slot 0 and c, whose slot is
        // gone, takes b's.
        let (l0, l1, l2) = (lease(0, "a"), lease(1, "b"), lease(2, "c"));
        let now = desired(&mapping(None, true), &names(&["a", "c"]), &[&l0, &l1, &l2]);
        assert_eq!(now, names(&["a", "c"]));
        // A worker joining takes a new slot; the others keep theirs.
        let grown = desired(
            &mapping(None, true),
            &names(&["a", "b", "c", "d"]),
            &[&l0, &l1, &l2],
        );
        assert_eq!(&grown[..3], &names(&["a", "b", "c"])[..]);
        assert_eq!(grown[3], "d");
    }
}
