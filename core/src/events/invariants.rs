//! What must hold for every bus: each rule is stored under the bus and name
//! it carries, on a bus that exists, within the rule and target limits, with
//! target ids unique, and its compiled pattern is its pattern's.

use crate::filter::EventPattern;
use crate::invariant::{ensure, CheckError};
use crate::store::StateRead;

const DOMAIN: &str = "events";

/// Checks every bus.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    for b in super::buses(state)? {
        check_one(state, &b.name)?;
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
