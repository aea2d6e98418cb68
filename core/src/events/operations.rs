//! The event-bus operations: the commands that change buses, rules and
//! targets and take events (what each returns and how it applies, through
//! the modules of [`crate::events`]) and the reads of them.

use crate::error::DomainError;
use crate::events::archive::{self, Archive, NewArchive, NewReplay, Replay};
use crate::events::put::{self, NewEvent, Origin};
use crate::events::target::Target;
use crate::events::{self, Bus, NewRule, Rule};
use crate::operation::operations;

operations! {
    /// Create an event bus.
    pub struct CreateEventBus {
        /// Bus name.
        pub name: String,
        /// Description.
        pub description: String,
    }
    applies -> () = |txn, ctx, _| events::create_bus(txn, ctx, name, description);

    /// Delete an event bus and its rules (a missing one is no error).
    pub struct DeleteEventBus {
        /// Bus name.
        pub name: String,
    }
    applies -> () = |txn, _, _| events::delete_bus(txn, name);

    impl NewRule applies -> () = |op, txn, ctx, _| events::put_rule(txn, ctx, op);

    /// Delete a rule (one with targets only with `force`).
    pub struct DeleteRule {
        /// Bus name.
        pub bus: String,
        /// Rule name.
        pub name: String,
        /// Delete it with its targets.
        pub force: bool,
    }
    applies -> () = |txn, _, _| events::delete_rule(txn, bus, name, *force);

    /// Enable or disable a rule.
    pub struct SetRuleState {
        /// Bus name.
        pub bus: String,
        /// Rule name.
        pub name: String,
        /// Enabled (else disabled).
        pub enabled: bool,
    }
    applies -> () = |txn, _, _| events::set_rule_state(txn, bus, name, *enabled);

    /// Add or replace a rule's targets, each on its own.
    pub struct PutTargets {
        /// Bus name.
        pub bus: String,
        /// Rule name.
        pub rule: String,
        /// The targets.
        pub targets: Vec<Target>,
    }
    applies -> Vec<Result<(), DomainError>> = |txn, _, _| {
        events::put_targets(txn, bus, rule, targets)
    };

    /// Remove a rule's targets by id, each on its own.
    pub struct RemoveTargets {
        /// Bus name.
        pub bus: String,
        /// Rule name.
        pub rule: String,
        /// Target ids.
        pub ids: Vec<String>,
    }
    applies -> Vec<Result<(), DomainError>> = |txn, _, _| {
        events::remove_targets(txn, bus, rule, ids)
    };

    /// Put events on a bus; each entry succeeds (with its event id) or
    /// fails on its own.
    pub struct PutEvents {
        /// Bus name.
        pub bus: String,
        /// The account and region the envelopes name.
        pub origin: Origin,
        /// The events.
        pub entries: Vec<NewEvent>,
    }
    size 64 + entries.iter().map(|e| e.size() + 64).sum::<usize>();
    applies -> Vec<Result<String, DomainError>> = |txn, ctx, effects| {
        put::put_events(txn, ctx, bus, origin, entries, effects)
    };

    impl NewArchive applies -> () = |op, txn, ctx, _| archive::create_archive(txn, ctx, op);

    /// Delete an archive (its events are collected later).
    pub struct DeleteArchive {
        /// Archive name.
        pub name: String,
    }
    applies -> () = |txn, _, _| archive::delete_archive(txn, name);

    /// Delete a bounded part of a deleted archive's events.
    pub struct CollectArchive {
        /// Archive id.
        pub id: u64,
    }
    applies -> bool = |txn, _, _| archive::collect(txn, *id);

    /// Drop an archive's events past its retention (the leader's schedule).
    pub struct ArchiveTick {
        /// Archive name.
        pub name: String,
    }
    applies -> bool = |txn, ctx, _| archive::trim(txn, ctx, name);

    impl NewReplay applies -> () = |op, txn, ctx, _| archive::start_replay(txn, ctx, op);

    /// Stop a running replay.
    pub struct CancelReplay {
        /// Replay name.
        pub name: String,
    }
    applies -> () = |txn, ctx, _| archive::cancel_replay(txn, ctx, name);

    /// Route the next archived events of a running replay (the leader's
    /// schedule); true when more are left.
    pub struct ReplayStep {
        /// Replay name.
        pub name: String,
    }
    applies -> bool = |txn, ctx, effects| archive::step(txn, ctx, name, effects);

    /// Try a failed delivery again (the leader's schedule); true when it
    /// was due and tried.
    pub struct RetryDelivery {
        /// Its due time, ms.
        pub due_ms: u64,
        /// Its number.
        pub seq: u64,
    }
    applies -> bool = |txn, ctx, effects| super::retry::retry(txn, ctx, *due_ms, *seq, effects);

    /// One archive.
    pub struct DescribeArchive {
        /// Archive name.
        pub name: String,
    }
    reads -> Archive = |state| archive::require_archive(state, name);

    /// Every archive.
    pub struct ListArchives {}
    reads -> Vec<Archive> = |state| archive::archives(state);

    /// One replay.
    pub struct DescribeReplay {
        /// Replay name.
        pub name: String,
    }
    reads -> Replay = |state| archive::require_replay(state, name);

    /// Every replay.
    pub struct ListReplays {}
    reads -> Vec<Replay> = |state| archive::replays(state);

    /// One event bus (the default one always exists).
    pub struct DescribeEventBus {
        /// Bus name.
        pub name: String,
    }
    reads -> Bus = |state| events::require_bus(state, name);

    /// A page of event buses by name prefix.
    pub struct ListEventBuses {
        /// Only names with this prefix.
        pub prefix: String,
        /// Continue after this name.
        pub after: Option<String>,
        /// Page size.
        pub limit: u32,
    }
    reads -> (Vec<Bus>, bool) = |state| {
        events::list_buses(state, prefix, after.as_deref(), (*limit).max(1) as usize)
    };

    /// One rule, with its targets.
    pub struct DescribeRule {
        /// Bus name.
        pub bus: String,
        /// Rule name.
        pub name: String,
    }
    reads -> Rule = |state| events::require_rule(state, bus, name);

    /// A page of a bus's rules by name prefix.
    pub struct ListRules {
        /// Bus name.
        pub bus: String,
        /// Only names with this prefix.
        pub prefix: String,
        /// Continue after this name.
        pub after: Option<String>,
        /// Page size.
        pub limit: u32,
    }
    reads -> (Vec<Rule>, bool) = |state| {
        events::list_rules(state, bus, prefix, after.as_deref(), (*limit).max(1) as usize)
    };
}
