//! A state machine without Raft, for the domain tests: commands run through
//! [`machine::apply`] over an in-memory store, with the clock moved by hand.

use std::collections::BTreeMap;

use crate::apply::{Ctx, Effect, Effects};
use crate::command::{Command, CommandOutput, Query, QueryOutput, Registered};
use crate::error::{ApplyError, DomainError};
use crate::machine;
use crate::queues::layout::BodyText;
use crate::store::MemState;

/// A function named `name` with small settings and a dummy package, to
/// create in domain tests.
pub fn new_function(name: &str) -> crate::functions::CreateFunction {
    crate::functions::CreateFunction {
        name: name.into(),
        settings: crate::functions::Settings {
            runtime: String::new(),
            handler: "h".into(),
            memory_mb: 128,
            timeout_s: 3,
            environment: Default::default(),
            description: String::new(),
        },
        code: crate::functions::Code {
            sha256: "00".repeat(32),
            zip: vec![0],
        },
    }
}

/// A map of strings from `(key, value)` pairs: attributes and tags as the
/// domain commands take them.
pub fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Test start time, ms.
pub const T0: u64 = 1_700_000_000_000;

/// State, clock and the effects seen so far.
pub struct World {
    /// The state.
    pub state: MemState,
    /// The state machine's clock, ms.
    pub now: u64,
    /// Every effect of every command run.
    pub effects: Vec<Effect>,
    /// Whether every command is followed by the invariant checks (on by
    /// default; a test that builds a deep queue turns it off while it fills
    /// it, since each check reads the whole state).
    pub check_invariants: bool,
    /// Every command run, as a log of one-command entries from index 1:
    /// messages keep their bodies in it, as on a node.
    pub log: Vec<Command>,
}

impl Default for World {
    fn default() -> Self {
        World::new()
    }
}

impl World {
    /// An empty state at [`T0`].
    pub fn new() -> World {
        World {
            state: MemState::default(),
            now: T0,
            effects: Vec::new(),
            check_invariants: true,
            log: Vec::new(),
        }
    }

    /// Applies one command at the current time and returns its own output.
    pub fn run<O>(&mut self, op: O) -> Result<O::Output, DomainError>
    where
        O: Registered<Carrier = Command, Reply = CommandOutput>,
    {
        let out = self.apply(op.carry())?;
        Ok(O::output(out).expect("a command's output is its own"))
    }

    /// Applies one command, as the log carries it, at the current time.
    pub fn apply(&mut self, cmd: Command) -> Result<CommandOutput, DomainError> {
        self.log.push(cmd.clone());
        let ctx = Ctx::in_entry(self.now, self.log.len() as u64);
        let mut effects = Effects::default();
        let r = self
            .state
            .run(|txn| machine::apply(txn, &ctx, &cmd, &mut effects))
            .map(|out| self.served(out));
        self.effects.extend(effects.drain());
        // Every scenario checks the state machine's invariants after every
        // command, so a test of behaviour is also a test of consistency.
        if self.check_invariants {
            if let Err(e) = machine::check(&self.state) {
                panic!("after {}: {e}", cmd.name());
            }
        }
        match r {
            Ok(out) => Ok(out),
            Err(ApplyError::Rejected(e)) => Err(e),
            Err(ApplyError::Store(e)) => panic!("store: {e}"),
        }
    }

    /// `out` as a node serves it: received bodies read from the log.
    fn served(&self, mut out: CommandOutput) -> CommandOutput {
        if let CommandOutput::ReceiveMessages(r) = &mut out {
            for m in &mut r.messages {
                m.body.body = BodyText::Inline(self.body(&m.body.body).to_string());
            }
        }
        out
    }

    /// A body, read from the log when the state holds a reference.
    pub fn body<'a>(&'a self, text: &'a BodyText) -> &'a str {
        match text {
            BodyText::Inline(s) => s,
            BodyText::Logged(r) => {
                let command = &self.log[r.index as usize - 1];
                command
                    .sent_body(r)
                    .expect("a reference names a sent message")
            }
        }
    }

    /// A message leaving its queue as the housekeeper moves it: with its
    /// body read out of the log.
    pub fn carried(&self, mut m: crate::queues::layout::Moving) -> crate::queues::layout::Moving {
        m.body.body = BodyText::Inline(self.body(&m.body.body).to_string());
        m
    }

    /// Answers a read with its own output type.
    pub fn ask<O>(&self, op: O) -> Result<O::Output, DomainError>
    where
        O: Registered<Carrier = Query, Reply = QueryOutput>,
    {
        let out = self.query(op.carry())?;
        Ok(O::output(out).expect("a read's output is its own"))
    }

    /// Answers a query, as the wire carries it.
    pub fn query(&self, q: Query) -> Result<QueryOutput, DomainError> {
        match machine::query(&self.state, &q) {
            Ok(out) => Ok(out),
            Err(ApplyError::Rejected(e)) => Err(e),
            Err(ApplyError::Store(e)) => panic!("store: {e}"),
        }
    }

    /// How many messages of `queue` the effects so far said became
    /// receivable (the long polls a node would wake).
    pub fn ready(&self, queue: &str) -> u64 {
        self.effects
            .iter()
            .map(|e| match e {
                Effect::QueueReady { queue: q, messages } if q == queue => *messages,
                _ => 0,
            })
            .sum()
    }

    /// Moves the clock.
    pub fn advance(&mut self, seconds: u64) {
        self.now += seconds * 1000;
    }

    /// Moves the clock by milliseconds.
    pub fn advance_ms(&mut self, ms: u64) {
        self.now += ms;
    }

    /// Creates a standard queue.
    pub fn queue(&mut self, name: &str) {
        let cmd = crate::queues::CreateQueue::new(name, &BTreeMap::new(), BTreeMap::new())
            .expect("a valid queue");
        self.run(cmd).expect("the queue is created");
    }

    /// Creates a FIFO queue.
    pub fn fifo_queue(&mut self, name: &str) {
        let attrs = map(&[("FifoQueue", "true")]);
        let cmd =
            crate::queues::CreateQueue::new(name, &attrs, BTreeMap::new()).expect("a valid queue");
        self.run(cmd).expect("the queue is created");
    }

    /// Creates a topic with these attributes.
    pub fn topic(&mut self, name: &str, attrs: &[(&str, &str)]) {
        let cmd = crate::topics::CreateTopic::new(name, map(attrs), BTreeMap::new())
            .expect("a valid topic");
        self.run(cmd).expect("the topic is created");
    }

    /// Receives every visible message of `queue`, hiding each for ten
    /// minutes.
    pub fn drain(&mut self, queue: &str) -> Vec<crate::queues::delivery::Received> {
        let mut all = Vec::new();
        loop {
            let got = self
                .run(crate::queues::ReceiveMessages {
                    queue: queue.into(),
                    request: crate::queues::delivery::ReceiveRequest {
                        max: 10,
                        visibility_timeout: Some(600),
                        attempt_id: None,
                    },
                })
                .expect("the queue takes receives")
                .messages;
            if got.is_empty() {
                return all;
            }
            all.extend(got);
        }
    }
}
