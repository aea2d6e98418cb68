//! The topic workload: publishers publish unique bodies with attributes to
//! a topic whose three queue subscriptions filter differently (raw
//! delivery, so a queue message's body is the published body); consumers
//! receive and delete from the queues. After the faults heal, the queues
//! are drained.

use std::collections::HashMap;

use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Error};
use tokio::time::Instant;

use super::queue::start_consumers;
use super::{join_all, pause_unless_ok, Ctx, Pace, Process};
use crate::chaos::history::{Call, Reply};

/// Publishers.
const PUBLISHERS: usize = 2;
/// Publishes per second of each publisher.
const RATE: u64 = 40;
/// Consumers.
const CONSUMERS: usize = 3;
/// The topic.
pub const TOPIC: &str = "chaos-topic";

/// A subscribed queue, its filter policy, and the same rule in Rust for the
/// checker.
pub struct Route {
    pub queue: &'static str,
    pub filter: Option<&'static str>,
    pub matches: fn(u64) -> bool,
}

/// The parity attribute of publish `n`.
pub fn parity(n: u64) -> &'static str {
    if n.is_multiple_of(2) {
        "even"
    } else {
        "odd"
    }
}

/// The bucket attribute of publish `n`.
pub fn bucket(n: u64) -> u64 {
    n % 100
}

/// The subscriptions of the workload.
pub fn routes() -> Vec<Route> {
    vec![
        Route {
            queue: "chaos-t-all",
            filter: None,
            matches: |_| true,
        },
        Route {
            queue: "chaos-t-even",
            filter: Some(r#"{"parity": ["even"]}"#),
            matches: |n| parity(n) == "even",
        },
        Route {
            queue: "chaos-t-high",
            filter: Some(
                r#"{"bucket": [{"numeric": [">=", 70]}], "parity": [{"anything-but": "even"}]}"#,
            ),
            matches: |n| bucket(n) >= 70 && parity(n) != "even",
        },
    ]
}

/// The number in a body `t{publisher}-{n}`.
pub fn number_of(body: &str) -> Option<u64> {
    body.rsplit_once('-')?.1.parse().ok()
}

/// Creates the topic, the queues and the subscriptions.
pub async fn setup(admin: &Client) -> Result<Vec<String>, String> {
    let e = |e: Error| e.to_string();
    let topic = admin.create_topic(TOPIC, HashMap::new()).await.map_err(e)?;
    let mut queues = Vec::new();
    for r in routes() {
        admin
            .create_queue(r.queue, HashMap::new())
            .await
            .map_err(e)?;
        let mut attrs = HashMap::from([("RawMessageDelivery".to_string(), "true".to_string())]);
        if let Some(f) = r.filter {
            attrs.insert("FilterPolicy".into(), f.into());
        }
        admin
            .subscribe(&topic, "sqs", r.queue, attrs)
            .await
            .map_err(e)?;
        queues.push(r.queue.to_string());
    }
    Ok(queues)
}

/// Publishers and consumers until `until`.
pub async fn run(ctx: &Ctx, queues: &[String], until: Instant) {
    let mut tasks = Vec::new();
    for w in 0..PUBLISHERS {
        let ctx = ctx.clone();
        tasks.push(tokio::spawn(async move { publish(&ctx, w, until).await }));
    }
    let consumers = start_consumers(ctx, CONSUMERS, queues, until, false);
    join_all(tasks).await;
    join_all(consumers).await;
}

async fn publish(ctx: &Ctx, w: usize, until: Instant) {
    let client = ctx.client(w);
    let mut p = Process::new(ctx);
    let mut pace = Pace::new(RATE, until);
    let attr = |t: &str, v: String| pb::MessageAttributeValue {
        data_type: t.into(),
        string_value: v,
        binary_value: Vec::new(),
    };
    while let Some(n) = pace.next().await {
        let body = format!("t{w}-{n}");
        let attributes = HashMap::from([
            ("parity".to_string(), attr("String", parity(n).into())),
            ("bucket".to_string(), attr("Number", bucket(n).to_string())),
        ]);
        let call = Call::Publish {
            topic: TOPIC.into(),
            body: body.clone(),
        };
        let outcome = p
            .perform(ctx, call, || async {
                client
                    .publish(pb::PublishRequest {
                        topic_arn: TOPIC.into(),
                        message: body.clone(),
                        message_attributes: attributes,
                        ..Default::default()
                    })
                    .await
                    .map(|r| Reply::Sent {
                        message_id: r.message_id,
                    })
            })
            .await;
        pause_unless_ok(&outcome).await;
    }
}
