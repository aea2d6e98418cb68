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
//! {dir}/{first index:020}.seg   a header, then records in index order, then zeros
//! header: "SLUICLOG" | u32 format | u32 CRC-32 of the rest | u64 first index | u64 file size
//! record: u32 payload length | u32 CRC-32 of (index, payload) | u64 index | payload
//! ```
//!
//! A segment is created at its full size (at least [`LogFiles::open`]'s
//! segment size; sparse, so it costs no space until written), written under
//! a temporary name, fsynced and renamed into place: a segment file is whole
//! from the moment it exists, and its size never changes afterwards. A file
//! shorter than its header says was cut by something other than the node,
//! and may have lost acknowledged entries at its end, which no scan of what
//! is left could tell. Records that no longer fit start a new segment;
//! creating or deleting one fsyncs the directory before the change counts.
//!
//! On open, damage is told apart by what follows it:
//!
//! * a *torn write*: a bad record with only zeros or garbage after it, at the
//!   end of the last segment. A crash cut the last append short before its
//!   fsync, so nothing in it was acknowledged: it is zeroed.
//! * *damage*: a bad record followed by valid ones (later in the segment, or
//!   in later segments), a missing run of entries between segments, a
//!   damaged segment header, or a file cut short. Entries there were
//!   fsynced and may have been acknowledged, so they are never cut silently:
//!   [`OnDamage`] says whether to refuse to open (a node alone has no other
//!   copy) or to cut the log at the damage, keeping the damaged files aside,
//!   so that a node of a cluster can be repaired from its leader.
//!
//! Pages of one unsynced append written out of order by a power loss look
//! like damage too; they are treated as damage, the safe side.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::StoreError;

/// Bytes of a record's header.
const HEADER: usize = 16;
/// Bytes of the header that opens every segment file.
const SEGMENT_HEADER: u64 = 32;
/// What a segment file starts with.
const MAGIC: [u8; 8] = *b"SLUICLOG";
/// The segment format this build writes and reads.
const SEGMENT_FORMAT: u32 = 2;
/// Largest payload a record may hold; guards allocations when reading a
/// damaged length.
const MAX_PAYLOAD: u32 = sluice_core::limits::replication::LOG_RECORD_MAX;

struct Segment {
    first: u64,
    path: PathBuf,
    file: Arc<File>,
    /// End of the valid records (the segment header's size when empty).
    len: u64,
    /// The file's size, fixed when it was created.
    size: u64,
    /// (offset, payload length) of entry `first + i`.
    records: Vec<(u64, u32)>,
}

impl Segment {
    /// The segment `scan` read: its valid records, in a file `size` long.
    fn scanned(first: u64, path: PathBuf, file: File, size: u64, scan: Scan) -> Segment {
        Segment {
            first,
            path,
            file: Arc::new(file),
            len: scan.valid,
            size,
            records: scan.records,
        }
    }

    fn last(&self) -> Option<u64> {
        (!self.records.is_empty()).then(|| self.first + self.records.len() as u64 - 1)
    }
}

struct Inner {
    segments: BTreeMap<u64, Segment>,
    /// Segments purged from the log but kept, read-only, in `kept/` for the
    /// message bodies they still hold (see [`LogFiles::set_pins`]).
    kept: BTreeMap<u64, Segment>,
    /// The first damage found in a kept segment when the log was opened.
    kept_damage: Option<KeptDamage>,
    /// First indexes of the segments a purge keeps; `None` (until the
    /// state machine first says): every one.
    pins: Option<BTreeSet<u64>>,
    /// Segments a purge keeps too, while snapshots that read bodies from
    /// them are sent ([`LogFiles::hold_through`]), with how many holds each.
    held: BTreeMap<u64, usize>,
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

/// Segments kept from deletion while it lives (see
/// [`LogFiles::hold_through`]); the next purge after the drop may delete
/// them.
pub struct SegmentHold {
    log: Arc<LogFiles>,
    segments: Vec<u64>,
}

impl Drop for SegmentHold {
    fn drop(&mut self) {
        let mut inner = self.log.lock();
        for first in &self.segments {
            if let Some(n) = inner.held.get_mut(first) {
                *n -= 1;
                if *n == 0 {
                    inner.held.remove(first);
                }
            }
        }
    }
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

/// Writes `bufs` in full at `offset`, as `write_all_at` writes one buffer.
fn write_all_vectored_at(
    file: &File,
    mut bufs: &mut [io::IoSlice<'_>],
    mut offset: u64,
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    io::IoSlice::advance_slices(&mut bufs, 0);
    while !bufs.is_empty() {
        // At most the slices one call takes.
        let n = bufs.len().min(libc::UIO_MAXIOV as usize);
        let at = libc::off_t::try_from(offset).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, "offset past the largest file")
        })?;
        // SAFETY: `IoSlice` is ABI-compatible with `iovec` on Unix, and the
        // `n` slices it points to are borrowed for the call.
        let written = unsafe {
            libc::pwritev(
                file.as_raw_fd(),
                bufs.as_ptr().cast::<libc::iovec>(),
                n as libc::c_int,
                at,
            )
        };
        if written < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        offset += written as u64;
        io::IoSlice::advance_slices(&mut bufs, written as usize);
    }
    Ok(())
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

/// Where a segment is written before it is renamed into place.
fn new_segment_path(dir: &Path, first: u64) -> PathBuf {
    dir.join(format!("{first:020}.new"))
}

fn header_crc(header: &[u8; SEGMENT_HEADER as usize]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&header[0..12]);
    h.update(&header[16..]);
    h.finalize()
}

fn segment_header(first: u64, size: u64) -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[0..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&SEGMENT_FORMAT.to_le_bytes());
    h[16..24].copy_from_slice(&first.to_le_bytes());
    h[24..32].copy_from_slice(&size.to_le_bytes());
    let sum = header_crc(&h);
    h[12..16].copy_from_slice(&sum.to_le_bytes());
    h
}

