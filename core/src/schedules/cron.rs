//! AWS's six-field cron expressions, as EventBridge Scheduler reads them:
//! `minutes hours day-of-month month day-of-week year`.
//!
//! | field | values | wildcards |
//! | --- | --- | --- |
//! | minutes | 0-59 | `, - * /` |
//! | hours | 0-23 | `, - * /` |
//! | day of month | 1-31 | `, - * ? / L W` |
//! | month | 1-12 or JAN-DEC | `, - * /` |
//! | day of week | 1-7 or SUN-SAT (1 is Sunday) | `, - * ? L #` |
//! | year | 1970-2199 | `, - * /` |
//!
//! One of day-of-month and day-of-week is `?`, never both and never
//! neither. `L` alone is the month's last day (day of month) or Saturday
//! (day of week); `LW` the month's last weekday; `15W` the weekday nearest
//! the 15th within its month; `6L` the month's last Friday; `6#3` its third
//! Friday.

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::DomainError;

/// First year a cron expression may name.
pub const YEAR_MIN: i16 = 1970;
/// Last year a cron expression may name.
pub const YEAR_MAX: i16 = 2199;

/// Which days of the month a cron expression picks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MonthDays {
    /// `?`: the day of week decides.
    Unset,
    /// Days 1-31 (bit n is day n).
    Days(u32),
    /// `L`: the last day.
    Last,
    /// `LW`: the last weekday (Monday to Friday).
    LastWeekday,
    /// `nW`: the weekday nearest day n, within the month.
    NearestWeekday(u8),
}

/// Which days of the week a cron expression picks (1 is Sunday).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum WeekDays {
    /// `?`: the day of month decides.
    Unset,
    /// Days 1-7 (bit n is day n).
    Days(u8),
    /// `nL`: the month's last day n.
    Last(u8),
    /// `n#k`: the month's k-th day n.
    Nth(u8, u8),
}

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cron {
    minutes: u64,
    hours: u32,
    month_days: MonthDays,
    months: u16,
    week_days: WeekDays,
    /// Bit n is year YEAR_MIN + n.
    years: [u64; 4],
}

const MONTHS: [&str; 12] = [
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEK_DAYS: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// A set of up to 256 values (bit n is the field's n-th value).
type Bits = [u64; 4];

fn has(bits: &Bits, i: u32) -> bool {
    bits[(i / 64) as usize] & (1 << (i % 64)) != 0
}

/// The low 64 bits of a set over a field of at most 64 values.
fn low(bits: Bits) -> u64 {
    bits[0]
}

/// One field's values as a bit set over `lo..=hi` (bit n is `lo + n`), from
/// `*`, `a`, `a-b`, `*/s`, `a/s`, `a-b/s` and lists of them; `names` are
/// the values' three-letter names from `lo` on.
fn values(field: &str, text: &str, lo: u32, hi: u32, names: &[&str]) -> Result<Bits, DomainError> {
    let number = |s: &str| -> Result<u32, DomainError> {
        let upper = s.to_ascii_uppercase();
        if let Some(i) = names.iter().position(|n| *n == upper) {
            return Ok(lo + i as u32);
        }
        match s.parse::<u32>() {
            Ok(n) if (lo..=hi).contains(&n) => Ok(n),
            _ => Err(invalid(
                field,
                format!("{s:?} is not a value from {lo} to {hi}"),
            )),
        }
    };
    let mut set: Bits = [0; 4];
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step = s.parse::<u32>().ok().filter(|s| *s >= 1).ok_or_else(|| {
                    invalid(
                        field,
                        format!("the step in {part:?} must be a positive number"),
                    )
                })?;
                (r, step)
            }
            None => (part, 1),
        };
        let (from, to) = match range {
            "*" => (lo, hi),
            _ => match range.split_once('-') {
                Some((a, b)) => (number(a)?, number(b)?),
                // `a/s` runs from a to the field's end.
                None if step > 1 || part.contains('/') => (number(range)?, hi),
                None => {
                    let n = number(range)?;
                    (n, n)
                }
            },
        };
        if from > to {
            return Err(invalid(
                field,
                format!("the range {range:?} runs backwards"),
            ));
        }
        let mut v = from;
        while v <= to {
            let i = v - lo;
            set[(i / 64) as usize] |= 1 << (i % 64);
            v += step;
        }
    }
    Ok(set)
}

