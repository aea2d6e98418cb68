//! The leader's deliverer: posts due topic outbox entries to HTTP/S
//! endpoints and settles their results through Raft.
//!
//! Every node runs this task; only the leader works. One loop reads the due
//! entries from the applied state, starts a post for each that is not in
//! flight, and commits the results as `SettleDeliveries` commands (batched
//! per topic) before it reads the state again, so an entry whose result is
//! committed is never posted twice by this node. When leadership moves, the
//! new leader finds the unsettled entries in the replicated outbox and posts
//! them: delivery is at least once.
//!
//! Fairness: each look takes at most [`PER_TOPIC`] entries from a topic, and
//! at most [`PER_SUBSCRIPTION`] posts to one subscription are in flight, so
//! an endpoint that hangs for the whole timeout slows only its own
//! deliveries. A function subscription's entry is delivered by committing
//! an asynchronous invocation of the function (the `aws:sns` event), as SNS
//! invokes Lambda; the function's own retry policy and destinations apply
//! from there.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::clock::now_ms;
use crate::command::Command;
use crate::identity::Identity;
use crate::outbound::Destinations;
use crate::router::Router;
use crate::topics::envelope;
use crate::topics::outbox::{self, Due, Kind, Outcome};
use crate::topics::subscription::Protocol;
use crate::waiters::Waiters;

/// How often the leader looks for due entries without a wake-up.
pub const INTERVAL: Duration = Duration::from_millis(250);
/// How long one post may take (SNS waits 15 seconds).
pub const POST_TIMEOUT: Duration = Duration::from_secs(15);
/// Posts in flight at once.
const CONCURRENCY: usize = 64;
/// Entries read per look.
const BATCH: usize = 256;
/// Entries taken from one topic per look.
pub const PER_TOPIC: usize = 32;
/// Posts to one subscription in flight at once.
pub const PER_SUBSCRIPTION: usize = 16;

/// Starts the deliverer.
pub fn spawn(
    router: Router,
    identity: Identity,
    base_url: String,
    destinations: Arc<Destinations>,
    waiters: Arc<Waiters>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let client = match reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            // Names resolve only to allowed addresses (SSRF).
            .dns_resolver(destinations.resolver())
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("Amazon Simple Notification Service Agent (Sluice)")
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the HTTP client; topic deliveries to HTTP endpoints stop");
                return;
            }
        };
        let d = Deliverer {
            router,
            identity,
            base_url,
            destinations,
            client,
        };
        d.run(waiters).await;
    })
}

struct Deliverer {
    router: Router,
    identity: Identity,
    /// `http(s)://host:port` of this node's public port.
    base_url: String,
    /// Where deliveries may go.
    destinations: Arc<Destinations>,
    client: reqwest::Client,
}

/// A finished post: topic name and id, entry number, subscription, result.
type Done = (String, u64, u64, String, Outcome);

/// What is being posted: entries by (topic id, number), posts by
/// subscription.
#[derive(Default)]
struct InFlight {
    entries: HashSet<(u64, u64)>,
    by_subscription: HashMap<String, usize>,
}

impl Deliverer {
    async fn run(self, waiters: Arc<Waiters>) {
        let slots = Arc::new(Semaphore::new(CONCURRENCY));
        let mut in_flight = InFlight::default();
        let (tx, mut rx) = mpsc::unbounded_channel::<Done>();
        let wake = waiters.of(Waiters::OUTBOX);
        loop {
            let notified = wake.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let leads =
                self.router.raft().metrics().borrow().current_leader == Some(self.router.id());
            if leads {
                self.start_due(&slots, &mut in_flight, &tx);
            }
            tokio::select! {
                Some(first) = rx.recv() => {
                    let mut done = vec![first];
                    while let Ok(d) = rx.try_recv() {
                        done.push(d);
                    }
                    self.settle(done, &mut in_flight).await;
                }
                _ = &mut notified => {}
                _ = tokio::time::sleep(INTERVAL) => {}
            }
        }
    }

