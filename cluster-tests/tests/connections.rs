//! Connections a node does not need go away: idle and half-open ones are
//! closed after the idle timeout, and at its connection limit (derived from
//! the descriptor limit) a node refuses more at once instead of spinning,
//! and takes new clients as soon as others leave.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use cluster_tests::{
    elected_cluster, metric_value, receive_waiting, serial, wait_for, Cluster, ELECTION,
};

/// Waits (bounded) for the server to close `conn`; returns how long it took.
fn closed_by_server(conn: &mut TcpStream, within: Duration) -> Option<Duration> {
    let started = Instant::now();
    conn.set_read_timeout(Some(within)).unwrap();
    let mut buf = [0u8; 4096];
    loop {
        match conn.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            // The server's SETTINGS frame, for a connection that spoke.
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return Some(started.elapsed())
            }
            Err(_) => return None,
        }
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn idle_and_half_open_connections_are_closed_after_the_idle_timeout_but_busy_ones_are_not() {
    let (_serial, mut c, _) = elected_cluster(1, &["--idle-timeout-secs", "2"]).await;
    let addr = c.nodes[&1].addr.clone();
    // Silent from the start, and silent after the HTTP/2 preface.
    let opened = Instant::now();
    let mut silent = TcpStream::connect(&addr).unwrap();
    let mut preface = TcpStream::connect(&addr).unwrap();
    preface
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    for conn in [&mut silent, &mut preface] {
        closed_by_server(conn, Duration::from_secs(30)).expect("closed by the node");
        let took = opened.elapsed();
        assert!(took >= Duration::from_millis(1900), "closed after {took:?}");
    }
    wait_for(
        Duration::from_secs(5),
        "the idle closes to be counted",
        || {
            let m = c.nodes[&1].metrics();
            async move {
                (metric_value(&m, "sluice_connections_idle_closed_total") >= 2.0).then_some(())
            }
        },
    )
    .await;
    // A long poll twice the idle timeout is a call in progress, not idleness.
    let client = c.node(1).client(Duration::from_secs(20));
    client.create_queue("q", HashMap::new()).await.unwrap();
    let started = Instant::now();
    let r = receive_waiting(&client, "q", Some(4))
        .await
        .expect("the long poll is not cut");
    assert!(r.messages.is_empty());
    assert!(started.elapsed() >= Duration::from_secs(4));
}

/// CPU time of `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the name.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn set_nofile(soft: u64) {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
    }
    limit.rlim_cur = soft.min(limit.rlim_max);
    unsafe {
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn at_the_descriptor_limit_a_node_stays_cool_and_takes_new_clients_once_others_leave() {
    let _serial = serial().await;
    // The node inherits `ulimit -n 1024`; this process takes it back up to
    // hold more connections than that.
    set_nofile(1024);
    let mut c = Cluster::start(1, &[]);
    set_nofile(u64::MAX);
    c.leader(ELECTION).await;
    let addr = c.nodes[&1].addr.clone();
    let pid = c.node(1).pid().unwrap();
    let max = wait_for(Duration::from_secs(5), "the connection limit", || {
        let m = c.nodes[&1].metrics();
        async move { Some(metric_value(&m, "sluice_connections_max")).filter(|v| *v > 0.0) }
    })
    .await;
    assert!(
        max <= 1024.0 - 256.0,
        "the limit leaves room for files: {max}"
    );

    let held: Vec<TcpStream> = (0..1100)
        .filter_map(|_| TcpStream::connect(&addr).ok())
        .collect();
    assert!(held.len() >= 1000, "{} connections made", held.len());
    // Past the limit, connections are closed at once.
    let mut extra = TcpStream::connect(&addr).unwrap();
    assert!(
        closed_by_server(&mut extra, Duration::from_secs(10)).is_some(),
        "a connection past the limit is closed"
    );
    let before = cpu_ticks(pid);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let ticks = cpu_ticks(pid) - before;
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let share = ticks as f64 / per_second / window.elapsed().as_secs_f64();
    eprintln!(
        "CPU with {} connections held: {:.1}% of a core",
        held.len(),
        share * 100.0
    );
    assert!(share < 0.10, "{:.1}% of a core", share * 100.0);

    drop(held);
    let client = c.node(1).client(Duration::from_secs(2));
    wait_for(Duration::from_secs(20), "a new client to be served", || {
        let client = &client;
        async move { client.create_queue("after", HashMap::new()).await.ok() }
    })
    .await;
    let metrics = c.nodes[&1].metrics();
    assert!(metric_value(&metrics, "sluice_connections_refused_total") > 0.0);
}
