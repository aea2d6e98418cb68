//! Damaged disks: a node never serves from a log damaged in its middle and
//! never cuts acknowledged entries silently; a cut-short final write is
//! still repaired by itself.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cluster_tests::{
    create_queues, data_end, elected_cluster, metric_value, queue_names, receive_bodies, serial,
    wait_for, wait_for_status, Cluster, NodeId, SerialGuard, ELECTION,
};
use sluice_client::{Client, Consistency};

/// Sends `bodies` to `queue`, each acknowledged; returns them.
async fn send_bodies(
    client: &Client,
    queue: &str,
    bodies: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    let mut sent = BTreeSet::new();
    for body in bodies {
        client.send_body(queue, &body).await.expect("send");
        sent.insert(body);
    }
    sent
}

/// Sends `n` acknowledged messages to `queue`, returning their bodies.
async fn send(client: &Client, queue: &str, n: usize) -> BTreeSet<String> {
    let bodies = (0..n).map(|i| format!("m-{i:05}-{}", "x".repeat(64)));
    send_bodies(client, queue, bodies).await
}

/// The node's only log segment.
fn segment(data_dir: &Path) -> PathBuf {
    let mut segs: Vec<PathBuf> = std::fs::read_dir(data_dir.join("log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "one segment: {segs:?}");
    segs.pop().unwrap()
}

/// Flips 16 bytes in the middle of what `file` holds (up to its last
/// non-zero byte: log segments are allocated ahead, zero-filled).
fn flip_16_in_middle(file: &Path) {
    let mut bytes = std::fs::read(file).unwrap();
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    assert!(end > 64, "{} holds too little to damage", file.display());
    let mid = end / 2;
    for b in &mut bytes[mid..mid + 16] {
        *b ^= 0xff;
    }
    std::fs::write(file, bytes).unwrap();
}

/// Flips 16 bytes in the middle of the node's log segment; returns the file.
fn flip_middle(data_dir: &Path) -> PathBuf {
    let seg = segment(data_dir);
    flip_16_in_middle(&seg);
    seg
}

/// A single node holding `n` acknowledged messages in queue `q`, killed.
async fn killed_after_sending(n: usize) -> (Cluster, BTreeSet<String>) {
    let mut c = Cluster::start(1, &[]);
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(20));
    client.create_queue("q", HashMap::new()).await.unwrap();
    let sent = send(&client, "q", n).await;
    c.node(1).kill9();
    (c, sent)
}

/// Starts the lone node, which must stop by itself with a failure; returns
/// its log.
fn refused_start(c: &mut Cluster) -> String {
    c.node(1).start();
    let status = c
        .node(1)
        .wait_exit(Duration::from_secs(30))
        .expect("the node stops by itself");
    assert!(!status.success(), "{status:?}");
    c.nodes[&1].log_text()
}

#[tokio::test]
async fn mid_log_damage_on_a_lone_node_refuses_to_start_naming_the_file_and_offset() {
    let _serial = serial().await;
    let (mut c, sent) = killed_after_sending(400).await;
    let data_dir = c.nodes[&1].data_dir.clone();
    let seg = flip_middle(&data_dir);
    let damaged = std::fs::read(&seg).unwrap();

    let log = refused_start(&mut c);
    assert!(
        log.contains(&seg.display().to_string()) && log.contains("byte offset"),
        "the refusal names the file and offset:\n{log}"
    );
    assert!(log.contains("sluice cut-log"), "{log}");
    assert_eq!(
        std::fs::read(&seg).unwrap(),
        damaged,
        "the refusal changes nothing"
    );

    // The operator accepts the loss: the log is cut at the damage, the node
    // serves what came before it, and the damaged files are kept aside.
    let out = std::process::Command::new(cluster_tests::binary("sluice"))
        .args(["cut-log", "--data-dir"])
        .arg(&data_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let kept = std::fs::read_dir(data_dir.join("log"))
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.is_dir()
                && path
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("damaged-")
        })
        .count();
    assert_eq!(kept, 1, "the damaged files are kept aside");
    c.node(1).start();
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(20));
    let seen = receive_bodies(&client, "q", &sent).await;
    assert!(
        !seen.is_empty() && seen.len() < sent.len(),
        "{}",
        seen.len()
    );
    assert!(seen.is_subset(&sent));
}

