//! What protects a node, as its flags set it. The settings live with the
//! layer that uses them; `config` parses them from flags and the file.

use std::path::PathBuf;

use sluice_security::tls::CertFiles;

/// How a node is protected, as its flags say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Loopback only, no authentication: the zero-setup laptop default.
    Development,
    /// Reachable beyond this machine without TLS or authentication, because
    /// `--insecure` said so.
    Insecure,
    /// Callers authenticate (`--auth`).
    Secured,
}

/// The cluster listener's mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterTls {
    /// This node's certificate and key, presented as server and as client.
    pub cert: CertFiles,
    /// The cluster's CA: peers must present a certificate it issued.
    pub ca: PathBuf,
}

/// What protects a node and what it lets out.
#[derive(Debug, Clone)]
pub struct Security {
    /// How the node is protected.
    pub mode: Mode,
    /// TLS on the public listener.
    pub tls: Option<CertFiles>,
    /// Clients may present a certificate of this CA; its subject's common
    /// name names their principal.
    pub client_ca: Option<PathBuf>,
    /// Mutual TLS on the cluster listener and between nodes.
    pub cluster_tls: Option<ClusterTls>,
    /// Whether callers of the public listener must authenticate.
    pub auth: bool,
    /// The first administrator's access key, when not in the environment.
    pub admin_credentials_file: Option<PathBuf>,
    /// The cluster key; `None`: `{data-dir}/cluster.key`, made on a single
    /// node's first start.
    pub cluster_key_file: Option<PathBuf>,
    /// Where topic subscriptions may deliver over HTTP/S.
    pub destinations: crate::outbound::Destinations,
    /// The user functions of the in-process worker run as.
    pub function_user: Option<String>,
}
