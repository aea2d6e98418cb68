//! An in-memory write overlay over a [`StateRead`].

use std::collections::BTreeMap;
use std::iter::Peekable;
use std::ops::Bound;

use serde::Serialize;

use super::{codec, Kv, KvIter, StateRead, StoreError, WriteBatch};

/// Writes buffered over a read-only base. Reads see the buffered writes first.
///
/// The state machine gives each command its own `Txn` over the batch's `Txn`:
/// a command that fails is dropped with its writes, so a rejected request
/// changes nothing; one that succeeds is merged with [`Txn::merge`].
pub struct Txn<'a> {
    base: &'a dyn StateRead,
    writes: Changes,
}

impl<'a> Txn<'a> {
    /// A transaction with no writes over `base`.
    pub fn new(base: &'a dyn StateRead) -> Self {
        Txn {
            base,
            writes: BTreeMap::new(),
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.insert(key, Some(value));
    }

    /// Sets `key` to the encoding of `value`.
    pub fn put_record<T: Serialize + ?Sized>(&mut self, key: Vec<u8>, value: &T) {
        self.put(key, codec::encode(value));
    }

    /// Draws the next id from the counter stored at `key`: the ids of a kind
    /// of resource start at 1 and are never reused.
    pub fn next_id(&mut self, key: Vec<u8>) -> Result<u64, StoreError> {
        let id = super::record_at(&*self, &key)?.unwrap_or(1);
        self.put_record(key, &(id + 1));
        Ok(id)
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.writes.insert(key, None);
    }

    /// Deletes the keys under `prefixes`, in order, at most `limit` of them;
    /// returns true when it deleted them all, false when it stopped at the
    /// limit (some may be left: call again). Collecting a large resource
    /// thus takes several bounded commands.
    pub fn delete_prefixes(
        &mut self,
        prefixes: &[Vec<u8>],
        limit: usize,
    ) -> Result<bool, StoreError> {
        let mut budget = limit;
        for prefix in prefixes {
            let keys: Vec<Vec<u8>> = self
                .range(
                    Bound::Included(prefix.clone()),
                    super::keys::prefix_end(prefix),
                    false,
                )
                .take(budget)
                .map(|kv| kv.map(|(k, _)| k))
                .collect::<Result<_, _>>()?;
            budget -= keys.len();
            for k in keys {
                self.delete(k);
            }
            if budget == 0 {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Adds the writes of a finished child transaction to this one.
    pub fn merge(&mut self, writes: Writes) {
        merge_changes(&mut self.writes, writes.0);
    }

    /// The buffered writes, to merge into a parent transaction.
    pub fn into_writes(self) -> Writes {
        Writes(self.writes)
    }

    /// The buffered writes, by key.
    pub fn into_changes(self) -> Changes {
        self.writes
    }

    /// The buffered writes as an engine batch.
    pub fn into_batch(self) -> WriteBatch {
        let mut batch = WriteBatch::default();
        for (k, v) in self.writes {
            match v {
                Some(v) => batch.put(k, v),
                None => batch.delete(k),
            }
        }
        batch
    }

    /// Number of buffered writes.
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// True when nothing is buffered.
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }
}

/// The writes of a finished [`Txn`].
pub struct Writes(Changes);

impl StateRead for Txn<'_> {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        match self.writes.get(key) {
            Some(v) => Ok(v.clone()),
            None => self.base.get(key),
        }
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_> {
        overlay_range(&self.writes, self.base, start, end, reverse)
    }
}

/// Writes by key, in key order: `None` removes the key.
pub type Changes = BTreeMap<Vec<u8>, Option<Vec<u8>>>;

/// Lays `later` over `into`: a key in both takes `later`'s write.
///
/// Inserting key by key costs a search each, about `m log n` comparisons
/// for `m` writes into `n`; merging the two sorted sequences costs about
/// `n + m` but rebuilds the whole map. The merge is taken where it is the
/// cheaper (a PutRecords of 500 records into a batch of a few commands),
/// the inserts where `later` is small beside `into` (a few queue sends
/// into the thousands of recent writes), and into nothing it is a move.
pub fn merge_changes(into: &mut Changes, mut later: Changes) {
    let (n, m) = (into.len(), later.len());
    let depth = (usize::BITS - n.leading_zeros()) as usize;
    if n == 0 {
        *into = later;
    } else if m.saturating_mul(depth) > 2 * (n + m) {
        into.append(&mut later);
    } else {
        into.extend(later);
    }
}

fn overlay_range<'a>(
    changes: &'a Changes,
    base: &'a dyn StateRead,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
) -> KvIter<'a> {
    let below = base.range(start.clone(), end.clone(), reverse);
    lay_over(changes, below, start, end, reverse)
}

