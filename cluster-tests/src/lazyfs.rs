//! Simulated power loss under a node's data directory, in the manner of
//! LazyFS: the `sluice-lazyfs` FUSE filesystem holds every write to a file in
//! its own memory until the file is fsynced, and on a `crash` command throws
//! away whatever was not.
//!
//! This module has the two halves that are not FUSE plumbing:
//!
//! - [`Pending`], a file's unsynced writes and truncations, kept as a sorted
//!   map of extents and read merged over the backing file (used by the
//!   `sluice-lazyfs` binary, and testable without a mount);
//! - [`LazyFs`], the harness side: start the binary over a backing
//!   directory, wait for its mount, send it `crash` and `stats`, unmount it.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The unsynced state of one file: writes and truncations made since its
/// last fsync, to be laid over the backing file's content.
///
/// The file's logical content is: the backing file's bytes below `keep`
/// (what no truncation since the last sync has cut off), zeros elsewhere,
/// with the extents on top, all cut at `size`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Logical size of the file.
    size: u64,
    /// Backing bytes at and above this offset were truncated away (`u64::MAX`
    /// when no truncation is pending).
    keep: u64,
    /// Unsynced data by offset: never overlapping nor touching one another.
    extents: BTreeMap<u64, Vec<u8>>,
    /// Sum of the extents' lengths.
    bytes: u64,
}

impl Pending {
    /// Nothing pending yet over a backing file of `backing_len` bytes.
    pub fn new(backing_len: u64) -> Pending {
        Pending {
            size: backing_len,
            keep: u64::MAX,
            extents: BTreeMap::new(),
            bytes: 0,
        }
    }

    /// The file's logical size.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes of unsynced data held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Number of extents held (separate runs of unsynced data).
    pub fn extents(&self) -> usize {
        self.extents.len()
    }

    /// Records a write of `data` at `offset`. Panics if the end overflows
    /// (callers check it first).
    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        let end = offset
            .checked_add(data.len() as u64)
            .expect("write end overflows");
        self.size = self.size.max(end);
        // The extents this write overlaps or touches: a run of neighbours,
        // from the one starting at or before `offset` (if it reaches it) to
        // the last one starting at or before `end`.
        let from = match self.extents.range(..=offset).next_back() {
            Some((&start, d)) if start + d.len() as u64 >= offset => start,
            _ => offset,
        };
        let keys: Vec<u64> = self.extents.range(from..=end).map(|(&k, _)| k).collect();
        let Some(&first) = keys.first() else {
            self.extents.insert(offset, data.to_vec());
            self.bytes += data.len() as u64;
            return;
        };
        let last = *keys.last().expect("non-empty");
        let last_end = last + self.extents[&last].len() as u64;
        let start = first.min(offset);
        let new_end = last_end.max(end);
        // Grow the first extent in place when it starts the merged one: a
        // run of appends then costs amortised copies of the new data only.
        let mut merged = if first == start {
            let d = self.extents.remove(&first).expect("key listed");
            self.bytes -= d.len() as u64;
            d
        } else {
            Vec::new()
        };
        merged.resize((new_end - start) as usize, 0);
        for k in keys {
            if let Some(d) = self.extents.remove(&k) {
                self.bytes -= d.len() as u64;
                let at = (k - start) as usize;
                merged[at..at + d.len()].copy_from_slice(&d);
            }
        }
        let at = (offset - start) as usize;
        merged[at..at + data.len()].copy_from_slice(data);
        self.bytes += merged.len() as u64;
        self.extents.insert(start, merged);
    }

    /// Records a truncation (or extension) to `size` bytes.
    pub fn truncate(&mut self, size: u64) {
        self.size = size;
        self.keep = self.keep.min(size);
        let cut = self.extents.split_off(&size);
        self.bytes -= cut.values().map(|d| d.len() as u64).sum::<u64>();
        if let Some((&start, d)) = self.extents.iter_mut().next_back() {
            let len = d.len() as u64;
            if start + len > size {
                let keep = (size - start) as usize;
                d.truncate(keep);
                d.shrink_to_fit();
                self.bytes -= len - keep as u64;
            }
        }
    }

    /// Reads up to `len` bytes at `offset` of the logical content, the
    /// pending data merged over `backing`'s.
    pub fn read(&self, backing: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        if offset >= self.size {
            return Ok(Vec::new());
        }
        let end = self.size.min(offset.saturating_add(len as u64));
        let mut buf = vec![0u8; (end - offset) as usize];
        let backing_end = end.min(self.keep);
        if backing_end > offset {
            read_full_at(backing, &mut buf[..(backing_end - offset) as usize], offset)?;
        }
        let from = match self.extents.range(..=offset).next_back() {
            Some((&start, _)) => start,
            None => offset,
        };
        for (&start, d) in self.extents.range(from..end) {
            let d_end = start + d.len() as u64;
            let lo = start.max(offset);
            let hi = d_end.min(end);
            if lo < hi {
                buf[(lo - offset) as usize..(hi - offset) as usize]
                    .copy_from_slice(&d[(lo - start) as usize..(hi - start) as usize]);
            }
        }
        Ok(buf)
    }

    /// Writes the pending state into `backing` (not synced: the caller
    /// fsyncs). After it succeeds the backing file has the logical content.
    pub fn apply(&self, backing: &File) -> io::Result<()> {
        if self.keep != u64::MAX && backing.metadata()?.len() > self.keep {
            backing.set_len(self.keep)?;
        }
        for (&start, d) in &self.extents {
            backing.write_all_at(d, start)?;
        }
        if backing.metadata()?.len() != self.size {
            backing.set_len(self.size)?;
        }
        Ok(())
    }
}

