//! The schedule workload: a `rate(1 minute)` schedule, a `cron` schedule
//! firing every minute, and one-time `at(...)` schedules every few seconds
//! of the run, all into one queue that consumers receive from and delete
//! while the nemesis works. Once the faults are healed, the workload waits
//! until every schedule's due times up to the run's end have fired (the
//! catch-up rule fires the missed ones late), then drains the queue; the
//! checker then wants each due time exactly once.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Error};
use tokio::time::Instant;

use super::queue::{drain_queues, start_consumers};
use super::Ctx;
use crate::chaos::checkers::schedule::Due;

/// The queue every schedule fires into.
pub const QUEUE: &str = "chaos-fired";
/// Consumers.
const CONSUMERS: usize = 2;
/// Seconds between the one-time schedules.
const AT_EVERY_S: u64 = 3;
/// How long after setup the first one-time schedule fires.
const AT_LEAD_S: u64 = 5;

/// The schedules a run made, and where they fire.
pub struct ScheduleWorkload {
    queue: String,
    /// Each schedule's due times.
    pub schedules: BTreeMap<String, Due>,
}

/// The test host's wall clock now, ms (the run's end as the checker
/// counts it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_millis() as u64
}

/// `at(...)`'s text of `ms` (UTC, to the second).
pub fn at_text(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = sluice_security::civil::civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn request(name: &str, expression: String, queue_arn: &str) -> pb::ScheduleSettings {
    pb::ScheduleSettings {
        name: name.into(),
        schedule_expression: expression,
        flexible_time_window: Some(pb::FlexibleTimeWindow {
            mode: "OFF".into(),
            maximum_window_in_minutes: 0,
        }),
        target: Some(pb::ScheduleTarget {
            arn: queue_arn.into(),
            role_arn: "arn:aws:iam::000000000000:role/chaos".into(),
            input: format!(r#"{{"s":"{name}","due":"<aws.scheduler.scheduled-time>"}}"#),
            ..Default::default()
        }),
        ..Default::default()
    }
}

impl ScheduleWorkload {
    /// Creates the queue and the schedules: one-time ones every
    /// [`AT_EVERY_S`] seconds over `run_for`.
    pub async fn setup(admin: &Client, run_for: Duration) -> Result<ScheduleWorkload, String> {
        let e = |e: Error| e.to_string();
        let queue = admin.create_queue(QUEUE, HashMap::new()).await.map_err(e)?;
        let arn = admin
            .get_queue_attributes(QUEUE, &["QueueArn"])
            .await
            .map_err(e)?
            .remove("QueueArn")
            .ok_or("the queue has no ARN")?;
        let mut schedules = BTreeMap::new();
        for (name, expression) in [
            ("every-minute", "rate(1 minute)"),
            ("cron-minute", "cron(* * * * ? *)"),
        ] {
            admin
                .create_schedule(request(name, expression.into(), &arn))
                .await
                .map_err(e)?;
            let made = admin
                .get_schedule(pb::GetScheduleRequest {
                    name: name.into(),
                    ..Default::default()
                })
                .await
                .map_err(e)?;
            let from_ms = match name {
                // A rate counts from its creation, to the second; the cron
                // expression fires at every whole minute after it.
                "every-minute" => made.creation_date_ms / 1000 * 1000,
                _ => made.creation_date_ms / 60_000 * 60_000,
            };
            schedules.insert(
                name.to_string(),
                Due::Every {
                    from_ms,
                    period_ms: 60_000,
                },
            );
        }
        let first = (now_ms() / 1000 + AT_LEAD_S) * 1000;
        for k in 0..run_for.as_secs() / AT_EVERY_S {
            let at_ms = first + k * AT_EVERY_S * 1000;
            let name = format!("at-{k}");
            let mut r = request(&name, format!("at({})", at_text(at_ms)), &arn);
            r.action_after_completion = "DELETE".into();
            admin.create_schedule(r).await.map_err(e)?;
            schedules.insert(name, Due::Once { at_ms });
        }
        Ok(ScheduleWorkload { queue, schedules })
    }

    /// Consumers receive and delete the firings until `until`.
    pub async fn run(&self, ctx: &Ctx, until: Instant) {
        for c in start_consumers(
            ctx,
            CONSUMERS,
            std::slice::from_ref(&self.queue),
            until,
            false,
        ) {
            let _ = c.await;
        }
    }

    /// Waits (within `limit`) until every due time up to `end_ms` has
    /// fired, then drains the queue.
    pub async fn drain(
        &self,
        ctx: &Ctx,
        admin: &Client,
        end_ms: u64,
        limit: Duration,
    ) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        for (name, due) in &self.schedules {
            loop {
                let got = admin
                    .get_schedule(pb::GetScheduleRequest {
                        name: name.clone(),
                        ..Default::default()
                    })
                    .await;
                let done = match (&got, due) {
                    // A one-time schedule deletes itself once it fired.
                    (Err(e), Due::Once { .. }) if e.status() == Some(tonic::Code::NotFound) => true,
                    (Ok(s), Due::Once { at_ms }) => *at_ms > end_ms && s.fired == 0,
                    (Ok(s), Due::Every { .. }) => s.next_due_ms > end_ms,
                    _ => false,
                };
                if done {
                    break;
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "schedule {name} has due times up to the run's end left after {limit:?}: {got:?}"
                    ));
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
        let left = deadline.saturating_duration_since(Instant::now());
        drain_queues(ctx, admin, std::slice::from_ref(&self.queue), left).await
    }
}
