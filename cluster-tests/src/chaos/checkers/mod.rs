//! Checkers: each reads a history and says whether it fits the model, with
//! counts of what it found.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
