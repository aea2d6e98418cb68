//! Archives and replays: a bus's events kept (all, or those a pattern
//! matches, for a retention period), and put back on the bus's rules over a
//! time range.
//!
//! An event is archived by the command that takes it, so an archive holds
//! exactly the events the bus accepted (a replayed event is not archived
//! again). A replay is a record the leader works in steps
//! ([`ReplayStep`](super::ReplayStep)): each step routes the next archived
//! events of the range, in the order they were taken, to the destination
//! bus's rules (all, or the ones it names), each event with a
//! `replay-name` field, and moves the replay's cursor; a replay ends when
//! the range is exhausted, or is cancelled. Deleting an archive leaves its
//! events to be collected in bounded steps.
//!
//! Store layout:
//!
//! | key | value |
//! | --- | --- |
//! | `earchive/{name}` | [`StoredArchive`] |
//! | `seq/archive-id` | next archive id |
//! | `earcev/{archive id}/{taken ms}/{number}` | the event's envelope (text) |
//! | `eagc/{archive id}` | a deleted archive whose events are still being collected |
//! | `ereplay/{name}` | [`StoredReplay`] |

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::put::Origin;
use super::{invalid, require_bus, validate_rule_name};
use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::filter::EventPattern;
use crate::store::keys::{read_u64, Key};
use crate::store::{StateRead, Txn};

/// Most archives.
pub const ARCHIVES_MAX: usize = 100;
/// Most replays running at once.
pub const RUNNING_REPLAYS_MAX: usize = 10;
/// Archived events one replay step routes at most.
pub const REPLAY_STEP: usize = 100;
/// Archived events one collection or retention step deletes at most.
const COLLECT_STEP: usize = 1000;
const DAY_MS: u64 = 24 * 3600 * 1000;

/// An archive as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Archive {
    /// Name.
    pub name: String,
    /// Internal id, never reused: its events are stored under it.
    pub id: u64,
    /// The bus whose events it keeps.
    pub bus: String,
    /// Only the events this pattern matches (text, compiled); all when none.
    pub pattern: Option<(String, EventPattern)>,
    /// Days an event is kept; 0 keeps it for ever.
    pub retention_days: u32,
    /// Description.
    pub description: String,
    /// State-machine time of creation.
    pub created_ms: u64,
    /// Events archived so far (the next one's number).
    pub events: u64,
    /// Bytes of the events archived so far, not less what retention drops.
    pub bytes: u64,
}

/// Versioned envelope of [`Archive`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredArchive {
    /// Version 1.
    V1(Archive),
}

/// Where a replay is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplayState {
    /// Routing events, step by step.
    Running,
    /// Every event of the range was routed.
    Completed,
    /// Stopped by `CancelReplay`.
    Cancelled,
}

impl ReplayState {
    /// EventBridge's name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReplayState::Running => "RUNNING",
            ReplayState::Completed => "COMPLETED",
            ReplayState::Cancelled => "CANCELLED",
        }
    }
}

/// A replay as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Replay {
    /// Name.
    pub name: String,
    /// The archive it reads.
    pub archive: String,
    /// That archive's id when the replay started.
    pub archive_id: u64,
    /// Events taken at or after this time, ms...
    pub start_ms: u64,
    /// ... and before this one.
    pub end_ms: u64,
    /// The bus whose rules the events go to.
    pub bus: String,
    /// Only these rules of it; all when empty.
    pub rules: Vec<String>,
    /// The account and region rule ARNs name.
    pub origin: Origin,
    /// Where it is.
    pub state: ReplayState,
    /// State-machine time it started.
    pub started_ms: u64,
    /// State-machine time it ended.
    pub ended_ms: Option<u64>,
    /// The last event routed: (time taken, number).
    pub cursor: Option<(u64, u64)>,
    /// Events routed so far.
    pub replayed: u64,
    /// Events passed over: their deliveries alone would copy more than a
    /// command may.
    pub passed_over: u64,
}

/// Versioned envelope of [`Replay`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredReplay {
    /// Version 1.
    V1(Replay),
}

fn archive_key(name: &str) -> Vec<u8> {
    Key::new("earchive").str(name).build()
}

fn events_prefix(id: u64) -> Vec<u8> {
    Key::new("earcev").u64(id).build()
}

fn event_key(id: u64, taken_ms: u64, n: u64) -> Vec<u8> {
    Key::new("earcev").u64(id).u64(taken_ms).u64(n).build()
}

fn gc_key(id: u64) -> Vec<u8> {
    Key::new("eagc").u64(id).build()
}

fn replay_key(name: &str) -> Vec<u8> {
    Key::new("ereplay").str(name).build()
}

