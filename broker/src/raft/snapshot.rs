//! Snapshot files.
//!
//! A snapshot is a file holding every key-value pair of the state machine at
//! one log index (with the kept copies of message bodies the log may then
//! drop, `raft::bodies`), so that the log before it can be purged and a lagging or new
//! node can catch up by installing it. Format, all integers little-endian:
//!
//! ```text
//! magic "SLUICE-SNAPSHOT2" (16 bytes)
//! u32 meta length, meta (postcard SnapshotMeta)
//! records: u32 key length (never 0xFFFFFFFF), key, u32 value length, value
//! u32 0xFFFFFFFF (end marker), u64 record count
//! u32 CRC-32 of every byte before it
//! ```
//!
//! Files are written under a temporary name, fsynced, renamed into place and
//! the directory fsynced, so a snapshot that exists is complete and durable.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use openraft::SnapshotMeta;

use super::{Node, NodeId};
use crate::store::codec;

const MAGIC: &[u8; 16] = b"SLUICE-SNAPSHOT2";
const END: u32 = u32::MAX;
/// Largest key or value a snapshot may hold; guards allocations when reading
/// a damaged file before its checksum can be verified.
const MAX_FIELD: u32 = sluice_core::limits::replication::SNAPSHOT_FIELD_MAX;

/// Metadata of a snapshot.
pub type Meta = SnapshotMeta<NodeId, Node>;

/// Writes a snapshot: to a file ([`SnapshotWriter::create`]) or, as it is
/// sent, to any sink ([`SnapshotWriter::to`]).
pub struct SnapshotWriter<W: Write = BufWriter<File>> {
    out: W,
    crc: crc32fast::Hasher,
    count: u64,
}

impl SnapshotWriter {
    /// Creates `path` and writes the header.
    pub fn create(path: &Path, meta: &Meta) -> io::Result<Self> {
        let file = File::create(path)?;
        SnapshotWriter::to(BufWriter::with_capacity(1 << 20, file), meta)
    }

    /// Writes the trailer and fsyncs the file.
    pub fn finish(self) -> io::Result<u64> {
        let (count, out) = self.end()?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        Ok(count)
    }
}

impl<W: Write> SnapshotWriter<W> {
    /// Writes the header to `out`.
    pub fn to(out: W, meta: &Meta) -> io::Result<Self> {
        let mut w = SnapshotWriter {
            out,
            crc: crc32fast::Hasher::new(),
            count: 0,
        };
        w.write(MAGIC)?;
        let meta = codec::encode(meta);
        w.write(&(meta.len() as u32).to_le_bytes())?;
        w.write(&meta)?;
        Ok(w)
    }

    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.crc.update(bytes);
        self.out.write_all(bytes)
    }

    /// Appends one key-value pair.
    pub fn record(&mut self, key: &[u8], value: &[u8]) -> io::Result<()> {
        if key.len() as u64 >= u64::from(MAX_FIELD) || value.len() as u64 >= u64::from(MAX_FIELD) {
            return Err(io::Error::other("snapshot record larger than 256 MiB"));
        }
        self.write(&(key.len() as u32).to_le_bytes())?;
        self.write(key)?;
        self.write(&(value.len() as u32).to_le_bytes())?;
        self.write(value)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the trailer and flushes; returns the record count and the
    /// sink.
    pub fn end(mut self) -> io::Result<(u64, W)> {
        self.write(&END.to_le_bytes())?;
        let count = self.count;
        self.write(&count.to_le_bytes())?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.flush()?;
        Ok((count, self.out))
    }
}

/// Reads a snapshot file, verifying it as it goes.
pub struct SnapshotReader {
    input: BufReader<File>,
    crc: crc32fast::Hasher,
    count: u64,
    done: bool,
}

fn corrupt(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("corrupt snapshot: {what}"),
    )
}

impl SnapshotReader {
    /// Opens `path` and reads its header.
    pub fn open(path: &Path) -> io::Result<(Self, Meta)> {
        let mut r = SnapshotReader {
            input: BufReader::with_capacity(1 << 20, File::open(path)?),
            crc: crc32fast::Hasher::new(),
            count: 0,
            done: false,
        };
        let magic = r.read_exact(16)?;
        if magic != MAGIC {
            if magic.starts_with(b"SLUICE-SNAPSHOT") {
                return Err(corrupt(format!(
                    "a snapshot of another format ({}); this Sluice reads {} only",
                    String::from_utf8_lossy(&magic),
                    String::from_utf8_lossy(MAGIC)
                )));
            }
            return Err(corrupt("not a Sluice snapshot (bad magic)"));
        }
        let len = r.read_u32()?;
        if len > MAX_FIELD {
            return Err(corrupt("metadata too large"));
        }
        let meta = r.read_exact(len as usize)?;
        let meta: Meta = codec::decode_message("snapshot metadata", &meta).map_err(corrupt)?;
        Ok((r, meta))
    }

