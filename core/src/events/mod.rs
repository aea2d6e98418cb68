//! Event buses: EventBridge-style routing of events by rules to targets.
//!
//! A bus takes events ([`put`]). Each enabled rule of the bus whose event
//! pattern ([`crate::filter::EventPattern`]) matches an event hands the
//! event, shaped by the target's input settings ([`input`]), to each of
//! its targets ([`target`]). Delivery to a queue, a topic, a stream or
//! another bus is part of the command that accepts the event, as a topic's
//! fan-out to its queues is: an accepted event is in every target it
//! reached, and a command that is not applied leaves it in none. Delivery
//! to a function is an asynchronous invocation, stored in the same command
//! and run (with the function's retry settings) by the leader's runner.
//!
//! Every account has the bus `default`, which needs no creating and cannot
//! be deleted; its record is stored once it has taken an event.
//!
//! Store layout:
//!
//! | key | value |
//! | --- | --- |
//! | `ebus/{name}` | [`StoredBus`] |
//! | `seq/bus-id` | next bus id |
//! | `erule/{bus}/{rule}` | [`StoredRule`] |

pub mod archive;
pub mod deliver;
pub mod input;
pub mod invariants;
pub mod operations;
pub mod put;
pub mod retry;
#[cfg(test)]
mod scenarios;
pub mod target;

pub use operations::*;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{ApplyResult, DomainError};
use crate::filter::EventPattern;
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};
use target::Target;

pub use crate::limits::events::{
    BUSES_MAX, BUS_NAME_MAX, PUT_EVENTS_BYTES_MAX, PUT_EVENTS_MAX, RULES_PER_BUS_MAX,
    RULE_NAME_MAX, TARGETS_PER_RULE_MAX,
};

/// The bus every account has.
pub const DEFAULT_BUS: &str = "default";
/// Longest rule description, characters.
pub const DESCRIPTION_MAX: usize = 512;

/// Bad input to an event-bus call: `INVALID_ARGUMENT` with EventBridge's
/// code, `ValidationException`, naming the field and the rule.
pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> DomainError {
    DomainError::invalid_with_code("ValidationException", field, rule)
}

/// Checks an event bus name: 1-256 characters of letters, digits and
/// `.`, `-`, `_` (and `/` for the names partner buses take).
pub fn validate_bus_name(field: &str, name: &str) -> Result<(), DomainError> {
    if crate::names::is_valid(name, BUS_NAME_MAX, "._-/") {
        return Ok(());
    }
    Err(invalid(
        field,
        format!(
            "must be 1-{BUS_NAME_MAX} characters of A-Z, a-z, 0-9, '.', '-', '_' and '/', got {name:?}"
        ),
    ))
}

/// Checks a rule name or a target id: 1-64 characters of letters, digits
/// and `.`, `-`, `_`.
pub fn validate_rule_name(field: &str, name: &str) -> Result<(), DomainError> {
    if crate::names::is_valid(name, RULE_NAME_MAX, "._-") {
        return Ok(());
    }
    Err(invalid(
        field,
        format!(
            "must be 1-{RULE_NAME_MAX} characters of A-Z, a-z, 0-9, '.', '-' and '_', got {name:?}"
        ),
    ))
}

/// The bus name in an event bus ARN
/// (`arn:aws:events:REGION:ACCOUNT:event-bus/NAME`), or a bare name as
/// given; empty means the default bus.
pub fn bus_from_ref(given: &str) -> &str {
    if given.is_empty() {
        return DEFAULT_BUS;
    }
    match given.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts.as_slice() {
                [_, "events", _, _, resource] => {
                    resource.strip_prefix("event-bus/").unwrap_or(given)
                }
                _ => given,
            }
        }
        None => given,
    }
}

/// An event bus as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bus {
    /// Name.
    pub name: String,
    /// Internal id, never reused (0 for the default bus): event ids are
    /// derived from it.
    pub id: u64,
    /// State-machine time of creation (0 for the default bus).
    pub created_ms: u64,
    /// Description.
    pub description: String,
    /// Events taken so far (the next event's number).
    pub events: u64,
}

