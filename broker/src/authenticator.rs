//! Turns a request's credentials into a [`Caller`].
//!
//! On the public listener a caller is, in order: anyone at all when
//! authentication is off; the signer of an `Authorization: AWS4-HMAC-SHA256`
//! header (the bootstrap administrator, or a stored principal's access key);
//! the principal a verified client certificate names (its subject's common
//! name); otherwise nobody, and the call is refused. On the cluster listener
//! only nodes are taken: calls signed with the node credential that the
//! cluster key derives, over mutual TLS when the cluster has it.
//!
//! What a key resolves to (its principal, its secret opened, its policies
//! parsed) is cached and dropped whenever the replicated IAM generation
//! moves, so each call costs one small read. A key this node does not know
//! may be one its state has not applied yet: it asks the leader, at most
//! [`FALLBACKS_PER_SECOND`] times a second, so unknown keys cannot turn into
//! a flood of leader reads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::clock::now_ms;

use sluice_security::sigv4::{self, Canonical, SigError, Signed};
use sluice_security::tls::PeerInfo;

use crate::auth::caller::{Caller, Proof, Resolved};
use crate::auth::{node_of_key, NodeSecurity};
use crate::command::{Query, QueryOutput, Registered};
use crate::iam::{self, builtin};
use crate::router::Router;

/// Leader reads for keys this node does not know, at most, per second.
pub const FALLBACKS_PER_SECOND: u32 = 20;
/// Most resolved keys and certificate names cached.
const CACHE_MAX: usize = 10_000;

/// Which listener a call came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The public port.
    Public,
    /// The node-to-node port.
    Cluster,
}

impl Listener {
    /// `public` or `cluster`, for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Listener::Public => "public",
            Listener::Cluster => "cluster",
        }
    }
}

/// A refused authentication: the AWS error code and what to tell the
/// caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthError {
    /// E.g. `SignatureDoesNotMatch`.
    pub code: &'static str,
    /// One line, never echoing a secret.
    pub message: String,
}

