//! The logs of the invocations a worker ran, kept in memory and bounded.
//!
//! Each invocation's log (what the function wrote, between the `START` and
//! `REPORT` lines) is kept here so that `sluicectl function logs` can ask
//! every worker for it. The oldest entries go first once either bound is
//! reached; a worker that stops takes its logs with it.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Most invocations kept.
pub const ENTRIES_MAX: usize = 5_000;
/// Most bytes of log lines kept.
pub const BYTES_MAX: usize = 32 << 20;

/// One invocation's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The invocation's request id.
    pub request_id: String,
    /// Function name.
    pub function: String,
    /// `$LATEST` or a version number.
    pub version: String,
    /// Start, ms since the epoch.
    pub started_ms: u64,
    /// How long it ran, µs.
    pub duration_us: u64,
    /// Whether the function failed.
    pub function_error: bool,
    /// Whether an environment was started for it.
    pub cold_start: bool,
    /// The lines.
    pub lines: Vec<String>,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.lines.iter().map(String::len).sum::<usize>() + 128
    }
}

/// The kept logs, oldest first.
#[derive(Default)]
pub struct Logs {
    inner: Mutex<(VecDeque<Entry>, usize)>,
}

impl Logs {
    /// Keeps `entry`, dropping the oldest past the bounds.
    pub fn push(&self, entry: Entry) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let (entries, bytes) = &mut *inner;
        *bytes += entry.bytes();
        entries.push_back(entry);
        while entries.len() > ENTRIES_MAX || (*bytes > BYTES_MAX && entries.len() > 1) {
            if let Some(old) = entries.pop_front() {
                *bytes -= old.bytes();
            }
        }
    }

    /// The most recent entries of `function` (only `request_id`'s when it
    /// is not empty), newest first, at most `limit`.
    pub fn find(&self, function: &str, request_id: &str, limit: usize) -> Vec<Entry> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .0
            .iter()
            .rev()
            .filter(|e| e.function == function)
            .filter(|e| request_id.is_empty() || e.request_id == request_id)
            .take(limit)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: &str, id: usize, line_bytes: usize) -> Entry {
        Entry {
            request_id: format!("r{id}"),
            function: function.into(),
            version: "$LATEST".into(),
            started_ms: id as u64,
            duration_us: 1,
            function_error: false,
            cold_start: false,
            lines: vec!["x".repeat(line_bytes)],
        }
    }

    #[test]
    fn finds_newest_first_by_function_and_request() {
        let logs = Logs::default();
        for i in 0..10 {
            logs.push(entry(if i % 2 == 0 { "a" } else { "b" }, i, 10));
        }
        let a: Vec<String> = logs
            .find("a", "", 3)
            .into_iter()
            .map(|e| e.request_id)
            .collect();
        assert_eq!(a, ["r8", "r6", "r4"]);
        let one = logs.find("b", "r3", 10);
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].request_id, "r3");
        assert!(logs.find("a", "r3", 10).is_empty());
    }

    #[test]
    fn drops_the_oldest_past_the_bounds() {
        let logs = Logs::default();
        for i in 0..ENTRIES_MAX + 5 {
            logs.push(entry("f", i, 1));
        }
        let all = logs.find("f", "", usize::MAX);
        assert_eq!(all.len(), ENTRIES_MAX);
        assert_eq!(all.last().unwrap().request_id, "r5");
        // Large entries: the byte bound holds.
        let logs = Logs::default();
        for i in 0..40 {
            logs.push(entry("f", i, 1 << 20));
        }
        let kept = logs.find("f", "", usize::MAX);
        assert!(kept.len() < 40 && kept.len() >= 30, "{}", kept.len());
        assert_eq!(kept[0].request_id, "r39");
    }
}
