//! Sluice in the comparison: a queue (SendMessageStream; a push consumer,
//! ReceiveMessageStream, deleting each message on the same call), a stream
//! (PutRecordStream with random partition keys; SubscribeToShard on a
//! follower), or a topic (Publish) with queue subscriptions in raw
//! delivery, each consumed like the queue. With `--unary`: SendMessage,
//! ReceiveMessage of up to 10 with long polling then DeleteMessageBatch,
//! and PutRecord.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use cluster_tests::requests::put_data;
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, ConsumerOptions, MessageSender, RecordSender};

use super::{Broker, Shape, Sink};

/// A queue or stream on a Sluice cluster.
pub struct Sluice {
    /// Producers' and queue consumers' client (to the leader).
    client: Client,
    /// Stream subscribers' client (another node: reads are served locally).
    reader: Client,
    shape: Shape,
    name: String,
    shards: i32,
    next_key: AtomicU64,
    /// Queue sends over one SendMessageStream (None: a unary call each).
    sender: Option<MessageSender>,
    /// Stream puts over one PutRecordStream (None: a unary call each).
    putter: Option<RecordSender>,
    /// Queue consumers are pushed to over ReceiveMessageStream (else they
    /// receive and delete in unary calls).
    pushed: bool,
    /// The queues consumers read: the run's queue, or the topic's
    /// subscribed queues.
    queues: Vec<String>,
}

impl Sluice {
    /// Creates the run's queue, its stream of `shards` shards, or its topic
    /// with `subscriptions` subscribed queues. `streamed`: queue sends and
    /// stream puts go over one SendMessageStream or PutRecordStream instead
    /// of a unary call each.
    pub async fn setup(
        client: Client,
        reader: Client,
        shape: Shape,
        name: String,
        shards: i32,
        subscriptions: usize,
        streamed: bool,
    ) -> Result<Sluice, String> {
        let mut queues = vec![name.clone()];
        if shape.is_stream() {
            crate::streams::create(&client, &name, shards).await;
        } else if shape == Shape::TopicFanout {
            client
                .create_topic(&name, Default::default())
                .await
                .map_err(|e| format!("creating topic {name}: {e}"))?;
            queues = (0..subscriptions.max(1))
                .map(|i| format!("{name}-{i}"))
                .collect();
            for q in &queues {
                client
                    .create_queue(q, Default::default())
                    .await
                    .map_err(|e| format!("creating queue {q}: {e}"))?;
                client
                    .subscribe(
                        &name,
                        "sqs",
                        q,
                        [("RawMessageDelivery".to_string(), "true".to_string())].into(),
                    )
                    .await
                    .map_err(|e| format!("subscribing {q}: {e}"))?;
            }
        } else {
            client
                .create_queue(&name, Default::default())
                .await
                .map_err(|e| format!("creating queue {name}: {e}"))?;
        }
        let sender = (streamed && !shape.is_stream() && shape != Shape::TopicFanout)
            .then(|| client.message_sender(&name));
        let putter = (streamed && shape.is_stream()).then(|| client.record_sender(&name));
        Ok(Sluice {
            sender,
            putter,
            pushed: streamed,
            client,
            reader,
            shape,
            name,
            shards,
            next_key: AtomicU64::new(0),
            queues,
        })
    }
}

impl Broker for Sluice {
    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        if self.shape.is_stream() {
            let key = self.next_key.fetch_add(1, Ordering::Relaxed);
            match &self.putter {
                Some(putter) => putter
                    .send(pb::PutRecordRequest {
                        partition_key: format!("k{key}"),
                        data: body,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
                None => put_data(&self.client, &self.name, &format!("k{key}"), body)
                    .await
                    .map(drop),
            }
            .map_err(|e| e.to_string())
        } else if self.shape == Shape::TopicFanout {
            let message = String::from_utf8(body).map_err(|e| e.to_string())?;
            self.client
                .publish(pb::PublishRequest {
                    topic_arn: self.name.clone(),
                    message,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            let body = String::from_utf8(body).map_err(|e| e.to_string())?;
            let message = pb::SendMessageRequest {
                queue_name: self.name.clone(),
                message_body: body,
                ..Default::default()
            };
            match &self.sender {
                Some(sender) => sender.send(message).await,
                None => self.client.send_message(message).await,
            }
            .map(drop)
            .map_err(|e| e.to_string())
        }
    }

    async fn consume(self: &Arc<Self>, window: usize, sink: Arc<Sink>) -> Result<(), String> {
        if self.shape.is_stream() {
            return self.subscribe(sink).await;
        }
        if self.pushed {
            return self.push(window, sink).await;
        }
        // A receive takes at most 10: enough receivers to cover the window
        // (at most 4 per queue of a fan-out).
        let per_queue = if self.queues.len() > 1 {
            window.div_ceil(10).min(4)
        } else {
            window.div_ceil(10)
        };
        for (queue, _) in self
            .queues
            .iter()
            .flat_map(|q| std::iter::repeat_n(q, per_queue).zip(0..per_queue))
        {
            let me = self.clone();
            let sink = sink.clone();
            let queue = queue.clone();
            tokio::spawn(async move {
                loop {
                    let r = me.client.receive_from(&queue, 10, Some(60), Some(1)).await;
                    let Ok(r) = r else { return };
                    if r.messages.is_empty() {
                        continue;
                    }
                    for m in &r.messages {
                        sink.received(m.body.as_bytes());
                    }
                    let entries = crate::queues::delete_entries(&r.messages);
                    let deleted = me
                        .client
                        .delete_message_batch(pb::DeleteMessageBatchRequest {
                            queue_name: queue.clone(),
                            entries,
                        })
                        .await;
                    if deleted.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(())
    }

    async fn teardown(&self) {
        if self.shape.is_stream() {
            let _ = self.client.delete_stream(&self.name).await;
            return;
        }
        if self.shape == Shape::TopicFanout {
            let _ = self.client.delete_topic(&self.name).await;
        }
        for q in &self.queues {
            let _ = self.client.delete_queue(q).await;
        }
    }
}

impl Sluice {
    /// A push consumer per queue with the whole window as its prefetch,
    /// deleting each message as it arrives.
    async fn push(&self, window: usize, sink: Arc<Sink>) -> Result<(), String> {
        for queue in &self.queues {
            let options = ConsumerOptions {
                prefetch: window as u32,
                visibility_timeout: Some(60),
                ..Default::default()
            };
            let mut consumer = self
                .client
                .consumer(queue, options)
                .await
                .map_err(|e| format!("consuming {queue}: {e}"))?;
            let sink = sink.clone();
            tokio::spawn(async move {
                while let Ok(m) = consumer.next().await {
                    sink.received(m.body.as_bytes());
                    // Settled in the background: its credit comes back
                    // when the node has deleted it.
                    tokio::spawn(consumer.delete(&m.receipt_handle));
                }
            });
        }
        Ok(())
    }

    /// Subscribes to every shard from the latest record; subscriptions are
    /// open before the first put.
    async fn subscribe(&self, sink: Arc<Sink>) -> Result<(), String> {
        crate::streams::subscribe_each(&self.reader, &self.name, self.shards, move |records, _| {
            for r in records {
                sink.received(&r.data);
            }
        })
        .await
        .map_err(|e| format!("subscribing to {}: {e}", self.name))
    }
}
