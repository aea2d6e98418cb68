//! `sluice.v1.Topics`.
//!
//! Requests are validated here and turned into commands and queries. The
//! randomness a subscription needs (its id, its confirmation token) is drawn
//! here too, so the state machine stays deterministic.

use super::status::IntoStatus;
use std::collections::BTreeMap;

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Reply;

use super::fields::next_token;
use super::publish_stream::publish_input;
use super::queues::split;
use super::refs::topic_ref;
use super::{consistency, Context};
use crate::error::DomainError;
use crate::tags::{Change, Tagged};
use crate::topics::policy::DeliveryPolicy;
use crate::topics::publish::Publication;
use crate::topics::subscription::{self, normalize_endpoint, Protocol, Subscription};
use crate::topics::subscriptions::{self, Subscribe};
use crate::topics::{self, CreateTopic, Topic};

/// Topics and subscriptions per list page.
const PAGE: u32 = 100;

/// Serves the topic API.
pub struct TopicsApi {
    ctx: Context,
}

impl TopicsApi {
    /// A topic API over `ctx`.
    pub fn new(ctx: Context) -> Self {
        TopicsApi { ctx }
    }

    fn topic_arn(&self, name: &str) -> String {
        self.ctx.identity.topic_arn(name)
    }

    fn subscription_arn(&self, topic: &str, s: &Subscription) -> String {
        format!("{}:{}", self.topic_arn(topic), s.id)
    }
}

/// The (topic, subscription id) of a subscription ARN.
pub fn subscription_ref(field: &str, arn: &str) -> Result<(String, String), Status> {
    let bad = || {
        DomainError::invalid_with_code(
            "InvalidParameter",
            field,
            format!("{arn:?} is not a subscription ARN (arn:aws:sns:REGION:ACCOUNT:TOPIC:ID)"),
        )
    };
    let rest = arn
        .strip_prefix("arn:")
        .ok_or_else(bad)
        .map_err(super::status::from_domain)?;
    let parts: Vec<&str> = rest.splitn(6, ':').collect();
    let [_, "sns", _, _, topic, id] = parts.as_slice() else {
        return Err(bad().into_status());
    };
    topics::validate_name(field, topic).map_err(super::status::from_domain)?;
    if id.is_empty() || id.len() > 100 || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    {
        return Err(bad().into_status());
    }
    Ok((topic.to_string(), id.to_string()))
}

fn token_of(parts: &[&str]) -> String {
    hex::encode(parts.join("\0"))
}

fn parse_token(field: &str, token: &str, parts: usize) -> Result<Option<Vec<String>>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || topics::invalid(field, "is not a token returned by this call");
    let bytes = hex::decode(token)
        .map_err(|_| bad())
        .map_err(super::status::from_domain)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| bad())
        .map_err(super::status::from_domain)?;
    let out: Vec<String> = text.split('\0').map(str::to_string).collect();
    if out.len() != parts {
        return Err(bad().into_status());
    }
    Ok(Some(out))
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn topic_attributes(
    arn: &str,
    account: &str,
    t: &Topic,
    c: &topics::TopicCounts,
) -> BTreeMap<String, String> {
    let mut a = t.attributes.clone();
    a.insert("TopicArn".into(), arn.to_string());
    a.insert("Owner".into(), account.to_string());
    a.insert("SubscriptionsConfirmed".into(), c.confirmed.to_string());
    a.insert("SubscriptionsPending".into(), c.pending.to_string());
    a.insert("SubscriptionsDeleted".into(), "0".into());
    a.insert("OutboxPending".into(), c.outbox.to_string());
    a.insert("FifoTopic".into(), t.fifo.to_string());
    if t.fifo {
        a.entry("ContentBasedDeduplication".into())
            .or_insert_with(|| "false".into());
    }
    let effective = DeliveryPolicy::effective(t.delivery_policy().as_ref(), None);
    a.insert(
        "EffectiveDeliveryPolicy".into(),
        serde_json::json!({
            "http": {
                "defaultHealthyRetryPolicy": serde_json::from_str::<serde_json::Value>(&effective.to_json())
                    .ok()
                    .and_then(|v| v.get("healthyRetryPolicy").cloned()),
                "disableSubscriptionOverrides": t.delivery_policy().is_some_and(|p| p.disable_overrides),
            }
        })
        .to_string(),
    );
    a
}