/// True when no key lies between `start` and `end`.
pub fn is_empty_range(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    match (start, end) {
        (Bound::Included(s), Bound::Included(e)) => s > e,
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e))
        | (Bound::Excluded(s), Bound::Included(e)) => s >= e,
        _ => false,
    }
}

/// The pairs of `below` (a range read from start to end, in the order
/// `reverse` says) with `changes` laid over them: a change wins over the
/// pair with its key, and a removal hides it.
pub fn lay_over<'a>(
    changes: &'a Changes,
    below: KvIter<'a>,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
) -> KvIter<'a> {
    // An empty range (start after end: a page token past the listing, say)
    // is the engine's to answer; the map would panic on it.
    if changes.is_empty() || is_empty_range(&start, &end) {
        return below;
    }
    let over = changes.range((start, end));
    if reverse {
        Box::new(Merge::new(below, over.rev(), true))
    } else {
        Box::new(Merge::new(below, over, false))
    }
}

/// Merges a base iterator with overlay writes; the overlay wins on equal keys
/// and its deletions hide base entries.
struct Merge<'a, O>
where
    O: Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
{
    base: Peekable<KvIter<'a>>,
    overlay: Peekable<O>,
    reverse: bool,
}

impl<'a, O> Merge<'a, O>
where
    O: Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
{
    fn new(base: KvIter<'a>, overlay: O, reverse: bool) -> Self {
        Merge {
            base: base.peekable(),
            overlay: overlay.peekable(),
            reverse,
        }
    }
}

