//! Kinesis over AWS JSON 1.1 (`X-Amz-Target: Kinesis_20131202.<Action>`),
//! what boto3, the aws CLI and the AWS SDKs send. Each action becomes the
//! `sluice.v1.Streams` call of the same name. A stream is named by
//! `StreamName` or `StreamARN`; data blobs are base64, timestamps seconds
//! since the epoch (with milliseconds), as the API reference has them.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Map, Value};
use sluice_proto::v1 as pb;

use super::call::Calls;
use super::error::AwsError;
use super::json::{array, page, strings, Input};

/// The JSON content type of the answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The `X-Amz-Target` prefix.
pub const TARGET_PREFIX: &str = "Kinesis_20131202";
/// The namespace of error types.
pub const NAMESPACE: &str = "com.amazonaws.kinesis.v20131202";
/// The gRPC service the actions run on.
pub const SERVICE: &str = "sluice.v1.Streams";
/// The service name in SigV4 credential scopes.
pub const SIGNING_NAME: &str = "kinesis";

/// Runs `action` with the request's members as `caller`; the answer's
/// members.
pub async fn handle(call: Calls<'_>, action: &str, input: Input<'_>) -> Result<Value, AwsError> {
    match action {
        "CreateStream" => {
            let on_demand = match input.object("StreamModeDetails")? {
                Some(mode) => input.nested(mode).required("StreamMode")? == "ON_DEMAND",
                None => false,
            };
            let shard_count = match input.int("ShardCount")? {
                Some(n) => n,
                // An on-demand stream starts with AWS's four shards.
                None if on_demand => 4,
                None => return Err(AwsError::missing("ShardCount")),
            };
            let req = pb::CreateStreamRequest {
                stream_name: input.required("StreamName")?,
                shard_count,
                tags: input.string_map("Tags")?,
                ..Default::default()
            };
            call.done::<_, pb::CreateStreamResponse>("CreateStream", req)
                .await
        }
        "DeleteStream" => {
            let req = pb::DeleteStreamRequest {
                stream_name: stream(&input)?,
            };
            call.done::<_, pb::DeleteStreamResponse>("DeleteStream", req)
                .await
        }
        "ListStreams" => {
            // `NextToken` is the last name of the page before.
            let start = match input.string("NextToken")? {
                Some(token) => token,
                None => input
                    .string("ExclusiveStartStreamName")?
                    .unwrap_or_default(),
            };
            let req = pb::ListStreamsRequest {
                limit: input.int("Limit")?.unwrap_or(0),
                exclusive_start_stream_name: start,
            };
            let r: pb::ListStreamsResponse = call.run("ListStreams", req).await?;
            let mut out = Map::new();
            if r.has_more_streams {
                if let Some(last) = r.stream_names.last() {
                    out.insert("NextToken".into(), json!(last));
                }
            }
            out.insert("StreamNames".into(), json!(r.stream_names));
            out.insert("HasMoreStreams".into(), json!(r.has_more_streams));
            Ok(Value::Object(out))
        }
        "DescribeStream" => {
            let req = pb::DescribeStreamRequest {
                stream_name: stream(&input)?,
                limit: input.int("Limit")?.unwrap_or(0),
                exclusive_start_shard_id: input
                    .string("ExclusiveStartShardId")?
                    .unwrap_or_default(),
            };
            let r: pb::DescribeStreamResponse = call.run("DescribeStream", req).await?;
            let d = r.stream_description.unwrap_or_default();
            Ok(json!({ "StreamDescription": {
                "StreamName": d.stream_name,
                "StreamARN": d.stream_arn,
                "StreamStatus": d.stream_status,
                "StreamModeDetails": { "StreamMode": "PROVISIONED" },
                "Shards": d.shards.into_iter().map(shard).collect::<Vec<_>>(),
                "HasMoreShards": d.has_more_shards,
                "RetentionPeriodHours": d.retention_period_hours,
                "StreamCreationTimestamp": seconds(d.stream_creation_timestamp),
                "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
                "EncryptionType": "NONE",
            }}))
        }
        "DescribeStreamSummary" => {
            let req = pb::DescribeStreamSummaryRequest {
                stream_name: stream(&input)?,
            };
            let r: pb::DescribeStreamSummaryResponse =
                call.run("DescribeStreamSummary", req).await?;
            let d = r.stream_description_summary.unwrap_or_default();
            Ok(json!({ "StreamDescriptionSummary": {
                "StreamName": d.stream_name,
                "StreamARN": d.stream_arn,
                "StreamStatus": d.stream_status,
                "StreamModeDetails": { "StreamMode": "PROVISIONED" },
                "RetentionPeriodHours": d.retention_period_hours,
                "StreamCreationTimestamp": seconds(d.stream_creation_timestamp),
                "EnhancedMonitoring": [{ "ShardLevelMetrics": [] }],
                "EncryptionType": "NONE",
                "OpenShardCount": d.open_shard_count,
                "ConsumerCount": d.consumer_count,
            }}))
        }
        "ListShards" => {
            if input.object("ShardFilter")?.is_some() {
                return Err(AwsError::invalid(
                    "ShardFilter",
                    "is not supported: list every shard and filter them yourself",
                ));
            }
            // AWS takes no stream with a token, so the token carries it:
            // `STREAM/SHARD`, the stream and the last shard of the page.
            let (stream_name, next_token) = match input.string("NextToken")? {
                Some(token) => {
                    let (name, shard) = token.split_once('/').ok_or_else(|| {
                        AwsError::invalid("NextToken", "is not a token ListShards gave")
                    })?;
                    (name.to_string(), shard.to_string())
                }
                None => (stream(&input)?, String::new()),
            };
            let req = pb::ListShardsRequest {
                stream_name: stream_name.clone(),
                max_results: input.int("MaxResults")?.unwrap_or(0),
                exclusive_start_shard_id: input
                    .string("ExclusiveStartShardId")?
                    .unwrap_or_default(),
                next_token,
            };
            let r: pb::ListShardsResponse = call.run("ListShards", req).await?;
            let next = if r.next_token.is_empty() {
                r.next_token
            } else {
                let name = stream_name.rsplit('/').next().unwrap_or(&stream_name);
                format!("{name}/{}", r.next_token)
            };
            Ok(page("Shards", array(r.shards, shard), "NextToken", next))
        }
        "PutRecord" => {
            let req = pb::PutRecordRequest {
                stream_name: stream(&input)?,
                data: blob(&input, "Data")?,
                partition_key: input.required("PartitionKey")?,
                explicit_hash_key: input.string("ExplicitHashKey")?.unwrap_or_default(),
            };
            let r: pb::PutRecordResponse = call.run("PutRecord", req).await?;
            Ok(json!({
                "ShardId": r.shard_id,
                "SequenceNumber": r.sequence_number,
                "EncryptionType": "NONE",
            }))
        }
        "PutRecords" => {
            let records = input.each("Records", |e| {
                Ok(pb::PutRecordsRequestEntry {
                    data: blob(e, "Data")?,
                    partition_key: e.required("PartitionKey")?,
                    explicit_hash_key: e.string("ExplicitHashKey")?.unwrap_or_default(),
                })
            })?;
            let req = pb::PutRecordsRequest {
                stream_name: stream(&input)?,
                records,
            };
            let r: pb::PutRecordsResponse = call.run("PutRecords", req).await?;
            let records = array(r.records, |e| {
                Value::Object(strings([
                    ("ShardId", e.shard_id),
                    ("SequenceNumber", e.sequence_number),
                    ("ErrorCode", e.error_code),
                    ("ErrorMessage", e.error_message),
                ]))
            });
            Ok(json!({
                "FailedRecordCount": r.failed_record_count,
                "Records": records,
                "EncryptionType": "NONE",
            }))
        }
        "GetShardIterator" => {
            let req = pb::GetShardIteratorRequest {
                stream_name: stream(&input)?,
                shard_id: input.required("ShardId")?,
                shard_iterator_type: input.required("ShardIteratorType")?,
                starting_sequence_number: input
                    .string("StartingSequenceNumber")?
                    .unwrap_or_default(),
                timestamp: input.epoch_ms("Timestamp")?.unwrap_or(0),
            };
            let r: pb::GetShardIteratorResponse = call.run("GetShardIterator", req).await?;
            Ok(json!({ "ShardIterator": r.shard_iterator }))
        }
        "GetRecords" => {
            let req = pb::GetRecordsRequest {
                shard_iterator: input.required("ShardIterator")?,
                limit: input.int("Limit")?.unwrap_or(0),
                stream_name: input.string("StreamARN")?.unwrap_or_default(),
                // Kinesis answers at once.
                wait_time_ms: 0,
            };
            let r: pb::GetRecordsResponse = call.run("GetRecords", req).await?;
            let mut out = strings([("NextShardIterator", r.next_shard_iterator)]);
            out.insert("Records".into(), array(r.records, record));
            out.insert("MillisBehindLatest".into(), json!(r.millis_behind_latest));
            if !r.child_shards.is_empty() {
                out.insert("ChildShards".into(), array(r.child_shards, child_shard));
            }
            Ok(Value::Object(out))
        }
        "IncreaseStreamRetentionPeriod" | "DecreaseStreamRetentionPeriod" => {
            let req = pb::StreamRetentionRequest {
                stream_name: stream(&input)?,
                retention_period_hours: input
                    .int("RetentionPeriodHours")?
                    .ok_or_else(|| AwsError::missing("RetentionPeriodHours"))?,
            };
            call.done::<_, pb::StreamRetentionResponse>(action, req)
                .await
        }
        "SplitShard" => {
            let req = pb::SplitShardRequest {
                stream_name: stream(&input)?,
                shard_to_split: input.required("ShardToSplit")?,
                new_starting_hash_key: input.required("NewStartingHashKey")?,
            };
            call.done::<_, pb::SplitShardResponse>("SplitShard", req)
                .await
        }
        "MergeShards" => {
            let req = pb::MergeShardsRequest {
                stream_name: stream(&input)?,
                shard_to_merge: input.required("ShardToMerge")?,
                adjacent_shard_to_merge: input.required("AdjacentShardToMerge")?,
            };
            call.done::<_, pb::MergeShardsResponse>("MergeShards", req)
                .await
        }
        "UpdateShardCount" => {
            let name = stream(&input)?;
            let req = pb::UpdateShardCountRequest {
                stream_name: name.clone(),
                target_shard_count: input
                    .int("TargetShardCount")?
                    .ok_or_else(|| AwsError::missing("TargetShardCount"))?,
                scaling_type: input.required("ScalingType")?,
            };
            let r: pb::UpdateShardCountResponse = call.run("UpdateShardCount", req).await?;
            Ok(json!({
                "StreamName": name.rsplit('/').next().unwrap_or(&name),
                "CurrentShardCount": r.current_shard_count,
                "TargetShardCount": r.target_shard_count,
            }))
        }
        "AddTagsToStream" => {
            let req = pb::AddTagsToStreamRequest {
                stream_name: stream(&input)?,
                tags: input.string_map("Tags")?,
            };
            call.done::<_, pb::AddTagsToStreamResponse>("AddTagsToStream", req)
                .await
        }
        "RemoveTagsFromStream" => {
            let req = pb::RemoveTagsFromStreamRequest {
                stream_name: stream(&input)?,
                tag_keys: input.strings("TagKeys")?,
            };
            call.done::<_, pb::RemoveTagsFromStreamResponse>("RemoveTagsFromStream", req)
                .await
        }
        "ListTagsForStream" => {
            let req = pb::ListTagsForStreamRequest {
                stream_name: stream(&input)?,
            };
            let r: pb::ListTagsForStreamResponse = call.run("ListTagsForStream", req).await?;
            list_tags(
                r.tags,
                input.string("ExclusiveStartTagKey")?,
                input.int("Limit")?,
            )
        }
        "RegisterStreamConsumer" => {
            let req = pb::RegisterStreamConsumerRequest {
                stream_arn: input.required("StreamARN")?,
                consumer_name: input.required("ConsumerName")?,
            };
            let r: pb::RegisterStreamConsumerResponse =
                call.run("RegisterStreamConsumer", req).await?;
            Ok(json!({ "Consumer": consumer(r.consumer.unwrap_or_default()) }))
        }
        "DeregisterStreamConsumer" => {
            let req = pb::DeregisterStreamConsumerRequest {
                stream_arn: input.string("StreamARN")?.unwrap_or_default(),
                consumer_name: input.string("ConsumerName")?.unwrap_or_default(),
                consumer_arn: input.string("ConsumerARN")?.unwrap_or_default(),
            };
            call.done::<_, pb::DeregisterStreamConsumerResponse>("DeregisterStreamConsumer", req)
                .await
        }
        "ListStreamConsumers" => {
            let req = pb::ListStreamConsumersRequest {
                stream_arn: input.required("StreamARN")?,
            };
            let r: pb::ListStreamConsumersResponse = call.run("ListStreamConsumers", req).await?;
            let consumers: Vec<Value> = r.consumers.into_iter().map(consumer).collect();
            Ok(json!({ "Consumers": consumers }))
        }
        "DescribeStreamConsumer" => describe_consumer(&call, &input).await,
        other => Err(AwsError::unknown_operation(&format!(
            "{TARGET_PREFIX}.{other}"
        ))),
    }
}

