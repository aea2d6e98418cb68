//! Checkers: each reads a history and says whether it fits the model, with
//! counts of what it found.

pub mod linear;
pub mod mapping;
pub mod queue;
pub mod schedule;
pub mod stream;
pub mod topic;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::history::Outcome;

/// A checker's judgement of a history.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The checker's name.
    pub checker: String,
    /// True when no anomaly was found.
    pub valid: bool,
    /// Counts by kind: operations ok / failed / unknown, and each kind of
    /// anomaly found (lost, duplicated, reordered, ...).
    pub counts: BTreeMap<String, u64>,
    /// A few of the anomalies, described for a person.
    pub anomalies: Vec<String>,
}

/// The most anomalies a verdict describes; the counts cover all of them.
pub const MAX_DESCRIBED: usize = 20;

/// Builds a [`Verdict`]: counts operations by outcome and anomalies by
/// kind (every kind present, 0 when none was found), describes the first
/// [`MAX_DESCRIBED`] anomalies, and judges the history valid when no
/// anomaly of any kind was found.
pub(crate) struct Tally {
    verdict: Verdict,
    kinds: Vec<&'static str>,
}

impl Tally {
    /// A tally for checker `checker`, which looks for anomalies of `kinds`.
    pub(crate) fn new(checker: &str, kinds: &[&'static str]) -> Tally {
        let mut counts = BTreeMap::new();
        for k in ["ok", "fail", "unknown"].iter().chain(kinds) {
            counts.insert(k.to_string(), 0);
        }
        Tally {
            verdict: Verdict {
                checker: checker.to_string(),
                valid: true,
                counts,
                anomalies: Vec::new(),
            },
            kinds: kinds.to_vec(),
        }
    }

    /// Counts one operation the checker looks at, by its outcome.
    pub(crate) fn outcome(&mut self, outcome: &Outcome) {
        let key = match outcome {
            Outcome::Ok { .. } => "ok",
            Outcome::Fail { .. } => "fail",
            Outcome::Unknown { .. } => "unknown",
        };
        *self.verdict.counts.entry(key.to_string()).or_default() += 1;
    }

    /// Records one anomaly of `kind` (one of the kinds given to
    /// [`Tally::new`]), described for a person.
    pub(crate) fn anomaly(&mut self, kind: &'static str, description: impl Into<String>) {
        debug_assert!(self.kinds.contains(&kind), "undeclared anomaly kind {kind}");
        *self.verdict.counts.entry(kind.to_string()).or_default() += 1;
        if self.verdict.anomalies.len() < MAX_DESCRIBED {
            self.verdict
                .anomalies
                .push(format!("{kind}: {}", description.into()));
        }
    }

    /// The verdict: valid when no anomaly was recorded.
    pub(crate) fn finish(mut self) -> Verdict {
        self.verdict.valid = self
            .kinds
            .iter()
            .all(|k| self.verdict.counts.get(*k).copied().unwrap_or(0) == 0);
        self.verdict
    }
}

/// Judging verdicts in the checkers' tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::Verdict;

    /// Only `kind` of the checker's `kinds` was found, `n` times.
    pub fn only(v: &Verdict, kinds: &[&str], kind: &str, n: u64) {
        assert!(!v.valid, "{v:?}");
        for k in kinds {
            let want = if *k == kind { n } else { 0 };
            assert_eq!(v.counts[*k], want, "{k} in {v:?}");
        }
        assert_eq!(v.anomalies.len() as u64, n, "{v:?}");
    }

    /// Checker `checker` passed the history, counting `ok`, `fail` and
    /// `unknown` operations and no anomaly of its `kinds`.
    pub fn passed(v: &Verdict, checker: &str, kinds: &[&str], ok: u64, fail: u64, unknown: u64) {
        assert!(v.valid, "{v:?}");
        assert_eq!(v.checker, checker);
        assert_eq!(v.counts["ok"], ok);
        assert_eq!(v.counts["fail"], fail);
        assert_eq!(v.counts["unknown"], unknown);
        for k in kinds {
            assert_eq!(v.counts[*k], 0, "{k}");
        }
    }
}
