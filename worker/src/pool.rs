//! A worker's execution environments, by function: warm ones are reused,
//! new ones started on demand (a cold start), and code is unpacked once per
//! content hash.

use std::collections::HashMap;
use std::future::Future;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::environment::{Environment, FunctionConfig, InvokeError, Invoked};

/// What to run: the function's configuration and its code's hash.
#[derive(Debug, Clone)]
pub struct FunctionSpec {
    /// Environments are shared only between invocations with the same key
    /// (function, version and revision).
    pub key: String,
    /// Hex SHA-256 of the zip package.
    pub code_sha256: String,
    /// How to run it.
    pub config: FunctionConfig,
}

/// An invocation's result with what a caller reports about it.
#[derive(Debug)]
pub struct Ran {
    /// The result.
    pub invoked: Invoked,
    /// The log lines written during the invocation.
    pub log: Vec<String>,
    /// Whether a new environment was started for it.
    pub cold: bool,
}

/// Why the pool could not run an invocation.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The code could not be unpacked (or did not match its hash).
    #[error("{0}")]
    Code(String),
    /// The code could not be fetched from the cluster (for now: nothing
    /// ran, and another try may succeed).
    #[error("{0}")]
    Fetch(String),
    /// The environment could not start.
    #[error(transparent)]
    Start(#[from] InvokeError),
}

/// The environments of one worker, under one directory.
pub struct Pool {
    root: PathBuf,
    /// Who functions run as.
    sandbox: crate::sandbox::Sandbox,
    /// What starts packages without a `bootstrap`.
    runtimes: crate::runtimes::Runtimes,
    /// Idle environments by key, each with when it last finished work.
    idle: Mutex<HashMap<String, Vec<(Environment, Instant)>>>,
    /// What the pool holds besides the idle environments.
    books: Mutex<Books>,
    unpacking: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Books {
    /// Environments starting for or running an invocation, by key.
    busy: HashMap<String, u32>,
    /// Environments starting ahead of demand, by key.
    starting: HashMap<String, u32>,
    /// Memory size of each key's environments, MB.
    memory_mb: HashMap<String, u32>,
    /// Environments kept ready whatever their idle time (provisioned
    /// concurrency), by key.
    keep: HashMap<String, u32>,
}

/// The environments a pool holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// The environment key.
    pub key: String,
    /// Idle and ready.
    pub idle: u32,
    /// Starting for or running an invocation.
    pub busy: u32,
    /// Starting ahead of demand (not ready yet).
    pub starting: u32,
}

/// Counts one environment of a key as busy (or starting ahead of demand)
/// while it lives, on every path.
struct BusyGuard<'a> {
    pool: &'a Pool,
    key: String,
    ahead: bool,
}

impl<'a> BusyGuard<'a> {
    fn new(pool: &'a Pool, spec: &FunctionSpec, ahead: bool) -> Self {
        let mut books = pool.books();
        let counts = if ahead {
            &mut books.starting
        } else {
            &mut books.busy
        };
        *counts.entry(spec.key.clone()).or_default() += 1;
        books
            .memory_mb
            .insert(spec.key.clone(), spec.config.memory_mb);
        BusyGuard {
            pool,
            key: spec.key.clone(),
            ahead,
        }
    }
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        let mut books = self.pool.books();
        let counts = if self.ahead {
            &mut books.starting
        } else {
            &mut books.busy
        };
        if let Some(n) = counts.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                counts.remove(&self.key);
            }
        }
    }
}

