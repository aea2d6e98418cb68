//! The function operations: the commands that change functions, their
//! versions, aliases, concurrency and events (what each returns and how it
//! applies, through the modules of [`crate::functions`]) and the reads of
//! them.

use serde::{Deserialize, Serialize};

use crate::functions::{self, events, Alias, CreateFunction, Function, Version};
use crate::functions::{concurrency, Target};
use crate::operation::operations;

operations! {
    impl CreateFunction
    size 512 + op.code.zip.len();
    applies -> Function = |op, txn, ctx, _| functions::create(txn, ctx, op);

    /// Replace a function's code.
    pub struct UpdateFunctionCode {
        /// Function name.
        pub name: String,
        /// The new package.
        pub code: functions::Code,
    }
    size 256 + code.zip.len();
    applies -> Function = |txn, ctx, _| functions::update_code(txn, ctx, name, code);

    /// Change a function's settings.
    pub struct UpdateFunctionConfiguration {
        /// Function name.
        pub name: String,
        /// What changes.
        pub change: functions::SettingsChange,
    }
    applies -> Function = |txn, ctx, _| functions::update_settings(txn, ctx, name, change);
}

/// Delete a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteFunction {
    /// Function name.
    pub name: String,
}

operations! {
    /// Publish `$LATEST` as a version.
    pub struct PublishVersion {
        /// Function name.
        pub name: String,
        /// Publish only if `$LATEST`'s code has this hash.
        pub expected_sha256: Option<String>,
    }
    applies -> Version = |txn, ctx, _| {
        functions::publish_version(txn, ctx, name, expected_sha256.as_deref())
    };

    /// Create or update an alias.
    pub struct PutAlias {
        /// Function name.
        pub name: String,
        /// The alias.
        pub spec: functions::AliasSpec,
        /// CreateAlias (else UpdateAlias).
        pub create: bool,
    }
    applies -> Alias = |txn, _, _| functions::put_alias(txn, name, spec, *create);

    /// Delete an alias.
    pub struct DeleteAlias {
        /// Function name.
        pub name: String,
        /// Alias name.
        pub alias: String,
    }
    applies -> () = |txn, _, _| functions::delete_alias(txn, name, alias);

    /// Set a function's asynchronous invocation settings.
    pub struct PutEventInvokeConfig {
        /// Function name.
        pub name: String,
        /// The settings.
        pub config: functions::events::EventConfig,
    }
    applies -> () = |txn, _, _| functions::events::put_config(txn, name, config);

    /// Accept an asynchronous invocation.
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
    size 256 + payload.len();
    applies -> () = |txn, ctx, effects| {
        functions::events::enqueue(txn, ctx, name, qualifier, request_id, payload, effects)
    };

    /// Record how a run of an event ended.
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
    size 512 + match outcome {
        events::RunOutcome::Success { response, .. }
        | events::RunOutcome::Failure { response, .. } => response.len(),
        events::RunOutcome::Expired => 0,
    };
    applies -> events::Settled = |txn, ctx, effects| {
        functions::events::settle(txn, ctx, name, arns, *seq, request_id, outcome, effects)
    };

    /// Set (or with `None` remove) a function's reserved concurrency.
    pub struct PutFunctionConcurrency {
        /// Function name.
        pub name: String,
        /// Invocations at once, at most.
        pub reserved: Option<u32>,
    }
    applies -> () = |txn, _, _| functions::concurrency::put_reserved(txn, name, *reserved);

    /// Set (or with `None` remove) a version's or alias's provisioned
    /// concurrency.
    pub struct PutProvisionedConcurrency {
        /// Function name.
        pub name: String,
        /// Version number or alias.
        pub qualifier: String,
        /// Environments to keep ready.
        pub requested: Option<u32>,
    }
    applies -> () = |txn, _, _| {
        functions::concurrency::put_provisioned(txn, name, qualifier, *requested)
    };

    /// A function's record.
    pub struct GetFunction {
        /// Function name.
        pub name: String,
    }
    reads -> Function = |state| functions::require(state, name);

    /// A page of functions.
    pub struct ListFunctions {
        /// Continue after this name.
        pub after: Option<String>,
        /// Page size.
        pub limit: u32,
    }
    reads -> (Vec<Function>, bool) = |state| {
        functions::list(state, after.as_deref(), *limit as usize)
    };

    /// A function's published versions.
    pub struct ListVersions {
        /// Function name.
        pub name: String,
    }
    reads -> (Function, Vec<Version>) = |state| {
        Ok((
            functions::require(state, name)?,
            functions::versions(state, name)?,
        ))
    };

    /// A function's aliases.
    pub struct ListAliases {
        /// Function name.
        pub name: String,
    }
    reads -> Vec<Alias> = |state| {
        functions::require(state, name)?;
        functions::aliases(state, name)
    };

    /// What an invocation with a qualifier runs.
    pub struct InvokeTarget {
        /// Function name.
        pub name: String,
        /// `$LATEST`, a version or an alias.
        pub qualifier: String,
    }
    reads -> Target = |state| functions::target(state, name, qualifier);

    /// A function's asynchronous invocation settings.
    pub struct EventInvokeConfig {
        /// Function name.
        pub name: String,
    }
    reads -> events::EventConfig = |state| {
        functions::require(state, name)?;
        functions::events::config(state, name)
    };

    /// A code package by hash.
    pub struct FunctionCode {
        /// Hex SHA-256.
        pub sha256: String,
    }
    reads -> Option<Vec<u8>> = |state| functions::code(state, sha256);

    /// A function's reserved concurrency.
    pub struct FunctionConcurrency {
        /// Function name.
        pub name: String,
    }
    reads -> Option<u32> = |state| {
        functions::require(state, name)?;
        functions::concurrency::reserved(state, name)
    };

    /// Provisioned concurrency configurations: one function's, or all.
    pub struct Provisioned {
        /// Function name; every function's when `None`.
        pub name: Option<String>,
    }
    reads -> Vec<concurrency::ProvisionedConfig> = |state| {
        Ok(match name {
            Some(name) => {
                functions::require(state, name)?;
                functions::concurrency::provisioned_of(state, name)?
            }
            None => functions::concurrency::provisioned_all(state)?,
        })
    };
}
