//! An execution environment: one function's code, its own directories, its
//! process and the Runtime API that process talks to.
//!
//! The environment starts the code's `bootstrap` (the custom-runtime
//! convention every official runtime client supports) with the Lambda
//! environment variables, in a private directory, and hands it one
//! invocation at a time. It stays warm between invocations. A run past the
//! function's timeout kills the process group (the environment is then
//! dead: the next invoke needs a new one, a cold start); a process that
//! exits or reports an init error fails the invocation with the AWS error
//! shape instead of leaving it hanging. What the process writes to stdout
//! and stderr is kept as its log, marked per invocation.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, oneshot};

use crate::output::{push_bounded, Pipes};
pub use crate::output::{LOG_LINES, LOG_LINE_BYTES};
use crate::runtime_api::{Answer, Invocation, RuntimeApi};
use crate::runtimes::Runtimes;
use crate::sandbox::Sandbox;

/// What an environment needs to know about its function.
#[derive(Debug, Clone)]
pub struct FunctionConfig {
    /// Function name.
    pub name: String,
    /// `$LATEST` or a version number.
    pub version: String,
    /// The function's ARN (with the qualifier invoked).
    pub arn: String,
    /// `_HANDLER`.
    pub handler: String,
    /// Memory size, MB (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`).
    pub memory_mb: u32,
    /// Timeout, seconds.
    pub timeout_s: u32,
    /// Size of the private /tmp, MB.
    pub ephemeral_mb: u32,
    /// Region for `AWS_REGION`.
    pub region: String,
    /// The function's own environment variables.
    pub environment: BTreeMap<String, String>,
    /// The runtime name, which picks the managed runtime for a package
    /// without a `bootstrap` (see [`crate::runtimes`]).
    pub runtime: String,
}

/// The result of an invocation the function answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invoked {
    /// The function returned this payload.
    Ok(Bytes),
    /// A function error (`X-Amz-Function-Error: Unhandled`): the error
    /// document `{"errorMessage", "errorType", ...}`.
    FunctionError(Bytes),
}

/// Why an environment could not run an invocation.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// The code could not be started (no bootstrap, not executable, ...).
    #[error("cannot start the function: {0}")]
    Start(String),
    /// The environment is dead (timed out or crashed before); start a new
    /// one.
    #[error("the execution environment is no longer running")]
    Dead,
}

/// A running execution environment.
pub struct Environment {
    config: FunctionConfig,
    dir: PathBuf,
    api: RuntimeApi,
    invocations: mpsc::Sender<Invocation>,
    child: Child,
    /// The process group of the runtime (its pid), kept past the child's
    /// reaping so that what it started can still be killed.
    pgid: Option<i32>,
    /// Whether an invocation has run (the first one's log keeps the
    /// runtime's start-up output).
    invoked: bool,
    log: crate::output::Log,
    /// The runtime's stdout and stderr, read into `log`.
    output: Pipes,
    /// The tasks copying stdout and stderr into the log; they end when the
    /// process (and whatever it started) closes them.
    readers: Vec<tokio::task::JoinHandle<()>>,
    alive: bool,
    started: Instant,
    /// Whether the init time has been accounted for (in the first
    /// invocation's report, or ahead of demand by [`Environment::wait_ready`]).
    init_reported: bool,
    /// The environment's cgroup, when memory is capped with cgroup v2.
    cgroup: Option<PathBuf>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An X-Ray-shaped trace id derived from the request id.
fn trace_id(request_id: &str) -> String {
    let hex: String = request_id
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(24)
        .collect();
    format!("Root=1-{:08x}-{hex:0<24}", now_ms() / 1000)
}

/// What the child applies to itself before it runs the function.
struct Limits {
    memory_bytes: libc::rlim_t,
    /// The environment cgroup's `cgroup.procs`, when memory is capped by
    /// cgroup v2 (else by rlimit).
    cgroup_procs: Option<CString>,
    /// Root only: a mount namespace with a private /tmp (and the rest).
    private_tmp: bool,
    tmpfs: CString,
    tmpfs_options: CString,
    root: CString,
    tmp: CString,
    dev: CString,
    /// The other world-writable places, covered read-only and empty.
    sealed: Vec<CString>,
    sealed_options: CString,
    /// The code, and the runtime's own files, when they live under /tmp:
    /// each kept visible there by a read-only bind mount from a descriptor
    /// opened (in the new mount namespace) before the private /tmp hides
    /// it, onto the same path re-made in the new /tmp (the directories to
    /// make, outermost first). At most [`BINDS_MAX`].
    binds: Vec<(CString, Vec<CString>)>,
    /// Who the function runs as (root only).
    user: Option<(libc::uid_t, libc::gid_t)>,
}

/// `MOUNT_ATTR_RDONLY` of `mount_setattr(2)`.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
/// `AT_RECURSIVE` of `mount_setattr(2)`.
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// `struct mount_attr` of `mount_setattr(2)`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Sets and clears attributes of the mount at `path` and every mount below
/// it; whether it could (the call is missing before Linux 5.12).
///
/// # Safety
///
/// A plain system call; `path` is NUL-terminated.
unsafe fn set_mount_attributes(path: &CString, set: u64, clear: u64) -> bool {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        path.as_ptr(),
        AT_RECURSIVE,
        &attr as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    ) == 0
}

