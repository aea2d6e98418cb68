//! The schedule checker: every due time of every schedule up to the end of
//! the run fired exactly once, and nothing fired that is not a due time.
//!
//! Each firing is a message in one queue whose body names its schedule and
//! due time (`{"s": NAME, "due": "<aws.scheduler.scheduled-time>"}`); the
//! history holds the receives that took them. A due time is taken once per
//! message id: a message received again (its visibility ran out) is the
//! same firing, two message ids for one due time are two firings.
//!
//! Anomalies:
//! - `duplicated`: a due time fired more than once;
//! - `missed`: a due time at or before the run's end never fired;
//! - `unexpected`: a firing at a time that is not one of its schedule's due
//!   times (or of a schedule the run did not make);
//! - `malformed`: a body that does not name a schedule and a due time.

use std::collections::{BTreeMap, BTreeSet};

use super::{Tally, Verdict};
use crate::chaos::history::{Op, Outcome, Reply};

/// The anomalies this checker looks for.
pub const KINDS: &[&str] = &["duplicated", "missed", "unexpected", "malformed"];

/// A schedule's due times, as the run made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Every `period_ms` after `from_ms` (exclusive): `rate(...)` counted
    /// from its creation, or a cron expression firing every minute.
    Every { from_ms: u64, period_ms: u64 },
    /// Once, at `at_ms`.
    Once { at_ms: u64 },
}

impl Due {
    /// Whether `t` is one of its due times.
    pub fn holds(&self, t: u64) -> bool {
        match *self {
            Due::Every { from_ms, period_ms } => {
                t > from_ms && (t - from_ms).is_multiple_of(period_ms)
            }
            Due::Once { at_ms } => t == at_ms,
        }
    }

    /// Its due times up to `end_ms`.
    pub fn until(&self, end_ms: u64) -> Vec<u64> {
        match *self {
            Due::Every { from_ms, period_ms } => (1..)
                .map(|k| from_ms + k * period_ms)
                .take_while(|t| *t <= end_ms)
                .collect(),
            Due::Once { at_ms } if at_ms <= end_ms => vec![at_ms],
            Due::Once { .. } => Vec::new(),
        }
    }
}

/// The ms of an RFC 3339 UTC time to the second (`2026-12-07T05:00:00Z`).
pub fn parse_time(text: &str) -> Option<u64> {
    let b = text.as_bytes();
    if b.len() != 20 || b[4] != b'-' || b[10] != b'T' || b[19] != b'Z' {
        return None;
    }
    let n = |r: std::ops::Range<usize>| text.get(r)?.parse::<i64>().ok();
    let days = sluice_security::civil::days_from_civil(n(0..4)?, n(5..7)?, n(8..10)?);
    let secs = days * 86_400 + n(11..13)? * 3600 + n(14..16)? * 60 + n(17..19)?;
    u64::try_from(secs * 1000).ok()
}

