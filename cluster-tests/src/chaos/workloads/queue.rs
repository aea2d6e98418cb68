//! The queue workload: producers send unique bodies to a standard queue
//! (with a dead-letter queue) and to a FIFO queue (one producer per message
//! group, retrying a send of unknown outcome with the same deduplication
//! id); consumers receive and delete, sometimes leaving a message to come
//! back. After the faults heal, every queue is drained.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, ConsumerOptions, Error, MessageSender};
use tokio::time::Instant;

use super::{
    classify, join_all, pause_unless_ok, streamed, Ctx, Pace, Process, Via, FAILURE_PAUSE,
};
use crate::chaos::history::{Call, Delivery, Outcome, Reply};
use crate::chaos::nemesis::Rng;

/// Receives before a message moves to the dead-letter queue.
pub const MAX_RECEIVES: u32 = 5;
/// Visibility timeout of both queues, seconds: short, so that a message a
/// consumer leaves comes back within the run.
pub const VISIBILITY_S: i32 = 3;
/// Standard-queue producers.
const STANDARD_PRODUCERS: usize = 2;
/// FIFO message groups, one producer each.
const GROUPS: usize = 4;
/// Consumers.
const CONSUMERS: usize = 3;
/// One in this many received messages is left undeleted.
const LEAVE_ONE_IN: u64 = 10;
/// Sends per second of each standard producer, and of each FIFO group:
/// enough to keep every node busy, few enough for the consumers to keep
/// the queues short, so that the drain after the faults ends.
const STANDARD_RATE: u64 = 50;
/// Sends a second to the backlog queue, which is only drained at the end.
const BACKLOG_RATE: u64 = 20;
/// The backlog's bodies are padded with dots to this length on the wire
/// (the padding is checked and stripped on receipt, never recorded): most
/// of the log is then live queued bodies, so the nodes keep log segments
/// past their purges for them (`raft::kept_bodies`) under the faults.
pub const BACKLOG_BODY_BYTES: usize = 16 * 1024;
/// Messages sent to the backlog at most (47 MiB of bodies): a long run
/// then fits the nodes' small disks (`nodes::SMALL_DISK_MB`) with the
/// disk-full nemesis's filler, the log's live segments and a node's copy
/// of the backlog installed from a snapshot; the short runs never reach it.
const BACKLOG_MAX: u64 = 3_000;
const FIFO_RATE: u64 = 20;

/// The queues of the workload.
#[derive(Debug, Clone)]
pub struct QueueWorkload {
    pub standard: String,
    pub dlq: String,
    pub fifo: String,
    /// A standard queue nobody receives from until the drain.
    pub backlog: String,
}

impl QueueWorkload {
    /// Creates the queues (through `admin`, which retries).
    pub async fn setup(admin: &Client) -> Result<QueueWorkload, String> {
        let w = QueueWorkload {
            standard: "chaos".into(),
            dlq: "chaos-dlq".into(),
            fifo: "chaos.fifo".into(),
            backlog: "chaos-backlog".into(),
        };
        let status = admin
            .cluster_status(false)
            .await
            .map_err(|e| e.to_string())?;
        let dlq_arn = format!(
            "arn:aws:sqs:{}:{}:{}",
            status.region, status.account_id, w.dlq
        );
        let e = |e: Error| e.to_string();
        admin
            .create_queue(&w.dlq, HashMap::new())
            .await
            .map_err(e)?;
        let visibility = VISIBILITY_S.to_string();
        admin
            .create_queue(
                &w.standard,
                HashMap::from([
                    ("VisibilityTimeout".to_string(), visibility.clone()),
                    (
                        "RedrivePolicy".to_string(),
                        format!(
                            r#"{{"deadLetterTargetArn":"{dlq_arn}","maxReceiveCount":"{MAX_RECEIVES}"}}"#
                        ),
                    ),
                ]),
            )
            .await
            .map_err(e)?;
        admin
            .create_queue(&w.backlog, HashMap::new())
            .await
            .map_err(e)?;
        admin
            .create_queue(
                &w.fifo,
                HashMap::from([
                    ("FifoQueue".to_string(), "true".to_string()),
                    ("VisibilityTimeout".to_string(), visibility),
                ]),
            )
            .await
            .map_err(e)?;
        Ok(w)
    }

    /// The FIFO queues, for the checker.
    pub fn fifo_queues(&self) -> BTreeSet<String> {
        [self.fifo.clone()].into()
    }

    /// Every queue.
    pub fn queues(&self) -> Vec<String> {
        let mut all = self.consumed();
        all.push(self.backlog.clone());
        all
    }

