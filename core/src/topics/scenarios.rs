//! The topic rules of the spec, exercised through [`machine::apply`] over an
//! in-memory store with the clock moved by hand.

use std::collections::BTreeMap;

use crate::apply::Effect;
use crate::error::ErrorKind;
use crate::queues::delivery::Received;
use crate::queues::message::AttributeValue;
use crate::testing::{map, World};
use crate::topics::outbox::{Kind, Outcome};
use crate::topics::publish::{Publication, PublishInput, Published};
use crate::topics::subscription::Protocol;
use crate::topics::subscriptions::{Subscribe, Subscribed};
use crate::topics::{outbox, CreateTopic};

const ARN: &str = "arn:aws:sns:us-east-1:000000000000:";

impl World {
    fn subscribe(
        &mut self,
        topic: &str,
        protocol: Protocol,
        endpoint: &str,
        attrs: &[(&str, &str)],
    ) -> Subscribed {
        let n = self.effects.len();
        self.run(Subscribe {
            topic: topic.into(),
            protocol,
            endpoint: crate::topics::subscription::normalize_endpoint(protocol, endpoint).unwrap(),
            attributes: map(attrs),
            id: format!("sub-{endpoint}-{n}").replace(['/', ':'], "_"),
            token: format!("token-{n}"),
        })
        .unwrap()
    }

    fn publish_with(
        &mut self,
        topic: &str,
        input: PublishInput,
    ) -> Result<Published, crate::error::DomainError> {
        let p = Publication::validate("", topic.ends_with(".fifo"), input)?;
        (self.run(crate::topics::Publish {
            topic: topic.into(),
            topic_arn: format!("{ARN}{topic}"),
            messages: vec![p],
        })?)
        .pop()
        .unwrap()
    }

    /// Publishes `message` to FIFO topic `topic` in group `group`, with
    /// deduplication id `dedup`.
    fn publish_fifo(
        &mut self,
        topic: &str,
        message: &str,
        group: &str,
        dedup: &str,
    ) -> Result<Published, crate::error::DomainError> {
        self.publish_with(
            topic,
            PublishInput {
                message: message.into(),
                group_id: group.into(),
                dedup_id: dedup.into(),
                ..Default::default()
            },
        )
    }

