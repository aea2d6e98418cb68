//! SQS over AWS JSON 1.0 (`X-Amz-Target: AmazonSQS.<Action>`): what boto3,
//! the aws CLI, aws-sdk-rust and the current JavaScript, Java and Go SDKs
//! send. Each action becomes the `sluice.v1.Queues` call of the same name.
//!
//! Queue URLs are built from the request's `Host`
//! (`http://HOST/ACCOUNT/NAME`), so an SDK pointed at any node gets URLs of
//! that node; a URL given back is resolved by its last path segment (the
//! gRPC API checks its account).

use serde_json::{json, Map, Value};
use sluice_proto::v1 as pb;

use super::call::Calls;
use super::error::AwsError;
use super::json::{
    array, batch_failures, message_attributes, message_attributes_out, page, strings, Input,
};
use super::query::{list, map, only, Layout};

/// The JSON content type of the answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.0";
/// The namespace of error types.
pub const NAMESPACE: &str = "com.amazonaws.sqs";
/// The gRPC service the actions run on.
pub const SERVICE: &str = "sluice.v1.Queues";
/// The service name in SigV4 credential scopes.
pub const SIGNING_NAME: &str = "sqs";

/// The SQS query protocol's names for the lists and maps of the JSON
/// shape (older SDKs post forms: `Attribute.1.Name`, `AttributeName.1`).
pub const QUERY: Layout = Layout {
    xmlns: "http://queue.amazonaws.com/doc/2012-11-05/",
    flattened: true,
    members: &[
        map("Attributes", "Attribute", "Name", "Value"),
        list("AttributeNames", "AttributeName"),
        map("MessageAttributes", "MessageAttribute", "Name", "Value"),
        list("MessageAttributeNames", "MessageAttributeName"),
        map(
            "MessageSystemAttributes",
            "MessageSystemAttribute",
            "Name",
            "Value",
        ),
        list("MessageSystemAttributeNames", "MessageSystemAttributeName"),
        list("StringListValues", "StringListValue"),
        list("BinaryListValues", "BinaryListValue"),
        only(map("tags", "Tag", "Key", "Value"), &["CreateQueue"]),
        map("Tags", "Tag", "Key", "Value"),
        list("TagKeys", "TagKey"),
        list("QueueUrls", "QueueUrl"),
        list("queueUrls", "QueueUrl"),
        list("Messages", "Message"),
        list("Failed", "BatchResultErrorEntry"),
        list("Results", "ListMessageMoveTasksResultEntry"),
        list("AWSAccountIds", "AWSAccountId"),
        list("Actions", "ActionName"),
        only(
            list("Entries", "SendMessageBatchRequestEntry"),
            &["SendMessageBatch"],
        ),
        only(
            list("Entries", "DeleteMessageBatchRequestEntry"),
            &["DeleteMessageBatch"],
        ),
        only(
            list("Entries", "ChangeMessageVisibilityBatchRequestEntry"),
            &["ChangeMessageVisibilityBatch"],
        ),
        only(
            list("Successful", "SendMessageBatchResultEntry"),
            &["SendMessageBatch"],
        ),
        only(
            list("Successful", "DeleteMessageBatchResultEntry"),
            &["DeleteMessageBatch"],
        ),
        only(
            list("Successful", "ChangeMessageVisibilityBatchResultEntry"),
            &["ChangeMessageVisibilityBatch"],
        ),
    ],
};

/// Where the answer's queue URLs point: `http(s)://HOST` and the account.
pub struct Urls {
    /// `http://host:port` (`https` with TLS), from the request.
    pub base: String,
    /// The cluster's account id.
    pub account_id: String,
}

impl Urls {
    fn of(&self, name: &str) -> String {
        format!("{}/{}/{name}", self.base, self.account_id)
    }

    /// The URLs of the queues `names`, as a JSON array.
    fn all(&self, names: &[String]) -> Value {
        Value::Array(names.iter().map(|n| Value::String(self.of(n))).collect())
    }

    /// The URL of the queue a gRPC answer's URL names.
    fn rebase(&self, grpc_url: &str) -> String {
        self.of(grpc_url.rsplit('/').next().unwrap_or(grpc_url))
    }
}

