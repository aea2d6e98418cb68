//! `sluice.v1.Events`.
//!
//! Requests are validated here and turned into commands and queries. A
//! PutEvents may name several buses: its entries are grouped by bus, the
//! caller is authorised for each bus before any entry is put, and each
//! bus's entries go in one command.

use std::collections::BTreeMap;

use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::fields::next_token;
use super::status::{from_domain, IntoStatus};
use super::{consistency, Context, Reply};
use crate::auth::caller::Caller;
use crate::error::DomainError;
use crate::events::archive::{Archive, NewArchive, NewReplay, Replay, ReplayState};
use crate::events::put::{self, NewEvent, Origin};
use crate::events::target::{Destination, Target, TargetInput};
use crate::events::{self, input::Input, Bus, NewRule, Rule};
use crate::filter::EventPattern;

/// Largest page of a list call, and the default.
const PAGE_MAX: i32 = 100;

/// Serves the event-bus API.
pub struct EventsApi {
    ctx: Context,
}

impl EventsApi {
    /// An event-bus API over `ctx`.
    pub fn new(ctx: Context) -> Self {
        EventsApi { ctx }
    }

    fn bus_message(&self, b: &Bus) -> pb::EventBus {
        pb::EventBus {
            name: b.name.clone(),
            arn: self.ctx.identity.bus_arn(&b.name),
            description: b.description.clone(),
            creation_time_ms: b.created_ms,
        }
    }

    fn rule_message(&self, r: &Rule) -> pb::Rule {
        let s = &r.settings;
        pb::Rule {
            name: s.name.clone(),
            arn: self.ctx.identity.rule_arn(&s.bus, &s.name),
            event_bus_name: s.bus.clone(),
            event_pattern: s.pattern.clone(),
            state: if s.enabled { "ENABLED" } else { "DISABLED" }.into(),
            description: s.description.clone(),
        }
    }

    /// Enables or disables a rule.
    async fn set_state(&self, bus: &str, name: &str, enabled: bool) -> Result<(), Status> {
        let (bus, name) = rule_ref(bus, "name", name)?;
        self.ctx
            .run(events::SetRuleState { bus, name, enabled })
            .await
    }

    fn archive_message(&self, a: &Archive) -> pb::Archive {
        let id = &self.ctx.identity;
        pb::Archive {
            archive_name: a.name.clone(),
            archive_arn: id.events_arn("archive", &a.name),
            event_source_arn: id.bus_arn(&a.bus),
            event_pattern: a
                .pattern
                .as_ref()
                .map(|(t, _)| t.clone())
                .unwrap_or_default(),
            retention_days: a.retention_days as i32,
            description: a.description.clone(),
            state: "ENABLED".into(),
            creation_time_ms: a.created_ms,
            event_count: a.events,
            size_bytes: a.bytes,
        }
    }

    fn replay_message(&self, r: &Replay) -> pb::Replay {
        let id = &self.ctx.identity;
        pb::Replay {
            replay_name: r.name.clone(),
            replay_arn: id.events_arn("replay", &r.name),
            event_source_arn: id.events_arn("archive", &r.archive),
            state: r.state.as_str().into(),
            event_start_time_ms: r.start_ms,
            event_end_time_ms: r.end_ms,
            destination: Some(pb::ReplayDestination {
                arn: id.bus_arn(&r.bus),
                filter_arns: r.rules.iter().map(|n| id.rule_arn(&r.bus, n)).collect(),
            }),
            replay_start_time_ms: r.started_ms,
            replay_end_time_ms: r.ended_ms.unwrap_or(0),
            event_last_replayed_time_ms: r.cursor.map(|(t, _)| t).unwrap_or(0),
            events_replayed: r.replayed,
            events_passed_over: r.passed_over,
        }
    }

    /// Answers with an archive as it is now.
    async fn archive_reply(&self, how: super::Consistency, name: String) -> Reply<pb::Archive> {
        let a = self.ctx.ask(how, events::DescribeArchive { name }).await?;
        Ok(Response::new(self.archive_message(&a)))
    }

