//! `sluice-lazyfs`: a FUSE filesystem in the manner of LazyFS, to simulate
//! power loss under a broker node's data directory.
//!
//! ```text
//! sluice-lazyfs --backing DIR --mount DIR --control SOCKET
//! ```
//!
//! It mounts a passthrough view of `--backing` at `--mount`, except that the
//! data written to a file does not reach the backing file until the file is
//! fsynced (fsync or fdatasync): until then it is held in this process's
//! memory, per file, and reads and sizes see it merged over the backing
//! content. Truncations are held back the same way. close, flush and release
//! persist nothing. Metadata operations (create, mkdir, unlink, rename, ...)
//! go straight to the backing directory: only file data is held back, a
//! documented simplification. Directory fsync is a no-op.
//!
//! The control socket takes one command a line:
//! - `crash`: discard every unsynced write and truncation of every file, as
//!   a power loss would; answers `ok`;
//! - `stats`: answers `pending_files N pending_bytes M`.
//!
//! It prints `mounted` on stdout once the mount is ready, and unmounts on
//! SIGTERM, SIGINT or SIGHUP (and, through fusermount3's auto_unmount, when
//! it dies).
//!
//! Files are opened in direct-I/O mode, so that the kernel keeps no page
//! cache of data that a `crash` takes away; attributes and entries are not
//! cached either.

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirEntryExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use cluster_tests::lazyfs::{read_full_at, Pending};
use fuser::{
    AccessFlags, BsdFileFlags, Config, Errno, FileAttr, FileHandle, FileType, Filesystem,
    FopenFlags, Generation, INodeNo, LockOwner, MountOption, Notifier, OpenFlags, RenameFlags,
    ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request, Session, SessionACL, SessionUnmounter, TimeOrNow, WriteFlags,
};

/// Nothing is cached by the kernel: sizes change under it on `crash`.
const TTL: Duration = Duration::ZERO;

/// Root's reference count: never forgotten.
const ROOT_LOOKUPS: u64 = u64::MAX / 2;

type Res<T> = Result<T, Errno>;

/// Turns a libc return value into a result, reading errno on -1.
fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn cname(name: &OsStr) -> Res<CString> {
    CString::new(name.as_bytes()).map_err(|_| Errno::EINVAL)
}

/// `/proc/self/fd/N`: reopens what an `O_PATH` descriptor names.
fn proc_path(fd: RawFd) -> CString {
    CString::new(format!("/proc/self/fd/{fd}")).expect("no NUL")
}

/// stat of what an `O_PATH` descriptor names.
fn stat_fd(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data, all-zero valid; the path is a valid C string.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe {
        libc::fstatat(
            fd,
            c"".as_ptr(),
            &mut st,
            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
        )
    })?;
    Ok(st)
}

/// lstat of `name` in directory `dir`.
fn stat_at(dir: RawFd, name: &CStr) -> io::Result<libc::stat> {
    // SAFETY: as in stat_fd.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    cvt(unsafe { libc::fstatat(dir, name.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) })?;
    Ok(st)
}

/// An `O_PATH` descriptor of `name` in directory `dir`, not following a
/// final symlink.
fn open_path(dir: RawFd, name: &CStr) -> io::Result<OwnedFd> {
    // SAFETY: a valid C string; the returned descriptor is ours.
    let fd = cvt(unsafe {
        libc::openat(
            dir,
            name.as_ptr(),
            libc::O_PATH | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    })?;
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn key(st: &libc::stat) -> (u64, u64) {
    (st.st_dev, st.st_ino)
}

fn kind(mode: libc::mode_t) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        _ => FileType::RegularFile,
    }
}

fn time(sec: i64, nsec: i64) -> SystemTime {
    let nanos = Duration::from_nanos(nsec.clamp(0, 999_999_999) as u64);
    if sec >= 0 {
        UNIX_EPOCH + Duration::from_secs(sec as u64) + nanos
    } else {
        UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs()) + nanos
    }
}

