//! Retention and the log: messages that stay queued while many more pass
//! through pin no log segment. Their bodies stay in the log entries that
//! sent them until a snapshot keeps a copy; the log is then purged under
//! them as under any other entry.
//!
//! CI runs it with 4 000 messages of 64 KiB passing (250 MiB, four log
//! segments' worth). For a longer run, set `SLUICE_RETENTION_MESSAGES` and
//! `SLUICE_RETENTION_BODY_BYTES`, e.g. two million 1 KiB messages:
//! `SLUICE_RETENTION_MESSAGES=2000000 SLUICE_RETENTION_BODY_BYTES=1024
//! cargo test --release -p cluster-tests --test retention -- --nocapture`
//! (docs/operations.md).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use cluster_tests::{
    delete_batch, receive_bodies, send_batch, send_entry, serial, Cluster, ELECTION,
};

/// A log segment file's size (`raft::log_store::SEGMENT_BYTES`).
const SEGMENT: u64 = 64 * 1024 * 1024;

/// Bytes of the files under `dir`.
fn bytes_under(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| {
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                bytes_under(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn body(tag: &str, i: usize, bytes: usize) -> String {
    let head = format!("{tag} {i} ");
    head.clone() + &"x".repeat(bytes.saturating_sub(head.len()))
}

#[tokio::test]
async fn old_messages_stay_queued_while_many_pass_and_the_log_stays_bounded() {
    let _serial = serial().await;
    let passing: usize = std::env::var("SLUICE_RETENTION_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let bytes: usize = std::env::var("SLUICE_RETENTION_BODY_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64 * 1024);
    let mut c = Cluster::start(
        1,
        &["--snapshot-every", "200", "--keep-after-snapshot", "0"],
    );
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(20));
    for q in ["old", "busy"] {
        client.create_queue(q, HashMap::new()).await.unwrap();
    }
    // Batches within SendMessageBatch's 256 KiB.
    let per_batch = (200 * 1024 / bytes.max(1)).clamp(1, 10);
    let old: BTreeSet<String> = (0..5).map(|i| body("old", i, bytes)).collect();
    for b in &old {
        client.send_body("old", b).await.unwrap();
    }

    let log_dir = c.nodes[&1].data_dir.join("log");
    let mut largest_log = 0;
    let mut passed = 0;
    let mut next_look = 0;
    while passed < passing {
        let entries = (passed..(passed + per_batch).min(passing))
            .map(|i| send_entry(i.to_string(), body("busy", i, bytes)))
            .collect();
        let sent = send_batch(&client, "busy", entries).await.unwrap();
        assert!(sent.failed.is_empty(), "{:?}", sent.failed);
        let mut taken = 0;
        while taken < (passing - passed).min(per_batch) {
            let r = client
                .receive_from("busy", 10, Some(60), Some(1))
                .await
                .unwrap();
            assert!(!r.messages.is_empty(), "busy ran dry at {passed}");
            taken += r.messages.len();
            delete_batch(&client, "busy", &r.messages).await.unwrap();
        }
        passed += taken;
        // The log's size after every 16 MiB or so that passed.
        if passed >= next_look {
            let now = bytes_under(&log_dir);
            largest_log = largest_log.max(now);
            eprintln!("{passed} passed; the log holds {} MiB", now >> 20);
            next_look = passed + (16 << 20) / bytes.max(1);
        }
    }
    largest_log = largest_log.max(bytes_under(&log_dir));
    let through = (passing * bytes) as u64;
    eprintln!(
        "{passing} messages ({} MiB) passed; the log held at most {} MiB",
        through >> 20,
        largest_log >> 20
    );
    let status = client.cluster_status(true).await.unwrap();
    assert!(
        status.purged_index.is_some(),
        "the log was purged: {status:?}"
    );
    // The current segment and the one before it, whatever passed.
    assert!(
        largest_log <= 2 * SEGMENT + (1 << 20),
        "the log held {largest_log} bytes after {through} passed"
    );
    // The snapshot holds the old bodies, not the ones that passed.
    let snapshots = bytes_under(&c.nodes[&1].data_dir.join("snapshots"));
    assert!(
        snapshots < 8 * (1 << 20),
        "snapshots take {snapshots} bytes"
    );

    // The old messages are whole, their entries long purged.
    assert_eq!(receive_bodies(&client, "old", &old).await, old);
}