impl Pool {
    /// A pool keeping code and environments under `root`.
    pub fn new(
        root: &Path,
        sandbox: crate::sandbox::Sandbox,
        runtimes: crate::runtimes::Runtimes,
    ) -> Pool {
        // What a previous process left: its environments are gone, and
        // unpacked code is not synced, so after a crash or a power loss a
        // package may be there truncated (an empty `bootstrap` exits at
        // once). Packages are unpacked again from the cluster's copy.
        for stale in ["code", "env"] {
            let path = root.join(stale);
            if path.exists() {
                if let Err(e) = std::fs::remove_dir_all(&path) {
                    tracing::warn!(dir = %path.display(), error = %e, "could not clear a previous run's files");
                }
            }
        }
        // Others may pass through to the code (functions may run as another
        // user), never list what is there.
        for dir in ["code", "env"] {
            let path = root.join(dir);
            if std::fs::create_dir_all(&path).is_ok() {
                use std::os::unix::fs::PermissionsExt;
                let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o711));
            }
        }
        let _ = std::fs::set_permissions(root, std::os::unix::fs::PermissionsExt::from_mode(0o711));
        Pool {
            root: root.to_path_buf(),
            sandbox,
            runtimes,
            idle: Mutex::new(HashMap::new()),
            books: Mutex::new(Books::default()),
            unpacking: tokio::sync::Mutex::new(()),
        }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn put_idle(&self, key: &str, env: Environment) {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.to_string())
            .or_default()
            .push((env, Instant::now()));
    }

    /// Starts one environment of `spec` and waits, at most `limit`, until
    /// its runtime finished initialising; it then waits idle for the first
    /// invocation, which finds it warm (provisioned concurrency).
    pub async fn prewarm<F, Fut>(
        &self,
        spec: &FunctionSpec,
        fetch: F,
        limit: Duration,
    ) -> Result<(), PoolError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, String>>,
    {
        let _starting = BusyGuard::new(self, spec, true);
        let code = self.code(&spec.code_sha256, fetch).await?;
        let dir = self.root.join("env").join(uuid::Uuid::new_v4().to_string());
        let mut env = Environment::start(
            &code,
            &dir,
            spec.config.clone(),
            &self.sandbox,
            &self.runtimes,
        )
        .await?;
        if let Err(e) = env.wait_ready(limit).await {
            env.stop().await;
            let _ = std::fs::remove_dir_all(dir);
            return Err(e.into());
        }
        self.put_idle(&spec.key, env);
        Ok(())
    }

    /// Sets how many environments of each key are kept whatever their idle
    /// time (keys not named keep none).
    pub fn set_keep(&self, keep: HashMap<String, u32>) {
        self.books().keep = keep;
    }

    /// What the pool holds, by key.
    pub fn held(&self) -> Vec<Held> {
        let mut by_key: std::collections::BTreeMap<String, (u32, u32, u32)> = Default::default();
        for (key, list) in self.idle.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            if !list.is_empty() {
                by_key.entry(key.clone()).or_default().0 = list.len() as u32;
            }
        }
        let books = self.books();
        for (key, n) in &books.busy {
            by_key.entry(key.clone()).or_default().1 = *n;
        }
        for (key, n) in &books.starting {
            by_key.entry(key.clone()).or_default().2 = *n;
        }
        by_key
            .into_iter()
            .map(|(key, (idle, busy, starting))| Held {
                key,
                idle,
                busy,
                starting,
            })
            .collect()
    }

    /// Memory the pool's environments are sized for, MB.
    pub fn memory_used_mb(&self) -> u64 {
        let held = self.held();
        let books = self.books();
        held.iter()
            .map(|h| {
                u64::from(h.idle + h.busy + h.starting)
                    * u64::from(*books.memory_mb.get(&h.key).unwrap_or(&0))
            })
            .sum()
    }

    /// Invocations running (or environments starting) now.
    pub fn running(&self) -> u32 {
        self.books().busy.values().sum()
    }

    /// Runs one invocation of `spec`, in a warm environment when one is
    /// idle; `fetch` gets the zip package when its hash has not been
    /// unpacked here yet.
    pub async fn invoke<F, Fut>(
        &self,
        spec: &FunctionSpec,
        fetch: F,
        request_id: &str,
        payload: Bytes,
    ) -> Result<Ran, PoolError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, String>>,
    {
        let _busy = BusyGuard::new(self, spec, false);
        let warm = self.take_idle(&spec.key);
        let cold = warm.is_none();
        let mut env = match warm {
            Some(env) => env,
            None => {
                let code = self.code(&spec.code_sha256, fetch).await?;
                let dir = self.root.join("env").join(uuid::Uuid::new_v4().to_string());
                Environment::start(
                    &code,
                    &dir,
                    spec.config.clone(),
                    &self.sandbox,
                    &self.runtimes,
                )
                .await?
            }
        };
        let invoked = env.invoke(request_id, payload).await?;
        let log = env.log();
        if env.is_alive() {
            self.put_idle(&spec.key, env);
        } else {
            let dir = env.dir().to_path_buf();
            env.stop().await;
            let _ = std::fs::remove_dir_all(dir);
        }
        Ok(Ran { invoked, log, cold })
    }

    fn take_idle(&self, key: &str) -> Option<Environment> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let list = idle.get_mut(key)?;
        // An environment whose runtime exited while idle is dropped (and
        // its process group killed); the caller starts a new one.
        while let Some((mut env, _)) = list.pop() {
            if env.check_alive() {
                return Some(env);
            }
        }
        None
    }

    /// Stops the environments idle for longer than `max_idle` (and those
    /// no longer alive), except the ones kept for provisioned concurrency;
    /// returns how many it stopped.
    pub async fn reap(&self, max_idle: Duration) -> usize {
        let keep = self.books().keep.clone();
        let stale: Vec<Environment> = {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            let mut stale = Vec::new();
            for (key, list) in idle.iter_mut() {
                // The most recently used come last; kept ones are taken from
                // the end.
                let mut kept = *keep.get(key).unwrap_or(&0) as usize;
                let mut retained = Vec::new();
                for (env, since) in std::mem::take(list).into_iter().rev() {
                    if !env.is_alive() {
                        stale.push(env);
                    } else if kept > 0 || since.elapsed() < max_idle {
                        kept = kept.saturating_sub(1);
                        retained.push((env, since));
                    } else {
                        stale.push(env);
                    }
                }
                retained.reverse();
                *list = retained;
            }
            idle.retain(|_, list| !list.is_empty());
            stale
        };
        let n = stale.len();
        for env in stale {
            let dir = env.dir().to_path_buf();
            env.stop().await;
            let _ = std::fs::remove_dir_all(dir);
        }
        n
    }

    /// Environments idle for a key (for tests and metrics).
    pub fn idle_count(&self, key: &str) -> usize {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .map_or(0, Vec::len)
    }

    /// The directory holding the unpacked code of `sha256`, unpacking it
    /// first when needed.
    async fn code<F, Fut>(&self, sha256: &str, fetch: F) -> Result<PathBuf, PoolError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Vec<u8>, String>>,
    {
        if sha256.is_empty() || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(PoolError::Code(format!("bad code hash {sha256:?}")));
        }
        let dir = self.root.join("code").join(sha256);
        let _one_at_a_time = self.unpacking.lock().await;
        if dir.is_dir() {
            return Ok(dir);
        }
        let zip = fetch().await.map_err(PoolError::Fetch)?;
        let got = hex::encode(Sha256::digest(&zip));
        if got != sha256 {
            return Err(PoolError::Code(format!(
                "the package's SHA-256 is {got}, expected {sha256}"
            )));
        }
        let tmp = self
            .root
            .join("code")
            .join(format!(".{sha256}.{}", uuid::Uuid::new_v4()));
        let target = tmp.clone();
        tokio::task::spawn_blocking(move || unzip(&zip, &target))
            .await
            .map_err(|e| PoolError::Code(format!("unpacking: {e}")))?
            .map_err(PoolError::Code)?;
        // The code is the function's, not its to change: read-only.
        make_read_only(&tmp);
        std::fs::rename(&tmp, &dir)
            .map_err(|e| PoolError::Code(format!("placing the code: {e}")))?;
        Ok(dir)
    }
}

