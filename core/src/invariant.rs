//! The state machine's checks of its own consistency.
//!
//! Each domain states what must hold between its records, counters and
//! indexes ([`crate::queues::invariants`], [`crate::streams::invariants`],
//! ...); [`crate::machine::check`] runs them all: the scenario tests after
//! every command, the seeded simulation after every step. In debug builds
//! [`crate::machine::apply_entry`] also checks what each log entry touched
//! ([`crate::machine::check_touched`]), so every node of a debug cluster
//! checks itself as it applies. A violation is a bug
//! in the apply code, never bad input: the state machine must not produce it
//! from any sequence of commands.

use crate::store::keys::read_u64;
use crate::store::{StateRead, StoreError};

/// A broken invariant: which domain, and what does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{domain}: {what}")]
pub struct Violation {
    /// The domain whose rule does not hold.
    pub domain: &'static str,
    /// What does not hold, with the resource and the values found.
    pub what: String,
}

/// What a check returns: a violation, or a store failure while reading.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// An invariant does not hold.
    #[error("invariant broken: {0}")]
    Violation(#[from] Violation),
    /// The state could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl From<crate::error::ApplyError> for CheckError {
    fn from(e: crate::error::ApplyError) -> Self {
        match e {
            crate::error::ApplyError::Store(s) => CheckError::Store(s),
            crate::error::ApplyError::Rejected(d) => CheckError::Violation(Violation {
                domain: "state",
                what: format!("a record did not read back: {d}"),
            }),
        }
    }
}

/// Fails with a [`Violation`] of `domain` unless `cond` holds.
pub fn ensure(
    cond: bool,
    domain: &'static str,
    what: impl FnOnce() -> String,
) -> Result<(), Violation> {
    if cond {
        Ok(())
    } else {
        Err(Violation {
            domain,
            what: what(),
        })
    }
}

/// The number that follows `prefix` in each key under it, in key order
/// (`u64::MAX` for a key too short to hold one, so that a check reports
/// it): how the checks walk sequence-numbered records.
pub fn numbers_under<'a>(
    state: &'a dyn StateRead,
    prefix: &'a [u8],
) -> impl Iterator<Item = Result<u64, StoreError>> + 'a {
    state
        .scan_prefix(prefix)
        .map(move |kv| Ok(read_u64(&kv?.0, prefix.len()).unwrap_or(u64::MAX)))
}

/// Takes one from a counter. A counter that would go below zero is an
/// accounting bug: debug builds stop on it; release builds keep the counter
/// at zero, as it cannot be repaired here, and the checks report the drift.
pub fn decrement(counter: &mut u64, what: &str) {
    debug_assert!(*counter > 0, "counter {what} would go below zero");
    *counter = counter.saturating_sub(1);
}