/// Runs `action` with the request's members as `caller`; the answer's
/// members, in the JSON shape.
pub async fn handle(
    calls: Calls<'_>,
    urls: &Urls,
    action: &str,
    input: Input<'_>,
) -> Result<Value, AwsError> {
    let call = Call { calls, urls };
    match action {
        "CreateQueue" => call.create_queue(&input).await,
        "GetQueueUrl" => call.get_queue_url(&input).await,
        "ListQueues" => call.list_queues(&input).await,
        "DeleteQueue" => {
            let req = pb::DeleteQueueRequest {
                queue_name: queue(&input)?,
            };
            call.done::<_, pb::DeleteQueueResponse>("DeleteQueue", req).await
        }
        "GetQueueAttributes" => {
            let req = pb::GetQueueAttributesRequest {
                queue_name: queue(&input)?,
                attribute_names: input.strings("AttributeNames")?,
            };
            let r: pb::GetQueueAttributesResponse = call.run("GetQueueAttributes", req).await?;
            Ok(json!({ "Attributes": r.attributes }))
        }
        "SetQueueAttributes" => {
            let attributes = input.string_map("Attributes")?;
            if input.object("Attributes")?.is_none() {
                return Err(AwsError::missing("Attributes"));
            }
            let req = pb::SetQueueAttributesRequest {
                queue_name: queue(&input)?,
                attributes,
            };
            call.done::<_, pb::SetQueueAttributesResponse>("SetQueueAttributes", req).await
        }
        "TagQueue" => {
            let req = pb::TagQueueRequest {
                queue_name: queue(&input)?,
                tags: input.string_map("Tags")?,
            };
            call.done::<_, pb::TagQueueResponse>("TagQueue", req).await
        }
        "UntagQueue" => {
            let req = pb::UntagQueueRequest {
                queue_name: queue(&input)?,
                tag_keys: input.strings("TagKeys")?,
            };
            call.done::<_, pb::UntagQueueResponse>("UntagQueue", req).await
        }
        "ListQueueTags" => {
            let req = pb::ListQueueTagsRequest {
                queue_name: queue(&input)?,
            };
            let r: pb::ListQueueTagsResponse = call.run("ListQueueTags", req).await?;
            Ok(json!({ "Tags": r.tags }))
        }
        "PurgeQueue" => {
            let req = pb::PurgeQueueRequest {
                queue_name: queue(&input)?,
            };
            call.done::<_, pb::PurgeQueueResponse>("PurgeQueue", req).await
        }
        "SendMessage" => call.send_message(&input).await,
        "SendMessageBatch" => call.send_message_batch(&input).await,
        "ReceiveMessage" => call.receive_message(&input).await,
        "DeleteMessage" => {
            let req = pb::DeleteMessageRequest {
                queue_name: queue(&input)?,
                receipt_handle: input.required("ReceiptHandle")?,
            };
            call.done::<_, pb::DeleteMessageResponse>("DeleteMessage", req).await
        }
        "DeleteMessageBatch" => call.delete_message_batch(&input).await,
        "ChangeMessageVisibility" => {
            let req = pb::ChangeMessageVisibilityRequest {
                queue_name: queue(&input)?,
                receipt_handle: input.required("ReceiptHandle")?,
                visibility_timeout: input
                    .int("VisibilityTimeout")?
                    .ok_or_else(|| AwsError::missing("VisibilityTimeout"))?,
            };
            call.done::<_, pb::ChangeMessageVisibilityResponse>("ChangeMessageVisibility", req).await
        }
        "ChangeMessageVisibilityBatch" => call.change_visibility_batch(&input).await,
        "ListDeadLetterSourceQueues" => call.list_dead_letter_sources(&input).await,
        "StartMessageMoveTask" => {
            let req = pb::StartMessageMoveTaskRequest {
                source_arn: input.required("SourceArn")?,
                destination_arn: input.string("DestinationArn")?,
                max_number_of_messages_per_second: input.int("MaxNumberOfMessagesPerSecond")?,
            };
            let r: pb::StartMessageMoveTaskResponse =
                call.run("StartMessageMoveTask", req).await?;
            Ok(json!({ "TaskHandle": r.task_handle }))
        }
        "CancelMessageMoveTask" => {
            let req = pb::CancelMessageMoveTaskRequest {
                task_handle: input.required("TaskHandle")?,
            };
            let r: pb::CancelMessageMoveTaskResponse =
                call.run("CancelMessageMoveTask", req).await?;
            Ok(json!({ "ApproximateNumberOfMessagesMoved": r.approximate_number_of_messages_moved }))
        }
        "ListMessageMoveTasks" => call.list_move_tasks(&input).await,
        "AddPermission" | "RemovePermission" => Err(AwsError {
            http_status: 400,
            code: "UnsupportedOperation".into(),
            message: format!(
                "{action}: Sluice authorises with its own principals and policies, not queue policies"
            ),
        }),
        other => Err(AwsError::unknown_operation(&format!("AmazonSQS.{other}"))),
    }
}

struct Call<'a> {
    calls: Calls<'a>,
    urls: &'a Urls,
}

impl<'a> std::ops::Deref for Call<'a> {
    type Target = Calls<'a>;

    fn deref(&self) -> &Calls<'a> {
        &self.calls
    }
}

