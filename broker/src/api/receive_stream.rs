//! `ReceiveMessageStream`: a push consumer of one queue.
//!
//! The client grants credit (the prefetch window: messages it has room
//! for); the node receives as many as the credit allows and pushes them
//! down the call as they become receivable, each received exactly as
//! `ReceiveMessage` receives it: the same command, so the visibility
//! timeout, receive counts and redrive, and FIFO group order hold as they
//! do for a unary receive. A message delivered to a call that then breaks
//! becomes visible again when its visibility timeout ends, as one received
//! by a unary call that was cut off does: nothing is lost.
//!
//! * The first message names the queue, and the guard has authorised the
//!   call for it (`sqs:ReceiveMessage`). Deletes and visibility changes on
//!   the call are authorised here, against the same caller and the same
//!   policies, as `sqs:DeleteMessage` and `sqs:ChangeMessageVisibility` on
//!   the queue: a refused one is settled with `AccessDenied` and changes
//!   nothing.
//! * At most [`RECEIVE_STREAM_RECEIVES`] receives (of up to
//!   [`RECEIVE_MAX`] messages each, within the credit left) are in flight
//!   at once, each long-polling for up to 20 seconds.
//! * Deletes and visibility changes that arrive together go into one
//!   command each (up to [`RECEIVE_STREAM_SETTLE_COMMAND_MAX`]); each is
//!   settled with its correlation id. At most [`RECEIVE_STREAM_SETTLING`]
//!   wait; past that the node reads no further from the call.
//! * When the client finishes its side, the node stops delivering, settles
//!   what it was sent, and ends the call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use futures::stream::FuturesUnordered;
use futures::{FutureExt, StreamExt};
use sluice_core::limits::queues::{
    RECEIVE_MAX, RECEIVE_STREAM_CREDIT_MAX, RECEIVE_STREAM_RECEIVES,
    RECEIVE_STREAM_SETTLE_COMMAND_MAX, RECEIVE_STREAM_SETTLING,
};
use sluice_proto::v1 as pb;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Request, Status, Streaming};

use super::producer::same_destination;
use super::queue_messages::queue_ref;
use super::receiving::{
    check_names, open_receipt, receive_until, seconds_in, Names, SYSTEM_ATTRIBUTES,
};
use super::status::{from_domain, message_error};
use super::Context;
use crate::auth::caller::Caller;
use crate::queues::attributes::VISIBILITY_TIMEOUT_MAX;
use crate::queues::delivery::ReceiveRequest;
use crate::queues::receipt::Receipt;
use crate::queues::{ChangeVisibility, DeleteMessages};

/// Messages of the call that arrived together and are handled as one.
const GATHER_MAX: usize = 256;
/// Replies buffered for the client before the node waits for it to read.
const REPLIES_BUFFERED: usize = 256;
/// How long one receive of the call long-polls before it is asked again.
const POLL: Duration = Duration::from_secs(20);
/// Pause before receiving again after a receive's outcome was unknown
/// (leader lost).
const RETRY_AFTER: Duration = Duration::from_millis(100);

/// The reply stream of a `ReceiveMessageStream`.
pub type Replies = super::producer::Replies<pb::ReceiveMessageStreamResponse>;

type Sender = mpsc::Sender<Result<pb::ReceiveMessageStreamResponse, Status>>;

/// Serves one `ReceiveMessageStream` call in a task of its own.
pub fn serve(
    ctx: Context,
    request: Request<Streaming<pb::ReceiveMessageStreamRequest>>,
) -> Replies {
    let caller = request.extensions().get::<Caller>().cloned();
    let (tx, rx) = mpsc::channel(REPLIES_BUFFERED);
    tokio::spawn(async move {
        if let Err(status) = run(ctx, caller, request.into_inner(), &tx).await {
            let _ = tx.send(Err(status)).await;
        }
    });
    Box::pin(ReceiverStream::new(rx))
}

/// The call's queue and how it receives, from its first message.
struct Consumer {
    ctx: Context,
    caller: Option<Caller>,
    queue: String,
    request: ReceiveRequest,
    names: Arc<Names>,
}

