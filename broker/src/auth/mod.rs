//! Who a node is to others, and who is calling it.
//!
//! [`NodeSecurity`] is what a node holds to protect itself and prove itself:
//! the cluster key and what is derived from it (the node credential it signs
//! calls to other nodes with, the MAC keys of receipt handles and shard
//! iterators, the tokens it calls workers with), its certificates, and the
//! connectors it dials other nodes and workers through.
//!
//! [`crate::authenticator::Authenticator`] turns a request's signature or client
//! certificate into a [`caller::Caller`]; the API's guard layer
//! (`api::guard`) asks it on every call, then authorises the caller against
//! the action and resource of the RPC (`api::access`).

pub mod caller;
pub mod settings;

use std::path::Path;
use std::sync::Arc;

use ring::hmac;
use sluice_security::key::{ClusterKey, Purpose};
use sluice_security::mac::TokenKeys;
use sluice_security::tls::{self, Connector, ReloadingCa, ReloadingCert, Trust};
use sluice_security::Credentials;

use crate::node_id::NodeId;
use crate::outbound::Destinations;
pub use settings::{Mode, Security};

pub use sluice_security::credentials::{node_key_id, node_of_key, NODE_KEY_PREFIX};

/// Prefix of receipt handles (the MAC'd form).
pub const RECEIPT_PREFIX: &str = "sl2-";
/// Prefix of shard iterators (the MAC'd form).
pub const ITERATOR_PREFIX: &str = "si2-";

/// What a node holds to protect itself and to prove itself to others.
pub struct NodeSecurity {
    /// How the node is protected.
    pub mode: Mode,
    /// Whether callers of the public listener must authenticate.
    pub auth: bool,
    /// This node.
    pub node_id: NodeId,
    /// The cluster key.
    pub cluster_key: ClusterKey,
    /// Makes and checks receipt handles.
    pub receipts: TokenKeys,
    /// Makes and checks shard iterators.
    pub iterators: TokenKeys,
    /// What this node signs its calls to other nodes with.
    pub node_credentials: Credentials,
    /// How this node dials other nodes' cluster listeners (mutual TLS when
    /// the cluster has it).
    pub cluster_connector: Connector,
    /// This node's certificate on the cluster listener, presented to
    /// workers too.
    pub cluster_identity: Option<Arc<ReloadingCert>>,
    /// Its CA: whom the cluster listener takes.
    pub cluster_ca: Option<Arc<ReloadingCa>>,
    /// The public listener's certificate.
    pub public_identity: Option<Arc<ReloadingCert>>,
    /// Whom the public listener takes client certificates from.
    pub client_ca: Option<Arc<ReloadingCa>>,
    /// The first administrator's access key.
    pub admin: Option<Credentials>,
    /// Where topic subscriptions may deliver over HTTP/S.
    pub destinations: Arc<Destinations>,
}

impl std::fmt::Debug for NodeSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeSecurity")
            .field("mode", &self.mode)
            .field("auth", &self.auth)
            .field("cluster_key", &self.cluster_key.current().id())
            .finish()
    }
}

fn hmac_hex(key: &[u8; 32], parts: &[&[u8]]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, key);
    let mut ctx = hmac::Context::with_key(&key);
    for p in parts {
        ctx.update(&(p.len() as u64).to_be_bytes());
        ctx.update(p);
    }
    hex::encode(ctx.sign().as_ref())
}

