//! The one place errors become gRPC statuses.
//!
//! Each status carries a `google.rpc.ErrorInfo` (reason = the stable code,
//! domain `sluice`, the field at fault in its metadata), a `BadRequest` for
//! invalid input, a `RetryInfo` for UNAVAILABLE, and the code again in the
//! `sluice-error-code` metadata entry.

use std::collections::HashMap;
use std::time::Duration;

use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::error::{DomainError, ErrorKind};
use crate::router::{RouteError, ERROR_CODE_HEADER};

/// Error domain in `ErrorInfo`.
const DOMAIN: &str = "sluice";
/// Longest error message sent, bytes: messages quote input, and the
/// message travels in a trailer (twice, with its details).
pub const MESSAGE_MAX: usize = 1024;

fn build(
    code: Code,
    reason: &str,
    message: String,
    field: Option<&str>,
    retry_after: Option<Duration>,
) -> Status {
    let message = crate::error::cut(&message, MESSAGE_MAX);
    let field = field.map(|f| crate::error::cut(f, 256));
    let field = field.as_deref();
    let mut details = ErrorDetails::new();
    let mut info = HashMap::new();
    if let Some(f) = field {
        info.insert("field".to_string(), f.to_string());
        details.add_bad_request_violation(f, message.clone());
    }
    details.set_error_info(reason, DOMAIN, info);
    if let Some(delay) = retry_after {
        details.set_retry_info(Some(delay));
    }
    let mut metadata = MetadataMap::new();
    if let Ok(v) = MetadataValue::try_from(reason) {
        metadata.insert(ERROR_CODE_HEADER, v);
    }
    if let Some(delay) = retry_after {
        metadata.insert(
            "retry-after-ms",
            MetadataValue::from(delay.as_millis() as u64),
        );
    }
    Status::with_error_details_and_metadata(code, message, details, metadata)
}

/// A bug or a mismatch between nodes: the reply was not what the call needs.
pub fn internal(message: impl Into<String>) -> Status {
    build(Code::Internal, "InternalError", message.into(), None, None)
}

/// An operation that did not finish within its bound.
pub fn timeout(message: impl Into<String>) -> Status {
    build(
        Code::DeadlineExceeded,
        "Timeout",
        message.into(),
        None,
        None,
    )
}

/// A caller that could not be authenticated (`code` is the AWS error code,
/// e.g. `SignatureDoesNotMatch`).
pub fn unauthenticated(code: &str, message: impl Into<String>) -> Status {
    build(Code::Unauthenticated, code, message.into(), None, None)
}

/// A caller that may not do what it asked.
pub fn permission_denied(code: &str, message: impl Into<String>) -> Status {
    build(Code::PermissionDenied, code, message.into(), None, None)
}

/// A request message larger than its RPC takes.
pub fn too_large(len: usize, max: usize) -> Status {
    build(
        Code::ResourceExhausted,
        "RequestTooLarge",
        format!("the request message is {len} bytes; this operation takes at most {max}"),
        None,
        None,
    )
}

/// A request message that does not decode, or would hold more than a
/// request may (see [`super::bounds`]).
pub fn invalid_request(field: &str, rule: impl Into<String>) -> Status {
    build(
        Code::InvalidArgument,
        "MalformedRequest",
        format!("{field}: {}", rule.into()),
        Some(field),
        None,
    )
}

/// The node's budget of request bytes in flight is spent.
pub fn request_memory_exhausted(len: usize, max: usize) -> Status {
    build(
        Code::ResourceExhausted,
        "RequestMemoryExhausted",
        format!("this node is holding as many request bytes as it may ({max}); a request of {len} bytes does not fit now: retry shortly"),
        None,
        Some(Duration::from_millis(100)),
    )
}

/// An invalid request detected before any domain logic ran.
pub fn invalid(field: &str, rule: impl Into<String>) -> Status {
    from_domain(DomainError::invalid(field, rule))
}

