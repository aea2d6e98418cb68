//! Functions on separate worker processes: three broker nodes without
//! in-process workers and two `sluice worker` processes; and reserved and
//! provisioned concurrency on a cluster of in-process workers.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use cluster_tests::{
    invoke_ok, python_function, receive_waiting, serial_cluster, wait_for, Recorder, WorkerProcess,
};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

/// `work` reports its start and end (pid, parent pid, time) to the test's
/// recorder under the event's tag, sleeping in between: the test learns
/// from it which worker runs an invocation (the runtime's parent) and when.
const APP: &str = r#"
import json, os, time, urllib.request

def work(event, context):
    source = "invoke"
    if "Records" in event:
        record = event["Records"][0]
        source = record["EventSource"]
        event = json.loads(record["Sns"]["Message"])
    marker = event["dir"] + "/" + event["tag"]
    def note(what):
        note = json.dumps({"what": what, "pid": os.getpid(), "ppid": os.getppid(),
                           "at": time.time(), "source": source})
        urllib.request.urlopen(marker, data=note.encode()).read()
    note("start")
    print("working on", event["tag"])
    time.sleep(event.get("sleep", 0))
    note("end")
    return {"tag": event["tag"], "ppid": os.getppid()}
"#;

fn package(dir: &Path) -> Vec<u8> {
    python_function(dir, APP)
}

async fn create(client: &Client, name: &str, zip: Vec<u8>) {
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: name.into(),
            runtime: "python3.11".into(),
            handler: "app.work".into(),
            memory_size: 256,
            timeout: 30,
            zip_file: zip,
            ..Default::default()
        })
        .await
        .unwrap();
}

fn event(dir: &Recorder, tag: &str, sleep: f64) -> Vec<u8> {
    let dir = &dir.url;
    serde_json::json!({"dir": dir, "tag": tag, "sleep": sleep})
        .to_string()
        .into_bytes()
}

fn invoke(name: &str, payload: Vec<u8>) -> pb::InvokeRequest {
    pb::InvokeRequest {
        function_name: name.into(),
        payload,
        log_type: "Tail".into(),
        ..Default::default()
    }
}