impl Cron {
    /// Parses the text between `cron(` and `)`; `field` names it in errors.
    pub fn parse(field: &str, text: &str) -> Result<Cron, DomainError> {
        let parts: Vec<&str> = text.split_whitespace().collect();
        let [minutes, hours, dom, month, dow, year] = parts.as_slice() else {
            return Err(invalid(
                field,
                format!(
                    "a cron expression has six fields (minutes hours day-of-month month day-of-week year), got {}",
                    parts.len()
                ),
            ));
        };
        let f = |name: &str| format!("{field} ({name})");
        let minutes = low(values(&f("minutes"), minutes, 0, 59, &[])?);
        let hours = low(values(&f("hours"), hours, 0, 23, &[])?) as u32;
        let months = low(values(&f("month"), month, 1, 12, &MONTHS)?) as u16;
        let years = values(&f("year"), year, YEAR_MIN as u32, YEAR_MAX as u32, &[])?;
        let month_days = match *dom {
            "?" => MonthDays::Unset,
            "L" | "l" => MonthDays::Last,
            "LW" | "lw" => MonthDays::LastWeekday,
            d if d.ends_with(['W', 'w']) => {
                let n = d[..d.len() - 1]
                    .parse::<u8>()
                    .ok()
                    .filter(|n| (1..=31).contains(n));
                MonthDays::NearestWeekday(n.ok_or_else(|| {
                    invalid(
                        f("day-of-month"),
                        format!("{d:?}: W follows a day from 1 to 31"),
                    )
                })?)
            }
            d => MonthDays::Days((low(values(&f("day-of-month"), d, 1, 31, &[])?) << 1) as u32),
        };
        let week_day = |s: &str| -> Result<u8, DomainError> {
            let bits = low(values(&f("day-of-week"), s, 1, 7, &WEEK_DAYS)?);
            if bits.count_ones() != 1 {
                return Err(invalid(
                    f("day-of-week"),
                    format!("{s:?} must name one day"),
                ));
            }
            Ok(bits.trailing_zeros() as u8 + 1)
        };
        let week_days = match *dow {
            "?" => WeekDays::Unset,
            "L" | "l" => WeekDays::Days(1 << 7),
            d if d.len() > 1 && d.ends_with(['L', 'l']) => {
                WeekDays::Last(week_day(&d[..d.len() - 1])?)
            }
            d if d.contains('#') => {
                let (day, nth) = d.split_once('#').expect("contains #");
                let k = nth
                    .parse::<u8>()
                    .ok()
                    .filter(|k| (1..=5).contains(k))
                    .ok_or_else(|| {
                        invalid(f("day-of-week"), format!("{d:?}: # is followed by 1 to 5"))
                    })?;
                WeekDays::Nth(week_day(day)?, k)
            }
            d => WeekDays::Days((low(values(&f("day-of-week"), d, 1, 7, &WEEK_DAYS)?) << 1) as u8),
        };
        match (&month_days, &week_days) {
            (MonthDays::Unset, WeekDays::Unset) => {
                return Err(invalid(
                    field,
                    "one of day-of-month and day-of-week must be given; the other is '?'",
                ))
            }
            (MonthDays::Unset, _) | (_, WeekDays::Unset) => {}
            _ => {
                return Err(invalid(
                    field,
                    "day-of-month and day-of-week cannot both be given: one of them must be '?'",
                ))
            }
        }
        Ok(Cron {
            minutes,
            hours,
            month_days,
            months,
            week_days,
            years,
        })
    }

    /// Whether the expression picks `year`.
    pub fn has_year(&self, year: i16) -> bool {
        if !(YEAR_MIN..=YEAR_MAX).contains(&year) {
            return false;
        }
        has(&self.years, (year - YEAR_MIN) as u32)
    }

    /// Whether the expression picks `month` (1-12).
    pub fn has_month(&self, month: i8) -> bool {
        self.months & (1 << (month - 1)) != 0
    }

    /// Whether the expression picks the date (its day-of-month and
    /// day-of-week fields).
    pub fn has_day(&self, date: jiff::civil::Date) -> bool {
        let day = date.day();
        let last = date.last_of_month().day();
        // 1 is Sunday, as AWS numbers days.
        let weekday = date.weekday().to_sunday_one_offset();
        let is_weekday = |d: i8| (2..=6).contains(&weekday_of(date, d));
        let month_days = match &self.month_days {
            MonthDays::Unset => true,
            MonthDays::Days(bits) => bits & (1 << day) != 0,
            MonthDays::Last => day == last,
            MonthDays::LastWeekday => {
                let mut d = last;
                while !is_weekday(d) {
                    d -= 1;
                }
                day == d
            }
            MonthDays::NearestWeekday(n) => {
                let n = (*n as i8).min(last);
                let target = if is_weekday(n) {
                    n
                } else if weekday_of(date, n) == 7 {
                    // Saturday: the Friday before, or the Monday after
                    // when the 1st is a Saturday.
                    if n > 1 {
                        n - 1
                    } else {
                        n + 2
                    }
                } else if n < last {
                    // Sunday: the Monday after, or the Friday before
                    // when it ends the month.
                    n + 1
                } else {
                    n - 2
                };
                day == target
            }
        };
        let week_days = match &self.week_days {
            WeekDays::Unset => true,
            WeekDays::Days(bits) => bits & (1 << weekday) != 0,
            WeekDays::Last(wd) => weekday == *wd as i8 && day + 7 > last,
            WeekDays::Nth(wd, k) => weekday == *wd as i8 && (day - 1) / 7 + 1 == *k as i8,
        };
        month_days && week_days
    }

    /// The hours it picks, in order.
    pub fn hours(&self) -> impl Iterator<Item = i8> + '_ {
        (0..24).filter(|h| self.hours & (1 << h) != 0)
    }

    /// The minutes it picks, in order.
    pub fn minutes(&self) -> impl Iterator<Item = i8> + '_ {
        (0..60).filter(|m| self.minutes & (1 << m) != 0)
    }
}

/// The day of week (1 is Sunday) of day `day` of `date`'s month.
fn weekday_of(date: jiff::civil::Date, day: i8) -> i8 {
    date.with()
        .day(day)
        .build()
        .map(|x| x.weekday().to_sunday_one_offset())
        .unwrap_or(1)
}
