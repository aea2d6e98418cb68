//! The attacks that found Sluice open, each made again against a secured
//! cluster of real processes (TLS on both listeners, mutual TLS between
//! nodes, authentication): each now fails with a TLS handshake failure,
//! `UNAUTHENTICATED` or `PERMISSION_DENIED`, and the state is checked
//! afterwards to have not changed.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use cluster_tests::pki::Pki;
use cluster_tests::{
    create_app_function, create_principal, elected_secured_cluster, member_ids, serial,
    trim_horizon, wait_for, Cluster, WorkerProcess, ELECTION,
};
use sluice_client::sluice_proto::internal::node_client::NodeClient;
use sluice_client::sluice_proto::internal::raft_client::RaftClient;
use sluice_client::sluice_proto::internal::{Payload, RaftPayload, StartElectionRequest};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::sluice_proto::v1::worker_host_client::WorkerHostClient;
use sluice_client::sluice_proto::v1::workers_client::WorkersClient;
use sluice_client::{ClientTls, Credentials};
use sluice_security::pki::Validity;
use sluice_security::signer::{SignedChannel, Signer};
use sluice_security::{ClusterKey, Purpose};
use tonic::{Code, Status};

/// A channel to `addr` made by hand, as an attacker would: these TLS
/// options, these credentials (or none).
fn raw(addr: &str, tls: ClientTls, credentials: Option<Credentials>) -> SignedChannel {
    let connector = tls.connector().expect("TLS options");
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10));
    Signer::new(connector.channel(endpoint), credentials, "us-east-1")
}

