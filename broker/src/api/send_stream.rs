//! `SendMessageStream`: a producer's messages to one queue over one call.
//!
//! A unary `SendMessage` pays for a whole HTTP/2 request per message
//! (headers, a stream opened and closed, the guard, a task); a stream pays
//! for them once. The first message names the queue, and the guard has
//! authorised the call for it (`sqs:SendMessage`) and checks every message
//! against the RPC's limits as it arrives.
//!
//! * Messages are validated as they arrive, with the rules of `SendMessage`;
//!   one that fails is answered with its error at once and the others go on.
//! * The valid messages that have arrived together go into one
//!   `SendMessages` command, as a batch does (at most
//!   [`STREAM_COMMAND_MAX`] messages, [`MESSAGE_BYTES_MAX`] bytes), and each
//!   is answered once that command has committed (or failed), with its
//!   correlation id. Replies come in the order commands finish.
//! * On a FIFO queue one command is in flight at a time, so that messages
//!   keep the order they were sent in; a command that fails as a whole
//!   (leader lost: its outcome unknown) ends the stream, and the messages
//!   after it fail unsent (`ABORTED`), so that sending them again keeps
//!   the order. On a standard queue, as many commands as the bounds allow.
//! * At most [`STREAM_IN_FLIGHT`] messages and [`STREAM_IN_FLIGHT_BYTES`]
//!   bytes wait for their replies; past that the node reads no further,
//!   and HTTP/2's flow control holds the client back. The same happens
//!   when the client does not read its replies.
//! * Each message's bytes come from the node's budget of request bytes in
//!   flight (`--request-memory-mb`, as a unary call's do) until it is
//!   answered: the guard's while it reads the message, this module's from
//!   then on. On a standard queue a message that finds the budget spent
//!   fails alone with `RequestMemoryExhausted`, to be sent again; on a FIFO
//!   queue it ends the stream (the messages after it fail unsent), as a
//!   refusal alone would let the next message overtake it. Nothing waits
//!   for budget, so streams cannot wait on one another.
//! * A stream that breaks (client gone, node stopping) leaves the outcome of
//!   its unanswered messages unknown, as a unary call cut off does.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use sluice_core::limits::queues::{
    MESSAGE_BYTES_MAX, STREAM_COMMAND_MAX, STREAM_IN_FLIGHT, STREAM_IN_FLIGHT_BYTES,
};
use sluice_proto::v1 as pb;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use super::bounds::Bounds;
use super::status::{from_domain, message_error};
use super::Context;
use crate::queues::message::NewMessage;
use crate::queues::{self, SendMessages};

/// Replies buffered for the client before the node stops reading.
const REPLIES_BUFFERED: usize = 256;

/// The reply stream of a `SendMessageStream`.
pub type Replies =
    Pin<Box<dyn Stream<Item = Result<pb::SendMessageStreamResponse, Status>> + Send>>;

/// Serves one `SendMessageStream` call: reads its messages in a task of
/// its own and answers on the returned stream. The guard puts the node's
/// budget in the call's extensions (none on the cluster listener).
pub fn serve(ctx: Context, request: Request<Streaming<pb::SendMessageStreamRequest>>) -> Replies {
    let budget = request.extensions().get::<Arc<Bounds>>().cloned();
    let (tx, rx) = mpsc::channel(REPLIES_BUFFERED);
    tokio::spawn(run(ctx, budget, request.into_inner(), tx));
    Box::pin(ReceiverStream::new(rx))
}

type Sender = mpsc::Sender<Result<pb::SendMessageStreamResponse, Status>>;

/// Messages of one command, with their correlation ids, bytes and the
/// budget they hold.
struct Group {
    ids: Vec<u64>,
    messages: Vec<NewMessage>,
    bytes: usize,
    held: Vec<OwnedSemaphorePermit>,
}

/// The stream's queue, from its first message.
struct Target {
    name: String,
    fifo: bool,
}

