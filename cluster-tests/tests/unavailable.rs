//! Without a quorum, calls wait a bounded time and then fail with
//! UNAVAILABLE; once a quorum is back, the cluster serves again.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cluster_tests::elected_cluster;
use sluice_client::{Client, Consistency, Options};
use tonic::Code;

#[tokio::test]
async fn without_a_quorum_calls_fail_unavailable_after_the_leader_wait() {
    let (_serial, mut c, leader) = elected_cluster(3, &["--leader-wait-ms", "1500"]).await;
    c.client()
        .create_queue("before", HashMap::new())
        .await
        .unwrap();
    let followers = c.others(leader);
    for f in &followers {
        c.node(*f).kill9();
    }
    // One attempt, no client-side retries: what the node itself answers.
    let lone = Client::with_options(
        [c.nodes[&leader].addr.as_str()],
        Options {
            deadline: Duration::ZERO,
            attempt_timeout: Duration::from_secs(30),
            ..Options::default()
        },
    )
    .unwrap();
    let started = Instant::now();
    let write = lone
        .create_queue("during", HashMap::new())
        .await
        .map(|_| ());
    let write_took = started.elapsed();
    let started = Instant::now();
    let read = lone
        .list_queues("", Consistency::Linearizable)
        .await
        .map(|_| ());
    let read_took = started.elapsed();
    for (what, result, took) in [("write", write, write_took), ("read", read, read_took)] {
        let e = result.expect_err(what);
        assert_eq!(e.status(), Some(Code::Unavailable), "{what}: {e}");
        eprintln!("{what} without a quorum: {e} after {took:?}");
        assert!(
            took >= Duration::from_millis(1000) && took < Duration::from_secs(10),
            "{what} answered after {took:?}"
        );
    }
    // A follower returns: the cluster has a quorum and serves again.
    c.node(followers[0]).start();
    c.client()
        .create_queue("after", HashMap::new())
        .await
        .expect("writes resume with a quorum");
}
