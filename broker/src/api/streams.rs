//! `sluice.v1.Streams`.
//!
//! Writes go to the leader. GetRecords is served from the called node's
//! applied state: it holds only committed records, so nothing it returns can
//! later disappear (the retention window aside), but a lagging node may
//! return fewer records than the leader (never a gap: the iterator it gives
//! back starts after the last record it returned). A stream or shard the
//! node has not heard of yet is asked of the leader. Everything else
//! (GetShardIterator, the metadata reads, SubscribeToShard's consumer and
//! starting position) is linearizable by default. The `sluice-consistency`
//! metadata overrides either default.

use super::status::IntoStatus;
use std::pin::Pin;
use std::time::Duration;

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Reply;

use super::fields::{next_token, optional};
use super::refs::stream_ref;
use super::{Consistency, Context};
use crate::clock::now_ms;
use crate::error::DomainError;
use crate::streams::iterator::{self, Position, ShardIterator};
use crate::streams::records::{validate_batch, NewRecord, Read, READ_BYTES_MAX, READ_MAX_RECORDS};
use crate::streams::{self, hashing, shard_id, ShardMeta, Stream};
use crate::tags::{Change, Tagged};
use crate::waiters::Waiters;
use sluice_core::limits::streams::READ_WAIT_MS_MAX;
use sluice_security::mac::TokenKeys;

/// How long a SubscribeToShard lasts.
const SUBSCRIPTION_MS: u64 = 5 * 60 * 1000;
/// An event at least this often on a quiet subscription.
const HEARTBEAT: Duration = Duration::from_secs(5);
/// Records per subscription event.
const EVENT_MAX_RECORDS: u32 = 1000;

/// Serves the stream API.
pub struct StreamsApi {
    ctx: Context,
}

fn invalid(field: &str, rule: impl Into<String>) -> Status {
    streams::invalid(field, rule).into_status()
}

/// A shard iterator's text: its fields sealed with the cluster's MAC.
pub(crate) fn seal_iterator(keys: &TokenKeys, it: &ShardIterator) -> String {
    keys.seal(&it.fields())
}

/// The iterator `text` is, if this cluster issued it (expired or not).
pub(crate) fn open_iterator(keys: &TokenKeys, text: &str) -> Option<ShardIterator> {
    keys.open(text)
        .and_then(|fields| ShardIterator::from_fields(&fields))
}

/// (stream, consumer) of a consumer ARN.
fn consumer_ref(field: &str, arn: &str) -> Result<(String, String), Status> {
    let bad = || {
        super::status::from_domain(streams::invalid(
            field,
            format!("{arn:?} is not a consumer ARN (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/NAME:TIME)"),
        ))
    };
    let (_, rest) = arn.split_once(":stream/").ok_or_else(bad)?;
    let (stream, rest) = rest.split_once("/consumer/").ok_or_else(bad)?;
    let consumer = rest.split(':').next().ok_or_else(bad)?;
    streams::validate_name(field, stream).map_err(super::status::from_domain)?;
    streams::validate_name(field, consumer).map_err(super::status::from_domain)?;
    Ok((stream.to_string(), consumer.to_string()))
}

fn shard_out(s: &ShardMeta) -> pb::Shard {
    let mut parents = s.parents.iter().map(|p| shard_id(*p));
    pb::Shard {
        shard_id: shard_id(s.index),
        parent_shard_id: parents.next().unwrap_or_default(),
        adjacent_parent_shard_id: parents.next().unwrap_or_default(),
        hash_key_range: Some(pb::HashKeyRange {
            starting_hash_key: s.start_hash.to_string(),
            ending_hash_key: s.end_hash.to_string(),
        }),
        sequence_number_range: Some(pb::SequenceNumberRange {
            starting_sequence_number: streams::sequence_number(1, s.index),
            ending_sequence_number: s
                .closed
                .map(|c| streams::sequence_number(c.last_seq, s.index))
                .unwrap_or_default(),
        }),
    }
}

