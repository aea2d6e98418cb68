//! What openraft holds as a snapshot's data: the snapshot file, and for a
//! snapshot this node built, the log its bodies are read from when it is
//! sent to another node.
//!
//! A snapshot may only reference message bodies that this node's log still
//! holds (`kept_bodies`). What is sent carries them: [`SnapshotFile::send_to`]
//! streams the file's records and then a copy of each such body, read from
//! the log as it goes, in the snapshot format, so that nothing is written
//! twice on this node's disk.

use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::Arc;

use super::kept_bodies::{Hold, LoggedEntries};

/// A snapshot's data: a file on disk, and, for a snapshot this node made,
/// the log its message bodies are read from when it is sent.
#[derive(Clone)]
pub struct SnapshotFile {
    /// Where the file is.
    pub path: PathBuf,
    /// Set on a snapshot this node built: the bodies it only references
    /// (kept in this node's log) are read from there and streamed with it
    /// (`kept_bodies::with_bodies`). `None` on a received snapshot, which
    /// carries every body it names.
    pub bodies: Option<LogBodies>,
}

/// The log a snapshot this node built reads the bodies it only references
/// from, holding the segments that have them while the snapshot lives (a
/// newer snapshot's purge would otherwise delete them mid-send).
#[derive(Clone)]
pub struct LogBodies {
    log: Arc<dyn LoggedEntries>,
    _held: Arc<Hold>,
}

impl LogBodies {
    /// The bodies of a snapshot at `index`, read from `log`.
    pub fn through(log: Arc<dyn LoggedEntries>, index: u64) -> Self {
        let held = Arc::new(log.hold_through(index));
        LogBodies { log, _held: held }
    }
}

impl SnapshotFile {
    /// A snapshot file that carries every body it names.
    pub fn whole(path: PathBuf) -> Self {
        SnapshotFile { path, bodies: None }
    }

    /// Writes to `out` what is sent to another node: the file, with a copy
    /// of every body it only references read from [`Self::bodies`]. Blocks.
    pub fn send_to<W: Write>(&self, out: W) -> io::Result<W> {
        match &self.bodies {
            Some(bodies) => super::kept_bodies::with_bodies(&self.path, out, &*bodies.log)
                .map(|(_, out)| out)
                .map_err(io::Error::other),
            None => {
                let mut out = out;
                io::copy(&mut std::fs::File::open(&self.path)?, &mut out)?;
                out.flush()?;
                Ok(out)
            }
        }
    }
}

impl std::fmt::Debug for SnapshotFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotFile")
            .field("path", &self.path)
            .field("bodies_from_log", &self.bodies.is_some())
            .finish()
    }
}
