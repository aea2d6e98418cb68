//! ReceiveMessageStream on real nodes: a push consumer keeps the queue
//! rules a unary receive keeps (visibility expiry while a message is held
//! by the call, receive counts and redrive, FIFO group order), its deletes
//! and visibility changes are authorised as the unary calls are, and a
//! call cut off (client gone, node killed) loses no message.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use cluster_tests::{create_queue_with_dlq, elected_cluster, elected_secured_cluster};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Consumer, ConsumerOptions};
use tonic::Code;

fn options(prefetch: u32, visibility: Option<i32>) -> ConsumerOptions {
    ConsumerOptions {
        prefetch,
        visibility_timeout: visibility,
        system_attributes: vec!["All".into()],
        ..Default::default()
    }
}

async fn send_all(client: &Client, queue: &str, bodies: impl Iterator<Item = String>) {
    for body in bodies {
        client.send_body(queue, &body).await.unwrap();
    }
}

/// The next message, within a minute.
async fn next(consumer: &mut Consumer) -> pb::Message {
    tokio::time::timeout(Duration::from_secs(60), consumer.next())
        .await
        .expect("a message within a minute")
        .expect("the call goes on")
}

fn receive_count(m: &pb::Message) -> u32 {
    m.attributes["ApproximateReceiveCount"].parse().unwrap()
}

#[tokio::test]
async fn a_consumer_through_a_follower_gets_every_message_once_and_its_deletes_settle() {
    let (_serial, c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    admin.create_queue("work", HashMap::new()).await.unwrap();
    let client = c.follower_client(leader, Duration::from_secs(30));
    let mut consumer = client
        .consumer("work", options(50, Some(60)))
        .await
        .unwrap();

    const N: usize = 600;
    let producer = tokio::spawn({
        let admin = admin.clone();
        async move { send_all(&admin, "work", (0..N).map(|i| format!("m{i}"))).await }
    });
    let mut seen = BTreeSet::new();
    let mut deletes = Vec::new();
    while seen.len() < N {
        let m = next(&mut consumer).await;
        assert_eq!(receive_count(&m), 1, "delivered once: {}", m.body);
        assert!(seen.insert(m.body.clone()), "{} delivered twice", m.body);
        deletes.push(consumer.delete(&m.receipt_handle));
    }
    producer.await.unwrap();
    for d in deletes {
        d.await.expect("the delete settled");
    }
    let want: BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(seen, want);
    let a = admin.get_queue_attributes("work", &["All"]).await.unwrap();
    assert_eq!(a["ApproximateNumberOfMessages"], "0");
    assert_eq!(
        a["ApproximateNumberOfMessagesNotVisible"], "0",
        "every delete took"
    );
}

#[tokio::test]
async fn a_message_held_by_a_consumer_past_its_visibility_timeout_is_received_again() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    client.create_queue("held", HashMap::new()).await.unwrap();
    client.send_body("held", "once").await.unwrap();
    let mut consumer = client.consumer("held", options(1, Some(1))).await.unwrap();
    let m = next(&mut consumer).await;
    assert_eq!(receive_count(&m), 1);
    // Not deleted: a unary receive waiting for it gets it when the
    // consumer's visibility timeout ends (the consumer's one credit is
    // spent, so the consumer cannot take it back first).
    let again = client
        .receive_from("held", 1, Some(60), Some(20))
        .await
        .unwrap();
    assert_eq!(again.messages.len(), 1, "visible again after 1 s");
    assert_eq!(again.messages[0].body, "once");
    client
        .delete_message("held", &again.messages[0].receipt_handle)
        .await
        .unwrap();
    let a = client.get_queue_attributes("held", &["All"]).await.unwrap();
    assert_eq!(a["ApproximateNumberOfMessagesNotVisible"], "0");
}

#[tokio::test]
async fn released_messages_count_their_receives_and_move_to_the_dead_letter_queue() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    create_queue_with_dlq(&client, "jobs", "jobs-dlq", 2, &[]).await;
    client.send_body("jobs", "poison").await.unwrap();
    let mut consumer = client.consumer("jobs", options(1, Some(30))).await.unwrap();
    let settler = consumer.settler();
    for count in 1..=2 {
        let m = next(&mut consumer).await;
        assert_eq!(m.body, "poison");
        assert_eq!(receive_count(&m), count);
        // Visible again at once, and the credit given back.
        settler
            .change_visibility(&m.receipt_handle, 0)
            .await
            .unwrap();
    }
    // The third receive finds it past maxReceiveCount: it moves.
    let dead = client
        .receive_from("jobs-dlq", 1, Some(60), Some(20))
        .await
        .unwrap();
    assert_eq!(dead.messages.len(), 1, "moved to the dead-letter queue");
    assert_eq!(dead.messages[0].body, "poison");
    let a = client.get_queue_attributes("jobs", &["All"]).await.unwrap();
    assert_eq!(a["ApproximateNumberOfMessages"], "0");
    assert_eq!(a["ApproximateNumberOfMessagesNotVisible"], "0");
}

