//! The stream workload: producers put unique records under 16 partition
//! keys into a 4-shard stream; two readers each read every shard from its
//! oldest record, GetRecords after GetRecords, through whichever node
//! answers. After the faults heal the readers go on until each has read
//! past every acknowledged record.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Error, RecordSender};
use tokio::time::Instant;

use super::{pause_unless_ok, streamed, Ctx, Process, Via, FAILURE_PAUSE};
use crate::chaos::history::{Call, Outcome, Recorder, Reply, StreamRecord};
use crate::chaos::nemesis::Rng;
use crate::requests::put_data;

/// Shards of the stream.
pub const SHARDS: i32 = 4;
/// Partition keys.
const KEYS: u64 = 16;
/// Producers.
const PRODUCERS: usize = 3;
/// Readers.
pub const READERS: u32 = 2;
/// Records per GetRecords.
const READ_LIMIT: i32 = 500;

/// The stream of the workload.
#[derive(Debug, Clone)]
pub struct StreamWorkload {
    pub stream: String,
    pub shards: Vec<String>,
}

/// The number part of a sequence number (its first 20 digits).
pub fn seq_number(seq: &str) -> u64 {
    seq.get(..20).and_then(|s| s.parse().ok()).unwrap_or(0)
}

impl StreamWorkload {
    /// Creates the stream, write limits off (through `admin`, which
    /// retries).
    pub async fn setup(admin: &Client) -> Result<StreamWorkload, String> {
        let stream = "chaos".to_string();
        admin
            .create_unthrottled_stream(&stream, SHARDS)
            .await
            .map_err(|e| e.to_string())?;
        let shards = admin
            .list_shards(&stream)
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|s| s.shard_id)
            .collect();
        Ok(StreamWorkload { stream, shards })
    }

    /// Producers and readers until `until`; the readers then go on until
    /// they have read every acknowledged record, or `drain` passes.
    pub async fn run(&self, ctx: &Ctx, until: Instant, drain: Duration) -> Result<(), String> {
        let mut producers = Vec::new();
        for w in 0..PRODUCERS {
            let (ctx, stream) = (ctx.clone(), self.stream.clone());
            producers.push(tokio::spawn(async move {
                produce(&ctx, w, &stream, until).await
            }));
        }
        let (targets_tx, targets) = tokio::sync::watch::channel(None);
        let mut readers = Vec::new();
        for r in 0..READERS {
            let (ctx, w, targets) = (ctx.clone(), self.clone(), targets.clone());
            readers.push(tokio::spawn(async move {
                read(&ctx, r, &w, targets, until + drain).await
            }));
        }
        for p in producers {
            let _ = p.await;
        }
        targets_tx.send_replace(Some(acknowledged_ends(&ctx.recorder)));
        let mut result = Ok(());
        for r in readers {
            match r.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(e) => result = Err(e.to_string()),
            }
        }
        result
    }
}

/// The highest acknowledged record number of each shard.
fn acknowledged_ends(recorder: &Recorder) -> BTreeMap<String, u64> {
    let mut ends = BTreeMap::new();
    for op in crate::chaos::history::pair(&recorder.events()) {
        if let Outcome::Ok {
            reply: Reply::Placed { shard, seq },
        } = &op.outcome
        {
            let e = ends.entry(shard.clone()).or_insert(0);
            *e = (*e).max(seq_number(seq));
        }
    }
    ends
}

async fn produce(ctx: &Ctx, w: usize, stream: &str, until: Instant) {
    // Every other producer streams (PutRecordStream).
    let via = Via::new(ctx.client(w), stream, w.is_multiple_of(2));
    let mut p = Process::new(ctx);
    let mut rng = Rng::new(ctx.seed ^ (0x5EED + w as u64));
    let mut n = 0u64;
    while Instant::now() < until {
        let key = format!("key-{}", rng.next_u64() % KEYS);
        let data = format!("p{w}-{n}");
        n += 1;
        put(ctx, &mut p, &via, stream, &key, &data).await;
    }
}

