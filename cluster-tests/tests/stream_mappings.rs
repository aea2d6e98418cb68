//! Stream event source mappings on three nodes: shards shared by worker
//! processes, order per partition key through a reshard and a worker's
//! death, and a poison record bisected out to the on-failure queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, Instant};

use cluster_tests::{
    entry, env_or, metric_value, put_all, put_data, python_function, serial_cluster,
    set_mapping_enabled, split_shard_at, stream_mapping, wait_for, Cluster, WorkerProcess,
};
use sluice_client::sluice_proto::v1 as pb;

/// Records every record it is handed: one line per record with the time
/// the invocation started (ns), the record's index in the batch, its
/// shard, partition key and data. Fails the batch when a record's data is
/// "poison".
const RECORDER: &str = r#"
import base64, os, time, urllib.request

def handler(event, context):
    started = time.time_ns()
    lines = []
    poisoned = False
    for i, r in enumerate(event["Records"]):
        assert r["eventSource"] == "aws:kinesis"
        k = r["kinesis"]
        data = base64.b64decode(k["data"]).decode()
        shard = r["eventID"].split(":")[0]
        lines.append("%d %d %s %s %s\n" % (started, i, shard, k["partitionKey"], data))
        poisoned = poisoned or data == "poison"
    if poisoned:
        raise ValueError("poison in the batch")
    urllib.request.urlopen(os.environ["MARKS"] + "/seen-%d" % os.getpid(),
                           data="".join(lines).encode()).read()
    return None
"#;

/// One record as the function saw it.
#[derive(Debug, Clone)]
struct Seen {
    started_ns: u128,
    index: usize,
    shard: String,
    key: String,
    data: String,
}

fn read_seen(marks: &cluster_tests::Recorder) -> Vec<Seen> {
    let mut out = Vec::new();
    {
        let text = marks.all();
        for line in text.lines() {
            let f: Vec<&str> = line.splitn(5, ' ').collect();
            out.push(Seen {
                started_ns: f[0].parse().unwrap(),
                index: f[1].parse().unwrap(),
                shard: f[2].into(),
                key: f[3].into(),
                data: f[4].into(),
            });
        }
    }
    // Invocations of one poller run one after the other: their start
    // times order them.
    out.sort_by_key(|s| (s.started_ns, s.index));
    out
}