/// The status of a deterministic rejection: the one mapping from the
/// domain's errors to gRPC. (A function, not a `From` impl: both types are
/// foreign to the broker.)
pub fn from_domain(e: DomainError) -> Status {
    {
        let code = match e.kind {
            ErrorKind::InvalidArgument => Code::InvalidArgument,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::AlreadyExists => Code::AlreadyExists,
            ErrorKind::LimitExceeded => Code::ResourceExhausted,
            ErrorKind::FailedPrecondition => Code::FailedPrecondition,
            ErrorKind::PermissionDenied => Code::PermissionDenied,
        };
        let retry = (e.kind == ErrorKind::LimitExceeded).then(|| Duration::from_millis(100));
        build(code, &e.code, e.message, e.field.as_deref(), retry)
    }
}

/// `.into_status()` on a domain error, where `.into()` would do were the
/// types the broker's own.
pub trait IntoStatus {
    /// The status of this rejection (see [`from_domain`]).
    fn into_status(self) -> Status;
}

impl IntoStatus for DomainError {
    fn into_status(self) -> Status {
        from_domain(self)
    }
}

/// The answer to an invocation forwarded to the leader: the leader's own
/// statuses pass through; a transport failure means nothing ran when the
/// leader could not be reached, and an unknown outcome otherwise (the
/// function may have run, so the client must not retry it blindly).
pub fn forwarded_invocation(status: Status) -> Status {
    if status.metadata().get(ERROR_CODE_HEADER).is_some() {
        return status;
    }
    if crate::raft::network::is_connect_error(&status) {
        return build(
            Code::Unavailable,
            "ServiceUnavailableException",
            format!("the leader could not be reached: {}", status.message()),
            None,
            Some(Duration::from_millis(500)),
        );
    }
    build(
        Code::Internal,
        "ServiceException",
        format!(
            "the leader was lost while it ran the invocation (it may have run): {}",
            status.message()
        ),
        None,
        None,
    )
}