/// A settle command's outcome: (correlation id, error) per receipt.
type Settled = Vec<(u64, Option<pb::MessageError>)>;

/// What a delete or visibility change does.
#[derive(Clone, Copy)]
enum Change {
    Delete,
    Visibility,
}

impl Change {
    fn action(self) -> &'static str {
        match self {
            Change::Delete => "sqs:DeleteMessage",
            Change::Visibility => "sqs:ChangeMessageVisibility",
        }
    }

    fn field(self) -> &'static str {
        match self {
            Change::Delete => "deletes",
            Change::Visibility => "visibility_changes",
        }
    }
}

async fn run(
    ctx: Context,
    caller: Option<Caller>,
    mut inbound: Streaming<pb::ReceiveMessageStreamRequest>,
    tx: &Sender,
) -> Result<(), Status> {
    let Some(first) = inbound.message().await? else {
        return Ok(());
    };
    let consumer = Consumer::open(ctx, caller, &first)?;
    let mut credit: u64 = 0;
    // Receives in flight (with the most each asked for), and settle
    // commands in flight (with how many receipts each carries).
    let mut receives = FuturesUnordered::new();
    let mut asked: u64 = 0;
    let mut settles: FuturesUnordered<BoxFuture<'static, Settled>> = FuturesUnordered::new();
    let mut settling = 0usize;
    let mut open = true;
    let mut next = Some(first);
    loop {
        if let Some(m) = next.take() {
            credit = (credit + u64::from(m.credit)).min(RECEIVE_STREAM_CREDIT_MAX);
            let (commands, refused) = consumer.settle(&m)?;
            for (id, error) in refused {
                send(tx, settled(id, Some(error))).await?;
            }
            for (n, command) in commands {
                settling += n;
                settles.push(command);
            }
        }
        while open && receives.len() < RECEIVE_STREAM_RECEIVES && credit > asked {
            let max = (credit - asked).min(u64::from(RECEIVE_MAX));
            asked += max;
            receives.push(consumer.receive(max as u32).map(move |r| (max, r)));
        }
        if !open && settles.is_empty() {
            return Ok(());
        }
        tokio::select! {
            Some((max, received)) = receives.next(), if !receives.is_empty() => {
                asked -= max;
                match received {
                    Ok(messages) => {
                        credit -= (messages.len() as u64).min(credit);
                        for m in messages {
                            send(tx, delivered(m)).await?;
                        }
                    }
                    // The leader was lost: what the receive took (if
                    // anything) comes back after its visibility timeout.
                    // Or the cluster refused it for now (a full disk): it
                    // took nothing. Either way the consumer waits and asks
                    // again, as a long-polling client would, rather than
                    // end the call.
                    Err(status)
                        if matches!(status.code(), Code::Unavailable | Code::ResourceExhausted) =>
                    {
                        tokio::time::sleep(RETRY_AFTER).await;
                    }
                    Err(status) => return Err(status),
                }
            }
            Some(done) = settles.next(), if !settles.is_empty() => {
                settling -= done.len();
                for (id, error) in done {
                    send(tx, settled(id, error)).await?;
                }
            }
            m = inbound.message(), if open && settling < RECEIVE_STREAM_SETTLING => match m? {
                Some(m) => {
                    let (merged, refused) = gather(&consumer, m, &mut inbound, &mut open)?;
                    for (id, error) in refused {
                        send(tx, settled(id, Some(error))).await?;
                    }
                    next = Some(merged);
                    if !open {
                        receives.clear();
                    }
                }
                // The client is done: deliver nothing more (what receives
                // in flight took comes back after its visibility timeout),
                // settle what it sent.
                None => {
                    open = false;
                    receives.clear();
                }
            },
            else => return Ok(()),
        }
    }
}