    fn read_exact(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; n];
        self.input.read_exact(&mut buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                corrupt("truncated: it ends before its trailer (a file cut short, or a stream whose sender stopped)")
            } else {
                e
            }
        })?;
        self.crc.update(&buf);
        Ok(buf)
    }

    fn read_u32(&mut self) -> io::Result<u32> {
        let b = self.read_exact(4)?;
        Ok(u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }

    /// The next key-value pair, or `None` after the last one once the trailer
    /// and checksum have been verified.
    pub fn next_record(&mut self) -> io::Result<Option<(Vec<u8>, Vec<u8>)>> {
        if self.done {
            return Ok(None);
        }
        let klen = self.read_u32()?;
        if klen == END {
            let count = u64::from_le_bytes(self.read_exact(8)?.try_into().expect("8 bytes"));
            if count != self.count {
                return Err(corrupt(format!(
                    "trailer says {count} records, read {}",
                    self.count
                )));
            }
            let expected = self.crc.clone().finalize();
            let mut crc = [0; 4];
            self.input
                .read_exact(&mut crc)
                .map_err(|_| corrupt("missing checksum"))?;
            if u32::from_le_bytes(crc) != expected {
                return Err(corrupt("checksum mismatch"));
            }
            self.done = true;
            return Ok(None);
        }
        if klen > MAX_FIELD {
            return Err(corrupt("key too large"));
        }
        let key = self.read_exact(klen as usize)?;
        let vlen = self.read_u32()?;
        if vlen > MAX_FIELD {
            return Err(corrupt("value too large"));
        }
        let value = self.read_exact(vlen as usize)?;
        self.count += 1;
        Ok(Some((key, value)))
    }
}

/// Reads a whole snapshot file to check it, returning its metadata.
pub fn verify(path: &Path) -> io::Result<Meta> {
    let (mut r, meta) = SnapshotReader::open(path)?;
    while r.next_record()?.is_some() {}
    Ok(meta)
}

/// The directory holding a node's snapshots: the current one, and files
/// being written or received.
#[derive(Debug)]
pub struct SnapshotDir {
    dir: PathBuf,
    seq: AtomicU64,
}

