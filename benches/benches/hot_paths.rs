//! Micro-benchmarks of the hot paths, below the network and Raft: the
//! check a node makes of each message sent and the record applying it
//! encodes, the state machine applying a send, a receive and a put batch
//! into a real sled tree on disk (as a node applies a committed entry),
//! sled writes on their own, and protobuf encoding and decoding of full
//! batches.
//!
//! ```text
//! cargo bench -p sluice-bench --bench hot_paths
//! ```

use std::collections::BTreeMap;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BatchSize, BenchmarkGroup, Criterion, Throughput,
};
use prost::Message;
use sluice_broker::apply::{Ctx, Effects};
use sluice_broker::command::Command;
use sluice_broker::machine;
use sluice_broker::queues::delivery::ReceiveRequest;
use sluice_broker::queues::layout::{Body, BodyRef, BodyText, StoredBody};
use sluice_broker::queues::message::{NewMessage, Outgoing};
use sluice_broker::queues::CreateQueue;
use sluice_broker::store::codec;
use sluice_broker::store::{Db, DbOptions, Tree, Txn, WriteBatch};
use sluice_broker::streams::records::NewRecord;
use sluice_broker::streams::CreateStream;
use sluice_client::sluice_proto::v1 as pb;

const BODY: usize = 1024;
const NOW_MS: u64 = 1_800_000_000_000;

/// A fresh sled database in a temporary directory.
fn tree() -> (tempfile::TempDir, Db, Tree) {
    let dir = tempfile::tempdir().expect("temp dir");
    let db = Db::open(dir.path(), &DbOptions::default()).expect("open sled");
    let tree = db.tree("bench").expect("tree");
    (dir, db, tree)
}

/// Applies `commands` as one committed entry: each in its own transaction
/// over the entry's, then one batch to the tree, as the node does.
fn apply(tree: &Tree, commands: &[Command]) {
    let ctx = Ctx::at(NOW_MS);
    let mut effects = Effects::default();
    let mut entry = Txn::new(tree);
    for c in commands {
        let mut txn = Txn::new(&entry);
        machine::apply(&mut txn, &ctx, c, &mut effects).expect("applies");
        let writes = txn.into_writes();
        entry.merge(writes);
    }
    tree.apply(entry.into_batch()).expect("sled write");
}

fn send(queue: &str, n: usize) -> Command {
    let messages = (0..n)
        .map(|_| {
            NewMessage::validate(
                "",
                false,
                Outgoing {
                    body: "x".repeat(BODY),
                    ..Outgoing::default()
                },
            )
            .expect("valid message")
        })
        .collect();
    Command::SendMessages(sluice_broker::queues::SendMessages {
        queue: queue.into(),
        messages,
    })
}

fn state_machine(c: &mut Criterion) {
    let (_dir, _db, tree) = tree();
    let create = CreateQueue::new("q", &BTreeMap::new(), BTreeMap::new()).expect("valid");
    apply(&tree, &[Command::CreateQueue(create)]);
    let stream =
        CreateStream::new("s", 4, None, None, Some(0), Some(0), BTreeMap::new()).expect("valid");
    apply(&tree, &[Command::CreateStream(stream)]);

    let mut g = c.benchmark_group("apply");
    g.throughput(Throughput::Elements(1));
    let one = [send("q", 1)];
    g.bench_function("send 1 message of 1 KiB", |b| b.iter(|| apply(&tree, &one)));
    g.throughput(Throughput::Elements(10));
    let ten = [send("q", 10)];
    g.bench_function("send a batch of 10 messages of 1 KiB", |b| {
        b.iter(|| apply(&tree, &ten))
    });
    // Visibility 0: the message received stays at the head, so every
    // receive does the same work on a queue as deep as the sends made it.
    let receive = [Command::ReceiveMessages(
        sluice_broker::queues::ReceiveMessages {
            queue: "q".into(),
            request: ReceiveRequest {
                max: 1,
                visibility_timeout: Some(0),
                attempt_id: None,
            },
        },
    )];
    g.throughput(Throughput::Elements(1));
    g.bench_function("receive 1 message", |b| b.iter(|| apply(&tree, &receive)));
    let put = [Command::PutRecords(sluice_broker::streams::PutRecords {
        stream: "s".into(),
        records: (0..500)
            .map(|i| NewRecord::keyed(vec![b'x'; BODY], format!("key-{i}")))
            .collect(),
    })];
    g.throughput(Throughput::Elements(500));
    g.bench_function("put a batch of 500 records of 1 KiB", |b| {
        b.iter(|| apply(&tree, &put))
    });
    g.finish();
}

