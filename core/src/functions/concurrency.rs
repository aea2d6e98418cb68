//! Reserved and provisioned concurrency settings of functions.
//!
//! Reserved concurrency caps how many invocations of a function run at
//! once (the leader counts them: see `api::functions`); provisioned
//! concurrency asks the workers to keep environments of a version or alias
//! initialised ahead of demand (handed out with heartbeat answers).
//!
//! | key | value |
//! | --- | --- |
//! | `fconc/{name}` | reserved concurrency, `u32` |
//! | `fprov/{name}/{qualifier}` | [`ProvisionedConfig`] |

use serde::{Deserialize, Serialize};

use crate::error::{ApplyResult, DomainError};
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

/// Largest reserved concurrency.
pub const RESERVED_MAX: u32 = 1_000;
/// Provisioned environments for one qualifier, at most.
pub const PROVISIONED_MAX: u32 = 100;
/// Provisioned configurations per function, at most.
pub const CONFIGS_MAX: usize = 10;

/// Provisioned concurrency of one version or alias.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedConfig {
    /// Function name.
    pub function: String,
    /// Version number or alias.
    pub qualifier: String,
    /// Environments asked for.
    pub requested: u32,
}

fn reserved_key(name: &str) -> Vec<u8> {
    Key::new("fconc").str(name).build()
}

fn provisioned_key(name: &str, qualifier: &str) -> Vec<u8> {
    Key::new("fprov").str(name).str(qualifier).build()
}

/// Removes the provisioned configuration of `qualifier` (an alias being
/// deleted), if any.
pub fn forget(txn: &mut Txn<'_>, name: &str, qualifier: &str) {
    txn.delete(provisioned_key(name, qualifier));
}

/// A qualifier as configurations are stored under it: "01" and "1" name
/// the same version.
pub fn normalize_qualifier(qualifier: &str) -> String {
    match qualifier.parse::<u64>() {
        Ok(n) => n.to_string(),
        Err(_) => qualifier.to_string(),
    }
}

/// The key spaces to delete with a function.
pub const SPACES: [&str; 2] = ["fconc", "fprov"];

/// A function's reserved concurrency, if set.
pub fn reserved(state: &dyn StateRead, name: &str) -> ApplyResult<Option<u32>> {
    Ok(crate::store::record_at(state, &reserved_key(name))?)
}

/// Applies `PutFunctionConcurrency` (`None` removes the reservation).
pub fn put_reserved(txn: &mut Txn<'_>, name: &str, reserved: Option<u32>) -> ApplyResult<()> {
    super::require(txn, name)?;
    match reserved {
        Some(n) if n > RESERVED_MAX => Err(DomainError::invalid(
            "reserved_concurrent_executions",
            format!("must be from 0 to {RESERVED_MAX}, got {n}"),
        )
        .into()),
        Some(n) => {
            txn.put_record(reserved_key(name), &n);
            Ok(())
        }
        None => {
            txn.delete(reserved_key(name));
            Ok(())
        }
    }
}

/// Every provisioned configuration, by function and qualifier.
pub fn provisioned_all(state: &dyn StateRead) -> ApplyResult<Vec<ProvisionedConfig>> {
    Ok(crate::store::records_under(
        state,
        &Key::new("fprov").build(),
    )?)
}

/// One function's provisioned configurations.
pub fn provisioned_of(state: &dyn StateRead, name: &str) -> ApplyResult<Vec<ProvisionedConfig>> {
    super::records_in(state, "fprov", name)
}

/// Applies `PutProvisionedConcurrency` (`None` removes the configuration).
pub fn put_provisioned(
    txn: &mut Txn<'_>,
    name: &str,
    qualifier: &str,
    requested: Option<u32>,
) -> ApplyResult<()> {
    super::require(txn, name)?;
    if qualifier.len() > 128 {
        return Err(DomainError::invalid("qualifier", "at most 128 characters").into());
    }
    let qualifier = &normalize_qualifier(qualifier);
    if qualifier.is_empty() || qualifier == "$LATEST" {
        return Err(DomainError::invalid(
            "qualifier",
            "must be a version number or an alias (provisioned concurrency does not apply to $LATEST)",
        )
        .into());
    }
    let key = provisioned_key(name, qualifier);
    let Some(requested) = requested else {
        if txn.get(&key)?.is_none() {
            return Err(DomainError::not_found(
                "ProvisionedConcurrencyConfigNotFoundException",
                format!("function {name:?} has no provisioned concurrency on {qualifier:?}"),
            )
            .into());
        }
        txn.delete(key);
        return Ok(());
    };
    if !(1..=PROVISIONED_MAX).contains(&requested) {
        return Err(DomainError::invalid(
            "requested",
            format!("must be from 1 to {PROVISIONED_MAX}, got {requested}"),
        )
        .into());
    }
    // The qualifier must name a version or an alias now.
    super::target(txn, name, qualifier)?;
    let existing = provisioned_of(txn, name)?;
    if existing.len() >= CONFIGS_MAX && !existing.iter().any(|c| &c.qualifier == qualifier) {
        return Err(DomainError::limit(
            "LimitExceeded",
            format!(
                "function {name:?} has {CONFIGS_MAX} provisioned configurations, the most it takes"
            ),
        )
        .into());
    }
    txn.put_record(
        key,
        &ProvisionedConfig {
            function: name.to_string(),
            qualifier: qualifier.to_string(),
            requested,
        },
    );
    Ok(())
}