    /// The queues consumed while the workload runs.
    fn consumed(&self) -> Vec<String> {
        vec![self.standard.clone(), self.dlq.clone(), self.fifo.clone()]
    }

    /// Producers and consumers until `until`.
    pub async fn run(&self, ctx: &Ctx, until: Instant) {
        let mut tasks = Vec::new();
        for w in 0..STANDARD_PRODUCERS {
            let (ctx, queue) = (ctx.clone(), self.standard.clone());
            tasks.push(tokio::spawn(async move {
                produce_standard(&ctx, w, &queue, until).await
            }));
        }
        for g in 0..GROUPS {
            let (ctx, queue) = (ctx.clone(), self.fifo.clone());
            tasks.push(tokio::spawn(async move {
                produce_fifo(&ctx, g, &queue, until).await
            }));
        }
        {
            let (ctx, queue) = (ctx.clone(), self.backlog.clone());
            tasks.push(tokio::spawn(async move {
                produce_backlog(&ctx, &queue, until).await
            }));
        }
        let mut consumers = start_consumers(ctx, CONSUMERS, &self.consumed(), until, true);
        // Push consumers (ReceiveMessageStream) beside them, one per queue.
        for queue in self.consumed() {
            let ctx = ctx.clone();
            consumers.push(tokio::spawn(async move {
                consume_pushed(&ctx, CONSUMERS, &queue, until).await
            }));
        }
        join_all(tasks).await;
        join_all(consumers).await;
    }

    /// Receives and deletes from every queue until all are empty (none
    /// visible, in flight or delayed, and receives find nothing) three
    /// rounds running, or `limit` passes.
    pub async fn drain(&self, ctx: &Ctx, admin: &Client, limit: Duration) -> Result<(), String> {
        drain_queues(ctx, admin, &self.queues(), limit).await
    }
}

/// Receives and deletes from `queues` until all are empty (none visible,
/// in flight or delayed, and receives find nothing) three rounds running,
/// or `limit` passes.
pub async fn drain_queues(
    ctx: &Ctx,
    admin: &Client,
    queues: &[String],
    limit: Duration,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    let mut empty_rounds = 0;
    while empty_rounds < 3 {
        if Instant::now() > deadline {
            return Err(format!("queues not empty after {limit:?} of draining"));
        }
        let passes = start_consumers(ctx, CONSUMERS, queues, Instant::now(), false);
        let mut got = 0;
        for pass in passes {
            got += pass.await.unwrap_or(0);
        }
        let mut left = 0u64;
        for q in queues {
            let attrs = admin
                .get_queue_attributes(
                    q,
                    &[
                        "ApproximateNumberOfMessages",
                        "ApproximateNumberOfMessagesNotVisible",
                        "ApproximateNumberOfMessagesDelayed",
                    ],
                )
                .await
                .map_err(|e| e.to_string())?;
            left += attrs
                .values()
                .map(|v| v.parse::<u64>().unwrap_or(0))
                .sum::<u64>();
        }
        if got == 0 && left == 0 {
            empty_rounds += 1;
        } else {
            empty_rounds = 0;
        }
    }
    Ok(())
}

async fn produce_standard(ctx: &Ctx, w: usize, queue: &str, until: Instant) {
    // The first producer streams (SendMessageStream), the other calls.
    let via = Via::new(ctx.client(w), queue, w == 0);
    let mut p = Process::new(ctx);
    let mut pace = Pace::new(STANDARD_RATE, until);
    while let Some(n) = pace.next().await {
        let body = format!("s{w}-{n}");
        let outcome = send(ctx, &mut p, &via, queue, &body, None, 0).await;
        pause_unless_ok(&outcome).await;
    }
}

async fn produce_backlog(ctx: &Ctx, queue: &str, until: Instant) {
    let via = Via::Unary(ctx.client(STANDARD_PRODUCERS));
    let mut p = Process::new(ctx);
    let mut pace = Pace::new(BACKLOG_RATE, until);
    while let Some(n) = pace.next().await {
        if n >= BACKLOG_MAX {
            break;
        }
        let body = format!("b-{n}");
        let outcome = send(ctx, &mut p, &via, queue, &body, None, BACKLOG_BODY_BYTES).await;
        pause_unless_ok(&outcome).await;
    }
}

/// `body` padded with dots to `pad_to` bytes (as it is when `pad_to` is
/// shorter).
fn padded(body: &str, pad_to: usize) -> String {
    format!("{body}{}", ".".repeat(pad_to.saturating_sub(body.len())))
}

