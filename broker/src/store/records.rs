//! Stream records in append-only files, one set of segment files per shard.
//!
//! A stream's records are most of its state and are only ever appended,
//! read by number and dropped from the front; a B-tree paid a key's worth
//! of leaf rewrites for each (over half of a node's CPU under batched
//! PutRecords). Here a record is appended to its shard's current segment
//! file and found through an in-memory index of positions, dense by record
//! number (12 bytes a record). A segment whose records are all dropped
//! (retention, a deleted stream) is deleted whole.
//!
//! The files are part of the state machine's copy of the state, which is a
//! cache of the snapshot and the log: they are not fsynced as they are
//! written. A clean stop fsyncs them and writes the index ([`CHECKPOINT`]);
//! the next open trusts that. After an unclean stop they are wiped and the
//! state is rebuilt from the snapshot and the log like the rest of it.
//!
//! Every record is framed with its number and a CRC-32 of its bytes; a
//! read checks both, so damage on disk is reported, never served.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::ops::Bound;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use sluice_core::streams::records::{parse_record_key, record_key};

use super::{Kv, KvIter, StoreError};

/// Opens every segment file.
const SEGMENT_MAGIC: &[u8; 16] = b"SLUICE-RECORDS1\n";
/// Opens the positions file.
const CHECKPOINT_MAGIC: &[u8; 16] = b"SLUICE-RECPOS-1\n";
/// The index of positions, written at a clean stop.
pub const CHECKPOINT: &str = "positions";
/// A segment header: the magic, the stream id and the shard index.
const SEGMENT_HEADER: usize = 16 + 8 + 8;
/// A frame's header: record number (u64), length (u32), CRC-32 (u32) of
/// the number, the length and the bytes.
const FRAME_HEADER: usize = 16;
/// A shard starts a new segment once its current one reaches this size.
pub const SEGMENT_BYTES: u64 = 64 * 1024 * 1024;
/// Positions a range read takes under the lock at a time.
const CHUNK: usize = 256;
/// Bytes written to a segment after which the kernel is asked to start
/// writing them out. Without it dirty pages pile up to the kernel's
/// threshold (gigabytes on a large machine) and go out in one burst that
/// the log's fsyncs queue behind: under batched PutRecords that burst was
/// the slowest requests (docs/bench/log-store-records.md).
const WRITE_BEHIND_BYTES: u64 = 4 * 1024 * 1024;

/// Where a record's frame is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Loc {
    file: u32,
    offset: u32,
    len: u32,
}

/// No record at this number (dropped, or never copied here).
const ABSENT: Loc = Loc {
    file: u32::MAX,
    offset: 0,
    len: 0,
};

impl Loc {
    fn present(&self) -> bool {
        self.file != u32::MAX
    }
}

struct Segment {
    file: Arc<File>,
    path: PathBuf,
    /// Bytes in the file, with those still in `pending`.
    len: u64,
    /// Frames not written yet (written before the lock is released).
    pending: Vec<u8>,
    /// Records whose position points here.
    live: u64,
    /// Written since the last fsync.
    dirty: bool,
    /// Bytes before this offset have been handed to the kernel to write.
    written_behind: u64,
}

#[derive(Default)]
struct Shard {
    /// Number of `locs[0]`.
    first: u64,
    locs: VecDeque<Loc>,
    /// The segment new records go to.
    active: Option<u32>,
}

impl Shard {
    fn loc(&self, seq: u64) -> Option<Loc> {
        let i = usize::try_from(seq.checked_sub(self.first)?).ok()?;
        self.locs.get(i).copied().filter(Loc::present)
    }

    /// The slot of record `seq`, growing the index to hold it.
    fn slot(&mut self, seq: u64) -> &mut Loc {
        if self.locs.is_empty() {
            self.first = seq;
        }
        while seq < self.first {
            self.locs.push_front(ABSENT);
            self.first -= 1;
        }
        let i = (seq - self.first) as usize;
        while self.locs.len() <= i {
            self.locs.push_back(ABSENT);
        }
        &mut self.locs[i]
    }