/// The file size a segment's header records; `None` when the header is
/// damaged. A segment of another format is an error: it is not damage, and
/// it must not be misread.
fn read_segment_header(path: &Path, bytes: &[u8], first: u64) -> Result<Option<u64>, StoreError> {
    let Some(h) = bytes.get(..SEGMENT_HEADER as usize) else {
        return Ok(None);
    };
    let h: &[u8; SEGMENT_HEADER as usize] = h.try_into().expect("header length");
    if h[0..8] != MAGIC {
        if record_at(bytes, 0, Some(first), 0).is_some() {
            return Err(corrupt(
                path,
                "log segment written by an earlier Sluice (segment format 1, without a header); this Sluice reads format 2 only: run the version that wrote it, or start this one with an empty data directory",
            ));
        }
        return Ok(None);
    }
    if u32::from_le_bytes(h[12..16].try_into().expect("4 bytes")) != header_crc(h) {
        return Ok(None);
    }
    let format = u32::from_le_bytes(h[8..12].try_into().expect("4 bytes"));
    if format != SEGMENT_FORMAT {
        return Err(corrupt(
            path,
            format!(
                "log segment in format {format}; this Sluice reads format {SEGMENT_FORMAT} only"
            ),
        ));
    }
    let named = u64::from_le_bytes(h[16..24].try_into().expect("8 bytes"));
    if named != first {
        return Ok(None);
    }
    Ok(Some(u64::from_le_bytes(
        h[24..32].try_into().expect("8 bytes"),
    )))
}

/// Creates the segment for entries from `first` on, `size` bytes long,
/// whole before its name appears. The directory must be synced before an
/// entry in it counts.
fn create_segment(dir: &Path, first: u64, size: u64) -> Result<(PathBuf, File), StoreError> {
    let tmp = new_segment_path(dir, first);
    let path = segment_path(dir, first);
    let create = || -> io::Result<File> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        file.write_all_at(&segment_header(first, size), 0)?;
        file.set_len(size)?;
        file.sync_all()?;
        fs::rename(&tmp, &path)?;
        Ok(file)
    };
    match create() {
        Ok(file) => Ok((path, file)),
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            Err(io_err("creating log segment", &path, e))
        }
    }
}

/// Writes zeros over `from..to` of `file`.
fn zero(file: &File, from: u64, to: u64) -> io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    if from >= to {
        return Ok(());
    }
    let zeros = vec![0u8; (to - from).min(CHUNK) as usize];
    let mut at = from;
    while at < to {
        let n = (to - at).min(CHUNK) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(())
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
    /// The size its header records; `None` when the header is damaged.
    size: Option<u64>,
    /// The file's length as found.
    file_len: u64,
    /// (offset, payload length) of each valid record.
    records: Vec<(u64, u32)>,
    /// End of the valid records.
    valid: u64,
    /// End of the last non-zero byte after them (`valid` when none).
    garbage_end: u64,
    /// The last index of valid records found past a damaged one.
    beyond: Option<u64>,
}

impl Scan {
    fn trailing(&self) -> bool {
        self.garbage_end > self.valid
    }

    fn truncated(&self) -> bool {
        self.size.is_some_and(|size| self.file_len < size)
    }

    /// The last index this segment still shows, past damage included.
    fn last_seen(&self, first: u64) -> Option<u64> {
        let in_order = (!self.records.is_empty()).then(|| first + self.records.len() as u64 - 1);
        in_order.max(self.beyond)
    }
}

/// The record at `offset` of `bytes`, if one with index `expected` (or,
/// when `expected` is `None`, any index from `at_least` on) is whole and its
/// checksum matches: (index, record end).
fn record_at(
    bytes: &[u8],
    offset: usize,
    expected: Option<u64>,
    at_least: u64,
) -> Option<(u64, usize)> {
    let header = bytes.get(offset..offset + HEADER)?;
    let len = u32::from_le_bytes(header[0..4].try_into().expect("4 bytes"));
    let sum = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes"));
    let index = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let end = offset + HEADER + len as usize;
    if len > MAX_PAYLOAD || end > bytes.len() {
        return None;
    }
    let plausible = match expected {
        Some(e) => index == e,
        // Past damage, the entries lost make the next index unknown.
        None => index >= at_least && index - at_least < 1 << 40,
    };
    (plausible && crc(index, &bytes[offset + HEADER..end]) == sum).then_some((index, end))
}

fn index_after(index: Option<u64>) -> u64 {
    index.map_or(0, |i| i + 1)
}

/// Calls `visit` with every record of the log in `dir` whose checksum
/// holds, including those past damage, without changing anything: what a
/// damaged log still tells (its membership, say).
pub fn visit_valid(dir: &Path, mut visit: impl FnMut(u64, &[u8])) -> Result<(), StoreError> {
    for first in segment_firsts(dir)? {
        scan(&segment_path(dir, first), first, &mut visit)?;
    }
    Ok(())
}

/// Reads every valid record of a segment file, and past the first bad one
/// looks for valid records further on (which make it damage, not a torn
/// write).
fn scan(path: &Path, first: u64, visit: &mut dyn FnMut(u64, &[u8])) -> Result<Scan, StoreError> {
    let bytes = fs::read(path).map_err(|e| io_err("reading log segment", path, e))?;
    let size = read_segment_header(path, &bytes, first)?;
    let mut records = Vec::new();
    let mut offset = (SEGMENT_HEADER as usize).min(bytes.len());
    while let Some((index, end)) = record_at(&bytes, offset, Some(first + records.len() as u64), 0)
    {
        visit(index, &bytes[offset + HEADER..end]);
        records.push((offset as u64, (end - offset - HEADER) as u32));
        offset = end;
    }
    let valid = offset;
    let garbage_end = bytes
        .iter()
        .rposition(|b| *b != 0)
        .map_or(valid, |i| (i + 1).max(valid));
    let next = first + records.len() as u64;
    let mut beyond = None;
    let mut at = valid + 1;
    while at + HEADER <= garbage_end {
        let Some((index, end)) = record_at(&bytes, at, None, next) else {
            // A record's header holds a non-zero byte within its first
            // 16: skip runs of zeros (the unwritten end of a segment).
            at = match bytes[at..garbage_end].iter().position(|b| *b != 0) {
                Some(p) => (at + p).saturating_sub(HEADER - 1).max(at + 1),
                None => garbage_end,
            };
            continue;
        };
        // Found one: follow the records after it.
        visit(index, &bytes[at + HEADER..end]);
        beyond = Some(index);
        let mut end = end;
        while let Some((index, next_end)) = record_at(&bytes, end, Some(index_after(beyond)), 0) {
            visit(index, &bytes[end + HEADER..next_end]);
            beyond = Some(index);
            end = next_end;
        }
        at = end.max(at + 1);
    }
    Ok(Scan {
        size,
        file_len: bytes.len() as u64,
        records,
        valid: valid as u64,
        garbage_end: garbage_end as u64,
        beyond,
    })
}

/// The first indexes of the segment files in `dir`, in order.
fn segment_firsts(dir: &Path) -> Result<Vec<u64>, StoreError> {
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
    Ok(firsts)
}

