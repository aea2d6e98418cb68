//! Long polling: a receive waiting on a follower returns as soon as a message
//! is sent through another node; an empty long poll returns after its wait;
//! a message wakes one waiting long poll, not all of them.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cluster_tests::{
    elected_cluster, metric_series, metric_value, receive_waiting, send_batch, send_entry,
    string_map, wait_for, Cluster, SerialGuard,
};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

const TRIALS: usize = 20;

/// A three-node cluster with `queue`, and clients of two followers: one
/// that waits (with its node's address, for its metrics) and one that sends.
async fn on_two_followers(queue: &str) -> ((SerialGuard, Cluster), Client, Client, String) {
    let (serial, mut c, leader) = elected_cluster(3, &[]).await;
    let others = c.others(leader);
    let (waiter_node, sender_node) = (others[0], others[1]);
    let waiter = c.node(waiter_node).client(Duration::from_secs(30));
    let sender = c.node(sender_node).client(Duration::from_secs(30));
    sender.create_queue(queue, HashMap::new()).await.unwrap();
    let addr = c.nodes[&waiter_node].addr.clone();
    ((serial, c), waiter, sender, addr)
}

#[tokio::test]
async fn a_long_poll_on_a_follower_wakes_on_a_send_through_another_node() {
    let (_cluster, waiter, sender, waiter_addr) = on_two_followers("lp").await;
    let mut latencies = Vec::new();
    for i in 0..TRIALS {
        let receive = {
            let waiter = waiter.clone();
            tokio::spawn(async move {
                let r = receive_waiting(&waiter, "lp", Some(20)).await.unwrap();
                (Instant::now(), r)
            })
        };
        // The event to wait for: the follower reports the receive waiting.
        wait_for(Duration::from_secs(10), "the receive to wait", || {
            let addr = waiter_addr.clone();
            async move {
                (metric_value(&cluster_tests::scrape(&addr), "sluice_long_polls_waiting") >= 1.0)
                    .then_some(())
            }
        })
        .await;
        sender.send_body("lp", &format!("m{i}")).await.unwrap();
        let acked = Instant::now();
        let (returned, reply) = receive.await.unwrap();
        assert_eq!(reply.messages.len(), 1);
        assert_eq!(reply.messages[0].body, format!("m{i}"));
        latencies.push(returned.saturating_duration_since(acked));
        waiter
            .delete_message("lp", &reply.messages[0].receipt_handle)
            .await
            .unwrap();
    }
    latencies.sort();
    let median = latencies[TRIALS / 2];
    let max = latencies[TRIALS - 1];
    eprintln!(
        "long poll on a follower returned after the send was acknowledged: median {median:?}, max {max:?} over {TRIALS} trials"
    );
    assert!(median < Duration::from_millis(100), "median {median:?}");
}

#[tokio::test]
async fn an_empty_long_poll_returns_after_its_wait() {
    let (_serial, mut c, _) = elected_cluster(1, &[]).await;
    let client = c.node(1).client(Duration::from_secs(30));
    let long_polling = string_map(&[("ReceiveMessageWaitTimeSeconds", "1")]);
    client.create_queue("empty", long_polling).await.unwrap();
    let started = Instant::now();
    let r = receive_waiting(&client, "empty", Some(2)).await.unwrap();
    let took = started.elapsed();
    assert!(r.messages.is_empty());
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(3),
        "returned after {took:?}"
    );
    // Without a wait time, the queue's ReceiveMessageWaitTimeSeconds applies.
    let started = Instant::now();
    receive_waiting(&client, "empty", None).await.unwrap();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(2),
        "returned after {took:?}"
    );
    // A delayed message wakes a waiting receive when its delay is over,
    // without any send to wake it.
    client
        .send_message(pb::SendMessageRequest {
            queue_name: "empty".into(),
            message_body: "later".into(),
            delay_seconds: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let started = Instant::now();
    let r = receive_waiting(&client, "empty", Some(10)).await.unwrap();
    let took = started.elapsed();
    assert_eq!(r.messages.len(), 1);
    assert!(
        took < Duration::from_millis(1500),
        "returned after {took:?}"
    );
}

#[tokio::test]
async fn each_message_wakes_one_waiting_long_poll_and_the_others_wait_on() {
    const WAKEUPS: &str = "sluice_long_poll_wakeups_total";
    const RECEIVERS: usize = 6;
    let (_cluster, waiter, sender, addr) = on_two_followers("many").await;
    let scrape = || cluster_tests::scrape(&addr);
    let (done, mut returned) = tokio::sync::mpsc::unbounded_channel();
    for _ in 0..RECEIVERS {
        let (waiter, done) = (waiter.clone(), done.clone());
        tokio::spawn(async move {
            let r = receive_waiting(&waiter, "many", Some(20)).await.unwrap();
            done.send(r).unwrap();
        });
    }
    wait_for(Duration::from_secs(10), "every receive to wait", || async {
        (metric_value(&scrape(), "sluice_long_polls_waiting") == RECEIVERS as f64).then_some(())
    })
    .await;
    let before = scrape();
    let woken = || metric_value(&scrape(), WAKEUPS) - metric_value(&before, WAKEUPS);

    // One message: one long poll is woken, asks the leader and returns it.
    sender.send_body("many", "m0").await.unwrap();
    let mut bodies = vec![returned.recv().await.unwrap().messages[0].body.clone()];
    assert_eq!(woken(), 1.0, "one message wakes one long poll");
    assert_eq!(
        metric_value(&scrape(), "sluice_long_polls_waiting"),
        (RECEIVERS - 1) as f64,
        "the others still wait"
    );

    // A batch of two wakes two; then one message each for the rest.
    let entries = (1..3)
        .map(|i| send_entry(format!("e{i}"), format!("m{i}")))
        .collect();
    send_batch(&sender, "many", entries).await.unwrap();
    for _ in 0..2 {
        bodies.push(returned.recv().await.unwrap().messages[0].body.clone());
    }
    assert_eq!(woken(), 3.0, "a batch of two wakes two more");
    for i in 3..RECEIVERS {
        sender.send_body("many", &format!("m{i}")).await.unwrap();
        bodies.push(returned.recv().await.unwrap().messages[0].body.clone());
    }
    bodies.sort();
    let sent: Vec<String> = (0..RECEIVERS).map(|i| format!("m{i}")).collect();
    assert_eq!(bodies, sent, "each receive returned one message, each once");
    let after = scrape();
    let proposed = |t: &str| metric_series(t, WAKEUPS, "proposed=\"true\"");
    assert_eq!(
        proposed(&after) - proposed(&before),
        RECEIVERS as f64,
        "every wake-up found its message: none was woken in vain"
    );
}