    /// Drops absent positions at both ends.
    fn tidy(&mut self) {
        while self.locs.front().is_some_and(|l| !l.present()) {
            self.locs.pop_front();
            self.first += 1;
        }
        while self.locs.back().is_some_and(|l| !l.present()) {
            self.locs.pop_back();
        }
    }
}

#[derive(Default)]
struct Inner {
    shards: BTreeMap<(u64, u32), Shard>,
    segments: BTreeMap<u32, Segment>,
    next_file: u32,
}

/// One generation of the state's stream records (see the module docs).
pub struct RecordFiles {
    dir: PathBuf,
    inner: Mutex<Inner>,
    /// [`SEGMENT_BYTES`] (smaller in tests).
    segment_bytes: u64,
    /// Set once a read found damage: the files are then never trusted
    /// again ([`RecordFiles::sync`] refuses), so the next start rebuilds.
    damaged: std::sync::atomic::AtomicBool,
}

fn io<'a>(context: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(context, path, e)
}

fn corrupt(key: impl Into<String>, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        key: key.into(),
        reason: reason.into(),
    }
}

fn segment_name(sid: u64, shard: u32, file: u32) -> String {
    format!("{sid:016x}-{shard:08x}-{file:08x}.rec")
}

fn frame_crc(seq: u64, data: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(&(data.len() as u32).to_le_bytes());
    h.update(data);
    h.finalize()
}

fn not_a_record_key(key: &[u8]) -> StoreError {
    corrupt(
        sluice_core::store::keys::display(key),
        "not a stream record key (rec/{stream}/{shard}/{number})",
    )
}

impl RecordFiles {
    /// Opens the records in `dir` (created if needed). When `trusted` (the
    /// state was closed cleanly) the positions written then are loaded;
    /// otherwise whatever is there is deleted, since the state is rebuilt.
    pub fn open(dir: &Path, trusted: bool) -> Result<RecordFiles, StoreError> {
        std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
        let files = RecordFiles {
            dir: dir.to_path_buf(),
            inner: Mutex::new(Inner::default()),
            segment_bytes: SEGMENT_BYTES,
            damaged: Default::default(),
        };
        if trusted {
            let inner = files.load(true)?;
            *files.lock() = inner;
        } else {
            files.clear()?;
        }
        Ok(files)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every file in the directory.
    fn listing(&self) -> Result<Vec<PathBuf>, StoreError> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(io("listing", &self.dir))? {
            out.push(entry.map_err(io("listing", &self.dir))?.path());
        }
        Ok(out)
    }

    /// Whether the records in `dir` would open trusted (as a clean stop
    /// left them, with no damage found), changing nothing.
    pub fn opens_trusted(dir: &Path) -> bool {
        let files = RecordFiles {
            dir: dir.to_path_buf(),
            inner: Mutex::default(),
            segment_bytes: SEGMENT_BYTES,
            damaged: Default::default(),
        };
        !dir.exists() || files.load(false).is_ok()
    }

