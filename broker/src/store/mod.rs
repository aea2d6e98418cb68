//! The storage engine boundary.
//!
//! Everything the broker keeps on disk goes through this module:
//!
//! * [`log`]: the Raft log and vote, in the node's own segment files, made
//!   durable with `fdatasync`. Everything a node acknowledges is here.
//! * [`Db`] / [`Tree`]: the replicated state machine and the domain records it
//!   holds, in sled 0.34. Nothing outside this module names sled, so another
//!   ordered key-value engine can replace it by reimplementing `Db` and `Tree`.
//! * [`records`]: stream records, in append-only files per shard; with a
//!   tree they make a [`StateTree`], the state machine's copy of the state.
//!
//! The state machine is a cache of the durable snapshot and log: after a
//! crash it may be behind (sled syncs with `sync_file_range`, which does not
//! survive power loss) and is brought forward by re-applying the log or
//! re-installing the snapshot. What the broker relies on from the engine is
//! that a [`WriteBatch`] applied to one tree is atomic and that, after a crash,
//! the engine holds a prefix of the writes in issue order, so the applied log
//! id stored with the state never claims more than the state holds.
//!
//! Domain logic never sees a [`Tree`]: it reads through [`StateRead`] and
//! writes into a [`Txn`], an in-memory overlay that the state machine commits
//! as one batch. Unit tests run the same logic over [`MemState`].

pub mod format;
pub mod lock;
pub mod log;
pub mod packed;
pub mod records;
pub mod state_tree;

use std::ops::Bound;
use std::path::{Path, PathBuf};

pub use sluice_core::store::{
    codec, is_empty_range, keys, lay_over, records_under, Changes, Kv, KvIter, MemState, StateRead,
    StoreError, Txn, WriteBatch,
};
pub use state_tree::StateTree;

/// A small deterministic generator (xorshift) for the storage tests' random
/// operations, so that a failure replays from its seed.
#[cfg(test)]
pub(crate) mod test_rng {
    pub struct Rng(pub u64);

    impl Rng {
        /// A number below `n`.
        pub fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }
}

/// A sled error, as the storage layer reports it.
fn engine(e: sled::Error) -> StoreError {
    StoreError::Engine(e.to_string())
}

/// Options for opening a [`Db`].
#[derive(Debug, Clone)]
pub struct DbOptions {
    /// Bytes of page cache the engine may use.
    pub cache_capacity: u64,
}

impl Default for DbOptions {
    fn default() -> Self {
        DbOptions {
            cache_capacity: 256 * 1024 * 1024,
        }
    }
}

/// A database: named ordered trees sharing one write-ahead log.
#[derive(Clone)]
pub struct Db {
    inner: sled::Db,
    path: PathBuf,
}

impl Db {
    /// Opens (creating if needed) the database in directory `path`.
    pub fn open(path: &Path, options: &DbOptions) -> Result<Self, StoreError> {
        let inner = sled::Config::new()
            .path(path)
            .cache_capacity(options.cache_capacity)
            // The state needs no fsync of its own (the log is durable);
            // flushing in the background bounds what a restart re-applies.
            .flush_every_ms(Some(1000))
            .open()
            .map_err(engine)?;
        Ok(Db {
            inner,
            path: path.to_path_buf(),
        })
    }

    /// The directory it was opened in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (creating if needed) the tree called `name`.
    pub fn tree(&self, name: &str) -> Result<Tree, StoreError> {
        Ok(Tree {
            inner: self.inner.open_tree(name).map_err(engine)?,
        })
    }

    /// Names of the trees in the database.
    pub fn tree_names(&self) -> Vec<String> {
        self.inner
            .tree_names()
            .into_iter()
            .map(|n| String::from_utf8_lossy(&n).into_owned())
            .collect()
    }

    /// Asks the engine to write everything issued so far to disk. sled 0.34
    /// syncs with `sync_file_range`, which a power loss can undo: use it to
    /// bound recovery work, never for durability (that is [`log`]'s job).
    pub fn flush(&self) -> Result<(), StoreError> {
        self.inner.flush().map_err(engine)?;
        Ok(())
    }

    /// Bytes the database occupies on disk.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        self.inner.size_on_disk().map_err(engine)
    }
}

/// An ordered key-value tree inside a [`Db`]. Cloning is cheap and clones
/// share the same data.
#[derive(Clone)]
pub struct Tree {
    inner: sled::Tree,
}

impl Tree {
    /// Sets `key` to `value`.
    pub fn insert(&self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.inner.insert(key, value).map_err(engine)?;
        Ok(())
    }

    /// Removes `key`.
    pub fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.inner.remove(key).map_err(engine)?;
        Ok(())
    }

    /// Applies the writes of `batch` in order. Not atomic across a crash:
    /// the engine may recover any prefix of them. (sled's atomic batches
    /// seal and write its log buffer twice per batch, with a
    /// `sync_file_range` each; that cost a sixth of a loaded cluster's CPU.)
    /// Callers that need all-or-nothing recovery keep their own marker; the
    /// state machine rebuilds from its snapshot after an unclean stop.
    pub fn apply(&self, batch: WriteBatch) -> Result<(), StoreError> {
        for (key, value) in batch.into_ops() {
            self.write(&key, value.as_deref())?;
        }
        Ok(())
    }

    /// Writes those of `changes` (`None` removes) whose key `wanted`
    /// accepts, with the same crash behaviour as [`Tree::apply`].
    pub fn apply_changes_where(
        &self,
        changes: &Changes,
        wanted: impl Fn(&[u8]) -> bool,
    ) -> Result<(), StoreError> {
        for (key, value) in changes {
            if wanted(key) {
                self.write(key, value.as_deref())?;
            }
        }
        Ok(())
    }

    /// Sets `key` to `value`, or removes it when `None`.
    fn write(&self, key: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        match value {
            Some(v) => self.inner.insert(key, v).map(drop),
            None => self.inner.remove(key).map(drop),
        }
        .map_err(engine)
    }

    /// Removes every key.
    pub fn clear(&self) -> Result<(), StoreError> {
        self.inner.clear().map_err(engine)?;
        Ok(())
    }

    /// The pair with the largest key.
    pub fn last(&self) -> Result<Option<Kv>, StoreError> {
        Ok(self
            .inner
            .last()
            .map_err(engine)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// The pair with the smallest key.
    pub fn first(&self) -> Result<Option<Kv>, StoreError> {
        Ok(self
            .inner
            .first()
            .map_err(engine)?
            .map(|(k, v)| (k.to_vec(), v.to_vec())))
    }

    /// Number of keys. Walks the whole tree: for tests and diagnostics only.
    pub fn count(&self) -> usize {
        self.inner.len()
    }
}

impl StateRead for Tree {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner.get(key).map_err(engine)?.map(|v| v.to_vec()))
    }

    fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_> {
        let iter = self.inner.range::<Vec<u8>, _>((start, end));
        let map = |r: Result<(sled::IVec, sled::IVec), sled::Error>| {
            r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(engine)
        };
        if reverse {
            Box::new(iter.rev().map(map))
        } else {
            Box::new(iter.map(map))
        }
    }
}