#[tokio::test]
async fn a_lone_node_whose_log_was_cut_short_refuses_to_start() {
    let _serial = serial().await;
    let (mut c, _sent) = killed_after_sending(400).await;
    let data_dir = c.nodes[&1].data_dir.clone();
    cut_short(&data_dir);
    let log = refused_start(&mut c);
    assert!(
        log.contains(&segment(&data_dir).display().to_string())
            && log.contains("shorter than it was created")
            && log.contains("how far the log went is unknown"),
        "the refusal names the file and what is wrong:\n{log}"
    );
}

#[tokio::test]
async fn a_torn_final_write_is_cut_and_everything_acknowledged_is_served() {
    let _serial = serial().await;
    let (mut c, sent) = killed_after_sending(200).await;
    // An append cut short by the crash: a record header and part of its
    // payload, never synced nor acknowledged.
    let seg = segment(&c.nodes[&1].data_dir);
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&bytes);
    bytes[end..end + 4].copy_from_slice(&4000u32.to_le_bytes());
    bytes[end + 4..end + 304].fill(0x5a);
    std::fs::write(&seg, bytes).unwrap();

    c.node(1).start();
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(20));
    assert_eq!(receive_bodies(&client, "q", &sent).await, sent);
    assert!(c.nodes[&1]
        .log_text()
        .contains("zeroing a torn final write"));
}

/// Three nodes, of which the leader and one follower acknowledged 600
/// messages while the other follower was down. Then the leader and that
/// follower are killed, the follower's log is damaged by `damage`, and both
/// followers start again: the lagging one campaigns, and before the damage
/// the damaged one would have refused it (its log was longer). With its log
/// cut it would grant it, and the two would elect a leader without the
/// acknowledged messages. It must refuse, with `refusal` in its log, so that
/// no leader is elected; its status reports a repair target, which
/// `check_target` checks. When the old leader returns, it gets the lagging
/// node's vote, repairs the damaged log, and without the old leader the
/// two followers serve every acknowledged message.
async fn follower_repaired_by_the_leader(
    damage: fn(&Path),
    check_target: fn(u64),
    refusal: &str,
) -> Cluster {
    let mut c = Cluster::start(3, &[]);
    let leader = c.leader(ELECTION).await;
    let client = c.client();
    client.create_queue("q", HashMap::new()).await.unwrap();
    let others = c.others(leader);
    let (damaged, lagging) = (others[0], others[1]);
    c.node(lagging).kill9();
    let sent = send(&c.client_without(lagging), "q", 600).await;
    c.node(leader).kill9();
    c.node(damaged).kill9();
    damage(&c.nodes[&damaged].data_dir.clone());
    c.node(damaged).start();
    c.node(lagging).start();

    let local = c.node(damaged).client(Duration::from_secs(2));
    let target = wait_for_status(
        &local,
        ELECTION,
        "the damaged node to report its repair",
        |s| s.repair_target,
    )
    .await;
    check_target(target);
    let metrics = c.nodes[&damaged].metrics();
    assert_eq!(metric_value(&metrics, "sluice_log_repair_pending"), 1.0);
    wait_for(ELECTION, "the damaged node to refuse a vote", || {
        let log = c.nodes[&damaged].log_text();
        async move { log.contains(refusal).then_some(()) }
    })
    .await;
    let lagging_status = c.nodes[&lagging].local_status(Duration::from_secs(2)).await;
    assert_ne!(lagging_status.state, "leader", "{lagging_status:?}");
    assert!(local
        .cluster_status(true)
        .await
        .unwrap()
        .leader_id
        .is_none_or(|l| l != damaged));
    let log = c.nodes[&damaged].log_text();
    assert!(log.contains("cut the Raft log at damage"), "{log}");

    c.node(leader).start();
    let repaired = wait_for_status(
        &local,
        Duration::from_secs(60),
        "the damaged log to be repaired",
        |s| s.repair_target.is_none().then_some(s),
    )
    .await;
    assert!(repaired.last_log_index >= target.max(600), "{repaired:?}");
    assert_eq!(
        metric_value(&c.nodes[&damaged].metrics(), "sluice_log_repair_pending"),
        0.0
    );
    serves_all_without(&mut c, leader, "q", &sent).await;
    c
}

