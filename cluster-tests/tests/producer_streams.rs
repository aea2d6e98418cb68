//! PutRecordStream and PublishStream on real nodes (SendMessageStream, which
//! shares their machinery, has send_stream.rs): many records over one call,
//! each answered on its own (through a follower, which forwards them), in
//! the order they were sent; one record's error leaves the others alone;
//! the call is authorised for its stream as a PutRecord is (a publish call
//! for its topic as a Publish is); `sluicectl
//! stream put --stdin` streams its lines; a FIFO topic's messages published
//! over one call reach its subscribed queue in order.

use std::collections::{BTreeMap, HashMap};

use cluster_tests::{
    elected_cluster, elected_secured_cluster, output_with_input, sluicectl, trim_horizon,
};
use futures::future::join_all;
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;
use tonic::Code;

fn record(key: &str, data: impl Into<Vec<u8>>) -> pb::PutRecordRequest {
    pb::PutRecordRequest {
        partition_key: key.to_string(),
        data: data.into(),
        ..Default::default()
    }
}

/// Every record of `stream`, by shard id, in shard order: (sequence
/// number, data).
async fn records(client: &Client, stream: &str) -> BTreeMap<String, Vec<(u128, Vec<u8>)>> {
    let mut out = BTreeMap::new();
    for shard in client.list_shards(stream).await.unwrap() {
        let mut it = trim_horizon(client, stream, &shard.shard_id).await.unwrap();
        let mut got = Vec::new();
        loop {
            let r = client.get_records(&it, 10_000).await.unwrap();
            if r.records.is_empty() {
                break;
            }
            got.extend(
                r.records
                    .into_iter()
                    .map(|rec| (rec.sequence_number.parse().unwrap(), rec.data)),
            );
            it = r.next_shard_iterator;
        }
        out.insert(shard.shard_id, got);
    }
    out
}

#[tokio::test]
async fn records_through_a_follower_are_answered_each_in_order_and_a_bad_one_alone() {
    let (_serial, c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    admin.create_stream_with_shards("s", 2).await.unwrap();
    admin.create_stream_with_shards("other", 1).await.unwrap();
    let client = c.follower_client(leader, std::time::Duration::from_secs(30));
    let sender = client.record_sender("s");

    const N: usize = 1500;
    // Queued in the order of the calls, awaited together.
    let replies: Vec<_> = (0..N)
        .map(|i| {
            let r = match i {
                700 => record("", "no key"),
                701 => pb::PutRecordRequest {
                    stream_name: "other".into(),
                    ..record("k", "to another stream")
                },
                _ => record(&format!("k{}", i % 7), format!("r{i}")),
            };
            sender.send(r)
        })
        .collect();
    let results = join_all(replies).await;
    let mut answered: BTreeMap<String, Vec<(u128, Vec<u8>)>> = BTreeMap::new();
    for (i, r) in results.into_iter().enumerate() {
        match i {
            700 => {
                let e = r.expect_err("an empty partition key is refused");
                assert_eq!(e.status(), Some(Code::InvalidArgument), "{e}");
                assert!(e.to_string().contains("record.partition_key"), "{e}");
            }
            701 => {
                let e = r.expect_err("another stream is refused");
                assert_eq!(e.status(), Some(Code::InvalidArgument), "{e}");
                assert!(e.to_string().contains("record.stream_name"), "{e}");
            }
            _ => {
                let put = r.unwrap_or_else(|e| panic!("record {i}: {e}"));
                answered
                    .entry(put.shard_id)
                    .or_default()
                    .push((put.sequence_number.parse().unwrap(), format!("r{i}").into()));
            }
        }
    }
    assert_eq!(answered.values().map(Vec::len).sum::<usize>(), N - 2);
    for (shard, put) in &answered {
        assert!(
            put.windows(2).all(|w| w[0].0 < w[1].0),
            "{shard}: sequence numbers follow the sending order"
        );
    }
    assert_eq!(
        records(&admin, "s").await,
        answered,
        "each shard holds exactly the answered records, in the order sent"
    );
    let other = records(&admin, "other").await;
    assert!(
        other.values().all(Vec::is_empty),
        "nothing reached the other stream"
    );
}

#[tokio::test]
async fn a_record_stream_is_authorised_for_its_stream_and_a_refused_one_puts_nothing() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    for s in ["clicks-eu", "clicks-us"] {
        admin.create_stream_with_shards(s, 1).await.unwrap();
    }
    let eve = c
        .client_allowed(
            &admin,
            "eve",
            "kinesis:PutRecord",
            "arn:aws:kinesis:us-east-1:000000000000:stream/clicks-eu",
        )
        .await;

    let refused = eve.record_sender("clicks-us");
    for r in join_all((0..20).map(|i| refused.send(record("k", format!("us{i}"))))).await {
        let e = r.expect_err("clicks-us is not eve's");
        assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
        assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    }
    let us = records(&admin, "clicks-us").await;
    assert!(us.values().all(Vec::is_empty), "a refused call put nothing");

    let allowed = eve.record_sender("clicks-eu");
    for r in join_all((0..20).map(|i| allowed.send(record("k", format!("eu{i}"))))).await {
        r.expect("clicks-eu is eve's");
    }
    let eu: Vec<Vec<u8>> = records(&admin, "clicks-eu")
        .await
        .into_values()
        .flatten()
        .map(|(_, data)| data)
        .collect();
    let want: Vec<Vec<u8>> = (0..20).map(|i| format!("eu{i}").into_bytes()).collect();
    assert_eq!(eu, want, "the allowed records, in the order sent");
}

