//! The schedule operations: the commands that create, change, delete and
//! fire schedules, and the reads of them.

use crate::operation::operations;
use crate::schedules::{self, fire, NewSchedule, Schedule};

operations! {
    impl NewSchedule applies -> () = |op, txn, ctx, _| schedules::create(txn, ctx, op);

    /// Replace a schedule's settings.
    pub struct UpdateSchedule {
        /// The new settings (group and name say which schedule).
        pub settings: NewSchedule,
    }
    applies -> () = |txn, ctx, _| schedules::update(txn, ctx, settings);

    /// Delete a schedule.
    pub struct DeleteSchedule {
        /// Group.
        pub group: String,
        /// Name.
        pub name: String,
    }
    applies -> () = |txn, _, _| schedules::delete(txn, group, name);

    /// Fire a schedule's due time (the leader's schedule); true when it
    /// fired, false when that due time was not the schedule's next.
    pub struct FireSchedule {
        /// Group.
        pub group: String,
        /// Name.
        pub name: String,
        /// The due time, ms since the epoch.
        pub due_ms: u64,
    }
    applies -> bool = |txn, ctx, effects| fire::fire(txn, ctx, group, name, *due_ms, effects);

    /// One schedule.
    pub struct GetSchedule {
        /// Group.
        pub group: String,
        /// Name.
        pub name: String,
    }
    reads -> Schedule = |state| schedules::require(state, group, name);

    /// A page of a group's schedules by name prefix.
    pub struct ListSchedules {
        /// Group.
        pub group: String,
        /// Only names with this prefix.
        pub prefix: String,
        /// Continue after this name.
        pub after: Option<String>,
        /// Page size.
        pub limit: u32,
    }
    reads -> (Vec<Schedule>, bool) = |state| {
        schedules::list(state, group, prefix, after.as_deref(), (*limit).max(1) as usize)
    };
}
