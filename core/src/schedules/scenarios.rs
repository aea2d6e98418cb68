//! Schedule expressions and firing, exercised through
//! [`crate::machine::apply`] over an in-memory store with the clock moved
//! by hand.

use super::expression::{time_zone, Expression};
use super::{
    DeleteSchedule, FireSchedule, GetSchedule, NewSchedule, ScheduleTarget, ScheduleTargetInput,
    UpdateSchedule,
};
use crate::error::ErrorKind;
use crate::events::put::Origin;
use crate::testing::World;

const ACCOUNT: &str = "000000000000";
const REGION: &str = "us-east-1";

/// ms of an RFC 3339 instant.
fn ms(text: &str) -> u64 {
    text.parse::<jiff::Timestamp>().unwrap().as_millisecond() as u64
}

fn next(expr: &str, tz: &str, after: &str) -> Option<String> {
    let e = Expression::parse("e", expr).unwrap();
    let tz = time_zone("tz", tz).unwrap();
    e.next_after(&tz, 0, ms(after)).map(|t| {
        jiff::Timestamp::from_millisecond(t as i64)
            .unwrap()
            .to_string()
    })
}

#[test]
fn cron_expressions_pick_the_times_aws_documents() {
    let cases = [
        // (expression, after, next) in UTC; from the Scheduler guide's
        // examples and the cron reference's wildcards.
        (
            "cron(0 10 * * ? *)",
            "2026-01-01T09:00:00Z",
            "2026-01-01T10:00:00Z",
        ),
        (
            "cron(0 10 * * ? *)",
            "2026-01-01T10:00:00Z",
            "2026-01-02T10:00:00Z",
        ),
        (
            "cron(15 12 * * ? *)",
            "2026-01-01T12:15:30Z",
            "2026-01-02T12:15:00Z",
        ),
        // Weekdays at 18:00: from a Saturday to the Monday.
        (
            "cron(0 18 ? * MON-FRI *)",
            "2026-01-03T00:00:00Z",
            "2026-01-05T18:00:00Z",
        ),
        (
            "cron(0 8 1 * ? *)",
            "2026-01-01T08:00:00Z",
            "2026-02-01T08:00:00Z",
        ),
        (
            "cron(0/15 * * * ? *)",
            "2026-01-01T10:16:00Z",
            "2026-01-01T10:30:00Z",
        ),
        (
            "cron(5,35 14 * * ? *)",
            "2026-01-01T14:05:00Z",
            "2026-01-01T14:35:00Z",
        ),
        // The last day of February in a leap year.
        (
            "cron(0 9 L * ? *)",
            "2028-02-01T00:00:00Z",
            "2028-02-29T09:00:00Z",
        ),
        // The third Friday of January 2026 (the 2nd is its first).
        (
            "cron(0 9 ? * 6#3 *)",
            "2026-01-01T00:00:00Z",
            "2026-01-16T09:00:00Z",
        ),
        // Its last Friday.
        (
            "cron(0 9 ? * 6L *)",
            "2026-01-01T00:00:00Z",
            "2026-01-30T09:00:00Z",
        ),
        // 15 February 2026 is a Sunday: the Monday after.
        (
            "cron(0 9 15W * ? *)",
            "2026-02-01T00:00:00Z",
            "2026-02-16T09:00:00Z",
        ),
        // 15 November 2025 is a Saturday: the Friday before.
        (
            "cron(0 9 15W * ? *)",
            "2025-11-01T00:00:00Z",
            "2025-11-14T09:00:00Z",
        ),
        // 31 January 2026 is a Saturday: the last weekday is the 30th.
        (
            "cron(0 9 LW * ? *)",
            "2026-01-01T00:00:00Z",
            "2026-01-30T09:00:00Z",
        ),
        (
            "cron(0 0 1 1 ? 2027)",
            "2026-05-01T00:00:00Z",
            "2027-01-01T00:00:00Z",
        ),
        (
            "cron(0 12 ? JAN,JUL SUN 2026-2030/2)",
            "2027-01-01T00:00:00Z",
            "2028-01-02T12:00:00Z",
        ),
    ];
    for (expr, after, want) in cases {
        assert_eq!(
            next(expr, "UTC", after).as_deref(),
            Some(want),
            "{expr} after {after}"
        );
    }
    assert_eq!(
        next("cron(0 0 1 1 ? 2027)", "UTC", "2027-01-01T00:00:00Z"),
        None
    );
}