async fn create_recorder(
    client: &sluice_client::Client,
    code: &Path,
    marks: &cluster_tests::Recorder,
) {
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: "recorder".into(),
            handler: "app.handler".into(),
            environment: HashMap::from([("MARKS".to_string(), marks.url.clone())]),
            zip_file: python_function(code, RECORDER),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// The shard of each "stream poller started" line of a worker's log.
fn started_shards(log: &str) -> Vec<String> {
    shards_of(log, "stream poller started")
}

/// The shards a worker's log says it polls now (started, not stopped).
fn polled_shards(log: &str) -> Vec<String> {
    let mut polled = started_shards(log);
    for s in shards_of(log, "stream poller stopped") {
        if let Some(i) = polled.iter().position(|p| *p == s) {
            polled.remove(i);
        }
    }
    polled
}

fn shards_of(log: &str, what: &str) -> Vec<String> {
    log.lines()
        .filter(|l| l.contains(what))
        .filter_map(|l| {
            let at = l.find("shard=")? + "shard=".len();
            Some(l[at..].split_whitespace().next()?.to_string())
        })
        .collect()
}

const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/events";

#[tokio::test]
async fn a_stream_mapping_keeps_order_per_key_through_a_reshard_and_a_worker_kill() {
    let (_serial, c) = serial_cluster(3, &["--in-process-worker", "false"]).await;
    let client = c.client_from(0);
    let mut workers: Vec<WorkerProcess> = ["w1", "w2"]
        .iter()
        .map(|id| WorkerProcess::start(&c, id))
        .collect();
    let code = tempfile::tempdir().unwrap();
    let marks = cluster_tests::Recorder::start("127.0.0.1").await;
    create_recorder(&client, code.path(), &marks).await;
    // No write limit: a throttled record retried later would land after
    // its key's next one.
    client.create_unthrottled_stream("events", 4).await.unwrap();
    let batch = 100;
    let mapping = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            batch_size: Some(batch),
            ..stream_mapping("recorder", STREAM_ARN)
        })
        .await
        .unwrap();

    // N records over 200 keys; each key's data counts up from 0.
    let n = env_or("STREAM_MAPPING_RECORDS", 10_000usize);
    let keys = 200;
    let put = |from: usize, to: usize| {
        let client = client.clone();
        async move {
            for chunk in (from..to).collect::<Vec<_>>().chunks(500) {
                let records = chunk
                    .iter()
                    .map(|i| entry(format!("k{}", i % keys), format!("{}", i / keys)))
                    .collect();
                put_all(&client, "events", records).await;
            }
        }
    };
    put(0, n / 2).await;
    // A reshard halfway: shard 0 splits; its keys' later records go to
    // the children, read only after the parent.
    split_shard_at(&client, "events", "shardId-000000000000", 1 << 125)
        .await
        .unwrap();
    put(n / 2, n).await;

    // Kill the worker once it has processed part of the stream.
    wait_for(Duration::from_secs(120), "a tenth processed", || {
        let seen = read_seen(&marks).len();
        async move { (seen >= n / 10).then_some(()) }
    })
    .await;
    let held = polled_shards(&workers[0].log_text());
    assert!(!held.is_empty(), "w1 polled no shard");
    let survivor_log = workers[1].log_text().len();
    let at_kill = read_seen(&marks).len();
    workers[0].kill9();
    let killed = Instant::now();
    let moved = wait_for(Duration::from_secs(60), "the shards moved", || {
        let log = workers[1].log_text();
        let taken = started_shards(&log[survivor_log..]);
        let all_taken = held.iter().all(|s| taken.contains(s));
        let elapsed = killed.elapsed();
        async move { all_taken.then_some(elapsed) }
    })
    .await;

    let all: HashSet<(String, String)> = (0..n)
        .map(|i| (format!("k{}", i % keys), format!("{}", i / keys)))
        .collect();
    wait_for(Duration::from_secs(300), "every record processed", || {
        let seen: HashSet<(String, String)> = read_seen(&marks)
            .into_iter()
            .map(|s| (s.key, s.data))
            .collect();
        let missing = all.difference(&seen).count();
        async move { (missing == 0).then_some(()) }
    })
    .await;

    // Order per key: after dropping repeats, each key's data counts up
    // without a gap.
    let seen = read_seen(&marks);
    let mut per_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut first: HashSet<(&str, &str)> = HashSet::new();
    let mut shards_of_key: HashMap<&str, HashSet<&str>> = HashMap::new();
    for s in &seen {
        shards_of_key.entry(&s.key).or_default().insert(&s.shard);
        if first.insert((&s.key, &s.data)) {
            per_key
                .entry(&s.key)
                .or_default()
                .push(s.data.parse().unwrap());
        }
    }
    for (key, data) in &per_key {
        let expected: Vec<usize> = (0..data.len()).collect();
        assert_eq!(data, &expected, "key {key} out of order");
    }
    assert_eq!(per_key.values().map(Vec::len).sum::<usize>(), n);
    let duplicates = seen.len() - n;
    // At most the batches in flight when the worker died: one per slot.
    assert!(
        duplicates <= 6 * batch as usize,
        "{duplicates} records processed twice"
    );
    assert!(
        shards_of_key.values().any(|s| s.len() == 2),
        "no key crossed from the split shard into a child"
    );
    assert!(
        moved < Duration::from_secs(15),
        "the dead worker's shards moved after {moved:?}"
    );
    let m = client
        .get_event_source_mapping(&mapping.uuid)
        .await
        .unwrap();
    assert_eq!(m.last_processing_result, "OK");
    assert!(at_kill < n, "the worker died after the work was done");
    eprintln!(
        "{n} records ({at_kill} processed when w1 was killed), {duplicates} processed twice; shards moved {:.1} s after the kill; all processed {:.1} s after it",
        moved.as_secs_f64(),
        killed.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn a_poison_record_is_bisected_out_to_the_on_failure_queue() {
    let (_serial, c) = serial_cluster(3, &[]).await;
    let client = c.client_from(1);
    let code = tempfile::tempdir().unwrap();
    let marks = cluster_tests::Recorder::start("127.0.0.1").await;
    create_recorder(&client, code.path(), &marks).await;
    client.create_stream_with_shards("events", 1).await.unwrap();
    client.create_queue("failed", HashMap::new()).await.unwrap();
    let mut records: Vec<String> = (0..10).map(|i| i.to_string()).collect();
    records[6] = "poison".into();
    let put = client
        .put_records(pb::PutRecordsRequest {
            stream_name: "events".into(),
            records: records.iter().map(|d| entry("one", d.as_str())).collect(),
        })
        .await
        .unwrap();
    let poison_seq = put.records[6].sequence_number.clone();
    // Created after the put: the whole batch is there at the first read.
    let mapping = client
        .create_event_source_mapping(pb::EventSourceMappingRequest {
            batch_size: Some(10),
            bisect_batch_on_function_error: Some(true),
            maximum_retry_attempts: Some(2),
            on_failure_destination: Some("arn:aws:sqs:us-east-1:000000000000:failed".into()),
            // Disabled first: the leader reports the records waiting.
            enabled: Some(false),
            ..stream_mapping("recorder", STREAM_ARN)
        })
        .await
        .unwrap();
    let age = |c: &Cluster| -> f64 {
        c.nodes
            .values()
            .map(|n| metric_value(&n.metrics(), "sluice_mapping_iterator_age_ms"))
            .fold(0.0, f64::max)
    };
    wait_for(
        Duration::from_secs(20),
        "an iterator age on the leader",
        || {
            let a = age(&c);
            async move { (a > 0.0).then_some(()) }
        },
    )
    .await;
    set_mapping_enabled(&client, &mapping.uuid, true)
        .await
        .unwrap();
    let record = wait_for(Duration::from_secs(60), "the on-failure record", || {
        let client = client.clone();
        async move {
            let got = client
                .receive_from("failed", 10, None, Some(1))
                .await
                .ok()?;
            assert!(got.messages.len() <= 1, "{:?}", got.messages);
            got.messages.into_iter().next()
        }
    })
    .await;
    let doc: serde_json::Value = serde_json::from_str(&record.body).unwrap();
    let info = &doc["KinesisBatchInfo"];
    assert_eq!(info["batchSize"], 1, "{doc}");
    assert_eq!(info["startSequenceNumber"], poison_seq.as_str());
    assert_eq!(info["endSequenceNumber"], poison_seq.as_str());
    assert_eq!(info["shardId"], "shardId-000000000000");
    assert_eq!(info["streamArn"], STREAM_ARN);
    assert_eq!(doc["requestContext"]["condition"], "RetryAttemptsExhausted");
    assert_eq!(
        doc["requestContext"]["functionArn"],
        "arn:aws:lambda:us-east-1:000000000000:function:recorder"
    );
    // Invocations that held it: the batch of 10, then halves [5..9] and
    // [5, 6], then itself alone once and 2 retries.
    assert_eq!(doc["requestContext"]["approximateInvokeCount"], 6, "{doc}");

    // Every other record was processed, in order, and the checkpoint
    // moved past the poison: a record put now is processed too.
    put_data(&client, "events", "one", "after").await.unwrap();
    let seen = wait_for(
        Duration::from_secs(30),
        "the record after the poison",
        || {
            let seen = read_seen(&marks);
            async move { seen.iter().any(|s| s.data == "after").then_some(seen) }
        },
    )
    .await;
    let mut order: Vec<&str> = Vec::new();
    for s in &seen {
        if !order.contains(&s.data.as_str()) {
            order.push(&s.data);
        }
    }
    let mut expected: Vec<&str> = records
        .iter()
        .map(String::as_str)
        .filter(|d| *d != "poison")
        .collect();
    expected.push("after");
    assert_eq!(order, expected);
    let m = wait_for(Duration::from_secs(10), "LastProcessingResult OK", || {
        let client = client.clone();
        let uuid = mapping.uuid.clone();
        async move {
            let m = client.get_event_source_mapping(&uuid).await.ok()?;
            (m.last_processing_result == "OK").then_some(m)
        }
    })
    .await;
    assert_eq!(m.state, "Enabled");
    // Caught up: the age falls back to 0.
    wait_for(
        Duration::from_secs(20),
        "the iterator age back to 0",
        || {
            let a = age(&c);
            async move { (a == 0.0).then_some(()) }
        },
    )
    .await;
}
