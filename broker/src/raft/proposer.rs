//! Batching proposals on the leader (group commit).
//!
//! openraft 0.9 appends one entry per `client_write` and waits for that
//! entry's fsync before it appends the next, so one entry per request would
//! mean one fsync per request. The proposer queues the writes a leader
//! receives and keeps at most [`Limits::in_flight`] batches in Raft at once;
//! every write that arrives meanwhile joins the next batch, which becomes one
//! log entry, one append and one fsync, on every node. At low load a write
//! goes out at once, alone; under load, batches grow with the latency they
//! absorb.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, Semaphore};

use super::NodeId;
use crate::clock::now_ms;
use crate::command::{Command, CommandResult, EntryResponse, Proposal};

/// Why a write was not applied. Every write of a failed batch gets the
/// batch's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchError {
    /// Too many writes wait for a batch already: refused, not queued.
    Overloaded {
        /// How many may wait.
        queued: usize,
    },
    /// This node stopped leading; the writes should go to the new leader.
    NotLeader {
        /// This node.
        node_id: NodeId,
        /// The leader it knows of.
        leader: Option<NodeId>,
    },
    /// Raft has stopped.
    ShuttingDown,
    /// Raft stopped after the batch was handed to it: it may have been
    /// appended, and may still commit under the next leader.
    Abandoned,
    /// Anything else.
    Internal(String),
}

/// A batch handed to Raft; resolves when it has been applied.
pub type Submitted = Pin<Box<dyn Future<Output = Result<EntryResponse, BatchError>> + Send>>;

/// Bounds on batching.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Batches in Raft at once.
    pub in_flight: usize,
    /// Commands per batch.
    pub max_commands: usize,
    /// Approximate bytes per batch (see [`Command::size_hint`]).
    pub max_bytes: usize,
    /// Writes waiting for a batch; more are refused with
    /// [`BatchError::Overloaded`] rather than held in memory.
    pub max_queued: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            in_flight: 2,
            max_commands: 1024,
            max_bytes: sluice_core::limits::replication::PROPOSAL_BYTES,
            max_queued: 16_384,
        }
    }
}

struct Pending {
    command: Command,
    reply: oneshot::Sender<Result<CommandResult, BatchError>>,
    /// When the write was queued.
    queued: Instant,
}

/// Queues writes and proposes them in batches. Cheap to clone.
#[derive(Clone)]
pub struct Proposer {
    tx: mpsc::Sender<Pending>,
}

impl Proposer {
    /// Starts the batching task. `submit` hands a batch to Raft, in the order
    /// called, and returns a future of its results.
    pub fn start<F, Fut>(limits: Limits, submit: F) -> Self
    where
        F: FnMut(Proposal) -> Fut + Send + 'static,
        Fut: Future<Output = Submitted> + Send + 'static,
    {
        let (tx, rx) = mpsc::channel(limits.max_queued.max(1));
        tokio::spawn(run(rx, limits, submit));
        Proposer { tx }
    }

    /// Proposes `command` and waits for its result.
    pub async fn propose(&self, command: Command) -> Result<CommandResult, BatchError> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .try_send(Pending {
                command,
                reply,
                queued: Instant::now(),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => {
                    metrics::counter!("sluice_proposals_refused_total").increment(1);
                    BatchError::Overloaded {
                        queued: self.tx.max_capacity(),
                    }
                }
                mpsc::error::TrySendError::Closed(_) => BatchError::ShuttingDown,
            })?;
        // The proposer dropped the write: it may have reached Raft.
        rx.await.unwrap_or(Err(BatchError::Abandoned))
    }
}

