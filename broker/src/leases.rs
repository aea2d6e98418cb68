//! The leader's lease manager: hands the slots of event source mappings to
//! live workers.
//!
//! Every node runs this task; only the leader works. Each second, and
//! whenever a worker's record changes, it compares every mapping's leases
//! with what they should be and commits `AssignLeases` where they differ.
//! An enabled queue mapping has one slot per live worker, up to its
//! maximum concurrency; a disabled one has none. A holder that is still
//! live keeps its slot (its epoch stays), so a worker joining or leaving
//! moves only the slots it must. Stream mappings get their slots with the
//! stream pollers.

use std::collections::HashSet;
use std::time::Duration;

use crate::command::Command;
use crate::mappings::leases::{Lease, SLOTS_MAX};
use crate::mappings::{Mapping, Source};
use crate::router::{now_ms, Router};
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

async fn balance(router: &Router) -> Result<(), String> {
    let (mappings, workers, leases) = router
        .state()
        .read(|s| {
            Ok::<_, crate::error::ApplyError>((
                crate::mappings::all(s)?,
                workers::list(s)?,
                crate::mappings::leases::all(s)?,
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
        let want = desired(m, &live, &current);
        let have: Vec<&String> = current.iter().map(|l| &l.worker).collect();
        if want.iter().collect::<Vec<_>>() != have {
            let wrote = router
                .write(Command::AssignLeases {
                    function: m.function.clone(),
                    uuid: m.uuid.clone(),
                    workers: want,
                })
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

/// The holders a mapping's slots should have, slot by slot, given the live
/// workers (sorted) and its current leases (by slot).
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
        use crate::command::{Command, Query, QueryOutput};
        use crate::testing::{new_function, World};
        let mut w = World::new();
        w.run(Command::CreateFunction(new_function("f"))).unwrap();
        let m = mapping(None, true);
        w.run(Command::CreateEventSourceMapping(
            crate::mappings::NewMapping {
                uuid: m.uuid.clone(),
                function: "f".into(),
                source: m.source.clone(),
                settings: m.settings.clone(),
            },
        ))
        .unwrap();
        let assign = |w: &mut World, who: &[&str]| {
            w.run(Command::AssignLeases {
                function: "f".into(),
                uuid: m.uuid.clone(),
                workers: names(who),
            })
        };
        let leases = |w: &World| match w.query(Query::ListLeases).unwrap() {
            QueryOutput::Leases(l) => l
                .into_iter()
                .map(|l| (l.slot, l.worker, l.epoch))
                .collect::<Vec<_>>(),
            other => panic!("{other:?}"),
        };
        assign(&mut w, &["a", "b", "c"]).unwrap();
        assign(&mut w, &["a", "x"]).unwrap();
        assert_eq!(
            leases(&w),
            [(0, "a".to_string(), 1), (1, "x".to_string(), 2)]
        );
        // Refused for a mapping of another function, or a deleted one.
        let e = w
            .run(Command::AssignLeases {
                function: "g".into(),
                uuid: m.uuid.clone(),
                workers: names(&["a"]),
            })
            .unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
        w.run(Command::DeleteEventSourceMapping {
            function: "f".into(),
            uuid: m.uuid.clone(),
        })
        .unwrap();
        assert!(leases(&w).is_empty());
        assert!(assign(&mut w, &["a"]).is_err());
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