/// Kills `leader` and checks that the nodes left, once one of them leads,
/// serve every message of `sent` in `queue`.
async fn serves_all_without(c: &mut Cluster, leader: NodeId, queue: &str, sent: &BTreeSet<String>) {
    c.node(leader).kill9();
    c.leader(ELECTION).await;
    let client = c.client_without(leader);
    assert_eq!(receive_bodies(&client, queue, sent).await, *sent);
}

#[tokio::test]
async fn a_damaged_follower_helps_elect_no_candidate_lacking_what_it_held_until_repaired() {
    let _serial = serial().await;
    follower_repaired_by_the_leader(
        |dir| {
            flip_middle(dir);
        },
        |target| {
            assert!(
                target >= 600,
                "the repair target is the end of the damaged log: {target}"
            )
        },
        "the candidate's log ends before it",
    )
    .await;
}

/// Cuts the node's log segment short in the second half of what it holds,
/// as a filesystem that lost the file's end would: at a record boundary or
/// inside one, what is left reads as a whole log that ends early, and only
/// the file's size tells.
fn cut_short(data_dir: &Path) {
    let seg = segment(data_dir);
    let bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&bytes);
    let f = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    f.set_len((end * 3 / 4) as u64).unwrap();
    f.sync_all().unwrap();
}

#[tokio::test]
async fn a_follower_whose_log_was_cut_short_votes_for_no_one_until_a_leader_repairs_it() {
    let _serial = serial().await;
    let c = follower_repaired_by_the_leader(
        cut_short,
        |target| assert_eq!(target, 0, "how far the log went is not known yet"),
        "votes for no one",
    )
    .await;
    let damaged = c
        .nodes
        .values()
        .find(|n| n.log_text().contains("shorter than it was created"))
        .expect("a node found its log cut short");
    let log = damaged.log_text();
    assert!(
        log.contains("the leader's commit point is the repair target"),
        "{log}"
    );
}

/// Receives and deletes `n` of the messages in `queue`; returns their bodies.
async fn delete_some(client: &Client, queue: &str, n: usize) -> BTreeSet<String> {
    let mut deleted = BTreeSet::new();
    while deleted.len() < n {
        let r = client
            .receive_from(
                queue,
                10.min((n - deleted.len()) as i32),
                Some(3600),
                Some(0),
            )
            .await
            .expect("receive");
        assert!(!r.messages.is_empty(), "the queue ran dry");
        for m in r.messages {
            client
                .delete_message(queue, &m.receipt_handle)
                .await
                .expect("delete");
            deleted.insert(m.body);
        }
    }
    deleted
}

