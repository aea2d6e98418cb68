//! PutEvents: events in, each handed to the targets of every rule that
//! matches it, inside the command that accepts it.
//!
//! Each target's delivery runs in its own child transaction: one that
//! fails (the target is missing, or refuses the event) leaves nothing
//! behind, is counted, and sends the event to the target's dead-letter
//! queue if it has one; the event and its other deliveries stand. A
//! failed delivery is not retried: the same state would refuse it again.

use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use super::deliver::Origin;
use super::deliver::{attempt, dead_letter, hand_over, send_one, Handover};
use super::input::Reserved;
use super::target::{Destination, Target};
use super::{require_bus, rules, save_bus, Rule, PUT_EVENTS_BYTES_MAX, PUT_EVENTS_MAX};
use crate::apply::{Ctx, Effect, Effects};
use crate::error::{field_in, ApplyResult, DomainError};
use crate::limits::events::{BUS_HOPS_MAX, FAN_OUT_BYTES_MAX};
use crate::store::Txn;

/// Longest `Source` and `DetailType`, characters.
pub const NAME_FIELD_MAX: usize = 256;
/// Bytes EventBridge counts for an entry's `Time`.
const TIME_BYTES: usize = 14;

/// An event to put, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewEvent {
    /// `Source`.
    pub source: String,
    /// `DetailType`.
    pub detail_type: String,
    /// `Detail`: the text of a JSON object.
    pub detail: String,
    /// `Resources`: ARNs the event concerns.
    pub resources: Vec<String>,
    /// `Time`, ms since the Unix epoch; the time it is taken when absent.
    pub time_ms: Option<u64>,
}

impl NewEvent {
    /// Validates an entry; `prefix` names it in errors (`entries[2]`).
    pub fn new(
        prefix: &str,
        source: String,
        detail_type: String,
        detail: String,
        resources: Vec<String>,
        time_ms: Option<u64>,
    ) -> Result<NewEvent, DomainError> {
        let f = |name: &str| field_in(prefix, name);
        let entry_error = |field: String, rule: String| {
            DomainError::invalid_with_code("InvalidArgument", field, rule)
        };
        for (name, v) in [("source", &source), ("detail_type", &detail_type)] {
            let n = v.chars().count();
            if !(1..=NAME_FIELD_MAX).contains(&n) {
                return Err(entry_error(
                    f(name),
                    format!("is required, 1-{NAME_FIELD_MAX} characters, got {n}"),
                ));
            }
        }
        match serde_json::from_str::<Value>(&detail) {
            Ok(Value::Object(_)) => {}
            _ => {
                return Err(DomainError::invalid_with_code(
                    "MalformedDetail",
                    f("detail"),
                    "must be the text of a JSON object",
                ))
            }
        }
        if let Some((i, _)) = resources.iter().enumerate().find(|(_, r)| r.is_empty()) {
            return Err(entry_error(
                f(&format!("resources[{i}]")),
                "must not be empty".into(),
            ));
        }
        Ok(NewEvent {
            source,
            detail_type,
            detail,
            resources,
            time_ms,
        })
    }

    /// Bytes the entry counts toward the request's limit, as EventBridge
    /// counts them.
    pub fn size(&self) -> usize {
        self.time_ms.map_or(0, |_| TIME_BYTES)
            + self.source.len()
            + self.detail_type.len()
            + self.detail.len()
            + self.resources.iter().map(String::len).sum::<usize>()
    }
}

/// Checks a PutEvents request: 1-10 entries, 256 KiB in all.
pub fn validate_batch(entries: &[NewEvent]) -> Result<(), DomainError> {
    if entries.is_empty() || entries.len() > PUT_EVENTS_MAX {
        return Err(super::invalid(
            "entries",
            format!(
                "must hold 1-{PUT_EVENTS_MAX} entries, got {}",
                entries.len()
            ),
        ));
    }
    let size: usize = entries.iter().map(NewEvent::size).sum();
    if size > PUT_EVENTS_BYTES_MAX {
        return Err(super::invalid(
            "entries",
            format!("the entries are {size} bytes in all; at most {PUT_EVENTS_BYTES_MAX}"),
        ));
    }
    Ok(())
}

/// The id of event `seq` of bus `bus_id`, derived so every replica
/// computes the same one.
pub fn event_id(bus_id: u64, seq: u64) -> String {
    crate::queues::message::derived_uuid(b"sluice/event-id", bus_id, seq)
}

