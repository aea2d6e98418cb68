//! Keys and certificates for secured test clusters: a CA, a certificate per
//! node naming its hosts, client certificates, a cluster key and the
//! administrator's access key, all written under the cluster's directory.

use std::path::{Path, PathBuf};

use sluice_client::{CertFiles, ClientTls, Credentials, Options};
use sluice_security::pki::{Authority, Validity};

/// A secured cluster's keys and certificates.
pub struct Pki {
    dir: PathBuf,
    authority: Authority,
    /// The CA's certificate: every node's and client's certificate comes
    /// from it.
    pub ca: PathBuf,
    /// The cluster key.
    pub cluster_key: PathBuf,
    /// The first administrator's access key.
    pub admin: Credentials,
    /// The file it is in (for `--admin-credentials-file`).
    pub admin_file: PathBuf,
}

impl Pki {
    /// Makes a CA, a cluster key and an administrator's key under `dir`.
    pub fn new(dir: &Path) -> Pki {
        let authority = Authority::new("sluice test ca").expect("a CA");
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, authority.cert_pem()).expect("writing the CA");
        let cluster_key = crate::cluster_key(dir);
        let admin = Credentials::generate();
        let admin_file = dir.join("admin.credentials");
        std::fs::write(&admin_file, admin.to_file_text()).expect("writing the admin key");
        Pki {
            dir: dir.to_path_buf(),
            authority,
            ca,
            cluster_key,
            admin,
            admin_file,
        }
    }

    /// Issues a certificate for `name` (its subject's common name) valid
    /// for `hosts`, written as `{file}.pem` and `{file}.key`.
    pub fn issue(&self, file: &str, name: &str, hosts: &[&str], validity: Validity) -> CertFiles {
        let issued = self
            .authority
            .issue(name, hosts, validity)
            .expect("issuing a certificate");
        let cert = self.dir.join(format!("{file}.pem"));
        let key = self.dir.join(format!("{file}.key"));
        std::fs::write(&cert, issued.cert_pem).expect("writing a certificate");
        std::fs::write(&key, issued.key_pem).expect("writing a key");
        CertFiles { cert, key }
    }

    /// The flags that secure node `id`: TLS on both listeners with a
    /// certificate for loopback, mutual TLS between nodes, authentication
    /// with the administrator's key (the cluster key is the cluster's).
    pub fn node_args(&self, id: u64) -> Vec<String> {
        let files = self.issue(
            &format!("node-{id}"),
            &format!("node-{id}"),
            &["127.0.0.1", "localhost"],
            Validity::Days(2),
        );
        self.args_serving(&files, None)
    }

    /// The flags that secure a node serving the certificate `public` on its
    /// public port (and `cluster`, when given, on its cluster listener):
    /// mutual TLS between nodes trusting this CA, authentication with the
    /// administrator's key.
    pub fn args_serving(&self, public: &CertFiles, cluster: Option<&CertFiles>) -> Vec<String> {
        let p = |p: &Path| p.display().to_string();
        let mut args = vec![
            "--tls-cert".into(),
            p(&public.cert),
            "--tls-key".into(),
            p(&public.key),
        ];
        if let Some(cluster) = cluster {
            args.extend([
                "--cluster-tls-cert".into(),
                p(&cluster.cert),
                "--cluster-tls-key".into(),
                p(&cluster.key),
            ]);
        }
        args.extend([
            "--cluster-ca".into(),
            p(&self.ca),
            "--auth".into(),
            "--admin-credentials-file".into(),
            p(&self.admin_file),
        ]);
        args
    }

    /// TLS trusting this CA.
    pub fn client_tls(&self) -> ClientTls {
        ClientTls {
            enabled: true,
            ca: Some(self.ca.clone()),
            ..ClientTls::default()
        }
    }

    /// GET `path` of a node's public port over HTTPS, trusting this CA:
    /// the body (probes and `/metrics` need no credentials).
    pub async fn https_get(&self, addr: &str, path: &str) -> Result<String, String> {
        https_get(&self.ca, addr, path).await
    }

    /// `base` with TLS trusting this CA and calls signed with `credentials`.
    pub fn options(&self, base: Options, credentials: Option<Credentials>) -> Options {
        Options {
            tls: self.client_tls(),
            credentials,
            ..base
        }
    }
}

/// GET `path` of a node's public port over HTTPS, trusting the CA in the
/// PEM file `ca`: the body.
pub async fn https_get(ca: &Path, addr: &str, path: &str) -> Result<String, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("{}: {e}", ca.display()))?;
    let ca = reqwest::Certificate::from_pem(&pem).map_err(|e| e.to_string())?;
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(std::time::Duration::from_secs(5))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("https://{addr}{path}");
    http.get(&url)
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?
        .text()
        .await
        .map_err(|e| format!("{url}: {e}"))
}