async fn run(
    ctx: Context,
    budget: Option<Arc<Bounds>>,
    mut inbound: Streaming<pb::SendMessageStreamRequest>,
    tx: Sender,
) {
    let mut target: Option<Target> = None;
    // Commands in flight, and (FIFO) those waiting for the one before.
    let mut commands = FuturesUnordered::new();
    let mut queued: VecDeque<Group> = VecDeque::new();
    let (mut held, mut held_bytes) = (0usize, 0usize);
    let mut open = true;
    let mut failure = None;
    loop {
        let fifo = target.as_ref().is_some_and(|t| t.fifo);
        // Standard: every group at once. FIFO: one command at a time, in
        // the order the messages came.
        while !queued.is_empty() && (!fifo || commands.is_empty()) {
            let Some(t) = target.as_ref() else { break };
            let Some(Group {
                ids,
                messages,
                bytes,
                held: permits,
            }) = queued.pop_front()
            else {
                break;
            };
            let ctx = ctx.clone();
            let queue = t.name.clone();
            commands.push(async move {
                let outcome = ctx.run(SendMessages { queue, messages }).await;
                drop(permits);
                (ids, bytes, outcome)
            });
        }
        let room = held < STREAM_IN_FLIGHT
            && held_bytes < STREAM_IN_FLIGHT_BYTES
            && (!fifo || commands.is_empty());
        tokio::select! {
            Some((ids, bytes, outcome)) = commands.next(), if !commands.is_empty() => {
                let ids: Vec<u64> = ids;
                held -= ids.len();
                held_bytes -= bytes;
                let broke = match &outcome {
                    Err(status) if fifo => Some(status.clone()),
                    _ => None,
                };
                if !reply_all(&tx, ids, outcome).await {
                    return;
                }
                if let Some(status) = broke {
                    // A FIFO command that failed as a whole (its outcome
                    // may be unknown) must not be overtaken: nothing after
                    // it is sent, and the stream ends.
                    for g in queued.drain(..) {
                        if !reply_all(&tx, g.ids, Err(fifo_skipped())).await {
                            return;
                        }
                    }
                    failure = Some(status);
                    open = false;
                }
            }
            next = inbound.next(), if open && room => {
                let mut arrived = match next {
                    Some(Ok(m)) => vec![m],
                    Some(Err(status)) => {
                        failure = Some(status);
                        open = false;
                        continue;
                    }
                    None => {
                        open = false;
                        continue;
                    }
                };
                // What else has arrived already joins it (no waiting),
                // within the stream's bounds.
                let mut bytes = arrived[0].encoded_len();
                while arrived.len() < STREAM_COMMAND_MAX
                    && held + arrived.len() < STREAM_IN_FLIGHT
                    && held_bytes + bytes < STREAM_IN_FLIGHT_BYTES
                {
                    match inbound.next().now_or_never() {
                        Some(Some(Ok(m))) => {
                            bytes += m.encoded_len();
                            arrived.push(m);
                        }
                        Some(Some(Err(status))) => {
                            failure = Some(status);
                            open = false;
                            break;
                        }
                        Some(None) => {
                            open = false;
                            break;
                        }
                        None => break,
                    }
                }
                if target.is_none() {
                    match stream_target(&ctx, &arrived[0]) {
                        Ok(t) => target = Some(t),
                        Err(status) => {
                            let _ = tx.send(Err(status)).await;
                            return;
                        }
                    }
                }
                let Some(t) = target.as_ref() else { return };
                let mut holding = Vec::with_capacity(arrived.len());
                let mut rest = arrived.into_iter();
                for m in rest.by_ref() {
                    let permit = hold(budget.as_deref(), m.encoded_len());
                    if t.fifo {
                        if let Err(status) = permit {
                            // Refused alone, it would be overtaken by the
                            // next: the stream ends here instead.
                            let id = m.correlation_id;
                            if !reply_all(&tx, vec![id], Err(status.clone())).await {
                                return;
                            }
                            failure = Some(status);
                            open = false;
                            break;
                        }
                    }
                    holding.push((m, permit));
                }
                let skipped: Vec<u64> = rest.map(|m| m.correlation_id).collect();
                if !skipped.is_empty() && !reply_all(&tx, skipped, Err(fifo_skipped())).await {
                    return;
                }
                let (groups, refused) = validate(&ctx, t, holding);
                for (id, status) in refused {
                    let reply = pb::SendMessageStreamResponse {
                        correlation_id: id,
                        outcome: Some(pb::send_message_stream_response::Outcome::Error(
                            message_error(&status),
                        )),
                    };
                    if tx.send(Ok(reply)).await.is_err() {
                        return;
                    }
                }
                for g in groups {
                    held += g.ids.len();
                    held_bytes += g.bytes;
                    queued.push_back(g);
                }
            }
            else => break,
        }
    }
    if let Some(status) = failure {
        let _ = tx.send(Err(status)).await;
    }
}

/// Takes a message's `len` bytes from the node's budget until it is
/// answered, or refuses it (`RequestMemoryExhausted`). Never waits: a
/// stream waiting for budget while holding some could wait on another
/// that does the same.
fn hold(budget: Option<&Bounds>, len: usize) -> Result<Option<OwnedSemaphorePermit>, Status> {
    budget.map(|b| b.reserve(len)).transpose()
}

