//! Sending many messages to one queue, records to one stream or messages to
//! one topic over one call: [`MessageSender`], [`RecordSender`] and
//! [`Publisher`], three kinds of [`Sender`].

use std::collections::HashMap;
use std::future::Future;

use sluice_proto::v1 as pb;
use sluice_security::signer::SignedChannel;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status, Streaming};

use crate::{Client, Error};

/// Messages one sender keeps on its call awaiting their replies; later
/// ones wait in the sender's queue (as the caller's futures for them do)
/// until replies make room.
const IN_FLIGHT_MAX: usize = 1024;

/// Sends to one destination over a producer call (`SendMessageStream`,
/// `PutRecordStream`, `PublishStream`), for code that sends many: each [`Sender::send`]
/// resolves when its message is committed (or has failed), and many may be
/// in flight at once, over one HTTP/2 stream instead of a call each.
///
/// Clones share the call. The call is opened with the first message and
/// opened again (on the next node) after it breaks; messages that were
/// awaiting their replies when it broke fail with `UNAVAILABLE`, and their
/// outcome is unknown (they may have been sent), as with a unary call cut
/// off. Unlike the unary calls of [`Client`], a sender does not resend
/// them. Where order is kept (a FIFO queue or topic; a stream), the messages
/// already queued when a call breaks fail unsent (`ABORTED`), so that
/// sending the failed ones again, in order, keeps the order; when the call
/// was refused (access denied, no such destination), they fail with the
/// refusal.
pub struct Sender<K: Kind> {
    /// Unbounded, so that [`Sender::send`] queues its message as it is
    /// called (the order kept); the task takes at most [`IN_FLIGHT_MAX`]
    /// from it at a time.
    jobs: mpsc::UnboundedSender<Job<K>>,
}

impl<K: Kind> Clone for Sender<K> {
    fn clone(&self) -> Self {
        Sender {
            jobs: self.jobs.clone(),
        }
    }
}

/// Sends messages to one queue over `SendMessageStream`.
pub type MessageSender = Sender<Messages>;
/// Puts records to one stream over `PutRecordStream`.
pub type RecordSender = Sender<Records>;
/// Publishes messages to one topic over `PublishStream`.
pub type Publisher = Sender<Publications>;

/// What a [`Sender`] sends, and over which call.
pub trait Kind: Send + 'static {
    /// What the caller sends.
    type Item: Send + 'static;
    /// What the caller gets back for it.
    type Done: Send + 'static;
    /// A message of the call.
    type Request: Send + 'static;
    /// A reply on the call.
    type Response: Send + 'static;
    /// What the messages go to, in errors.
    const WHAT: &'static str;

    /// Whether the destination keeps the order of its messages.
    fn ordered(destination: &str) -> bool;
    /// The call's message `id` carrying `item`.
    fn request(destination: &str, id: u64, item: Self::Item) -> Self::Request;
    /// Opens the call.
    fn open(
        channel: SignedChannel,
        requests: ReceiverStream<Self::Request>,
    ) -> impl Future<Output = Result<Streaming<Self::Response>, Status>> + Send;
    /// The id a reply answers, and its outcome.
    fn reply(response: Self::Response) -> (u64, Result<Self::Done, Error>);
}

/// [`Kind`] of [`MessageSender`].
pub struct Messages;
/// [`Kind`] of [`RecordSender`].
pub struct Records;
/// [`Kind`] of [`Publisher`].
pub struct Publications;