impl Consumer {
    fn open(
        ctx: Context,
        caller: Option<Caller>,
        first: &pb::ReceiveMessageStreamRequest,
    ) -> Result<Consumer, Status> {
        let queue = queue_ref(&ctx.identity, "queue_name", &first.queue_name)?;
        let visibility_timeout = first
            .visibility_timeout
            .map(|v| seconds_in("visibility_timeout", v, VISIBILITY_TIMEOUT_MAX))
            .transpose()
            .map_err(from_domain)?;
        check_names(
            "message_system_attribute_names",
            &first.message_system_attribute_names,
            SYSTEM_ATTRIBUTES,
        )
        .map_err(from_domain)?;
        Ok(Consumer {
            ctx,
            caller,
            queue,
            request: ReceiveRequest {
                max: RECEIVE_MAX,
                visibility_timeout,
                attempt_id: None,
            },
            names: Arc::new(Names {
                system: first.message_system_attribute_names.clone(),
                attributes: first.message_attribute_names.clone(),
            }),
        })
    }

    /// One receive of up to `max` messages, long-polling.
    fn receive(&self, max: u32) -> BoxFuture<'static, Result<Vec<pb::Message>, Status>> {
        let (ctx, queue, names) = (self.ctx.clone(), self.queue.clone(), self.names.clone());
        let request = ReceiveRequest {
            max,
            ..self.request.clone()
        };
        async move { receive_until(&ctx, &queue, &request, &names, Instant::now() + POLL).await }
            .boxed()
    }

    /// The commands for a message's deletes and visibility changes (with
    /// how many receipts each settles), and the receipts refused at once.
    #[allow(clippy::type_complexity)]
    fn settle(
        &self,
        m: &pb::ReceiveMessageStreamRequest,
    ) -> Result<
        (
            Vec<(usize, BoxFuture<'static, Settled>)>,
            Vec<(u64, pb::MessageError)>,
        ),
        Status,
    > {
        let mut commands = Vec::new();
        let mut refused = Vec::new();
        for (change, receipts) in [
            (Change::Delete, &m.deletes),
            (Change::Visibility, &m.visibility_changes),
        ] {
            if receipts.is_empty() {
                continue;
            }
            if let Err(denied) = self.authorise(change) {
                let error = message_error(&denied);
                refused.extend(receipts.iter().map(|r| (r.correlation_id, error.clone())));
                continue;
            }
            let mut valid = Vec::new();
            for (i, r) in receipts.iter().enumerate() {
                match self.checked(change, i, r) {
                    Ok(checked) => valid.push((r.correlation_id, checked)),
                    Err(status) => refused.push((r.correlation_id, message_error(&status))),
                }
            }
            for chunk in valid.chunks(RECEIVE_STREAM_SETTLE_COMMAND_MAX) {
                commands.push((chunk.len(), self.command(change, chunk.to_vec())));
            }
        }
        Ok((commands, refused))
    }

    /// Checks that a later message names the call's queue or none.
    fn same_queue(&self, given: &str) -> Result<(), Status> {
        same_destination("queue_name", given, &self.queue, "queue", |f, g| {
            queue_ref(&self.ctx.identity, f, g)
        })
    }

    /// Whether the call's caller may make `change` on the queue.
    fn authorise(&self, change: Change) -> Result<(), Status> {
        let resource = self.ctx.identity.queue_arn(&self.queue);
        super::authorise(
            self.caller.as_ref(),
            "/sluice.v1.Queues/ReceiveMessageStream",
            change.action(),
            &resource,
        )
    }

    /// A receipt opened, with its new visibility timeout (changes).
    fn checked(
        &self,
        change: Change,
        i: usize,
        r: &pb::MessageReceipt,
    ) -> Result<(Receipt, u32), Status> {
        let field = format!("{}[{i}]", change.field());
        let receipt = open_receipt(
            &self.ctx,
            &format!("{field}.receipt_handle"),
            &r.receipt_handle,
        )
        .map_err(from_domain)?;
        let seconds = match change {
            Change::Delete => 0,
            Change::Visibility => seconds_in(
                &format!("{field}.visibility_timeout"),
                r.visibility_timeout,
                VISIBILITY_TIMEOUT_MAX,
            )
            .map_err(from_domain)?,
        };
        Ok((receipt, seconds))
    }

    /// One command settling `receipts`.
    fn command(
        &self,
        change: Change,
        receipts: Vec<(u64, (Receipt, u32))>,
    ) -> BoxFuture<'static, Settled> {
        let (ctx, queue) = (self.ctx.clone(), self.queue.clone());
        let (ids, receipts): (Vec<u64>, Vec<(Receipt, u32)>) = receipts.into_iter().unzip();
        async move {
            let outcome = match change {
                Change::Delete => {
                    let receipts = receipts.into_iter().map(|(r, _)| r).collect();
                    ctx.run(DeleteMessages { queue, receipts }).await
                }
                Change::Visibility => {
                    ctx.run(ChangeVisibility {
                        queue,
                        changes: receipts,
                    })
                    .await
                }
            };
            let errors: Vec<Option<pb::MessageError>> = match outcome {
                Ok(results) if results.len() == ids.len() => results
                    .into_iter()
                    .map(|r| r.err().map(|e| message_error(&from_domain(e))))
                    .collect(),
                Ok(_) => {
                    let status = super::status::unexpected("ReceiveMessageStream");
                    ids.iter().map(|_| Some(message_error(&status))).collect()
                }
                Err(status) => ids.iter().map(|_| Some(message_error(&status))).collect(),
            };
            ids.into_iter().zip(errors).collect()
        }
        .boxed()
    }
}