async fn run<F, Fut>(mut rx: mpsc::Receiver<Pending>, limits: Limits, mut submit: F)
where
    F: FnMut(Proposal) -> Fut + Send + 'static,
    Fut: Future<Output = Submitted> + Send,
{
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    // Looked up once: every batch records into them.
    let batch_commands = metrics::histogram!("sluice_proposal_batch_commands");
    let waited = metrics::histogram!("sluice_proposal_wait_seconds");
    let in_raft = metrics::histogram!("sluice_proposal_seconds");
    loop {
        // Wait for a free slot first: writes that arrive meanwhile queue up
        // and form the next batch.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = first.command.size_hint();
        let mut batch = vec![first];
        while batch.len() < limits.max_commands && bytes < limits.max_bytes {
            match rx.try_recv() {
                Ok(p) => {
                    bytes += p.command.size_hint();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        batch_commands.record(batch.len() as f64);
        // How long writes wait for a slot, and how long a batch then takes
        // in Raft: together, a write's latency on the leader.
        let handed = Instant::now();
        for p in &batch {
            waited.record(handed.duration_since(p.queued).as_secs_f64());
        }
        let (commands, replies): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.command, p.reply)).unzip();
        let done = submit(Proposal {
            time_ms: now_ms(),
            commands,
        })
        .await;
        let in_raft = in_raft.clone();
        tokio::spawn(async move {
            let result = done.await;
            drop(slot);
            in_raft.record(handed.elapsed().as_secs_f64());
            match result {
                Ok(responses) if responses.len() == replies.len() => {
                    for (reply, response) in replies.into_iter().zip(responses) {
                        let _ = reply.send(Ok(response));
                    }
                }
                Ok(responses) => {
                    let e = BatchError::Internal(format!(
                        "a batch of {} commands got {} results",
                        replies.len(),
                        responses.len()
                    ));
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
                Err(e) => {
                    for reply in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::CommandOutput;
    use std::sync::Mutex;

    fn cmd(i: usize) -> Command {
        Command::DeleteQueue(crate::queues::DeleteQueue {
            name: format!("q{i}"),
        })
    }

    /// A proposer with one batch in flight at a time (and `limits`
    /// otherwise) over a Raft that records each batch's size (the sizes
    /// are returned) and applies the batch once `released` turns true.
    fn recording(
        limits: Limits,
        released: tokio::sync::watch::Receiver<bool>,
    ) -> (Proposer, Arc<Mutex<Vec<usize>>>) {
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let recorded = sizes.clone();
        let limits = Limits {
            in_flight: 1,
            ..limits
        };
        let proposer = Proposer::start(limits, move |req: Proposal| {
            recorded.lock().unwrap().push(req.commands.len());
            let mut release = released.clone();
            let n = req.commands.len();
            std::future::ready(Box::pin(async move {
                let _ = release.wait_for(|r| *r).await;
                Ok((0..n).map(|_| Ok(CommandOutput::DeleteQueue(()))).collect())
            }) as Submitted)
        });
        (proposer, sizes)
    }

    #[tokio::test]
    async fn writes_arriving_while_batches_are_in_flight_share_one_entry() {
        // Raft that holds every batch until the test releases it.
        let (release_tx, release_rx) = tokio::sync::watch::channel(false);
        let (proposer, sizes) = recording(Limits::default(), release_rx);
        // The first write goes out alone and is held in Raft.
        let first = tokio::spawn({
            let p = proposer.clone();
            async move { p.propose(cmd(0)).await }
        });
        while sizes.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        // A hundred more arrive meanwhile; polling each once enqueues it.
        let mut rest: Vec<_> = (1..101)
            .map(|i| Box::pin(proposer.propose(cmd(i))))
            .collect();
        for f in &mut rest {
            assert!(futures::poll!(f.as_mut()).is_pending());
        }
        release_tx.send(true).unwrap();
        assert_eq!(
            first.await.unwrap().unwrap(),
            Ok(CommandOutput::DeleteQueue(()))
        );
        for r in futures::future::join_all(rest).await {
            assert_eq!(r.unwrap(), Ok(CommandOutput::DeleteQueue(())));
        }
        assert_eq!(*sizes.lock().unwrap(), vec![1, 100]);
    }

    #[tokio::test]
    async fn a_failed_batch_fails_each_of_its_writes() {
        let proposer = Proposer::start(Limits::default(), |_req: Proposal| {
            std::future::ready(Box::pin(async { Err(BatchError::ShuttingDown) }) as Submitted)
        });
        let (a, b) = tokio::join!(proposer.propose(cmd(1)), proposer.propose(cmd(2)));
        assert!(a.is_err() && b.is_err());
    }

    #[tokio::test]
    async fn batches_respect_the_command_limit() {
        // Applied at once.
        let (_release, released) = tokio::sync::watch::channel(true);
        let limits = Limits {
            max_commands: 10,
            max_bytes: usize::MAX,
            ..Limits::default()
        };
        let (proposer, sizes) = recording(limits, released);
        let all = futures::future::join_all((0..35).map(|i| proposer.propose(cmd(i)))).await;
        assert!(all.iter().all(|r| r.is_ok()));
        let sizes = sizes.lock().unwrap().clone();
        assert!(sizes.iter().all(|s| *s <= 10), "{sizes:?}");
        assert_eq!(sizes.iter().sum::<usize>(), 35);
    }

    #[tokio::test]
    async fn writes_past_the_queue_bound_are_refused_not_held() {
        let submitted = Arc::new(Mutex::new(0));
        let proposer = {
            let submitted = submitted.clone();
            Proposer::start(
                Limits {
                    in_flight: 1,
                    max_queued: 3,
                    ..Limits::default()
                },
                // Raft that never finishes a batch.
                move |_req: Proposal| {
                    *submitted.lock().unwrap() += 1;
                    std::future::ready(Box::pin(std::future::pending()) as Submitted)
                },
            )
        };
        let mut first = Box::pin(proposer.propose(cmd(0)));
        assert!(futures::poll!(first.as_mut()).is_pending());
        while *submitted.lock().unwrap() == 0 {
            tokio::task::yield_now().await;
        }
        let mut waiting: Vec<_> = (1..4).map(|i| Box::pin(proposer.propose(cmd(i)))).collect();
        for f in &mut waiting {
            assert!(futures::poll!(f.as_mut()).is_pending());
        }
        match proposer.propose(cmd(4)).await {
            Err(BatchError::Overloaded { queued: 3 }) => {}
            other => panic!("{other:?}"),
        }
    }
}
