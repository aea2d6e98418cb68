//! TLS on the public port as clients meet it: `sluicectl` and the Rust
//! client over TLS, a wrong CA and an expired certificate refused,
//! certificate files replaced under a running node, and client
//! certificates naming their principal.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use cluster_tests::pki::Pki;
use cluster_tests::{binary, free_port, serial, wait_for, wait_for_status, Node, ELECTION};
use sluice_client::{Client, ClientTls, Credentials, Options};
use sluice_security::pki::Validity;
use tonic::Code;

/// A single secured node in `dir` with its public certificate at
/// `dir/public.pem` and `dir/public.key` (from `pki`, or as given), and
/// `extra` flags.
fn secured_node(dir: &Path, pki: &Pki, validity: Validity, extra: &[&str]) -> Node {
    let files = pki.issue("public", "node-1", &["127.0.0.1"], validity);
    let cluster = pki.issue("cluster", "node-1", &["127.0.0.1"], Validity::Days(1));
    let addr = format!("127.0.0.1:{}", free_port());
    let cluster_addr = format!("127.0.0.1:{}", free_port());
    let mut args = vec!["--listen".to_string(), addr.clone()];
    args.extend(pki.args_serving(&files, Some(&cluster)));
    args.extend(extra.iter().map(|s| s.to_string()));
    let mut node = Node::with(1, addr, cluster_addr, dir, args, Vec::new());
    node.start();
    node
}

fn client(node: &Node, tls: ClientTls, credentials: Option<Credentials>) -> Client {
    Client::with_options(
        [node.addr.as_str()],
        Options {
            deadline: Duration::from_secs(20),
            tls,
            credentials,
            ..Options::default()
        },
    )
    .unwrap()
}

/// The administrator's client of `node`, once the node leads.
async fn leading_admin(node: &Node, pki: &Pki) -> Client {
    let admin = client(node, trusting(&pki.ca), Some(pki.admin.clone()));
    wait_for_status(&admin, ELECTION, "the node to lead", |s| {
        (s.state == "leader").then_some(())
    })
    .await;
    admin
}

/// A client of `node` that makes a single attempt of at most 3 s per call.
fn single_attempt(node: &Node, tls: ClientTls, credentials: Option<Credentials>) -> Client {
    Client::with_options(
        [node.addr.as_str()],
        Options {
            deadline: Duration::ZERO,
            attempt_timeout: Duration::from_secs(3),
            tls,
            credentials,
            ..Options::default()
        },
    )
    .unwrap()
}

fn trusting(ca: &Path) -> ClientTls {
    ClientTls {
        enabled: true,
        ca: Some(ca.to_path_buf()),
        ..ClientTls::default()
    }
}

fn sluicectl(node: &Node, args: &[&str]) -> std::process::Output {
    let mut cmd = Command::new(binary("sluicectl"));
    cmd.args(["--cluster", &node.addr]);
    if !args.contains(&"--timeout") {
        cmd.args(["--timeout", "20"]);
    }
    cmd.args(args).output().expect("running sluicectl")
}

