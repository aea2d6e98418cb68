//! `sluice.v1.Queues`.
//!
//! Requests are validated here, turned into commands and queries, and routed
//! to the leader. ReceiveMessage long-polls on the node the client called: an
//! empty receive waits for this node's wake-up of the queue (every node
//! applies every send), for the next hidden message to come due, or for the
//! end of the wait, then asks again.

use super::status::IntoStatus;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::queue_messages::{outgoing, queue_ref, sent};
use super::receiving::{
    check_names, open_receipt, receive_until, seconds_in, Names, SYSTEM_ATTRIBUTES,
};
use super::Reply;

use super::fields::optional;
use super::{consistency, Consistency, Context};
use crate::command::{Command, CommandOutput, Registered};
use crate::error::DomainError;
use crate::queues::attributes::{self, queue_name_from_arn, Attribute};
use crate::queues::delivery::ReceiveRequest;
use crate::queues::layout::MoveTask;
use crate::queues::message::{self, NewMessage};
use crate::queues::{self, redrive, CreateQueue, ListQueues, Queue};
use crate::tags::{Change, Tagged};

/// Serves the queue API.
pub struct QueuesApi {
    ctx: Context,
}

impl QueuesApi {}

fn arn_ref(field: &str, arn: &str) -> Result<String, Status> {
    let name = queue_name_from_arn(arn)
        .ok_or_else(|| {
            DomainError::invalid(
                field,
                format!("{arn:?} is not an SQS queue ARN (arn:aws:sqs:REGION:ACCOUNT:NAME)"),
            )
        })
        .map_err(super::status::from_domain)?;
    queues::validate_name(field, name).map_err(super::status::from_domain)?;
    Ok(name.to_string())
}

fn batch_error(id: String, e: DomainError) -> pb::BatchResultErrorEntry {
    pb::BatchResultErrorEntry {
        id,
        code: e.code,
        message: e.message,
        sender_fault: true,
    }
}

/// The entries of a batch that passed validation, and the errors of those
/// that did not.
pub(super) struct Split<T> {
    ids: Vec<String>,
    /// The entries that passed, in order.
    pub(super) valid: Vec<T>,
    failed: Vec<pb::BatchResultErrorEntry>,
}

/// Checks a batch's entry ids (present, distinct, not too many), then
/// validates each entry on its own: a bad entry fails alone.
pub(super) fn split<E, T>(
    entries: Vec<E>,
    id_of: impl Fn(&E) -> &str,
    mut parse: impl FnMut(usize, E) -> Result<T, DomainError>,
) -> Result<Split<T>, Status> {
    message::validate_batch_ids("entries", entries.iter().map(&id_of))
        .map_err(super::status::from_domain)?;
    let mut out = Split {
        ids: Vec::new(),
        valid: Vec::new(),
        failed: Vec::new(),
    };
    for (i, e) in entries.into_iter().enumerate() {
        let id = id_of(&e).to_string();
        match parse(i, e) {
            Ok(t) => {
                out.ids.push(id);
                out.valid.push(t);
            }
            Err(err) => out.failed.push(batch_error(id, err)),
        }
    }
    Ok(out)
}

impl<T> Split<T> {
    /// Commits the valid entries as one batch command (none when every
    /// entry failed) and answers each entry: `ok` makes the entry of a
    /// success; a failure, in validation or in the command, is an error
    /// entry.
    pub(super) async fn commit<C, R, S>(
        self,
        ctx: &Context,
        command: impl FnOnce(Vec<T>) -> C,
        mut ok: impl FnMut(String, R) -> S,
    ) -> Result<(Vec<S>, Vec<pb::BatchResultErrorEntry>), Status>
    where
        C: Registered<
            Carrier = Command,
            Reply = CommandOutput,
            Output = Vec<Result<R, DomainError>>,
        >,
    {
        let Split {
            ids,
            valid,
            mut failed,
        } = self;
        let mut successful = Vec::new();
        if !valid.is_empty() {
            let results = ctx.run(command(valid)).await?;
            for (id, r) in ids.into_iter().zip(results) {
                match r {
                    Ok(v) => successful.push(ok(id, v)),
                    Err(e) => failed.push(batch_error(id, e)),
                }
            }
        }
        Ok((successful, failed))
    }
}