    /// Answers with a replay as it is now.
    async fn replay_reply(&self, how: super::Consistency, name: String) -> Reply<pb::Replay> {
        let r = self.ctx.ask(how, events::DescribeReplay { name }).await?;
        Ok(Response::new(self.replay_message(&r)))
    }

    fn origin(&self) -> Origin {
        Origin {
            account: self.ctx.identity.account_id.clone(),
            region: self.ctx.identity.region.clone(),
        }
    }
}

/// The bus a request names: a name or an event bus ARN; empty is the
/// default bus.
pub fn bus_ref(field: &str, given: &str) -> Result<String, DomainError> {
    let name = events::bus_from_ref(given);
    events::validate_bus_name(field, name)?;
    Ok(name.to_string())
}

/// A rule a request names, on the bus it names.
fn rule_ref(bus: &str, field: &str, name: &str) -> Result<(String, String), Status> {
    let bus = bus_ref("event_bus_name", bus).map_err(from_domain)?;
    events::validate_rule_name(field, name).map_err(from_domain)?;
    Ok((bus, name.to_string()))
}

/// The name in an ARN of the events service's `kind`
/// (`arn:aws:events:REGION:ACCOUNT:KIND/NAME`), or a bare name as given.
fn name_from_arn<'a>(kind: &str, given: &'a str) -> &'a str {
    match given.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.splitn(5, ':').collect();
            match parts.as_slice() {
                [_, "events", _, _, resource] => resource
                    .strip_prefix(kind)
                    .and_then(|r| r.strip_prefix('/'))
                    .unwrap_or(given),
                _ => given,
            }
        }
        None => given,
    }
}

/// The archive a request names: its name or its ARN.
pub fn archive_ref(field: &str, given: &str) -> Result<String, DomainError> {
    let name = name_from_arn("archive", given);
    if sluice_core::names::is_valid(name, 48, "._-") {
        return Ok(name.to_string());
    }
    Err(events::invalid(
        field,
        format!("must be an archive name (1-48 characters of A-Z, a-z, 0-9, '.', '-', '_') or ARN, got {given:?}"),
    ))
}

/// The rule a replay's `filter_arns` entry names, on `bus`.
fn filter_rule(field: &str, bus: &str, given: &str) -> Result<String, DomainError> {
    let path = name_from_arn("rule", given);
    let (on, name) = path.rsplit_once('/').unwrap_or((events::DEFAULT_BUS, path));
    if on != bus {
        return Err(events::invalid(
            field,
            format!("names a rule of bus {on:?}; a replay goes to {bus:?}"),
        ));
    }
    events::validate_rule_name(field, name)?;
    Ok(name.to_string())
}

/// A page size: 1-100, 100 when not given.
fn page_size(limit: i32) -> Result<u32, Status> {
    match limit {
        0 => Ok(PAGE_MAX as u32),
        1..=PAGE_MAX => Ok(limit as u32),
        _ => Err(
            events::invalid("limit", format!("must be 1-{PAGE_MAX}, got {limit}")).into_status(),
        ),
    }
}

/// The name a page token carries (the last of the previous page).
fn after(token: &str) -> Result<Option<String>, Status> {
    if token.is_empty() {
        return Ok(None);
    }
    hex::decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .map(Some)
        .ok_or_else(|| {
            events::invalid("next_token", "is not a token returned by this call").into_status()
        })
}

