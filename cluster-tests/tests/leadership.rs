//! Leadership transfer: on request, and by a leader receiving SIGTERM.

use std::collections::HashMap;
use std::time::Duration;

use cluster_tests::{serial, Cluster};

const ELECTION: Duration = Duration::from_secs(20);

#[tokio::test]
async fn transfer_leadership_moves_it_to_the_named_voter() {
    let _serial = serial().await;
    let mut c = Cluster::start(3, &[]);
    let old = c.leader(ELECTION).await;
    let target = *c.nodes.keys().find(|id| **id != old).unwrap();
    let client = c.client();
    client.create_queue("q", HashMap::new()).await.unwrap();
    let before = client.cluster_status(false).await.unwrap().term;
    let t = client
        .transfer_leadership(Some(target))
        .await
        .expect("transfer");
    assert_eq!(t.previous_leader_id, old);
    assert_eq!(t.new_leader_id, target);
    assert!(t.term > before);
    assert_eq!(c.leader(ELECTION).await, target);
    // The cluster keeps serving under the new leader.
    client.create_queue("q2", HashMap::new()).await.unwrap();
}

#[tokio::test]
async fn a_leader_hands_over_before_exiting_on_sigterm() {
    let _serial = serial().await;
    let mut c = Cluster::start(3, &[]);
    let old = c.leader(ELECTION).await;
    let survivors = c.client_without(old);
    survivors.create_queue("q", HashMap::new()).await.unwrap();
    let status = c.node(old).terminate(Duration::from_secs(30));
    assert!(status.success(), "SIGTERM exit: {status}");
    let log = c.node(old).log_text();
    assert!(
        log.contains("handed leadership over before shutting down"),
        "the leader should report the hand-over:\n{log}"
    );
    // The new leader was chosen by the hand-over, before the old one exited:
    // the survivors already agree on it.
    let s = survivors.cluster_status(false).await.unwrap();
    let new = s.leader_id.expect("a leader");
    assert_ne!(new, old);
    assert!(log.contains(&format!("new_leader={new}")), "{log}");
    survivors.create_queue("q2", HashMap::new()).await.unwrap();
}