/// Largest unpacked package, bytes (Lambda's 250 MB).
pub const UNPACKED_MAX: u64 = 250 << 20;

/// What a zip package really unpacks to (counted up to just past
/// [`UNPACKED_MAX`]), or why it cannot be read.
pub fn unpacked_size(zip: &[u8]) -> Result<u64, String> {
    let mut archive =
        zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("not a zip package: {e}"))?;
    // The sizes an archive declares are claims: count what its entries
    // really inflate to, stopping just past the limit (a zip bomb declares
    // a few bytes and inflates to gigabytes).
    let mut total = 0u64;
    for i in 0..archive.len() {
        let entry = archive
            .by_index(i)
            .map_err(|e| format!("reading the package: {e}"))?;
        let room = UNPACKED_MAX.saturating_sub(total) + 1;
        let n = std::io::copy(&mut std::io::Read::take(entry, room), &mut std::io::sink())
            .map_err(|e| format!("reading the package: {e}"))?;
        total = total.saturating_add(n);
        if total > UNPACKED_MAX {
            break;
        }
    }
    Ok(total)
}

/// Makes unpacked code read-only, and readable (and where executable by its
/// owner, executable) by everyone: functions may run as another user.
fn make_read_only(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755));
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if meta.is_dir() {
            make_read_only(&path);
        } else if meta.is_file() {
            // Files only: the directories stay removable.
            let mode = meta.permissions().mode();
            let exec = if mode & 0o100 != 0 { 0o111 } else { 0 };
            let mode = (mode & !0o222 & 0o7555) | 0o444 | exec;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode));
        }
    }
}

