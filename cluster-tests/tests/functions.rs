//! Functions on a three-node cluster: a Python function written for AWS
//! Lambda (the official `awslambdaric` runtime client) is created once and
//! invoked through every node, each running it on its in-process worker.

use std::collections::HashMap;

use cluster_tests::{
    create_app_function, invoke_ok, python_function, receive_waiting, serial_cluster,
};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::zip_directory;

const APP: &str = r#"
import os

def handler(event, context):
    print("handling", event)
    return {"hello": event.get("name"), "function": context.function_name,
            "greeting": os.environ.get("GREETING"), "pid": os.getpid()}

def fail(event, context):
    raise KeyError("missing " + event.get("name", "?"))
"#;

#[tokio::test]
async fn a_python_lambda_function_runs_through_any_node() {
    let (_serial, c) = serial_cluster(3, &[]).await;
    let code = tempfile::tempdir().unwrap();
    let zip = python_function(code.path(), APP);
    let admin = c.client();
    let create = |name: &str, handler: &str| pb::CreateFunctionRequest {
        function_name: name.into(),
        runtime: "python3.11".into(),
        handler: handler.into(),
        memory_size: 256,
        timeout: 10,
        environment: HashMap::from([("GREETING".to_string(), "hi".to_string())]),
        zip_file: zip.clone(),
        description: String::new(),
    };
    let made = admin
        .create_function(create("hello", "app.handler"))
        .await
        .unwrap();
    assert_eq!(
        made.function_arn,
        "arn:aws:lambda:us-east-1:000000000000:function:hello"
    );
    admin
        .create_function(create("broken", "app.fail"))
        .await
        .unwrap();
    let again = admin.create_function(create("hello", "app.handler")).await;
    assert_eq!(again.unwrap_err().code(), Some("ResourceConflictException"));

    let invoke = |name: &str, payload: &str| pb::InvokeRequest {
        function_name: name.into(),
        payload: payload.as_bytes().to_vec(),
        log_type: "Tail".into(),
        ..Default::default()
    };
    for first in 0..3 {
        let client = c.client_from(first);
        let mut pids = Vec::new();
        for round in 0..2 {
            let (r, v) = invoke_ok(
                &client,
                invoke("hello", &format!(r#"{{"name": "n{first}-{round}"}}"#)),
            )
            .await;
            assert_eq!(r.status_code, 200);
            assert_eq!(v["hello"], format!("n{first}-{round}"));
            assert_eq!(v["function"], "hello");
            assert_eq!(v["greeting"], "hi");
            assert!(!r.log_result.is_empty());
            pids.push(v["pid"].clone());
        }
        // The second invocation on a node reuses its warm environment.
        assert_eq!(pids[0], pids[1], "node {first}");
        let r = client
            .invoke(invoke("broken", r#"{"name": "x"}"#))
            .await
            .unwrap();
        assert_eq!(r.function_error, "Unhandled");
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["errorType"], "KeyError");
        assert_eq!(v["errorMessage"], "'missing x'");
    }
    let listed: Vec<String> = admin
        .list_functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.function_name)
        .collect();
    assert_eq!(listed, ["broken", "hello"]);
    admin.delete_function("broken").await.unwrap();
    let gone = admin.invoke(invoke("broken", "{}")).await.unwrap_err();
    assert_eq!(gone.code(), Some("ResourceNotFoundException"));
    let bad = admin
        .create_function(pb::CreateFunctionRequest {
            zip_file: b"not a zip".to_vec(),
            ..create("bad", "x")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("InvalidParameterValue"));
    assert!(bad.to_string().contains("zip_file"), "{bad}");
}

#[tokio::test]
async fn versions_are_immutable_and_an_alias_splits_invocations_by_weight() {
    let (_serial, c) = serial_cluster(3, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let write = |tag: &str| {
        python_function(
            dir.path(),
            &format!("def handler(event, context):\n    return {{\"code\": \"{tag}\", \"version\": context.function_version}}\n"),
        )
    };
    let client = c.client();
    create_app_function(&client, "split", write("one")).await;
    let v1 = client.publish_version("split").await.unwrap();
    assert_eq!(v1.version, "1");
    assert!(v1.function_arn.ends_with(":split:1"));
    client
        .update_function_code("split", write("two"))
        .await
        .unwrap();
    let v2 = client.publish_version("split").await.unwrap();
    assert_eq!(v2.version, "2");
    let run = |qualifier: &str| {
        let client = client.clone();
        let q = qualifier.to_string();
        async move {
            let (r, v) = invoke_ok(
                &client,
                pb::InvokeRequest {
                    function_name: "split".into(),
                    qualifier: q,
                    ..Default::default()
                },
            )
            .await;
            (v["code"].as_str().unwrap().to_string(), r.executed_version)
        }
    };
    // Updating $LATEST did not change version 1.
    assert_eq!(run("1").await, ("one".to_string(), "1".to_string()));
    assert_eq!(run("2").await, ("two".to_string(), "2".to_string()));
    assert_eq!(run("").await, ("two".to_string(), "$LATEST".to_string()));
    client
        .put_alias(
            pb::AliasRequest {
                function_name: "split".into(),
                name: "live".into(),
                function_version: "1".into(),
                description: String::new(),
                additional_version_weights: HashMap::from([("2".to_string(), 0.1)]),
            },
            true,
        )
        .await
        .unwrap();
    let mut on_two = 0;
    for _ in 0..1000 {
        let (code, version) = run("live").await;
        assert_eq!(code == "two", version == "2");
        on_two += usize::from(version == "2");
    }
    eprintln!("alias live (10% on version 2): {on_two} of 1000 invocations ran version 2");
    // 1 000 draws at p = 0.1: mean 100, standard deviation 9.5.
    assert!((60..=140).contains(&on_two), "{on_two}");
    let missing = client
        .invoke(pb::InvokeRequest {
            function_name: "split".into(),
            qualifier: "9".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Some("ResourceNotFoundException"));
}

const EVENTS_APP: &str = r#"
import time, urllib.request

def fail(event, context):
    raise KeyError("always " + str(event["n"]))

def ok(event, context):
    return {"doubled": event["n"] * 2}

def slow(event, context):
    # Functions write nowhere but their /tmp: a run says so over HTTP.
    urllib.request.urlopen(event["marker"], data=b"start").read()
    time.sleep(3)
    return {"slept": True}
"#;

async fn receive_one(client: &sluice_client::Client, queue: &str) -> serde_json::Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        assert!(
            std::time::Instant::now() < deadline,
            "nothing arrived in {queue}"
        );
        let r = receive_waiting(client, queue, Some(2)).await.unwrap();
        if let Some(m) = r.messages.first() {
            return serde_json::from_str(&m.body).unwrap();
        }
    }
}

#[tokio::test]
async fn asynchronous_invocations_retry_then_reach_their_destinations_across_a_leader_kill() {
    let (_serial, mut c) = serial_cluster(3, &["--event-retry-delay-ms", "300"]).await;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let zip = python_function(dir.path(), EVENTS_APP);
    let client = c.client_from(0);
    let arn = |service: &str, name: &str| match service {
        "sqs" => format!("arn:aws:sqs:us-east-1:000000000000:{name}"),
        _ => format!("arn:aws:sns:us-east-1:000000000000:{name}"),
    };
    for q in ["failures", "successes", "slow-done"] {
        client.create_queue(q, HashMap::new()).await.unwrap();
    }
    // Successes go through a topic to a queue.
    client
        .create_topic("results", HashMap::new())
        .await
        .unwrap();
    client
        .subscribe(
            "results",
            "sqs",
            "successes",
            HashMap::from([("RawMessageDelivery".to_string(), "true".to_string())]),
        )
        .await
        .unwrap();
    for (name, handler, success, failure, timeout) in [
        (
            "always-fails",
            "app.fail",
            String::new(),
            arn("sqs", "failures"),
            10,
        ),
        (
            "doubler",
            "app.ok",
            arn("sns", "results"),
            String::new(),
            10,
        ),
        (
            "sleeper",
            "app.slow",
            arn("sqs", "slow-done"),
            String::new(),
            30,
        ),
    ] {
        client
            .create_function(pb::CreateFunctionRequest {
                function_name: name.into(),
                handler: handler.into(),
                timeout,
                zip_file: zip.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        client
            .put_event_invoke_config(pb::FunctionEventInvokeConfig {
                function_name: name.into(),
                maximum_retry_attempts: Some(2),
                maximum_event_age_in_seconds: None,
                on_success_destination: success,
                on_failure_destination: failure,
            })
            .await
            .unwrap();
    }
    let event = |name: &str, payload: serde_json::Value| pb::InvokeRequest {
        function_name: name.into(),
        invocation_type: "Event".into(),
        payload: payload.to_string().into_bytes(),
        ..Default::default()
    };
    let accepted = client
        .invoke(event("always-fails", serde_json::json!({"n": 7})))
        .await
        .unwrap();
    assert_eq!(accepted.status_code, 202);
    let record = receive_one(&client, "failures").await;
    assert_eq!(record["version"], "1.0");
    assert_eq!(
        record["requestContext"]["requestId"],
        accepted.request_id.as_str()
    );
    assert_eq!(record["requestContext"]["condition"], "RetriesExhausted");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 3);
    assert_eq!(
        record["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:always-fails:$LATEST"
    );
    assert_eq!(record["requestPayload"]["n"], 7);
    assert_eq!(record["responseContext"]["functionError"], "Unhandled");
    assert_eq!(record["responsePayload"]["errorType"], "KeyError");

    client
        .invoke(event("doubler", serde_json::json!({"n": 21})))
        .await
        .unwrap();
    let record = receive_one(&client, "successes").await;
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["requestContext"]["approximateInvokeCount"], 1);
    assert_eq!(record["responsePayload"]["doubled"], 42);

    // The node running an event dies mid-run: another node runs it. Each
    // run reports to a local HTTP endpoint.
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let app = axum::Router::new().fallback(move || {
        counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async { "ok" }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let marker = format!("http://{}/run", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let leader = c.leader(std::time::Duration::from_secs(20)).await;
    let survivor = c.client_without(leader);
    client
        .invoke(event("sleeper", serde_json::json!({ "marker": marker })))
        .await
        .unwrap();
    cluster_tests::wait_for(
        std::time::Duration::from_secs(30),
        "the first run",
        || async { (runs.load(std::sync::atomic::Ordering::SeqCst) >= 1).then_some(()) },
    )
    .await;
    c.node(leader).kill9();
    let record = receive_one(&survivor, "slow-done").await;
    assert_eq!(record["requestContext"]["condition"], "Success");
    let n = runs.load(std::sync::atomic::Ordering::SeqCst);
    assert!(n >= 2, "the event ran {n} time(s)");
}

#[tokio::test]
async fn a_rust_lambda_function_built_with_lambda_runtime_runs() {
    let (_serial, c) = serial_cluster(3, &[]).await;
    // examples/functions/hello-rust, built by `cargo build --workspace
    // --bins`: its binary is the package's bootstrap, as on Lambda.
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        cluster_tests::binary("bootstrap"),
        dir.path().join("bootstrap"),
    )
    .unwrap();
    let client = c.client();
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: "hello-rust".into(),
            runtime: "provided.al2023".into(),
            handler: "bootstrap".into(),
            zip_file: zip_directory(dir.path()).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    let invoke = |payload: &str| pb::InvokeRequest {
        function_name: "hello-rust".into(),
        payload: payload.as_bytes().to_vec(),
        ..Default::default()
    };
    let (r, v) = invoke_ok(&client, invoke(r#"{"name": "sluice"}"#)).await;
    assert_eq!(v["greeting"], "hello sluice");
    assert_eq!(v["function"], "hello-rust");
    assert_eq!(v["request_id"], r.request_id.as_str());
    let r = client.invoke(invoke(r#"{"fail": true}"#)).await.unwrap();
    assert_eq!(r.function_error, "Unhandled");
    let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(v["errorMessage"], "asked to fail", "{v}");
    assert!(
        v["errorType"].as_str().is_some_and(|t| !t.is_empty()),
        "{v}"
    );
}

#[tokio::test]
async fn a_function_created_again_runs_its_new_code_not_a_warm_old_environment() {
    let (_serial, c) = serial_cluster(1, &[]).await;
    let client = c.client();
    for tag in ["old", "new"] {
        let dir = tempfile::tempdir().unwrap();
        let app = format!("def handler(event, context):\n    return \"{tag}\"\n");
        create_app_function(&client, "again", python_function(dir.path(), &app)).await;
        let r = client
            .invoke(pb::InvokeRequest {
                function_name: "again".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&r.payload), format!("\"{tag}\""));
        client.delete_function("again").await.unwrap();
    }
}

/// An Invoke through `client` with the consistency header set to `how`.
async fn invoke_with(
    client: &sluice_client::Client,
    function: &str,
    how: &'static str,
) -> Result<pb::InvokeResponse, sluice_client::Error> {
    client
        .call(|ch| {
            let mut req = tonic::Request::new(pb::InvokeRequest {
                function_name: function.into(),
                payload: br#"{"name": "local"}"#.to_vec(),
                ..Default::default()
            });
            req.metadata_mut().insert(
                sluice_client::sluice_proto::CONSISTENCY_HEADER,
                tonic::metadata::MetadataValue::from_static(how),
            );
            async move {
                pb::functions_client::FunctionsClient::new(ch)
                    .invoke(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
}

#[tokio::test]
async fn an_invoke_may_read_the_function_from_the_called_nodes_state() {
    let (_serial, c, leader) = cluster_tests::elected_cluster(3, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    create_app_function(&c.client(), "nearby", python_function(dir.path(), APP)).await;
    // Through a follower, at once: it knows the function, or (not applied
    // yet) asks the leader; either way the function runs.
    let follower = c.follower_client(leader, std::time::Duration::from_secs(60));
    let r = invoke_with(&follower, "nearby", "local").await.unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
    assert_eq!(answer["hello"], "local", "{answer}");
    assert!(r.function_error.is_empty());
    // A function nobody knows is not found, locally or on the leader.
    let e = invoke_with(&follower, "nowhere", "local")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(tonic::Code::NotFound), "{e}");
    // A consistency that is neither is refused, naming the header.
    let e = invoke_with(&follower, "nearby", "sometimes")
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(tonic::Code::InvalidArgument), "{e}");
    assert!(e.to_string().contains("sluice-consistency"), "{e}");
}