/// A count from 1 to `max` a request may leave 0 for `default`.
fn count_in(field: &str, v: i32, default: u32, max: u32) -> Result<u32, Status> {
    match v {
        0 => Ok(default),
        n if (1..=max as i32).contains(&n) => Ok(n as u32),
        n => Err(super::status::invalid(
            field,
            format!("must be from 1 to {max}, got {n}"),
        )),
    }
}

impl QueuesApi {
    /// The service over a node's context.
    pub fn new(ctx: Context) -> Self {
        QueuesApi { ctx }
    }

    /// The queue a request's `queue_name` names (see [`queue_ref`]).
    fn queue_name(&self, given: &str) -> Result<String, Status> {
        queue_ref(&self.ctx.identity, "queue_name", given)
    }

    fn url(&self, name: &str) -> String {
        self.ctx.identity.queue_url(&self.ctx.advertise, name)
    }

    fn arn(&self, name: &str) -> String {
        self.ctx.identity.queue_arn(name)
    }

    async fn queue(&self, how: Consistency, name: &str) -> Result<Queue, Status> {
        self.ctx
            .ask(
                how,
                crate::queues::GetQueue {
                    name: name.to_string(),
                },
            )
            .await
    }

    /// Checks a redrive policy's dead-letter queue: it exists, is not the
    /// queue itself, and is FIFO exactly when the queue is.
    async fn check_redrive(&self, name: &str, attrs: &[Attribute]) -> Result<(), Status> {
        for a in attrs {
            if let Attribute::RedrivePolicy(Some(p)) = a {
                let field = "attributes.RedrivePolicy.deadLetterTargetArn";
                if p.dead_letter_queue == name {
                    return Err(
                        DomainError::invalid(field, "must name another queue").into_status()
                    );
                }
                let dlq = match self
                    .queue(Consistency::Linearizable, &p.dead_letter_queue)
                    .await
                {
                    Ok(q) => q,
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        return Err(DomainError::invalid(
                            field,
                            format!("queue {:?} does not exist", p.dead_letter_queue),
                        )
                        .into_status())
                    }
                    Err(s) => return Err(s),
                };
                if dlq.attributes.fifo != queues::is_fifo_name(name) {
                    return Err(DomainError::invalid(
                        field,
                        "a FIFO queue's dead-letter queue must be FIFO, a standard queue's standard",
                    )
                    .into_status());
                }
            }
        }
        Ok(())
    }

    fn move_task_out(&self, queue: &str, t: MoveTask) -> pb::MessageMoveTask {
        pb::MessageMoveTask {
            task_handle: t.handle,
            status: t.status.as_str().into(),
            source_arn: self.arn(queue),
            destination_arn: t
                .destination
                .as_deref()
                .map(|d| self.arn(d))
                .unwrap_or_default(),
            max_number_of_messages_per_second: t.rate.map(|r| r as i32),
            approximate_number_of_messages_moved: t.moved as i64,
            approximate_number_of_messages_to_move: t.to_move as i64,
            failure_reason: t.failure.unwrap_or_default(),
            started_timestamp: t.started_ms as i64,
        }
    }
}

#[tonic::async_trait]
impl pb::queues_server::Queues for QueuesApi {
    async fn create_queue(
        &self,
        request: Request<pb::CreateQueueRequest>,
    ) -> Reply<pb::CreateQueueResponse> {
        let req = request.into_inner();
        let attributes: BTreeMap<String, String> = req.attributes.into_iter().collect();
        let tags: BTreeMap<String, String> = req.tags.into_iter().collect();
        let cmd = CreateQueue::new(&req.queue_name, &attributes, tags)
            .map_err(super::status::from_domain)?;
        self.check_redrive(&cmd.name, &cmd.attributes).await?;
        let created = self.ctx.run(cmd).await?;
        Ok(Response::new(pb::CreateQueueResponse {
            queue_url: self.url(&req.queue_name),
            queue_arn: self.arn(&req.queue_name),
            created,
        }))
    }

