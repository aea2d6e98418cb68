//! Queue workloads.

use std::sync::Arc;

use cluster_tests::requests::{delete_batch, send_batch, send_entry};
// The comparison's consumers delete their messages with these entries too.
pub use cluster_tests::requests::delete_entries;
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;

use crate::{Bench, Done, Workload};

/// One request of a queue workload.
pub async fn op(bench: &Bench, id: usize, i: u64) -> Result<Done, String> {
    let (args, client, queue) = (&bench.args, &bench.client, bench.queue.as_str());
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
                let r = send_batch(client, queue, entries(args.batch, &body))
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
                delete_batch(client, queue, &r.messages).await.map_err(e)?;
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

/// `n` SendMessageBatch entries of `body`, the `i`th with id `e{i}`.
fn entries(n: usize, body: &str) -> Vec<pb::SendMessageBatchRequestEntry> {
    (0..n).map(|i| send_entry(format!("e{i}"), body)).collect()
}

/// Fills `queue` with `count` messages (rounded up to a multiple of 10) of
/// `bytes` bytes, 10 per request.
pub async fn fill(client: Arc<Client>, queue: &str, count: u64, bytes: usize) {
    let body = "x".repeat(bytes);
    let name = queue.to_string();
    let put = move |_task: usize, _request: u64, n: usize| {
        let (client, queue, body) = (client.clone(), name.clone(), body.clone());
        async move {
            send_batch(&client, &queue, entries(n, &body))
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
