//! The state machine is a cache of the durable snapshot and log: a node that
//! loses or damages its state machine database rebuilds it from them.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use cluster_tests::{serial, wait_for, Cluster};
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