/// What the node receiving a SendMessage does before proposing it (checks
/// the body and attributes, computes the body's MD5), and what applying it
/// encodes for each message.
fn request_checks(c: &mut Criterion) {
    let mut g = c.benchmark_group("request");
    g.throughput(Throughput::Elements(1));
    g.bench_function("check a message of 1 KiB", |b| {
        b.iter_batched(
            || Outgoing {
                body: "x".repeat(BODY),
                ..Outgoing::default()
            },
            |m| NewMessage::validate("", false, m).expect("valid message"),
            BatchSize::SmallInput,
        )
    });
    // The record each queued message keeps, with its body in the log: its
    // MessageId and MD5 are stored as the bytes their hex spells.
    let record = StoredBody::V1(Body {
        message_id: "d6ee826f-5667-4627-948d-b817cea115f1".into(),
        body: BodyText::Logged(BodyRef {
            index: 7,
            command: 0,
            message: 3,
            bytes: BODY as u32,
        }),
        attributes: BTreeMap::new(),
        trace_header: None,
        md5_of_body: "2e73961c8bc6e650906a9bcb8de4ca6a".into(),
        md5_of_attributes: None,
        dedup_id: None,
        dead_letter_source: None,
    });
    g.bench_function("encode a queued message's record", |b| {
        b.iter(|| codec::encode(&record))
    });
    g.finish();
}

fn sled_writes(c: &mut Criterion) {
    let (_dir, _db, tree) = tree();
    let mut g = c.benchmark_group("sled");
    let mut key = 0u64;
    for n in [1usize, 100] {
        g.throughput(Throughput::Bytes((n * BODY) as u64));
        g.bench_function(format!("write batch of {n} x 1 KiB"), |b| {
            b.iter_batched(
                || {
                    let mut batch = WriteBatch::default();
                    for _ in 0..n {
                        key += 1;
                        batch.put(key.to_be_bytes().to_vec(), vec![b'x'; BODY]);
                    }
                    batch
                },
                |batch| tree.apply(batch).expect("sled write"),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn protobuf(c: &mut Criterion) {
    let send = pb::SendMessageBatchRequest {
        queue_name: "q".into(),
        entries: (0..10)
            .map(|i| pb::SendMessageBatchRequestEntry {
                id: format!("e{i}"),
                message_body: "x".repeat(BODY),
                ..Default::default()
            })
            .collect(),
    };
    let put = pb::PutRecordsRequest {
        stream_name: "s".into(),
        records: (0..500)
            .map(|i| pb::PutRecordsRequestEntry {
                data: vec![b'x'; BODY],
                partition_key: format!("key-{i}"),
                explicit_hash_key: String::new(),
            })
            .collect(),
    };
    let mut g = c.benchmark_group("protobuf");
    encode_and_decode(&mut g, "SendMessageBatch of 10 x 1 KiB", &send);
    encode_and_decode(&mut g, "PutRecords of 500 x 1 KiB", &put);
    g.finish();
}

/// Benchmarks encoding `message` and decoding its bytes, per byte.
fn encode_and_decode<M: Message + Default>(
    g: &mut BenchmarkGroup<'_, WallTime>,
    what: &str,
    message: &M,
) {
    let bytes = message.encode_to_vec();
    g.throughput(Throughput::Bytes(bytes.len() as u64));
    g.bench_function(format!("encode {what}"), |b| {
        b.iter(|| message.encode_to_vec())
    });
    g.bench_function(format!("decode {what}"), |b| {
        b.iter(|| M::decode(bytes.as_slice()).expect("decodes"))
    });
}

criterion_group!(
    benches,
    request_checks,
    state_machine,
    sled_writes,
    protobuf
);
criterion_main!(benches);