/// A received body less the padding [`padded`] gave it: only a body of
/// exactly [`BACKLOG_BODY_BYTES`] ending in dots was padded, so a body
/// damaged in any byte still differs from every body sent.
fn unpadded(body: String) -> String {
    if body.len() != BACKLOG_BODY_BYTES || !body.ends_with('.') {
        return body;
    }
    body.trim_end_matches('.').to_string()
}

/// Sends `body` (in FIFO `group`, deduplicated by the body itself), with
/// a unary call or over the producer's streaming call.
pub(crate) async fn send(
    ctx: &Ctx,
    p: &mut Process,
    via: &Via<'_, MessageSender>,
    queue: &str,
    body: &str,
    group: Option<&str>,
    pad_to: usize,
) -> Outcome {
    let call = Call::Send {
        queue: queue.into(),
        body: body.into(),
        group: group.map(str::to_string),
    };
    let request = pb::SendMessageRequest {
        queue_name: queue.into(),
        message_body: padded(body, pad_to),
        message_group_id: group.unwrap_or_default().into(),
        message_deduplication_id: if group.is_some() {
            body.into()
        } else {
            String::new()
        },
        ..Default::default()
    };
    p.perform(ctx, call, || async {
        match via {
            Via::Unary(client) => client.send_message(request).await,
            Via::Stream(sender) => streamed(sender.send(request)).await,
        }
        .map(|r| Reply::Sent {
            message_id: r.message_id,
        })
    })
    .await
}