/// Writes `/proc/self/fd/{fd}` and a NUL into `out`, without allocating
/// (it runs between fork and exec).
fn proc_fd_path(fd: libc::c_int, out: &mut [u8; 32]) {
    const PREFIX: &[u8] = b"/proc/self/fd/";
    out[..PREFIX.len()].copy_from_slice(PREFIX);
    let mut digits = [0u8; 10];
    let (mut n, mut len) = (fd.max(0) as u32, 0);
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[PREFIX.len() + i] = digits[len - 1 - i];
    }
    out[PREFIX.len() + len] = 0;
}

/// What does not exist is not there to write to.
const WORLD_WRITABLE: &[&str] = &["/var/tmp", "/dev/shm", "/run/lock"];

/// The most places under /tmp kept visible to a function: its code and the
/// runtime's own directories.
const BINDS_MAX: usize = 4;

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

impl Limits {
    fn new(
        config: &FunctionConfig,
        private_tmp: bool,
        cgroup_procs: Option<&Path>,
        visible: &[&Path],
        sandbox: &Sandbox,
    ) -> Limits {
        let c = |s: &str| CString::new(s).expect("no NUL in a constant");
        let binds: Vec<_> = visible
            .iter()
            .filter(|_| private_tmp)
            .filter_map(|path| Some((path, path.strip_prefix("/tmp").ok()?)))
            .map(|(path, below)| {
                let mut dirs = Vec::new();
                let mut at = PathBuf::from("/tmp");
                for part in below.components() {
                    at.push(part);
                    dirs.push(cstr(&at));
                }
                (cstr(path), dirs)
            })
            .take(BINDS_MAX)
            .collect();
        Limits {
            // A backstop: the memory size itself is watched (resident
            // memory) while invocations run.
            memory_bytes: libc::rlim_t::from(config.memory_mb) << 21,
            cgroup_procs: cgroup_procs.map(cstr),
            private_tmp,
            tmpfs: c("tmpfs"),
            tmpfs_options: CString::new(format!("size={}m,mode=1777", config.ephemeral_mb))
                .expect("digits only"),
            root: c("/"),
            tmp: c("/tmp"),
            dev: c("/dev"),
            sealed: WORLD_WRITABLE
                .iter()
                .filter(|p| Path::new(p).is_dir())
                .map(|p| c(p))
                .collect(),
            sealed_options: c("size=4k,mode=0755"),
            binds,
            user: sandbox.user.as_ref().map(|u| (u.uid, u.gid)),
        }
    }

