//! The state machine's engine copy of the state: stream records in their
//! files ([`RecordFiles`]), every other key in a sled [`Tree`].
//!
//! Domain logic sees one ordered key space: a read that spans both merges
//! them in key order, and a write goes where its key belongs.

use std::cmp::Ordering;
use std::iter::Peekable;
use std::ops::Bound;
use std::sync::Arc;

use sluice_core::streams::records::RECORDS;

use super::records::RecordFiles;
use super::{keys, Changes, Kv, KvIter, StateRead, StoreError, Tree, WriteBatch};

/// One generation of the state on disk (see the module docs). Cloning is
/// cheap and clones share the same data.
#[derive(Clone)]
pub struct StateTree {
    tree: Tree,
    records: Arc<RecordFiles>,
}

fn is_record(key: &[u8]) -> bool {
    key.starts_with(RECORDS)
}

impl StateTree {
    /// The state in `tree`, with its stream records in `records`.
    pub fn new(tree: Tree, records: RecordFiles) -> StateTree {
        StateTree {
            tree,
            records: Arc::new(records),
        }
    }

    /// The record files.
    pub fn records(&self) -> &RecordFiles {
        &self.records
    }

    /// Applies the writes of `batch` in order, with [`Tree::apply`]'s crash
    /// behaviour.
    pub fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let ops: Vec<_> = batch.into_ops().collect();
        self.records.apply(
            ops.iter()
                .filter(|(k, _)| is_record(k))
                .map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        let mut rest = WriteBatch::default();
        for (k, v) in ops.into_iter().filter(|(k, _)| !is_record(k)) {
            match v {
                Some(v) => rest.put(k, v),
                None => rest.delete(k),
            }
        }
        self.tree.apply(rest)
    }

    /// Writes `changes` (`None` removes).
    pub fn apply_changes(&self, changes: &Changes) -> Result<(), StoreError> {
        self.apply_changes_where(changes, |_| true)
    }

    /// Writes those of `changes` whose key `wanted` accepts.
    pub fn apply_changes_where(
        &self,
        changes: &Changes,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        // Record keys sort together: one contiguous run of the map.
        let end = keys::prefix_end(RECORDS);
        let records = changes.range::<Vec<u8>, _>((Bound::Included(RECORDS.to_vec()), end));
        self.records.apply(
            records
                .filter(|(k, _)| wanted(k))
                .map(|(k, v)| (k.as_slice(), v.as_deref())),
        )?;
        self.tree
            .apply_changes_where(changes, |k| !is_record(k) && wanted(k))
    }

    /// Removes every key.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.records.clear()?;
        self.tree.clear()
    }

    /// Whether it holds no key at all.
    pub fn is_empty(&self) -> Result<bool, StoreError> {
        Ok(self.tree.first()?.is_none() && self.records.count() == 0)
    }

    /// Makes the record files durable and trusted by the next open (the
    /// tree's part is the caller's: a flush of its database).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.records.sync()
    }
}

impl StateRead for StateTree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        if is_record(key) {
            self.records.get(key)
        } else {
            self.tree.get(key)
        }
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_> {
        let tree = self.tree.range(start.clone(), end.clone(), reverse);
        if !overlaps_records(&start, &end) {
            return tree;
        }
        Box::new(Merge {
            a: tree.peekable(),
            b: self.records.range(start, end, reverse).peekable(),
            reverse,
        })
    }
}

/// Whether (`start`, `end`) may hold a record key.
fn overlaps_records(start: &Bound<Vec<u8>>, end: &Bound<Vec<u8>>) -> bool {
    let after_end_of_records = match (start, keys::prefix_end(RECORDS)) {
        (Bound::Included(s) | Bound::Excluded(s), Bound::Excluded(e)) => *s >= e,
        _ => false,
    };
    let before_records = match end {
        Bound::Included(e) | Bound::Excluded(e) => e.as_slice() < RECORDS,
        Bound::Unbounded => false,
    };
    !after_end_of_records && !before_records
}