    /// Reads the positions a clean stop wrote and opens the segments they
    /// name; when `tidy`, deletes the segments they do not name.
    fn load(&self, tidy: bool) -> Result<Inner, StoreError> {
        let path = self.dir.join(CHECKPOINT);
        let listing = self.listing()?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if listing
                    .iter()
                    .any(|p| p.extension().is_some_and(|x| x == "rec"))
                {
                    return Err(corrupt(
                        path.display().to_string(),
                        "record segments without the positions a clean stop writes",
                    ));
                }
                return Ok(Inner::default());
            }
            Err(e) => return Err(StoreError::io("reading", &path, e)),
        };
        let bad = |reason: &str| corrupt(path.display().to_string(), reason.to_string());
        if bytes.len() < CHECKPOINT_MAGIC.len() || &bytes[..16] != CHECKPOINT_MAGIC {
            return Err(bad(&format!(
                "not a record positions file of this format (expected it to start with {:?}, found {:?})",
                String::from_utf8_lossy(CHECKPOINT_MAGIC).trim_end(),
                String::from_utf8_lossy(&bytes[..bytes.len().min(16)])
            )));
        }
        let (body, tail) = bytes.split_at(bytes.len().saturating_sub(4).max(16));
        let crc = u32::from_le_bytes(tail.try_into().map_err(|_| bad("truncated"))?);
        if crc32fast::hash(body) != crc {
            return Err(bad("checksum mismatch"));
        }
        let mut r = Reader(&body[16..]);
        let mut inner = Inner {
            next_file: r.u32().ok_or_else(|| bad("truncated"))?,
            ..Inner::default()
        };
        let shards = r.u32().ok_or_else(|| bad("truncated"))?;
        let mut owner: BTreeMap<u32, (u64, u32)> = BTreeMap::new();
        for _ in 0..shards {
            let (sid, index, first, count) = (|| Some((r.u64()?, r.u32()?, r.u64()?, r.u64()?)))()
                .ok_or_else(|| bad("truncated"))?;
            let mut shard = Shard {
                first,
                ..Shard::default()
            };
            for _ in 0..count {
                let loc = (|| {
                    Some(Loc {
                        file: r.u32()?,
                        offset: r.u32()?,
                        len: r.u32()?,
                    })
                })()
                .ok_or_else(|| bad("truncated"))?;
                if loc.present() && *owner.entry(loc.file).or_insert((sid, index)) != (sid, index) {
                    return Err(bad("a segment is named by two shards"));
                }
                shard.locs.push_back(loc);
            }
            inner.shards.insert((sid, index), shard);
        }
        if !r.0.is_empty() {
            return Err(bad("trailing bytes"));
        }
        for (&file, &(sid, index)) in &owner {
            let seg_path = self.dir.join(segment_name(sid, index, file));
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&seg_path)
                .map_err(io("opening record segment", &seg_path))?;
            check_header(&f, &seg_path, sid, index)?;
            let len = f
                .metadata()
                .map_err(io("reading the size of", &seg_path))?
                .len();
            inner.segments.insert(
                file,
                Segment {
                    file: Arc::new(f),
                    path: seg_path,
                    len,
                    pending: Vec::new(),
                    live: 0,
                    dirty: false,
                    written_behind: len,
                },
            );
        }
        for shard in inner.shards.values_mut() {
            for loc in shard.locs.iter().filter(|l| l.present()) {
                let seg = &mut inner.segments.get_mut(&loc.file).expect("opened above");
                if u64::from(loc.offset) + FRAME_HEADER as u64 + u64::from(loc.len) > seg.len {
                    return Err(corrupt(
                        seg.path.display().to_string(),
                        "shorter than the positions of its records",
                    ));
                }
                seg.live += 1;
            }
            // New records start a segment of their own.
            shard.active = None;
        }
        let named: BTreeSet<PathBuf> = inner.segments.values().map(|s| s.path.clone()).collect();
        for p in listing.into_iter().filter(|_| tidy) {
            if p.extension().is_some_and(|x| x == "rec") && !named.contains(&p) {
                std::fs::remove_file(&p).map_err(io("removing", &p))?;
            }
        }
        Ok(inner)
    }

    /// Deletes every record.
    pub fn clear(&self) -> Result<(), StoreError> {
        let mut inner = self.lock();
        *inner = Inner::default();
        for p in self.listing()? {
            std::fs::remove_file(&p).map_err(io("removing", &p))?;
        }
        Ok(())
    }

    /// The record stored under `key`.
    pub fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let (sid, index, seq) = parse_record_key(key).ok_or_else(|| not_a_record_key(key))?;
        let found = {
            let inner = self.lock();
            inner
                .shards
                .get(&(sid, index))
                .and_then(|s| s.loc(seq))
                .map(|loc| (inner.segments[&loc.file].file.clone(), loc))
        };
        found
            .map(|(file, loc)| self.read(&file, loc, sid, index, seq))
            .transpose()
    }

    /// Reads and checks the frame at `loc`.
    fn read(
        &self,
        file: &File,
        loc: Loc,
        sid: u64,
        index: u32,
        seq: u64,
    ) -> Result<Vec<u8>, StoreError> {
        let path = self.dir.join(segment_name(sid, index, loc.file));
        let mut frame = vec![0; FRAME_HEADER + loc.len as usize];
        file.read_exact_at(&mut frame, u64::from(loc.offset))
            .map_err(io("reading a record from", &path))?;
        let at = u64::from_le_bytes(frame[0..8].try_into().expect("8 bytes"));
        let len = u32::from_le_bytes(frame[8..12].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(frame[12..16].try_into().expect("4 bytes"));
        let data = frame.split_off(FRAME_HEADER);
        if at != seq || len != loc.len || frame_crc(at, &data) != crc {
            self.damaged
                .store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(corrupt(
                format!("{} at byte {}", path.display(), loc.offset),
                format!(
                    "record {seq} of shard {index} of stream {sid} is damaged (checksum or header mismatch)"
                ),
            ));
        }
        Ok(data)
    }

    /// Applies writes to record keys in order (`None` drops a record). The
    /// files hold them before this returns (not fsynced).
    pub fn apply<'a>(
        &self,
        ops: impl IntoIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
    ) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let mut touched = BTreeSet::new();
        let result = (|| {
            for (key, value) in ops {
                let (sid, index, seq) =
                    parse_record_key(key).ok_or_else(|| not_a_record_key(key))?;
                match value {
                    Some(data) => {
                        let loc = self.append(inner, sid, index, seq, data)?;
                        touched.insert(loc.file);
                        let shard = inner.shards.entry((sid, index)).or_default();
                        let old = std::mem::replace(shard.slot(seq), loc);
                        inner.segments.get_mut(&loc.file).expect("appended").live += 1;
                        if old.present() {
                            self.unlink(inner, old)?;
                        }
                    }
                    None => {
                        let Some(shard) = inner.shards.get_mut(&(sid, index)) else {
                            continue;
                        };
                        let Some(old) = shard.loc(seq) else {
                            continue;
                        };
                        *shard.slot(seq) = ABSENT;
                        shard.tidy();
                        if shard.locs.is_empty() && shard.active.is_none() {
                            inner.shards.remove(&(sid, index));
                        }
                        self.unlink(inner, old)?;
                    }
                }
            }
            Ok(())
        })();
        // Whatever was appended reaches the file, even after a failure.
        for file in touched {
            if let Some(seg) = inner.segments.get_mut(&file) {
                if !seg.pending.is_empty() {
                    let at = seg.len - seg.pending.len() as u64;
                    seg.file
                        .write_all_at(&seg.pending, at)
                        .map_err(io("writing records to", &seg.path))?;
                    seg.pending.clear();
                    seg.dirty = true;
                    if seg.len - seg.written_behind >= WRITE_BEHIND_BYTES {
                        write_behind(&seg.file, seg.written_behind, seg.len);
                        seg.written_behind = seg.len;
                    }
                }
            }
        }
        result
    }

    /// Appends record `seq`'s frame to its shard's current segment (in
    /// `pending`), starting one when there is none or it is full.
    fn append(
        &self,
        inner: &mut Inner,
        sid: u64,
        index: u32,
        seq: u64,
        data: &[u8],
    ) -> Result<Loc, StoreError> {
        let len = u32::try_from(data.len()).map_err(|_| {
            corrupt(
                String::from_utf8_lossy(&record_key(sid, index, seq)),
                "a record over 4 GiB",
            )
        })?;
        let shard = inner.shards.entry((sid, index)).or_default();
        let full = |f: &u32| {
            inner.segments[f].len + FRAME_HEADER as u64 + u64::from(len) > self.segment_bytes
        };
        let current = shard.active.filter(|f| !full(f));
        let file = match current {
            Some(f) => f,
            None => {
                let f = inner.next_file;
                inner.next_file = inner.next_file.checked_add(1).ok_or_else(|| {
                    corrupt(self.dir.display().to_string(), "segment numbers exhausted")
                })?;
                let path = self.dir.join(segment_name(sid, index, f));
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(&path)
                    .map_err(io("creating record segment", &path))?;
                let mut header = Vec::with_capacity(SEGMENT_HEADER);
                header.extend_from_slice(SEGMENT_MAGIC);
                header.extend_from_slice(&sid.to_le_bytes());
                header.extend_from_slice(&u64::from(index).to_le_bytes());
                inner.segments.insert(
                    f,
                    Segment {
                        file: Arc::new(file),
                        path,
                        len: SEGMENT_HEADER as u64,
                        pending: header,
                        live: 0,
                        dirty: true,
                        written_behind: 0,
                    },
                );
                shard.active = Some(f);
                f
            }
        };
        let seg = inner.segments.get_mut(&file).expect("current segment");
        let offset = u32::try_from(seg.len).expect("segments stay under 4 GiB");
        seg.pending.extend_from_slice(&seq.to_le_bytes());
        seg.pending.extend_from_slice(&len.to_le_bytes());
        seg.pending
            .extend_from_slice(&frame_crc(seq, data).to_le_bytes());
        seg.pending.extend_from_slice(data);
        seg.len += FRAME_HEADER as u64 + u64::from(len);
        Ok(Loc { file, offset, len })
    }

    /// Takes a record's position out of its segment, and deletes the
    /// segment once nothing points into it.
    fn unlink(&self, inner: &mut Inner, old: Loc) -> Result<(), StoreError> {
        let seg = inner.segments.get_mut(&old.file).expect("a live segment");
        seg.live -= 1;
        if seg.live > 0 {
            return Ok(());
        }
        let seg = inner.segments.remove(&old.file).expect("a live segment");
        for shard in inner.shards.values_mut() {
            if shard.active == Some(old.file) {
                shard.active = None;
            }
        }
        inner
            .shards
            .retain(|_, s| !s.locs.is_empty() || s.active.is_some());
        // Readers holding the file keep reading it: unlinking leaves it open.
        std::fs::remove_file(&seg.path).map_err(io("removing", &seg.path))
    }

    /// Fsyncs the segments written since the last sync and writes the
    /// positions, so that a later [`RecordFiles::open`] can trust them.
    pub fn sync(&self) -> Result<(), StoreError> {
        if self.damaged.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(corrupt(
                self.dir.display().to_string(),
                "a stream record read back damaged: the record files are not trusted, and the next start rebuilds them",
            ));
        }
        let mut inner = self.lock();
        for seg in inner.segments.values_mut().filter(|s| s.dirty) {
            seg.file.sync_data().map_err(io("syncing", &seg.path))?;
            seg.dirty = false;
        }
        let mut out = Vec::new();
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&inner.next_file.to_le_bytes());
        out.extend_from_slice(&(inner.shards.len() as u32).to_le_bytes());
        for (&(sid, index), shard) in &inner.shards {
            out.extend_from_slice(&sid.to_le_bytes());
            out.extend_from_slice(&index.to_le_bytes());
            out.extend_from_slice(&shard.first.to_le_bytes());
            out.extend_from_slice(&(shard.locs.len() as u64).to_le_bytes());
            for l in &shard.locs {
                out.extend_from_slice(&l.file.to_le_bytes());
                out.extend_from_slice(&l.offset.to_le_bytes());
                out.extend_from_slice(&l.len.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        let tmp = self.dir.join(format!("{CHECKPOINT}.tmp"));
        let path = self.dir.join(CHECKPOINT);
        let mut f = File::create(&tmp).map_err(io("creating", &tmp))?;
        f.write_all(&out).map_err(io("writing", &tmp))?;
        f.sync_all().map_err(io("syncing", &tmp))?;
        std::fs::rename(&tmp, &path).map_err(io("renaming", &tmp))?;
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io("syncing", &self.dir))
    }

    /// Up to [`CHUNK`] positions of records in (`start`, `end`), in order.
    fn chunk(
        &self,
        start: &Bound<Vec<u8>>,
        end: &Bound<Vec<u8>>,
        reverse: bool,
    ) -> Vec<(u64, u32, u64, Arc<File>, Loc)> {
        let inner = self.lock();
        let mut out = Vec::new();
        let mut take = |(&(sid, index), shard): (&(u64, u32), &Shard)| {
            let key = |i: usize| record_key(sid, index, shard.first + i as u64);
            let lo = partition(shard.locs.len(), |i| match start {
                Bound::Included(b) => key(i) < *b,
                Bound::Excluded(b) => key(i) <= *b,
                Bound::Unbounded => false,
            });
            let hi = partition(shard.locs.len(), |i| match end {
                Bound::Included(b) => key(i) <= *b,
                Bound::Excluded(b) => key(i) < *b,
                Bound::Unbounded => true,
            });
            let mut add = |i: usize| {
                let loc = shard.locs[i];
                if loc.present() {
                    let file = inner.segments[&loc.file].file.clone();
                    out.push((sid, index, shard.first + i as u64, file, loc));
                }
                out.len() >= CHUNK
            };
            if reverse {
                (lo..hi.max(lo)).rev().any(&mut add)
            } else {
                (lo..hi.max(lo)).any(&mut add)
            }
        };
        if reverse {
            inner.shards.iter().rev().any(&mut take);
        } else {
            inner.shards.iter().any(&mut take);
        }
        out
    }

    /// The records in (`start`, `end`), read a chunk at a time.
    pub fn range(&self, start: Bound<Vec<u8>>, end: Bound<Vec<u8>>, reverse: bool) -> KvIter<'_> {
        Box::new(RangeIter {
            files: self,
            start,
            end,
            reverse,
            buffered: VecDeque::new(),
            done: false,
        })
    }

    /// Records held (for tests and diagnostics).
    pub fn count(&self) -> usize {
        let inner = self.lock();
        inner
            .shards
            .values()
            .map(|s| s.locs.iter().filter(|l| l.present()).count())
            .sum()
    }

    /// Segment files on disk (for tests and diagnostics).
    pub fn segments(&self) -> usize {
        self.lock().segments.len()
    }
}

