//! Queue workloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

use crate::{Args, Done, Workload};

/// One request of a queue workload.
pub async fn op(
    args: &Args,
    client: &Client,
    queue: &str,
    id: usize,
    i: u64,
) -> Result<Done, String> {
    let e = |e: sluice_client::Error| e.to_string();
    match args.workload {
        Workload::CreateQueue => {
            let name = format!("b{}-{id}-{i}", std::process::id());
            client
                .create_queue(&name, Default::default())
                .await
                .map_err(e)?;
            Ok(Done::items(1, args.message_bytes))
        }
        Workload::Send => {
            let body = "x".repeat(args.message_bytes);
            if args.batch == 1 {
                client
                    .send_message(pb::SendMessageRequest {
                        queue_name: queue.into(),
                        message_body: body,
                        ..Default::default()
                    })
                    .await
                    .map_err(e)?;
                Ok(Done::items(1, args.message_bytes))
            } else {
                let entries = (0..args.batch)
                    .map(|n| pb::SendMessageBatchRequestEntry {
                        id: format!("e{n}"),
                        message_body: body.clone(),
                        ..Default::default()
                    })
                    .collect();
                let r = client
                    .send_message_batch(pb::SendMessageBatchRequest {
                        queue_name: queue.into(),
                        entries,
                    })
                    .await
                    .map_err(e)?;
                Ok(Done::items(r.successful.len() as u64, args.message_bytes))
            }
        }
        Workload::ReceiveDelete => {
            let r = client
                .receive_message(pb::ReceiveMessageRequest {
                    queue_name: queue.into(),
                    max_number_of_messages: args.batch as i32,
                    visibility_timeout: Some(300),
                    wait_time_seconds: Some(0),
                    ..Default::default()
                })
                .await
                .map_err(e)?;
            if args.batch == 1 {
                for m in &r.messages {
                    client
                        .delete_message(queue, &m.receipt_handle)
                        .await
                        .map_err(e)?;
                }
            } else if !r.messages.is_empty() {
                let entries = delete_entries(&r.messages);
                client
                    .delete_message_batch(pb::DeleteMessageBatchRequest {
                        queue_name: queue.into(),
                        entries,
                    })
                    .await
                    .map_err(e)?;
            }
            if r.messages.is_empty() {
                return Err("the queue ran empty: raise --prefill".into());
            }
            Ok(Done::items(r.messages.len() as u64, args.message_bytes))
        }
        Workload::ReceiveDepth => {
            let r = client
                .receive_message(pb::ReceiveMessageRequest {
                    queue_name: queue.into(),
                    max_number_of_messages: 1,
                    visibility_timeout: Some(0),
                    wait_time_seconds: Some(0),
                    ..Default::default()
                })
                .await
                .map_err(e)?;
            Ok(Done::items(r.messages.len() as u64, args.message_bytes))
        }
        other => Err(format!("{other:?} is not a queue workload")),
    }
}

/// A DeleteMessageBatch entry for each of `messages`.
pub fn delete_entries(messages: &[pb::Message]) -> Vec<pb::DeleteMessageBatchRequestEntry> {
    messages
        .iter()
        .enumerate()
        .map(|(n, m)| pb::DeleteMessageBatchRequestEntry {
            id: format!("d{n}"),
            receipt_handle: m.receipt_handle.clone(),
        })
        .collect()
}

/// Fills `queue` with `count` messages of `bytes` bytes, 10 per request.
pub async fn fill(client: Arc<Client>, queue: &str, count: u64, bytes: usize) {
    if count == 0 {
        return;
    }
    let started = Instant::now();
    let left = Arc::new(AtomicU64::new(count.div_ceil(10)));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let client = client.clone();
            let left = left.clone();
            let queue = queue.to_string();
            tokio::spawn(async move {
                let body = "x".repeat(bytes);
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
                    .is_ok()
                {
                    let entries = (0..10)
                        .map(|n| pb::SendMessageBatchRequestEntry {
                            id: format!("e{n}"),
                            message_body: body.clone(),
                            ..Default::default()
                        })
                        .collect();
                    client
                        .send_message_batch(pb::SendMessageBatchRequest {
                            queue_name: queue.clone(),
                            entries,
                        })
                        .await
                        .expect("filling the queue");
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("fill task");
    }
    eprintln!(
        "filled {queue} with {count} messages in {:.1} s",
        started.elapsed().as_secs_f64()
    );
}
