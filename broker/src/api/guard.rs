//! The one layer every call of a listener passes through: it
//! authenticates the caller, authorises the operation on its resource
//! ([`super::access`]), meters it, and writes refusals and administrative
//! actions to the audit log.
//!
//! * On the cluster listener only nodes are taken (signed with the cluster
//!   key's node credential, over mutual TLS when configured); they may do
//!   anything.
//! * On the public listener, an operation not in the access table is
//!   refused (when authentication is on), health checks, reflection and the
//!   plain HTTP routes pass, and everything else is authorised: the caller's
//!   kind first (the workers API takes only workers), then its policies for
//!   the operation's action on its resource. The resource comes from a field
//!   of the request, read from the first message without decoding the rest
//!   (the body is buffered up to the RPC's size limit and handed on intact).
//!
//! A refusal answers `UNAUTHENTICATED` or `PERMISSION_DENIED` with the AWS
//! error code, before any handler runs: nothing changes. The caller is put
//! in the request's extensions for the handlers that need it (a worker may
//! only leave itself).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::Frame;
use http_body_util::BodyExt;
use sluice_security::policy::Decision;
use tonic::body::Body;
use tonic::Status;

use super::access::{self, Entry, Res, Table, Who};
use crate::auth::caller::Caller;
use crate::authenticator::{AuthError, Authenticator, Listener};
use crate::command::Registered;
use crate::identity::Identity;
use crate::router::{Router, FORWARDED_HEADER};

/// Adds the guard to a server's routes.
#[derive(Clone)]
pub struct GuardLayer {
    shared: Arc<Shared>,
}

struct Shared {
    listener: Listener,
    authenticator: Arc<Authenticator>,
    table: Arc<Table>,
    identity: Identity,
    router: Router,
    /// Largest request message, bytes.
    message_max: usize,
    /// Per-RPC size and shape limits, and the in-flight budget.
    bounds: Arc<super::bounds::Bounds>,
}

impl GuardLayer {
    /// A guard for `listener`.
    pub fn new(
        listener: Listener,
        authenticator: Arc<Authenticator>,
        table: Arc<Table>,
        identity: Identity,
        router: Router,
        message_max: usize,
        bounds: Arc<super::bounds::Bounds>,
    ) -> GuardLayer {
        GuardLayer {
            shared: Arc::new(Shared {
                listener,
                authenticator,
                table,
                identity,
                router,
                message_max,
                bounds,
            }),
        }
    }
}

impl<S> tower::Layer<S> for GuardLayer {
    type Service = Guard<S>;

