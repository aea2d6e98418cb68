//! The function operations: the commands that change functions, their
//! versions, aliases, concurrency and events (what each returns and how it
//! applies, through the modules of [`crate::functions`]) and the reads of
//! them.

use serde::{Deserialize, Serialize};

use crate::apply::{Ctx, Effects};
use crate::error::ApplyResult;
use crate::functions::{self, events, Alias, CreateFunction, Function, Version};
use crate::functions::{concurrency, Target};
use crate::operation::{Lookup, Operation};
use crate::store::{StateRead, Txn};

impl Operation for CreateFunction {
    type Output = Function;

    fn size_hint(&self) -> usize {
        512 + self.code.zip.len()
    }

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        functions::create(txn, ctx, self)
    }
}

/// Replace a function's code.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateFunctionCode {
    /// Function name.
    pub name: String,
    /// The new package.
    pub code: functions::Code,
}

impl Operation for UpdateFunctionCode {
    type Output = Function;

    fn size_hint(&self) -> usize {
        256 + self.code.zip.len()
    }

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let UpdateFunctionCode { name, code } = self;
        functions::update_code(txn, ctx, name, code)
    }
}

/// Change a function's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateFunctionConfiguration {
    /// Function name.
    pub name: String,
    /// What changes.
    pub change: functions::SettingsChange,
}

impl Operation for UpdateFunctionConfiguration {
    type Output = Function;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let UpdateFunctionConfiguration { name, change } = self;
        functions::update_settings(txn, ctx, name, change)
    }
}

/// Delete a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteFunction {
    /// Function name.
    pub name: String,
}

/// Publish `$LATEST` as a version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PublishVersion {
    /// Function name.
    pub name: String,
    /// Publish only if `$LATEST`'s code has this hash.
    pub expected_sha256: Option<String>,
}

impl Operation for PublishVersion {
    type Output = Version;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let PublishVersion {
            name,
            expected_sha256,
        } = self;
        functions::publish_version(txn, ctx, name, expected_sha256.as_deref())
    }
}

/// Create or update an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutAlias {
    /// Function name.
    pub name: String,
    /// The alias.
    pub spec: functions::AliasSpec,
    /// CreateAlias (else UpdateAlias).
    pub create: bool,
}

impl Operation for PutAlias {
    type Output = Alias;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let PutAlias { name, spec, create } = self;
        functions::put_alias(txn, name, spec, *create)
    }
}

/// Delete an alias.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteAlias {
    /// Function name.
    pub name: String,
    /// Alias name.
    pub alias: String,
}

impl Operation for DeleteAlias {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let DeleteAlias { name, alias } = self;
        functions::delete_alias(txn, name, alias)
    }
}

/// Set a function's asynchronous invocation settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutEventInvokeConfig {
    /// Function name.
    pub name: String,
    /// The settings.
    pub config: functions::events::EventConfig,
}

impl Operation for PutEventInvokeConfig {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let PutEventInvokeConfig { name, config } = self;
        functions::events::put_config(txn, name, config)
    }
}

/// Accept an asynchronous invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnqueueEvent {
    /// Function name.
    pub name: String,
    /// `$LATEST`, a version or an alias.
    pub qualifier: String,
    /// The request id Invoke returns.
    pub request_id: String,
    /// The event.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

impl Operation for EnqueueEvent {
    type Output = ();

    fn size_hint(&self) -> usize {
        256 + self.payload.len()
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let EnqueueEvent {
            name,
            qualifier,
            request_id,
            payload,
        } = self;
        functions::events::enqueue(txn, ctx, name, qualifier, request_id, payload, effects)
    }
}

/// Record how a run of an event ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SettleEvent {
    /// Function name.
    pub name: String,
    /// ARNs for the destination record.
    pub arns: functions::events::Arns,
    /// Event number.
    pub seq: u64,
    /// The event's request id (guards against a function re-created
    /// under the same name).
    pub request_id: String,
    /// The outcome.
    pub outcome: functions::events::RunOutcome,
}

impl Operation for SettleEvent {
    type Output = events::Settled;