    /// Caps the process's memory at the function's memory size (its
    /// cgroup v2 when there is one, else an rlimit on what it may
    /// allocate); as root, gives it its own mount namespace with a private
    /// /tmp and nothing else writable, then becomes the unprivileged user.
    /// Any failure of the confinement fails the start: a function never
    /// runs less confined than configured.
    fn apply(&self) -> std::io::Result<()> {
        let lim = libc::rlimit {
            rlim_cur: self.memory_bytes,
            rlim_max: self.memory_bytes,
        };
        let check = |rc: libc::c_int| {
            if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        };
        // SAFETY: plain system calls on valid pointers owned by `self`.
        unsafe {
            // The function dies with the worker, even a killed one. (prctl
            // is variadic: its arguments go as unsigned longs, or the
            // kernel reads stray high bits.)
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
                0 as libc::c_ulong,
            );
            let mut in_cgroup = false;
            if let Some(procs) = &self.cgroup_procs {
                // "0" moves the writing process: the child, before exec.
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd >= 0 {
                    in_cgroup = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
                    libc::close(fd);
                }
            }
            if !in_cgroup {
                libc::setrlimit(libc::RLIMIT_DATA, &lim);
            }
            if self.private_tmp {
                check(libc::unshare(libc::CLONE_NEWNS))?;
                check(libc::mount(
                    std::ptr::null(),
                    self.root.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                ))?;
                // Everything read-only but devices (and, below, the private
                // /tmp): where the kernel can do it at once (5.12 and
                // later); elsewhere ownership and the sealed places still
                // keep the function out.
                set_mount_attributes(&self.root, MOUNT_ATTR_RDONLY, 0);
                set_mount_attributes(&self.dev, 0, MOUNT_ATTR_RDONLY);
                // Opened in this namespace: a bind mount takes its source
                // only from the caller's own.
                let mut fds = [-1; BINDS_MAX];
                for ((path, _), fd) in self.binds.iter().zip(fds.iter_mut()) {
                    *fd = libc::open(
                        path.as_ptr(),
                        libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
                    );
                    if *fd < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                check(libc::mount(
                    self.tmpfs.as_ptr(),
                    self.tmp.as_ptr(),
                    self.tmpfs.as_ptr(),
                    libc::MS_NOSUID | libc::MS_NODEV,
                    self.tmpfs_options.as_ptr().cast(),
                ))?;
                for ((to, dirs), &fd) in self.binds.iter().zip(fds.iter()) {
                    for d in dirs {
                        libc::mkdir(d.as_ptr(), 0o755);
                    }
                    let mut from = [0u8; 32];
                    proc_fd_path(fd, &mut from);
                    check(libc::mount(
                        from.as_ptr().cast(),
                        to.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ))?;
                    libc::close(fd);
                    check(libc::mount(
                        std::ptr::null(),
                        to.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
                for place in &self.sealed {
                    check(libc::mount(
                        self.tmpfs.as_ptr(),
                        place.as_ptr(),
                        self.tmpfs.as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        self.sealed_options.as_ptr().cast(),
                    ))?;
                }
            }
            if let Some((uid, gid)) = self.user {
                check(libc::setgroups(0, std::ptr::null()))?;
                check(libc::setgid(gid))?;
                check(libc::setuid(uid))?;
                check(libc::prctl(
                    libc::PR_SET_NO_NEW_PRIVS,
                    1 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                ))?;
            }
        }
        Ok(())
    }
}

/// Starts `cmd`. A package's `bootstrap` was just written: while another
/// thread forks (another environment starting), the child holds the
/// file's write descriptor until it execs, and executing the file then
/// fails with ETXTBSY. That window is short, so the start is tried again a
/// few times before it counts as failed.
async fn spawn(cmd: &mut Command) -> std::io::Result<Child> {
    let mut attempt = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempt < 5 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(5 << attempt)).await;
            }
            other => return other,
        }
    }
}

