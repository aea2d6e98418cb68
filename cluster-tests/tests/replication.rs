//! Three real `sluice` processes on loopback: replication, leader failure,
//! restart from disk, rejoin of a wiped node by snapshot, and membership
//! changes under a steady write load.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_tests::{
    create_queues, elected_cluster, metric_value, queue_names, receive_bodies, wait_for,
    wait_for_status, wait_listed_locally, Cluster, NodeId, ELECTION,
};
use sluice_client::{Client, Consistency};

const CATCH_UP: Duration = Duration::from_secs(30);

/// Waits until node `id`'s own state lists exactly `expected` under `prefix`.
async fn wait_listed(c: &mut Cluster, id: NodeId, prefix: &str, expected: &BTreeSet<String>) {
    let client = c.node(id).client(Duration::from_secs(2));
    let what = format!("node {id} to list {} queues", expected.len());
    wait_listed_locally(&client, prefix, expected, CATCH_UP, &what).await;
}

#[tokio::test]
async fn a_queue_created_on_a_follower_is_listed_on_every_node() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let follower = c.others(leader)[0];
    let url = c
        .node(follower)
        .client(Duration::from_secs(20))
        .create_queue("orders", HashMap::new())
        .await
        .expect("create on a follower");
    assert!(url.ends_with("/000000000000/orders"), "{url}");
    let expected = BTreeSet::from(["orders".to_string()]);
    for id in [1, 2, 3] {
        wait_listed(&mut c, id, "", &expected).await;
    }
}

#[tokio::test]
async fn after_kill_9_of_the_leader_a_new_one_serves_and_the_old_one_catches_up() {
    let (_serial, mut c, old) = elected_cluster(3, &[]).await;
    c.client()
        .create_queue("before", HashMap::new())
        .await
        .unwrap();

    c.node(old).kill9();
    let killed = Instant::now();
    let survivors = c.client_without(old);
    survivors
        .create_queue("after-0", HashMap::new())
        .await
        .expect("a create succeeds once a new leader is elected");
    let failover = killed.elapsed();
    eprintln!("first create after kill -9 of the leader succeeded after {failover:?}");
    assert!(
        failover < Duration::from_secs(10),
        "writes resumed only after {failover:?}"
    );
    let new = c.leader(ELECTION).await;
    assert_ne!(new, old);

    let mut expected = BTreeSet::from(["before".to_string(), "after-0".to_string()]);
    expected.extend(create_queues(&survivors, (1..20).map(|i| format!("after-{i}"))).await);
    // The killed node restarts from its data directory and catches up.
    c.node(old).start();
    wait_listed(&mut c, old, "", &expected).await;
    let status = c.nodes[&old].local_status(Duration::from_secs(5)).await;
    assert_eq!(status.leader_id, Some(new));
    assert_eq!(status.state, "follower");
}

#[tokio::test]
async fn a_wiped_node_rejoins_through_a_snapshot_install() {
    let (_serial, mut c, leader) = elected_cluster(
        3,
        &[
            "--snapshot-every",
            "50",
            "--keep-after-snapshot",
            "5",
            "--log-segment-mb",
            "1",
        ],
    )
    .await;
    let victim = c.others(leader)[0];
    let client = c.client_without(victim);
    // Queued messages whose bodies stay in log entries every node will
    // purge: dense ones keep their 1 MiB segments, the sparse rest are
    // copied into the snapshots.
    client.create_queue("held", HashMap::new()).await.unwrap();
    let bodies: BTreeSet<String> = (0..60)
        .map(|i| {
            format!(
                "body {i} {}",
                "x".repeat(if i < 12 { i * 100 } else { 60_000 })
            )
        })
        .collect();
    for b in &bodies {
        client.send_body("held", b).await.unwrap();
    }
    let mut expected = create_queues(&client, (0..30).map(|i| format!("a-{i}"))).await;
    expected.insert("held".into());
    wait_listed(&mut c, victim, "", &expected).await;
    let victim_index = c.nodes[&victim]
        .local_status(Duration::from_secs(5))
        .await
        .last_log_index;

    c.node(victim).kill9();
    c.node(victim).wipe();
    expected.extend(create_queues(&client, (0..120).map(|i| format!("b-{i}"))).await);
    // Every remaining node has purged its log past where the victim was, so
    // entries alone cannot bring it back.
    for id in c.others(victim) {
        let node_client = c.node(id).client(Duration::from_secs(5));
        let purged = wait_for_status(
            &node_client,
            CATCH_UP,
            &format!("node {id} to purge its log"),
            |s| s.purged_index.filter(|p| *p > victim_index),
        )
        .await;
        eprintln!("node {id} purged its log up to {purged} (victim was at {victim_index})");
        let kept = std::fs::read_dir(c.nodes[&id].data_dir.join("log/kept"))
            .unwrap()
            .count();
        assert!(
            kept >= 1,
            "node {id} keeps no log segment for the queued bodies"
        );
    }

    c.node(victim).start();
    wait_listed(&mut c, victim, "", &expected).await;
    let installs = metric_value(
        &c.node(victim).metrics(),
        "sluice_snapshot_install_seconds_count",
    );
    assert!(
        installs >= 1.0,
        "the rejoined node installed {installs} snapshots"
    );
    assert!(
        c.node(victim).log_text().contains("rejoining"),
        "the wiped node should know it is rejoining"
    );
    // It is a working voter again: the leader sees it caught up.
    let status = client.cluster_status(false).await.unwrap();
    let member = status
        .members
        .iter()
        .find(|m| m.node_id == victim)
        .expect("victim is still a member");
    assert_eq!(member.role, "voter");
    // Led by the rejoined node, which never had the entries that sent them,
    // the queue gives back every body whole.
    let moved = client.transfer_leadership(Some(victim)).await.unwrap();
    assert_eq!(moved.new_leader_id, victim);
    assert_eq!(receive_bodies(&client, "held", &bodies).await, bodies);
}

