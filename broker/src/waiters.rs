//! Waking long polls.
//!
//! A receive that finds nothing waits on its queue's [`Waiters`] entry, a
//! shard subscription on its shard's. Every node applies every command,
//! and the state machine reports when one made messages receivable on a
//! queue, and how many ([`crate::apply::Effect::QueueReady`]); the node
//! then wakes that many of the queue's waiters, whichever node the client
//! called. Waking is a hint: the woken receive checks this node's state
//! and, if a message may be there, asks the leader again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

/// Most long polls one applied batch wakes on a queue: far more than a
/// node holds at once; a bound on the loop, not on delivery (receives that
/// take messages come back for more).
const MAX_WAKE: u64 = 4096;

/// Per-queue wake-up points of one node.
#[derive(Default)]
pub struct Waiters {
    queues: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Waiters {
    /// The wake-up point of `queue`. Create the `notified()` future (and
    /// `enable` it) before looking for messages, so that a wake-up between
    /// the look and the wait is not missed.
    pub fn of(&self, queue: &str) -> Arc<Notify> {
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(queue.to_string()).or_default().clone()
    }

    fn get(&self, key: &str) -> Option<Arc<Notify>> {
        let map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        map.get(key).cloned()
    }

    /// Wakes everything waiting on `key` (a shard's subscribers each want
    /// every record; the leader's loops wait alone).
    pub fn wake(&self, key: &str) {
        if let Some(n) = self.get(key) {
            n.notify_waiters();
        }
    }

    /// Wakes up to `messages` of the long polls waiting on `queue`, one per
    /// message that became receivable, oldest wait first. A woken receive
    /// that goes away without taking its wake-up passes it on (tokio's
    /// `Notified` forwards a `notify_one` it did not consume when dropped),
    /// and one that finds its message taken waits again. When nobody waits,
    /// the next receive to wait finds one wake-up stored and looks.
    pub fn wake_receivers(&self, queue: &str, messages: u64) {
        if let Some(n) = self.get(queue) {
            for _ in 0..messages.min(MAX_WAKE) {
                n.notify_one();
            }
        }
    }

    /// The name under which the leader's topic deliverer waits for outbox
    /// entries (not a valid queue name).
    pub const OUTBOX: &'static str = "topics/outbox";

    /// The name under which the leader's runner of asynchronous
    /// invocations waits for events.
    pub const EVENTS: &'static str = "functions/events";

    /// The name under which invocations wait for a live worker.
    pub const WORKERS: &'static str = "functions/workers";

    /// The name under which a shard's subscribers wait (queue names cannot
    /// contain '/', so it never meets a queue's).
    pub fn shard_key(stream: u64, shard: u32) -> String {
        format!("shard/{stream}/{shard}")
    }

    /// Forgets wake-up points nobody holds any more.
    pub fn prune(&self) {
        let mut map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, n| Arc::strong_count(n) > 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_wake_after_enabling_is_not_missed() {
        let w = Waiters::default();
        let n = w.of("q");
        let notified = n.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // The wake lands between "enable" and "await", as when a message
        // arrives while the receive is looking.
        w.wake("q");
        notified.await;
    }

    /// Polls once: whether the wait is over.
    fn woken(f: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) -> bool {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        std::future::Future::poll(f, &mut cx).is_ready()
    }

    #[test]
    fn each_message_wakes_one_receiver_and_one_that_leaves_passes_it_on() {
        let w = Waiters::default();
        let n = w.of("q");
        let mut waits: Vec<_> = (0..3).map(|_| Box::pin(n.notified())).collect();
        for f in &mut waits {
            f.as_mut().enable();
        }
        w.wake_receivers("q", 2);
        // The two oldest waits are woken; the third waits on.
        let mut third = waits.pop().unwrap();
        let second = waits.pop().unwrap();
        assert!(woken(waits[0].as_mut()));
        assert!(!woken(third.as_mut()));
        // The second leaves without taking its wake-up (its call was
        // cancelled): the third gets it.
        drop(second);
        assert!(woken(third.as_mut()));
    }

    #[test]
    fn prune_keeps_only_held_entries() {
        let w = Waiters::default();
        let held = w.of("a");
        drop(w.of("b"));
        w.prune();
        let map = w.queues.lock().unwrap();
        assert!(map.contains_key("a") && !map.contains_key("b"));
        drop(held);
    }
}