/// Reads an archive.
pub fn load_archive(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Archive>> {
    Ok(crate::store::record_at(state, &archive_key(name))?.map(|StoredArchive::V1(a)| a))
}

/// Reads an archive or fails with `ResourceNotFoundException`.
pub fn require_archive(state: &dyn StateRead, name: &str) -> ApplyResult<Archive> {
    load_archive(state, name)?.ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            format!("archive {name:?} does not exist"),
        )
        .into()
    })
}

fn save_archive(txn: &mut Txn<'_>, a: &Archive) {
    txn.put_record(archive_key(&a.name), &StoredArchive::V1(a.clone()));
}

/// Every archive, in name order.
pub fn archives(state: &dyn StateRead) -> ApplyResult<Vec<Archive>> {
    let stored: Vec<StoredArchive> =
        crate::store::records_under(state, &Key::new("earchive").build())?;
    Ok(stored.into_iter().map(|StoredArchive::V1(a)| a).collect())
}

/// Reads a replay.
pub fn load_replay(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Replay>> {
    Ok(crate::store::record_at(state, &replay_key(name))?.map(|StoredReplay::V1(r)| r))
}

/// Reads a replay or fails with `ResourceNotFoundException`.
pub fn require_replay(state: &dyn StateRead, name: &str) -> ApplyResult<Replay> {
    load_replay(state, name)?.ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            format!("replay {name:?} does not exist"),
        )
        .into()
    })
}

fn save_replay(txn: &mut Txn<'_>, r: &Replay) {
    txn.put_record(replay_key(&r.name), &StoredReplay::V1(r.clone()));
}

/// Every replay, in name order.
pub fn replays(state: &dyn StateRead) -> ApplyResult<Vec<Replay>> {
    let stored: Vec<StoredReplay> =
        crate::store::records_under(state, &Key::new("ereplay").build())?;
    Ok(stored.into_iter().map(|StoredReplay::V1(r)| r).collect())
}

/// What `CreateArchive` sets, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewArchive {
    /// Name.
    pub name: String,
    /// The bus.
    pub bus: String,
    /// The pattern (text, compiled), if any.
    pub pattern: Option<(String, EventPattern)>,
    /// Days; 0 for ever.
    pub retention_days: u32,
    /// Description.
    pub description: String,
}

impl NewArchive {
    /// Validates a `CreateArchive` request.
    pub fn new(
        name: &str,
        bus: &str,
        pattern: &str,
        retention_days: i32,
        description: &str,
    ) -> Result<NewArchive, DomainError> {
        if !crate::names::is_valid(name, 48, "._-") {
            return Err(invalid(
                "archive_name",
                format!("must be 1-48 characters of A-Z, a-z, 0-9, '.', '-' and '_', got {name:?}"),
            ));
        }
        super::validate_bus_name("event_source_arn", bus)?;
        let pattern = if pattern.is_empty() {
            None
        } else {
            let compiled = EventPattern::parse(pattern).map_err(|e| {
                DomainError::invalid_with_code("InvalidEventPatternException", "event_pattern", e.0)
            })?;
            Some((pattern.to_string(), compiled))
        };
        let retention_days = u32::try_from(retention_days)
            .map_err(|_| invalid("retention_days", "must not be negative"))?;
        if description.chars().count() > super::DESCRIPTION_MAX {
            return Err(invalid(
                "description",
                format!("must be at most {} characters", super::DESCRIPTION_MAX),
            ));
        }
        Ok(NewArchive {
            name: name.into(),
            bus: bus.into(),
            pattern,
            retention_days,
            description: description.into(),
        })
    }
}

/// Applies `CreateArchive`.
pub fn create_archive(txn: &mut Txn<'_>, ctx: &Ctx, a: &NewArchive) -> ApplyResult<()> {
    require_bus(txn, &a.bus)?;
    if load_archive(txn, &a.name)?.is_some() {
        return Err(DomainError::already_exists(
            "ResourceAlreadyExistsException",
            format!("archive {:?} already exists", a.name),
        )
        .into());
    }
    if archives(txn)?.len() >= ARCHIVES_MAX {
        return Err(DomainError::limit(
            "LimitExceededException",
            format!("there are {ARCHIVES_MAX} archives; at most {ARCHIVES_MAX}"),
        )
        .into());
    }
    let id = txn.next_id(Key::new("seq").str("archive-id").build())?;
    save_archive(
        txn,
        &Archive {
            name: a.name.clone(),
            id,
            bus: a.bus.clone(),
            pattern: a.pattern.clone(),
            retention_days: a.retention_days,
            description: a.description.clone(),
            created_ms: ctx.now_ms,
            events: 0,
            bytes: 0,
        },
    );
    Ok(())
}

/// Applies `DeleteArchive`: its events are collected later.
pub fn delete_archive(txn: &mut Txn<'_>, name: &str) -> ApplyResult<()> {
    let a = require_archive(txn, name)?;
    txn.delete(archive_key(name));
    txn.put_record(gc_key(a.id), &());
    Ok(())
}

