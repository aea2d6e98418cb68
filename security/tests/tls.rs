//! TLS as both sides use it: the listener's handshakes, the client
//! connector, mutual TLS, pinned peers, and certificates replaced on disk.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sluice_security::pki::{Authority, Issued, Validity};
use sluice_security::tls::{
    self, Accept, CertFiles, ClientConn, Connector, ReloadingCa, ReloadingCert, ServerConn, Trust,
};
use tokio::net::TcpListener;
use tokio_stream::StreamExt;
use tonic::transport::server::Connected;
use tower::Service;

fn write(dir: &Path, name: &str, issued: &Issued) -> CertFiles {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &issued.cert_pem).unwrap();
    std::fs::write(&key, &issued.key_pem).unwrap();
    CertFiles { cert, key }
}

fn write_ca(dir: &Path, name: &str, ca: &Authority) -> std::path::PathBuf {
    let p = dir.join(format!("{name}.pem"));
    std::fs::write(&p, ca.cert_pem()).unwrap();
    p
}

struct Server {
    addr: String,
    conns: tokio_stream::wrappers::ReceiverStream<std::io::Result<ServerConn>>,
}

async fn server(cert: &CertFiles, client_ca: Option<(&Path, bool)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cert = ReloadingCert::load(cert.clone()).unwrap();
    let client_ca = client_ca.map(|(p, m)| (ReloadingCa::load(p).unwrap(), m));
    let config = tls::server_config(cert, client_ca);
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
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test ca").unwrap();
    let other = Authority::new("other ca").unwrap();
    let node = write(
        dir.path(),
        "node",
        &ca.issue("node", &["127.0.0.1", "localhost"], Validity::Days(1))
            .unwrap(),
    );
    let ca_path = write_ca(dir.path(), "ca", &ca);
    let other_path = write_ca(dir.path(), "other", &other);
    let mut s = server(&node, None).await;

    let mut good = Connector::tls(
        tls::client_config(Trust::Ca(ReloadingCa::load(&ca_path).unwrap()), None),
        None,
    );
    let (c, sv) = handshake(&mut s, &mut good).await;
    c.expect("a client of the right CA connects");
    assert!(sv.unwrap().connect_info().tls);

    let mut wrong = Connector::tls(
        tls::client_config(Trust::Ca(ReloadingCa::load(&other_path).unwrap()), None),
        None,
    );
    let err = connect(&mut wrong, &s.addr)
        .await
        .err()
        .expect("a client of another CA is refused");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // The certificate names 127.0.0.1 and localhost, not this.
    let mut misnamed = Connector::tls(
        tls::client_config(Trust::Ca(ReloadingCa::load(&ca_path).unwrap()), None),
        Some("sluice-0.example".into()),
    );
    let err = connect(&mut misnamed, &s.addr)
        .await
        .err()
        .expect("a name the certificate lacks is refused");
    assert!(err.to_string().contains("not valid for name"), "{err}");
}

#[tokio::test]
async fn an_expired_server_certificate_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test ca").unwrap();
    let old = write(
        dir.path(),
        "old",
        &ca.issue("node", &["127.0.0.1"], Validity::Expired).unwrap(),
    );
    let ca_path = write_ca(dir.path(), "ca", &ca);
    let s = server(&old, None).await;
    let mut client = Connector::tls(
        tls::client_config(Trust::Ca(ReloadingCa::load(&ca_path).unwrap()), None),
        None,
    );
    let err = connect(&mut client, &s.addr).await.err().expect("expired");
    assert!(err.to_string().contains("certificate expired"), "{err}");
}

