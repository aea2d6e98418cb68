//! Resharding: split, merge, and uniform rescaling.
//!
//! A reshard closes shards and opens children that cover exactly the closed
//! shards' hash key ranges, each child naming its parents. From the command
//! on, records of a hash key go to the child; readers finish every parent
//! before reading a child, so records of one partition key stay in order.

use super::records::load_state;
use super::{hashing, require, save, shard_id, Closed, ShardMeta, Stream, SHARDS_MAX};
use crate::apply::{Ctx, Effect, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::store::Txn;

fn open_shard(s: &Stream, field: &str, index: u32) -> Result<ShardMeta, DomainError> {
    let meta = s.shard(index).ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            format!(
                "{field}: stream {:?} has no shard {}",
                s.name,
                shard_id(index)
            ),
        )
    })?;
    if !meta.is_open() {
        return Err(super::invalid(
            field,
            format!("shard {} is closed", shard_id(index)),
        ));
    }
    Ok(meta.clone())
}

/// Closes a shard; its subscribers are woken to hear of the children.
fn close(
    txn: &Txn<'_>,
    ctx: &Ctx,
    s: &mut Stream,
    index: u32,
    effects: &mut Effects,
) -> ApplyResult<()> {
    let last_seq = load_state(txn, s.id, index)?.last_seq();
    if let Some(m) = s.shards.iter_mut().find(|m| m.index == index) {
        m.closed = Some(Closed {
            last_seq,
            at_ms: ctx.now_ms,
        });
    }
    effects.push(Effect::ShardAppended {
        stream: s.id,
        shard: index,
    });
    Ok(())
}

/// Shard indexes end below this: a sequence number gives the index 6
/// digits.
pub const SHARD_INDEX_END: u32 = 1_000_000;

/// Refuses a reshard that would open `n` shards past the last index.
fn room_for(s: &Stream, n: u32) -> Result<(), DomainError> {
    if s.next_shard_index.saturating_add(n) > SHARD_INDEX_END {
        return Err(DomainError::limit(
            "LimitExceededException",
            format!(
                "stream {:?} has used {} of its {SHARD_INDEX_END} shard ids; create a new stream",
                s.name, s.next_shard_index
            ),
        ));
    }
    Ok(())
}

fn open_child(s: &mut Stream, start_hash: u128, end_hash: u128, parents: Vec<u32>) -> u32 {
    let index = s.next_shard_index;
    s.next_shard_index += 1;
    s.shards.push(ShardMeta {
        index,
        start_hash,
        end_hash,
        parents,
        closed: None,
    });
    index
}

/// Splits an open shard at `new_start` (the first hash key of the second
/// child); returns the children.
pub fn split(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    shard: u32,
    new_start: u128,
    effects: &mut Effects,
) -> ApplyResult<[u32; 2]> {
    let mut s = require(txn, name)?;
    let parent = open_shard(&s, "shard_to_split", shard)?;
    if new_start <= parent.start_hash || new_start > parent.end_hash {
        return Err(super::invalid(
            "new_starting_hash_key",
            format!(
                "must be above {} and at most {} (inside the shard, not its first key)",
                parent.start_hash, parent.end_hash
            ),
        )
        .into());
    }
    if s.open_shards().count() as u32 >= SHARDS_MAX {
        return Err(DomainError::limit(
            "LimitExceededException",
            format!("stream {name:?} already has {SHARDS_MAX} open shards"),
        )
        .into());
    }
    room_for(&s, 2)?;
    close(txn, ctx, &mut s, shard, effects)?;
    let a = open_child(&mut s, parent.start_hash, new_start - 1, vec![shard]);
    let b = open_child(&mut s, new_start, parent.end_hash, vec![shard]);
    save(txn, &s);
    Ok([a, b])
}

/// Merges two adjacent open shards; returns the child.
pub fn merge(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    shard: u32,
    adjacent: u32,
    effects: &mut Effects,
) -> ApplyResult<u32> {
    let mut s = require(txn, name)?;
    let a = open_shard(&s, "shard_to_merge", shard)?;
    let b = open_shard(&s, "adjacent_shard_to_merge", adjacent)?;
    let adjacent_ranges = a.end_hash.checked_add(1) == Some(b.start_hash)
        || b.end_hash.checked_add(1) == Some(a.start_hash);
    if !adjacent_ranges {
        return Err(super::invalid(
            "adjacent_shard_to_merge",
            format!(
                "shards {} and {} do not have adjacent hash key ranges",
                shard_id(shard),
                shard_id(adjacent)
            ),
        )
        .into());
    }
    room_for(&s, 1)?;
    close(txn, ctx, &mut s, shard, effects)?;
    close(txn, ctx, &mut s, adjacent, effects)?;
    let child = open_child(
        &mut s,
        a.start_hash.min(b.start_hash),
        a.end_hash.max(b.end_hash),
        vec![shard, adjacent],
    );
    save(txn, &s);
    Ok(child)
}