#[tokio::test]
async fn a_fifo_consumer_gets_each_group_in_order_and_a_held_group_gets_no_more() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    let fifo = HashMap::from([
        ("FifoQueue".to_string(), "true".to_string()),
        ("ContentBasedDeduplication".to_string(), "true".to_string()),
    ]);
    client.create_queue("o.fifo", fifo).await.unwrap();
    const GROUPS: usize = 4;
    const PER: usize = 50;
    for i in 0..PER {
        for g in 0..GROUPS {
            client
                .send_message(pb::SendMessageRequest {
                    queue_name: "o.fifo".into(),
                    message_body: format!("{g}-{i}"),
                    message_group_id: format!("g{g}"),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
    }
    let mut consumer = client
        .consumer("o.fifo", options(20, Some(60)))
        .await
        .unwrap();
    let settler = consumer.settler();
    let mut next_of = [0usize; GROUPS];
    // Group 0's messages are held (not deleted) until every other group is
    // done: meanwhile no receive may take more of group 0, so only what
    // came in one receive (at most 10) can have been delivered.
    let mut held = Some(Vec::new());
    let mut got = 0;
    while got < GROUPS * PER {
        let m = next(&mut consumer).await;
        let (g, i) = m.body.split_once('-').unwrap();
        let (g, i): (usize, usize) = (g.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next_of[g], "group {g} in order");
        next_of[g] += 1;
        got += 1;
        match held.as_mut() {
            Some(h) if g == 0 => h.push(m.receipt_handle),
            _ => settler.delete(&m.receipt_handle).await.unwrap(),
        }
        if held.is_some() && next_of[1..].iter().all(|n| *n == PER) {
            assert!(
                (1..=10).contains(&next_of[0]),
                "group 0 waited for its held messages: {} delivered",
                next_of[0]
            );
            for h in held.take().unwrap() {
                settler.delete(&h).await.unwrap();
            }
        }
    }
    assert_eq!(next_of, [PER; GROUPS]);
}

#[tokio::test]
async fn a_consumer_cut_off_loses_nothing_whether_the_client_or_its_node_goes() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    admin.create_queue("safe", HashMap::new()).await.unwrap();
    const N: usize = 300;
    send_all(&admin, "safe", (0..N).map(|i| format!("m{i}"))).await;
    let mut done = BTreeSet::new();

    // A client that goes away with messages delivered and not deleted.
    let mut first = admin.consumer("safe", options(40, Some(2))).await.unwrap();
    for _ in 0..100 {
        let m = next(&mut first).await;
        if done.len() < 60 {
            first.delete(&m.receipt_handle).await.unwrap();
            done.insert(m.body);
        }
    }
    drop(first);

    // A consumer through a follower, whose node is killed mid-flight.
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let through = c.nodes[&follower].client(Duration::from_secs(10));
    let mut second = through
        .consumer("safe", options(40, Some(2)))
        .await
        .unwrap();
    for _ in 0..50 {
        let m = next(&mut second).await;
        second.delete(&m.receipt_handle).await.unwrap();
        done.insert(m.body);
    }
    c.nodes.get_mut(&follower).unwrap().kill9();
    let err = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            if let Err(e) = second.next().await {
                return e;
            }
        }
    })
    .await
    .expect("the killed node's call ends");
    assert!(err.status().is_some(), "{err}");

    // What was left, and what was delivered without a delete, comes back.
    let survivor = *c.nodes.keys().find(|id| **id != follower).unwrap();
    let client = c.nodes[&survivor].client(Duration::from_secs(30));
    let mut third = client
        .consumer("safe", options(40, Some(30)))
        .await
        .unwrap();
    while done.len() < N {
        let m = next(&mut third).await;
        third.delete(&m.receipt_handle).await.unwrap();
        done.insert(m.body);
    }
    let want: BTreeSet<String> = (0..N).map(|i| format!("m{i}")).collect();
    assert_eq!(done, want, "every message was received and deleted");
}

#[tokio::test]
async fn a_consumers_deletes_are_authorised_as_deletes() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    admin.create_queue("audit", HashMap::new()).await.unwrap();
    admin.create_queue("other", HashMap::new()).await.unwrap();
    admin.send_body("audit", "keep").await.unwrap();
    let rita = c
        .client_allowed(
            &admin,
            "rita",
            "sqs:ReceiveMessage",
            "arn:aws:sqs:us-east-1:000000000000:audit",
        )
        .await;

    let refused = rita.consumer("other", options(1, None)).await;
    let e = refused.err().expect("rita may not receive from other");
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");

    let mut consumer = rita.consumer("audit", options(1, Some(60))).await.unwrap();
    let m = next(&mut consumer).await;
    let e = consumer
        .delete(&m.receipt_handle)
        .await
        .expect_err("rita may receive, not delete");
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
    assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    let a = admin.get_queue_attributes("audit", &["All"]).await.unwrap();
    assert_eq!(
        a["ApproximateNumberOfMessagesNotVisible"], "1",
        "the refused delete changed nothing"
    );
}
