//! Event buses on real nodes: 10 000 events from four producers through
//! five rules to queue, stream and topic targets while the leader is
//! killed; PutEvents authorised per bus; the sluicectl verbs.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cluster_tests::leader_kill::{
    all_or_none, count_in_queue, write_once, write_through_a_leader_kill, Written,
};
use cluster_tests::{elected_cluster, elected_secured_cluster, serial_cluster, sluicectl};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;
use tonic::Code;

const EVENTS: usize = 10_000;
const PRODUCERS: usize = 4;
const ARN: &str = "arn:aws:REPLACE:us-east-1:000000000000:";

fn arn(service: &str, resource: &str) -> String {
    format!("{}{resource}", ARN.replace("REPLACE", service))
}

fn color(n: usize) -> &'static str {
    ["red", "green", "blue"][n % 3]
}

fn size(n: usize) -> usize {
    n % 100
}

/// Where a rule's events land.
#[derive(Clone, Copy)]
enum Sink {
    /// A queue holding the whole event.
    Queue(&'static str),
    /// A queue holding only `$.detail.n` (the target's input path).
    QueueOfN(&'static str),
    /// A stream, keyed by `$.detail.n`.
    Stream(&'static str),
    /// A topic, delivering raw to this queue.
    Topic(&'static str, &'static str),
}

/// The five rules: name, pattern, where they send, and the same rule
/// written as plain Rust, the test's oracle.
type Oracle = fn(usize) -> bool;
fn rules() -> Vec<(&'static str, &'static str, Sink, Oracle)> {
    vec![
        (
            "all",
            r#"{"source": ["shop"]}"#,
            Sink::Queue("ev-all"),
            |_| true,
        ),
        (
            "red",
            r#"{"detail": {"color": ["red"]}}"#,
            Sink::Queue("ev-red"),
            |n| color(n) == "red",
        ),
        (
            "big",
            r#"{"detail": {"size": [{"numeric": [">=", 50]}]}}"#,
            Sink::Stream("ev-big"),
            |n| size(n) >= 50,
        ),
        (
            "green-or-seven",
            r#"{"$or": [{"detail": {"color": ["green"]}}, {"detail": {"size": [7]}}]}"#,
            Sink::Topic("ev-topic", "ev-topic-copies"),
            |n| color(n) == "green" || size(n) == 7,
        ),
        (
            "nines",
            r#"{"detail-type": [{"wildcard": "order *9"}], "detail": {"color": [{"anything-but": "blue"}]}}"#,
            Sink::QueueOfN("ev-nines"),
            |n| n % 10 == 9 && color(n) != "blue",
        ),
    ]
}

/// Creates the rules, their targets and what the targets deliver to.
async fn set_up(admin: &Client) {
    for (rule, pattern, sink, _) in rules() {
        admin
            .put_rule(pb::PutRuleRequest {
                name: rule.into(),
                event_pattern: pattern.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        let target = match sink {
            Sink::Queue(q) => {
                admin.create_queue(q, HashMap::new()).await.unwrap();
                pb::Target {
                    arn: arn("sqs", q),
                    ..Default::default()
                }
            }
            Sink::QueueOfN(q) => {
                admin.create_queue(q, HashMap::new()).await.unwrap();
                pb::Target {
                    arn: arn("sqs", q),
                    input_path: "$.detail.n".into(),
                    ..Default::default()
                }
            }
            Sink::Stream(s) => {
                admin.create_unthrottled_stream(s, 2).await.unwrap();
                pb::Target {
                    arn: arn("kinesis", &format!("stream/{s}")),
                    kinesis_parameters: Some(pb::KinesisParameters {
                        partition_key_path: "$.detail.n".into(),
                    }),
                    ..Default::default()
                }
            }
            Sink::Topic(t, q) => {
                let topic = admin.create_topic(t, HashMap::new()).await.unwrap();
                admin.create_queue(q, HashMap::new()).await.unwrap();
                let raw = HashMap::from([("RawMessageDelivery".to_string(), "true".to_string())]);
                admin.subscribe(&topic, "sqs", q, raw).await.unwrap();
                pb::Target {
                    arn: topic,
                    ..Default::default()
                }
            }
        };
        let r = admin
            .put_targets(pb::PutTargetsRequest {
                rule: rule.into(),
                event_bus_name: String::new(),
                targets: vec![pb::Target {
                    id: "t".into(),
                    ..target
                }],
            })
            .await
            .unwrap();
        assert_eq!(r.failed_entry_count, 0, "{:?}", r.failed_entries);
    }
}

fn entry(n: usize) -> pb::PutEventsRequestEntry {
    pb::PutEventsRequestEntry {
        source: "shop".into(),
        detail_type: format!("order {n}"),
        detail: serde_json::json!({"n": n, "color": color(n), "size": size(n)}).to_string(),
        ..Default::default()
    }
}

async fn produce(client: Client, me: usize, written: Arc<Mutex<Written>>) {
    let mine: Vec<usize> = (0..EVENTS).filter(|n| n % PRODUCERS == me).collect();
    for chunk in mine.chunks(10) {
        let entries: Vec<_> = chunk.iter().map(|n| entry(*n)).collect();
        let call = || {
            client.put_events(pb::PutEventsRequest {
                entries: entries.clone(),
            })
        };
        write_once(&written, chunk, call, |reply| {
            assert_eq!(reply.failed_entry_count, 0, "refused: {:?}", reply.entries);
            assert_eq!(reply.entries.len(), chunk.len());
        })
        .await;
    }
}

/// The number each delivered body names: a whole event's `detail.n`, or the
/// bare number an input path delivered.
fn n_of(body: &str) -> usize {
    let v: serde_json::Value = serde_json::from_str(body).unwrap();
    match v.get("detail") {
        Some(d) => d["n"].as_u64().unwrap() as usize,
        None => v.as_u64().unwrap() as usize,
    }
}

/// Reads every record of a stream and counts each event it holds,
/// checking each record's partition key is its event's number.
async fn drain_stream(client: &Client, stream: &str) -> BTreeMap<usize, usize> {
    let mut seen: BTreeMap<usize, usize> = BTreeMap::new();
    for shard in client.list_shards(stream).await.unwrap() {
        let mut it = client
            .get_shard_iterator(pb::GetShardIteratorRequest {
                stream_name: stream.into(),
                shard_id: shard.shard_id.clone(),
                shard_iterator_type: "TRIM_HORIZON".into(),
                ..Default::default()
            })
            .await
            .unwrap();
        loop {
            let r = client.get_records(&it, 10_000).await.unwrap();
            for rec in &r.records {
                let n = n_of(std::str::from_utf8(&rec.data).unwrap());
                assert_eq!(rec.partition_key, n.to_string());
                *seen.entry(n).or_default() += 1;
            }
            if r.records.is_empty() && r.millis_behind_latest == 0 {
                break;
            }
            it = r.next_shard_iterator;
        }
    }
    seen
}

#[tokio::test]
async fn events_reach_exactly_their_rules_targets_through_a_leader_kill() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    set_up(&admin).await;
    let run = write_through_a_leader_kill(&mut c, leader, EVENTS, PRODUCERS, produce).await;
    let r = &run.written;
    let reader = c.client();
    let mut held: BTreeMap<&str, BTreeMap<usize, usize>> = BTreeMap::new();
    for (rule, _, sink, _) in rules() {
        let seen = match sink {
            Sink::Queue(q) | Sink::QueueOfN(q) | Sink::Topic(_, q) => {
                count_in_queue(&reader, q, n_of).await
            }
            Sink::Stream(s) => drain_stream(&reader, s).await,
        };
        held.insert(rule, seen);
    }
    let mut deliveries = 0;
    for (rule, _, _, oracle) in rules() {
        let seen = &held[rule];
        deliveries += seen.values().sum::<usize>();
        let twice: Vec<_> = seen.iter().filter(|(_, k)| **k > 1).collect();
        assert!(
            twice.is_empty(),
            "{rule}: delivered more than once: {twice:?}"
        );
        for n in &r.acked {
            assert_eq!(
                seen.contains_key(n),
                oracle(*n),
                "{rule}: accepted event {n} (color {}, size {})",
                color(*n),
                size(*n)
            );
        }
        for n in seen.keys() {
            assert!(oracle(*n), "{rule}: event {n} does not match");
            assert!(
                r.acked.contains(n) || r.unknown.contains(n),
                "{rule}: event {n} was never put"
            );
        }
    }
    // An event of unknown outcome is in all of its targets or none: it is
    // one command.
    all_or_none(
        r,
        |n| {
            rules()
                .into_iter()
                .filter(|(_, _, _, oracle)| oracle(n))
                .map(|(rule, _, _, _)| rule)
                .collect()
        },
        |rule, n| held[rule].contains_key(&n),
    );
    eprintln!("events: {run} through 5 rules; {deliveries} deliveries");
}

#[tokio::test]
async fn put_events_is_authorised_for_every_bus_it_names() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    admin.create_queue("audit", HashMap::new()).await.unwrap();
    admin
        .create_event_bus(pb::CreateEventBusRequest {
            name: "app".into(),
            description: String::new(),
        })
        .await
        .unwrap();
    for bus in ["", "app"] {
        admin
            .put_rule(pb::PutRuleRequest {
                name: "all".into(),
                event_bus_name: bus.into(),
                event_pattern: r#"{"source": ["shop"]}"#.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        admin
            .put_targets(pb::PutTargetsRequest {
                rule: "all".into(),
                event_bus_name: bus.into(),
                targets: vec![pb::Target {
                    id: "q".into(),
                    arn: arn("sqs", "audit"),
                    ..Default::default()
                }],
            })
            .await
            .unwrap();
    }
    let pat = c
        .client_allowed(
            &admin,
            "pat",
            "events:PutEvents",
            "arn:aws:events:us-east-1:000000000000:event-bus/app",
        )
        .await;
    let on = |bus: &str| pb::PutEventsRequestEntry {
        event_bus_name: bus.into(),
        ..entry(1)
    };
    // One entry for a bus pat may not use refuses the whole call.
    let e = pat
        .put_events(pb::PutEventsRequest {
            entries: vec![on("app"), on("default")],
        })
        .await
        .expect_err("pat may not put on the default bus");
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
    assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    let a = admin.get_queue_attributes("audit", &["All"]).await.unwrap();
    assert_eq!(
        a["ApproximateNumberOfMessages"], "0",
        "the refused call put nothing"
    );
    // Pat may put on app; the event reaches its rule's queue.
    let r = pat
        .put_events(pb::PutEventsRequest {
            entries: vec![on("arn:aws:events:us-east-1:000000000000:event-bus/app")],
        })
        .await
        .unwrap();
    assert_eq!(r.failed_entry_count, 0, "{:?}", r.entries);
    let a = admin.get_queue_attributes("audit", &["All"]).await.unwrap();
    assert_eq!(a["ApproximateNumberOfMessages"], "1");
    // Nor may pat change rules.
    let e = pat
        .put_rule(pb::PutRuleRequest {
            name: "mine".into(),
            event_bus_name: "app".into(),
            event_pattern: r#"{"source": ["x"]}"#.into(),
            ..Default::default()
        })
        .await
        .expect_err("pat may only put events");
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
    // A rule's maker must be let write where its targets write: ray may
    // change app's rules, not send to the audit queue.
    let ray = c
        .client_allowed(
            &admin,
            "ray",
            "events:PutTargets",
            "arn:aws:events:us-east-1:000000000000:rule/app/all",
        )
        .await;
    let e = ray
        .put_targets(pb::PutTargetsRequest {
            rule: "all".into(),
            event_bus_name: "app".into(),
            targets: vec![pb::Target {
                id: "sneak".into(),
                arn: arn("sqs", "audit"),
                ..Default::default()
            }],
        })
        .await
        .expect_err("ray may not send to the audit queue");
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
    assert!(e.to_string().contains("sqs:SendMessage"), "{e}");
    let targets = admin
        .list_targets_by_rule(pb::ListTargetsByRuleRequest {
            rule: "all".into(),
            event_bus_name: "app".into(),
        })
        .await
        .unwrap();
    assert_eq!(targets.targets.len(), 1, "the refused call added nothing");
}

#[tokio::test]
async fn entries_fail_on_their_own_with_the_field_and_the_rule() {
    // Elected first: the entry errors, not an election, are what this
    // test is about.
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    let r = client
        .put_events(pb::PutEventsRequest {
            entries: vec![
                entry(1),
                pb::PutEventsRequestEntry {
                    detail: "[1, 2]".into(),
                    ..entry(2)
                },
                pb::PutEventsRequestEntry {
                    event_bus_name: "missing".into(),
                    ..entry(3)
                },
            ],
        })
        .await
        .unwrap();
    assert_eq!(r.failed_entry_count, 2);
    assert!(!r.entries[0].event_id.is_empty());
    assert_eq!(r.entries[1].error_code, "MalformedDetail");
    assert!(
        r.entries[1].error_message.contains("entries[1].detail"),
        "{:?}",
        r.entries[1]
    );
    assert_eq!(r.entries[2].error_code, "ResourceNotFoundException");
    // A bad pattern names the rule it breaks.
    let e = client
        .put_rule(pb::PutRuleRequest {
            name: "r".into(),
            event_pattern: r#"{"x": [{"wildcard": "a**"}]}"#.into(),
            ..Default::default()
        })
        .await
        .expect_err("two stars in a row");
    assert_eq!(e.code(), Some("InvalidEventPatternException"), "{e}");
    assert!(e.to_string().contains("consecutive"), "{e}");
    let t = client
        .test_event_pattern(pb::TestEventPatternRequest {
            event_pattern: r#"{"detail": {"n": [{"numeric": [">", 5]}]}}"#.into(),
            event: r#"{"detail": {"n": 6}}"#.into(),
        })
        .await
        .unwrap();
    assert!(t.result);
}

#[tokio::test]
async fn sluicectl_routes_an_event_to_a_queue() {
    let (_serial, c) = serial_cluster(1, &[]).await;
    let addr = c.addrs()[0].clone();
    c.client()
        .create_queue("cli", HashMap::new())
        .await
        .unwrap();
    let run = |args: &[&str]| {
        let out = sluicectl(&addr, 30).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let arn = run(&[
        "events",
        "put-rule",
        "orders",
        "--pattern",
        r#"{"source": ["cli"]}"#,
    ]);
    assert_eq!(
        arn.trim(),
        "arn:aws:events:us-east-1:000000000000:rule/orders"
    );
    run(&[
        "events",
        "put-target",
        "orders",
        "--id",
        "q",
        "--arn",
        "arn:aws:sqs:us-east-1:000000000000:cli",
        "--input-template",
        "\"<who> ordered\"",
        "--input-path-map",
        "who=$.detail.who",
    ]);
    assert!(run(&["events", "list-targets", "orders"])
        .contains("arn:aws:sqs:us-east-1:000000000000:cli"));
    let id = run(&[
        "events",
        "put",
        "--source",
        "cli",
        "--detail-type",
        "t",
        "--detail",
        r#"{"who": "ann"}"#,
    ]);
    assert_eq!(id.trim().len(), 36, "an event id: {id}");
    let got = c
        .client()
        .receive_from("cli", 10, Some(60), Some(1))
        .await
        .unwrap();
    assert_eq!(got.messages.len(), 1);
    assert_eq!(got.messages[0].body, "\"ann ordered\"");
    assert_eq!(
        run(&[
            "events",
            "test-pattern",
            "--pattern",
            r#"{"a": [1]}"#,
            "--event",
            r#"{"a": 2}"#
        ])
        .trim(),
        "false"
    );
    // An archive from now on, replayed over a range that holds none of its
    // events: it completes with nothing to route.
    run(&["events", "create-archive", "all"]);
    assert!(run(&["events", "list-archives"]).contains("event-bus/default"));
    let r = run(&[
        "events",
        "start-replay",
        "none",
        "--archive",
        "all",
        "--from-ms",
        "1",
        "--to-ms",
        "2",
    ]);
    assert!(r.contains("none"), "{r}");
    let done = cluster_tests::wait_for(Duration::from_secs(30), "the replay to complete", || {
        let out = run(&["events", "describe-replay", "none"]);
        async move { out.contains("COMPLETED").then_some(out) }
    })
    .await;
    assert!(done.contains("0 events"), "{done}");

    // Schedules: a one-time one two seconds ahead fires into the queue and
    // deletes itself; a rate one is described, listed and deleted.
    let at = cluster_tests::chaos::workloads::schedule::at_text(now_ms() + 2_000);
    let queue_arn = "arn:aws:sqs:us-east-1:000000000000:cli";
    run(&[
        "events",
        "create-schedule",
        "soon",
        "--expression",
        &format!("at({at})"),
        "--target",
        queue_arn,
        "--input",
        "tick <aws.scheduler.scheduled-time>",
        "--delete-after-completion",
    ]);
    run(&[
        "events",
        "create-schedule",
        "hourly",
        "--expression",
        "rate(1 hour)",
        "--target",
        queue_arn,
    ]);
    let client = c.client();
    let fired = cluster_tests::wait_for(Duration::from_secs(30), "the schedule to fire", || {
        let client = &client;
        async move {
            let got = client
                .receive_message(pb::ReceiveMessageRequest {
                    queue_name: "cli".into(),
                    max_number_of_messages: 10,
                    wait_time_seconds: Some(1),
                    ..Default::default()
                })
                .await
                .ok()?;
            got.messages
                .into_iter()
                .map(|m| m.body)
                .find(|b| b.starts_with("tick"))
        }
    })
    .await;
    assert_eq!(fired, format!("tick {at}Z"));
    let described = run(&["events", "describe-schedule", "hourly"]);
    assert!(
        described.contains("rate(1 hour)") && described.contains("ENABLED"),
        "{described}"
    );
    let listed = run(&["events", "list-schedules"]);
    assert_eq!(
        listed.trim(),
        "hourly",
        "the one-time schedule deleted itself"
    );
    run(&["events", "delete-schedule", "hourly"]);
    assert_eq!(run(&["events", "list-schedules"]).trim(), "");
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// The first millisecond after `t` on this machine's clock, which the
/// leader stamps events with: a range boundary no event shares.
fn past(t: u64) -> u64 {
    while now_ms() <= t {
        std::hint::spin_loop();
    }
    t + 1
}

#[tokio::test]
async fn an_archive_replays_a_time_range_to_a_rules_queue() {
    let (_serial, c, _) = elected_cluster(3, &[]).await;
    let client = c.client();
    client
        .create_queue("replayed", HashMap::new())
        .await
        .unwrap();
    client
        .put_rule(pb::PutRuleRequest {
            name: "shop".into(),
            event_pattern: r#"{"source": ["shop"]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    client
        .put_targets(pb::PutTargetsRequest {
            rule: "shop".into(),
            event_bus_name: String::new(),
            targets: vec![pb::Target {
                id: "q".into(),
                arn: arn("sqs", "replayed"),
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let archive = client
        .create_archive(pb::CreateArchiveRequest {
            archive_name: "orders".into(),
            event_source_arn: "arn:aws:events:us-east-1:000000000000:event-bus/default".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        archive.archive_arn,
        "arn:aws:events:us-east-1:000000000000:archive/orders"
    );
    let put = |range: std::ops::Range<usize>| {
        let client = client.clone();
        async move {
            let r = client
                .put_events(pb::PutEventsRequest {
                    entries: range.map(entry).collect(),
                })
                .await
                .unwrap();
            assert_eq!(r.failed_entry_count, 0);
        }
    };
    put(0..5).await;
    let start = past(now_ms());
    put(5..10).await;
    put(10..15).await;
    let end = past(now_ms());
    put(15..20).await;
    // Every event went to the queue once as it was put.
    assert_eq!(count_in_queue(&client, "replayed", n_of).await.len(), 20);
    let a = client
        .describe_archive(pb::DescribeArchiveRequest {
            archive_name: "orders".into(),
        })
        .await
        .unwrap();
    assert_eq!(a.event_count, 20);
    let started = client
        .start_replay(pb::StartReplayRequest {
            replay_name: "again".into(),
            event_source_arn: a.archive_arn.clone(),
            event_start_time_ms: start,
            event_end_time_ms: end,
            destination: Some(pb::ReplayDestination {
                arn: "arn:aws:events:us-east-1:000000000000:event-bus/default".into(),
                filter_arns: vec!["arn:aws:events:us-east-1:000000000000:rule/shop".into()],
            }),
            description: String::new(),
        })
        .await
        .unwrap();
    assert_eq!(started.state, "RUNNING");
    // The leader works the replay in the background.
    let done = cluster_tests::wait_for(Duration::from_secs(30), "the replay to complete", || {
        let client = client.clone();
        async move {
            let r = client
                .describe_replay(pb::DescribeReplayRequest {
                    replay_name: "again".into(),
                })
                .await
                .ok()?;
            (r.state == "COMPLETED").then_some(r)
        }
    })
    .await;
    assert_eq!(done.events_replayed, 10);
    let mut replayed = BTreeMap::new();
    for _ in 0..10 {
        let r = client
            .receive_from("replayed", 10, Some(600), Some(5))
            .await
            .unwrap();
        for m in r.messages {
            let e: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            assert_eq!(e["replay-name"], "again", "{e}");
            *replayed.entry(n_of(&m.body)).or_insert(0) += 1;
        }
        if replayed.len() >= 10 {
            break;
        }
    }
    assert_eq!(
        replayed.keys().copied().collect::<Vec<_>>(),
        (5..15).collect::<Vec<_>>(),
        "the events of the range, each once"
    );
    assert!(replayed.values().all(|k| *k == 1));
    // The archive goes; the leader collects its events.
    client
        .delete_archive(pb::DeleteArchiveRequest {
            archive_name: "orders".into(),
        })
        .await
        .unwrap();
}

/// Every event-bus call of a caller with no policy is refused with
/// `PERMISSION_DENIED` naming its action, and changes nothing.
#[tokio::test]
async fn every_events_call_is_refused_without_its_permission() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    admin.create_queue("q", HashMap::new()).await.unwrap();
    admin
        .put_rule(pb::PutRuleRequest {
            name: "r".into(),
            event_pattern: r#"{"source": ["shop"]}"#.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    admin
        .create_archive(pb::CreateArchiveRequest {
            archive_name: "a".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let credentials = cluster_tests::create_principal(&admin, "nobody", "user", &[]).await;
    let nobody = c.single_attempt_client(Some(credentials));
    let bus = String::from;
    macro_rules! refused {
        ($action:literal, $call:expr) => {{
            let e = $call.await.map(|_| ()).expect_err($action);
            assert_eq!(e.status(), Some(Code::PermissionDenied), "{}: {e}", $action);
            assert!(e.to_string().contains($action), "{}: {e}", $action);
        }};
    }
    let target = || pb::Target {
        id: "t".into(),
        arn: arn("sqs", "q"),
        ..Default::default()
    };
    let range = || pb::StartReplayRequest {
        replay_name: "p".into(),
        event_source_arn: "a".into(),
        event_start_time_ms: 0,
        event_end_time_ms: 1,
        destination: Some(pb::ReplayDestination::default()),
        description: String::new(),
    };
    refused!(
        "events:CreateEventBus",
        nobody.create_event_bus(pb::CreateEventBusRequest {
            name: bus("x"),
            description: bus("")
        })
    );
    refused!(
        "events:DeleteEventBus",
        nobody.delete_event_bus(pb::DeleteEventBusRequest {
            name: bus("default")
        })
    );
    refused!(
        "events:DescribeEventBus",
        nobody.describe_event_bus(pb::DescribeEventBusRequest::default())
    );
    refused!(
        "events:ListEventBuses",
        nobody.list_event_buses(pb::ListEventBusesRequest::default())
    );
    refused!(
        "events:PutRule",
        nobody.put_rule(pb::PutRuleRequest {
            name: bus("r2"),
            event_pattern: bus(r#"{"a": [1]}"#),
            ..Default::default()
        })
    );
    refused!(
        "events:DeleteRule",
        nobody.delete_rule(pb::DeleteRuleRequest {
            name: bus("r"),
            ..Default::default()
        })
    );
    refused!(
        "events:DescribeRule",
        nobody.describe_rule(pb::DescribeRuleRequest {
            name: bus("r"),
            ..Default::default()
        })
    );
    refused!(
        "events:ListRules",
        nobody.list_rules(pb::ListRulesRequest::default())
    );
    refused!(
        "events:EnableRule",
        nobody.enable_rule(pb::EnableRuleRequest {
            name: bus("r"),
            ..Default::default()
        })
    );
    refused!(
        "events:DisableRule",
        nobody.disable_rule(pb::DisableRuleRequest {
            name: bus("r"),
            ..Default::default()
        })
    );
    refused!(
        "events:PutTargets",
        nobody.put_targets(pb::PutTargetsRequest {
            rule: bus("r"),
            event_bus_name: bus(""),
            targets: vec![target()]
        })
    );
    refused!(
        "events:RemoveTargets",
        nobody.remove_targets(pb::RemoveTargetsRequest {
            rule: bus("r"),
            event_bus_name: bus(""),
            ids: vec![bus("t")]
        })
    );
    refused!(
        "events:ListTargetsByRule",
        nobody.list_targets_by_rule(pb::ListTargetsByRuleRequest {
            rule: bus("r"),
            event_bus_name: bus("")
        })
    );
    refused!(
        "events:PutEvents",
        nobody.put_events(pb::PutEventsRequest {
            entries: vec![entry(1)]
        })
    );
    refused!(
        "events:TestEventPattern",
        nobody.test_event_pattern(pb::TestEventPatternRequest {
            event_pattern: bus(r#"{"a": [1]}"#),
            event: bus(r#"{"a": 1}"#)
        })
    );
    refused!(
        "events:CreateArchive",
        nobody.create_archive(pb::CreateArchiveRequest {
            archive_name: bus("b"),
            ..Default::default()
        })
    );
    refused!(
        "events:DescribeArchive",
        nobody.describe_archive(pb::DescribeArchiveRequest {
            archive_name: bus("a")
        })
    );
    refused!(
        "events:ListArchives",
        nobody.list_archives(pb::ListArchivesRequest::default())
    );
    refused!(
        "events:DeleteArchive",
        nobody.delete_archive(pb::DeleteArchiveRequest {
            archive_name: bus("a")
        })
    );
    refused!("events:StartReplay", nobody.start_replay(range()));
    refused!(
        "events:DescribeReplay",
        nobody.describe_replay(pb::DescribeReplayRequest {
            replay_name: bus("p")
        })
    );
    refused!(
        "events:ListReplays",
        nobody.list_replays(pb::ListReplaysRequest::default())
    );
    refused!(
        "events:CancelReplay",
        nobody.cancel_replay(pb::CancelReplayRequest {
            replay_name: bus("p")
        })
    );
    // Nothing changed: one rule without targets, enabled; one archive,
    // empty; no replay; only the default bus; the queue empty.
    let rules = admin
        .list_rules(pb::ListRulesRequest::default())
        .await
        .unwrap()
        .rules;
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].state, "ENABLED");
    let targets = admin
        .list_targets_by_rule(pb::ListTargetsByRuleRequest {
            rule: "r".into(),
            event_bus_name: String::new(),
        })
        .await
        .unwrap();
    assert!(targets.targets.is_empty());
    let archives = admin
        .list_archives(pb::ListArchivesRequest::default())
        .await
        .unwrap();
    assert_eq!(archives.archives.len(), 1);
    assert_eq!(archives.archives[0].event_count, 0);
    let replays = admin
        .list_replays(pb::ListReplaysRequest::default())
        .await
        .unwrap();
    assert!(replays.replays.is_empty());
    let buses = admin
        .list_event_buses(pb::ListEventBusesRequest::default())
        .await
        .unwrap();
    assert_eq!(buses.event_buses.len(), 1);
    let a = admin.get_queue_attributes("q", &["All"]).await.unwrap();
    assert_eq!(a["ApproximateNumberOfMessages"], "0");
}

/// Each scheduler call of a caller without its permission is refused, and
/// a caller allowed every scheduler action but not the target's cannot
/// make a schedule write where it may not: nothing changes either way.
#[tokio::test]
async fn every_scheduler_call_is_refused_without_its_permission() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    admin.create_queue("q", HashMap::new()).await.unwrap();
    let settings = |name: &str| pb::ScheduleSettings {
        name: name.into(),
        schedule_expression: "rate(1 minute)".into(),
        flexible_time_window: Some(pb::FlexibleTimeWindow {
            mode: "OFF".into(),
            maximum_window_in_minutes: 0,
        }),
        target: Some(pb::ScheduleTarget {
            arn: arn("sqs", "q"),
            ..Default::default()
        }),
        ..Default::default()
    };
    admin.create_schedule(settings("s")).await.unwrap();
    let credentials = cluster_tests::create_principal(&admin, "nobody", "user", &[]).await;
    let nobody = c.single_attempt_client(Some(credentials));
    macro_rules! refused {
        ($action:literal, $call:expr) => {{
            let e = $call.await.map(|_| ()).expect_err($action);
            assert_eq!(e.status(), Some(Code::PermissionDenied), "{}: {e}", $action);
            assert!(e.to_string().contains($action), "{}: {e}", $action);
        }};
    }
    let changed = || pb::ScheduleSettings {
        schedule_expression: "rate(5 minutes)".into(),
        ..settings("s")
    };
    let named = |name: &str| pb::GetScheduleRequest {
        name: name.into(),
        group_name: String::new(),
    };
    refused!(
        "scheduler:CreateSchedule",
        nobody.create_schedule(settings("t"))
    );
    refused!(
        "scheduler:UpdateSchedule",
        nobody.update_schedule(changed())
    );
    refused!("scheduler:GetSchedule", nobody.get_schedule(named("s")));
    refused!(
        "scheduler:DeleteSchedule",
        nobody.delete_schedule(pb::DeleteScheduleRequest {
            name: "s".into(),
            group_name: String::new(),
        })
    );
    refused!(
        "scheduler:ListSchedules",
        nobody.list_schedules(pb::ListSchedulesRequest::default())
    );
    // Every scheduler action, but not the target's.
    let maker = c.client_allowed(&admin, "maker", "scheduler:*", "*").await;
    refused!("sqs:SendMessage", maker.create_schedule(settings("t")));
    refused!("sqs:SendMessage", maker.update_schedule(changed()));
    // Nothing changed: one schedule, as made.
    let all = admin
        .list_schedules(pb::ListSchedulesRequest::default())
        .await
        .unwrap()
        .schedules;
    assert_eq!(all.len(), 1);
    assert_eq!(
        (all[0].name.as_str(), all[0].schedule_expression.as_str()),
        ("s", "rate(1 minute)")
    );
}
