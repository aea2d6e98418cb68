//! TLS as both sides use it: the listener's handshakes, the client
//! connector, mutual TLS, pinned peers, and certificates replaced on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use sluice_security::pki::{Authority, Issued, Validity};
use sluice_security::tls::{
    self, Accept, CertFiles, ClientConn, Connector, ReloadingCa, ReloadingCert, ServerConn, Trust,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;
use tower::Service;

/// A CA, its certificate written to a scratch directory where the
/// certificates it issues are written too.
struct Pki {
    dir: tempfile::TempDir,
    ca: Authority,
    ca_path: PathBuf,
}

impl Pki {
    fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let ca = Authority::new(name).unwrap();
        let ca_path = dir.path().join("ca.pem");
        std::fs::write(&ca_path, ca.cert_pem()).unwrap();
        Pki { dir, ca, ca_path }
    }

    /// Writes `issued` as `name`.crt and `name`.key.
    fn write(&self, name: &str, issued: &Issued) -> CertFiles {
        let cert = self.dir.path().join(format!("{name}.crt"));
        let key = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert, &issued.cert_pem).unwrap();
        std::fs::write(&key, &issued.key_pem).unwrap();
        CertFiles { cert, key }
    }

    /// Issues a certificate of `subject` for `names`, written as `name`.
    fn issue(&self, name: &str, subject: &str, names: &[&str], validity: Validity) -> CertFiles {
        self.write(name, &self.ca.issue(subject, names, validity).unwrap())
    }

    /// Trust in servers this CA issued for.
    fn trust(&self) -> Trust {
        Trust::Ca(ReloadingCa::load(&self.ca_path).unwrap())
    }

    /// A client trusting this CA, showing no certificate of its own and
    /// checking the server's certificate against the address dialled.
    fn client(&self) -> Connector {
        Connector::tls(tls::client_config(self.trust(), None), None)
    }
}

struct Server {
    addr: String,
    conns: tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerConn>>,
}

async fn server(cert: &CertFiles, client_ca: Option<(&Path, bool)>) -> Server {
    let cert = ReloadingCert::load(cert.clone()).unwrap();
    let client_ca = client_ca.map(|(p, m)| (ReloadingCa::load(p).unwrap(), m));
    serve(tls::server_config(cert, client_ca)).await
}

/// Listens on a free port, handshaking by `config`.
async fn serve(config: Arc<ServerConfig>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let conns = tls::incoming(
        listener,
        Accept {
            tls: Some(config),
            handshake_timeout: Duration::from_secs(5),
            limits: Default::default(),
        },
    );
    Server { addr, conns }
}

async fn connect(connector: &mut Connector, addr: &str) -> std::io::Result<ClientConn> {
    let uri: http::Uri = format!("http://{addr}").parse().unwrap();
    connector.call(uri).await.map(|io| io.into_inner())
}

/// The error `connector` fails to connect to `addr` with; a connection
/// fails the test, saying `expected`.
async fn refusal(mut connector: Connector, addr: &str, expected: &str) -> std::io::Error {
    connect(&mut connector, addr).await.err().expect(expected)
}

fn server_fingerprint(conn: &ClientConn) -> String {
    match conn {
        ClientConn::Tls(s) => tls::fingerprint(&s.get_ref().1.peer_certificates().unwrap()[0]),
        ClientConn::Plain(_) => panic!("not TLS"),
    }
}

/// Drives a client handshake while the server side completes its own.
async fn handshake(
    s: &mut Server,
    connector: &mut Connector,
) -> (std::io::Result<ClientConn>, Option<ServerConn>) {
    let addr = s.addr.clone();
    let client = connect(connector, &addr);
    let srv = tokio::time::timeout(Duration::from_millis(1500), s.conns.next());
    let (c, sv) = tokio::join!(client, srv);
    (c, sv.ok().flatten().map(|r| r.unwrap()))
}

