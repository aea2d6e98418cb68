//! What must hold for schedules: the count is the number stored; each is
//! stored under the group and name it carries; the due index holds exactly
//! one entry for each schedule with a firing time, at that time; a next due
//! time lies after the last one fired, within the start and end dates, and
//! its firing time within the flexible window after it.

use crate::invariant::{ensure, CheckError};
use crate::store::keys::{read_str, read_u64, Key};
use crate::store::StateRead;

const DOMAIN: &str = "schedules";

/// Checks every schedule and the due index.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    let all = super::all(state)?;
    let counted = super::count(state)?;
    ensure(counted == all.len() as u64, DOMAIN, || {
        format!("{counted} schedules counted, {} stored", all.len())
    })?;
    let mut firing = 0usize;
    for s in &all {
        let n = &s.settings;
        ensure(
            super::load(state, &n.group, &n.name)?.as_ref() == Some(s),
            DOMAIN,
            || {
                format!(
                    "schedule {}/{} is stored under another key",
                    n.group, n.name
                )
            },
        )?;
        if let Some(due) = s.next_due_ms {
            ensure(
                s.last_due_ms.is_none_or(|last| last < due)
                    && n.start_ms.is_none_or(|start| start <= due)
                    && n.end_ms.is_none_or(|end| due <= end),
                DOMAIN,
                || {
                    format!(
                        "schedule {}/{}: next due time {due} is out of place",
                        n.group, n.name
                    )
                },
            )?;
        }
        if let Some(at) = s.fire_at_ms() {
            firing += 1;
            let due = s.next_due_ms.unwrap_or(0);
            ensure(
                at >= due && at - due <= u64::from(n.window_minutes) * 60_000,
                DOMAIN,
                || {
                    format!(
                        "schedule {}/{} fires at {at}, outside its window after {due}",
                        n.group, n.name
                    )
                },
            )?;
            let key = super::due_key(at, &n.group, &n.name);
            ensure(state.get(&key)?.is_some(), DOMAIN, || {
                format!(
                    "schedule {}/{} is missing from the due index",
                    n.group, n.name
                )
            })?;
        }
    }
    let prefix = Key::new("sdue").build();
    let mut indexed = 0usize;
    for kv in state.scan_prefix(&prefix) {
        let (k, _) = kv?;
        indexed += 1;
        let at = read_u64(&k, prefix.len());
        let group = read_str(&k, prefix.len() + 8);
        let name = group.and_then(|(_, next)| read_str(&k, next));
        let (Some(at), Some((group, _)), Some((name, _))) = (at, group, name) else {
            return Ok(ensure(false, DOMAIN, || {
                "an unreadable due index key".into()
            })?);
        };
        let s = super::load(state, group, name)?;
        ensure(
            s.as_ref().and_then(|s| s.fire_at_ms()) == Some(at),
            DOMAIN,
            || format!("the due index holds {group}/{name} at {at}, which does not fire then"),
        )?;
    }
    ensure(indexed == firing, DOMAIN, || {
        format!("the due index holds {indexed} entries for {firing} firing schedules")
    })?;
    Ok(())
}