/// Deleted archives whose events are still being collected.
pub fn garbage(state: &dyn StateRead, limit: usize) -> ApplyResult<Vec<u64>> {
    let prefix = Key::new("eagc").build();
    let mut out = Vec::new();
    for kv in state.scan_prefix(&prefix).take(limit) {
        let (k, _) = kv?;
        out.extend(read_u64(&k, prefix.len()));
    }
    Ok(out)
}

/// Applies `CollectArchive`: deletes a bounded part of a deleted archive's
/// events; true when none are left.
pub fn collect(txn: &mut Txn<'_>, id: u64) -> ApplyResult<bool> {
    let done = txn.delete_prefixes(&[events_prefix(id)], COLLECT_STEP)?;
    if done {
        txn.delete(gc_key(id));
    }
    Ok(done)
}

/// Keeps `text`, an event `bus` just took, in each of the bus's archives
/// whose pattern matches it.
pub(super) fn keep(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    bus: &str,
    value: &Value,
    text: &str,
) -> ApplyResult<()> {
    for mut a in archives(txn)?.into_iter().filter(|a| a.bus == bus) {
        if a.pattern.as_ref().is_some_and(|(_, p)| !p.matches(value)) {
            continue;
        }
        a.events += 1;
        a.bytes += text.len() as u64;
        txn.put_record(event_key(a.id, ctx.now_ms, a.events), &text.to_string());
        save_archive(txn, &a);
    }
    Ok(())
}

/// The time before which an archive's events are past retention, if it
/// has one.
fn retention_floor(a: &Archive, now_ms: u64) -> Option<u64> {
    (a.retention_days > 0).then(|| now_ms.saturating_sub(u64::from(a.retention_days) * DAY_MS))
}

/// Whether an archive holds events past retention.
pub fn needs_trim(state: &dyn StateRead, a: &Archive, now_ms: u64) -> ApplyResult<bool> {
    let Some(floor) = retention_floor(a, now_ms) else {
        return Ok(false);
    };
    let prefix = events_prefix(a.id);
    Ok(state
        .first_with_prefix(&prefix)?
        .and_then(|(k, _)| read_u64(&k, prefix.len()))
        .is_some_and(|taken| taken < floor))
}

/// Applies `ArchiveTick`: drops a bounded number of events past the
/// archive's retention; true when more are due.
pub fn trim(txn: &mut Txn<'_>, ctx: &Ctx, name: &str) -> ApplyResult<bool> {
    let a = require_archive(txn, name)?;
    let Some(floor) = retention_floor(&a, ctx.now_ms) else {
        return Ok(false);
    };
    let prefix = events_prefix(a.id);
    let end = Key::new("earcev").u64(a.id).u64(floor).build();
    let old: Vec<Vec<u8>> = txn
        .range(
            std::ops::Bound::Included(prefix),
            std::ops::Bound::Excluded(end),
            false,
        )
        .take(COLLECT_STEP)
        .map(|kv| kv.map(|(k, _)| k))
        .collect::<Result<_, _>>()?;
    let more = old.len() == COLLECT_STEP;
    for k in old {
        txn.delete(k);
    }
    Ok(more)
}

/// What `StartReplay` sets, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewReplay {
    /// Name.
    pub name: String,
    /// The archive.
    pub archive: String,
    /// From this time, ms...
    pub start_ms: u64,
    /// ... to before this one.
    pub end_ms: u64,
    /// The destination bus (the archive's).
    pub bus: String,
    /// Only these rules of it; all when empty.
    pub rules: Vec<String>,
    /// The account and region rule ARNs name.
    pub origin: Origin,
}

impl NewReplay {
    /// Checks the range and the names.
    pub fn validate(&self) -> Result<(), DomainError> {
        if !crate::names::is_valid(&self.name, 64, "._-") {
            return Err(invalid(
                "replay_name",
                format!(
                    "must be 1-64 characters of A-Z, a-z, 0-9, '.', '-' and '_', got {:?}",
                    self.name
                ),
            ));
        }
        if self.start_ms >= self.end_ms {
            return Err(invalid(
                "event_end_time_ms",
                "must be after event_start_time_ms",
            ));
        }
        for (i, r) in self.rules.iter().enumerate() {
            validate_rule_name(&format!("destination.filter_arns[{i}]"), r)?;
        }
        Ok(())
    }
}

