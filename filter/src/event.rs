//! EventBridge event patterns: the filter grammar in its EventBridge
//! dialect, matched against a whole JSON event.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::policy::{self, Dialect, Object};
use super::{eval, PolicyError};

/// A validated, compiled event pattern.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventPattern {
    /// The top-level object.
    pub root: Object,
}

impl EventPattern {
    /// Validates and compiles the JSON text of an event pattern.
    pub fn parse(text: &str) -> Result<EventPattern, PolicyError> {
        policy::parse_event(text).map(|root| EventPattern { root })
    }

    /// True when `event` (a JSON object, such as an event's envelope) matches.
    pub fn matches(&self, event: &Value) -> bool {
        event.is_object() && eval::object_body(&self.root, Some(event), Dialect::Event)
    }

    /// [`EventPattern::matches`] for the JSON text of an event; text that is
    /// not a JSON object matches nothing.
    pub fn matches_text(&self, event: &str) -> bool {
        serde_json::from_str::<Value>(event).is_ok_and(|v| self.matches(&v))
    }
}
