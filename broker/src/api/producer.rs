//! Producer streams: many messages to one destination over one call.
//!
//! A unary call pays for a whole HTTP/2 request per message (headers, a
//! stream opened and closed, the guard, a task); a producer stream pays for
//! them once. `SendMessageStream` ([`super::send_stream`]),
//! `PutRecordStream` ([`super::put_stream`]) and `PublishStream`
//! ([`super::publish_stream`]) are the three; this module is what they
//! share, and a [`Producer`] is what differs. The first message
//! names the destination, and the guard has authorised the call for it and
//! checks every message against the RPC's limits as it arrives.
//!
//! * Messages are checked as they arrive, with the rules of the unary call;
//!   one that fails is answered with its error at once and the others go on.
//! * The valid messages that have arrived together go into one command, as
//!   a batch does (within [`Producer::COMMAND_MAX`] messages and
//!   [`Producer::COMMAND_BYTES_MAX`] bytes), and each is answered once that
//!   command has committed (or failed), with its correlation id. Replies
//!   come in the order commands finish.
//! * An ordered destination (a FIFO queue or topic; a stream) has one
//!   command in flight at a time, so that messages keep the order they were
//!   sent in; a command that fails as a whole (leader lost: its outcome
//!   unknown) ends the call, and the messages after it fail unsent
//!   (`ABORTED`), so that sending them again keeps the order. Otherwise, as
//!   many commands as the bounds allow.
//! * At most [`Producer::IN_FLIGHT`] messages and
//!   [`Producer::IN_FLIGHT_BYTES`] bytes wait for their replies; past that
//!   the node reads no further, and HTTP/2's flow control holds the client
//!   back. The same happens when the client does not read its replies.
//! * Each message's bytes come from the node's budget of request bytes in
//!   flight (`--request-memory-mb`, as a unary call's do) until it is
//!   answered: the guard's while it reads the message, this module's from
//!   then on. Unordered, a message that finds the budget spent fails alone
//!   with `RequestMemoryExhausted`, to be sent again; ordered, it ends the
//!   call (the messages after it fail unsent), as a refusal alone would let
//!   the next message overtake it. Nothing waits for budget, so calls
//!   cannot wait on one another.
//! * A call that breaks (client gone, node stopping) leaves the outcome of
//!   its unanswered messages unknown, as a unary call cut off does.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, Stream, StreamExt};
use prost::Message;
use sluice_proto::v1 as pb;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Status, Streaming};

use super::bounds::Bounds;
use super::status::message_error;
use super::Context;
use crate::command::{Command, CommandOutput, Registered};
use crate::error::DomainError;

/// Replies buffered for the client before the node stops reading.
const REPLIES_BUFFERED: usize = 256;

/// What one command answered for each of its messages, in order; an error
/// for the command as a whole.
pub type Outcomes<T> = Result<Vec<Result<T, Status>>, Status>;

/// A destination of a producer stream: how its messages are checked, put
/// into commands and answered.
pub trait Producer: Sized + Send + Sync + 'static {
    /// A message of the call.
    type In: Message + Default + Send + 'static;
    /// A reply on the call.
    type Out: Send + 'static;
    /// A checked message, as its command takes it.
    type Item: Send + 'static;
    /// What the command answered for one message.
    type Done: Send + 'static;
    /// The RPC, in metrics.
    const RPC: &'static str;
    /// Messages waiting for their replies at once.
    const IN_FLIGHT: usize;
    /// Bytes of messages waiting for their replies at once.
    const IN_FLIGHT_BYTES: usize;
    /// Messages in one command.
    const COMMAND_MAX: usize;
    /// Bytes (as [`Producer::check`] counts them) in one command; a larger
    /// message goes alone.
    const COMMAND_BYTES_MAX: usize;

    /// The client's id of a message, given back on its reply.
    fn correlation_id(message: &Self::In) -> u64;
    /// The destination the call's first message names.
    fn open(ctx: &Context, first: &Self::In) -> Result<Self, Status>;
    /// Whether messages must commit in the order they arrived.
    fn ordered(&self) -> bool;
    /// One message checked as the unary call checks it, with its size.
    fn check(&self, ctx: &Context, message: Self::In) -> Result<(Self::Item, usize), Status>;
    /// Runs one command of checked messages.
    fn run(&self, ctx: Context, items: Vec<Self::Item>)
        -> BoxFuture<'static, Outcomes<Self::Done>>;
    /// The reply to message `id`.
    fn reply(id: u64, outcome: Result<Self::Done, pb::MessageError>) -> Self::Out;
}

/// The reply stream of a producer call.
pub type Replies<Out> = Pin<Box<dyn Stream<Item = Result<Out, Status>> + Send>>;

