//! Filter policies and event patterns: the SNS subscription filter language
//! and EventBridge's event-pattern language, written once (topic
//! subscription filters and event-bus rules in the broker, event source
//! mapping filter criteria in the workers).
//!
//! A policy is a JSON object. Each key names a message attribute (scope
//! `MessageAttributes`) or a property of the JSON body, nested objects
//! following nested properties (scope `MessageBody`); its value is a list of
//! conditions, any of which may match. Every key must match (AND), and a
//! `"$or": [ {...}, {...} ]` key matches when any of its branches does.
//! Conditions are exact strings and numbers, `null` (body only),
//! `{"prefix": ..}`, `{"suffix": ..}`, `{"equals-ignore-case": ..}`,
//! `{"anything-but": ..}` (values, or a prefix or suffix),
//! `{"numeric": [op, n, ...]}`, `{"exists": bool}` and `{"cidr": ..}`.
//!
//! [`FilterPolicy::parse`] validates a policy against the AWS limits (five
//! keys, 150 combinations, 256 KiB, numbers within ±10⁹ to five decimal
//! places) and compiles it; [`FilterPolicy::matches`] evaluates it against a
//! [`Message`]. Both are pure, so the state machine evaluates policies while
//! it applies a publish.
//!
//! [`EventPattern`] reads the same grammar as EventBridge does for a rule's
//! event pattern, matched against a whole JSON event: no key or combination
//! limits but 2 048 characters, numbers to ±5·10⁹ at six decimal places,
//! `wildcard` (also inside `anything-but`), `prefix` and `suffix` with
//! `equals-ignore-case`, and any leaf (`null` and `""` included) counting
//! as present for `exists`.

#[cfg(test)]
mod case_table;
#[cfg(test)]
mod cases;
mod eval;
mod event;
#[cfg(test)]
mod event_cases;
mod policy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use eval::Message;
pub use event::EventPattern;
pub use policy::{Condition, Object, Rule, Wildcard};

/// Largest policy, in bytes of JSON.
pub const POLICY_BYTES_MAX: usize = 256 * 1024;
/// Most keys (leaf properties) in a policy.
pub const KEYS_MAX: usize = 5;
/// Most combinations of values in a policy.
pub const COMBINATIONS_MAX: usize = 150;
/// Largest magnitude of a number in a policy.
pub const NUMBER_MAX: f64 = 1_000_000_000.0;
/// Numbers are compared to this many decimal places.
pub const DECIMALS: u32 = 5;
/// Largest event pattern, in characters (EventBridge's quota).
pub const EVENT_PATTERN_CHARS_MAX: usize = 2048;
/// Largest magnitude of a number in an event pattern.
pub const EVENT_NUMBER_MAX: f64 = 5_000_000_000.0;
/// Event patterns compare numbers to this many decimal places.
pub const EVENT_DECIMALS: u32 = 6;

/// What a policy is evaluated against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Scope {
    /// The message attributes (the default).
    #[default]
    MessageAttributes,
    /// The message body, parsed as JSON.
    MessageBody,
}

impl Scope {
    /// Reads the `FilterPolicyScope` attribute value.
    pub fn parse(s: &str) -> Option<Scope> {
        match s {
            "MessageAttributes" => Some(Scope::MessageAttributes),
            "MessageBody" => Some(Scope::MessageBody),
            _ => None,
        }
    }

    /// The attribute value.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::MessageAttributes => "MessageAttributes",
            Scope::MessageBody => "MessageBody",
        }
    }
}

/// A validated, compiled filter policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterPolicy {
    /// The scope it was validated for.
    pub scope: Scope,
    /// The top-level object.
    pub root: Object,
}

/// Why a policy is invalid: one line naming the rule it broke.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError(pub String);

impl std::fmt::Display for PolicyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl FilterPolicy {
    /// Validates and compiles the JSON text of a policy for `scope`.
    pub fn parse(text: &str, scope: Scope) -> Result<FilterPolicy, PolicyError> {
        policy::parse(text, scope)
    }

    /// True when `message` passes the policy.
    pub fn matches(&self, message: &Message<'_>) -> bool {
        eval::matches(self, message)
    }
}

/// A message attribute as the filter sees it: its data type and its string
/// value (binary attributes take no part in filtering).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributeRef<'a> {
    /// `String`, `Number`, `String.Array`, `Binary`, possibly with a custom
    /// suffix after a dot (`Number.float`).
    pub data_type: &'a str,
    /// The value, for non-binary types.
    pub value: Option<&'a str>,
}

/// Attributes by name.
pub type Attributes<'a> = BTreeMap<&'a str, AttributeRef<'a>>;
