//! Errors of the domain layer.
//!
//! A [`DomainError`] is a deterministic rejection: bad input, a missing or
//! conflicting resource, a limit. It is part of the replicated result of a
//! command (every node computes the same one) and reaches the client through
//! the single mapping in `api::status`. An [`ApplyError::Store`] is a local
//! storage failure: it is never turned into a reply, because another replica
//! would not have failed the same way; the state machine stops instead.

use serde::{Deserialize, Serialize};

use crate::store::StoreError;

/// At most `max` bytes of `s`, cut at a character boundary and marked
/// with how long it was: errors quote what they were given, never all of
/// it (a client's gRPC library refuses a trailer of hundreds of KB).
pub fn cut(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

/// Field `name` of the batch entry `prefix` (`entries[2].message_body`), or
/// `name` alone when `prefix` is empty (a request that is not a batch).
pub fn field_in(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}.{name}")
    }
}

/// What kind of rejection, which decides the gRPC status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// `INVALID_ARGUMENT`: the request breaks a rule of the API.
    InvalidArgument,
    /// `NOT_FOUND`: the resource does not exist.
    NotFound,
    /// `ALREADY_EXISTS`: a resource with that name exists with other settings.
    AlreadyExists,
    /// `RESOURCE_EXHAUSTED`: a limit or a throughput cap was hit.
    LimitExceeded,
    /// `FAILED_PRECONDITION`: the resource is not in a state that allows this.
    FailedPrecondition,
    /// `PERMISSION_DENIED`: the caller may not do this to this resource
    /// (decided by the replicated state, e.g. a worker registered by
    /// another principal).
    PermissionDenied,
}

/// A deterministic rejection of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct DomainError {
    /// Decides the gRPC status code.
    pub kind: ErrorKind,
    /// Stable machine-readable code in the AWS style, e.g. `QueueDoesNotExist`.
    pub code: String,
    /// One line for a person: names the field and the rule where there is one.
    pub message: String,
    /// The request field at fault, for invalid input.
    pub field: Option<String>,
}

impl DomainError {
    /// Invalid input: `field` broke `rule`. The message reads "`field`: `rule`".
    pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> Self {
        let field = field.into();
        let rule = rule.into();
        DomainError {
            kind: ErrorKind::InvalidArgument,
            code: "InvalidParameterValue".into(),
            message: format!("{field}: {rule}"),
            field: Some(field),
        }
    }

    /// Invalid input with a specific AWS error code.
    pub fn invalid_with_code(
        code: &str,
        field: impl Into<String>,
        rule: impl Into<String>,
    ) -> Self {
        DomainError {
            code: code.into(),
            ..Self::invalid(field, rule)
        }
    }

    /// A rejection of `kind` about no one field.
    fn rejection(kind: ErrorKind, code: &str, message: impl Into<String>) -> Self {
        DomainError {
            kind,
            code: code.into(),
            message: message.into(),
            field: None,
        }
    }

    /// A missing resource.
    pub fn not_found(code: &str, message: impl Into<String>) -> Self {
        Self::rejection(ErrorKind::NotFound, code, message)
    }

    /// A resource that exists with other settings.
    pub fn already_exists(code: &str, message: impl Into<String>) -> Self {
        Self::rejection(ErrorKind::AlreadyExists, code, message)
    }

    /// A limit was hit.
    pub fn limit(code: &str, message: impl Into<String>) -> Self {
        Self::rejection(ErrorKind::LimitExceeded, code, message)
    }

    /// The caller may not do this (decided by the state, not by policy).
    pub fn denied(code: &str, message: impl Into<String>) -> Self {
        Self::rejection(ErrorKind::PermissionDenied, code, message)
    }

    /// The resource's state does not allow the request.
    pub fn precondition(code: &str, message: impl Into<String>) -> Self {
        Self::rejection(ErrorKind::FailedPrecondition, code, message)
    }
}

/// Why domain logic did not produce a result.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// The request was rejected; the rejection is the command's result.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// The local store failed; the node must not carry on applying.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of domain logic.
pub type ApplyResult<T> = Result<T, ApplyError>;
