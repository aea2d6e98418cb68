//! The Lambda Runtime API, served to one execution environment's process.
//!
//! The function's runtime client loops on
//! `GET /2018-06-01/runtime/invocation/next`, which blocks until the worker
//! hands it an event, and answers with
//! `POST /2018-06-01/runtime/invocation/{id}/response` or `…/{id}/error`;
//! a runtime that cannot start reports `POST /2018-06-01/runtime/init/error`.
//! The event comes with the headers `Lambda-Runtime-Aws-Request-Id`,
//! `Lambda-Runtime-Deadline-Ms`, `Lambda-Runtime-Invoked-Function-Arn` and
//! `Lambda-Runtime-Trace-Id`, as on AWS.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use tokio::sync::{mpsc, oneshot, Notify};

/// One invocation handed to the runtime.
#[derive(Debug)]
pub struct Invocation {
    /// `Lambda-Runtime-Aws-Request-Id`.
    pub request_id: String,
    /// The event.
    pub payload: Bytes,
    /// Milliseconds since the epoch by which it must finish.
    pub deadline_ms: u64,
    /// `Lambda-Runtime-Invoked-Function-Arn`.
    pub function_arn: String,
    /// `Lambda-Runtime-Trace-Id`.
    pub trace_id: String,
    /// Where the runtime's answer goes.
    pub reply: oneshot::Sender<Answer>,
}

/// What the runtime answered for an invocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// `…/response`: the function's result.
    Response(Bytes),
    /// `…/error`: a function error, with the
    /// `Lambda-Runtime-Function-Error-Type` header and the error document.
    Error {
        /// The error type header, if sent.
        error_type: Option<String>,
        /// The body (`{"errorMessage", "errorType", "stackTrace"}`).
        body: Bytes,
    },
}

/// A runtime's report that it could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitError {
    /// The error type header, if sent.
    pub error_type: Option<String>,
    /// The error document.
    pub body: Bytes,
}

/// Largest response or error document a runtime may post, bytes.
pub const RESPONSE_MAX: usize = (6 << 20) + (64 << 10);

struct Shared {
    next: tokio::sync::Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Answer>>>,
    init_error: Mutex<Option<InitError>>,
    init_failed: Notify,
    /// When the runtime first asked for an invocation: its init is done.
    ready_at: Mutex<Option<std::time::Instant>>,
    ready: Notify,
}

/// The Runtime API of one environment.
pub struct RuntimeApi {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: tokio::task::JoinHandle<()>,
}

impl RuntimeApi {
    /// Serves the API on a free loopback port; invocations sent on the
    /// returned sender reach the runtime's next `GET …/next`.
    pub async fn start() -> std::io::Result<(RuntimeApi, mpsc::Sender<Invocation>)> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(1);
        let shared = Arc::new(Shared {
            next: tokio::sync::Mutex::new(rx),
            pending: Mutex::new(HashMap::new()),
            init_error: Mutex::new(None),
            init_failed: Notify::new(),
            ready_at: Mutex::new(None),
            ready: Notify::new(),
        });
        let app = axum::Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            // A synchronous response may be 6 MiB (axum's default is 2).
            .layer(axum::extract::DefaultBodyLimit::max(RESPONSE_MAX))
            .with_state(shared.clone());
        let server = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::warn!(error = %e, "runtime API server stopped");
            }
        });
        Ok((
            RuntimeApi {
                addr,
                shared,
                server,
            },
            tx,
        ))
    }

    /// `host:port` for `AWS_LAMBDA_RUNTIME_API`.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    /// The init error the runtime reported, if it did.
    pub fn init_error(&self) -> Option<InitError> {
        self.shared
            .init_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// When the runtime first called `…/next` (its initialisation was
    /// over), if it has.
    pub fn ready_at(&self) -> Option<std::time::Instant> {
        *self
            .shared
            .ready_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until the runtime first calls `…/next`.
    pub async fn became_ready(&self) -> std::time::Instant {
        wait_for(&self.shared.ready, || self.ready_at()).await
    }

    /// Waits until the runtime reports an init error.
    pub async fn init_failed(&self) -> InitError {
        wait_for(&self.shared.init_failed, || self.init_error()).await
    }
}

/// Waits until `seen` finds something, looking again each time `notify`
/// is notified (and first, once the wait for a notification is on).
async fn wait_for<T>(notify: &Notify, seen: impl Fn() -> Option<T>) -> T {
    loop {
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if let Some(v) = seen() {
            return v;
        }
        notified.await;
    }
}

impl Drop for RuntimeApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn next(State(shared): State<Arc<Shared>>) -> Response {
    {
        let mut ready_at = shared.ready_at.lock().unwrap_or_else(|e| e.into_inner());
        if ready_at.is_none() {
            *ready_at = Some(std::time::Instant::now());
            shared.ready.notify_waiters();
        }
    }
    let mut rx = shared.next.lock().await;
    let Some(inv) = rx.recv().await else {
        // The environment is going away: nothing more will come.
        return (StatusCode::GONE, "the environment is shutting down").into_response();
    };
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(inv.request_id.clone(), inv.reply);
    (
        StatusCode::OK,
        [
            ("lambda-runtime-aws-request-id", inv.request_id),
            ("lambda-runtime-deadline-ms", inv.deadline_ms.to_string()),
            ("lambda-runtime-invoked-function-arn", inv.function_arn),
            ("lambda-runtime-trace-id", inv.trace_id),
            ("content-type", "application/json".to_string()),
        ],
        inv.payload,
    )
        .into_response()
}

fn take(shared: &Shared, id: &str) -> Option<oneshot::Sender<Answer>> {
    shared
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(id)
}

fn not_pending(id: &str) -> Response {
    let body = serde_json::json!({
        "errorMessage": format!("no invocation {id} is waiting for an answer"),
        "errorType": "InvalidRequestID",
    });
    (
        StatusCode::BAD_REQUEST,
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn response(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Response {
    match take(&shared, &id) {
        Some(reply) => {
            let _ = reply.send(Answer::Response(body));
            (StatusCode::ACCEPTED, "").into_response()
        }
        None => not_pending(&id),
    }
}

fn error_type(headers: &HeaderMap) -> Option<String> {
    headers
        .get("lambda-runtime-function-error-type")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

async fn error(
    State(shared): State<Arc<Shared>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match take(&shared, &id) {
        Some(reply) => {
            let _ = reply.send(Answer::Error {
                error_type: error_type(&headers),
                body,
            });
            (StatusCode::ACCEPTED, "").into_response()
        }
        None => not_pending(&id),
    }
}

async fn init_error(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    *shared.init_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(InitError {
        error_type: error_type(&headers),
        body,
    });
    shared.init_failed.notify_waiters();
    (StatusCode::ACCEPTED, "").into_response()
}