/// The answer to a FIFO message not sent because one before it failed.
fn fifo_skipped() -> Status {
    Status::aborted("not sent: an earlier message of this FIFO stream failed")
}

/// The queue the first message names.
fn stream_target(ctx: &Context, first: &pb::SendMessageStreamRequest) -> Result<Target, Status> {
    let name = super::queue_messages::queue_ref(&ctx.identity, "queue_name", &first.queue_name)?;
    Ok(Target {
        fifo: queues::is_fifo_name(&name),
        name,
    })
}

/// Checks each message of `arrived` (with the budget it holds) for the
/// stream's queue: the valid ones in groups of one command each, the
/// refused ones with their errors.
fn validate(
    ctx: &Context,
    target: &Target,
    arrived: Vec<(
        pb::SendMessageStreamRequest,
        Result<Option<OwnedSemaphorePermit>, Status>,
    )>,
) -> (Vec<Group>, Vec<(u64, Status)>) {
    let mut groups: Vec<Group> = Vec::new();
    let mut refused = Vec::new();
    for (m, permit) in arrived {
        let id = m.correlation_id;
        let checked = permit.and_then(|p| one(ctx, target, m).map(|message| (message, p)));
        match checked {
            Ok((message, permit)) => {
                let bytes = message.size();
                let fits = groups.last().is_some_and(|g| {
                    g.messages.len() < STREAM_COMMAND_MAX && g.bytes + bytes <= MESSAGE_BYTES_MAX
                });
                if !fits {
                    groups.push(Group {
                        ids: Vec::new(),
                        messages: Vec::new(),
                        bytes: 0,
                        held: Vec::new(),
                    });
                }
                let g = groups.last_mut().expect("a group was just made");
                g.ids.push(id);
                g.messages.push(message);
                g.bytes += bytes;
                g.held.extend(permit);
            }
            Err(status) => refused.push((id, status)),
        }
    }
    (groups, refused)
}

/// One message, checked as `SendMessage` checks it.
fn one(
    ctx: &Context,
    target: &Target,
    m: pb::SendMessageStreamRequest,
) -> Result<NewMessage, Status> {
    let same = |field: &str, given: &str| -> Result<(), Status> {
        if given.is_empty()
            || super::queue_messages::queue_ref(&ctx.identity, field, given)? == target.name
        {
            Ok(())
        } else {
            Err(super::status::invalid(
                field,
                format!("must be empty or the stream's queue {:?}", target.name),
            ))
        }
    };
    same("queue_name", &m.queue_name)?;
    let Some(message) = m.message else {
        return Err(super::status::invalid("message", "is required"));
    };
    same("message.queue_name", &message.queue_name)?;
    NewMessage::validate(
        "message",
        target.fifo,
        super::queue_messages::outgoing(
            message.message_body,
            message.delay_seconds,
            message.message_attributes,
            message.message_system_attributes,
            message.message_deduplication_id,
            message.message_group_id,
        ),
    )
    .map_err(from_domain)
}

/// Answers each message of a command; false once the client is gone.
async fn reply_all(
    tx: &Sender,
    ids: Vec<u64>,
    outcome: Result<Vec<Result<queues::delivery::SentMessage, crate::error::DomainError>>, Status>,
) -> bool {
    use pb::send_message_stream_response::Outcome;
    let outcomes: Vec<Outcome> = match outcome {
        Ok(results) if results.len() == ids.len() => results
            .into_iter()
            .map(|r| match r {
                Ok(sent) => Outcome::Sent(super::queue_messages::sent(sent)),
                Err(e) => Outcome::Error(message_error(&from_domain(e))),
            })
            .collect(),
        Ok(_) => {
            let status = super::status::unexpected("SendMessages");
            ids.iter()
                .map(|_| Outcome::Error(message_error(&status)))
                .collect()
        }
        Err(status) => ids
            .iter()
            .map(|_| Outcome::Error(message_error(&status)))
            .collect(),
    };
    metrics::counter!("sluice_stream_messages_total", "rpc" => "SendMessageStream")
        .increment(ids.len() as u64);
    for (correlation_id, outcome) in ids.into_iter().zip(outcomes) {
        let reply = pb::SendMessageStreamResponse {
            correlation_id,
            outcome: Some(outcome),
        };
        if tx.send(Ok(reply)).await.is_err() {
            return false;
        }
    }
    true
}