impl NodeSecurity {
    /// Loads the cluster key (making a single node's own on first start),
    /// certificates and the administrator's credentials that `s` names, for
    /// node `node_id` with its data in `data_dir`.
    pub fn load(s: &Security, data_dir: &Path, node_id: NodeId) -> Result<NodeSecurity, String> {
        let cluster_key = match &s.cluster_key_file {
            Some(path) => ClusterKey::load(path).map_err(|e| format!("--cluster-key-file {e}"))?,
            None => {
                std::fs::create_dir_all(data_dir)
                    .map_err(|e| format!("--data-dir {}: {e}", data_dir.display()))?;
                let path = data_dir.join("cluster.key");
                let (key, created) =
                    ClusterKey::load_or_create(&path).map_err(|e| format!("cluster key {e}"))?;
                if created {
                    tracing::info!(path = %path.display(), "made this node's cluster key; give a copy to any node that joins it (--cluster-key-file)");
                }
                key
            }
        };
        let cert = |files: &sluice_security::tls::CertFiles, flag: &str| {
            ReloadingCert::load(files.clone()).map_err(|e| format!("{flag}: {e}"))
        };
        let public_identity = s
            .tls
            .as_ref()
            .map(|f| cert(f, "--tls-cert/--tls-key"))
            .transpose()?;
        let client_ca = s
            .client_ca
            .as_ref()
            .map(|p| ReloadingCa::load(p).map_err(|e| format!("--tls-client-ca: {e}")))
            .transpose()?;
        let (cluster_identity, cluster_ca) = match &s.cluster_tls {
            Some(t) => (
                Some(cert(&t.cert, "--cluster-tls-cert/--cluster-tls-key")?),
                Some(ReloadingCa::load(&t.ca).map_err(|e| format!("--cluster-ca: {e}"))?),
            ),
            None => (None, None),
        };
        let cluster_connector = match (&cluster_identity, &cluster_ca) {
            (Some(id), Some(ca)) => Connector::tls(
                tls::client_config(Trust::Ca(ca.clone()), Some(id.clone())),
                None,
            ),
            _ => Connector::plain(),
        };
        let admin = if s.auth {
            let creds = match &s.admin_credentials_file {
                Some(p) => Some(
                    Credentials::from_file(p)
                        .map_err(|e| format!("--admin-credentials-file: {e}"))?,
                ),
                None => admin_from_env()?,
            };
            Some(creds.ok_or(
                "--auth: give the first administrator's access key: --admin-credentials-file, or SLUICE_ADMIN_ACCESS_KEY_ID and SLUICE_ADMIN_SECRET_ACCESS_KEY (make one with `sluice keygen --credentials`)",
            )?)
        } else {
            None
        };
        if let Some(a) = &admin {
            if node_of_key(&a.access_key_id).is_some() {
                return Err(format!(
                    "--admin-credentials-file: access key ids starting with {NODE_KEY_PREFIX} are the nodes' own"
                ));
            }
        }
        let node_credentials = Credentials {
            access_key_id: node_key_id(node_id),
            secret_access_key: hex::encode(cluster_key.derive(Purpose::NodeCredential)),
        };
        Ok(NodeSecurity {
            mode: s.mode,
            auth: s.auth,
            node_id,
            receipts: TokenKeys::new(RECEIPT_PREFIX, &cluster_key.derive_all(Purpose::ReceiptMac)),
            iterators: TokenKeys::new(
                ITERATOR_PREFIX,
                &cluster_key.derive_all(Purpose::IteratorMac),
            ),
            cluster_key,
            node_credentials,
            cluster_connector,
            cluster_identity,
            cluster_ca,
            public_identity,
            client_ca,
            admin,
            destinations: Arc::new(s.destinations.clone()),
        })
    }

    /// A node's security for tests: a fresh cluster key, no TLS, no
    /// authentication.
    pub fn for_tests(node_id: NodeId) -> NodeSecurity {
        let cluster_key =
            ClusterKey::new(vec![sluice_security::key::Key::generate()]).expect("one key");
        NodeSecurity {
            mode: Mode::Development,
            auth: false,
            node_id,
            receipts: TokenKeys::new(RECEIPT_PREFIX, &cluster_key.derive_all(Purpose::ReceiptMac)),
            iterators: TokenKeys::new(
                ITERATOR_PREFIX,
                &cluster_key.derive_all(Purpose::IteratorMac),
            ),
            node_credentials: Credentials {
                access_key_id: node_key_id(node_id),
                secret_access_key: hex::encode(cluster_key.derive(Purpose::NodeCredential)),
            },
            cluster_key,
            cluster_connector: Connector::plain(),
            cluster_identity: None,
            cluster_ca: None,
            public_identity: None,
            client_ca: None,
            admin: None,
            destinations: Arc::new(Destinations::open()),
        }
    }

