//! What must hold for every bus: each rule is stored under the bus and name
//! it carries, on a bus that exists, within the rule and target limits, with
//! target ids unique, and its compiled pattern is its pattern's.

use crate::filter::EventPattern;
use crate::invariant::{ensure, CheckError};
use crate::store::StateRead;

const DOMAIN: &str = "events";

/// Checks every bus, archive and replay.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    for b in super::buses(state)? {
        check_one(state, &b.name)?;
    }
    check_archives(state)
}

/// Checks the deliveries waiting to be tried again: as many as counted,
/// none to a bus, each failed at least once and no more than its policy's
/// tries allow.
pub fn check_retries(state: &dyn StateRead) -> Result<(), CheckError> {
    use super::retry;
    let all = retry::all(state)?;
    let counted = retry::count(state)?;
    ensure(counted == all.len() as u64, DOMAIN, || {
        format!("{counted} retries counted, {} stored", all.len())
    })?;
    for (due, seq, r) in &all {
        ensure(
            !matches!(r.destination, super::target::Destination::Bus { .. })
                && r.attempts >= 1
                && r.attempts <= r.policy.max_attempts
                && *due > r.first_ms,
            DOMAIN,
            || format!("retry {seq} due at {due} is out of place: {r:?}"),
        )?;
    }
    Ok(())
}

/// Checks archives and replays: each archive keeps a bus that exists, its
/// events numbered within its count; a replay's cursor lies in its range,
/// and only a finished replay has an end.
pub fn check_archives(state: &dyn StateRead) -> Result<(), CheckError> {
    use super::archive::{self, ReplayState};
    for a in archive::archives(state)? {
        ensure(super::load_bus(state, &a.bus)?.is_some(), DOMAIN, || {
            format!("archive {:?} keeps bus {:?}, which is gone", a.name, a.bus)
        })?;
        let prefix = crate::store::keys::Key::new("earcev").u64(a.id).build();
        // Numbers grow with the time taken, so the last key has the largest.
        let last = state
            .range(
                std::ops::Bound::Included(prefix.clone()),
                crate::store::keys::prefix_end(&prefix),
                true,
            )
            .next()
            .transpose()?;
        if let Some((k, _)) = last {
            let n = crate::store::keys::read_u64(&k, prefix.len() + 8).unwrap_or(u64::MAX);
            ensure(n <= a.events, DOMAIN, || {
                format!(
                    "archive {:?}: event {n} is past its count, {}",
                    a.name, a.events
                )
            })?;
        }
    }
    for r in archive::replays(state)? {
        ensure(
            r.cursor
                .is_none_or(|(taken, _)| (r.start_ms..r.end_ms).contains(&taken)),
            DOMAIN,
            || {
                format!(
                    "replay {:?}: its cursor {:?} is out of its range",
                    r.name, r.cursor
                )
            },
        )?;
        ensure(
            (r.state == ReplayState::Running) == r.ended_ms.is_none(),
            DOMAIN,
            || {
                format!(
                    "replay {:?} is {:?} with end {:?}",
                    r.name, r.state, r.ended_ms
                )
            },
        )?;
    }
    Ok(())
}

/// Checks one bus (a gone one passes, if it left no rules).
pub fn check_one(state: &dyn StateRead, bus: &str) -> Result<(), CheckError> {
    let rules = super::rules(state, bus)?;
    ensure(
        rules.is_empty() || super::load_bus(state, bus)?.is_some(),
        DOMAIN,
        || format!("bus {bus:?} is gone but {} rules remain on it", rules.len()),
    )?;
    ensure(rules.len() <= super::RULES_PER_BUS_MAX, DOMAIN, || {
        format!("bus {bus:?} has {} rules", rules.len())
    })?;
    for rule in &rules {
        let (r, targets) = (&rule.settings, &rule.targets);
        ensure(r.bus == bus, DOMAIN, || {
            format!(
                "rule {:?} is stored on bus {bus:?} but names {:?}",
                r.name, r.bus
            )
        })?;
        ensure(targets.len() <= super::TARGETS_PER_RULE_MAX, DOMAIN, || {
            format!(
                "rule {:?} of bus {bus:?} has {} targets",
                r.name,
                targets.len()
            )
        })?;
        let mut ids: Vec<&str> = targets.iter().map(|t| t.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ensure(ids.len() == targets.len(), DOMAIN, || {
            format!(
                "rule {:?} of bus {bus:?} has two targets with one id",
                r.name
            )
        })?;
        ensure(
            EventPattern::parse(&r.pattern).is_ok_and(|p| p == r.compiled),
            DOMAIN,
            || {
                format!(
                    "rule {:?} of bus {bus:?}: its compiled pattern is not its pattern's",
                    r.name
                )
            },
        )?;
    }
    Ok(())
}
