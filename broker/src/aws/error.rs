//! Errors in the shapes the AWS protocols send them.
//!
//! A refusal from a handler or the guard arrives as the gRPC status the gRPC
//! API sends, with its AWS error code in the `sluice-error-code` metadata
//! entry (see `api::status`); here it becomes the protocol's error body and
//! HTTP status. For SQS, which AWS moved from its query protocol to JSON,
//! the `x-amzn-query-error` header carries the query protocol's code as
//! well (`AWS.SimpleQueueService.NonExistentQueue;Sender`): current SDKs
//! raise the modeled exception (`QueueDoesNotExist`) from the body's type
//! and report the query code as the error code, as they do against AWS.

use axum::response::{IntoResponse, Response};
use tonic::{Code, Status};

use crate::router::ERROR_CODE_HEADER;

/// An error answer of an AWS protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    /// HTTP status: 400 for the caller's mistakes, 403 for refused
    /// credentials or permissions, 500 and 503 for the service's.
    pub http_status: u16,
    /// The error code, e.g. `QueueDoesNotExist`.
    pub code: String,
    /// One line for the caller.
    pub message: String,
}

impl AwsError {
    /// A required parameter is missing.
    pub fn missing(parameter: &str) -> AwsError {
        AwsError {
            http_status: 400,
            code: "MissingParameter".into(),
            message: format!("The request must contain the parameter {parameter}."),
        }
    }

    /// A parameter has a value the operation does not take.
    pub fn invalid(parameter: &str, rule: impl std::fmt::Display) -> AwsError {
        AwsError {
            http_status: 400,
            code: "InvalidParameterValue".into(),
            message: format!("{parameter}: {rule}"),
        }
    }

    /// The body is not what the protocol carries (not JSON, not an object).
    pub fn serialization(why: impl std::fmt::Display) -> AwsError {
        AwsError {
            http_status: 400,
            code: "SerializationException".into(),
            message: why.to_string(),
        }
    }

    /// The operation is not one this endpoint serves.
    pub fn unknown_operation(target: &str) -> AwsError {
        AwsError {
            http_status: 400,
            code: "UnknownOperationException".into(),
            message: format!(
                "{} is not an operation Sluice serves",
                crate::error::cut(target, 128)
            ),
        }
    }

    /// The error a gRPC status stands for.
    pub fn from_status(status: &Status) -> AwsError {
        let given = status
            .metadata()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let (http_status, fallback) = match status.code() {
            Code::Unauthenticated => (403, "InvalidClientTokenId"),
            Code::PermissionDenied => (403, "AccessDenied"),
            Code::Unavailable => (503, "ServiceUnavailable"),
            Code::ResourceExhausted => (400, "RequestThrottled"),
            Code::Internal | Code::Unknown | Code::DataLoss => (500, "InternalFailure"),
            Code::DeadlineExceeded => (500, "RequestTimeout"),
            Code::Unimplemented => (400, "UnsupportedOperation"),
            _ => (400, "InvalidParameterValue"),
        };
        AwsError {
            http_status,
            code: given.unwrap_or_else(|| fallback.to_string()),
            message: status.message().to_string(),
        }
    }

    /// Whether the caller is at fault (`Sender`) rather than the service.
    pub fn sender_fault(&self) -> bool {
        self.http_status < 500
    }

    /// The answer in AWS JSON (1.0 or 1.1): `{"__type": ..., "message": ...}`
    /// with the type in `namespace`; for SQS (`query_codes`) the
    /// `x-amzn-query-error` header too.
    pub fn json_response(
        &self,
        content_type: &'static str,
        namespace: &str,
        query_codes: bool,
    ) -> Response {
        let body = serde_json::json!({
            "__type": format!("{namespace}#{}", self.code),
            "message": self.message,
        });
        let fault = if self.sender_fault() {
            "Sender"
        } else {
            "Receiver"
        };
        let query_code = format!("{};{fault}", sqs_query_code(&self.code));
        let header = query_codes.then_some(("x-amzn-query-error", query_code.as_str()));
        self.respond(body, content_type, header)
    }

    /// The answer in REST-JSON (Lambda's): the type in `x-amzn-ErrorType`
    /// and the body `{"Type": "User", "message": ...}`.
    pub fn rest_json_response(&self) -> Response {
        let body = serde_json::json!({
            "Type": if self.sender_fault() { "User" } else { "Service" },
            "message": self.message,
        });
        self.respond(
            body,
            "application/json",
            Some(("x-amzn-errortype", self.code.as_str())),
        )
    }

    fn respond(
        &self,
        body: serde_json::Value,
        content_type: &'static str,
        header: Option<(&'static str, &str)>,
    ) -> Response {
        let status =
            http::StatusCode::from_u16(self.http_status).unwrap_or(http::StatusCode::BAD_REQUEST);
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        if let Some((name, value)) = header {
            if let Ok(v) = http::HeaderValue::from_str(value) {
                headers.insert(name, v);
            }
        }
        response
    }
}

/// The SQS query protocol's code for a JSON error type (the two differ for
/// the errors SQS had before its JSON protocol).
pub fn sqs_query_code(code: &str) -> &str {
    match code {
        "QueueDoesNotExist" => "AWS.SimpleQueueService.NonExistentQueue",
        "QueueNameExists" => "QueueAlreadyExists",
        "QueueDeletedRecently" => "AWS.SimpleQueueService.QueueDeletedRecently",
        "PurgeQueueInProgress" => "AWS.SimpleQueueService.PurgeQueueInProgress",
        "MessageNotInflight" => "AWS.SimpleQueueService.MessageNotInflight",
        "TooManyEntriesInBatchRequest" => "AWS.SimpleQueueService.TooManyEntriesInBatchRequest",
        "BatchEntryIdsNotDistinct" => "AWS.SimpleQueueService.BatchEntryIdsNotDistinct",
        "EmptyBatchRequest" => "AWS.SimpleQueueService.EmptyBatchRequest",
        "InvalidBatchEntryId" => "AWS.SimpleQueueService.InvalidBatchEntryId",
        "BatchRequestTooLong" => "AWS.SimpleQueueService.BatchRequestTooLong",
        "UnsupportedOperation" => "AWS.SimpleQueueService.UnsupportedOperation",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_status_keeps_its_aws_code_and_gets_the_http_status_of_its_kind() {
        let mut s = Status::not_found("queue \"q\" does not exist");
        s.metadata_mut()
            .insert(ERROR_CODE_HEADER, "QueueDoesNotExist".parse().unwrap());
        let e = AwsError::from_status(&s);
        assert_eq!(e.code, "QueueDoesNotExist");
        assert_eq!(e.http_status, 400);
        let denied = AwsError::from_status(&Status::permission_denied("no"));
        assert_eq!(
            (denied.http_status, denied.code.as_str()),
            (403, "AccessDenied")
        );
        let down = AwsError::from_status(&Status::unavailable("no leader"));
        assert_eq!(down.http_status, 503);
        assert!(!down.sender_fault());
    }

    #[test]
    fn sqs_errors_carry_the_query_protocol_code_in_a_header() {
        let e = AwsError {
            http_status: 400,
            code: "QueueDoesNotExist".into(),
            message: "gone".into(),
        };
        let r = e.json_response("application/x-amz-json-1.0", "com.amazonaws.sqs", true);
        assert_eq!(r.status(), 400);
        assert_eq!(
            r.headers()["x-amzn-query-error"],
            "AWS.SimpleQueueService.NonExistentQueue;Sender"
        );
    }
}