/// `ms` as EventBridge writes an event's time, to the second
/// (`2017-12-22T18:43:48Z`).
pub fn event_time(ms: u64) -> String {
    let t = crate::time::timestamp(ms);
    format!("{}Z", &t[..19])
}

/// An event in its envelope, as a JSON value (to match) and as its text
/// (to deliver, with the keys in EventBridge's order).
struct Envelope {
    value: Value,
    text: String,
}

fn envelope(id: &str, e: &NewEvent, detail: Value, origin: &Origin, now_ms: u64) -> Envelope {
    let time = event_time(e.time_ms.unwrap_or(now_ms));
    let resources = Value::from(e.resources.clone());
    let js = |s: &str| Value::from(s).to_string();
    let text = format!(
        "{{\"version\":\"0\",\"id\":{},\"detail-type\":{},\"source\":{},\"account\":{},\"time\":{},\"region\":{},\"resources\":{},\"detail\":{}}}",
        js(id),
        js(&e.detail_type),
        js(&e.source),
        js(&origin.account),
        js(&time),
        js(&origin.region),
        resources,
        detail
    );
    let value = serde_json::json!({
        "version": "0",
        "id": id,
        "detail-type": e.detail_type,
        "source": e.source,
        "account": origin.account,
        "time": time,
        "region": origin.region,
        "resources": resources,
        "detail": detail,
    });
    Envelope { value, text }
}

/// The least a delivery counts against a command's budget, bytes: bounds
/// the deliveries one command makes to [`FAN_OUT_BYTES_MAX`] / 16 KiB.
const DELIVERY_COST: usize = 16 * 1024;
/// What handing an event on to another bus counts: bounds the hops (and the
/// rules matched again) one command makes.
const HOP_COST: usize = 256 * 1024;

/// What a command may still copy to targets, shared by its events: a
/// deterministic bound on the memory and work of one command. An event that
/// would cross it fails as a whole.
pub(super) struct Budget {
    left: Cell<usize>,
    crossed: Cell<bool>,
}

impl Budget {
    /// A command's whole budget.
    pub(super) fn full() -> Budget {
        Budget {
            left: Cell::new(FAN_OUT_BYTES_MAX),
            crossed: Cell::new(false),
        }
    }

    /// Spends `bytes`; false (and crossed from then on) when they are not
    /// left.
    fn spend(&self, bytes: usize) -> bool {
        match self.left.get().checked_sub(bytes) {
            Some(left) if !self.crossed.get() => {
                self.left.set(left);
                true
            }
            _ => {
                self.crossed.set(true);
                false
            }
        }
    }

    /// Whether an event crossed it since [`Budget::reset_crossing`].
    pub(super) fn crossed(&self) -> bool {
        self.crossed.get()
    }

    /// Forgets a crossing (the event that crossed failed as a whole); what
    /// was spent stays spent.
    pub(super) fn reset_crossing(&self) {
        self.crossed.set(false);
    }

    /// The refusal of an event that crossed the budget.
    pub(super) fn refusal() -> DomainError {
        DomainError::limit(
            "LimitExceededException",
            format!(
                "the event's deliveries would copy more than one request may ({FAN_OUT_BYTES_MAX} bytes, each delivery counting at least {DELIVERY_COST})"
            ),
        )
    }
}

/// Each bus's rules, read once per command: nothing routing does changes
/// them.
#[derive(Default)]
pub(super) struct RuleBook(RefCell<BTreeMap<String, Rc<Vec<Rule>>>>);

impl RuleBook {
    /// The rules of `bus`.
    pub(super) fn of(&self, txn: &Txn<'_>, bus: &str) -> ApplyResult<Rc<Vec<Rule>>> {
        if let Some(r) = self.0.borrow().get(bus) {
            return Ok(r.clone());
        }
        let r = Rc::new(rules(txn, bus)?);
        self.0.borrow_mut().insert(bus.to_string(), r.clone());
        Ok(r)
    }
}

