//! The client half of authentication: a tower layer that signs every gRPC
//! call with the caller's access key (AWS Signature Version 4, service
//! `sluice`; see [`crate::sigv4`]). Wrapped around a tonic `Channel`, it is
//! what generated clients call through; without credentials it passes calls
//! on untouched (the development mode needs none).

use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{SystemTime, UNIX_EPOCH};

use http::HeaderValue;
use ring::hmac;

use crate::credentials::Credentials;
use crate::sigv4::{self, Canonical, Scope};

struct Signing {
    credentials: Credentials,
    region: String,
    service: String,
    /// The signing key of the current day (it depends on the date only).
    key: Mutex<Option<(String, hmac::Key)>>,
}

/// Signs the requests it passes to `S`.
#[derive(Clone)]
pub struct Signer<S> {
    inner: S,
    signing: Option<Arc<Signing>>,
}

impl<S> std::fmt::Debug for Signer<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field(
                "access_key_id",
                &self
                    .signing
                    .as_ref()
                    .map(|s| s.credentials.access_key_id.as_str()),
            )
            .finish()
    }
}

/// A tonic channel whose calls are signed.
pub type SignedChannel = Signer<tonic::transport::Channel>;

impl<S> Signer<S> {
    /// Signs with `credentials` (none: passes calls through) for `region`
    /// and the gRPC service name.
    pub fn new(inner: S, credentials: Option<Credentials>, region: &str) -> Signer<S> {
        Self::for_service(inner, credentials, region, sigv4::GRPC_SERVICE)
    }

    /// Signs for another service name.
    pub fn for_service(
        inner: S,
        credentials: Option<Credentials>,
        region: &str,
        service: &str,
    ) -> Signer<S> {
        Signer {
            inner,
            signing: credentials.map(|credentials| {
                Arc::new(Signing {
                    credentials,
                    region: region.to_string(),
                    service: service.to_string(),
                    key: Mutex::new(None),
                })
            }),
        }
    }

    /// A signer sharing this one's credentials, around another service.
    pub fn with_inner<T>(&self, inner: T) -> Signer<T> {
        Signer {
            inner,
            signing: self.signing.clone(),
        }
    }

    /// The access key id calls are signed with, if any.
    pub fn access_key_id(&self) -> Option<&str> {
        self.signing
            .as_ref()
            .map(|s| s.credentials.access_key_id.as_str())
    }
}

impl Signing {
    fn sign(&self, parts: &mut http::request::Parts) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let amz_date = sigv4::format_amz_date(now);
        let scope = Scope {
            date: amz_date[..8].to_string(),
            region: self.region.clone(),
            service: self.service.clone(),
        };
        parts.headers.insert(
            sigv4::DATE_HEADER,
            HeaderValue::from_str(&amz_date).expect("a date is ASCII"),
        );
        let mut signed = Vec::with_capacity(2);
        if parts.headers.contains_key(http::header::CONTENT_TYPE) {
            signed.push("content-type".to_string());
        }
        signed.push(sigv4::DATE_HEADER.to_string());
        let canonical = Canonical {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            payload_hash: sigv4::UNSIGNED_PAYLOAD,
            authority: None,
        };
        let text = canonical
            .text(&parts.headers, &signed)
            .expect("the signed headers were just checked");
        let key = {
            let mut cache = self.key.lock().unwrap_or_else(|e| e.into_inner());
            match &*cache {
                Some((date, key)) if *date == scope.date => key.clone(),
                _ => {
                    let key = sigv4::signing_key(&self.credentials.secret_access_key, &scope);
                    *cache = Some((scope.date.clone(), key.clone()));
                    key
                }
            }
        };
        let sts = sigv4::string_to_sign(&amz_date, &scope, &text);
        let signature = hmac::sign(&key, sts.as_bytes());
        let value = format!(
            "{} Credential={}/{scope}, SignedHeaders={}, Signature={}",
            sigv4::ALGORITHM,
            self.credentials.access_key_id,
            signed.join(";"),
            hex::encode(signature.as_ref())
        );
        parts.headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&value).expect("the authorization is ASCII"),
        );
        parts.headers.insert(
            sigv4::CONTENT_SHA256_HEADER,
            HeaderValue::from_static(sigv4::UNSIGNED_PAYLOAD),
        );
    }
}

impl<S, B> tower::Service<http::Request<B>> for Signer<S>
where
    S: tower::Service<http::Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let Some(signing) = &self.signing else {
            return self.inner.call(request);
        };
        let (mut parts, body) = request.into_parts();
        signing.sign(&mut parts);
        self.inner.call(http::Request::from_parts(parts, body))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sigv4::Signed;

    #[test]
    fn signed_requests_verify_on_the_server_side() {
        let creds = Credentials::generate();
        let signing = Signing {
            credentials: creds.clone(),
            region: "eu-west-1".into(),
            service: sigv4::GRPC_SERVICE.into(),
            key: Mutex::new(None),
        };
        let (mut parts, ()) = http::Request::post("/sluice.v1.Queues/SendMessage")
            .header("content-type", "application/grpc")
            .body(())
            .unwrap()
            .into_parts();
        signing.sign(&mut parts);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        let canonical = Canonical {
            method: "POST",
            path: "/sluice.v1.Queues/SendMessage",
            query: "",
            payload_hash: sigv4::UNSIGNED_PAYLOAD,
            authority: None,
        };
        let signed =
            Signed::read(&canonical, &parts.headers, now, Some(sigv4::GRPC_SERVICE)).unwrap();
        assert_eq!(signed.authorization.access_key_id, creds.access_key_id);
        assert_eq!(signed.authorization.scope.region, "eu-west-1");
        signed.verify(&creds.secret_access_key).unwrap();
        assert!(signed.verify("another secret entirely").is_err());
    }
}
