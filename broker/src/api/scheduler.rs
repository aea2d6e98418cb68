//! `sluice.v1.Scheduler`.
//!
//! Requests are validated here and turned into commands and queries. A
//! schedule writes to its target (and dead-letter queue) long after the
//! call: its maker must be let write there itself, as for a rule's
//! targets, or a schedule would reach what its maker may not.

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::fields::next_token;
use super::status::{from_domain, IntoStatus};
use super::{consistency, Context, Reply};
use crate::auth::caller::Caller;
use crate::error::DomainError;
use crate::events::put::Origin;
use crate::events::target::Destination;
use crate::schedules::{
    self, NewSchedule, Schedule, ScheduleTarget, ScheduleTargetInput, DEFAULT_GROUP,
};

/// Largest page of a list call, and the default.
const PAGE_MAX: i32 = 100;

/// Serves the scheduler API.
pub struct SchedulerApi {
    ctx: Context,
}

fn group(given: &str) -> String {
    if given.is_empty() {
        DEFAULT_GROUP.into()
    } else {
        given.into()
    }
}

/// Reads one of a field's named values (`values[0]` when empty).
fn one_of<'a>(field: &str, given: &'a str, values: &[&'a str]) -> Result<&'a str, DomainError> {
    if given.is_empty() {
        return Ok(values[0]);
    }
    values
        .iter()
        .find(|v| **v == given)
        .copied()
        .ok_or_else(|| {
            schedules::invalid(
                field,
                format!("must be one of {}, got {given:?}", values.join(", ")),
            )
        })
}

/// Validates a schedule's settings.
pub fn new_schedule(s: pb::ScheduleSettings, origin: Origin) -> Result<NewSchedule, DomainError> {
    let t = s
        .target
        .ok_or_else(|| schedules::invalid("target", "is required"))?;
    let retry = t.retry_policy.unwrap_or_default();
    let non_negative = |field: &str, v: Option<i32>| -> Result<Option<u32>, DomainError> {
        v.map(|v| u32::try_from(v).map_err(|_| schedules::invalid(field, "must not be negative")))
            .transpose()
    };
    let bus = t.event_bridge_parameters.unwrap_or_default();
    let target = ScheduleTarget::new(ScheduleTargetInput {
        arn: t.arn,
        role_arn: t.role_arn,
        input: t.input,
        dead_letter_arn: t.dead_letter_config.unwrap_or_default().arn,
        max_event_age_s: non_negative(
            "target.retry_policy.maximum_event_age_in_seconds",
            retry.maximum_event_age_in_seconds,
        )?,
        max_attempts: non_negative(
            "target.retry_policy.maximum_retry_attempts",
            retry.maximum_retry_attempts,
        )?,
        message_group_id: t.sqs_parameters.unwrap_or_default().message_group_id,
        partition_key: t.kinesis_parameters.unwrap_or_default().partition_key,
        source: bus.source,
        detail_type: bus.detail_type,
    })?;
    let window = s.flexible_time_window.ok_or_else(|| {
        schedules::invalid("flexible_time_window", "is required (mode OFF or FLEXIBLE)")
    })?;
    let flexible = one_of(
        "flexible_time_window.mode",
        &window.mode,
        &["OFF", "FLEXIBLE"],
    )?;
    let minutes = u32::try_from(window.maximum_window_in_minutes).map_err(|_| {
        schedules::invalid(
            "flexible_time_window.maximum_window_in_minutes",
            "must not be negative",
        )
    })?;
    let enabled = one_of("state", &s.state, &["ENABLED", "DISABLED"])? == "ENABLED";
    let delete = one_of(
        "action_after_completion",
        &s.action_after_completion,
        &["NONE", "DELETE"],
    )? == "DELETE";
    NewSchedule::new(
        group(&s.group_name),
        s.name,
        s.schedule_expression,
        s.schedule_expression_timezone,
        (
            (s.start_date_ms > 0).then_some(s.start_date_ms),
            (s.end_date_ms > 0).then_some(s.end_date_ms),
        ),
        s.description,
        enabled,
        (flexible == "FLEXIBLE", minutes),
        target,
        delete,
        origin,
    )
}

/// A schedule as the API shows it.
pub fn schedule_message(s: &Schedule) -> pb::Schedule {
    let n = &s.settings;
    let t = &n.target;
    pb::Schedule {
        arn: n.arn(),
        name: n.name.clone(),
        group_name: n.group.clone(),
        schedule_expression: n.expression_text.clone(),
        schedule_expression_timezone: if n.time_zone.is_empty() {
            "UTC".into()
        } else {
            n.time_zone.clone()
        },
        start_date_ms: n.start_ms.unwrap_or(0),
        end_date_ms: n.end_ms.unwrap_or(0),
        description: n.description.clone(),
        state: if n.enabled { "ENABLED" } else { "DISABLED" }.into(),
        flexible_time_window: Some(pb::FlexibleTimeWindow {
            mode: if n.window_minutes > 0 {
                "FLEXIBLE"
            } else {
                "OFF"
            }
            .into(),
            maximum_window_in_minutes: n.window_minutes as i32,
        }),
        target: Some(pb::ScheduleTarget {
            arn: t.arn.clone(),
            role_arn: t.role_arn.clone(),
            input: t.input.clone(),
            dead_letter_config: t.dead_letter_queue.as_ref().map(|q| pb::DeadLetterConfig {
                arn: format!("arn:aws:sqs:{}:{}:{q}", n.origin.region, n.origin.account),
            }),
            retry_policy: Some(pb::RetryPolicy {
                maximum_event_age_in_seconds: Some(t.max_event_age_s as i32),
                maximum_retry_attempts: Some(t.max_attempts as i32),
            }),
            sqs_parameters: match &t.destination {
                Destination::Queue {
                    group_id: Some(g), ..
                }
                | Destination::Topic {
                    group_id: Some(g), ..
                } => Some(pb::SqsParameters {
                    message_group_id: g.clone(),
                }),
                _ => None,
            },
            kinesis_parameters: (!t.partition_key.is_empty()).then(|| {
                pb::ScheduleKinesisParameters {
                    partition_key: t.partition_key.clone(),
                }
            }),
            event_bridge_parameters: (!t.source.is_empty()).then(|| pb::EventBridgeParameters {
                detail_type: t.detail_type.clone(),
                source: t.source.clone(),
            }),
        }),
        action_after_completion: if n.delete_after_completion {
            "DELETE"
        } else {
            "NONE"
        }
        .into(),
        creation_date_ms: s.created_ms,
        last_modification_date_ms: s.updated_ms,
        next_due_ms: s.next_due_ms.unwrap_or(0),
        fired: s.fired,
    }
}

impl SchedulerApi {
    /// A scheduler API over `ctx`.
    pub fn new(ctx: Context) -> Self {
        SchedulerApi { ctx }
    }

    fn origin(&self) -> Origin {
        Origin {
            account: self.ctx.identity.account_id.clone(),
            region: self.ctx.identity.region.clone(),
        }
    }

    /// Validates settings and authorises the caller for the target.
    fn settings(
        &self,
        caller: Option<&Caller>,
        method: &str,
        s: pb::ScheduleSettings,
    ) -> Result<NewSchedule, Status> {
        let settings = new_schedule(s, self.origin()).map_err(from_domain)?;
        let t = &settings.target;
        let writes = super::events::target_actions(
            &self.ctx.identity,
            &t.destination,
            t.dead_letter_queue.as_ref(),
        );
        for (action, resource) in writes {
            super::authorise(caller, method, action, &resource)?;
        }
        Ok(settings)
    }
}

fn name_ref(group_name: &str, name: &str) -> Result<(String, String), Status> {
    let group = group(group_name);
    schedules::validate_group("group_name", &group).map_err(from_domain)?;
    schedules::validate_name("name", name).map_err(from_domain)?;
    Ok((group, name.to_string()))
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerApi {
    async fn create_schedule(
        &self,
        request: Request<pb::ScheduleSettings>,
    ) -> Reply<pb::CreateScheduleResponse> {
        let caller = request.extensions().get::<Caller>().cloned();
        let settings = self.settings(
            caller.as_ref(),
            "/sluice.v1.Scheduler/CreateSchedule",
            request.into_inner(),
        )?;
        let schedule_arn = settings.arn();
        self.ctx.run(settings).await?;
        Ok(Response::new(pb::CreateScheduleResponse { schedule_arn }))
    }

    async fn update_schedule(
        &self,
        request: Request<pb::ScheduleSettings>,
    ) -> Reply<pb::UpdateScheduleResponse> {
        let caller = request.extensions().get::<Caller>().cloned();
        let settings = self.settings(
            caller.as_ref(),
            "/sluice.v1.Scheduler/UpdateSchedule",
            request.into_inner(),
        )?;
        let schedule_arn = settings.arn();
        self.ctx.run(schedules::UpdateSchedule { settings }).await?;
        Ok(Response::new(pb::UpdateScheduleResponse { schedule_arn }))
    }

    async fn get_schedule(&self, request: Request<pb::GetScheduleRequest>) -> Reply<pb::Schedule> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let (group, name) = name_ref(&req.group_name, &req.name)?;
        let s = self
            .ctx
            .ask(how, schedules::GetSchedule { group, name })
            .await?;
        Ok(Response::new(schedule_message(&s)))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Reply<pb::DeleteScheduleResponse> {
        let req = request.into_inner();
        let (group, name) = name_ref(&req.group_name, &req.name)?;
        self.ctx
            .run(schedules::DeleteSchedule { group, name })
            .await?;
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Reply<pb::ListSchedulesResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let group = group(&req.group_name);
        schedules::validate_group("group_name", &group).map_err(from_domain)?;
        let limit = match req.max_results {
            0 => PAGE_MAX as u32,
            n @ 1..=PAGE_MAX => n as u32,
            n => {
                return Err(schedules::invalid(
                    "max_results",
                    format!("must be 1-{PAGE_MAX}, got {n}"),
                )
                .into_status())
            }
        };
        let after = match req.next_token.as_str() {
            "" => None,
            t => Some(
                hex::decode(t)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        schedules::invalid("next_token", "is not a token returned by this call")
                            .into_status()
                    })?,
            ),
        };
        let (found, more) = self
            .ctx
            .ask(
                how,
                schedules::ListSchedules {
                    group,
                    prefix: req.name_prefix,
                    after,
                    limit,
                },
            )
            .await?;
        Ok(Response::new(pb::ListSchedulesResponse {
            next_token: next_token(more, &found, |s| hex::encode(&s.settings.name)),
            schedules: found.iter().map(schedule_message).collect(),
        }))
    }
}
