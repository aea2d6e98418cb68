//! Memory caps with cgroup v2, where the worker may use it.
//!
//! A worker whose cgroup (v2, the unified hierarchy at `/sys/fs/cgroup`)
//! offers the memory controller and is delegated to it (the root of its
//! cgroup namespace, as in a container, or marked with the
//! `trusted.delegate`/`user.delegate` attribute, as systemd's `Delegate=`
//! does) moves itself into a
//! leaf `worker` child, enables the memory controller for its children,
//! and gives each execution environment a child cgroup whose `memory.max`
//! is the function's memory size: the kernel then kills the function when
//! its resident memory passes the cap, as Lambda does. Anywhere else
//! (cgroup v1, no delegation, not allowed to write) environments are
//! capped with `RLIMIT_DATA` instead (`environment`), which limits the
//! memory a process may allocate rather than what it keeps resident.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const ROOT: &str = "/sys/fs/cgroup";

/// The cgroup directory environments are created under, if usable.
pub fn base() -> Option<&'static Path> {
    static BASE: OnceLock<Option<PathBuf>> = OnceLock::new();
    BASE.get_or_init(|| match setup() {
        Ok(p) => {
            tracing::info!(cgroup = %p.display(), "capping function memory with cgroup v2");
            Some(p)
        }
        Err(why) => {
            tracing::info!(%why, "capping function memory with RLIMIT_DATA (cgroup v2 not usable)");
            None
        }
    })
    .as_deref()
}

/// The worker's own cgroup v2 path from `/proc/self/cgroup` (the `0::`
/// line), if it is in the unified hierarchy.
pub fn own_path(proc_self_cgroup: &str) -> Option<&str> {
    proc_self_cgroup
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::trim)
}

/// Whether a `cgroup.controllers` file offers the memory controller.
pub fn offers_memory(controllers: &str) -> bool {
    controllers.split_whitespace().any(|c| c == "memory")
}

fn setup() -> Result<PathBuf, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").map_err(|e| e.to_string())?;
    let path = own_path(&own).ok_or("not in a cgroup v2 hierarchy")?;
    let base = Path::new(ROOT).join(path.trim_start_matches('/'));
    let controllers = std::fs::read_to_string(base.join("cgroup.controllers"))
        .map_err(|e| format!("{}: {e}", base.join("cgroup.controllers").display()))?;
    if !offers_memory(&controllers) {
        return Err(format!("{} offers no memory controller", base.display()));
    }
    if path != "/" && !delegated(&base) {
        return Err(format!(
            "{} is not delegated to the worker (not a namespace root, no delegate attribute)",
            base.display()
        ));
    }
    // No process may sit in a cgroup whose controllers are enabled for its
    // children: the worker moves into a leaf of its own first.
    let leaf = base.join("worker");
    std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
    std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("moving into {}: {e}", leaf.display()))?;
    if let Err(e) = std::fs::write(base.join("cgroup.subtree_control"), "+memory") {
        // Back where it was, as if nothing happened.
        let _ = std::fs::write(base.join("cgroup.procs"), std::process::id().to_string());
        return Err(format!("enabling memory in {}: {e}", base.display()));
    }
    Ok(base)
}

/// Whether a cgroup carries a delegation attribute.
fn delegated(dir: &Path) -> bool {
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    ["trusted.delegate", "user.delegate"].iter().any(|name| {
        let name = std::ffi::CString::new(*name).expect("no NUL");
        let mut value = [0u8; 8];
        // SAFETY: valid NUL-terminated strings and a buffer of the length
        // given.
        let n = unsafe {
            libc::getxattr(
                path.as_ptr(),
                name.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        n > 0 && value[0] == b'1'
    })
}

/// A cgroup for one environment, capped at `memory_mb` with no swap; the
/// `cgroup.procs` file the child writes itself into is returned with it.
pub fn create(name: &str, memory_mb: u32) -> Option<(PathBuf, PathBuf)> {
    let dir = base()?.join(format!("env-{name}"));
    let made = std::fs::create_dir(&dir)
        .and_then(|()| {
            std::fs::write(
                dir.join("memory.max"),
                (u64::from(memory_mb) << 20).to_string(),
            )
        })
        .map(|()| {
            // Not every kernel has swap accounting; the cap holds without.
            let _ = std::fs::write(dir.join("memory.swap.max"), "0");
        });
    match made {
        Ok(()) => Some((dir.clone(), dir.join("cgroup.procs"))),
        Err(e) => {
            tracing::warn!(cgroup = %dir.display(), error = %e, "could not create an environment cgroup");
            let _ = std::fs::remove_dir(&dir);
            None
        }
    }
}

/// Removes an environment's cgroup (its processes must be gone).
pub fn remove(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// Kills every process in an environment's cgroup (Linux 5.14 and later;
/// elsewhere the process group kill stands alone).
pub fn kill(dir: &Path) {
    let _ = std::fs::write(dir.join("cgroup.kill"), "1");
}

/// Removes an environment's cgroup once its killed processes are gone,
/// trying for at most `limit` (blocking: run it on a thread of its own).
pub fn remove_when_empty(dir: &Path, limit: std::time::Duration) {
    let until = std::time::Instant::now() + limit;
    while std::fs::remove_dir(dir).is_err() && dir.exists() && std::time::Instant::now() < until {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_unified_line_and_the_controllers() {
        let v1_and_v2 = "4:memory:/x\n0::/kubepods/pod1/c1\n";
        assert_eq!(own_path(v1_and_v2), Some("/kubepods/pod1/c1"));
        assert_eq!(own_path("4:memory:/x\n1:cpu:/\n"), None);
        assert!(offers_memory("cpuset cpu io memory pids"));
        assert!(!offers_memory("hugetlb"));
        assert!(!offers_memory("memoryx"));
    }
}