/// The stable error code a node put on a refusal.
fn code_of(s: &Status) -> String {
    s.metadata()
        .get(sluice_client::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// A refusal by the guard: the status and its AWS code.
fn refused(s: &Status, code: Code, aws: &str) {
    assert_eq!(s.code(), code, "{s:?}");
    assert_eq!(code_of(s), aws, "{s:?}");
}

/// A call that never reached a service: the TLS handshake failed (no
/// status from a node, only the transport's).
fn handshake_failed(s: &Status) {
    assert!(
        s.metadata().get(sluice_client::ERROR_CODE_HEADER).is_none(),
        "a node answered: {s:?}"
    );
    assert!(
        matches!(
            s.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        ),
        "{s:?}"
    );
}

fn admin_client(c: &Cluster) -> sluice_client::Client {
    c.client()
}

async fn term_of(c: &Cluster) -> u64 {
    admin_client(c).cluster_status(false).await.unwrap().term
}

async fn queue_exists(c: &Cluster, name: &str) -> bool {
    admin_client(c)
        .get_queue_url(name, sluice_client::Consistency::Linearizable)
        .await
        .is_ok()
}

#[tokio::test]
async fn node_to_node_services_take_only_the_clusters_nodes() {
    let (_serial, c, _) = elected_secured_cluster(3, &[]).await;
    let pki: &Pki = c.pki.as_ref().unwrap();
    let admin = admin_client(&c);
    admin
        .create_queue("precious", HashMap::new())
        .await
        .unwrap();
    let term = term_of(&c).await;
    let node = &c.nodes[&1];

    // 1. The public port serves no node-to-node service, whoever asks.
    for creds in [None, Some(pki.admin.clone())] {
        let ch = raw(&node.addr, pki.client_tls(), creds.clone());
        let e = RaftClient::new(ch.clone())
            .append_entries(RaftPayload {
                data: vec![1, 2, 3],
            })
            .await
            .unwrap_err();
        refused(&e, Code::PermissionDenied, "AccessDenied");
        assert!(e.message().contains("not an operation"), "{e:?}");
        let e = NodeClient::new(ch.clone())
            .propose(Payload { data: vec![0] })
            .await
            .unwrap_err();
        refused(&e, Code::PermissionDenied, "AccessDenied");
        let e = NodeClient::new(ch)
            .start_election(StartElectionRequest { min_log_index: 0 })
            .await
            .unwrap_err();
        refused(&e, Code::PermissionDenied, "AccessDenied");
    }

    // 2. The cluster listener wants a certificate of the cluster's CA...
    let e = RaftClient::new(raw(&node.cluster_addr, pki.client_tls(), None))
        .append_entries(RaftPayload { data: vec![1] })
        .await
        .unwrap_err();
    handshake_failed(&e);
    let rogue_dir = tempfile::tempdir().unwrap();
    let rogue_ca = Pki::new(rogue_dir.path());
    let rogue_cert = rogue_ca.issue("rogue", "node-9", &["127.0.0.1"], Validity::Days(1));
    let e = NodeClient::new(raw(
        &node.cluster_addr,
        ClientTls {
            cert: Some(rogue_cert),
            ..pki.client_tls()
        },
        None,
    ))
    .propose(Payload { data: vec![0] })
    .await
    .unwrap_err();
    handshake_failed(&e);

    // 3. ... and even with one (a stolen node certificate), the calls must
    // be signed with the cluster key's node credential.
    let stolen = pki.issue("stolen", "node-2", &["127.0.0.1"], Validity::Days(1));
    let with_cert = ClientTls {
        cert: Some(stolen),
        ..pki.client_tls()
    };
    let e = NodeClient::new(raw(&node.cluster_addr, with_cert.clone(), None))
        .propose(Payload { data: vec![0] })
        .await
        .unwrap_err();
    refused(&e, Code::Unauthenticated, "MissingAuthenticationToken");
    let forged = Credentials {
        access_key_id: "SLUICENODE000002".into(),
        secret_access_key: "0".repeat(64),
    };
    let e = RaftClient::new(raw(&node.cluster_addr, with_cert.clone(), Some(forged)))
        .append_entries(RaftPayload { data: vec![1] })
        .await
        .unwrap_err();
    refused(&e, Code::Unauthenticated, "SignatureDoesNotMatch");
    let e = NodeClient::new(raw(&node.cluster_addr, with_cert, Some(pki.admin.clone())))
        .start_election(StartElectionRequest { min_log_index: 0 })
        .await
        .unwrap_err();
    refused(&e, Code::Unauthenticated, "AccessDenied");

    // Nothing changed.
    assert!(queue_exists(&c, "precious").await);
    assert_eq!(term_of(&c).await, term, "no election was started");

    // 4. Even a real node (its certificate and the cluster key's node
    // credential) gets one election on request per election timeout.
    let key = ClusterKey::load(&pki.cluster_key).unwrap();
    let node2 = Credentials {
        access_key_id: sluice_security::credentials::node_key_id(2),
        secret_access_key: hex::encode(key.derive(Purpose::NodeCredential)),
    };
    let as_node = pki.issue("node2-again", "node-2", &["127.0.0.1"], Validity::Days(1));
    let ch = raw(
        &c.nodes[&1].cluster_addr,
        ClientTls {
            cert: Some(as_node),
            ..pki.client_tls()
        },
        Some(node2),
    );
    // The first is taken (whatever the election then does).
    if let Err(e) = NodeClient::new(ch.clone())
        .start_election(StartElectionRequest { min_log_index: 0 })
        .await
    {
        assert_ne!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert_ne!(e.code(), Code::Unauthenticated, "{e:?}");
    }
    let e = NodeClient::new(ch)
        .start_election(StartElectionRequest { min_log_index: 0 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
    assert!(e.message().contains("at most one per"), "{e:?}");
}

/// A plain TCP server that counts the connections made to it and the bytes
/// sent: the rogue "node" an attacker would add.
async fn rogue_server() -> (String, Arc<AtomicU64>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let bytes = Arc::new(AtomicU64::new(0));
    let counted = bytes.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt;
                let mut buf = [0u8; 4096];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    counted.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, bytes)
}

#[tokio::test]
async fn cluster_operations_need_an_administrator_and_a_rogue_learner_gets_nothing() {
    let (_serial, c, _) = elected_secured_cluster(3, &[]).await;
    let admin = admin_client(&c);
    admin
        .create_queue("precious", HashMap::new())
        .await
        .unwrap();
    let reader = create_principal(&admin, "auditor", "user", &["ReadOnlyAccess"]).await;
    let term = term_of(&c).await;
    let members = || async {
        let mut ids: Vec<u64> = member_ids(&admin_client(&c)).await;
        ids.sort();
        ids
    };
    assert_eq!(members().await, [1, 2, 3]);
    let (rogue, rogue_bytes) = rogue_server().await;

    // Anonymous: not even asked what it may do.
    let anonymous = c.single_attempt_client(None);
    let e = anonymous.add_learner(4, &rogue).await.unwrap_err();
    assert_eq!(e.status(), Some(Code::Unauthenticated), "{e}");
    assert_eq!(e.code(), Some("MissingAuthenticationToken"));
    for e in [
        anonymous.remove_member(2).await.unwrap_err(),
        anonymous.transfer_leadership(None).await.unwrap_err(),
        anonymous.trigger_snapshot().await.unwrap_err(),
    ] {
        assert_eq!(e.status(), Some(Code::Unauthenticated), "{e}");
    }

    // A principal without the permission: refused, naming action and
    // resource.
    let ro = c.single_attempt_client(Some(reader));
    let e = ro.add_learner(4, &rogue).await.unwrap_err();
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
    assert!(
        e.to_string().contains("sluice:AddLearner")
            && e.to_string()
                .contains("arn:aws:sluice:us-east-1:000000000000:cluster"),
        "{e}"
    );
    for (e, action) in [
        (
            ro.remove_member(2).await.unwrap_err(),
            "sluice:RemoveMember",
        ),
        (
            ro.transfer_leadership(None).await.unwrap_err(),
            "sluice:TransferLeadership",
        ),
        (
            ro.trigger_snapshot().await.unwrap_err(),
            "sluice:TriggerSnapshot",
        ),
    ] {
        assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
        assert!(e.to_string().contains(action), "{e}");
    }
    // Its reads still work.
    assert_eq!(ro.cluster_status(false).await.unwrap().members.len(), 3);

    // The administrator: the rogue cannot prove it holds the cluster key
    // (it cannot even finish a TLS handshake with a cluster certificate),
    // so it is not added and sent nothing.
    let e = admin_client(&c).add_learner(4, &rogue).await.unwrap_err();
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
    assert_eq!(e.code(), Some("NodeNotAuthenticated"), "{e}");

    // A real node with a certificate of the cluster's CA but another
    // cluster key is not added either.
    let dir = tempfile::tempdir().unwrap();
    let other_key = cluster_tests::cluster_key(dir.path());
    let pki = c.pki.as_ref().unwrap();
    let mut args = pki.node_args(4);
    args.extend(["--cluster-key-file".into(), other_key.display().to_string()]);
    let (addr, cluster_addr) = (
        format!("127.0.0.1:{}", cluster_tests::free_port()),
        format!("127.0.0.1:{}", cluster_tests::free_port()),
    );
    args.extend([
        "--node-id".into(),
        "4".into(),
        "--listen".into(),
        addr.clone(),
        "--join".into(),
    ]);
    let mut intruder =
        cluster_tests::Node::with(4, addr, cluster_addr.clone(), dir.path(), args, Vec::new());
    intruder.start();
    let e = wait_for(
        Duration::from_secs(20),
        "the intruder to answer and be refused",
        || async {
            match admin_client(&c).add_learner(4, &cluster_addr).await {
                Err(e)
                    if e.code() == Some("NodeNotAuthenticated")
                        && e.to_string().contains("did not sign") =>
                {
                    Some(e)
                }
                _ => None,
            }
        },
    )
    .await;
    assert_eq!(e.status(), Some(Code::PermissionDenied));

    assert_eq!(members().await, [1, 2, 3], "membership unchanged");
    assert!(queue_exists(&c, "precious").await);
    assert_eq!(term_of(&c).await, term, "no election");
    // What reached the rogue: a TLS ClientHello at most, no log.
    assert!(
        rogue_bytes.load(Ordering::Relaxed) < 2048,
        "the rogue received {} bytes",
        rogue_bytes.load(Ordering::Relaxed)
    );
}

/// A heartbeat for worker `id` at `address`, claiming a certificate.
fn heartbeat(id: &str, address: &str) -> pb::HeartbeatRequest {
    pb::HeartbeatRequest {
        worker_id: id.into(),
        address: address.into(),
        memory_mb: 1024,
        tls_certificate_sha256: "ab".repeat(32),
        ..Default::default()
    }
}

#[tokio::test]
async fn the_workers_api_takes_only_workers_and_a_worker_only_itself() {
    let (_serial, c, _) = elected_secured_cluster(3, &["--in-process-worker", "false"]).await;
    let admin = admin_client(&c);
    let pki = c.pki.as_ref().unwrap();
    let user = create_principal(&admin, "alice", "user", &["AdministratorAccess"]).await;
    let w1 = create_principal(&admin, "w1", "worker", &[]).await;
    let w2 = create_principal(&admin, "w2", "worker", &[]).await;
    let addr = c.nodes[&1].addr.clone();
    let workers =
        |creds: Option<Credentials>| WorkersClient::new(raw(&addr, pki.client_tls(), creds));

    // Not a worker: refused, an administrator too.
    for creds in [Some(user.clone()), Some(pki.admin.clone())] {
        let e = workers(creds.clone())
            .heartbeat(heartbeat("rogue", "10.66.6.6:7080"))
            .await
            .unwrap_err();
        refused(&e, Code::PermissionDenied, "AccessDenied");
        assert!(
            e.message().contains("takes worker principals only"),
            "{e:?}"
        );
        let e = workers(creds.clone())
            .get_code(pb::GetCodeRequest {
                sha256: "00".repeat(32),
            })
            .await
            .unwrap_err();
        refused(&e, Code::PermissionDenied, "AccessDenied");
        let e = workers(creds)
            .leave(pb::LeaveRequest {
                worker_id: "rogue".into(),
            })
            .await
            .unwrap_err();
        refused(&e, Code::PermissionDenied, "AccessDenied");
    }
    let e = workers(None)
        .heartbeat(heartbeat("rogue", "10.66.6.6:7080"))
        .await
        .unwrap_err();
    refused(&e, Code::Unauthenticated, "MissingAuthenticationToken");
    // A worker without a certificate is refused on a cluster with TLS.
    let mut plain = heartbeat("w1-a", "127.0.0.1:7");
    plain.tls_certificate_sha256.clear();
    let e = workers(Some(w1.clone()))
        .heartbeat(plain)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");

    // w1 registers w1-a; w2 can neither take it over nor remove it.
    workers(Some(w1.clone()))
        .heartbeat(heartbeat("w1-a", "127.0.0.1:7"))
        .await
        .unwrap();
    let e = workers(Some(w2.clone()))
        .heartbeat(heartbeat("w1-a", "10.66.6.6:7080"))
        .await
        .unwrap_err();
    refused(&e, Code::PermissionDenied, "AccessDenied");
    let e = workers(Some(w2))
        .leave(pb::LeaveRequest {
            worker_id: "w1-a".into(),
        })
        .await
        .unwrap_err();
    refused(&e, Code::PermissionDenied, "AccessDenied");
    let listed = WorkersClient::new(raw(&addr, pki.client_tls(), Some(pki.admin.clone())))
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].address, "127.0.0.1:7", "the record is w1's");
    assert_eq!(listed[0].owner, "principal/w1");
    workers(Some(w1.clone()))
        .leave(pb::LeaveRequest {
            worker_id: "w1-a".into(),
        })
        .await
        .unwrap();

    // WorkerHost is not on the public port, nor open on the cluster port.
    let run = pb::RunRequest {
        spec: Some(pb::RunSpec::default()),
        request_id: "r".into(),
        payload: vec![],
    };
    let e = WorkerHostClient::new(raw(&addr, pki.client_tls(), Some(pki.admin.clone())))
        .run(run.clone())
        .await
        .unwrap_err();
    refused(&e, Code::PermissionDenied, "AccessDenied");
    let e = WorkerHostClient::new(raw(&c.nodes[&1].cluster_addr, pki.client_tls(), None))
        .run(run.clone())
        .await
        .unwrap_err();
    handshake_failed(&e);

    // A real worker: invocations reach it, and its WorkerHost takes calls
    // signed by the cluster's nodes only.
    let dir = tempfile::tempdir().unwrap();
    let zip = cluster_tests::python_function(
        dir.path(),
        "def handler(event, context):\n    return {'ok': event['n'] * 2}\n",
    );
    create_app_function(&admin, "double", zip).await;
    let worker = WorkerProcess::start_with(&c, "w1-b", Some(&w1));
    let answer = wait_for(
        Duration::from_secs(60),
        "an invocation on the worker",
        || async {
            match admin
                .invoke(pb::InvokeRequest {
                    function_name: "double".into(),
                    payload: br#"{"n": 21}"#.to_vec(),
                    ..Default::default()
                })
                .await
            {
                Ok(a) => Some(a),
                Err(e) => {
                    eprintln!("invoke: {e}");
                    None
                }
            }
        },
    )
    .await;
    assert_eq!(String::from_utf8_lossy(&answer.payload), r#"{"ok": 42}"#);
    let registered = WorkersClient::new(raw(&addr, pki.client_tls(), Some(pki.admin.clone())))
        .list_workers(pb::ListWorkersRequest {})
        .await
        .unwrap()
        .into_inner()
        .workers
        .into_iter()
        .find(|w| w.worker_id == "w1-b")
        .expect("the worker registered");
    assert_eq!(registered.tls_certificate_sha256.len(), 64);
    let pinned = sluice_security::tls::Connector::tls(
        sluice_security::tls::client_config(
            sluice_security::tls::Trust::Pinned(registered.tls_certificate_sha256.clone()),
            None,
        ),
        Some("worker.sluice.invalid".into()),
    );
    let to_worker = |creds: Option<Credentials>| {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{}", worker.addr)).unwrap();
        WorkerHostClient::new(Signer::new(pinned.channel(endpoint), creds, "us-east-1"))
    };
    let e = to_worker(None).run(run.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let e = to_worker(Some(pki.admin.clone()))
        .run(run.clone())
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    let node_key_but_not_its_secret = Credentials {
        access_key_id: "SLUICENODE000001".into(),
        secret_access_key: "f".repeat(64),
    };
    let e = to_worker(Some(node_key_but_not_its_secret))
        .run(run)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::Unauthenticated, "{e:?}");
    assert!(e.message().contains("signature"), "{e:?}");
}

#[tokio::test]
async fn receipt_handles_and_shard_iterators_cannot_be_made_up() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let client = admin_client(&c);
    client.create_queue("q", HashMap::new()).await.unwrap();
    for body in ["mine", "theirs"] {
        client.send_body("q", body).await.unwrap();
    }
    let receive = |n: i32| client.receive_from("q", n, Some(600), None);
    let mine = receive(1).await.unwrap().messages.remove(0);
    // The next message's handle, computed from this one as the old CRC
    // scheme allowed: the sequence number moved on by one, the MAC kept.
    let handle = &mine.receipt_handle;
    let (prefix, hexed) = handle.split_at(4);
    let mut bytes = hex::decode(hexed).unwrap();
    bytes[23] ^= 0x03;
    let forged = format!("{prefix}{}", hex::encode(&bytes));
    let e = client.delete_message("q", &forged).await.unwrap_err();
    assert_eq!(e.code(), Some("ReceiptHandleIsInvalid"), "{e}");
    let e = client
        .delete_message("q", &format!("sl1-{}", "0".repeat(64)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("ReceiptHandleIsInvalid"), "{e}");
    // The other message is untouched and its own handle works.
    let theirs = receive(10).await.unwrap().messages;
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].body, "theirs");
    client
        .delete_message("q", &mine.receipt_handle)
        .await
        .unwrap();

    client.create_stream_with_shards("s", 1).await.unwrap();
    let it = trim_horizon(&client, "s", "shardId-000000000000")
        .await
        .unwrap();
    // Made never to expire: its issue time pushed a century ahead.
    let (prefix, hexed) = it.split_at(4);
    let mut bytes = hex::decode(hexed).unwrap();
    bytes[20] = 0x7f;
    let forged = format!("{prefix}{}", hex::encode(&bytes));
    let e = client.get_records(&forged, 0).await.unwrap_err();
    assert_eq!(e.status(), Some(Code::InvalidArgument), "{e}");
    assert!(
        e.to_string()
            .contains("not a shard iterator this cluster issued"),
        "{e}"
    );
    client
        .get_records(&it, 0)
        .await
        .expect("the real iterator reads");
}

