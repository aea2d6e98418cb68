//! SendMessageStream on real nodes: many messages over one call, each
//! answered on its own (through a follower, which forwards them); one
//! message's error leaves the others alone; a FIFO group keeps the order
//! its messages were sent in; a stream is authorised for its queue as a
//! SendMessage is; and a message over the limit ends the stream without
//! taking the node down.

use std::collections::{BTreeSet, HashMap, HashSet};

use cluster_tests::{
    delete_batch, elected_cluster, elected_secured_cluster, metric_value, output_with_input,
    receive_bodies, receive_until_empty, sluicectl, wait_for,
};
use futures::future::join_all;
use sluice_client::sluice_proto::v1 as pb;
use tonic::Code;

fn message(body: &str) -> pb::SendMessageRequest {
    pb::SendMessageRequest {
        message_body: body.to_string(),
        ..Default::default()
    }
}

/// Every send succeeded, with sequence numbers in the order of sending.
fn assert_sent_in_order(replies: Vec<Result<pb::SendMessageResponse, sluice_client::Error>>) {
    let sequence: Vec<u128> = replies
        .into_iter()
        .map(|r| {
            r.expect("sent")
                .sequence_number
                .parse()
                .expect("a sequence number")
        })
        .collect();
    assert!(
        sequence.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers follow the sending order: {sequence:?}"
    );
}

/// A FIFO queue's attributes, deduplicating by content.
fn fifo() -> HashMap<String, String> {
    HashMap::from([
        ("FifoQueue".to_string(), "true".to_string()),
        ("ContentBasedDeduplication".to_string(), "true".to_string()),
    ])
}

