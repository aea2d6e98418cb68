//! `sluice-lazyfs`: unsynced writes are lost on `crash`, synced ones kept.
//!
//! The mount tests need root and /dev/fuse; without them they say why and
//! pass without testing. The model test of the pending-data map runs
//! everywhere.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cluster_tests::lazyfs::{self, LazyFs, Pending};

/// A mounted lazyfs over a fresh backing directory.
struct Mounted {
    fs: LazyFs,
    backing: PathBuf,
    _dir: tempfile::TempDir,
}

impl Mounted {
    fn path(&self, name: &str) -> PathBuf {
        self.fs.mount_point().join(name)
    }

    fn backing(&self, name: &str) -> PathBuf {
        self.backing.join(name)
    }

    /// Unmounts, and checks it went cleanly.
    fn finish(mut self) {
        let mount = self.fs.mount_point().to_path_buf();
        let status = self.fs.stop().expect("sluice-lazyfs stops on SIGTERM");
        assert!(status.success(), "sluice-lazyfs exited {status}");
        assert_eq!(
            fs::read_dir(&mount).unwrap().count(),
            0,
            "the mount point is empty once unmounted"
        );
    }
}

/// Mounts, with `prepare` run over the backing directory first; `None` (and
/// a note why) where FUSE mounts cannot be made.
fn mount_with(prepare: impl FnOnce(&Path)) -> Option<Mounted> {
    if let Some(why) = lazyfs::unavailable() {
        eprintln!("skipping: FUSE unavailable: {why}");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let backing = dir.path().join("backing");
    let mount = dir.path().join("mnt");
    fs::create_dir(&backing).unwrap();
    fs::create_dir(&mount).unwrap();
    prepare(&backing);
    let fs = LazyFs::start(&backing, &mount, &dir.path().join("control.sock"))
        .expect("sluice-lazyfs mounts");
    Some(Mounted {
        fs,
        backing,
        _dir: dir,
    })
}

fn mount() -> Option<Mounted> {
    mount_with(|_| {})
}

fn rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap()
}

/// Mounts over a backing directory whose file `f` holds "old content",
/// and opens `f` through the mount for reading and writing; `None` where
/// mounts cannot be made.
fn mount_with_old_content() -> Option<(Mounted, File)> {
    let m = mount_with(|b| fs::write(b.join("f"), b"old content").unwrap())?;
    let f = rw(&m.path("f"));
    Some((m, f))
}

#[test]
fn unsynced_write_is_lost_on_crash() {
    let Some((m, f)) = mount_with_old_content() else {
        return;
    };
    f.write_all_at(b"NEW", 0).unwrap();
    f.write_all_at(b"+tail", 11).unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"NEW content+tail");
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 16);
    assert_eq!(fs::read(m.backing("f")).unwrap(), b"old content");
    assert_eq!(m.fs.stats().unwrap(), (1, 8));

    m.fs.crash().unwrap();
    assert_eq!(m.fs.stats().unwrap(), (0, 0));
    assert_eq!(fs::read(m.path("f")).unwrap(), b"old content");
    // Through the handle opened before the crash too: nothing cached.
    let mut buf = [0u8; 32];
    let n = f.read_at(&mut buf, 0).unwrap();
    assert_eq!(&buf[..n], b"old content");
    assert_eq!(f.metadata().unwrap().len(), 11);
    drop(f);
    m.finish();
}

#[test]
fn synced_write_survives_crash() {
    let Some((m, f)) = mount_with_old_content() else {
        return;
    };
    f.write_all_at(b"NEW", 0).unwrap();
    f.sync_all().unwrap();
    assert_eq!(fs::read(m.backing("f")).unwrap(), b"NEW content");
    // fdatasync counts as well; writes after it do not.
    f.write_all_at(b"more", 11).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(b"lost", 0).unwrap();
    drop(f);
    // close() persisted nothing.
    assert_eq!(m.fs.stats().unwrap(), (1, 4));

    m.fs.crash().unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), b"NEW contentmore");
    m.finish();
}

