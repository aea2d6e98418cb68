//! Sending many messages to one queue over one call: [`MessageSender`].

use std::collections::HashMap;

use sluice_proto::v1 as pb;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Status};

use crate::{Client, Error};

/// Messages one sender keeps on its stream awaiting their replies; later
/// ones wait in the sender's queue (as the caller's futures for them do)
/// until replies make room.
const IN_FLIGHT_MAX: usize = 1024;

/// Sends messages to one queue over a `SendMessageStream` call, for code
/// that sends many: each [`MessageSender::send`] resolves when its message
/// is committed (or has failed), and many may be in flight at once, over
/// one HTTP/2 stream instead of a call each.
///
/// Clones share the stream. The stream is opened with the first message
/// and opened again (on the next node) after it breaks; messages that
/// were awaiting their replies when it broke fail with `UNAVAILABLE`, and
/// their outcome is unknown (they may have been sent), as with a unary call
/// cut off. Unlike [`Client::send_message`], a sender does not resend them.
/// To a FIFO queue, the messages already queued when a stream breaks fail
/// unsent (`ABORTED`), so that sending the failed ones again, in order,
/// keeps the group's order.
#[derive(Clone)]
pub struct MessageSender {
    /// Unbounded, so that [`MessageSender::send`] queues its message as it
    /// is called (the order of a FIFO group); the task takes at most
    /// [`IN_FLIGHT_MAX`] from it at a time.
    jobs: mpsc::UnboundedSender<Job>,
}

struct Job {
    message: pb::SendMessageRequest,
    reply: oneshot::Sender<Result<pb::SendMessageResponse, Error>>,
}

impl Client {
    /// A sender of messages to `queue` (a name or URL) over one stream, on
    /// connections of its own: a stream the node has stopped reading (its
    /// messages wait for a commit) holds HTTP/2 flow-control window, which
    /// would otherwise hold back this client's other calls. Its task runs
    /// on the current Tokio runtime until every clone is dropped.
    pub fn message_sender(&self, queue: &str) -> MessageSender {
        let own = Client::with_options(self.addresses(), self.options.clone())
            .unwrap_or_else(|_| self.clone());
        let (jobs, rx) = mpsc::unbounded_channel();
        tokio::spawn(drive(own, queue.to_string(), rx));
        MessageSender { jobs }
    }
}

impl MessageSender {
    /// Queues one message (its `queue_name` may be left empty) at once, and
    /// returns the wait for its reply. Messages go out in the order of the
    /// calls, which is the order a FIFO group keeps; the returned futures
    /// may be awaited in any order, or together.
    pub fn send(
        &self,
        message: pb::SendMessageRequest,
    ) -> impl std::future::Future<Output = Result<pb::SendMessageResponse, Error>> + Send + 'static
    {
        let (reply, answer) = oneshot::channel();
        let queued = self.jobs.send(Job { message, reply }).is_ok();
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

/// Runs streams for the sender's jobs, one at a time, until the senders
/// are gone and every reply is in.
async fn drive(client: Client, queue: String, mut jobs: mpsc::UnboundedReceiver<Job>) {
    let mut node = 0;
    let fifo = queue.ends_with(".fifo");
    while let Some(first) = jobs.recv().await {
        let channel = client.nodes[node % client.nodes.len()].1.clone();
        if let Err(status) = stream(channel, &queue, first, &mut jobs).await {
            // Next time, another node.
            if sluice_proto::is_retryable(&status) {
                node += 1;
            }
            // FIFO: messages queued before the caller could see the failure
            // would overtake the ones that failed; they fail unsent too.
            if fifo {
                while let Ok(job) = jobs.try_recv() {
                    let _ = job.reply.send(Err(Error::from(Status::aborted(
                        "not sent: an earlier message to this FIFO queue failed",
                    ))));
                }
            }
        }
    }
}

/// One stream: sends `first` and every later job until the senders are gone
/// or the stream breaks, and answers each job. Ends with the error that
/// broke it, after failing every job left unanswered.
async fn stream(
    channel: sluice_security::signer::SignedChannel,
    queue: &str,
    first: Job,
    jobs: &mut mpsc::UnboundedReceiver<Job>,
) -> Result<(), Status> {
    let (out, requests) = mpsc::channel(IN_FLIGHT_MAX);
    let mut waiting: HashMap<u64, oneshot::Sender<Result<pb::SendMessageResponse, Error>>> =
        HashMap::new();
    let mut next_id = 0u64;
    let mut submit = |job: Job, waiting: &mut HashMap<_, _>| {
        next_id += 1;
        waiting.insert(next_id, job.reply);
        pb::SendMessageStreamRequest {
            queue_name: queue.to_string(),
            correlation_id: next_id,
            message: Some(job.message),
        }
    };
    // The node authorises the call by its first message: it goes first.
    let _ = out.try_send(submit(first, &mut waiting));
    let mut out = Some(out);
    let result = async {
        let mut replies = crate::queues_client(channel)
            .send_message_stream(ReceiverStream::new(requests))
            .await?
            .into_inner();
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
                    // Every sender is gone: finish the stream, then read the
                    // replies still to come.
                    None => out = None,
                },
                reply = replies.message() => match reply? {
                    Some(r) => answer(&mut waiting, r),
                    None if waiting.is_empty() && out.is_none() => return Ok(()),
                    None => return Err(Status::unavailable("the stream ended before every reply")),
                },
            }
        }
    }
    .await;
    if let Err(status) = &result {
        // A refusal (bad queue name, access denied) sent nothing; anything
        // else may have cut off messages the node had taken.
        let unknown = matches!(
            status.code(),
            Code::Unavailable
                | Code::Cancelled
                | Code::DeadlineExceeded
                | Code::Internal
                | Code::Unknown
        );
        for (_, reply) in waiting.drain() {
            let error = if unknown {
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

/// Resolves the job a reply answers.
fn answer(
    waiting: &mut HashMap<u64, oneshot::Sender<Result<pb::SendMessageResponse, Error>>>,
    reply: pb::SendMessageStreamResponse,
) {
    use pb::send_message_stream_response::Outcome;
    let Some(job) = waiting.remove(&reply.correlation_id) else {
        return;
    };
    let result = match reply.outcome {
        Some(Outcome::Sent(sent)) => Ok(sent),
        Some(Outcome::Error(e)) => Err(Error::Call {
            status: Code::from_i32(e.grpc_code),
            code: e.code,
            message: e.message,
        }),
        None => Err(Error::from(Status::internal("a reply without an outcome"))),
    };
    let _ = job.send(result);
}