/// Removes segments left half-created by a crash.
fn remove_unfinished(dir: &Path) -> Result<bool, StoreError> {
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(|e| io_err("listing log directory", dir, e))? {
        let path = entry
            .map_err(|e| io_err("listing log directory", dir, e))?
            .path();
        if path.extension().is_some_and(|e| e == "new") {
            fs::remove_file(&path).map_err(|e| io_err("removing", &path, e))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// Creates `damaged-{time}/` in `dir`, where damaged files are kept for
/// the operator to examine.
fn new_damaged_dir(dir: &Path) -> Result<PathBuf, StoreError> {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    let aside = dir.join(format!("damaged-{millis}"));
    fs::create_dir_all(&aside).map_err(|e| io_err("creating", &aside, e))?;
    Ok(aside)
}

/// Cuts the log at `damage`: the damaged segment and the segments after it
/// go to `damaged-{time}/` (for the operator to examine); the damaged
/// segment stays, with everything from its bad record on zeroed, unless
/// its header is what was damaged.
fn set_aside(dir: &Path, damage: &Damage) -> Result<PathBuf, StoreError> {
    let aside = new_damaged_dir(dir)?;
    let name = damage.path.file_name().unwrap_or_default();
    let damaged_first = name
        .to_str()
        .and_then(|n| n.strip_suffix(".seg"))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(0);
    for first in segment_firsts(dir)? {
        if first > damaged_first {
            let from = segment_path(dir, first);
            let to = aside.join(from.file_name().unwrap_or_default());
            fs::rename(&from, &to).map_err(|e| io_err("moving aside", &from, e))?;
        }
    }
    if damage.kind == DamageKind::Header {
        fs::rename(&damage.path, aside.join(name))
            .map_err(|e| io_err("moving aside", &damage.path, e))?;
    } else {
        fs::copy(&damage.path, aside.join(name)).map_err(|e| io_err("copying", &damage.path, e))?;
        let bytes = fs::read(&damage.path).map_err(|e| io_err("reading", &damage.path, e))?;
        let size =
            read_segment_header(&damage.path, &bytes, damaged_first)?.unwrap_or(bytes.len() as u64);
        let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1) as u64;
        let cut = || -> io::Result<()> {
            let file = OpenOptions::new().write(true).open(&damage.path)?;
            zero(&file, damage.offset, end)?;
            if (bytes.len() as u64) < size {
                file.set_len(size)?;
            }
            file.sync_all()
        };
        cut().map_err(|e| io_err("cutting log segment", &damage.path, e))?;
    }
    sync_dir(&aside)?;
    sync_dir(dir)?;
    tracing::error!(
        segment = %damage.path.display(),
        offset = damage.offset,
        first_lost = damage.first_lost,
        last_seen = ?damage.last_seen,
        kept_in = %aside.display(),
        "cut the Raft log at damage; this node must be repaired from the leader before it votes again"
    );
    Ok(aside)
}

pub use sluice_core::store::{Damage, DamageKind};

/// What [`LogFiles::open`] does with [`Damage`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnDamage {
    /// Refuse to open, with [`StoreError::LogDamaged`].
    Refuse,
    /// Cut the log at the damage, moving the damaged segment's copy and the
    /// segments after it into `damaged-{time}/` in the log directory.
    CutAndSetAside,
}

/// The first damage in the scanned segments, if any.
fn find_damage(dir: &Path, firsts: &[u64], scans: &[Scan]) -> Option<Damage> {
    let count = firsts.len();
    // How far the log went is known only if its last segment is whole.
    let end_known = scans
        .last()
        .is_none_or(|s| s.size.is_some() && !s.truncated());
    for (i, (&first, scanned)) in firsts.iter().zip(scans).enumerate() {
        let is_last = i + 1 == count;
        let next = first + scanned.records.len() as u64;
        let seen_after = || {
            scans[i..]
                .iter()
                .zip(&firsts[i..])
                .filter_map(|(s, f)| s.last_seen(*f))
                .max()
        };
        let damage = |kind, offset| Damage {
            kind,
            path: segment_path(dir, first),
            offset,
            first_lost: if kind == DamageKind::Header {
                first
            } else {
                next
            },
            last_seen: if end_known { seen_after() } else { None },
        };
        if scanned.size.is_none() {
            return Some(damage(DamageKind::Header, 0));
        }
        if scanned.trailing() && scanned.beyond.is_some() {
            return Some(damage(DamageKind::Record, scanned.valid));
        }
        if scanned.truncated() {
            return Some(damage(DamageKind::Truncated, scanned.valid));
        }
        if !is_last && firsts[i + 1] != next {
            // Garbage after this segment's records with a gap before the
            // next one is where the missing entries were.
            let kind = if scanned.trailing() {
                DamageKind::Record
            } else {
                DamageKind::Gap
            };
            return Some(damage(kind, scanned.valid));
        }
    }
    None
}

/// Where purged segments that still hold live message bodies are kept.
const KEPT_DIR: &str = "kept";
/// See [`LogFiles::body_lost_file`].
const BODY_LOST_FILE: &str = "body-lost";

/// A segment's entries: what [`LogFiles::spans`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// Its first entry's index (what names it to [`LogFiles::set_pins`]).
    pub first: u64,
    /// Its last entry's index.
    pub last: u64,
    /// Bytes of records it holds.
    pub bytes: u64,
}

/// Reads and checks the record of entry `index` at `offset` of `file`.
fn read_record(
    file: &File,
    path: &Path,
    index: u64,
    offset: u64,
    len: u32,
) -> Result<Vec<u8>, StoreError> {
    let mut buf = vec![0u8; HEADER + len as usize];
    file.read_exact_at(&mut buf, offset)
        .map_err(|e| io_err("reading log segment", path, e))?;
    let payload = buf.split_off(HEADER);
    let sum = u32::from_le_bytes(buf[4..8].try_into().expect("4 bytes"));
    if crc(index, &payload) != sum {
        return Err(corrupt(path, format!("checksum mismatch in entry {index}")));
    }
    Ok(payload)
}

/// Damage found in a kept segment when the log was opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptDamage {
    /// The damaged segment.
    pub path: PathBuf,
    /// The first entry whose record cannot be read there.
    pub first_lost: u64,
    /// What is wrong, in words.
    pub reason: String,
}

impl std::fmt::Display for KeptDamage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the kept log segment {} is damaged from entry {} ({}): message bodies the snapshot needs are lost on this node",
            self.path.display(),
            self.first_lost,
            self.reason
        )
    }
}

