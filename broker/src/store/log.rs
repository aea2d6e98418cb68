//! The Raft log on disk: segment files of checksummed records, made durable
//! with `fdatasync`.
//!
//! The log does not live in the state machine's engine because sled 0.34
//! syncs with `sync_file_range` (neither the device cache nor file metadata
//! reach the disk) and writes large values to unsynced blob files, so an
//! entry it "flushed" can vanish on power loss. Everything a node
//! acknowledges is in these files.
//!
//! ```text
//! {dir}/{first index:020}.seg   records, appended in index order
//! record: u32 payload length | u32 CRC-32 of (index, payload) | u64 index | payload
//! ```
//!
//! A segment is closed at [`LogFiles::open`]'s size limit and a new one
//! started; creating or deleting a segment fsyncs the directory before the
//! change counts. On open, a torn or damaged record at the end of the last
//! segment (a write cut short by a crash) is cut off; damage anywhere else
//! refuses to open.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;

const HEADER: usize = 16;
/// Largest payload a record may hold; guards allocations when reading a
/// damaged length.
const MAX_PAYLOAD: u32 = 1 << 30;

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// Bytes of valid records.
    len: u64,
    /// (offset, payload length) of entry `first + i`.
    records: Vec<(u64, u32)>,
}

impl Segment {
    fn last(&self) -> Option<u64> {
        (!self.records.is_empty()).then(|| self.first + self.records.len() as u64 - 1)
    }
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// Files written since the last sync.
    dirty: Vec<Arc<File>>,
    /// Segments were created or deleted since the last sync.
    dir_dirty: bool,
}

/// The Raft log's segment files.
pub struct LogFiles {
    dir: PathBuf,
    segment_bytes: u64,
    inner: Mutex<Inner>,
}

fn io_err(context: &'static str, path: &Path, e: io::Error) -> StoreError {
    StoreError::io(context, path, e)
}

fn corrupt(path: &Path, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: path.display().to_string(),
        reason: reason.into(),
    }
}

fn crc(index: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&index.to_le_bytes());
    h.update(payload);
    h.finalize()
}

fn segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.seg"))
}

/// Fsyncs a directory, so that files created, renamed or deleted in it stay
/// that way after a crash.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("syncing directory", dir, e))
}

/// What a segment file holds.
struct Scan {
    /// (offset, payload length) of each valid record.
    records: Vec<(u64, u32)>,
    /// Bytes of valid records.
    valid: u64,
    /// Something (a torn or damaged record) follows them.
    trailing: bool,
}

/// Reads every valid record of a segment file.
fn scan(path: &Path, first: u64) -> Result<Scan, StoreError> {
    let bytes = fs::read(path).map_err(|e| io_err("reading log segment", path, e))?;
    let mut records = Vec::new();
    let mut offset = 0usize;
    while offset + HEADER <= bytes.len() {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().expect("4 bytes"));
        let sum = u32::from_le_bytes(bytes[offset + 4..offset + 8].try_into().expect("4 bytes"));
        let index = u64::from_le_bytes(bytes[offset + 8..offset + 16].try_into().expect("8 bytes"));
        let end = offset + HEADER + len as usize;
        if len > MAX_PAYLOAD || end > bytes.len() {
            break;
        }
        let expected_index = first + records.len() as u64;
        if index != expected_index || crc(index, &bytes[offset + HEADER..end]) != sum {
            break;
        }
        records.push((offset as u64, len));
        offset = end;
    }
    Ok(Scan {
        records,
        valid: offset as u64,
        trailing: offset < bytes.len(),
    })
}

