//! What must hold for every topic: each outbox entry has a number the topic
//! has given out, and each subscription names the topic it is stored under.

use crate::invariant::{ensure, numbers_under, CheckError};
use crate::store::keys::Key;
use crate::store::StateRead;

const DOMAIN: &str = "topics";

/// Checks every topic.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    for (tid, name) in super::all(state)? {
        check_topic(state, tid, &name)?;
    }
    Ok(())
}

/// Checks one topic (a gone one passes).
pub fn check_one(state: &dyn StateRead, name: &str) -> Result<(), CheckError> {
    match super::load(state, name)? {
        Some(t) => check_topic(state, t.id, name),
        None => Ok(()),
    }
}

fn check_topic(state: &dyn StateRead, tid: u64, name: &str) -> Result<(), CheckError> {
    let t = super::require(state, name)?;
    let prefix = Key::new("tout").u64(tid).build();
    for seq in numbers_under(state, &prefix) {
        let seq = seq?;
        ensure((1..=t.outbox_seq).contains(&seq), DOMAIN, || {
            format!(
                "topic {name:?}: outbox entry {seq} is past the last number given, {}",
                t.outbox_seq
            )
        })?;
    }
    for s in super::subscription::all(state, tid)? {
        ensure(s.topic_id == tid, DOMAIN, || {
            format!(
                "topic {name:?}: subscription {:?} is stored under it but names topic id {}",
                s.id, s.topic_id
            )
        })?;
    }
    Ok(())
}
