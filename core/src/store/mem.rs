//! An in-memory [`StateRead`] for unit tests of the domain logic.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::{KvIter, StateRead, StoreError, Txn, WriteBatch};

/// Ordered in-memory state. Domain tests run commands over it exactly as the
/// state machine runs them over a sled tree.
#[derive(Debug, Default, Clone)]
pub struct MemState {
    map: BTreeMap<Vec<u8>, Vec<u8>>,
}

impl MemState {
    /// Sets `key` to `value`.
    pub fn insert(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.map.insert(key, value);
    }

    /// Runs `f` in a transaction over this state and commits its writes when
    /// it succeeds, as the state machine does for each command.
    pub fn run<T, E>(&mut self, f: impl FnOnce(&mut Txn<'_>) -> Result<T, E>) -> Result<T, E> {
        let (result, batch) = {
            let mut txn = Txn::new(&*self);
            let result = f(&mut txn);
            (result, txn.into_batch())
        };
        if result.is_ok() {
            self.apply(batch);
        }
        result
    }

    /// Applies a batch of writes.
    pub fn apply(&mut self, batch: WriteBatch) {
        for (k, v) in batch.ops {
            match v {
                Some(v) => {
                    self.map.insert(k, v);
                }
                None => {
                    self.map.remove(&k);
                }
            }
        }
    }

    /// Every pair, in key order (to compare two states byte for byte).
    pub fn pairs(&self) -> &BTreeMap<Vec<u8>, Vec<u8>> {
        &self.map
    }

    /// Number of keys.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl StateRead for MemState {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map.get(key).cloned())
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_> {
        if super::txn::is_empty_range(&start, &end) {
            return Box::new(std::iter::empty());
        }
        let iter = self
            .map
            .range((start, end))
            .map(|(k, v)| Ok((k.clone(), v.clone())));
        if reverse {
            Box::new(iter.rev())
        } else {
            Box::new(iter)
        }
    }
}
