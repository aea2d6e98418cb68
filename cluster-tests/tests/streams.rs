//! Streams on a three-node cluster: records put by several producers while
//! the leader is killed and restarted are all read back, once, in order,
//! by independent readers; a split and a merge under load keep every
//! partition key's order for a reader following the child shards; and
//! SubscribeToShard pushes records as they commit and resumes from a
//! sequence number on another node.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_tests::{
    elected_cluster, entry, output_with_input, put_all, put_data, sluicectl, split_shard_at,
    trim_horizon, Cluster,
};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Start, StreamFollower};
use tokio::sync::watch;
use tokio_stream::StreamExt;

const KEYS: usize = 16;
const PRODUCERS: usize = 4;

/// The (per-shard number, shard index) of a sequence number.
fn seq_of(s: &str) -> (u64, u32) {
    (s[..20].parse().unwrap(), s[20..].parse().unwrap())
}

/// A record's data: its key, its number within the key, and padding.
fn data(key: usize, n: usize) -> String {
    format!("k{key:02}-{n:07}-{}", "x".repeat(48))
}

/// (key, number) of a record's data.
fn parse_data(d: &[u8]) -> (usize, usize) {
    let s = std::str::from_utf8(d).unwrap();
    (s[1..3].parse().unwrap(), s[4..11].parse().unwrap())
}

/// What the producers did.
#[derive(Default)]
struct Puts {
    /// Acknowledged: (shard id, sequence number) -> data.
    acked: HashMap<(String, String), String>,
    /// Sent in a call whose outcome is unknown (it failed after retries).
    unknown: HashSet<String>,
    /// Entries refused one by one.
    refused: Vec<String>,
}

impl Puts {
    /// Fails the test if any entry was refused, showing the first few.
    fn assert_none_refused(&self) {
        assert!(
            self.refused.is_empty(),
            "entries refused: {:?}",
            &self.refused[..self.refused.len().min(5)]
        );
    }
}

/// The number of the last record acknowledged on each of `shards` (0 for
/// none).
fn last_acked(shards: &[String], p: &Puts) -> BTreeMap<String, u64> {
    let mut last: BTreeMap<String, u64> = shards.iter().map(|s| (s.clone(), 0)).collect();
    for (shard, seq) in p.acked.keys() {
        let l = last.get_mut(shard).unwrap();
        *l = (*l).max(seq_of(seq).0);
    }
    last
}

/// What the producers share.
#[derive(Clone)]
struct Load {
    stream: String,
    /// Records per producer.
    total: usize,
    /// Records per PutRecords.
    batch: usize,
    puts: Arc<Mutex<Puts>>,
    /// Records acknowledged so far.
    progress: watch::Sender<usize>,
    /// Turns true to stop the producers early.
    stop: watch::Receiver<bool>,
}

/// Puts `load.total` records of this producer's keys (key % PRODUCERS ==
/// me), in order per key, in batches.
async fn produce(client: Client, me: usize, load: Load) {
    let Load {
        stream,
        total,
        batch,
        puts,
        progress,
        stop,
    } = load;
    let keys: Vec<usize> = (0..KEYS).filter(|k| k % PRODUCERS == me).collect();
    let records: Vec<(usize, String)> = (0..total)
        .map(|i| {
            let key = keys[i % keys.len()];
            (key, data(key, i / keys.len()))
        })
        .collect();
    for chunk in records.chunks(batch) {
        if *stop.borrow() {
            return;
        }
        let entries = chunk
            .iter()
            .map(|(key, d)| entry(format!("key-{key}"), d.as_str()))
            .collect();
        let result = client
            .put_records(pb::PutRecordsRequest {
                stream_name: stream.clone(),
                records: entries,
            })
            .await;
        let mut p = puts.lock().unwrap();
        match result {
            Ok(reply) => {
                for (entry, (_, d)) in reply.records.iter().zip(chunk) {
                    if entry.error_code.is_empty() {
                        p.acked.insert(
                            (entry.shard_id.clone(), entry.sequence_number.clone()),
                            d.clone(),
                        );
                    } else {
                        p.refused
                            .push(format!("{}: {}", entry.error_code, entry.error_message));
                    }
                }
            }
            Err(e) => {
                eprintln!("producer {me}: a batch failed: {e}");
                p.unknown.extend(chunk.iter().map(|(_, d)| d.clone()));
            }
        }
        let n = p.acked.len();
        drop(p);
        progress.send_modify(|v| *v = (*v).max(n));
    }
}