/// The gRPC request of a `SubscribeToShard` (whose answer is a stream of
/// events; see [`subscribe_event`]).
pub fn subscribe_request(input: &Input<'_>) -> Result<pb::SubscribeToShardRequest, AwsError> {
    let position = input
        .object("StartingPosition")?
        .ok_or_else(|| AwsError::missing("StartingPosition"))?;
    let position = input.nested(position);
    Ok(pb::SubscribeToShardRequest {
        consumer_arn: input.required("ConsumerARN")?,
        shard_id: input.required("ShardId")?,
        starting_position: Some(pb::StartingPosition {
            r#type: position.required("Type")?,
            sequence_number: position.string("SequenceNumber")?.unwrap_or_default(),
            timestamp: position.epoch_ms("Timestamp")?.unwrap_or(0),
        }),
    })
}

/// A `SubscribeToShardEvent`'s payload.
pub fn subscribe_event(e: pb::SubscribeToShardEvent) -> Value {
    let mut out = json!({
        "Records": e.records.into_iter().map(record).collect::<Vec<_>>(),
        "ContinuationSequenceNumber": e.continuation_sequence_number,
        "MillisBehindLatest": e.millis_behind_latest,
    });
    if !e.child_shards.is_empty() {
        out["ChildShards"] = Value::Array(e.child_shards.into_iter().map(child_shard).collect());
    }
    out
}

