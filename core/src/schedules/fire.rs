//! Firing a schedule's due time: the replicated command the leader
//! proposes when it finds one due.

use super::{load, remove, save, Schedule, ScheduleTarget};
use crate::apply::{Ctx, Effect, Effects};
use crate::error::ApplyResult;
use crate::events::deliver::{attempt, dead_letter, hand_over, send_one, Handover};
use crate::events::put::{self, NewEvent};
use crate::events::retry::{park, Label, Retry, RetryPolicy};
use crate::events::target::Destination;
use crate::store::Txn;

/// The id of a schedule's invocation for one due time, derived so every
/// replica computes the same one (a FIFO queue target's deduplication id).
pub fn execution_id(schedule_id: u64, due_ms: u64) -> String {
    crate::queues::message::derived_uuid(b"sluice/schedule-execution", schedule_id, due_ms)
}

/// A target's input with Scheduler's context attributes filled in.
pub fn fill(input: &str, arn: &str, due_ms: u64, execution: &str) -> String {
    let text = if input.is_empty() { "{}" } else { input };
    text.replace("<aws.scheduler.schedule-arn>", arn)
        .replace(
            "<aws.scheduler.scheduled-time>",
            &crate::events::put::event_time(due_ms),
        )
        .replace("<aws.scheduler.execution-id>", execution)
        .replace("<aws.scheduler.attempt-number>", "1")
}

/// Applies `FireSchedule`: if `due_ms` is still the schedule's next due
/// time and its firing time has come, its target takes the input (or, when
/// the due time is older than the target's maximum event age, it is
/// skipped), and the next due time is counted from this one, past those
/// older than that age. Anything else (the schedule went, was changed, or
/// this due time fired already) changes nothing: true only when it fired.
pub fn fire(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    group: &str,
    name: &str,
    due_ms: u64,
    effects: &mut Effects,
) -> ApplyResult<bool> {
    let Some(before) = load(txn, group, name)? else {
        return Ok(false);
    };
    let Some(fire_at) = before.fire_at_ms() else {
        return Ok(false);
    };
    if before.next_due_ms != Some(due_ms) || fire_at > ctx.now_ms {
        return Ok(false);
    }
    let label = format!("{group}/{name}");
    let max_age_ms = u64::from(before.settings.target.max_event_age_s) * 1000;
    let too_old = ctx.now_ms - fire_at > max_age_ms;
    if too_old {
        effects.push(Effect::ScheduleFired {
            schedule: label,
            delivered: false,
            skipped: true,
        });
    } else {
        let delivered = deliver(txn, ctx, &before, due_ms, effects)?;
        effects.push(Effect::ScheduleFired {
            schedule: label,
            delivered,
            skipped: false,
        });
    }
    let mut after = before.clone();
    after.fired += 1;
    after.last_due_ms = Some(due_ms);
    after.next_due_ms = after.due_after(due_ms);
    // Past due times older than the maximum age are passed over at once.
    let oldest = ctx.now_ms.saturating_sub(max_age_ms);
    if after.next_due_ms.is_some_and(|n| n < oldest) {
        after.next_due_ms = after.due_after(oldest - 1);
        effects.push(Effect::ScheduleFired {
            schedule: format!("{group}/{name}"),
            delivered: false,
            skipped: true,
        });
    }
    if after.next_due_ms.is_none() && after.settings.delete_after_completion {
        remove(txn, &before)?;
    } else {
        save(txn, Some(&before), &after);
    }
    Ok(true)
}

/// Hands the input for `due_ms` to the target, in a transaction of its
/// own; a failure goes to the dead-letter queue, if there is one. Whether
/// the target took it.
fn deliver(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    s: &Schedule,
    due_ms: u64,
    effects: &mut Effects,
) -> ApplyResult<bool> {
    let arn = s.settings.arn();
    let execution = execution_id(s.id, due_ms);
    let t: &ScheduleTarget = &s.settings.target;
    let body = fill(&t.input, &arn, due_ms, &execution);
    let origin = &s.settings.origin;
    let outcome = attempt(txn, effects, |txn, effects| match &t.destination {
        Destination::Bus { name } => {
            let event = match NewEvent::new(
                "target",
                t.source.clone(),
                t.detail_type.clone(),
                body.clone(),
                vec![arn.clone()],
                Some(due_ms),
            ) {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            if crate::events::load_bus(txn, name)?.is_none() {
                return Ok(Err(crate::events::bus_not_found(name)));
            }
            let mut r = put::put_events(txn, ctx, name, origin, &[event], effects)?;
            Ok(r.pop().expect("one result an event").map(|_| ()))
        }
        other => {
            let key = if t.partition_key.is_empty() {
                &execution
            } else {
                &t.partition_key
            };
            let to = Handover {
                id: &execution,
                key,
                request: &execution,
            };
            hand_over(txn, ctx, origin, other, &body, &to, effects)
        }
    })?;
    let Err(why) = outcome else {
        return Ok(true);
    };
    // With attempts left, it waits to be tried again.
    if !matches!(t.destination, Destination::Bus { .. }) {
        let retry = Retry {
            label: Label::Schedule(format!("{}/{}", s.settings.group, s.settings.name)),
            destination: t.destination.clone(),
            target_arn: t.arn.clone(),
            source_arn: arn.clone(),
            dead_letter_queue: t.dead_letter_queue.clone(),
            body: body.clone(),
            id: execution.clone(),
            key: if t.partition_key.is_empty() {
                execution.clone()
            } else {
                t.partition_key.clone()
            },
            request: execution.clone(),
            origin: origin.clone(),
            policy: RetryPolicy {
                max_attempts: t.max_attempts,
                max_age_s: t.max_event_age_s,
            },
            attempts: 1,
            first_ms: ctx.now_ms,
        };
        if park(txn, ctx, retry)? {
            return Ok(false);
        }
    }
    // A dead-letter queue that refuses too leaves the failure counted only.
    if let Some(dlq) = &t.dead_letter_queue {
        if let Ok(m) = dead_letter(&body, &arn, &t.arn, &why) {
            let _ = attempt(txn, effects, |txn, effects| {
                send_one(txn, ctx, dlq, m, effects)
            })?;
        }
    }
    Ok(false)
}