/// Applies `PutEvents`: each entry succeeds (with its event id) or fails on
/// its own. Each event is routed in a transaction of its own, so one that
/// fails (it crossed the command's budget) leaves nothing.
pub fn put_events(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    bus: &str,
    origin: &Origin,
    entries: &[NewEvent],
    effects: &mut Effects,
) -> ApplyResult<Vec<Result<String, DomainError>>> {
    let mut b = require_bus(txn, bus)?;
    let book = RuleBook::default();
    let budget = Budget::full();
    let mut results = Vec::with_capacity(entries.len());
    for (i, e) in entries.iter().enumerate() {
        // Checked at the edge; checked again, as every replica does, so
        // that a detail that is not an object is refused, never guessed.
        let detail = match serde_json::from_str::<Value>(&e.detail) {
            Ok(d @ Value::Object(_)) => d,
            _ => {
                results.push(Err(DomainError::invalid_with_code(
                    "MalformedDetail",
                    format!("entries[{i}].detail"),
                    "must be the text of a JSON object",
                )));
                continue;
            }
        };
        let id = event_id(b.id, b.events + 1);
        let event = envelope(&id, e, detail, origin, ctx.now_ms);
        let routing = Routing {
            ctx,
            origin,
            event: &event,
            id: &id,
            book: &book,
            budget: &budget,
            archive: true,
        };
        if routing.take(txn, bus, effects)? {
            b.events += 1;
            results.push(Ok(id));
        } else {
            results.push(Err(Budget::refusal()));
        }
    }
    save_bus(txn, &b);
    Ok(results)
}

/// Routes an event taken before (a replayed one: its value, its text and
/// its id) to `only` of the rules of `bus` (all when empty), in a
/// transaction of its own; false, leaving nothing, when it crossed the
/// budget.
#[allow(clippy::too_many_arguments)]
pub(super) fn route_again(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    origin: &Origin,
    bus: &str,
    only: &[String],
    (value, text, id): (&Value, &str, &str),
    budget: &Budget,
    effects: &mut Effects,
) -> ApplyResult<bool> {
    let event = Envelope {
        value: value.clone(),
        text: text.to_string(),
    };
    let book = RuleBook::default();
    if super::load_bus(txn, bus)?.is_some() {
        let chosen: Vec<Rule> = book
            .of(txn, bus)?
            .iter()
            .filter(|r| only.is_empty() || only.contains(&r.settings.name))
            .cloned()
            .collect();
        book.0.borrow_mut().insert(bus.to_string(), Rc::new(chosen));
    }
    let routing = Routing {
        ctx,
        origin,
        event: &event,
        id,
        book: &book,
        budget,
        archive: false,
    };
    routing.take(txn, bus, effects)
}

/// One event on its way: what every delivery of it needs.
struct Routing<'a> {
    ctx: &'a Ctx,
    origin: &'a Origin,
    event: &'a Envelope,
    id: &'a str,
    book: &'a RuleBook,
    budget: &'a Budget,
    /// Kept in the archives of each bus it reaches (not when replayed).
    archive: bool,
}