/// Implements [`Kind`] for a producer call: its messages carry the
/// destination in `$dest`, the item in `$field`, and its replies' outcome
/// is `$outcome::Outcome::$done` or `::Error`.
macro_rules! producer_kind {
    (
        $kind:ident: $item:ty => $done:ty, over $call:ident($request:ident) -> $response:ty,
        what $what:literal, ordered $ordered:expr,
        $client:expr, $dest:ident, $field:ident, $outcome:ident::$ok:ident
    ) => {
        impl Kind for $kind {
            type Item = $item;
            type Done = $done;
            type Request = pb::$request;
            type Response = $response;
            const WHAT: &'static str = $what;

            fn ordered(destination: &str) -> bool {
                ($ordered)(destination)
            }

            fn request(destination: &str, id: u64, item: $item) -> Self::Request {
                pb::$request {
                    $dest: destination.to_string(),
                    correlation_id: id,
                    $field: Some(item),
                }
            }

            async fn open(
                channel: SignedChannel,
                requests: ReceiverStream<Self::Request>,
            ) -> Result<Streaming<Self::Response>, Status> {
                Ok(($client)(channel).$call(requests).await?.into_inner())
            }

            fn reply(r: Self::Response) -> (u64, Result<Self::Done, Error>) {
                use pb::$outcome::Outcome;
                let outcome = r.outcome.map(|o| match o {
                    Outcome::$ok(done) => Ok(done),
                    Outcome::Error(e) => Err(e),
                });
                (r.correlation_id, answered(outcome))
            }
        }
    };
}

producer_kind! {
    Messages: pb::SendMessageRequest => pb::SendMessageResponse,
    over send_message_stream(SendMessageStreamRequest) -> pb::SendMessageStreamResponse,
    what "FIFO queue", ordered |queue: &str| queue.ends_with(".fifo"),
    crate::clients::queues, queue_name, message, send_message_stream_response::Sent
}

producer_kind! {
    Records: pb::PutRecordRequest => pb::PutRecordResponse,
    over put_record_stream(PutRecordStreamRequest) -> pb::PutRecordStreamResponse,
    what "stream", ordered |_stream: &str| true,
    crate::clients::streams, stream_name, record, put_record_stream_response::Put
}

producer_kind! {
    Publications: pb::PublishRequest => pb::PublishResponse,
    over publish_stream(PublishStreamRequest) -> pb::PublishStreamResponse,
    what "FIFO topic", ordered |topic: &str| topic.ends_with(".fifo"),
    crate::clients::topics, topic_arn, message, publish_stream_response::Published
}

/// A reply's outcome as the caller gets it.
fn answered<T>(outcome: Option<Result<T, pb::MessageError>>) -> Result<T, Error> {
    match outcome {
        Some(Ok(done)) => Ok(done),
        Some(Err(e)) => Err(call_error(e)),
        None => Err(Error::from(Status::internal("a reply without an outcome"))),
    }
}

/// A message's error as the unary call would have failed.
pub(crate) fn call_error(e: pb::MessageError) -> Error {
    Error::Call {
        status: Code::from_i32(e.grpc_code),
        code: e.code,
        message: e.message,
    }
}

struct Job<K: Kind> {
    item: K::Item,
    reply: oneshot::Sender<Result<K::Done, Error>>,
}

impl Client {
    /// A sender of messages to `queue` (a name or URL) over one stream.
    /// See [`Client::sender`].
    pub fn message_sender(&self, queue: &str) -> MessageSender {
        self.sender(queue)
    }

    /// A sender of records to `stream` (a name or ARN) over one stream.
    /// Records keep the order of the calls. See [`Client::sender`].
    pub fn record_sender(&self, stream: &str) -> RecordSender {
        self.sender(stream)
    }

    /// A publisher of messages to `topic` (a name or ARN) over one stream.
    /// See [`Client::sender`].
    pub fn publisher(&self, topic: &str) -> Publisher {
        self.sender(topic)
    }

    /// A sender to `destination` over one call, on connections of its own:
    /// a call the node has stopped reading (its messages wait for a
    /// commit) holds HTTP/2 flow-control window, which would otherwise hold
    /// back this client's other calls. Its task runs on the current Tokio
    /// runtime until every clone is dropped.
    pub fn sender<K: Kind>(&self, destination: &str) -> Sender<K> {
        let own = Client::with_options(self.addresses(), self.options.clone())
            .unwrap_or_else(|_| self.clone());
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive::<K>(own, destination.to_string(), rx));
        Sender { jobs }
    }
}

impl<K: Kind> Sender<K> {
    /// Queues one message (its own queue or stream name may be left empty)
    /// at once, and returns the wait for its reply. Messages go out in the
    /// order of the calls, which is the order an ordered destination keeps;
    /// the returned futures may be awaited in any order, or together.
    pub fn send(
        &self,
        item: K::Item,
    ) -> impl Future<Output = Result<K::Done, Error>> + Send + 'static {
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { item, reply }).is_ok();
        async move {
            if !queued {
                return Err(Error::from(Status::cancelled(
                    "the sender's task has ended",
                )));
            }
            answer.await.map_err(|_| {
                Error::from(Status::unavailable(
                    "the sender's task ended before the reply; the outcome is unknown",
                ))
            })?
        }
    }
}