impl<'a, O> Iterator for Merge<'a, O>
where
    O: Iterator<Item = (&'a Vec<u8>, &'a Option<Vec<u8>>)>,
{
    type Item = Result<Kv, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let take_overlay = match (self.base.peek(), self.overlay.peek()) {
                (None, None) => return None,
                (Some(Err(_)), _) => return self.base.next(),
                (None, Some(_)) => true,
                (Some(_), None) => false,
                (Some(Ok((bk, _))), Some((ok, _))) => {
                    if bk == *ok {
                        // The overlay shadows the base entry.
                        self.base.next();
                        true
                    } else {
                        (*ok < bk) != self.reverse
                    }
                }
            };
            if take_overlay {
                let (k, v) = self.overlay.next().expect("peeked");
                match v {
                    Some(v) => return Some(Ok((k.clone(), v.clone()))),
                    None => continue,
                }
            }
            return self.base.next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemState;

    fn collect(iter: KvIter<'_>) -> Vec<(String, String)> {
        iter.map(|r| {
            let (k, v) = r.unwrap();
            (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
        })
        .collect()
    }

    #[test]
    fn merged_changes_take_the_later_write_whichever_way_they_merge() {
        let changes = |keys: std::ops::Range<u32>, tag: u8| -> Changes {
            keys.map(|k| (k.to_be_bytes().to_vec(), (k % 3 != 0).then(|| vec![tag])))
                .collect()
        };
        // Into nothing, a few into many (inserts), many into a few (merge).
        for (earlier, later) in [(0..0, 0..50), (0..1000, 990..1010), (40..60, 0..1000)] {
            let mut into = changes(earlier.clone(), 1);
            merge_changes(&mut into, changes(later.clone(), 2));
            let mut expected = changes(earlier, 1);
            expected.extend(changes(later, 2));
            assert_eq!(into, expected);
        }
    }

    fn base() -> MemState {
        let mut m = MemState::default();
        for k in ["a", "b", "c", "d"] {
            m.insert(k.as_bytes().to_vec(), format!("base-{k}").into_bytes());
        }
        m
    }

    #[test]
    fn delete_prefixes_stops_at_its_limit_and_says_when_done() {
        let mut m = MemState::default();
        for k in ["p1", "p2", "p3", "q1", "r1"] {
            m.insert(k.as_bytes().to_vec(), b"v".to_vec());
        }
        let prefixes = [b"p".to_vec(), b"q".to_vec()];
        let mut txn = Txn::new(&m);
        assert!(!txn.delete_prefixes(&prefixes, 2).unwrap());
        assert_eq!(txn.len(), 2);
        assert!(!txn.delete_prefixes(&prefixes, 2).unwrap());
        assert_eq!(txn.len(), 4);
        let left = collect(txn.range(Bound::Unbounded, Bound::Unbounded, false));
        assert_eq!(left, vec![("r1".to_string(), "v".to_string())]);
        assert!(txn.delete_prefixes(&prefixes, 5).unwrap());
    }

    #[test]
    fn reads_see_overlay_first() {
        let base = base();
        let mut txn = Txn::new(&base);
        txn.put(b"b".to_vec(), b"new".to_vec());
        txn.delete(b"c".to_vec());
        assert_eq!(txn.get(b"b").unwrap().unwrap(), b"new");
        assert_eq!(txn.get(b"c").unwrap(), None);
        assert_eq!(txn.get(b"a").unwrap().unwrap(), b"base-a");
    }

    #[test]
    fn range_merges_in_both_directions() {
        let base = base();
        let mut txn = Txn::new(&base);
        txn.put(b"b".to_vec(), b"new".to_vec());
        txn.put(b"bb".to_vec(), b"ins".to_vec());
        txn.delete(b"c".to_vec());
        txn.put(b"e".to_vec(), b"end".to_vec());
        let fwd = collect(txn.range(Bound::Unbounded, Bound::Unbounded, false));
        let keys: Vec<_> = fwd.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "bb", "d", "e"]);
        assert_eq!(fwd[1].1, "new");
        let rev = collect(txn.range(Bound::Unbounded, Bound::Unbounded, true));
        let keys: Vec<_> = rev.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["e", "d", "bb", "b", "a"]);
    }

    #[test]
    fn nested_transactions_discard_or_merge() {
        let base = base();
        let mut outer = Txn::new(&base);
        outer.put(b"x".to_vec(), b"1".to_vec());
        {
            let mut failed = Txn::new(&outer);
            failed.put(b"y".to_vec(), b"2".to_vec());
            assert_eq!(failed.get(b"x").unwrap().unwrap(), b"1");
            // dropped: its write disappears
        }
        let mut ok = Txn::new(&outer);
        ok.delete(b"a".to_vec());
        let writes = ok.into_writes();
        outer.merge(writes);
        assert_eq!(outer.get(b"y").unwrap(), None);
        assert_eq!(outer.get(b"a").unwrap(), None);
        let keys: Vec<_> = collect(outer.scan_prefix(b""))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, ["b", "c", "d", "x"]);
    }

    #[test]
    fn a_range_that_ends_before_it_starts_is_empty_not_a_panic() {
        let base = base();
        let mut txn = Txn::new(&base);
        txn.put(b"b".to_vec(), b"new".to_vec());
        for (start, end) in [
            (
                Bound::Excluded(b"z".to_vec()),
                Bound::Excluded(b"c".to_vec()),
            ),
            (
                Bound::Included(b"c".to_vec()),
                Bound::Included(b"b".to_vec()),
            ),
            (
                Bound::Excluded(b"b".to_vec()),
                Bound::Excluded(b"b".to_vec()),
            ),
            (
                Bound::Excluded(b"b".to_vec()),
                Bound::Included(b"b".to_vec()),
            ),
        ] {
            assert!(collect(txn.range(start, end, false)).is_empty());
        }
    }
}