#[tonic::async_trait]
impl pb::topics_server::Topics for TopicsApi {
    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Reply<pb::CreateTopicResponse> {
        let req = request.into_inner();
        let cmd = CreateTopic::new(
            &req.name,
            req.attributes.into_iter().collect(),
            req.tags.into_iter().collect(),
        )
        .map_err(super::status::from_domain)?;
        let name = cmd.name.clone();
        let created = self.ctx.run(cmd).await?;
        Ok(Response::new(pb::CreateTopicResponse {
            topic_arn: self.topic_arn(&name),
            created,
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Reply<pb::DeleteTopicResponse> {
        let name = topic_ref("topic_arn", &request.into_inner().topic_arn)?;
        self.ctx.run(crate::topics::DeleteTopic { name }).await?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Reply<pb::ListTopicsResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let after = parse_token("next_token", &req.next_token, 1)?.map(|mut v| v.remove(0));
        let (names, more) = self
            .ctx
            .ask(how, crate::topics::ListTopics { after, limit: PAGE })
            .await?;
        let next_token = next_token(more, &names, |n| token_of(&[n]));
        Ok(Response::new(pb::ListTopicsResponse {
            topic_arns: names.iter().map(|n| self.topic_arn(n)).collect(),
            next_token,
        }))
    }

    async fn get_topic_attributes(
        &self,
        request: Request<pb::GetTopicAttributesRequest>,
    ) -> Reply<pb::GetTopicAttributesResponse> {
        let how = consistency(&request)?;
        let name = topic_ref("topic_arn", &request.into_inner().topic_arn)?;
        let (t, counts) = self
            .ctx
            .ask(how, crate::topics::GetTopic { name: name.clone() })
            .await?;
        let attributes = topic_attributes(
            &self.topic_arn(&name),
            &self.ctx.identity.account_id,
            &t,
            &counts,
        );
        Ok(Response::new(pb::GetTopicAttributesResponse {
            attributes: attributes.into_iter().collect(),
        }))
    }

    async fn set_topic_attributes(
        &self,
        request: Request<pb::SetTopicAttributesRequest>,
    ) -> Reply<pb::SetTopicAttributesResponse> {
        let req = request.into_inner();
        let name = topic_ref("topic_arn", &req.topic_arn)?;
        // The name says whether the topic is FIFO.
        topics::validate_attribute(
            &req.attribute_name,
            &req.attribute_value,
            name.ends_with(".fifo"),
            false,
        )
        .map_err(super::status::from_domain)?;
        self.ctx
            .run(crate::topics::SetTopicAttribute {
                name,
                attribute: req.attribute_name,
                value: req.attribute_value,
            })
            .await?;
        Ok(Response::new(pb::SetTopicAttributesResponse {}))
    }

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Reply<pb::SubscribeResponse> {
        let req = request.into_inner();
        let req_return_arn = req.return_subscription_arn;
        let topic = topic_ref("topic_arn", &req.topic_arn)?;
        let protocol = Protocol::parse(&req.protocol)
            .ok_or_else(|| {
                DomainError::invalid_with_code(
                    "InvalidParameter",
                    "protocol",
                    format!(
                        "must be sqs (or queue), lambda (or function), http or https, got {:?}",
                        req.protocol
                    ),
                )
            })
            .map_err(super::status::from_domain)?;
        let endpoint =
            normalize_endpoint(protocol, &req.endpoint).map_err(super::status::from_domain)?;
        if matches!(protocol, Protocol::Http | Protocol::Https) {
            // An address refused now; a name is judged as it resolves, at
            // each delivery.
            if let Some(why) = self.ctx.security.destinations.refusal_of_url(&endpoint) {
                return Err(
                    DomainError::invalid_with_code("InvalidParameter", "endpoint", why)
                        .into_status(),
                );
            }
        }
        let attributes: BTreeMap<String, String> = req.attributes.into_iter().collect();
        subscription::Settings::parse(protocol, &attributes).map_err(super::status::from_domain)?;
        let cmd = Subscribe {
            topic: topic.clone(),
            protocol,
            endpoint,
            attributes,
            id: new_id(),
            token: hex::encode(uuid::Uuid::new_v4().as_bytes())
                + &hex::encode(uuid::Uuid::new_v4().as_bytes()),
        };
        let s = self.ctx.run(cmd).await?;
        Ok(Response::new(pb::SubscribeResponse {
            subscription_arn: if s.pending && !req_return_arn {
                "pending confirmation".into()
            } else {
                format!("{}:{}", self.topic_arn(&topic), s.id)
            },
        }))
    }

    async fn confirm_subscription(
        &self,
        request: Request<pb::ConfirmSubscriptionRequest>,
    ) -> Reply<pb::ConfirmSubscriptionResponse> {
        let req = request.into_inner();
        let topic = topic_ref("topic_arn", &req.topic_arn)?;
        let arn = confirm(&self.ctx, &topic, &req.token).await?;
        Ok(Response::new(pb::ConfirmSubscriptionResponse {
            subscription_arn: arn,
        }))
    }

    async fn unsubscribe(
        &self,
        request: Request<pb::UnsubscribeRequest>,
    ) -> Reply<pb::UnsubscribeResponse> {
        let (topic, id) =
            subscription_ref("subscription_arn", &request.into_inner().subscription_arn)?;
        self.ctx
            .run(crate::topics::Unsubscribe { topic, id })
            .await?;
        Ok(Response::new(pb::UnsubscribeResponse {}))
    }

    async fn list_subscriptions(
        &self,
        request: Request<pb::ListSubscriptionsRequest>,
    ) -> Reply<pb::ListSubscriptionsResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        self.subscriptions(how, None, &req.next_token).await
    }

    async fn list_subscriptions_by_topic(
        &self,
        request: Request<pb::ListSubscriptionsByTopicRequest>,
    ) -> Reply<pb::ListSubscriptionsResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let topic = topic_ref("topic_arn", &req.topic_arn)?;
        self.subscriptions(how, Some(topic), &req.next_token).await
    }

    async fn get_subscription_attributes(
        &self,
        request: Request<pb::GetSubscriptionAttributesRequest>,
    ) -> Reply<pb::GetSubscriptionAttributesResponse> {
        let how = consistency(&request)?;
        let (topic, id) =
            subscription_ref("subscription_arn", &request.into_inner().subscription_arn)?;
        let (t, s) = self
            .ctx
            .ask(
                how,
                crate::topics::GetSubscription {
                    topic: topic.clone(),
                    id,
                },
            )
            .await?;
        let mut a = subscriptions::describe(&t, &s);
        a.insert("SubscriptionArn".into(), self.subscription_arn(&topic, &s));
        a.insert("TopicArn".into(), self.topic_arn(&topic));
        a.insert("Owner".into(), self.ctx.identity.account_id.clone());
        a.insert("Endpoint".into(), self.endpoint_arn(&s));
        Ok(Response::new(pb::GetSubscriptionAttributesResponse {
            attributes: a.into_iter().collect(),
        }))
    }

    async fn set_subscription_attributes(
        &self,
        request: Request<pb::SetSubscriptionAttributesRequest>,
    ) -> Reply<pb::SetSubscriptionAttributesResponse> {
        let req = request.into_inner();
        let (topic, id) = subscription_ref("subscription_arn", &req.subscription_arn)?;
        self.ctx
            .run(crate::topics::SetSubscriptionAttribute {
                topic,
                id,
                attribute: req.attribute_name,
                value: req.attribute_value,
            })
            .await?;
        Ok(Response::new(pb::SetSubscriptionAttributesResponse {}))
    }

    async fn publish(&self, request: Request<pb::PublishRequest>) -> Reply<pb::PublishResponse> {
        let req = request.into_inner();
        let topic = topic_ref("topic_arn", &req.topic_arn)?;
        let p = Publication::validate(
            "",
            topic.ends_with(".fifo"),
            publish_input(
                req.message,
                req.subject,
                req.message_structure,
                req.message_attributes,
                req.message_group_id,
                req.message_deduplication_id,
            ),
        )
        .map_err(super::status::from_domain)?;
        let published = super::status::only(
            self.ctx
                .run(crate::topics::Publish {
                    topic_arn: self.topic_arn(&topic),
                    topic,
                    messages: vec![p],
                })
                .await?,
            "Publish",
        )?;
        Ok(Response::new(pb::PublishResponse {
            message_id: published.message_id,
            sequence_number: published.sequence_number.unwrap_or_default(),
        }))
    }

    type PublishStreamStream = super::publish_stream::Replies;

    async fn publish_stream(
        &self,
        request: Request<tonic::Streaming<pb::PublishStreamRequest>>,
    ) -> Reply<Self::PublishStreamStream> {
        Ok(Response::new(super::producer::serve::<
            super::publish_stream::TopicProducer,
        >(self.ctx.clone(), request)))
    }

    async fn publish_batch(
        &self,
        request: Request<pb::PublishBatchRequest>,
    ) -> Reply<pb::PublishBatchResponse> {
        let req = request.into_inner();
        let topic = topic_ref("topic_arn", &req.topic_arn)?;
        let fifo = topic.ends_with(".fifo");
        let batch = split(
            req.entries,
            |e| &e.id,
            |i, e| {
                Publication::validate(
                    &format!("entries[{i}]"),
                    fifo,
                    publish_input(
                        e.message,
                        e.subject,
                        e.message_structure,
                        e.message_attributes,
                        e.message_group_id,
                        e.message_deduplication_id,
                    ),
                )
            },
        )?;
        let total: usize = batch.valid.iter().map(Publication::size).sum();
        if total > topics::MESSAGE_BYTES_MAX + 64 * batch.valid.len() {
            return Err(DomainError::invalid_with_code(
                "BatchRequestTooLong",
                "entries",
                format!(
                    "the messages add up to about {total} bytes; a batch takes at most {}",
                    topics::MESSAGE_BYTES_MAX
                ),
            )
            .into_status());
        }
        let publish = |messages| crate::topics::Publish {
            topic_arn: self.topic_arn(&topic),
            topic,
            messages,
        };
        let (successful, failed) = batch
            .commit(&self.ctx, publish, |id, p| pb::PublishBatchResultEntry {
                id,
                message_id: p.message_id,
                sequence_number: p.sequence_number.unwrap_or_default(),
            })
            .await?;
        Ok(Response::new(pb::PublishBatchResponse {
            successful,
            failed,
        }))
    }

    async fn tag_resource(
        &self,
        request: Request<pb::TagResourceRequest>,
    ) -> Reply<pb::TagResourceResponse> {
        let req = request.into_inner();
        let tags = req.tags.into_iter().collect();
        self.retag(&req.resource_arn, Change::Add(tags)).await?;
        Ok(Response::new(pb::TagResourceResponse {}))
    }

    async fn untag_resource(
        &self,
        request: Request<pb::UntagResourceRequest>,
    ) -> Reply<pb::UntagResourceResponse> {
        let req = request.into_inner();
        self.retag(&req.resource_arn, Change::Remove(req.tag_keys))
            .await?;
        Ok(Response::new(pb::UntagResourceResponse {}))
    }

    async fn list_tags_for_resource(
        &self,
        request: Request<pb::ListTagsForResourceRequest>,
    ) -> Reply<pb::ListTagsForResourceResponse> {
        let how = consistency(&request)?;
        let name = topic_ref("resource_arn", &request.into_inner().resource_arn)?;
        let (t, _) = self.ctx.ask(how, crate::topics::GetTopic { name }).await?;
        Ok(Response::new(pb::ListTagsForResourceResponse {
            tags: t.tags.into_iter().collect(),
        }))
    }
}

impl TopicsApi {
    /// Applies a tag change to the topic `resource_arn` names.
    async fn retag(&self, resource_arn: &str, change: Change) -> Result<(), Status> {
        let name = topic_ref("resource_arn", resource_arn)?;
        let invalid = topics::invalid_tag;
        self.ctx.tag(Tagged::Topic(name), change, invalid).await
    }

    fn endpoint_arn(&self, s: &Subscription) -> String {
        match s.protocol {
            Protocol::Sqs => self.ctx.identity.queue_arn(&s.endpoint),
            Protocol::Lambda => self.ctx.identity.function_arn(&s.endpoint),
            Protocol::Http | Protocol::Https => s.endpoint.clone(),
        }
    }

    async fn subscriptions(
        &self,
        how: super::Consistency,
        topic: Option<String>,
        token: &str,
    ) -> Reply<pb::ListSubscriptionsResponse> {
        let after = parse_token("next_token", token, 2)?.map(|v| (v[0].clone(), v[1].clone()));
        let (subs, next) = self
            .ctx
            .ask(
                how,
                crate::topics::ListSubscriptions {
                    topic,
                    after,
                    limit: PAGE,
                },
            )
            .await?;
        Ok(Response::new(pb::ListSubscriptionsResponse {
            subscriptions: subs
                .iter()
                .map(|(t, s)| pb::Subscription {
                    subscription_arn: if s.confirmed() {
                        self.subscription_arn(&t.name, s)
                    } else {
                        "PendingConfirmation".into()
                    },
                    owner: self.ctx.identity.account_id.clone(),
                    protocol: s.protocol.as_str().into(),
                    endpoint: self.endpoint_arn(s),
                    topic_arn: self.topic_arn(&t.name),
                })
                .collect(),
            next_token: next.map(|(t, id)| token_of(&[&t, &id])).unwrap_or_default(),
        }))
    }
}

/// Confirms a subscription by its token; returns its ARN. Shared by the RPC
/// and the SubscribeURL of the confirmation request.
pub async fn confirm(ctx: &Context, topic: &str, token: &str) -> Result<String, Status> {
    if token.is_empty() || token.len() > 256 {
        return Err(DomainError::invalid_with_code(
            "InvalidParameter",
            "token",
            "must be the Token of a confirmation request",
        )
        .into_status());
    }
    let id = ctx
        .run(crate::topics::ConfirmSubscription {
            topic: topic.to_string(),
            token: token.to_string(),
        })
        .await?;
    Ok(format!("{}:{id}", ctx.identity.topic_arn(topic)))
}

/// Serves `GET /topics/confirm?TopicArn=..&Token=..`, the SubscribeURL of a
/// confirmation request.
pub async fn confirm_url(ctx: Context, query: Option<String>) -> (axum::http::StatusCode, String) {
    let params = parse_query(query.as_deref().unwrap_or(""));
    let (Some(topic), Some(token)) = (params.get("TopicArn"), params.get("Token")) else {
        return (
            axum::http::StatusCode::BAD_REQUEST,
            "TopicArn and Token are required\n".into(),
        );
    };
    let result = match topic_ref("TopicArn", topic) {
        Ok(t) => confirm(&ctx, &t, token).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(arn) => (
            axum::http::StatusCode::OK,
            format!("<ConfirmSubscriptionResponse><ConfirmSubscriptionResult><SubscriptionArn>{arn}</SubscriptionArn></ConfirmSubscriptionResult></ConfirmSubscriptionResponse>\n"),
        ),
        Err(s) => (
            match s.code() {
                tonic::Code::InvalidArgument | tonic::Code::NotFound => {
                    axum::http::StatusCode::BAD_REQUEST
                }
                _ => axum::http::StatusCode::SERVICE_UNAVAILABLE,
            },
            format!("{}\n", s.message()),
        ),
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (percent_decode(k), percent_decode(v)))
        .collect()
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 3;
                        continue;
                    }
                    _ => out.push(b'%'),
                }
            }
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subscription_arns_name_topic_and_id() {
        let (t, id) = subscription_ref(
            "subscription_arn",
            "arn:aws:sns:us-east-1:000000000000:orders:3f1c0c5e-1d2b-4f0a-9a51-1f2e3d4c5b6a",
        )
        .unwrap();
        assert_eq!(t, "orders");
        assert_eq!(id, "3f1c0c5e-1d2b-4f0a-9a51-1f2e3d4c5b6a");
        assert!(subscription_ref("subscription_arn", "arn:aws:sqs:us-east-1:0:q:x").is_err());
        assert!(subscription_ref("subscription_arn", "orders").is_err());
    }

    #[test]
    fn bad_topic_references_answer_the_sns_code() {
        for status in [
            topic_ref("topic_arn", "arn:aws:sns:us-east-1:000000000000:bad name").unwrap_err(),
            topic_ref("topic_arn", &"t".repeat(257)).unwrap_err(),
            subscription_ref("subscription_arn", "arn:aws:sns:us-east-1:0:bad name:x").unwrap_err(),
            parse_token("next_token", "not hex", 1).unwrap_err(),
        ] {
            assert_eq!(status.code(), tonic::Code::InvalidArgument);
            assert_eq!(
                status
                    .metadata()
                    .get(crate::router::ERROR_CODE_HEADER)
                    .unwrap(),
                "InvalidParameter",
                "{}",
                status.message()
            );
        }
    }

    #[test]
    fn query_strings_round_trip() {
        let arn = "arn:aws:sns:us-east-1:000000000000:t";
        let q = format!(
            "TopicArn={}&Token=ab%2Bc",
            crate::topics::envelope::percent_encode(arn)
        );
        let p = parse_query(&q);
        assert_eq!(p["TopicArn"], arn);
        assert_eq!(p["Token"], "ab+c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%é1"), "%é1");
    }
}