    fn layer(&self, inner: S) -> Guard<S> {
        Guard {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The guarded service.
#[derive(Clone)]
pub struct Guard<S> {
    inner: S,
    shared: Arc<Shared>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S> tower::Service<http::Request<Body>> for Guard<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        // The clone is ready only once polled; call the one that was.
        let clone = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, clone);
        let shared = self.shared.clone();
        Box::pin(async move { shared.handle(inner, request).await })
    }
}

/// Why a call was refused.
enum Refusal {
    Unauthenticated(AuthError),
    Denied(String),
    Invalid(Status),
}

impl Shared {
    async fn handle<S>(
        self: Arc<Self>,
        mut inner: S,
        request: http::Request<Body>,
    ) -> Result<http::Response<Body>, S::Error>
    where
        S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    {
        let started = Instant::now();
        let path = request.uri().path().to_string();
        // A connection serving a call is not idle (see `connection`).
        let active = request
            .extensions()
            .get::<sluice_security::tls::PeerInfo>()
            .map(|p| p.activity.enter());
        if self.listener == Listener::Cluster {
            let (mut parts, body) = request.into_parts();
            return match self
                .authenticator
                .authenticate(Listener::Cluster, &parts)
                .await
            {
                Ok(caller) => {
                    parts.extensions.insert(caller);
                    inner.call(http::Request::from_parts(parts, body)).await
                }
                Err(e) => Ok(self.refuse(&path, None, "", "", Refusal::Unauthenticated(e))),
            };
        }
        let Some(entry) = self.table.get(&path).cloned() else {
            // The AWS protocols authenticate their own requests (a SigV4
            // signature over the request as the SDK sent it) and pass each
            // operation back through this guard as the gRPC call it is.
            if crate::aws::is_aws_request(&request) {
                // In progress until answered: a long poll is not idle.
                let response = inner.call(request).await;
                drop(active);
                return response;
            }
            if !self.authenticator.security().auth {
                return inner.call(request).await;
            }
            return Ok(self.refuse(
                &path,
                None,
                "",
                "",
                Refusal::Denied(format!(
                    "{} is not an operation of this listener",
                    crate::error::cut(&path, 128)
                )),
            ));
        };
        if entry.rpc.who == Who::Public {
            return inner.call(request).await;
        }
        let (mut parts, body) = request.into_parts();
        // Only nodes, on the cluster listener, mark calls as forwarded.
        parts.headers.remove(FORWARDED_HEADER);
        let mut meter = Meter::new(entry.rpc.method, started);
        meter.active = active;
        let authenticated = match parts.extensions.remove::<crate::aws::Authenticated>() {
            Some(crate::aws::Authenticated(caller)) => Ok(caller),
            None => {
                self.authenticator
                    .authenticate(Listener::Public, &parts)
                    .await
            }
        };
        let caller = match authenticated {
            Ok(c) => c,
            Err(e) => {
                meter.finish("Unauthenticated");
                return Ok(self.refuse(
                    &path,
                    None,
                    entry.rpc.action,
                    "",
                    Refusal::Unauthenticated(e),
                ));
            }
        };
        let denied = |resource: &str, why: String, meter: &mut Meter| {
            meter.finish("PermissionDenied");
            Ok(self.refuse(
                &path,
                Some(&caller),
                entry.rpc.action,
                resource,
                Refusal::Denied(why),
            ))
        };
        let not_worker = entry.rpc.who == Who::Workers && !caller.is_worker();
        // Every request is read whole here, within its RPC's limits and
        // the node's in-flight budget, and its shape checked before a
        // handler decodes it (see `bounds`).
        let limit = self.bounds.limit(&path).unwrap_or(self.message_max);
        let read = first_message(body, limit, |len| self.bounds.reserve(len))
            .await
            .and_then(|(body, message, permit)| {
                if let Some(m) = &message {
                    self.bounds.check(&path, m)?;
                }
                Ok((body, message, permit))
            });
        let (body, message, mut permit) = match read {
            Ok(read) => read,
            Err(status) => {
                meter.finish(&format!("{:?}", status.code()));
                return Ok(self.refuse(
                    &path,
                    Some(&caller),
                    entry.rpc.action,
                    "",
                    Refusal::Invalid(status),
                ));
            }
        };
        let reads_body = !entry.field_numbers.is_empty()
            && entry.rpc.who != Who::Authenticated
            && (caller.policy_bound() || entry.rpc.admin || not_worker);
        let resource = self.resource(&entry, message.as_deref().filter(|_| reads_body));
        if not_worker {
            let why = format!(
                "User: {} is not authorized to perform: {} on resource: {resource} because {} takes worker principals only",
                caller.arn(&self.identity),
                entry.rpc.action,
                entry.rpc.method
            );
            return denied(&resource, why, &mut meter);
        }
        if entry.rpc.who != Who::Authenticated {
            match caller.decide(entry.rpc.action, &resource) {
                Decision::Allow => {}
                d => {
                    let why = format!(
                        "User: {} is not authorized to perform: {} on resource: {resource} {}",
                        caller.arn(&self.identity),
                        entry.rpc.action,
                        if d == Decision::ExplicitDeny {
                            "with an explicit deny in an identity-based policy".to_string()
                        } else {
                            format!(
                                "because no identity-based policy allows the {} action",
                                entry.rpc.action
                            )
                        }
                    );
                    return denied(&resource, why, &mut meter);
                }
            }
        }
        if entry.rpc.admin {
            meter.audit = Some(Audit {
                caller: caller.name(),
                kind: caller.kind(),
                action: entry.rpc.action,
                resource,
            });
        }
        parts.extensions.insert(caller);
        // A stream's later messages are held to the same limits as its
        // first, each as it arrives.
        let body = if self.bounds.streams_in(&path) {
            // The handler takes each message's bytes from the node's budget
            // while it holds the message.
            parts.extensions.insert(self.bounds.clone());
            Body::new(Checked {
                inner: body,
                bounds: self.bounds.clone(),
                path: path.clone(),
                limit,
                buf: BytesMut::new(),
                // The first message's bytes, taken as it was read: it is
                // passed on from the replay without being counted again.
                permit: permit.take(),
                done: false,
            })
        } else {
            body
        };
        let response = inner.call(http::Request::from_parts(parts, body)).await?;
        // The handler has decoded and dropped the request by now.
        drop(permit);
        Ok(meter.watch(response))
    }