    async fn get_queue_url(
        &self,
        request: Request<pb::GetQueueUrlRequest>,
    ) -> Reply<pb::GetQueueUrlResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        queues::validate_name("queue_name", &req.queue_name).map_err(super::status::from_domain)?;
        if !req.queue_owner_aws_account_id.is_empty()
            && req.queue_owner_aws_account_id != self.ctx.identity.account_id
        {
            return Err(super::status::invalid(
                "queue_owner_aws_account_id",
                format!(
                    "must be empty or this cluster's account id {}",
                    self.ctx.identity.account_id
                ),
            ));
        }
        let q = self.queue(how, &req.queue_name).await?;
        Ok(Response::new(pb::GetQueueUrlResponse {
            queue_url: self.url(&q.name),
            queue_arn: self.arn(&q.name),
        }))
    }

    async fn list_queues(
        &self,
        request: Request<pb::ListQueuesRequest>,
    ) -> Reply<pb::ListQueuesResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let list = ListQueues::new(&req.queue_name_prefix, req.max_results, &req.next_token)
            .map_err(super::status::from_domain)?;
        let page = self.ctx.ask(how, list).await?;
        Ok(Response::new(pb::ListQueuesResponse {
            queue_urls: page.names.iter().map(|n| self.url(n)).collect(),
            queue_names: page.names,
            next_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn delete_queue(
        &self,
        request: Request<pb::DeleteQueueRequest>,
    ) -> Reply<pb::DeleteQueueResponse> {
        let name = self.queue_name(&request.into_inner().queue_name)?;
        self.ctx.run(crate::queues::DeleteQueue { name }).await?;
        Ok(Response::new(pb::DeleteQueueResponse {}))
    }

    async fn get_queue_attributes(
        &self,
        request: Request<pb::GetQueueAttributesRequest>,
    ) -> Reply<pb::GetQueueAttributesResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let name = self.queue_name(&req.queue_name)?;
        let (q, state) = self
            .ctx
            .ask(how, crate::queues::QueueDetails { name })
            .await?;
        let mut all = q.attributes.to_map(|n| self.arn(n));
        all.insert(
            "ApproximateNumberOfMessages".into(),
            state.available.to_string(),
        );
        all.insert(
            "ApproximateNumberOfMessagesNotVisible".into(),
            state.in_flight.to_string(),
        );
        all.insert(
            "ApproximateNumberOfMessagesDelayed".into(),
            state.delayed.to_string(),
        );
        all.insert("CreatedTimestamp".into(), (q.created_ms / 1000).to_string());
        all.insert(
            "LastModifiedTimestamp".into(),
            (q.modified_ms / 1000).to_string(),
        );
        all.insert("QueueArn".into(), self.arn(&q.name));
        let names = if req.attribute_names.is_empty() {
            vec!["All".to_string()]
        } else {
            req.attribute_names
        };
        for n in &names {
            let known = n == "All"
                || all.contains_key(n)
                || matches!(
                    n.as_str(),
                    "RedrivePolicy"
                        | "FifoQueue"
                        | "ContentBasedDeduplication"
                        | "DeduplicationScope"
                        | "FifoThroughputLimit"
                );
            if !known {
                return Err(DomainError::invalid_with_code(
                    "InvalidAttributeName",
                    "attribute_names",
                    format!("unknown queue attribute {n:?}"),
                )
                .into_status());
            }
        }
        let attributes = all
            .into_iter()
            .filter(|(k, _)| names.iter().any(|n| n == "All" || n == k))
            .collect();
        Ok(Response::new(pb::GetQueueAttributesResponse { attributes }))
    }

    async fn set_queue_attributes(
        &self,
        request: Request<pb::SetQueueAttributesRequest>,
    ) -> Reply<pb::SetQueueAttributesResponse> {
        let req = request.into_inner();
        let name = self.queue_name(&req.queue_name)?;
        let map: BTreeMap<String, String> = req.attributes.into_iter().collect();
        let attributes = attributes::parse(&map, queues::is_fifo_name(&name))
            .map_err(super::status::from_domain)?;
        self.check_redrive(&name, &attributes).await?;
        self.ctx
            .run(crate::queues::SetQueueAttributes { name, attributes })
            .await?;
        Ok(Response::new(pb::SetQueueAttributesResponse {}))
    }

    async fn tag_queue(
        &self,
        request: Request<pb::TagQueueRequest>,
    ) -> Reply<pb::TagQueueResponse> {
        let req = request.into_inner();
        let name = self.queue_name(&req.queue_name)?;
        let tags: BTreeMap<String, String> = req.tags.into_iter().collect();
        if tags.is_empty() {
            return Err(super::status::invalid("tags", "must have at least one tag"));
        }
        self.ctx
            .tag(
                Tagged::Queue(name),
                Change::Add(tags),
                crate::tags::invalid_parameter,
            )
            .await?;
        Ok(Response::new(pb::TagQueueResponse {}))
    }

    async fn untag_queue(
        &self,
        request: Request<pb::UntagQueueRequest>,
    ) -> Reply<pb::UntagQueueResponse> {
        let req = request.into_inner();
        let name = self.queue_name(&req.queue_name)?;
        if req.tag_keys.is_empty() {
            return Err(super::status::invalid(
                "tag_keys",
                "must name at least one tag",
            ));
        }
        self.ctx
            .tag(
                Tagged::Queue(name),
                Change::Remove(req.tag_keys),
                crate::tags::invalid_parameter,
            )
            .await?;
        Ok(Response::new(pb::UntagQueueResponse {}))
    }

    async fn list_queue_tags(
        &self,
        request: Request<pb::ListQueueTagsRequest>,
    ) -> Reply<pb::ListQueueTagsResponse> {
        let how = consistency(&request)?;
        let name = self.queue_name(&request.into_inner().queue_name)?;
        let q = self.queue(how, &name).await?;
        Ok(Response::new(pb::ListQueueTagsResponse {
            tags: q.tags.into_iter().collect(),
        }))
    }

    async fn purge_queue(
        &self,
        request: Request<pb::PurgeQueueRequest>,
    ) -> Reply<pb::PurgeQueueResponse> {
        let name = self.queue_name(&request.into_inner().queue_name)?;
        self.ctx.run(crate::queues::PurgeQueue { name }).await?;
        Ok(Response::new(pb::PurgeQueueResponse {}))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Reply<pb::SendMessageResponse> {
        let req = request.into_inner();
        let queue = self.queue_name(&req.queue_name)?;
        let m = NewMessage::validate(
            "",
            queues::is_fifo_name(&queue),
            outgoing(
                req.message_body,
                req.delay_seconds,
                req.message_attributes,
                req.message_system_attributes,
                req.message_deduplication_id,
                req.message_group_id,
            ),
        )
        .map_err(super::status::from_domain)?;
        let sent_message = super::status::only(
            self.ctx
                .run(crate::queues::SendMessages {
                    queue,
                    messages: vec![m],
                })
                .await?,
            "SendMessage",
        )?;
        Ok(Response::new(sent(sent_message)))
    }

    type SendMessageStreamStream = super::send_stream::Replies;

    async fn send_message_stream(
        &self,
        request: Request<tonic::Streaming<pb::SendMessageStreamRequest>>,
    ) -> Reply<Self::SendMessageStreamStream> {
        Ok(Response::new(super::producer::serve::<
            super::send_stream::QueueProducer,
        >(self.ctx.clone(), request)))
    }

    async fn send_message_batch(
        &self,
        request: Request<pb::SendMessageBatchRequest>,
    ) -> Reply<pb::SendMessageBatchResponse> {
        let req = request.into_inner();
        let queue = self.queue_name(&req.queue_name)?;
        let fifo = queues::is_fifo_name(&queue);
        let batch = split(
            req.entries,
            |e| &e.id,
            |i, e| {
                NewMessage::validate(
                    &format!("entries[{i}]"),
                    fifo,
                    outgoing(
                        e.message_body,
                        e.delay_seconds,
                        e.message_attributes,
                        e.message_system_attributes,
                        e.message_deduplication_id,
                        e.message_group_id,
                    ),
                )
            },
        )?;
        message::validate_batch_size(&batch.valid).map_err(super::status::from_domain)?;
        let send = |messages| crate::queues::SendMessages { queue, messages };
        let (successful, failed) = batch
            .commit(&self.ctx, send, |id, s| pb::SendMessageBatchResultEntry {
                id,
                message_id: s.message_id,
                md5_of_message_body: s.md5_of_body,
                md5_of_message_attributes: s.md5_of_attributes.unwrap_or_default(),
                md5_of_message_system_attributes: s.md5_of_system_attributes.unwrap_or_default(),
                sequence_number: s.sequence_number.unwrap_or_default(),
            })
            .await?;
        Ok(Response::new(pb::SendMessageBatchResponse {
            successful,
            failed,
        }))
    }

    async fn receive_message(
        &self,
        request: Request<pb::ReceiveMessageRequest>,
    ) -> Reply<pb::ReceiveMessageResponse> {
        let req = request.into_inner();
        let queue = self.queue_name(&req.queue_name)?;
        let max = count_in(
            "max_number_of_messages",
            req.max_number_of_messages,
            1,
            sluice_core::limits::queues::RECEIVE_MAX,
        )?;
        let visibility_timeout = req
            .visibility_timeout
            .map(|v| seconds_in("visibility_timeout", v, attributes::VISIBILITY_TIMEOUT_MAX))
            .transpose()
            .map_err(super::status::from_domain)?;
        let wait = match req.wait_time_seconds {
            Some(w) => seconds_in("wait_time_seconds", w, attributes::RECEIVE_WAIT_MAX)
                .map_err(super::status::from_domain)?,
            // The queue's default; this node's view of it is good enough.
            None => match self.queue(Consistency::Local, &queue).await {
                Ok(q) => q.attributes.receive_wait_time,
                Err(_) => 0,
            },
        };
        let attempt_id = optional(&req.receive_request_attempt_id, |id| {
            message::validate_fifo_id("receive_request_attempt_id", id)?;
            Ok(id.to_string())
        })
        .map_err(super::status::from_domain)?;
        check_names(
            "message_system_attribute_names",
            &req.message_system_attribute_names,
            SYSTEM_ATTRIBUTES,
        )
        .map_err(super::status::from_domain)?;
        let request = ReceiveRequest {
            max,
            visibility_timeout,
            attempt_id,
        };
        let names = Names {
            system: req.message_system_attribute_names,
            attributes: req.message_attribute_names,
        };
        let deadline = Instant::now() + Duration::from_secs(u64::from(wait));
        let messages = receive_until(&self.ctx, &queue, &request, &names, deadline).await?;
        Ok(Response::new(pb::ReceiveMessageResponse { messages }))
    }

    type ReceiveMessageStreamStream = super::receive_stream::Replies;

    async fn receive_message_stream(
        &self,
        request: Request<tonic::Streaming<pb::ReceiveMessageStreamRequest>>,
    ) -> Reply<Self::ReceiveMessageStreamStream> {
        Ok(Response::new(super::receive_stream::serve(
            self.ctx.clone(),
            request,
        )))
    }

    async fn delete_message(
        &self,
        request: Request<pb::DeleteMessageRequest>,
    ) -> Reply<pb::DeleteMessageResponse> {
        let req = request.into_inner();
        let queue = self.queue_name(&req.queue_name)?;
        let receipt = open_receipt(&self.ctx, "receipt_handle", &req.receipt_handle)
            .map_err(super::status::from_domain)?;
        let out = self
            .ctx
            .run(crate::queues::DeleteMessages {
                queue,
                receipts: vec![receipt],
            })
            .await?;
        super::status::only(out, "DeleteMessage")?;
        Ok(Response::new(pb::DeleteMessageResponse {}))
    }

    async fn delete_message_batch(
        &self,
        request: Request<pb::DeleteMessageBatchRequest>,
    ) -> Reply<pb::DeleteMessageBatchResponse> {
        let req = request.into_inner();
        let queue = self.queue_name(&req.queue_name)?;
        let batch = split(
            req.entries,
            |e| &e.id,
            |i, e| {
                open_receipt(
                    &self.ctx,
                    &format!("entries[{i}].receipt_handle"),
                    &e.receipt_handle,
                )
            },
        )?;
        let delete = |receipts| crate::queues::DeleteMessages { queue, receipts };
        let (successful, failed) = batch
            .commit(&self.ctx, delete, |id, ()| {
                pb::DeleteMessageBatchResultEntry { id }
            })
            .await?;
        Ok(Response::new(pb::DeleteMessageBatchResponse {
            successful,
            failed,
        }))
    }

    async fn change_message_visibility(
        &self,
        request: Request<pb::ChangeMessageVisibilityRequest>,
    ) -> Reply<pb::ChangeMessageVisibilityResponse> {
        let req = request.into_inner();
        let queue = self.queue_name(&req.queue_name)?;
        let receipt = open_receipt(&self.ctx, "receipt_handle", &req.receipt_handle)
            .map_err(super::status::from_domain)?;
        let seconds = seconds_in(
            "visibility_timeout",
            req.visibility_timeout,
            attributes::VISIBILITY_TIMEOUT_MAX,
        )
        .map_err(super::status::from_domain)?;
        let out = self
            .ctx
            .run(crate::queues::ChangeVisibility {
                queue,
                changes: vec![(receipt, seconds)],
            })
            .await?;
        super::status::only(out, "ChangeMessageVisibility")?;
        Ok(Response::new(pb::ChangeMessageVisibilityResponse {}))
    }

    async fn change_message_visibility_batch(
        &self,
        request: Request<pb::ChangeMessageVisibilityBatchRequest>,
    ) -> Reply<pb::ChangeMessageVisibilityBatchResponse> {
        let req = request.into_inner();
        let queue = self.queue_name(&req.queue_name)?;
        let batch = split(
            req.entries,
            |e| &e.id,
            |i, e| {
                let r = open_receipt(
                    &self.ctx,
                    &format!("entries[{i}].receipt_handle"),
                    &e.receipt_handle,
                )?;
                let s = seconds_in(
                    &format!("entries[{i}].visibility_timeout"),
                    e.visibility_timeout,
                    attributes::VISIBILITY_TIMEOUT_MAX,
                )?;
                Ok((r, s))
            },
        )?;
        let change = |changes| crate::queues::ChangeVisibility { queue, changes };
        let (successful, failed) = batch
            .commit(&self.ctx, change, |id, ()| {
                pb::ChangeMessageVisibilityBatchResultEntry { id }
            })
            .await?;
        Ok(Response::new(pb::ChangeMessageVisibilityBatchResponse {
            successful,
            failed,
        }))
    }

    async fn list_dead_letter_source_queues(
        &self,
        request: Request<pb::ListDeadLetterSourceQueuesRequest>,
    ) -> Reply<pb::ListDeadLetterSourceQueuesResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let name = self.queue_name(&req.queue_name)?;
        let limit = count_in("max_results", req.max_results, 1000, 1000)?;
        let after = optional(&req.next_token, |token| {
            queues::decode_token(token).ok_or_else(|| {
                super::status::invalid(
                    "next_token",
                    "is not a token returned by ListDeadLetterSourceQueues",
                )
            })
        })?;
        let page = self
            .ctx
            .ask(how, crate::queues::DeadLetterSources { name, after, limit })
            .await?;
        Ok(Response::new(pb::ListDeadLetterSourceQueuesResponse {
            queue_urls: page.names.iter().map(|n| self.url(n)).collect(),
            queue_names: page.names,
            next_token: page.next_token.unwrap_or_default(),
        }))
    }

    async fn start_message_move_task(
        &self,
        request: Request<pb::StartMessageMoveTaskRequest>,
    ) -> Reply<pb::StartMessageMoveTaskResponse> {
        let req = request.into_inner();
        let queue = arn_ref("source_arn", &req.source_arn)?;
        let destination = req
            .destination_arn
            .as_deref()
            .map(|a| arn_ref("destination_arn", a))
            .transpose()?;
        let rate = match req.max_number_of_messages_per_second {
            None => None,
            Some(r) if (1..=500).contains(&r) => Some(r as u32),
            Some(r) => {
                return Err(super::status::invalid(
                    "max_number_of_messages_per_second",
                    format!("must be from 1 to 500, got {r}"),
                ))
            }
        };
        // As in SQS: the source must be some queue's dead-letter queue,
        // and a named destination must exist.
        let sources = self
            .ctx
            .ask(
                Consistency::Linearizable,
                crate::queues::DeadLetterSources {
                    name: queue.clone(),
                    after: None,
                    limit: 1,
                },
            )
            .await?
            .names;
        if sources.is_empty() {
            return Err(DomainError::invalid(
                "source_arn",
                format!("queue {queue:?} is not the dead-letter queue of any queue"),
            )
            .into_status());
        }
        if let Some(d) = &destination {
            self.queue(Consistency::Linearizable, d)
                .await
                .map_err(|s| {
                    if s.code() == tonic::Code::NotFound {
                        DomainError::invalid(
                            "destination_arn",
                            format!("queue {d:?} does not exist"),
                        )
                        .into_status()
                    } else {
                        s
                    }
                })?;
        }
        let handle = self
            .ctx
            .run(crate::queues::StartMoveTask {
                queue,
                destination,
                rate,
            })
            .await?;
        Ok(Response::new(pb::StartMessageMoveTaskResponse {
            task_handle: handle,
        }))
    }

    async fn list_message_move_tasks(
        &self,
        request: Request<pb::ListMessageMoveTasksRequest>,
    ) -> Reply<pb::ListMessageMoveTasksResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let name = arn_ref("source_arn", &req.source_arn)?;
        let max = count_in("max_results", req.max_results, 1, 10)? as usize;
        let tasks = self
            .ctx
            .ask(how, crate::queues::MoveTasks { name: name.clone() })
            .await?;
        Ok(Response::new(pb::ListMessageMoveTasksResponse {
            results: tasks
                .into_iter()
                .take(max)
                .map(|t| self.move_task_out(&name, t))
                .collect(),
        }))
    }

    async fn cancel_message_move_task(
        &self,
        request: Request<pb::CancelMessageMoveTaskRequest>,
    ) -> Reply<pb::CancelMessageMoveTaskResponse> {
        let handle = request.into_inner().task_handle;
        let not_found = || {
            super::status::from_domain(DomainError::not_found(
                "ResourceNotFoundException",
                format!("task_handle: no message move task {handle:?}"),
            ))
        };
        let qid = redrive::task_queue(&handle).ok_or_else(not_found)?;
        let queue = self
            .ctx
            .ask(Consistency::Linearizable, crate::queues::QueueName { qid })
            .await?
            .ok_or_else(not_found)?;
        let moved = self
            .ctx
            .run(crate::queues::CancelMoveTask {
                queue,
                handle: handle.clone(),
            })
            .await?;
        Ok(Response::new(pb::CancelMessageMoveTaskResponse {
            approximate_number_of_messages_moved: moved as i64,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_queue_url_names_a_queue_only_for_this_clusters_account_and_region() {
        let id = Identity::default();
        let name = |given: &str| queue_ref(&id, "queue_url", given);
        assert_eq!(name("orders").unwrap(), "orders");
        assert_eq!(
            name("http://127.0.0.1:7070/000000000000/orders").unwrap(),
            "orders"
        );
        assert_eq!(
            name("https://sqs.us-east-1.amazonaws.com/000000000000/orders").unwrap(),
            "orders"
        );
        for other in [
            "http://127.0.0.1:7070/123456789012/orders",
            "https://sqs.eu-west-1.amazonaws.com/000000000000/orders",
            "https://eu-west-1.queue.amazonaws.com/000000000000/orders",
        ] {
            let e = name(other).unwrap_err();
            assert_eq!(e.code(), tonic::Code::NotFound, "{other}");
            assert_eq!(
                e.metadata().get(crate::router::ERROR_CODE_HEADER).unwrap(),
                "QueueDoesNotExist"
            );
        }
        assert_eq!(
            name("http://h/000000000000/bad name").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