/// GET `path` of a secured node over HTTPS (trusting the cluster's CA).
async fn https_get(c: &Cluster, id: u64, path: &str) -> String {
    let pki = c.pki.as_ref().expect("a secured cluster");
    pki.https_get(&c.nodes[&id].addr, path).await.unwrap()
}

#[tokio::test]
async fn http_subscriptions_cannot_reach_the_brokers_own_network() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let client = admin_client(&c);
    let topic = client.create_topic("t", HashMap::new()).await.unwrap();
    // An internal endpoint that would answer.
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        async { "ok" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });

    for endpoint in [
        format!("http://127.0.0.1:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:80/".to_string(),
        "https://10.0.0.1/internal".to_string(),
    ] {
        let protocol = if endpoint.starts_with("https") {
            "https"
        } else {
            "http"
        };
        let e = client
            .subscribe(&topic, protocol, &endpoint, HashMap::new())
            .await
            .unwrap_err();
        assert_eq!(e.status(), Some(Code::InvalidArgument), "{endpoint}: {e}");
        assert!(
            e.to_string().contains("private or link-local"),
            "{endpoint}: {e}"
        );
    }
    // A name that resolves to loopback: the subscription is taken, but no
    // delivery goes out.
    client
        .subscribe(
            &topic,
            "http",
            &format!("http://localhost:{port}/hook"),
            HashMap::new(),
        )
        .await
        .unwrap();
    wait_for(
        Duration::from_secs(30),
        "a refused delivery attempt",
        || async {
            let text = https_get(&c, 1, "/metrics").await;
            text.lines()
                .any(|l| l.starts_with("sluice_topic_http_deliveries_total{result=\"failed\"}"))
                .then_some(())
        },
    )
    .await;
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "the internal endpoint was reached"
    );
}