/// `first` and what else has already arrived (no waiting), merged into
/// one: their credit added, their deletes and visibility changes in order,
/// so that they go into as few commands as they fit, with the receipts of
/// a message naming another queue refused (the call goes on). Clears `open`
/// when the client has finished its side.
fn gather(
    consumer: &Consumer,
    first: pb::ReceiveMessageStreamRequest,
    inbound: &mut Streaming<pb::ReceiveMessageStreamRequest>,
    open: &mut bool,
) -> Result<
    (
        pb::ReceiveMessageStreamRequest,
        Vec<(u64, pb::MessageError)>,
    ),
    Status,
> {
    let mut merged = pb::ReceiveMessageStreamRequest::default();
    let mut refused = Vec::new();
    let take = |m: pb::ReceiveMessageStreamRequest,
                merged: &mut pb::ReceiveMessageStreamRequest,
                refused: &mut Vec<(u64, pb::MessageError)>| {
        match consumer.same_queue(&m.queue_name) {
            Ok(()) => {
                merged.credit = merged.credit.saturating_add(m.credit);
                merged.deletes.extend(m.deletes);
                merged.visibility_changes.extend(m.visibility_changes);
            }
            // Another queue's receipts are refused alone; the call goes on.
            Err(status) => {
                let error = message_error(&status);
                refused.extend(
                    m.deletes
                        .iter()
                        .chain(&m.visibility_changes)
                        .map(|r| (r.correlation_id, error.clone())),
                );
            }
        }
    };
    take(first, &mut merged, &mut refused);
    let mut count = 1;
    while count < GATHER_MAX
        && merged.deletes.len() + merged.visibility_changes.len() < RECEIVE_STREAM_SETTLING
    {
        match inbound.message().now_or_never() {
            Some(Ok(Some(m))) => {
                take(m, &mut merged, &mut refused);
                count += 1;
            }
            Some(Ok(None)) => {
                *open = false;
                break;
            }
            Some(Err(status)) => return Err(status),
            None => break,
        }
    }
    Ok((merged, refused))
}

fn delivered(m: pb::Message) -> pb::ReceiveMessageStreamResponse {
    pb::ReceiveMessageStreamResponse {
        event: Some(pb::receive_message_stream_response::Event::Message(m)),
    }
}

fn settled(id: u64, error: Option<pb::MessageError>) -> pb::ReceiveMessageStreamResponse {
    pb::ReceiveMessageStreamResponse {
        event: Some(pb::receive_message_stream_response::Event::Settled(
            pb::ReceiptSettled {
                correlation_id: id,
                error,
            },
        )),
    }
}

/// Sends one reply; an error once the client is gone (the call ends).
async fn send(tx: &Sender, reply: pb::ReceiveMessageStreamResponse) -> Result<(), Status> {
    metrics::counter!("sluice_stream_messages_total", "rpc" => "ReceiveMessageStream").increment(1);
    tx.send(Ok(reply))
        .await
        .map_err(|_| Status::cancelled("the client is gone"))
}
