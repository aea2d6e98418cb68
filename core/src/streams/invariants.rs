//! What must hold in every stream:
//!
//! * its open shards' hash key ranges cover the whole space, 0 to 2^128-1,
//!   without a gap or an overlap, so every record has exactly one shard;
//! * every shard's parents are shards the stream listed before it (lower
//!   indexes), and no shard index reaches `next_shard_index`;
//! * a shard's records are dense: exactly the sequence numbers from its
//!   `first_seq` up to its `next_seq`, none missing and none left over;
//! * a closed shard's last sequence number is the last it ever gave.

use super::records::{load_state, record_prefix, state_key};
use super::Stream;
use crate::invariant::{ensure, numbers_under, CheckError};
use crate::store::StateRead;

const DOMAIN: &str = "streams";

/// Checks every stream.
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    for name in super::all_names(state)? {
        let Some(stream) = super::load(state, &name)? else {
            continue;
        };
        check_stream(state, &stream)?;
    }
    Ok(())
}

/// Checks one stream, unless its shards hold more than `max_records` (a
/// check reads all of them; the tests' whole-state checks cover big ones).
pub fn check_one(state: &dyn StateRead, name: &str, max_records: u64) -> Result<(), CheckError> {
    let Some(stream) = super::load(state, name)? else {
        return Ok(());
    };
    let mut records = 0u64;
    for m in &stream.shards {
        let st = load_state(state, stream.id, m.index)?;
        records += st.next_seq.saturating_sub(st.first_seq);
    }
    if records > max_records {
        return Ok(());
    }
    check_stream(state, &stream)
}

fn check_stream(state: &dyn StateRead, s: &Stream) -> Result<(), CheckError> {
    let name = &s.name;
    let mut open: Vec<(u128, u128, u32)> = s
        .open_shards()
        .map(|m| (m.start_hash, m.end_hash, m.index))
        .collect();
    open.sort();
    let mut next: Option<u128> = Some(0);
    for &(start, end, index) in &open {
        ensure(next == Some(start) && start <= end, DOMAIN, || {
            format!(
                "stream {name:?}: open shard {index} covers {start}..={end}, where the range should go on from {next:?}"
            )
        })?;
        next = end.checked_add(1);
    }
    ensure(next.is_none(), DOMAIN, || {
        format!(
            "stream {name:?}: the open shards end before 2^128-1 (next hash {next:?} has no shard)"
        )
    })?;
    for m in &s.shards {
        ensure(m.index < s.next_shard_index, DOMAIN, || {
            format!(
                "stream {name:?}: shard {} is not below next_shard_index {}",
                m.index, s.next_shard_index
            )
        })?;
        ensure(m.parents.iter().all(|&p| p < m.index), DOMAIN, || {
            format!(
                "stream {name:?}: shard {} has parents {:?} not older than it",
                m.index, m.parents
            )
        })?;
        let st = load_state(state, s.id, m.index)?;
        ensure(st.first_seq <= st.next_seq, DOMAIN, || {
            format!(
                "stream {name:?}: shard {} keeps from {} but gives next {}",
                m.index, st.first_seq, st.next_seq
            )
        })?;
        let prefix = &record_prefix(s.id, m.index);
        let mut expect = st.first_seq;
        for seq in numbers_under(state, prefix) {
            let seq = seq?;
            ensure(seq == expect, DOMAIN, || {
                format!(
                    "stream {name:?}: shard {} holds record {seq} where {expect} should be (keeps {}..{})",
                    m.index, st.first_seq, st.next_seq
                )
            })?;
            expect += 1;
        }
        let written = state.get(&state_key(s.id, m.index))?.is_some();
        ensure(!written || expect == st.next_seq, DOMAIN, || {
            format!(
                "stream {name:?}: shard {} holds records up to {} but gives next {}",
                m.index,
                expect.saturating_sub(1),
                st.next_seq
            )
        })?;
        if let Some(c) = m.closed {
            ensure(c.last_seq == st.last_seq(), DOMAIN, || {
                format!(
                    "stream {name:?}: closed shard {} says its last record is {}, it gave {}",
                    m.index,
                    c.last_seq,
                    st.last_seq()
                )
            })?;
        }
    }
    Ok(())
}
