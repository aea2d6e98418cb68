//! What a command's apply sees besides its arguments and the store (the
//! state machine's clock), and what it reports that matters outside the
//! state machine (its effects, fired after commit). A leaf: the domain
//! modules use it, and it uses nothing of theirs.

/// What a command may know besides its arguments and the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ctx {
    /// The state machine's clock: the largest leader time stamp applied so
    /// far, ms since the Unix epoch.
    pub now_ms: u64,
}

/// Something a command changed that matters outside the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A queue has messages to receive (wakes long polls on every node).
    QueueReady(String),
    /// A shard has new records, or closed (wakes its subscribers on every
    /// node).
    ShardAppended {
        /// Stream id.
        stream: u64,
        /// Shard index.
        shard: u32,
    },
    /// A topic outbox has entries due (wakes the leader's deliverer).
    OutboxReady,
    /// A function has an asynchronous invocation due (wakes the leader's
    /// runner).
    EventReady,
    /// A worker's record changed (wakes invocations waiting for a worker).
    WorkersChanged,
    /// Something happened that the node counts in its metrics. Every
    /// occurrence is kept (not merged like the wake-ups above).
    Count(Counter),
}

/// Events the state machine counts; the broker turns each into a metric.
/// The core names no metrics crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// A topic could not deliver to a subscribed queue (it was deleted, or
    /// refused the message); metric `sluice_topic_queue_delivery_failures_total`.
    TopicQueueDeliveryFailure,
}

/// The effects of the commands applied in one batch.
#[derive(Debug, Default)]
pub struct Effects(Vec<Effect>);

impl Effects {
    /// Records an effect.
    pub fn push(&mut self, e: Effect) {
        if matches!(e, Effect::Count(_)) || !self.0.contains(&e) {
            self.0.push(e);
        }
    }

    /// The effects, once.
    pub fn drain(&mut self) -> std::vec::Drain<'_, Effect> {
        self.0.drain(..)
    }

    /// True when nothing happened that matters outside.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Forgets the effects recorded since `len` (of a rejected command).
    pub fn truncate(&mut self, len: usize) {
        self.0.truncate(len);
    }

    /// Number of effects recorded.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}