fn child_out(s: &ShardMeta) -> pb::ChildShard {
    pb::ChildShard {
        shard_id: shard_id(s.index),
        parent_shards: s.parents.iter().map(|p| shard_id(*p)).collect(),
        hash_key_range: Some(pb::HashKeyRange {
            starting_hash_key: s.start_hash.to_string(),
            ending_hash_key: s.end_hash.to_string(),
        }),
    }
}

fn records_out(shard: u32, read: &Read) -> Vec<pb::Record> {
    read.records
        .iter()
        .map(|(seq, r)| pb::Record {
            sequence_number: streams::sequence_number(*seq, shard),
            approximate_arrival_timestamp: r.arrival_ms as i64,
            data: r.data.clone(),
            partition_key: r.partition_key.clone(),
        })
        .collect()
}

/// How far the read is from the shard's newest record.
fn millis_behind(read: &Read) -> i64 {
    if read.next > read.last_seq {
        return 0;
    }
    let at = read
        .records
        .last()
        .map(|(_, r)| r.arrival_ms)
        .unwrap_or(read.last_arrival_ms);
    read.last_arrival_ms
        .saturating_sub(at)
        .max(now_ms().saturating_sub(at)) as i64
}

fn limit_in(field: &str, v: i32, default: usize, max: usize) -> Result<usize, Status> {
    match v {
        0 => Ok(default),
        n if n > 0 && n as usize <= max => Ok(n as usize),
        n => Err(invalid(
            field,
            format!("must be from 1 to {max} (or 0 for {default}), got {n}"),
        )),
    }
}

/// How a records read is served unless the call says otherwise.
fn record_read_consistency<T>(request: &Request<T>) -> Result<Consistency, Status> {
    if request.metadata().get(super::CONSISTENCY_HEADER).is_some() {
        super::consistency(request)
    } else {
        Ok(Consistency::Local)
    }
}

/// Reads a shard. A local read that finds no such stream or shard asks the
/// leader: this node may not have applied its creation yet, though the
/// iterator (or subscription) came from a node that had.
async fn read_shard(
    ctx: &Context,
    how: Consistency,
    stream: u64,
    shard: u32,
    from: u64,
    limit: u32,
    max_bytes: u64,
) -> Result<Read, Status> {
    let query = crate::streams::ReadShard {
        stream,
        shard,
        from,
        limit,
        max_bytes,
    };
    match ctx.ask(how, query.clone()).await {
        Err(s) if how == Consistency::Local && s.code() == tonic::Code::NotFound => {
            ctx.ask(Consistency::Linearizable, query).await
        }
        other => other,
    }
}

/// A GetRecords' `wait_time_ms`, checked.
fn read_wait(field: &str, ms: i32) -> Result<Duration, Status> {
    u32::try_from(ms)
        .ok()
        .filter(|ms| *ms <= READ_WAIT_MS_MAX)
        .map(|ms| Duration::from_millis(u64::from(ms)))
        .ok_or_else(|| {
            invalid(
                field,
                format!("must be from 0 to {READ_WAIT_MS_MAX}, got {ms}"),
            )
        })
}

/// Reads a shard from the iterator's position; when nothing is there yet
/// and `wait` is not zero, waits up to `wait` for this node to apply an
/// append to the shard (a long poll: a mapping's poller hears of a record
/// as soon as it commits instead of reading again after a pause).
async fn read_waiting(
    ctx: &Context,
    how: Consistency,
    it: &ShardIterator,
    limit: u32,
    wait: Duration,
) -> Result<Read, Status> {
    let until = tokio::time::Instant::now() + wait;
    // A plain read (no wait) looks up no wake-up point.
    let wake = (!wait.is_zero()).then(|| ctx.waiters.of(&Waiters::shard_key(it.stream, it.shard)));
    let mut how = how;
    loop {
        // Enabled before the read, so an append between the read and the
        // wait is not missed.
        let mut notified = wake.as_ref().map(|w| Box::pin(w.notified()));
        if let Some(n) = notified.as_mut() {
            n.as_mut().enable();
        }
        let read = read_shard(
            ctx,
            how,
            it.stream,
            it.shard,
            it.next,
            limit,
            READ_BYTES_MAX,
        )
        .await?;
        let Some(notified) = notified else {
            return Ok(read);
        };
        if !read.records.is_empty() || read.children.is_some() {
            return Ok(read);
        }
        // Woken by this node's apply: what it applied is committed, so the
        // next look is local whatever the call asked for.
        how = Consistency::Local;
        tokio::select! {
            _ = notified => {}
            _ = tokio::time::sleep_until(until) => return Ok(read),
        }
    }
}

