//! EventBridge Scheduler over its REST-JSON protocol (`/schedules/{Name}`),
//! what boto3's `scheduler` client, the aws CLI and the SDKs send. A route
//! (method and path) names the action; the path and query carry the name
//! and group, the JSON body the rest (times as seconds since the epoch).
//! Each action becomes the `sluice.v1.Scheduler` call of the same name.

use serde_json::{json, Map, Value};
use sluice_proto::v1 as pb;

use super::call::Calls;
use super::error::AwsError;
use super::json::Input;
use super::lambda::{Answer, Request};

/// The gRPC service the actions run on.
pub const SERVICE: &str = "sluice.v1.Scheduler";
/// The service name in SigV4 credential scopes.
pub const SIGNING_NAME: &str = "scheduler";

/// Whether `path` is one of Scheduler's.
pub fn is_scheduler_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    matches!(first, "schedules" | "schedule-groups")
}

/// Runs the action `request`'s route names.
pub async fn handle(call: Calls<'_>, request: Request<'_>) -> Result<Answer, AwsError> {
    let method = request.method.as_str();
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    let group = request.query("groupName").unwrap_or("").to_string();
    match (method, segments.as_slice()) {
        ("POST", ["schedules", name]) => {
            let body = request.json()?;
            let s = settings(name, &Input::of(&body)?)?;
            let r: pb::CreateScheduleResponse = call.run("CreateSchedule", s).await?;
            Ok(Answer::json(200, json!({ "ScheduleArn": r.schedule_arn })))
        }
        ("PUT", ["schedules", name]) => {
            let body = request.json()?;
            let s = settings(name, &Input::of(&body)?)?;
            let r: pb::UpdateScheduleResponse = call.run("UpdateSchedule", s).await?;
            Ok(Answer::json(200, json!({ "ScheduleArn": r.schedule_arn })))
        }
        ("GET", ["schedules", name]) => {
            let req = pb::GetScheduleRequest {
                name: name.to_string(),
                group_name: group,
            };
            let s: pb::Schedule = call.run("GetSchedule", req).await?;
            Ok(Answer::json(200, schedule(&s, true)))
        }
        ("DELETE", ["schedules", name]) => {
            let req = pb::DeleteScheduleRequest {
                name: name.to_string(),
                group_name: group,
            };
            let _: pb::DeleteScheduleResponse = call.run("DeleteSchedule", req).await?;
            Ok(Answer::json(200, json!({})))
        }
        ("GET", ["schedules"]) => {
            let max_results = match request.query("MaxResults") {
                None => 0,
                Some(n) => n.parse().map_err(|_| {
                    AwsError::invalid("MaxResults", "must be a number from 1 to 100")
                })?,
            };
            let req = pb::ListSchedulesRequest {
                group_name: request.query("ScheduleGroup").unwrap_or("").into(),
                name_prefix: request.query("NamePrefix").unwrap_or("").into(),
                next_token: request.query("NextToken").unwrap_or("").into(),
                max_results,
            };
            let r: pb::ListSchedulesResponse = call.run("ListSchedules", req).await?;
            // `State` filters the page, as Scheduler's filter does.
            let state = request.query("State");
            let schedules: Vec<Value> = r
                .schedules
                .iter()
                .filter(|s| state.is_none_or(|w| s.state == w))
                .map(|s| schedule(s, false))
                .collect();
            let mut out = json!({ "Schedules": schedules });
            if !r.next_token.is_empty() {
                out["NextToken"] = Value::String(r.next_token);
            }
            Ok(Answer::json(200, out))
        }
        (_, ["schedule-groups", ..]) => Err(AwsError {
            http_status: 400,
            code: "ValidationException".into(),
            message: "schedule groups are not served: every schedule is in the group default"
                .into(),
        }),
        _ => Err(AwsError {
            http_status: 404,
            code: "UnknownOperationException".into(),
            message: format!(
                "no Scheduler action at {method} {}",
                request.segments.join("/")
            ),
        }),
    }
}

