//! Retention and the log: messages that stay queued while many more pass
//! through pin no log segment. Their bodies stay in the log entries that
//! sent them until a snapshot keeps a copy; the log is then purged under
//! them as under any other entry.
//!
//! CI runs it with 4 000 messages of 64 KiB passing (250 MiB, four log
//! segments' worth). For a longer run, set `SLUICE_RETENTION_MESSAGES`, e.g.
//! `SLUICE_RETENTION_MESSAGES=40000 cargo test -p cluster-tests --test
//! retention -- --nocapture` (docs/operations.md).

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::Duration;

use cluster_tests::{receive_bodies, serial, Cluster, ELECTION};
use sluice_client::sluice_proto::v1 as pb;

/// A log segment file's size (`raft::log_store::SEGMENT_BYTES`).
const SEGMENT: u64 = 64 * 1024 * 1024;
const BODY: usize = 64 * 1024;

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

fn body(tag: &str, i: usize) -> String {
    let head = format!("{tag} {i} ");
    head.clone() + &"x".repeat(BODY - head.len())
}

#[tokio::test]
async fn old_messages_stay_queued_while_many_pass_and_the_log_stays_bounded() {
    let _serial = serial().await;
    let passing: usize = std::env::var("SLUICE_RETENTION_MESSAGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4_000);
    let mut c = Cluster::start(
        1,
        &["--snapshot-every", "200", "--keep-after-snapshot", "0"],
    );
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(20));
    for q in ["old", "busy"] {
        client.create_queue(q, HashMap::new()).await.unwrap();
    }
    let old: BTreeSet<String> = (0..5).map(|i| body("old", i)).collect();
    for b in &old {
        client.send_body("old", b).await.unwrap();
    }

    let log_dir = c.nodes[&1].data_dir.join("log");
    let mut largest_log = 0;
    let mut passed = 0;
    while passed < passing {
        for i in passed..(passed + 10).min(passing) {
            client.send_body("busy", &body("busy", i)).await.unwrap();
        }
        let mut taken = 0;
        while taken < (passing - passed).min(10) {
            let r = client
                .receive_from("busy", 10, Some(60), Some(1))
                .await
                .unwrap();
            assert!(!r.messages.is_empty(), "busy ran dry at {passed}");
            taken += r.messages.len();
            client
                .delete_message_batch(pb::DeleteMessageBatchRequest {
                    queue_name: "busy".into(),
                    entries: r
                        .messages
                        .iter()
                        .enumerate()
                        .map(|(n, m)| pb::DeleteMessageBatchRequestEntry {
                            id: n.to_string(),
                            receipt_handle: m.receipt_handle.clone(),
                        })
                        .collect(),
                })
                .await
                .unwrap();
        }
        passed += taken;
        if passed % 500 < 10 {
            largest_log = largest_log.max(bytes_under(&log_dir));
        }
    }
    largest_log = largest_log.max(bytes_under(&log_dir));
    let through = (passing * BODY) as u64;
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