#[tokio::test]
async fn a_fourth_node_joins_is_promoted_and_an_old_member_is_removed_under_writes() {
    let (_serial, mut c, _) = elected_cluster(3, &[]).await;
    let stop = Arc::new(AtomicBool::new(false));
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let writer = {
        let client = c.client();
        let stop = stop.clone();
        let acked = acked.clone();
        tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = format!("w-{i}");
                match client.create_queue(&name, HashMap::new()).await {
                    Ok(_) => acked.lock().unwrap().push(name),
                    Err(e) => errors.push(e.to_string()),
                }
                i += 1;
            }
            errors
        })
    };
    let acked_count = || acked.lock().unwrap().len();
    // Each step must happen while writes keep being acknowledged.
    let writes_continue = |since: usize, step: &'static str| {
        let acked = acked.clone();
        async move {
            wait_for(Duration::from_secs(30), step, || {
                let acked = acked.clone();
                async move { (acked.lock().unwrap().len() >= since + 20).then_some(()) }
            })
            .await
        }
    };
    writes_continue(0, "writes before the membership changes").await;

    let addr4 = c.start_joining(4);
    let admin = c.client_without(4);
    let m = admin.add_learner(4, &addr4).await.expect("add learner");
    let four = m.members.iter().find(|m| m.node_id == 4).unwrap();
    assert_eq!(four.role, "learner");
    assert_eq!(
        four.lag,
        Some(0),
        "AddLearner returns once the learner caught up"
    );
    writes_continue(acked_count(), "writes after adding the learner").await;

    let m = admin.promote_learner(4).await.expect("promote");
    assert_eq!(
        m.members.iter().find(|m| m.node_id == 4).unwrap().role,
        "voter"
    );
    writes_continue(acked_count(), "writes after promoting").await;

    let m = admin.remove_member(1).await.expect("remove node 1");
    let ids: BTreeSet<NodeId> = m.members.iter().map(|m| m.node_id).collect();
    assert_eq!(ids, BTreeSet::from([2, 3, 4]));
    // The removed node no longer speaks for the cluster: it says it is not a
    // member, or (if the final configuration has not reached it) passes the
    // question to the leader.
    let removed = c.node(1).client(Duration::from_millis(300));
    match removed.cluster_status(false).await {
        Err(e) => assert_eq!(e.code(), Some("NotClusterMember"), "{e}"),
        Ok(s) => {
            assert_ne!(
                s.node_id, 1,
                "removed node answered with its own view: {s:?}"
            );
            assert!(s.members.iter().all(|m| m.node_id != 1), "{s:?}");
        }
    }
    writes_continue(acked_count(), "writes after removing node 1").await;

    stop.store(true, Ordering::Relaxed);
    let errors = writer.await.unwrap();
    assert!(errors.is_empty(), "writes failed: {errors:?}");
    let acked: BTreeSet<String> = acked.lock().unwrap().iter().cloned().collect();
    eprintln!(
        "{} creates acknowledged during the membership changes",
        acked.len()
    );

    let remaining = Client::new([2, 3, 4].map(|id| c.nodes[&id].addr.clone())).unwrap();
    let listed: BTreeSet<String> = queue_names(&remaining, "w-", Consistency::Linearizable)
        .await
        .unwrap();
    let lost: Vec<_> = acked.difference(&listed).collect();
    assert!(lost.is_empty(), "acknowledged creates missing: {lost:?}");
    // The new voter holds everything too.
    wait_listed(&mut c, 4, "w-", &listed).await;
}
