//! `PublishStream`: a publisher's messages to one topic over one call (the
//! shared machinery is in [`super::producer`]).
//!
//! The first message names the topic; the guard has authorised the call
//! for it (`sns:Publish`). Each message is checked with the rules of
//! `Publish`; those that arrive together go into one `Publish` command
//! within a PublishBatch's bounds ([`PUBLISH_STREAM_COMMAND_MAX`] messages,
//! [`MESSAGE_BYTES_MAX`] bytes), so a command fans out what a batch does.
//! A FIFO topic's messages keep their order: one command in flight at a
//! time.

use futures::future::BoxFuture;
use sluice_core::limits::topics::{
    MESSAGE_BYTES_MAX, PUBLISH_STREAM_COMMAND_MAX, PUBLISH_STREAM_IN_FLIGHT,
    PUBLISH_STREAM_IN_FLIGHT_BYTES,
};
use sluice_proto::v1 as pb;
use tonic::Status;

use super::producer::{command, same_destination, Outcomes, Producer};
use super::queue_messages::to_value;
use super::refs::topic_ref;
use super::status::from_domain;
use super::Context;
use crate::topics::publish::PublishInput;
use crate::topics::publish::{Publication, Published};
use crate::topics::Publish;

/// The reply stream of a `PublishStream`.
pub type Replies = super::producer::Replies<pb::PublishStreamResponse>;

/// A `PublishStream`'s topic, from its first message.
pub struct TopicProducer {
    name: String,
    arn: String,
    fifo: bool,
}

impl Producer for TopicProducer {
    type In = pb::PublishStreamRequest;
    type Out = pb::PublishStreamResponse;
    type Item = Publication;
    type Done = Published;
    const RPC: &'static str = "PublishStream";
    const IN_FLIGHT: usize = PUBLISH_STREAM_IN_FLIGHT;
    const IN_FLIGHT_BYTES: usize = PUBLISH_STREAM_IN_FLIGHT_BYTES;
    const COMMAND_MAX: usize = PUBLISH_STREAM_COMMAND_MAX;
    const COMMAND_BYTES_MAX: usize = MESSAGE_BYTES_MAX;

    fn correlation_id(message: &Self::In) -> u64 {
        message.correlation_id
    }

    fn open(ctx: &Context, first: &Self::In) -> Result<Self, Status> {
        let name = topic_ref("topic_arn", &first.topic_arn)?;
        Ok(TopicProducer {
            arn: ctx.identity.topic_arn(&name),
            fifo: name.ends_with(".fifo"),
            name,
        })
    }

    fn ordered(&self) -> bool {
        self.fifo
    }

    /// One message, checked as `Publish` checks it.
    fn check(&self, _ctx: &Context, m: Self::In) -> Result<(Publication, usize), Status> {
        let same = |field: &str, given: &str| {
            same_destination(field, given, &self.name, "topic", topic_ref)
        };
        same("topic_arn", &m.topic_arn)?;
        let Some(message) = m.message else {
            return Err(super::status::invalid("message", "is required"));
        };
        same("message.topic_arn", &message.topic_arn)?;
        let p = Publication::validate(
            "message",
            self.fifo,
            publish_input(
                message.message,
                message.subject,
                message.message_structure,
                message.message_attributes,
                message.message_group_id,
                message.message_deduplication_id,
            ),
        )
        .map_err(from_domain)?;
        let size = p.size();
        Ok((p, size))
    }

    fn run(
        &self,
        ctx: Context,
        messages: Vec<Publication>,
    ) -> BoxFuture<'static, Outcomes<Published>> {
        let (topic, topic_arn) = (self.name.clone(), self.arn.clone());
        command(
            ctx,
            Publish {
                topic,
                topic_arn,
                messages,
            },
        )
    }

    fn reply(id: u64, outcome: Result<Published, pb::MessageError>) -> Self::Out {
        use pb::publish_stream_response::Outcome;
        pb::PublishStreamResponse {
            correlation_id: id,
            outcome: Some(match outcome {
                Ok(p) => Outcome::Published(pb::PublishResponse {
                    message_id: p.message_id,
                    sequence_number: p.sequence_number.unwrap_or_default(),
                }),
                Err(e) => Outcome::Error(e),
            }),
        }
    }
}

/// A publication from the wire's fields (Publish, PublishBatch and
/// PublishStream take the same).
pub(super) fn publish_input(
    message: String,
    subject: String,
    structure: String,
    attributes: std::collections::HashMap<String, pb::MessageAttributeValue>,
    group_id: String,
    dedup_id: String,
) -> PublishInput {
    PublishInput {
        message,
        subject,
        structure,
        attributes: attributes
            .into_iter()
            .map(|(k, v)| (k, to_value(v)))
            .collect(),
        group_id,
        dedup_id,
    }
}