#[test]
fn daylight_saving_skips_a_missing_time_and_fires_a_doubled_one_once() {
    // New York: on 8 March 2026 the clocks jump from 02:00 to 03:00, so
    // 02:30 does not exist that day.
    assert_eq!(
        next(
            "cron(30 2 * * ? *)",
            "America/New_York",
            "2026-03-07T08:00:00Z"
        )
        .as_deref(),
        Some("2026-03-09T06:30:00Z")
    );
    // On 1 November 2026 they go back from 02:00 to 01:00: 01:30 fires at
    // its first pass (EDT), not again an hour later.
    assert_eq!(
        next(
            "cron(30 1 * * ? *)",
            "America/New_York",
            "2026-11-01T04:00:00Z"
        )
        .as_deref(),
        Some("2026-11-01T05:30:00Z")
    );
    assert_eq!(
        next(
            "cron(30 1 * * ? *)",
            "America/New_York",
            "2026-11-01T05:30:00Z"
        )
        .as_deref(),
        Some("2026-11-02T06:30:00Z")
    );
    // A one-time schedule in a zone.
    assert_eq!(
        next(
            "at(2026-07-01T09:00:00)",
            "Europe/Paris",
            "2026-01-01T00:00:00Z"
        )
        .as_deref(),
        Some("2026-07-01T07:00:00Z")
    );
}

#[test]
fn bad_expressions_name_the_field_and_the_rule() {
    let bad = [
        ("cron(0 10 * * * *)", "cannot both be given"),
        ("cron(0 10 ? * ? *)", "one of day-of-month and day-of-week"),
        ("cron(60 * * * ? *)", "(minutes)"),
        ("cron(0 10 * *)", "six fields"),
        ("cron(0 10 ? * 6#6 *)", "# is followed by 1 to 5"),
        ("cron(0 10 * * ? 2300)", "(year)"),
        ("cron(0 10-8 * * ? *)", "runs backwards"),
        ("rate(1 minutes)", "minute (for 1)"),
        ("rate(5 minute)", "minute (for 1)"),
        ("rate(0 minutes)", "positive whole number"),
        ("rate(5 weeks)", "unit"),
        ("at(2026-13-01T00:00:00)", "yyyy-mm-ddThh:mm:ss"),
        ("at(2026-01-01 00:00:00)", "yyyy-mm-ddThh:mm:ss"),
        ("every 5 minutes", "rate(...), cron(...) or at(...)"),
    ];
    for (expr, says) in bad {
        let e = Expression::parse("schedule_expression", expr).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{expr}");
        assert!(
            e.message.contains("schedule_expression") && e.message.contains(says),
            "{expr}: {}",
            e.message
        );
    }
    let e = time_zone("schedule_expression_timezone", "Mars/Olympus_Mons").unwrap_err();
    assert!(e.message.contains("IANA"), "{}", e.message);
}

fn target(queue: &str, input: &str) -> ScheduleTarget {
    ScheduleTarget::new(ScheduleTargetInput {
        arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{queue}"),
        input: input.into(),
        ..Default::default()
    })
    .unwrap()
}

fn schedule(name: &str, expr: &str, t: ScheduleTarget) -> NewSchedule {
    NewSchedule::new(
        "default".into(),
        name.into(),
        expr.into(),
        String::new(),
        (None, None),
        String::new(),
        true,
        (false, 0),
        t,
        false,
        Origin {
            account: ACCOUNT.into(),
            region: REGION.into(),
        },
    )
    .unwrap()
}

impl World {
    /// Proposes what the leader would at the current time: a firing for
    /// each due schedule, again while one fired (catch-up); how many fired.
    fn fire_due(&mut self) -> usize {
        let mut fired = 0;
        loop {
            let due = super::due(&self.state, self.now, 100).unwrap();
            let mut any = false;
            for (group, name, due_ms) in due {
                if self
                    .run(FireSchedule {
                        group,
                        name,
                        due_ms,
                    })
                    .unwrap()
                {
                    fired += 1;
                    any = true;
                }
            }
            if !any {
                return fired;
            }
        }
    }

    /// A queue `queue` and a `rate(1 minute)` schedule `tick` into it;
    /// the time it was created.
    fn ticking(&mut self, queue: &str, input: &str) -> u64 {
        self.queue(queue);
        self.run(schedule("tick", "rate(1 minute)", target(queue, input)))
            .unwrap();
        self.now
    }

    /// Tries every waiting delivery that is due; how many were tried.
    fn retry_due(&mut self) -> usize {
        let due = crate::events::retry::due(&self.state, self.now, 100).unwrap();
        let mut tried = 0;
        for (due_ms, seq) in due {
            if self
                .run(crate::events::RetryDelivery { due_ms, seq })
                .unwrap()
            {
                tried += 1;
            }
        }
        tried
    }