/// The AWS error document.
fn error_document(error_type: &str, message: String) -> Bytes {
    Bytes::from(serde_json::json!({ "errorType": error_type, "errorMessage": message }).to_string())
}

impl Environment {
    /// Starts an environment for the code unpacked in `code` (its
    /// `bootstrap`, or the managed runtime of `config.runtime`: see
    /// [`Runtimes`]), under the directory `root` (the environment's own
    /// `tmp` is created there).
    pub async fn start(
        code: &Path,
        root: &Path,
        config: FunctionConfig,
        sandbox: &Sandbox,
        runtimes: &Runtimes,
    ) -> Result<Environment, InvokeError> {
        let started = Instant::now();
        let start_err = |what: &str, e: std::io::Error| InvokeError::Start(format!("{what}: {e}"));
        // The process runs in `code`: paths handed to it must not depend on
        // the worker's own working directory.
        let code = &std::path::absolute(code).map_err(|e| start_err("code directory", e))?;
        let root = &std::path::absolute(root).map_err(|e| start_err("environment directory", e))?;
        let tmp = root.join("tmp");
        std::fs::create_dir_all(&tmp).map_err(|e| start_err("creating /tmp", e))?;
        let launch = runtimes
            .launch(code, &config.runtime, &config.handler)
            .map_err(InvokeError::Start)?;
        let (api, invocations) = RuntimeApi::start()
            .await
            .map_err(|e| start_err("serving the Runtime API", e))?;
        // As root the process gets its own mount namespace with a private,
        // size-capped tmpfs on /tmp (see `crate::sandbox`); otherwise its
        // /tmp is TMPDIR, a directory of its own.
        // SAFETY: geteuid has no preconditions.
        let private_tmp = unsafe { libc::geteuid() } == 0;
        if !private_tmp {
            if let Some(u) = &sandbox.user {
                return Err(InvokeError::Start(format!(
                    "functions are to run as {}, which needs the worker to run as root",
                    u.name
                )));
            }
        }
        let mut cmd = Command::new(&launch.program);
        cmd.args(&launch.args)
            .current_dir(code)
            .env_clear()
            .envs(&config.environment)
            .envs(launch.env.iter().map(|(k, v)| (k, v)))
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("LANG", "en_US.UTF-8")
            .env("TZ", ":UTC")
            .env("TMPDIR", if private_tmp { Path::new("/tmp") } else { &tmp })
            .env("HOME", if private_tmp { Path::new("/tmp") } else { &tmp })
            .env("AWS_LAMBDA_RUNTIME_API", api.address())
            .env("_HANDLER", &config.handler)
            .env("LAMBDA_TASK_ROOT", code)
            .env("LAMBDA_RUNTIME_DIR", code)
            .env("AWS_LAMBDA_FUNCTION_NAME", &config.name)
            .env("AWS_LAMBDA_FUNCTION_VERSION", &config.version)
            .env(
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                config.memory_mb.to_string(),
            )
            .env("AWS_LAMBDA_FUNCTION_TIMEOUT", config.timeout_s.to_string())
            .env("AWS_REGION", &config.region)
            .env("AWS_DEFAULT_REGION", &config.region)
            .env(
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", config.name),
            )
            .env(
                "AWS_LAMBDA_LOG_STREAM_NAME",
                uuid::Uuid::new_v4().to_string(),
            )
            .env("AWS_EXECUTION_ENV", "sluice")
            .env("AWS_LAMBDA_INITIALIZATION_TYPE", "on-demand")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            // Its own process group, so a timeout kills what it started too.
            .process_group(0)
            .kill_on_drop(true);
        let cgroup = crate::cgroup::create(
            &root
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            config.memory_mb,
        );
        let mut visible = vec![code.as_path()];
        visible.extend(launch.reads.iter().map(PathBuf::as_path));
        let limits = Limits::new(
            &config,
            private_tmp,
            cgroup.as_ref().map(|(_, procs)| procs.as_path()),
            &visible,
            sandbox,
        );
        // SAFETY: the closure runs in the child between fork and exec; it
        // makes only system calls (setrlimit, unshare, mount, mkdir,
        // setuid) on data prepared before the fork, and allocates nothing.
        unsafe {
            cmd.pre_exec(move || limits.apply());
        }
        let mut child = match spawn(&mut cmd).await {
            Ok(c) => c,
            Err(e) => {
                if let Some((dir, _)) = &cgroup {
                    crate::cgroup::remove(dir);
                }
                return Err(start_err(
                    &format!("running {}", launch.program.display()),
                    e,
                ));
            }
        };
        let pgid = child.id().map(|p| p as i32);
        let log: crate::output::Log = Arc::default();
        let fds = [
            child.stdout.take().map(|s| s.into_owned_fd()),
            child.stderr.take().map(|s| s.into_owned_fd()),
        ];
        let fds = fds
            .into_iter()
            .flatten()
            .collect::<std::io::Result<Vec<_>>>()
            .and_then(|fds| Pipes::start(fds, &log));
        let (output, readers) = match fds {
            Ok(started) => started,
            Err(e) => {
                // Never happens for pipes; the process must not outlive it.
                if let Some(pgid) = pgid {
                    // SAFETY: signalling the process group just created.
                    unsafe {
                        libc::kill(-pgid, libc::SIGKILL);
                    }
                }
                if let Some((dir, _)) = &cgroup {
                    crate::cgroup::kill(dir);
                }
                return Err(start_err("reading the runtime's output", e));
            }
        };
        Ok(Environment {
            config,
            dir: root.to_path_buf(),
            api,
            invocations,
            child,
            pgid,
            invoked: false,
            log,
            output,
            readers,
            alive: true,
            started,
            init_reported: false,
            cgroup: cgroup.map(|(dir, _)| dir),
        })
    }