#[tokio::test]
async fn sluicectl_puts_stdin_over_one_call_in_order() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let client = c.client();
    client.create_stream_with_shards("cli", 1).await.unwrap();
    let lines: Vec<String> = (0..300).map(|i| format!("line-{i}")).collect();
    let input: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let out = output_with_input(
        sluicectl(&c.nodes[&1].addr, 10).args(["stream", "put", "cli", "--stdin", "--key", "same"]),
        &input,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // One "shard sequence" line per record, in the order of the lines.
    let printed: Vec<u128> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| l.split_once(' ').unwrap().1.parse().unwrap())
        .collect();
    let got = records(&client, "cli").await.into_values().flatten();
    let (seqs, data): (Vec<u128>, Vec<Vec<u8>>) = got.unzip();
    assert_eq!(printed, seqs, "each line's reply names its record");
    let want: Vec<Vec<u8>> = lines.into_iter().map(String::into_bytes).collect();
    assert_eq!(data, want, "every line, in order");
}

#[tokio::test]
async fn a_fifo_topic_published_over_one_call_through_a_follower_fans_out_in_order() {
    let (_serial, c, leader) = elected_cluster(3, &[]).await;
    let admin = c.client();
    let topic = admin
        .create_topic(
            "news.fifo",
            HashMap::from([
                ("FifoTopic".to_string(), "true".to_string()),
                ("ContentBasedDeduplication".to_string(), "true".to_string()),
            ]),
        )
        .await
        .unwrap();
    let fifo = HashMap::from([("FifoQueue".to_string(), "true".to_string())]);
    admin.create_queue("reader.fifo", fifo).await.unwrap();
    admin
        .subscribe(
            &topic,
            "sqs",
            "reader.fifo",
            HashMap::from([("RawMessageDelivery".to_string(), "true".to_string())]),
        )
        .await
        .unwrap();
    let client = c.follower_client(leader, std::time::Duration::from_secs(30));
    let publisher = client.publisher(&topic);

    const N: usize = 300;
    let replies: Vec<_> = (0..N)
        .map(|i| {
            publisher.send(pb::PublishRequest {
                message: format!("{i}"),
                // One message without its group: refused alone.
                message_group_id: if i == 150 { String::new() } else { "g".into() },
                ..Default::default()
            })
        })
        .collect();
    let mut sequence = Vec::new();
    for (i, r) in join_all(replies).await.into_iter().enumerate() {
        if i == 150 {
            let e = r.expect_err("a FIFO message without a group is refused");
            assert_eq!(e.status(), Some(Code::InvalidArgument), "{e}");
            assert!(e.to_string().contains("message.message_group_id"), "{e}");
        } else {
            let p = r.unwrap_or_else(|e| panic!("message {i}: {e}"));
            sequence.push(p.sequence_number.parse::<u128>().unwrap());
        }
    }
    assert!(
        sequence.windows(2).all(|w| w[0] < w[1]),
        "sequence numbers follow the publishing order"
    );
    let mut got = Vec::new();
    // A receive that waits and finds nothing: the queue has drained.
    loop {
        let r = admin
            .receive_from("reader.fifo", 10, None, Some(2))
            .await
            .unwrap();
        if r.messages.is_empty() {
            break;
        }
        for m in r.messages {
            admin
                .delete_message("reader.fifo", &m.receipt_handle)
                .await
                .unwrap();
            got.push(m.body.parse::<usize>().unwrap());
        }
    }
    let want: Vec<usize> = (0..N).filter(|i| *i != 150).collect();
    assert_eq!(got, want, "the queue receives every message, in order");
}

#[tokio::test]
async fn a_publish_stream_is_authorised_for_its_topic_and_a_refused_one_publishes_nothing() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    for region in ["eu", "us"] {
        let topic = admin
            .create_topic(&format!("alerts-{region}"), HashMap::new())
            .await
            .unwrap();
        let queue = format!("inbox-{region}");
        admin.create_queue(&queue, HashMap::new()).await.unwrap();
        let raw = HashMap::from([("RawMessageDelivery".to_string(), "true".to_string())]);
        admin.subscribe(&topic, "sqs", &queue, raw).await.unwrap();
    }
    let pat = c
        .client_allowed(
            &admin,
            "pat",
            "sns:Publish",
            "arn:aws:sns:us-east-1:000000000000:alerts-eu",
        )
        .await;
    let message = |text: String| pb::PublishRequest {
        message: text,
        ..Default::default()
    };

    let refused = pat.publisher("alerts-us");
    for r in join_all((0..20).map(|i| refused.send(message(format!("us{i}"))))).await {
        let e = r.expect_err("alerts-us is not pat's");
        assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
        assert_eq!(e.code(), Some("AccessDenied"), "{e}");
    }
    let us = admin
        .receive_from("inbox-us", 10, None, Some(0))
        .await
        .unwrap();
    assert!(us.messages.is_empty(), "a refused call published nothing");

    let allowed = pat.publisher("alerts-eu");
    for r in join_all((0..20).map(|i| allowed.send(message(format!("eu{i}"))))).await {
        r.expect("alerts-eu is pat's");
    }
    let a = admin
        .get_queue_attributes("inbox-eu", &["ApproximateNumberOfMessages"])
        .await
        .unwrap();
    assert_eq!(
        a["ApproximateNumberOfMessages"], "20",
        "every allowed publish fanned out"
    );
}