/// Checks the firings the history's receives took against `schedules`'
/// due times up to `end_ms`.
pub fn check(ops: &[Op], schedules: &BTreeMap<String, Due>, end_ms: u64) -> Verdict {
    let mut t = Tally::new("schedule", KINDS);
    let mut fired: BTreeMap<(String, u64), BTreeSet<String>> = BTreeMap::new();
    for op in ops {
        t.outcome(&op.outcome);
        let Outcome::Ok {
            reply: Reply::Received { messages },
        } = &op.outcome
        else {
            continue;
        };
        for m in messages {
            let v: Option<serde_json::Value> = serde_json::from_str(&m.body).ok();
            let name = v.as_ref().and_then(|v| v["s"].as_str()).map(str::to_string);
            let due = v
                .as_ref()
                .and_then(|v| v["due"].as_str())
                .and_then(parse_time);
            match (name, due) {
                (Some(name), Some(due)) => {
                    fired
                        .entry((name, due))
                        .or_default()
                        .insert(m.message_id.clone());
                }
                _ => t.anomaly(
                    "malformed",
                    format!("message {}: {:?}", m.message_id, m.body),
                ),
            }
        }
    }
    for ((name, due), ids) in &fired {
        match schedules.get(name) {
            Some(d) if d.holds(*due) => {}
            _ => t.anomaly(
                "unexpected",
                format!("{name} fired for {due}, not a due time of it"),
            ),
        }
        if ids.len() > 1 {
            t.anomaly(
                "duplicated",
                format!("{name} fired {} times for {due}: {ids:?}", ids.len()),
            );
        }
    }
    for (name, d) in schedules {
        for due in d.until(end_ms) {
            if !fired.contains_key(&(name.clone(), due)) {
                t.anomaly("missed", format!("{name} never fired for {due}"));
            }
        }
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::checkers::testing::{only, passed};
    use crate::chaos::history::{Call, Delivery};

    fn receive(bodies: &[(&str, &str)]) -> Op {
        Op {
            process: 1,
            call: Call::Receive {
                queue: "q".into(),
                max: 10,
            },
            invoke_ns: 0,
            complete_ns: 1,
            outcome: Outcome::Ok {
                reply: Reply::Received {
                    messages: bodies
                        .iter()
                        .map(|(id, body)| Delivery {
                            body: body.to_string(),
                            message_id: id.to_string(),
                            receipt: String::new(),
                            count: 1,
                        })
                        .collect(),
                },
            },
        }
    }

    fn body(name: &str, due: &str) -> String {
        format!(r#"{{"s":"{name}","due":"{due}"}}"#)
    }

    const T: u64 = 1_796_000_000_000; // 2026-11-30T00:53:20Z

    fn schedules() -> BTreeMap<String, Due> {
        BTreeMap::from([
            (
                "rate".to_string(),
                Due::Every {
                    from_ms: T,
                    period_ms: 60_000,
                },
            ),
            ("once".to_string(), Due::Once { at_ms: T + 30_000 }),
        ])
    }

    #[test]
    fn times_read_as_aws_writes_them() {
        assert_eq!(parse_time("2026-11-30T00:53:20Z"), Some(T));
        assert_eq!(parse_time("2026-11-30T00:53:20.000Z"), None);
    }

    #[test]
    fn each_due_time_once_passes_and_a_redelivery_is_the_same_firing() {
        let (a, b, o) = (
            body("rate", "2026-11-30T00:54:20Z"),
            body("rate", "2026-11-30T00:55:20Z"),
            body("once", "2026-11-30T00:53:50Z"),
        );
        let ops = vec![
            receive(&[("m1", &a), ("m2", &b)]),
            receive(&[("m1", &a), ("m3", &o)]),
        ];
        let v = check(&ops, &schedules(), T + 120_000);
        passed(&v, "schedule", KINDS, 2, 0, 0);
    }

    #[test]
    fn a_second_firing_a_missed_one_and_an_off_grid_one_are_found() {
        let a = body("rate", "2026-11-30T00:54:20Z");
        let o = body("once", "2026-11-30T00:53:50Z");
        let twice = vec![receive(&[("m1", &a), ("m2", &a), ("m3", &o)])];
        only(
            &check(&twice, &schedules(), T + 60_000),
            KINDS,
            "duplicated",
            1,
        );
        let missed = vec![receive(&[("m1", &a)])];
        only(
            &check(&missed, &schedules(), T + 60_000),
            KINDS,
            "missed",
            1,
        );
        let off = body("rate", "2026-11-30T00:54:21Z");
        let odd = vec![receive(&[("m1", &a), ("m2", &off), ("m3", &o)])];
        only(
            &check(&odd, &schedules(), T + 60_000),
            KINDS,
            "unexpected",
            1,
        );
        let bad = vec![receive(&[("m1", &a), ("m2", "tick"), ("m3", &o)])];
        only(
            &check(&bad, &schedules(), T + 60_000),
            KINDS,
            "malformed",
            1,
        );
    }
}
