//! NATS JetStream in the comparison, through `async-nats`: a file-stored
//! stream replicated to 3, with work-queue retention and a durable pull
//! consumer acknowledging each message (queue shapes), or limits retention
//! and an ordered consumer reading it (stream shape). Publishes wait for
//! the JetStream acknowledgement, which the server sends once the message
//! is stored on a majority (and fsynced when the server runs with
//! `sync_interval: always`). The fan-out shape uses interest retention and
//! one durable pull consumer per subscription: each receives every message,
//! which is removed once all have acknowledged it.

use std::sync::Arc;

use async_nats::jetstream::{self, consumer, stream};
use futures::StreamExt;

use super::{Broker, Shape, Sink};

/// A JetStream stream on a NATS cluster.
pub struct Nats {
    js: jetstream::Context,
    shape: Shape,
    name: String,
    subscriptions: usize,
}

impl Nats {
    /// Connects to `url` and creates the run's stream, subject `name`.
    pub async fn setup(
        url: &str,
        shape: Shape,
        name: String,
        subscriptions: usize,
    ) -> Result<Nats, String> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| format!("connecting to NATS at {url}: {e}"))?;
        let js = jetstream::new(client);
        js.create_stream(stream::Config {
            name: name.clone(),
            subjects: vec![name.clone()],
            retention: match shape {
                Shape::StreamPipeline => stream::RetentionPolicy::Limits,
                Shape::TopicFanout => stream::RetentionPolicy::Interest,
                _ => stream::RetentionPolicy::WorkQueue,
            },
            storage: stream::StorageType::File,
            num_replicas: 3,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("creating stream {name}: {e}"))?;
        Ok(Nats {
            js,
            shape,
            name,
            subscriptions: subscriptions.max(1),
        })
    }
}

impl Broker for Nats {
    async fn send(&self, body: Vec<u8>) -> Result<(), String> {
        self.js
            .publish(self.name.clone(), body.into())
            .await
            .map_err(|e| e.to_string())?
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }

    async fn consume(self: &Arc<Self>, window: usize, sink: Arc<Sink>) -> Result<(), String> {
        let stream = self
            .js
            .get_stream(&self.name)
            .await
            .map_err(|e| format!("stream {}: {e}", self.name))?;
        if self.shape.is_stream() {
            let config = consumer::pull::OrderedConfig {
                deliver_policy: consumer::DeliverPolicy::New,
                max_batch: window as i64,
                ..Default::default()
            };
            let messages = create_consumer(&stream, config, "ordered consumer")
                .await?
                .messages()
                .await
                .map_err(|e| format!("ordered consumer: {e}"))?;
            drain(messages, sink, false);
        } else {
            let consumers = if self.shape == Shape::TopicFanout {
                self.subscriptions
            } else {
                1
            };
            for n in 0..consumers {
                let config = consumer::pull::Config {
                    durable_name: Some(format!("bench-{n}")),
                    ack_policy: consumer::AckPolicy::Explicit,
                    max_ack_pending: window as i64,
                    ..Default::default()
                };
                let consumer = create_consumer(&stream, config, "pull consumer").await?;
                let messages = consumer
                    .stream()
                    .max_messages_per_batch(window)
                    .messages()
                    .await
                    .map_err(|e| format!("pull consumer: {e}"))?;
                drain(messages, sink.clone(), true);
            }
        }
        Ok(())
    }

    async fn teardown(&self) {
        let _ = self.js.delete_stream(&self.name).await;
    }
}

/// Creates a consumer of `stream` by `config`; `what` names it in an error.
async fn create_consumer<C>(
    stream: &stream::Stream,
    config: C,
    what: &str,
) -> Result<consumer::Consumer<C>, String>
where
    C: consumer::IntoConsumerConfig + consumer::FromConsumer,
{
    stream
        .create_consumer(config)
        .await
        .map_err(|e| format!("{what}: {e}"))
}

/// Hands each message of `messages` to `sink` in a task of its own,
/// acknowledging it if `ack`, until a message or an acknowledgement fails.
fn drain<M, E>(mut messages: M, sink: Arc<Sink>, ack: bool)
where
    M: futures::Stream<Item = Result<jetstream::Message, E>> + Unpin + Send + 'static,
    E: Send,
{
    tokio::spawn(async move {
        while let Some(Ok(m)) = messages.next().await {
            sink.received(&m.payload);
            if ack && m.ack().await.is_err() {
                return;
            }
        }
    });
}
