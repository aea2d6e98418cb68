//! SNS over the AWS query protocol (form posts, XML answers), what every
//! SDK and the aws CLI speak to SNS. Each action becomes the
//! `sluice.v1.Topics` call of the same name; [`QUERY`] says how SNS writes
//! its lists and maps, and the handlers here read and write the JSON shape
//! of the SNS API reference.

use std::collections::HashMap;

use serde_json::{json, Map, Value};
use sluice_proto::v1 as pb;

use super::call::Calls;
use super::error::AwsError;
use super::json::{array, batch_failures, message_attributes, page, strings, Input};
use super::query::{self, map, Layout};

/// The gRPC service the actions run on.
pub const SERVICE: &str = "sluice.v1.Topics";
/// The service name in SigV4 credential scopes.
pub const SIGNING_NAME: &str = "sns";

/// SNS's lists are `Name.member.N`, its maps `Name.entry.N.key`; the
/// message attribute map names its entries' parts `Name` and `Value`.
pub const QUERY: Layout = Layout {
    xmlns: "http://sns.amazonaws.com/doc/2010-03-31/",
    flattened: false,
    members: &[
        map("Attributes", "Attributes", "key", "value"),
        map("MessageAttributes", "MessageAttributes", "Name", "Value"),
    ],
};

/// The actions served, for telling an unsigned form's service by its
/// `Action`.
pub const ACTIONS: &[&str] = &[
    "CreateTopic",
    "DeleteTopic",
    "ListTopics",
    "GetTopicAttributes",
    "SetTopicAttributes",
    "Subscribe",
    "ConfirmSubscription",
    "Unsubscribe",
    "ListSubscriptions",
    "ListSubscriptionsByTopic",
    "GetSubscriptionAttributes",
    "SetSubscriptionAttributes",
    "Publish",
    "PublishBatch",
    "TagResource",
    "UntagResource",
    "ListTagsForResource",
];