#[tokio::test]
async fn a_client_trusting_the_ca_connects_and_others_are_refused() {
    let pki = Pki::new("test ca");
    let other = Pki::new("other ca");
    let names = ["127.0.0.1", "localhost"];
    let node = pki.issue("node", "node", &names, Validity::Days(1));
    let mut s = server(&node, None).await;

    let (c, sv) = handshake(&mut s, &mut pki.client()).await;
    c.expect("a client of the right CA connects");
    assert!(sv.unwrap().connect_info().tls);

    let err = refusal(other.client(), &s.addr, "a client of another CA is refused").await;
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // The certificate names 127.0.0.1 and localhost, not this.
    let misnamed = Connector::tls(
        tls::client_config(pki.trust(), None),
        Some("sluice-0.example".into()),
    );
    let err = refusal(misnamed, &s.addr, "a name the certificate lacks is refused").await;
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let pki = Pki::new("test ca");
    let old = pki.issue("old", "node", &["127.0.0.1"], Validity::Expired);
    let s = server(&old, None).await;
    let err = refusal(pki.client(), &s.addr, "expired").await;
    assert!(err.to_string().contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn mutual_tls_takes_only_clients_of_the_client_ca() {
    let pki = Pki::new("cluster ca");
    let other = Pki::new("rogue ca");
    let local = ["127.0.0.1"];
    let node = pki.issue("node", "node-1", &local, Validity::Days(1));
    let peer = pki.issue("peer", "node-2", &local, Validity::Days(1));
    let rogue = other.issue("rogue", "node-9", &local, Validity::Days(1));
    let expired = pki.issue("expired", "node-3", &local, Validity::Expired);
    let mut s = server(&node, Some((&pki.ca_path, true))).await;
    let client = |cert: Option<CertFiles>| {
        let identity = cert.map(|f| ReloadingCert::load(f).unwrap());
        Connector::tls(tls::client_config(pki.trust(), identity), None)
    };

    let (c, sv) = handshake(&mut s, &mut client(Some(peer))).await;
    c.unwrap();
    let info = sv.expect("the server took the member").connect_info();
    let certs = info.certs.expect("the client's certificate is known");
    assert_eq!(
        sluice_security::identity::common_name(&certs[0]).as_deref(),
        Some("node-2")
    );

    for (what, cert) in [
        ("no certificate", None),
        ("a certificate of another CA", Some(rogue)),
        ("an expired certificate", Some(expired)),
    ] {
        let (res, sv) = handshake(&mut s, &mut client(cert)).await;
        // TLS 1.3 clients learn of the refusal on their first read; the
        // server never hands the connection on either way.
        assert!(sv.is_none(), "{what}: the server took the connection");
        if let Ok(ClientConn::Tls(mut stream)) = res {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let _ = stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
                .await
                .unwrap();
            assert!(
                !matches!(read, Ok(n) if n > 0),
                "{what}: the server answered"
            );
        }
    }
}

#[tokio::test]
async fn replaced_certificate_files_are_used_by_new_connections() {
    let pki = Pki::new("test ca");
    let first = pki
        .ca
        .issue("node", &["127.0.0.1"], Validity::Days(1))
        .unwrap();
    let files = pki.write("node", &first);
    let mut s = server(&files, None).await;
    let mut client = pki.client();
    let (c, _) = handshake(&mut s, &mut client).await;
    assert_eq!(
        server_fingerprint(&c.unwrap()),
        tls::fingerprint(&first.der)
    );

    let second = pki
        .ca
        .issue("node", &["127.0.0.1"], Validity::Days(1))
        .unwrap();
    // As a secret update does: new files moved into place.
    let tmp = pki.write("next", &second);
    std::fs::rename(&tmp.cert, &files.cert).unwrap();
    std::fs::rename(&tmp.key, &files.key).unwrap();
    let mut seen = String::new();
    for _ in 0..40 {
        let (c, _) = handshake(&mut s, &mut client).await;
        seen = server_fingerprint(&c.unwrap());
        if seen == tls::fingerprint(&second.der) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        seen,
        tls::fingerprint(&second.der),
        "the new certificate is served"
    );

    // Garbage written over the files keeps the last good certificate.
    std::fs::write(&files.cert, "not a certificate").unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (c, _) = handshake(&mut s, &mut client).await;
    assert_eq!(
        server_fingerprint(&c.unwrap()),
        tls::fingerprint(&second.der)
    );
}

#[tokio::test]
async fn a_pinned_peer_is_taken_by_its_fingerprint_only() {
    let own = sluice_security::pki::self_signed("worker-1", &["127.0.0.1"]).unwrap();
    let pin = tls::fingerprint(&own.cert[0]);
    let mut s = serve(tls::server_config(ReloadingCert::fixed(own), None)).await;
    let mut right = Connector::tls(tls::client_config(Trust::Pinned(pin.clone()), None), None);
    let (c, _) = handshake(&mut s, &mut right).await;
    assert_eq!(server_fingerprint(&c.unwrap()), pin);
    let mut wrong = Connector::tls(
        tls::client_config(Trust::Pinned("00".repeat(32)), None),
        None,
    );
    assert!(connect(&mut wrong, &s.addr).await.is_err());
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_the_listener() {
    let pki = Pki::new("test ca");
    let files = pki.issue("node", "node", &["127.0.0.1"], Validity::Days(1));
    let mut s = server(&files, None).await;
    // Connected, saying nothing.
    let _silent: Vec<_> = futures_util_join(&s.addr, 5).await;
    let (c, sv) = handshake(&mut s, &mut pki.client()).await;
    c.unwrap();
    assert!(sv.is_some());
}

async fn futures_util_join(addr: &str, n: usize) -> Vec<tokio::net::TcpStream> {
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    v
}

#[allow(dead_code)]
fn _assert_send(c: Connector) -> Arc<Connector> {
    Arc::new(c)
}
