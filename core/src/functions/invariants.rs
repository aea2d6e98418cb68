//! What must hold for every function: its count of waiting asynchronous
//! events (which caps them) equals the events stored for it, and each
//! waiting event has a number the function has given out.

use crate::invariant::{ensure, numbers_under, CheckError};
use crate::store::keys::Key;
use crate::store::StateRead;

const DOMAIN: &str = "functions";

/// Checks every function.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    let mut after: Option<String> = None;
    loop {
        let (page, more) = super::list(state, after.as_deref(), 100)?;
        for f in &page {
            let prefix = Key::new("fevent").str(&f.name).build();
            let mut stored = 0u64;
            for seq in numbers_under(state, &prefix) {
                let seq = seq?;
                ensure(seq <= f.event_seq, DOMAIN, || {
                    format!(
                        "function {:?}: event {seq} is past the last number given, {}",
                        f.name, f.event_seq
                    )
                })?;
                stored += 1;
            }
            ensure(stored == f.pending_events, DOMAIN, || {
                format!(
                    "function {:?}: counts {} waiting events, {stored} are stored",
                    f.name, f.pending_events
                )
            })?;
        }
        match (more, page.last()) {
            (true, Some(last)) => after = Some(last.name.clone()),
            _ => return Ok(()),
        }
    }
}