/// Runs `action` with the request's members (converted from its form) as
/// `caller`; the answer's members.
pub async fn handle(call: Calls<'_>, action: &str, input: Input<'_>) -> Result<Value, AwsError> {
    match action {
        "CreateTopic" => {
            let req = pb::CreateTopicRequest {
                name: input.required("Name")?,
                attributes: input.string_map("Attributes")?,
                tags: tags(&input)?,
            };
            let r: pb::CreateTopicResponse = call.run("CreateTopic", req).await?;
            Ok(json!({ "TopicArn": r.topic_arn }))
        }
        "DeleteTopic" => {
            let req = pb::DeleteTopicRequest {
                topic_arn: input.required("TopicArn")?,
            };
            call.done::<_, pb::DeleteTopicResponse>("DeleteTopic", req)
                .await
        }
        "ListTopics" => {
            let req = pb::ListTopicsRequest {
                next_token: input.string("NextToken")?.unwrap_or_default(),
            };
            let r: pb::ListTopicsResponse = call.run("ListTopics", req).await?;
            let topics = array(r.topic_arns, |arn| json!({ "TopicArn": arn }));
            Ok(page("Topics", topics, "NextToken", r.next_token))
        }
        "GetTopicAttributes" => {
            let req = pb::GetTopicAttributesRequest {
                topic_arn: input.required("TopicArn")?,
            };
            let r: pb::GetTopicAttributesResponse = call.run("GetTopicAttributes", req).await?;
            Ok(json!({ "Attributes": r.attributes }))
        }
        "SetTopicAttributes" => {
            let req = pb::SetTopicAttributesRequest {
                topic_arn: input.required("TopicArn")?,
                attribute_name: input.required("AttributeName")?,
                attribute_value: input.string("AttributeValue")?.unwrap_or_default(),
            };
            call.done::<_, pb::SetTopicAttributesResponse>("SetTopicAttributes", req)
                .await
        }
        "Subscribe" => {
            let req = pb::SubscribeRequest {
                topic_arn: input.required("TopicArn")?,
                protocol: input.required("Protocol")?,
                endpoint: input.string("Endpoint")?.unwrap_or_default(),
                attributes: input.string_map("Attributes")?,
                return_subscription_arn: input.bool("ReturnSubscriptionArn")?.unwrap_or(false),
            };
            let r: pb::SubscribeResponse = call.run("Subscribe", req).await?;
            Ok(json!({ "SubscriptionArn": r.subscription_arn }))
        }
        "ConfirmSubscription" => {
            let req = pb::ConfirmSubscriptionRequest {
                topic_arn: input.required("TopicArn")?,
                token: input.required("Token")?,
                authenticate_on_unsubscribe: input
                    .bool("AuthenticateOnUnsubscribe")?
                    .unwrap_or(false),
            };
            let r: pb::ConfirmSubscriptionResponse = call.run("ConfirmSubscription", req).await?;
            Ok(json!({ "SubscriptionArn": r.subscription_arn }))
        }
        "Unsubscribe" => {
            let req = pb::UnsubscribeRequest {
                subscription_arn: input.required("SubscriptionArn")?,
            };
            call.done::<_, pb::UnsubscribeResponse>("Unsubscribe", req)
                .await
        }
        "ListSubscriptions" => {
            let req = pb::ListSubscriptionsRequest {
                next_token: input.string("NextToken")?.unwrap_or_default(),
            };
            subscriptions(call.run("ListSubscriptions", req).await?)
        }
        "ListSubscriptionsByTopic" => {
            let req = pb::ListSubscriptionsByTopicRequest {
                topic_arn: input.required("TopicArn")?,
                next_token: input.string("NextToken")?.unwrap_or_default(),
            };
            subscriptions(call.run("ListSubscriptionsByTopic", req).await?)
        }
        "GetSubscriptionAttributes" => {
            let req = pb::GetSubscriptionAttributesRequest {
                subscription_arn: input.required("SubscriptionArn")?,
            };
            let r: pb::GetSubscriptionAttributesResponse =
                call.run("GetSubscriptionAttributes", req).await?;
            Ok(json!({ "Attributes": r.attributes }))
        }
        "SetSubscriptionAttributes" => {
            let req = pb::SetSubscriptionAttributesRequest {
                subscription_arn: input.required("SubscriptionArn")?,
                attribute_name: input.required("AttributeName")?,
                attribute_value: input.string("AttributeValue")?.unwrap_or_default(),
            };
            call.done::<_, pb::SetSubscriptionAttributesResponse>("SetSubscriptionAttributes", req)
                .await
        }
        "Publish" => {
            if input.string("PhoneNumber")?.is_some() {
                return Err(AwsError::invalid(
                    "PhoneNumber",
                    "Sluice sends no SMS: publish to a topic",
                ));
            }
            // `TargetArn` is for platform endpoints, which Sluice has not;
            // a topic's ARN there is the same as in `TopicArn`.
            let topic_arn = match input.string("TopicArn")? {
                Some(arn) => arn,
                None => input
                    .string("TargetArn")?
                    .ok_or_else(|| AwsError::missing("TopicArn"))?,
            };
            let req = pb::PublishRequest {
                topic_arn,
                message: input.required("Message")?,
                subject: input.string("Subject")?.unwrap_or_default(),
                message_structure: input.string("MessageStructure")?.unwrap_or_default(),
                message_attributes: message_attributes(&input, "MessageAttributes")?,
                message_group_id: input.string("MessageGroupId")?.unwrap_or_default(),
                message_deduplication_id: input
                    .string("MessageDeduplicationId")?
                    .unwrap_or_default(),
            };
            let r: pb::PublishResponse = call.run("Publish", req).await?;
            Ok(Value::Object(published(String::new(), r)))
        }
        "PublishBatch" => publish_batch(&call, &input).await,
        "TagResource" => {
            let req = pb::TagResourceRequest {
                resource_arn: input.required("ResourceArn")?,
                tags: tags(&input)?,
            };
            call.done::<_, pb::TagResourceResponse>("TagResource", req)
                .await
        }
        "UntagResource" => {
            let req = pb::UntagResourceRequest {
                resource_arn: input.required("ResourceArn")?,
                tag_keys: input.strings("TagKeys")?,
            };
            call.done::<_, pb::UntagResourceResponse>("UntagResource", req)
                .await
        }
        "ListTagsForResource" => {
            let req = pb::ListTagsForResourceRequest {
                resource_arn: input.required("ResourceArn")?,
            };
            let r: pb::ListTagsForResourceResponse = call.run("ListTagsForResource", req).await?;
            let mut tags: Vec<(String, String)> = r.tags.into_iter().collect();
            tags.sort();
            let tags: Vec<Value> = tags
                .into_iter()
                .map(|(k, v)| json!({ "Key": k, "Value": v }))
                .collect();
            Ok(json!({ "Tags": tags }))
        }
        other => Err(query::invalid_action(other)),
    }
}

