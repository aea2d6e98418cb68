//! Prometheus metrics, served at `GET /metrics` on the node's gRPC port.
//!
//! | metric | kind | what |
//! | --- | --- | --- |
//! | `sluice_grpc_requests_total{rpc,code}` | counter | calls by method and status |
//! | `sluice_grpc_request_duration_seconds{rpc,code}` | histogram | call latency |
//! | `sluice_raft_term` | gauge | current term |
//! | `sluice_raft_is_leader` | gauge | 1 on the leader |
//! | `sluice_raft_last_log_index` | gauge | last log index |
//! | `sluice_raft_committed_index` | gauge | last committed index |
//! | `sluice_raft_applied_index` | gauge | last applied index |
//! | `sluice_raft_snapshot_index` / `_purged_index` | gauge | compaction progress |
//! | `sluice_raft_replication_lag{peer}` | gauge | entries a peer is behind (leader only) |
//! | `sluice_apply_seconds` | histogram | state machine apply per batch |
//! | `sluice_applied_entries_total` | counter | log entries applied |
//! | `sluice_applied_commands_total` | counter | commands applied (entries carry batches) |
//! | `sluice_proposal_batch_commands` | histogram | commands per proposed entry (leader) |
//! | `sluice_proposal_wait_seconds` | histogram | a write's wait for a batch slot before it goes to Raft (leader) |
//! | `sluice_proposal_seconds` | histogram | a batch from its hand-off to Raft until applied: replication, fsyncs and apply (leader) |
//! | `sluice_replication_seconds{peer}` | histogram | an AppendEntries with entries, sent until answered: the follower's append and fsync and the transport both ways (leader) |
//! | `sluice_append_entries_seconds` | histogram | an AppendEntries with entries, taken until answered: append and fsync (follower) |
//! | `sluice_log_fsyncs_total` | counter | log flushes (one fsync batch each) |
//! | `sluice_log_fsync_seconds` | histogram | flush latency |
//! | `sluice_log_entries_per_fsync` | histogram | group commit batch size |
//! | `sluice_snapshot_build_seconds` / `_install_seconds` | histogram | snapshot work |
//! | `sluice_long_polls_waiting` | gauge | receives waiting for a message on this node |
//! | `sluice_long_poll_wakeups_total{proposed}` | counter | long polls woken by a message or the end of their wait, and whether this node's state sent them to the leader (`true`) or back to wait (`false`) |

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::raft::Raft;

/// How often histogram samples are folded into their buckets when nobody
/// scrapes: the recorder keeps every sample until then.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// Renders the process's metrics in the Prometheus text format.
pub struct Exporter {
    handle: PrometheusHandle,
}

impl Exporter {
    /// The process-wide exporter, installing the recorder on first use.
    pub fn global() -> Arc<Exporter> {
        static EXPORTER: OnceLock<Arc<Exporter>> = OnceLock::new();
        EXPORTER
            .get_or_init(|| {
                let seconds: Vec<f64> = (0..20).map(|i| 0.000_05 * 2f64.powi(i)).collect();
                let counts: Vec<f64> = (0..14).map(|i| 2f64.powi(i)).collect();
                let recorder = PrometheusBuilder::new()
                    .set_buckets(&seconds)
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full("sluice_log_entries_per_fsync".into()),
                            &counts,
                        )
                    })
                    .and_then(|b| {
                        b.set_buckets_for_metric(
                            Matcher::Full("sluice_proposal_batch_commands".into()),
                            &counts,
                        )
                    })
                    .expect("bucket lists are non-empty")
                    .build_recorder();
                let handle = recorder.handle();
                // Fails only if another recorder was installed first, in which
                // case metrics go there and this exporter renders nothing.
                let _ = metrics::set_global_recorder(recorder);
                // A histogram holds each sample it records until upkeep
                // folds them into its buckets; a node nobody scrapes would
                // otherwise keep every request's duration forever.
                let kept = handle.clone();
                every(UPKEEP_EVERY, move || kept.run_upkeep());
                Arc::new(Exporter { handle })
            })
            .clone()
    }

    /// The current metrics as Prometheus text.
    pub fn render(&self) -> String {
        self.handle.run_upkeep();
        self.handle.render()
    }
}

