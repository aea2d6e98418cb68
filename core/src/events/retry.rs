//! Deliveries that failed and wait to be tried again: a rule target's or a
//! schedule's retry policy (`RetryPolicy`: at most so many attempts, no
//! older than so many seconds).
//!
//! A delivery to a queue, topic, stream or function is part of the command
//! that takes the event (or fires the schedule). When it fails and its
//! target has attempts left, the rendered input is kept here, with where
//! it goes, and the leader's housekeeper proposes [`RetryDelivery`] once it
//! is due. Each try is a command of its own: it delivers, or waits again
//! (2 s after the first failure, doubling to at most 5 minutes), or, out of
//! attempts or past the maximum age, goes to the dead-letter queue (or is
//! dropped), as EventBridge does. A bus target is not retried: handing an
//! event to another bus fails only when that bus is missing or the hops run
//! out.
//!
//! Store layout:
//!
//! | key | value |
//! | --- | --- |
//! | `eretry/{due ms}/{seq}` | [`StoredRetry`] |
//! | `seq/retry` | next retry number |
//! | `retry-count` | how many wait |
//!
//! [`RetryDelivery`]: super::RetryDelivery

use serde::{Deserialize, Serialize};

use super::deliver::{attempt, dead_letter, hand_over, send_one, Handover, Origin};
use super::target::Destination;
pub use super::target::RetryPolicy;
use crate::apply::{Ctx, Effect, Effects};
use crate::error::ApplyResult;
use crate::store::keys::{read_u64, Key};
use crate::store::{StateRead, Txn};

pub use crate::limits::events::RETRIES_MAX;

/// First wait after a failure, ms; it doubles with each attempt.
const BACKOFF_FIRST_MS: u64 = 2_000;
/// Longest wait between attempts, ms.
const BACKOFF_MAX_MS: u64 = 300_000;

/// Whose delivery it is, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Label {
    /// A rule's target.
    Rule {
        /// Bus name.
        bus: String,
        /// Rule name.
        rule: String,
        /// Target id.
        target: String,
    },
    /// A schedule's target (`group/name`).
    Schedule(String),
}

/// A delivery waiting to be tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Retry {
    /// Whose it is.
    pub label: Label,
    /// Where it goes (never a bus).
    pub destination: Destination,
    /// The target's ARN (a dead letter's `TARGET_ARN`).
    pub target_arn: String,
    /// The rule's or schedule's ARN (a dead letter's `RULE_ARN`).
    pub source_arn: String,
    /// Where it goes when it runs out of attempts.
    pub dead_letter_queue: Option<String>,
    /// The input, rendered.
    pub body: String,
    /// The event's or execution's id (a FIFO target's deduplication id).
    pub id: String,
    /// A stream target's partition key.
    pub key: String,
    /// A function target's request id.
    pub request: String,
    /// The account and region of its ARNs.
    pub origin: Origin,
    /// The target's policy.
    pub policy: RetryPolicy,
    /// Failed attempts so far (at least 1).
    pub attempts: u32,
    /// State-machine time of the first attempt.
    pub first_ms: u64,
}

/// Versioned envelope of [`Retry`] in the store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredRetry {
    /// Version 1.
    V1(Retry),
}

/// Length of `eretry/`.
const PREFIX_LEN: usize = 7;

fn key(due_ms: u64, seq: u64) -> Vec<u8> {
    Key::new("eretry").u64(due_ms).u64(seq).build()
}

fn count_key() -> Vec<u8> {
    Key::new("retry-count").build()
}

/// How many deliveries wait.
pub fn count(state: &dyn StateRead) -> ApplyResult<u64> {
    Ok(crate::store::record_at(state, &count_key())?.unwrap_or(0))
}

/// Every waiting delivery with its due time and number, earliest first.
pub fn all(state: &dyn StateRead) -> ApplyResult<Vec<(u64, u64, Retry)>> {
    let mut out = Vec::new();
    for kv in state.scan_prefix(&Key::new("eretry").build()) {
        let (k, v) = kv?;
        let StoredRetry::V1(r) = crate::store::codec::decode(&k, &v)?;
        let due = read_u64(&k, PREFIX_LEN).unwrap_or(u64::MAX);
        let seq = read_u64(&k, PREFIX_LEN + 8).unwrap_or(u64::MAX);
        out.push((due, seq, r));
    }
    Ok(out)
}