/// Whether `consumer` is still registered on `name`, by this node's state.
async fn still_registered(ctx: &Context, name: &str, consumer: &str) -> bool {
    match ctx
        .ask(
            Consistency::Local,
            crate::streams::DescribeStream {
                name: name.to_string(),
            },
        )
        .await
    {
        Ok(s) => s.consumers.iter().any(|c| c.name == consumer),
        _ => false,
    }
}

/// One SubscribeToShard: pushes events to `tx` from record `next` on, as
/// this node applies them, until the shard closes, the subscription's 5
/// minutes are up, the consumer is deregistered, or the client goes away.
async fn run_subscription(
    ctx: Context,
    name: String,
    consumer: String,
    stream: u64,
    shard: u32,
    mut next: u64,
    tx: tokio::sync::mpsc::Sender<Result<pb::SubscribeToShardEvent, Status>>,
) {
    let wake = ctx.waiters.of(&Waiters::shard_key(stream, shard));
    let until = tokio::time::Instant::now() + Duration::from_millis(SUBSCRIPTION_MS);
    // A client that stops reading must not hold the task past the end.
    let send = |item| tokio::time::timeout_at(until, tx.send(item));
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let read = match read_shard(
            &ctx,
            Consistency::Local,
            stream,
            shard,
            next,
            EVENT_MAX_RECORDS,
            READ_BYTES_MAX,
        )
        .await
        {
            Ok(r) => r,
            Err(e) => {
                let _ = send(Err(e)).await;
                return;
            }
        };
        let finished = read.children.is_some();
        let event = pb::SubscribeToShardEvent {
            records: records_out(shard, &read),
            continuation_sequence_number: streams::sequence_number(
                read.next.saturating_sub(1),
                shard,
            ),
            millis_behind_latest: millis_behind(&read),
            child_shards: read.children.iter().flatten().map(child_out).collect(),
        };
        let had_records = !read.records.is_empty();
        next = read.next;
        if (had_records || finished) && !matches!(send(Ok(event.clone())).await, Ok(Ok(()))) {
            return;
        }
        if finished || tokio::time::Instant::now() >= until {
            return;
        }
        if had_records {
            continue;
        }
        tokio::select! {
            _ = &mut notified => {}
            _ = tokio::time::sleep(HEARTBEAT) => {
                // A quiet shard still hears from us, so a dead client is
                // noticed and the consumer sees how far behind it is; and a
                // deregistered consumer's subscriptions end.
                if !still_registered(&ctx, &name, &consumer).await {
                    let gone = DomainError::not_found(
                        "ResourceNotFoundException",
                        format!("consumer_arn: consumer {consumer:?} of stream {name:?} was deregistered"),
                    );
                    let _ = send(Err(gone.into_status())).await;
                    return;
                }
                if !matches!(send(Ok(event)).await, Ok(Ok(()))) {
                    return;
                }
            }
            _ = tokio::time::sleep_until(until) => return,
        }
    }
}

impl StreamsApi {
    /// The service over a node's context.
    pub fn new(ctx: Context) -> Self {
        StreamsApi { ctx }
    }

    async fn stream(&self, how: Consistency, name: &str) -> Result<Stream, Status> {
        self.ctx
            .ask(
                how,
                crate::streams::DescribeStream {
                    name: name.to_string(),
                },
            )
            .await
    }

    async fn resolve(
        &self,
        how: Consistency,
        name: &str,
        shard: u32,
        position: Position,
    ) -> Result<(u64, u64), Status> {
        let at = self
            .ctx
            .ask(
                how,
                crate::streams::ResolvePosition {
                    name: name.to_string(),
                    shard,
                    position,
                },
            )
            .await?;
        Ok((at.stream, at.seq))
    }