#[tokio::test]
async fn a_secured_node_needs_the_cluster_key_and_says_how_it_is_protected() {
    let (_serial, mut c, _) = elected_secured_cluster(1, &[]).await;
    // Logs never hold a secret.
    let key = std::fs::read_to_string(&c.pki.as_ref().unwrap().cluster_key).unwrap();
    let admin = admin_client(&c);
    let made = create_principal(&admin, "bob", "user", &["ReadOnlyAccess"]).await;
    c.single_attempt_client(Some(made.clone()))
        .cluster_status(false)
        .await
        .expect("bob reads");
    // A refused call is in the audit log.
    let e = c
        .single_attempt_client(Some(made.clone()))
        .create_queue("nope", HashMap::new())
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Code::PermissionDenied));
    let node = c.node(1);
    let log = wait_for(
        Duration::from_secs(10),
        "the refusal in the audit log",
        || {
            let log = node.log_text();
            async move { log.contains("sqs:CreateQueue").then_some(log) }
        },
    )
    .await;
    assert!(log.contains("sluice::audit"), "audit events are marked");
    assert!(
        log.contains("tls=true") && log.contains("auth=true"),
        "the start says how it is protected"
    );
    for secret in [
        key.trim(),
        made.secret_access_key.as_str(),
        c.pki.as_ref().unwrap().admin.secret_access_key.as_str(),
    ] {
        assert!(!log.contains(secret), "a secret reached the log");
    }
    let data = std::fs::read_dir(c.nodes[&1].data_dir.join("log"))
        .unwrap()
        .flatten()
        .map(|e| std::fs::read(e.path()).unwrap_or_default())
        .collect::<Vec<_>>()
        .concat();
    let needle = made.secret_access_key.as_bytes();
    assert!(
        !data.windows(needle.len()).any(|w| w == needle),
        "a secret reached the Raft log"
    );
}

