//! Schedules: EventBridge Scheduler's "serverless cron". A schedule names
//! an expression ([`expression`]: `rate(...)`, `cron(...)` in a time zone,
//! or a one-time `at(...)`), an optional start and end, an optional
//! flexible time window, and one target; at each due time its target takes
//! the schedule's input.
//!
//! Firing is a replicated command ([`fire`]): the leader proposes it for a
//! due time it finds in the state, and the command delivers only if that
//! due time is still the schedule's next one, then moves the next one on.
//! A due time therefore fires once whatever the leader changes, retries or
//! stale looks; the proposal can be late, never twice.
//!
//! Catch-up: after an outage (no leader, or no quorum) the missed due times
//! fire one after another, each late and once, in order, as long as they
//! are younger than the target's maximum event age
//! (`RetryPolicy.MaximumEventAgeInSeconds`, 24 hours by default); older
//! ones are skipped, counted as `sluice_schedules_fired_total{outcome=
//! "skipped"}`, as EventBridge Scheduler drops an invocation older than
//! that age. A disabled schedule has no due time: enabled again, it counts
//! its next one from then.
//!
//! Store layout:
//!
//! | key | value |
//! | --- | --- |
//! | `sched/{group}/{name}` | [`StoredSchedule`] |
//! | `sdue/{fire at ms}/{group}/{name}` | empty: the schedules by next firing |
//! | `seq/schedule-id` | next schedule id |
//! | `schedule-count` | how many schedules there are |

pub mod cron;
pub mod expression;
pub mod fire;
pub mod invariants;
pub mod operations;
#[cfg(test)]
mod scenarios;

pub use operations::*;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{field_in, ApplyResult, DomainError};
use crate::events::put::Origin;
use crate::events::target::{Destination, Target, TargetInput};
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};
use expression::Expression;

pub use crate::limits::schedules::{
    DESCRIPTION_MAX, EVENT_AGE_S, INPUT_MAX, NAME_MAX, RETRY_ATTEMPTS_MAX, SCHEDULES_MAX,
    WINDOW_MINUTES_MAX,
};

/// The schedule group every account has, and the only one served.
pub const DEFAULT_GROUP: &str = "default";

/// Bad input to a schedule call: `INVALID_ARGUMENT` with Scheduler's code,
/// `ValidationException`, naming the field and the rule.
pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> DomainError {
    DomainError::invalid_with_code("ValidationException", field, rule)
}

/// Checks a schedule name: 1-64 characters of letters, digits and `.`,
/// `-`, `_`.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    if crate::names::is_valid(name, NAME_MAX, "._-") {
        return Ok(());
    }
    Err(invalid(
        field,
        format!("must be 1-{NAME_MAX} characters of A-Z, a-z, 0-9, '.', '-' and '_', got {name:?}"),
    ))
}

/// Checks a group name: only the default group is served.
pub fn validate_group(field: &str, group: &str) -> Result<(), DomainError> {
    if group == DEFAULT_GROUP {
        return Ok(());
    }
    Err(DomainError::not_found(
        "ResourceNotFoundException",
        format!(
            "{field}: schedule group {group:?} does not exist; only {DEFAULT_GROUP:?} is served"
        ),
    ))
}

/// A schedule's target, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleTarget {
    /// The target's ARN, as given.
    pub arn: String,
    /// `RoleArn`, kept as given (a node's own authorisation applies).
    pub role_arn: String,
    /// Where it delivers.
    pub destination: Destination,
    /// `Input`: the text delivered, with the context attributes
    /// (`<aws.scheduler.scheduled-time>` and the others) filled in. A bus
    /// target takes it as the event's detail.
    pub input: String,
    /// A queue that takes the input when delivery fails.
    pub dead_letter_queue: Option<String>,
    /// `RetryPolicy.MaximumEventAgeInSeconds`: how late a missed due time
    /// may still fire.
    pub max_event_age_s: u32,
    /// `RetryPolicy.MaximumRetryAttempts`: tries after a failed one (see
    /// [`crate::events::retry`]).
    pub max_attempts: u32,
    /// `KinesisParameters.PartitionKey` (the execution id when empty).
    pub partition_key: String,
    /// `EventBridgeParameters.Source`.
    pub source: String,
    /// `EventBridgeParameters.DetailType`.
    pub detail_type: String,
}

