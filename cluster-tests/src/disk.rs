//! Small filesystems for disk-full tests: free space, and ballast that
//! fills a filesystem to a chosen free space.

use std::io::Write;
use std::path::{Path, PathBuf};

/// The name of the ballast file [`fill`] writes.
pub const BALLAST: &str = "ballast";

/// Free bytes on the filesystem of `dir`.
pub fn free_bytes(dir: &Path) -> Result<u64, String> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: statvfs writes into the struct it is given.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    Ok(s.f_bavail * s.f_frsize)
}

/// Writes `dir/ballast` until about `leave` bytes are free on its
/// filesystem (or it is full); returns the file and the bytes written.
pub fn fill(dir: &Path, leave: u64) -> Result<(PathBuf, u64), String> {
    let take = free_bytes(dir)?.saturating_sub(leave);
    let ballast = dir.join(BALLAST);
    let file =
        std::fs::File::create(&ballast).map_err(|e| format!("{}: {e}", ballast.display()))?;
    let mut out = std::io::BufWriter::new(file);
    let chunk = vec![0x5a_u8; 1 << 20];
    let mut written = 0u64;
    while written < take {
        let n = chunk.len().min((take - written) as usize);
        if out.write_all(&chunk[..n]).is_err() {
            break;
        }
        written += n as u64;
    }
    let _ = out.flush();
    Ok((ballast, written))
}
