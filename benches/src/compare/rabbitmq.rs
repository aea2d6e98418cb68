//! RabbitMQ in the comparison, through `lapin`: a durable queue of the
//! chosen type (quorum: replicated by Raft to every node, fsynced before
//! the confirm; classic: the shipped default type, one replica) or a
//! stream queue, persistent messages published with publisher confirms,
//! and a consumer with manual acknowledgements and a prefetch of the
//! window. Stream consumers start at the next message. The fan-out shape
//! publishes to a fanout exchange bound to one queue of the chosen type per
//! subscription; the confirm comes once every queue has the message.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind};

use super::{Broker, Shape, Sink};

/// Which kind of RabbitMQ queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum QueueType {
    /// `x-queue-type: quorum`.
    Quorum,
    /// The default queue type.
    Classic,
    /// `x-queue-type: stream`.
    Stream,
}

/// A queue on a RabbitMQ cluster.
pub struct Rabbit {
    connection: Connection,
    publishers: Vec<Channel>,
    next: AtomicUsize,
    queue_type: QueueType,
    name: String,
    /// The queues consumers read (the fan-out's bound queues, or the one).
    queues: Vec<String>,
    /// Publishes go to this exchange ("" for the default exchange).
    exchange: String,
}

/// Publishing channels: concurrent publishes share them.
const PUBLISH_CHANNELS: usize = 8;

impl Rabbit {
    /// Connects to `url` and declares the run's queue: a stream for the
    /// stream shape, otherwise of `queue_type`.
    pub async fn setup(
        url: &str,
        shape: Shape,
        queue_type: QueueType,
        name: String,
        subscriptions: usize,
    ) -> Result<Rabbit, String> {
        let queue_type = if shape.is_stream() {
            QueueType::Stream
        } else {
            queue_type
        };
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .map_err(|e| format!("connecting to RabbitMQ at {url}: {e}"))?;
        let mut publishers = Vec::new();
        for _ in 0..PUBLISH_CHANNELS {
            let channel = connection
                .create_channel()
                .await
                .map_err(|e| format!("channel: {e}"))?;
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|e| format!("confirm.select: {e}"))?;
            publishers.push(channel);
        }
        let mut arguments = FieldTable::default();
        match queue_type {
            QueueType::Quorum => {
                arguments.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("quorum".into()),
                );
            }
            QueueType::Stream => {
                arguments.insert(
                    "x-queue-type".into(),
                    AMQPValue::LongString("stream".into()),
                );
            }
            QueueType::Classic => {}
        }
        let fanout = shape == Shape::TopicFanout;
        let queues: Vec<String> = if fanout {
            (0..subscriptions.max(1))
                .map(|i| format!("{name}-{i}"))
                .collect()
        } else {
            vec![name.clone()]
        };
        if fanout {
            publishers[0]
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Fanout,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| format!("declaring exchange {name}: {e}"))?;
        }
        for q in &queues {
            publishers[0]
                .queue_declare(
                    q.as_str().into(),
                    QueueDeclareOptions::durable(),
                    arguments.clone(),
                )
                .await
                .map_err(|e| format!("declaring queue {q}: {e}"))?;
            if fanout {
                publishers[0]
                    .queue_bind(
                        q.as_str().into(),
                        name.as_str().into(),
                        "".into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|e| format!("binding queue {q}: {e}"))?;
            }
        }
        Ok(Rabbit {
            connection,
            publishers,
            next: AtomicUsize::new(0),
            queue_type,
            exchange: if fanout { name.clone() } else { String::new() },
            name,
            queues,
        })
    }
}

impl Broker for Rabbit {
    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.publishers.len();
        let confirm = self.publishers[n]
            .basic_publish(
                self.exchange.as_str().into(),
                if self.exchange.is_empty() {
                    self.name.as_str().into()
                } else {
                    "".into()
                },
                BasicPublishOptions::default(),
                &body,
                // Persistent.
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())?;
        if confirm.is_ack() {
            Ok(())
        } else {
            Err("publish not confirmed (nack)".into())
        }
    }

    async fn consume(self: &Arc<Self>, window: usize, sink: Arc<Sink>) -> Result<(), String> {
        for queue in &self.queues {
            let channel = self
                .connection
                .create_channel()
                .await
                .map_err(|e| format!("channel: {e}"))?;
            channel
                .basic_qos(
                    window.min(u16::MAX as usize) as u16,
                    BasicQosOptions::default(),
                )
                .await
                .map_err(|e| format!("basic.qos: {e}"))?;
            let mut arguments = FieldTable::default();
            if self.queue_type == QueueType::Stream {
                arguments.insert(
                    "x-stream-offset".into(),
                    AMQPValue::LongString("next".into()),
                );
            }
            let mut consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "bench".into(),
                    BasicConsumeOptions::default(),
                    arguments,
                )
                .await
                .map_err(|e| format!("basic.consume: {e}"))?;
            let sink = sink.clone();
            tokio::spawn(async move {
                // The channel lives as long as the consumer.
                let _channel = channel;
                while let Some(Ok(delivery)) = consumer.next().await {
                    sink.received(&delivery.data);
                    if delivery.ack(BasicAckOptions::default()).await.is_err() {
                        return;
                    }
                }
            });
        }
        Ok(())
    }

    async fn teardown(&self) {
        for q in &self.queues {
            let _ = self.publishers[0]
                .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
                .await;
        }
        if !self.exchange.is_empty() {
            let _ = self.publishers[0]
                .exchange_delete(
                    self.exchange.as_str().into(),
                    ExchangeDeleteOptions::default(),
                )
                .await;
        }
        let _ = self.connection.close(200, "done".into()).await;
    }
}
