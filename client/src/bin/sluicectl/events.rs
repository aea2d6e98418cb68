//! `sluicectl events ...`.

use clap::Subcommand;
use serde_json::json;
use sluice_client::{Client, Error};
use sluice_proto::v1 as pb;

use crate::parse_pair;

#[derive(Subcommand)]
pub enum EventsCmd {
    /// Create an event bus.
    CreateBus {
        /// Bus name.
        name: String,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete an event bus and its rules.
    DeleteBus {
        /// Bus name or ARN.
        name: String,
    },
    /// List event buses.
    ListBuses,
    /// Create a rule, or change its pattern, state and description.
    PutRule {
        /// Rule name.
        name: String,
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
        /// The event pattern (JSON).
        #[arg(long)]
        pattern: String,
        /// Create or leave it disabled.
        #[arg(long)]
        disabled: bool,
        /// Description.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// Delete a rule.
    DeleteRule {
        /// Rule name.
        name: String,
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
        /// Delete it with its targets.
        #[arg(long)]
        force: bool,
    },
    /// List a bus's rules.
    ListRules {
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
    },
    /// Add or replace a rule's target.
    PutTarget {
        /// Rule name.
        rule: String,
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
        /// Target id, unique within the rule.
        #[arg(long)]
        id: String,
        /// ARN of the queue, topic, stream, function or bus.
        #[arg(long)]
        arn: String,
        /// Deliver this JSON instead of the event.
        #[arg(long)]
        input: Option<String>,
        /// Deliver the part of the event this JSON path names.
        #[arg(long)]
        input_path: Option<String>,
        /// A template with <name> placeholders ...
        #[arg(long)]
        input_template: Option<String>,
        /// ... each filled from a JSON path, as NAME=PATH; repeatable.
        #[arg(long = "input-path-map", value_parser = parse_pair)]
        input_paths: Vec<(String, String)>,
        /// The message group of a FIFO queue or topic.
        #[arg(long)]
        group: Option<String>,
        /// A JSON path for a stream record's partition key.
        #[arg(long)]
        partition_key_path: Option<String>,
        /// A standard queue's ARN that takes what fails to deliver.
        #[arg(long)]
        dead_letter_arn: Option<String>,
        /// Try a failed delivery again up to this many times (0-185)
        /// before the dead-letter queue takes it [default: never].
        #[arg(long)]
        retries: Option<i32>,
        /// ... while it is at most this many seconds old (60-86400).
        #[arg(long)]
        max_event_age: Option<i32>,
    },
    /// Remove a rule's target.
    RemoveTarget {
        /// Rule name.
        rule: String,
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
        /// Target id.
        #[arg(long)]
        id: String,
    },
    /// List a rule's targets.
    ListTargets {
        /// Rule name.
        rule: String,
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
    },
    /// Put an event.
    Put {
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
        /// Source.
        #[arg(long)]
        source: String,
        /// Detail type.
        #[arg(long)]
        detail_type: String,
        /// Detail (a JSON object).
        #[arg(long, default_value = "{}")]
        detail: String,
        /// A resource ARN the event concerns; repeatable.
        #[arg(long = "resource")]
        resources: Vec<String>,
    },
    /// Keep a bus's events (all, or those a pattern matches).
    CreateArchive {
        /// Archive name.
        name: String,
        /// The bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
        /// Keep only the events this pattern (JSON) matches.
        #[arg(long, default_value = "")]
        pattern: String,
        /// Days an event is kept; 0 keeps it for ever.
        #[arg(long, default_value_t = 0)]
        retention_days: i32,
    },
    /// Delete an archive.
    DeleteArchive {
        /// Archive name or ARN.
        name: String,
    },
    /// List archives with their event counts.
    ListArchives,
    /// Put the events an archive took in a time range back on its bus.
    StartReplay {
        /// Replay name.
        name: String,
        /// Archive name or ARN.
        #[arg(long)]
        archive: String,
        /// From this time, ms since the Unix epoch ...
        #[arg(long)]
        from_ms: u64,
        /// ... to before this one.
        #[arg(long)]
        to_ms: u64,
        /// The archive's bus [default: default].
        #[arg(long, default_value = "")]
        bus: String,
        /// Only to this rule (ARN); repeatable; all rules when omitted.
        #[arg(long = "rule-arn")]
        rules: Vec<String>,
    },
    /// A replay's state and progress.
    DescribeReplay {
        /// Replay name.
        name: String,
    },
    /// Stop a running replay.
    CancelReplay {
        /// Replay name.
        name: String,
    },
    /// Create a schedule (EventBridge Scheduler), or replace one with
    /// `--update`.
    CreateSchedule {
        /// Schedule name.
        name: String,
        /// rate(N minutes|hours|days), cron(min hour dom month dow year) or
        /// at(yyyy-mm-ddThh:mm:ss).
        #[arg(long)]
        expression: String,
        /// IANA time zone of cron and at [default: UTC].
        #[arg(long, default_value = "")]
        timezone: String,
        /// The target's ARN (queue, topic, stream, function or bus).
        #[arg(long)]
        target: String,
        /// The text delivered (context attributes such as
        /// <aws.scheduler.scheduled-time> are filled in).
        #[arg(long, default_value = "")]
        input: String,
        /// The message group of a FIFO queue target.
        #[arg(long, default_value = "")]
        group_id: String,
        /// A flexible window of this many minutes (0: off).
        #[arg(long, default_value_t = 0)]
        window_minutes: i32,
        /// Create or leave it disabled.
        #[arg(long)]
        disabled: bool,
        /// Delete it once it has no due time left.
        #[arg(long)]
        delete_after_completion: bool,
        /// Replace an existing schedule's settings instead.
        #[arg(long)]
        update: bool,
    },
    /// A schedule's settings, next due time and firings.
    DescribeSchedule {
        /// Schedule name.
        name: String,
    },
    /// List schedules.
    ListSchedules,
    /// Delete a schedule.
    DeleteSchedule {
        /// Schedule name.
        name: String,
    },
    /// Whether an event pattern matches an event.
    TestPattern {
        /// The event pattern (JSON).
        #[arg(long)]
        pattern: String,
        /// The event (JSON).
        #[arg(long)]
        event: String,
    },
}

/// Prints a replay.
fn print_replay(json: bool, r: &pb::Replay) {
    crate::print_result(
        json,
        json!({"replay_name": r.replay_name, "state": r.state, "events_replayed": r.events_replayed}),
        format_args!(
            "{}  {}  {} events",
            r.replay_name, r.state, r.events_replayed
        ),
    );
}

/// Fails with the first failed entry of a per-entry reply.
fn first_failure(failed: &[pb::FailedTargetEntry]) -> Result<(), Error> {
    match failed.first() {
        Some(f) => Err(Error::Config(format!(
            "target {}: {}: {}",
            f.target_id, f.error_code, f.error_message
        ))),
        None => Ok(()),
    }
}

/// Runs an events verb.
pub async fn run(client: &Client, json: bool, cmd: EventsCmd) -> Result<(), Error> {
    match cmd {
        EventsCmd::CreateBus { name, description } => {
            let r = client
                .create_event_bus(pb::CreateEventBusRequest { name, description })
                .await?;
            crate::print_result(
                json,
                json!({"event_bus_arn": r.event_bus_arn}),
                &r.event_bus_arn,
            );
        }
        EventsCmd::DeleteBus { name } => {
            client
                .delete_event_bus(pb::DeleteEventBusRequest { name: name.clone() })
                .await?;
            crate::print_removed(json, "deleted", &name);
        }
        EventsCmd::ListBuses => {
            let mut names = Vec::new();
            let mut next_token = String::new();
            loop {
                let r = client
                    .list_event_buses(pb::ListEventBusesRequest {
                        next_token,
                        ..Default::default()
                    })
                    .await?;
                names.extend(r.event_buses.into_iter().map(|b| b.name));
                if r.next_token.is_empty() {
                    break;
                }
                next_token = r.next_token;
            }
            crate::print_names(json, &names);
        }
        EventsCmd::PutRule {
            name,
            bus,
            pattern,
            disabled,
            description,
        } => {
            let r = client
                .put_rule(pb::PutRuleRequest {
                    name,
                    event_bus_name: bus,
                    event_pattern: pattern,
                    state: if disabled { "DISABLED" } else { "ENABLED" }.into(),
                    description,
                    schedule_expression: String::new(),
                })
                .await?;
            crate::print_result(json, json!({"rule_arn": r.rule_arn}), &r.rule_arn);
        }
        EventsCmd::DeleteRule { name, bus, force } => {
            client
                .delete_rule(pb::DeleteRuleRequest {
                    name: name.clone(),
                    event_bus_name: bus,
                    force,
                })
                .await?;
            crate::print_removed(json, "deleted", &name);
        }
        EventsCmd::ListRules { bus } => {
            let mut rules = Vec::new();
            let mut next_token = String::new();
            loop {
                let r = client
                    .list_rules(pb::ListRulesRequest {
                        event_bus_name: bus.clone(),
                        next_token,
                        ..Default::default()
                    })
                    .await?;
                rules.extend(r.rules);
                if r.next_token.is_empty() {
                    break;
                }
                next_token = r.next_token;
            }
            crate::print_rows(
                json,
                &rules,
                |r| json!({"name": r.name, "arn": r.arn, "state": r.state, "event_pattern": r.event_pattern}),
                |r| format!("{}  {}  {}", r.name, r.state, r.event_pattern),
            );
        }
        EventsCmd::PutTarget {
            rule,
            bus,
            id,
            arn,
            input,
            input_path,
            input_template,
            input_paths,
            group,
            partition_key_path,
            dead_letter_arn,
            retries,
            max_event_age,
        } => {
            let input_transformer =
                (input_template.is_some() || !input_paths.is_empty()).then(|| {
                    pb::InputTransformer {
                        input_paths_map: input_paths.into_iter().collect(),
                        input_template: input_template.unwrap_or_default(),
                    }
                });
            let r = client
                .put_targets(pb::PutTargetsRequest {
                    rule,
                    event_bus_name: bus,
                    targets: vec![pb::Target {
                        id: id.clone(),
                        arn,
                        input: input.unwrap_or_default(),
                        input_path: input_path.unwrap_or_default(),
                        input_transformer,
                        sqs_parameters: group
                            .map(|message_group_id| pb::SqsParameters { message_group_id }),
                        kinesis_parameters: partition_key_path
                            .map(|partition_key_path| pb::KinesisParameters { partition_key_path }),
                        dead_letter_config: dead_letter_arn.map(|arn| pb::DeadLetterConfig { arn }),
                        retry_policy: (retries.is_some() || max_event_age.is_some()).then_some(
                            pb::RetryPolicy {
                                maximum_retry_attempts: retries,
                                maximum_event_age_in_seconds: max_event_age,
                            },
                        ),
                    }],
                })
                .await?;
            first_failure(&r.failed_entries)?;
            crate::print_result(json, json!({"target_id": id}), &id);
        }
        EventsCmd::RemoveTarget { rule, bus, id } => {
            let r = client
                .remove_targets(pb::RemoveTargetsRequest {
                    rule,
                    event_bus_name: bus,
                    ids: vec![id.clone()],
                })
                .await?;
            first_failure(&r.failed_entries)?;
            crate::print_removed(json, "removed", &id);
        }
        EventsCmd::ListTargets { rule, bus } => {
            let r = client
                .list_targets_by_rule(pb::ListTargetsByRuleRequest {
                    rule,
                    event_bus_name: bus,
                })
                .await?;
            crate::print_rows(
                json,
                &r.targets,
                |t| json!({"id": t.id, "arn": t.arn}),
                |t| format!("{}  {}", t.id, t.arn),
            );
        }
        EventsCmd::Put {
            bus,
            source,
            detail_type,
            detail,
            resources,
        } => {
            let r = client
                .put_events(pb::PutEventsRequest {
                    entries: vec![pb::PutEventsRequestEntry {
                        event_bus_name: bus,
                        source,
                        detail_type,
                        detail,
                        resources,
                        time_ms: None,
                    }],
                })
                .await?;
            let e = r.entries.into_iter().next().unwrap_or_default();
            if e.event_id.is_empty() {
                return Err(Error::Config(format!(
                    "{}: {}",
                    e.error_code, e.error_message
                )));
            }
            crate::print_result(json, json!({"event_id": e.event_id}), &e.event_id);
        }
        EventsCmd::CreateArchive {
            name,
            bus,
            pattern,
            retention_days,
        } => {
            let a = client
                .create_archive(pb::CreateArchiveRequest {
                    archive_name: name,
                    event_source_arn: bus,
                    event_pattern: pattern,
                    retention_days,
                    description: String::new(),
                })
                .await?;
            crate::print_result(json, json!({"archive_arn": a.archive_arn}), &a.archive_arn);
        }
        EventsCmd::DeleteArchive { name } => {
            client
                .delete_archive(pb::DeleteArchiveRequest {
                    archive_name: name.clone(),
                })
                .await?;
            crate::print_removed(json, "deleted", &name);
        }
        EventsCmd::ListArchives => {
            let r = client
                .list_archives(pb::ListArchivesRequest::default())
                .await?;
            crate::print_rows(
                json,
                &r.archives,
                |a| json!({"archive_name": a.archive_name, "event_source_arn": a.event_source_arn, "event_count": a.event_count}),
                |a| {
                    format!(
                        "{}  {}  {} events",
                        a.archive_name, a.event_source_arn, a.event_count
                    )
                },
            );
        }
        EventsCmd::StartReplay {
            name,
            archive,
            from_ms,
            to_ms,
            bus,
            rules,
        } => {
            let r = client
                .start_replay(pb::StartReplayRequest {
                    replay_name: name,
                    event_source_arn: archive,
                    event_start_time_ms: from_ms,
                    event_end_time_ms: to_ms,
                    destination: Some(pb::ReplayDestination {
                        arn: bus,
                        filter_arns: rules,
                    }),
                    description: String::new(),
                })
                .await?;
            print_replay(json, &r);
        }
        EventsCmd::CreateSchedule {
            name,
            expression,
            timezone,
            target,
            input,
            group_id,
            window_minutes,
            disabled,
            delete_after_completion,
            update,
        } => {
            let settings = pb::ScheduleSettings {
                name,
                schedule_expression: expression,
                schedule_expression_timezone: timezone,
                state: if disabled { "DISABLED" } else { "ENABLED" }.into(),
                flexible_time_window: Some(pb::FlexibleTimeWindow {
                    mode: if window_minutes > 0 {
                        "FLEXIBLE"
                    } else {
                        "OFF"
                    }
                    .into(),
                    maximum_window_in_minutes: window_minutes,
                }),
                target: Some(pb::ScheduleTarget {
                    arn: target,
                    input,
                    sqs_parameters: (!group_id.is_empty()).then_some(pb::SqsParameters {
                        message_group_id: group_id,
                    }),
                    ..Default::default()
                }),
                action_after_completion: if delete_after_completion {
                    "DELETE"
                } else {
                    "NONE"
                }
                .into(),
                ..Default::default()
            };
            let arn = if update {
                client.update_schedule(settings).await?.schedule_arn
            } else {
                client.create_schedule(settings).await?.schedule_arn
            };
            crate::print_result(json, json!({"schedule_arn": arn}), &arn);
        }
        EventsCmd::DescribeSchedule { name } => {
            let s = client
                .get_schedule(pb::GetScheduleRequest {
                    name,
                    group_name: String::new(),
                })
                .await?;
            crate::print_result(
                json,
                json!({"name": s.name, "arn": s.arn, "schedule_expression": s.schedule_expression,
                       "state": s.state, "next_due_ms": s.next_due_ms, "fired": s.fired}),
                format_args!(
                    "{}  {}  {}  next due {} ms  fired {}",
                    s.name, s.schedule_expression, s.state, s.next_due_ms, s.fired
                ),
            );
        }
        EventsCmd::ListSchedules => {
            let mut names = Vec::new();
            let mut next_token = String::new();
            loop {
                let r = client
                    .list_schedules(pb::ListSchedulesRequest {
                        next_token,
                        ..Default::default()
                    })
                    .await?;
                names.extend(r.schedules.into_iter().map(|s| s.name));
                if r.next_token.is_empty() {
                    break;
                }
                next_token = r.next_token;
            }
            crate::print_names(json, &names);
        }
        EventsCmd::DeleteSchedule { name } => {
            client
                .delete_schedule(pb::DeleteScheduleRequest {
                    name: name.clone(),
                    group_name: String::new(),
                })
                .await?;
            crate::print_removed(json, "deleted", &name);
        }
        EventsCmd::DescribeReplay { name } => {
            let r = client
                .describe_replay(pb::DescribeReplayRequest { replay_name: name })
                .await?;
            print_replay(json, &r);
        }
        EventsCmd::CancelReplay { name } => {
            let r = client
                .cancel_replay(pb::CancelReplayRequest { replay_name: name })
                .await?;
            print_replay(json, &r);
        }
        EventsCmd::TestPattern { pattern, event } => {
            let r = client
                .test_event_pattern(pb::TestEventPatternRequest {
                    event_pattern: pattern,
                    event,
                })
                .await?;
            crate::print_result(json, json!({"result": r.result}), r.result);
        }
    }
    Ok(())
}
