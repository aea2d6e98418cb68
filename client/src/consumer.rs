//! A push consumer of one queue over one call: [`Consumer`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use sluice_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Status;

use crate::{Client, Error};

/// How a [`Consumer`] receives.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Messages delivered and not yet deleted (or released with a
    /// visibility change) at most: the credit granted to the node, given
    /// back as messages are settled (the AMQP prefetch model).
    pub prefetch: u32,
    /// Each delivery's visibility timeout, seconds (`None`: the queue's).
    pub visibility_timeout: Option<i32>,
    /// System attributes to return with each message (as ReceiveMessage's
    /// `message_system_attribute_names`).
    pub system_attributes: Vec<String>,
    /// Message attributes to return ("All", names, or prefixes).
    pub message_attributes: Vec<String>,
}

impl Default for ConsumerOptions {
    fn default() -> Self {
        ConsumerOptions {
            prefetch: 10,
            visibility_timeout: None,
            system_attributes: Vec::new(),
            message_attributes: Vec::new(),
        }
    }
}

/// Messages pushed from one queue over a `ReceiveMessageStream` call, as
/// they become receivable, at most [`ConsumerOptions::prefetch`]
/// unsettled at a time. Each is received as ReceiveMessage receives it
/// (visibility timeout, receive count and redrive, FIFO group order): a
/// message not deleted before its visibility timeout ends is delivered
/// again, to this consumer or another.
///
/// The call is not opened again when it breaks: [`Consumer::next`] returns
/// the error, and the messages it had delivered come back after their
/// visibility timeout. Open another consumer to go on.
pub struct Consumer {
    settler: Settler,
    messages: mpsc::UnboundedReceiver<Result<pb::Message, Error>>,
}

/// Deletes and visibility changes of a [`Consumer`]'s messages; clones
/// share the consumer's call.
#[derive(Clone)]
pub struct Settler {
    requests: mpsc::UnboundedSender<pb::ReceiveMessageStreamRequest>,
    waiting: Arc<Mutex<Waiting>>,
    next_id: Arc<AtomicU64>,
}

/// Settles awaiting the node's answer; `None` once the call has ended.
type Waiting = Option<HashMap<u64, oneshot::Sender<Result<(), Error>>>>;

impl Client {
    /// A push consumer of `queue` (a name or URL) over one call, on
    /// connections of its own, on the current Tokio runtime.
    pub async fn consumer(&self, queue: &str, options: ConsumerOptions) -> Result<Consumer, Error> {
        let own = Client::with_options(self.addresses(), self.options.clone())
            .unwrap_or_else(|_| self.clone());
        let first = pb::ReceiveMessageStreamRequest {
            queue_name: queue.to_string(),
            message_system_attribute_names: options.system_attributes,
            message_attribute_names: options.message_attributes,
            visibility_timeout: options.visibility_timeout,
            credit: options.prefetch,
            ..Default::default()
        };
        // The first node that takes the call (a stopped one is skipped).
        let mut tried = own.nodes.iter();
        let (requests, mut replies) = loop {
            let Some((_, channel)) = tried.next() else {
                return Err(Error::from(Status::unavailable(
                    "no node took the consumer's call",
                )));
            };
            let (requests, outbound) = mpsc::unbounded_channel();
            let _ = requests.send(first.clone());
            match crate::clients::queues(channel.clone())
                .receive_message_stream(UnboundedReceiverStream::new(outbound))
                .await
            {
                Ok(r) => break (requests, r.into_inner()),
                Err(status) if sluice_proto::is_retryable(&status) => continue,
                Err(status) => return Err(Error::from(status)),
            }
        };
        let waiting = Arc::new(Mutex::new(Some(HashMap::new())));
        let (delivered, messages) = mpsc::unbounded_channel();
        let settles = waiting.clone();
        tokio::spawn(async move {
            use pb::receive_message_stream_response::Event;
            let ended = loop {
                match replies.message().await {
                    Ok(Some(r)) => match r.event {
                        Some(Event::Message(m)) => {
                            let _ = delivered.send(Ok(m));
                        }
                        Some(Event::Settled(s)) => {
                            let reply = lock(&settles)
                                .as_mut()
                                .and_then(|w| w.remove(&s.correlation_id));
                            if let Some(reply) = reply {
                                let _ = reply.send(
                                    s.error
                                        .map_or(Ok(()), |e| Err(crate::sender::call_error(e))),
                                );
                            }
                        }
                        None => {}
                    },
                    Ok(None) => break Status::cancelled("the consumer's call ended"),
                    Err(status) => break status,
                }
            };
            // Settles the node had not answered: their outcome is unknown.
            for (_, reply) in lock(&settles).take().into_iter().flatten() {
                let _ = reply.send(Err(Error::from(Status::unavailable(format!(
                    "the consumer's call ended before the answer ({:?}: {}); the outcome is unknown",
                    ended.code(),
                    ended.message()
                )))));
            }
            let _ = delivered.send(Err(Error::from(ended)));
        });
        Ok(Consumer {
            settler: Settler {
                requests,
                waiting,
                next_id: Arc::new(AtomicU64::new(0)),
            },
            messages,
        })
    }
}