fn file_attr(ino: u64, st: &libc::stat, pending: Option<&Pending>) -> FileAttr {
    let size = pending.map_or(st.st_size as u64, Pending::size);
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: (st.st_blocks as u64).max(size.div_ceil(512)),
        atime: time(st.st_atime, st.st_atime_nsec),
        mtime: time(st.st_mtime, st.st_mtime_nsec),
        ctime: time(st.st_ctime, st.st_ctime_nsec),
        crtime: UNIX_EPOCH,
        kind: kind(st.st_mode),
        perm: (st.st_mode & 0o7777) as u16,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
        flags: 0,
    }
}

/// A file or directory the kernel knows (or that has pending data).
struct Node {
    /// `O_PATH` descriptor of the backing object: it follows renames, and
    /// holding it keeps the backing inode (so its number) from being reused.
    fd: OwnedFd,
    key: (u64, u64),
    kind: FileType,
    /// Lookups the kernel has not forgotten.
    lookups: u64,
    /// Open file handles.
    open: u32,
    /// The backing file opened for data, while handles are open.
    data: Option<Arc<File>>,
    /// Unsynced writes and truncations.
    pending: Option<Pending>,
}

enum Handle {
    File,
    Dir(Vec<(u64, FileType, OsString)>),
}

struct State {
    nodes: HashMap<u64, Node>,
    by_key: HashMap<(u64, u64), u64>,
    handles: HashMap<u64, Handle>,
    next_ino: u64,
    next_fh: u64,
}

impl State {
    fn new(root: OwnedFd) -> io::Result<State> {
        let st = stat_fd(root.as_raw_fd())?;
        if kind(st.st_mode) != FileType::Directory {
            return Err(io::Error::other("--backing is not a directory"));
        }
        let mut s = State {
            nodes: HashMap::new(),
            by_key: HashMap::new(),
            handles: HashMap::new(),
            next_ino: INodeNo::ROOT.0 + 1,
            next_fh: 1,
        };
        s.by_key.insert(key(&st), INodeNo::ROOT.0);
        s.nodes.insert(
            INodeNo::ROOT.0,
            Node {
                fd: root,
                key: key(&st),
                kind: FileType::Directory,
                lookups: ROOT_LOOKUPS,
                open: 0,
                data: None,
                pending: None,
            },
        );
        Ok(s)
    }

    fn node(&self, ino: INodeNo) -> Res<&Node> {
        self.nodes.get(&ino.0).ok_or(Errno::ESTALE)
    }

    fn node_mut(&mut self, ino: INodeNo) -> Res<&mut Node> {
        self.nodes.get_mut(&ino.0).ok_or(Errno::ESTALE)
    }

    fn fd(&self, ino: INodeNo) -> Res<RawFd> {
        Ok(self.node(ino)?.fd.as_raw_fd())
    }

    fn attr(&self, ino: INodeNo) -> Res<FileAttr> {
        let node = self.node(ino)?;
        let st = stat_fd(node.fd.as_raw_fd()).map_err(errno)?;
        Ok(file_attr(ino.0, &st, node.pending.as_ref()))
    }