    fn start_due(
        &self,
        slots: &Arc<Semaphore>,
        in_flight: &mut InFlight,
        tx: &mpsc::UnboundedSender<Done>,
    ) {
        let busy = &in_flight.entries;
        let due = match self.router.state().read(|s| {
            outbox::due(s, now_ms(), PER_TOPIC, BATCH, &|tid, seq| {
                busy.contains(&(tid, seq))
            })
        }) {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the topic outboxes");
                return;
            }
        };
        for d in due {
            let sub = d.entry.subscription.clone();
            let posts = in_flight.by_subscription.entry(sub).or_default();
            if *posts >= PER_SUBSCRIPTION {
                continue;
            }
            let Ok(permit) = slots.clone().try_acquire_owned() else {
                break;
            };
            *posts += 1;
            in_flight.entries.insert((d.topic_id, d.seq));
            let tx = tx.clone();
            let post = self.post(d);
            tokio::spawn(async move {
                let done = post.await;
                drop(permit);
                let _ = tx.send(done);
            });
        }
    }

    /// The post of one entry, as a future that owns what it needs.
    fn post(&self, d: Due) -> impl std::future::Future<Output = Done> + Send + 'static {
        let client = self.client.clone();
        let topic_arn = self.identity.topic_arn(&d.topic);
        let base_url = self.base_url.clone();
        let destinations = self.destinations.clone();
        let router = self.router.clone();
        async move {
            let sub_id = d.entry.subscription.clone();
            let (topic, topic_id, seq) = (d.topic.clone(), d.topic_id, d.seq);
            let done = move |outcome| (topic, topic_id, seq, sub_id, outcome);
            let Some(sub) = &d.subscription else {
                return done(Outcome::Failed("the subscription is gone".into()));
            };
            let sub_arn = format!("{topic_arn}:{}", sub.id);
            if sub.protocol == Protocol::Lambda {
                let Kind::Notification {
                    message_id, body, ..
                } = &d.entry.kind
                else {
                    return done(Outcome::Failed(
                        "function subscriptions are not confirmed".into(),
                    ));
                };
                let payload = envelope::lambda_event(&sub_arn, message_id, &topic_arn, body);
                let enqueued = router
                    .write(Command::EnqueueEvent(crate::functions::EnqueueEvent {
                        name: sub.endpoint.clone(),
                        qualifier: String::new(),
                        request_id: uuid::Uuid::new_v4().to_string(),
                        payload: payload.into_bytes(),
                    }))
                    .await;
                let outcome = match enqueued {
                    Ok(Ok(_)) => Outcome::Delivered,
                    Ok(Err(rejected)) => Outcome::Failed(rejected.message),
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                metrics::counter!(
                    "sluice_topic_function_deliveries_total",
                    "result" => if outcome == Outcome::Delivered { "delivered" } else { "failed" }
                )
                .increment(1);
                return done(outcome);
            }
            let (kind, message_id, body, raw) = match &d.entry.kind {
                Kind::Notification {
                    message_id,
                    body,
                    raw,
                } => ("Notification", message_id.clone(), body.clone(), *raw),
                Kind::Confirmation { token } => {
                    let url = envelope::confirmation_url(&base_url, &topic_arn, token);
                    let id = uuid::Uuid::new_v4().to_string();
                    let body = envelope::confirmation(&id, &topic_arn, token, &url, now_ms());
                    ("SubscriptionConfirmation", id, body, false)
                }
            };
            if let Some(why) = destinations.refusal_of_url(&sub.endpoint) {
                return done(Outcome::Failed(why));
            }
            let content_type = d
                .policy
                .content_type
                .clone()
                .unwrap_or_else(|| "text/plain; charset=UTF-8".into());
            let mut req = client
                .post(&sub.endpoint)
                .header("x-amz-sns-message-type", kind)
                .header("x-amz-sns-message-id", &message_id)
                .header("x-amz-sns-topic-arn", &topic_arn)
                .header("content-type", content_type)
                .body(body);
            if kind == "Notification" {
                req = req.header("x-amz-sns-subscription-arn", &sub_arn);
            }
            if raw {
                req = req.header("x-amz-sns-rawdelivery", "true");
            }
            let outcome = match req.send().await {
                Ok(r) if r.status().is_success() => Outcome::Delivered,
                Ok(r) => Outcome::Failed(format!("HTTP {}", r.status().as_u16())),
                Err(e) => Outcome::Failed(error_text(&e)),
            };
            metrics::counter!(
                "sluice_topic_http_deliveries_total",
                "result" => if outcome == Outcome::Delivered { "delivered" } else { "failed" }
            )
            .increment(1);
            done(outcome)
        }
    }

    async fn settle(&self, done: Vec<Done>, in_flight: &mut InFlight) {
        let mut by_topic: BTreeMap<(String, u64), Vec<(u64, Outcome)>> = BTreeMap::new();
        let mut subs = Vec::new();
        for (topic, tid, seq, sub, outcome) in done {
            by_topic
                .entry((topic, tid))
                .or_default()
                .push((seq, outcome));
            subs.push(sub);
        }
        for ((topic, tid), results) in by_topic {
            let keys: Vec<u64> = results.iter().map(|(s, _)| *s).collect();
            match self
                .router
                .write(Command::SettleDeliveries(crate::topics::SettleDeliveries {
                    topic: topic.clone(),
                    topic_id: tid,
                    results,
                }))
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(rejected)) => {
                    tracing::debug!(topic, error = %rejected, "settle rejected (topic deleted?)")
                }
                // Not settled: the entries stay due, and the leader (this
                // node or the next) posts them again.
                Err(e) => tracing::debug!(topic, error = %e, "could not settle deliveries"),
            }
            for seq in keys {
                in_flight.entries.remove(&(tid, seq));
            }
        }
        for sub in subs {
            if let Some(n) = in_flight.by_subscription.get_mut(&sub) {
                *n -= 1;
                if *n == 0 {
                    in_flight.by_subscription.remove(&sub);
                }
            }
        }
    }
}

fn error_text(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}
