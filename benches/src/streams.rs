//! Stream workloads.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use cluster_tests::requests::{put_data, trim_horizon};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::Client;
use tokio::sync::oneshot;
use tokio_stream::StreamExt;

use crate::{Bench, Done, Workload};

/// Records on their way to the subscribers, by partition key: the put's
/// waiter learns when its record arrived.
pub type Deliveries = Arc<Mutex<HashMap<String, oneshot::Sender<Instant>>>>;

/// What one worker carries from request to request.
#[derive(Default)]
pub struct Reader {
    iterator: Option<String>,
}

/// Creates the bench stream: `shards` shards, write limits off (the bench
/// measures the broker, not the throttle).
pub async fn create(client: &Client, stream: &str, shards: i32) {
    client
        .create_stream(pb::CreateStreamRequest {
            stream_name: stream.into(),
            shard_count: shards,
            shard_write_records_per_second: Some(0),
            shard_write_bytes_per_second: Some(0),
            max_record_size_in_bytes: Some(10 << 20),
            ..Default::default()
        })
        .await
        .expect("creating the bench stream");
}

fn entries(
    count: usize,
    bytes: usize,
    key: impl Fn(usize) -> String,
) -> Vec<pb::PutRecordsRequestEntry> {
    (0..count)
        .map(|n| pb::PutRecordsRequestEntry {
            data: vec![b'x'; bytes],
            partition_key: key(n),
            explicit_hash_key: String::new(),
        })
        .collect()
}

/// One request of a stream workload; `reader` is the worker's place in
/// its shard (get-records only).
pub async fn op(bench: &Bench, reader: &mut Reader, id: usize, i: u64) -> Result<Done, String> {
    let (args, client, stream) = (&bench.args, &bench.client, bench.stream.as_str());
    let deliveries = &bench.deliveries;
    let e = |e: sluice_client::Error| e.to_string();
    match args.workload {
        Workload::PutRecords => {
            let r = client
                .put_records(pb::PutRecordsRequest {
                    stream_name: stream.into(),
                    records: entries(args.batch, args.message_bytes, |n| format!("{id}-{i}-{n}")),
                })
                .await
                .map_err(e)?;
            if r.failed_record_count > 0 {
                return Err(format!("{} records refused", r.failed_record_count));
            }
            Ok(Done::items(args.batch as u64, args.message_bytes))
        }
        Workload::GetRecords => {
            let shard = format!("shardId-{:012}", id % args.shards as usize);
            let it = match reader.iterator.take() {
                Some(it) => it,
                None => trim_horizon(client, stream, &shard).await.map_err(e)?,
            };
            let r = client
                .get_records(&it, args.batch as i32)
                .await
                .map_err(e)?;
            // At the end of the shard, start over from its beginning.
            if !r.records.is_empty() {
                reader.iterator = Some(r.next_shard_iterator);
            }
            let bytes: usize = r.records.iter().map(|r| r.data.len()).sum();
            Ok(Done {
                items: r.records.len() as u64,
                bytes: bytes as u64,
                extra: None,
            })
        }
        Workload::PutToRead => {
            let key = format!("{id}-{i}");
            let (tx, rx) = oneshot::channel();
            deliveries
                .lock()
                .expect("deliveries")
                .insert(key.clone(), tx);
            let started = Instant::now();
            let put = put_data(client, stream, &key, vec![b'x'; args.message_bytes]).await;
            let acked = Instant::now();
            if let Err(err) = put {
                deliveries.lock().expect("deliveries").remove(&key);
                return Err(e(err));
            }
            let delivered = tokio::time::timeout(std::time::Duration::from_secs(10), rx)
                .await
                .map_err(|_| format!("record {key} not delivered within 10 s"))?
                .map_err(|_| "the subscriber stopped".to_string())?;
            Ok(Done {
                items: 1,
                bytes: args.message_bytes as u64,
                extra: Some((
                    delivered.saturating_duration_since(started),
                    delivered.saturating_duration_since(acked),
                )),
            })
        }
        other => Err(format!("{other:?} is not a stream workload")),
    }
}

/// Subscribes to every shard through `client` (a consumer named `bench`)
/// and reports each record's arrival to its waiter in `deliveries`.
pub async fn subscribe(client: Client, stream: &str, shards: i32, deliveries: Deliveries) {
    subscribe_each(&client, stream, shards, move |records, at| {
        let mut waiting = deliveries.lock().expect("deliveries");
        for r in records {
            if let Some(tx) = waiting.remove(&r.partition_key) {
                let _ = tx.send(at);
            }
        }
    })
    .await
    .expect("subscribing");
}

/// Subscribes to every shard of `stream` from its latest record, as the
/// enhanced fan-out consumer `bench`, and calls `each` with every event's
/// records and the time they arrived. Subscriptions are open on return.
pub async fn subscribe_each<F>(
    client: &Client,
    stream: &str,
    shards: i32,
    each: F,
) -> Result<(), sluice_client::Error>
where
    F: Fn(&[pb::Record], Instant) + Clone + Send + 'static,
{
    let consumer = client.register_stream_consumer(stream, "bench").await?;
    for shard in 0..shards {
        let mut events = client
            .subscribe_to_shard(pb::SubscribeToShardRequest {
                consumer_arn: consumer.consumer_arn.clone(),
                shard_id: format!("shardId-{shard:012}"),
                starting_position: Some(pb::StartingPosition {
                    r#type: "LATEST".into(),
                    ..Default::default()
                }),
            })
            .await?;
        let each = each.clone();
        tokio::spawn(async move {
            while let Some(Ok(event)) = events.next().await {
                each(&event.records, Instant::now());
            }
        });
    }
    Ok(())
}

/// Puts `count` records of `bytes` bytes into `stream`, 500 per request.
pub async fn fill(client: Arc<Client>, stream: &str, count: u64, bytes: usize) {
    // A PutRecords carries at most 500 records and 5 MiB.
    let per_request = 500.min((5 << 20) / (bytes + 64)).max(1) as u64;
    let name = stream.to_string();
    let put = move |t: usize, i: u64, n: usize| {
        let (client, stream) = (client.clone(), name.clone());
        async move {
            client
                .put_records(pb::PutRecordsRequest {
                    stream_name: stream,
                    records: entries(n, bytes, |k| format!("fill-{t}-{i}-{k}")),
                })
                .await
                .expect("filling the stream");
        }
    };
    crate::fill_in_requests(
        format!("{stream} with {count} records of {bytes} bytes"),
        8,
        count,
        per_request,
        put,
    )
    .await;
}