/// Producers at work, one per client node.
struct Producers {
    handles: Vec<tokio::task::JoinHandle<()>>,
    puts: Arc<Mutex<Puts>>,
    /// Records acknowledged so far.
    acked: watch::Receiver<usize>,
    stop: watch::Sender<bool>,
}

impl Producers {
    /// Starts PRODUCERS producers of `total` records each, in batches.
    fn start(c: &Cluster, stream: &str, total: usize, batch: usize) -> Producers {
        let clients = (0..PRODUCERS).map(|p| c.client_from(p)).collect();
        Producers::start_with(clients, stream, total, batch)
    }

    /// Starts a producer per client (PRODUCERS of them).
    fn start_with(clients: Vec<Client>, stream: &str, total: usize, batch: usize) -> Producers {
        assert_eq!(clients.len(), PRODUCERS);
        let puts = Arc::new(Mutex::new(Puts::default()));
        let (progress, acked) = watch::channel(0usize);
        let (stop, stopped) = watch::channel(false);
        let handles = clients
            .into_iter()
            .enumerate()
            .map(|(p, client)| {
                let load = Load {
                    stream: stream.to_string(),
                    total,
                    batch,
                    puts: puts.clone(),
                    progress: progress.clone(),
                    stop: stopped.clone(),
                };
                tokio::spawn(produce(client, p, load))
            })
            .collect();
        Producers {
            handles,
            puts,
            acked,
            stop,
        }
    }

    /// Waits until at least `n` records are acknowledged; returns how many.
    async fn wait_acked(&mut self, n: usize) -> usize {
        *self.acked.wait_for(|a| *a >= n).await.unwrap()
    }

    /// Stops them (when `early`) or lets them finish; returns what they did.
    async fn finish(self, early: bool) -> Puts {
        if early {
            self.stop.send_replace(true);
        }
        for h in self.handles {
            h.await.unwrap();
        }
        std::mem::take(&mut *self.puts.lock().unwrap())
    }
}

/// What one reader read, by shard: (sequence number, data) in read order.
type Read = BTreeMap<String, Vec<(String, String)>>;