/// The raw fields of a schedule's target, before validation (AWS's names).
#[derive(Debug, Clone, Default)]
pub struct ScheduleTargetInput {
    /// `Arn`.
    pub arn: String,
    /// `RoleArn`.
    pub role_arn: String,
    /// `Input`.
    pub input: String,
    /// `DeadLetterConfig.Arn`.
    pub dead_letter_arn: String,
    /// `RetryPolicy.MaximumEventAgeInSeconds` (none: 86 400).
    pub max_event_age_s: Option<u32>,
    /// `RetryPolicy.MaximumRetryAttempts` (none: 185).
    pub max_attempts: Option<u32>,
    /// `SqsParameters.MessageGroupId`.
    pub message_group_id: String,
    /// `KinesisParameters.PartitionKey`.
    pub partition_key: String,
    /// `EventBridgeParameters.Source`.
    pub source: String,
    /// `EventBridgeParameters.DetailType`.
    pub detail_type: String,
}

impl ScheduleTarget {
    /// Validates a target; its fields are named under `target`.
    pub fn new(t: ScheduleTargetInput) -> Result<ScheduleTarget, DomainError> {
        let f = |name: &str| field_in("target", name);
        // The ARN, group and dead-letter queue read as a rule's target's.
        let checked = Target::new(
            "target",
            TargetInput {
                id: "schedule".into(),
                arn: t.arn.clone(),
                message_group_id: t.message_group_id.clone(),
                dead_letter_arn: t.dead_letter_arn.clone(),
                ..TargetInput::default()
            },
        )?;
        if t.input.len() > INPUT_MAX {
            return Err(invalid(
                f("input"),
                format!("is {} bytes; at most {INPUT_MAX}", t.input.len()),
            ));
        }
        let (age_min, age_max) = EVENT_AGE_S;
        let max_event_age_s = t.max_event_age_s.unwrap_or(age_max);
        if !(age_min..=age_max).contains(&max_event_age_s) {
            return Err(invalid(
                f("retry_policy.maximum_event_age_in_seconds"),
                format!("must be {age_min}-{age_max}, got {max_event_age_s}"),
            ));
        }
        let max_attempts = t.max_attempts.unwrap_or(RETRY_ATTEMPTS_MAX);
        if max_attempts > RETRY_ATTEMPTS_MAX {
            return Err(invalid(
                f("retry_policy.maximum_retry_attempts"),
                format!("must be 0-{RETRY_ATTEMPTS_MAX}, got {max_attempts}"),
            ));
        }
        let is_bus = matches!(checked.destination, Destination::Bus { .. });
        if is_bus {
            if t.source.is_empty() || t.detail_type.is_empty() {
                return Err(invalid(
                    f("event_bridge_parameters"),
                    "a bus target needs a source and a detail type",
                ));
            }
            if !t.input.is_empty()
                && !matches!(
                    serde_json::from_str::<serde_json::Value>(&t.input),
                    Ok(serde_json::Value::Object(_))
                )
            {
                return Err(invalid(
                    f("input"),
                    "a bus target's input is the event's detail: the text of a JSON object",
                ));
            }
        } else if !t.source.is_empty() || !t.detail_type.is_empty() {
            return Err(invalid(
                f("event_bridge_parameters"),
                "is only valid for an event bus target",
            ));
        }
        if !t.partition_key.is_empty() && !matches!(checked.destination, Destination::Stream { .. })
        {
            return Err(invalid(
                f("kinesis_parameters.partition_key"),
                "is only valid for a stream target",
            ));
        }
        Ok(ScheduleTarget {
            arn: t.arn,
            role_arn: t.role_arn,
            destination: checked.destination,
            input: t.input,
            dead_letter_queue: checked.dead_letter_queue,
            max_event_age_s,
            max_attempts,
            partition_key: t.partition_key,
            source: t.source,
            detail_type: t.detail_type,
        })
    }
}

