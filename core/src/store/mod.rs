//! The storage boundary as the domain logic sees it.
//!
//! Domain logic never sees an engine: it reads through [`StateRead`] and
//! writes into a [`Txn`], an in-memory overlay that the state machine
//! commits as one [`WriteBatch`]. The broker implements [`StateRead`] over its
//! engine (sled); tests and the simulation run the same logic over
//! [`MemState`]. Nothing here names an engine, so the crate boundary keeps
//! the engine out of the core.

pub mod codec;
mod damage;
pub mod keys;
mod mem;
mod txn;

use std::ops::Bound;
use std::path::Path;

pub use damage::{Damage, DamageKind};
pub use mem::MemState;
pub use txn::{is_empty_range, lay_over, merge_changes, Changes, Txn};

/// An owned key-value pair.
pub type Kv = (Vec<u8>, Vec<u8>);

/// A fallible iterator over key-value pairs in key order.
pub type KvIter<'a> = Box<dyn Iterator<Item = Result<Kv, StoreError>> + 'a>;

/// Errors of the storage layer.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The engine failed (I/O error, or it detected corruption itself).
    #[error("storage engine: {0}")]
    Engine(String),
    /// A record could not be decoded.
    #[error("corrupt record under key {key}: {reason}")]
    Corrupt {
        /// The key, printed with non-printable bytes escaped.
        key: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The Raft log is damaged before entries that are still readable: not a
    /// write torn by a crash, which may be cut, but lost acknowledged data.
    #[error("{0}")]
    LogDamaged(Damage),
    /// A queued message's body is gone from this node: the log no longer
    /// holds the entry that sent it, and no copy was kept. The state
    /// cannot be snapshotted without it; the node is repaired from
    /// another (see the broker's `raft::repair`).
    #[error("the body of a message sent in log entry {index} is lost on this node: the log no longer holds that entry and no copy of the body was kept")]
    BodyLost {
        /// The log entry that sent the message.
        index: u64,
    },
    /// A file outside the engine (a snapshot) could not be read or written.
    #[error("{context} {path}: {source}")]
    Io {
        /// What was being done.
        context: &'static str,
        /// The file.
        path: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl StoreError {
    pub fn io(context: &'static str, path: &Path, source: std::io::Error) -> Self {
        StoreError::Io {
            context,
            path: path.display().to_string(),
            source,
        }
    }
}

/// Read access to replicated state, as the domain logic sees it.
pub trait StateRead {
    /// The value stored under `key`.
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;

    /// Pairs with keys within the bounds, in ascending key order (descending
    /// when `reverse`).
    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_>;

    /// Pairs whose key starts with `prefix`, in ascending key order.
    fn scan_prefix(&self, prefix: &[u8]) -> KvIter<'_> {
        self.range(
            Bound::Included(prefix.to_vec()),
            keys::prefix_end(prefix),
            false,
        )
    }

    /// Pairs whose key starts with `prefix` and comes after the key `after`
    /// (all of them when `None`), in ascending key order: the rest of a
    /// listing that a page left off at `after`.
    fn scan_prefix_after(&self, prefix: &[u8], after: Option<Vec<u8>>) -> KvIter<'_> {
        let start = match after {
            Some(key) => Bound::Excluded(key),
            None => Bound::Included(prefix.to_vec()),
        };
        self.range(start, keys::prefix_end(prefix), false)
    }

    /// The pair with the smallest key starting with `prefix`.
    fn first_with_prefix(&self, prefix: &[u8]) -> Result<Option<Kv>, StoreError> {
        self.scan_prefix(prefix).next().transpose()
    }
}

/// The record stored at `key`, decoded, if there is one.
pub fn record_at<T: serde::de::DeserializeOwned>(
    state: &dyn StateRead,
    key: &[u8],
) -> Result<Option<T>, StoreError> {
    state.get(key)?.map(|v| codec::decode(key, &v)).transpose()
}

/// Every record stored under `prefix`, decoded, in key order.
pub fn records_under<T: serde::de::DeserializeOwned>(
    state: &dyn StateRead,
    prefix: &[u8],
) -> Result<Vec<T>, StoreError> {
    state
        .scan_prefix(prefix)
        .map(|kv| {
            let (k, v) = kv?;
            codec::decode(&k, &v)
        })
        .collect()
}

/// A page of a listing: what `read` makes of the first `limit` of `pairs`
/// (it may pass over a pair with `None`), and whether more pairs follow. A
/// pair is read only once it is known to fit in the page.
pub fn page<T, E: From<StoreError>>(
    pairs: KvIter<'_>,
    limit: usize,
    mut read: impl FnMut(Kv) -> Result<Option<T>, E>,
) -> Result<(Vec<T>, bool), E> {
    let mut out = Vec::new();
    for kv in pairs {
        let kv = kv?;
        if out.len() == limit {
            return Ok((out, true));
        }
        if let Some(item) = read(kv)? {
            out.push(item);
        }
    }
    Ok((out, false))
}

/// A set of writes to one tree, applied atomically.
#[derive(Debug, Default)]
pub struct WriteBatch {
    ops: Vec<(Vec<u8>, Option<Vec<u8>>)>,
}

impl WriteBatch {
    /// Sets `key` to `value`.
    pub fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.ops.push((key, Some(value)));
    }

    /// Removes `key`.
    pub fn delete(&mut self, key: Vec<u8>) {
        self.ops.push((key, None));
    }

    /// The writes, in the order they were made: `None` removes the key.
    pub fn into_ops(self) -> impl Iterator<Item = (Vec<u8>, Option<Vec<u8>>)> {
        self.ops.into_iter()
    }

    /// Number of writes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// True when the batch holds no writes.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}