/// Fills `buf` from `file` at `offset`, leaving zeros past its end;
/// returns the bytes read.
pub fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Why a `sluice-lazyfs` mount cannot be made here, if it cannot: it needs
/// root and `/dev/fuse`.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not running as root".into());
    }
    if let Err(e) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
    {
        return Some(format!("cannot open /dev/fuse: {e}"));
    }
    None
}

/// A running `sluice-lazyfs`, mounted. Dropping it unmounts it.
#[derive(Debug)]
pub struct LazyFs {
    child: Option<Child>,
    mount: PathBuf,
    control: PathBuf,
}

impl LazyFs {
    /// Mounts a lazy view of `backing` at `mount`, controlled through the
    /// Unix socket `control`, and waits until the mount is ready.
    pub fn start(backing: &Path, mount: &Path, control: &Path) -> io::Result<LazyFs> {
        Self::start_with(&crate::binary("sluice-lazyfs"), backing, mount, control)
    }

    /// Like [`LazyFs::start`], with the binary's path given.
    pub fn start_with(
        binary: &Path,
        backing: &Path,
        mount: &Path,
        control: &Path,
    ) -> io::Result<LazyFs> {
        let mut child = Command::new(binary)
            .arg("--backing")
            .arg(backing)
            .arg("--mount")
            .arg(mount)
            .arg("--control")
            .arg(control)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let res = reader.read_line(&mut line).map(|_| line);
            let _ = tx.send(res);
            // Keep the pipe open (and drained) for the process's lifetime.
            let _ = io::copy(&mut reader, &mut io::sink());
        });
        let mut fs = LazyFs {
            child: Some(child),
            mount: mount.to_path_buf(),
            control: control.to_path_buf(),
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(line)) if line.trim() == "mounted" => Ok(fs),
            Ok(Ok(line)) => {
                let status = fs.stop().ok();
                Err(io::Error::other(format!(
                    "sluice-lazyfs did not mount (said {line:?}, exited {status:?})"
                )))
            }
            Ok(Err(e)) => {
                let _ = fs.stop();
                Err(e)
            }
            Err(_) => {
                let _ = fs.stop();
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "sluice-lazyfs did not mount within 30s",
                ))
            }
        }
    }

    /// The mount point.
    pub fn mount_point(&self) -> &Path {
        &self.mount
    }

    /// Sends one command line and returns the answer line, trimmed.
    pub fn command(&self, cmd: &str) -> io::Result<String> {
        let mut s = UnixStream::connect(&self.control)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(format!("{cmd}\n").as_bytes())?;
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line)?;
        Ok(line.trim().to_string())
    }

    /// Discards every unsynced write and truncation, as a power loss would.
    pub fn crash(&self) -> io::Result<()> {
        match self.command("crash")? {
            ok if ok == "ok" => Ok(()),
            other => Err(io::Error::other(format!("crash answered {other:?}"))),
        }
    }

    /// Files with unsynced changes, and bytes of unsynced data.
    pub fn stats(&self) -> io::Result<(u64, u64)> {
        let line = self.command("stats")?;
        let words: Vec<&str> = line.split_whitespace().collect();
        match words[..] {
            ["pending_files", files, "pending_bytes", bytes] => {
                let parse = |s: &str| s.parse::<u64>().map_err(io::Error::other);
                Ok((parse(files)?, parse(bytes)?))
            }
            _ => Err(io::Error::other(format!("stats answered {line:?}"))),
        }
    }

    /// Unmounts (SIGTERM) and waits for the process to exit; kills it if it
    /// has not within 20 seconds.
    pub fn stop(&mut self) -> io::Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            return Err(io::Error::other("already stopped"));
        };
        // SAFETY: kill has no memory preconditions; the pid is our child's,
        // not yet reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let status = child.wait()?;
                // Whatever it left behind.
                if let Ok(c) = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(
                    self.mount.as_os_str(),
                )) {
                    // SAFETY: a valid NUL-terminated path.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("sluice-lazyfs did not exit on SIGTERM ({status})"),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
    }
}
