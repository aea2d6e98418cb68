//! An exclusive lock on a data directory, so two processes (two nodes, or
//! a node and `sluice recover`) never write the same files.

use std::fs::{File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Held while the directory is in use; released when dropped (or when the
/// process dies: the kernel drops `flock` locks with the file).
#[derive(Debug)]
pub struct DirLock {
    _file: File,
}

impl DirLock {
    /// Takes the lock on `dir/LOCK`, or says who may hold it.
    pub fn acquire(dir: &Path) -> Result<DirLock, String> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        // SAFETY: flock on a descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let e = std::io::Error::last_os_error();
            return Err(if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                format!(
                    "{} is in use by another sluice process (a running node, or sluice recover): stop it first",
                    dir.display()
                )
            } else {
                format!("{}: {e}", path.display())
            });
        }
        Ok(DirLock { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_until_the_first_lets_go() {
        let dir = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        assert!(err.contains("in use by another sluice process"), "{err}");
        drop(first);
        DirLock::acquire(dir.path()).unwrap();
    }
}