    fn taken(&mut self, queue: &str) -> Vec<String> {
        self.drain(queue)
            .iter()
            .map(|m| self.body(&m.body.body).to_string())
            .collect()
    }
}

#[test]
fn a_rate_schedule_fires_once_per_due_time_with_its_context() {
    let mut w = World::new();
    let start = w.ticking(
        "ticks",
        r#"{"at":"<aws.scheduler.scheduled-time>","arn":"<aws.scheduler.schedule-arn>"}"#,
    );
    assert_eq!(w.fire_due(), 0, "nothing is due before a minute passed");
    w.advance(60);
    assert_eq!(w.fire_due(), 1);
    // The same due time again, as a new leader might propose it: nothing.
    let again = FireSchedule {
        group: "default".into(),
        name: "tick".into(),
        due_ms: start + 60_000,
    };
    assert!(!w.run(again).unwrap());
    let bodies = w.taken("ticks");
    assert_eq!(bodies.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&bodies[0]).unwrap();
    assert_eq!(v["at"], crate::events::put::event_time(start + 60_000));
    assert_eq!(
        v["arn"],
        format!("arn:aws:scheduler:{REGION}:{ACCOUNT}:schedule/default/tick")
    );
    let s = w
        .ask(GetSchedule {
            group: "default".into(),
            name: "tick".into(),
        })
        .unwrap();
    assert_eq!((s.fired, s.next_due_ms), (1, Some(start + 120_000)));
}

#[test]
fn missed_due_times_fire_late_in_order_and_older_than_the_maximum_age_are_skipped() {
    let mut w = World::new();
    let start = w.ticking("ticks", "<aws.scheduler.scheduled-time>");
    // Five minutes without a leader: the five due times fire, in order.
    w.advance(5 * 60 + 10);
    assert_eq!(w.fire_due(), 5);
    let want: Vec<String> = (1..=5)
        .map(|k| crate::events::put::event_time(start + k * 60_000))
        .collect();
    assert_eq!(w.taken("ticks"), want);

    // A target that takes due times at most 60 s late: after ten minutes
    // away, the older ones are passed over and counted.
    w.queue("late");
    let mut t = target("late", "<aws.scheduler.scheduled-time>");
    t.max_event_age_s = 60;
    w.run(UpdateSchedule {
        settings: schedule("tick", "rate(1 minute)", t),
    })
    .unwrap();
    let updated = w.now;
    w.advance(10 * 60 + 30);
    let fired = w.fire_due();
    let got = w.taken("late");
    assert!(
        (1..=2).contains(&got.len()) && fired >= got.len(),
        "{fired} fired, {got:?}"
    );
    assert_eq!(
        got.last().unwrap(),
        &crate::events::put::event_time(updated + 10 * 60_000)
    );
    let skipped = w
        .effects
        .iter()
        .filter(|e| matches!(e, crate::apply::Effect::ScheduleFired { skipped: true, .. }))
        .count();
    assert!(skipped >= 1, "the skip is counted");
}

#[test]
fn a_flexible_window_puts_a_firing_off_within_it() {
    let mut w = World::new();
    w.queue("ticks");
    let mut s = schedule("flex", "rate(1 hour)", target("ticks", "x"));
    s.window_minutes = 15;
    w.run(s).unwrap();
    let got = w
        .ask(GetSchedule {
            group: "default".into(),
            name: "flex".into(),
        })
        .unwrap();
    let (due, at) = (got.next_due_ms.unwrap(), got.fire_at_ms().unwrap());
    assert!(at >= due && at < due + 15 * 60_000, "{due} {at}");
    // At the due time, before its firing time: not yet.
    w.now = due;
    if at > due {
        assert_eq!(w.fire_due(), 0);
        assert!(!w
            .run(FireSchedule {
                group: "default".into(),
                name: "flex".into(),
                due_ms: due,
            })
            .unwrap());
    }
    w.now = at;
    assert_eq!(w.fire_due(), 1);
    assert_eq!(w.taken("ticks"), vec!["x".to_string()]);
}

#[test]
fn a_one_time_schedule_fires_once_and_deletes_itself_after_completion() {
    let mut w = World::new();
    w.queue("once");
    // T0 is 2023-11-14T22:13:20Z.
    let mut s = schedule("once", "at(2023-11-15T00:00:00)", target("once", "go"));
    s.delete_after_completion = true;
    w.run(s).unwrap();
    w.now = ms("2023-11-15T00:00:00Z") - 1;
    assert_eq!(w.fire_due(), 0);
    w.advance(1);
    assert_eq!(w.fire_due(), 1);
    w.advance(86_400);
    assert_eq!(w.fire_due(), 0);
    assert_eq!(w.taken("once"), vec!["go".to_string()]);
    let gone = w
        .ask(GetSchedule {
            group: "default".into(),
            name: "once".into(),
        })
        .unwrap_err();
    assert_eq!(gone.kind, ErrorKind::NotFound);
}