    fn resource(&self, entry: &Entry, message: Option<&[u8]>) -> String {
        let values: Vec<Option<&str>> = entry
            .field_numbers
            .iter()
            .map(|n| message.and_then(|m| access::string_field(m, *n)))
            .collect();
        let lookup = |res: &Res, value: &str| -> Option<String> {
            match res {
                Res::MoveTask(_) => {
                    let qid = crate::queues::redrive::task_queue(value)?;
                    let read = crate::queues::QueueName { qid };
                    let out = self.router.read_local(&read.carry()).ok()?.ok()?;
                    let name = crate::queues::QueueName::output(out)??;
                    Some(self.identity.queue_arn(&name))
                }
                Res::Iterator(_) => {
                    let it = super::streams::open_iterator(
                        &self.authenticator.security().iterators,
                        value,
                    )?;
                    Some(self.identity.stream_arn(&it.stream_name))
                }
                _ => None,
            }
        };
        access::resource(&entry.rpc.resource, &values, &self.identity, &lookup)
    }

    fn refuse(
        &self,
        path: &str,
        caller: Option<&Caller>,
        action: &str,
        resource: &str,
        why: Refusal,
    ) -> http::Response<Body> {
        let (status, reason) = match why {
            Refusal::Unauthenticated(e) => (
                super::status::unauthenticated(e.code, e.message.clone()),
                e.code.to_string(),
            ),
            Refusal::Denied(message) => (
                super::status::permission_denied("AccessDenied", message),
                "AccessDenied".to_string(),
            ),
            Refusal::Invalid(status) => {
                let code = format!("{:?}", status.code());
                (status, code)
            }
        };
        tracing::warn!(
            target: "sluice::audit",
            listener = self.listener.as_str(),
            operation = %crate::error::cut(path, 128),
            principal = %caller.map(|c| c.name()).unwrap_or_default(),
            action,
            resource = %crate::error::cut(resource, 256),
            reason = %reason,
            message = %status.message(),
            "refused"
        );
        metrics::counter!(
            "sluice_refused_calls_total",
            "listener" => self.listener.as_str(),
            "action" => if action.is_empty() { "unknown".to_string() } else { action.to_string() },
            "reason" => reason
        )
        .increment(1);
        status.into_http()
    }
}

/// The length of the gRPC message whose 5-byte prefix starts `buf`, once
/// the prefix is there; refuses a compressed message or one over `max`.
fn message_len(buf: &[u8], max: usize) -> Result<Option<usize>, Status> {
    let Some(prefix) = buf.get(..5) else {
        return Ok(None);
    };
    if prefix[0] != 0 {
        return Err(Status::unimplemented(
            "compressed requests are not accepted",
        ));
    }
    let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
    if len > max {
        return Err(super::status::too_large(len, max));
    }
    Ok(Some(len))
}

/// Reads the first gRPC message of a request body (whole, up to `max`
/// bytes), and gives back a body that yields everything read and then the
/// rest.
async fn first_message<P>(
    mut body: Body,
    max: usize,
    reserve: impl FnOnce(usize) -> Result<P, Status>,
) -> Result<(Body, Option<Bytes>, Option<P>), Status> {
    let mut buf = BytesMut::new();
    let mut trailers = None;
    let mut ended = false;
    let mut wanted = None;
    let mut reserve = Some(reserve);
    let mut permit = None;
    loop {
        if wanted.is_none() {
            if let Some(len) = message_len(&buf, max)? {
                // Room for it in the node's budget before it is read.
                if let Some(reserve) = reserve.take() {
                    permit = Some(reserve(len)?);
                }
                wanted = Some(5 + len);
                buf.reserve(5 + len - buf.len().min(5 + len));
            }
        }
        if wanted.is_some_and(|w| buf.len() >= w) {
            break;
        }
        match body.frame().await {
            None => {
                ended = true;
                break;
            }
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => buf.extend_from_slice(&data),
                Err(frame) => {
                    trailers = frame.into_trailers().ok();
                    ended = true;
                    break;
                }
            },
        }
    }
    let head = buf.freeze();
    let message = wanted
        .filter(|w| head.len() >= *w)
        .map(|w| head.slice(5..w));
    let replay = Replay {
        head: (!head.is_empty()).then_some(head),
        trailers,
        rest: (!ended).then_some(body),
    };
    Ok((Body::new(replay), message, permit))
}

/// A body replaying what was read of another, then the rest of it.
struct Replay {
    head: Option<Bytes>,
    trailers: Option<http::HeaderMap>,
    rest: Option<Body>,
}

impl http_body::Body for Replay {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if let Some(h) = self.head.take() {
            return Poll::Ready(Some(Ok(Frame::data(h))));
        }
        if let Some(t) = self.trailers.take() {
            return Poll::Ready(Some(Ok(Frame::trailers(t))));
        }
        match &mut self.rest {
            Some(rest) => Pin::new(rest).poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.head.is_none()
            && self.trailers.is_none()
            && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }
}

