//! TLS for every connection Sluice makes or takes, with rustls.
//!
//! Certificates, keys and CA bundles are read from PEM files and read again
//! when the files change (a Kubernetes secret being rotated swaps them under
//! a running process): each handshake checks, at most once a second, whether
//! the files' size, inode or modification time moved, and a file that does
//! not parse leaves the previous certificate in use (and says so in the log).
//! New connections use the new certificate; open ones keep theirs.
//!
//! The server side ([`incoming`]) accepts TCP connections and runs each
//! handshake in a task of its own, bounded by a timeout, so a client that
//! connects and says nothing holds up no one. The client side
//! ([`Connector`]) plugs into tonic's `Endpoint::connect_with_connector`.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
pub use rustls::pki_types::CertificateDer;
use rustls::pki_types::{PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore, ServerConfig};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

/// How often, at most, certificate files are checked for changes.
const RELOAD_CHECK: Duration = Duration::from_secs(1);

/// Why TLS could not be set up.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsError {
    /// The file at fault.
    pub path: String,
    /// What is wrong with it.
    pub reason: String,
}

fn tls_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError {
        path: path.display().to_string(),
        reason: reason.to_string(),
    }
}

/// The crypto provider every config here uses: ring, as in the rest of the
/// build.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// What identifies a file's contents without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    ino: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: m.modified().ok(),
        len: m.len(),
        ino: m.ino(),
    })
}

/// Reads every certificate in a PEM file.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_err(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| tls_err(path, format!("not a PEM certificate file: {e}")))?;
    if certs.is_empty() {
        return Err(tls_err(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// SHA-256 of a certificate's DER, hex: what a pinned peer is known by.
pub fn fingerprint(cert: &CertificateDer<'_>) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, cert.as_ref()))
}

/// A certificate chain and its key from two PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFiles {
    /// The certificate chain, leaf first.
    pub cert: PathBuf,
    /// The private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
}

impl CertFiles {
    fn load(&self) -> Result<Arc<CertifiedKey>, TlsError> {
        let certs = read_certs(&self.cert)?;
        let key = PrivateKeyDer::from_pem_file(&self.key)
            .map_err(|e| tls_err(&self.key, format!("not a PEM private key: {e}")))?;
        let certified = CertifiedKey::from_der(certs, key, &provider()).map_err(|e| {
            tls_err(
                &self.key,
                format!("does not go with {}: {e}", self.cert.display()),
            )
        })?;
        Ok(Arc::new(certified))
    }

    fn stamps(&self) -> (Option<Stamp>, Option<Stamp>) {
        (stamp(&self.cert), stamp(&self.key))
    }
}

#[derive(Debug)]
struct CertState {
    current: Arc<CertifiedKey>,
    stamps: (Option<Stamp>, Option<Stamp>),
    checked: Instant,
}

/// A certificate and key read from files and read again when they change;
/// serves as the certificate of a server and as a client's identity.
#[derive(Debug)]
pub struct ReloadingCert {
    files: CertFiles,
    state: Mutex<CertState>,
}

impl ReloadingCert {
    /// Reads the files now (an error if they do not make a certificate and
    /// key that go together).
    pub fn load(files: CertFiles) -> Result<Arc<ReloadingCert>, TlsError> {
        let current = files.load()?;
        let stamps = files.stamps();
        Ok(Arc::new(ReloadingCert {
            files,
            state: Mutex::new(CertState {
                current,
                stamps,
                checked: Instant::now(),
            }),
        }))
    }

    /// A fixed certificate (one made in memory, such as a worker's own).
    pub fn fixed(key: Arc<CertifiedKey>) -> Arc<ReloadingCert> {
        Arc::new(ReloadingCert {
            files: CertFiles {
                cert: PathBuf::new(),
                key: PathBuf::new(),
            },
            state: Mutex::new(CertState {
                current: key,
                stamps: (None, None),
                checked: Instant::now(),
            }),
        })
    }

    /// The certificate in use, reading the files again first if they
    /// changed.
    pub fn current(&self) -> Arc<CertifiedKey> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if self.files.cert.as_os_str().is_empty() || s.checked.elapsed() < RELOAD_CHECK {
            return s.current.clone();
        }
        s.checked = Instant::now();
        let stamps = self.files.stamps();
        if stamps != s.stamps {
            match self.files.load() {
                Ok(k) => {
                    tracing::info!(
                        cert = %self.files.cert.display(),
                        fingerprint = %fingerprint(&k.cert[0]),
                        "certificate files changed: new connections use the new certificate"
                    );
                    s.current = k;
                    s.stamps = stamps;
                }
                // Often a half-written rotation; the next check tries again.
                Err(e) => {
                    tracing::warn!(error = %e, "certificate files changed but do not load; keeping the previous certificate")
                }
            }
        }
        s.current.clone()
    }

    /// The SHA-256 fingerprint of the certificate in use.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.current().cert[0])
    }
}