/// Serves one producer call: reads its messages in a task of its own and
/// answers on the returned stream. The guard puts the node's budget in the
/// call's extensions (none on the cluster listener).
pub fn serve<P: Producer>(ctx: Context, request: Request<Streaming<P::In>>) -> Replies<P::Out> {
    let budget = request.extensions().get::<Arc<Bounds>>().cloned();
    let (tx, rx) = mpsc::channel(REPLIES_BUFFERED);
    tokio::spawn(run::<P>(ctx, budget, request.into_inner(), tx));
    Box::pin(ReceiverStream::new(rx))
}

type Sender<Out> = mpsc::Sender<Result<Out, Status>>;

/// Messages of one command, with their correlation ids, bytes and the
/// budget they hold.
struct Group<P: Producer> {
    ids: Vec<u64>,
    items: Vec<P::Item>,
    bytes: usize,
    held: Vec<OwnedSemaphorePermit>,
}

/// Where one read of the call left it.
enum Read<In> {
    /// Messages that arrived together (at least one).
    Messages(Vec<In>),
    /// The client finished the call.
    End,
    /// The call broke.
    Broken(Status),
}

/// Reads what has arrived: one message (waited for), then any already
/// there, within `count` messages and `bytes` bytes. A read that ends or
/// breaks after some messages keeps them and says so in `after`.
async fn gather<In: Message + Default>(
    inbound: &mut Streaming<In>,
    count: usize,
    bytes: usize,
) -> (Read<In>, Option<Read<In>>) {
    let first = match inbound.next().await {
        Some(Ok(m)) => m,
        Some(Err(status)) => return (Read::Broken(status), None),
        None => return (Read::End, None),
    };
    let mut size = first.encoded_len();
    let mut arrived = vec![first];
    let mut after = None;
    while arrived.len() < count && size < bytes {
        match inbound.next().now_or_never() {
            Some(Some(Ok(m))) => {
                size += m.encoded_len();
                arrived.push(m);
            }
            Some(Some(Err(status))) => {
                after = Some(Read::Broken(status));
                break;
            }
            Some(None) => {
                after = Some(Read::End);
                break;
            }
            None => break,
        }
    }
    (Read::Messages(arrived), after)
}

