//! The topic checker: fan-out to filtered queue subscriptions.
//!
//! It looks at [`Call::Publish`] operations and at the receives from the
//! subscribed queues, and finds these anomalies:
//!
//! - **lost**: a publish acknowledged (`Ok`) whose body matches a queue's
//!   filter, and that no successful receive from that queue ever returned.
//!   The run ends by draining every queue, so every message delivered to a
//!   queue is received at least once.
//! - **misrouted**: a queue returned a body its filter does not match.
//! - **phantom**: a queue returned a body no publish carried, or in a
//!   receive that completed before any publish of it was invoked.
//! - **duplicated**: one body in one queue under two different message ids:
//!   one publish must enqueue exactly one message per matching queue
//!   (receiving the same message again, after a visibility timeout, is
//!   not a duplicate).
//! - **partial**: a publish of unknown outcome that reached some of its
//!   matching queues but not all: a publish is one command.

use std::collections::{BTreeMap, BTreeSet};

use super::{Tally, Verdict};
use crate::chaos::history::{Call, Op, Outcome, Reply};

/// A subscribed queue and the rule its filter implements, over the publish
/// number.
pub type Route = (String, fn(u64) -> bool);

/// The anomaly kinds this checker counts.
pub const KINDS: [&str; 5] = ["lost", "misrouted", "phantom", "duplicated", "partial"];

/// Judges the topic operations of `ops`; `routes` gives each queue with
/// the rule its filter policy implements and `number_of` reads the publish
/// number from a body.
pub fn check(ops: &[Op], routes: &[Route], number_of: fn(&str) -> Option<u64>) -> Verdict {
    let mut tally = Tally::new("topic", &KINDS);
    let mut publishes: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    // (queue, body) -> (message ids, first receive completion)
    let mut seen: BTreeMap<(&str, &str), (BTreeSet<&str>, u64)> = BTreeMap::new();
    let queues: BTreeSet<&str> = routes.iter().map(|(q, _)| q.as_str()).collect();
    for op in ops {
        match &op.call {
            Call::Publish { body, .. } => {
                tally.outcome(&op.outcome);
                publishes.entry(body).or_default().push(op);
            }
            Call::Receive { queue, .. } if queues.contains(queue.as_str()) => {
                tally.outcome(&op.outcome);
                if let Outcome::Ok {
                    reply: Reply::Received { messages },
                } = &op.outcome
                {
                    for m in messages {
                        let e = seen
                            .entry((queue.as_str(), m.body.as_str()))
                            .or_insert_with(|| (BTreeSet::new(), op.complete_ns));
                        e.0.insert(&m.message_id);
                        e.1 = e.1.min(op.complete_ns);
                    }
                }
            }
            _ => {}
        }
    }
    let rule = |q: &str| routes.iter().find(|(r, _)| r == q).map(|(_, f)| *f);
    for ((queue, body), (ids, first_done_ns)) in &seen {
        let Some(n) = number_of(body) else {
            tally.anomaly("phantom", format!("{queue} returned {body:?}"));
            continue;
        };
        let invoked_before = publishes
            .get(body)
            .is_some_and(|ps| ps.iter().any(|p| p.invoke_ns <= *first_done_ns));
        if !invoked_before {
            tally.anomaly(
                "phantom",
                format!("{queue} returned {body} before any publish of it"),
            );
        }
        if !rule(queue).is_some_and(|f| f(n)) {
            tally.anomaly("misrouted", format!("{queue} returned {body}"));
        }
        if ids.len() > 1 {
            tally.anomaly(
                "duplicated",
                format!("{queue} holds {body} as {} messages: {ids:?}", ids.len()),
            );
        }
    }
    for (body, ps) in &publishes {
        let Some(n) = number_of(body) else { continue };
        let matching: Vec<&str> = routes
            .iter()
            .filter(|(_, f)| f(n))
            .map(|(q, _)| q.as_str())
            .collect();
        let holding: Vec<&str> = matching
            .iter()
            .copied()
            .filter(|q| seen.contains_key(&(*q, *body)))
            .collect();
        let acked = ps.iter().any(|p| matches!(p.outcome, Outcome::Ok { .. }));
        if acked {
            for q in &matching {
                if !holding.contains(q) {
                    tally.anomaly("lost", format!("acknowledged {body} never reached {q}"));
                }
            }
        } else if !holding.is_empty() && holding.len() != matching.len() {
            tally.anomaly(
                "partial",
                format!("{body} reached {holding:?} of {matching:?}"),
            );
        }
    }
    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::{Delivery, Reply};

    fn op(call: Call, outcome: Outcome, at: u64) -> Op {
        Op {
            process: 1,
            call,
            invoke_ns: at,
            complete_ns: at + 1,
            outcome,
        }
    }

    fn publish(body: &str, outcome: Outcome, at: u64) -> Op {
        op(
            Call::Publish {
                topic: "t".into(),
                body: body.into(),
            },
            outcome,
            at,
        )
    }

    fn ok_published() -> Outcome {
        Outcome::Ok {
            reply: Reply::Sent {
                message_id: "p".into(),
            },
        }
    }

    fn receive(queue: &str, bodies: &[(&str, &str)], at: u64) -> Op {
        op(
            Call::Receive {
                queue: queue.into(),
                max: 10,
            },
            Outcome::Ok {
                reply: Reply::Received {
                    messages: bodies
                        .iter()
                        .map(|(b, id)| Delivery {
                            body: b.to_string(),
                            message_id: id.to_string(),
                            receipt: format!("r-{id}"),
                            count: 1,
                        })
                        .collect(),
                },
            },
            at,
        )
    }

    fn routes() -> Vec<Route> {
        vec![("all".into(), |_| true), ("even".into(), |n| n % 2 == 0)]
    }

    fn number(b: &str) -> Option<u64> {
        b.strip_prefix('m')?.parse().ok()
    }

    #[test]
    fn a_clean_history_is_valid() {
        let ops = vec![
            publish("m1", ok_published(), 1),
            publish("m2", ok_published(), 2),
            receive("all", &[("m1", "a"), ("m2", "b")], 3),
            receive("even", &[("m2", "c")], 4),
            // The same message again: not a duplicate.
            receive("even", &[("m2", "c")], 5),
        ];
        let v = check(&ops, &routes(), number);
        assert!(v.valid, "{:?}", v.anomalies);
    }

    #[test]
    fn each_anomaly_is_found() {
        let unknown = Outcome::Unknown {
            message: "timeout".into(),
        };
        let ops = vec![
            publish("m2", ok_published(), 1),
            publish("m4", unknown, 2),
            publish("m5", ok_published(), 3),
            // m2 never reaches "even"; m4 reaches only "all"; m5 lands in
            // "even" and twice in "all"; m7 was never published.
            receive(
                "all",
                &[("m2", "a"), ("m4", "b"), ("m5", "c"), ("m5", "d")],
                4,
            ),
            receive("even", &[("m5", "e"), ("m7", "f")], 5),
        ];
        let v = check(&ops, &routes(), number);
        assert!(!v.valid);
        for kind in KINDS {
            assert!(v.counts[kind] >= 1, "{kind} not found: {:?}", v.counts);
        }
    }
}