/// Two ordered iterators over disjoint keys, merged in order.
struct Merge<'a> {
    a: Peekable<KvIter<'a>>,
    b: Peekable<KvIter<'a>>,
    reverse: bool,
}

impl Iterator for Merge<'_> {
    type Item = Result<Kv, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        let order = match (self.a.peek(), self.b.peek()) {
            (None, None) => return None,
            (Some(_), None) | (Some(Err(_)), _) => Ordering::Less,
            (None, Some(_)) | (_, Some(Err(_))) => Ordering::Greater,
            (Some(Ok((ka, _))), Some(Ok((kb, _)))) => {
                if self.reverse {
                    kb.cmp(ka)
                } else {
                    ka.cmp(kb)
                }
            }
        };
        if order == Ordering::Greater {
            self.b.next()
        } else {
            self.a.next()
        }
    }
}

#[cfg(test)]
impl StateTree {
    /// Tree `name` of `db`, its records in a directory of their own beside
    /// the database.
    pub fn for_test(db: &super::Db, name: &str) -> StateTree {
        let dir = db.path().with_file_name(format!("records-{name}"));
        StateTree::new(
            db.tree(name).unwrap(),
            RecordFiles::open(&dir, false).unwrap(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{Db, MemState};
    use sluice_core::streams::records::{record_key, record_prefix};

    use crate::store::test_rng::Rng;

    fn key(rng: &mut Rng) -> Vec<u8> {
        match rng.below(4) {
            0 => format!("m/{}", rng.below(50)).into_bytes(),
            1 => format!("shard/{}", rng.below(5)).into_bytes(),
            2 => format!("a{}", rng.below(5)).into_bytes(),
            _ => record_key(rng.below(2), rng.below(2) as u32, 1 + rng.below(200)),
        }
    }

    fn bound(rng: &mut Rng) -> Bound<Vec<u8>> {
        let k = match rng.below(5) {
            0 => return Bound::Unbounded,
            1 => record_prefix(rng.below(3), rng.below(2) as u32),
            2 => match keys::prefix_end(&record_prefix(rng.below(2), rng.below(2) as u32)) {
                Bound::Excluded(k) => k,
                _ => unreachable!(),
            },
            3 => [b"rec/".as_slice(), b"rec0", b"m/", b"shard/3", b"a"][rng.below(5) as usize]
                .to_vec(),
            _ => key(rng),
        };
        if rng.below(2) == 0 {
            Bound::Included(k)
        } else {
            Bound::Excluded(k)
        }
    }

    /// Every read of the merged engines answers as one ordered map would.
    #[test]
    fn reads_span_records_and_tree_as_one_ordered_map() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db"), &Default::default()).unwrap();
        for seed in 1..=20u64 {
            let tree = StateTree::for_test(&db, &format!("t{seed}"));
            let mut model = MemState::default();
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            for _ in 0..30 {
                let (mut a, mut b) = (WriteBatch::default(), WriteBatch::default());
                for _ in 0..rng.below(40) {
                    let k = key(&mut rng);
                    if rng.below(3) == 0 {
                        a.delete(k.clone());
                        b.delete(k);
                    } else {
                        let v = rng.below(1000).to_string().into_bytes();
                        a.put(k.clone(), v.clone());
                        b.put(k, v);
                    }
                }
                model.apply(a);
                tree.apply(b).unwrap();
                for _ in 0..10 {
                    let (start, end, reverse) =
                        (bound(&mut rng), bound(&mut rng), rng.below(2) == 0);
                    let got: Vec<Kv> = tree
                        .range(start.clone(), end.clone(), reverse)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    let want: Vec<Kv> = model
                        .range(start.clone(), end.clone(), reverse)
                        .collect::<Result<_, _>>()
                        .unwrap();
                    assert_eq!(
                        got, want,
                        "seed {seed}: {start:?}..{end:?} reverse {reverse}"
                    );
                    let k = key(&mut rng);
                    assert_eq!(tree.get(&k).unwrap(), model.get(&k).unwrap(), "seed {seed}");
                }
            }
            assert!(tree.records().count() > 0, "seed {seed} wrote records");
        }
    }
}