/// A schedule's settings, as `CreateSchedule` or `UpdateSchedule` last set
/// them, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewSchedule {
    /// Group (only `default`).
    pub group: String,
    /// Name.
    pub name: String,
    /// `ScheduleExpression`, as given.
    pub expression_text: String,
    /// The parsed expression.
    pub expression: Expression,
    /// `ScheduleExpressionTimezone` (UTC when empty).
    pub time_zone: String,
    /// `StartDate`, ms since the epoch: no due time before it.
    pub start_ms: Option<u64>,
    /// `EndDate`, ms since the epoch: no due time after it.
    pub end_ms: Option<u64>,
    /// Description.
    pub description: String,
    /// Enabled (else disabled: due times pass without firing).
    pub enabled: bool,
    /// `FlexibleTimeWindow.MaximumWindowInMinutes`; 0 is `OFF`.
    pub window_minutes: u32,
    /// The target.
    pub target: ScheduleTarget,
    /// `ActionAfterCompletion` `DELETE`: deleted once it has no due time
    /// left.
    pub delete_after_completion: bool,
    /// The account and region its ARNs name.
    pub origin: Origin,
}

impl NewSchedule {
    /// Validates a schedule's settings.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        group: String,
        name: String,
        expression_text: String,
        time_zone: String,
        (start_ms, end_ms): (Option<u64>, Option<u64>),
        description: String,
        enabled: bool,
        window: (bool, u32),
        target: ScheduleTarget,
        delete_after_completion: bool,
        origin: Origin,
    ) -> Result<NewSchedule, DomainError> {
        validate_group("group_name", &group)?;
        validate_name("name", &name)?;
        let expression = Expression::parse("schedule_expression", &expression_text)?;
        expression::time_zone("schedule_expression_timezone", &time_zone)?;
        if let (Some(s), Some(e)) = (start_ms, end_ms) {
            if e <= s {
                return Err(invalid("end_date", "must be after the start date"));
            }
        }
        if description.chars().count() > DESCRIPTION_MAX {
            return Err(invalid(
                "description",
                format!("is at most {DESCRIPTION_MAX} characters"),
            ));
        }
        let window_minutes = match window {
            (false, 0) => 0,
            (false, _) => {
                return Err(invalid(
                    "flexible_time_window.maximum_window_in_minutes",
                    "is only given with the mode FLEXIBLE",
                ))
            }
            (true, m) if (1..=WINDOW_MINUTES_MAX).contains(&m) => m,
            (true, m) => {
                return Err(invalid(
                    "flexible_time_window.maximum_window_in_minutes",
                    format!("must be 1-{WINDOW_MINUTES_MAX} with the mode FLEXIBLE, got {m}"),
                ))
            }
        };
        Ok(NewSchedule {
            group,
            name,
            expression_text,
            expression,
            time_zone,
            start_ms,
            end_ms,
            description,
            enabled,
            window_minutes,
            target,
            delete_after_completion,
            origin,
        })
    }

    /// The schedule's ARN.
    pub fn arn(&self) -> String {
        let Origin { account, region } = &self.origin;
        format!(
            "arn:aws:scheduler:{region}:{account}:schedule/{}/{}",
            self.group, self.name
        )
    }
}

/// A schedule as stored: its settings and where it stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    /// As last set.
    pub settings: NewSchedule,
    /// Internal id, never reused: execution ids and window offsets derive
    /// from it.
    pub id: u64,
    /// State-machine time of creation.
    pub created_ms: u64,
    /// State-machine time of the last change of its settings.
    pub updated_ms: u64,
    /// Where a rate counts from: the start date, or when the settings were
    /// last set, to the second (due times are whole seconds, as the
    /// scheduled time is written).
    pub anchor_ms: u64,
    /// The next due time; none once there is none left.
    pub next_due_ms: Option<u64>,
    /// Due times fired.
    pub fired: u64,
    /// The last due time fired.
    pub last_due_ms: Option<u64>,
}