impl LogFiles {
    /// Opens the log in `dir` (creating it), repairing a torn tail.
    /// Segments are closed once they reach `segment_bytes`.
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_err("creating log directory", dir, e))?;
        let mut firsts = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| io_err("listing log directory", dir, e))? {
            let path = entry
                .map_err(|e| io_err("listing log directory", dir, e))?
                .path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if let Some(first) = name
                .strip_suffix(".seg")
                .and_then(|n| n.parse::<u64>().ok())
            {
                firsts.push(first);
            }
        }
        firsts.sort_unstable();
        let mut segments = BTreeMap::new();
        let mut dir_dirty = false;
        let count = firsts.len();
        let mut expected_first: Option<u64> = None;
        for (i, first) in firsts.into_iter().enumerate() {
            let path = segment_path(dir, first);
            let is_last = i + 1 == count;
            if let Some(expected) = expected_first {
                if first != expected {
                    return Err(corrupt(
                        &path,
                        format!("log segment starts at {first}, expected {expected}"),
                    ));
                }
            }
            let Scan {
                records,
                valid,
                trailing,
            } = scan(&path, first)?;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err("opening log segment", &path, e))?;
            if trailing {
                if !is_last {
                    return Err(corrupt(
                        &path,
                        format!(
                            "damaged record after entry {} in a sealed segment",
                            first + records.len() as u64
                        ),
                    ));
                }
                tracing::warn!(
                    segment = %path.display(),
                    valid_entries = records.len(),
                    "cutting a torn write off the end of the log"
                );
                file.set_len(valid)
                    .and_then(|_| file.sync_all())
                    .map_err(|e| io_err("repairing log segment", &path, e))?;
            }
            if records.is_empty() && !is_last {
                return Err(corrupt(&path, "empty log segment before the last one"));
            }
            if records.is_empty() && count > 1 {
                // A segment created just before a crash, holding nothing yet.
                fs::remove_file(&path)
                    .map_err(|e| io_err("removing empty log segment", &path, e))?;
                dir_dirty = true;
                continue;
            }
            expected_first = Some(first + records.len() as u64);
            segments.insert(
                first,
                Segment {
                    first,
                    path,
                    file: Arc::new(file),
                    len: valid,
                    records,
                },
            );
        }
        let log = LogFiles {
            dir: dir.to_path_buf(),
            segment_bytes,
            inner: Mutex::new(Inner {
                segments,
                dirty: Vec::new(),
                dir_dirty,
            }),
        };
        if dir_dirty {
            sync_dir(dir)?;
        }
        Ok(log)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Index of the first entry held.
    pub fn first_index(&self) -> Option<u64> {
        let inner = self.lock();
        inner
            .segments
            .values()
            .find(|s| !s.records.is_empty())
            .map(|s| s.first)
    }

    /// Index of the last entry held.
    pub fn last_index(&self) -> Option<u64> {
        self.lock()
            .segments
            .values()
            .next_back()
            .and_then(Segment::last)
    }

    /// Appends entries with consecutive indexes following the last one (any
    /// index when the log is empty). They are durable after [`Self::sync`].
    pub fn append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let Some((first_new, _)) = entries.first() else {
            return Ok(());
        };
        let mut inner = self.lock();
        let last = inner.segments.values().next_back().and_then(Segment::last);
        if let Some(last) = last {
            if *first_new != last + 1 {
                return Err(corrupt(
                    &self.dir,
                    format!("append of entry {first_new} after entry {last}"),
                ));
            }
        }
        for (i, (index, _)) in entries.iter().enumerate() {
            if *index != first_new + i as u64 {
                return Err(corrupt(&self.dir, "appended entries are not consecutive"));
            }
        }
        let need_new = match inner.segments.values().next_back() {
            None => true,
            Some(s) => {
                s.len >= self.segment_bytes || (s.records.is_empty() && s.first != *first_new)
            }
        };
        if need_new {
            let path = segment_path(&self.dir, *first_new);
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| io_err("creating log segment", &path, e))?;
            // A stale empty segment the new one replaces.
            if let Some((&first, s)) = inner.segments.iter().next_back() {
                if s.records.is_empty() {
                    let old = s.path.clone();
                    inner.segments.remove(&first);
                    fs::remove_file(&old).map_err(|e| io_err("removing log segment", &old, e))?;
                }
            }
            inner.segments.insert(
                *first_new,
                Segment {
                    first: *first_new,
                    path,
                    file: Arc::new(file),
                    len: 0,
                    records: Vec::new(),
                },
            );
            inner.dir_dirty = true;
        }
        let segment = inner.segments.values_mut().next_back().expect("a segment");
        let mut buf = Vec::with_capacity(entries.iter().map(|(_, p)| HEADER + p.len()).sum());
        let mut added = Vec::with_capacity(entries.len());
        for (index, payload) in entries {
            if payload.len() as u64 > u64::from(MAX_PAYLOAD) {
                return Err(corrupt(&self.dir, "log entry larger than 1 GiB"));
            }
            added.push((segment.len + buf.len() as u64, payload.len() as u32));
            buf.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            buf.extend_from_slice(&crc(*index, payload).to_le_bytes());
            buf.extend_from_slice(&index.to_le_bytes());
            buf.extend_from_slice(payload);
        }
        segment
            .file
            .write_all_at(&buf, segment.len)
            .map_err(|e| io_err("appending to log segment", &segment.path, e))?;
        segment.len += buf.len() as u64;
        segment.records.extend(added);
        let file = segment.file.clone();
        if !inner.dirty.iter().any(|f| Arc::ptr_eq(f, &file)) {
            inner.dirty.push(file);
        }
        Ok(())
    }

    /// Makes every append, truncation and purge so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let (files, dir_dirty) = {
            let mut inner = self.lock();
            let files = std::mem::take(&mut inner.dirty);
            let dir_dirty = std::mem::replace(&mut inner.dir_dirty, false);
            (files, dir_dirty)
        };
        for f in &files {
            if let Err(e) = f.sync_data() {
                // Keep them dirty so the next sync retries.
                let mut inner = self.lock();
                inner.dirty.extend(files.iter().cloned());
                inner.dir_dirty |= dir_dirty;
                return Err(io_err("syncing log segment", &self.dir, e));
            }
        }
        if dir_dirty {
            if let Err(e) = sync_dir(&self.dir) {
                self.lock().dir_dirty = true;
                return Err(e);
            }
        }
        Ok(())
    }

    /// The payloads of entries `from..to` that the log holds.
    pub fn read(&self, from: u64, to: u64) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        let wanted: Vec<(u64, Arc<File>, PathBuf, u64, u32)> = {
            let inner = self.lock();
            let mut wanted = Vec::new();
            // Segments that may hold `from`: the one starting at or before it,
            // and every later one.
            let start = inner
                .segments
                .range(..=from)
                .next_back()
                .map(|(k, _)| *k)
                .unwrap_or(0);
            for s in inner.segments.range(start..).map(|(_, s)| s) {
                if s.first >= to {
                    break;
                }
                for (i, (offset, len)) in s.records.iter().enumerate() {
                    let index = s.first + i as u64;
                    if index >= from && index < to {
                        wanted.push((index, s.file.clone(), s.path.clone(), *offset, *len));
                    }
                }
            }
            wanted
        };
        for (index, file, path, offset, len) in wanted {
            let mut buf = vec![0u8; HEADER + len as usize];
            file.read_exact_at(&mut buf, offset)
                .map_err(|e| io_err("reading log segment", &path, e))?;
            let payload = buf.split_off(HEADER);
            let sum = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
            if crc(index, &payload) != sum {
                return Err(corrupt(
                    &path,
                    format!("checksum mismatch in entry {index}"),
                ));
            }
            out.push((index, payload));
        }
        Ok(out)
    }

    /// The last entry.
    pub fn last(&self) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
        match self.last_index() {
            None => Ok(None),
            Some(i) => Ok(self.read(i, i + 1)?.pop()),
        }
    }

    /// Removes entry `index` and every later one.
    pub fn truncate_from(&self, index: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        // Segments starting at or after `index` go entirely.
        let doomed: Vec<u64> = inner.segments.range(index..).map(|(k, _)| *k).collect();
        for first in doomed {
            if let Some(s) = inner.segments.remove(&first) {
                fs::remove_file(&s.path).map_err(|e| io_err("removing log segment", &s.path, e))?;
                inner.dir_dirty = true;
            }
        }
        // Segments are contiguous, so only the last one left can hold it.
        let Some(s) = inner.segments.values_mut().next_back() else {
            return Ok(());
        };
        let keep = (index - s.first) as usize;
        if keep < s.records.len() {
            let new_len = s.records[keep].0;
            s.records.truncate(keep);
            s.len = new_len;
            s.file
                .set_len(new_len)
                .map_err(|e| io_err("truncating log segment", &s.path, e))?;
            let file = s.file.clone();
            inner.dirty.push(file);
        }
        Ok(())
    }

    /// Removes every segment whose entries all have indexes up to `index`.
    /// Entries up to `index` may remain in the first segment kept.
    pub fn purge_through(&self, index: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        while let Some((&first, s)) = inner.segments.iter().next() {
            let whole = match s.last() {
                Some(last) => last <= index,
                None => s.first <= index,
            };
            if !whole {
                break;
            }
            let path = s.path.clone();
            inner.segments.remove(&first);
            fs::remove_file(&path).map_err(|e| io_err("removing log segment", &path, e))?;
            inner.dir_dirty = true;
        }
        Ok(())
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.lock().segments.len()
    }
}

