//! Event source mappings through the API on three nodes: the registry
//! (create, validate, list, update, delete), and a queue drained into a
//! function by three worker processes.

use std::collections::HashMap;
use std::time::Duration;

use cluster_tests::{
    create_app_function, create_queue_with_dlq, env_or, python_function, send_batch, send_entry,
    serial_cluster, set_mapping_enabled, stream_mapping, string_map, wait_for, Cluster, Recorder,
    SerialGuard, WorkerProcess,
};
use sluice_client::sluice_proto::v1 as pb;

const APP: &str = "def handler(event, context):\n    return len(event['Records'])\n";

#[tokio::test]
async fn mappings_are_validated_listed_updated_and_deleted() {
    let (_serial, c) = serial_cluster(3, &[]).await;
    let client = c.client_from(1);
    let code = tempfile::tempdir().unwrap();
    create_app_function(&client, "count", python_function(code.path(), APP)).await;
    client.create_queue("jobs", HashMap::new()).await.unwrap();
    let fifo = string_map(&[("FifoQueue", "true")]);
    client.create_queue("jobs.fifo", fifo).await.unwrap();
    client.create_stream_with_shards("clicks", 2).await.unwrap();
    let sqs = |q: &str| format!("arn:aws:sqs:us-east-1:000000000000:{q}");
    let kinesis = "arn:aws:kinesis:us-east-1:000000000000:stream/clicks";
    // A mapping of "count" to `source`, all else left to the defaults.
    let count_from = |source: String| pb::EventSourceMappingRequest {
        function_name: "count".into(),
        event_source_arn: source,
        ..Default::default()
    };

    let queue = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            function_name: "count".into(),
            event_source_arn: sqs("jobs"),
            batch_size: Some(50),
            maximum_batching_window_in_seconds: Some(2),
            set_function_response_types: true,
            function_response_types: vec!["ReportBatchItemFailures".into()],
            set_filters: true,
            filters: vec![r#"{"body": {"kind": ["order"]}}"#.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(queue.state, "Enabled");
    assert_eq!(queue.batch_size, 50);
    assert_eq!(
        queue.function_arn,
        "arn:aws:lambda:us-east-1:000000000000:function:count"
    );
    assert_eq!(queue.function_response_types, ["ReportBatchItemFailures"]);
    let stream = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            parallelization_factor: Some(2),
            bisect_batch_on_function_error: Some(true),
            maximum_retry_attempts: Some(2),
            on_failure_destination: Some(sqs("jobs")),
            ..stream_mapping(
                "arn:aws:lambda:us-east-1:000000000000:function:count",
                kinesis,
            )
        })
        .await
        .unwrap();
    assert_eq!(stream.batch_size, 100);
    assert_eq!(stream.starting_position, "TRIM_HORIZON");

    // Bad input names its field and changes nothing.
    let refused = [
        (
            pb::EventSourceMappingRequest {
                function_name: "count".into(),
                event_source_arn: sqs("jobs.fifo"),
                batch_size: Some(11),
                ..Default::default()
            },
            "batch_size",
        ),
        (
            count_from("arn:aws:sns:us-east-1:000000000000:t".into()),
            "event_source_arn",
        ),
        (
            pb::EventSourceMappingRequest {
                function_name: "count".into(),
                event_source_arn: sqs("jobs.fifo"),
                set_filters: true,
                filters: vec!["{not json".into()],
                ..Default::default()
            },
            "filters[0]",
        ),
    ];
    for (req, field) in refused {
        let e = client.create_event_source_mapping(req).await.unwrap_err();
        assert_eq!(e.code(), Some("InvalidParameterValue"), "{e}");
        assert!(e.to_string().contains(field), "{field}: {e}");
    }
    let missing = client
        .create_event_source_mapping(count_from(sqs("nope")))
        .await
        .unwrap_err();
    assert_eq!(missing.status(), Some(tonic::Code::NotFound), "{missing}");
    let twice = client
        .create_event_source_mapping(count_from(sqs("jobs")))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Some("ResourceConflictException"));
    assert_eq!(
        c.client_from(2)
            .list_event_source_mappings("count", "")
            .await
            .unwrap()
            .len(),
        2
    );
    let by_source = client
        .list_event_source_mappings("", kinesis)
        .await
        .unwrap();
    assert_eq!(by_source.len(), 1);
    assert_eq!(by_source[0].uuid, stream.uuid);

    // Updates change what they name and keep the rest.
    let off = set_mapping_enabled(&client, &queue.uuid, false)
        .await
        .unwrap();
    assert_eq!(off.state, "Disabled");
    assert_eq!(off.batch_size, 50);
    assert_eq!(off.filters, queue.filters);
    let e = client
        .update_event_source_mapping(pb::EventSourceMappingRequest {
            uuid: stream.uuid.clone(),
            maximum_record_age_in_seconds: Some(10),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(e.to_string().contains("maximum_record_age_s"), "{e}");

    client
        .delete_event_source_mapping(&queue.uuid)
        .await
        .unwrap();
    let gone = client
        .get_event_source_mapping(&queue.uuid)
        .await
        .unwrap_err();
    assert_eq!(gone.code(), Some("ResourceNotFoundException"));
    // The function takes its mappings with it.
    client.delete_function("count").await.unwrap();
    assert!(client
        .list_event_source_mappings("", "")
        .await
        .unwrap()
        .is_empty());
}

/// Records every message it is handed (one line per record: worker pid,
/// message id, body) and reports the bodies starting with "fail" as failed
/// items.
/// Three nodes without in-process workers, `workers` worker processes,
/// and the Python function `name` (`app.handler` of `code`, with
/// `timeout`), which reports to the returned recorder (`$MARKS`).
async fn workers_and_function(
    workers: usize,
    name: &str,
    code: &str,
    timeout: i32,
) -> (SerialGuard, Cluster, Vec<WorkerProcess>, Recorder) {
    let (serial, c) = serial_cluster(3, &["--in-process-worker", "false"]).await;
    let processes = (1..=workers)
        .map(|i| WorkerProcess::start(&c, &format!("w{i}")))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let marks = Recorder::start("127.0.0.1").await;
    c.client_from(0)
        .create_function(pb::CreateFunctionRequest {
            function_name: name.into(),
            handler: "app.handler".into(),
            timeout,
            environment: HashMap::from([("MARKS".to_string(), marks.url.clone())]),
            zip_file: python_function(dir.path(), code),
            ..Default::default()
        })
        .await
        .unwrap();
    (serial, c, processes, marks)
}

const RECORDER: &str = r#"
import json, os, urllib.request

def handler(event, context):
    failed = []
    lines = []
    for r in event["Records"]:
        assert r["eventSource"] == "aws:sqs"
        lines.append("%d %s %s\n" % (os.getppid(), r["messageId"], r["body"]))
        if r["body"].startswith("fail"):
            failed.append({"itemIdentifier": r["messageId"]})
    urllib.request.urlopen(os.environ["MARKS"] + "/seen-%d" % os.getpid(),
                           data="".join(lines).encode()).read()
    return {"batchItemFailures": failed}
"#;

#[tokio::test]
async fn a_queue_mapping_drains_a_queue_through_three_workers() {
    // The function's timeout is at most the queue's visibility timeout (a
    // mapping refuses more).
    let (_serial, c, workers, marks) = workers_and_function(3, "recorder", RECORDER, 3).await;
    let client = c.client_from(0);
    create_queue_with_dlq(
        &client,
        "work",
        "work-dlq",
        2,
        &[("VisibilityTimeout", "3")],
    )
    .await;
    client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            function_name: "recorder".into(),
            event_source_arn: "arn:aws:sqs:us-east-1:000000000000:work".into(),
            batch_size: Some(50),
            maximum_batching_window_in_seconds: Some(1),
            set_function_response_types: true,
            function_response_types: vec!["ReportBatchItemFailures".into()],
            // "skip-" messages are filtered out: deleted unseen.
            set_filters: true,
            filters: vec![r#"{"body": [{"prefix": "ok-"}, {"prefix": "fail-"}]}"#.into()],
            ..Default::default()
        })
        .await
        .unwrap();

    // Every worker holds a slot and polls before the first message is
    // sent: a worker whose lease came after the queue drained would have
    // had nothing to share.
    for w in &workers {
        wait_for(Duration::from_secs(60), "every worker polling", || {
            let polling = w.log_text().contains("queue poller started");
            async move { polling.then_some(()) }
        })
        .await;
    }

    // N messages, one in 100 failing, one in 100 filtered out.
    let n = env_or("MAPPING_MESSAGES", 3_000usize);
    let mut sent = HashMap::new();
    for chunk in (0..n).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| {
                let body = match i % 100 {
                    7 => format!("fail-{i}"),
                    13 => format!("skip-{i}"),
                    _ => format!("ok-{i}"),
                };
                send_entry(format!("e{i}"), body)
            })
            .collect();
        let r = send_batch(&client, "work", entries).await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
        for ok in r.successful {
            let i: usize = ok.id[1..].parse().unwrap();
            sent.insert(ok.message_id, i);
        }
    }
    assert_eq!(sent.len(), n);
    let failing = (0..n).filter(|i| i % 100 == 7).count();

    // Drained: nothing left in the queue, the failing ones in the DLQ.
    wait_for(Duration::from_secs(240), "the queue drained", || {
        let client = client.clone();
        async move {
            let a = client.get_queue_attributes("work", &["All"]).await.ok()?;
            let d = client
                .get_queue_attributes("work-dlq", &["ApproximateNumberOfMessages"])
                .await
                .ok()?;
            let left: usize = a["ApproximateNumberOfMessages"].parse::<usize>().ok()?
                + a["ApproximateNumberOfMessagesNotVisible"]
                    .parse::<usize>()
                    .ok()?
                + a["ApproximateNumberOfMessagesDelayed"]
                    .parse::<usize>()
                    .ok()?;
            let dead: usize = d["ApproximateNumberOfMessages"].parse().ok()?;
            (left == 0 && dead == failing).then_some(())
        }
    })
    .await;

    // Every message was seen at least once; the failing ones at least
    // twice (then moved); the three workers' pollers shared the work.
    let mut seen: HashMap<String, usize> = HashMap::new();
    let mut by_worker: HashMap<u32, usize> = HashMap::new();
    {
        for line in marks.all().lines() {
            let mut parts = line.splitn(3, ' ');
            let (pid, id, body) = (
                parts.next().unwrap().parse::<u32>().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            );
            let i = sent[id];
            assert!(body.ends_with(&format!("-{i}")), "{line}");
            *seen.entry(id.to_string()).or_default() += 1;
            *by_worker.entry(pid).or_default() += 1;
        }
    }
    let skipped = (0..n).filter(|i| i % 100 == 13).count();
    assert_eq!(
        seen.len(),
        n - skipped,
        "messages never handed to the function"
    );
    for (id, i) in &sent {
        match i % 100 {
            7 => assert!(seen[id] >= 2, "failing message {i} seen {} times", seen[id]),
            13 => assert!(
                !seen.contains_key(id),
                "filtered-out message {i} was handed over"
            ),
            _ => assert!(seen.contains_key(id), "message {i} never handed over"),
        }
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.pid().unwrap()).collect();
    for pid in by_worker.keys() {
        assert!(
            pids.contains(pid),
            "a record handled outside the workers: {pid}"
        );
    }
    // Which worker runs an invocation is the dispatcher's choice (a warm
    // environment first, on any worker), so the work is shared by the
    // pollers: each worker's poller received batches of its own.
    for w in &workers {
        let batches = w.log_text().matches("batch received").count();
        assert!(
            batches > 0,
            "a worker whose poller received nothing; records per worker: {by_worker:?}"
        );
    }
    let dlq = client
        .receive_from("work-dlq", 10, None, None)
        .await
        .unwrap();
    assert!(dlq.messages.iter().all(|m| m.body.starts_with("fail-")));
    eprintln!(
        "{n} messages ({failing} failing) drained; records per worker: {by_worker:?}; duplicates: {}",
        seen.values().map(|c| c - 1).sum::<usize>() - failing
    );
}

