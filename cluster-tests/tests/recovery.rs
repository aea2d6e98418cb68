//! The state machine is a cache of the durable snapshot and log: a node that
//! loses or damages its state machine database rebuilds it from them.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use cluster_tests::{receive_bodies, serial, wait_for, Cluster};
use sluice_client::Consistency;

const ELECTION: Duration = Duration::from_secs(20);

async fn rebuilds_after(damage: impl FnOnce(&std::path::Path)) {
    let mut c = Cluster::start(1, &["--snapshot-every", "20"]);
    c.leader(ELECTION).await;
    let client = c.node(1).client(Duration::from_secs(20));
    let mut expected = BTreeSet::new();
    for i in 0..50 {
        let name = format!("q{i}");
        client.create_queue(&name, HashMap::new()).await.unwrap();
        expected.insert(name);
    }
    let status = client.cluster_status(true).await.unwrap();
    assert!(
        status.snapshot_index.is_some(),
        "a snapshot exists: {status:?}"
    );
    c.node(1).kill9();
    damage(&c.nodes[&1].data_dir.join("db"));
    c.node(1).start();
    let client = c.node(1).client(Duration::from_secs(2));
    wait_for(
        Duration::from_secs(20),
        "the rebuilt state to list every queue",
        || {
            let client = &client;
            let expected = &expected;
            async move {
                let names: BTreeSet<String> = client
                    .list_queues("", Consistency::Local)
                    .await
                    .ok()?
                    .into_iter()
                    .map(|q| q.name)
                    .collect();
                (names == *expected).then_some(())
            }
        },
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

#[tokio::test]
async fn a_damaged_state_machine_database_is_rebuilt() {
    let _serial = serial().await;
    rebuilds_after(|db| {
        let file = db.join("db");
        let mut bytes = std::fs::read(&file).unwrap();
        for i in (0..bytes.len()).step_by(97) {
            bytes[i] ^= 0x5a;
        }
        std::fs::write(&file, bytes).unwrap();
    })
    .await;
}

#[tokio::test]
async fn garbage_in_the_middle_of_the_state_machine_database_is_rebuilt() {
    let _serial = serial().await;
    // sled 0.34 fails or panics on open on this (`tried to serialize
    // Uninitialized`): the node must not crash-loop.
    rebuilds_after(|db| {
        let file = db.join("db");
        let mut bytes = std::fs::read(&file).unwrap();
        for part in 1..8 {
            let at = bytes.len() * part / 8;
            let end = (at + 4096).min(bytes.len());
            for b in &mut bytes[at..end] {
                *b = 0xab;
            }
        }
        std::fs::write(&file, bytes).unwrap();
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
    use sluice_client::sluice_proto::v1 as pb;
    let _serial = serial().await;
    let mut c = Cluster::start(3, &["--snapshot-every", "40"]);
    let survivor = c.leader(ELECTION).await;
    let client = c.client();
    client.create_queue("kept", HashMap::new()).await.unwrap();
    let mut sent = BTreeSet::new();
    for i in 0..100 {
        let body = format!("m{i}");
        client
            .send_message(pb::SendMessageRequest {
                queue_name: "kept".into(),
                message_body: body.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
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
    let others: Vec<u64> = c
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != survivor)
        .collect();
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
