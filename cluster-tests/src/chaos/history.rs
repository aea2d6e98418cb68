//! The record of a run: every client operation's invocation and completion,
//! in the manner of Jepsen's histories, and the faults the nemesis caused.
//!
//! A *process* is one client with at most one operation in flight. When an
//! operation's outcome is unknown (a timeout, a broken connection), the
//! process is considered crashed: its operation may take effect at any time
//! later, so the worker continues under a fresh process id.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// What a client asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Call {
    /// SendMessage of a unique body (FIFO: with a group and deduplication id).
    Send {
        queue: String,
        body: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        group: Option<String>,
    },
    /// ReceiveMessage of up to `max` messages.
    Receive { queue: String, max: u32 },
    /// DeleteMessage of a message received with `count` as its receive count.
    Delete {
        queue: String,
        body: String,
        receipt: String,
        count: u32,
    },
    /// PutRecord of a unique `data` under partition key `key`.
    Put {
        stream: String,
        key: String,
        data: String,
    },
    /// GetRecords by reader `reader` of `shard`, after sequence number
    /// `after` (None: from the oldest record).
    Read {
        stream: String,
        reader: u32,
        shard: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        after: Option<String>,
    },
    /// Publish of a unique body to a topic.
    Publish { topic: String, body: String },
    /// Create a resource (CreateQueue: idempotent for identical settings).
    Create { name: String },
    /// Delete a resource.
    Remove { name: String },
    /// Look a resource up.
    Get { name: String },
}

/// A message as a receive returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delivery {
    pub body: String,
    pub message_id: String,
    pub receipt: String,
    /// ApproximateReceiveCount: 1 on the first delivery.
    pub count: u32,
}

/// A stream record as a read returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamRecord {
    pub seq: String,
    pub data: String,
}

/// What a successful call returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "kebab-case")]
pub enum Reply {
    /// Nothing beyond success (Delete, Create, Remove).
    Done,
    Sent {
        message_id: String,
    },
    Received {
        messages: Vec<Delivery>,
    },
    Placed {
        shard: String,
        seq: String,
    },
    Records {
        records: Vec<StreamRecord>,
    },
    Exists {
        present: bool,
    },
}

/// How a call ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Outcome {
    /// It happened, with this result.
    Ok { reply: Reply },
    /// It definitely did not take effect (the broker refused it with an
    /// error code: not found, invalid, ...). `code` is the broker's code.
    Fail { code: String, message: String },
    /// It may or may not have taken effect, at any time after its
    /// invocation (a timeout, an unavailable cluster, a broken connection).
    Unknown { message: String },
}

impl Outcome {
    /// The reply, if the call succeeded.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            Outcome::Ok { reply } => Some(reply),
            _ => None,
        }
    }

    /// True for an unknown outcome.
    pub fn is_unknown(&self) -> bool {
        matches!(self, Outcome::Unknown { .. })
    }
}

/// One line of a history file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// Position in the history.
    pub index: u64,
    pub process: u64,
    /// Nanoseconds since the run started.
    pub time_ns: u64,
    #[serde(flatten)]
    pub kind: EventKind,
}

/// An invocation or a completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "phase", rename_all = "kebab-case")]
pub enum EventKind {
    Invoke { call: Call },
    Complete { outcome: Outcome },
}

/// An invocation paired with its completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    pub process: u64,
    pub call: Call,
    pub invoke_ns: u64,
    /// When the client saw the outcome (for an unknown outcome: when it
    /// gave up; the operation may still take effect later).
    pub complete_ns: u64,
    pub outcome: Outcome,
}

/// Pairs each invocation with its process's next completion. An invocation
/// with no completion (the run ended first) counts as unknown, completed at
/// the end of the history.
pub fn pair(events: &[Event]) -> Vec<Op> {
    let mut open: std::collections::BTreeMap<u64, (Call, u64)> = Default::default();
    let mut ops = Vec::new();
    let end = events.iter().map(|e| e.time_ns).max().unwrap_or(0);
    for e in events {
        match &e.kind {
            EventKind::Invoke { call } => {
                open.insert(e.process, (call.clone(), e.time_ns));
            }
            EventKind::Complete { outcome } => {
                if let Some((call, invoke_ns)) = open.remove(&e.process) {
                    ops.push(Op {
                        process: e.process,
                        call,
                        invoke_ns,
                        complete_ns: e.time_ns,
                        outcome: outcome.clone(),
                    });
                }
            }
        }
    }
    for (process, (call, invoke_ns)) in open {
        ops.push(Op {
            process,
            call,
            invoke_ns,
            complete_ns: end,
            outcome: Outcome::Unknown {
                message: "no completion before the run ended".into(),
            },
        });
    }
    ops.sort_by_key(|o| (o.invoke_ns, o.process));
    ops
}

