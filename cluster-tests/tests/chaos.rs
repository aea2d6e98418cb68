//! The short chaos suite: each workload for about 30 s under a mixed
//! nemesis (every kind of fault the platform allows), then the checkers.
//!
//! Runs are one at a time (a lock), since each starts its own cluster and
//! the suite must not measure the machine's contention instead of the
//! broker. Results folders go to `target/chaos-results/`; a failing run
//! names its folder. `SLUICE_CHAOS_SEED` replaces the fixed seeds, and
//! `SLUICE_CHAOS_SECONDS` the 30 s.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use cluster_tests::chaos::nemesis::Kind;
use cluster_tests::chaos::run::{self, Config, Workload};
use cluster_tests::env_or;

static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

fn results_dir() -> PathBuf {
    // The test executable lives in target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target directory above the test executable");
    target.join("chaos-results")
}

fn suite_run(workload: Workload, seed: u64, nodes: u64) {
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let mut cfg = Config::new(workload, env_or("SLUICE_CHAOS_SEED", seed), &results_dir());
    cfg.nodes = nodes;
    cfg.nemesis = Kind::ALL.to_vec();
    cfg.time_limit = Duration::from_secs(env_or("SLUICE_CHAOS_SECONDS", 30));
    // Short calms and faults, so 30 s hold about six faults.
    cfg.calm_s = (1, 3);
    cfg.fault_s = (2, 4);
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    let out = runtime
        .block_on(run::run(&cfg))
        .unwrap_or_else(|e| panic!("{workload} run (seed {}) did not complete: {e}", cfg.seed));
    let s = &out.summary;
    let injected: u64 = s.faults.values().sum();
    eprintln!(
        "{workload} seed {}: valid {}, faults {:?}, skipped {:?}, operations {:?}, results {}",
        s.seed,
        s.valid,
        s.faults,
        s.skipped_nemesis,
        s.operations,
        out.dir.display()
    );
    for v in &s.verdicts {
        assert!(
            v.valid,
            "{workload} checker {} found anomalies (seed {}, results {}): {:?}",
            v.checker,
            s.seed,
            out.dir.display(),
            v.anomalies
        );
    }
    assert!(
        s.valid,
        "{workload} run invalid (seed {}, results {}): {:?}",
        s.seed,
        out.dir.display(),
        s.notes
    );
    assert!(
        injected >= 3,
        "{workload}: only {injected} faults in the run ({:?})",
        s.faults
    );
    let ok: u64 = s
        .operations
        .values()
        .map(|m| m.get("ok").copied().unwrap_or(0))
        .sum();
    assert!(ok > 100, "{workload}: only {ok} operations succeeded");
    for file in [
        "history.jsonl",
        "summary.json",
        "faults.jsonl",
        "latency.svg",
        "throughput.svg",
        "index.html",
    ] {
        assert!(
            out.dir.join(file).is_file(),
            "{workload}: the results folder lacks {file}"
        );
    }
}

/// A test of each workload under mixed faults: (test, workload, seed,
/// nodes).
macro_rules! suite_tests {
    ($($name:ident: $workload:ident, $seed:literal, $nodes:literal;)*) => {$(
        #[test]
        fn $name() {
            suite_run(Workload::$workload, $seed, $nodes);
        }
    )*};
}

suite_tests! {
    queue_under_mixed_faults: Queue, 11, 5;
    stream_under_mixed_faults: Stream, 12, 5;
    topic_under_mixed_faults: Topic, 14, 5;
    mapping_under_mixed_faults: Mapping, 15, 5;
    metadata_under_mixed_faults: Metadata, 13, 3;
    schedule_under_mixed_faults: Schedule, 16, 5;
}