impl SnapshotDir {
    /// Opens `dir`, creating it, and removes files left half-written by an
    /// earlier run, and the copies with bodies an earlier version wrote to
    /// send (`.send`; bodies are now streamed as a snapshot is sent).
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "tmp" || e == "send") {
                fs::remove_file(&path)?;
            }
        }
        Ok(SnapshotDir {
            dir: dir.to_path_buf(),
            seq: AtomicU64::new(0),
        })
    }

    /// A fresh path for a file being written; it is removed on restart unless
    /// published.
    pub fn temp_path(&self, tag: &str) -> PathBuf {
        let n = self.seq.fetch_add(1, Ordering::Relaxed);
        self.dir
            .join(format!("{tag}-{}-{n}.tmp", std::process::id()))
    }

    /// Moves a complete, fsynced snapshot file into place as the current
    /// snapshot and removes older ones.
    pub fn publish(&self, tmp: &Path, meta: &Meta) -> io::Result<PathBuf> {
        let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
        let id: String = meta
            .snapshot_id
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect();
        let path = self.dir.join(format!("snap-{index:020}-{id}.snap"));
        fs::rename(tmp, &path)?;
        File::open(&self.dir)?.sync_all()?;
        for entry in fs::read_dir(&self.dir)? {
            let other = entry?.path();
            if other != path && other.extension().is_some_and(|e| e == "snap") {
                fs::remove_file(&other)?;
            }
        }
        Ok(path)
    }

    /// Checks every snapshot file whole (its checksum), moving a damaged
    /// one aside as `*.snap.damaged`; returns what was damaged and why.
    pub fn set_aside_damaged(&self) -> io::Result<Vec<(PathBuf, String)>> {
        let mut damaged = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "snap") {
                continue;
            }
            if let Err(e) = verify(&path) {
                if e.kind() != io::ErrorKind::InvalidData {
                    return Err(e);
                }
                damaged.push((path, e));
            }
        }
        if !damaged.is_empty() {
            // Only the newest damaged files are kept, for diagnosis: each
            // is as large as the state. Housekeeping: a failure here (on a
            // disk already found damaged) must not stop the node.
            if let Err(e) = self.remove_damaged() {
                tracing::warn!(error = %e, "could not remove an older damaged snapshot file");
            }
        }
        for (path, e) in &damaged {
            let aside = path.with_extension("snap.damaged");
            fs::rename(path, &aside)?;
            File::open(&self.dir)?.sync_all()?;
            tracing::error!(snapshot = %path.display(), error = %e, moved_to = %aside.display(), "a snapshot file is damaged");
            metrics::counter!("sluice_snapshot_damage_found_total").increment(1);
        }
        Ok(damaged
            .into_iter()
            .map(|(path, e)| (path, e.to_string()))
            .collect())
    }

    fn remove_damaged(&self) -> io::Result<()> {
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.to_string_lossy().ends_with(".snap.damaged") {
                tracing::warn!(snapshot = %path.display(), "removing an older damaged snapshot file");
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Removes every snapshot at or past entry `first_lost`: such a
    /// snapshot may name message bodies that only entries from
    /// `first_lost` on held, and the log is being cut there. Returns the
    /// snapshots removed.
    pub fn remove_from(&self, first_lost: u64) -> io::Result<Vec<Meta>> {
        let mut removed = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "snap") {
                continue;
            }
            let meta = match SnapshotReader::open(&path) {
                Ok((_, meta)) => meta,
                // Damaged: `set_aside_damaged` deals with it.
                Err(e) if e.kind() == io::ErrorKind::InvalidData => continue,
                Err(e) => return Err(e),
            };
            if meta.last_log_id.is_none_or(|l| l.index < first_lost) {
                continue;
            }
            fs::remove_file(&path)?;
            removed.push(meta);
        }
        if !removed.is_empty() {
            File::open(&self.dir)?.sync_all()?;
        }
        Ok(removed)
    }

    /// The current snapshot, if there is one.
    pub fn latest(&self) -> io::Result<Option<(Meta, PathBuf)>> {
        let mut best: Option<(Meta, PathBuf)> = None;
        for entry in fs::read_dir(&self.dir)? {
            let path = entry?.path();
            if path.extension().is_none_or(|e| e != "snap") {
                continue;
            }
            let (_, meta) = SnapshotReader::open(&path)?;
            if best
                .as_ref()
                .is_none_or(|(m, _)| m.last_log_id < meta.last_log_id)
            {
                best = Some((meta, path));
            }
        }
        Ok(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, LogId, StoredMembership};

    fn meta(index: u64) -> Meta {
        Meta {
            last_log_id: Some(LogId::new(CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("1-1-{index}"),
        }
    }

    /// A snapshot writer at `path` for `meta(index)` that holds the
    /// records `i` (big-endian) => `value(i)` for `i` in `0..count`.
    fn writer_with(
        path: &Path,
        index: u64,
        count: u32,
        value: impl Fn(u32) -> Vec<u8>,
    ) -> SnapshotWriter {
        let mut w = SnapshotWriter::create(path, &meta(index)).unwrap();
        for i in 0..count {
            w.record(&i.to_be_bytes(), &value(i)).unwrap();
        }
        w
    }

    #[test]
    fn round_trips_records_and_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.tmp");
        let mut w = writer_with(&path, 7, 1000, |i| format!("value-{i}").into_bytes());
        w.record(b"empty", b"").unwrap();
        assert_eq!(w.finish().unwrap(), 1001);
        let (mut r, m) = SnapshotReader::open(&path).unwrap();
        assert_eq!(m, meta(7));
        let mut n = 0;
        while let Some((k, v)) = r.next_record().unwrap() {
            if n < 1000 {
                assert_eq!(k, (n as u32).to_be_bytes());
                assert_eq!(v, format!("value-{n}").into_bytes());
            } else {
                assert_eq!((k.as_slice(), v.as_slice()), (&b"empty"[..], &b""[..]));
            }
            n += 1;
        }
        assert_eq!(n, 1001);
    }

    #[test]
    fn detects_a_flipped_byte_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.tmp");
        writer_with(&path, 3, 100, |_| b"payload payload".to_vec())
            .finish()
            .unwrap();
        let good = fs::read(&path).unwrap();

        let mut flipped = good.clone();
        let mid = flipped.len() / 2;
        flipped[mid] ^= 0x40;
        fs::write(&path, &flipped).unwrap();
        let err = verify(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");

        fs::write(&path, &good[..good.len() - 10]).unwrap();
        let err = verify(&path).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");

        fs::write(&path, &good).unwrap();
        assert_eq!(verify(&path).unwrap(), meta(3));
    }

    #[test]
    fn publish_keeps_only_the_newest_and_cleans_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        for index in [5, 9] {
            let tmp = snaps.temp_path("build");
            SnapshotWriter::create(&tmp, &meta(index))
                .unwrap()
                .finish()
                .unwrap();
            snaps.publish(&tmp, &meta(index)).unwrap();
        }
        let stray = snaps.temp_path("recv");
        fs::write(&stray, b"half").unwrap();
        let (m, path) = snaps.latest().unwrap().unwrap();
        assert_eq!(m, meta(9));
        assert!(path.exists());
        let reopened = SnapshotDir::open(dir.path()).unwrap();
        assert!(!stray.exists());
        let files: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1);
        assert_eq!(reopened.latest().unwrap().unwrap().0, meta(9));
    }

    #[test]
    fn only_the_newest_damaged_snapshots_are_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let snaps = SnapshotDir::open(dir.path()).unwrap();
        let mut aside = Vec::new();
        for index in [5, 9] {
            let tmp = snaps.temp_path("build");
            writer_with(&tmp, index, 10, |_| b"v".to_vec())
                .finish()
                .unwrap();
            let path = snaps.publish(&tmp, &meta(index)).unwrap();
            let mut bytes = fs::read(&path).unwrap();
            let last = bytes.len() - 1;
            bytes[last] ^= 1;
            fs::write(&path, bytes).unwrap();
            let damaged = snaps.set_aside_damaged().unwrap();
            assert_eq!(damaged.len(), 1);
            aside.push(path.with_extension("snap.damaged"));
        }
        assert!(!aside[0].exists(), "the older damaged file is removed");
        assert!(aside[1].exists(), "the newest is kept");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
