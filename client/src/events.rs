//! The event-bus calls (buses, rules, targets, PutEvents, archives and
//! replays) and the scheduler's, each a unary
//! call retried as [`Client::call`] retries (a retried PutEvents may put an
//! event twice, as EventBridge's at-least-once delivery may).

use sluice_proto::v1 as pb;

use super::{clients, Client, Error};

/// One request type to its reply type, per event-bus call.
macro_rules! calls {
    ($service:ident: $($(#[$doc:meta])* $method:ident($req:ty) -> $resp:ty;)*) => {
        impl Client {
            $(
                $(#[$doc])*
                pub async fn $method(&self, req: $req) -> Result<$resp, Error> {
                    rpc!(self.$service.$method(req)).await
                }
            )*
        }
    };
}

calls! {
    events:
    /// Creates an event bus.
    create_event_bus(pb::CreateEventBusRequest) -> pb::CreateEventBusResponse;
    /// Deletes an event bus and its rules.
    delete_event_bus(pb::DeleteEventBusRequest) -> pb::DeleteEventBusResponse;
    /// One event bus (the default one when the name is empty).
    describe_event_bus(pb::DescribeEventBusRequest) -> pb::EventBus;
    /// A page of event buses.
    list_event_buses(pb::ListEventBusesRequest) -> pb::ListEventBusesResponse;
    /// Creates a rule or replaces its pattern, state and description.
    put_rule(pb::PutRuleRequest) -> pb::PutRuleResponse;
    /// Deletes a rule (one with targets only with `force`).
    delete_rule(pb::DeleteRuleRequest) -> pb::DeleteRuleResponse;
    /// One rule.
    describe_rule(pb::DescribeRuleRequest) -> pb::Rule;
    /// A page of a bus's rules.
    list_rules(pb::ListRulesRequest) -> pb::ListRulesResponse;
    /// Enables a rule.
    enable_rule(pb::EnableRuleRequest) -> pb::EnableRuleResponse;
    /// Disables a rule.
    disable_rule(pb::DisableRuleRequest) -> pb::DisableRuleResponse;
    /// Adds or replaces a rule's targets; each succeeds or fails on its own.
    put_targets(pb::PutTargetsRequest) -> pb::PutTargetsResponse;
    /// Removes a rule's targets by id.
    remove_targets(pb::RemoveTargetsRequest) -> pb::RemoveTargetsResponse;
    /// A rule's targets.
    list_targets_by_rule(pb::ListTargetsByRuleRequest) -> pb::ListTargetsByRuleResponse;
    /// Puts up to 10 events; each entry succeeds or fails on its own.
    put_events(pb::PutEventsRequest) -> pb::PutEventsResponse;
    /// Whether an event pattern matches an event.
    test_event_pattern(pb::TestEventPatternRequest) -> pb::TestEventPatternResponse;
    /// Creates an archive of a bus's events.
    create_archive(pb::CreateArchiveRequest) -> pb::Archive;
    /// One archive.
    describe_archive(pb::DescribeArchiveRequest) -> pb::Archive;
    /// Archives.
    list_archives(pb::ListArchivesRequest) -> pb::ListArchivesResponse;
    /// Deletes an archive.
    delete_archive(pb::DeleteArchiveRequest) -> pb::DeleteArchiveResponse;
    /// Starts replaying a time range of an archive.
    start_replay(pb::StartReplayRequest) -> pb::Replay;
    /// One replay.
    describe_replay(pb::DescribeReplayRequest) -> pb::Replay;
    /// Replays.
    list_replays(pb::ListReplaysRequest) -> pb::ListReplaysResponse;
    /// Stops a running replay.
    cancel_replay(pb::CancelReplayRequest) -> pb::Replay;
}

calls! {
    scheduler:
    /// Creates a schedule.
    create_schedule(pb::ScheduleSettings) -> pb::CreateScheduleResponse;
    /// Replaces a schedule's settings.
    update_schedule(pb::ScheduleSettings) -> pb::UpdateScheduleResponse;
    /// One schedule.
    get_schedule(pb::GetScheduleRequest) -> pb::Schedule;
    /// Deletes a schedule.
    delete_schedule(pb::DeleteScheduleRequest) -> pb::DeleteScheduleResponse;
    /// A page of schedules.
    list_schedules(pb::ListSchedulesRequest) -> pb::ListSchedulesResponse;
}
