//! A full disk: writes are refused with RESOURCE_EXHAUSTED DiskFull naming
//! the directory, reads go on, writes come back by themselves once space is
//! freed, and SIGTERM still ends the node in time. The node runs on a small
//! tmpfs of its own (root only).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use cluster_tests::{metric_value, queue_names, serial, wait_for, Cluster, ELECTION};
use sluice_client::{Client, Consistency};

/// A tmpfs mounted for the test, unmounted when dropped.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u64) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("running mount");
        assert!(status.success(), "mounting a {mb} MiB tmpfs (needs root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the disk until `leave` bytes are free; returns the ballast.
    fn fill_to(&self, leave: u64) -> PathBuf {
        cluster_tests::disk::fill(self.path(), leave).unwrap().0
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

async fn send(client: &Client, body: &str) -> Result<(), sluice_client::Error> {
    client.send_body("q", body).await.map(|_| ())
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_disk_refuses_writes_keeps_reads_recovers_by_itself_and_still_stops_on_sigterm() {
    let _serial = serial().await;
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("a_full_disk_…: needs root to mount a tmpfs; not run");
        return;
    }
    let disk = SmallDisk::mount(128);
    let mut c = Cluster::start_in(
        disk.path(),
        1,
        &[
            "--disk-reserve-mb",
            "24",
            "--shutdown-grace-secs",
            "10",
            "--cache-mb",
            "16",
        ],
    );
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(5));
    client.create_queue("q", HashMap::new()).await.unwrap();
    send(&client, "before").await.unwrap();
    let data_dir = c.nodes[&1].data_dir.clone();

    let ballast = disk.fill_to(8 << 20);
    let refused = wait_for(Duration::from_secs(10), "writes to be refused", || {
        let client = &client;
        async move { send(client, "while full").await.err() }
    })
    .await;
    assert_eq!(
        refused.status(),
        Some(tonic::Code::ResourceExhausted),
        "{refused:?}"
    );
    assert_eq!(refused.code(), Some("DiskFull"));
    assert!(
        refused.to_string().contains(data_dir.to_str().unwrap()),
        "names the directory: {refused}"
    );
    // Reads go on, on the leader's linearizable path.
    let names: Vec<String> = queue_names(&client, "", Consistency::Linearizable)
        .await
        .unwrap();
    assert_eq!(names, ["q"]);
    let m = c.nodes[&1].metrics();
    assert_eq!(
        metric_value(&m, "sluice_disk_full"),
        1.0,
        "the metric says so"
    );
    assert!(c.nodes[&1].log_text().contains("disk full"));

    // Space comes back: so do writes, with nothing else done.
    std::fs::remove_file(&ballast).unwrap();
    wait_for(Duration::from_secs(10), "writes to be taken again", || {
        let client = &client;
        async move { send(client, "after").await.ok() }
    })
    .await;

    // Full again, SIGTERM ends the node within its grace.
    let _ballast = disk.fill_to(0);
    wait_for(
        Duration::from_secs(10),
        "writes to be refused again",
        || {
            let client = &client;
            async move { send(client, "full").await.err() }
        },
    )
    .await;
    let started = Instant::now();
    c.node(1).terminate(Duration::from_secs(30));
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
