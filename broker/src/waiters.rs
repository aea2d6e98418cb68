//! Waking long polls.
//!
//! A receive that finds nothing waits on its queue's [`Waiters`] entry, a
//! shard subscription on its shard's. Every
//! node applies every command, and the state machine reports when one made
//! messages available on a queue ([`crate::apply::Effect::QueueReady`]);
//! the node then wakes that queue's waiters, whichever node the client
//! called. Waking is a hint: the woken receive asks the leader again.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

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

    /// Wakes everything waiting on `queue`.
    pub fn wake(&self, queue: &str) {
        let notify = {
            let map = self.queues.lock().unwrap_or_else(|e| e.into_inner());
            map.get(queue).cloned()
        };
        if let Some(n) = notify {
            n.notify_waiters();
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