#[tokio::test]
async fn sluicectl_and_the_client_speak_tls_and_refuse_a_wrong_ca_or_an_expired_certificate() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let node = secured_node(dir.path(), &pki, Validity::Days(1), &[]);
    leading_admin(&node, &pki).await;

    let ca = pki.ca.display().to_string();
    let creds = pki.admin_file.display().to_string();
    let tls_args = [
        "--tls-ca",
        ca.as_str(),
        "--credentials-file",
        creds.as_str(),
    ];
    for args in [
        &["queue", "create", "jobs"][..],
        &["queue", "send", "jobs", "over tls"][..],
    ] {
        let out = sluicectl(&node, &[&tls_args[..], args].concat());
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let out = sluicectl(
        &node,
        &[&tls_args[..], &["queue", "receive", "jobs", "--delete"]].concat(),
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("over tls"));
    let me = sluicectl(&node, &[&tls_args[..], &["iam", "whoami"]].concat());
    assert!(
        String::from_utf8_lossy(&me.stdout).contains("admin"),
        "{me:?}"
    );

    // Without credentials: refused, naming why.
    let out = sluicectl(&node, &["--tls-ca", &ca, "queue", "list"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("MissingAuthenticationToken"),
        "{out:?}"
    );
    // Another CA: the handshake fails.
    let other_dir = tempfile::tempdir().unwrap();
    let other = Pki::new(other_dir.path());
    let out = sluicectl(
        &node,
        &[
            "--tls-ca",
            &other.ca.display().to_string(),
            "--credentials-file",
            &creds,
            "--timeout",
            "2",
            "queue",
            "list",
        ],
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    // Plain gRPC to a TLS port: no answer.
    let plain = single_attempt(&node, ClientTls::default(), Some(pki.admin.clone()));
    assert!(plain.cluster_status(true).await.is_err());
    drop(node);

    // A node serving an expired certificate is refused by clients.
    let expired_dir = tempfile::tempdir().unwrap();
    let pki2 = Pki::new(expired_dir.path());
    let stale = secured_node(expired_dir.path(), &pki2, Validity::Expired, &[]);
    stale.wait_listening(ELECTION).await;
    let c = Client::with_options(
        [stale.addr.as_str()],
        Options {
            deadline: Duration::from_secs(5),
            tls: trusting(&pki2.ca),
            credentials: Some(pki2.admin.clone()),
            ..Options::default()
        },
    )
    .unwrap();
    let e = c.cluster_status(true).await.unwrap_err();
    assert!(e.to_string().contains("expired"), "{e}");
}

#[tokio::test]
async fn replaced_certificate_files_are_served_to_new_connections_without_a_restart() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut node = secured_node(dir.path(), &pki, Validity::Days(1), &[]);
    let pid = node.pid();
    let first = client(&node, trusting(&pki.ca), Some(pki.admin.clone()));
    wait_for(ELECTION, "the node to answer", || async {
        first.cluster_status(true).await.ok()
    })
    .await;

    // A rotation to a certificate of another CA, as a secret update does:
    // new files moved over the old ones.
    let next_dir = tempfile::tempdir().unwrap();
    let next = Pki::new(next_dir.path());
    let issued = next.issue("next", "node-1", &["127.0.0.1"], Validity::Days(1));
    std::fs::rename(&issued.cert, dir.path().join("public.pem")).unwrap();
    std::fs::rename(&issued.key, dir.path().join("public.key")).unwrap();
    let fresh = || single_attempt(&node, trusting(&next.ca), Some(pki.admin.clone()));
    wait_for(
        Duration::from_secs(20),
        "the new certificate to be served",
        || async { fresh().cluster_status(true).await.ok() },
    )
    .await;
    // A new client trusting only the old CA is refused now.
    let old = single_attempt(&node, trusting(&pki.ca), Some(pki.admin.clone()));
    assert!(old.cluster_status(true).await.is_err());
    assert!(node.is_running());
    assert_eq!(node.pid(), pid, "the node was not restarted");
}

#[tokio::test]
async fn a_client_certificate_names_its_principal() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let ca = pki.ca.display().to_string();
    let node = secured_node(
        dir.path(),
        &pki,
        Validity::Days(1),
        &["--tls-client-ca", &ca],
    );
    let admin = leading_admin(&node, &pki).await;
    admin
        .iam(
            sluice_client::sluice_proto::v1::CreatePrincipalRequest {
                name: "carol".into(),
                kind: "user".into(),
                policies: vec!["ReadOnlyAccess".into()],
            },
            |mut c, r| async move { c.create_principal(r).await },
        )
        .await
        .unwrap();
    let with_cert = |name: &str| {
        let files = pki.issue(name, name, &["127.0.0.1"], Validity::Days(1));
        client(
            &node,
            ClientTls {
                cert: Some(files),
                ..trusting(&pki.ca)
            },
            None,
        )
    };
    let carol = with_cert("carol");
    carol.cluster_status(false).await.expect("carol reads");
    let me = carol
        .iam(
            sluice_client::sluice_proto::v1::GetCallerIdentityRequest {},
            |mut c, r| async move { c.get_caller_identity(r).await },
        )
        .await
        .unwrap();
    assert_eq!((me.name.as_str(), me.access_key_id.as_str()), ("carol", ""));
    let e = carol
        .create_queue("nope", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Code::PermissionDenied));
    assert!(e.to_string().contains("user/carol"), "{e}");
    let e = with_cert("stranger")
        .cluster_status(false)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Code::Unauthenticated), "{e}");
}
