//! Queue workloads.

use std::sync::Arc;

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
                .receive_from(queue, args.batch as i32, Some(300), Some(0))
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
                .receive_from(queue, 1, Some(0), Some(0))
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

/// Fills `queue` with `count` messages (rounded up to a multiple of 10) of
/// `bytes` bytes, 10 per request.
pub async fn fill(client: Arc<Client>, queue: &str, count: u64, bytes: usize) {
    let body = "x".repeat(bytes);
    let name = queue.to_string();
    let put = move |_task: usize, _request: u64, n: usize| {
        let (client, queue, body) = (client.clone(), name.clone(), body.clone());
        async move {
            let entries = (0..n)
                .map(|n| pb::SendMessageBatchRequestEntry {
                    id: format!("e{n}"),
                    message_body: body.clone(),
                    ..Default::default()
                })
                .collect();
            client
                .send_message_batch(pb::SendMessageBatchRequest {
                    queue_name: queue,
                    entries,
                })
                .await
                .expect("filling the queue");
        }
    };
    crate::fill_in_requests(
        format!("{queue} with {count} messages"),
        32,
        count.div_ceil(10) * 10,
        10,
        put,
    )
    .await;
}