    /// Looks `name` up in `dir`: the node for it, one more lookup counted.
    fn entry(&mut self, dir: RawFd, name: &CStr) -> Res<FileAttr> {
        let st = stat_at(dir, name).map_err(errno)?;
        if let Some(&ino) = self.by_key.get(&key(&st)) {
            let node = self.nodes.get_mut(&ino).expect("indexed node");
            node.lookups += 1;
            return Ok(file_attr(ino, &st, node.pending.as_ref()));
        }
        let fd = open_path(dir, name).map_err(errno)?;
        let st = stat_fd(fd.as_raw_fd()).map_err(errno)?;
        if let Some(&ino) = self.by_key.get(&key(&st)) {
            // Replaced under us by a file we know.
            let node = self.nodes.get_mut(&ino).expect("indexed node");
            node.lookups += 1;
            return Ok(file_attr(ino, &st, node.pending.as_ref()));
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        self.by_key.insert(key(&st), ino);
        self.nodes.insert(
            ino,
            Node {
                fd,
                key: key(&st),
                kind: kind(st.st_mode),
                lookups: 1,
                open: 0,
                data: None,
                pending: None,
            },
        );
        Ok(file_attr(ino, &st, None))
    }

    /// The backing file opened for reading and writing.
    fn data(&mut self, ino: INodeNo) -> Res<Arc<File>> {
        let node = self.node_mut(ino)?;
        match node.kind {
            FileType::Directory => return Err(Errno::EISDIR),
            FileType::RegularFile => {}
            _ => return Err(Errno::EINVAL),
        }
        if let Some(f) = &node.data {
            return Ok(f.clone());
        }
        let path = proc_path(node.fd.as_raw_fd());
        let open = |flags: libc::c_int| {
            // SAFETY: a valid C string; the descriptor is ours.
            cvt(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) })
                .map(|fd| unsafe { File::from_raw_fd(fd) })
        };
        let file = open(libc::O_RDWR)
            .or_else(|e| match e.raw_os_error() {
                Some(libc::EACCES | libc::EROFS | libc::EPERM | libc::ETXTBSY) => {
                    open(libc::O_RDONLY)
                }
                _ => Err(e),
            })
            .map_err(errno)?;
        let file = Arc::new(file);
        node.data = Some(file.clone());
        Ok(file)
    }

    /// The node's pending state, begun if there was none.
    fn pending(&mut self, ino: INodeNo) -> Res<&mut Pending> {
        let file = self.data(ino)?;
        let node = self.node_mut(ino)?;
        if node.pending.is_none() {
            let len = file.metadata().map_err(errno)?.len();
            node.pending = Some(Pending::new(len));
        }
        Ok(node.pending.as_mut().expect("just set"))
    }

    /// Writes the node's pending state to its backing file (not synced).
    fn persist(&mut self, ino: INodeNo) -> Res<Arc<File>> {
        let file = self.data(ino)?;
        let node = self.node_mut(ino)?;
        if let Some(p) = node.pending.take() {
            if let Err(e) = p.apply(&file) {
                node.pending = Some(p);
                return Err(errno(e));
            }
        }
        Ok(file)
    }

    /// Forgets a node the kernel no longer references and that holds
    /// nothing pending.
    fn maybe_drop(&mut self, ino: u64) {
        let Some(node) = self.nodes.get(&ino) else {
            return;
        };
        if ino != INodeNo::ROOT.0 && node.lookups == 0 && node.open == 0 && node.pending.is_none() {
            let node = self.nodes.remove(&ino).expect("present");
            self.by_key.remove(&node.key);
        }
    }

    /// After a name of the backing object `k` went away: if that was its
    /// last link and no handle has it open, its pending data is moot.
    fn unlinked(&mut self, k: (u64, u64)) {
        let Some(&ino) = self.by_key.get(&k) else {
            return;
        };
        let node = self.nodes.get_mut(&ino).expect("indexed node");
        if node.open == 0 && stat_fd(node.fd.as_raw_fd()).is_ok_and(|st| st.st_nlink == 0) {
            node.pending = None;
        }
        self.maybe_drop(ino);
    }

    fn new_handle(&mut self, h: Handle) -> u64 {
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, h);
        fh
    }

    /// `crash`: drops every pending state; returns the inodes that had one.
    fn crash(&mut self) -> Vec<u64> {
        let mut had = Vec::new();
        for (&ino, node) in &mut self.nodes {
            if node.pending.take().is_some() {
                had.push(ino);
            }
        }
        for &ino in &had {
            self.maybe_drop(ino);
        }
        had
    }

    fn stats(&self) -> (usize, u64) {
        self.nodes
            .values()
            .filter_map(|n| n.pending.as_ref())
            .fold((0, 0), |(f, b), p| (f + 1, b + p.bytes()))
    }
}