impl Bus {
    /// The default bus before it has taken an event.
    fn default_bus() -> Bus {
        Bus {
            name: DEFAULT_BUS.into(),
            id: 0,
            created_ms: 0,
            description: String::new(),
            events: 0,
        }
    }
}

/// Versioned envelope of [`Bus`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredBus {
    /// Version 1.
    V1(Bus),
}

/// A rule as stored: its settings, when it was made, and its targets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    /// Bus, name, pattern, state and description, as `PutRule` last set
    /// them.
    pub settings: NewRule,
    /// State-machine time of creation.
    pub created_ms: u64,
    /// Its targets, by id.
    pub targets: Vec<Target>,
}

impl Rule {
    /// True when the rule is enabled and its pattern matches `event`.
    pub fn matches(&self, event: &serde_json::Value) -> bool {
        self.settings.enabled && self.settings.compiled.matches(event)
    }
}

/// Versioned envelope of [`Rule`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredRule {
    /// Version 1.
    V1(Rule),
}

fn bus_key(name: &str) -> Vec<u8> {
    Key::new("ebus").str(name).build()
}

fn rule_key(bus: &str, name: &str) -> Vec<u8> {
    Key::new("erule").str(bus).str(name).build()
}

fn rules_prefix(bus: &str) -> Vec<u8> {
    Key::new("erule").str(bus).build()
}

/// The error for a missing bus.
pub fn bus_not_found(name: &str) -> DomainError {
    DomainError::not_found(
        "ResourceNotFoundException",
        format!("event bus {name:?} does not exist"),
    )
}

/// The error for a missing rule.
pub fn rule_not_found(bus: &str, name: &str) -> DomainError {
    DomainError::not_found(
        "ResourceNotFoundException",
        format!("rule {name:?} does not exist on event bus {bus:?}"),
    )
}

