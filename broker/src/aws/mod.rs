//! The AWS wire protocols, served on the public port beside gRPC, so that
//! unmodified AWS SDKs and the aws CLI work against Sluice with only their
//! endpoint changed.
//!
//! A request is recognised as AWS's by its `X-Amz-Target` header (the AWS
//! JSON protocols), a form body (the query protocol; posted to `/`, or
//! to a queue's URL by older SQS SDKs), or a path under an API date
//! (Lambda's REST protocol: `/2015-03-31/functions/...`) or under
//! `/schedules` (Scheduler's). The [`front`] reads it whole (within
//! [`front::BODY_MAX`]), checks its SigV4 signature against Sluice's access
//! keys (any signature when authentication is off, as the emulators do),
//! turns it into the gRPC request of the same operation and runs that
//! through the same guard and handler as a gRPC client's call ([`call`]):
//! one authorisation table, one set of handlers, one behaviour. The answer
//! goes back in the protocol's shape, errors as AWS sends them ([`error`]).
//!
//! Served so far: SQS over AWS JSON 1.0 and the query protocol ([`sqs`]),
//! SNS over the query protocol ([`sns`]), Kinesis over AWS JSON 1.1
//! ([`kinesis`]), EventBridge over AWS JSON 1.1 ([`events`]), Lambda and
//! EventBridge Scheduler over REST-JSON ([`lambda`], [`scheduler`]) and
//! STS's `GetCallerIdentity`
//! ([`sts`]); [`query`] converts the query protocol's forms and XML.

pub mod call;
pub mod cbor;
pub mod error;
pub mod event_stream;
pub mod events;
pub mod front;
pub mod json;
pub mod kinesis;
pub mod lambda;
pub mod query;
pub mod scheduler;
pub mod sns;
pub mod sqs;
pub mod sts;

use crate::auth::caller::Caller;

/// The caller of an operation the AWS front passes on: already
/// authenticated from the SDK's signature. Set only in-process, as a
/// request extension (never from a header), so no client can claim it.
#[derive(Clone)]
pub struct Authenticated(pub Caller);

/// Whether `request` speaks an AWS protocol rather than gRPC or one of the
/// plain HTTP routes.
pub fn is_aws_request<B>(request: &http::Request<B>) -> bool {
    lambda::is_lambda_path(request.uri().path())
        || scheduler::is_scheduler_path(request.uri().path())
        || request.method() == http::Method::POST
            && (request.headers().contains_key(front::TARGET_HEADER)
                || front::is_form(request.headers()))
}
