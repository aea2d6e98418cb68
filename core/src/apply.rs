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
    /// Where the command being applied sits in the replicated log, when it
    /// comes from one: a queue message's body then stays there, and the
    /// state keeps only this position (see `queues::layout::BodyText`).
    /// The same on every node, since every node applies the same entries.
    pub log: Option<LogPosition>,
}

impl Ctx {
    /// A context at `now_ms` for commands that come from no log (tests,
    /// tools): bodies are kept in the state.
    pub fn at(now_ms: u64) -> Ctx {
        Ctx { now_ms, log: None }
    }

    /// A context at `now_ms` for the commands of log entry `index`, the
    /// first of them at position 0.
    pub fn in_entry(now_ms: u64, index: u64) -> Ctx {
        Ctx {
            now_ms,
            log: Some(LogPosition { index, command: 0 }),
        }
    }
}

/// A command's place in the replicated log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogPosition {
    /// The entry's log index.
    pub index: u64,
    /// The command's position among the entry's commands.
    pub command: u32,
}

/// Something a command changed that matters outside the state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// A queue has `messages` newly receivable (wakes as many long polls,
    /// on every node). Recorded twice in one batch, the counts add up.
    QueueReady {
        /// Queue name.
        queue: String,
        /// How many messages became receivable (at least 1).
        messages: u64,
    },
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
    /// A bus's rule matched an event (`target` none), or one of its
    /// targets took the event (`delivered`) or did not; counted in the
    /// node's metrics per rule and target. Every occurrence is kept.
    EventRouted {
        /// Bus name.
        bus: String,
        /// Rule name.
        rule: String,
        /// Target id (`{id}/dead-letter` for its dead-letter queue).
        target: Option<String>,
        /// The target took it.
        delivered: bool,
    },
    /// A schedule reached a due time: its target took the input
    /// (`delivered`) or did not, or the due time was older than the
    /// target's maximum event age and was skipped (`skipped`, with the
    /// missed ones after it). Every occurrence is kept.
    ScheduleFired {
        /// `group/name`.
        schedule: String,
        /// The target took it.
        delivered: bool,
        /// Passed over as too old (not delivered).
        skipped: bool,
    },
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
    /// Records an effect. A wake-up already recorded is not recorded
    /// again; counts and ready messages are all kept (so that
    /// [`Effects::truncate`] forgets exactly a rejected command's).
    pub fn push(&mut self, e: Effect) {
        if matches!(
            e,
            Effect::Count(_)
                | Effect::QueueReady { .. }
                | Effect::EventRouted { .. }
                | Effect::ScheduleFired { .. }
        ) || !self.0.contains(&e)
        {
            self.0.push(e);
        }
    }

    /// Records that `messages` messages of `queue` became receivable
    /// (nothing when none did).
    pub fn queue_ready(&mut self, queue: &str, messages: u64) {
        if messages > 0 {
            self.push(Effect::QueueReady {
                queue: queue.to_string(),
                messages,
            });
        }
    }

    /// The effects, once, with each queue's ready messages added up into
    /// its first [`Effect::QueueReady`].
    pub fn drain(&mut self) -> std::vec::Drain<'_, Effect> {
        let ready = self
            .0
            .iter()
            .filter(|e| matches!(e, Effect::QueueReady { .. }))
            .count();
        if ready < 2 {
            return self.0.drain(..);
        }
        let mut merged: Vec<Effect> = Vec::with_capacity(self.0.len());
        for e in self.0.drain(..) {
            if let Effect::QueueReady { queue, messages } = &e {
                let earlier = merged.iter_mut().find_map(|old| match old {
                    Effect::QueueReady {
                        queue: q,
                        messages: m,
                    } if q == queue => Some(m),
                    _ => None,
                });
                if let Some(m) = earlier {
                    *m += *messages;
                    continue;
                }
            }
            merged.push(e);
        }
        self.0 = merged;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn ready(queue: &str, messages: u64) -> Effect {
        Effect::QueueReady {
            queue: queue.into(),
            messages,
        }
    }

    #[test]
    fn ready_messages_add_up_per_queue_and_a_rejected_command_adds_none() {
        let mut e = Effects::default();
        e.queue_ready("a", 2);
        e.push(Effect::OutboxReady);
        e.queue_ready("b", 1);
        e.queue_ready("a", 3);
        e.push(Effect::OutboxReady);
        e.queue_ready("b", 0);
        // A command that readied 5 more of "a" and was then rejected.
        let before = e.len();
        e.queue_ready("a", 5);
        e.truncate(before);
        let drained: Vec<Effect> = e.drain().collect();
        assert_eq!(drained, [ready("a", 5), Effect::OutboxReady, ready("b", 1)]);
        assert!(e.is_empty());
    }
}
