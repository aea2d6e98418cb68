//! `sluicectl queue ...`.

use std::collections::{BTreeMap, HashMap};

use clap::Subcommand;
use serde_json::json;
use sluice_client::{Client, Consistency, Error};
use sluice_proto::v1 as pb;

use crate::parse_pair;

#[derive(Subcommand)]
pub enum QueueCmd {
    /// Create a queue (a FIFO queue when the name ends in .fifo: FifoQueue=true
    /// is added for it, as the service requires).
    Create {
        /// Queue name.
        name: String,
        /// Attribute as NAME=VALUE, e.g. VisibilityTimeout=60; repeatable.
        #[arg(long = "attribute", short = 'a', value_parser = parse_pair)]
        attributes: Vec<(String, String)>,
        /// Tag as KEY=VALUE; repeatable.
        #[arg(long = "tag", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
    },
    /// List queues.
    List {
        /// Only names starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Read the called node's state instead of the leader's.
        #[arg(long)]
        local: bool,
    },
    /// Print a queue's URL.
    Url {
        /// Queue name.
        name: String,
    },
    /// Delete a queue and its messages.
    Delete {
        /// Queue name.
        name: String,
    },
    /// Show a queue's attributes and message counts, or change attributes.
    Attributes {
        /// Queue name.
        name: String,
        /// Set NAME=VALUE; repeatable. Without it, print the attributes.
        #[arg(long = "set", value_parser = parse_pair)]
        set: Vec<(String, String)>,
    },
    /// Send a message, or one per line of stdin with --stdin.
    Send {
        /// Queue name.
        name: String,
        #[command(flatten)]
        message: crate::Outgoing,
        /// Delay in seconds (standard queues).
        #[arg(long)]
        delay: Option<i32>,
    },
    /// Receive messages (and delete them with --delete).
    Receive {
        /// Queue name.
        name: String,
        /// 1-10.
        #[arg(long, default_value_t = 1)]
        max: i32,
        /// Long-poll wait, seconds (0-20).
        #[arg(long, default_value_t = 0)]
        wait: i32,
        /// Visibility timeout, seconds.
        #[arg(long)]
        visibility: Option<i32>,
        /// Delete each message once printed.
        #[arg(long)]
        delete: bool,
    },
    /// Delete one message by receipt handle.
    DeleteMessage {
        /// Queue name.
        name: String,
        /// Receipt handle from a receive.
        receipt_handle: String,
    },
    /// Delete every message in a queue.
    Purge {
        /// Queue name.
        name: String,
    },
    /// Show or change tags.
    Tags {
        /// Queue name.
        name: String,
        /// Add KEY=VALUE; repeatable.
        #[arg(long = "add", value_parser = parse_pair)]
        add: Vec<(String, String)>,
        /// Remove KEY; repeatable.
        #[arg(long = "remove")]
        remove: Vec<String>,
    },
    /// Move a dead-letter queue's messages back to their source queues (or
    /// to --to), or show (--status) or cancel (--cancel HANDLE) such moves.
    Redrive {
        /// The dead-letter queue.
        name: String,
        /// Destination queue instead of each message's source.
        #[arg(long)]
        to: Option<String>,
        /// Messages per second (1-500).
        #[arg(long)]
        rate: Option<i32>,
        /// Show the queue's recent move tasks instead.
        #[arg(long)]
        status: bool,
        /// Cancel the move task with this handle instead.
        #[arg(long)]
        cancel: Option<String>,
    },
}