impl Consumer {
    /// The next message; an error once the call has ended (the messages it
    /// delivered and were not deleted come back after their visibility
    /// timeout).
    pub async fn next(&mut self) -> Result<pb::Message, Error> {
        match self.messages.recv().await {
            Some(m) => m,
            None => Err(Error::from(Status::cancelled("the consumer's call ended"))),
        }
    }

    /// Deletes and visibility changes of this consumer's messages.
    pub fn settler(&self) -> Settler {
        self.settler.clone()
    }

    /// Deletes a delivered message; see [`Settler::delete`].
    pub fn delete(
        &self,
        receipt_handle: &str,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        self.settler.delete(receipt_handle)
    }
}

impl Settler {
    /// Deletes a delivered message by its receipt handle, and gives its
    /// credit back; resolves when the node has deleted it (or refused).
    pub fn delete(
        &self,
        receipt_handle: &str,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        self.settle(receipt_handle, None)
    }

    /// Changes a delivered message's visibility timeout; 0 releases it
    /// (visible again at once) and gives its credit back, a longer one
    /// extends the consumer's hold on it and keeps the credit.
    pub fn change_visibility(
        &self,
        receipt_handle: &str,
        seconds: i32,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        self.settle(receipt_handle, Some(seconds))
    }

    /// Grants the node `n` more messages beyond the prefetch.
    pub fn grant(&self, n: u32) {
        let _ = self.requests.send(pb::ReceiveMessageStreamRequest {
            credit: n,
            ..Default::default()
        });
    }

    fn settle(
        &self,
        receipt_handle: &str,
        visibility: Option<i32>,
    ) -> impl std::future::Future<Output = Result<(), Error>> + Send + 'static {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (reply, answer) = oneshot::channel();
        let registered = lock(&self.waiting)
            .as_mut()
            .map(|w| w.insert(id, reply))
            .is_some();
        let receipt = pb::MessageReceipt {
            correlation_id: id,
            receipt_handle: receipt_handle.to_string(),
            visibility_timeout: visibility.unwrap_or(0),
        };
        // A delete or a release (visibility 0) ends the consumer's hold on
        // the message: its credit comes back. An extension keeps it.
        let releases = visibility.is_none_or(|v| v == 0);
        let mut request = pb::ReceiveMessageStreamRequest {
            credit: u32::from(releases),
            ..Default::default()
        };
        match visibility {
            None => request.deletes.push(receipt),
            Some(_) => request.visibility_changes.push(receipt),
        }
        let sent = registered && self.requests.send(request).is_ok();
        async move {
            if !sent {
                return Err(Error::from(Status::cancelled(
                    "the consumer's call has ended",
                )));
            }
            answer.await.unwrap_or_else(|_| {
                Err(Error::from(Status::unavailable(
                    "the consumer's call ended before the answer; the outcome is unknown",
                )))
            })
        }
    }
}

fn lock(w: &Mutex<Waiting>) -> std::sync::MutexGuard<'_, Waiting> {
    w.lock().unwrap_or_else(|e| e.into_inner())
}