#[test]
fn overlapping_writes_merge_over_backing_data() {
    let Some(m) = mount_with(|b| fs::write(b.join("f"), [b'a'; 100]).unwrap()) else {
        return;
    };
    let mut model = vec![b'a'; 100];
    let mut put = |f: &File, off: usize, byte: u8, len: usize| {
        f.write_all_at(&vec![byte; len], off as u64).unwrap();
        if model.len() < off + len {
            model.resize(off + len, 0);
        }
        model[off..off + len].fill(byte);
    };
    let f = rw(&m.path("f"));
    let g = rw(&m.path("f"));
    put(&f, 10, b'b', 20);
    put(&g, 25, b'c', 15); // overlaps the end of the first
    put(&f, 5, b'd', 3); // before it, not touching
    put(&g, 8, b'e', 2); // touching both neighbours
    put(&f, 90, b'f', 20); // across the old end of file
    put(&g, 200, b'g', 10); // beyond it, leaving a hole
    put(&f, 0, b'h', 1);

    assert_eq!(f.metadata().unwrap().len(), 210);
    // A read spanning backing bytes, pending bytes and the hole.
    let mut buf = vec![0u8; 150];
    g.read_exact_at(&mut buf, 3).unwrap();
    assert_eq!(buf, model[3..153]);
    assert_eq!(fs::read(m.path("f")).unwrap(), model);
    assert_eq!(fs::read(m.backing("f")).unwrap(), vec![b'a'; 100]);

    g.sync_data().unwrap();
    assert_eq!(fs::read(m.backing("f")).unwrap(), model);
    // Writes after the sync are lost.
    f.write_all_at(b"zzzz", 50).unwrap();
    f.write_all_at(b"zzzz", 300).unwrap();
    m.fs.crash().unwrap();
    drop((f, g));
    assert_eq!(fs::read(m.path("f")).unwrap(), model);
    m.finish();
}

#[test]
fn pending_data_follows_a_rename() {
    let Some(m) = mount() else {
        return;
    };
    fs::write(m.path("a"), b"v1").unwrap();
    File::open(m.path("a")).unwrap().sync_all().unwrap();
    let f = rw(&m.path("a"));
    f.write_all_at(b"v2, longer", 0).unwrap();
    fs::rename(m.path("a"), m.path("b")).unwrap();
    assert!(!m.path("a").exists());
    assert_eq!(fs::read(m.path("b")).unwrap(), b"v2, longer");
    File::open(m.path("b")).unwrap().sync_all().unwrap();

    // The broker's `meta` pattern: a synced temp file renamed over.
    fs::write(m.path("meta"), b"vote 1").unwrap();
    File::open(m.path("meta")).unwrap().sync_all().unwrap();
    let mut tmp = File::create(m.path("meta.tmp")).unwrap();
    tmp.write_all(b"vote 2").unwrap();
    tmp.sync_all().unwrap();
    drop(tmp);
    fs::rename(m.path("meta.tmp"), m.path("meta")).unwrap();
    File::open(m.fs.mount_point()).unwrap().sync_all().unwrap();

    // An unsynced temp file renamed over: its data is lost, the rename not.
    let mut tmp = File::create(m.path("meta.tmp")).unwrap();
    tmp.write_all(b"vote 3").unwrap();
    drop(tmp);
    fs::rename(m.path("meta.tmp"), m.path("meta")).unwrap();

    m.fs.crash().unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("b")).unwrap(), b"v2, longer");
    assert_eq!(fs::read(m.path("meta")).unwrap(), b"");
    let mut names: Vec<_> = fs::read_dir(m.fs.mount_point())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["b", "meta"]);
    m.finish();
}

#[test]
fn pending_truncation_is_undone_by_crash() {
    let content: Vec<u8> = (0..100u8).collect();
    let c = content.clone();
    let Some(m) = mount_with(move |b| {
        fs::write(b.join("f"), &c).unwrap();
        fs::write(b.join("g"), &c).unwrap();
    }) else {
        return;
    };
    let f = rw(&m.path("f"));
    f.set_len(10).unwrap();
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 10);
    // Grown again: the cut-off bytes read back as zeros, not old data.
    f.set_len(20).unwrap();
    let mut want = content[..10].to_vec();
    want.resize(20, 0);
    assert_eq!(fs::read(m.path("f")).unwrap(), want);
    // O_TRUNC is held back the same way.
    let mut g = File::create(m.path("g")).unwrap();
    g.write_all(b"short").unwrap();
    assert_eq!(fs::read(m.path("g")).unwrap(), b"short");
    assert_eq!(fs::read(m.backing("f")).unwrap(), content);
    assert_eq!(fs::read(m.backing("g")).unwrap(), content);

    m.fs.crash().unwrap();
    assert_eq!(fs::metadata(m.path("f")).unwrap().len(), 100);
    assert_eq!(fs::read(m.path("f")).unwrap(), content);
    assert_eq!(fs::read(m.path("g")).unwrap(), content);

    // And a synced truncation is kept.
    f.set_len(10).unwrap();
    f.sync_all().unwrap();
    m.fs.crash().unwrap();
    assert_eq!(fs::read(m.path("f")).unwrap(), &content[..10]);
    drop((f, g));
    m.finish();
}