/// One PutRecord (a unary call, or over the producer's streaming call),
/// recorded; pauses after a failure.
pub(crate) async fn put(
    ctx: &Ctx,
    p: &mut Process,
    via: &Via<'_, RecordSender>,
    stream: &str,
    key: &str,
    data: &str,
) -> Outcome {
    let call = Call::Put {
        stream: stream.into(),
        key: key.into(),
        data: data.into(),
    };
    let outcome = p
        .perform(ctx, call, || async {
            match via {
                Via::Unary(client) => put_data(client, stream, key, data).await,
                Via::Stream(sender) => {
                    streamed(sender.send(pb::PutRecordRequest {
                        partition_key: key.into(),
                        data: data.as_bytes().to_vec(),
                        ..Default::default()
                    }))
                    .await
                }
            }
            .map(|r| Reply::Placed {
                shard: r.shard_id,
                seq: r.sequence_number,
            })
        })
        .await;
    pause_unless_ok(&outcome).await;
    outcome
}

/// Where a reader is in one shard.
#[derive(Default)]
struct Cursor {
    iterator: Option<String>,
    last: Option<String>,
}

async fn iterator_for(
    client: &Client,
    stream: &str,
    shard: &str,
    c: &Cursor,
) -> Result<String, Error> {
    let (kind, seq) = match &c.last {
        Some(s) => ("AFTER_SEQUENCE_NUMBER", s.clone()),
        None => ("TRIM_HORIZON", String::new()),
    };
    client
        .get_shard_iterator(pb::GetShardIteratorRequest {
            stream_name: stream.into(),
            shard_id: shard.into(),
            shard_iterator_type: kind.into(),
            starting_sequence_number: seq,
            timestamp: 0,
        })
        .await
}

async fn read(
    ctx: &Ctx,
    reader: u32,
    w: &StreamWorkload,
    targets: tokio::sync::watch::Receiver<Option<BTreeMap<String, u64>>>,
    give_up: Instant,
) -> Result<(), String> {
    let client = ctx.client(reader as usize + 1);
    let mut p = Process::new(ctx);
    let mut cursors: BTreeMap<String, Cursor> = w
        .shards
        .iter()
        .map(|s| (s.clone(), Cursor::default()))
        .collect();
    loop {
        let mut got = 0usize;
        for (shard, c) in cursors.iter_mut() {
            if c.iterator.is_none() {
                match iterator_for(client, &w.stream, shard, c).await {
                    Ok(it) => c.iterator = Some(it),
                    Err(_) => {
                        tokio::time::sleep(FAILURE_PAUSE).await;
                        continue;
                    }
                }
            }
            let it = c.iterator.clone().unwrap_or_default();
            let call = Call::Read {
                stream: w.stream.clone(),
                reader,
                shard: shard.clone(),
                after: c.last.clone(),
            };
            let (outcome, next) = p
                .perform_with(ctx, call, || async {
                    client.get_records(&it, READ_LIMIT).await.map(|r| {
                        let records = r
                            .records
                            .into_iter()
                            .map(|rec| StreamRecord {
                                seq: rec.sequence_number,
                                data: String::from_utf8_lossy(&rec.data).into_owned(),
                            })
                            .collect();
                        (Reply::Records { records }, r.next_shard_iterator)
                    })
                })
                .await;
            match outcome {
                Outcome::Ok {
                    reply: Reply::Records { records },
                } => {
                    got += records.len();
                    if let Some(r) = records.last() {
                        c.last = Some(r.seq.clone());
                    }
                    c.iterator = next.filter(|i| !i.is_empty());
                }
                _ => {
                    // Start again from the last record seen, on whichever
                    // node answers next.
                    c.iterator = None;
                    tokio::time::sleep(FAILURE_PAUSE).await;
                }
            }
        }
        if let Some(t) = targets.borrow().as_ref() {
            let done = t.iter().all(|(shard, end)| {
                cursors
                    .get(shard)
                    .and_then(|c| c.last.as_deref())
                    .map(seq_number)
                    .unwrap_or(0)
                    >= *end
            });
            if done {
                return Ok(());
            }
        }
        if Instant::now() > give_up {
            return Err(format!(
                "reader {reader} did not reach every acknowledged record in time"
            ));
        }
        if got == 0 {
            // Caught up: a polling reader's pause before asking again.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