/// Opens the kept segments in `dir` (creating it). They were sealed and
/// synced before they were kept, so a bad record is damage: its entries and
/// the ones after it in the segment are not served (a body read there fails
/// and says so), and the first damage is returned for the node to repair
/// (see `raft::repair`), never passed over in silence.
fn open_kept(dir: &Path) -> Result<(BTreeMap<u64, Segment>, Option<KeptDamage>), StoreError> {
    fs::create_dir_all(dir).map_err(|e| io_err("creating kept log directory", dir, e))?;
    remove_unfinished(dir)?;
    let mut kept = BTreeMap::new();
    let mut damage = None;
    for first in segment_firsts(dir)? {
        let path = segment_path(dir, first);
        let scanned = scan(&path, first, &mut |_, _| {})?;
        let found = match scanned.size {
            None => Some("its header is damaged".to_string()),
            Some(_) if scanned.trailing() || scanned.truncated() => Some(format!(
                "a bad record at offset {} after {} good ones",
                scanned.valid,
                scanned.records.len()
            )),
            Some(_) => None,
        };
        if let Some(reason) = found {
            metrics::counter!("sluice_log_kept_damaged_total").increment(1);
            let found = KeptDamage {
                path: path.clone(),
                first_lost: first + scanned.records.len() as u64,
                reason,
            };
            tracing::error!("{found}");
            damage = damage.or(Some(found));
        }
        let Some(size) = scanned.size else {
            continue;
        };
        let file = File::open(&path).map_err(|e| io_err("opening kept log segment", &path, e))?;
        kept.insert(first, Segment::scanned(first, path, file, size, scanned));
    }
    Ok((kept, damage))
}

impl LogFiles {
    /// Opens the log in `dir` (creating it), zeroing a torn final write.
    /// Segments are created `segment_bytes` long (larger when one append
    /// needs more).
    pub fn open(dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        Self::open_with(dir, segment_bytes, OnDamage::Refuse).map(|(log, _)| log)
    }

    /// Opens the log, doing with damage what `on_damage` says; returns the
    /// damage that was cut, if any.
    pub fn open_with(
        dir: &Path,
        segment_bytes: u64,
        on_damage: OnDamage,
    ) -> Result<(Self, Option<Damage>), StoreError> {
        match Self::open_inner(dir, segment_bytes) {
            Err(StoreError::LogDamaged(damage)) if on_damage == OnDamage::CutAndSetAside => {
                set_aside(dir, &damage)?;
                let log = Self::open_inner(dir, segment_bytes)?;
                Ok((log, Some(damage)))
            }
            other => other.map(|log| (log, None)),
        }
    }