/// A small file replaced atomically: written under a temporary name,
/// fsynced, renamed over the old one, and the directory fsynced.
pub struct MetaFile {
    path: PathBuf,
}

impl MetaFile {
    /// The file at `path`.
    pub fn new(path: &Path) -> Self {
        MetaFile {
            path: path.to_path_buf(),
        }
    }

    /// The current contents, if the file exists.
    pub fn read(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("reading", &self.path, e)),
        };
        if bytes.len() < 8 {
            return Err(corrupt(&self.path, "metadata file too short"));
        }
        let len = u32::from_le_bytes(bytes[0..4].try_into().expect("4 bytes")) as usize;
        let sum = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes"));
        let payload = bytes
            .get(8..8 + len)
            .ok_or_else(|| corrupt(&self.path, "metadata file truncated"))?;
        if crc32fast::hash(payload) != sum {
            return Err(corrupt(&self.path, "metadata checksum mismatch"));
        }
        Ok(Some(payload.to_vec()))
    }

    /// Replaces the contents durably.
    pub fn write(&self, payload: &[u8]) -> Result<(), StoreError> {
        let tmp = self.path.with_extension("tmp");
        let mut bytes = Vec::with_capacity(8 + payload.len());
        bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        bytes.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        bytes.extend_from_slice(payload);
        let write = || -> io::Result<()> {
            let f = File::create(&tmp)?;
            f.write_all_at(&bytes, 0)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)
        };
        write().map_err(|e| io_err("writing", &self.path, e))?;
        sync_dir(self.path.parent().unwrap_or(Path::new(".")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("entry-{i}").into_bytes()))
            .collect()
    }

    /// Appends one entry per call, as openraft does, so segments rotate.
    fn append_each(log: &LogFiles, range: std::ops::Range<u64>) {
        for e in entries(range) {
            log.append(&[e]).unwrap();
        }
    }

    fn indexes(v: &[(u64, Vec<u8>)]) -> Vec<u64> {
        v.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn appends_read_back_across_segments_and_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), 200).unwrap();
        log.append(&entries(1..5)).unwrap();
        append_each(&log, 5..50);
        log.sync().unwrap();
        assert!(log.segment_count() > 2, "small segments rotate");
        assert_eq!(log.read(1, 50).unwrap(), entries(1..50));
        assert_eq!(indexes(&log.read(10, 13).unwrap()), [10, 11, 12]);
        drop(log);
        let log = LogFiles::open(dir.path(), 200).unwrap();
        assert_eq!(log.first_index(), Some(1));
        assert_eq!(log.last_index(), Some(49));
        assert_eq!(log.last().unwrap(), Some((49, b"entry-49".to_vec())));
        log.append(&entries(50..52)).unwrap();
        assert_eq!(log.last_index(), Some(51));
    }

    #[test]
    fn appends_must_follow_the_last_entry() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        log.append(&entries(7..9)).unwrap();
        assert!(log.append(&entries(10..11)).is_err());
        assert!(log.append(&[(9, vec![]), (11, vec![])]).is_err());
        assert_eq!(log.last_index(), Some(8));
    }

    #[test]
    fn a_torn_tail_is_cut_off_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        log.append(&entries(1..11)).unwrap();
        log.sync().unwrap();
        drop(log);
        let seg = segment_path(dir.path(), 1);
        let full = fs::read(&seg).unwrap();
        // A crash in the middle of writing entry 10.
        fs::write(&seg, &full[..full.len() - 3]).unwrap();
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(9));
        log.append(&entries(10..12)).unwrap();
        assert_eq!(log.read(1, 12).unwrap(), entries(1..12));
    }

    #[test]
    fn damage_in_a_sealed_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), 100).unwrap();
        append_each(&log, 1..30);
        log.sync().unwrap();
        assert!(log.segment_count() > 1);
        drop(log);
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[HEADER + 2] ^= 0xff;
        fs::write(&seg, bytes).unwrap();
        match LogFiles::open(dir.path(), 100) {
            Err(StoreError::Corrupt { reason, .. }) => {
                assert!(reason.contains("sealed"), "{reason}")
            }
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("opened a damaged log"),
        }
    }

    #[test]
    fn truncate_removes_the_tail_durably() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), 120).unwrap();
        append_each(&log, 1..40);
        log.truncate_from(17).unwrap();
        log.sync().unwrap();
        assert_eq!(log.last_index(), Some(16));
        log.append(&entries(17..19)).unwrap();
        log.sync().unwrap();
        drop(log);
        let log = LogFiles::open(dir.path(), 120).unwrap();
        assert_eq!(log.read(1, 100).unwrap(), entries(1..19));
        // Truncating everything leaves an empty log that accepts any index.
        log.truncate_from(1).unwrap();
        assert_eq!(log.last_index(), None);
        log.append(&entries(1..3)).unwrap();
        assert_eq!(log.last_index(), Some(2));
    }

    #[test]
    fn purge_drops_whole_segments_only() {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), 100).unwrap();
        append_each(&log, 1..40);
        let before = log.segment_count();
        log.purge_through(20).unwrap();
        log.sync().unwrap();
        assert!(log.segment_count() < before);
        let first = log.first_index().unwrap();
        assert!(first <= 21, "entry 21 must survive, first is {first}");
        assert_eq!(
            indexes(&log.read(21, 40).unwrap()),
            (21..40).collect::<Vec<_>>()
        );
        // Purging past the end empties the log; the next append may start
        // anywhere (after a snapshot install, say).
        log.purge_through(100).unwrap();
        assert_eq!(log.last_index(), None);
        log.append(&entries(101..103)).unwrap();
        drop(log);
        let log = LogFiles::open(dir.path(), 100).unwrap();
        assert_eq!(log.first_index(), Some(101));
    }

    #[test]
    fn meta_file_round_trips_and_detects_damage() {
        let dir = tempfile::tempdir().unwrap();
        let meta = MetaFile::new(&dir.path().join("meta"));
        assert_eq!(meta.read().unwrap(), None);
        meta.write(b"vote 3").unwrap();
        meta.write(b"vote 4").unwrap();
        assert_eq!(meta.read().unwrap().unwrap(), b"vote 4");
        let mut bytes = fs::read(dir.path().join("meta")).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(dir.path().join("meta"), bytes).unwrap();
        assert!(meta.read().is_err());
    }
}