    fn size_hint(&self) -> usize {
        512 + match &self.outcome {
            events::RunOutcome::Success { response, .. }
            | events::RunOutcome::Failure { response, .. } => response.len(),
            events::RunOutcome::Expired => 0,
        }
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let SettleEvent {
            name,
            arns,
            seq,
            request_id,
            outcome,
        } = self;
        functions::events::settle(txn, ctx, name, arns, *seq, request_id, outcome, effects)
    }
}

/// Set (or with `None` remove) a function's reserved concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutFunctionConcurrency {
    /// Function name.
    pub name: String,
    /// Invocations at once, at most.
    pub reserved: Option<u32>,
}

impl Operation for PutFunctionConcurrency {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let PutFunctionConcurrency { name, reserved } = self;
        functions::concurrency::put_reserved(txn, name, *reserved)
    }
}

/// Set (or with `None` remove) a version's or alias's provisioned
/// concurrency.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutProvisionedConcurrency {
    /// Function name.
    pub name: String,
    /// Version number or alias.
    pub qualifier: String,
    /// Environments to keep ready.
    pub requested: Option<u32>,
}

impl Operation for PutProvisionedConcurrency {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        let PutProvisionedConcurrency {
            name,
            qualifier,
            requested,
        } = self;
        functions::concurrency::put_provisioned(txn, name, qualifier, *requested)
    }
}

/// A function's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetFunction {
    /// Function name.
    pub name: String,
}

impl Lookup for GetFunction {
    type Output = Function;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let GetFunction { name } = self;
        functions::require(state, name)
    }
}

/// A page of functions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListFunctions {
    /// Continue after this name.
    pub after: Option<String>,
    /// Page size.
    pub limit: u32,
}

impl Lookup for ListFunctions {
    type Output = (Vec<Function>, bool);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let ListFunctions { after, limit } = self;
        let (fs, more) = functions::list(state, after.as_deref(), *limit as usize)?;
        Ok((fs, more))
    }
}

/// A function's published versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListVersions {
    /// Function name.
    pub name: String,
}

impl Lookup for ListVersions {
    type Output = (Function, Vec<Version>);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let ListVersions { name } = self;
        Ok((
            functions::require(state, name)?,
            functions::versions(state, name)?,
        ))
    }
}

/// A function's aliases.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListAliases {
    /// Function name.
    pub name: String,
}

impl Lookup for ListAliases {
    type Output = Vec<Alias>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let ListAliases { name } = self;
        functions::require(state, name)?;
        functions::aliases(state, name)
    }
}

/// What an invocation with a qualifier runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeTarget {
    /// Function name.
    pub name: String,
    /// `$LATEST`, a version or an alias.
    pub qualifier: String,
}

impl Lookup for InvokeTarget {
    type Output = Target;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let InvokeTarget { name, qualifier } = self;
        functions::target(state, name, qualifier)
    }
}

/// A function's asynchronous invocation settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    /// Function name.
    pub name: String,
}

impl Lookup for EventInvokeConfig {
    type Output = events::EventConfig;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let EventInvokeConfig { name } = self;
        functions::require(state, name)?;
        functions::events::config(state, name)
    }
}

/// A code package by hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionCode {
    /// Hex SHA-256.
    pub sha256: String,
}

impl Lookup for FunctionCode {
    type Output = Option<Vec<u8>>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let FunctionCode { sha256 } = self;
        functions::code(state, sha256)
    }
}

/// A function's reserved concurrency.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConcurrency {
    /// Function name.
    pub name: String,
}

impl Lookup for FunctionConcurrency {
    type Output = Option<u32>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let FunctionConcurrency { name } = self;
        functions::require(state, name)?;
        functions::concurrency::reserved(state, name)
    }
}

/// Provisioned concurrency configurations: one function's, or all.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provisioned {
    /// Function name; every function's when `None`.
    pub name: Option<String>,
}

impl Lookup for Provisioned {
    type Output = Vec<concurrency::ProvisionedConfig>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let Provisioned { name } = self;
        Ok(match name {
            Some(name) => {
                functions::require(state, name)?;
                functions::concurrency::provisioned_of(state, name)?
            }
            None => functions::concurrency::provisioned_all(state)?,
        })
    }
}