fn target_input(t: pb::Target) -> TargetInput {
    let transformer = t.input_transformer.unwrap_or_default();
    TargetInput {
        id: t.id,
        arn: t.arn,
        input: t.input,
        input_path: t.input_path,
        input_paths: transformer.input_paths_map.into_iter().collect(),
        input_template: transformer.input_template,
        message_group_id: t.sqs_parameters.unwrap_or_default().message_group_id,
        partition_key_path: t.kinesis_parameters.unwrap_or_default().partition_key_path,
        dead_letter_arn: t.dead_letter_config.unwrap_or_default().arn,
        // A negative number fails validation as out of range.
        retry_policy: t.retry_policy.map(|p| {
            let read = |v: Option<i32>| v.map(|v| u32::try_from(v).unwrap_or(u32::MAX));
            (
                read(p.maximum_retry_attempts),
                read(p.maximum_event_age_in_seconds),
            )
        }),
    }
}

/// A stored target as the API shows it again.
fn target_message(identity: &crate::identity::Identity, t: &Target) -> pb::Target {
    let (input, input_path, input_transformer) = match &t.input {
        Input::Event => (String::new(), String::new(), None),
        Input::Constant(text) => (text.clone(), String::new(), None),
        Input::Path(p) => (String::new(), p.text.clone(), None),
        Input::Transformer { paths, template } => (
            String::new(),
            String::new(),
            Some(pb::InputTransformer {
                input_paths_map: paths
                    .iter()
                    .map(|(k, p)| (k.clone(), p.text.clone()))
                    .collect(),
                input_template: template.clone(),
            }),
        ),
    };
    let group = match &t.destination {
        Destination::Queue { group_id, .. } | Destination::Topic { group_id, .. } => {
            group_id.clone()
        }
        _ => None,
    };
    let key_path = match &t.destination {
        Destination::Stream {
            partition_key_path, ..
        } => partition_key_path.as_ref().map(|p| p.text.clone()),
        _ => None,
    };
    pb::Target {
        id: t.id.clone(),
        arn: t.arn.clone(),
        input,
        input_path,
        input_transformer,
        sqs_parameters: group.map(|message_group_id| pb::SqsParameters { message_group_id }),
        kinesis_parameters: key_path
            .map(|partition_key_path| pb::KinesisParameters { partition_key_path }),
        dead_letter_config: t.dead_letter_queue.as_ref().map(|q| pb::DeadLetterConfig {
            arn: identity.queue_arn(q),
        }),
        retry_policy: t.retry.map(|p| pb::RetryPolicy {
            maximum_event_age_in_seconds: Some(p.max_age_s as i32),
            maximum_retry_attempts: Some(p.max_attempts as i32),
        }),
    }
}

/// What a target does to its resources, as IAM actions on their ARNs: its
/// delivery, and its dead-letter queue's.
pub(super) fn target_actions(
    id: &crate::identity::Identity,
    destination: &Destination,
    dead_letter_queue: Option<&String>,
) -> Vec<(&'static str, String)> {
    let mut out = vec![match destination {
        Destination::Queue { name, .. } => ("sqs:SendMessage", id.queue_arn(name)),
        Destination::Topic { name, .. } => ("sns:Publish", id.topic_arn(name)),
        Destination::Stream { name, .. } => ("kinesis:PutRecord", id.stream_arn(name)),
        Destination::Function { name, .. } => ("lambda:InvokeFunction", id.function_arn(name)),
        Destination::Bus { name } => ("events:PutEvents", id.bus_arn(name)),
    }];
    if let Some(q) = dead_letter_queue {
        out.push(("sqs:SendMessage", id.queue_arn(q)));
    }
    out
}

/// The failed entries of a per-target result list.
fn failed_targets(
    ids: &[String],
    results: Vec<Result<(), DomainError>>,
) -> (i32, Vec<pb::FailedTargetEntry>) {
    let failed: Vec<pb::FailedTargetEntry> = ids
        .iter()
        .zip(results)
        .filter_map(|(id, r)| {
            r.err().map(|e| pb::FailedTargetEntry {
                target_id: id.clone(),
                error_code: e.code,
                error_message: e.message,
            })
        })
        .collect();
    (failed.len() as i32, failed)
}

