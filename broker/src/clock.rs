//! The node's wall clock. Read at the edges only: the leader stamps each
//! batch of commands with it, and the state machine uses that stamp, never
//! a clock of its own.

use std::time::{SystemTime, UNIX_EPOCH};

/// The wall clock in ms since the Unix epoch.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
