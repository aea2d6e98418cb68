//! Runs a gRPC operation in-process: the request the AWS front translated
//! goes through the public listener's guard and handlers as the bytes a
//! gRPC client would have sent, with the caller the front authenticated.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use prost::Message;
use tonic::body::Body;
use tonic::Status;

use serde_json::Value;

use super::error::AwsError;
use super::Authenticated;
use crate::auth::caller::Caller;

type Service = dyn Fn(http::Request<Body>) -> Pin<Box<dyn Future<Output = http::Response<Body>> + Send>>
    + Send
    + Sync;

/// The public services behind their guard, callable in-process.
#[derive(Clone)]
pub struct Dispatch {
    service: Arc<Service>,
}

impl Dispatch {
    /// A dispatch through `service` (the guarded public routes).
    pub fn new<F, Fut>(service: F) -> Dispatch
    where
        F: Fn(http::Request<Body>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = http::Response<Body>> + Send + 'static,
    {
        Dispatch {
            service: Arc::new(move |r| Box::pin(service(r))),
        }
    }

    /// Calls `path` (e.g. `/sluice.v1.Queues/SendMessage`) with `request` as
    /// `caller`; the handler's answer, or the status it (or the guard)
    /// refused with.
    pub async fn call<Req, Resp>(
        &self,
        path: &str,
        caller: Caller,
        request: Req,
    ) -> Result<Resp, Status>
    where
        Req: Message,
        Resp: Message + Default,
    {
        let len = request.encoded_len();
        let mut frame = BytesMut::with_capacity(5 + len);
        frame.extend_from_slice(&[0]);
        frame.extend_from_slice(&(len as u32).to_be_bytes());
        request
            .encode(&mut frame)
            .map_err(|e| Status::internal(format!("encoding the request: {e}")))?;
        let mut http_request = http::Request::builder()
            .method(http::Method::POST)
            .uri(path)
            .header(http::header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .body(Body::new(http_body_util::Full::new(frame.freeze())))
            .map_err(|e| Status::internal(format!("building the request: {e}")))?;
        http_request.extensions_mut().insert(Authenticated(caller));
        let response = (self.service)(http_request).await;
        let (parts, body) = response.into_parts();
        if let Some(status) = Status::from_header_map(&parts.headers) {
            if status.code() != tonic::Code::Ok {
                return Err(status);
            }
        }
        let collected = body
            .collect()
            .await
            .map_err(|e| Status::internal(format!("reading the answer: {e}")))?;
        let trailers = collected.trailers().cloned();
        let data = collected.to_bytes();
        match trailers.as_ref().and_then(Status::from_header_map) {
            Some(status) if status.code() != tonic::Code::Ok => return Err(status),
            _ => {}
        }
        decode(data)
    }
}

/// The calls of one AWS request: one service's methods, as its caller.
pub struct Calls<'a> {
    /// The guarded public services.
    pub dispatch: &'a Dispatch,
    /// Who signed the request.
    pub caller: Caller,
    /// The gRPC service, e.g. `sluice.v1.Queues`.
    pub service: &'static str,
}

impl Calls<'_> {
    /// Runs `method` of the service with `request`; refusals in AWS's terms.
    pub async fn run<Req, Resp>(&self, method: &str, request: Req) -> Result<Resp, AwsError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        self.dispatch
            .call(
                &format!("/{}/{method}", self.service),
                self.caller.clone(),
                request,
            )
            .await
            .map_err(|s| AwsError::from_status(&s))
    }

    /// Runs a method whose AWS answer has no members.
    pub async fn done<Req, Resp>(&self, method: &str, request: Req) -> Result<Value, AwsError>
    where
        Req: Message,
        Resp: Message + Default,
    {
        self.run::<Req, Resp>(method, request).await?;
        Ok(Value::Object(Default::default()))
    }
}

/// The message in a one-message gRPC body.
fn decode<Resp: Message + Default>(mut data: Bytes) -> Result<Resp, Status> {
    if data.len() < 5 || data[0] != 0 {
        return Err(Status::internal(
            "the answer is not one uncompressed gRPC message",
        ));
    }
    data.advance(1);
    let len = data.get_u32() as usize;
    if data.len() != len {
        return Err(Status::internal(
            "the answer's length does not match its frame",
        ));
    }
    Resp::decode(data).map_err(|e| Status::internal(format!("decoding the answer: {e}")))
}