const PROBE: &str = r#"
import json, os

def handler(event, context):
    out = {"uid": os.getuid(), "gid": os.getgid(), "env": sorted(os.environ)}
    def attempt(name, f):
        try:
            got = f()
            out[name] = "allowed"
            if isinstance(got, list):
                out[name + "_entries"] = got
        except Exception as e:
            out[name] = type(e).__name__
    data = event["data_dir"]
    def write(path):
        with open(path, "w") as f:
            f.write("planted")
    attempt("list_data_dir", lambda: os.listdir(data))
    attempt("list_log", lambda: os.listdir(os.path.join(data, "log")))
    attempt("list_state", lambda: os.listdir(os.path.join(data, "db")))
    attempt("read_node_environment", lambda: open("/proc/%d/environ" % event["node_pid"]).read())
    attempt("write_data_dir", lambda: write(os.path.join(data, "planted")))
    attempt("write_var_tmp", lambda: write("/var/tmp/planted"))
    attempt("write_dev_shm", lambda: write("/dev/shm/planted"))
    attempt("write_code", lambda: write(os.path.join(os.environ["LAMBDA_TASK_ROOT"], "planted")))
    attempt("write_world_writable", lambda: write(os.path.join(event["open_dir"], "planted")))
    attempt("write_tmp", lambda: write("/tmp/mine"))
    attempt("read_tmp", lambda: open("/tmp/mine").read())
    return out
