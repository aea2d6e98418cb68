//! gRPC health checking, server reflection and Prometheus metrics on a
//! node's one port, as generic tools see them.

use std::ffi::OsStr;

use cluster_tests::{elected_cluster, metric_series, metric_value, run_python};
use sluice_proto::v1::cluster_client::ClusterClient;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::ServerReflectionRequest;

async fn channel(addr: &str) -> tonic::transport::Channel {
    tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test]
async fn reflection_lists_the_services_and_health_reports_serving() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let ch = channel(&c.nodes[&1].addr).await;

    let mut reflection = ServerReflectionClient::new(ch.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let reply = replies.message().await.unwrap().unwrap();
    let services: Vec<String> = match reply.message_response.unwrap() {
        MessageResponse::ListServicesResponse(l) => l.service.into_iter().map(|s| s.name).collect(),
        other => panic!("unexpected reflection reply {other:?}"),
    };
    for expected in [
        "sluice.v1.Queues",
        "sluice.v1.Streams",
        "sluice.v1.Cluster",
        "sluice.v1.Iam",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
    ] {
        assert!(
            services.iter().any(|s| s == expected),
            "{expected} not in {services:?}"
        );
    }
    // The node-to-node services are neither served nor listed here.
    assert!(
        !services
            .iter()
            .any(|s| s.starts_with("sluice.internal") || s == "sluice.v1.WorkerHost"),
        "internal services listed: {services:?}"
    );

    let mut health = HealthClient::new(ch.clone());
    for service in [
        "",
        "sluice.v1.Queues",
        "sluice.v1.Streams",
        "sluice.v1.Cluster",
    ] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    // Metrics on the same port, over plain HTTP/1.1.
    ClusterClient::new(ch)
        .get_cluster_status(sluice_proto::v1::GetClusterStatusRequest { local: true })
        .await
        .unwrap();
    // A write, so that the leader's proposal metrics have a sample.
    c.client()
        .create_queue("introspected", std::collections::HashMap::new())
        .await
        .unwrap();
    let text = c.nodes[&1].metrics();
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(metric_value(&text, "sluice_raft_term") >= 1.0);
    // No --threads: one runtime thread per core.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(metric_value(&text, "sluice_runtime_threads"), cores as f64);
    assert!(
        metric_value(&text, "sluice_grpc_requests_total") >= 1.0,
        "request counts by rpc and code:\n{text}"
    );
    assert!(text.contains("sluice_grpc_requests_total{rpc=\"GetClusterStatus\",code=\"Ok\"}"));
    assert!(metric_value(&text, "sluice_log_fsyncs_total") >= 1.0);
    assert!(metric_value(&text, "sluice_raft_committed_index") >= 1.0);
    assert!(metric_value(&text, "sluice_raft_applied_index") >= 1.0);
    assert!(metric_value(&text, "sluice_apply_seconds_count") >= 1.0);
    // The write's way through the leader: its wait for a batch, its
    // batch's time in Raft, and the batch's size, counted in commands.
    assert!(metric_value(&text, "sluice_proposal_wait_seconds_count") >= 1.0);
    assert!(metric_value(&text, "sluice_proposal_seconds_count") >= 1.0);
    assert!(metric_value(&text, "sluice_proposal_seconds_sum") > 0.0);
    assert!(
        metric_series(&text, "sluice_proposal_batch_commands_bucket", "le=\"1\"") >= 1.0,
        "commands per batch are counted in whole commands:\n{text}"
    );
}

/// Runs `cluster-tests/python/{script}` with `args`; fails the test unless
/// it succeeds, and returns what it printed.
fn python(script: &str, args: &[&OsStr]) -> String {
    let path = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut all: Vec<&OsStr> = vec![path.as_ref()];
    all.extend(args);
    run_python(
        &all,
        &format!("{script} (are cluster-tests/python/requirements.txt installed?)"),
    )
}

/// A generic client in another language discovers the API by reflection
/// alone and calls it.
#[tokio::test]
async fn a_generic_python_client_lists_and_calls_services_by_reflection() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let stdout = python(
        "introspect.py",
        &[c.nodes[&1].addr.as_ref(), "by-reflection".as_ref()],
    );
    for needle in [
        "\"sluice.v1.Queues\"",
        "\"sluice.v1.Cluster\"",
        "\"grpc.health.v1.Health\"",
        "\"CreateQueue\"",
        "\"DeleteQueue\"",
        "\"created_url\": \"http://",
        "\"listed\": [\"by-reflection\"]",
        "\"health\": \"SERVING\"",
        "\"queues_health\": \"SERVING\"",
    ] {
        assert!(stdout.contains(needle), "{needle} missing from {stdout}");
    }
}

/// A client in another language, generated from `proto/` with grpcio-tools,
/// does a create / send / receive / delete round trip.
#[tokio::test]
async fn a_python_client_generated_from_the_protos_round_trips_a_message() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let out_dir = tempfile::tempdir().unwrap();
    let proto_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let stdout = python(
        "queue_roundtrip.py",
        &[
            proto_dir.as_ref(),
            out_dir.path().as_os_str(),
            c.nodes[&1].addr.as_ref(),
        ],
    );
    let field = |name: &str| -> String {
        let needle = format!("\"{name}\": ");
        let start = stdout
            .find(&needle)
            .unwrap_or_else(|| panic!("{name} in {stdout}"))
            + needle.len();
        let rest = &stdout[start..];
        let end = rest.find([',', '}']).unwrap();
        rest[..end].trim().trim_matches('"').to_string()
    };
    assert_eq!(field("body"), "hello from python");
    assert_eq!(field("sent_id"), field("received_id"));
    assert_eq!(field("md5_sent"), field("md5_received"));
    // MD5 of "hello from python", as SQS computes MD5OfMessageBody.
    assert_eq!(field("md5_sent"), "c03e4d3500eaf92988447831c7a18a5f");
    assert_eq!(field("kind"), "greeting");
    assert_eq!(field("receive_count"), "1");
    assert_eq!(field("left"), "0");
    assert_eq!(field("in_flight"), "0");
    assert!(
        stdout.contains("\"code\": \"INVALID_ARGUMENT\""),
        "{stdout}"
    );
    assert!(
        stdout.contains("message_body: must not be empty"),
        "{stdout}"
    );
}