impl Schedule {
    /// When its next due time fires: the due time, put off within the
    /// flexible window by an offset derived from the schedule and the due
    /// time (so every replica computes the same one).
    pub fn fire_at_ms(&self) -> Option<u64> {
        if !self.settings.enabled {
            return None;
        }
        let due = self.next_due_ms?;
        let window = u64::from(self.settings.window_minutes) * 60_000;
        if window == 0 {
            return Some(due);
        }
        Some(due + mix(self.id ^ due.rotate_left(17)) % window)
    }

    /// The first due time after `after_ms` within the start and end dates;
    /// none for a disabled schedule.
    pub fn due_after(&self, after_ms: u64) -> Option<u64> {
        let s = &self.settings;
        if !s.enabled {
            return None;
        }
        let tz = expression::time_zone("", &s.time_zone).ok()?;
        // A start date's own instant is a due time of a rate.
        let after = match s.start_ms {
            Some(start) if after_ms < start => start - 1,
            _ => after_ms,
        };
        let anchor = match (&s.expression, s.start_ms) {
            (Expression::Rate { every_ms }, Some(start)) => start.checked_sub(*every_ms)?,
            _ => self.anchor_ms,
        };
        let due = s.expression.next_after(&tz, anchor, after)?;
        match s.end_ms {
            Some(end) if due > end => None,
            _ => Some(due),
        }
    }
}

/// splitmix64's finaliser: spreads window offsets evenly.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Versioned envelope of [`Schedule`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredSchedule {
    /// Version 1.
    V1(Schedule),
}

fn key(group: &str, name: &str) -> Vec<u8> {
    Key::new("sched").str(group).str(name).build()
}

pub(crate) fn due_key(at_ms: u64, group: &str, name: &str) -> Vec<u8> {
    Key::new("sdue").u64(at_ms).str(group).str(name).build()
}

/// Length of `sdue/`.
const DUE_PREFIX_LEN: usize = 5;

fn count_key() -> Vec<u8> {
    Key::new("schedule-count").build()
}

/// The error for a missing schedule.
pub fn not_found(group: &str, name: &str) -> DomainError {
    DomainError::not_found(
        "ResourceNotFoundException",
        format!("schedule {name:?} does not exist in group {group:?}"),
    )
}

/// Reads a schedule.
pub fn load(state: &dyn StateRead, group: &str, name: &str) -> ApplyResult<Option<Schedule>> {
    Ok(crate::store::record_at(state, &key(group, name))?.map(|StoredSchedule::V1(s)| s))
}

/// Reads a schedule or fails with `ResourceNotFoundException`.
pub fn require(state: &dyn StateRead, group: &str, name: &str) -> ApplyResult<Schedule> {
    load(state, group, name)?.ok_or_else(|| not_found(group, name).into())
}

/// How many schedules there are.
pub fn count(state: &dyn StateRead) -> ApplyResult<u64> {
    Ok(crate::store::record_at(state, &count_key())?.unwrap_or(0))
}

/// Writes a schedule and its place in the due index, replacing `before`'s.
pub(crate) fn save(txn: &mut Txn<'_>, before: Option<&Schedule>, s: &Schedule) {
    if let Some(at) = before.and_then(Schedule::fire_at_ms) {
        txn.delete(due_key(at, &s.settings.group, &s.settings.name));
    }
    if let Some(at) = s.fire_at_ms() {
        txn.put(due_key(at, &s.settings.group, &s.settings.name), Vec::new());
    }
    txn.put_record(
        key(&s.settings.group, &s.settings.name),
        &StoredSchedule::V1(s.clone()),
    );
}

/// Deletes a schedule and its place in the due index.
pub(crate) fn remove(txn: &mut Txn<'_>, s: &Schedule) -> ApplyResult<()> {
    if let Some(at) = s.fire_at_ms() {
        txn.delete(due_key(at, &s.settings.group, &s.settings.name));
    }
    txn.delete(key(&s.settings.group, &s.settings.name));
    let n = count(txn)?;
    txn.put_record(
        count_key(),
        &n.checked_sub(1).expect("a schedule was counted"),
    );
    Ok(())
}