/// Reads a bus; the default bus always exists.
pub fn load_bus(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Bus>> {
    let stored = crate::store::record_at(state, &bus_key(name))?.map(|StoredBus::V1(b)| b);
    Ok(stored.or_else(|| (name == DEFAULT_BUS).then(Bus::default_bus)))
}

/// Reads a bus or fails with `ResourceNotFoundException`.
pub fn require_bus(state: &dyn StateRead, name: &str) -> ApplyResult<Bus> {
    load_bus(state, name)?.ok_or_else(|| bus_not_found(name).into())
}

/// Writes a bus's record.
pub fn save_bus(txn: &mut Txn<'_>, b: &Bus) {
    txn.put_record(bus_key(&b.name), &StoredBus::V1(b.clone()));
}

/// Reads a rule.
pub fn load_rule(state: &dyn StateRead, bus: &str, name: &str) -> ApplyResult<Option<Rule>> {
    Ok(crate::store::record_at(state, &rule_key(bus, name))?.map(|StoredRule::V1(r)| r))
}

/// Reads a rule or fails with `ResourceNotFoundException`.
pub fn require_rule(state: &dyn StateRead, bus: &str, name: &str) -> ApplyResult<Rule> {
    load_rule(state, bus, name)?.ok_or_else(|| rule_not_found(bus, name).into())
}

/// Writes a rule's record.
pub fn save_rule(txn: &mut Txn<'_>, r: &Rule) {
    let key = rule_key(&r.settings.bus, &r.settings.name);
    txn.put_record(key, &StoredRule::V1(r.clone()));
}

/// Every rule of a bus, in name order.
pub fn rules(state: &dyn StateRead, bus: &str) -> ApplyResult<Vec<Rule>> {
    let stored: Vec<StoredRule> = crate::store::records_under(state, &rules_prefix(bus))?;
    Ok(stored.into_iter().map(|StoredRule::V1(r)| r).collect())
}

/// Every bus, in name order, the default one included.
pub fn buses(state: &dyn StateRead) -> ApplyResult<Vec<Bus>> {
    let stored: Vec<StoredBus> = crate::store::records_under(state, &Key::new("ebus").build())?;
    let mut out: Vec<Bus> = stored.into_iter().map(|StoredBus::V1(b)| b).collect();
    if !out.iter().any(|b| b.name == DEFAULT_BUS) {
        out.push(Bus::default_bus());
        out.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(out)
}

/// Applies `CreateEventBus`.
pub fn create_bus(txn: &mut Txn<'_>, ctx: &Ctx, name: &str, description: &str) -> ApplyResult<()> {
    if load_bus(txn, name)?.is_some() {
        return Err(DomainError::already_exists(
            "ResourceAlreadyExistsException",
            format!("event bus {name:?} already exists"),
        )
        .into());
    }
    if buses(txn)?.len() >= BUSES_MAX {
        return Err(DomainError::limit(
            "LimitExceededException",
            format!(
                "there are {BUSES_MAX} event buses, the default one included; at most {BUSES_MAX}"
            ),
        )
        .into());
    }
    let id = txn.next_id(Key::new("seq").str("bus-id").build())?;
    save_bus(
        txn,
        &Bus {
            name: name.into(),
            id,
            created_ms: ctx.now_ms,
            description: description.into(),
            events: 0,
        },
    );
    Ok(())
}

/// Applies `DeleteEventBus`: the bus and its rules go; a missing bus is no
/// error. A bus an archive keeps is refused: delete the archive first.
pub fn delete_bus(txn: &mut Txn<'_>, name: &str) -> ApplyResult<()> {
    if name == DEFAULT_BUS {
        return Err(invalid("name", "the default event bus cannot be deleted").into());
    }
    if let Some(a) = archive::archives(txn)?.into_iter().find(|a| a.bus == name) {
        return Err(invalid(
            "name",
            format!(
                "archive {:?} keeps this bus's events; delete it first",
                a.name
            ),
        )
        .into());
    }
    // At most RULES_PER_BUS_MAX rules: one bounded command.
    txn.delete_prefixes(&[rules_prefix(name)], RULES_PER_BUS_MAX + 1)?;
    txn.delete(bus_key(name));
    Ok(())
}

/// What `PutRule` sets, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRule {
    /// The bus.
    pub bus: String,
    /// Rule name.
    pub name: String,
    /// The event pattern as given.
    pub pattern: String,
    /// The event pattern, compiled.
    pub compiled: EventPattern,
    /// Enabled (else disabled).
    pub enabled: bool,
    /// Description.
    pub description: String,
}

impl NewRule {
    /// Validates a `PutRule` request. `state` is `""` or `ENABLED` (the
    /// default) or `DISABLED`.
    pub fn new(
        bus: &str,
        name: &str,
        pattern: &str,
        state: &str,
        description: &str,
    ) -> Result<NewRule, DomainError> {
        validate_bus_name("event_bus_name", bus)?;
        validate_rule_name("name", name)?;
        if pattern.is_empty() {
            return Err(invalid(
                "event_pattern",
                "is required (schedule expressions are not supported yet)",
            ));
        }
        let compiled = EventPattern::parse(pattern).map_err(|e| {
            DomainError::invalid_with_code("InvalidEventPatternException", "event_pattern", e.0)
        })?;
        let enabled = match state {
            "" | "ENABLED" => true,
            "DISABLED" => false,
            other => {
                return Err(invalid(
                    "state",
                    format!("must be ENABLED or DISABLED, got {other:?}"),
                ))
            }
        };
        if description.chars().count() > DESCRIPTION_MAX {
            return Err(invalid(
                "description",
                format!("must be at most {DESCRIPTION_MAX} characters"),
            ));
        }
        Ok(NewRule {
            bus: bus.into(),
            name: name.into(),
            pattern: pattern.into(),
            compiled,
            enabled,
            description: description.into(),
        })
    }
}

/// Applies `PutRule`: creates the rule or replaces its pattern, state and
/// description (its targets stay).
pub fn put_rule(txn: &mut Txn<'_>, ctx: &Ctx, r: &NewRule) -> ApplyResult<()> {
    require_bus(txn, &r.bus)?;
    let rule = match load_rule(txn, &r.bus, &r.name)? {
        Some(old) => Rule {
            settings: r.clone(),
            ..old
        },
        None => {
            // Counted by key: the rules themselves may be large.
            if txn.scan_prefix(&rules_prefix(&r.bus)).count() >= RULES_PER_BUS_MAX {
                return Err(DomainError::limit(
                    "LimitExceededException",
                    format!(
                        "event bus {:?} has {RULES_PER_BUS_MAX} rules; at most {RULES_PER_BUS_MAX}",
                        r.bus
                    ),
                )
                .into());
            }
            Rule {
                settings: r.clone(),
                created_ms: ctx.now_ms,
                targets: Vec::new(),
            }
        }
    };
    save_rule(txn, &rule);
    Ok(())
}

/// Applies `DeleteRule`: a rule with targets is refused unless `force`; a
/// missing rule is no error.
pub fn delete_rule(txn: &mut Txn<'_>, bus: &str, name: &str, force: bool) -> ApplyResult<()> {
    require_bus(txn, bus)?;
    if let Some(r) = load_rule(txn, bus, name)? {
        if !r.targets.is_empty() && !force {
            return Err(invalid(
                "name",
                format!(
                    "rule {name:?} still has {} targets; remove them first (or delete with force)",
                    r.targets.len()
                ),
            )
            .into());
        }
        txn.delete(rule_key(bus, name));
    }
    Ok(())
}

/// Applies `EnableRule` and `DisableRule`.
pub fn set_rule_state(txn: &mut Txn<'_>, bus: &str, name: &str, enabled: bool) -> ApplyResult<()> {
    let mut r = require_rule(txn, bus, name)?;
    r.settings.enabled = enabled;
    save_rule(txn, &r);
    Ok(())
}

/// Changes a rule's targets by `change`, once per item, each item
/// succeeding or failing on its own.
fn change_targets<I>(
    txn: &mut Txn<'_>,
    bus: &str,
    rule: &str,
    items: &[I],
    change: impl Fn(&mut Vec<Target>, &I) -> Result<(), DomainError>,
) -> ApplyResult<Vec<Result<(), DomainError>>> {
    let mut r = require_rule(txn, bus, rule)?;
    let results = items.iter().map(|i| change(&mut r.targets, i)).collect();
    save_rule(txn, &r);
    Ok(results)
}

/// Applies `PutTargets`: adds or replaces targets by id, each on its own.
pub fn put_targets(
    txn: &mut Txn<'_>,
    bus: &str,
    rule: &str,
    targets: &[Target],
) -> ApplyResult<Vec<Result<(), DomainError>>> {
    change_targets(txn, bus, rule, targets, |all, t| {
        match all.iter().position(|old| old.id == t.id) {
            Some(i) => all[i] = t.clone(),
            None if all.len() >= TARGETS_PER_RULE_MAX => {
                return Err(DomainError::limit(
                    "LimitExceededException",
                    format!(
                        "rule {rule:?} has {TARGETS_PER_RULE_MAX} targets; at most {TARGETS_PER_RULE_MAX}"
                    ),
                ))
            }
            None => all.push(t.clone()),
        }
        Ok(())
    })
}

/// Applies `RemoveTargets`: each id on its own (a missing one is an entry
/// error).
pub fn remove_targets(
    txn: &mut Txn<'_>,
    bus: &str,
    rule: &str,
    ids: &[String],
) -> ApplyResult<Vec<Result<(), DomainError>>> {
    change_targets(txn, bus, rule, ids, |all, id| {
        let before = all.len();
        all.retain(|t| &t.id != id);
        if all.len() < before {
            return Ok(());
        }
        Err(DomainError::not_found(
            "ResourceNotFoundException",
            format!("rule {rule:?} has no target {id:?}"),
        ))
    })
}

/// A page of a bus's rules whose names start with `prefix`, after `after`;
/// true when more follow.
pub fn list_rules(
    state: &dyn StateRead,
    bus: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<(Vec<Rule>, bool)> {
    require_bus(state, bus)?;
    let mut page: Vec<Rule> = rules(state, bus)?
        .into_iter()
        .filter(|r| {
            let name = r.settings.name.as_str();
            name.starts_with(prefix) && after.is_none_or(|a| name > a)
        })
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    Ok((page, more))
}

/// A page of buses whose names start with `prefix`, after `after`; true
/// when more follow.
pub fn list_buses(
    state: &dyn StateRead,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<(Vec<Bus>, bool)> {
    let mut page: Vec<Bus> = buses(state)?
        .into_iter()
        .filter(|b| b.name.starts_with(prefix) && after.is_none_or(|a| b.name.as_str() > a))
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    Ok((page, more))
}