impl Routing<'_> {
    /// Routes the event on `bus` in a transaction of its own, merged only
    /// if it stayed within the budget; whether it did.
    fn take(&self, txn: &mut Txn<'_>, bus: &str, effects: &mut Effects) -> ApplyResult<bool> {
        let before = effects.len();
        let writes = {
            let mut child = Txn::new(&*txn);
            self.route(&mut child, bus, 0, effects)?;
            child.into_writes()
        };
        if self.budget.crossed() {
            self.budget.reset_crossing();
            effects.truncate(before);
            return Ok(false);
        }
        txn.merge(writes);
        Ok(true)
    }

    /// Hands the event to the targets of every rule of `bus` that matches,
    /// and keeps it in the bus's archives. Stops early once the budget is
    /// crossed (the caller then drops everything).
    fn route(
        &self,
        txn: &mut Txn<'_>,
        bus: &str,
        hops: usize,
        effects: &mut Effects,
    ) -> ApplyResult<()> {
        let on_bus = self.book.of(txn, bus)?;
        for rule in on_bus.iter().filter(|r| r.matches(&self.event.value)) {
            let name = &rule.settings.name;
            effects.push(Effect::EventRouted {
                bus: bus.into(),
                rule: name.clone(),
                target: None,
                delivered: true,
            });
            let rule_arn = self.origin.rule_arn(bus, name);
            let ingestion_time = event_time(self.ctx.now_ms);
            let reserved = Reserved {
                rule_name: name,
                rule_arn: &rule_arn,
                ingestion_time: &ingestion_time,
            };
            for t in &rule.targets {
                // Another bus takes the event itself; the others take its
                // input, at most RENDER_MAX bytes.
                let body = match &t.destination {
                    Destination::Bus { .. } => Ok(String::new()),
                    _ => t
                        .input
                        .render(&self.event.value, &self.event.text, &reserved),
                };
                let cost = match (&t.destination, &body) {
                    (Destination::Bus { .. }, _) => HOP_COST,
                    (_, Ok(b)) => (2 * b.len()).max(DELIVERY_COST),
                    (_, Err(_)) => DELIVERY_COST,
                };
                if !self.budget.spend(cost) {
                    return Ok(());
                }
                let outcome = match &body {
                    Ok(body) => attempt(txn, effects, |txn, effects| {
                        self.deliver(txn, bus, t, body, hops, effects)
                    })?,
                    Err(e) => Err(e.clone()),
                };
                if self.budget.crossed() {
                    return Ok(());
                }
                effects.push(Effect::EventRouted {
                    bus: bus.into(),
                    rule: name.clone(),
                    target: Some(t.id.clone()),
                    delivered: outcome.is_ok(),
                });
                // A failure with attempts left waits to be tried again.
                if let (Err(_), Ok(text), Some(policy)) = (&outcome, &body, t.retry) {
                    if !matches!(t.destination, Destination::Bus { .. }) {
                        let retry = super::retry::Retry {
                            label: super::retry::Label::Rule {
                                bus: bus.into(),
                                rule: name.clone(),
                                target: t.id.clone(),
                            },
                            destination: t.destination.clone(),
                            target_arn: t.arn.clone(),
                            source_arn: rule_arn.clone(),
                            dead_letter_queue: t.dead_letter_queue.clone(),
                            body: text.clone(),
                            id: self.id.to_string(),
                            key: self.partition_key(t),
                            request: format!("{}:{}", self.id, t.id),
                            origin: self.origin.clone(),
                            policy,
                            attempts: 1,
                            first_ms: self.ctx.now_ms,
                        };
                        if super::retry::park(txn, self.ctx, retry)? {
                            continue;
                        }
                    }
                }
                if let (Err(why), Some(dlq)) = (outcome, &t.dead_letter_queue) {
                    let text = body.as_deref().unwrap_or(&self.event.text);
                    let stored = match dead_letter(text, &rule_arn, &t.arn, &why) {
                        Ok(m) => attempt(txn, effects, |txn, effects| {
                            send_one(txn, self.ctx, dlq, m, effects)
                        })?,
                        Err(e) => Err(e),
                    };
                    effects.push(Effect::EventRouted {
                        bus: bus.into(),
                        rule: name.clone(),
                        target: Some(format!("{}/dead-letter", t.id)),
                        delivered: stored.is_ok(),
                    });
                }
            }
        }
        if self.archive {
            super::archive::keep(txn, self.ctx, bus, &self.event.value, &self.event.text)?;
        }
        Ok(())
    }

    fn deliver(
        &self,
        txn: &mut Txn<'_>,
        bus: &str,
        t: &Target,
        body: &str,
        hops: usize,
        effects: &mut Effects,
    ) -> ApplyResult<Result<(), DomainError>> {
        match &t.destination {
            Destination::Bus { name } => {
                if hops >= BUS_HOPS_MAX || name == bus {
                    return Ok(Err(DomainError::limit(
                        "LimitExceededException",
                        format!(
                            "an event goes from bus to bus at most {BUS_HOPS_MAX} times within one request, and never to the bus it is on"
                        ),
                    )));
                }
                require_bus(txn, name)?;
                self.route(txn, name, hops + 1, effects)?;
                Ok(Ok(()))
            }
            _ => {
                let key = self.partition_key(t);
                let to = Handover {
                    id: self.id,
                    key: &key,
                    request: &format!("{}:{}", self.id, t.id),
                };
                hand_over(
                    txn,
                    self.ctx,
                    self.origin,
                    &t.destination,
                    body,
                    &to,
                    effects,
                )
            }
        }
    }

    /// A stream target's partition key: read from the event at its path,
    /// or the event's id.
    fn partition_key(&self, t: &Target) -> String {
        let found = match &t.destination {
            Destination::Stream {
                partition_key_path: Some(path),
                ..
            } => path
                .find(&self.event.value)
                .map(|v| match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .filter(|k| !k.is_empty()),
            _ => None,
        };
        found.unwrap_or_else(|| self.id.to_string())
    }
}