impl From<SigError> for AuthError {
    fn from(e: SigError) -> Self {
        AuthError {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn unknown_key(id: &str) -> AuthError {
    AuthError {
        code: "InvalidClientTokenId",
        message: format!(
            "the access key id {} is not known to this cluster",
            id.chars().take(32).collect::<String>()
        ),
    }
}

struct CachedKey {
    resolved: Arc<Resolved>,
    secret: String,
}

#[derive(Default)]
struct Cache {
    generation: u64,
    keys: HashMap<String, Arc<CachedKey>>,
    by_name: HashMap<String, Arc<Resolved>>,
}

struct Budget {
    second: Instant,
    used: u32,
}

/// Authenticates calls.
pub struct Authenticator {
    security: Arc<NodeSecurity>,
    router: Router,
    cache: Mutex<Cache>,
    budget: Mutex<Budget>,
}

impl Authenticator {
    /// An authenticator reading principals through `router`.
    pub fn new(security: Arc<NodeSecurity>, router: Router) -> Authenticator {
        Authenticator {
            security,
            router,
            cache: Mutex::default(),
            budget: Mutex::new(Budget {
                second: Instant::now(),
                used: 0,
            }),
        }
    }

    /// The node's security.
    pub fn security(&self) -> &Arc<NodeSecurity> {
        &self.security
    }

    /// Who sent the request whose head is `parts`.
    pub async fn authenticate(
        &self,
        listener: Listener,
        parts: &http::request::Parts,
    ) -> Result<Caller, AuthError> {
        match listener {
            Listener::Cluster => self.node(parts),
            Listener::Public if !self.security.auth => Ok(Caller::Anonymous),
            Listener::Public => {
                if parts.headers.contains_key(http::header::AUTHORIZATION) {
                    return self.signed(parts).await;
                }
                let cert = parts
                    .extensions
                    .get::<PeerInfo>()
                    .and_then(|p| p.certs.clone())
                    .filter(|_| self.security.client_ca.is_some());
                if let Some(chain) = cert {
                    return self.certified(&chain[0]).await;
                }
                Err(SigError::Missing.into())
            }
        }
    }

    /// Who sent an AWS-protocol request (an SDK's or the aws CLI's), whose
    /// head is `parts` and whose whole body is `body`, signed for
    /// `service` (`sqs`, `sns`, ...). With authentication off anyone is
    /// taken and the signature is not looked at, as the AWS emulators do.
    pub async fn authenticate_aws(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        service: &str,
    ) -> Result<Caller, AuthError> {
        if !self.security.auth {
            return Ok(Caller::Anonymous);
        }
        let mut hash = sigv4::sha256_hex(body);
        // A client may say what it hashed, or that it left the body out of
        // the signature; a hash that is not the body's is refused.
        match parts
            .headers
            .get("x-amz-content-sha256")
            .map(|v| v.as_bytes())
        {
            Some(claimed) if claimed == sigv4::UNSIGNED_PAYLOAD.as_bytes() => {
                hash = sigv4::UNSIGNED_PAYLOAD.to_string();
            }
            Some(claimed) if claimed != hash.as_bytes() => return Err(SigError::Mismatch.into()),
            _ => {}
        }
        let signed = Self::read_signed(parts, &hash, service)?;
        self.resolve_signed(signed).await
    }

    fn read(parts: &http::request::Parts) -> Result<Signed, AuthError> {
        Self::read_signed(parts, sigv4::UNSIGNED_PAYLOAD, sigv4::GRPC_SERVICE)
    }

    fn read_signed(
        parts: &http::request::Parts,
        payload_hash: &str,
        service: &str,
    ) -> Result<Signed, AuthError> {
        let canonical = Canonical {
            method: parts.method.as_str(),
            path: parts.uri.path(),
            query: parts.uri.query().unwrap_or(""),
            payload_hash,
            authority: parts.uri.authority().map(|a| a.as_str()),
        };
        Ok(Signed::read(
            &canonical,
            &parts.headers,
            now_ms(),
            Some(service),
        )?)
    }

    fn node(&self, parts: &http::request::Parts) -> Result<Caller, AuthError> {
        let signed = Self::read(parts)?;
        let id = node_of_key(&signed.authorization.access_key_id).ok_or_else(|| AuthError {
            code: "AccessDenied",
            message: "the cluster listener takes only calls from the cluster's nodes".into(),
        })?;
        let ok = self
            .security
            .node_secrets()
            .iter()
            .any(|s| signed.verify(s).is_ok());
        if !ok {
            return Err(AuthError {
                code: "SignatureDoesNotMatch",
                message: format!("node {id} did not sign with this cluster's key: the nodes' --cluster-key-file differ"),
            });
        }
        Ok(Caller::Node(id))
    }

    async fn signed(&self, parts: &http::request::Parts) -> Result<Caller, AuthError> {
        self.resolve_signed(Self::read(parts)?).await
    }

    /// The caller whose key signed `signed`, once its signature is checked.
    async fn resolve_signed(&self, signed: Signed) -> Result<Caller, AuthError> {
        let id = signed.authorization.access_key_id.clone();
        if let Some(admin) = &self.security.admin {
            if admin.access_key_id == id {
                signed.verify(&admin.secret_access_key)?;
                return Ok(Caller::Admin { access_key_id: id });
            }
        }
        if node_of_key(&id).is_some() {
            return Err(AuthError {
                code: "AccessDenied",
                message: "node credentials are taken on the cluster listener only".into(),
            });
        }
        let key = self.key(&id).await?;
        signed.verify(&key.secret)?;
        Ok(Caller::Principal(
            key.resolved.clone(),
            Proof::AccessKey(id),
        ))
    }

    async fn certified(
        &self,
        cert: &sluice_security::tls::CertificateDer<'static>,
    ) -> Result<Caller, AuthError> {
        let name = sluice_security::identity::common_name(cert).ok_or_else(|| AuthError {
            code: "InvalidClientTokenId",
            message: "the client certificate has no subject common name to name a principal by"
                .into(),
        })?;
        let generation = self.generation()?;
        if let Some(r) = self.cached(generation, |c| c.by_name.get(&name).cloned()) {
            return Ok(Caller::Principal(r, Proof::Certificate));
        }
        let principal = match self.local(iam::GetPrincipal { name: name.clone() })? {
            Some(p) => p,
            None => {
                return Err(AuthError {
                    code: "InvalidClientTokenId",
                    message: format!(
                    "the client certificate names {:?}, which is not a principal of this cluster",
                    name.chars().take(64).collect::<String>()
                ),
                })
            }
        };
        let resolved = Arc::new(self.resolve(principal)?);
        self.remember(generation, |c| {
            c.by_name.insert(name, resolved.clone());
        });
        Ok(Caller::Principal(resolved, Proof::Certificate))
    }

    fn internal(e: impl std::fmt::Display) -> AuthError {
        AuthError {
            code: "InternalFailure",
            message: format!("could not read principals: {e}"),
        }
    }

    /// Runs an IAM read on this node's applied state; `None` when it is
    /// rejected (not found).
    fn local<O>(&self, read: O) -> Result<Option<O::Output>, AuthError>
    where
        O: Registered<Carrier = Query, Reply = QueryOutput>,
    {
        match self
            .router
            .read_local(&read.carry())
            .map_err(Self::internal)?
        {
            Ok(out) => O::output(out)
                .map(Some)
                .ok_or_else(|| Self::internal("unexpected reply")),
            Err(_) => Ok(None),
        }
    }

    fn generation(&self) -> Result<u64, AuthError> {
        self.local(iam::Generation)?
            .ok_or_else(|| Self::internal("no generation"))
    }

    fn cached<T>(&self, generation: u64, f: impl FnOnce(&Cache) -> Option<T>) -> Option<T> {
        let c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        (c.generation == generation).then(|| f(&c)).flatten()
    }

    fn remember(&self, generation: u64, f: impl FnOnce(&mut Cache)) {
        let mut c = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if c.generation != generation || c.keys.len() + c.by_name.len() >= CACHE_MAX {
            *c = Cache {
                generation,
                ..Cache::default()
            };
        }
        f(&mut c);
    }

    fn may_ask_leader(&self) -> bool {
        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        if b.second.elapsed().as_secs() >= 1 {
            b.second = Instant::now();
            b.used = 0;
        }
        b.used += 1;
        b.used <= FALLBACKS_PER_SECOND
    }

    async fn key(&self, id: &str) -> Result<Arc<CachedKey>, AuthError> {
        sluice_security::credentials::validate_key_id(id).map_err(|_| unknown_key(id))?;
        let generation = self.generation()?;
        if let Some(k) = self.cached(generation, |c| c.keys.get(id).cloned()) {
            return Ok(k);
        }
        let read = iam::GetAccessKey { id: id.to_string() };
        let mut found = self.local(read.clone())?.flatten();
        if found.is_none() && self.may_ask_leader() {
            // Made a moment ago, and not yet applied here?
            if let Ok(Ok(out)) = self.router.read(read.carry()).await {
                found = iam::GetAccessKey::output(out).flatten();
            }
        }
        let (key, principal) = found.ok_or_else(|| unknown_key(id))?;
        let secret = sluice_security::seal::open(&self.security.cluster_key, id, &key.sealed_secret)
            .map_err(|e| {
                tracing::error!(access_key_id = %id, error = %e, "an access key's secret does not open with this node's cluster key");
                AuthError {
                    code: "InvalidClientTokenId",
                    message: "the access key cannot be checked on this node (its cluster key differs); see the node's log".into(),
                }
            })?;
        let entry = Arc::new(CachedKey {
            resolved: Arc::new(self.resolve(principal)?),
            secret,
        });
        self.remember(generation, |c| {
            c.keys.insert(id.to_string(), entry.clone());
        });
        Ok(entry)
    }

    fn resolve(&self, principal: crate::iam::Principal) -> Result<Resolved, AuthError> {
        let mut policies = Vec::with_capacity(principal.policies.len());
        for name in &principal.policies {
            let document = match builtin::document(name) {
                Some(d) => d.to_string(),
                None => match self.local(iam::GetPolicy { name: name.clone() })? {
                    Some(p) => p.document,
                    // Detached and deleted meanwhile: grants nothing.
                    None => continue,
                },
            };
            match sluice_security::policy::Policy::parse(&document) {
                Ok(p) => policies.push(p),
                Err(e) => {
                    tracing::error!(policy = %name, error = %e, "a stored policy does not parse; it grants nothing")
                }
            }
        }
        Ok(Resolved {
            principal,
            policies,
        })
    }
}