impl rustls::server::ResolvesServerCert for ReloadingCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }
}

impl rustls::client::ResolvesClientCert for ReloadingCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

#[derive(Debug)]
struct CaState {
    clients: Arc<dyn ClientCertVerifier>,
    servers: Arc<rustls::client::WebPkiServerVerifier>,
    stamp: Option<Stamp>,
    checked: Instant,
}

/// A bundle of CA certificates read from a PEM file and read again when it
/// changes: whom a server takes client certificates from, or whom a client
/// trusts to vouch for servers.
#[derive(Debug)]
pub struct ReloadingCa {
    path: PathBuf,
    state: Mutex<CaState>,
}

impl ReloadingCa {
    /// Reads the bundle now.
    pub fn load(path: &Path) -> Result<Arc<ReloadingCa>, TlsError> {
        let state = Self::read(path)?;
        Ok(Arc::new(ReloadingCa {
            path: path.to_path_buf(),
            state: Mutex::new(state),
        }))
    }

    fn read(path: &Path) -> Result<CaState, TlsError> {
        let mut roots = RootCertStore::empty();
        for cert in read_certs(path)? {
            roots
                .add(cert)
                .map_err(|e| tls_err(path, format!("not a usable CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let clients = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider())
            .build()
            .map_err(|e| tls_err(path, e))?;
        let servers =
            rustls::client::WebPkiServerVerifier::builder_with_provider(roots, provider())
                .build()
                .map_err(|e| tls_err(path, e))?;
        Ok(CaState {
            clients,
            servers,
            stamp: stamp(path),
            checked: Instant::now(),
        })
    }

    fn with_current<T>(&self, f: impl FnOnce(&CaState) -> T) -> T {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.checked.elapsed() >= RELOAD_CHECK {
            s.checked = Instant::now();
            if stamp(&self.path) != s.stamp {
                match Self::read(&self.path) {
                    Ok(new) => {
                        tracing::info!(ca = %self.path.display(), "CA file changed: new connections are checked against it");
                        *s = new;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "CA file changed but does not load; keeping the previous one")
                    }
                }
            }
        }
        f(&s)
    }
}

/// Checks client certificates against a [`ReloadingCa`].
#[derive(Debug)]
pub struct CaClientVerifier {
    ca: Arc<ReloadingCa>,
    mandatory: bool,
    provider: Arc<CryptoProvider>,
}

impl CaClientVerifier {
    /// Clients must (`mandatory`) or may present a certificate of `ca`.
    pub fn new(ca: Arc<ReloadingCa>, mandatory: bool) -> Arc<CaClientVerifier> {
        Arc::new(CaClientVerifier {
            ca,
            mandatory,
            provider: provider(),
        })
    }
}

/// The handshake signature checks of a certificate verifier with a
/// `provider` field, client or server side alike. They depend only on the
/// provider's algorithms, not on whom the verifier trusts: the CA bundle's
/// own verifiers, built with the same [`provider`], check them the same way.
macro_rules! provider_signature_checks {
    () => {
        provider_signature_checks!(@each verify_tls12_signature, verify_tls13_signature);

        fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
            self.provider
                .signature_verification_algorithms
                .supported_schemes()
        }
    };
    // Each trait method has a namesake in `rustls::crypto` that takes the
    // algorithms.
    (@each $($check:ident),+) => {
        $(
            fn $check(
                &self,
                message: &[u8],
                cert: &CertificateDer<'_>,
                dss: &DigitallySignedStruct,
            ) -> Result<HandshakeSignatureValid, rustls::Error> {
                rustls::crypto::$check(
                    message,
                    cert,
                    dss,
                    &self.provider.signature_verification_algorithms,
                )
            }
        )+
    };
}

impl ClientCertVerifier for CaClientVerifier {
    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // The bundle may change under us; clients send what they have.
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.ca
            .with_current(|s| s.clients.verify_client_cert(end_entity, intermediates, now))
    }

    provider_signature_checks!();
}

/// Whom a client trusts for the servers it connects to.
#[derive(Debug, Clone)]
pub enum Trust {
    /// Servers with a certificate of this CA bundle, for the name dialled.
    Ca(Arc<ReloadingCa>),
    /// Servers with a certificate of the public web PKI (Mozilla's roots).
    WebPki,
    /// The one server whose certificate has this SHA-256 (a worker, known
    /// by the fingerprint it registered with).
    Pinned(String),
}

#[derive(Debug)]
struct ServerTrust {
    trust: Trust,
    webpki: Option<Arc<rustls::client::WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for ServerTrust {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match &self.trust {
            Trust::Ca(ca) => ca.with_current(|s| {
                s.servers.verify_server_cert(
                    end_entity,
                    intermediates,
                    server_name,
                    ocsp_response,
                    now,
                )
            }),
            Trust::WebPki => self
                .webpki
                .as_ref()
                .expect("built with the web PKI roots")
                .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now),
            Trust::Pinned(want) => {
                if fingerprint(end_entity) == *want {
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(
                        rustls::CertificateError::ApplicationVerificationFailure,
                    ))
                }
            }
        }
    }

    provider_signature_checks!();
}

