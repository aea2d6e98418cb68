//! Runs a gRPC operation in-process: the request the AWS front translated
//! goes through the public listener's guard and handlers as the bytes a
//! gRPC client would have sent, with the caller the front authenticated.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
use futures::Stream;
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
        let response = self.send(path, caller, request).await?;
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

    /// Calls the server-streaming method `path`: its messages as they
    /// come, ending with the status the stream ended with if not OK.
    pub async fn call_stream<Req, Resp>(
        &self,
        path: &str,
        caller: Caller,
        request: Req,
    ) -> Result<impl Stream<Item = Result<Resp, Status>> + Send + 'static, Status>
    where
        Req: Message,
        Resp: Message + Default + 'static,
    {
        let response = self.send(path, caller, request).await?;
        let (parts, body) = response.into_parts();
        if let Some(status) = Status::from_header_map(&parts.headers) {
            if status.code() != tonic::Code::Ok {
                return Err(status);
            }
        }
        let state = (body, BytesMut::new(), false);
        Ok(futures::stream::unfold(
            state,
            |(mut body, mut buf, done)| async move {
                if done {
                    return None;
                }
                loop {
                    if let Some(message) = take_message(&mut buf) {
                        let item = message.and_then(|m| {
                            Resp::decode(m)
                                .map_err(|e| Status::internal(format!("decoding the answer: {e}")))
                        });
                        return Some((item, (body, buf, false)));
                    }
                    match body.frame().await {
                        None => return None,
                        Some(Err(e)) => {
                            let e = Status::internal(format!("reading the answer: {e}"));
                            return Some((Err(e), (body, buf, true)));
                        }
                        Some(Ok(frame)) => match frame.into_data() {
                            Ok(data) => buf.extend_from_slice(&data),
                            Err(frame) => {
                                let status = frame
                                    .trailers_ref()
                                    .and_then(Status::from_header_map)
                                    .filter(|s| s.code() != tonic::Code::Ok)?;
                                return Some((Err(status), (body, buf, true)));
                            }
                        },
                    }
                }
            },
        ))
    }

    /// Sends `request` to `path` as `caller`; the answer's head and body.
    async fn send<Req: Message>(
        &self,
        path: &str,
        caller: Caller,
        request: Req,
    ) -> Result<http::Response<Body>, Status> {
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
        Ok((self.service)(http_request).await)
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

/// The first whole message framed in `buf`, taken out of it; `None` until
/// one has arrived.
fn take_message(buf: &mut BytesMut) -> Option<Result<Bytes, Status>> {
    if buf.len() < 5 {
        return None;
    }
    if buf[0] != 0 {
        return Some(Err(Status::internal(
            "the answer is not an uncompressed gRPC message",
        )));
    }
    let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
    if buf.len() < 5 + len {
        return None;
    }
    buf.advance(5);
    Some(Ok(buf.split_to(len).freeze()))
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