async fn publish_batch(call: &Calls<'_>, input: &Input<'_>) -> Result<Value, AwsError> {
    let entries = input.each("PublishBatchRequestEntries", |e| {
        Ok(pb::PublishBatchRequestEntry {
            id: e.required("Id")?,
            message: e.required("Message")?,
            subject: e.string("Subject")?.unwrap_or_default(),
            message_structure: e.string("MessageStructure")?.unwrap_or_default(),
            message_attributes: message_attributes(e, "MessageAttributes")?,
            message_group_id: e.string("MessageGroupId")?.unwrap_or_default(),
            message_deduplication_id: e.string("MessageDeduplicationId")?.unwrap_or_default(),
        })
    })?;
    let req = pb::PublishBatchRequest {
        topic_arn: input.required("TopicArn")?,
        entries,
    };
    let r: pb::PublishBatchResponse = call.run("PublishBatch", req).await?;
    let successful = array(r.successful, |s| {
        let one = pb::PublishResponse {
            message_id: s.message_id,
            sequence_number: s.sequence_number,
        };
        Value::Object(published(s.id, one))
    });
    Ok(json!({ "Successful": successful, "Failed": batch_failures(r.failed) }))
}

/// What SNS answers for a message published, alone or (with the entry's
/// `id`) in a batch.
fn published(id: String, r: pb::PublishResponse) -> Map<String, Value> {
    strings([
        ("Id", id),
        ("MessageId", r.message_id),
        ("SequenceNumber", r.sequence_number),
    ])
}

/// `e` with the HTTP status SNS answers its code with: a missing topic or
/// subscription (`NotFound`) is 404, as AWS answers it; the rest keep the
/// status of their kind.
pub fn sns_error(mut e: AwsError) -> AwsError {
    if matches!(e.code.as_str(), "NotFound" | "ResourceNotFound") {
        e.http_status = 404;
    }
    e
}

/// `Tags.member.N.Key` / `.Value` as a map; a key given twice is refused.
fn tags(input: &Input<'_>) -> Result<HashMap<String, String>, AwsError> {
    let mut out = HashMap::new();
    for (i, tag) in input.objects("Tags")?.iter().enumerate() {
        let field = format!("Tags.member.{}", i + 1);
        let key = tag
            .string("Key")?
            .ok_or_else(|| AwsError::missing(&format!("{field}.Key")))?;
        let value = tag.string("Value")?.unwrap_or_default();
        if out.insert(key, value).is_some() {
            return Err(AwsError::invalid(
                &format!("{field}.Key"),
                "must differ from the other tags' keys",
            ));
        }
    }
    Ok(out)
}

fn subscriptions(r: pb::ListSubscriptionsResponse) -> Result<Value, AwsError> {
    let subscriptions = array(r.subscriptions, |s| {
        json!({
            "SubscriptionArn": s.subscription_arn,
            "Owner": s.owner,
            "Protocol": s.protocol,
            "Endpoint": s.endpoint,
            "TopicArn": s.topic_arn,
        })
    });
    Ok(page(
        "Subscriptions",
        subscriptions,
        "NextToken",
        r.next_token,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_topic_is_404_and_other_errors_keep_their_status() {
        let missing = AwsError::from_status(&crate::api::status::from_domain(
            crate::error::DomainError::not_found("NotFound", "topic \"t\" does not exist"),
        ));
        assert_eq!(missing.http_status, 400);
        let missing = sns_error(missing);
        assert_eq!(
            (missing.http_status, missing.code.as_str()),
            (404, "NotFound")
        );
        let invalid = sns_error(AwsError::invalid("Name", "too long"));
        assert_eq!(invalid.http_status, 400);
    }
}