    /// Applies a tag change to the stream `stream_name` names.
    async fn retag(&self, stream_name: &str, change: Change) -> Result<(), Status> {
        let name = stream_ref("stream_name", stream_name)?;
        let invalid = streams::invalid_tag;
        self.ctx.tag(Tagged::Stream(name), change, invalid).await
    }

    fn consumer_out(&self, stream: &str, c: &streams::ConsumerMeta) -> pb::Consumer {
        pb::Consumer {
            consumer_name: c.name.clone(),
            consumer_arn: self
                .ctx
                .identity
                .consumer_arn(stream, &c.name, c.created_ms),
            consumer_status: "ACTIVE".into(),
            consumer_creation_timestamp: c.created_ms as i64,
        }
    }

    fn paged_shards(
        s: &Stream,
        after: &str,
        limit: usize,
    ) -> Result<(Vec<pb::Shard>, bool), Status> {
        let start = optional(after, |id| {
            streams::parse_shard_id("exclusive_start_shard_id", id)
        })
        .map_err(super::status::from_domain)?;
        let mut shards: Vec<&ShardMeta> = s
            .shards
            .iter()
            .filter(|m| start.is_none_or(|a| m.index > a))
            .collect();
        shards.sort_by_key(|m| m.index);
        let more = shards.len() > limit;
        Ok((
            shards.into_iter().take(limit).map(shard_out).collect(),
            more,
        ))
    }
}

