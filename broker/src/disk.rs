//! Free space on the data directory's filesystem.
//!
//! A node whose disk fills must not turn into a zombie: it refuses new
//! writes while the free space is below a reserve (`--disk-reserve-mb`),
//! keeps serving reads, and takes writes again by itself once space is
//! freed. The reserve is room for what the node writes without being asked
//! (entries a leader replicates to it, votes, snapshots, the state store's
//! own flushes), so that those rarely meet `ENOSPC` at all; when one does,
//! the log append waits for space rather than fail (see
//! [`crate::raft::log_store`]).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// How often the free space is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(250);

/// The default reserve, bytes.
pub const RESERVE_DEFAULT: u64 = 256 << 20;

/// Watches the free space of one directory's filesystem.
#[derive(Debug)]
pub struct DiskGuard {
    dir: PathBuf,
    reserve: u64,
    full: AtomicBool,
    free: AtomicU64,
}

/// Free bytes for unprivileged writers on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statvfs only writes into the struct it is given; `path` is
    // a valid C string for the call's duration.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(s.f_bavail as u64 * s.f_frsize as u64)
}

/// True for the error a full disk gives.
pub fn is_enospc(e: &std::io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOSPC) || e.raw_os_error() == Some(libc::EDQUOT)
}

impl DiskGuard {
    /// Watches `dir`, refusing writes below `reserve` free bytes.
    pub fn new(dir: &Path, reserve: u64) -> Arc<Self> {
        let guard = Arc::new(DiskGuard {
            dir: dir.to_path_buf(),
            reserve,
            full: AtomicBool::new(false),
            free: AtomicU64::new(u64::MAX),
        });
        guard.sample();
        guard
    }

    /// The directory watched.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether writes are refused now, with the free bytes last seen.
    pub fn full(&self) -> Option<u64> {
        self.full
            .load(Ordering::Acquire)
            .then(|| self.free.load(Ordering::Relaxed))
    }

    /// The reserve, bytes.
    pub fn reserve(&self) -> u64 {
        self.reserve
    }

    /// A write failed for want of space: refuse writes from now until the
    /// next sample finds room.
    pub fn hit_enospc(&self) {
        self.free.store(0, Ordering::Relaxed);
        self.set_full(true, 0);
    }

    fn set_full(&self, full: bool, free: u64) {
        if self.full.swap(full, Ordering::AcqRel) == full {
            return;
        }
        let dir = self.dir.display().to_string();
        metrics::gauge!("sluice_disk_full", "dir" => dir.clone()).set(if full { 1.0 } else { 0.0 });
        if full {
            tracing::error!(
                dir = %dir,
                free_bytes = free,
                reserve_bytes = self.reserve,
                "disk full: the data directory's filesystem has less free space than the reserve; refusing writes until space is freed (reads go on)"
            );
        } else {
            tracing::info!(dir = %dir, free_bytes = free, "disk space is back: taking writes again");
        }
    }

    /// Samples the free space once.
    pub fn sample(&self) {
        match free_bytes(&self.dir) {
            Ok(free) => {
                self.free.store(free, Ordering::Relaxed);
                metrics::gauge!("sluice_disk_free_bytes", "dir" => self.dir.display().to_string())
                    .set(free as f64);
                self.set_full(free < self.reserve, free);
            }
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the free disk space")
            }
        }
    }

    /// Samples the free space every [`SAMPLE_EVERY`].
    pub fn spawn(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let guard = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SAMPLE_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let g = guard.clone();
                let _ = tokio::task::spawn_blocking(move || g.sample()).await;
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_above_the_free_space_refuses_writes_and_enospc_does_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0);
        let roomy = DiskGuard::new(dir.path(), 0);
        assert_eq!(roomy.full(), None);
        roomy.hit_enospc();
        assert_eq!(roomy.full(), Some(0));
        roomy.sample();
        assert_eq!(roomy.full(), None, "space found again");
        let tight = DiskGuard::new(dir.path(), u64::MAX);
        assert!(tight.full().is_some());
        assert!(is_enospc(&std::io::Error::from_raw_os_error(libc::ENOSPC)));
    }
}