"#;

#[tokio::test]
async fn a_function_runs_unprivileged_and_reaches_nothing_but_its_tmp() {
    let _serial = serial().await;
    // Under the target directory, so that outside /tmp the function meets
    // the real, closed data directory (in a checkout under /tmp, its
    // private /tmp hides it instead).
    let mut c = Cluster::start_in(Path::new(env!("CARGO_TARGET_TMPDIR")), 1, &[]);
    c.leader(ELECTION).await;
    let client = c.client();
    let code = tempfile::tempdir().unwrap();
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: "probe".into(),
            handler: "app.handler".into(),
            zip_file: cluster_tests::python_function(code.path(), PROBE),
            environment: HashMap::from([("CONFIGURED".to_string(), "yes".to_string())]),
            ..Default::default()
        })
        .await
        .unwrap();
    // A directory anyone on the machine may write to: still not the
    // function's (it runs in a read-only view of the filesystem).
    let open_dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    std::fs::set_permissions(
        open_dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let node = &c.nodes[&1];
    let event = serde_json::json!({
        "data_dir": std::fs::canonicalize(&node.data_dir).unwrap(),
        "node_pid": node.pid().unwrap(),
        "open_dir": open_dir.path(),
    });
    let answer = client
        .invoke(pb::InvokeRequest {
            function_name: "probe".into(),
            payload: event.to_string().into_bytes(),
            ..Default::default()
        })
        .await
        .unwrap();
    let out: serde_json::Value = serde_json::from_slice(&answer.payload)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&answer.payload)));
    // The tests run as root: the function does not.
    assert_ne!(out["uid"], 0, "{out}");
    assert_ne!(out["gid"], 0, "{out}");
    // The data directory cannot be listed (0711); where it lies under
    // /tmp, the function sees, in its private /tmp, only the path re-made
    // to its code: never the node's files either way.
    if out["list_data_dir"] == "allowed" {
        let entries = out["list_data_dir_entries"].as_array().unwrap();
        for private in ["log", "db", "snapshots", "cluster.key", "FORMAT"] {
            assert!(
                !entries.iter().any(|e| e == private),
                "the node's {private} is visible: {out}"
            );
        }
    }
    for denied in [
        "list_log",
        "list_state",
        "read_node_environment",
        "write_data_dir",
        "write_var_tmp",
        "write_dev_shm",
        "write_code",
        "write_world_writable",
    ] {
        assert_ne!(out[denied], "allowed", "{denied}: {out}");
    }
    // Its own scratch space works.
    for allowed in ["write_tmp", "read_tmp"] {
        assert_eq!(out[allowed], "allowed", "{allowed}: {out}");
    }
    // Nothing it tried to plant is there.
    for planted in [
        node.data_dir.join("planted"),
        open_dir.path().join("planted"),
        std::path::PathBuf::from("/var/tmp/planted"),
    ] {
        assert!(!planted.exists(), "{} was written", planted.display());
    }
    // Only its configured environment and Lambda's.
    let env: Vec<String> = serde_json::from_value(out["env"].clone()).unwrap();
    assert!(env.iter().any(|k| k == "CONFIGURED"));
    assert!(env.iter().any(|k| k == "AWS_LAMBDA_FUNCTION_NAME"));
    let leaked: Vec<&String> = env
        .iter()
        .filter(|k| k.starts_with("SLUICE") || k.starts_with("RUST"))
        .collect();
    assert!(
        leaked.is_empty(),
        "the node's environment leaked: {leaked:?}"
    );
}