/// A fault the nemesis caused, from start to end (nanoseconds since the
/// run started).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    /// Kind, e.g. "partition-halves", "kill", "pause", "power-loss".
    pub kind: String,
    /// Which nodes, and how.
    pub detail: String,
    pub start_ns: u64,
    pub end_ns: u64,
}

/// Records events as they happen: in memory, and as JSON lines in a file
/// so that a run cut short still leaves its history.
pub struct Recorder {
    start: Instant,
    inner: Mutex<RecorderInner>,
}

struct RecorderInner {
    events: Vec<Event>,
    file: Option<BufWriter<File>>,
}

impl Recorder {
    /// A recorder writing to `path` (if given), its clock starting now.
    pub fn new(path: Option<&Path>) -> std::io::Result<Recorder> {
        let file = match path {
            Some(p) => Some(BufWriter::new(File::create(p)?)),
            None => None,
        };
        Ok(Recorder {
            start: Instant::now(),
            inner: Mutex::new(RecorderInner {
                events: Vec::new(),
                file,
            }),
        })
    }

    /// Nanoseconds since the run started.
    pub fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// The instant the run's clock counts from.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn record(&self, process: u64, kind: EventKind) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Time is taken under the lock, so the file is in time order.
        let event = Event {
            index: inner.events.len() as u64,
            process,
            time_ns: self.now_ns(),
            kind,
        };
        if let Some(f) = inner.file.as_mut() {
            // A history that cannot be written is a broken run: say so.
            serde_json::to_writer(&mut *f, &event).expect("writing the history");
            f.write_all(b"\n").expect("writing the history");
        }
        inner.events.push(event);
    }

    /// Records that `process` invokes `call`.
    pub fn invoke(&self, process: u64, call: &Call) {
        self.record(process, EventKind::Invoke { call: call.clone() });
    }

    /// Records how `process`'s operation ended.
    pub fn complete(&self, process: u64, outcome: Outcome) {
        self.record(process, EventKind::Complete { outcome });
    }

    /// Every event so far.
    pub fn events(&self) -> Vec<Event> {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .events
            .clone()
    }

    /// Flushes the file.
    pub fn flush(&self) -> std::io::Result<()> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

/// Reads a history file back.
pub fn load(path: &Path) -> std::io::Result<Vec<Event>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}

/// Building histories in tests.
#[cfg(test)]
pub mod testing {
    use super::{Call, Op, Outcome, Reply};

    /// A success with nothing to report.
    pub fn done() -> Outcome {
        Outcome::Ok { reply: Reply::Done }
    }

    /// An outcome lost to a timeout.
    pub fn unknown() -> Outcome {
        Outcome::Unknown {
            message: "timed out".into(),
        }
    }

    /// An operation of `process` from `invoke_ns` to `complete_ns`.
    pub fn op(process: u64, invoke_ns: u64, complete_ns: u64, call: Call, outcome: Outcome) -> Op {
        Op {
            process,
            call,
            invoke_ns,
            complete_ns,
            outcome,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_pair_into_operations_and_round_trip_as_json_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        let r = Recorder::new(Some(&path)).unwrap();
        let send = Call::Send {
            queue: "q".into(),
            body: "b1".into(),
            group: None,
        };
        r.invoke(1, &send);
        r.invoke(2, &Call::Get { name: "x".into() });
        r.complete(
            1,
            Outcome::Ok {
                reply: Reply::Sent {
                    message_id: "m1".into(),
                },
            },
        );
        r.flush().unwrap();
        let events = load(&path).unwrap();
        assert_eq!(events, r.events());
        let ops = pair(&events);
        assert_eq!(ops.len(), 2);
        assert_eq!(ops[0].call, send);
        assert!(ops[0].outcome.reply().is_some());
        // Process 2 never completed: unknown.
        assert!(ops[1].outcome.is_unknown());
    }
}
