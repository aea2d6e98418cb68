//! 10 000 messages through a three-node cluster: producers and consumers on
//! different nodes, with and without the leader killed mid-run. Every
//! operation is recorded with its invocation and completion time, and the
//! checks judge the record: nothing acknowledged is lost, nothing arrives
//! that was never sent, and (FIFO) each group arrives in order and no
//! message is delivered after its delete was acknowledged.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_tests::{delete_batch, elected_cluster, send_batch, send_entry};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

const MESSAGES: usize = 10_000;
const PRODUCERS: usize = 4;
const CONSUMERS: usize = 4;
const GROUPS: usize = 20;
const VISIBILITY: i32 = 5;

#[derive(Default)]
struct Record {
    acked: HashSet<String>,
    unknown: HashSet<String>,
    /// (body, receive invoked, receive completed, position in its response)
    received: Vec<(String, Instant, Instant, usize)>,
    delete_invoked: HashMap<String, Instant>,
    delete_acked: HashMap<String, Instant>,
}

fn group_of(body: &str) -> Option<(&str, usize)> {
    let (g, k) = body.rsplit_once('-')?;
    Some((g, k.parse().ok()?))
}

async fn produce(client: Client, queue: String, fifo: bool, me: usize, record: Arc<Mutex<Record>>) {
    // Standard: this producer's share of bodies. FIFO: this producer owns
    // some groups and sends each group's messages in order.
    let bodies: Vec<(String, String)> = if fifo {
        let per_group = MESSAGES / GROUPS;
        (0..per_group)
            .flat_map(|k| {
                (0..GROUPS)
                    .filter(move |g| g % PRODUCERS == me)
                    .map(move |g| (format!("g{g}"), format!("g{g}-{k}")))
            })
            .collect()
    } else {
        (0..MESSAGES / PRODUCERS)
            .map(|n| (String::new(), format!("p{me}-{n}")))
            .collect()
    };
    for chunk in bodies.chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, (group, body))| pb::SendMessageBatchRequestEntry {
                message_group_id: group.clone(),
                // With the body as deduplication id, a retried FIFO send is
                // taken once.
                message_deduplication_id: if fifo { body.clone() } else { String::new() },
                ..send_entry(format!("e{i}"), body.clone())
            })
            .collect();
        let result = send_batch(&client, &queue, entries).await;
        let mut r = record.lock().unwrap();
        match result {
            Ok(reply) => {
                assert!(
                    reply.failed.is_empty(),
                    "entries refused: {:?}",
                    reply.failed
                );
                for s in reply.successful {
                    let i: usize = s.id[1..].parse().unwrap();
                    r.acked.insert(chunk[i].1.clone());
                }
            }
            Err(_) => r.unknown.extend(chunk.iter().map(|(_, b)| b.clone())),
        }
    }
}

async fn consume(client: Client, queue: String, record: Arc<Mutex<Record>>, done: Arc<AtomicBool>) {
    while !done.load(Ordering::Relaxed) {
        let invoked = Instant::now();
        let reply = client
            .receive_from(&queue, 10, Some(VISIBILITY), Some(1))
            .await;
        let completed = Instant::now();
        let Ok(reply) = reply else { continue };
        if reply.messages.is_empty() {
            continue;
        }
        {
            let mut r = record.lock().unwrap();
            for (pos, m) in reply.messages.iter().enumerate() {
                r.received.push((m.body.clone(), invoked, completed, pos));
            }
        }
        let invoked = Instant::now();
        {
            let mut r = record.lock().unwrap();
            for m in &reply.messages {
                r.delete_invoked.entry(m.body.clone()).or_insert(invoked);
            }
        }
        if let Ok(out) = delete_batch(&client, &queue, &reply.messages).await {
            let acked = Instant::now();
            let mut r = record.lock().unwrap();
            for s in out.successful {
                let i: usize = s.id[1..].parse().unwrap();
                r.delete_acked
                    .entry(reply.messages[i].body.clone())
                    .or_insert(acked);
            }
        }
    }
}

