//! Long polling: a receive waiting on a follower returns as soon as a message
//! is sent through another node, and an empty long poll returns after its
//! wait.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cluster_tests::{elected_cluster, metric_value, receive_waiting, string_map, wait_for};
use sluice_client::sluice_proto::v1 as pb;

const TRIALS: usize = 20;

#[tokio::test]
async fn a_long_poll_on_a_follower_wakes_on_a_send_through_another_node() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let others = c.others(leader);
    let (waiter_node, sender_node) = (others[0], others[1]);
    let waiter = c.node(waiter_node).client(Duration::from_secs(30));
    let sender = c.node(sender_node).client(Duration::from_secs(30));
    sender.create_queue("lp", HashMap::new()).await.unwrap();
    let waiter_addr = c.nodes[&waiter_node].addr.clone();
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