    /// Waits, at most `limit`, until the runtime finished initialising (it
    /// asked for its first invocation): how provisioned concurrency gets an
    /// environment ready ahead of demand. Its init then does not show in
    /// the first invocation's report.
    pub async fn wait_ready(&mut self, limit: Duration) -> Result<Duration, InvokeError> {
        if !self.alive {
            return Err(InvokeError::Dead);
        }
        let outcome = tokio::select! {
            at = self.api.became_ready() => Ok(at.saturating_duration_since(self.started)),
            e = self.api.init_failed() => Err(InvokeError::Start(format!(
                "the runtime failed to initialise: {}",
                String::from_utf8_lossy(&e.body)
            ))),
            status = self.child.wait() => Err(InvokeError::Start(match status {
                Ok(s) => format!("the runtime exited during init: {s}"),
                Err(e) => format!("the runtime exited during init: {e}"),
            })),
            _ = tokio::time::sleep(limit) => Err(InvokeError::Start(format!(
                "the runtime did not finish initialising within {:.1} s",
                limit.as_secs_f64()
            ))),
        };
        match outcome {
            Ok(init) => {
                self.init_reported = true;
                Ok(init)
            }
            Err(e) => {
                self.alive = false;
                self.kill_group();
                Err(e)
            }
        }
    }