/// Applies `StartReplay`.
pub fn start_replay(txn: &mut Txn<'_>, ctx: &Ctx, r: &NewReplay) -> ApplyResult<()> {
    r.validate()?;
    let a = require_archive(txn, &r.archive)?;
    if a.bus != r.bus {
        return Err(invalid(
            "destination.arn",
            format!("must be the bus archive {:?} keeps, {:?}", a.name, a.bus),
        )
        .into());
    }
    require_bus(txn, &r.bus)?;
    if load_replay(txn, &r.name)?.is_some() {
        return Err(DomainError::already_exists(
            "ResourceAlreadyExistsException",
            format!("replay {:?} already exists", r.name),
        )
        .into());
    }
    let running = replays(txn)?
        .iter()
        .filter(|x| x.state == ReplayState::Running)
        .count();
    if running >= RUNNING_REPLAYS_MAX {
        return Err(DomainError::limit(
            "LimitExceededException",
            format!("{RUNNING_REPLAYS_MAX} replays are running; at most {RUNNING_REPLAYS_MAX}"),
        )
        .into());
    }
    save_replay(
        txn,
        &Replay {
            name: r.name.clone(),
            archive: a.name,
            archive_id: a.id,
            start_ms: r.start_ms,
            end_ms: r.end_ms,
            bus: r.bus.clone(),
            rules: r.rules.clone(),
            origin: r.origin.clone(),
            state: ReplayState::Running,
            started_ms: ctx.now_ms,
            ended_ms: None,
            cursor: None,
            replayed: 0,
            passed_over: 0,
        },
    );
    Ok(())
}

/// Applies `CancelReplay`: a running replay stops where it is.
pub fn cancel_replay(txn: &mut Txn<'_>, ctx: &Ctx, name: &str) -> ApplyResult<()> {
    let mut r = require_replay(txn, name)?;
    if r.state != ReplayState::Running {
        return Err(DomainError::precondition(
            "IllegalStatusException",
            format!("replay {name:?} is {}, not running", r.state.as_str()),
        )
        .into());
    }
    r.state = ReplayState::Cancelled;
    r.ended_ms = Some(ctx.now_ms);
    save_replay(txn, &r);
    Ok(())
}

/// Applies `ReplayStep`: routes the next archived events of a running
/// replay, each in a transaction of its own (at most [`REPLAY_STEP`], fewer
/// when their deliveries would copy more than a request may); true when
/// more are left. An event whose deliveries alone would cross that bound
/// is passed over (and counted), so that a replay always moves on.
pub fn step(txn: &mut Txn<'_>, ctx: &Ctx, name: &str, effects: &mut Effects) -> ApplyResult<bool> {
    let mut r = require_replay(txn, name)?;
    if r.state != ReplayState::Running {
        return Ok(false);
    }
    let from = match r.cursor {
        Some((taken, n)) => Key::new("earcev")
            .u64(r.archive_id)
            .u64(taken)
            .u64(n + 1)
            .build(),
        None => Key::new("earcev").u64(r.archive_id).u64(r.start_ms).build(),
    };
    let end = Key::new("earcev").u64(r.archive_id).u64(r.end_ms).build();
    let batch: Vec<(Vec<u8>, Vec<u8>)> = txn
        .range(
            std::ops::Bound::Included(from),
            std::ops::Bound::Excluded(end),
            false,
        )
        .take(REPLAY_STEP)
        .collect::<Result<_, _>>()?;
    let prefix_len = events_prefix(r.archive_id).len();
    let budget = super::put::Budget::full();
    let mut stopped = false;
    for (i, (k, v)) in batch.iter().enumerate() {
        let (Some(taken), Some(n)) = (read_u64(k, prefix_len), read_u64(k, prefix_len + 8)) else {
            continue;
        };
        let text: String = crate::store::codec::decode(k, v)?;
        // The archive holds envelopes this module wrote: a JSON object.
        if let (Ok(Value::Object(mut map)), Some(open)) =
            (serde_json::from_str::<Value>(&text), text.strip_suffix('}'))
        {
            let replay_name = Value::from(r.name.as_str());
            // The envelope's text keeps EventBridge's key order, the field
            // added last.
            let replayed_text = format!("{open},\"replay-name\":{replay_name}}}");
            map.insert("replay-name".into(), replay_name);
            let id = map
                .get("id")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string();
            let value = Value::Object(map);
            let event = (&value, replayed_text.as_str(), id.as_str());
            let taken_in = super::put::route_again(
                txn, ctx, &r.origin, &r.bus, &r.rules, event, &budget, effects,
            )?;
            if !taken_in && i > 0 {
                // Over what this step may copy: the next step takes it.
                stopped = true;
                break;
            }
            if taken_in {
                r.replayed += 1;
            } else {
                r.passed_over += 1;
            }
        }
        r.cursor = Some((taken, n));
    }
    let more = stopped || batch.len() == REPLAY_STEP;
    if !more {
        r.state = ReplayState::Completed;
        r.ended_ms = Some(ctx.now_ms);
    }
    save_replay(txn, &r);
    Ok(more)
}
