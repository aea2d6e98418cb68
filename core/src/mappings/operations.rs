//! The event source mapping operations: the commands that change mappings,
//! their leases and checkpoints (what each returns and how it applies,
//! through the modules of [`crate::mappings`]) and the reads of them.

use serde::{Deserialize, Serialize};

use crate::apply::{Ctx, Effects};
use crate::error::ApplyResult;
use crate::mappings::{self, checkpoints::Commit, Mapping, NewMapping};
use crate::mappings::{checkpoints, leases};
use crate::operation::{Lookup, Operation};
use crate::store::{StateRead, Txn};

impl Operation for NewMapping {
    type Output = Mapping;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        crate::mappings::create(txn, ctx, self)
    }
}

/// Replace a mapping's settings (validated at the edge against the
/// mapping as it was then).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

impl Operation for UpdateEventSourceMapping {
    type Output = Mapping;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let UpdateEventSourceMapping {
            function,
            uuid,
            expected_ms,
            settings,
        } = self;
        crate::mappings::update(txn, ctx, function, uuid, *expected_ms, settings)
    }
}

/// Delete an event source mapping.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteEventSourceMapping {
    /// Its function.
    pub function: String,
    /// Its id.
    pub uuid: String,
}

impl Operation for DeleteEventSourceMapping {
    type Output = Mapping;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let DeleteEventSourceMapping { function, uuid } = self;
        crate::mappings::delete(txn, function, uuid)
    }
}

/// Hand a mapping's slots to workers (the leader's lease manager).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AssignLeases {
    /// Its function.
    pub function: String,
    /// The mapping.
    pub uuid: String,
    /// Each slot's holder; slots not listed are dropped.
    pub slots: Vec<(u32, String)>,
}

impl Operation for AssignLeases {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let AssignLeases {
            function,
            uuid,
            slots,
        } = self;
        crate::mappings::leases::assign(txn, function, uuid, slots)?;
        Ok(())
    }
}

impl Operation for Commit {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        crate::mappings::checkpoints::commit(txn, self)?;
        Ok(())
    }
}

/// Record a mapping's `LastProcessingResult` (a worker's poller).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetMappingResult {
    /// Its function.
    pub function: String,
    /// The mapping.
    pub uuid: String,
    /// `OK`, or `PROBLEM: ...`.
    pub result: String,
}

impl Operation for SetMappingResult {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let SetMappingResult {
            function,
            uuid,
            result,
        } = self;
        crate::mappings::set_result(txn, function, uuid, result)
    }
}

/// One event source mapping.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMapping {
    /// Its id.
    pub uuid: String,
}

impl Lookup for GetMapping {
    type Output = Mapping;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let GetMapping { uuid } = self;
        crate::mappings::require(state, uuid)
    }
}

/// Event source mappings: one function's, or all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListMappings {
    /// Function name; every function's when `None`.
    pub function: Option<String>,
}

impl Lookup for ListMappings {
    type Output = Vec<Mapping>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let ListMappings { function } = self;
        Ok(match function {
            Some(f) => crate::mappings::of_function(state, f)?,
            None => crate::mappings::all(state)?,
        })
    }
}

/// Every mapping lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListLeases;

impl Lookup for ListLeases {
    type Output = Vec<leases::Lease>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        crate::mappings::leases::all(state)
    }
}

/// A stream mapping's checkpoints, and when it was created.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappingCheckpoints {
    /// Its function.
    pub function: String,
    /// The mapping.
    pub uuid: String,
}

impl Lookup for MappingCheckpoints {
    type Output = (Vec<checkpoints::Checkpoint>, u64);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let MappingCheckpoints { function, uuid } = self;
        Ok((
            crate::mappings::checkpoints::of_mapping(state, function, uuid)?,
            crate::mappings::checkpoints::since(state, function, uuid)?,
        ))
    }
}
