//! Concurrent writes share fsyncs: the leader proposes what arrives while
//! earlier batches are in flight as one log entry.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cluster_tests::{elected_cluster, metric_series, metric_value, Cluster};

#[tokio::test]
async fn concurrent_writes_share_fsyncs_on_every_node() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let client = Arc::new(c.node(leader).client(Duration::from_secs(20)));
    let fsyncs = |c: &Cluster| -> Vec<f64> {
        c.nodes
            .values()
            .map(|n| metric_value(&n.metrics(), "sluice_log_fsyncs_total"))
            .collect()
    };
    let before = fsyncs(&c);
    let (writers, per_writer) = (64, 20);
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let client = client.clone();
            tokio::spawn(async move {
                for i in 0..per_writer {
                    client
                        .create_queue(&format!("gc-{w}-{i}"), HashMap::new())
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let after = fsyncs(&c);
    // Replication is timed from both ends: the leader's round trip to each
    // follower, and each follower's handling of what it was sent.
    let leader_text = c.node(leader).metrics();
    for (id, node) in &c.nodes {
        if *id == leader {
            continue;
        }
        let peer = format!("peer=\"{id}\"");
        assert!(
            metric_series(&leader_text, "sluice_replication_seconds_count", &peer) >= 1.0,
            "the leader times its round trips to node {id}:\n{leader_text}"
        );
        assert!(metric_value(&node.metrics(), "sluice_append_entries_seconds_count") >= 1.0);
    }
    let writes = (writers * per_writer) as f64;
    for (i, (b, a)) in before.iter().zip(&after).enumerate() {
        let n = a - b;
        eprintln!("node {}: {n} fsyncs for {writes} writes", i + 1);
        assert!(
            n < writes / 2.0,
            "node {}: {n} fsyncs for {writes} writes",
            i + 1
        );
    }
}