#[tokio::test]
async fn a_leader_restarted_at_once_with_a_damaged_log_does_not_resume_its_term() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let client = c.client();
    client.create_queue("q", HashMap::new()).await.unwrap();
    let sent = send(&client, "q", 600).await;
    let deleted = delete_some(&client, "q", 300).await;
    let old_term = c.nodes[&leader]
        .local_status(Duration::from_secs(2))
        .await
        .term;
    // Back before its followers notice it was gone. openraft would resume
    // the old term's leadership at once, and with a log cut at the damage
    // it would write new entries under log ids the followers hold for
    // others: deleted messages would come back, new ones vanish.
    c.node(leader).kill9();
    flip_middle(&c.nodes[&leader].data_dir.clone());
    c.node(leader).start();
    let new_leader = c.leader(ELECTION).await;
    let status = c.nodes[&new_leader]
        .local_status(Duration::from_secs(2))
        .await;
    assert!(
        status.term > old_term,
        "the old term ({old_term}) is over: {status:?}"
    );
    // The others may elect a leader before the restarted node has opened
    // its log: wait for its report of the cut, not only for the election.
    wait_for(
        ELECTION,
        "the restarted node to cut its log at the damage",
        || {
            let log = c.nodes[&leader].log_text();
            async move { log.contains("cut the Raft log at damage").then_some(()) }
        },
    )
    .await;
    let client = c.client();
    let more = send_bodies(&client, "q", (0..50).map(|i| format!("after-{i:03}"))).await;
    let want: BTreeSet<String> = sent.difference(&deleted).cloned().chain(more).collect();
    let got = receive_bodies(&client, "q", &want).await;
    let back: Vec<&String> = got.intersection(&deleted).collect();
    assert!(back.is_empty(), "deleted messages came back: {back:?}");
    assert_eq!(got, want);
}

/// Flips bytes in the middle of the node's snapshot file.
fn damage_snapshot(data_dir: &Path) -> PathBuf {
    let snap = std::fs::read_dir(data_dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "snap"))
        .expect("a snapshot");
    flip_16_in_middle(&snap);
    snap
}

#[tokio::test]
async fn a_damaged_snapshot_with_a_purged_log_is_repaired_from_the_leader() {
    let (_serial, mut c, leader) =
        elected_cluster(3, &["--snapshot-every", "20", "--keep-after-snapshot", "0"]).await;
    let client = c.client();
    let names = create_queues(&client, (0..60).map(|i| format!("q{i:02}"))).await;
    let sent = send(&client, "q00", 100).await;
    let follower = c.others(leader)[0];
    let local = c.node(follower).client(Duration::from_secs(2));
    let status = local.cluster_status(true).await.unwrap();
    assert!(
        status.purged_index.is_some(),
        "the log was purged: {status:?}"
    );
    c.node(follower).kill9();
    let snap = damage_snapshot(&c.nodes[&follower].data_dir.clone());
    c.node(follower).start();
    wait_for(
        Duration::from_secs(60),
        "the follower to be repaired",
        || {
            let local = &local;
            let names = &names;
            async move {
                let status = local.cluster_status(true).await.ok()?;
                let listed: BTreeSet<String> =
                    queue_names(local, "", Consistency::Local).await.ok()?;
                (status.repair_target.is_none() && listed == *names).then_some(())
            }
        },
    )
    .await;
    let log = c.nodes[&follower].log_text();
    assert!(log.contains("a snapshot file is damaged"), "{log}");
    assert!(
        snap.with_extension("snap.damaged").exists(),
        "the damaged snapshot is kept aside"
    );
    // The repaired follower is one of the two copies without the leader.
    serves_all_without(&mut c, leader, "q00", &sent).await;
}