/// `DescribeStreamConsumer`, answered from the stream's consumer list
/// (by `ConsumerARN`, or `StreamARN` and `ConsumerName`).
async fn describe_consumer(call: &Calls<'_>, input: &Input<'_>) -> Result<Value, AwsError> {
    let (stream_arn, name) = match input.string("ConsumerARN")? {
        Some(arn) => {
            let (stream_arn, rest) = arn.split_once("/consumer/").ok_or_else(|| {
                AwsError::invalid(
                    "ConsumerARN",
                    "must be arn:aws:kinesis:REGION:ACCOUNT:stream/NAME/consumer/NAME:TIME",
                )
            })?;
            let name = rest.split(':').next().unwrap_or(rest);
            (stream_arn.to_string(), name.to_string())
        }
        None => (
            input.required("StreamARN")?,
            input.required("ConsumerName")?,
        ),
    };
    let req = pb::ListStreamConsumersRequest {
        stream_arn: stream_arn.clone(),
    };
    let r: pb::ListStreamConsumersResponse = call.run("ListStreamConsumers", req).await?;
    let found = r
        .consumers
        .into_iter()
        .find(|c| c.consumer_name == name)
        .ok_or_else(|| AwsError {
            http_status: 400,
            code: "ResourceNotFoundException".into(),
            message: format!(
                "consumer {:?} of stream {stream_arn:?} does not exist",
                crate::error::cut(&name, 128)
            ),
        })?;
    let mut description = consumer(found);
    if let Value::Object(members) = &mut description {
        members.insert("StreamARN".into(), json!(stream_arn));
    }
    Ok(json!({ "ConsumerDescription": description }))
}

