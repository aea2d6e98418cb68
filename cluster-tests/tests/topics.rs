//! Topics on a three-node cluster: fan-out to five filtered queues while the
//! leader is killed, FIFO order through a FIFO topic, and delivery to real
//! HTTP endpoints across failures, a leader change and a dead-letter queue.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_tests::leader_kill::{
    all_or_none, count_in_queue, write_once, write_through_a_leader_kill, Written,
};
use cluster_tests::{elected_cluster, receive_with_attributes, serial_cluster, wait_for};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

const PUBLISHES: usize = 10_000;
const PRODUCERS: usize = 4;

fn string(v: &str) -> pb::MessageAttributeValue {
    pb::MessageAttributeValue {
        data_type: "String".into(),
        string_value: v.into(),
        binary_value: Vec::new(),
    }
}

fn number(v: usize) -> pb::MessageAttributeValue {
    pb::MessageAttributeValue {
        data_type: "Number".into(),
        string_value: v.to_string(),
        binary_value: Vec::new(),
    }
}

fn color(n: usize) -> &'static str {
    ["red", "green", "blue"][n % 3]
}

fn size(n: usize) -> usize {
    n % 100
}

/// The five subscriptions: queue, filter policy, and the same rule written
/// as plain Rust, which the test uses as its oracle.
type Rule = fn(usize) -> bool;
fn subscriptions() -> Vec<(&'static str, Option<&'static str>, Rule)> {
    vec![
        ("fan-all", None, |_| true),
        ("fan-red", Some(r#"{"color": ["red"]}"#), |n| {
            color(n) == "red"
        }),
        (
            "fan-big",
            Some(r#"{"size": [{"numeric": [">=", 50]}]}"#),
            |n| size(n) >= 50,
        ),
        (
            "fan-not-blue-small",
            Some(r#"{"color": [{"anything-but": "blue"}], "size": [{"numeric": ["<", 20]}]}"#),
            |n| color(n) != "blue" && size(n) < 20,
        ),
        (
            "fan-or",
            Some(r#"{"$or": [{"color": ["green"]}, {"size": [{"numeric": ["=", 7]}]}]}"#),
            |n| color(n) == "green" || size(n) == 7,
        ),
    ]
}

async fn produce(client: Client, topic: String, me: usize, record: Arc<Mutex<Written>>) {
    let mine: Vec<usize> = (0..PUBLISHES).filter(|n| n % PRODUCERS == me).collect();
    for chunk in mine.chunks(10) {
        let entries: Vec<pb::PublishBatchRequestEntry> = chunk
            .iter()
            .enumerate()
            .map(|(i, n)| pb::PublishBatchRequestEntry {
                id: format!("e{i}"),
                message: format!("m{n}"),
                message_attributes: HashMap::from([
                    ("color".to_string(), string(color(*n))),
                    ("size".to_string(), number(size(*n))),
                ]),
                ..Default::default()
            })
            .collect();
        let call = || {
            client.publish_batch(pb::PublishBatchRequest {
                topic_arn: topic.clone(),
                entries: entries.clone(),
            })
        };
        write_once(&record, chunk, call, |reply| {
            assert!(reply.failed.is_empty(), "refused: {:?}", reply.failed);
            assert_eq!(reply.successful.len(), chunk.len());
        })
        .await;
    }
}

/// The message a raw-less queue subscription delivered, out of its envelope.
fn message(body: &str) -> String {
    let env: serde_json::Value = serde_json::from_str(body).unwrap();
    assert_eq!(env["Type"], "Notification");
    env["Message"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn fan_out_to_five_filtered_queues_survives_a_leader_kill() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    let topic = admin.create_topic("fan", HashMap::new()).await.unwrap();
    for (queue, filter, _) in subscriptions() {
        admin.create_queue(queue, HashMap::new()).await.unwrap();
        let mut attrs = HashMap::new();
        if let Some(f) = filter {
            attrs.insert("FilterPolicy".to_string(), f.to_string());
        }
        admin.subscribe(&topic, "sqs", queue, attrs).await.unwrap();
    }
    let run = write_through_a_leader_kill(&mut c, leader, PUBLISHES, PRODUCERS, |client, p, w| {
        produce(client, topic.clone(), p, w)
    })
    .await;
    let r = &run.written;
    let reader = c.client();
    let mut drained: BTreeMap<&str, BTreeMap<String, usize>> = BTreeMap::new();
    for (queue, _, _) in subscriptions() {
        drained.insert(queue, count_in_queue(&reader, queue, message).await);
    }
    let mut total = 0;
    for (queue, _, rule) in subscriptions() {
        let seen = &drained[queue];
        total += seen.values().sum::<usize>();
        let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
        assert!(
            twice.is_empty(),
            "{queue}: delivered more than once: {twice:?}"
        );
        for n in &r.acked {
            assert_eq!(
                seen.contains_key(&format!("m{n}")),
                rule(*n),
                "{queue}: acknowledged m{n} (color {}, size {})",
                color(*n),
                size(*n)
            );
        }
        for body in seen.keys() {
            let n: usize = body[1..].parse().unwrap();
            assert!(rule(n), "{queue}: m{n} does not match its filter");
            assert!(
                r.acked.contains(&n) || r.unknown.contains(&n),
                "{queue}: m{n} was never published"
            );
        }
    }
    // A publish whose outcome is unknown reached every matching queue or
    // none: it is one command.
    all_or_none(
        r,
        |n| {
            subscriptions()
                .into_iter()
                .filter(|(_, _, rule)| rule(n))
                .map(|(q, _, _)| q)
                .collect()
        },
        |q, n| drained[q].contains_key(&format!("m{n}")),
    );
    eprintln!("fan-out: {run} to 5 queues; {total} deliveries");
}

#[tokio::test]
async fn a_fifo_topic_keeps_group_order_in_two_fifo_queues() {
    let (_serial, c) = serial_cluster(3, &[]).await;
    let admin = c.client();
    let topic = admin
        .create_topic(
            "orders.fifo",
            HashMap::from([("FifoTopic".to_string(), "true".to_string())]),
        )
        .await
        .unwrap();
    for q in ["fifo-a.fifo", "fifo-b.fifo"] {
        let fifo = HashMap::from([("FifoQueue".to_string(), "true".to_string())]);
        admin.create_queue(q, fifo).await.unwrap();
        admin
            .subscribe(&topic, "sqs", q, HashMap::new())
            .await
            .unwrap();
    }
    const GROUPS: usize = 8;
    const PER_GROUP: usize = 100;
    // Each producer owns some groups and publishes each in order; a retried
    // publish is deduplicated by its id.
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            let client = c.client_from(p);
            let topic = topic.clone();
            tokio::spawn(async move {
                for k in 0..PER_GROUP {
                    for g in (0..GROUPS).filter(|g| g % PRODUCERS == p) {
                        client
                            .publish(pb::PublishRequest {
                                topic_arn: topic.clone(),
                                message: format!("g{g}-{k}"),
                                message_group_id: format!("g{g}"),
                                message_deduplication_id: format!("g{g}-{k}"),
                                ..Default::default()
                            })
                            .await
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for p in producers {
        p.await.unwrap();
    }
    let reader = c.client();
    for q in ["fifo-a.fifo", "fifo-b.fifo"] {
        let mut order: BTreeMap<String, Vec<usize>> = BTreeMap::new();
        loop {
            let r = reader.receive_from(q, 10, None, Some(1)).await.unwrap();
            if r.messages.is_empty() {
                break;
            }
            for m in &r.messages {
                let env: serde_json::Value = serde_json::from_str(&m.body).unwrap();
                let body = env["Message"].as_str().unwrap();
                let (g, k) = body.split_once('-').unwrap();
                order
                    .entry(g.to_string())
                    .or_default()
                    .push(k.parse().unwrap());
                reader.delete_message(q, &m.receipt_handle).await.unwrap();
            }
        }
        assert_eq!(order.len(), GROUPS, "{q}");
        for (g, ks) in &order {
            assert_eq!(
                ks,
                &(0..PER_GROUP).collect::<Vec<_>>(),
                "{q}: group {g} out of order or incomplete"
            );
        }
    }
}

/// A local HTTP endpoint: records what it is sent, answers 500 while told
/// to fail, and confirms its subscription through the SubscribeURL (or
/// hands the token over, for confirmation through the API).
#[derive(Default)]
struct Endpoint {
    failing: AtomicBool,
    notifications: Mutex<Vec<(String, HashMap<String, String>)>>,
    posts: AtomicUsize,
    tokens: Mutex<Vec<(String, String)>>,
    confirm_by_url: bool,
}

async fn serve(endpoint: Arc<Endpoint>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let ep = endpoint.clone();
            async move {
                ep.posts.fetch_add(1, Ordering::SeqCst);
                let kind = headers
                    .get("x-amz-sns-message-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                if kind == "SubscriptionConfirmation" {
                    let url = v["SubscribeURL"].as_str().unwrap_or("").to_string();
                    let token = v["Token"].as_str().unwrap_or("").to_string();
                    if ep.confirm_by_url {
                        let r = reqwest::get(&url).await;
                        if !r.is_ok_and(|r| r.status().is_success()) {
                            return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                        }
                    } else {
                        ep.tokens.lock().unwrap().push((url, token));
                    }
                    return axum::http::StatusCode::OK;
                }
                if ep.failing.load(Ordering::SeqCst) {
                    return axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                }
                let h = headers
                    .iter()
                    .filter(|(k, _)| k.as_str().starts_with("x-amz-sns"))
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_string()))
                    .collect();
                ep.notifications
                    .lock()
                    .unwrap()
                    .push((v["Message"].as_str().unwrap_or("").to_string(), h));
                axum::http::StatusCode::OK
            }
        }),
    );
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    url
}

#[tokio::test]
async fn http_endpoints_get_every_message_through_failures_and_a_leader_change() {
    let (_serial, mut c) = serial_cluster(3, &[]).await;
    let admin = c.client_from(0);
    let topic = admin.create_topic("hooks", HashMap::new()).await.unwrap();
    admin
        .create_queue("hooks-dlq", HashMap::new())
        .await
        .unwrap();
    let good = Arc::new(Endpoint {
        confirm_by_url: true,
        ..Default::default()
    });
    let bad = Arc::new(Endpoint {
        failing: AtomicBool::new(true),
        ..Default::default()
    });
    let good_url = serve(good.clone()).await;
    let bad_url = serve(bad.clone()).await;
    let fast_retries = r#"{"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 2, "numRetries": 30, "backoffFunction": "linear"}}"#;
    let pending = admin
        .subscribe(
            &topic,
            "http",
            &good_url,
            HashMap::from([("DeliveryPolicy".to_string(), fast_retries.to_string())]),
        )
        .await
        .unwrap();
    assert!(pending.starts_with(&topic), "{pending}");
    admin
        .subscribe(
            &topic,
            "http",
            &bad_url,
            HashMap::from([
                (
                    "DeliveryPolicy".to_string(),
                    r#"{"healthyRetryPolicy": {"minDelayTarget": 1, "maxDelayTarget": 1, "numRetries": 2}}"#
                        .to_string(),
                ),
                (
                    "RedrivePolicy".to_string(),
                    r#"{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:hooks-dlq"}"#
                        .to_string(),
                ),
            ]),
        )
        .await
        .unwrap();
    // The good endpoint confirms through the SubscribeURL; the bad one's
    // token is confirmed through the API.
    let token = wait_for(
        Duration::from_secs(30),
        "the confirmation request",
        || async { bad.tokens.lock().unwrap().first().map(|(_, t)| t.clone()) },
    )
    .await;
    admin.confirm_subscription(&topic, &token).await.unwrap();
    wait_for(
        Duration::from_secs(30),
        "both subscriptions confirmed",
        || async {
            let subs = admin.list_subscriptions(Some(&topic)).await.ok()?;
            subs.iter()
                .all(|s| s.subscription_arn != "PendingConfirmation")
                .then_some(())
        },
    )
    .await;

    let mut acked: Vec<String> = Vec::new();
    let clients: Vec<Client> = (0..3).map(|i| c.client_from(i)).collect();
    let publish = |from: usize, n: usize| {
        let client = clients[from].clone();
        let topic = topic.clone();
        async move {
            let mut out = Vec::new();
            for i in 0..n {
                let m = format!("p{from}-{i}-{}", rand_suffix());
                client
                    .publish(pb::PublishRequest {
                        topic_arn: topic.clone(),
                        message: m.clone(),
                        ..Default::default()
                    })
                    .await
                    .unwrap();
                out.push(m);
            }
            out
        }
    };
    // 1. Healthy.
    acked.extend(publish(1, 30).await);
    // 2. The good endpoint answers 500 for a while: retried with back-off.
    good.failing.store(true, Ordering::SeqCst);
    acked.extend(publish(1, 30).await);
    let failing_posts = good.posts.load(Ordering::SeqCst);
    wait_for(Duration::from_secs(30), "retries while failing", || async {
        (good.posts.load(Ordering::SeqCst) >= failing_posts + 30).then_some(())
    })
    .await;
    good.failing.store(false, Ordering::SeqCst);
    // 3. The leader is killed while messages are outstanding.
    let leader = c.leader(Duration::from_secs(20)).await;
    let survivor = if leader == 1 { 2 } else { 1 };
    // Publishes run while the leader is killed.
    let during = tokio::spawn(publish(survivor as usize - 1, 30));
    c.node(leader).kill9();
    acked.extend(during.await.unwrap());
    acked.extend(publish(survivor as usize - 1, 30).await);
    c.node(leader).start();

    let expected: HashSet<String> = acked.iter().cloned().collect();
    wait_for(
        Duration::from_secs(120),
        "every message at the good endpoint",
        || async {
            let got: HashSet<String> = good
                .notifications
                .lock()
                .unwrap()
                .iter()
                .map(|(m, _)| m.clone())
                .collect();
            expected.is_subset(&got).then_some(())
        },
    )
    .await;
    let notes = good.notifications.lock().unwrap().clone();
    let (_, headers) = &notes[0];
    assert_eq!(headers["x-amz-sns-message-type"], "Notification");
    assert!(headers["x-amz-sns-topic-arn"].ends_with(":hooks"));
    assert!(headers["x-amz-sns-subscription-arn"].starts_with(&topic));
    let repeats = notes.len() - expected.len();

    // The endpoint that never recovers: every message ends in the DLQ after
    // 3 attempts (1 + 2 retries).
    let reader = c.client();
    let mut dead: HashMap<String, String> = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while !expected.iter().all(|m| dead.contains_key(m)) {
        assert!(
            Instant::now() < deadline,
            "{} of {} in the DLQ",
            dead.len(),
            expected.len()
        );
        let r = receive_with_attributes(&reader, "hooks-dlq", 10, Some(600), Some(1))
            .await
            .unwrap();
        for m in r.messages {
            let env: serde_json::Value = serde_json::from_str(&m.body).unwrap();
            let attempts = m.message_attributes["DeliveryAttempts"]
                .string_value
                .clone();
            dead.insert(env["Message"].as_str().unwrap().to_string(), attempts);
        }
    }
    assert!(dead.values().all(|a| a == "3"), "attempts: {dead:?}");
    assert!(bad.posts.load(Ordering::SeqCst) >= 3 * expected.len());
    eprintln!(
        "http: {} messages, {} posts to the recovering endpoint ({repeats} repeats), {} posts to the failing one",
        expected.len(),
        good.posts.load(Ordering::SeqCst),
        bad.posts.load(Ordering::SeqCst)
    );
}

fn rand_suffix() -> u32 {
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::Relaxed) as u32
}