/// Notes when each invocation began and ended (seconds since the epoch),
/// holding each for a while so that invocations overlap.
const SLOW: &str = r#"
import os, time, urllib.request

def handler(event, context):
    began = time.time()
    time.sleep(0.3)
    urllib.request.urlopen(os.environ["MARKS"] + "/spans",
                           data=("%f %f %d\n" % (began, time.time(), len(event["Records"]))).encode()).read()
"#;

#[tokio::test]
async fn a_queue_mappings_batches_scale_with_the_backlog_up_to_its_maximum_concurrency() {
    const MESSAGES: usize = 60;
    const MAXIMUM: u32 = 4;
    let (_serial, c, workers, marks) = workers_and_function(2, "slow", SLOW, 10).await;
    let client = c.client_from(0);
    client
        .create_queue(
            "backlog",
            HashMap::from([("VisibilityTimeout".to_string(), "30".to_string())]),
        )
        .await
        .unwrap();
    client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            function_name: "slow".into(),
            event_source_arn: "arn:aws:sqs:us-east-1:000000000000:backlog".into(),
            batch_size: Some(1),
            maximum_concurrency: Some(MAXIMUM),
            ..Default::default()
        })
        .await
        .unwrap();
    // Both workers poll with their share (2 each) before the messages
    // come: a share that changes restarts a poller.
    for w in &workers {
        wait_for(
            Duration::from_secs(60),
            "every worker polling its share",
            || {
                let polling = w
                    .log_text()
                    .lines()
                    .any(|l| l.contains("queue poller started") && l.contains("concurrency=2"));
                async move { polling.then_some(()) }
            },
        )
        .await;
    }
    for chunk in (0..MESSAGES).collect::<Vec<_>>().chunks(10) {
        let entries = chunk
            .iter()
            .map(|i| send_entry(format!("e{i}"), format!("m{i}")))
            .collect();
        let r = send_batch(&client, "backlog", entries).await.unwrap();
        assert!(r.failed.is_empty(), "{:?}", r.failed);
    }
    wait_for(
        Duration::from_secs(120),
        "every message handed over",
        || {
            let n = marks.text("/spans").lines().count();
            async move { (n >= MESSAGES).then_some(()) }
        },
    )
    .await;
    // The most invocations running at once, from their spans.
    let mut edges: Vec<(f64, i32)> = Vec::new();
    for line in marks.text("/spans").lines() {
        let f: Vec<f64> = line.split(' ').map(|x| x.parse().unwrap()).collect();
        assert_eq!(f[2], 1.0, "a batch of more than the batch size: {line}");
        edges.push((f[0], 1));
        edges.push((f[1], -1));
    }
    // Ends before starts at the same instant.
    edges.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let (mut now, mut most) = (0, 0);
    for (_, d) in edges {
        now += d;
        most = most.max(now);
    }
    // One batch at a time per worker would be 2 at most; the mapping's
    // maximum is never passed.
    assert!(
        most > 2,
        "at most {most} invocations at once: the pollers did not scale"
    );
    assert!(
        most <= MAXIMUM as i32,
        "{most} invocations at once, over the maximum concurrency {MAXIMUM}"
    );
    drop(workers);
}