/// One producer per group: each body in turn, retried with the same
/// deduplication id while its outcome is unknown.
async fn produce_fifo(ctx: &Ctx, g: usize, queue: &str, until: Instant) {
    // Every other group streams (its order kept by the call).
    let via = Via::new(ctx.client(g), queue, g.is_multiple_of(2));
    let mut p = Process::new(ctx);
    let group = format!("g{g}");
    let mut pace = Pace::new(FIFO_RATE, until);
    while let Some(n) = pace.next().await {
        let body = format!("g{g}-{n}");
        loop {
            let outcome = send(ctx, &mut p, &via, queue, &body, Some(&group), 0).await;
            match outcome {
                Outcome::Ok { .. } | Outcome::Fail { .. } => break,
                Outcome::Unknown { .. } => {
                    if Instant::now() >= until {
                        return;
                    }
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
        }
    }
}

/// A received message as the history records it.
fn delivery(m: pb::Message) -> Delivery {
    Delivery {
        count: m
            .attributes
            .get("ApproximateReceiveCount")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
        body: unpadded(m.body),
        message_id: m.message_id,
        receipt: m.receipt_handle,
    }
}

/// How a push consumer gives back the credit of the message it holds.
enum Settle {
    /// Deletes it.
    Delete(Delivery),
    /// Leaves it to come back after its visibility timeout, and grants one
    /// more message.
    Leave,
}

/// A push consumer of `queue` (ReceiveMessageStream with a prefetch of one)
/// until `until`, opened again whenever its call breaks; deletes what it
/// gets but one in [`LEAVE_ONE_IN`]. Returns the messages received.
///
/// Each pushed message is recorded as a receive of one message whose
/// invocation is recorded *before* the credit for it is given (at the
/// call's opening, or before the previous message's delete or grant is
/// sent): with one credit, the node can receive a message only after that
/// point, so the recorded interval holds the real receive. The deletes are
/// a second process's operations, inside the receive's interval.
async fn consume_pushed(ctx: &Ctx, c: usize, queue: &str, until: Instant) -> u64 {
    let client = ctx.client(c + 1);
    let mut rng = Rng::new(ctx.seed ^ (0xB0 + c as u64));
    let mut received = 0u64;
    while Instant::now() < until {
        let receiver = Process::new(ctx);
        let mut deleter = Process::new(ctx);
        // The first receive's interval starts before the call opens.
        ctx.recorder.invoke(
            receiver.id,
            &Call::Receive {
                queue: queue.into(),
                max: 1,
            },
        );
        let options = ConsumerOptions {
            prefetch: 1,
            system_attributes: vec!["ApproximateReceiveCount".into()],
            ..Default::default()
        };
        let mut consumer = match client.consumer(queue, options).await {
            Ok(consumer) => consumer,
            Err(e) => {
                ctx.recorder.complete(receiver.id, classify(&e));
                tokio::time::sleep(FAILURE_PAUSE).await;
                continue;
            }
        };
        let mut settle: Option<Settle> = None;
        loop {
            let pushed = async {
                match settle.take() {
                    Some(Settle::Delete(m)) => {
                        let call = Call::Delete {
                            queue: queue.into(),
                            body: m.body.clone(),
                            receipt: m.receipt.clone(),
                            count: m.count,
                        };
                        let delete = consumer.delete(&m.receipt);
                        deleter
                            .perform(ctx, call, || async {
                                streamed(delete).await.map(|()| Reply::Done)
                            })
                            .await;
                    }
                    Some(Settle::Leave) => consumer.settler().grant(1),
                    None => {}
                }
                tokio::select! {
                    m = consumer.next() => m.map(|m| Reply::Received { messages: vec![delivery(m)] }),
                    _ = tokio::time::sleep_until(until) => Err(Error::from(tonic::Status::deadline_exceeded(
                        "the run ended while the consumer waited: a message may be on its way",
                    ))),
                }
            };
            let outcome = match pushed.await {
                Ok(reply) => Outcome::Ok { reply },
                Err(e) => classify(&e),
            };
            ctx.recorder.complete(receiver.id, outcome.clone());
            let Outcome::Ok {
                reply: Reply::Received { mut messages },
            } = outcome
            else {
                break;
            };
            received += 1;
            let m = messages.pop().expect("one message");
            settle = Some(if rng.next_u64().is_multiple_of(LEAVE_ONE_IN) {
                Settle::Leave
            } else {
                Settle::Delete(m)
            });
            // The next receive's interval starts before its credit is given.
            ctx.recorder.invoke(
                receiver.id,
                &Call::Receive {
                    queue: queue.into(),
                    max: 1,
                },
            );
        }
        if Instant::now() < until {
            tokio::time::sleep(FAILURE_PAUSE).await;
        }
    }
    received
}

/// Starts `consumers` consumers, each going through `queues` as
/// [`consume`] does; each task returns the messages its consumer received.
pub(super) fn start_consumers(
    ctx: &Ctx,
    consumers: usize,
    queues: &[String],
    until: Instant,
    leave_some: bool,
) -> Vec<tokio::task::JoinHandle<u64>> {
    (0..consumers)
        .map(|c| {
            let (ctx, queues) = (ctx.clone(), queues.to_vec());
            tokio::spawn(async move { consume(&ctx, c, &queues, until, leave_some).await })
        })
        .collect()
}

/// Receives from the queues in turn and deletes what it got (when
/// `leave_some`, one in [`LEAVE_ONE_IN`] stays, to come back). Runs until
/// `until`, or once through the queues when `until` has passed; returns
/// the messages received.
pub(super) async fn consume(
    ctx: &Ctx,
    c: usize,
    queues: &[String],
    until: Instant,
    leave_some: bool,
) -> u64 {
    let client = ctx.client(c + 1);
    let mut p = Process::new(ctx);
    let mut rng = Rng::new(ctx.seed ^ (0xC0 + c as u64));
    let mut received = 0u64;
    let mut first = true;
    while first || Instant::now() < until {
        first = false;
        let before = received;
        for queue in queues {
            let call = Call::Receive {
                queue: queue.clone(),
                max: 10,
            };
            let outcome = p
                .perform(ctx, call, || async {
                    client
                        .receive_message(pb::ReceiveMessageRequest {
                            queue_name: queue.clone(),
                            max_number_of_messages: 10,
                            wait_time_seconds: Some(0),
                            message_system_attribute_names: vec!["ApproximateReceiveCount".into()],
                            ..Default::default()
                        })
                        .await
                        .map(|r| Reply::Received {
                            messages: r.messages.into_iter().map(delivery).collect(),
                        })
                })
                .await;
            let messages = match outcome {
                Outcome::Ok {
                    reply: Reply::Received { messages },
                } => messages,
                _ => {
                    tokio::time::sleep(FAILURE_PAUSE).await;
                    continue;
                }
            };
            received += messages.len() as u64;
            for m in messages {
                if leave_some && rng.next_u64().is_multiple_of(LEAVE_ONE_IN) {
                    continue;
                }
                let call = Call::Delete {
                    queue: queue.clone(),
                    body: m.body.clone(),
                    receipt: m.receipt.clone(),
                    count: m.count,
                };
                p.perform(ctx, call, || async {
                    client
                        .delete_message(queue, &m.receipt)
                        .await
                        .map(|()| Reply::Done)
                })
                .await;
            }
        }
        if received == before && Instant::now() < until {
            // Every queue was empty: a consumer's pause before polling
            // again.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    received
}