/// Closes every open shard and opens `target` shards splitting the space
/// evenly, each a child of the closed shards its range overlaps. The target
/// must be from half to double the open count (as in Kinesis).
pub fn update_count(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    target: u32,
    effects: &mut Effects,
) -> ApplyResult<u32> {
    let mut s = require(txn, name)?;
    let open: Vec<ShardMeta> = s.open_shards().cloned().collect();
    let current = open.len() as u32;
    let min = current.div_ceil(2);
    let max = (current * 2).min(SHARDS_MAX);
    if target < min || target > max {
        return Err(super::invalid(
            "target_shard_count",
            format!("must be from {min} to {max} (half to double the {current} open shards), got {target}"),
        )
        .into());
    }
    if target == current
        && open
            .iter()
            .zip(hashing::uniform_ranges(target))
            .all(|(m, (a, b))| m.start_hash == a && m.end_hash == b)
    {
        return Ok(current);
    }
    room_for(&s, target)?;
    for m in &open {
        close(txn, ctx, &mut s, m.index, effects)?;
    }
    for (start, end) in hashing::uniform_ranges(target) {
        let parents = open
            .iter()
            .filter(|m| m.start_hash <= end && start <= m.end_hash)
            .map(|m| m.index)
            .collect();
        open_child(&mut s, start, end, parents);
    }
    save(txn, &s);
    Ok(current)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::store::MemState;
    use crate::streams::{create, CreateStream};

    fn stream(shards: i32) -> MemState {
        let mut st = MemState::default();
        let c = CreateStream::new("s", shards, None, None, None, None, BTreeMap::new()).unwrap();
        st.run(|t| create(t, &Ctx::at(1), &c)).unwrap();
        st
    }

    fn load(st: &MemState) -> Stream {
        require(st, "s").unwrap()
    }

    /// The open shards cover the whole space exactly once.
    fn covers_everything(s: &Stream) {
        let mut open: Vec<&ShardMeta> = s.open_shards().collect();
        open.sort_by_key(|m| m.start_hash);
        assert_eq!(open[0].start_hash, 0);
        assert_eq!(open.last().unwrap().end_hash, u128::MAX);
        for w in open.windows(2) {
            assert_eq!(w[0].end_hash + 1, w[1].start_hash);
        }
    }

    #[test]
    fn a_split_closes_the_parent_and_its_children_cover_its_range() {
        let mut st = stream(1);
        let ctx = Ctx::at(10);
        let mid = 1u128 << 127;
        let mut effects = Effects::default();
        let [a, b] = st
            .run(|t| split(t, &ctx, "s", 0, mid, &mut effects))
            .unwrap();
        // The parent's subscribers are woken to hear of the children.
        let woken: Vec<Effect> = effects.drain().collect();
        assert_eq!(
            woken,
            [Effect::ShardAppended {
                stream: load(&st).id,
                shard: 0
            }]
        );
        let s = load(&st);
        assert!(!s.shard(0).unwrap().is_open());
        assert_eq!(s.shard(a).unwrap().end_hash, mid - 1);
        assert_eq!(s.shard(b).unwrap().start_hash, mid);
        assert_eq!(s.shard(a).unwrap().parents, vec![0]);
        assert_eq!(s.children_of(0).len(), 2);
        covers_everything(&s);
        // Splitting at the first key, or a closed shard, is refused.
        assert!(st
            .run(|t| split(t, &ctx, "s", a, 0, &mut Effects::default()))
            .is_err());
        assert!(st
            .run(|t| split(t, &ctx, "s", 0, mid, &mut Effects::default()))
            .is_err());
    }

    #[test]
    fn a_merge_needs_adjacent_open_shards() {
        let mut st = stream(3);
        let ctx = Ctx::at(10);
        let err = st
            .run(|t| merge(t, &ctx, "s", 0, 2, &mut Effects::default()))
            .unwrap_err();
        assert!(
            matches!(err, crate::error::ApplyError::Rejected(ref e) if e.field.as_deref() == Some("adjacent_shard_to_merge"))
        );
        let child = st
            .run(|t| merge(t, &ctx, "s", 1, 0, &mut Effects::default()))
            .unwrap();
        let s = load(&st);
        let c = s.shard(child).unwrap();
        assert_eq!((c.start_hash, c.parents.clone()), (0, vec![1, 0]));
        covers_everything(&s);
    }

    #[test]
    fn rescaling_is_uniform_with_every_overlapping_parent() {
        let mut st = stream(4);
        let ctx = Ctx::at(10);
        st.run(|t| update_count(t, &ctx, "s", 3, &mut Effects::default()))
            .unwrap();
        let s = load(&st);
        let open: Vec<&ShardMeta> = s.open_shards().collect();
        assert_eq!(open.len(), 3);
        covers_everything(&s);
        // The middle third overlaps old shards 1 and 2.
        assert_eq!(open[1].parents, vec![1, 2]);
        for bad in [1, 7] {
            let err = st
                .run(|t| update_count(t, &ctx, "s", bad, &mut Effects::default()))
                .unwrap_err();
            assert!(
                matches!(err, crate::error::ApplyError::Rejected(ref e) if e.field.as_deref() == Some("target_shard_count"))
            );
        }
        st.run(|t| update_count(t, &ctx, "s", 6, &mut Effects::default()))
            .unwrap();
        covers_everything(&load(&st));
    }

    #[test]
    fn shard_ids_stop_where_sequence_numbers_can_hold_them() {
        let mut st = stream(2);
        let ctx = Ctx::at(10);
        let mut s = load(&st);
        s.next_shard_index = SHARD_INDEX_END - 1;
        st.run(|t| {
            save(t, &s);
            Ok::<(), DomainError>(())
        })
        .unwrap();
        let err = st
            .run(|t| split(t, &ctx, "s", 0, 1 << 100, &mut Effects::default()))
            .unwrap_err();
        assert!(err.to_string().contains("shard ids"), "{err}");
        let child = st
            .run(|t| merge(t, &ctx, "s", 0, 1, &mut Effects::default()))
            .unwrap();
        assert_eq!(child, SHARD_INDEX_END - 1);
        assert!(st
            .run(|t| update_count(t, &ctx, "s", 2, &mut Effects::default()))
            .is_err());
    }
}