/// A server's TLS configuration: its certificate, and optionally the CA its
/// clients' certificates must (`mandatory`) or may come from.
pub fn server_config(
    cert: Arc<ReloadingCert>,
    client_ca: Option<(Arc<ReloadingCa>, bool)>,
) -> Arc<ServerConfig> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions");
    let builder = match client_ca {
        Some((ca, mandatory)) => {
            builder.with_client_cert_verifier(CaClientVerifier::new(ca, mandatory))
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(cert);
    // gRPC over HTTP/2; probes and metrics scrapes over HTTP/1.1.
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A client's TLS configuration: whom it trusts, and the certificate it
/// presents when a server asks for one.
pub fn client_config(trust: Trust, identity: Option<Arc<ReloadingCert>>) -> Arc<ClientConfig> {
    let provider = provider();
    let webpki = matches!(trust, Trust::WebPki).then(|| {
        let roots = RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        };
        rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .expect("the web PKI roots are usable")
    });
    let verifier = Arc::new(ServerTrust {
        trust,
        webpki,
        provider: provider.clone(),
    });
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match identity {
        Some(id) => builder.with_client_cert_resolver(id),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    Arc::new(config)
}

/// What a server knows of a connection's peer; tonic puts it in every
/// request's extensions.
#[derive(Debug, Clone, Default)]
pub struct PeerInfo {
    /// The peer's address.
    pub remote_addr: Option<SocketAddr>,
    /// Whether the connection is TLS.
    pub tls: bool,
    /// The certificate chain the peer presented (verified against the
    /// client CA), leaf first.
    pub certs: Option<Arc<Vec<CertificateDer<'static>>>>,
    /// Requests in progress on the connection (a busy connection is not
    /// idle).
    pub activity: Arc<crate::connection::Activity>,
}

/// An accepted connection's stream: plain TCP or TLS over it.
pub enum ServerIo {
    /// No TLS.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// An accepted connection: its stream, what is known of its peer, its place
/// in the node's connection limit, and its idle timer.
pub struct ServerConn {
    io: ServerIo,
    peer: PeerInfo,
    idle: crate::connection::IdleTimer,
    _slot: crate::connection::Slot,
}

impl tonic::transport::server::Connected for ServerConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

macro_rules! delegate_io {
    ($ty:ty, $($variant:ident),+) => {
        impl AsyncRead for $ty {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $( Self::$variant(s, ..) => Pin::new(s).poll_read(cx, buf), )+
                }
            }
        }
        impl AsyncWrite for $ty {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $( Self::$variant(s, ..) => Pin::new(s).poll_write(cx, buf), )+
                }
            }
            fn poll_write_vectored(self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $( Self::$variant(s, ..) => Pin::new(s).poll_write_vectored(cx, bufs), )+
                }
            }
            fn is_write_vectored(&self) -> bool {
                match self {
                    $( Self::$variant(s, ..) => s.is_write_vectored(), )+
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $( Self::$variant(s, ..) => Pin::new(s).poll_flush(cx), )+
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $( Self::$variant(s, ..) => Pin::new(s).poll_shutdown(cx), )+
                }
            }
        }
    };
}

