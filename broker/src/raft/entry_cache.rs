//! The newest log entries, decoded, in memory: replication to each follower
//! and the state machine's apply read them here instead of reading, checking
//! and decoding the segment files again (three times per entry on a leader of
//! three). The files stay the durable copy; the cache only ever holds a copy
//! of the log's newest entries, the same ones the files hold.

use std::collections::VecDeque;

use openraft::Entry;

use super::TypeConfig;

/// Most encoded bytes of entries the cache holds: at 1 KiB messages, some
/// 30 000 messages, many seconds of entries at the rates a node reaches;
/// older entries are read from the files. Each entry holds its encoding and
/// its decoded proposal (`raft::payload`), so the cache takes about twice
/// this in memory.
pub const ENTRY_CACHE_BYTES: usize = 32 * 1024 * 1024;

/// A contiguous run of the log's newest entries (a suffix of the log, or
/// nothing), bounded by their encoded size.
#[derive(Debug)]
pub struct EntryCache {
    /// Index of the first entry held.
    first: u64,
    /// Each entry with its encoded size.
    entries: VecDeque<(Entry<TypeConfig>, usize)>,
    bytes: usize,
    budget: usize,
}

impl EntryCache {
    /// An empty cache that holds at most `budget` encoded bytes.
    pub fn new(budget: usize) -> EntryCache {
        EntryCache {
            first: 0,
            entries: VecDeque::new(),
            bytes: 0,
            budget,
        }
    }

    /// One past the last index held.
    fn end(&self) -> u64 {
        self.first + self.entries.len() as u64
    }

    /// Adds `entry`, just appended to the log as `bytes` encoded bytes. An
    /// entry that does not follow the last one held (the log was truncated
    /// or restarted) starts the run afresh, so that what is held stays a
    /// suffix of the log.
    pub fn push(&mut self, entry: Entry<TypeConfig>, bytes: usize) {
        let index = entry.log_id.index;
        if self.entries.is_empty() || index != self.end() {
            self.clear();
            self.first = index;
        }
        self.entries.push_back((entry, bytes));
        self.bytes += bytes;
        while self.bytes > self.budget && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((_, b)) = self.entries.pop_front() {
            self.bytes -= b;
            self.first += 1;
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }

    /// The first index at or after `from` that the cache answers for: the
    /// entries `from..to` below it are the files' to read. `None`: the
    /// cache holds none of them.
    pub fn start_within(&self, from: u64, to: u64) -> Option<u64> {
        let start = from.max(self.first);
        (!self.entries.is_empty() && start < to && start < self.end()).then_some(start)
    }

    /// Copies of the entries `from..to` held (`from` at or after the first
    /// held; none past the last).
    pub fn get(&self, from: u64, to: u64) -> Vec<Entry<TypeConfig>> {
        let skip = from.saturating_sub(self.first) as usize;
        let take = to.min(self.end()).saturating_sub(from.max(self.first)) as usize;
        self.entries
            .iter()
            .skip(skip)
            .take(take)
            .map(|(e, _)| e.clone())
            .collect()
    }

    /// Forgets entry `index` and every later one (the log was truncated).
    pub fn truncate_from(&mut self, index: u64) {
        while self.end() > index.max(self.first) {
            match self.entries.pop_back() {
                Some((_, b)) => self.bytes -= b,
                None => break,
            }
        }
    }

    /// Forgets every entry up to and including `index` (the log was purged).
    pub fn purge_through(&mut self, index: u64) {
        while !self.entries.is_empty() && self.first <= index {
            self.pop_front();
        }
        if self.entries.is_empty() {
            self.first = self.first.max(index + 1);
        }
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indexes(v: &[Entry<TypeConfig>]) -> Vec<u64> {
        v.iter().map(|e| e.log_id.index).collect()
    }

    fn filled(budget: usize, range: std::ops::Range<u64>) -> EntryCache {
        let mut c = EntryCache::new(budget);
        for i in range {
            c.push(entry(i), 10);
        }
        c
    }

    #[test]
    fn it_answers_for_the_held_suffix_and_leaves_older_entries_to_the_files() {
        let c = filled(1000, 5..10);
        assert_eq!(c.start_within(0, 3), None, "all below");
        assert_eq!(c.start_within(2, 8), Some(5), "2..5 from the files");
        assert_eq!(indexes(&c.get(5, 8)), [5, 6, 7]);
        assert_eq!(indexes(&c.get(7, 100)), [7, 8, 9], "none past the last");
        assert_eq!(c.start_within(10, 20), None, "all past the last");
    }

    #[test]
    fn the_budget_evicts_the_oldest() {
        let c = filled(35, 1..6);
        assert_eq!(c.len(), 3);
        assert_eq!(c.start_within(1, 6), Some(3));
        assert_eq!(indexes(&c.get(3, 6)), [3, 4, 5]);
    }

    #[test]
    fn truncation_purge_and_a_gap_keep_it_a_suffix_of_the_log() {
        let mut c = filled(1000, 1..8);
        c.truncate_from(5);
        assert_eq!(indexes(&c.get(1, 100)), [1, 2, 3, 4]);
        // The log goes on from the truncation point with other entries.
        c.push(entry(5), 10);
        assert_eq!(indexes(&c.get(1, 100)), [1, 2, 3, 4, 5]);
        c.purge_through(2);
        assert_eq!(c.start_within(1, 100), Some(3));
        // An entry that does not follow (a snapshot installed past the
        // end) starts afresh.
        c.push(entry(40), 10);
        assert_eq!(c.start_within(1, 100), Some(40));
        assert_eq!(indexes(&c.get(40, 41)), [40]);
        c.truncate_from(40);
        assert!(c.is_empty());
        assert_eq!(c.start_within(0, 100), None);
        c.purge_through(50);
        assert!(c.is_empty());
    }
}