/// An entry whose command's outcome is unknown: the routing failure's code
/// (`LeaderLost`, ...) and message, which say it may have been put.
fn unknown_outcome(status: &Status) -> DomainError {
    let code = status
        .metadata()
        .get(sluice_proto::ERROR_CODE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("InternalFailure");
    DomainError::precondition(code, status.message().to_string())
}

fn entry_error(e: &DomainError) -> pb::PutEventsResultEntry {
    pb::PutEventsResultEntry {
        event_id: String::new(),
        error_code: e.code.clone(),
        error_message: e.message.clone(),
    }
}

/// Whether `caller` may put events on `bus` (`events:PutEvents` on its
/// ARN); refused calls are audited like the guard's.
fn authorise_put(caller: Option<&Caller>, ctx: &Context, bus: &str) -> Result<(), Status> {
    let resource = ctx.identity.bus_arn(bus);
    super::authorise(
        caller,
        "/sluice.v1.Events/PutEvents",
        "events:PutEvents",
        &resource,
    )
}

#[tonic::async_trait]
impl pb::events_server::Events for EventsApi {
    async fn create_event_bus(
        &self,
        request: Request<pb::CreateEventBusRequest>,
    ) -> Reply<pb::CreateEventBusResponse> {
        let req = request.into_inner();
        events::validate_bus_name("name", &req.name).map_err(from_domain)?;
        if req.description.chars().count() > events::DESCRIPTION_MAX {
            return Err(events::invalid(
                "description",
                format!("must be at most {} characters", events::DESCRIPTION_MAX),
            )
            .into_status());
        }
        let arn = self.ctx.identity.bus_arn(&req.name);
        self.ctx
            .run(events::CreateEventBus {
                name: req.name,
                description: req.description,
            })
            .await?;
        Ok(Response::new(pb::CreateEventBusResponse {
            event_bus_arn: arn,
        }))
    }

    async fn delete_event_bus(
        &self,
        request: Request<pb::DeleteEventBusRequest>,
    ) -> Reply<pb::DeleteEventBusResponse> {
        let name = bus_ref("name", &request.into_inner().name).map_err(from_domain)?;
        self.ctx.run(events::DeleteEventBus { name }).await?;
        Ok(Response::new(pb::DeleteEventBusResponse {}))
    }

    async fn describe_event_bus(
        &self,
        request: Request<pb::DescribeEventBusRequest>,
    ) -> Reply<pb::EventBus> {
        let how = consistency(&request)?;
        let name = bus_ref("name", &request.into_inner().name).map_err(from_domain)?;
        let b = self.ctx.ask(how, events::DescribeEventBus { name }).await?;
        Ok(Response::new(self.bus_message(&b)))
    }

    async fn list_event_buses(
        &self,
        request: Request<pb::ListEventBusesRequest>,
    ) -> Reply<pb::ListEventBusesResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let (buses, more) = self
            .ctx
            .ask(
                how,
                events::ListEventBuses {
                    prefix: req.name_prefix,
                    after: after(&req.next_token)?,
                    limit: page_size(req.limit)?,
                },
            )
            .await?;
        Ok(Response::new(pb::ListEventBusesResponse {
            next_token: next_token(more, &buses, |b| hex::encode(&b.name)),
            event_buses: buses.iter().map(|b| self.bus_message(b)).collect(),
        }))
    }

    async fn put_rule(&self, request: Request<pb::PutRuleRequest>) -> Reply<pb::PutRuleResponse> {
        let req = request.into_inner();
        if !req.schedule_expression.is_empty() {
            return Err(events::invalid(
                "schedule_expression",
                "a rule takes an event_pattern; for a schedule, make one with the Scheduler service (CreateSchedule) and a bus or other target",
            )
            .into_status());
        }
        let bus = bus_ref("event_bus_name", &req.event_bus_name).map_err(from_domain)?;
        let rule = NewRule::new(
            &bus,
            &req.name,
            &req.event_pattern,
            &req.state,
            &req.description,
        )
        .map_err(from_domain)?;
        let arn = self.ctx.identity.rule_arn(&bus, &req.name);
        self.ctx.run(rule).await?;
        Ok(Response::new(pb::PutRuleResponse { rule_arn: arn }))
    }

    async fn delete_rule(
        &self,
        request: Request<pb::DeleteRuleRequest>,
    ) -> Reply<pb::DeleteRuleResponse> {
        let req = request.into_inner();
        let (bus, name) = rule_ref(&req.event_bus_name, "name", &req.name)?;
        self.ctx
            .run(events::DeleteRule {
                bus,
                name,
                force: req.force,
            })
            .await?;
        Ok(Response::new(pb::DeleteRuleResponse {}))
    }

    async fn describe_rule(&self, request: Request<pb::DescribeRuleRequest>) -> Reply<pb::Rule> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let (bus, name) = rule_ref(&req.event_bus_name, "name", &req.name)?;
        let r = self
            .ctx
            .ask(how, events::DescribeRule { bus, name })
            .await?;
        Ok(Response::new(self.rule_message(&r)))
    }

    async fn list_rules(
        &self,
        request: Request<pb::ListRulesRequest>,
    ) -> Reply<pb::ListRulesResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let bus = bus_ref("event_bus_name", &req.event_bus_name).map_err(from_domain)?;
        let (rules, more) = self
            .ctx
            .ask(
                how,
                events::ListRules {
                    bus,
                    prefix: req.name_prefix,
                    after: after(&req.next_token)?,
                    limit: page_size(req.limit)?,
                },
            )
            .await?;
        Ok(Response::new(pb::ListRulesResponse {
            next_token: next_token(more, &rules, |r| hex::encode(&r.settings.name)),
            rules: rules.iter().map(|r| self.rule_message(r)).collect(),
        }))
    }

    async fn enable_rule(
        &self,
        request: Request<pb::EnableRuleRequest>,
    ) -> Reply<pb::EnableRuleResponse> {
        let req = request.into_inner();
        self.set_state(&req.event_bus_name, &req.name, true).await?;
        Ok(Response::new(pb::EnableRuleResponse {}))
    }

    async fn disable_rule(
        &self,
        request: Request<pb::DisableRuleRequest>,
    ) -> Reply<pb::DisableRuleResponse> {
        let req = request.into_inner();
        self.set_state(&req.event_bus_name, &req.name, false)
            .await?;
        Ok(Response::new(pb::DisableRuleResponse {}))
    }

    async fn put_targets(
        &self,
        request: Request<pb::PutTargetsRequest>,
    ) -> Reply<pb::PutTargetsResponse> {
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        let (bus, rule) = rule_ref(&req.event_bus_name, "rule", &req.rule)?;
        if req.targets.is_empty() || req.targets.len() > events::TARGETS_PER_RULE_MAX {
            return Err(events::invalid(
                "targets",
                format!(
                    "must hold 1-{} targets, got {}",
                    events::TARGETS_PER_RULE_MAX,
                    req.targets.len()
                ),
            )
            .into_status());
        }
        let targets = req
            .targets
            .into_iter()
            .enumerate()
            .map(|(i, t)| Target::new(&format!("targets[{i}]"), target_input(t)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(from_domain)?;
        // A target writes where the rule's events go: the caller must be
        // let write there itself (and to its dead-letter queue), or a rule
        // would reach what its maker may not.
        for t in &targets {
            for (action, resource) in target_actions(
                &self.ctx.identity,
                &t.destination,
                t.dead_letter_queue.as_ref(),
            ) {
                super::authorise(
                    caller.as_ref(),
                    "/sluice.v1.Events/PutTargets",
                    action,
                    &resource,
                )?;
            }
        }
        let ids: Vec<String> = targets.iter().map(|t| t.id.clone()).collect();
        let results = self
            .ctx
            .run(events::PutTargets { bus, rule, targets })
            .await?;
        let (failed_entry_count, failed_entries) = failed_targets(&ids, results);
        Ok(Response::new(pb::PutTargetsResponse {
            failed_entry_count,
            failed_entries,
        }))
    }

    async fn remove_targets(
        &self,
        request: Request<pb::RemoveTargetsRequest>,
    ) -> Reply<pb::RemoveTargetsResponse> {
        let req = request.into_inner();
        let (bus, rule) = rule_ref(&req.event_bus_name, "rule", &req.rule)?;
        if req.ids.is_empty() || req.ids.len() > 100 {
            return Err(events::invalid(
                "ids",
                format!("must hold 1-100 ids, got {}", req.ids.len()),
            )
            .into_status());
        }
        for (i, id) in req.ids.iter().enumerate() {
            events::validate_rule_name(&format!("ids[{i}]"), id).map_err(from_domain)?;
        }
        let results = self
            .ctx
            .run(events::RemoveTargets {
                bus,
                rule,
                ids: req.ids.clone(),
            })
            .await?;
        let (failed_entry_count, failed_entries) = failed_targets(&req.ids, results);
        Ok(Response::new(pb::RemoveTargetsResponse {
            failed_entry_count,
            failed_entries,
        }))
    }

    async fn list_targets_by_rule(
        &self,
        request: Request<pb::ListTargetsByRuleRequest>,
    ) -> Reply<pb::ListTargetsByRuleResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let (bus, name) = rule_ref(&req.event_bus_name, "rule", &req.rule)?;
        let r = self
            .ctx
            .ask(how, events::DescribeRule { bus, name })
            .await?;
        Ok(Response::new(pb::ListTargetsByRuleResponse {
            targets: r
                .targets
                .iter()
                .map(|t| target_message(&self.ctx.identity, t))
                .collect(),
        }))
    }

    async fn put_events(
        &self,
        request: Request<pb::PutEventsRequest>,
    ) -> Reply<pb::PutEventsResponse> {
        let caller = request.extensions().get::<Caller>().cloned();
        let entries = request.into_inner().entries;
        if entries.is_empty() || entries.len() > events::PUT_EVENTS_MAX {
            return Err(events::invalid(
                "entries",
                format!(
                    "must hold 1-{} entries, got {}",
                    events::PUT_EVENTS_MAX,
                    entries.len()
                ),
            )
            .into_status());
        }
        // Each entry is checked on its own; the valid ones are grouped by bus.
        let mut results: Vec<Option<pb::PutEventsResultEntry>> = vec![None; entries.len()];
        let mut by_bus: BTreeMap<String, Vec<(usize, NewEvent)>> = BTreeMap::new();
        for (i, e) in entries.into_iter().enumerate() {
            let prefix = format!("entries[{i}]");
            let parsed =
                bus_ref(&format!("{prefix}.event_bus_name"), &e.event_bus_name).and_then(|bus| {
                    let time_ms = match e.time_ms {
                        Some(t) if t < 0 => {
                            return Err(events::invalid(
                                format!("{prefix}.time_ms"),
                                "must not be negative",
                            ))
                        }
                        t => t.map(|t| t as u64),
                    };
                    NewEvent::new(
                        &prefix,
                        e.source,
                        e.detail_type,
                        e.detail,
                        e.resources,
                        time_ms,
                    )
                    .map(|event| (bus, event))
                });
            match parsed {
                Ok((bus, event)) => by_bus.entry(bus).or_default().push((i, event)),
                Err(err) => results[i] = Some(entry_error(&err)),
            }
        }
        let all: Vec<NewEvent> = by_bus.values().flatten().map(|(_, e)| e.clone()).collect();
        if !all.is_empty() {
            put::validate_batch(&all).map_err(from_domain)?;
        }
        // Every bus is authorised before anything is put: a refused call
        // changes nothing.
        for bus in by_bus.keys() {
            authorise_put(caller.as_ref(), &self.ctx, bus)?;
        }
        let origin = self.origin();
        let runs = by_bus.into_iter().map(|(bus, group)| {
            let (indexes, entries): (Vec<usize>, Vec<NewEvent>) = group.into_iter().unzip();
            let cmd = events::PutEvents {
                bus,
                origin: origin.clone(),
                entries,
            };
            async move { (indexes, self.ctx.try_run(cmd).await) }
        });
        let done = futures::future::join_all(runs).await;
        // When no bus's command went through (each failed in routing: not
        // applied, or of unknown outcome), the call fails, so that the
        // caller knows to retry it; when some did, only the others' entries
        // fail, with the routing error's code, and the rest keep their ids.
        if let Some((_, Err(status))) = done.iter().find(|(_, o)| o.is_err()) {
            if done.iter().all(|(_, o)| o.is_err()) {
                return Err(status.clone());
            }
        }
        for (indexes, outcome) in done {
            let outcome: Result<Result<Vec<_>, DomainError>, Status> = outcome;
            // A bus that refused the whole command (it does not exist)
            // fails each of its entries.
            let outcomes: Vec<Result<String, DomainError>> = match outcome {
                Ok(Ok(per_entry)) => per_entry,
                Ok(Err(e)) => vec![Err(e); indexes.len()],
                Err(status) => vec![Err(unknown_outcome(&status)); indexes.len()],
            };
            for (i, r) in indexes.into_iter().zip(outcomes) {
                results[i] = Some(match r {
                    Ok(event_id) => pb::PutEventsResultEntry {
                        event_id,
                        ..Default::default()
                    },
                    Err(e) => entry_error(&e),
                });
            }
        }
        let entries: Vec<pb::PutEventsResultEntry> =
            results.into_iter().map(Option::unwrap_or_default).collect();
        Ok(Response::new(pb::PutEventsResponse {
            failed_entry_count: entries.iter().filter(|e| e.event_id.is_empty()).count() as i32,
            entries,
        }))
    }

    async fn test_event_pattern(
        &self,
        request: Request<pb::TestEventPatternRequest>,
    ) -> Reply<pb::TestEventPatternResponse> {
        let req = request.into_inner();
        let pattern = EventPattern::parse(&req.event_pattern)
            .map_err(|e| {
                DomainError::invalid_with_code("InvalidEventPatternException", "event_pattern", e.0)
            })
            .map_err(from_domain)?;
        let event: serde_json::Value = match serde_json::from_str(&req.event) {
            Ok(v @ serde_json::Value::Object(_)) => v,
            _ => {
                return Err(
                    events::invalid("event", "must be the text of a JSON object").into_status(),
                )
            }
        };
        Ok(Response::new(pb::TestEventPatternResponse {
            result: pattern.matches(&event),
        }))
    }

    async fn create_archive(
        &self,
        request: Request<pb::CreateArchiveRequest>,
    ) -> Reply<pb::Archive> {
        let req = request.into_inner();
        let bus = bus_ref("event_source_arn", &req.event_source_arn).map_err(from_domain)?;
        let a = NewArchive::new(
            &req.archive_name,
            &bus,
            &req.event_pattern,
            req.retention_days,
            &req.description,
        )
        .map_err(from_domain)?;
        let name = a.name.clone();
        self.ctx.run(a).await?;
        self.archive_reply(super::Consistency::Linearizable, name)
            .await
    }

    async fn describe_archive(
        &self,
        request: Request<pb::DescribeArchiveRequest>,
    ) -> Reply<pb::Archive> {
        let how = consistency(&request)?;
        let name =
            archive_ref("archive_name", &request.into_inner().archive_name).map_err(from_domain)?;
        self.archive_reply(how, name).await
    }

    async fn list_archives(
        &self,
        request: Request<pb::ListArchivesRequest>,
    ) -> Reply<pb::ListArchivesResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let bus = if req.event_source_arn.is_empty() {
            None
        } else {
            Some(bus_ref("event_source_arn", &req.event_source_arn).map_err(from_domain)?)
        };
        let all = self.ctx.ask(how, events::ListArchives {}).await?;
        Ok(Response::new(pb::ListArchivesResponse {
            archives: all
                .iter()
                .filter(|a| a.name.starts_with(&req.name_prefix))
                .filter(|a| bus.as_ref().is_none_or(|b| &a.bus == b))
                .map(|a| self.archive_message(a))
                .collect(),
        }))
    }

    async fn delete_archive(
        &self,
        request: Request<pb::DeleteArchiveRequest>,
    ) -> Reply<pb::DeleteArchiveResponse> {
        let name =
            archive_ref("archive_name", &request.into_inner().archive_name).map_err(from_domain)?;
        self.ctx.run(events::DeleteArchive { name }).await?;
        Ok(Response::new(pb::DeleteArchiveResponse {}))
    }

    async fn start_replay(&self, request: Request<pb::StartReplayRequest>) -> Reply<pb::Replay> {
        let caller = request.extensions().get::<Caller>().cloned();
        let req = request.into_inner();
        let archive =
            archive_ref("event_source_arn", &req.event_source_arn).map_err(from_domain)?;
        let destination = req.destination.unwrap_or_default();
        let bus = bus_ref("destination.arn", &destination.arn).map_err(from_domain)?;
        let rules = destination
            .filter_arns
            .iter()
            .enumerate()
            .map(|(i, r)| filter_rule(&format!("destination.filter_arns[{i}]"), &bus, r))
            .collect::<Result<Vec<_>, _>>()
            .map_err(from_domain)?;
        let replay = NewReplay {
            name: req.replay_name,
            archive,
            start_ms: req.event_start_time_ms,
            end_ms: req.event_end_time_ms,
            bus,
            rules,
            origin: self.origin(),
        };
        replay.validate().map_err(from_domain)?;
        // It puts events back on the bus: the caller must be let do that
        // too, not only read the archive (which the guard checked).
        super::authorise(
            caller.as_ref(),
            "/sluice.v1.Events/StartReplay",
            "events:StartReplay",
            &self.ctx.identity.bus_arn(&replay.bus),
        )?;
        let name = replay.name.clone();
        self.ctx.run(replay).await?;
        self.replay_reply(super::Consistency::Linearizable, name)
            .await
    }

    async fn describe_replay(
        &self,
        request: Request<pb::DescribeReplayRequest>,
    ) -> Reply<pb::Replay> {
        let how = consistency(&request)?;
        self.replay_reply(how, request.into_inner().replay_name)
            .await
    }

    async fn list_replays(
        &self,
        request: Request<pb::ListReplaysRequest>,
    ) -> Reply<pb::ListReplaysResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let state = match req.state.as_str() {
            "" => None,
            "RUNNING" => Some(ReplayState::Running),
            "COMPLETED" => Some(ReplayState::Completed),
            "CANCELLED" => Some(ReplayState::Cancelled),
            other => {
                return Err(events::invalid(
                    "state",
                    format!("must be RUNNING, COMPLETED or CANCELLED, got {other:?}"),
                )
                .into_status())
            }
        };
        let all = self.ctx.ask(how, events::ListReplays {}).await?;
        Ok(Response::new(pb::ListReplaysResponse {
            replays: all
                .iter()
                .filter(|r| r.name.starts_with(&req.name_prefix))
                .filter(|r| state.is_none_or(|s| r.state == s))
                .map(|r| self.replay_message(r))
                .collect(),
        }))
    }

    async fn cancel_replay(&self, request: Request<pb::CancelReplayRequest>) -> Reply<pb::Replay> {
        let name = request.into_inner().replay_name;
        self.ctx
            .run(events::CancelReplay { name: name.clone() })
            .await?;
        self.replay_reply(super::Consistency::Linearizable, name)
            .await
    }
}
