//! EventBridge over AWS JSON 1.1 (`X-Amz-Target: AWSEvents.<Action>`), what
//! boto3's `events` client, the aws CLI and the AWS SDKs send. Each action
//! becomes the `sluice.v1.Events` call of the same name; times are seconds
//! since the epoch, as the API reference has them.

use serde_json::{json, Map, Value};
use sluice_proto::v1 as pb;

use super::call::Calls;
use super::error::AwsError;
use super::json::{array, page, put_str, strings, Input};

/// The JSON content type of the answers.
pub const CONTENT_TYPE: &str = "application/x-amz-json-1.1";
/// The `X-Amz-Target` prefix.
pub const TARGET_PREFIX: &str = "AWSEvents";
/// The namespace of error types.
pub const NAMESPACE: &str = "com.amazonaws.events";
/// The gRPC service the actions run on.
pub const SERVICE: &str = "sluice.v1.Events";
/// The service name in SigV4 credential scopes.
pub const SIGNING_NAME: &str = "events";

fn optional(input: &Input<'_>, name: &str) -> Result<String, AwsError> {
    Ok(input.string(name)?.unwrap_or_default())
}

/// A target as a request gives it.
fn target_in(t: &Input<'_>) -> Result<pb::Target, AwsError> {
    let nested = |name: &str, member: &str| -> Result<String, AwsError> {
        match t.object(name)? {
            Some(o) => optional(&t.nested(o), member),
            None => Ok(String::new()),
        }
    };
    let input_transformer = match t.object("InputTransformer")? {
        Some(o) => {
            let it = t.nested(o);
            Some(pb::InputTransformer {
                input_paths_map: it.string_map("InputPathsMap")?,
                input_template: it.required("InputTemplate")?,
            })
        }
        None => None,
    };
    let retry_policy = match t.object("RetryPolicy")? {
        Some(o) => {
            let p = t.nested(o);
            Some(pb::RetryPolicy {
                maximum_event_age_in_seconds: p.int("MaximumEventAgeInSeconds")?,
                maximum_retry_attempts: p.int("MaximumRetryAttempts")?,
            })
        }
        None => None,
    };
    Ok(pb::Target {
        id: t.required("Id")?,
        arn: t.required("Arn")?,
        input: optional(t, "Input")?,
        input_path: optional(t, "InputPath")?,
        input_transformer,
        sqs_parameters: Some(pb::SqsParameters {
            message_group_id: nested("SqsParameters", "MessageGroupId")?,
        }),
        kinesis_parameters: Some(pb::KinesisParameters {
            partition_key_path: nested("KinesisParameters", "PartitionKeyPath")?,
        }),
        dead_letter_config: Some(pb::DeadLetterConfig {
            arn: nested("DeadLetterConfig", "Arn")?,
        }),
        retry_policy,
    })
}

/// A target as an answer shows it.
fn target_out(t: pb::Target) -> Value {
    let mut out = strings([
        ("Id", t.id),
        ("Arn", t.arn),
        ("Input", t.input),
        ("InputPath", t.input_path),
    ]);
    if let Some(it) = t.input_transformer {
        out.insert(
            "InputTransformer".into(),
            json!({"InputPathsMap": it.input_paths_map, "InputTemplate": it.input_template}),
        );
    }
    if let Some(p) = t.sqs_parameters.filter(|p| !p.message_group_id.is_empty()) {
        out.insert(
            "SqsParameters".into(),
            json!({"MessageGroupId": p.message_group_id}),
        );
    }
    if let Some(p) = t
        .kinesis_parameters
        .filter(|p| !p.partition_key_path.is_empty())
    {
        out.insert(
            "KinesisParameters".into(),
            json!({"PartitionKeyPath": p.partition_key_path}),
        );
    }
    if let Some(d) = t.dead_letter_config.filter(|d| !d.arn.is_empty()) {
        out.insert("DeadLetterConfig".into(), json!({"Arn": d.arn}));
    }
    if let Some(p) = t.retry_policy {
        out.insert(
            "RetryPolicy".into(),
            json!({"MaximumEventAgeInSeconds": p.maximum_event_age_in_seconds,
                   "MaximumRetryAttempts": p.maximum_retry_attempts}),
        );
    }
    Value::Object(out)
}

