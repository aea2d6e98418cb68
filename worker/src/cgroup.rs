//! Memory caps with cgroup v2, where the worker may use it.
//!
//! A worker whose cgroup (v2, the unified hierarchy at `/sys/fs/cgroup`)
//! offers the memory controller and is delegated to it moves itself into a
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
    // No process may sit in a cgroup whose controllers are enabled for its
    // children: the worker moves into a leaf of its own first.
    let leaf = base.join("worker");
    std::fs::create_dir_all(&leaf).map_err(|e| format!("{}: {e}", leaf.display()))?;
    std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())
        .map_err(|e| format!("moving into {}: {e}", leaf.display()))?;
    std::fs::write(base.join("cgroup.subtree_control"), "+memory")
        .map_err(|e| format!("enabling memory in {}: {e}", base.display()))?;
    Ok(base)
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