#[test]
fn a_disabled_schedule_does_not_fire_and_counts_again_from_when_it_is_enabled() {
    let mut w = World::new();
    w.queue("ticks");
    let mut s = schedule("tick", "rate(1 minute)", target("ticks", "x"));
    s.enabled = false;
    w.run(s.clone()).unwrap();
    w.advance(600);
    assert_eq!(w.fire_due(), 0);
    s.enabled = true;
    w.run(UpdateSchedule { settings: s }).unwrap();
    w.advance(59);
    assert_eq!(w.fire_due(), 0, "the next due time counts from the update");
    w.advance(1);
    assert_eq!(w.fire_due(), 1);
    w.run(DeleteSchedule {
        group: "default".into(),
        name: "tick".into(),
    })
    .unwrap();
    w.advance(600);
    assert_eq!(w.fire_due(), 0);
}

#[test]
fn a_failed_delivery_is_tried_again_then_goes_to_the_dead_letter_queue() {
    let mut w = World::new();
    w.queue("dlq");
    let t = ScheduleTarget::new(ScheduleTargetInput {
        arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:later"),
        input: "payload".into(),
        dead_letter_arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:dlq"),
        max_attempts: Some(2),
        ..Default::default()
    })
    .unwrap();
    w.run(schedule("tick", "rate(1 hour)", t)).unwrap();
    w.advance(3600);
    assert_eq!(w.fire_due(), 1);
    // The target is missing: the delivery waits (2 s, then 4 s) and the
    // schedule moves on meanwhile.
    assert_eq!(crate::events::retry::count(&w.state).unwrap(), 1);
    assert_eq!(w.retry_due(), 0, "not due before 2 s");
    w.advance(2);
    assert_eq!(w.retry_due(), 1);
    assert!(w.drain("dlq").is_empty(), "one attempt is left");
    w.advance(4);
    assert_eq!(w.retry_due(), 1);
    let dead = w.drain("dlq");
    assert_eq!(
        dead.len(),
        1,
        "out of attempts: the dead-letter queue takes it"
    );
    assert_eq!(w.body(&dead[0].body.body), "payload");
    assert_eq!(crate::events::retry::count(&w.state).unwrap(), 0);

    // The next due time: the queue appears before the first retry, which
    // delivers.
    w.advance(3600);
    assert_eq!(w.fire_due(), 1);
    w.queue("later");
    w.advance(2);
    assert_eq!(w.retry_due(), 1);
    assert_eq!(w.taken("later"), vec!["payload".to_string()]);
    assert_eq!(crate::events::retry::count(&w.state).unwrap(), 0);
}

#[test]
fn a_bus_target_puts_an_event_its_rules_route() {
    let mut w = World::new();
    w.queue("seen");
    w.run(
        crate::events::NewRule::new("default", "all", r#"{"source":["my.scheduler"]}"#, "", "")
            .unwrap(),
    )
    .unwrap();
    let rule_target = crate::events::target::Target::new(
        "targets[0]",
        crate::events::target::TargetInput {
            id: "q".into(),
            arn: format!("arn:aws:sqs:{REGION}:{ACCOUNT}:seen"),
            ..Default::default()
        },
    )
    .unwrap();
    w.run(crate::events::PutTargets {
        bus: "default".into(),
        rule: "all".into(),
        targets: vec![rule_target],
    })
    .unwrap();
    let t = ScheduleTarget::new(ScheduleTargetInput {
        arn: format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
        input: r#"{"job":"nightly"}"#.into(),
        source: "my.scheduler".into(),
        detail_type: "Tick".into(),
        ..Default::default()
    })
    .unwrap();
    w.run(schedule("tick", "rate(1 minute)", t)).unwrap();
    w.advance(60);
    assert_eq!(w.fire_due(), 1);
    let got = w.taken("seen");
    assert_eq!(got.len(), 1);
    let v: serde_json::Value = serde_json::from_str(&got[0]).unwrap();
    assert_eq!(v["detail-type"], "Tick");
    assert_eq!(v["detail"]["job"], "nightly");
    // A bus target without a source is refused, naming the field.
    let e = ScheduleTarget::new(ScheduleTargetInput {
        arn: format!("arn:aws:events:{REGION}:{ACCOUNT}:event-bus/default"),
        ..Default::default()
    })
    .unwrap_err();
    assert!(
        e.message.contains("target.event_bridge_parameters"),
        "{}",
        e.message
    );
}
