//! Filter policies: the SNS subscription filter language, written once
//! (topic subscription filters in the broker, event source mapping filter
//! criteria in the workers).
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
//! it applies a publish, and the future event-bus rules and event source
//! mapping filter criteria can share the same code.

#[cfg(test)]
mod cases;
mod eval;
mod policy;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use eval::Message;
pub use policy::{Condition, Object, Rule};

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