/// Reads every shard from its oldest record, concurrently with the
/// producers, until `targets` says how far to go and every shard is read
/// at least that far.
async fn read_shards(
    client: Client,
    stream: String,
    shards: Vec<String>,
    targets: watch::Receiver<Option<BTreeMap<String, u64>>>,
) -> Read {
    let mut iterators = BTreeMap::new();
    for s in &shards {
        let it = trim_horizon(&client, &stream, s).await.unwrap();
        iterators.insert(s.clone(), it);
    }
    let mut read: Read = shards.iter().map(|s| (s.clone(), Vec::new())).collect();
    loop {
        let mut got = 0;
        for (shard, it) in iterators.iter_mut() {
            // Errors while a node is down: the client tried every node;
            // the iterator is still good, so ask again.
            let Ok(r) = client.get_records(it, 10_000).await else {
                continue;
            };
            got += r.records.len();
            let out = read.get_mut(shard).unwrap();
            for rec in r.records {
                out.push((rec.sequence_number, String::from_utf8(rec.data).unwrap()));
            }
            assert!(!r.next_shard_iterator.is_empty(), "{shard} closed");
            *it = r.next_shard_iterator;
        }
        if let Some(t) = targets.borrow().as_ref() {
            let done = t.iter().all(|(shard, last)| {
                read[shard].last().map(|(s, _)| seq_of(s).0).unwrap_or(0) >= *last
            });
            if done {
                return read;
            }
        }
        if got == 0 {
            // Caught up: a polling consumer's pause before asking again.
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

/// Creates `name` with `shards` shards and no write limits (the tests are
/// about durability and order, not throttling); returns its shard ids.
async fn unthrottled_stream(c: &Cluster, name: &str, shards: i32) -> Vec<String> {
    c.client()
        .create_unthrottled_stream(name, shards)
        .await
        .unwrap();
    c.client()
        .list_shards(name)
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.shard_id)
        .collect()
}

#[tokio::test]
async fn every_acknowledged_record_is_read_once_in_order_through_a_leader_kill() {
    const RECORDS: usize = 100_000;
    const SHARDS: i32 = 4;
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let stream = "events".to_string();
    let shards = unthrottled_stream(&c, &stream, SHARDS).await;
    assert_eq!(shards.len(), SHARDS as usize);

    let (targets_tx, targets) = watch::channel(None);
    let started = Instant::now();
    let mut producers = Producers::start(&c, &stream, RECORDS / PRODUCERS, 250);
    // Two readers, each starting on a different node.
    let readers: Vec<_> = (1..=2)
        .map(|n| {
            tokio::spawn(read_shards(
                c.client_from(n),
                stream.clone(),
                shards.clone(),
                targets.clone(),
            ))
        })
        .collect();

    let n = producers.wait_acked(RECORDS / 3).await;
    c.node(leader).kill9();
    let killed_at = started.elapsed();
    eprintln!("killed leader {leader} after {n} acks");
    let n = producers.wait_acked(RECORDS * 2 / 3).await;
    c.node(leader).start();
    eprintln!("restarted node {leader} after {n} acks");
    let p = producers.finish(false).await;
    let put_secs = started.elapsed().as_secs_f64();
    p.assert_none_refused();
    let last_acked = last_acked(&shards, &p);
    targets_tx.send_replace(Some(last_acked.clone()));
    let mut reads = Vec::new();
    for r in readers {
        reads.push(r.await.unwrap());
    }
    let sent: HashSet<&String> = p.acked.values().chain(&p.unknown).collect();
    for (i, read) in reads.iter().enumerate() {
        let reader = i + 1;
        for (shard, records) in read {
            // In order, once each, and no gaps: a shard's numbers run 1, 2, ...
            for (pos, (seq, _)) in records.iter().enumerate() {
                let (n, index) = seq_of(seq);
                assert_eq!(
                    n,
                    pos as u64 + 1,
                    "reader {reader}, {shard}: record {pos} has number {n}"
                );
                assert_eq!(format!("shardId-{index:012}"), *shard);
            }
            // Nothing that was never put.
            for (seq, d) in records {
                assert!(
                    sent.contains(d),
                    "reader {reader}, {shard} {seq}: {d:?} was never put"
                );
            }
            // Each key's acknowledged records in the order they were put.
            // (A batch whose reply was lost with the leader is retried by
            // the client and may also stand, unacknowledged, before its
            // acknowledged copy: Kinesis producers see the same.)
            let mut last: HashMap<usize, usize> = HashMap::new();
            for (seq, d) in records {
                if !p.acked.contains_key(&(shard.clone(), seq.clone())) {
                    continue;
                }
                let (key, n) = parse_data(d.as_bytes());
                if let Some(prev) = last.insert(key, n) {
                    assert!(
                        prev < n,
                        "reader {reader}, {shard} {seq}: key {key} went from {prev} to {n}"
                    );
                }
            }
        }
        // Every acknowledged record, at its acknowledged number.
        for ((shard, seq), d) in &p.acked {
            let (n, _) = seq_of(seq);
            let got = read[shard].get(n as usize - 1).map(|(_, d)| d);
            assert_eq!(
                got,
                Some(d),
                "reader {reader}: acknowledged {shard} {seq} not read back"
            );
        }
    }
    // Two independent readers: the same records in the same order, up to
    // the last acknowledged record of each shard.
    for shard in &shards {
        let upto = last_acked[shard] as usize;
        assert_eq!(reads[0][shard][..upto], reads[1][shard][..upto], "{shard}");
    }
    let repeats = reads[0]
        .iter()
        .flat_map(|(shard, records)| records.iter().map(move |(seq, _)| (shard, seq)))
        .filter(|(shard, seq)| !p.acked.contains_key(&((*shard).clone(), (*seq).clone())))
        .count();
    eprintln!(
        "{} acknowledged, {} in batches of unknown outcome, {} read per reader ({} without an ack); \
         per shard {:?}; puts took {put_secs:.1} s, leader killed at {:.1} s",
        p.acked.len(),
        p.unknown.len(),
        reads[0].values().map(Vec::len).sum::<usize>(),
        repeats,
        last_acked,
        killed_at.as_secs_f64()
    );
}

/// A node never resends a forwarded put whose outcome it does not know (the
/// leader died with the put in flight; it may have replicated it first):
/// producers that make a single attempt per batch, through the followers,
/// while the leader is killed, find each of their records at most once.
#[tokio::test]
async fn a_follower_does_not_resend_a_put_the_killed_leader_may_have_appended() {
    const RECORDS: usize = 40_000;
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let stream = "once".to_string();
    let shards = unthrottled_stream(&c, &stream, 2).await;
    let followers = c.others(leader);
    // One attempt each (deadline zero): a duplicate can only be the node's.
    let clients = (0..PRODUCERS)
        .map(|p| c.nodes[&followers[p % followers.len()]].client(Duration::ZERO))
        .collect();
    let mut producers = Producers::start_with(clients, &stream, RECORDS / PRODUCERS, 100);
    producers.wait_acked(RECORDS / 4).await;
    c.node(leader).kill9();
    let p = producers.finish(false).await;
    let last_acked = last_acked(&shards, &p);
    let (_targets_tx, targets) = watch::channel(Some(last_acked));
    let read = read_shards(c.client_without(leader), stream, shards, targets).await;
    let mut seen: HashMap<&String, (&String, &String)> = HashMap::new();
    for (shard, records) in &read {
        for (seq, d) in records {
            if let Some((s0, q0)) = seen.insert(d, (shard, seq)) {
                panic!("{d:?} stands twice: {s0} {q0} and {shard} {seq}");
            }
        }
    }
    for ((shard, seq), d) in &p.acked {
        assert_eq!(seen.get(d), Some(&(shard, seq)), "acknowledged {d:?}");
    }
    eprintln!(
        "{} acknowledged, {} in batches of unknown outcome, {} read",
        p.acked.len(),
        p.unknown.len(),
        seen.len()
    );
}

#[tokio::test]
async fn a_split_and_a_merge_under_load_keep_each_keys_order() {
    const PER_PRODUCER: usize = 50_000;
    let (_serial, c, _) = elected_cluster(3, &[]).await;
    let stream = "resharded".to_string();
    let admin = c.client();
    unthrottled_stream(&c, &stream, 2).await;
    let mut producers = Producers::start(&c, &stream, PER_PRODUCER, 50);
    // The reader follows the whole stream while it is resharded.
    let (reader_stop_tx, mut reader_stop) = watch::channel(None::<usize>);
    let reader = {
        let client = c.client_from(2);
        let stream = stream.clone();
        tokio::spawn(async move {
            let mut f = StreamFollower::new(client, &stream, Start::TrimHorizon)
                .await
                .unwrap();
            let mut out: Vec<(String, pb::Record)> = Vec::new();
            loop {
                let got = f.poll(10_000).await.unwrap();
                let n = got.len();
                out.extend(got);
                if let Some(want) = *reader_stop.borrow() {
                    if out.len() >= want {
                        return (out, f.finished().clone());
                    }
                }
                if n == 0 {
                    tokio::select! {
                        _ = reader_stop.changed() => {}
                        _ = tokio::time::sleep(Duration::from_millis(10)) => {}
                    }
                }
            }
        })
    };

    // Split shard 0 at the middle of its range: children 2 (lower half)
    // and 3 (upper half). Then merge 3 with shard 1, its neighbour: child 4.
    producers.wait_acked(10_000).await;
    let children = split_shard_at(&admin, &stream, "shardId-000000000000", 1 << 126)
        .await
        .unwrap();
    assert_eq!(children, ["shardId-000000000002", "shardId-000000000003"]);
    let split_at = producers.wait_acked(0).await;
    producers.wait_acked(split_at + 10_000).await;
    let merged = admin
        .merge_shards(pb::MergeShardsRequest {
            stream_name: stream.clone(),
            shard_to_merge: "shardId-000000000003".into(),
            adjacent_shard_to_merge: "shardId-000000000001".into(),
        })
        .await
        .unwrap();
    assert_eq!(merged, "shardId-000000000004");
    let merged_at = producers.wait_acked(0).await;
    producers.wait_acked(merged_at + 10_000).await;
    let p = producers.finish(true).await;
    p.assert_none_refused();
    assert!(p.unknown.is_empty(), "no faults, yet batches failed");
    // Records put after the split went to the children, after the merge to
    // the merged shard.
    let on = |shard: &str| p.acked.keys().filter(|(s, _)| s == shard).count();
    for shard in [
        "shardId-000000000002",
        "shardId-000000000003",
        "shardId-000000000004",
    ] {
        assert!(on(shard) > 0, "nothing was put to {shard}");
    }
    reader_stop_tx.send_replace(Some(p.acked.len()));
    let (read, finished) = reader.await.unwrap();
    assert_eq!(read.len(), p.acked.len(), "records read");
    for s in [
        "shardId-000000000000",
        "shardId-000000000001",
        "shardId-000000000003",
    ] {
        assert!(finished.contains(s), "{s} not read to its end");
    }
    let mut seen = HashSet::new();
    let mut last: HashMap<usize, usize> = HashMap::new();
    for (shard, rec) in &read {
        assert!(
            seen.insert((shard.clone(), rec.sequence_number.clone())),
            "{shard} {} read twice",
            rec.sequence_number
        );
        let d = String::from_utf8(rec.data.clone()).unwrap();
        assert_eq!(
            p.acked.get(&(shard.clone(), rec.sequence_number.clone())),
            Some(&d),
            "{shard} {} is not what was acknowledged there",
            rec.sequence_number
        );
        let (key, n) = parse_data(&rec.data);
        let prev = last.insert(key, n);
        assert_eq!(
            prev.map_or(0, |p| p + 1),
            n,
            "key {key}: record {n} read after {prev:?} (from {shard})"
        );
    }
    eprintln!(
        "{} records over the split (at {split_at} acks) and the merge (at {merged_at}); \
         per shard: {:?}",
        read.len(),
        (0..5)
            .map(|i| on(&format!("shardId-{i:012}")))
            .collect::<Vec<_>>()
    );
}

#[tokio::test]
async fn a_get_records_with_a_wait_answers_when_a_record_is_put() {
    let (_serial, c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    admin.create_unthrottled_stream("polled", 1).await.unwrap();
    // Read through a follower: it is woken by its own apply.
    let reader = c.follower_client(leader, Duration::from_secs(30));
    let it = reader
        .get_shard_iterator(pb::GetShardIteratorRequest {
            stream_name: "polled".into(),
            shard_id: "shardId-000000000000".into(),
            shard_iterator_type: "LATEST".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    // Nothing comes: the read waits out its wait, then answers empty with
    // an iterator to go on from.
    let quiet = Duration::from_millis(300);
    let began = Instant::now();
    let empty = reader.get_records_waiting(&it, 10, quiet).await.unwrap();
    assert!(empty.records.is_empty());
    assert!(began.elapsed() >= quiet, "{:?}", began.elapsed());
    assert!(!empty.next_shard_iterator.is_empty());
    // A record put while the read waits (or just before it looks) is what
    // it answers with, long before its 15 s are up.
    let long = Duration::from_secs(15);
    let began = Instant::now();
    let read = tokio::spawn({
        let (reader, it) = (reader.clone(), empty.next_shard_iterator.clone());
        async move { reader.get_records_waiting(&it, 10, long).await }
    });
    put_data(&admin, "polled", "k", "woken").await.unwrap();
    let got = read.await.unwrap().unwrap();
    assert_eq!(got.records.len(), 1, "{got:?}");
    assert_eq!(got.records[0].data, b"woken");
    assert!(began.elapsed() < long, "{:?}", began.elapsed());
    // Behind the record, nothing yet: a read without a wait is empty.
    let next = reader
        .get_records(&got.next_shard_iterator, 10)
        .await
        .unwrap();
    assert!(next.records.is_empty());
}

#[tokio::test]
async fn subscribe_to_shard_pushes_records_and_resumes_on_another_node() {
    const RECORDS: usize = 1000;
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let follower = c.others(leader)[0];
    let admin = c.client();
    admin.create_unthrottled_stream("pushed", 1).await.unwrap();
    let consumer = admin
        .register_stream_consumer("pushed", "app")
        .await
        .unwrap();
    // The subscription is served by a follower; the puts go to the leader.
    let sub_client = c.node(follower).client(Duration::from_secs(10));
    let subscribe = |position: pb::StartingPosition| pb::SubscribeToShardRequest {
        consumer_arn: consumer.consumer_arn.clone(),
        shard_id: "shardId-000000000000".into(),
        starting_position: Some(position),
    };
    let mut events = sub_client
        .subscribe_to_shard(subscribe(pb::StartingPosition {
            r#type: "LATEST".into(),
            ..Default::default()
        }))
        .await
        .unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let listener = tokio::spawn(async move {
        let mut got = 0;
        let mut last_continuation = String::new();
        while got < RECORDS {
            let e = events.next().await.expect("subscription ended").unwrap();
            let at = Instant::now();
            for r in e.records {
                got += 1;
                tx.send((r.sequence_number, String::from_utf8(r.data).unwrap(), at))
                    .unwrap();
            }
            last_continuation = e.continuation_sequence_number;
        }
        last_continuation
    });
    let producer = c.node(leader).client(Duration::from_secs(10));
    let put = |i: usize| {
        let producer = producer.clone();
        async move {
            put_data(&producer, "pushed", "k", format!("r{i}"))
                .await
                .unwrap()
        }
    };
    let mut acks = Vec::new();
    for i in 0..RECORDS {
        let r = put(i).await;
        acks.push((r.sequence_number, Instant::now()));
    }
    let continuation = listener.await.unwrap();
    let mut latencies = Vec::new();
    for (i, (seq, acked_at)) in acks.iter().enumerate() {
        let (got_seq, d, at) = rx.recv().await.unwrap();
        assert_eq!((&got_seq, d), (seq, format!("r{i}")), "record {i}");
        latencies.push(at.saturating_duration_since(*acked_at));
    }
    assert_eq!(continuation, acks.last().unwrap().0);
    latencies.sort();
    eprintln!(
        "subscriber on a follower: put ack to delivery p50 {:?} p99 {:?} max {:?}",
        latencies[latencies.len() / 2],
        latencies[latencies.len() * 99 / 100],
        latencies.last().unwrap()
    );

    // Resume from the continuation on another node, after the follower
    // serving the first subscription is gone: exactly the records after it.
    c.node(follower).kill9();
    for i in RECORDS..RECORDS + 10 {
        put(i).await;
    }
    let mut events = c
        .client_without(follower)
        .subscribe_to_shard(subscribe(pb::StartingPosition {
            r#type: "AFTER_SEQUENCE_NUMBER".into(),
            sequence_number: continuation,
            ..Default::default()
        }))
        .await
        .unwrap();
    let mut resumed = Vec::new();
    while resumed.len() < 10 {
        let e = events.next().await.expect("subscription ended").unwrap();
        resumed.extend(
            e.records
                .into_iter()
                .map(|r| String::from_utf8(r.data).unwrap()),
        );
    }
    let want: Vec<String> = (RECORDS..RECORDS + 10).map(|i| format!("r{i}")).collect();
    assert_eq!(resumed, want);

    // A split ends the subscription with an event naming the children.
    let admin = c.client_without(follower);
    let children = split_shard_at(&admin, "pushed", "shardId-000000000000", 1 << 127)
        .await
        .unwrap();
    let last = loop {
        let e = events
            .next()
            .await
            .expect("ended without naming the children")
            .unwrap();
        if !e.child_shards.is_empty() {
            break e;
        }
    };
    let named: Vec<String> = last
        .child_shards
        .iter()
        .map(|c| c.shard_id.clone())
        .collect();
    assert_eq!(named, children);
    assert!(
        events.next().await.is_none(),
        "the subscription goes on after its shard closed"
    );

    // Deregistering the consumer ends its subscriptions (at the next
    // heartbeat, within 5 s).
    let mut events = admin
        .subscribe_to_shard(pb::SubscribeToShardRequest {
            consumer_arn: consumer.consumer_arn.clone(),
            shard_id: children[0].clone(),
            starting_position: Some(pb::StartingPosition {
                r#type: "LATEST".into(),
                ..Default::default()
            }),
        })
        .await
        .unwrap();
    admin
        .call(|ch| {
            let arn = consumer.consumer_arn.clone();
            async move {
                pb::streams_client::StreamsClient::new(ch)
                    .deregister_stream_consumer(pb::DeregisterStreamConsumerRequest {
                        consumer_arn: arn,
                        ..Default::default()
                    })
                    .await
            }
        })
        .await
        .unwrap();
    let end = loop {
        match events.next().await.expect("ended without an error") {
            Ok(_) => continue,
            Err(status) => break status,
        }
    };
    assert_eq!(end.code(), tonic::Code::NotFound, "{end:?}");
}

#[tokio::test]
async fn a_follower_keeps_key_order_across_a_rescale_and_latest_skips_history() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    client
        .create_unthrottled_stream("rescaled", 5)
        .await
        .unwrap();
    let put_round = |round: usize| {
        let client = client.clone();
        async move {
            let records = (0..KEYS)
                .map(|key| entry(format!("key-{key}"), data(key, round)))
                .collect();
            put_all(&client, "rescaled", records).await;
        }
    };
    // Enough rounds that the parents of the middle child below finish far
    // apart when read one record per poll (keys spread 2/2/4/6/2 over the
    // five shards).
    for round in 0..6 {
        put_round(round).await;
    }
    // 5 -> 3 shards: the middle child has three parents.
    client.update_shard_count("rescaled", 3).await.unwrap();
    let shards = client.list_shards("rescaled").await.unwrap();
    assert_eq!(shards.len(), 8);
    put_round(6).await;
    put_round(7).await;
    let latest = StreamFollower::new(client.clone(), "rescaled", Start::Latest)
        .await
        .unwrap();
    let mut from_start = StreamFollower::new(client.clone(), "rescaled", Start::TrimHorizon)
        .await
        .unwrap();
    let mut read = Vec::new();
    // One record per shard per poll, so parents with fewer records finish
    // first: a child must still wait for its slowest parent. The 8 rounds
    // are all there already; a poll always reads a record until then.
    for _ in 0..8 * KEYS {
        read.extend(from_start.poll(1).await.unwrap());
        if read.len() == 8 * KEYS {
            break;
        }
    }
    assert_eq!(read.len(), 8 * KEYS);
    let mut last: HashMap<usize, usize> = HashMap::new();
    for (shard, rec) in &read {
        let (key, n) = parse_data(&rec.data);
        let prev = last.insert(key, n);
        assert_eq!(
            prev.map_or(0, |p| p + 1),
            n,
            "key {key}: {n} after {prev:?} (from {shard})"
        );
    }
    // A follower from LATEST sees only what comes after it started, though
    // every open shard has parents.
    let mut latest = latest;
    assert!(latest.poll(1000).await.unwrap().is_empty());
    put_round(8).await;
    let fresh = latest.poll(1000).await.unwrap();
    assert_eq!(fresh.len(), KEYS);
    assert!(fresh.iter().all(|(_, r)| parse_data(&r.data).1 == 8));
}

/// Fails the test unless `r` is a refusal of invalid input naming `field`.
fn invalid<T: std::fmt::Debug>(r: Result<T, sluice_client::Error>, field: &str) {
    let e = r.unwrap_err();
    assert_eq!(e.status(), Some(tonic::Code::InvalidArgument), "{e}");
    assert_eq!(e.code(), Some("InvalidArgumentException"), "{e}");
    assert!(e.to_string().contains(field), "{e} does not name {field}");
}

#[tokio::test]
async fn bad_iterators_and_positions_are_refused_naming_the_field() {
    let (_serial, c, _) = elected_cluster(3, &[]).await;
    let client = c.client();
    for name in ["one", "two"] {
        client.create_stream_with_shards(name, 1).await.unwrap();
    }
    let iterator = |stream: &str, kind: &str, seq: &str| pb::GetShardIteratorRequest {
        stream_name: stream.into(),
        shard_id: "shardId-000000000000".into(),
        shard_iterator_type: kind.into(),
        starting_sequence_number: seq.into(),
        timestamp: 0,
    };
    for bad in ["", "si1-00", "nonsense", "si1-zz"] {
        invalid(client.get_records(bad, 10).await, "shard_iterator");
    }
    // A well-formed iterator changed by one character fails its checksum.
    let it = client
        .get_shard_iterator(iterator("one", "TRIM_HORIZON", ""))
        .await
        .unwrap();
    let mut mangled = it.clone().into_bytes();
    let last = mangled.len() - 1;
    mangled[last] = if mangled[last] == b'0' { b'1' } else { b'0' };
    let mangled = std::str::from_utf8(&mangled).unwrap();
    invalid(client.get_records(mangled, 10).await, "shard_iterator");
    // Limits at the edge.
    invalid(client.get_records(&it, 10_001).await, "limit");
    let put = |records| {
        client.put_records(pb::PutRecordsRequest {
            stream_name: "one".into(),
            records,
        })
    };
    let x = entry("k", "x");
    invalid(put(vec![x.clone(); 501]).await, "records");
    let long_key = pb::PutRecordsRequestEntry {
        partition_key: "k".repeat(257),
        ..x
    };
    invalid(put(vec![long_key]).await, "records[0].partition_key");
    // Another stream's iterator.
    let other_stream = client
        .call(|ch| {
            let it = it.clone();
            async move {
                pb::streams_client::StreamsClient::new(ch)
                    .get_records(pb::GetRecordsRequest {
                        shard_iterator: it,
                        limit: 10,
                        stream_name: "two".into(),
                        ..Default::default()
                    })
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await;
    invalid(other_stream, "shard_iterator");
    // A long poll of more than 20 s.
    invalid(
        client
            .get_records_waiting(&it, 10, Duration::from_millis(20_001))
            .await,
        "wait_time_ms",
    );
    // Positions.
    let at = |kind, seq| client.get_shard_iterator(iterator("one", kind, seq));
    invalid(at("SOMEWHERE", "").await, "shard_iterator_type");
    invalid(
        at("AT_SEQUENCE_NUMBER", "12").await,
        "starting_sequence_number",
    );
    let e = client
        .get_shard_iterator(pb::GetShardIteratorRequest {
            shard_id: "shardId-000000000007".into(),
            ..iterator("one", "LATEST", "")
        })
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(tonic::Code::NotFound), "{e}");
    // A deleted stream's iterators fail, even once the name is reused.
    client.delete_stream("one").await.unwrap();
    client.create_stream_with_shards("one", 1).await.unwrap();
    let e = client.get_records(&it, 10).await.unwrap_err();
    assert_eq!(e.status(), Some(tonic::Code::NotFound), "{e}");
    // Nothing above changed the streams.
    let mut names = client.list_streams().await.unwrap();
    names.sort();
    assert_eq!(names, ["one", "two"]);
}

#[tokio::test]
async fn sluicectl_puts_reads_reshards_and_tails_a_stream() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let addr = c.nodes[&1].addr.clone();
    let ctl = |args: &[&str]| {
        let mut cmd = sluicectl(&addr, 10);
        cmd.args(args);
        cmd
    };
    let run = |args: &[&str], stdin: &str| {
        let out = output_with_input(&mut ctl(args), stdin);
        assert!(out.status.success(), "sluicectl {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    run(&["stream", "create", "cli", "--shards", "1"], "");
    let lines: String = (0..20).map(|i| format!("line {i}\n")).collect();
    let put = run(&["stream", "put", "cli", "--stdin", "--key", "k"], &lines);
    assert_eq!(put.lines().count(), 20, "{put}");
    assert!(put.lines().all(|l| l.starts_with("shardId-000000000000 ")));
    let got = run(
        &["stream", "get", "cli", "--shard", "shardId-000000000000"],
        "",
    );
    assert_eq!(got, lines);
    // From a sequence number, as JSON.
    let third = put.lines().nth(2).unwrap().split(' ').nth(1).unwrap();
    let got = run(
        &[
            "--json",
            "stream",
            "get",
            "cli",
            "--shard",
            "shardId-000000000000",
            "--from",
            &format!("after:{third}"),
            "--max",
            "2",
        ],
        "",
    );
    let got: Vec<&str> = got.lines().collect();
    assert_eq!(got.len(), 2);
    assert!(got[0].contains("\"data\":\"line 3\""), "{}", got[0]);

    // A whole-stream tail from the start follows the split into the
    // children.
    let mut tail = ctl(&["stream", "tail", "cli", "--from", "trim-horizon"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let tailed = BufReader::new(tail.stdout.take().unwrap()).lines();
    let children = run(
        &[
            "stream",
            "reshard",
            "cli",
            "--split",
            "shardId-000000000000",
            "--at",
            &(1u128 << 127).to_string(),
        ],
        "",
    );
    assert_eq!(children.trim(), "shardId-000000000001 shardId-000000000002");
    let after: String = (20..25).map(|i| format!("after {i}\n")).collect();
    run(&["stream", "put", "cli", "--stdin", "--key", "k"], &after);
    let want: Vec<String> = lines
        .lines()
        .chain(after.lines())
        .map(String::from)
        .collect();
    let n = want.len();
    let seen: Vec<String> =
        tokio::task::spawn_blocking(move || tailed.take(n).map(Result::unwrap).collect())
            .await
            .unwrap();
    assert_eq!(seen, want);
    tail.kill().unwrap();
    tail.wait().unwrap();

    let described = run(&["--json", "stream", "describe", "cli"], "");
    for parent in [
        "\"parent_shard_id\":\"shardId-000000000000\"",
        "\"shard_id\":\"shardId-000000000002\"",
    ] {
        assert!(described.contains(parent), "{described}");
    }
    assert_eq!(
        run(&["stream", "retention", "cli", "48"], "").trim(),
        "48 hours"
    );
    assert_eq!(
        run(&["stream", "retention", "cli", "30"], "").trim(),
        "30 hours"
    );
    let out = ctl(&["stream", "retention", "cli", "9000"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with(
            "sluicectl: InvalidArgumentException: retention_period_hours: must be from 24 to 8760"
        ),
        "{stderr}"
    );
    run(&["stream", "delete", "cli"], "");
    assert_eq!(run(&["stream", "list"], ""), "");
}