    fn publish(&mut self, topic: &str, message: &str, attrs: &[(&str, &str)]) -> Published {
        let attributes = attrs
            .iter()
            .map(|(k, v)| {
                (
                    k.to_string(),
                    AttributeValue {
                        data_type: if v.parse::<f64>().is_ok() {
                            "Number".into()
                        } else {
                            "String".into()
                        },
                        string_value: Some(v.to_string()),
                        binary_value: None,
                    },
                )
            })
            .collect();
        self.publish_with(
            topic,
            PublishInput {
                message: message.into(),
                attributes,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn due(&self) -> Vec<outbox::Due> {
        outbox::due(&self.state, self.now, 1000, 1000, &|_, _| false).unwrap()
    }

    fn settle(&mut self, topic: &str, results: Vec<(u64, Outcome)>) -> outbox::Settled {
        let (t, _) = self
            .ask(crate::topics::GetTopic { name: topic.into() })
            .unwrap();
        self.run(crate::topics::SettleDeliveries {
            topic: topic.into(),
            topic_id: t.id,
            results,
        })
        .unwrap()
    }
}

fn message_of(r: &Received) -> String {
    let v: serde_json::Value = serde_json::from_str(r.body.body.inline().unwrap()).unwrap();
    assert_eq!(v["Type"], "Notification");
    v["Message"].as_str().unwrap().to_string()
}

#[test]
fn a_publish_reaches_every_matching_queue_once() {
    let mut w = World::new();
    w.topic("orders", &[]);
    for q in ["all", "red", "big", "raw"] {
        w.queue(q);
    }
    w.subscribe("orders", Protocol::Sqs, "all", &[]);
    w.subscribe(
        "orders",
        Protocol::Sqs,
        "red",
        &[("FilterPolicy", r#"{"color": ["red"]}"#)],
    );
    w.subscribe(
        "orders",
        Protocol::Sqs,
        "arn:aws:sqs:us-east-1:000000000000:big",
        &[("FilterPolicy", r#"{"size": [{"numeric": [">=", 10]}]}"#)],
    );
    w.subscribe(
        "orders",
        Protocol::Sqs,
        "raw",
        &[("RawMessageDelivery", "true")],
    );
    let a = w.publish("orders", "a", &[("color", "red"), ("size", "3")]);
    w.publish("orders", "b", &[("color", "blue"), ("size", "30")]);
    w.publish("orders", "c", &[]);
    let all: Vec<String> = w.drain("all").iter().map(message_of).collect();
    assert_eq!(all, ["a", "b", "c"]);
    let red: Vec<String> = w.drain("red").iter().map(message_of).collect();
    assert_eq!(red, ["a"]);
    let big: Vec<String> = w.drain("big").iter().map(message_of).collect();
    assert_eq!(big, ["b"]);
    let raw = w.drain("raw");
    assert_eq!(
        raw.iter()
            .map(|r| r.body.body.inline().unwrap())
            .collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    // Raw delivery carries the attributes as queue message attributes.
    assert_eq!(
        raw[0].body.attributes["color"].string_value.as_deref(),
        Some("red")
    );
    assert!(w.drain("all").is_empty(), "drained queues stay empty");
    assert_eq!(w.ready("red"), 1, "one message for red's long polls");
    // The envelope names the topic and carries the id Publish returned.
    let mut w2 = World::new();
    w2.topic("t", &[]);
    w2.queue("q");
    w2.subscribe("t", Protocol::Sqs, "q", &[]);
    let p = w2.publish("t", "hello", &[("k", "v")]);
    let got = w2.drain("q");
    let env: serde_json::Value = serde_json::from_str(got[0].body.body.inline().unwrap()).unwrap();
    assert_eq!(env["MessageId"], p.message_id.as_str());
    assert_eq!(env["TopicArn"], format!("{ARN}t"));
    assert_eq!(env["MessageAttributes"]["k"]["Value"], "v");
    // Ids are derived from the topic and the publish number.
    assert_eq!(p.message_id, a.message_id);
}

#[test]
fn a_missing_queue_sends_the_message_to_the_dead_letter_queue() {
    let mut w = World::new();
    w.topic("t", &[]);
    w.queue("dlq");
    w.subscribe(
        "t",
        Protocol::Sqs,
        "gone",
        &[(
            "RedrivePolicy",
            r#"{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq"}"#,
        )],
    );
    w.publish("t", "lost?", &[]);
    let dl = w.drain("dlq");
    assert_eq!(dl.len(), 1);
    assert_eq!(message_of(&dl[0]), "lost?");
    assert!(dl[0].body.attributes["ErrorMessage"]
        .string_value
        .as_deref()
        .unwrap()
        .contains("gone"));
}

#[test]
fn fifo_topics_deduplicate_and_keep_group_order_in_fifo_queues() {
    let mut w = World::new();
    w.topic("t.fifo", &[("FifoTopic", "true")]);
    w.fifo_queue("a.fifo");
    w.fifo_queue("b.fifo");
    w.subscribe("t.fifo", Protocol::Sqs, "a.fifo", &[]);
    w.subscribe("t.fifo", Protocol::Sqs, "b.fifo", &[]);
    // Without a dedup id and without content-based dedup: refused.
    let e = w.publish_fifo("t.fifo", "x", "g", "").unwrap_err();
    assert_eq!(e.field.as_deref(), Some("message_deduplication_id"));
    let first = w.publish_fifo("t.fifo", "1", "g1", "d1").unwrap();
    w.publish_fifo("t.fifo", "2", "g2", "d2").unwrap();
    w.publish_fifo("t.fifo", "3", "g1", "d3").unwrap();
    let again = w.publish_fifo("t.fifo", "1", "g1", "d1").unwrap();
    assert_eq!(
        again, first,
        "a duplicate returns the first publish's result"
    );
    assert!(first.sequence_number.is_some());
    for q in ["a.fifo", "b.fifo"] {
        let got: Vec<String> = w.drain(q).iter().map(message_of).collect();
        assert_eq!(got.len(), 3, "{q}: {got:?}");
        let pos = |m: &str| got.iter().position(|x| x == m).unwrap();
        assert!(pos("1") < pos("3"), "{q}: group g1 in order: {got:?}");
    }
    // After the window the id is forgotten.
    w.advance(301);
    w.run(crate::topics::TopicTick {
        topic: "t.fifo".into(),
    })
    .unwrap();
    let later = w.publish_fifo("t.fifo", "1", "g1", "d1").unwrap();
    assert_ne!(later, first);
    // FIFO queues take only FIFO topics; FIFO topics deliver only to queues.
    w.topic("std", &[]);
    for (topic, protocol, endpoint) in [
        ("std", Protocol::Sqs, "a.fifo"),
        ("t.fifo", Protocol::Lambda, "f"),
        ("t.fifo", Protocol::Https, "https://example.com/"),
    ] {
        let e = w
            .run(Subscribe {
                topic: topic.into(),
                protocol,
                endpoint: endpoint.into(),
                attributes: BTreeMap::new(),
                id: "x".into(),
                token: "y".into(),
            })
            .unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{topic} {endpoint}");
        assert_eq!(e.code, "InvalidParameter", "{topic} {endpoint}");
    }
}

#[test]
fn a_fifo_topic_delivers_to_standard_queues_without_group_or_dedup_ids() {
    let mut w = World::new();
    w.topic("t.fifo", &[("FifoTopic", "true")]);
    w.queue("plain");
    w.fifo_queue("ordered.fifo");
    // SNS FIFO topics deliver to standard queues too (best-effort order,
    // at least once), raw or in the envelope.
    w.subscribe("t.fifo", Protocol::Sqs, "plain", &[]);
    w.subscribe(
        "t.fifo",
        Protocol::Sqs,
        "arn:aws:sqs:us-east-1:000000000000:ordered.fifo",
        &[("RawMessageDelivery", "true")],
    );
    let first = w.publish_fifo("t.fifo", "1", "g", "d1").unwrap();
    w.publish_fifo("t.fifo", "2", "g", "d2").unwrap();
    // The topic deduplicates before fan-out: no second copy anywhere.
    w.publish_fifo("t.fifo", "1", "g", "d1").unwrap();
    let plain = w.drain("plain");
    let got: Vec<String> = plain.iter().map(message_of).collect();
    assert_eq!(got.len(), 2, "{got:?}");
    assert!(got.contains(&"1".to_string()) && got.contains(&"2".to_string()));
    // A standard queue's copy carries no FIFO ids of its own.
    assert!(plain
        .iter()
        .all(|r| r.head.group_id.is_none() && r.body.dedup_id.is_none()));
    let env: serde_json::Value =
        serde_json::from_str(plain[0].body.body.inline().unwrap()).unwrap();
    assert_eq!(env["TopicArn"], format!("{ARN}t.fifo"));
    assert!(env["SequenceNumber"].is_string());
    // The FIFO queue still gets the group and deduplication ids, in order.
    let ordered = w.drain("ordered.fifo");
    let bodies: Vec<&str> = ordered
        .iter()
        .map(|r| r.body.body.inline().unwrap())
        .collect();
    assert_eq!(bodies, ["1", "2"]);
    assert_eq!(ordered[0].head.group_id.as_deref(), Some("g"));
    assert_eq!(ordered[0].body.dedup_id.as_deref(), Some("d1"));
    assert!(first.sequence_number.is_some());
}

#[test]
fn http_subscriptions_wait_for_confirmation() {
    let mut w = World::new();
    w.topic("t", &[]);
    let s = w.subscribe("t", Protocol::Http, "http://127.0.0.1:9/hook", &[]);
    assert!(s.pending);
    let due = w.due();
    assert_eq!(due.len(), 1);
    let Kind::Confirmation { token } = &due[0].entry.kind else {
        panic!("{:?}", due[0].entry.kind)
    };
    // Nothing is delivered before the confirmation.
    w.publish("t", "early", &[]);
    assert_eq!(w.due().len(), 1);
    // Subscribing again sends the request again, with the same token.
    let again = w.subscribe("t", Protocol::Http, "http://127.0.0.1:9/hook", &[]);
    assert_eq!(again.id, s.id);
    let due2 = w.due();
    assert_eq!(due2.len(), 2);
    assert_eq!(due2[1].entry.kind, due[0].entry.kind);
    w.settle("t", vec![(due2[1].seq, Outcome::Delivered)]);
    let e = w
        .run(crate::topics::ConfirmSubscription {
            topic: "t".into(),
            token: "wrong".into(),
        })
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("token"));
    w.run(crate::topics::ConfirmSubscription {
        topic: "t".into(),
        token: token.clone(),
    })
    .unwrap();
    let seq = due[0].seq;
    w.settle("t", vec![(seq, Outcome::Delivered)]);
    w.publish("t", "late", &[]);
    let due = w.due();
    assert_eq!(due.len(), 1);
    let Kind::Notification { body, .. } = &due[0].entry.kind else {
        panic!()
    };
    assert!(body.contains("late"));
    assert!(w.effects.contains(&Effect::OutboxReady));
}

#[test]
fn failed_deliveries_are_retried_per_policy_then_dead_lettered() {
    let mut w = World::new();
    w.topic("t", &[]);
    w.queue("dlq");
    let policy =
        r#"{"healthyRetryPolicy": {"minDelayTarget": 2, "maxDelayTarget": 2, "numRetries": 2}}"#;
    let s = w.subscribe(
        "t",
        Protocol::Http,
        "http://127.0.0.1:9/x",
        &[
            ("DeliveryPolicy", policy),
            (
                "RedrivePolicy",
                r#"{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:dlq"}"#,
            ),
        ],
    );
    let token = match &w.due()[0].entry.kind {
        Kind::Confirmation { token } => token.clone(),
        _ => panic!(),
    };
    let seq = w.due()[0].seq;
    w.run(crate::topics::ConfirmSubscription {
        topic: "t".into(),
        token,
    })
    .unwrap();
    w.settle("t", vec![(seq, Outcome::Delivered)]);
    w.publish("t", "doomed", &[]);
    for attempt in 1..=3 {
        let due = w.due();
        assert_eq!(due.len(), 1, "attempt {attempt}");
        assert_eq!(due[0].entry.attempts, attempt - 1);
        let settled = w.settle("t", vec![(due[0].seq, Outcome::Failed("HTTP 500".into()))]);
        if attempt < 3 {
            assert_eq!(settled.retried, 1);
            // Not due again before the delay.
            assert!(w.due().is_empty());
            w.advance(2);
        } else {
            assert_eq!(settled.dead_lettered, 1);
        }
    }
    assert!(w.due().is_empty());
    let dl = w.drain("dlq");
    assert_eq!(dl.len(), 1);
    assert_eq!(message_of(&dl[0]), "doomed");
    assert_eq!(
        dl[0].body.attributes["DeliveryAttempts"]
            .string_value
            .as_deref(),
        Some("3")
    );
    assert_eq!(
        dl[0].body.attributes["SubscriptionId"]
            .string_value
            .as_deref(),
        Some(s.id.as_str())
    );
    // A repeated settle of the same entry changes nothing.
    let again = w.settle("t", vec![(1, Outcome::Delivered)]);
    assert_eq!(again, outbox::Settled::default());
}

#[test]
fn subscribing_twice_returns_the_same_subscription_and_unsubscribe_stops_delivery() {
    let mut w = World::new();
    w.topic("t", &[]);
    w.queue("q");
    let a = w.subscribe("t", Protocol::Sqs, "q", &[]);
    let b = w.subscribe(
        "t",
        Protocol::Sqs,
        "arn:aws:sqs:us-east-1:000000000000:q",
        &[],
    );
    assert_eq!(a.id, b.id);
    let (_, counts) = w.ask(crate::topics::GetTopic { name: "t".into() }).unwrap();
    assert_eq!(counts.confirmed, 1);
    w.run(crate::topics::Unsubscribe {
        topic: "t".into(),
        id: a.id.clone(),
    })
    .unwrap();
    w.publish("t", "after", &[]);
    assert!(w.drain("q").is_empty());
}

#[test]
fn bad_subscription_attributes_change_nothing() {
    let mut w = World::new();
    w.topic("t", &[]);
    let e = w
        .run(Subscribe {
            topic: "t".into(),
            protocol: Protocol::Sqs,
            endpoint: "q".into(),
            attributes: map(&[("FilterPolicy", r#"{"a": [{"nope": 1}]}"#)]),
            id: "x".into(),
            token: String::new(),
        })
        .unwrap_err();
    assert_eq!(e.field.as_deref(), Some("attributes.FilterPolicy"));
    assert!(e.message.contains("nope"), "{}", e.message);
    let (subs, _) = w
        .ask(crate::topics::ListSubscriptions {
            topic: Some("t".into()),
            after: None,
            limit: 100,
        })
        .unwrap();
    assert!(subs.is_empty());
}

#[test]
fn deleting_a_topic_collects_its_subscriptions_and_outbox() {
    let mut w = World::new();
    w.topic("t", &[]);
    w.subscribe("t", Protocol::Http, "http://127.0.0.1:9/x", &[]);
    let (t, _) = w.ask(crate::topics::GetTopic { name: "t".into() }).unwrap();
    w.run(crate::topics::DeleteTopic { name: "t".into() })
        .unwrap();
    assert!(w.due().is_empty());
    assert!(w.run(crate::topics::CollectTopic { tid: t.id }).unwrap());
    use crate::store::StateRead;
    for space in ["tsub/", "tout/", "tdue/", "tdedup/", "tdedupx/", "tgc/"] {
        assert!(
            w.state
                .first_with_prefix(space.as_bytes())
                .unwrap()
                .is_none(),
            "{space} left behind"
        );
    }
}

#[test]
fn collecting_a_large_topic_takes_bounded_steps() {
    let mut w = World::new();
    w.topic("big.fifo", &[("FifoTopic", "true")]);
    for n in 0..1500 {
        w.publish_fifo("big.fifo", &format!("m{n}"), "g", &format!("d{n}"))
            .unwrap();
    }
    let (t, _) = w
        .ask(crate::topics::GetTopic {
            name: "big.fifo".into(),
        })
        .unwrap();
    w.run(crate::topics::DeleteTopic {
        name: "big.fifo".into(),
    })
    .unwrap();
    // 3 000 dedup keys: more than one step's worth.
    let mut steps = 0;
    while !w.run(crate::topics::CollectTopic { tid: t.id }).unwrap() {
        steps += 1;
        assert!(steps < 10, "collection does not finish");
    }
    assert!(steps >= 2, "{steps} steps");
    use crate::store::StateRead;
    assert!(w.state.first_with_prefix(b"tdedup").unwrap().is_none());
}

#[test]
fn a_result_for_a_deleted_topic_does_not_settle_its_successor() {
    let mut w = World::new();
    w.topic("t", &[]);
    w.subscribe("t", Protocol::Http, "http://127.0.0.1:9/a", &[]);
    let old = w.due()[0].clone();
    w.run(crate::topics::DeleteTopic { name: "t".into() })
        .unwrap();
    w.topic("t", &[]);
    w.subscribe("t", Protocol::Http, "http://127.0.0.1:9/b", &[]);
    let new = w.due();
    assert_eq!(new.len(), 1);
    assert_eq!(new[0].seq, old.seq, "entry numbers restart with the topic");
    let stale = w
        .run(crate::topics::SettleDeliveries {
            topic: "t".into(),
            topic_id: old.topic_id,
            results: vec![(old.seq, Outcome::Delivered)],
        })
        .unwrap();
    assert_eq!(stale, outbox::Settled::default());
    assert_eq!(w.due().len(), 1, "the new topic's entry is still due");
}

#[test]
fn a_publish_too_large_for_its_fan_out_is_refused_alone() {
    let mut w = World::new();
    w.topic("t", &[]);
    for n in 0..300 {
        let q = format!("q{n}");
        w.queue(&q);
        w.subscribe("t", Protocol::Sqs, &q, &[]);
    }
    let big = PublishInput {
        message: "x".repeat(200_000),
        ..Default::default()
    };
    let e = w.publish_with("t", big).unwrap_err();
    assert_eq!(e.code, "FanOutLimitExceeded");
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert!(w.drain("q0").is_empty(), "nothing was delivered");
    // A small message still goes everywhere.
    w.publish("t", "small", &[]);
    assert_eq!(w.drain("q299").len(), 1);
}

#[test]
fn subscription_pages_cover_every_topic_once() {
    let mut w = World::new();
    let mut expected = Vec::new();
    for (t, n) in [("a", 3), ("b", 0), ("c", 2), ("d", 1)] {
        w.topic(t, &[]);
        for i in 0..n {
            let q = format!("{t}{i}");
            w.queue(&q);
            let s = w.subscribe(t, Protocol::Sqs, &q, &[]);
            expected.push((t.to_string(), s.id));
        }
    }
    expected.sort();
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let (page, next) = w
            .ask(crate::topics::ListSubscriptions {
                topic: None,
                after: after.clone(),
                limit: 2,
            })
            .unwrap();
        assert!(page.len() <= 2);
        seen.extend(page.into_iter().map(|(t, s)| (t.name, s.id)));
        match next {
            Some(n) => after = Some(n),
            None => break,
        }
    }
    assert_eq!(seen, expected);
}

#[test]
fn topic_refusals_carry_the_sns_code_invalid_parameter() {
    // SNS answers a bad parameter with InvalidParameter; SQS's code is
    // InvalidParameterValue.
    let sns = |e: crate::error::DomainError, field: &str| {
        assert_eq!(e.kind, ErrorKind::InvalidArgument, "{e:?}");
        assert_eq!(e.code, "InvalidParameter", "{e:?}");
        assert_eq!(e.field.as_deref(), Some(field), "{e:?}");
    };
    // Topic names, however they arrive.
    for bad in ["has space", "", ".fifo", "dot.ted", &"t".repeat(257)] {
        let e = crate::topics::validate_name("topic_arn", bad).unwrap_err();
        assert!(
            e.message.starts_with("topic_arn: must be 1-256 characters"),
            "{}",
            e.message
        );
        sns(e, "topic_arn");
        sns(
            CreateTopic::new(bad, BTreeMap::new(), BTreeMap::new()).unwrap_err(),
            "name",
        );
    }
    // Publish parameters.
    let publish = |fifo: bool, edit: &dyn Fn(&mut PublishInput)| {
        let mut p = PublishInput {
            message: "m".into(),
            ..Default::default()
        };
        if fifo {
            p.group_id = "g".into();
        }
        edit(&mut p);
        Publication::validate("entries[1]", fifo, p).unwrap_err()
    };
    for (fifo, field, edit) in [
        (
            false,
            "entries[1].message",
            &(|p: &mut PublishInput| p.message.clear()) as &dyn Fn(&mut PublishInput),
        ),
        (false, "entries[1].message", &|p| p.message = "\u{0}".into()),
        (false, "entries[1].message", &|p| {
            p.message = "x".repeat(262_145)
        }),
        (false, "entries[1].message", &|p| {
            p.structure = "json".into()
        }),
        (false, "entries[1].message_structure", &|p| {
            p.structure = "xml".into()
        }),
        (false, "entries[1].subject", &|p| p.subject = "a\nb".into()),
        (false, "entries[1].message_group_id", &|p| {
            p.group_id = "g".into()
        }),
        (true, "entries[1].message_group_id", &|p| {
            p.group_id = "x".repeat(129)
        }),
        (true, "entries[1].message_deduplication_id", &|p| {
            p.dedup_id = "é".into()
        }),
    ] {
        sns(publish(fifo, edit), field);
    }
    // Subscription endpoints and dead-letter queues.
    use crate::topics::subscription::{normalize_endpoint, Settings};
    for (protocol, endpoint) in [
        (Protocol::Sqs, "bad name"),
        (Protocol::Lambda, "arn:aws:s3:::bucket"),
        (Protocol::Https, "ftp://example.com/"),
    ] {
        sns(
            normalize_endpoint(protocol, endpoint).unwrap_err(),
            "endpoint",
        );
    }
    let dlq = r#"{"deadLetterTargetArn": "arn:aws:sqs:us-east-1:000000000000:bad name"}"#;
    sns(
        Settings::parse(Protocol::Sqs, &map(&[("RedrivePolicy", dlq)])).unwrap_err(),
        "attributes.RedrivePolicy.deadLetterTargetArn",
    );
    // Tags, at creation and on a topic that exists.
    let reserved = map(&[("aws:owner", "x")]);
    sns(
        CreateTopic::new("t", BTreeMap::new(), reserved.clone()).unwrap_err(),
        "tags",
    );
    let mut w = World::new();
    w.topic("t", &[]);
    let e = w
        .run(crate::tags::Tag {
            resource: crate::tags::Tagged::Topic("t".into()),
            change: crate::tags::Change::Add(reserved),
        })
        .unwrap_err();
    sns(e, "tags");
    // Queues keep SQS's code, and a function's destination Lambda's.
    assert_eq!(
        crate::queues::validate_name("queue_name", "bad name")
            .unwrap_err()
            .code,
        "InvalidParameterValue"
    );
    let e = crate::functions::events::Destination::parse(
        "destination",
        "arn:aws:sns:us-east-1:000000000000:bad name",
    )
    .unwrap_err();
    assert_eq!(e.code, "InvalidParameterValue");
}