#[tokio::test]
async fn a_lone_node_whose_needed_snapshot_is_damaged_refuses_to_start() {
    let (_serial, mut c, _) =
        elected_cluster(1, &["--snapshot-every", "20", "--keep-after-snapshot", "0"]).await;
    let client = c.node(1).client(Duration::from_secs(20));
    create_queues(&client, (0..40).map(|i| format!("q{i}"))).await;
    // Snapshots are built beside apply: wait for one that purged the log,
    // so that the node cannot start without a snapshot.
    wait_for(ELECTION, "a snapshot that purged the log", || {
        let client = &client;
        async move {
            let status = client.cluster_status(true).await.ok()?;
            status.purged_index.is_some().then_some(())
        }
    })
    .await;
    c.node(1).kill9();
    // Every snapshot on disk: a newer one may have been published since
    // (the older is removed only after it), and the node would start from
    // whichever is whole.
    let data_dir = c.nodes[&1].data_dir.clone();
    let snaps: Vec<PathBuf> = std::fs::read_dir(data_dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    assert!(!snaps.is_empty(), "a snapshot");
    for snap in &snaps {
        flip_16_in_middle(snap);
    }
    let log = refused_start(&mut c);
    assert!(
        snaps.iter().any(|s| log.contains(&s.display().to_string()))
            && log.contains("restore the data directory"),
        "{log}"
    );
}

/// Makes `id` the leader and checks that it serves every message of `sent`
/// in `queue`: the bodies are read from its own disk.
async fn serves_all_as_leader(c: &mut Cluster, id: NodeId, queue: &str, sent: &BTreeSet<String>) {
    let local = c.node(id).client(Duration::from_secs(20));
    wait_for(ELECTION, "the node to take the leadership", || {
        let local = &local;
        async move {
            let _ = local.transfer_leadership(Some(id)).await;
            let status = local.cluster_status(true).await.ok()?;
            (status.leader_id == Some(id)).then_some(())
        }
    })
    .await;
    assert_eq!(receive_bodies(&local, queue, sent).await, *sent);
}

/// Waits until the repaired node `id` votes again and lists `names`.
async fn wait_repaired(c: &mut Cluster, id: NodeId, names: &BTreeSet<String>) {
    let local = c.node(id).client(Duration::from_secs(2));
    wait_for(Duration::from_secs(90), "the node to be repaired", || {
        let local = &local;
        async move {
            let status = local.cluster_status(true).await.ok()?;
            let listed: BTreeSet<String> = queue_names(local, "", Consistency::Local).await.ok()?;
            (status.repair_target.is_none() && listed == *names).then_some(())
        }
    })
    .await;
}

/// A follower's log is damaged below its snapshot, in a segment that also
/// holds entries past it: the bodies the snapshot names there were neither
/// kept nor copied, and the leader would re-send only what lies past the
/// snapshot. The follower gives the snapshot up, rebuilds from what its
/// log still holds, is repaired from the damage on, and serves every body.
#[tokio::test]
async fn a_log_cut_below_the_snapshot_gives_the_snapshot_up() {
    let (_serial, mut c, leader) = elected_cluster(
        3,
        &["--snapshot-every", "100", "--keep-after-snapshot", "100000"],
    )
    .await;
    let client = c.client();
    client.create_queue("q", HashMap::new()).await.unwrap();
    let sent = send(&client, "q", 600).await;
    let follower = c.others(leader)[0];
    let local = c.node(follower).client(Duration::from_secs(2));
    let snapshot = wait_for_status(&local, ELECTION, "a snapshot past entry 500", |s| {
        s.snapshot_index.filter(|i| *i > 500)
    })
    .await;
    c.node(follower).kill9();
    // Entries are alike, so the middle of the segment is near entry 300.
    flip_middle(&c.nodes[&follower].data_dir.clone());
    c.node(follower).start();
    wait_repaired(&mut c, follower, &BTreeSet::from(["q".to_string()])).await;
    let log = c.nodes[&follower].log_text();
    assert!(
        log.contains(&format!("the snapshot at entry {snapshot} was given up")),
        "{log}"
    );
    serves_all_as_leader(&mut c, follower, "q", &sent).await;
}

/// A follower's kept log segment, and what it takes to check the
/// follower's repair: three nodes that keep dense 60 KB bodies in their
/// purged 1 MiB segments, a queue `q` of 60 of them and 60 more queues.
struct KeptSegment {
    _serial: SerialGuard,
    c: Cluster,
    follower: NodeId,
    /// The follower's oldest kept segment.
    kept: PathBuf,
    /// The bodies sent to `q`.
    sent: BTreeSet<String>,
    /// Every queue.
    names: BTreeSet<String>,
}

impl KeptSegment {
    /// Kills the follower, does `damage` to its kept segment, and starts
    /// it again.
    fn damage(&mut self, damage: impl FnOnce(&Path)) {
        self.c.node(self.follower).kill9();
        damage(&self.kept);
        self.c.node(self.follower).start();
    }

    /// Waits for the follower to be repaired, checks that its log says
    /// each of `says`, and that it serves every body as the leader.
    async fn repaired(mut self, says: &[&str]) {
        let follower = self.follower;
        wait_repaired(&mut self.c, follower, &self.names).await;
        let log = self.c.nodes[&follower].log_text();
        for s in says {
            assert!(log.contains(s), "the log lacks {s:?}: {log}");
        }
        serves_all_as_leader(&mut self.c, follower, "q", &self.sent).await;
    }
}

async fn kept_segment() -> KeptSegment {
    let (serial, c, leader) = elected_cluster(
        3,
        &[
            "--snapshot-every",
            "20",
            "--keep-after-snapshot",
            "0",
            "--log-segment-mb",
            "1",
        ],
    )
    .await;
    let client = c.client();
    client.create_queue("q", HashMap::new()).await.unwrap();
    // Dense bodies: their 1 MiB segments are kept, not copied.
    let sent = send_bodies(
        &client,
        "q",
        (0..60).map(|i| format!("m-{i:03}-{}", "x".repeat(60_000))),
    )
    .await;
    let mut names = create_queues(&client, (0..60).map(|i| format!("a{i:02}"))).await;
    names.insert("q".into());
    let follower = c.others(leader)[0];
    let kept_dir = c.nodes[&follower].data_dir.join("log/kept");
    let kept = wait_for(ELECTION, "the follower to keep a log segment", || {
        let kept_dir = kept_dir.clone();
        async move {
            std::fs::read_dir(&kept_dir)
                .ok()?
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "seg"))
                .min()
        }
    })
    .await;
    KeptSegment {
        _serial: serial,
        c,
        follower,
        kept,
        sent,
        names,
    }
}

