//! Schedule expressions: `rate(...)`, `cron(...)` and `at(...)`, and the
//! due time that follows a given instant.
//!
//! Times are read in the schedule's time zone from the IANA database
//! bundled with the binary, so every replica computes the same due times.
//! As EventBridge Scheduler does on daylight-saving changes, a cron time
//! that does not exist that day (the clocks jump over it) is skipped, and
//! one that exists twice (the clocks go back) fires once, at its first.

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use super::cron::{Cron, YEAR_MAX};
use super::invalid;
use crate::error::DomainError;

/// Longest rate a `rate(...)` expression may give, in minutes (a year).
const RATE_MINUTES_MAX: u64 = 366 * 24 * 60;

/// A parsed schedule expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expression {
    /// `rate(N minutes|hours|days)`: every `every_ms` from the schedule's
    /// start.
    Rate {
        /// The period, milliseconds.
        every_ms: u64,
    },
    /// `cron(...)`, in the schedule's time zone.
    Cron(Cron),
    /// `at(yyyy-mm-ddThh:mm:ss)`, once, in the schedule's time zone.
    At {
        /// The local date and time, as given.
        local: String,
    },
}

/// A time zone name checked against the bundled database.
pub fn time_zone(field: &str, name: &str) -> Result<TimeZone, DomainError> {
    let name = if name.is_empty() { "UTC" } else { name };
    jiff::tz::TimeZoneDatabase::bundled()
        .get(name)
        .map_err(|_| {
            invalid(
                field,
                format!("{name:?} is not a time zone of the IANA database"),
            )
        })
}

fn timestamp_ms(t: Timestamp) -> Option<u64> {
    u64::try_from(t.as_millisecond()).ok()
}

impl Expression {
    /// Parses `text`; `field` names it in errors.
    pub fn parse(field: &str, text: &str) -> Result<Expression, DomainError> {
        let text = text.trim();
        let inner = |prefix: &str| {
            text.strip_prefix(prefix)
                .and_then(|r| r.strip_suffix(')'))
                .map(str::trim)
        };
        if let Some(rate) = inner("rate(") {
            let (value, unit) = rate.split_once(' ').ok_or_else(|| {
                invalid(field, "a rate is rate(VALUE UNIT), such as rate(5 minutes)")
            })?;
            let value: u64 = value
                .trim()
                .parse()
                .ok()
                .filter(|v| *v >= 1)
                .ok_or_else(|| {
                    invalid(
                        field,
                        format!("the rate's value {value:?} must be a positive whole number"),
                    )
                })?;
            let minutes = match (unit.trim(), value) {
                ("minute", 1) | ("minutes", 2..) => 1,
                ("hour", 1) | ("hours", 2..) => 60,
                ("day", 1) | ("days", 2..) => 24 * 60,
                (u, _) => {
                    return Err(invalid(
                        field,
                        format!("the rate's unit {u:?} must be minute (for 1) or minutes, hour or hours, day or days"),
                    ))
                }
            };
            let total = value.saturating_mul(minutes);
            if total > RATE_MINUTES_MAX {
                return Err(invalid(field, "a rate is at most a year"));
            }
            return Ok(Expression::Rate {
                every_ms: total * 60_000,
            });
        }
        if let Some(cron) = inner("cron(") {
            return Ok(Expression::Cron(Cron::parse(field, cron)?));
        }
        if let Some(at) = inner("at(") {
            let dt: DateTime = at
                .parse()
                .ok()
                .filter(|_| at.len() == 19 && at.as_bytes()[10] == b'T')
                .ok_or_else(|| {
                    invalid(field, format!("at({at}): the time is yyyy-mm-ddThh:mm:ss"))
                })?;
            if dt.year() > YEAR_MAX {
                return Err(invalid(field, format!("at({at}) is after {YEAR_MAX}")));
            }
            return Ok(Expression::At { local: at.into() });
        }
        Err(invalid(
            field,
            format!("must be rate(...), cron(...) or at(...), got {text:?}"),
        ))
    }

    /// The first due time after `after_ms` (not at it), milliseconds since
    /// the epoch; none when there is none. A rate counts from `anchor_ms`:
    /// its due times are `anchor_ms + k × period`, k ≥ 1.
    pub fn next_after(&self, tz: &TimeZone, anchor_ms: u64, after_ms: u64) -> Option<u64> {
        match self {
            Expression::Rate { every_ms } => {
                let k = if after_ms < anchor_ms {
                    1
                } else {
                    (after_ms - anchor_ms) / every_ms + 1
                };
                anchor_ms.checked_add(k.checked_mul(*every_ms)?)
            }
            Expression::At { local } => {
                let dt: DateTime = local.parse().ok()?;
                let at = timestamp_ms(local_instant(tz, dt)?)?;
                (at > after_ms).then_some(at)
            }
            Expression::Cron(cron) => next_cron(cron, tz, after_ms),
        }
    }
}

/// The instant of a local time: none when the clocks jump over it, the
/// first when they pass it twice.
fn local_instant(tz: &TimeZone, dt: DateTime) -> Option<Timestamp> {
    let ambiguous = tz.to_ambiguous_timestamp(dt);
    match ambiguous.offset() {
        AmbiguousOffset::Gap { .. } => None,
        _ => ambiguous.earlier().ok(),
    }
}

/// The first time `cron` picks after `after_ms`, read in `tz`.
fn next_cron(cron: &Cron, tz: &TimeZone, after_ms: u64) -> Option<u64> {
    let after = Timestamp::from_millisecond(i64::try_from(after_ms).ok()?).ok()?;
    let start = tz.to_datetime(after);
    let mut date = start.date();
    // The first day's times start at the minute after; later days at
    // midnight.
    let mut first_day = true;
    while date.year() <= YEAR_MAX {
        if !cron.has_year(date.year()) {
            date = Date::new(date.year().checked_add(1)?, 1, 1).ok()?;
            first_day = false;
            continue;
        }
        if !cron.has_month(date.month()) {
            date = date.last_of_month().tomorrow().ok()?;
            first_day = false;
            continue;
        }
        if cron.has_day(date) {
            for h in cron.hours() {
                if first_day && h < start.hour() {
                    continue;
                }
                for m in cron.minutes() {
                    let dt = date.to_datetime(Time::new(h, m, 0, 0).ok()?);
                    // A time passed twice is taken at its first: an
                    // earlier instant can still lie before `after`.
                    if let Some(t) = local_instant(tz, dt) {
                        if let Some(ms) = timestamp_ms(t).filter(|ms| *ms > after_ms) {
                            return Some(ms);
                        }
                    }
                }
            }
        }
        date = date.tomorrow().ok()?;
        first_day = false;
    }
    None
}
