//! Bootstrap by DNS (`sluice serve --peer-dns`), as a Kubernetes StatefulSet
//! runs it: pods find each other by name, ordinal 0 founds the cluster, the
//! leader adds pods that appear and removes pods scaled away, and a rolling
//! restart one pod at a time loses no acknowledged write.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cluster_tests::dns::DnsCluster;
use cluster_tests::{receive_bodies, serial, wait_for};
use sluice_client::Client;

const FORM: Duration = Duration::from_secs(60);

/// Every acknowledged send, and the time of each acknowledgement.
#[derive(Default)]
struct Writes {
    acked: BTreeSet<u64>,
    ack_times: Vec<Instant>,
    failed: u64,
}

/// Sends numbered messages to a queue one after another, from before
/// the operations under test until [`Writer::finish`].
struct Writer {
    stop: Arc<AtomicBool>,
    writes: Arc<Mutex<Writes>>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    /// Creates `queue` and starts writing to it.
    async fn start(c: &DnsCluster, queue: &'static str) -> Writer {
        c.client()
            .create_queue(queue, HashMap::new())
            .await
            .expect("create queue");
        let stop = Arc::new(AtomicBool::new(false));
        let writes = Arc::new(Mutex::new(Writes::default()));
        let (client, flag, log) = (c.client(), stop.clone(), writes.clone());
        let task = tokio::spawn(async move {
            let mut n = 0u64;
            while !flag.load(Ordering::SeqCst) {
                let r = client.send_body(queue, &n.to_string()).await;
                let mut w = log.lock().unwrap();
                match r {
                    Ok(_) => {
                        w.acked.insert(n);
                        w.ack_times.push(Instant::now());
                    }
                    Err(_) => w.failed += 1,
                }
                n += 1;
            }
        });
        Writer { stop, writes, task }
    }

    /// Stops writing; what was written.
    async fn finish(self) -> Writes {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("writer");
        std::mem::take(&mut *self.writes.lock().unwrap())
    }
}

/// Three pods (parallel pod management): ordinal 0 founds the cluster and
/// the leader adds the others, with no manual step. Pod 0 starts first and
/// must wait for pods 1 and 2 (`--bootstrap-expect 3`) rather than found a
/// cluster while they cannot be seen.
async fn three_pods(remove_after_s: u64) -> DnsCluster {
    let mut c = DnsCluster::new(remove_after_s);
    c.start(0);
    wait_for(FORM, "pod 0 to wait for its initial peers", || async {
        c.pods[&0]
            .log_text()
            .contains("waiting for the initial peers")
            .then_some(())
    })
    .await;
    assert!(!c.pods[&0].log_text().contains("initialised a new cluster"));
    for k in 1..3 {
        c.start(k);
    }
    c.wait_for_voters(&[1, 2, 3], FORM).await;
    c
}

/// Panics naming what is missing unless every acknowledged message can be
/// received.
async fn check_all_present(client: &Client, queue: &str, acked: &BTreeSet<u64>) {
    let want: BTreeSet<String> = acked.iter().map(u64::to_string).collect();
    let seen = receive_bodies(client, queue, &want).await;
    let missing: Vec<&String> = want.difference(&seen).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged messages lost, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(20)]
    );
}

/// The longest time between two acknowledgements.
fn longest_gap(times: &[Instant]) -> Duration {
    times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap_or_default()
}

// Multi-threaded: the harness waits for processes synchronously, and the
// writer must keep running meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_found_by_name_form_grow_to_five_and_shrink_to_three_under_writes() {
    // Removal after 3 s of absence (60 s by default) keeps the test short.
    let _serial = serial().await;
    let mut c = three_pods(3).await;
    let writer = Writer::start(&c, "scaled").await;

    // Scale up to five, one pod after the other (OrderedReady).
    for k in 3..5 {
        c.start(k);
        let voters: Vec<u64> = (1..=k + 1).collect();
        c.wait_for_voters(&voters, FORM).await;
    }
    let members = c.members().await.expect("members");
    assert_eq!(
        members[&5].1,
        format!(
            "{}:{}",
            DnsCluster::name(4),
            c.cluster_addr(4).rsplit_once(':').unwrap().1
        ),
        "members are known by name (and cluster port), not by address"
    );

    // Scale down to three: the highest ordinal goes first, each waited out.
    for k in [4, 3] {
        c.stop(k);
        let voters: Vec<u64> = (1..=k).collect();
        c.wait_for_voters(&voters, FORM).await;
    }
    // Volumes are kept on scale-down: a pod scaled back resumes from its
    // old data, no longer a member, and is added and promoted again.
    c.start(3);
    c.wait_for_voters(&[1, 2, 3, 4], FORM).await;
    c.stop(3);
    c.wait_for_voters(&[1, 2, 3], FORM).await;

    let Writes { acked, failed, .. } = writer.finish().await;
    assert!(
        acked.len() > 100,
        "only {} writes acknowledged",
        acked.len()
    );
    assert_eq!(failed, 0, "writes failed while the cluster was scaled");
    check_all_present(&c.client(), "scaled", &acked).await;
    eprintln!(
        "scale 3 → 5 → 3 → 4 → 3: {} writes acknowledged, {failed} failed, none lost",
        acked.len()
    );
}

