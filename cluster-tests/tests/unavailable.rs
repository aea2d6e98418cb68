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

/// A node that refuses the connection is not running: the client tries the
/// next one at once instead of backing off first, so a client given many
/// addresses of which few run (a StatefulSet's every possible pod) reaches a
/// running node without waiting out one back-off per dead address. The
/// back-off here is longer than the deadline: one wait would fail the call.
#[tokio::test]
async fn a_client_passes_over_refusing_nodes_without_backing_off() {
    let (_serial, c, leader) = elected_cluster(1, &[]).await;
    let dead: Vec<String> = (0..8)
        .map(|_| {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        })
        .collect();
    let options = Options {
        deadline: Duration::from_secs(30),
        initial_backoff: Duration::from_secs(60),
        max_backoff: Duration::from_secs(60),
        ..Options::default()
    };
    let mut addrs = dead.clone();
    addrs.push(c.nodes[&leader].addr.clone());
    let client = Client::with_options(addrs, options.clone()).unwrap();
    client
        .create_queue("reached", HashMap::new())
        .await
        .expect("a running node reached past eight refusing ones");

    // When every node refuses, the back-off applies: here it outlasts the
    // deadline, so the call fails UNAVAILABLE.
    let none = Client::with_options(dead, options).unwrap();
    let e = none
        .create_queue("unreached", HashMap::new())
        .await
        .expect_err("no node runs");
    assert_eq!(e.status(), Some(Code::Unavailable), "{e}");
}