/// The notes of the invocations tagged `tag` so far.
fn notes(dir: &Recorder, tag: &str) -> Vec<serde_json::Value> {
    dir.text(&format!("/{tag}"))
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits until the invocation tagged `tag` has started `n` times; returns
/// its notes.
async fn started(dir: &Recorder, tag: &str, n: usize) -> Vec<serde_json::Value> {
    wait_for(Duration::from_secs(60), &format!("{tag} to start"), || {
        let found = notes(dir, tag);
        let starts = found.iter().filter(|v| v["what"] == "start").count();
        async move { (starts >= n).then_some(found) }
    })
    .await
}

#[tokio::test]
async fn separate_workers_run_invocations_and_a_killed_worker_loses_no_event() {
    let (_serial, c) = serial_cluster(
        3,
        &[
            "--in-process-worker",
            "false",
            "--event-retry-delay-ms",
            "300",
        ],
    )
    .await;
    let client = c.client_from(1);
    let mut workers = [
        WorkerProcess::start(&c, "w1"),
        // One thread for the worker's own work (`--threads`), where w1 has
        // the default, one per core.
        WorkerProcess::start_with_args(&c, "w2", None, &["--threads", "1"]),
    ];
    let listed = wait_for(Duration::from_secs(30), "two live workers", || {
        let client = client.clone();
        async move {
            let ws = client.list_workers().await.ok()?;
            (ws.iter().filter(|w| w.live).count() == 2).then_some(ws)
        }
    })
    .await;
    let mut ids: Vec<&str> = listed.iter().map(|w| w.worker_id.as_str()).collect();
    ids.sort();
    assert_eq!(ids, ["w1", "w2"]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for (w, threads) in workers.iter().zip([cores, 1]) {
        let log = w.log_text();
        assert!(
            log.contains(&format!("threads={threads} ")),
            "{} should run {threads} threads:\n{log}",
            w.id
        );
    }

    let code = tempfile::tempdir().unwrap();
    let marks = Recorder::start("127.0.0.1").await;
    create(&client, "work", package(code.path())).await;

    // A synchronous invocation runs on one of the workers, and its log is
    // kept there, retrievable by request id through any node.
    let (r, out) = invoke_ok(&client, invoke("work", event(&marks, "sync", 0.0))).await;
    let worker_pids: Vec<u64> = workers.iter().map(|w| w.pid().unwrap().into()).collect();
    assert!(
        worker_pids.contains(&out["ppid"].as_u64().unwrap()),
        "{out} not run by a worker {worker_pids:?}"
    );
    let logs = c
        .client_from(2)
        .function_logs("work", &r.request_id, 10)
        .await
        .unwrap();
    assert_eq!(logs.len(), 1, "{logs:?}");
    let log = &logs[0];
    assert!(["w1", "w2"].contains(&log.worker_id.as_str()));
    assert!(log.cold_start);
    let text = log.lines.join("\n");
    assert!(
        text.contains(&format!("START RequestId: {}", r.request_id)),
        "{text}"
    );
    assert!(text.contains("working on sync"), "{text}");
    assert!(text.contains("Init Duration"), "{text}");
    assert!(
        text.contains(&format!("REPORT RequestId: {}", r.request_id)),
        "{text}"
    );

    // A topic delivers to a function subscription by invoking it
    // asynchronously with the `aws:sns` event.
    client.create_topic("news", HashMap::new()).await.unwrap();
    client
        .subscribe("news", "lambda", "work", HashMap::new())
        .await
        .unwrap();
    client
        .publish(pb::PublishRequest {
            topic_arn: "news".into(),
            message: String::from_utf8(event(&marks, "published", 0.0)).unwrap(),
            ..Default::default()
        })
        .await
        .unwrap();
    let from_topic = started(&marks, "published", 1).await;
    assert_eq!(from_topic[0]["source"], "aws:sns", "{from_topic:?}");

    // An asynchronous event whose worker is killed mid-run is run again on
    // the other worker, without using up a retry (none are allowed).
    for q in ["ok", "failed"] {
        client.create_queue(q, HashMap::new()).await.unwrap();
    }
    client
        .put_event_invoke_config(pb::FunctionEventInvokeConfig {
            function_name: "work".into(),
            maximum_retry_attempts: Some(0),
            maximum_event_age_in_seconds: None,
            on_success_destination: "arn:aws:sqs:us-east-1:000000000000:ok".into(),
            on_failure_destination: "arn:aws:sqs:us-east-1:000000000000:failed".into(),
        })
        .await
        .unwrap();
    let accepted = client
        .invoke(pb::InvokeRequest {
            invocation_type: "Event".into(),
            ..invoke("work", event(&marks, "event", 3.0))
        })
        .await
        .unwrap();
    assert_eq!(accepted.status_code, 202);
    let first = started(&marks, "event", 1).await;
    let victim = first[0]["ppid"].as_u64().unwrap();
    let (killed, survivor) = if worker_pids[0] == victim {
        (0, 1)
    } else {
        (1, 0)
    };
    assert_eq!(worker_pids[killed], victim);
    workers[killed].kill9();

    let record = receive_one(&client, "ok").await;
    assert_eq!(record["requestContext"]["requestId"], accepted.request_id);
    assert_eq!(record["requestContext"]["condition"], "Success");
    assert_eq!(record["responsePayload"]["tag"], "event");
    assert_eq!(
        record["responsePayload"]["ppid"].as_u64(),
        Some(worker_pids[survivor])
    );
    let runs = notes(&marks, "event");
    let starts: Vec<u64> = runs
        .iter()
        .filter(|v| v["what"] == "start")
        .map(|v| v["ppid"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, [victim, worker_pids[survivor]], "{runs:?}");
    let failed = receive_waiting(&client, "failed", Some(1)).await.unwrap();
    assert!(failed.messages.is_empty(), "{:?}", failed.messages);
}

async fn receive_one(client: &Client, queue: &str) -> serde_json::Value {
    wait_for(
        Duration::from_secs(60),
        &format!("a message in {queue}"),
        || {
            let client = client.clone();
            let queue = queue.to_string();
            async move {
                let r = receive_waiting(&client, &queue, Some(2)).await.ok()?;
                r.messages
                    .first()
                    .map(|m| serde_json::from_str(&m.body).unwrap())
            }
        },
    )
    .await
}

#[tokio::test]
async fn reserved_concurrency_throttles_and_provisioned_concurrency_starts_warm() {
    let (_serial, c) = serial_cluster(3, &[]).await;
    let client = c.client_from(0);
    let code = tempfile::tempdir().unwrap();
    let marks = Recorder::start("127.0.0.1").await;
    create(&client, "capped", package(code.path())).await;
    let set = client
        .put_function_concurrency("capped", Some(1))
        .await
        .unwrap();
    assert_eq!(set.reserved_concurrent_executions, Some(1));
    assert_eq!(
        client.function_concurrency("capped").await.unwrap(),
        Some(1)
    );
    let bad = client
        .put_function_concurrency("capped", Some(1001))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("InvalidParameterValue"));
    assert!(
        bad.to_string().contains("reserved_concurrent_executions"),
        "{bad}"
    );

    // While one invocation runs, a second is throttled through every node.
    let running = {
        let client = client.clone();
        let payload = event(&marks, "long", 3.0);
        tokio::spawn(async move { client.invoke(invoke("capped", payload)).await })
    };
    started(&marks, "long", 1).await;
    for first in 0..3 {
        let e = c
            .client_from(first)
            .invoke(invoke("capped", event(&marks, "extra", 0.0)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Some("TooManyRequestsException"), "{e}");
        assert_eq!(e.status(), Some(tonic::Code::ResourceExhausted), "{e}");
    }
    assert!(notes(&marks, "extra").is_empty());
    let done = running.await.unwrap().unwrap();
    assert_eq!(done.function_error, "");

    // An asynchronous event waits for the running invocation instead.
    let running = {
        let client = client.clone();
        let payload = event(&marks, "long2", 2.0);
        tokio::spawn(async move { client.invoke(invoke("capped", payload)).await })
    };
    started(&marks, "long2", 1).await;
    client
        .invoke(pb::InvokeRequest {
            invocation_type: "Event".into(),
            ..invoke("capped", event(&marks, "queued", 0.0))
        })
        .await
        .unwrap();
    let queued = started(&marks, "queued", 1).await;
    running.await.unwrap().unwrap();
    let long_end = notes(&marks, "long2")
        .iter()
        .find(|v| v["what"] == "end")
        .map(|v| v["at"].as_f64().unwrap())
        .unwrap();
    let queued_start = queued[0]["at"].as_f64().unwrap();
    assert!(
        queued_start >= long_end,
        "the event started at {queued_start}, before the running invocation ended at {long_end}"
    );

    // Zero reserved throttles everything; removing the reservation lifts it.
    client
        .put_function_concurrency("capped", Some(0))
        .await
        .unwrap();
    let e = client
        .invoke(invoke("capped", event(&marks, "zero", 0.0)))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some("TooManyRequestsException"));
    client
        .put_function_concurrency("capped", None)
        .await
        .unwrap();
    assert_eq!(client.function_concurrency("capped").await.unwrap(), None);
    client
        .invoke(invoke("capped", event(&marks, "free", 0.0)))
        .await
        .unwrap();

    // Provisioned concurrency: version 1 gets an environment ready ahead of
    // demand, so its first invocation is warm; $LATEST's first is cold.
    create(&client, "ready", package(code.path())).await;
    let v1 = client.publish_version("ready").await.unwrap();
    assert_eq!(v1.version, "1");
    let bad = client
        .put_provisioned_concurrency("ready", "$LATEST", Some(1))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("InvalidParameterValue"));
    let asked = client
        .put_provisioned_concurrency("ready", "1", Some(1))
        .await
        .unwrap();
    assert_eq!(asked.requested, 1);
    let ready = wait_for(Duration::from_secs(60), "provisioned READY", || {
        let client = client.clone();
        async move {
            let p = client.provisioned_concurrency("ready", "1").await.ok()?;
            (p.status == "READY").then_some(p)
        }
    })
    .await;
    assert_eq!(ready.available, 1);
    for (qualifier, cold) in [("1", false), ("$LATEST", true)] {
        let r = client
            .invoke(pb::InvokeRequest {
                qualifier: qualifier.into(),
                ..invoke("ready", event(&marks, &format!("first-{qualifier}"), 0.0))
            })
            .await
            .unwrap();
        assert_eq!(r.function_error, "");
        let logs = client
            .function_logs("ready", &r.request_id, 1)
            .await
            .unwrap();
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].cold_start, cold, "{qualifier}: {:?}", logs[0]);
        assert_eq!(
            logs[0].lines.join("\n").contains("Init Duration"),
            cold,
            "{qualifier}: {:?}",
            logs[0].lines
        );
    }
    client
        .put_provisioned_concurrency("ready", "1", None)
        .await
        .unwrap();
    let gone = client
        .provisioned_concurrency("ready", "1")
        .await
        .unwrap_err();
    assert_eq!(
        gone.code(),
        Some("ProvisionedConcurrencyConfigNotFoundException")
    );
}