/// The waiting deliveries due at `now_ms`, earliest first, at most
/// `limit`: `(due time, number)`.
pub fn due(state: &dyn StateRead, now_ms: u64, limit: usize) -> ApplyResult<Vec<(u64, u64)>> {
    let mut out = Vec::new();
    for kv in state.scan_prefix(&Key::new("eretry").build()) {
        let (k, _) = kv?;
        let due = read_u64(&k, PREFIX_LEN).unwrap_or(u64::MAX);
        if due > now_ms || out.len() >= limit {
            break;
        }
        out.push((due, read_u64(&k, PREFIX_LEN + 8).unwrap_or(u64::MAX)));
    }
    Ok(out)
}

/// When the next attempt after `attempts` failed ones is due.
fn next_due(now_ms: u64, attempts: u32) -> u64 {
    let wait = BACKOFF_FIRST_MS.saturating_mul(1 << (attempts.saturating_sub(1)).min(16));
    now_ms + wait.min(BACKOFF_MAX_MS)
}

/// Whether a delivery that failed `attempts` times, first at `first_ms`,
/// may be tried again at `now_ms`.
fn may_retry(r: &Retry, now_ms: u64) -> bool {
    r.attempts <= r.policy.max_attempts
        && now_ms.saturating_sub(r.first_ms) < u64::from(r.policy.max_age_s) * 1000
}

/// Keeps a delivery that failed once to be tried again; false (nothing
/// kept) when its policy allows no retry or [`RETRIES_MAX`] wait already:
/// the caller then treats the failure as final.
pub fn park(txn: &mut Txn<'_>, ctx: &Ctx, r: Retry) -> ApplyResult<bool> {
    debug_assert!(!matches!(r.destination, Destination::Bus { .. }));
    let n = count(txn)?;
    if !may_retry(&r, ctx.now_ms) || n >= RETRIES_MAX as u64 {
        return Ok(false);
    }
    let seq = txn.next_id(Key::new("seq").str("retry").build())?;
    txn.put_record(
        key(next_due(ctx.now_ms, r.attempts), seq),
        &StoredRetry::V1(r),
    );
    txn.put_record(count_key(), &(n + 1));
    Ok(true)
}

/// The effect that counts an attempt of `label`'s delivery.
pub(crate) fn attempted(label: &Label, delivered: bool) -> Effect {
    match label {
        Label::Rule { bus, rule, target } => Effect::EventRouted {
            bus: bus.clone(),
            rule: rule.clone(),
            target: Some(target.clone()),
            delivered,
        },
        Label::Schedule(schedule) => Effect::ScheduleFired {
            schedule: schedule.clone(),
            delivered,
            skipped: false,
        },
    }
}

/// Applies `RetryDelivery`: tries the delivery waiting as number `seq`
/// due at `due_ms` again, if it is there and due. It is delivered, or
/// waits again, or goes to its dead-letter queue; true when it was tried.
pub fn retry(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    due_ms: u64,
    seq: u64,
    effects: &mut Effects,
) -> ApplyResult<bool> {
    if due_ms > ctx.now_ms {
        return Ok(false);
    }
    let k = key(due_ms, seq);
    let Some(StoredRetry::V1(mut r)) = crate::store::record_at(txn, &k)? else {
        return Ok(false);
    };
    txn.delete(k);
    let mut n = count(txn)?;
    crate::invariant::decrement(&mut n, "retry-count");
    txn.put_record(count_key(), &n);
    let to = Handover {
        id: &r.id,
        key: &r.key,
        request: &r.request,
    };
    let outcome = attempt(txn, effects, |txn, effects| {
        hand_over(txn, ctx, &r.origin, &r.destination, &r.body, &to, effects)
    })?;
    effects.push(attempted(&r.label, outcome.is_ok()));
    let Err(why) = outcome else {
        return Ok(true);
    };
    r.attempts += 1;
    if park(txn, ctx, r.clone())? {
        return Ok(true);
    }
    // Out of attempts or too old: the dead-letter queue takes it.
    if let Some(dlq) = &r.dead_letter_queue {
        if let Ok(m) = dead_letter(&r.body, &r.source_arn, &r.target_arn, &why) {
            let _ = attempt(txn, effects, |txn, effects| {
                send_one(txn, ctx, dlq, m, effects)
            })?;
        }
    }
    Ok(true)
}