/// The body of a call that streams its requests: passes on each gRPC
/// message whole once it is within the RPC's byte limit and shape (see
/// `bounds`), and ends the body with that refusal otherwise, so that a
/// stream cannot carry what a single call may not. Holds at most one
/// message (up to the limit) and the chunk that completed it, and takes
/// the message's bytes from the node's budget before it reads them (a
/// client stalling inside messages on many streams is refused with
/// `RequestMemoryExhausted`, as a unary call would be).
struct Checked {
    inner: Body,
    bounds: Arc<super::bounds::Bounds>,
    path: String,
    limit: usize,
    buf: BytesMut,
    /// The node's budget for the message being read, taken when its
    /// length is known (before its bytes are), until it is passed on.
    permit: Option<tokio::sync::OwnedSemaphorePermit>,
    /// A refusal ended the body.
    done: bool,
}

impl Checked {
    /// The next whole message in `buf`, checked, if one is there.
    fn next_message(&mut self) -> Option<Result<Bytes, Status>> {
        let len = match message_len(&self.buf, self.limit) {
            Ok(Some(len)) => len,
            Ok(None) => return None,
            Err(status) => return Some(Err(status)),
        };
        if self.permit.is_none() {
            match self.bounds.reserve(len) {
                Ok(p) => self.permit = Some(p),
                Err(status) => return Some(Err(status)),
            }
        }
        if self.buf.len() < 5 + len {
            self.buf.reserve(5 + len - self.buf.len());
            return None;
        }
        self.permit = None;
        let frame = self.buf.split_to(5 + len).freeze();
        Some(self.bounds.check(&self.path, &frame[5..]).map(|()| frame))
    }
}

impl http_body::Body for Checked {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.done {
            return Poll::Ready(None);
        }
        loop {
            if let Some(message) = self.next_message() {
                self.done = message.is_err();
                return Poll::Ready(Some(message.map(Frame::data)));
            }
            match std::task::ready!(Pin::new(&mut self.inner).poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => self.buf.extend_from_slice(&data),
                    Err(frame) => return Poll::Ready(Some(Ok(frame))),
                },
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None if self.buf.is_empty() => return Poll::Ready(None),
                None => {
                    self.done = true;
                    return Poll::Ready(Some(Err(super::status::invalid_request(
                        "request",
                        "the stream ended inside a message",
                    ))));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.buf.is_empty() && self.inner.is_end_stream())
    }
}

/// An administrative action to write to the audit log once it finishes.
struct Audit {
    caller: String,
    kind: &'static str,
    action: &'static str,
    resource: String,
}

/// Counts and times one call by RPC and status code, when its answer is
/// complete (its trailers sent), or as `Cancelled` if it never is.
struct Meter {
    rpc: &'static str,
    started: Instant,
    audit: Option<Audit>,
    done: bool,
    /// Keeps the connection from counting as idle until the response ends.
    active: Option<sluice_security::connection::Active>,
}

impl Meter {
    fn new(rpc: &'static str, started: Instant) -> Meter {
        Meter {
            rpc,
            started,
            active: None,
            audit: None,
            done: false,
        }
    }

    fn finish(&mut self, code: &str) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let code = code.to_string();
        metrics::counter!("sluice_grpc_requests_total", "rpc" => self.rpc, "code" => code.clone())
            .increment(1);
        metrics::histogram!("sluice_grpc_request_duration_seconds", "rpc" => self.rpc, "code" => code.clone())
            .record(self.started.elapsed().as_secs_f64());
        if let Some(a) = self.audit.take() {
            tracing::info!(
                target: "sluice::audit",
                principal = %a.caller,
                kind = a.kind,
                action = a.action,
                resource = %a.resource,
                code = %code,
                "administrative action"
            );
            metrics::counter!("sluice_admin_actions_total", "action" => a.action, "code" => code)
                .increment(1);
        }
    }

    /// Finishes when `response` does.
    fn watch(mut self, response: http::Response<Body>) -> http::Response<Body> {
        if let Some(code) = grpc_status(response.headers()) {
            self.finish(&code);
            return response;
        }
        let (parts, body) = response.into_parts();
        http::Response::from_parts(
            parts,
            Body::new(Metered {
                inner: body,
                meter: Some(self),
            }),
        )
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish("Cancelled");
    }
}

fn grpc_status(headers: &http::HeaderMap) -> Option<String> {
    let n: i32 = headers.get("grpc-status")?.to_str().ok()?.parse().ok()?;
    Some(format!("{:?}", tonic::Code::from_i32(n)))
}

struct Metered {
    inner: Body,
    meter: Option<Meter>,
}

impl http_body::Body for Metered {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(grpc_status) {
                    if let Some(mut m) = self.meter.take() {
                        m.finish(&code);
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(mut m) = self.meter.take() {
                    m.finish(&format!("{:?}", e.code()));
                }
            }
            Poll::Ready(None) => {
                if let Some(mut m) = self.meter.take() {
                    m.finish("Ok");
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