/// A create or update body as the gRPC request.
fn settings(name: &str, i: &Input<'_>) -> Result<pb::ScheduleSettings, AwsError> {
    let window = i.object("FlexibleTimeWindow")?.map(|w| {
        let w = i.nested(w);
        Ok::<_, AwsError>(pb::FlexibleTimeWindow {
            mode: w.string("Mode")?.unwrap_or_default(),
            maximum_window_in_minutes: w.int("MaximumWindowInMinutes")?.unwrap_or(0),
        })
    });
    let target = i
        .object("Target")?
        .map(|t| target(&i.nested(t)))
        .transpose()?;
    let ms = |field: &str| -> Result<u64, AwsError> {
        Ok(i.epoch_ms(field)?.map(|v| v as u64).unwrap_or(0))
    };
    Ok(pb::ScheduleSettings {
        name: name.to_string(),
        group_name: i.string("GroupName")?.unwrap_or_default(),
        schedule_expression: i.string("ScheduleExpression")?.unwrap_or_default(),
        schedule_expression_timezone: i.string("ScheduleExpressionTimezone")?.unwrap_or_default(),
        start_date_ms: ms("StartDate")?,
        end_date_ms: ms("EndDate")?,
        description: i.string("Description")?.unwrap_or_default(),
        state: i.string("State")?.unwrap_or_default(),
        flexible_time_window: window.transpose()?,
        target,
        action_after_completion: i.string("ActionAfterCompletion")?.unwrap_or_default(),
    })
}

fn target(t: &Input<'_>) -> Result<pb::ScheduleTarget, AwsError> {
    let nested = |name: &str| -> Result<Option<Input<'_>>, AwsError> {
        Ok(t.object(name)?.map(|o| t.nested(o)))
    };
    let retry = nested("RetryPolicy")?
        .map(|r| {
            Ok::<_, AwsError>(pb::RetryPolicy {
                maximum_event_age_in_seconds: r.int("MaximumEventAgeInSeconds")?,
                maximum_retry_attempts: r.int("MaximumRetryAttempts")?,
            })
        })
        .transpose()?;
    let text = |o: &Option<Input<'_>>, name: &str| -> Result<String, AwsError> {
        Ok(match o {
            Some(o) => o.string(name)?.unwrap_or_default(),
            None => String::new(),
        })
    };
    let dlq = nested("DeadLetterConfig")?;
    let sqs = nested("SqsParameters")?;
    let kinesis = nested("KinesisParameters")?;
    let bus = nested("EventBridgeParameters")?;
    for unserved in ["EcsParameters", "SageMakerPipelineParameters"] {
        if t.has(unserved) {
            return Err(AwsError::invalid(
                &format!("Target.{unserved}"),
                "ECS and SageMaker targets are not served",
            ));
        }
    }
    let dlq_arn = text(&dlq, "Arn")?;
    let group = text(&sqs, "MessageGroupId")?;
    let partition_key = text(&kinesis, "PartitionKey")?;
    let (detail_type, source) = (text(&bus, "DetailType")?, text(&bus, "Source")?);
    Ok(pb::ScheduleTarget {
        arn: t.string("Arn")?.unwrap_or_default(),
        role_arn: t.string("RoleArn")?.unwrap_or_default(),
        input: t.string("Input")?.unwrap_or_default(),
        dead_letter_config: dlq
            .is_some()
            .then_some(pb::DeadLetterConfig { arn: dlq_arn }),
        retry_policy: retry,
        sqs_parameters: sqs.is_some().then_some(pb::SqsParameters {
            message_group_id: group,
        }),
        kinesis_parameters: kinesis
            .is_some()
            .then_some(pb::ScheduleKinesisParameters { partition_key }),
        event_bridge_parameters: bus.is_some().then_some(pb::EventBridgeParameters {
            detail_type,
            source,
        }),
    })
}

