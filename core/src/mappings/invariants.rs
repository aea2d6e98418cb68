//! What must hold for event source mappings: every mapping belongs to a
//! function that exists (deleting a function deletes its mappings), and
//! every poller lease names a mapping that exists.

use crate::invariant::{ensure, CheckError};
use crate::store::StateRead;

const DOMAIN: &str = "mappings";

/// Checks every mapping and lease.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    let mappings = super::all(state)?;
    for m in &mappings {
        ensure(
            crate::functions::load(state, &m.function)?.is_some(),
            DOMAIN,
            || {
                format!(
                    "mapping {:?} belongs to function {:?}, which does not exist",
                    m.uuid, m.function
                )
            },
        )?;
    }
    for l in super::leases::all(state)? {
        ensure(mappings.iter().any(|m| m.uuid == l.uuid), DOMAIN, || {
            format!(
                "a lease of slot {} names mapping {:?}, which does not exist",
                l.slot, l.uuid
            )
        })?;
    }
    Ok(())
}