/// Runs a queue verb.
pub async fn run(client: &Client, json: bool, cmd: QueueCmd) -> Result<(), Error> {
    match cmd {
        QueueCmd::Create {
            name,
            attributes,
            tags,
        } => {
            let mut attributes: HashMap<String, String> = attributes.into_iter().collect();
            if name.ends_with(".fifo") {
                attributes
                    .entry("FifoQueue".into())
                    .or_insert_with(|| "true".into());
            }
            let r = client
                .create_queue_with_tags(
                    &name,
                    attributes,
                    tags.into_iter().collect::<HashMap<_, _>>(),
                )
                .await?;
            crate::print_result(
                json,
                json!({"queue_url": r.queue_url, "queue_arn": r.queue_arn, "created": r.created}),
                &r.queue_url,
            );
        }
        QueueCmd::List { prefix, local } => {
            let consistency = if local {
                Consistency::Local
            } else {
                Consistency::Linearizable
            };
            let queues = client.list_queues(&prefix, consistency).await?;
            if json {
                let v: Vec<_> = queues
                    .iter()
                    .map(|q| json!({"name": q.name, "url": q.url}))
                    .collect();
                println!("{}", serde_json::Value::Array(v));
            } else {
                for q in queues {
                    println!("{}", q.url);
                }
            }
        }
        QueueCmd::Url { name } => {
            let url = client
                .get_queue_url(&name, Consistency::Linearizable)
                .await?;
            crate::print_result(json, json!({ "queue_url": url }), &url);
        }
        QueueCmd::Delete { name } => {
            client.delete_queue(&name).await?;
            crate::print_removed(json, "deleted", &name);
        }
        QueueCmd::Attributes { name, set } => {
            if !set.is_empty() {
                client
                    .set_queue_attributes(&name, set.into_iter().collect())
                    .await?;
            }
            crate::print_attributes(json, client.get_queue_attributes(&name, &[]).await?);
        }
        QueueCmd::Send {
            name,
            message,
            delay,
        } => {
            let message_attributes = message.attributes();
            let request = |body| pb::SendMessageRequest {
                queue_name: name.clone(),
                message_body: body,
                delay_seconds: delay,
                message_attributes: message_attributes.clone(),
                message_system_attributes: HashMap::new(),
                message_deduplication_id: message.dedup.clone().unwrap_or_default(),
                message_group_id: message.group.clone().unwrap_or_default(),
            };
            let print = |r: pb::SendMessageResponse| {
                crate::print_result(
                    json,
                    json!({"message_id": r.message_id, "md5_of_message_body": r.md5_of_message_body, "sequence_number": r.sequence_number}),
                    &r.message_id,
                )
            };
            let mut bodies = message.bodies()?;
            if bodies.len() == 1 {
                print(client.send_message(request(bodies.remove(0))).await?);
            } else {
                crate::send_lines(
                    &client.message_sender(&name),
                    bodies.into_iter().map(request),
                    print,
                )
                .await?;
            }
        }
        QueueCmd::Receive {
            name,
            max,
            wait,
            visibility,
            delete,
        } => {
            let r = client
                .receive_message(pb::ReceiveMessageRequest {
                    queue_name: name.clone(),
                    message_system_attribute_names: vec!["All".into()],
                    message_attribute_names: vec!["All".into()],
                    max_number_of_messages: max,
                    visibility_timeout: visibility,
                    wait_time_seconds: Some(wait),
                    receive_request_attempt_id: String::new(),
                })
                .await?;
            for m in &r.messages {
                if json {
                    let attrs: BTreeMap<_, _> = m.attributes.iter().collect();
                    let mattrs: BTreeMap<_, _> = m
                        .message_attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), v.string_value.clone()))
                        .collect();
                    println!(
                        "{}",
                        json!({"message_id": m.message_id, "receipt_handle": m.receipt_handle, "body": m.body, "attributes": attrs, "message_attributes": mattrs})
                    );
                } else {
                    println!("{}", m.body);
                }
                if delete {
                    client.delete_message(&name, &m.receipt_handle).await?;
                }
            }
        }
        QueueCmd::DeleteMessage {
            name,
            receipt_handle,
        } => client.delete_message(&name, &receipt_handle).await?,
        QueueCmd::Purge { name } => client.purge_queue(&name).await?,
        QueueCmd::Tags { name, add, remove } => {
            if !add.is_empty() {
                client.tag_queue(&name, add.into_iter().collect()).await?;
            }
            if !remove.is_empty() {
                client.untag_queue(&name, remove).await?;
            }
            let tags: BTreeMap<_, _> = client.list_queue_tags(&name).await?.into_iter().collect();
            if json {
                println!("{}", json!(tags));
            } else {
                for (k, v) in tags {
                    println!("{k}={v}");
                }
            }
        }
        QueueCmd::Redrive {
            name,
            to,
            rate,
            status,
            cancel,
        } => {
            // ARNs are built from the cluster's identity, which the queue
            // URL does not carry: ask the cluster.
            let status_info = client.cluster_status(false).await?;
            let arn_of = |n: &str| {
                format!(
                    "arn:aws:sqs:{}:{}:{n}",
                    status_info.region, status_info.account_id
                )
            };
            if let Some(handle) = cancel {
                let moved = client.cancel_message_move_task(&handle).await?;
                println!("cancelled after moving {moved} messages");
            } else if status {
                for t in client.list_message_move_tasks(&arn_of(&name), 10).await? {
                    crate::print_result(
                        json,
                        json!({"task_handle": t.task_handle, "status": t.status, "moved": t.approximate_number_of_messages_moved, "to_move": t.approximate_number_of_messages_to_move, "failure_reason": t.failure_reason}),
                        format_args!(
                            "{} {} moved {}/{} {}",
                            t.task_handle,
                            t.status,
                            t.approximate_number_of_messages_moved,
                            t.approximate_number_of_messages_to_move,
                            t.failure_reason
                        ),
                    );
                }
            } else {
                let handle = client
                    .start_message_move_task(pb::StartMessageMoveTaskRequest {
                        source_arn: arn_of(&name),
                        destination_arn: to.as_deref().map(arn_of),
                        max_number_of_messages_per_second: rate,
                    })
                    .await?;
                println!("{handle}");
            }
        }
    }
    Ok(())
}
