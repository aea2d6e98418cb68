//! Who functions run as, and what they may touch.
//!
//! A worker running as root (the in-process worker of a root broker, or a
//! `sluice worker` started as root) runs every function as an unprivileged
//! user, `nobody` unless configured, never root: set in the child between
//! fork and exec, after it has its own mount namespace with a private,
//! size-capped `/tmp`, and read-only empty mounts over the other
//! world-writable places (`/var/tmp`, `/dev/shm`), so the function can
//! write nowhere but its `/tmp`. The node keeps its data directory closed
//! to other users (mode 0700 for the log, state, snapshots and keys; 0711 on
//! the way to the function code), so the function cannot read it.
//!
//! A worker that is not root cannot change users: its functions run as its
//! own user, and it says so at start (run separate `sluice worker`
//! processes, as root or as another user, to keep functions away from a
//! node's data).

use std::ffi::CString;

/// An unprivileged user, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Its name.
    pub name: String,
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

/// How functions are confined.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sandbox {
    /// The user they run as; `None`: the worker's own (it is not root).
    pub user: Option<User>,
}

/// The user functions run as when none is configured.
pub const DEFAULT_USER: &str = "nobody";

fn lookup(name: &str) -> Result<User, String> {
    let c = CString::new(name).map_err(|_| format!("--function-user: {name:?} holds a NUL"))?;
    // SAFETY: getpwnam returns null or a pointer to a static record, read
    // at once; nothing else in the worker calls it concurrently at start.
    let pw = unsafe { libc::getpwnam(c.as_ptr()) };
    if pw.is_null() {
        return Err(format!(
            "--function-user: no user named {name:?} on this machine (functions must run as an unprivileged user)"
        ));
    }
    // SAFETY: non-null, as checked.
    let (uid, gid) = unsafe { ((*pw).pw_uid, (*pw).pw_gid) };
    Ok(User {
        name: name.to_string(),
        uid,
        gid,
    })
}

impl Sandbox {
    /// The confinement for this process: as root, functions run as `user`
    /// (default [`DEFAULT_USER`]), which must not be root; otherwise as the
    /// process's own user.
    pub fn resolve(user: Option<&str>) -> Result<Sandbox, String> {
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        if !root {
            if let Some(u) = user {
                return Err(format!(
                    "--function-user {u}: only a worker running as root can run functions as another user"
                ));
            }
            return Ok(Sandbox { user: None });
        }
        let u = lookup(user.unwrap_or(DEFAULT_USER))?;
        if u.uid == 0 || u.gid == 0 {
            return Err(format!(
                "--function-user {}: functions must not run as root (uid {}, gid {})",
                u.name, u.uid, u.gid
            ));
        }
        Ok(Sandbox { user: Some(u) })
    }
}

/// Closes this process to its functions when they run as its own user (it
/// is not root): undumpable, so a function can neither trace it nor read
/// its `/proc/PID` files (`environ`, where its credentials may be, `mem`,
/// `fd`). Functions get the default back when they exec.
pub fn close_to_functions() -> Result<(), String> {
    // SAFETY: PR_SET_DUMPABLE takes one integer argument; the others are
    // ignored (passed as 0, as unsigned longs the kernel reads).
    let r = unsafe {
        libc::prctl(
            libc::PR_SET_DUMPABLE,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if r != 0 {
        return Err(format!(
            "making the worker undumpable: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}