    /// The secrets node credentials may be signed with (one per cluster
    /// key, the one in use first).
    pub fn node_secrets(&self) -> Vec<String> {
        self.cluster_key
            .derive_all(Purpose::NodeCredential)
            .iter()
            .map(hex::encode)
            .collect()
    }

    /// The secret nodes sign calls to worker `worker_id`, registered by
    /// `owner`, with (and that the worker learns from its heartbeats): only
    /// the cluster and that worker know it.
    pub fn worker_host_secret(&self, owner: &str, worker_id: &str) -> String {
        self.worker_host_secrets(owner, worker_id).swap_remove(0)
    }

    /// [`NodeSecurity::worker_host_secret`] under every cluster key, the one
    /// in use first (a worker takes any, so a key can be rotated).
    pub fn worker_host_secrets(&self, owner: &str, worker_id: &str) -> Vec<String> {
        self.cluster_key
            .derive_all(Purpose::WorkerHost)
            .iter()
            .map(|k| hmac_hex(k, &[owner.as_bytes(), worker_id.as_bytes()]))
            .collect()
    }

    /// The answer node `node_id` gives to `challenge`, proving it holds the
    /// cluster key (any of the keys in use).
    pub fn challenge_answers(&self, challenge: &[u8], node_id: NodeId) -> Vec<String> {
        self.cluster_key
            .derive_all(Purpose::Challenge)
            .iter()
            .map(|k| hmac_hex(k, &[challenge, &node_id.to_be_bytes()]))
            .collect()
    }

    /// How to dial a worker: a node's own in-process worker on its cluster
    /// listener like any node; another worker by the certificate it
    /// registered (pinned), presenting this node's cluster certificate.
    pub fn worker_connector(&self, owner_is_node: bool, fingerprint: &str) -> Connector {
        if owner_is_node {
            return self.cluster_connector.clone();
        }
        if fingerprint.is_empty() {
            return Connector::plain();
        }
        Connector::tls(
            tls::client_config(
                Trust::Pinned(fingerprint.to_string()),
                self.cluster_identity.clone(),
            ),
            // The pin decides; the name is not checked.
            Some("worker.sluice.invalid".into()),
        )
    }

    /// Whether the cluster runs mutual TLS between nodes (and so requires
    /// workers to serve TLS).
    pub fn cluster_tls(&self) -> bool {
        self.cluster_identity.is_some()
    }
}

fn admin_from_env() -> Result<Option<Credentials>, String> {
    const ID: &str = "SLUICE_ADMIN_ACCESS_KEY_ID";
    const SECRET: &str = "SLUICE_ADMIN_SECRET_ACCESS_KEY";
    match (std::env::var(ID), std::env::var(SECRET)) {
        (Ok(id), Ok(secret)) => {
            let c = Credentials {
                access_key_id: id.trim().to_string(),
                secret_access_key: secret.trim().to_string(),
            };
            c.validate().map_err(|e| format!("{ID}/{SECRET}: {e}"))?;
            Ok(Some(c))
        }
        (Err(_), Err(_)) => Ok(None),
        _ => Err(format!("{ID} and {SECRET}: set both or neither")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_key_ids_round_trip_and_others_are_not_nodes() {
        assert_eq!(node_key_id(3), "SLUICENODE000003");
        assert_eq!(node_of_key(&node_key_id(3)), Some(3));
        assert_eq!(node_of_key("SLAKAAAAAAAAAAAAAAAA"), None);
        assert_eq!(node_of_key("SLUICENODE000000"), None);
        sluice_security::credentials::validate_key_id(&node_key_id(1)).unwrap();
    }

    #[test]
    fn worker_host_secrets_differ_by_owner_and_worker() {
        let s = NodeSecurity::for_tests(1);
        let a = s.worker_host_secret("alice", "w1");
        assert_ne!(a, s.worker_host_secret("bob", "w1"));
        assert_ne!(a, s.worker_host_secret("alice", "w2"));
        assert_eq!(a, s.worker_host_secret("alice", "w1"));
        // Lengths are part of the input: no shifting bytes between fields.
        assert_ne!(
            s.worker_host_secret("ab", "c"),
            s.worker_host_secret("a", "bc")
        );
    }
}