    fn open_inner(dir: &Path, segment_bytes: u64) -> Result<Self, StoreError> {
        fs::create_dir_all(dir).map_err(|e| io_err("creating log directory", dir, e))?;
        let mut dir_dirty = remove_unfinished(dir)?;
        let firsts = segment_firsts(dir)?;
        let scans = firsts
            .iter()
            .map(|&first| scan(&segment_path(dir, first), first, &mut |_, _| {}))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(damage) = find_damage(dir, &firsts, &scans) {
            return Err(StoreError::LogDamaged(damage));
        }
        let count = firsts.len();
        let mut segments = BTreeMap::new();
        for (i, (first, scanned)) in firsts.into_iter().zip(scans).enumerate() {
            let path = segment_path(dir, first);
            let is_last = i + 1 == count;
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(|e| io_err("opening log segment", &path, e))?;
            if scanned.trailing() {
                // With nothing valid after it: in the last segment a torn
                // final write, in a sealed one garbage past its records
                // (the next segment follows on, so nothing is missing).
                tracing::warn!(
                    segment = %path.display(),
                    offset = scanned.valid,
                    valid_entries = scanned.records.len(),
                    "zeroing a torn final write at the end of the log segment (nothing valid follows it)"
                );
                zero(&file, scanned.valid, scanned.garbage_end)
                    .and_then(|_| file.sync_data())
                    .map_err(|e| io_err("repairing log segment", &path, e))?;
            }
            if scanned.records.is_empty() && count > 1 && is_last {
                // A segment created just before a crash, holding nothing yet.
                fs::remove_file(&path)
                    .map_err(|e| io_err("removing empty log segment", &path, e))?;
                dir_dirty = true;
                continue;
            }
            if scanned.records.is_empty() && !is_last {
                return Err(corrupt(&path, "empty log segment before the last one"));
            }
            // A process killed between an append and its sync leaves the
            // append in the page cache, where this open finds it: synced
            // now, before Raft counts it as durable (a clean file's sync
            // costs next to nothing).
            file.sync_data()
                .map_err(|e| io_err("syncing log segment", &path, e))?;
            let size = scanned.size.expect("checked for damage");
            segments.insert(first, Segment::scanned(first, path, file, size, scanned));
        }
        let (kept, kept_damage) = open_kept(&dir.join(KEPT_DIR))?;
        let log = LogFiles {
            dir: dir.to_path_buf(),
            segment_bytes,
            inner: Mutex::new(Inner {
                segments,
                kept,
                kept_damage,
                pins: None,
                held: BTreeMap::new(),
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
        let bytes: u64 = entries.iter().map(|(_, p)| (HEADER + p.len()) as u64).sum();
        let need_new = match inner.segments.values().next_back() {
            None => true,
            Some(s) => s.len + bytes > s.size || (s.records.is_empty() && s.first != *first_new),
        };
        if need_new {
            // A stale empty segment the new one replaces.
            if let Some((&first, s)) = inner.segments.iter().next_back() {
                if s.records.is_empty() {
                    let old = s.path.clone();
                    inner.segments.remove(&first);
                    if first != *first_new {
                        fs::remove_file(&old)
                            .map_err(|e| io_err("removing log segment", &old, e))?;
                    }
                }
            }
            let size = self.segment_bytes.max(SEGMENT_HEADER + bytes);
            let (path, file) = create_segment(&self.dir, *first_new, size)?;
            inner.segments.insert(
                *first_new,
                Segment {
                    first: *first_new,
                    path,
                    file: Arc::new(file),
                    len: SEGMENT_HEADER,
                    size,
                    records: Vec::new(),
                },
            );
            inner.dir_dirty = true;
        }
        let segment = inner.segments.values_mut().next_back().expect("a segment");
        // Each record's header, then the payloads written from where they
        // are: gathering them into one buffer first cost a copy of every
        // payload and fresh pages for the buffer.
        let mut headers = Vec::with_capacity(entries.len());
        let mut added = Vec::with_capacity(entries.len());
        let mut at = segment.len;
        for (index, payload) in entries {
            if payload.len() as u64 > u64::from(MAX_PAYLOAD) {
                return Err(corrupt(&self.dir, "log entry larger than 1 GiB"));
            }
            added.push((at, payload.len() as u32));
            let mut header = [0u8; HEADER];
            header[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
            header[4..8].copy_from_slice(&crc(*index, payload).to_le_bytes());
            header[8..16].copy_from_slice(&index.to_le_bytes());
            headers.push(header);
            at += (HEADER + payload.len()) as u64;
        }
        let mut slices: Vec<io::IoSlice<'_>> = headers
            .iter()
            .zip(entries)
            .flat_map(|(h, (_, p))| [io::IoSlice::new(h), io::IoSlice::new(p)])
            .collect();
        write_all_vectored_at(&segment.file, &mut slices, segment.len)
            .map_err(|e| io_err("appending to log segment", &segment.path, e))?;
        segment.len = at;
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
                let skip = from.saturating_sub(s.first) as usize;
                for (i, (offset, len)) in s.records.iter().enumerate().skip(skip) {
                    let index = s.first + i as u64;
                    if index >= to {
                        break;
                    }
                    wanted.push((index, s.file.clone(), s.path.clone(), *offset, *len));
                }
            }
            wanted
        };
        for (index, file, path, offset, len) in wanted {
            out.push((index, read_record(&file, &path, index, offset, len)?));
        }
        Ok(out)
    }

    /// The payload of entry `index` where the log still holds it, purged
    /// or not: in a kept segment, or below the purge point in the first
    /// segment. `None` when it is gone.
    pub fn read_retained(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let found = {
            let inner = self.lock();
            let find = |map: &BTreeMap<u64, Segment>| {
                let (_, s) = map.range(..=index).next_back()?;
                let (offset, len) = *s.records.get((index - s.first) as usize)?;
                Some((s.file.clone(), s.path.clone(), offset, len))
            };
            find(&inner.kept).or_else(|| find(&inner.segments))
        };
        match found {
            Some((file, path, offset, len)) => {
                read_record(&file, &path, index, offset, len).map(Some)
            }
            None => Ok(None),
        }
    }

    /// The segments holding entries, purged ones kept for their bodies
    /// included, in index order.
    pub fn spans(&self) -> Vec<Span> {
        let inner = self.lock();
        let mut spans: Vec<Span> = inner
            .kept
            .values()
            .chain(inner.segments.values())
            .filter_map(|s| {
                Some(Span {
                    first: s.first,
                    last: s.last()?,
                    bytes: s.len - SEGMENT_HEADER,
                })
            })
            .collect();
        spans.sort_by_key(|s| s.first);
        spans
    }

    /// Says which segments a purge keeps (by first index): those whose
    /// entries still hold message bodies the state needs. A purge moves
    /// such a segment into `kept/` instead of deleting it, and deletes the
    /// kept segments no longer named.
    pub fn set_pins(&self, pins: BTreeSet<u64>) {
        self.lock().pins = Some(pins);
    }

    /// Keeps every segment, live or kept, whose first entry is at or below
    /// `index` until the returned hold is dropped: a purge treats them as
    /// pinned. A snapshot at `index` being sent reads the bodies it only
    /// references from them, and a newer snapshot's pins must not take
    /// them away mid-send.
    pub fn hold_through(self: &Arc<Self>, index: u64) -> SegmentHold {
        let mut inner = self.lock();
        let segments: Vec<u64> = (inner.segments.keys())
            .chain(inner.kept.keys())
            .filter(|first| **first <= index)
            .copied()
            .collect();
        for first in &segments {
            *inner.held.entry(*first).or_default() += 1;
        }
        SegmentHold {
            log: self.clone(),
            segments,
        }
    }

    /// The first damage found in a kept segment when the log was opened:
    /// the node cannot rebuild its state from its snapshot (see
    /// `raft::repair::open_log`).
    pub fn kept_damage(&self) -> Option<KeptDamage> {
        self.lock().kept_damage.clone()
    }

    /// Where this node records that it lost a queued message's body: the
    /// index of the entry that sent it, until the next start has given up
    /// what named it (see `raft::repair::open_log`).
    pub fn body_lost_file(&self) -> MetaFile {
        MetaFile::new(&self.dir.join(BODY_LOST_FILE))
    }

    /// Moves every kept segment into `damaged-{time}/kept/` (for the
    /// operator to examine) once a snapshot that needed them is given up;
    /// returns where they went, if there were any.
    pub fn set_kept_aside(&self) -> Result<Option<PathBuf>, StoreError> {
        let mut inner = self.lock();
        let kept_dir = self.dir.join(KEPT_DIR);
        if segment_firsts(&kept_dir)?.is_empty() {
            inner.kept.clear();
            inner.kept_damage = None;
            return Ok(None);
        }
        let to = new_damaged_dir(&self.dir)?.join(KEPT_DIR);
        fs::rename(&kept_dir, &to).map_err(|e| io_err("moving aside", &kept_dir, e))?;
        fs::create_dir_all(&kept_dir).map_err(|e| io_err("creating", &kept_dir, e))?;
        sync_dir(&self.dir)?;
        inner.kept.clear();
        inner.kept_damage = None;
        Ok(Some(to))
    }

    /// Number of kept segments.
    pub fn kept_count(&self) -> usize {
        self.lock().kept.len()
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
            // Zeroed, not cut: the file keeps its size, and no record of the
            // old tail may read back after a crash (later appends would not
            // overwrite all of it).
            let new_len = s.records[keep].0;
            zero(&s.file, new_len, s.len)
                .map_err(|e| io_err("truncating log segment", &s.path, e))?;
            s.records.truncate(keep);
            s.len = new_len;
            let file = s.file.clone();
            inner.dirty.push(file);
        }
        Ok(())
    }

    /// Removes every segment whose entries all have indexes up to `index`.
    /// Entries up to `index` may remain in the first segment kept.
    ///
    /// A segment named by [`Self::set_pins`] (every one, before the first
    /// call) moves into `kept/` instead, and kept segments no longer named
    /// are deleted.
    pub fn purge_through(&self, index: u64) -> Result<(), StoreError> {
        let mut inner = self.lock();
        let kept_dir = self.dir.join(KEPT_DIR);
        let mut kept_dirty = false;
        while let Some((&first, s)) = inner.segments.iter().next() {
            let whole = match s.last() {
                Some(last) => last <= index,
                None => s.first <= index,
            };
            if !whole {
                break;
            }
            let keep = !s.records.is_empty()
                && (inner.held.contains_key(&first)
                    || inner.pins.as_ref().is_none_or(|pins| pins.contains(&first)));
            let mut s = inner.segments.remove(&first).expect("listed");
            if keep {
                let to = kept_dir.join(s.path.file_name().unwrap_or_default());
                fs::rename(&s.path, &to).map_err(|e| io_err("keeping log segment", &s.path, e))?;
                s.path = to;
                inner.kept.insert(first, s);
                kept_dirty = true;
            } else {
                fs::remove_file(&s.path).map_err(|e| io_err("removing log segment", &s.path, e))?;
            }
            inner.dir_dirty = true;
        }
        if let Some(pins) = inner.pins.clone() {
            let unpinned: Vec<u64> = inner
                .kept
                .keys()
                .filter(|f| !pins.contains(f) && !inner.held.contains_key(f))
                .copied()
                .collect();
            for first in unpinned {
                let s = inner.kept.remove(&first).expect("listed");
                fs::remove_file(&s.path)
                    .map_err(|e| io_err("removing kept log segment", &s.path, e))?;
                kept_dirty = true;
            }
        }
        if kept_dirty {
            // Before the main directory's sync makes a move count.
            sync_dir(&kept_dir)?;
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

    /// Removes the file durably, if it exists.
    pub fn remove(&self) -> Result<(), StoreError> {
        match fs::remove_file(&self.path) {
            Ok(()) => sync_dir(self.path.parent().unwrap_or(Path::new("."))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("removing", &self.path, e)),
        }
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

    /// A new log with segments of `size` bytes, in a directory of its own.
    fn new_log(size: u64) -> (tempfile::TempDir, LogFiles) {
        let dir = tempfile::tempdir().unwrap();
        let log = LogFiles::open(dir.path(), size).unwrap();
        (dir, log)
    }

    /// Appends one entry per call, as openraft does, so segments rotate.
    fn append_each(log: &LogFiles, range: std::ops::Range<u64>) {
        for e in entries(range) {
            log.append(&[e]).unwrap();
        }
    }

    /// A closed log of entries `range` in one segment: its path and bytes.
    fn one_segment(dir: &Path, range: std::ops::Range<u64>) -> (PathBuf, Vec<u8>) {
        let log = LogFiles::open(dir, 1 << 20).unwrap();
        log.append(&entries(range)).unwrap();
        log.sync().unwrap();
        drop(log);
        let seg = segment_path(dir, 1);
        let bytes = fs::read(&seg).unwrap();
        (seg, bytes)
    }

    /// Closes a log of entries `range` in 100-byte segments, appended one
    /// by one so they rotate; returns how many segments it has.
    fn small_segments(dir: &Path, range: std::ops::Range<u64>) -> usize {
        let log = LogFiles::open(dir, 100).unwrap();
        append_each(&log, range);
        log.sync().unwrap();
        log.segment_count()
    }

    fn indexes(v: &[(u64, Vec<u8>)]) -> Vec<u64> {
        v.iter().map(|(i, _)| *i).collect()
    }

    #[test]
    fn appends_read_back_across_segments_and_reopen() {
        let (dir, log) = new_log(200);
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
    fn an_append_of_more_entries_than_one_vectored_write_takes_reads_back() {
        // 3 000 entries are 6 000 slices: several calls of at most UIO_MAXIOV (1 024).
        let (_dir, log) = new_log(1 << 20);
        log.append(&entries(1..3001)).unwrap();
        log.sync().unwrap();
        assert_eq!(log.read(1, 3001).unwrap(), entries(1..3001));
    }

    #[test]
    fn appends_must_follow_the_last_entry() {
        let (_dir, log) = new_log(1 << 20);
        log.append(&entries(7..9)).unwrap();
        assert!(log.append(&entries(10..11)).is_err());
        assert!(log.append(&[(9, vec![]), (11, vec![])]).is_err());
        assert_eq!(log.last_index(), Some(8));
    }

    /// End of the non-zero bytes of a segment file.
    fn data_end(bytes: &[u8]) -> usize {
        bytes.iter().rposition(|b| *b != 0).unwrap() + 1
    }

    #[test]
    fn segments_are_created_whole_at_their_size() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, bytes) = one_segment(dir.path(), 1..11);
        assert_eq!(bytes.len(), 1 << 20);
        assert_eq!(&bytes[..8], b"SLUICLOG");
        // A batch larger than the segment size gets a segment of its own.
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        log.append(&[(11, vec![7u8; 2 << 20])]).unwrap();
        log.sync().unwrap();
        assert_eq!(log.segment_count(), 2);
        let big = segment_path(dir.path(), 11);
        assert_eq!(
            fs::metadata(&big).unwrap().len(),
            SEGMENT_HEADER + HEADER as u64 + (2 << 20)
        );
        drop(log);
        assert_eq!(fs::read(&seg).unwrap(), bytes);
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(11));
    }

    #[test]
    fn a_torn_tail_is_zeroed_on_open() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, mut full) = one_segment(dir.path(), 1..11);
        // A crash in the middle of writing entry 10: its last bytes never
        // reached the disk.
        let end = data_end(&full);
        full[end - 3..end].fill(0);
        fs::write(&seg, &full).unwrap();
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(9));
        assert_eq!(fs::metadata(&seg).unwrap().len(), 1 << 20);
        log.append(&entries(10..12)).unwrap();
        assert_eq!(log.read(1, 12).unwrap(), entries(1..12));
    }

    #[test]
    fn a_segment_cut_short_is_damage_whose_end_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, full) = one_segment(dir.path(), 1..101);
        // Cut at a record boundary: what is left reads as a whole log.
        let record = (SEGMENT_HEADER as usize) + 9 * (HEADER + 7) + 40 * (HEADER + 8);
        fs::write(&seg, &full[..record]).unwrap();
        let d = damaged(LogFiles::open(dir.path(), 1 << 20));
        assert_eq!(
            (d.kind, d.first_lost, d.last_seen),
            (DamageKind::Truncated, 50, None)
        );
        assert!(d.to_string().contains("unknown"), "{d}");
        let (log, cut) =
            LogFiles::open_with(dir.path(), 1 << 20, OnDamage::CutAndSetAside).unwrap();
        assert_eq!(cut, Some(d));
        assert_eq!(log.last_index(), Some(49));
        assert_eq!(fs::metadata(&seg).unwrap().len(), 1 << 20);
        drop(log);
        assert_takes_again(dir.path(), 50..60);
    }

    #[test]
    fn a_damaged_segment_header_is_damage() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, mut full) = one_segment(dir.path(), 1..11);
        full[26] ^= 0x40;
        fs::write(&seg, &full).unwrap();
        let d = damaged(LogFiles::open(dir.path(), 1 << 20));
        assert_eq!((d.kind, d.offset, d.first_lost), (DamageKind::Header, 0, 1));
        // The last segment's size is unknown, and with it the log's end.
        assert_eq!(d.last_seen, None);
        let (log, _) = LogFiles::open_with(dir.path(), 1 << 20, OnDamage::CutAndSetAside).unwrap();
        assert_eq!(log.last_index(), None);
        assert!(!seg.exists(), "the segment went aside whole");
    }

    #[test]
    fn a_segment_of_the_earlier_format_is_refused_not_misread() {
        let dir = tempfile::tempdir().unwrap();
        // Format 1: records from offset 0, no header.
        let mut bytes = Vec::new();
        for (index, payload) in entries(1..4) {
            bytes.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            bytes.extend_from_slice(&crc(index, &payload).to_le_bytes());
            bytes.extend_from_slice(&index.to_le_bytes());
            bytes.extend_from_slice(&payload);
        }
        fs::write(segment_path(dir.path(), 1), bytes).unwrap();
        let Err(e) = LogFiles::open(dir.path(), 1 << 20) else {
            panic!("opened a segment of format 1");
        };
        assert!(e.to_string().contains("earlier Sluice"), "{e}");
    }

    #[test]
    fn a_half_created_segment_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        one_segment(dir.path(), 1..11);
        fs::write(new_segment_path(dir.path(), 11), b"SLUIC").unwrap();
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(10));
        assert!(!new_segment_path(dir.path(), 11).exists());
    }

    /// Checks that the log in `dir`, cut before `lost`, reopens cleanly
    /// and takes those entries again.
    fn assert_takes_again(dir: &Path, lost: std::ops::Range<u64>) {
        let log = LogFiles::open(dir, 1 << 20).unwrap();
        log.append(&entries(lost.clone())).unwrap();
        assert_eq!(log.read(1, 200).unwrap(), entries(1..lost.end));
    }

    fn damaged(result: Result<LogFiles, StoreError>) -> Damage {
        match result {
            Err(StoreError::LogDamaged(d)) => d,
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("opened a damaged log"),
        }
    }

    #[test]
    fn damage_in_a_sealed_segment_refuses_to_open() {
        let dir = tempfile::tempdir().unwrap();
        assert!(small_segments(dir.path(), 1..30) > 1);
        let seg = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&seg).unwrap();
        bytes[SEGMENT_HEADER as usize + HEADER + 2] ^= 0xff;
        fs::write(&seg, bytes).unwrap();
        let d = damaged(LogFiles::open(dir.path(), 100));
        assert_eq!(
            (d.kind, d.path, d.offset, d.first_lost, d.last_seen),
            (DamageKind::Record, seg, SEGMENT_HEADER, 1, Some(29))
        );
    }

    #[test]
    fn damage_followed_by_valid_records_is_not_taken_for_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, mut bytes) = one_segment(dir.path(), 1..101);
        let record = HEADER + b"entry-10".len();
        // 16 bytes flipped inside entry 40 (entries 1..10 are shorter).
        let first_record = SEGMENT_HEADER as usize;
        let at = first_record + 9 * (HEADER + 7) + 30 * record + 3;
        for b in &mut bytes[at..at + 16] {
            *b ^= 0xff;
        }
        fs::write(&seg, &bytes).unwrap();
        let d = damaged(LogFiles::open(dir.path(), 1 << 20));
        assert_eq!(d.first_lost, 40);
        assert_eq!(
            d.offset,
            (first_record + 9 * (HEADER + 7) + 30 * record) as u64
        );
        assert_eq!(d.last_seen, Some(100), "{d}");
        let text = d.to_string();
        assert!(
            text.contains(&seg.display().to_string()) && text.contains("offset"),
            "{text}"
        );
        // Nothing was changed by the refusal.
        assert_eq!(fs::read(&seg).unwrap(), bytes);

        // Cut at the damage, keeping the damaged files aside.
        let (log, cut) =
            LogFiles::open_with(dir.path(), 1 << 20, OnDamage::CutAndSetAside).unwrap();
        assert_eq!(cut, Some(d));
        assert_eq!(log.last_index(), Some(39));
        assert_eq!(log.read(1, 200).unwrap(), entries(1..40));
        let aside: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_dir() && p.file_name().unwrap() != KEPT_DIR)
            .collect();
        assert_eq!(aside.len(), 1);
        assert_eq!(
            fs::read(aside[0].join(seg.file_name().unwrap())).unwrap(),
            bytes
        );
        // The cut log reopens cleanly and takes the lost entries again.
        drop(log);
        assert_takes_again(dir.path(), 40..101);
    }

    #[test]
    fn damage_before_later_segments_is_cut_with_them_set_aside() {
        let dir = tempfile::tempdir().unwrap();
        assert!(small_segments(dir.path(), 1..60) > 3);
        let firsts = segment_firsts(dir.path()).unwrap();
        let second = segment_path(dir.path(), firsts[1]);
        let mut bytes = fs::read(&second).unwrap();
        // The last byte of its last record.
        let last = data_end(&bytes) - 1;
        bytes[last] ^= 1;
        fs::write(&second, &bytes).unwrap();
        let (log, cut) = LogFiles::open_with(dir.path(), 100, OnDamage::CutAndSetAside).unwrap();
        let cut = cut.expect("damage");
        assert_eq!(cut.last_seen, Some(59));
        assert_eq!(log.last_index(), Some(cut.first_lost - 1));
        assert_eq!(log.segment_count(), 2);
    }

    #[test]
    fn garbage_after_the_last_record_is_a_torn_write() {
        let dir = tempfile::tempdir().unwrap();
        let (seg, mut bytes) = one_segment(dir.path(), 1..11);
        let end = data_end(&bytes);
        for (i, b) in bytes[end..end + 5000].iter_mut().enumerate() {
            *b = ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8;
        }
        fs::write(&seg, &bytes).unwrap();
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(10));
        assert_eq!(data_end(&fs::read(&seg).unwrap()), end, "zeroed");
    }

    #[test]
    fn garbage_in_the_unused_end_of_a_sealed_segment_loses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        small_segments(dir.path(), 1..20);
        let first = segment_path(dir.path(), 1);
        let mut bytes = fs::read(&first).unwrap();
        let last = bytes.len() - 1;
        assert_eq!(bytes[last], 0, "the segment has room left at its end");
        bytes[last] = 0x5a;
        fs::write(&first, &bytes).unwrap();
        let log = LogFiles::open(dir.path(), 100).unwrap();
        assert_eq!(log.read(1, 100).unwrap(), entries(1..20));
    }

    #[test]
    fn truncate_removes_the_tail_durably() {
        let (dir, log) = new_log(120);
        append_each(&log, 1..40);
        log.truncate_from(17).unwrap();
        log.sync().unwrap();
        assert_eq!(log.last_index(), Some(16));
        log.append(&entries(17..19)).unwrap();
        log.sync().unwrap();
        drop(log);
        // The old tail (entries 19.. of the first write) does not come back.
        let log = LogFiles::open(dir.path(), 120).unwrap();
        assert_eq!(log.read(1, 100).unwrap(), entries(1..19));
        // Truncating everything leaves an empty log that accepts any index.
        log.truncate_from(1).unwrap();
        assert_eq!(log.last_index(), None);
        log.append(&entries(1..3)).unwrap();
        assert_eq!(log.last_index(), Some(2));
    }

    #[test]
    fn a_truncated_tail_does_not_come_back_after_a_shorter_rewrite() {
        let (dir, log) = new_log(1 << 20);
        log.append(&entries(1..40)).unwrap();
        log.sync().unwrap();
        log.truncate_from(20).unwrap();
        log.append(&entries(20..23)).unwrap();
        log.sync().unwrap();
        drop(log);
        let log = LogFiles::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(log.last_index(), Some(22));
    }

    #[test]
    fn purge_drops_whole_segments_only() {
        let (dir, log) = new_log(100);
        log.set_pins(BTreeSet::new());
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

    /// Segments held for a snapshot being sent outlive a purge that no
    /// pin asks to keep, live ones moved into `kept/`, until the hold is
    /// dropped.
    #[test]
    fn held_segments_outlive_purges_until_released() {
        let (_dir, log) = new_log(100);
        let log = Arc::new(log);
        append_each(&log, 1..40);
        let spans = log.spans();
        let (held, upto) = (spans[1], spans[2].last);
        let body = |i: u64| Some(format!("entry-{i}").into_bytes());
        let hold = log.hold_through(held.last);
        // A newer snapshot pins nothing.
        log.set_pins(BTreeSet::new());
        log.purge_through(upto).unwrap();
        assert_eq!(log.kept_count(), 2, "both segments through the hold");
        assert_eq!(log.read_retained(held.first).unwrap(), body(held.first));
        // A second hold on the same segments, released first, keeps nothing
        // beyond the first.
        let again = log.hold_through(held.last);
        drop(again);
        log.purge_through(upto).unwrap();
        assert_eq!(log.kept_count(), 2);
        drop(hold);
        log.purge_through(upto).unwrap();
        assert_eq!(log.kept_count(), 0);
        assert_eq!(log.read_retained(held.first).unwrap(), None);
    }

    /// A purge keeps a pinned segment, read-only in `kept/`, across a
    /// reopen (where, until told, every segment a purge takes is kept), and
    /// deletes it once it is no longer pinned.
    #[test]
    fn pinned_segments_are_kept_past_a_purge_until_unpinned() {
        let (dir, log) = new_log(100);
        append_each(&log, 1..40);
        let spans = log.spans();
        assert!(spans.len() > 3, "{spans:?}");
        let (gone, pinned, upto) = (spans[0], spans[1], spans[2].last);
        log.set_pins(BTreeSet::from([pinned.first]));
        log.purge_through(upto).unwrap();
        log.sync().unwrap();
        assert_eq!(log.kept_count(), 1);
        assert_eq!(log.first_index(), Some(upto + 1));
        let body = |i: u64| Some(format!("entry-{i}").into_bytes());
        assert_eq!(log.read_retained(pinned.last).unwrap(), body(pinned.last));
        assert_eq!(log.read_retained(gone.first).unwrap(), None);
        assert_eq!(log.read(1, upto + 1).unwrap(), vec![]);
        drop(log);

        let log = LogFiles::open(dir.path(), 100).unwrap();
        assert_eq!(log.kept_count(), 1);
        assert_eq!(log.spans()[0], pinned);
        assert_eq!(log.read_retained(pinned.first).unwrap(), body(pinned.first));
        // Not told yet what to keep: the next purge keeps its segment too.
        let next = log.spans()[1];
        log.purge_through(next.last).unwrap();
        assert_eq!(log.kept_count(), 2);
        log.set_pins(BTreeSet::new());
        log.purge_through(next.last).unwrap();
        log.sync().unwrap();
        assert_eq!(log.kept_count(), 0);
        assert_eq!(log.read_retained(pinned.first).unwrap(), None);
        assert_eq!(fs::read_dir(dir.path().join(KEPT_DIR)).unwrap().count(), 0);
    }

    /// A kept segment's damage is never served: a record damaged under a
    /// running node fails its read; after a reopen the damaged record and
    /// those after it are not served, and the rest still are.
    #[test]
    fn damage_in_a_kept_segment_is_never_served() {
        let (dir, log) = new_log(200);
        append_each(&log, 1..40);
        let kept = log.spans()[0];
        assert!(kept.last >= kept.first + 2, "{kept:?}");
        log.set_pins(BTreeSet::from([kept.first]));
        log.purge_through(kept.last).unwrap();
        log.sync().unwrap();
        let path = dir
            .path()
            .join(KEPT_DIR)
            .join(segment_path(dir.path(), kept.first).file_name().unwrap());
        let mut bytes = fs::read(&path).unwrap();
        let damaged = kept.first + 1;
        let needle = format!("entry-{damaged}");
        let at = bytes
            .windows(needle.len())
            .position(|w| w == needle.as_bytes())
            .unwrap();
        bytes[at] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let err = log.read_retained(damaged).unwrap_err();
        assert!(err.to_string().contains("checksum"), "{err}");
        drop(log);

        let log = LogFiles::open(dir.path(), 200).unwrap();
        assert_eq!(
            log.read_retained(kept.first).unwrap(),
            Some(format!("entry-{}", kept.first).into_bytes())
        );
        for i in damaged..=kept.last {
            assert_eq!(log.read_retained(i).unwrap(), None, "entry {i}");
        }
        // Reported for the node to repair, and set aside once it does.
        let damage = log.kept_damage().expect("reported");
        assert_eq!((damage.path, damage.first_lost), (path, damaged));
        let aside = log.set_kept_aside().unwrap().expect("moved");
        assert!(aside
            .join(segment_path(dir.path(), kept.first).file_name().unwrap())
            .exists());
        assert_eq!((log.kept_count(), log.kept_damage()), (0, None));
        drop(log);
        let log = LogFiles::open(dir.path(), 200).unwrap();
        assert_eq!((log.kept_count(), log.kept_damage()), (0, None));
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