#[tokio::test]
async fn a_stream_through_a_follower_answers_each_message_and_a_bad_one_alone() {
    let (_serial, c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    admin.create_queue("s", HashMap::new()).await.unwrap();
    admin.create_queue("other", HashMap::new()).await.unwrap();
    let client = c.follower_client(leader, std::time::Duration::from_secs(30));
    let sender = client.message_sender("s");

    const N: usize = 2000;
    let sends = (0..N).map(|i| {
        let sender = sender.clone();
        async move {
            let m = match i {
                500 => message(""),
                501 => pb::SendMessageRequest {
                    queue_name: "other".into(),
                    ..message("to another queue")
                },
                _ => message(&format!("m{i}")),
            };
            (i, sender.send(m).await)
        }
    });
    let results = join_all(sends).await;
    let mut ids = HashSet::new();
    for (i, r) in results {
        match i {
            500 => {
                let e = r.expect_err("an empty body is refused");
                assert_eq!(e.status(), Some(Code::InvalidArgument), "{e}");
                assert!(e.to_string().contains("message.message_body"), "{e}");
            }
            501 => {
                let e = r.expect_err("another queue is refused");
                assert_eq!(e.status(), Some(Code::InvalidArgument), "{e}");
                assert!(e.to_string().contains("message.queue_name"), "{e}");
            }
            _ => {
                let sent = r.unwrap_or_else(|e| panic!("message {i}: {e}"));
                assert_eq!(sent.md5_of_message_body.len(), 32);
                assert!(ids.insert(sent.message_id), "message ids are unique");
            }
        }
    }
    assert_eq!(ids.len(), N - 2);
    let want: BTreeSet<String> = (0..N)
        .filter(|i| *i != 500 && *i != 501)
        .map(|i| format!("m{i}"))
        .collect();
    let seen = receive_bodies(&admin, "s", &want).await;
    assert_eq!(seen, want, "the queue holds exactly the answered messages");
    let other = admin
        .receive_from("other", 10, None, Some(0))
        .await
        .unwrap();
    assert!(other.messages.is_empty(), "nothing reached the other queue");
}

#[tokio::test]
async fn a_fifo_group_sent_over_a_stream_arrives_in_the_order_it_was_sent() {
    let (_serial, c, _) = elected_cluster(3, &[]).await;
    let client = c.client();
    client.create_queue("f.fifo", fifo()).await.unwrap();
    let sender = client.message_sender("f.fifo");
    const N: usize = 300;
    // Polled in order, each send is queued on the stream in order.
    let sends = (0..N).map(|i| {
        sender.send(pb::SendMessageRequest {
            message_group_id: "g".into(),
            ..message(&format!("{i}"))
        })
    });
    assert_sent_in_order(join_all(sends).await);
    let mut got = Vec::new();
    while got.len() < N {
        let r = client
            .receive_from("f.fifo", 10, Some(60), Some(1))
            .await
            .unwrap();
        assert!(
            !r.messages.is_empty(),
            "the queue ran dry after {}",
            got.len()
        );
        let deleted = delete_batch(&client, "f.fifo", &r.messages).await.unwrap();
        assert!(deleted.failed.is_empty());
        got.extend(r.messages.iter().map(|m| m.body.parse::<usize>().unwrap()));
    }
    assert_eq!(got, (0..N).collect::<Vec<_>>());
}

#[tokio::test]
async fn a_fifo_group_of_large_messages_through_a_follower_keeps_its_order() {
    // 100 KB messages arrive many at a time and make several commands per
    // read, each forwarded by the follower to the leader.
    let (_serial, c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    admin.create_queue("big.fifo", fifo()).await.unwrap();
    let client = c.follower_client(leader, std::time::Duration::from_secs(30));
    let sender = client.message_sender("big.fifo");
    const N: usize = 80;
    let sends: Vec<_> = (0..N)
        .map(|i| {
            sender.send(pb::SendMessageRequest {
                message_group_id: "g".into(),
                ..message(&format!("{i} {}", "b".repeat(100_000)))
            })
        })
        .collect();
    assert_sent_in_order(join_all(sends).await);
}

#[tokio::test]
async fn a_stream_is_authorised_for_its_queue_and_a_refused_one_sends_nothing() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    for q in ["orders-eu", "orders-us"] {
        admin.create_queue(q, HashMap::new()).await.unwrap();
    }
    let eve = c
        .client_allowed(
            &admin,
            "eve",
            "sqs:SendMessage",
            "arn:aws:sqs:us-east-1:000000000000:orders-eu",
        )
        .await;

    let refused = eve.message_sender("orders-us");
    for r in join_all((0..20).map(|i| refused.send(message(&format!("us{i}"))))).await {
        let e = r.expect_err("orders-us is not eve's");
        assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
        assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    }
    let us = admin
        .receive_from("orders-us", 10, None, Some(0))
        .await
        .unwrap();
    assert!(us.messages.is_empty(), "a refused stream sent nothing");

    let allowed = eve.message_sender("orders-eu");
    for r in join_all((0..20).map(|i| allowed.send(message(&format!("eu{i}"))))).await {
        r.expect("orders-eu is eve's");
    }
    let want: BTreeSet<String> = (0..20).map(|i| format!("eu{i}")).collect();
    assert_eq!(receive_bodies(&admin, "orders-eu", &want).await, want);
}

#[tokio::test]
async fn a_message_over_the_limit_ends_the_stream_and_the_next_stream_goes_on() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    client.create_queue("big", HashMap::new()).await.unwrap();
    let sender = client.message_sender("big");
    sender
        .send(message("before"))
        .await
        .expect("a small message");
    // Over SendMessage's whole request limit, so the node refuses it as it
    // arrives on the stream (before decoding it).
    let huge = "x".repeat(1_200_000);
    let e = sender
        .send(message(&huge))
        .await
        .expect_err("a message over the limit is refused");
    assert_eq!(e.status(), Some(Code::ResourceExhausted), "{e}");
    assert_eq!(e.code(), Some("RequestTooLarge"), "{e}");
    // The sender opens a new stream for the next message; the node is up.
    sender
        .send(message("after"))
        .await
        .expect("the next message");
    let want: BTreeSet<String> = ["before", "after"].map(String::from).into();
    assert_eq!(receive_bodies(&client, "big", &want).await, want);
}

#[tokio::test]
async fn a_stream_of_more_bytes_than_it_may_hold_at_once_is_sent_whole() {
    let (_serial, c, leader) = elected_cluster(3, &[]).await;
    c.client()
        .create_queue("wide", HashMap::new())
        .await
        .unwrap();
    // Through a follower, 40 messages of 1 MB: five times what a stream
    // holds at once (8 MiB), so the node stops reading and goes on as
    // commands commit, more than once.
    let client = c.follower_client(leader, std::time::Duration::from_secs(60));
    let sender = client.message_sender("wide");
    let sends: Vec<_> = (0..40)
        .map(|i| sender.send(message(&format!("{i:02}{}", "w".repeat(1_000_000)))))
        .collect();
    for (i, r) in join_all(sends).await.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("message {i}: {e}"));
    }
    let a = client.get_queue_attributes("wide", &["All"]).await.unwrap();
    assert_eq!(a["ApproximateNumberOfMessages"], "40");
}