delegate_io!(ServerIo, Plain, Tls);

impl AsyncRead for ServerConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.idle.touch();
                }
                Poll::Ready(Ok(()))
            }
            // The server always has a read pending: this is where an idle
            // connection is noticed, and ended.
            Poll::Pending if this.idle.poll_expired(cx, &this.peer.activity) => {
                tracing::debug!(remote = ?this.peer.remote_addr, "closing an idle connection");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "the connection was idle for too long",
                )))
            }
            other => other,
        }
    }
}

impl ServerConn {
    /// Polls a write that `write` makes to the stream; one that wrote
    /// anything is activity, and keeps the connection from going idle.
    fn poll_wrote(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        write: impl FnOnce(Pin<&mut ServerIo>, &mut Context<'_>) -> Poll<io::Result<usize>>,
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = write(Pin::new(&mut this.io), cx);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.idle.touch();
        }
        polled
    }
}

impl AsyncWrite for ServerConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_wrote(cx, |io, cx| io.poll_write(cx, buf))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.poll_wrote(cx, |io, cx| io.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// How a listener takes connections.
#[derive(Clone)]
pub struct Accept {
    /// TLS, when set.
    pub tls: Option<Arc<ServerConfig>>,
    /// Longest a TLS handshake may take.
    pub handshake_timeout: Duration,
    /// How many connections, idle for how long.
    pub limits: crate::connection::ConnectionLimits,
}

/// Accepts connections on `listener` (handshakes run concurrently, each
/// bounded), yielding them for tonic's `serve_with_incoming`. Accept errors
/// such as running out of file descriptors back off instead of spinning.
/// Stops when the returned stream is dropped.
pub fn incoming(
    listener: TcpListener,
    accept: Accept,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<ServerConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel::<io::Result<ServerConn>>(64);
    tokio::spawn(async move {
        let acceptor = accept.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        let mut backoff = Duration::from_millis(5);
        let mut refused_logged: Option<Instant> = None;
        loop {
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, remote) = match accepted {
                Ok(c) => {
                    backoff = Duration::from_millis(5);
                    c
                }
                Err(e) => {
                    // EMFILE and the like: wait for descriptors to come back.
                    tracing::warn!(error = %e, wait_ms = backoff.as_millis() as u64, "accepting a connection failed");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            };
            let Some(slot) = accept.limits.try_take() else {
                // Closed at once: the node keeps descriptors for its own
                // files, and the client learns now rather than by timeout.
                drop(tcp);
                if refused_logged.is_none_or(|t: Instant| t.elapsed() > Duration::from_secs(10)) {
                    tracing::warn!(%remote, max = accept.limits.max, "refusing a connection: the node holds as many as it may");
                    refused_logged = Some(Instant::now());
                }
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let peer = PeerInfo {
                remote_addr: Some(remote),
                tls: acceptor.is_some(),
                certs: None,
                activity: Arc::default(),
            };
            let idle = crate::connection::IdleTimer::new(accept.limits.idle);
            match &acceptor {
                None => {
                    let conn = ServerConn {
                        io: ServerIo::Plain(tcp),
                        peer,
                        idle,
                        _slot: slot,
                    };
                    if tx.send(Ok(conn)).await.is_err() {
                        return;
                    }
                }
                Some(acceptor) => {
                    let (acceptor, tx, limit) =
                        (acceptor.clone(), tx.clone(), accept.handshake_timeout);
                    tokio::spawn(async move {
                        match tokio::time::timeout(limit, acceptor.accept(tcp)).await {
                            Ok(Ok(stream)) => {
                                let certs = stream.get_ref().1.peer_certificates().map(|c| {
                                    Arc::new(c.iter().map(|c| c.clone().into_owned()).collect())
                                });
                                let conn = ServerConn {
                                    io: ServerIo::Tls(Box::new(stream)),
                                    peer: PeerInfo { certs, ..peer },
                                    idle,
                                    _slot: slot,
                                };
                                let _ = tx.send(Ok(conn)).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                                metrics_handshake_failed();
                            }
                            Err(_) => {
                                tracing::debug!(%remote, "TLS handshake timed out");
                                metrics_handshake_failed();
                            }
                        }
                    });
                }
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

fn metrics_handshake_failed() {
    HANDSHAKES_FAILED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

/// TLS handshakes refused or timed out since the process started.
pub static HANDSHAKES_FAILED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A connection a client made: plain TCP or TLS over it.
pub enum ClientConn {
    /// No TLS.
    Plain(TcpStream),
    /// TLS, handshake done.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

delegate_io!(ClientConn, Plain, Tls);

/// How a client reaches servers: plain TCP, or TLS with a configuration.
/// Plugs into tonic with [`Connector::channel`].
#[derive(Clone, Default)]
pub struct Connector {
    tls: Option<Arc<ClientConfig>>,
    server_name: Option<String>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .field("server_name", &self.server_name)
            .finish()
    }
}

impl Connector {
    /// Plain TCP.
    pub fn plain() -> Connector {
        Connector::default()
    }

    /// TLS with `config`; the server's certificate must name `server_name`
    /// when given, else the host dialled.
    pub fn tls(config: Arc<ClientConfig>, server_name: Option<String>) -> Connector {
        Connector {
            tls: Some(config),
            server_name,
        }
    }

    /// Whether connections use TLS.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A channel to `endpoint` connecting through this connector on first
    /// use (and again after the connection breaks).
    pub fn channel(&self, endpoint: tonic::transport::Endpoint) -> tonic::transport::Channel {
        endpoint.connect_with_connector_lazy(self.clone())
    }
}

impl tower::Service<http::Uri> for Connector {
    type Response = hyper_util::rt::TokioIo<ClientConn>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (tls, server_name) = (self.tls.clone(), self.server_name.clone());
        Box::pin(async move {
            let host = uri
                .host()
                .ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "the address has no host")
                })?
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            let port = uri.port_u16().unwrap_or(80);
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            let Some(config) = tls else {
                return Ok(hyper_util::rt::TokioIo::new(ClientConn::Plain(tcp)));
            };
            let name = server_name.unwrap_or(host);
            let name = ServerName::try_from(name.clone()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!("{name:?} is not a valid TLS server name"),
                )
            })?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok(hyper_util::rt::TokioIo::new(ClientConn::Tls(Box::new(
                stream,
            ))))
        })
    }
}

/// How a client connects, as its flags say.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// Use TLS.
    pub enabled: bool,
    /// Trust servers of this CA bundle (else the public web PKI).
    pub ca: Option<PathBuf>,
    /// Present this certificate when asked (mutual TLS identities).
    pub cert: Option<CertFiles>,
    /// The name the server's certificate must carry, when not the host
    /// dialled.
    pub server_name: Option<String>,
}

impl ClientTls {
    /// The connector these options make; errors name the file at fault.
    pub fn connector(&self) -> Result<Connector, TlsError> {
        if !self.enabled && self.ca.is_none() && self.cert.is_none() {
            return Ok(Connector::plain());
        }
        let trust = match &self.ca {
            Some(path) => Trust::Ca(ReloadingCa::load(path)?),
            None => Trust::WebPki,
        };
        let identity = self.cert.clone().map(ReloadingCert::load).transpose()?;
        Ok(Connector::tls(
            client_config(trust, identity),
            self.server_name.clone(),
        ))
    }
}
