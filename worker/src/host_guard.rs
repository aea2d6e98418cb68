//! Who may call a worker's `WorkerHost`: only the cluster's nodes, which
//! sign every call with the secret the cluster derived for this worker and
//! handed it in a heartbeat answer. Until a heartbeat has brought the
//! secret, every call is refused; a call signed otherwise is refused as
//! unauthenticated before the service sees it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use sluice_security::credentials::node_of_key;
use sluice_security::sigv4::{self, Canonical, Signed};
use tonic::body::Body;

/// Adds the check to the worker's server.
#[derive(Clone)]
pub struct HostGuardLayer {
    secret: Arc<RwLock<Vec<String>>>,
}

impl HostGuardLayer {
    /// Checks calls against the secrets in `secret` (set by heartbeats).
    pub fn new(secret: Arc<RwLock<Vec<String>>>) -> Self {
        HostGuardLayer { secret }
    }
}

impl<S> tower::Layer<S> for HostGuardLayer {
    type Service = HostGuard<S>;

    fn layer(&self, inner: S) -> HostGuard<S> {
        HostGuard {
            inner,
            secret: self.secret.clone(),
        }
    }
}

/// The checked service.
#[derive(Clone)]
pub struct HostGuard<S> {
    inner: S,
    secret: Arc<RwLock<Vec<String>>>,
}

/// Why a call is refused, if it is.
fn refusal(parts: &http::request::Parts, secrets: &[String]) -> Option<String> {
    if secrets.is_empty() {
        return Some("this worker has not registered with the cluster yet".into());
    }
    let canonical = Canonical {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query().unwrap_or(""),
        payload_hash: sigv4::UNSIGNED_PAYLOAD,
        authority: parts.uri.authority().map(|a| a.as_str()),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let signed = match Signed::read(&canonical, &parts.headers, now, Some(sigv4::GRPC_SERVICE)) {
        Ok(s) => s,
        Err(e) => return Some(e.to_string()),
    };
    if node_of_key(&signed.authorization.access_key_id).is_none() {
        return Some("only the cluster's nodes may call WorkerHost".into());
    }
    if secrets.iter().any(|s| signed.verify(s).is_ok()) {
        None
    } else {
        Some(sluice_security::sigv4::SigError::Mismatch.to_string())
    }
}

impl<S> tower::Service<http::Request<Body>> for HostGuard<S>
where
    S: tower::Service<http::Request<Body>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let (parts, body) = request.into_parts();
        let why = {
            let secret = self.secret.read().unwrap_or_else(|e| e.into_inner());
            refusal(&parts, &secret)
        };
        if let Some(why) = why {
            tracing::warn!(target: "sluice::audit", operation = %parts.uri.path(), reason = %why, "refused a WorkerHost call");
            let mut status = tonic::Status::unauthenticated(why);
            status.metadata_mut().insert(
                sluice_proto::ERROR_CODE_HEADER,
                tonic::metadata::MetadataValue::from_static("AccessDenied"),
            );
            return Box::pin(async move { Ok(status.into_http()) });
        }
        let fut = self.inner.call(http::Request::from_parts(parts, body));
        Box::pin(fut)
    }
}