// Multi-threaded: the harness waits for processes synchronously, and the
// writer must keep running meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_writes_loses_nothing() {
    let _serial = serial().await;
    let mut c = three_pods(60).await;
    let writer = Writer::start(&c, "rolled").await;
    let started = Instant::now();

    // As a StatefulSet rolls: highest ordinal first, each pod deleted and
    // recreated with its volume, the next only once it is ready again.
    // Pod 1 is also rescheduled: it comes back at another address.
    let mut phases = Vec::new();
    for k in [2, 1, 0] {
        phases.push((k, Instant::now()));
        c.stop(k);
        if k == 1 {
            c.reschedule(k);
        }
        c.start(k);
        c.wait_for_voters(&[1, 2, 3], FORM).await;
        // Ready: a caught-up voter (`/ready`), as the StatefulSet waits
        // for. A voter still catching up would leave the next restart's
        // majority waiting on it.
        let pod = &c;
        wait_for(FORM, "the restarted pod to be ready", || async move {
            (pod.ready_code(k) == Some(200)).then_some(())
        })
        .await;
    }

    let w = writer.finish().await;
    let (acked, failed, gap) = (w.acked, w.failed, longest_gap(&w.ack_times));
    eprintln!(
        "rolling restart of 3 pods in {:.1} s: {} writes acknowledged, {failed} failed; \
         longest time without an acknowledged write: {} ms",
        started.elapsed().as_secs_f64(),
        acked.len(),
        gap.as_millis()
    );
    assert_eq!(failed, 0, "writes failed during the rolling restart");
    // Writes stop only for an election (a leader hands over on SIGTERM): a
    // few election timeouts (750-1500 ms) at most.
    if gap >= Duration::from_secs(5) {
        // Where the gap fell, and what each pod said about leadership.
        let since = |t: &Instant| t.duration_since(started).as_millis();
        let mut why = String::new();
        for (k, at) in &phases {
            why += &format!("pod {k} stopped at +{} ms\n", since(at));
        }
        if let Some(w) = w.ack_times.windows(2).max_by_key(|w| w[1] - w[0]) {
            why += &format!("gap from +{} ms to +{} ms\n", since(&w[0]), since(&w[1]));
        }
        for k in 0..3 {
            for l in c.pods[&k].log_text().lines() {
                if l.contains("leadership") || l.contains("node st") {
                    why += &format!("pod {k}: {l}\n");
                }
            }
        }
        panic!("writes were unavailable for {gap:?}\n{why}");
    }

    // Every pod deleted at once, then all back (parallel pod management):
    // they resume from their volumes with no step.
    for k in [2, 1, 0] {
        c.stop(k);
    }
    for k in 0..3 {
        c.start(k);
    }
    c.wait_for_voters(&[1, 2, 3], FORM).await;
    // Pod 0 comes back on an empty volume: it must not found a cluster of
    // its own beside the running one, but be caught up as a member.
    c.stop(0);
    c.pods.get_mut(&0).expect("pod 0").wipe();
    c.start(0);
    c.wait_for_voters(&[1, 2, 3], FORM).await;
    let log = c.pods[&0].log_text();
    assert_eq!(
        log.matches("initialised a new cluster").count(),
        1,
        "pod 0 founded a second cluster:\n{log}"
    );
    assert!(log.contains("rejoining"), "pod 0 did not rejoin:\n{log}");
    // Through all of it, nothing acknowledged was lost. (Checked once: a
    // check receives the messages, which hides them for an hour.)
    check_all_present(&c.client(), "rolled", &acked).await;
}
