//! Numbered writes from several producers while the leader is killed: the
//! driver the fan-out tests share (topics, event buses).
//!
//! The producers call only the nodes that survive, one attempt per call, so
//! every error is either "certainly not applied" (retried) or of unknown
//! outcome (never resent: that could apply it twice). The leader is killed
//! once a third of the writes are settled and started again at two thirds.

use std::collections::BTreeSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sluice_client::{Client, Options};

use crate::{wait_for, Cluster, NodeId};

/// What the producers saw of their numbered writes.
#[derive(Debug, Default)]
pub struct Written {
    /// Accepted.
    pub acked: BTreeSet<usize>,
    /// Of unknown outcome: applied or not.
    pub unknown: BTreeSet<usize>,
}

impl Written {
    /// Writes settled either way.
    pub fn settled(&self) -> usize {
        self.acked.len() + self.unknown.len()
    }
}

/// Whether an error says the write was certainly not applied.
pub fn not_applied(e: &sluice_client::Error) -> bool {
    matches!(
        e.code(),
        Some("NotLeader" | "NoLeader" | "ShuttingDown" | "NotClusterMember")
    )
}

/// How a run went.
pub struct Run {
    /// What was written.
    pub written: Written,
    /// From the first write to the last producer's end.
    pub took: Duration,
    /// Writes settled when the leader was killed.
    pub killed_after: usize,
}

/// Runs `producers` producers, `produce(client, p, written)` each, until
/// they return, killing `leader` after a third of `total` writes and
/// restarting it after two thirds.
pub async fn write_through_a_leader_kill<F, Fut>(
    c: &mut Cluster,
    leader: NodeId,
    total: usize,
    producers: usize,
    produce: F,
) -> Run
where
    F: Fn(Client, usize, Arc<Mutex<Written>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let others: Vec<String> = c
        .nodes
        .values()
        .filter(|n| n.id != leader)
        .map(|n| n.addr.clone())
        .collect();
    let written = Arc::new(Mutex::new(Written::default()));
    let started = Instant::now();
    let tasks: Vec<_> = (0..producers)
        .map(|p| {
            let mut addrs = others.clone();
            let n = addrs.len();
            addrs.rotate_left(p % n);
            let options = Options {
                deadline: Duration::ZERO,
                ..Options::default()
            };
            let client = Client::with_options(addrs, options).expect("client");
            tokio::spawn(produce(client, p, written.clone()))
        })
        .collect();
    let settled = || written.lock().unwrap().settled();
    wait_for(
        Duration::from_secs(300),
        "a third of the writes",
        || async { (settled() >= total / 3).then_some(()) },
    )
    .await;
    c.node(leader).kill9();
    let killed_after = settled();
    wait_for(
        Duration::from_secs(300),
        "two thirds of the writes",
        || async { (settled() >= total * 2 / 3).then_some(()) },
    )
    .await;
    c.node(leader).start();
    for t in tasks {
        t.await.expect("a producer panicked");
    }
    let took = started.elapsed();
    let written = std::mem::take(&mut *written.lock().unwrap());
    Run {
        written,
        took,
        killed_after,
    }
}

/// Checks that each write of unknown outcome reached all of the places
/// `matching` names for it, or none: a write is one command. `holds` says
/// whether a place holds a write.
pub fn all_or_none(
    written: &Written,
    matching: impl Fn(usize) -> Vec<&'static str>,
    holds: impl Fn(&str, usize) -> bool,
) {
    for n in &written.unknown {
        let places = matching(*n);
        let holding: Vec<&str> = places.iter().copied().filter(|p| holds(p, *n)).collect();
        assert!(
            holding.is_empty() || holding == places,
            "write {n} reached {holding:?} of {places:?}"
        );
    }
}

/// Receives everything in `queue` (each message hidden for ten minutes,
/// longer than the drain) and counts the messages by `key` of their bodies.
pub async fn count_in_queue<K: Ord>(
    client: &Client,
    queue: &str,
    key: impl Fn(&str) -> K,
) -> std::collections::BTreeMap<K, usize> {
    let mut seen = std::collections::BTreeMap::new();
    let mut empty = 0;
    while empty < 2 {
        let r = client
            .receive_from(queue, 10, Some(600), Some(1))
            .await
            .expect("receive");
        if r.messages.is_empty() {
            empty += 1;
            continue;
        }
        empty = 0;
        for m in r.messages {
            *seen.entry(key(&m.body)).or_default() += 1;
        }
    }
    seen
}

/// Makes one write of `chunk` (numbered writes) through `call`: retried
/// while it was certainly not applied, recorded as accepted when `accepted`
/// (given the reply) says so, or as of unknown outcome when the call failed
/// otherwise (never resent: that could apply it twice).
pub async fn write_once<R, Fut>(
    written: &Mutex<Written>,
    chunk: &[usize],
    mut call: impl FnMut() -> Fut,
    accepted: impl Fn(&R),
) where
    Fut: Future<Output = Result<R, sluice_client::Error>>,
{
    loop {
        match call().await {
            Ok(reply) => {
                accepted(&reply);
                written.lock().unwrap().acked.extend(chunk.iter().copied());
                return;
            }
            Err(e) if not_applied(&e) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(_) => {
                written
                    .lock()
                    .unwrap()
                    .unknown
                    .extend(chunk.iter().copied());
                return;
            }
        }
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let w = &self.written;
        write!(
            f,
            "{} writes ({} accepted, {} unknown) in {:.1} s, leader killed after {}",
            w.settled(),
            w.acked.len(),
            w.unknown.len(),
            self.took.as_secs_f64(),
            self.killed_after
        )
    }
}