struct LazyFs {
    state: Arc<Mutex<State>>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl LazyFs {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Gives a new object to the caller, if it is not us.
    fn chown_new(&self, req: &Request, dir: RawFd, name: &CStr) {
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        if req.uid() != uid || req.gid() != gid {
            // SAFETY: a valid C string.
            unsafe {
                libc::fchownat(
                    dir,
                    name.as_ptr(),
                    req.uid(),
                    req.gid(),
                    libc::AT_SYMLINK_NOFOLLOW,
                )
            };
        }
    }

    /// Creates `name` in `parent` with `make`, then looks it up.
    fn make(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        make: impl FnOnce(RawFd, &CStr) -> libc::c_int,
    ) -> Res<FileAttr> {
        let name = cname(name)?;
        let mut st = self.lock();
        let dir = st.fd(parent)?;
        cvt(make(dir, &name)).map_err(errno)?;
        self.chown_new(req, dir, &name);
        st.entry(dir, &name)
    }

    fn open_inner(&self, ino: INodeNo, flags: i32) -> Res<u64> {
        let mut st = self.lock();
        st.data(ino)?;
        if flags & libc::O_TRUNC != 0 && st.attr(ino)?.size != 0 {
            st.pending(ino)?.truncate(0);
        }
        st.node_mut(ino)?.open += 1;
        Ok(st.new_handle(Handle::File))
    }

    fn read_inner(&self, ino: INodeNo, offset: u64, size: u32) -> Res<Vec<u8>> {
        let mut st = self.lock();
        let file = st.data(ino)?;
        if let Some(p) = &st.node(ino)?.pending {
            return p.read(&file, offset, size as usize).map_err(errno);
        }
        drop(st);
        let mut buf = vec![0u8; size as usize];
        let done = read_full_at(&file, &mut buf, offset).map_err(errno)?;
        buf.truncate(done);
        Ok(buf)
    }

    fn write_inner(&self, ino: INodeNo, offset: u64, data: &[u8], flags: i32) -> Res<u32> {
        if offset.checked_add(data.len() as u64).is_none() {
            return Err(Errno::EFBIG);
        }
        let mut st = self.lock();
        st.pending(ino)?.write(offset, data);
        if flags & libc::O_DSYNC != 0 {
            // O_SYNC / O_DSYNC: every write is durable when it returns.
            let file = st.persist(ino)?;
            drop(st);
            file.sync_data().map_err(errno)?;
        }
        Ok(data.len() as u32)
    }

    fn create_inner(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> Res<(FileAttr, u64)> {
        let name = cname(name)?;
        let mut st = self.lock();
        let dir = st.fd(parent)?;
        // SAFETY: a valid C string; the descriptor is ours.
        let created = match cvt(unsafe {
            libc::openat(
                dir,
                name.as_ptr(),
                libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
                (mode & 0o7777) as libc::c_uint,
            )
        }) {
            Ok(fd) => Some(unsafe { File::from_raw_fd(fd) }),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) && flags & libc::O_EXCL == 0 => None,
            Err(e) => return Err(errno(e)),
        };
        if created.is_some() {
            self.chown_new(req, dir, &name);
        }
        let attr = st.entry(dir, &name)?;
        let ino = attr.ino;
        let result = (|| {
            let node = st.node_mut(ino)?;
            if node.kind == FileType::Directory {
                return Err(Errno::EISDIR);
            }
            if let (Some(file), None) = (created, &node.data) {
                node.data = Some(Arc::new(file));
            }
            st.data(ino)?;
            if flags & libc::O_TRUNC != 0 && attr.size > 0 {
                st.pending(ino)?.truncate(0);
            }
            st.node_mut(ino)?.open += 1;
            let fh = st.new_handle(Handle::File);
            Ok((st.attr(ino)?, fh))
        })();
        if result.is_err() {
            // Undo the lookup the kernel will not know of.
            if let Ok(node) = st.node_mut(ino) {
                node.lookups -= 1;
            }
            st.maybe_drop(ino.0);
        }
        result
    }

    fn rename_inner(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> Res<()> {
        let (name, newname) = (cname(name)?, cname(newname)?);
        let mut st = self.lock();
        let (dir, newdir) = (st.fd(parent)?, st.fd(newparent)?);
        let moved = stat_at(dir, &name).map_err(errno)?;
        let replaced = if flags.contains(RenameFlags::RENAME_EXCHANGE) {
            None
        } else {
            stat_at(newdir, &newname).ok().map(|s| key(&s))
        };
        // SAFETY: valid C strings.
        cvt(unsafe { libc::renameat2(dir, name.as_ptr(), newdir, newname.as_ptr(), flags.bits()) })
            .map_err(errno)?;
        if let Some(k) = replaced.filter(|&k| k != key(&moved)) {
            st.unlinked(k);
        }
        Ok(())
    }

    fn opendir_inner(&self, ino: INodeNo) -> Res<u64> {
        let mut st = self.lock();
        let node = st.node(ino)?;
        if node.kind != FileType::Directory {
            return Err(Errno::ENOTDIR);
        }
        let fd = node.fd.as_raw_fd();
        let path = PathBuf::from(OsStr::from_bytes(proc_path(fd).as_bytes()));
        let mut entries = vec![
            (ino.0, FileType::Directory, OsString::from(".")),
            (ino.0, FileType::Directory, OsString::from("..")),
        ];
        for e in std::fs::read_dir(&path).map_err(errno)? {
            let e = e.map_err(errno)?;
            let ty = e
                .file_type()
                .ok()
                .and_then(FileType::from_std)
                .unwrap_or(FileType::RegularFile);
            entries.push((e.ino().max(1), ty, e.file_name()));
        }
        Ok(st.new_handle(Handle::Dir(entries)))
    }
}

/// Replies with a result, or its error.
macro_rules! answer {
    ($reply:expr, $res:expr, |$v:pat_param| $ok:expr) => {
        match $res {
            Ok($v) => $ok,
            Err(e) => $reply.error(e),
        }
    };
}

impl Filesystem for LazyFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let res = cname(name).and_then(|name| {
            let mut st = self.lock();
            let dir = st.fd(parent)?;
            st.entry(dir, &name)
        });
        answer!(reply, res, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        let mut st = self.lock();
        if let Ok(node) = st.node_mut(ino) {
            node.lookups = node.lookups.saturating_sub(nlookup);
            st.maybe_drop(ino.0);
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        answer!(reply, self.lock().attr(ino), |a| reply.attr(&TTL, &a));
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let res = (|| -> Res<FileAttr> {
            let mut st = self.lock();
            let node = st.node(ino)?;
            let fd = node.fd.as_raw_fd();
            let is_link = node.kind == FileType::Symlink;
            if let Some(mode) = mode {
                if !is_link {
                    // SAFETY: a valid C string.
                    cvt(unsafe {
                        libc::chmod(proc_path(fd).as_ptr(), (mode & 0o7777) as libc::mode_t)
                    })
                    .map_err(errno)?;
                }
            }
            if uid.is_some() || gid.is_some() {
                // SAFETY: a valid C string; -1 (u32::MAX) leaves an id as it is.
                cvt(unsafe {
                    libc::fchownat(
                        fd,
                        c"".as_ptr(),
                        uid.unwrap_or(u32::MAX),
                        gid.unwrap_or(u32::MAX),
                        libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                    )
                })
                .map_err(errno)?;
            }
            if atime.is_some() || mtime.is_some() {
                let ts = |t: Option<TimeOrNow>| match t {
                    None => libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_OMIT,
                    },
                    Some(TimeOrNow::Now) => libc::timespec {
                        tv_sec: 0,
                        tv_nsec: libc::UTIME_NOW,
                    },
                    Some(TimeOrNow::SpecificTime(t)) => {
                        let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                        libc::timespec {
                            tv_sec: d.as_secs() as libc::time_t,
                            tv_nsec: d.subsec_nanos() as libc::c_long,
                        }
                    }
                };
                if !is_link {
                    let times = [ts(atime), ts(mtime)];
                    // SAFETY: a valid C string and two timespecs.
                    cvt(unsafe {
                        libc::utimensat(libc::AT_FDCWD, proc_path(fd).as_ptr(), times.as_ptr(), 0)
                    })
                    .map_err(errno)?;
                }
            }
            if let Some(size) = size {
                // To the same size is no change: nothing to hold back.
                if size != st.attr(ino)?.size {
                    st.pending(ino)?.truncate(size);
                }
            }
            st.attr(ino)
        })();
        answer!(reply, res, |a| reply.attr(&TTL, &a));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let res = (|| {
            let st = self.lock();
            let fd = st.fd(ino)?;
            let mut buf = vec![0u8; libc::PATH_MAX as usize];
            // SAFETY: the buffer is writable for its length.
            let n =
                unsafe { libc::readlinkat(fd, c"".as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
            if n < 0 {
                return Err(errno(io::Error::last_os_error()));
            }
            buf.truncate(n as usize);
            Ok(buf)
        })();
        answer!(reply, res, |d| reply.data(&d));
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        let res = self.make(req, parent, name, |dir, name| {
            // SAFETY: a valid C string.
            unsafe {
                libc::mknodat(
                    dir,
                    name.as_ptr(),
                    mode as libc::mode_t,
                    rdev as libc::dev_t,
                )
            }
        });
        answer!(reply, res, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        reply: ReplyEntry,
    ) {
        let res = self.make(req, parent, name, |dir, name| {
            // SAFETY: a valid C string.
            unsafe { libc::mkdirat(dir, name.as_ptr(), (mode & 0o7777) as libc::mode_t) }
        });
        answer!(reply, res, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = cname(name).and_then(|name| {
            let mut st = self.lock();
            let dir = st.fd(parent)?;
            let k = key(&stat_at(dir, &name).map_err(errno)?);
            // SAFETY: a valid C string.
            cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), 0) }).map_err(errno)?;
            st.unlinked(k);
            Ok(())
        });
        answer!(reply, res, |()| reply.ok());
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let res = cname(name).and_then(|name| {
            let st = self.lock();
            let dir = st.fd(parent)?;
            // SAFETY: a valid C string.
            cvt(unsafe { libc::unlinkat(dir, name.as_ptr(), libc::AT_REMOVEDIR) })
                .map_err(errno)?;
            Ok(())
        });
        answer!(reply, res, |()| reply.ok());
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &std::path::Path,
        reply: ReplyEntry,
    ) {
        let res = cname(target.as_os_str()).and_then(|target| {
            self.make(req, parent, link_name, |dir, name| {
                // SAFETY: valid C strings.
                unsafe { libc::symlinkat(target.as_ptr(), dir, name.as_ptr()) }
            })
        });
        answer!(reply, res, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let res = self.rename_inner(parent, name, newparent, newname, flags);
        answer!(reply, res, |()| reply.ok());
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let res = cname(newname).and_then(|newname| {
            let mut st = self.lock();
            let (fd, newdir) = (st.fd(ino)?, st.fd(newparent)?);
            // SAFETY: valid C strings.
            cvt(unsafe {
                libc::linkat(
                    libc::AT_FDCWD,
                    proc_path(fd).as_ptr(),
                    newdir,
                    newname.as_ptr(),
                    libc::AT_SYMLINK_FOLLOW,
                )
            })
            .map_err(errno)?;
            st.entry(newdir, &newname)
        });
        answer!(reply, res, |a| reply.entry(&TTL, &a, Generation(0)));
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let res = self.open_inner(ino, flags.0);
        answer!(reply, res, |fh| reply
            .opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO));
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        answer!(reply, self.read_inner(ino, offset, size), |d| reply
            .data(&d));
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let res = self.write_inner(ino, offset, data, flags.0);
        answer!(reply, res, |n| reply.written(n));
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close() persists nothing.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let mut st = self.lock();
        st.handles.remove(&fh.0);
        if let Ok(node) = st.node_mut(ino) {
            node.open = node.open.saturating_sub(1);
            if node.open == 0 {
                node.data = None;
                let k = node.key;
                st.unlinked(k);
            }
        }
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let persisted = self.lock().persist(ino);
        // Synced outside the lock: other files go on meanwhile.
        let res = persisted.and_then(|file| {
            let synced = if datasync {
                file.sync_data()
            } else {
                file.sync_all()
            };
            synced.map_err(errno)
        });
        answer!(reply, res, |()| reply.ok());
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        answer!(reply, self.opendir_inner(ino), |fh| reply
            .opened(FileHandle(fh), FopenFlags::empty()));
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let st = self.lock();
        let Some(Handle::Dir(entries)) = st.handles.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, ty, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *ty, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().handles.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // Metadata is never held back: nothing to do.
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let res = (|| {
            let fd = self.lock().fd(INodeNo::ROOT)?;
            // SAFETY: statvfs is plain data; fd is a live descriptor.
            let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
            cvt(unsafe { libc::fstatvfs(fd, &mut s) }).map_err(errno)?;
            Ok(s)
        })();
        answer!(reply, res, |s| reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        ));
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // Mounted with default_permissions: the kernel checks.
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        _umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let res = self.create_inner(req, parent, name, mode, flags);
        answer!(reply, res, |(a, fh)| reply.created(
            &TTL,
            &a,
            Generation(0),
            FileHandle(fh),
            FopenFlags::FOPEN_DIRECT_IO
        ));
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Plain allocation only: it can grow the (pending) size.
        let res = if mode != 0 {
            Err(Errno::EOPNOTSUPP)
        } else {
            match offset.checked_add(length) {
                None => Err(Errno::EFBIG),
                Some(end) => {
                    let mut st = self.lock();
                    match st.attr(ino) {
                        Ok(a) if end > a.size => st.pending(ino).map(|p| p.truncate(end)),
                        Ok(_) => Ok(()),
                        Err(e) => Err(e),
                    }
                }
            }
        };
        answer!(reply, res, |()| reply.ok());
    }
}

