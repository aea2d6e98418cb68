//! The state machine is a cache of the durable snapshot and log: a node that
//! loses or damages its state machine database rebuilds it from them.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use cluster_tests::{
    create_queues, elected_cluster, receive_bodies, serial, wait_listed_locally, Cluster, ELECTION,
};

async fn rebuilds_after(damage: impl FnOnce(&std::path::Path)) {
    let mut c = Cluster::start(1, &["--snapshot-every", "20"]);
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(20));
    let expected = create_queues(&client, (0..50).map(|i| format!("q{i}"))).await;
    let status = client.cluster_status(true).await.unwrap();
    assert!(
        status.snapshot_index.is_some(),
        "a snapshot exists: {status:?}"
    );
    c.node(1).kill9();
    damage(&c.nodes[&1].data_dir.join("db"));
    c.node(1).start();
    let client = c.node(1).client(Duration::from_secs(2));
    wait_listed_locally(
        &client,
        "",
        &expected,
        Duration::from_secs(20),
        "the rebuilt state to list every queue",
    )
    .await;
    // And it keeps serving writes.
    client.create_queue("after", HashMap::new()).await.unwrap();
}

#[tokio::test]
async fn a_lost_state_machine_database_is_rebuilt() {
    let _serial = serial().await;
    rebuilds_after(|db| std::fs::remove_dir_all(db).unwrap()).await;
}

/// Changes the bytes of the state machine database's file `db` (in the
/// database's directory) with `damage`.
fn damage_db_file(db: &std::path::Path, damage: impl FnOnce(&mut Vec<u8>)) {
    let file = db.join("db");
    let mut bytes = std::fs::read(&file).unwrap();
    damage(&mut bytes);
    std::fs::write(&file, bytes).unwrap();
}

#[tokio::test]
async fn a_damaged_state_machine_database_is_rebuilt() {
    let _serial = serial().await;
    rebuilds_after(|db| {
        damage_db_file(db, |bytes| {
            for i in (0..bytes.len()).step_by(97) {
                bytes[i] ^= 0x5a;
            }
        })
    })
    .await;
}

#[tokio::test]
async fn garbage_in_the_middle_of_the_state_machine_database_is_rebuilt() {
    let _serial = serial().await;
    // sled 0.34 fails or panics on open on this (`tried to serialize
    // Uninitialized`): the node must not crash-loop.
    rebuilds_after(|db| {
        damage_db_file(db, |bytes| {
            for part in 1..8 {
                let at = bytes.len() * part / 8;
                let end = (at + 4096).min(bytes.len());
                for b in &mut bytes[at..end] {
                    *b = 0xab;
                }
            }
        })
    })
    .await;
}

/// Runs `sluice recover` on a data directory.
fn recover(data_dir: &std::path::Path, id: u64, cluster_addr: &str) -> std::process::Output {
    std::process::Command::new(cluster_tests::binary("sluice"))
        .arg("recover")
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--node-id",
            &id.to_string(),
            "--cluster-advertise",
            cluster_addr,
        ])
        .output()
        .expect("running sluice recover")
}

#[tokio::test]
async fn a_survivor_of_a_lost_majority_is_made_the_only_voter_and_keeps_every_acknowledged_write() {
    let (_serial, mut c, survivor) = elected_cluster(3, &["--snapshot-every", "40"]).await;
    let client = c.client();
    client.create_queue("kept", HashMap::new()).await.unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..100 {
        let body = format!("m{i}");
        client.send_body("kept", &body).await.unwrap();
        sent.insert(body);
    }
    let addr = c.nodes[&survivor].cluster_addr.clone();
    let data_dir = c.nodes[&survivor].data_dir.clone();

    // Refused while the node runs.
    let out = recover(&data_dir, survivor, &addr);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("stop it first"), "{err}");

    // The majority is lost with its disks; the survivor crashes too.
    let others = c.others(survivor);
    for id in &others {
        c.node(*id).kill9();
        c.node(*id).wipe();
    }
    c.node(survivor).kill9();
    // Its crash image, copied, is a backup.
    let backup = tempfile::tempdir().unwrap();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&data_dir)
        .arg(backup.path().join(format!("node-{survivor}")))
        .status()
        .unwrap();
    assert!(copied.success());

    let out = recover(&data_dir, survivor, &addr);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.node(survivor).start();
    assert_eq!(c.leader(ELECTION).await, survivor);
    let alone = c.node(survivor).client(Duration::from_secs(20));
    let status = alone.cluster_status(false).await.unwrap();
    let voters: Vec<u64> = status
        .members
        .iter()
        .filter(|m| m.role == "voter")
        .map(|m| m.node_id)
        .collect();
    assert_eq!(voters, vec![survivor]);
    assert_eq!(receive_bodies(&alone, "kept", &sent).await, sent);

    // It grows again: a wiped member comes back as a learner, is promoted.
    let back = others[0];
    c.node(back).start();
    let back_addr = c.nodes[&back].cluster_addr.clone();
    alone.add_learner(back, &back_addr).await.unwrap();
    alone.promote_learner(back).await.unwrap();
    alone.create_queue("after", HashMap::new()).await.unwrap();

    // The backup restores elsewhere: a new address, the same data.
    let restored_addr = format!("127.0.0.1:{}", cluster_tests::free_port());
    let restored_cluster = format!("127.0.0.1:{}", cluster_tests::free_port());
    let mut restored = cluster_tests::Node::with(
        survivor,
        restored_addr.clone(),
        restored_cluster.clone(),
        backup.path(),
        vec![
            "--node-id".into(),
            survivor.to_string(),
            "--listen".into(),
            restored_addr.clone(),
        ],
        Vec::new(),
    );
    let out = recover(&restored.data_dir, survivor, &restored_cluster);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    restored.start();
    let client = restored.client(Duration::from_secs(30));
    assert_eq!(receive_bodies(&client, "kept", &sent).await, sent);
    let status = client.cluster_status(false).await.unwrap();
    assert_eq!(status.members.len(), 1);
    assert_eq!(status.members[0].address, restored_cluster);
}