type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<pb::SubscribeToShardEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::streams_server::Streams for StreamsApi {
    type SubscribeToShardStream = EventStream;

    async fn create_stream(
        &self,
        request: Request<pb::CreateStreamRequest>,
    ) -> Reply<pb::CreateStreamResponse> {
        let r = request.into_inner();
        let c = streams::CreateStream::new(
            &r.stream_name,
            r.shard_count,
            r.retention_period_hours,
            r.max_record_size_in_bytes,
            r.shard_write_records_per_second,
            r.shard_write_bytes_per_second,
            r.tags.into_iter().collect(),
        )
        .map_err(super::status::from_domain)?;
        let name = c.name.clone();
        let created = self.ctx.run(c).await?;
        Ok(Response::new(pb::CreateStreamResponse {
            stream_arn: self.ctx.identity.stream_arn(&name),
            created,
        }))
    }

    async fn delete_stream(
        &self,
        request: Request<pb::DeleteStreamRequest>,
    ) -> Reply<pb::DeleteStreamResponse> {
        let name = stream_ref("stream_name", &request.into_inner().stream_name)?;
        self.ctx.run(crate::streams::DeleteStream { name }).await?;
        Ok(Response::new(pb::DeleteStreamResponse {}))
    }

    async fn list_streams(
        &self,
        request: Request<pb::ListStreamsRequest>,
    ) -> Reply<pb::ListStreamsResponse> {
        let how = super::consistency(&request)?;
        let r = request.into_inner();
        let limit = limit_in("limit", r.limit, 100, 10_000)? as u32;
        let after = optional(&r.exclusive_start_stream_name, |name| {
            streams::validate_name("exclusive_start_stream_name", name)?;
            Ok(name.to_string())
        })
        .map_err(super::status::from_domain)?;
        let (names, more) = self
            .ctx
            .ask(how, crate::streams::ListStreams { after, limit })
            .await?;
        Ok(Response::new(pb::ListStreamsResponse {
            stream_names: names,
            has_more_streams: more,
        }))
    }

    async fn describe_stream(
        &self,
        request: Request<pb::DescribeStreamRequest>,
    ) -> Reply<pb::DescribeStreamResponse> {
        let how = super::consistency(&request)?;
        let r = request.into_inner();
        let name = stream_ref("stream_name", &r.stream_name)?;
        let limit = limit_in("limit", r.limit, 100, 10_000)?;
        let s = self.stream(how, &name).await?;
        let (shards, has_more_shards) = Self::paged_shards(&s, &r.exclusive_start_shard_id, limit)?;
        Ok(Response::new(pb::DescribeStreamResponse {
            stream_description: Some(pb::StreamDescription {
                stream_arn: self.ctx.identity.stream_arn(&s.name),
                stream_name: s.name,
                stream_status: "ACTIVE".into(),
                shards,
                has_more_shards,
                retention_period_hours: s.retention_hours as i32,
                stream_creation_timestamp: s.created_ms as i64,
                max_record_size_in_bytes: s.max_record_bytes as i32,
                shard_write_records_per_second: s.write_records_per_second as i32,
                shard_write_bytes_per_second: s.write_bytes_per_second as i32,
            }),
        }))
    }

    async fn describe_stream_summary(
        &self,
        request: Request<pb::DescribeStreamSummaryRequest>,
    ) -> Reply<pb::DescribeStreamSummaryResponse> {
        let how = super::consistency(&request)?;
        let name = stream_ref("stream_name", &request.into_inner().stream_name)?;
        let s = self.stream(how, &name).await?;
        Ok(Response::new(pb::DescribeStreamSummaryResponse {
            stream_description_summary: Some(pb::StreamDescriptionSummary {
                stream_arn: self.ctx.identity.stream_arn(&s.name),
                stream_status: "ACTIVE".into(),
                retention_period_hours: s.retention_hours as i32,
                stream_creation_timestamp: s.created_ms as i64,
                open_shard_count: s.open_shards().count() as i32,
                consumer_count: s.consumers.len() as i32,
                stream_name: s.name,
            }),
        }))
    }

    async fn list_shards(
        &self,
        request: Request<pb::ListShardsRequest>,
    ) -> Reply<pb::ListShardsResponse> {
        let how = super::consistency(&request)?;
        let r = request.into_inner();
        let name = stream_ref("stream_name", &r.stream_name)?;
        let limit = limit_in("max_results", r.max_results, 1000, 10_000)?;
        let after = if r.next_token.is_empty() {
            r.exclusive_start_shard_id
        } else {
            r.next_token
        };
        let s = self.stream(how, &name).await?;
        let (shards, more) = Self::paged_shards(&s, &after, limit)?;
        let next_token = next_token(more, &shards, |s| s.shard_id.clone());
        Ok(Response::new(pb::ListShardsResponse { shards, next_token }))
    }

    async fn put_record(
        &self,
        request: Request<pb::PutRecordRequest>,
    ) -> Reply<pb::PutRecordResponse> {
        let r = request.into_inner();
        let stream = stream_ref("stream_name", &r.stream_name)?;
        let rec = NewRecord::new("", r.data, r.partition_key, &r.explicit_hash_key)
            .map_err(super::status::from_domain)?;
        let placed = super::status::only(
            self.ctx
                .run(crate::streams::PutRecords {
                    stream,
                    records: vec![rec],
                })
                .await?,
            "PutRecord",
        )?;
        Ok(Response::new(pb::PutRecordResponse {
            shard_id: shard_id(placed.shard),
            sequence_number: streams::sequence_number(placed.seq, placed.shard),
        }))
    }

    type PutRecordStreamStream = super::put_stream::Replies;

    async fn put_record_stream(
        &self,
        request: Request<tonic::Streaming<pb::PutRecordStreamRequest>>,
    ) -> Reply<Self::PutRecordStreamStream> {
        Ok(Response::new(super::producer::serve::<
            super::put_stream::RecordProducer,
        >(self.ctx.clone(), request)))
    }

    async fn put_records(
        &self,
        request: Request<pb::PutRecordsRequest>,
    ) -> Reply<pb::PutRecordsResponse> {
        let r = request.into_inner();
        let stream = stream_ref("stream_name", &r.stream_name)?;
        let records = r
            .records
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                NewRecord::new(
                    &format!("records[{i}]"),
                    e.data,
                    e.partition_key,
                    &e.explicit_hash_key,
                )
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(super::status::from_domain)?;
        validate_batch(&records).map_err(super::status::from_domain)?;
        let results = self
            .ctx
            .run(crate::streams::PutRecords { stream, records })
            .await?;
        let mut failed = 0;
        let records = results
            .into_iter()
            .map(|r| match r {
                Ok(p) => pb::PutRecordsResultEntry {
                    shard_id: shard_id(p.shard),
                    sequence_number: streams::sequence_number(p.seq, p.shard),
                    ..Default::default()
                },
                Err(e) => {
                    failed += 1;
                    pb::PutRecordsResultEntry {
                        error_code: e.code,
                        error_message: e.message,
                        ..Default::default()
                    }
                }
            })
            .collect();
        Ok(Response::new(pb::PutRecordsResponse {
            failed_record_count: failed,
            records,
        }))
    }

    async fn get_shard_iterator(
        &self,
        request: Request<pb::GetShardIteratorRequest>,
    ) -> Reply<pb::GetShardIteratorResponse> {
        // Linearizable by default: LATEST is the newest record now, and
        // a stream just created is found.
        let how = super::consistency(&request)?;
        let r = request.into_inner();
        let name = stream_ref("stream_name", &r.stream_name)?;
        let shard =
            streams::parse_shard_id("shard_id", &r.shard_id).map_err(super::status::from_domain)?;
        let position = Position::parse(
            "shard_iterator_type",
            &r.shard_iterator_type,
            &r.starting_sequence_number,
            r.timestamp,
            shard,
        )
        .map_err(super::status::from_domain)?;
        let (stream, next) = self.resolve(how, &name, shard, position).await?;
        let it = ShardIterator {
            stream,
            shard,
            next,
            issued_ms: now_ms(),
            stream_name: name,
        };
        Ok(Response::new(pb::GetShardIteratorResponse {
            shard_iterator: seal_iterator(&self.ctx.security.iterators, &it),
        }))
    }

    async fn get_records(
        &self,
        request: Request<pb::GetRecordsRequest>,
    ) -> Reply<pb::GetRecordsResponse> {
        let how = record_read_consistency(&request)?;
        let r = request.into_inner();
        let it = open_iterator(&self.ctx.security.iterators, &r.shard_iterator)
            .ok_or_else(|| iterator::not_an_iterator("shard_iterator"))
            .map_err(super::status::from_domain)?;
        it.check_fresh("shard_iterator", now_ms())
            .map_err(super::status::from_domain)?;
        let limit = limit_in(
            "limit",
            r.limit,
            READ_MAX_RECORDS as usize,
            READ_MAX_RECORDS as usize,
        )? as u32;
        let wait = read_wait("wait_time_ms", r.wait_time_ms)?;
        let read = read_waiting(&self.ctx, how, &it, limit, wait).await?;
        if !r.stream_name.is_empty() {
            let name = stream_ref("stream_name", &r.stream_name)?;
            if name != read.stream {
                return Err(streams::invalid(
                    "shard_iterator",
                    format!("belongs to stream {:?}, not {name:?}", read.stream),
                )
                .into_status());
            }
        }
        let next_shard_iterator = if read.children.is_some() {
            String::new()
        } else {
            seal_iterator(
                &self.ctx.security.iterators,
                &ShardIterator {
                    next: read.next,
                    issued_ms: now_ms(),
                    ..it.clone()
                },
            )
        };
        Ok(Response::new(pb::GetRecordsResponse {
            records: records_out(it.shard, &read),
            next_shard_iterator,
            millis_behind_latest: millis_behind(&read),
            child_shards: read.children.iter().flatten().map(child_out).collect(),
        }))
    }

    async fn increase_stream_retention_period(
        &self,
        request: Request<pb::StreamRetentionRequest>,
    ) -> Reply<pb::StreamRetentionResponse> {
        self.retention(request, true).await
    }

    async fn decrease_stream_retention_period(
        &self,
        request: Request<pb::StreamRetentionRequest>,
    ) -> Reply<pb::StreamRetentionResponse> {
        self.retention(request, false).await
    }

    async fn split_shard(
        &self,
        request: Request<pb::SplitShardRequest>,
    ) -> Reply<pb::SplitShardResponse> {
        let r = request.into_inner();
        let name = stream_ref("stream_name", &r.stream_name)?;
        let shard = streams::parse_shard_id("shard_to_split", &r.shard_to_split)
            .map_err(super::status::from_domain)?;
        let new_start = hashing::parse("new_starting_hash_key", &r.new_starting_hash_key)
            .map_err(super::status::from_domain)?;
        let c = self
            .ctx
            .run(crate::streams::SplitShard {
                name,
                shard,
                new_start,
            })
            .await?;
        Ok(Response::new(pb::SplitShardResponse {
            child_shard_ids: c.iter().map(|i| shard_id(*i)).collect(),
        }))
    }

    async fn merge_shards(
        &self,
        request: Request<pb::MergeShardsRequest>,
    ) -> Reply<pb::MergeShardsResponse> {
        let r = request.into_inner();
        let name = stream_ref("stream_name", &r.stream_name)?;
        let shard = streams::parse_shard_id("shard_to_merge", &r.shard_to_merge)
            .map_err(super::status::from_domain)?;
        let adjacent =
            streams::parse_shard_id("adjacent_shard_to_merge", &r.adjacent_shard_to_merge)
                .map_err(super::status::from_domain)?;
        let c = self
            .ctx
            .run(crate::streams::MergeShards {
                name,
                shard,
                adjacent,
            })
            .await?;
        Ok(Response::new(pb::MergeShardsResponse {
            child_shard_id: shard_id(c),
        }))
    }

    async fn update_shard_count(
        &self,
        request: Request<pb::UpdateShardCountRequest>,
    ) -> Reply<pb::UpdateShardCountResponse> {
        let r = request.into_inner();
        let name = stream_ref("stream_name", &r.stream_name)?;
        if !r.scaling_type.is_empty() && r.scaling_type != "UNIFORM_SCALING" {
            return Err(invalid("scaling_type", "must be UNIFORM_SCALING"));
        }
        let target = u32::try_from(r.target_shard_count)
            .map_err(|_| invalid("target_shard_count", "must be positive"))?;
        let previous = self
            .ctx
            .run(crate::streams::UpdateShardCount { name, target })
            .await?;
        Ok(Response::new(pb::UpdateShardCountResponse {
            current_shard_count: previous as i32,
            target_shard_count: target as i32,
        }))
    }

    async fn add_tags_to_stream(
        &self,
        request: Request<pb::AddTagsToStreamRequest>,
    ) -> Reply<pb::AddTagsToStreamResponse> {
        let r = request.into_inner();
        let tags = r.tags.into_iter().collect();
        self.retag(&r.stream_name, Change::Add(tags)).await?;
        Ok(Response::new(pb::AddTagsToStreamResponse {}))
    }

    async fn remove_tags_from_stream(
        &self,
        request: Request<pb::RemoveTagsFromStreamRequest>,
    ) -> Reply<pb::RemoveTagsFromStreamResponse> {
        let r = request.into_inner();
        self.retag(&r.stream_name, Change::Remove(r.tag_keys))
            .await?;
        Ok(Response::new(pb::RemoveTagsFromStreamResponse {}))
    }

    async fn list_tags_for_stream(
        &self,
        request: Request<pb::ListTagsForStreamRequest>,
    ) -> Reply<pb::ListTagsForStreamResponse> {
        let how = super::consistency(&request)?;
        let name = stream_ref("stream_name", &request.into_inner().stream_name)?;
        let s = self.stream(how, &name).await?;
        Ok(Response::new(pb::ListTagsForStreamResponse {
            tags: s.tags.into_iter().collect(),
        }))
    }

    async fn register_stream_consumer(
        &self,
        request: Request<pb::RegisterStreamConsumerRequest>,
    ) -> Reply<pb::RegisterStreamConsumerResponse> {
        let r = request.into_inner();
        let name = stream_ref("stream_arn", &r.stream_arn)?;
        streams::validate_name("consumer_name", &r.consumer_name)
            .map_err(super::status::from_domain)?;
        let c = self
            .ctx
            .run(crate::streams::RegisterConsumer {
                name: name.clone(),
                consumer: r.consumer_name,
            })
            .await?;
        Ok(Response::new(pb::RegisterStreamConsumerResponse {
            consumer: Some(self.consumer_out(&name, &c)),
        }))
    }

    async fn deregister_stream_consumer(
        &self,
        request: Request<pb::DeregisterStreamConsumerRequest>,
    ) -> Reply<pb::DeregisterStreamConsumerResponse> {
        let r = request.into_inner();
        let (name, consumer) = if !r.consumer_arn.is_empty() {
            consumer_ref("consumer_arn", &r.consumer_arn)?
        } else {
            streams::validate_name("consumer_name", &r.consumer_name)
                .map_err(super::status::from_domain)?;
            (stream_ref("stream_arn", &r.stream_arn)?, r.consumer_name)
        };
        self.ctx
            .run(crate::streams::DeregisterConsumer { name, consumer })
            .await?;
        Ok(Response::new(pb::DeregisterStreamConsumerResponse {}))
    }

    async fn list_stream_consumers(
        &self,
        request: Request<pb::ListStreamConsumersRequest>,
    ) -> Reply<pb::ListStreamConsumersResponse> {
        let how = super::consistency(&request)?;
        let name = stream_ref("stream_arn", &request.into_inner().stream_arn)?;
        let s = self.stream(how, &name).await?;
        Ok(Response::new(pb::ListStreamConsumersResponse {
            consumers: s
                .consumers
                .iter()
                .map(|c| self.consumer_out(&s.name, c))
                .collect(),
        }))
    }

    async fn subscribe_to_shard(
        &self,
        request: Request<pb::SubscribeToShardRequest>,
    ) -> Reply<Self::SubscribeToShardStream> {
        let r = request.into_inner();
        let (name, consumer) = consumer_ref("consumer_arn", &r.consumer_arn)?;
        let shard =
            streams::parse_shard_id("shard_id", &r.shard_id).map_err(super::status::from_domain)?;
        let p = r.starting_position.unwrap_or_default();
        let position = Position::parse(
            "starting_position.type",
            &p.r#type,
            &p.sequence_number,
            p.timestamp,
            shard,
        )
        .map_err(super::status::from_domain)?;
        // The consumer and the starting position at a linearizable point
        // (a consumer registered or a record put just before is seen);
        // the records then come from this node as it applies them.
        let s = self.stream(Consistency::Linearizable, &name).await?;
        if !s.consumers.iter().any(|c| c.name == consumer) {
            return Err(DomainError::not_found(
                "ResourceNotFoundException",
                format!("consumer_arn: stream {name:?} has no consumer {consumer:?}"),
            )
            .into_status());
        }
        let (stream, next) = self
            .resolve(Consistency::Linearizable, &name, shard, position)
            .await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(run_subscription(
            self.ctx.clone(),
            name,
            consumer,
            stream,
            shard,
            next,
            tx,
        ));
        let events = tokio_stream::wrappers::ReceiverStream::new(rx);
        Ok(Response::new(Box::pin(events) as EventStream))
    }
}

impl StreamsApi {
    async fn retention(
        &self,
        request: Request<pb::StreamRetentionRequest>,
        increase: bool,
    ) -> Reply<pb::StreamRetentionResponse> {
        let r = request.into_inner();
        let name = stream_ref("stream_name", &r.stream_name)?;
        let hours = u32::try_from(r.retention_period_hours)
            .ok()
            .filter(|h| (streams::RETENTION_MIN_HOURS..=streams::RETENTION_MAX_HOURS).contains(h))
            .ok_or_else(|| {
                invalid(
                    "retention_period_hours",
                    format!(
                        "must be from {} to {}, got {}",
                        streams::RETENTION_MIN_HOURS,
                        streams::RETENTION_MAX_HOURS,
                        r.retention_period_hours
                    ),
                )
            })?;
        self.ctx
            .run(crate::streams::SetStreamRetention {
                name,
                hours,
                increase,
            })
            .await?;
        Ok(Response::new(pb::StreamRetentionResponse {}))
    }
}
