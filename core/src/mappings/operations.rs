//! The event source mapping operations: the commands that change mappings,
//! their leases and checkpoints (what each returns and how it applies,
//! through the modules of [`crate::mappings`]) and the reads of them.

use serde::{Deserialize, Serialize};

use crate::mappings::{self, checkpoints::Commit, Mapping, NewMapping};
use crate::mappings::{checkpoints, leases};
use crate::operation::operations;

operations! {
    impl NewMapping applies -> Mapping = |op, txn, ctx, _| crate::mappings::create(txn, ctx, op);

    /// Replace a mapping's settings (validated at the edge against the
    /// mapping as it was then).
    pub struct UpdateEventSourceMapping {
        /// Its function.
        pub function: String,
        /// Its id.
        pub uuid: String,
        /// Its `modified_ms` when read at the edge.
        pub expected_ms: u64,
        /// The new settings.
        pub settings: mappings::Settings,
    }
    applies -> Mapping = |txn, ctx, _| {
        crate::mappings::update(txn, ctx, function, uuid, *expected_ms, settings)
    };

    /// Delete an event source mapping.
    pub struct DeleteEventSourceMapping {
        /// Its function.
        pub function: String,
        /// Its id.
        pub uuid: String,
    }
    applies -> Mapping = |txn, _, _| crate::mappings::delete(txn, function, uuid);

    /// Hand a mapping's slots to workers (the leader's lease manager).
    pub struct AssignLeases {
        /// Its function.
        pub function: String,
        /// The mapping.
        pub uuid: String,
        /// Each slot's holder; slots not listed are dropped.
        pub slots: Vec<(u32, String)>,
    }
    applies -> () = |txn, _, _| {
        crate::mappings::leases::assign(txn, function, uuid, slots)?;
        Ok(())
    };

    impl Commit applies -> () = |op, txn, _, _| {
        crate::mappings::checkpoints::commit(txn, op)?;
        Ok(())
    };

    /// Record a mapping's `LastProcessingResult` (a worker's poller).
    pub struct SetMappingResult {
        /// Its function.
        pub function: String,
        /// The mapping.
        pub uuid: String,
        /// `OK`, or `PROBLEM: ...`.
        pub result: String,
    }
    applies -> () = |txn, _, _| crate::mappings::set_result(txn, function, uuid, result);

    /// One event source mapping.
    pub struct GetMapping {
        /// Its id.
        pub uuid: String,
    }
    reads -> Mapping = |state| crate::mappings::require(state, uuid);

    /// Event source mappings: one function's, or all.
    pub struct ListMappings {
        /// Function name; every function's when `None`.
        pub function: Option<String>,
    }
    reads -> Vec<Mapping> = |state| {
        Ok(match function {
            Some(f) => crate::mappings::of_function(state, f)?,
            None => crate::mappings::all(state)?,
        })
    };
}

/// Every mapping lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListLeases;

operations! {
    impl ListLeases reads -> Vec<leases::Lease> = |_, state| crate::mappings::leases::all(state);

    /// A stream mapping's checkpoints, and when it was created.
    pub struct MappingCheckpoints {
        /// Its function.
        pub function: String,
        /// The mapping.
        pub uuid: String,
    }
    reads -> (Vec<checkpoints::Checkpoint>, u64) = |state| {
        Ok((
            crate::mappings::checkpoints::of_mapping(state, function, uuid)?,
            crate::mappings::checkpoints::since(state, function, uuid)?,
        ))
    };
}