/// Serves one control connection: one command a line.
fn control(stream: UnixStream, state: &Mutex<State>, notifier: &Notifier) {
    let Ok(mut out) = stream.try_clone() else {
        return;
    };
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else {
            return;
        };
        let answer = match line.trim() {
            "crash" => {
                let had = lock(state).crash();
                // Drop whatever the kernel cached of those files (there
                // should be nothing: direct I/O, no attribute caching).
                for ino in had {
                    let _ = notifier.inval_inode(INodeNo(ino), 0, 0);
                }
                "ok".to_string()
            }
            "stats" => {
                let (files, bytes) = lock(state).stats();
                format!("pending_files {files} pending_bytes {bytes}")
            }
            "" => continue,
            other => format!("error unknown command {other:?}"),
        };
        if out.write_all(format!("{answer}\n").as_bytes()).is_err() {
            return;
        }
    }
}

/// Blocks the termination signals in this thread (and the threads it
/// spawns after), for `sigwait` to take them.
fn block_signals() -> libc::sigset_t {
    // SAFETY: sigset_t is initialised by sigemptyset before use.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

/// Whether a `sluice-lazyfs` mount is at `mount` (a canonical path).
fn mounted_at(mount: &std::path::Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    // mountinfo escapes these in paths as octal.
    let mut want = String::new();
    for c in mount.to_string_lossy().chars() {
        match c {
            ' ' | '\t' | '\n' | '\\' => want.push_str(&format!("\\{:03o}", c as u32)),
            c => want.push(c),
        }
    }
    info.lines().any(|line| {
        let mut halves = line.splitn(2, " - ");
        let (Some(left), Some(right)) = (halves.next(), halves.next()) else {
            return false;
        };
        let mut right = right.split(' ');
        let (fstype, source) = (right.next().unwrap_or(""), right.next());
        left.split(' ').nth(4) == Some(want.as_str())
            && (fstype == "fuse" || fstype.starts_with("fuse."))
            && source == Some("sluice-lazyfs")
    })
}

/// Detaches the mount at `mount` if it is still there.
fn detach(mount: &std::path::Path) {
    if mounted_at(mount) {
        if let Ok(c) = CString::new(mount.as_os_str().as_bytes()) {
            // SAFETY: a valid C string.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// Unmounts on the first termination signal; if the session has not ended
/// 10 s later, exits. A second signal exits at once.
fn signals(set: libc::sigset_t, mut unmounter: SessionUnmounter, mount: PathBuf) {
    let mut unmounting = false;
    loop {
        let timeout = libc::timespec {
            tv_sec: 10,
            tv_nsec: 0,
        };
        // SAFETY: valid set and timespec; no siginfo wanted.
        let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &timeout) };
        if sig > 0 {
            if unmounting {
                std::process::exit(128 + sig);
            }
            unmounting = true;
            if let Err(e) = unmounter.unmount() {
                eprintln!("sluice-lazyfs: unmount: {e}");
            }
            // With auto_unmount, fuser leaves the unmount to fusermount3,
            // which may decline while this process lives: do it (as root)
            // if it is not done. Lazily, as files may still be open.
            detach(&mount);
        } else if unmounting {
            eprintln!("sluice-lazyfs: the session did not end after unmounting; exiting");
            std::process::exit(1);
        }
    }
}

struct Args {
    backing: PathBuf,
    mount: PathBuf,
    control: PathBuf,
}

const USAGE: &str = "usage: sluice-lazyfs --backing DIR --mount DIR --control SOCKET";

fn args() -> Result<Args, String> {
    let (mut backing, mut mount, mut control) = (None, None, None);
    let mut it = std::env::args_os().skip(1);
    while let Some(a) = it.next() {
        let slot = match a.to_str() {
            Some("--backing") => &mut backing,
            Some("--mount") => &mut mount,
            Some("--control") => &mut control,
            Some("-h" | "--help") => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unexpected argument {a:?}\n{USAGE}")),
        };
        let v = it.next().ok_or_else(|| format!("{a:?} needs a value"))?;
        *slot = Some(PathBuf::from(v));
    }
    match (backing, mount, control) {
        (Some(backing), Some(mount), Some(control)) => Ok(Args {
            backing,
            mount,
            control,
        }),
        _ => Err(USAGE.to_string()),
    }
}

fn run(mut args: Args) -> io::Result<()> {
    args.mount = args
        .mount
        .canonicalize()
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", args.mount.display())))?;
    // Modes come from the kernel with the caller's umask applied.
    // SAFETY: no preconditions.
    unsafe { libc::umask(0) };
    // One O_PATH descriptor per known file, two while it is open.
    // SAFETY: rlimit is plain data.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
    let backing = CString::new(args.backing.as_os_str().as_bytes())?;
    // SAFETY: a valid C string; the descriptor is ours.
    let root = cvt(unsafe {
        libc::open(
            backing.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    })
    .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", args.backing.display())))?;
    let root = unsafe { OwnedFd::from_raw_fd(root) };
    let state = Arc::new(Mutex::new(State::new(root)?));

    let _ = std::fs::remove_file(&args.control);
    let listener = UnixListener::bind(&args.control)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", args.control.display())))?;

    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("sluice-lazyfs".into()),
        MountOption::Subtype("lazyfs".into()),
        MountOption::DefaultPermissions,
        MountOption::AutoUnmount,
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(2);
    let fs = || LazyFs {
        state: state.clone(),
    };
    let mut session = match Session::new(fs(), &args.mount, &config) {
        Ok(s) => s,
        Err(e) => {
            // auto_unmount needs fusermount3: mount directly without it.
            eprintln!("sluice-lazyfs: mounting with auto_unmount failed ({e}); retrying without");
            config
                .mount_options
                .retain(|o| *o != MountOption::AutoUnmount);
            Session::new(fs(), &args.mount, &config)
                .map_err(|e| io::Error::new(e.kind(), format!("mounting: {e}")))?
        }
    };

    let set = block_signals();
    let unmounter = session.unmount_callable();
    let notifier = session.notifier();
    let mount = args.mount.clone();
    std::thread::spawn(move || signals(set, unmounter, mount));
    let control_state = state.clone();
    std::thread::spawn(move || {
        let notifier = Arc::new(notifier);
        for stream in listener.incoming() {
            let Ok(stream) = stream else {
                continue;
            };
            let (state, notifier) = (control_state.clone(), notifier.clone());
            std::thread::spawn(move || control(stream, &state, &notifier));
        }
    });

    let mut out = io::stdout();
    let _ = writeln!(out, "mounted");
    let _ = out.flush();

    let res = session.run();
    let _ = std::fs::remove_file(&args.control);
    res
}

fn main() {
    let args = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("sluice-lazyfs: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(args) {
        eprintln!("sluice-lazyfs: {e}");
        std::process::exit(1);
    }
}