/// Asks the kernel to start writing bytes `from..to` of `file` out, without
/// waiting for it (and without making them durable: that is `sync`'s job).
fn write_behind(file: &File, from: u64, to: u64) {
    use std::os::fd::AsRawFd;
    let (Ok(offset), Ok(len)) = (i64::try_from(from), i64::try_from(to - from)) else {
        return;
    };
    // SAFETY: a plain system call on a file descriptor this `File` owns.
    // Its failure only means the pages go out later, with the rest.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), offset, len, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// The first `i` in `0..n` for which `below(i)` is false (`below` is true
/// then false along `0..n`).
fn partition(n: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

fn check_header(f: &File, path: &Path, sid: u64, index: u32) -> Result<(), StoreError> {
    let mut header = [0u8; SEGMENT_HEADER];
    f.read_exact_at(&mut header, 0)
        .map_err(io("reading the header of", path))?;
    if &header[..16] != SEGMENT_MAGIC {
        return Err(corrupt(
            path.display().to_string(),
            format!(
                "not a record segment of this format (expected it to start with {:?}, found {:?})",
                String::from_utf8_lossy(SEGMENT_MAGIC).trim_end(),
                String::from_utf8_lossy(&header[..16])
            ),
        ));
    }
    let owner = (
        u64::from_le_bytes(header[16..24].try_into().expect("8 bytes")),
        u64::from_le_bytes(header[24..32].try_into().expect("8 bytes")),
    );
    if owner != (sid, u64::from(index)) {
        return Err(corrupt(
            path.display().to_string(),
            format!(
                "holds shard {} of stream {}, not shard {index} of stream {sid}",
                owner.1, owner.0
            ),
        ));
    }
    Ok(())
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Option<[u8; N]> {
        let (head, rest) = self.0.split_first_chunk::<N>()?;
        self.0 = rest;
        Some(*head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take().map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take().map(u64::from_le_bytes)
    }
}

struct RangeIter<'a> {
    files: &'a RecordFiles,
    start: Bound<Vec<u8>>,
    end: Bound<Vec<u8>>,
    reverse: bool,
    buffered: VecDeque<(u64, u32, u64, Arc<File>, Loc)>,
    done: bool,
}

impl Iterator for RangeIter<'_> {
    type Item = Result<Kv, StoreError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffered.is_empty() && !self.done {
            let chunk = self.files.chunk(&self.start, &self.end, self.reverse);
            self.done = chunk.len() < CHUNK;
            if let Some(&(sid, index, seq, _, _)) = chunk.last() {
                let last = Bound::Excluded(record_key(sid, index, seq));
                if self.reverse {
                    self.end = last;
                } else {
                    self.start = last;
                }
            }
            self.buffered = chunk.into();
        }
        let (sid, index, seq, file, loc) = self.buffered.pop_front()?;
        Some(
            self.files
                .read(&file, loc, sid, index, seq)
                .map(|v| (record_key(sid, index, seq), v)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_core::store::keys::prefix_end;
    use sluice_core::streams::records::record_prefix;

    fn put(files: &RecordFiles, sid: u64, shard: u32, seqs: std::ops::Range<u64>) {
        let writes: Vec<(Vec<u8>, Vec<u8>)> = seqs
            .map(|seq| {
                (
                    record_key(sid, shard, seq),
                    format!("{sid}/{shard}/{seq}").into_bytes(),
                )
            })
            .collect();
        files
            .apply(
                writes
                    .iter()
                    .map(|(k, v)| (k.as_slice(), Some(v.as_slice()))),
            )
            .unwrap();
    }

    fn drop_records(files: &RecordFiles, sid: u64, shard: u32, seqs: std::ops::Range<u64>) {
        let keys: Vec<Vec<u8>> = seqs.map(|seq| record_key(sid, shard, seq)).collect();
        files
            .apply(keys.iter().map(|k| (k.as_slice(), None)))
            .unwrap();
    }

    /// The record numbers of (`sid`, `shard`) a range read returns.
    fn numbers(files: &RecordFiles, sid: u64, shard: u32, from: u64, reverse: bool) -> Vec<u64> {
        files
            .range(
                Bound::Included(record_key(sid, shard, from)),
                prefix_end(&record_prefix(sid, shard)),
                reverse,
            )
            .map(|kv| {
                let (k, v) = kv.unwrap();
                let (s, i, seq) = parse_record_key(&k).unwrap();
                assert_eq!(v, format!("{s}/{i}/{seq}").into_bytes());
                seq
            })
            .collect()
    }

    fn small(dir: &Path) -> RecordFiles {
        let mut files = RecordFiles::open(dir, false).unwrap();
        files.segment_bytes = 4096;
        files
    }

    #[test]
    fn records_read_back_by_key_and_by_range_in_both_directions() {
        let dir = tempfile::tempdir().unwrap();
        let files = small(dir.path());
        put(&files, 7, 0, 1..1001);
        put(&files, 7, 1, 1..11);
        put(&files, 9, 0, 1..3);
        assert!(files.segments() > 3, "small segments roll over");
        assert_eq!(
            files.get(&record_key(7, 1, 10)).unwrap().unwrap(),
            b"7/1/10"
        );
        assert_eq!(files.get(&record_key(7, 1, 11)).unwrap(), None);
        assert_eq!(files.get(&record_key(8, 0, 1)).unwrap(), None);
        assert_eq!(
            numbers(&files, 7, 0, 995, false),
            (995..1001).collect::<Vec<_>>()
        );
        assert_eq!(
            numbers(&files, 7, 0, 1, false),
            (1..1001).collect::<Vec<_>>()
        );
        assert_eq!(
            numbers(&files, 7, 1, 3, true),
            (3..11).rev().collect::<Vec<_>>()
        );
        // A read of everything crosses shards and streams in key order.
        let all: Vec<Vec<u8>> = files
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert_eq!(all.len(), 1012);
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        let back: Vec<Vec<u8>> = files
            .range(Bound::Unbounded, Bound::Unbounded, true)
            .map(|kv| kv.unwrap().0)
            .collect();
        assert_eq!(back, all.into_iter().rev().collect::<Vec<_>>());
        assert!(files.get(b"rec/short").is_err());
    }

    #[test]
    fn dropped_records_go_and_a_segment_goes_with_its_last_record() {
        let dir = tempfile::tempdir().unwrap();
        let files = small(dir.path());
        put(&files, 1, 0, 1..2001);
        let before = files.segments();
        drop_records(&files, 1, 0, 1..1001);
        assert_eq!(
            numbers(&files, 1, 0, 1, false),
            (1001..2001).collect::<Vec<_>>()
        );
        assert_eq!(files.count(), 1000);
        let after = files.segments();
        assert!(after <= before / 2 + 1, "{before} segments, then {after}");
        let on_disk = std::fs::read_dir(dir.path()).unwrap().count();
        assert_eq!(on_disk, after, "the files of dropped segments are deleted");
        // A record written again replaces the old one.
        let key = record_key(1, 0, 1500);
        files.apply([(key.as_slice(), Some(&b"new"[..]))]).unwrap();
        assert_eq!(files.get(&key).unwrap().unwrap(), b"new");
        drop_records(&files, 1, 0, 1001..2001);
        assert_eq!(files.count(), 0);
        assert_eq!(files.segments(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_synced_set_reopens_as_it_was_and_an_unsynced_one_is_wiped() {
        let dir = tempfile::tempdir().unwrap();
        let files = small(dir.path());
        put(&files, 3, 2, 1..301);
        drop_records(&files, 3, 2, 1..101);
        files.sync().unwrap();
        drop(files);
        assert!(RecordFiles::opens_trusted(dir.path()));
        assert!(RecordFiles::opens_trusted(&dir.path().join("never-made")));
        let files = RecordFiles::open(dir.path(), true).unwrap();
        assert_eq!(
            numbers(&files, 3, 2, 1, false),
            (101..301).collect::<Vec<_>>()
        );
        put(&files, 3, 2, 301..311);
        assert_eq!(
            numbers(&files, 3, 2, 299, false),
            (299..311).collect::<Vec<_>>()
        );
        drop(files);
        // Not trusted (an unclean stop): nothing is kept.
        let files = RecordFiles::open(dir.path(), false).unwrap();
        assert_eq!(files.count(), 0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn damage_is_reported_never_served() {
        let dir = tempfile::tempdir().unwrap();
        let files = small(dir.path());
        put(&files, 1, 0, 1..4);
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        let mut bytes = std::fs::read(&seg).unwrap();
        let at = bytes.windows(5).position(|w| w == b"1/0/2").unwrap();
        bytes[at + 4] ^= 0x01;
        std::fs::write(&seg, &bytes).unwrap();
        let e = files.get(&record_key(1, 0, 2)).unwrap_err().to_string();
        assert!(
            e.contains("record 2 of shard 0 of stream 1 is damaged"),
            "{e}"
        );
        assert_eq!(files.get(&record_key(1, 0, 3)).unwrap().unwrap(), b"1/0/3");
        let read: Vec<_> = files
            .range(Bound::Unbounded, Bound::Unbounded, false)
            .collect();
        assert!(read[1].is_err() && read[0].is_ok() && read[2].is_ok());
        // Never trusted again: a clean stop cannot vouch for them.
        let e = files.sync().unwrap_err().to_string();
        assert!(e.contains("the next start rebuilds them"), "{e}");
        assert!(!dir.path().join(CHECKPOINT).exists());
    }

    #[test]
    fn foreign_or_damaged_positions_are_refused_with_what_was_found() {
        let dir = tempfile::tempdir().unwrap();
        let files = small(dir.path());
        put(&files, 1, 0, 1..4);
        files.sync().unwrap();
        drop(files);
        let positions = dir.path().join(CHECKPOINT);
        let good = std::fs::read(&positions).unwrap();

        let mut flipped = good.clone();
        flipped[20] ^= 0xff;
        std::fs::write(&positions, &flipped).unwrap();
        let e = RecordFiles::open(dir.path(), true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("checksum mismatch"), "{e}");

        std::fs::write(&positions, b"SLUICE-RECPOS-0\nolder").unwrap();
        let e = RecordFiles::open(dir.path(), true)
            .err()
            .unwrap()
            .to_string();
        assert!(
            e.contains("not a record positions file of this format"),
            "{e}"
        );
        assert!(e.contains("SLUICE-RECPOS-0"), "{e}");

        std::fs::write(&positions, &good).unwrap();
        let seg = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.extension().is_some_and(|x| x == "rec"))
            .unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        bytes[..16].copy_from_slice(b"SOMETHING-ELSE-\n");
        std::fs::write(&seg, &bytes).unwrap();
        let e = RecordFiles::open(dir.path(), true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("not a record segment of this format"), "{e}");

        assert!(!RecordFiles::opens_trusted(dir.path()));
        std::fs::remove_file(&positions).unwrap();
        assert!(!RecordFiles::opens_trusted(dir.path()));
        let e = RecordFiles::open(dir.path(), true)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("without the positions"), "{e}");
    }
}
