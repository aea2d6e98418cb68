//! Flushing the log, off the async runtime.
//!
//! The log store writes each append into the engine at once (cheap, in
//! memory) and passes openraft's completion callback here. A dedicated thread
//! waits for the first pending callback, takes every other one queued behind
//! it, flushes once (the engine's fsync, which blocks), and completes them
//! all.
//!
//! openraft 0.9 waits for each append's flush before it issues the next, so
//! the batching that matters for throughput happens one level up, in
//! [`super::proposer`], which packs many writes into one entry. This thread
//! keeps the blocking fsync off the runtime's worker threads, and folds
//! together the flushes that do arrive at once (a vote and an append; appends,
//! should openraft pipeline them).

use std::io;
use std::sync::mpsc;
use std::time::Instant;

/// Completes a waiter once its writes are durable (or failed to become so).
pub type Waiter = Box<dyn FnOnce(Result<(), io::Error>) + Send>;

struct Pending {
    entries: usize,
    waiter: Waiter,
}

/// Handle to the flush thread. Dropping every handle stops the thread after
/// it has completed what was queued.
#[derive(Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the flush thread. `flush` must make every write issued before
    /// it was called durable.
    pub fn start<F>(name: &str, flush: F) -> Self
    where
        F: Fn() -> Result<(), String> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Pending>();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || run(rx, flush))
            .expect("spawning the log flush thread");
        GroupCommit { tx }
    }

    /// Queues `waiter` to be completed by the next flush. `entries` is only
    /// counted in metrics. The writes it waits for must already be issued.
    pub fn submit(&self, entries: usize, waiter: Waiter) {
        if let Err(mpsc::SendError(p)) = self.tx.send(Pending { entries, waiter }) {
            (p.waiter)(Err(io::Error::other("log flush thread has stopped")));
        }
    }

    /// Waits until everything issued so far is durable.
    pub async fn flush(&self) -> Result<(), io::Error> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(
            0,
            Box::new(move |r| {
                let _ = tx.send(r);
            }),
        );
        rx.await
            .unwrap_or_else(|_| Err(io::Error::other("log flush thread has stopped")))
    }
}

fn run<F>(rx: mpsc::Receiver<Pending>, flush: F)
where
    F: Fn() -> Result<(), String>,
{
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        let entries: usize = batch.iter().map(|p| p.entries).sum();
        let started = Instant::now();
        let result = flush();
        metrics::counter!("sluice_log_fsyncs_total").increment(1);
        metrics::histogram!("sluice_log_fsync_seconds").record(started.elapsed().as_secs_f64());
        metrics::histogram!("sluice_log_entries_per_fsync").record(entries as f64);
        if let Err(e) = &result {
            tracing::error!(error = %e, "flushing the log failed");
        }
        for p in batch {
            (p.waiter)(result.clone().map_err(io::Error::other));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Barrier, Mutex};

    #[test]
    fn appends_queued_behind_a_flush_share_the_next_one() {
        let flushes = Arc::new(AtomicUsize::new(0));
        // The first flush blocks until the test has queued 100 more appends.
        let gate = Arc::new(Barrier::new(2));
        let first = Arc::new(Mutex::new(true));
        let gc = {
            let flushes = flushes.clone();
            let gate = gate.clone();
            GroupCommit::start("test-flush", move || {
                if std::mem::replace(&mut *first.lock().unwrap(), false) {
                    gate.wait();
                }
                flushes.fetch_add(1, Ordering::SeqCst);
                Ok(())
            })
        };
        let (done_tx, done_rx) = mpsc::channel();
        let submit = |i: usize| {
            let done_tx = done_tx.clone();
            gc.submit(
                1,
                Box::new(move |r| {
                    r.unwrap();
                    done_tx.send(i).unwrap();
                }),
            );
        };
        // Whether the thread takes append 0 alone or with some of the others
        // into its (blocked) first flush, everything else must share one more.
        for i in 0..=100 {
            submit(i);
        }
        gate.wait();
        let mut done: Vec<usize> = (0..=100).map(|_| done_rx.recv().unwrap()).collect();
        done.sort_unstable();
        assert_eq!(done, (0..=100).collect::<Vec<_>>());
        let n = flushes.load(Ordering::SeqCst);
        // At most: the blocked flush (which may have taken a few of the
        // appends with it) and one more for everything queued behind it.
        assert!(n <= 2, "{n} flushes for 101 appends");
    }

    #[test]
    fn a_failed_flush_fails_every_waiter_in_its_batch() {
        let gc = GroupCommit::start("test-flush-fail", || Err("disk on fire".into()));
        let (tx, rx) = mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            gc.submit(1, Box::new(move |r| tx.send(r.is_err()).unwrap()));
        }
        for _ in 0..3 {
            assert!(rx.recv().unwrap());
        }
    }
}