/// The schedules whose next firing is at or before `now_ms`, earliest
/// first, at most `limit`: `(group, name, due time)`.
pub fn due(
    state: &dyn StateRead,
    now_ms: u64,
    limit: usize,
) -> ApplyResult<Vec<(String, String, u64)>> {
    let mut out = Vec::new();
    for kv in state.scan_prefix(&Key::new("sdue").build()) {
        let (k, _) = kv?;
        let at = crate::store::keys::read_u64(&k, DUE_PREFIX_LEN).unwrap_or(u64::MAX);
        if at > now_ms || out.len() >= limit {
            break;
        }
        let Some((group, next)) = crate::store::keys::read_str(&k, DUE_PREFIX_LEN + 8) else {
            continue;
        };
        let Some((name, _)) = crate::store::keys::read_str(&k, next) else {
            continue;
        };
        if let Some(s) = load(state, group, name)? {
            if let Some(due) = s.next_due_ms {
                out.push((group.to_string(), name.to_string(), due));
            }
        }
    }
    Ok(out)
}

/// Every schedule, in group and name order.
pub fn all(state: &dyn StateRead) -> ApplyResult<Vec<Schedule>> {
    let stored: Vec<StoredSchedule> =
        crate::store::records_under(state, &Key::new("sched").build())?;
    Ok(stored.into_iter().map(|StoredSchedule::V1(s)| s).collect())
}

/// Applies `CreateSchedule`.
pub fn create(txn: &mut Txn<'_>, ctx: &Ctx, s: &NewSchedule) -> ApplyResult<()> {
    if load(txn, &s.group, &s.name)?.is_some() {
        return Err(DomainError::already_exists(
            "ConflictException",
            format!(
                "schedule {:?} already exists in group {:?}",
                s.name, s.group
            ),
        )
        .into());
    }
    let n = count(txn)?;
    if n >= SCHEDULES_MAX as u64 {
        return Err(DomainError::limit(
            "ServiceQuotaExceededException",
            format!("there are {n} schedules; at most {SCHEDULES_MAX}"),
        )
        .into());
    }
    let id = txn.next_id(Key::new("seq").str("schedule-id").build())?;
    let mut schedule = Schedule {
        settings: s.clone(),
        id,
        created_ms: ctx.now_ms,
        updated_ms: ctx.now_ms,
        anchor_ms: ctx.now_ms / 1000 * 1000,
        next_due_ms: None,
        fired: 0,
        last_due_ms: None,
    };
    schedule.next_due_ms = schedule.due_after(ctx.now_ms);
    save(txn, None, &schedule);
    txn.put_record(count_key(), &(n + 1));
    Ok(())
}

/// Applies `UpdateSchedule`: every setting is replaced (as Scheduler's
/// update does); the next due time is counted again from now.
pub fn update(txn: &mut Txn<'_>, ctx: &Ctx, s: &NewSchedule) -> ApplyResult<()> {
    let before = require(txn, &s.group, &s.name)?;
    let mut after = Schedule {
        settings: s.clone(),
        updated_ms: ctx.now_ms,
        anchor_ms: ctx.now_ms / 1000 * 1000,
        ..before.clone()
    };
    after.next_due_ms = after.due_after(ctx.now_ms);
    save(txn, Some(&before), &after);
    Ok(())
}

/// Applies `DeleteSchedule`.
pub fn delete(txn: &mut Txn<'_>, group: &str, name: &str) -> ApplyResult<()> {
    let s = require(txn, group, name)?;
    remove(txn, &s)
}

/// A page of a group's schedules by name prefix, after `after`; whether
/// more follow.
pub fn list(
    state: &dyn StateRead,
    group: &str,
    prefix: &str,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<(Vec<Schedule>, bool)> {
    let under = Key::new("sched").str(group).build();
    let mut out = Vec::new();
    let mut more = false;
    let start = after.map(|a| key(group, a));
    for kv in state.scan_prefix_after(&under, start) {
        let (k, v) = kv?;
        let StoredSchedule::V1(s) = crate::store::codec::decode(&k, &v)?;
        if !s.settings.name.starts_with(prefix) {
            continue;
        }
        if out.len() == limit {
            more = true;
            break;
        }
        out.push(s);
    }
    Ok((out, more))
}
