//! The mapping checker: every acknowledged stream record and queue message
//! was handed to the function, nothing was handed over that no client put
//! or sent, and each key's acknowledged records reached the function in
//! the order they were put (repeats allowed: delivery is at least once).

use std::collections::{HashMap, HashSet};

use super::{Tally, Verdict};
use crate::chaos::history::{Call, Op, Outcome};
use crate::chaos::workloads::mapping::{acknowledged, number_of, Seen};

/// Judges `ops` against `seen`, what the function was handed in the order
/// its invocations finished.
pub fn check(ops: &[Op], seen: &[Seen]) -> Verdict {
    let mut t = Tally::new(
        "mapping",
        &["lost-record", "lost-message", "unexpected", "out-of-order"],
    );
    let mut attempted: HashSet<Seen> = HashSet::new();
    let mut acked_records: HashSet<(&str, &str)> = HashSet::new();
    for op in ops {
        let s = match &op.call {
            Call::Put { key, data, .. } => {
                if matches!(op.outcome, Outcome::Ok { .. }) {
                    acked_records.insert((key, data));
                }
                Seen::Record(key.clone(), data.clone())
            }
            Call::Send { body, .. } => Seen::Message(body.clone()),
            _ => continue,
        };
        t.outcome(&op.outcome);
        // A refused call changed nothing; an unknown one may have.
        if !matches!(op.outcome, Outcome::Fail { .. }) {
            attempted.insert(s);
        }
    }
    let handed: HashSet<&Seen> = seen.iter().collect();
    for a in acknowledged(ops) {
        if !handed.contains(&a) {
            match a {
                Seen::Record(k, d) => {
                    t.anomaly("lost-record", format!("{k} {d} never handed over"))
                }
                Seen::Message(b) => t.anomaly("lost-message", format!("{b} never handed over")),
            }
        }
    }
    for s in &handed {
        if !attempted.contains(*s) {
            t.anomaly("unexpected", format!("{s:?} was never put or sent"));
        }
    }
    // Per key, the first time each acknowledged record was handed over:
    // their put numbers must rise (records of unknown puts may be
    // anywhere, since such a put may take effect late).
    let mut last: HashMap<&str, u64> = HashMap::new();
    let mut first: HashSet<(&str, &str)> = HashSet::new();
    for s in seen {
        let Seen::Record(k, d) = s else { continue };
        if !acked_records.contains(&(k.as_str(), d.as_str())) || !first.insert((k, d)) {
            continue;
        }
        let Some(n) = number_of(d) else { continue };
        if let Some(prev) = last.insert(k, n) {
            if n <= prev {
                t.anomaly(
                    "out-of-order",
                    format!("key {k}: put {n} handed over after put {prev}"),
                );
            }
        }
    }
    t.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::Reply;

    fn put(key: &str, n: u64, ok: bool) -> Op {
        Op {
            process: 1,
            call: Call::Put {
                stream: "s".into(),
                key: key.into(),
                data: format!("{key}-{n}"),
            },
            invoke_ns: n,
            complete_ns: n + 1,
            outcome: if ok {
                Outcome::Ok {
                    reply: Reply::Placed {
                        shard: "shardId-000000000000".into(),
                        seq: n.to_string(),
                    },
                }
            } else {
                Outcome::Unknown {
                    message: "timeout".into(),
                }
            },
        }
    }

    fn rec(key: &str, n: u64) -> Seen {
        Seen::Record(key.into(), format!("{key}-{n}"))
    }

    #[test]
    fn finds_loss_reordering_and_phantoms_and_allows_repeats() {
        let ops = vec![put("a", 0, true), put("a", 1, false), put("a", 2, true)];
        // In order, with a repeat and the unknown put late: valid.
        let good = check(&ops, &[rec("a", 0), rec("a", 2), rec("a", 0), rec("a", 1)]);
        assert!(good.valid, "{good:?}");
        let lost = check(&ops, &[rec("a", 0)]);
        assert_eq!(lost.counts["lost-record"], 1);
        let swapped = check(&ops, &[rec("a", 2), rec("a", 0)]);
        assert_eq!(swapped.counts["out-of-order"], 1);
        let phantom = check(&ops, &[rec("a", 0), rec("a", 2), rec("b", 9)]);
        assert_eq!(phantom.counts["unexpected"], 1);
    }
}