/// A follower's kept log segment (purged, but holding queued bodies its
/// snapshot only names) is damaged: the follower gives up its snapshot and
/// state, is installed from the leader, whose snapshot carries the bodies,
/// and serves every one of them.
#[tokio::test]
async fn a_damaged_kept_segment_is_repaired_by_an_install() {
    let mut k = kept_segment().await;
    k.damage(flip_16_in_middle);
    k.repaired(&["kept log segment", "is damaged", "giving up the snapshot"])
        .await;
}

/// A follower's kept log segment is gone (deleted while it was down), so
/// bodies its snapshot only names are nowhere on it, and no check at the
/// start can see that. The next snapshot it builds finds the loss: it
/// records it and stops, and the start after gives up its snapshot and
/// state and is installed from the leader, whose snapshot carries the
/// bodies. Every body is then served; none was served empty or dropped.
#[tokio::test]
async fn a_body_lost_from_a_follower_is_repaired_by_an_install() {
    let mut k = kept_segment().await;
    k.damage(|kept| std::fs::remove_file(kept).unwrap());
    // Nothing is written meanwhile, so the leader sends it no snapshot of
    // its own: it rebuilds from its snapshot and log, and is asked for a
    // snapshot of that (the call fails: the node stops).
    let follower = k.follower;
    k.c.node(follower).wait_listening(ELECTION).await;
    let _ =
        k.c.node(follower)
            .client(Duration::from_secs(20))
            .trigger_snapshot()
            .await;
    let exit = k.c.node(follower).wait_exit(Duration::from_secs(60));
    let log = k.c.nodes[&follower].log_text();
    assert!(
        exit.is_some(),
        "the follower went on without the body: {log}"
    );
    assert!(log.contains("is lost on this node"), "{log}");
    k.c.node(follower).start();
    k.repaired(&["was found lost", "giving up the snapshot and repairing"])
        .await;
}