/// Unpacks a zip package into `dir`, keeping file modes (an executable
/// `bootstrap` stays executable) and refusing paths that leave `dir` and
/// packages that really unpack to more than [`UNPACKED_MAX`].
pub fn unzip(zip: &[u8], dir: &Path) -> Result<(), String> {
    let size = unpacked_size(zip)?;
    if size > UNPACKED_MAX {
        return Err(format!(
            "the package unpacks to {size} bytes; at most {UNPACKED_MAX}"
        ));
    }
    let mut archive =
        zip::ZipArchive::new(Cursor::new(zip)).map_err(|e| format!("not a zip package: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    archive
        .extract(dir)
        .map_err(|e| format!("unpacking the package: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A package whose one entry inflates to 300 MB of zeros, declaring
    /// that (`lie` false) or 10 bytes.
    fn zip_bomb(lie: bool) -> Vec<u8> {
        use std::io::Write;
        let mut w = zip::ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file(
            "bootstrap",
            zip::write::SimpleFileOptions::default()
                .compression_method(zip::CompressionMethod::Deflated),
        )
        .unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..300 {
            w.write_all(&zeros).unwrap();
        }
        let mut bytes = w.finish().unwrap().into_inner();
        if !lie {
            return bytes;
        }
        // Rewrite the declared sizes: local header (offset 22) and central
        // directory entry (offset 24).
        for (signature, at) in [
            ([0x50, 0x4b, 0x03, 0x04], 22),
            ([0x50, 0x4b, 0x01, 0x02], 24),
        ] {
            let pos = bytes.windows(4).position(|w| w == signature).unwrap();
            bytes[pos + at..pos + at + 4].copy_from_slice(&10u32.to_le_bytes());
        }
        bytes
    }

    #[test]
    fn a_package_is_measured_by_what_it_inflates_to_not_what_it_declares() {
        for lie in [false, true] {
            let bomb = zip_bomb(lie);
            assert!(bomb.len() < 1 << 20, "{} bytes", bomb.len());
            // Inflating stops just past the limit, or where an entry outgrows
            // its declared size.
            match unpacked_size(&bomb) {
                Ok(size) => assert!(size > UNPACKED_MAX, "{size}"),
                Err(e) => assert!(lie && e.contains("larger than its declared"), "{e}"),
            }
            let dir = tempfile::tempdir().unwrap();
            assert!(unzip(&bomb, &dir.path().join("code")).is_err());
            assert!(!dir.path().join("code/bootstrap").exists());
        }
    }
}