/// The stream a request names: `StreamName`, else `StreamARN` (the gRPC
/// API takes either).
fn stream(input: &Input<'_>) -> Result<String, AwsError> {
    match input.string("StreamName")? {
        Some(name) => Ok(name),
        None => input
            .string("StreamARN")?
            .ok_or_else(|| AwsError::missing("StreamName")),
    }
}

/// A base64 blob member, decoded.
fn blob(input: &Input<'_>, name: &str) -> Result<Vec<u8>, AwsError> {
    let text = input.required(name)?;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| AwsError::serialization(format!("{name}: must be base64")))
}

/// Milliseconds since the epoch as the JSON protocols write timestamps.
fn seconds(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

fn shard(s: pb::Shard) -> Value {
    let mut out = strings([
        ("ParentShardId", s.parent_shard_id),
        ("AdjacentParentShardId", s.adjacent_parent_shard_id),
    ]);
    out.insert("ShardId".into(), json!(s.shard_id));
    let hash = s.hash_key_range.unwrap_or_default();
    out.insert(
        "HashKeyRange".into(),
        json!({ "StartingHashKey": hash.starting_hash_key, "EndingHashKey": hash.ending_hash_key }),
    );
    let seq = s.sequence_number_range.unwrap_or_default();
    let mut range = strings([("EndingSequenceNumber", seq.ending_sequence_number)]);
    range.insert(
        "StartingSequenceNumber".into(),
        json!(seq.starting_sequence_number),
    );
    out.insert("SequenceNumberRange".into(), Value::Object(range));
    Value::Object(out)
}

/// A record in the JSON shape (also the payload of `SubscribeToShard`'s
/// events).
pub fn record(r: pb::Record) -> Value {
    json!({
        "SequenceNumber": r.sequence_number,
        "ApproximateArrivalTimestamp": seconds(r.approximate_arrival_timestamp),
        "Data": base64::engine::general_purpose::STANDARD.encode(&r.data),
        "PartitionKey": r.partition_key,
    })
}

/// A child shard in the JSON shape.
pub fn child_shard(c: pb::ChildShard) -> Value {
    let hash = c.hash_key_range.unwrap_or_default();
    json!({
        "ShardId": c.shard_id,
        "ParentShards": c.parent_shards,
        "HashKeyRange": { "StartingHashKey": hash.starting_hash_key, "EndingHashKey": hash.ending_hash_key },
    })
}

fn consumer(c: pb::Consumer) -> Value {
    json!({
        "ConsumerName": c.consumer_name,
        "ConsumerARN": c.consumer_arn,
        "ConsumerStatus": c.consumer_status,
        "ConsumerCreationTimestamp": seconds(c.consumer_creation_timestamp),
    })
}

/// `ListTagsForStream`'s page: tags in key order after
/// `ExclusiveStartTagKey`, at most `Limit` (default and maximum 50).
fn list_tags(
    tags: HashMap<String, String>,
    after: Option<String>,
    limit: Option<i32>,
) -> Result<Value, AwsError> {
    let limit = match limit {
        None => 50,
        Some(n @ 1..=50) => n as usize,
        Some(_) => return Err(AwsError::invalid("Limit", "must be 1 to 50")),
    };
    let mut sorted: Vec<(String, String)> = tags.into_iter().collect();
    sorted.sort();
    let rest: Vec<(String, String)> = sorted
        .into_iter()
        .filter(|(k, _)| after.as_ref().is_none_or(|a| k > a))
        .collect();
    let more = rest.len() > limit;
    let page: Vec<Value> = rest
        .into_iter()
        .take(limit)
        .map(|(k, v)| json!({ "Key": k, "Value": v }))
        .collect();
    Ok(json!({ "Tags": page, "HasMoreTags": more }))
}