impl Call<'_> {
    async fn create_queue(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let req = pb::CreateQueueRequest {
            queue_name: input.required("QueueName")?,
            attributes: input.string_map("Attributes")?,
            tags: input.string_map("tags")?,
        };
        let r: pb::CreateQueueResponse = self.run("CreateQueue", req).await?;
        Ok(json!({ "QueueUrl": self.urls.rebase(&r.queue_url) }))
    }

    async fn get_queue_url(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let req = pb::GetQueueUrlRequest {
            queue_name: input.required("QueueName")?,
            queue_owner_aws_account_id: input.string("QueueOwnerAWSAccountId")?.unwrap_or_default(),
        };
        let r: pb::GetQueueUrlResponse = self.run("GetQueueUrl", req).await?;
        Ok(json!({ "QueueUrl": self.urls.rebase(&r.queue_url) }))
    }

    async fn list_queues(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let req = pb::ListQueuesRequest {
            queue_name_prefix: input.string("QueueNamePrefix")?.unwrap_or_default(),
            max_results: input.int("MaxResults")?.unwrap_or(0),
            next_token: input.string("NextToken")?.unwrap_or_default(),
        };
        let r: pb::ListQueuesResponse = self.run("ListQueues", req).await?;
        let mut out = strings([("NextToken", r.next_token)]);
        // SQS leaves the member out when no queue matches.
        if !r.queue_names.is_empty() {
            out.insert("QueueUrls".into(), self.urls.all(&r.queue_names));
        }
        Ok(Value::Object(out))
    }

    async fn list_dead_letter_sources(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let req = pb::ListDeadLetterSourceQueuesRequest {
            queue_name: queue(input)?,
            max_results: input.int("MaxResults")?.unwrap_or(0),
            next_token: input.string("NextToken")?.unwrap_or_default(),
        };
        let r: pb::ListDeadLetterSourceQueuesResponse =
            self.run("ListDeadLetterSourceQueues", req).await?;
        let urls = self.urls.all(&r.queue_names);
        Ok(page("queueUrls", urls, "NextToken", r.next_token))
    }

    async fn send_message(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let req = pb::SendMessageRequest {
            queue_name: queue(input)?,
            message_body: input.required("MessageBody")?,
            delay_seconds: input.int("DelaySeconds")?,
            message_attributes: message_attributes(input, "MessageAttributes")?,
            message_system_attributes: message_attributes(input, "MessageSystemAttributes")?,
            message_deduplication_id: input.string("MessageDeduplicationId")?.unwrap_or_default(),
            message_group_id: input.string("MessageGroupId")?.unwrap_or_default(),
        };
        let r: pb::SendMessageResponse = self.run("SendMessage", req).await?;
        Ok(Value::Object(sent(String::new(), r)))
    }

    async fn send_message_batch(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let entries = input.each("Entries", |e| {
            Ok(pb::SendMessageBatchRequestEntry {
                id: e.required("Id")?,
                message_body: e.required("MessageBody")?,
                delay_seconds: e.int("DelaySeconds")?,
                message_attributes: message_attributes(e, "MessageAttributes")?,
                message_system_attributes: message_attributes(e, "MessageSystemAttributes")?,
                message_deduplication_id: e.string("MessageDeduplicationId")?.unwrap_or_default(),
                message_group_id: e.string("MessageGroupId")?.unwrap_or_default(),
            })
        })?;
        let req = pb::SendMessageBatchRequest {
            queue_name: queue(input)?,
            entries,
        };
        let r: pb::SendMessageBatchResponse = self.run("SendMessageBatch", req).await?;
        let successful = array(r.successful, |s| {
            let one = pb::SendMessageResponse {
                message_id: s.message_id,
                md5_of_message_body: s.md5_of_message_body,
                md5_of_message_attributes: s.md5_of_message_attributes,
                md5_of_message_system_attributes: s.md5_of_message_system_attributes,
                sequence_number: s.sequence_number,
            };
            Value::Object(sent(s.id, one))
        });
        Ok(json!({ "Successful": successful, "Failed": batch_failures(r.failed) }))
    }

    async fn receive_message(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        // `AttributeNames` is the older name of `MessageSystemAttributeNames`.
        let mut system = input.strings("MessageSystemAttributeNames")?;
        for name in input.strings("AttributeNames")? {
            if !system.contains(&name) {
                system.push(name);
            }
        }
        let req = pb::ReceiveMessageRequest {
            queue_name: queue(input)?,
            message_system_attribute_names: system,
            message_attribute_names: input.strings("MessageAttributeNames")?,
            max_number_of_messages: input.int("MaxNumberOfMessages")?.unwrap_or(0),
            visibility_timeout: input.int("VisibilityTimeout")?,
            wait_time_seconds: input.int("WaitTimeSeconds")?,
            receive_request_attempt_id: input
                .string("ReceiveRequestAttemptId")?
                .unwrap_or_default(),
        };
        let r: pb::ReceiveMessageResponse = self.run("ReceiveMessage", req).await?;
        if r.messages.is_empty() {
            return Ok(json!({}));
        }
        let messages = array(r.messages, |m| {
            let mut out = strings([
                ("MessageId", m.message_id),
                ("ReceiptHandle", m.receipt_handle),
                ("MD5OfBody", m.md5_of_body),
                ("MD5OfMessageAttributes", m.md5_of_message_attributes),
            ]);
            out.insert("Body".into(), Value::String(m.body));
            if !m.attributes.is_empty() {
                out.insert("Attributes".into(), json!(m.attributes));
            }
            if !m.message_attributes.is_empty() {
                let attributes = message_attributes_out(m.message_attributes);
                out.insert("MessageAttributes".into(), attributes);
            }
            Value::Object(out)
        });
        Ok(json!({ "Messages": messages }))
    }

    async fn delete_message_batch(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let entries = input.each("Entries", |e| {
            Ok(pb::DeleteMessageBatchRequestEntry {
                id: e.required("Id")?,
                receipt_handle: e.required("ReceiptHandle")?,
            })
        })?;
        let req = pb::DeleteMessageBatchRequest {
            queue_name: queue(input)?,
            entries,
        };
        let r: pb::DeleteMessageBatchResponse = self.run("DeleteMessageBatch", req).await?;
        let ids = r.successful.into_iter().map(|s| s.id).collect();
        Ok(batch_ids(ids, r.failed))
    }

    async fn change_visibility_batch(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let entries = input.each("Entries", |e| {
            Ok(pb::ChangeMessageVisibilityBatchRequestEntry {
                id: e.required("Id")?,
                receipt_handle: e.required("ReceiptHandle")?,
                visibility_timeout: e.int("VisibilityTimeout")?.unwrap_or(0),
            })
        })?;
        let req = pb::ChangeMessageVisibilityBatchRequest {
            queue_name: queue(input)?,
            entries,
        };
        let r: pb::ChangeMessageVisibilityBatchResponse =
            self.run("ChangeMessageVisibilityBatch", req).await?;
        let ids = r.successful.into_iter().map(|s| s.id).collect();
        Ok(batch_ids(ids, r.failed))
    }

    async fn list_move_tasks(&self, input: &Input<'_>) -> Result<Value, AwsError> {
        let req = pb::ListMessageMoveTasksRequest {
            source_arn: input.required("SourceArn")?,
            max_results: input.int("MaxResults")?.unwrap_or(0),
        };
        let r: pb::ListMessageMoveTasksResponse = self.run("ListMessageMoveTasks", req).await?;
        let results = array(r.results, |t| {
            let mut out = strings([
                ("TaskHandle", t.task_handle),
                ("Status", t.status),
                ("SourceArn", t.source_arn),
                ("DestinationArn", t.destination_arn),
                ("FailureReason", t.failure_reason),
            ]);
            if let Some(rate) = t.max_number_of_messages_per_second {
                out.insert("MaxNumberOfMessagesPerSecond".into(), json!(rate));
            }
            out.insert(
                "ApproximateNumberOfMessagesMoved".into(),
                json!(t.approximate_number_of_messages_moved),
            );
            out.insert(
                "ApproximateNumberOfMessagesToMove".into(),
                json!(t.approximate_number_of_messages_to_move),
            );
            out.insert("StartedTimestamp".into(), json!(t.started_timestamp));
            Value::Object(out)
        });
        Ok(json!({ "Results": results }))
    }
}

/// What SQS answers for a message sent, alone or (with the entry's `id`)
/// in a batch.
fn sent(id: String, r: pb::SendMessageResponse) -> Map<String, Value> {
    strings([
        ("Id", id),
        ("MessageId", r.message_id),
        ("MD5OfMessageBody", r.md5_of_message_body),
        ("MD5OfMessageAttributes", r.md5_of_message_attributes),
        (
            "MD5OfMessageSystemAttributes",
            r.md5_of_message_system_attributes,
        ),
        ("SequenceNumber", r.sequence_number),
    ])
}

/// A batch's answer when a success carries only its entry's id.
fn batch_ids(ids: Vec<String>, failed: Vec<pb::BatchResultErrorEntry>) -> Value {
    let successful = array(ids, |id| json!({ "Id": id }));
    json!({ "Successful": successful, "Failed": batch_failures(failed) })
}

/// The queue a request names (`QueueUrl`, a URL or a name).
fn queue(input: &Input<'_>) -> Result<String, AwsError> {
    input.required("QueueUrl")
}