    /// The peak resident memory of the runtime process, MB (`VmHWM`).
    fn max_memory_used_mb(&self) -> Option<u64> {
        let pid = self.pgid?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb.div_ceil(1024))
    }

    /// The process id of the environment's runtime.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// True while the environment can take invocations.
    pub fn is_alive(&self) -> bool {
        self.alive
    }

    /// When the environment was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The environment's own directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The log of the current (or last) invocation: what the function
    /// wrote, at most [`LOG_LINES`] lines of at most [`LOG_LINE_BYTES`]
    /// each (the first invocation's includes the runtime's start-up).
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn log_line(&self, line: String) {
        push_bounded(&self.log, line);
    }

    /// Checks whether the runtime process is still there (it may have
    /// exited while the environment was idle).
    pub fn check_alive(&mut self) -> bool {
        if self.alive && !matches!(self.child.try_wait(), Ok(None)) {
            self.alive = false;
            self.kill_group();
        }
        self.alive
    }

    /// Runs one invocation: hands `payload` to the runtime and waits for its
    /// answer, the function's timeout, the process's exit or an init error,
    /// whichever comes first.
    pub async fn invoke(
        &mut self,
        request_id: &str,
        payload: Bytes,
    ) -> Result<Invoked, InvokeError> {
        if !self.alive {
            return Err(InvokeError::Dead);
        }
        let timeout = Duration::from_secs(u64::from(self.config.timeout_s));
        let deadline = Instant::now() + timeout;
        let (reply, answer) = oneshot::channel();
        if self.invoked {
            self.log.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
        self.invoked = true;
        self.log_line(format!(
            "START RequestId: {request_id} Version: {}",
            self.config.version
        ));
        let invocation = Invocation {
            request_id: request_id.to_string(),
            payload,
            deadline_ms: now_ms() + timeout.as_millis() as u64,
            function_arn: self.config.arn.clone(),
            trace_id: trace_id(request_id),
            reply,
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            sent = self.invocations.send(invocation) => match sent {
                Ok(()) => self.await_answer(answer, deadline, request_id).await,
                Err(_) => self.fail_dead(request_id, "Runtime.ExitError", "the runtime stopped taking invocations".into()),
            },
            _ = tokio::time::sleep_until(deadline.into()) => self.time_out(request_id).await,
        };
        // As on Lambda, the duration leaves out the runtime's init (a cold
        // start's first invocation waits for it); billing rounds up to the
        // millisecond.
        let ran_from = self.api.ready_at().map_or(started, |r| r.max(started));
        let duration = ran_from.elapsed();
        let mut report = format!(
            "REPORT RequestId: {request_id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {} MB",
            duration.as_secs_f64() * 1000.0,
            duration.as_micros().div_ceil(1000).max(1),
            self.config.memory_mb,
        );
        if let Some(used) = self.max_memory_used_mb() {
            report.push_str(&format!("\tMax Memory Used: {used} MB"));
        }
        if !self.init_reported {
            self.init_reported = true;
            if let Some(at) = self.api.ready_at() {
                report.push_str(&format!(
                    "\tInit Duration: {:.2} ms",
                    at.saturating_duration_since(self.started).as_secs_f64() * 1000.0
                ));
            }
        }
        // What the function wrote before it answered belongs to this
        // invocation's log, whether or not its reader has run yet.
        self.output.drain(&self.log);
        self.log_line(format!("END RequestId: {request_id}"));
        self.log_line(report);
        Ok(outcome)
    }

    async fn await_answer(
        &mut self,
        answer: oneshot::Receiver<Answer>,
        deadline: Instant,
        request_id: &str,
    ) -> Invoked {
        // With a cgroup the kernel enforces the memory size; otherwise the
        // runtime's resident memory is watched.
        let watched = if self.cgroup.is_none() {
            self.pgid
        } else {
            None
        };
        let cap_mb = u64::from(self.config.memory_mb);
        tokio::select! {
            used = over_memory(watched, cap_mb) => {
                self.alive = false;
                self.kill_group();
                let _ = self.child.wait().await;
                self.drain_log().await;
                let message = format!(
                    "RequestId: {request_id} Error: Runtime exited with error: signal: killed (memory size {cap_mb} MB exceeded: {used} MB resident)"
                );
                self.log_line(message.clone());
                Invoked::FunctionError(error_document("Runtime.OutOfMemory", message))
            }
            a = answer => match a {
                Ok(Answer::Response(body)) => Invoked::Ok(body),
                Ok(Answer::Error { body, error_type }) => {
                    if body.is_empty() {
                        Invoked::FunctionError(error_document(
                            error_type.as_deref().unwrap_or("Unhandled"),
                            "the function failed without an error document".into(),
                        ))
                    } else {
                        Invoked::FunctionError(body)
                    }
                }
                Err(_) => self.fail_dead(request_id, "Runtime.ExitError", "the runtime dropped the invocation".into()),
            },
            status = self.child.wait() => {
                let why = match status {
                    Ok(s) => format!("Runtime exited with error: {s}"),
                    Err(e) => format!("Runtime exited: {e}"),
                };
                self.drain_log().await;
                self.fail_dead(request_id, "Runtime.ExitError", why)
            }
            e = self.api.init_failed() => {
                self.kill_group();
                self.alive = false;
                if e.body.is_empty() {
                    Invoked::FunctionError(error_document(
                        e.error_type.as_deref().unwrap_or("Runtime.InitError"),
                        "the function failed to initialise".into(),
                    ))
                } else {
                    Invoked::FunctionError(e.body)
                }
            }
            _ = tokio::time::sleep_until(deadline.into()) => self.time_out(request_id).await,
        }
    }

    fn fail_dead(&mut self, request_id: &str, error_type: &str, why: String) -> Invoked {
        self.alive = false;
        self.kill_group();
        Invoked::FunctionError(error_document(
            error_type,
            format!("RequestId: {request_id} Error: {why}"),
        ))
    }

    async fn time_out(&mut self, request_id: &str) -> Invoked {
        self.alive = false;
        self.kill_group();
        let _ = self.child.wait().await;
        self.drain_log().await;
        let message = format!(
            "RequestId: {request_id} Error: Task timed out after {:.2} seconds",
            f64::from(self.config.timeout_s)
        );
        self.log_line(message.clone());
        Invoked::FunctionError(error_document("Sandbox.Timedout", message))
    }

    /// Waits until everything the dead process wrote is in the log (bounded:
    /// a process it started may hold the pipes open).
    async fn drain_log(&mut self) {
        let readers = std::mem::take(&mut self.readers);
        let all = futures_join(readers);
        let _ = tokio::time::timeout(Duration::from_secs(1), all).await;
    }

    fn kill_group(&mut self) {
        if let Some(pgid) = self.pgid {
            // SAFETY: signalling the process group we created; no memory
            // is touched. Also after the runtime itself was reaped, so
            // that what it started dies with it.
            unsafe {
                libc::kill(-pgid, libc::SIGKILL);
            }
        }
        if let Some(dir) = &self.cgroup {
            // Also what left the process group (setsid).
            crate::cgroup::kill(dir);
        }
        let _ = self.child.start_kill();
    }

    /// Stops the environment (its process group is killed).
    pub async fn stop(mut self) {
        self.alive = false;
        self.kill_group();
        let _ = self.child.wait().await;
        if let Some(dir) = self.cgroup.take() {
            crate::cgroup::remove(&dir);
        }
    }
}

/// Resolves with the resident memory (MB) of process `pid` once it passes
/// `cap_mb`, polling every 10 ms; never without a process to watch.
async fn over_memory(pid: Option<i32>, cap_mb: u64) -> u64 {
    let Some(pid) = pid else {
        return std::future::pending().await;
    };
    // SAFETY: sysconf has no preconditions.
    let page = u64::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tick.tick().await;
        let resident = std::fs::read_to_string(format!("/proc/{pid}/statm"))
            .ok()
            .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok());
        if let Some(pages) = resident {
            let mb = (pages * page) >> 20;
            if mb > cap_mb {
                return mb;
            }
        }
    }
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

impl Drop for Environment {
    fn drop(&mut self) {
        self.kill_group();
        // The killed processes take a moment to go: their cgroup (empty
        // only then) and the environment's directory (its /tmp may hold
        // data) are removed from a thread of their own.
        let cgroup = self.cgroup.take();
        let dir = self.dir.clone();
        std::thread::spawn(move || {
            if let Some(cg) = cgroup {
                crate::cgroup::remove_when_empty(&cg, std::time::Duration::from_secs(5));
            }
            let _ = std::fs::remove_dir_all(dir);
        });
    }
}