#[test]
fn created_file_survives_crash_empty() {
    let Some(m) = mount() else {
        return;
    };
    fs::create_dir(m.path("dir")).unwrap();
    let mut f = File::create(m.path("dir/new")).unwrap();
    f.write_all(b"hello").unwrap();
    drop(f);
    assert_eq!(fs::read(m.path("dir/new")).unwrap(), b"hello");
    // Unlinking drops pending data.
    fs::write(m.path("gone"), b"pending").unwrap();
    assert_eq!(m.fs.stats().unwrap(), (2, 12));
    fs::remove_file(m.path("gone")).unwrap();
    // The kernel sends the release of a closed file asynchronously: the
    // unlinked file's data is dropped once that has come too.
    let deadline = Instant::now() + Duration::from_secs(10);
    while m.fs.stats().unwrap() != (1, 5) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(m.fs.stats().unwrap(), (1, 5));

    m.fs.crash().unwrap();
    assert!(m.path("dir/new").exists());
    assert_eq!(fs::read(m.path("dir/new")).unwrap(), b"");
    assert_eq!(fs::read(m.backing("dir/new")).unwrap(), b"");
    m.finish();
}

#[test]
fn large_sequential_writes_then_sync() {
    let Some(m) = mount() else {
        return;
    };
    // Appends of a log, 4 MiB in 4 KiB records, synced every 1 MiB; the
    // tail after the last sync is lost.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(m.path("log"))
        .unwrap();
    let record = |i: u64| -> Vec<u8> { (0..4096u64).map(|j| (i * 31 + j) as u8).collect() };
    for i in 0..1000u64 {
        f.write_all_at(&record(i), i * 4096).unwrap();
        if i % 256 == 255 {
            f.sync_data().unwrap();
        }
    }
    assert_eq!(f.metadata().unwrap().len(), 1000 * 4096);
    let (files, bytes) = m.fs.stats().unwrap();
    assert_eq!((files, bytes), (1, (1000 - 768) * 4096));
    m.fs.crash().unwrap();
    let data = fs::read(m.path("log")).unwrap();
    assert_eq!(data.len(), 768 * 4096);
    for i in 0..768u64 {
        let at = (i * 4096) as usize;
        assert_eq!(data[at..at + 4096], record(i)[..], "record {i}");
    }
    drop(f);
    m.finish();
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// The pending map against a plain byte vector: random writes, truncations
/// and reads, with `apply` checked against the model at random points.
#[test]
fn pending_map_matches_a_model() {
    let dir = tempfile::tempdir().unwrap();
    for seed in 1..=40u64 {
        let path = dir.path().join(format!("f{seed}"));
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let initial: Vec<u8> = (0..rng.below(300)).map(|_| rng.next() as u8).collect();
        fs::write(&path, &initial).unwrap();
        let backing = rw(&path);
        let mut model = initial;
        let mut p = Pending::new(model.len() as u64);
        for step in 0..300 {
            match rng.below(10) {
                0..=5 => {
                    let off = rng.below(400) as usize;
                    let len = 1 + rng.below(80) as usize;
                    let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                    p.write(off as u64, &data);
                    if model.len() < off + len {
                        model.resize(off + len, 0);
                    }
                    model[off..off + len].copy_from_slice(&data);
                }
                6 => {
                    let size = rng.below(450) as usize;
                    p.truncate(size as u64);
                    model.resize(size, 0);
                }
                7 | 8 => {
                    let off = rng.below(500);
                    let len = rng.below(200) as usize;
                    let got = p.read(&backing, off, len).unwrap();
                    let lo = (off as usize).min(model.len());
                    let hi = (off as usize + len).min(model.len());
                    assert_eq!(got, model[lo..hi], "seed {seed} step {step}: read");
                }
                _ => {
                    p.apply(&backing).unwrap();
                    assert_eq!(fs::read(&path).unwrap(), model, "seed {seed} step {step}");
                    p = Pending::new(model.len() as u64);
                }
            }
            assert_eq!(
                p.size(),
                model.len() as u64,
                "seed {seed} step {step}: size"
            );
            assert!(p.bytes() <= model.len() as u64);
        }
        p.apply(&backing).unwrap();
        assert_eq!(fs::read(&path).unwrap(), model, "seed {seed}: final");
    }
}

#[test]
fn pending_map_coalesces_appends() {
    let mut p = Pending::new(0);
    for i in 0..1000u64 {
        p.write(i * 10, &[1; 10]);
    }
    assert_eq!(p.extents(), 1);
    assert_eq!(p.bytes(), 10_000);
    p.write(20_000, &[2; 10]);
    assert_eq!(p.extents(), 2);
    p.write(5, &vec![3; 19_995]); // bridges the gap
    assert_eq!((p.extents(), p.bytes(), p.size()), (1, 20_010, 20_010));
    p.truncate(15);
    assert_eq!((p.extents(), p.bytes(), p.size()), (1, 15, 15));
}