#[tokio::test]
async fn mutual_tls_takes_only_clients_of_the_client_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("cluster ca").unwrap();
    let other = Authority::new("rogue ca").unwrap();
    let ca_path = write_ca(dir.path(), "ca", &ca);
    let node = write(
        dir.path(),
        "node",
        &ca.issue("node-1", &["127.0.0.1"], Validity::Days(1))
            .unwrap(),
    );
    let peer = write(
        dir.path(),
        "peer",
        &ca.issue("node-2", &["127.0.0.1"], Validity::Days(1))
            .unwrap(),
    );
    let rogue = write(
        dir.path(),
        "rogue",
        &other
            .issue("node-9", &["127.0.0.1"], Validity::Days(1))
            .unwrap(),
    );
    let expired = write(
        dir.path(),
        "expired",
        &ca.issue("node-3", &["127.0.0.1"], Validity::Expired)
            .unwrap(),
    );
    let mut s = server(&node, Some((&ca_path, true))).await;
    let trust = || Trust::Ca(ReloadingCa::load(&ca_path).unwrap());

    let mut member = Connector::tls(
        tls::client_config(trust(), Some(ReloadingCert::load(peer).unwrap())),
        None,
    );
    let (c, sv) = handshake(&mut s, &mut member).await;
    c.unwrap();
    let info = sv.expect("the server took the member").connect_info();
    let certs = info.certs.expect("the client's certificate is known");
    assert_eq!(
        sluice_security::identity::common_name(&certs[0]).as_deref(),
        Some("node-2")
    );

    for (what, client) in [
        ("no certificate", None),
        ("a certificate of another CA", Some(rogue)),
        ("an expired certificate", Some(expired)),
    ] {
        let mut c = Connector::tls(
            tls::client_config(trust(), client.map(|f| ReloadingCert::load(f).unwrap())),
            None,
        );
        let (res, sv) = handshake(&mut s, &mut c).await;
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
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test ca").unwrap();
    let first = ca.issue("node", &["127.0.0.1"], Validity::Days(1)).unwrap();
    let files = write(dir.path(), "node", &first);
    let ca_path = write_ca(dir.path(), "ca", &ca);
    let mut s = server(&files, None).await;
    let mut client = Connector::tls(
        tls::client_config(Trust::Ca(ReloadingCa::load(&ca_path).unwrap()), None),
        None,
    );
    let (c, _) = handshake(&mut s, &mut client).await;
    assert_eq!(
        server_fingerprint(&c.unwrap()),
        tls::fingerprint(&first.der)
    );

    let second = ca.issue("node", &["127.0.0.1"], Validity::Days(1)).unwrap();
    // As a secret update does: new files moved into place.
    let tmp = write(dir.path(), "next", &second);
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
    let dir = tempfile::tempdir().unwrap();
    let own = sluice_security::pki::self_signed("worker-1", &["127.0.0.1"]).unwrap();
    let pin = tls::fingerprint(&own.cert[0]);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let config = tls::server_config(ReloadingCert::fixed(own), None);
    let mut s = Server {
        addr,
        conns: tls::incoming(
            listener,
            Accept {
                tls: Some(config),
                handshake_timeout: Duration::from_secs(5),
                limits: Default::default(),
            },
        ),
    };
    let mut right = Connector::tls(tls::client_config(Trust::Pinned(pin.clone()), None), None);
    let (c, _) = handshake(&mut s, &mut right).await;
    assert_eq!(server_fingerprint(&c.unwrap()), pin);
    let mut wrong = Connector::tls(
        tls::client_config(Trust::Pinned("00".repeat(32)), None),
        None,
    );
    assert!(connect(&mut wrong, &s.addr).await.is_err());
    drop(dir);
}

#[tokio::test]
async fn a_silent_client_does_not_hold_up_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Authority::new("test ca").unwrap();
    let files = write(
        dir.path(),
        "node",
        &ca.issue("node", &["127.0.0.1"], Validity::Days(1)).unwrap(),
    );
    let ca_path = write_ca(dir.path(), "ca", &ca);
    let mut s = server(&files, None).await;
    // Connected, saying nothing.
    let _silent: Vec<_> = futures_util_join(&s.addr, 5).await;
    let mut client = Connector::tls(
        tls::client_config(Trust::Ca(ReloadingCa::load(&ca_path).unwrap()), None),
        None,
    );
    let (c, sv) = handshake(&mut s, &mut client).await;
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