async fn run(fifo: bool, kill_leader: bool) {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let queue = if fifo { "work.fifo" } else { "work" }.to_string();
    let attributes = if fifo {
        HashMap::from([("FifoQueue".to_string(), "true".to_string())])
    } else {
        HashMap::new()
    };
    c.client().create_queue(&queue, attributes).await.unwrap();
    let record = Arc::new(Mutex::new(Record::default()));
    let done = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let producers: Vec<_> = (0..PRODUCERS)
        .map(|p| {
            tokio::spawn(produce(
                c.client_from(p),
                queue.clone(),
                fifo,
                p,
                record.clone(),
            ))
        })
        .collect();
    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|n| {
            tokio::spawn(consume(
                c.client_from(n + 1),
                queue.clone(),
                record.clone(),
                done.clone(),
            ))
        })
        .collect();
    let deleted = || record.lock().unwrap().delete_acked.len();
    let wait_deleted = |n: usize| {
        let record = record.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(180);
            while record.lock().unwrap().delete_acked.len() < n {
                assert!(Instant::now() < deadline, "stuck below {n} deletes");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let mut killed_at = None;
    if kill_leader {
        wait_deleted(MESSAGES / 3).await;
        c.node(leader).kill9();
        killed_at = Some(started.elapsed());
        eprintln!("killed leader {leader} after {} deletes", deleted());
        wait_deleted(MESSAGES * 2 / 3).await;
        c.node(leader).start();
    }
    for p in producers {
        p.await.unwrap();
    }
    // Consume until every acknowledged message is deleted.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        {
            let r = record.lock().unwrap();
            if r.acked.iter().all(|b| r.delete_acked.contains_key(b)) {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "acknowledged messages never deleted"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    done.store(true, Ordering::Relaxed);
    for h in consumers {
        h.await.unwrap();
    }
    let elapsed = started.elapsed();
    let r = record.lock().unwrap();

    let received: HashSet<&String> = r.received.iter().map(|(b, ..)| b).collect();
    let lost: Vec<_> = r.acked.iter().filter(|b| !received.contains(b)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged messages lost: {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
    let phantom: Vec<_> = received
        .iter()
        .filter(|b| !r.acked.contains(**b) && !r.unknown.contains(**b))
        .collect();
    assert!(phantom.is_empty(), "received but never sent: {phantom:?}");
    let deliveries = r.received.len();
    let duplicates = deliveries - received.len();
    eprintln!(
        "{} {}: {} sent ({} acknowledged, {} unknown), {} deliveries ({} repeats), {:.1} s{}",
        if fifo { "FIFO" } else { "standard" },
        if kill_leader {
            "with the leader killed"
        } else {
            "without faults"
        },
        r.acked.len() + r.unknown.len(),
        r.acked.len(),
        r.unknown.len(),
        deliveries,
        duplicates,
        elapsed.as_secs_f64(),
        killed_at
            .map(|k| format!(", leader killed at {:.1} s", k.as_secs_f64()))
            .unwrap_or_default()
    );
    if !fifo {
        return;
    }
    // FIFO: never delivered again once its delete was acknowledged.
    for (body, invoked, _, _) in &r.received {
        if let Some(acked) = r.delete_acked.get(body) {
            assert!(
                invoked <= acked,
                "{body} was received by a call made after its delete was acknowledged"
            );
        }
    }
    // FIFO: a message is delivered only after the one before it in its
    // group was deleted (or came earlier in the same response).
    let mut by_group: BTreeMap<&str, Vec<(usize, Instant, Instant, usize)>> = BTreeMap::new();
    for (body, invoked, completed, pos) in &r.received {
        let (g, k) = group_of(body).unwrap();
        by_group
            .entry(g)
            .or_default()
            .push((k, *invoked, *completed, *pos));
    }
    for (g, deliveries) in &by_group {
        for (k, _, completed, pos) in deliveries {
            if *k == 0 {
                continue;
            }
            let prev = format!("{g}-{}", k - 1);
            let same_response = deliveries
                .iter()
                .any(|(k2, _, c2, p2)| *k2 == k - 1 && c2 == completed && p2 < pos);
            let deleted_before = r.delete_invoked.get(&prev).is_some_and(|d| d < completed);
            assert!(
                same_response || deleted_before,
                "{g}-{k} was delivered before {prev} was deleted"
            );
        }
    }
}

/// A test of each run: (test, FIFO, leader killed).
macro_rules! delivery_tests {
    ($($name:ident: $fifo:literal, $kill_leader:literal;)*) => {$(
        #[tokio::test]
        async fn $name() {
            run($fifo, $kill_leader).await;
        }
    )*};
}

delivery_tests! {
    standard_queue_delivers_10000_messages_across_nodes: false, false;
    standard_queue_loses_nothing_when_the_leader_is_killed: false, true;
    fifo_queue_keeps_group_order_across_nodes: true, false;
    fifo_queue_keeps_order_and_deletes_when_the_leader_is_killed: true, true;
}