fn rule_out(r: pb::Rule) -> Value {
    Value::Object(strings([
        ("Name", r.name),
        ("Arn", r.arn),
        ("EventPattern", r.event_pattern),
        ("State", r.state),
        ("Description", r.description),
        ("EventBusName", r.event_bus_name),
    ]))
}

fn bus_out(b: pb::EventBus) -> Map<String, Value> {
    let mut out = strings([
        ("Name", b.name),
        ("Arn", b.arn),
        ("Description", b.description),
    ]);
    if b.creation_time_ms > 0 {
        out.insert(
            "CreationTime".into(),
            json!(b.creation_time_ms as f64 / 1000.0),
        );
    }
    out
}

/// Milliseconds as the JSON protocols write times: seconds since the epoch.
fn seconds(ms: u64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// A time a request gives (seconds since the epoch), in milliseconds.
fn time_ms(input: &Input<'_>, name: &str) -> Result<u64, AwsError> {
    let ms = input
        .epoch_ms(name)?
        .ok_or_else(|| AwsError::missing(name))?;
    Ok(ms.max(0) as u64)
}

fn archive_out(a: pb::Archive) -> Value {
    let mut out = strings([
        ("ArchiveName", a.archive_name),
        ("ArchiveArn", a.archive_arn),
        ("EventSourceArn", a.event_source_arn),
        ("EventPattern", a.event_pattern),
        ("Description", a.description),
        ("State", a.state),
    ]);
    out.insert("RetentionDays".into(), json!(a.retention_days));
    out.insert("EventCount".into(), json!(a.event_count));
    out.insert("SizeBytes".into(), json!(a.size_bytes));
    out.insert("CreationTime".into(), seconds(a.creation_time_ms));
    Value::Object(out)
}

fn replay_out(r: pb::Replay) -> Value {
    let mut out = strings([
        ("ReplayName", r.replay_name),
        ("ReplayArn", r.replay_arn),
        ("EventSourceArn", r.event_source_arn),
        ("State", r.state),
    ]);
    let d = r.destination.unwrap_or_default();
    out.insert(
        "Destination".into(),
        json!({"Arn": d.arn, "FilterArns": d.filter_arns}),
    );
    out.insert("EventStartTime".into(), seconds(r.event_start_time_ms));
    out.insert("EventEndTime".into(), seconds(r.event_end_time_ms));
    out.insert("ReplayStartTime".into(), seconds(r.replay_start_time_ms));
    if r.replay_end_time_ms > 0 {
        out.insert("ReplayEndTime".into(), seconds(r.replay_end_time_ms));
    }
    if r.event_last_replayed_time_ms > 0 {
        out.insert(
            "EventLastReplayedTime".into(),
            seconds(r.event_last_replayed_time_ms),
        );
    }
    Value::Object(out)
}

fn failed(count: i32, entries: Vec<pb::FailedTargetEntry>) -> Value {
    json!({
        "FailedEntryCount": count,
        "FailedEntries": array(entries, |f| Value::Object(strings([
            ("TargetId", f.target_id),
            ("ErrorCode", f.error_code),
            ("ErrorMessage", f.error_message),
        ]))),
    })
}

/// Runs `action` with the request's members as `caller`; the answer's
/// members.
pub async fn handle(call: Calls<'_>, action: &str, input: Input<'_>) -> Result<Value, AwsError> {
    match action {
        "CreateEventBus" => {
            if input.has("EventSourceName") {
                return Err(AwsError::invalid(
                    "EventSourceName",
                    "partner event sources are not supported",
                ));
            }
            let req = pb::CreateEventBusRequest {
                name: input.required("Name")?,
                description: optional(&input, "Description")?,
            };
            let r: pb::CreateEventBusResponse = call.run("CreateEventBus", req).await?;
            Ok(json!({"EventBusArn": r.event_bus_arn}))
        }
        "DeleteEventBus" => {
            let req = pb::DeleteEventBusRequest {
                name: input.required("Name")?,
            };
            call.done::<_, pb::DeleteEventBusResponse>("DeleteEventBus", req)
                .await
        }
        "DescribeEventBus" => {
            let req = pb::DescribeEventBusRequest {
                name: optional(&input, "Name")?,
            };
            let b: pb::EventBus = call.run("DescribeEventBus", req).await?;
            Ok(Value::Object(bus_out(b)))
        }
        "ListEventBuses" => {
            let req = pb::ListEventBusesRequest {
                name_prefix: optional(&input, "NamePrefix")?,
                next_token: optional(&input, "NextToken")?,
                limit: input.int("Limit")?.unwrap_or(0),
            };
            let r: pb::ListEventBusesResponse = call.run("ListEventBuses", req).await?;
            let buses = array(r.event_buses, |b| Value::Object(bus_out(b)));
            Ok(page("EventBuses", buses, "NextToken", r.next_token))
        }
        "PutRule" => {
            let req = pb::PutRuleRequest {
                name: input.required("Name")?,
                event_bus_name: optional(&input, "EventBusName")?,
                event_pattern: optional(&input, "EventPattern")?,
                state: optional(&input, "State")?,
                description: optional(&input, "Description")?,
                schedule_expression: optional(&input, "ScheduleExpression")?,
            };
            let r: pb::PutRuleResponse = call.run("PutRule", req).await?;
            Ok(json!({"RuleArn": r.rule_arn}))
        }
        "DeleteRule" => {
            let req = pb::DeleteRuleRequest {
                name: input.required("Name")?,
                event_bus_name: optional(&input, "EventBusName")?,
                force: input.bool("Force")?.unwrap_or(false),
            };
            call.done::<_, pb::DeleteRuleResponse>("DeleteRule", req)
                .await
        }
        "DescribeRule" => {
            let req = pb::DescribeRuleRequest {
                name: input.required("Name")?,
                event_bus_name: optional(&input, "EventBusName")?,
            };
            let r: pb::Rule = call.run("DescribeRule", req).await?;
            Ok(rule_out(r))
        }
        "ListRules" => {
            let req = pb::ListRulesRequest {
                event_bus_name: optional(&input, "EventBusName")?,
                name_prefix: optional(&input, "NamePrefix")?,
                next_token: optional(&input, "NextToken")?,
                limit: input.int("Limit")?.unwrap_or(0),
            };
            let r: pb::ListRulesResponse = call.run("ListRules", req).await?;
            Ok(page(
                "Rules",
                array(r.rules, rule_out),
                "NextToken",
                r.next_token,
            ))
        }
        "EnableRule" => {
            let req = pb::EnableRuleRequest {
                name: input.required("Name")?,
                event_bus_name: optional(&input, "EventBusName")?,
            };
            call.done::<_, pb::EnableRuleResponse>("EnableRule", req)
                .await
        }
        "DisableRule" => {
            let req = pb::DisableRuleRequest {
                name: input.required("Name")?,
                event_bus_name: optional(&input, "EventBusName")?,
            };
            call.done::<_, pb::DisableRuleResponse>("DisableRule", req)
                .await
        }
        "PutTargets" => {
            let req = pb::PutTargetsRequest {
                rule: input.required("Rule")?,
                event_bus_name: optional(&input, "EventBusName")?,
                targets: input.each("Targets", target_in)?,
            };
            let r: pb::PutTargetsResponse = call.run("PutTargets", req).await?;
            Ok(failed(r.failed_entry_count, r.failed_entries))
        }
        "RemoveTargets" => {
            let req = pb::RemoveTargetsRequest {
                rule: input.required("Rule")?,
                event_bus_name: optional(&input, "EventBusName")?,
                ids: input.strings("Ids")?,
            };
            let r: pb::RemoveTargetsResponse = call.run("RemoveTargets", req).await?;
            Ok(failed(r.failed_entry_count, r.failed_entries))
        }
        "ListTargetsByRule" => {
            let req = pb::ListTargetsByRuleRequest {
                rule: input.required("Rule")?,
                event_bus_name: optional(&input, "EventBusName")?,
            };
            let r: pb::ListTargetsByRuleResponse = call.run("ListTargetsByRule", req).await?;
            Ok(json!({"Targets": array(r.targets, target_out)}))
        }
        "PutEvents" => {
            let entries = input.each("Entries", |e| {
                Ok(pb::PutEventsRequestEntry {
                    event_bus_name: optional(e, "EventBusName")?,
                    source: optional(e, "Source")?,
                    detail_type: optional(e, "DetailType")?,
                    detail: optional(e, "Detail")?,
                    resources: e.strings("Resources")?,
                    time_ms: e.epoch_ms("Time")?,
                })
            })?;
            let r: pb::PutEventsResponse = call
                .run("PutEvents", pb::PutEventsRequest { entries })
                .await?;
            Ok(json!({
                "FailedEntryCount": r.failed_entry_count,
                "Entries": array(r.entries, |e| {
                    let mut out = Map::new();
                    put_str(&mut out, "EventId", e.event_id);
                    put_str(&mut out, "ErrorCode", e.error_code);
                    put_str(&mut out, "ErrorMessage", e.error_message);
                    Value::Object(out)
                }),
            }))
        }
        "TestEventPattern" => {
            let req = pb::TestEventPatternRequest {
                event_pattern: input.required("EventPattern")?,
                event: input.required("Event")?,
            };
            let r: pb::TestEventPatternResponse = call.run("TestEventPattern", req).await?;
            Ok(json!({"Result": r.result}))
        }
        "CreateArchive" => {
            let req = pb::CreateArchiveRequest {
                archive_name: input.required("ArchiveName")?,
                event_source_arn: input.required("EventSourceArn")?,
                event_pattern: optional(&input, "EventPattern")?,
                retention_days: input.int("RetentionDays")?.unwrap_or(0),
                description: optional(&input, "Description")?,
            };
            let a: pb::Archive = call.run("CreateArchive", req).await?;
            Ok(json!({"ArchiveArn": a.archive_arn, "State": a.state,
                      "CreationTime": seconds(a.creation_time_ms)}))
        }
        "DescribeArchive" => {
            let req = pb::DescribeArchiveRequest {
                archive_name: input.required("ArchiveName")?,
            };
            let a: pb::Archive = call.run("DescribeArchive", req).await?;
            Ok(archive_out(a))
        }
        "ListArchives" => {
            let req = pb::ListArchivesRequest {
                name_prefix: optional(&input, "NamePrefix")?,
                event_source_arn: optional(&input, "EventSourceArn")?,
            };
            let r: pb::ListArchivesResponse = call.run("ListArchives", req).await?;
            Ok(json!({"Archives": array(r.archives, archive_out)}))
        }
        "DeleteArchive" => {
            let req = pb::DeleteArchiveRequest {
                archive_name: input.required("ArchiveName")?,
            };
            call.done::<_, pb::DeleteArchiveResponse>("DeleteArchive", req)
                .await
        }
        "StartReplay" => {
            let destination = match input.object("Destination")? {
                Some(o) => {
                    let d = input.nested(o);
                    pb::ReplayDestination {
                        arn: d.required("Arn")?,
                        filter_arns: d.strings("FilterArns")?,
                    }
                }
                None => return Err(AwsError::missing("Destination")),
            };
            let req = pb::StartReplayRequest {
                replay_name: input.required("ReplayName")?,
                event_source_arn: input.required("EventSourceArn")?,
                event_start_time_ms: time_ms(&input, "EventStartTime")?,
                event_end_time_ms: time_ms(&input, "EventEndTime")?,
                destination: Some(destination),
                description: optional(&input, "Description")?,
            };
            let r: pb::Replay = call.run("StartReplay", req).await?;
            Ok(json!({"ReplayArn": r.replay_arn, "State": r.state,
                      "ReplayStartTime": seconds(r.replay_start_time_ms)}))
        }
        "DescribeReplay" => {
            let req = pb::DescribeReplayRequest {
                replay_name: input.required("ReplayName")?,
            };
            let r: pb::Replay = call.run("DescribeReplay", req).await?;
            Ok(replay_out(r))
        }
        "ListReplays" => {
            let req = pb::ListReplaysRequest {
                name_prefix: optional(&input, "NamePrefix")?,
                state: optional(&input, "State")?,
            };
            let r: pb::ListReplaysResponse = call.run("ListReplays", req).await?;
            Ok(json!({"Replays": array(r.replays, replay_out)}))
        }
        "CancelReplay" => {
            let req = pb::CancelReplayRequest {
                replay_name: input.required("ReplayName")?,
            };
            let r: pb::Replay = call.run("CancelReplay", req).await?;
            Ok(json!({"ReplayArn": r.replay_arn, "State": r.state}))
        }
        other => Err(AwsError::unknown_operation(&format!(
            "{TARGET_PREFIX}.{other}"
        ))),
    }
}