/// Seconds since the epoch, as the JSON protocols write times.
fn seconds(ms: u64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// A schedule in Scheduler's shape: whole (`GetSchedule`) or as a list
/// entry.
fn schedule(s: &pb::Schedule, whole: bool) -> Value {
    let t = s.target.clone().unwrap_or_default();
    let mut out = Map::new();
    out.insert("Arn".into(), json!(s.arn));
    out.insert("Name".into(), json!(s.name));
    out.insert("GroupName".into(), json!(s.group_name));
    out.insert("State".into(), json!(s.state));
    out.insert("CreationDate".into(), seconds(s.creation_date_ms));
    out.insert(
        "LastModificationDate".into(),
        seconds(s.last_modification_date_ms),
    );
    if !whole {
        out.insert("Target".into(), json!({ "Arn": t.arn }));
        return Value::Object(out);
    }
    out.insert("ScheduleExpression".into(), json!(s.schedule_expression));
    out.insert(
        "ScheduleExpressionTimezone".into(),
        json!(s.schedule_expression_timezone),
    );
    if s.start_date_ms > 0 {
        out.insert("StartDate".into(), seconds(s.start_date_ms));
    }
    if s.end_date_ms > 0 {
        out.insert("EndDate".into(), seconds(s.end_date_ms));
    }
    if !s.description.is_empty() {
        out.insert("Description".into(), json!(s.description));
    }
    out.insert(
        "ActionAfterCompletion".into(),
        json!(s.action_after_completion),
    );
    let w = s.flexible_time_window.clone().unwrap_or_default();
    out.insert(
        "FlexibleTimeWindow".into(),
        if w.mode == "FLEXIBLE" {
            json!({ "Mode": w.mode, "MaximumWindowInMinutes": w.maximum_window_in_minutes })
        } else {
            json!({ "Mode": "OFF" })
        },
    );
    let mut target = json!({ "Arn": t.arn, "RoleArn": t.role_arn });
    if !t.input.is_empty() {
        target["Input"] = json!(t.input);
    }
    if let Some(d) = t.dead_letter_config {
        target["DeadLetterConfig"] = json!({ "Arn": d.arn });
    }
    if let Some(r) = t.retry_policy {
        target["RetryPolicy"] = json!({
            "MaximumEventAgeInSeconds": r.maximum_event_age_in_seconds,
            "MaximumRetryAttempts": r.maximum_retry_attempts,
        });
    }
    if let Some(q) = t.sqs_parameters {
        target["SqsParameters"] = json!({ "MessageGroupId": q.message_group_id });
    }
    if let Some(k) = t.kinesis_parameters {
        target["KinesisParameters"] = json!({ "PartitionKey": k.partition_key });
    }
    if let Some(b) = t.event_bridge_parameters {
        target["EventBridgeParameters"] =
            json!({ "DetailType": b.detail_type, "Source": b.source });
    }
    out.insert("Target".into(), target);
    Value::Object(out)
}

/// An error as Scheduler names it.
pub fn scheduler_error(mut e: AwsError) -> AwsError {
    let (code, status) = match e.code.as_str() {
        "InvalidParameterValue"
        | "MissingParameter"
        | "SerializationException"
        | "ValidationException" => ("ValidationException", 400),
        "AccessDenied" | "InvalidClientTokenId" => ("AccessDeniedException", 403),
        "RequestThrottled" => ("ThrottlingException", 429),
        "ResourceNotFoundException" => ("ResourceNotFoundException", 404),
        "ConflictException" => ("ConflictException", 409),
        "ServiceQuotaExceededException" => ("ServiceQuotaExceededException", 402),
        "InternalFailure" | "ServiceUnavailable" => ("InternalServerException", 500),
        _ => return e,
    };
    e.code = code.to_string();
    e.http_status = status;
    e
}