impl From<crate::dispatch::DispatchError> for Status {
    fn from(e: crate::dispatch::DispatchError) -> Self {
        use crate::dispatch::DispatchError;
        let message = e.to_string();
        match e {
            // Nothing ran: safe to try again.
            DispatchError::NoWorker(_) | DispatchError::NotRun(_) => build(
                Code::Unavailable,
                "ServiceUnavailableException",
                message,
                None,
                Some(Duration::from_millis(500)),
            ),
            // The function may have run: not to be retried blindly.
            DispatchError::Lost { .. } => {
                build(Code::Internal, "ServiceException", message, None, None)
            }
            DispatchError::Refused(status) => {
                let code = status
                    .metadata()
                    .get(ERROR_CODE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("ServiceException")
                    .to_string();
                build(
                    Code::FailedPrecondition,
                    &code,
                    status.message().to_string(),
                    None,
                    None,
                )
            }
        }
    }
}

impl From<crate::invocation::ResolveError> for Status {
    fn from(e: crate::invocation::ResolveError) -> Self {
        use crate::invocation::ResolveError;
        match e {
            ResolveError::Route(e) => e.into(),
            ResolveError::Domain(e) => e.into_status(),
            ResolveError::Unexpected => unexpected("Invoke"),
        }
    }
}

impl From<crate::invocation::RunFailure> for Status {
    fn from(f: crate::invocation::RunFailure) -> Self {
        use crate::invocation::RunFailure;
        match f {
            RunFailure::Throttled(e) => e.into_status(),
            RunFailure::Rejected(e) | RunFailure::Dispatch(e) => e.into(),
        }
    }
}

impl From<RouteError> for Status {
    fn from(e: RouteError) -> Self {
        let e = match e {
            RouteError::Remote(status) => return status,
            e => e,
        };
        let (soon, at_once) = (Some(Duration::from_millis(500)), Some(Duration::ZERO));
        let (code, reason, retry) = match &e {
            RouteError::NoLeader { .. } => (Code::Unavailable, "NoLeader", soon),
            RouteError::NotMember { .. } => (Code::Unavailable, "NotClusterMember", soon),
            RouteError::NotLeader { .. } => (Code::Unavailable, "NotLeader", at_once),
            RouteError::NoQuorum { .. } => (Code::Unavailable, "NoQuorum", soon),
            RouteError::LeaderChanged { .. } => (Code::Unavailable, "LeaderChanged", at_once),
            RouteError::Abandoned => (Code::Unavailable, "Abandoned", soon),
            RouteError::LeaderLost { .. } => (Code::Unavailable, "LeaderLost", soon),
            RouteError::LeaderTimeout => (Code::Unavailable, "LeaderTimeout", soon),
            RouteError::ShuttingDown => (Code::Unavailable, "ShuttingDown", soon),
            RouteError::DiskFull { .. } => (
                Code::ResourceExhausted,
                "DiskFull",
                Some(Duration::from_secs(1)),
            ),
            RouteError::Overloaded { .. } => (
                Code::ResourceExhausted,
                "LeaderOverloaded",
                Some(Duration::from_millis(100)),
            ),
            RouteError::Store(_) => (Code::Internal, "StorageFailure", None),
            RouteError::Internal(_) => (Code::Internal, "InternalError", None),
            RouteError::Remote(_) => unreachable!("answered above"),
        };
        let mut status = build(code, reason, e.to_string(), None, retry);
        if let RouteError::NotLeader {
            leader: Some(l), ..
        } = e
        {
            status
                .metadata_mut()
                .insert("sluice-leader-id", MetadataValue::from(l));
        }
        status
    }
}

/// A reply of the wrong kind from the state machine: a bug, not bad input.
pub fn unexpected(what: &str) -> Status {
    internal(format!("unexpected reply to {what}"))
}

/// The one result of a batch command (send, delete, change visibility,
/// put, publish) proposed with one entry: the unary call's own result.
pub fn only<T>(mut results: Vec<Result<T, DomainError>>, what: &str) -> Result<T, Status> {
    results
        .pop()
        .ok_or_else(|| unexpected(what))?
        .map_err(from_domain)
}

/// A status as the error of one message of a stream: what the unary call
/// would have answered, with its code, stable error code and field.
pub fn message_error(status: &Status) -> sluice_proto::v1::MessageError {
    let field = status
        .get_error_details()
        .bad_request()
        .and_then(|b| b.field_violations.first())
        .map(|v| v.field.clone())
        .unwrap_or_default();
    sluice_proto::v1::MessageError {
        grpc_code: status.code() as i32,
        code: status
            .metadata()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string(),
        message: status.message().to_string(),
        field,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_quote_at_most_a_short_prefix_of_what_they_were_given() {
        let huge = "x".repeat(786 * 1024);
        let status: Status =
            DomainError::invalid("message_body", format!("got {huge:?}")).into_status();
        assert!(
            status.message().len() <= MESSAGE_MAX + 32,
            "{}",
            status.message().len()
        );
        assert!(status.message().ends_with(" bytes)"), "marked as cut");
        // The details carry the message again, cut as well.
        assert!(status.details().len() < 2 * MESSAGE_MAX + 512);
    }

    #[test]
    fn invalid_input_names_field_and_code_in_details() {
        let status: Status = DomainError::invalid("queue_name", "must be short").into_status();
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "queue_name: must be short");
        assert_eq!(
            status.metadata().get(ERROR_CODE_HEADER).unwrap(),
            "InvalidParameterValue"
        );
        let details = status.get_error_details();
        let info = details.error_info().unwrap();
        assert_eq!(info.reason, "InvalidParameterValue");
        assert_eq!(info.metadata.get("field").unwrap(), "queue_name");
        let bad = details.bad_request().unwrap();
        assert_eq!(bad.field_violations[0].field, "queue_name");
    }

    #[test]
    fn kinds_map_to_the_spec_codes() {
        for (kind, code) in [
            (ErrorKind::NotFound, Code::NotFound),
            (ErrorKind::AlreadyExists, Code::AlreadyExists),
            (ErrorKind::LimitExceeded, Code::ResourceExhausted),
            (ErrorKind::FailedPrecondition, Code::FailedPrecondition),
        ] {
            let e = DomainError {
                kind,
                code: "X".into(),
                message: "m".into(),
                field: None,
            };
            assert_eq!(from_domain(e).code(), code);
        }
    }

    #[test]
    fn no_leader_is_unavailable_with_a_retry_hint() {
        let status: Status = RouteError::NoLeader { waited_ms: 5000 }.into();
        assert_eq!(status.code(), Code::Unavailable);
        assert!(status.get_error_details().retry_info().is_some());
        assert_eq!(
            status.metadata().get(ERROR_CODE_HEADER).unwrap(),
            "NoLeader"
        );
    }
}
