//! `SendMessageStream`: a producer's messages to one queue over one call
//! (the shared machinery is in [`super::producer`]).
//!
//! The first message names the queue; the guard has authorised the call
//! for it (`sqs:SendMessage`). Each message is checked with the rules of
//! `SendMessage`; those that arrive together go into one `SendMessages`
//! command, as a batch does (at most [`STREAM_COMMAND_MAX`] messages,
//! [`MESSAGE_BYTES_MAX`] bytes). A FIFO queue's messages keep their order:
//! one command is in flight at a time.

use futures::future::BoxFuture;
use sluice_core::limits::queues::{
    MESSAGE_BYTES_MAX, STREAM_COMMAND_MAX, STREAM_IN_FLIGHT, STREAM_IN_FLIGHT_BYTES,
};
use sluice_proto::v1 as pb;
use tonic::Status;

use super::producer::{command, same_destination, Outcomes, Producer};
use super::status::from_domain;
use super::Context;
use crate::queues::delivery::SentMessage;
use crate::queues::message::NewMessage;
use crate::queues::{self, SendMessages};

/// The reply stream of a `SendMessageStream`.
pub type Replies = super::producer::Replies<pb::SendMessageStreamResponse>;

/// A `SendMessageStream`'s queue, from its first message.
pub struct QueueProducer {
    name: String,
    fifo: bool,
}

impl QueueProducer {
    fn queue(ctx: &Context, field: &str, given: &str) -> Result<String, Status> {
        super::queue_messages::queue_ref(&ctx.identity, field, given)
    }
}

impl Producer for QueueProducer {
    type In = pb::SendMessageStreamRequest;
    type Out = pb::SendMessageStreamResponse;
    type Item = NewMessage;
    type Done = SentMessage;
    const RPC: &'static str = "SendMessageStream";
    const IN_FLIGHT: usize = STREAM_IN_FLIGHT;
    const IN_FLIGHT_BYTES: usize = STREAM_IN_FLIGHT_BYTES;
    const COMMAND_MAX: usize = STREAM_COMMAND_MAX;
    const COMMAND_BYTES_MAX: usize = MESSAGE_BYTES_MAX;

    fn correlation_id(message: &Self::In) -> u64 {
        message.correlation_id
    }

    fn open(ctx: &Context, first: &Self::In) -> Result<Self, Status> {
        let name = Self::queue(ctx, "queue_name", &first.queue_name)?;
        Ok(QueueProducer {
            fifo: queues::is_fifo_name(&name),
            name,
        })
    }

    fn ordered(&self) -> bool {
        self.fifo
    }

    /// One message, checked as `SendMessage` checks it.
    fn check(&self, ctx: &Context, m: Self::In) -> Result<(NewMessage, usize), Status> {
        let same = |field: &str, given: &str| {
            same_destination(field, given, &self.name, "queue", |f, g| {
                Self::queue(ctx, f, g)
            })
        };
        same("queue_name", &m.queue_name)?;
        let Some(message) = m.message else {
            return Err(super::status::invalid("message", "is required"));
        };
        same("message.queue_name", &message.queue_name)?;
        let message = NewMessage::validate(
            "message",
            self.fifo,
            super::queue_messages::outgoing(
                message.message_body,
                message.delay_seconds,
                message.message_attributes,
                message.message_system_attributes,
                message.message_deduplication_id,
                message.message_group_id,
            ),
        )
        .map_err(from_domain)?;
        let size = message.size();
        Ok((message, size))
    }

    fn run(
        &self,
        ctx: Context,
        messages: Vec<NewMessage>,
    ) -> BoxFuture<'static, Outcomes<SentMessage>> {
        let queue = self.name.clone();
        command(ctx, SendMessages { queue, messages })
    }

    fn reply(id: u64, outcome: Result<SentMessage, pb::MessageError>) -> Self::Out {
        use pb::send_message_stream_response::Outcome;
        pb::SendMessageStreamResponse {
            correlation_id: id,
            outcome: Some(match outcome {
                Ok(sent) => Outcome::Sent(super::queue_messages::sent(sent)),
                Err(e) => Outcome::Error(e),
            }),
        }
    }
}