#[tokio::test]
async fn sluicectl_streams_stdin_in_order_and_names_the_line_that_failed() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    client.create_queue("cli.fifo", fifo()).await.unwrap();
    let mut lines: Vec<String> = (0..60).map(|i| i.to_string()).collect();
    // Line 31 holds a character SQS refuses in a body.
    lines[30] = "bell\u{7}".into();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = output_with_input(
        sluicectl(&c.nodes[&1].addr, 10)
            .args(["queue", "send", "cli.fifo", "--stdin", "--group", "g"]),
        &input,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a failed line fails the command");
    assert!(stderr.contains("line 31: "), "{stderr}");
    assert!(stderr.contains("message.message_body"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 59);
    // Deleted as received: the group's next message waits for that.
    let got: Vec<usize> = receive_until_empty(&client, "cli.fifo", 60, true)
        .await
        .iter()
        .map(|m| m.body.parse().unwrap())
        .collect();
    let want: Vec<usize> = (0..60).filter(|i| *i != 30).collect();
    assert_eq!(got, want, "every other line, in order");
}

/// Stopped processes, continued when dropped (also when a test fails).
struct Stopped(Vec<i32>);

impl Stopped {
    fn new(pids: Vec<i32>) -> Stopped {
        for pid in &pids {
            assert_eq!(unsafe { libc::kill(*pid, libc::SIGSTOP) }, 0);
        }
        Stopped(pids)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        for pid in &self.0 {
            unsafe { libc::kill(*pid, libc::SIGCONT) };
        }
    }
}

#[tokio::test]
async fn messages_the_nodes_request_budget_cannot_hold_are_refused_and_nothing_else_is_lost() {
    // A budget of 32 MiB of request bytes in flight, and nothing commits
    // while both followers are stopped (the leader waits for them, up to a
    // minute): six streams of eight 1 MB messages (48 MB) cannot all be
    // held, so the node refuses some (alone, or by ending their stream).
    let (_serial, c, leader) = elected_cluster(
        3,
        &["--request-memory-mb", "32", "--leader-wait-ms", "60000"],
    )
    .await;
    let client = c.client_from((leader - 1) as usize);
    client.create_queue("budget", HashMap::new()).await.unwrap();
    let followers: Vec<i32> = c
        .nodes
        .iter()
        .filter(|(id, _)| **id != leader)
        .map(|(_, n)| n.pid().unwrap() as i32)
        .collect();
    let stopped = Stopped::new(followers);
    let mut pending = futures::stream::FuturesUnordered::new();
    for s in 0..6 {
        let sender = client.message_sender("budget");
        for m in 0..8 {
            let body = format!("{s}-{m}-{}", "z".repeat(1_000_000));
            let reply = sender.send(message(&body));
            pending.push(async move { (format!("{s}-{m}"), reply.await) });
        }
    }
    let node = &c.nodes[&leader];
    wait_for(
        std::time::Duration::from_secs(30),
        "the node to refuse a message for want of budget",
        || async {
            let refusals = metric_value(&node.metrics(), "sluice_request_memory_refusals_total");
            (refusals > 0.0).then_some(())
        },
    )
    .await;
    drop(stopped);
    // Once the followers run again the held messages commit; a command
    // caught by an election (stopped, the followers missed the leader's
    // heartbeats) has an unknown outcome.
    use futures::StreamExt;
    let (mut sent, mut refused, mut unknown) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    while let Some((name, r)) = pending.next().await {
        match r {
            Ok(_) => sent.insert(name),
            Err(e) if e.code() == Some("RequestMemoryExhausted") => refused.insert(name),
            Err(e) => {
                assert_eq!(e.status(), Some(Code::Unavailable), "{name}: {e}");
                unknown.insert(name)
            }
        };
    }
    assert!(!refused.is_empty(), "the client saw the refusals");
    assert_eq!(sent.len() + refused.len() + unknown.len(), 48);
    let seen: BTreeSet<String> = receive_until_empty(&client, "budget", 3600, false)
        .await
        .iter()
        .map(|m| m.body[..m.body.len() - 1_000_001].to_string())
        .collect();
    assert!(sent.is_subset(&seen), "every answered message is queued");
    assert!(seen.is_disjoint(&refused), "no refused message is queued");
    assert!(seen.iter().all(|n| sent.contains(n) || unknown.contains(n)));
}