/// Runs calls for the sender's jobs, one at a time, until the senders are
/// gone and every reply is in.
async fn drive<K: Kind>(
    client: Client,
    destination: String,
    mut jobs: mpsc::UnboundedReceiver<Job<K>>,
) {
    let mut node = 0;
    let ordered = K::ordered(&destination);
    while let Some(first) = jobs.recv().await {
        let channel = client.nodes[node % client.nodes.len()].1.clone();
        if let Err(status) = call::<K>(channel, &destination, first, &mut jobs).await {
            // Next time, another node.
            if sluice_proto::is_retryable(&status) {
                node += 1;
            }
            // Ordered: messages queued before the caller could see the
            // failure would overtake the ones that failed; they fail
            // unsent too. A refused call refuses them alike.
            if ordered {
                while let Ok(job) = jobs.try_recv() {
                    let error = if outcome_unknown(&status) {
                        Status::aborted(format!(
                            "not sent: an earlier message to this {} failed",
                            K::WHAT
                        ))
                    } else {
                        status.clone()
                    };
                    let _ = job.reply.send(Err(Error::from(error)));
                }
            }
        }
    }
}

/// Whether a call that failed with `status` may have cut off messages the
/// node had taken; otherwise it was refused (bad name, access denied) and
/// sent nothing.
fn outcome_unknown(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Cancelled
            | Code::DeadlineExceeded
            | Code::Internal
            | Code::Unknown
    )
}

/// One call: sends `first` and every later job until the senders are gone
/// or the call breaks, and answers each job. Ends with the error that
/// broke it, after failing every job left unanswered.
async fn call<K: Kind>(
    channel: SignedChannel,
    destination: &str,
    first: Job<K>,
    jobs: &mut mpsc::UnboundedReceiver<Job<K>>,
) -> Result<(), Status> {
    let (out, requests) = mpsc::channel(IN_FLIGHT_MAX);
    let mut waiting: HashMap<u64, oneshot::Sender<Result<K::Done, Error>>> = HashMap::new();
    let mut next_id = 0u64;
    let mut submit = |job: Job<K>, waiting: &mut HashMap<_, _>| {
        next_id += 1;
        waiting.insert(next_id, job.reply);
        K::request(destination, next_id, job.item)
    };
    // The node authorises the call by its first message: it goes first.
    let _ = out.try_send(submit(first, &mut waiting));
    let mut out = Some(out);
    let result = async {
        let mut replies = K::open(channel, ReceiverStream::new(requests)).await?;
        loop {
            tokio::select! {
                job = jobs.recv(), if out.is_some() && waiting.len() < IN_FLIGHT_MAX => match job {
                    Some(job) => {
                        let request = submit(job, &mut waiting);
                        let sent = match &out {
                            Some(o) => o.send(request).await.is_ok(),
                            None => false,
                        };
                        if !sent {
                            return Err(Status::unavailable("the stream closed"));
                        }
                    }
                    // Every sender is gone: finish the call, then read the
                    // replies still to come.
                    None => out = None,
                },
                reply = replies.message() => match reply? {
                    Some(r) => {
                        let (id, outcome) = K::reply(r);
                        if let Some(job) = waiting.remove(&id) {
                            let _ = job.send(outcome);
                        }
                    }
                    None if waiting.is_empty() && out.is_none() => return Ok(()),
                    None => return Err(Status::unavailable("the stream ended before every reply")),
                },
            }
        }
    }
    .await;
    if let Err(status) = &result {
        for (_, reply) in waiting.drain() {
            let error = if outcome_unknown(status) {
                Status::unavailable(format!(
                    "the stream broke before the reply ({:?}: {}); the outcome is unknown",
                    status.code(),
                    status.message()
                ))
            } else {
                status.clone()
            };
            let _ = reply.send(Err(Error::from(error)));
        }
    }
    result
}
