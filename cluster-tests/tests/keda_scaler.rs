//! The KEDA external scaler service, called over gRPC with the client
//! generated from KEDA's `externalscaler.proto`, the way KEDA calls it:
//! a queue's depth and a stream mapping's iterator age drive IsActive,
//! StreamIsActive and GetMetrics, from zero workers and back to zero.

use std::collections::HashMap;
use std::time::Duration;

use cluster_tests::{
    create_app_function, put_data, python_function, serial_cluster, stream_mapping, wait_for,
    WorkerProcess,
};
use sluice_client::sluice_proto::externalscaler as keda;
use sluice_client::sluice_proto::externalscaler::external_scaler_client::ExternalScalerClient;
use sluice_client::sluice_proto::v1::Message;
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const WAIT: Duration = Duration::from_secs(30);

fn object(meta: &[(&str, &str)]) -> keda::ScaledObjectRef {
    keda::ScaledObjectRef {
        name: "workers".into(),
        namespace: "sluice".into(),
        scaler_metadata: meta
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

async fn scaler(addr: &str) -> ExternalScalerClient<Channel> {
    ExternalScalerClient::connect(format!("http://{addr}"))
        .await
        .expect("connect to the scaler")
}

/// GetMetrics asking for `asked` (KEDA prefixes the spec's name, "s0-…";
/// empty: not named): the name answered and the value.
async fn metric_named(
    s: &mut ExternalScalerClient<Channel>,
    meta: &[(&str, &str)],
    asked: &str,
) -> (String, f64) {
    let r = s
        .get_metrics(keda::GetMetricsRequest {
            scaled_object_ref: Some(object(meta)),
            metric_name: asked.into(),
        })
        .await
        .expect("GetMetrics")
        .into_inner();
    assert_eq!(r.metric_values.len(), 1);
    let v = &r.metric_values[0];
    assert_eq!(v.metric_value, v.metric_value_float.round() as i64);
    (v.metric_name.clone(), v.metric_value_float)
}

/// The queue metric, asked for as KEDA asks, answered under that name.
async fn metric(s: &mut ExternalScalerClient<Channel>, meta: &[(&str, &str)]) -> f64 {
    let (name, value) = metric_named(s, meta, "s0-sluice-queue-jobs").await;
    assert_eq!(name, "s0-sluice-queue-jobs");
    value
}

/// Receives up to 10 of `queue`'s messages for 10 minutes.
async fn receive(client: &sluice_client::Client, queue: &str, wait_s: i32) -> Vec<Message> {
    client
        .receive_from(queue, 10, Some(600), Some(wait_s))
        .await
        .expect("receive")
        .messages
}

async fn active(s: &mut ExternalScalerClient<Channel>, meta: &[(&str, &str)]) -> bool {
    s.is_active(object(meta))
        .await
        .expect("IsActive")
        .into_inner()
        .result
}

#[tokio::test]
async fn queue_depth_drives_keda_from_zero_and_back() {
    let (_serial, mut c) = serial_cluster(3, &[]).await;
    let leader = c.leader(WAIT).await;
    let client = c.client();
    client.create_queue("jobs", HashMap::new()).await.unwrap();
    // A node answers from its own state: the leader's is current at once
    // (it applied every acknowledged write); a follower's is checked by
    // waiting for it, as KEDA may reach any node through the Service.
    let follower = c.others(leader)[0];
    let mut s = scaler(&c.nodes[&leader].addr).await;
    let other = scaler(&c.nodes[&follower].addr).await;
    let q = [("queue", "jobs")];

    let spec = s
        .get_metric_spec(object(&[("queue", "jobs"), ("target", "5")]))
        .await
        .expect("GetMetricSpec")
        .into_inner();
    assert_eq!(spec.metric_specs.len(), 1);
    assert_eq!(spec.metric_specs[0].metric_name, "sluice-queue-jobs");
    assert_eq!(spec.metric_specs[0].target_size, 5);
    assert_eq!(spec.metric_specs[0].target_size_float, 5.0);
    let default = s.get_metric_spec(object(&q)).await.unwrap().into_inner();
    assert_eq!(default.metric_specs[0].target_size_float, 10.0);

    assert!(!active(&mut s, &q).await);
    assert_eq!(metric(&mut s, &q).await, 0.0);
    let mut pushes = s
        .stream_is_active(object(&q))
        .await
        .expect("StreamIsActive")
        .into_inner();
    let first = pushes.next().await.expect("first push").expect("push");
    assert!(!first.result, "an empty queue is not active");

    for i in 0..25 {
        client.send_body("jobs", &format!("job {i}")).await.unwrap();
    }
    let pushed = tokio::time::timeout(WAIT, pushes.next())
        .await
        .expect("a push once messages arrive")
        .expect("push")
        .expect("push");
    assert!(pushed.result, "a queue with messages is active");
    assert!(active(&mut s, &q).await);
    // Every node answers from its own state once it has applied the sends.
    wait_for(WAIT, "25 messages on a follower's scaler", || {
        let mut other = other.clone();
        async move { (metric(&mut other, &q).await == 25.0).then_some(()) }
    })
    .await;
    assert_eq!(metric(&mut s, &q).await, 25.0);
    // Above the activation target only.
    assert!(!active(&mut s, &[("queue", "jobs"), ("activationTarget", "25")]).await);
    assert!(active(&mut s, &[("queue", "jobs"), ("activationTarget", "24")]).await);

    // Received, not deleted: in flight, counted unless scaleOnInFlight is off.
    let mut received = receive(&client, "jobs", 0).await;
    let n = received.len() as f64;
    assert!(n > 0.0);
    assert_eq!(metric(&mut s, &q).await, 25.0);
    assert_eq!(
        metric(&mut s, &[("queue", "jobs"), ("scaleOnInFlight", "false")]).await,
        25.0 - n
    );

    // Drained: back to zero, and the stream says so.
    let mut left = 25;
    loop {
        for m in &received {
            client
                .delete_message("jobs", &m.receipt_handle)
                .await
                .unwrap();
            left -= 1;
        }
        if left == 0 {
            break;
        }
        received = receive(&client, "jobs", 1).await;
    }
    let pushed = tokio::time::timeout(WAIT, pushes.next())
        .await
        .expect("a push once the queue is drained")
        .expect("push")
        .expect("push");
    assert!(!pushed.result, "a drained queue is not active");
    assert_eq!(metric(&mut s, &q).await, 0.0);

    // Wrong metadata: the field and the rule; a missing queue: NOT_FOUND.
    let e = s.is_active(object(&[])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().starts_with("scalerMetadata:"),
        "{}",
        e.message()
    );
    let e = s
        .get_metric_spec(object(&[("queue", "jobs"), ("target", "-3")]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    assert!(
        e.message().contains("scalerMetadata.target"),
        "{}",
        e.message()
    );
    let e = s.is_active(object(&[("queue", "nope")])).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert!(e.message().contains("nope"), "{}", e.message());
}

const NOOP: &str = "def handler(event, context):\n    return {}\n";

#[tokio::test]
async fn stream_iterator_age_activates_with_no_worker_and_settles_once_one_runs() {
    // No worker runs functions: a scaled-to-zero worker Deployment.
    let (_serial, mut c) = serial_cluster(3, &["--in-process-worker", "false"]).await;
    let leader = c.leader(WAIT).await;
    let client = c.client();
    let code = tempfile::tempdir().unwrap();
    create_app_function(&client, "consumer", python_function(code.path(), NOOP)).await;
    client.create_stream_with_shards("events", 2).await.unwrap();
    client
        .create_event_source_mapping(stream_mapping(
            "consumer",
            "arn:aws:kinesis:us-east-1:000000000000:stream/events",
        ))
        .await
        .unwrap();
    let mut s = scaler(&c.nodes[&leader].addr).await;
    let meta = [("stream", "events"), ("function", "consumer")];
    assert!(!active(&mut s, &meta).await, "nothing waits yet");
    let spec = s.get_metric_spec(object(&meta)).await.unwrap().into_inner();
    assert_eq!(
        spec.metric_specs[0].metric_name,
        "sluice-stream-events-iterator-age-ms"
    );
    assert_eq!(spec.metric_specs[0].target_size, 60_000);

    put_data(&client, "events", "k", "hello").await.unwrap();
    // With no worker, the record waits and its age grows.
    let first = wait_for(WAIT, "a positive iterator age", || {
        let mut s = s.clone();
        async move {
            let (name, age) = metric_named(&mut s, &meta, "").await;
            // Not named in the request: answered under the spec's name.
            assert_eq!(name, "sluice-stream-events-iterator-age-ms");
            (age > 0.0).then_some(age)
        }
    })
    .await;
    assert!(active(&mut s, &meta).await, "a waiting record activates");
    // Another function's mappings are not counted.
    assert!(!active(&mut s, &[("stream", "events"), ("function", "other")]).await);
    let mut pushes = s
        .stream_is_active(object(&meta))
        .await
        .unwrap()
        .into_inner();
    assert!(pushes.next().await.unwrap().unwrap().result);
    let (_, later) = metric_named(&mut s, &meta, "").await;
    assert!(
        later >= first,
        "the age does not go down while nothing reads"
    );

    // KEDA starts a worker; it consumes the record and the stream goes idle.
    let worker = WorkerProcess::start(&c, "scaled-up");
    let pushed = match tokio::time::timeout(Duration::from_secs(60), pushes.next()).await {
        Ok(p) => p.unwrap().unwrap(),
        Err(_) => {
            let (_, age) = metric_named(&mut s, &meta, "").await;
            panic!(
                "no push within 60 s of the worker starting (age {age} ms); its log:\n{}",
                worker.log_text()
            )
        }
    };
    assert!(!pushed.result, "a caught-up mapping is not active");
}