/// Runs `work` every `period` on a thread of its own, for the life of the
/// process.
fn every(period: Duration, work: impl Fn() + Send + 'static) {
    let started = std::thread::Builder::new()
        .name("sluice-metrics".into())
        .spawn(move || loop {
            std::thread::sleep(period);
            work();
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "no thread for metrics upkeep: histograms are folded only when scraped");
    }
}

/// Keeps the Raft gauges up to date until the Raft instance stops.
pub fn spawn_raft_gauges(raft: Raft) -> tokio::task::JoinHandle<()> {
    let mut rx = raft.metrics();
    tokio::spawn(async move {
        // Peers with a lag gauge; zeroed when this node stops leading, so a
        // former leader does not keep reporting its last view.
        let mut peers = std::collections::BTreeSet::<u64>::new();
        loop {
            {
                let m = rx.borrow_and_update();
                metrics::gauge!("sluice_raft_term").set(m.current_term as f64);
                metrics::gauge!("sluice_raft_is_leader").set(if m.current_leader == Some(m.id) {
                    1.0
                } else {
                    0.0
                });
                metrics::gauge!("sluice_raft_last_log_index")
                    .set(m.last_log_index.unwrap_or(0) as f64);
                metrics::gauge!("sluice_raft_applied_index")
                    .set(m.last_applied.map(|l| l.index).unwrap_or(0) as f64);
                metrics::gauge!("sluice_raft_snapshot_index")
                    .set(m.snapshot.map(|l| l.index).unwrap_or(0) as f64);
                metrics::gauge!("sluice_raft_purged_index")
                    .set(m.purged.map(|l| l.index).unwrap_or(0) as f64);
                let last = m.last_log_index.unwrap_or(0);
                let lags: Vec<(u64, u64)> = m
                    .replication
                    .iter()
                    .flat_map(|r| r.iter())
                    .map(|(peer, matched)| {
                        (
                            *peer,
                            last.saturating_sub(matched.map(|l| l.index).unwrap_or(0)),
                        )
                    })
                    .collect();
                for peer in &peers {
                    if !lags.iter().any(|(p, _)| p == peer) {
                        metrics::gauge!("sluice_raft_replication_lag", "peer" => peer.to_string())
                            .set(0.0);
                    }
                }
                for (peer, lag) in lags {
                    metrics::gauge!("sluice_raft_replication_lag", "peer" => peer.to_string())
                        .set(lag as f64);
                    peers.insert(peer);
                }
            }
            if rx.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Publishes the connection counts once a second: open connections, and
/// connections refused at the limit, closed for idleness, or whose TLS
/// handshake failed.
pub fn spawn_connection_gauges(
    limits: sluice_security::connection::ConnectionLimits,
) -> tokio::task::JoinHandle<()> {
    use sluice_security::connection::{IDLE_CLOSED, REFUSED};
    use std::sync::atomic::Ordering::Relaxed;
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        loop {
            tick.tick().await;
            metrics::gauge!("sluice_connections_open").set(limits.open() as f64);
            metrics::gauge!("sluice_connections_max").set(limits.max as f64);
            metrics::counter!("sluice_connections_refused_total").absolute(REFUSED.load(Relaxed));
            metrics::counter!("sluice_connections_idle_closed_total")
                .absolute(IDLE_CLOSED.load(Relaxed));
            metrics::counter!("sluice_tls_handshakes_failed_total")
                .absolute(sluice_security::tls::HANDSHAKES_FAILED.load(Relaxed));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upkeep_runs_again_and_again_without_a_scrape() {
        let (tick, ticks) = std::sync::mpsc::channel();
        every(Duration::from_millis(10), move || {
            let _ = tick.send(());
        });
        for _ in 0..3 {
            ticks
                .recv_timeout(Duration::from_secs(10))
                .expect("the upkeep thread runs its work every period");
        }
    }
}
