//! `sluicectl topic ...`.

use std::collections::HashMap;

use clap::Subcommand;
use serde_json::json;
use sluice_client::{Client, Error};
use sluice_proto::v1 as pb;

use crate::parse_pair;

#[derive(Subcommand)]
pub enum TopicCmd {
    /// Create a topic (a FIFO topic when the name ends in .fifo).
    Create {
        /// Topic name.
        name: String,
        /// Attribute as NAME=VALUE, e.g. DisplayName=Orders; repeatable.
        #[arg(long = "attribute", short = 'a', value_parser = parse_pair)]
        attributes: Vec<(String, String)>,
    },
    /// List topics.
    List,
    /// Delete a topic and its subscriptions.
    Delete {
        /// Topic name or ARN.
        topic: String,
    },
    /// Show a topic's attributes and counts, or change one attribute.
    Attributes {
        /// Topic name or ARN.
        topic: String,
        /// Set NAME=VALUE. Without it, print the attributes.
        #[arg(long = "set", value_parser = parse_pair)]
        set: Option<(String, String)>,
    },
    /// Subscribe a queue, a function or an HTTP/S endpoint.
    Subscribe {
        /// Topic name or ARN.
        topic: String,
        /// sqs (or queue), lambda (or function), http, https.
        #[arg(long)]
        protocol: String,
        /// Queue name or ARN, function name or ARN, or URL.
        #[arg(long)]
        endpoint: String,
        /// A file holding the filter policy (JSON).
        #[arg(long)]
        filter_policy_file: Option<std::path::PathBuf>,
        /// Apply the filter policy to the JSON body instead of the
        /// message attributes.
        #[arg(long)]
        filter_body: bool,
        /// Deliver the message alone, without the JSON envelope.
        #[arg(long)]
        raw: bool,
        /// Other attribute as NAME=VALUE (DeliveryPolicy, RedrivePolicy,
        /// ...); repeatable.
        #[arg(long = "attribute", short = 'a', value_parser = parse_pair)]
        attributes: Vec<(String, String)>,
    },
    /// Confirm an HTTP/S subscription with the token it was sent.
    Confirm {
        /// Topic name or ARN.
        topic: String,
        /// The Token of the confirmation request.
        token: String,
    },
    /// Remove a subscription.
    Unsubscribe {
        /// Subscription ARN.
        subscription_arn: String,
    },
    /// List subscriptions, of one topic or of all.
    Subscriptions {
        /// Topic name or ARN; all topics when omitted.
        topic: Option<String>,
    },
    /// Publish a message, or one per line of stdin with --stdin.
    Publish {
        /// Topic name or ARN.
        topic: String,
        #[command(flatten)]
        message: crate::Outgoing,
        /// Subject.
        #[arg(long)]
        subject: Option<String>,
    },
}

/// Runs a topic verb.
pub async fn run(client: &Client, json: bool, cmd: TopicCmd) -> Result<(), Error> {
    match cmd {
        TopicCmd::Create { name, attributes } => {
            let mut attributes: HashMap<String, String> = attributes.into_iter().collect();
            if name.ends_with(".fifo") {
                attributes
                    .entry("FifoTopic".into())
                    .or_insert_with(|| "true".into());
            }
            let arn = client.create_topic(&name, attributes).await?;
            crate::print_result(json, json!({ "topic_arn": arn }), &arn);
        }
        TopicCmd::List => {
            crate::print_names(json, &client.list_topics().await?);
        }
        TopicCmd::Delete { topic } => {
            client.delete_topic(&topic).await?;
            crate::print_removed(json, "deleted", &topic);
        }
        TopicCmd::Attributes { topic, set } => {
            if let Some((k, v)) = set {
                client.set_topic_attribute(&topic, &k, &v).await?;
            }
            crate::print_attributes(json, client.get_topic_attributes(&topic).await?);
        }
        TopicCmd::Subscribe {
            topic,
            protocol,
            endpoint,
            filter_policy_file,
            filter_body,
            raw,
            attributes,
        } => {
            let mut attrs: HashMap<String, String> = attributes.into_iter().collect();
            if let Some(path) = filter_policy_file {
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    Error::Config(format!(
                        "cannot read the filter policy {}: {e}",
                        path.display()
                    ))
                })?;
                attrs.insert("FilterPolicy".into(), text);
            }
            if filter_body {
                attrs.insert("FilterPolicyScope".into(), "MessageBody".into());
            }
            if raw {
                attrs.insert("RawMessageDelivery".into(), "true".into());
            }
            let arn = client
                .subscribe(&topic, &protocol, &endpoint, attrs)
                .await?;
            crate::print_result(json, json!({ "subscription_arn": arn }), &arn);
        }
        TopicCmd::Confirm { topic, token } => {
            let arn = client.confirm_subscription(&topic, &token).await?;
            crate::print_result(json, json!({ "subscription_arn": arn }), &arn);
        }
        TopicCmd::Unsubscribe { subscription_arn } => {
            client.unsubscribe(&subscription_arn).await?;
            crate::print_removed(json, "unsubscribed", &subscription_arn);
        }
        TopicCmd::Subscriptions { topic } => {
            let subs = client.list_subscriptions(topic.as_deref()).await?;
            if json {
                let v: Vec<_> = subs
                    .iter()
                    .map(|s| {
                        json!({"subscription_arn": s.subscription_arn, "protocol": s.protocol,
                               "endpoint": s.endpoint, "topic_arn": s.topic_arn})
                    })
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for s in subs {
                    println!("{}  {}  {}", s.subscription_arn, s.protocol, s.endpoint);
                }
            }
        }
        TopicCmd::Publish {
            topic,
            message,
            subject,
        } => {
            let message_attributes = message.attributes();
            for m in message.bodies()? {
                let r = client
                    .publish(pb::PublishRequest {
                        topic_arn: topic.clone(),
                        message: m,
                        subject: subject.clone().unwrap_or_default(),
                        message_structure: String::new(),
                        message_attributes: message_attributes.clone(),
                        message_group_id: message.group.clone().unwrap_or_default(),
                        message_deduplication_id: message.dedup.clone().unwrap_or_default(),
                    })
                    .await?;
                crate::print_result(
                    json,
                    json!({"message_id": r.message_id, "sequence_number": r.sequence_number}),
                    &r.message_id,
                );
            }
        }
    }
    Ok(())
}
