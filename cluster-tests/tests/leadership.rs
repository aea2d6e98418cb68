//! Leadership transfer: on request, and by a leader receiving SIGTERM.

use std::collections::HashMap;
use std::time::Duration;

use cluster_tests::{elected_cluster, ELECTION};

#[tokio::test]
async fn transfer_leadership_moves_it_to_the_named_voter() {
    let (_serial, mut c, old) = elected_cluster(3, &[]).await;
    let target = c.others(old)[0];
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
    let (_serial, mut c, old) = elected_cluster(3, &[]).await;
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

/// Sends SIGCONT to a stopped process when dropped, so a failed assertion
/// does not leave a node stopped.
struct Stopped(i32);

impl Stopped {
    fn new(pid: u32) -> Stopped {
        let pid = pid as i32;
        // SAFETY: kill(2) on a child process this test started.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0, "SIGSTOP");
        Stopped(pid)
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        // SAFETY: as above.
        unsafe { libc::kill(self.0, libc::SIGCONT) };
    }
}

/// Calls a follower forwarded to a leader that then stopped answering
/// (SIGSTOP) are freed by the next election instead of waiting out their
/// deadline: a read goes on to the new leader, a write answers
/// LeaderChanged (its outcome is unknown, so it is not resent).
#[tokio::test]
async fn calls_forwarded_to_a_stopped_leader_are_freed_by_the_next_election() {
    // A leader wait far longer than an election: without the release, both
    // calls would run into it (or the client's 20 s attempt timeout).
    let (_serial, mut c, old) = elected_cluster(3, &["--leader-wait-ms", "60000"]).await;
    let follower = c.others(old)[0];
    c.client().create_queue("q", HashMap::new()).await.unwrap();
    // One attempt, at the follower only.
    let at_follower = c.node(follower).client(Duration::ZERO);
    let stopped = Stopped::new(c.node(old).pid().expect("leader running"));
    let (write, read) = tokio::join!(
        at_follower.create_queue("q2", HashMap::new()),
        at_follower.get_queue_url("q", sluice_client::Consistency::Linearizable),
    );
    drop(stopped);
    let url = read.expect("the read goes on to the new leader");
    assert!(url.ends_with("/q"), "{url}");
    match write {
        Err(sluice_client::Error::Call { code, message, .. }) => {
            assert_eq!(code, "LeaderChanged", "{message}");
            assert!(
                message.contains("may or may not have been applied"),
                "{message}"
            );
        }
        other => panic!("the forwarded write should end with LeaderChanged: {other:?}"),
    }
    // Resumed, the old leader rejoins (or wins a later election); the
    // cluster serves.
    c.client().create_queue("q3", HashMap::new()).await.unwrap();
}