async fn run<P: Producer>(
    ctx: Context,
    budget: Option<Arc<Bounds>>,
    mut inbound: Streaming<P::In>,
    tx: Sender<P::Out>,
) {
    let mut target: Option<P> = None;
    // Commands in flight, and (ordered) those waiting for the one before.
    let mut commands = FuturesUnordered::new();
    let mut queued: VecDeque<Group<P>> = VecDeque::new();
    let (mut held, mut held_bytes) = (0usize, 0usize);
    let mut open = true;
    let mut failure = None;
    loop {
        let ordered = target.as_ref().is_some_and(|t| t.ordered());
        // Unordered: every group at once. Ordered: one command at a time,
        // in the order the messages came.
        while !queued.is_empty() && (!ordered || commands.is_empty()) {
            let (Some(t), Some(g)) = (target.as_ref(), queued.pop_front()) else {
                break;
            };
            let command = t.run(ctx.clone(), g.items);
            let (ids, bytes, permits) = (g.ids, g.bytes, g.held);
            commands.push(async move {
                let outcome = command.await;
                drop(permits);
                (ids, bytes, outcome)
            });
        }
        let room = held < P::IN_FLIGHT
            && held_bytes < P::IN_FLIGHT_BYTES
            && (!ordered || commands.is_empty());
        tokio::select! {
            Some((ids, bytes, outcome)) = commands.next(), if !commands.is_empty() => {
                let ids: Vec<u64> = ids;
                held -= ids.len();
                held_bytes -= bytes;
                let broke = match &outcome {
                    Err(status) if ordered => Some(status.clone()),
                    _ => None,
                };
                if !reply_all::<P>(&tx, ids, outcome).await {
                    return;
                }
                if let Some(status) = broke {
                    // An ordered command that failed as a whole (its
                    // outcome may be unknown) must not be overtaken:
                    // nothing after it is sent, and the call ends.
                    for g in queued.drain(..) {
                        if !reply_all::<P>(&tx, g.ids, Err(skipped())).await {
                            return;
                        }
                    }
                    failure = Some(status);
                    open = false;
                }
            }
            // Evaluated even when the branch is off (select! builds every
            // branch's future): the held bytes may exceed the bound by
            // the last message read, so the room left saturates.
            (read, after) = gather(
                &mut inbound,
                P::COMMAND_MAX.min(P::IN_FLIGHT.saturating_sub(held)),
                P::IN_FLIGHT_BYTES.saturating_sub(held_bytes),
            ), if open && room => {
                match after {
                    Some(Read::Broken(status)) => (failure, open) = (Some(status), false),
                    Some(Read::End) => open = false,
                    _ => {}
                }
                let arrived = match read {
                    Read::Messages(m) => m,
                    Read::End => {
                        open = false;
                        continue;
                    }
                    Read::Broken(status) => {
                        (failure, open) = (Some(status), false);
                        continue;
                    }
                };
                if target.is_none() {
                    match P::open(&ctx, &arrived[0]) {
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
                    if t.ordered() {
                        if let Err(status) = permit {
                            // Refused alone, it would be overtaken by the
                            // next: the call ends here instead.
                            let id = P::correlation_id(&m);
                            if !reply_all::<P>(&tx, vec![id], Err(status.clone())).await {
                                return;
                            }
                            (failure, open) = (Some(status), false);
                            break;
                        }
                    }
                    holding.push((m, permit));
                }
                let skipped_ids: Vec<u64> = rest.map(|m| P::correlation_id(&m)).collect();
                if !skipped_ids.is_empty()
                    && !reply_all::<P>(&tx, skipped_ids, Err(skipped())).await
                {
                    return;
                }
                let (groups, refused) = groups(&ctx, t, holding);
                for (id, status) in refused {
                    if tx.send(Ok(P::reply(id, Err(message_error(&status))))).await.is_err() {
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
/// answered, or refuses it (`RequestMemoryExhausted`). Never waits: a call
/// waiting for budget while holding some could wait on another that does
/// the same.
fn hold(budget: Option<&Bounds>, len: usize) -> Result<Option<OwnedSemaphorePermit>, Status> {
    budget.map(|b| b.reserve(len)).transpose()
}

/// The answer to a message not sent because one before it failed, on an
/// ordered call.
fn skipped() -> Status {
    Status::aborted("not sent: an earlier message of this ordered stream failed")
}

/// Checks each message of `arrived` (with the budget it holds): the valid
/// ones in groups of one command each, the refused ones with their errors.
#[allow(clippy::type_complexity)]
fn groups<P: Producer>(
    ctx: &Context,
    target: &P,
    arrived: Vec<(P::In, Result<Option<OwnedSemaphorePermit>, Status>)>,
) -> (Vec<Group<P>>, Vec<(u64, Status)>) {
    let mut groups: Vec<Group<P>> = Vec::new();
    let mut refused = Vec::new();
    for (m, permit) in arrived {
        let id = P::correlation_id(&m);
        match permit.and_then(|p| target.check(ctx, m).map(|checked| (checked, p))) {
            Ok(((item, bytes), permit)) => {
                let fits = groups.last().is_some_and(|g| {
                    g.items.len() < P::COMMAND_MAX && g.bytes + bytes <= P::COMMAND_BYTES_MAX
                });
                if !fits {
                    groups.push(Group {
                        ids: Vec::new(),
                        items: Vec::new(),
                        bytes: 0,
                        held: Vec::new(),
                    });
                }
                let g = groups.last_mut().expect("a group was just made");
                g.ids.push(id);
                g.items.push(item);
                g.bytes += bytes;
                g.held.extend(permit);
            }
            Err(status) => refused.push((id, status)),
        }
    }
    (groups, refused)
}

/// Answers each message of a command; false once the client is gone.
async fn reply_all<P: Producer>(
    tx: &Sender<P::Out>,
    ids: Vec<u64>,
    outcome: Outcomes<P::Done>,
) -> bool {
    let outcomes: Vec<Result<P::Done, pb::MessageError>> = match outcome {
        Ok(results) if results.len() == ids.len() => results
            .into_iter()
            .map(|r| r.map_err(|s| message_error(&s)))
            .collect(),
        Ok(_) => {
            let status = super::status::unexpected(P::RPC);
            ids.iter().map(|_| Err(message_error(&status))).collect()
        }
        Err(status) => ids.iter().map(|_| Err(message_error(&status))).collect(),
    };
    metrics::counter!("sluice_stream_messages_total", "rpc" => P::RPC).increment(ids.len() as u64);
    for (id, outcome) in ids.into_iter().zip(outcomes) {
        if tx.send(Ok(P::reply(id, outcome))).await.is_err() {
            return false;
        }
    }
    true
}

/// Runs `op`, a command of one result per message, for [`Producer::run`].
pub fn command<O, T>(ctx: Context, op: O) -> BoxFuture<'static, Outcomes<T>>
where
    O: Registered<Carrier = Command, Reply = CommandOutput, Output = Vec<Result<T, DomainError>>>
        + Send
        + 'static,
    T: Send + 'static,
{
    async move {
        let results = ctx.run(op).await?;
        Ok(results
            .into_iter()
            .map(|r| r.map_err(super::status::from_domain))
            .collect())
    }
    .boxed()
}

/// Checks that a later message's `field` names the call's destination
/// `name` (a `what`) or leaves it empty; `resolve` reads a reference (a
/// name, URL or ARN) to a name.
pub fn same_destination(
    field: &str,
    given: &str,
    name: &str,
    what: &str,
    resolve: impl Fn(&str, &str) -> Result<String, Status>,
) -> Result<(), Status> {
    if given.is_empty() || resolve(field, given)? == name {
        Ok(())
    } else {
        Err(super::status::invalid(
            field,
            format!("must be empty or the stream's {what} {name:?}"),
        ))
    }
}
