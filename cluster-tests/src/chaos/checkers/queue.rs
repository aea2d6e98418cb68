//! The queue checker: SQS semantics of sends, receives and deletes.
//!
//! It looks at [`Call::Send`], [`Call::Receive`] and [`Call::Delete`]
//! operations (counted as "ok", "fail" and "unknown") and finds these
//! anomalies:
//!
//! - **lost**: a send acknowledged (`Ok`) whose body no successful receive
//!   ever returned, from any queue (a dead-letter queue included). The run
//!   ends by draining every queue once the faults have healed, so every
//!   message that was enqueued and not deleted is received at least once;
//!   a message deleted was received first.
//! - **phantom**: a received body that no send ever carried (whatever the
//!   send's outcome), or that a receive returned before any send of it was
//!   invoked.
//! - **received-after-delete**: a delete of a message received with count
//!   `c`, acknowledged at `t`, and a receive from the same queue invoked
//!   after `t` that returns that message again (same body, and same message
//!   id when the delete's receipt names it) with a count of at most `c + 1`:
//!   nothing could have received it between that delivery and the delete,
//!   since any receive raises the count, so the delete was of the current
//!   delivery and must have removed the message. Or with a count above
//!   `c + 1` while the delivery with count `c + 1` cannot have preceded the
//!   delete: every successful receive returning it with `c + 1` was invoked
//!   after `t`, and no receive of unknown outcome from that queue was
//!   invoked before `t` (one could have been the unseen `c + 1` delivery,
//!   making the delete a stale handle's no-op, which SQS allows).
//!   Receives from other queues are not judged: a message whose visibility
//!   expired may move to the dead-letter queue before a late delete, which
//!   then deletes nothing.
//! - **duplicate-message** (FIFO queues): one body received under two
//!   different message ids. A FIFO producer may send a body again after an
//!   unknown outcome; deduplication must keep a single message.
//! - **fifo-order** (FIFO queues): bodies are `g{group}-{n}`, sent in
//!   increasing `n` per group by one producer that waits for each outcome.
//!   When message `n` was sent `Ok` before any send of `m > n` was invoked,
//!   `n` must be delivered before `m`: flagged when a receive that returned
//!   `m` completed before the receive that first delivered `n` (the one
//!   returning it with count 1) was invoked. When no successful receive
//!   returned `n` with count 1, its first delivery was unseen and nothing
//!   is judged. Also flagged: one reply holding messages of a group out of
//!   increasing order.
//!
//! A dead-letter queue receives messages moved from its source queue with
//! their body, message id and receive count: its receives count like any
//! other. Name it among the FIFO queues when its source is FIFO.

use std::collections::{BTreeMap, BTreeSet};

use super::{Tally, Verdict};
use crate::chaos::history::{Call, Delivery, Op, Outcome, Reply};

/// The anomaly kinds this checker counts.
pub const KINDS: [&str; 5] = [
    "lost",
    "phantom",
    "received-after-delete",
    "duplicate-message",
    "fifo-order",
];

/// One delivery of a message: the receive that returned it, and what it
/// returned.
struct Seen<'a> {
    op: &'a Op,
    queue: &'a str,
    delivery: &'a Delivery,
}

/// Judges the queue operations of `ops`; `fifo_queues` names the FIFO
/// queues (dead-letter queues of FIFO queues included). See the module
/// documentation for the rules.
pub fn check(ops: &[Op], fifo_queues: &BTreeSet<String>) -> Verdict {
    let mut tally = Tally::new("queue", &KINDS);

    // Sends by body, deliveries by body, receipts by (queue, receipt),
    // receives of unknown outcome by queue, acknowledged deletes, replies.
    let mut sends: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut seen: BTreeMap<&str, Vec<Seen>> = BTreeMap::new();
    let mut receipts: BTreeMap<(&str, &str), &Delivery> = BTreeMap::new();
    let mut unknown_receives: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    let mut deletes: Vec<&Op> = Vec::new();
    let mut replies: Vec<(&Op, &str, &[Delivery])> = Vec::new();
    for op in ops {
        match &op.call {
            Call::Send { body, .. } => {
                tally.outcome(&op.outcome);
                sends.entry(body).or_default().push(op);
            }
            Call::Receive { queue, .. } => {
                tally.outcome(&op.outcome);
                match &op.outcome {
                    Outcome::Ok {
                        reply: Reply::Received { messages },
                    } => {
                        for d in messages {
                            seen.entry(&d.body).or_default().push(Seen {
                                op,
                                queue,
                                delivery: d,
                            });
                            receipts.insert((queue, &d.receipt), d);
                        }
                        replies.push((op, queue, messages));
                    }
                    Outcome::Unknown { .. } => unknown_receives.entry(queue).or_default().push(op),
                    _ => {}
                }
            }
            Call::Delete { .. } => {
                tally.outcome(&op.outcome);
                if matches!(op.outcome, Outcome::Ok { .. }) {
                    deletes.push(op);
                }
            }
            _ => {}
        }
    }
    let is_ok = |op: &Op| matches!(op.outcome, Outcome::Ok { .. });

    // Lost: acknowledged, never received.
    for (body, s) in &sends {
        if seen.contains_key(body) {
            continue;
        }
        if let Some(send) = s.iter().find(|o| is_ok(o)) {
            tally.anomaly(
                "lost",
                format!(
                    "{body:?} sent to {} (acknowledged at {} ns) was never received",
                    queue_of(send),
                    send.complete_ns
                ),
            );
        }
    }

    // Phantom: received, never sent (or received before it was sent).
    for (body, deliveries) in &seen {
        let first = deliveries
            .iter()
            .min_by_key(|s| s.op.complete_ns)
            .expect("a body is seen at least once");
        match sends.get(body) {
            None => tally.anomaly(
                "phantom",
                format!(
                    "{body:?} received from {} by the receive invoked at {} ns was never sent",
                    first.queue, first.op.invoke_ns
                ),
            ),
            Some(s) => {
                let sent = s.iter().map(|o| o.invoke_ns).min().unwrap_or(0);
                if first.op.complete_ns < sent {
                    tally.anomaly(
                        "phantom",
                        format!(
                            "{body:?} received from {} by a receive completed at {} ns, \
                             before its first send was invoked at {sent} ns",
                            first.queue, first.op.complete_ns
                        ),
                    );
                }
            }
        }
    }

    // Received after an acknowledged delete.
    for del in &deletes {
        let Call::Delete {
            queue,
            body,
            receipt,
            count,
        } = &del.call
        else {
            continue;
        };
        let t = del.complete_ns;
        let id = receipts
            .get(&(queue.as_str(), receipt.as_str()))
            .map(|d| d.message_id.as_str());
        let same = |s: &&Seen| id.is_none_or(|id| s.delivery.message_id == id);
        let Some(deliveries) = seen.get(body.as_str()) else {
            continue;
        };
        let later = deliveries
            .iter()
            .filter(same)
            .filter(|s| s.queue == queue && s.op.invoke_ns > t);
        let mut found = None;
        for s in later {
            let c2 = s.delivery.count;
            if c2 <= count + 1 {
                found = Some((s, "nothing else could have received it in between"));
                break;
            }
            let seen_before = deliveries
                .iter()
                .filter(same)
                .any(|d| d.delivery.count == count + 1 && d.op.invoke_ns < t);
            let unknown_before = unknown_receives
                .get(queue.as_str())
                .is_some_and(|u| u.iter().any(|o| o.invoke_ns < t));
            if !seen_before && !unknown_before {
                found = Some((
                    s,
                    "every receive that could have made the delete stale began after it",
                ));
                break;
            }
        }
        if let Some((s, why)) = found {
            tally.anomaly(
                "received-after-delete",
                format!(
                    "{body:?} (count {count}) deleted from {queue} (acknowledged at {t} ns) \
                     was received again with count {} by a receive invoked at {} ns; {why}",
                    s.delivery.count, s.op.invoke_ns
                ),
            );
        }
    }

    // A body belongs to FIFO semantics when it was sent to or received
    // from a FIFO queue.
    let is_fifo_body = |body: &str| {
        sends
            .get(body)
            .is_some_and(|s| s.iter().any(|o| fifo_queues.contains(queue_of(o))))
            || seen
                .get(body)
                .is_some_and(|d| d.iter().any(|s| fifo_queues.contains(s.queue)))
    };

    // Duplicates: one FIFO body under two message ids.
    for (body, deliveries) in &seen {
        if !is_fifo_body(body) {
            continue;
        }
        let ids: BTreeSet<&str> = deliveries
            .iter()
            .map(|s| s.delivery.message_id.as_str())
            .collect();
        if ids.len() > 1 {
            tally.anomaly(
                "duplicate-message",
                format!(
                    "{body:?} was received under {} message ids: {ids:?}",
                    ids.len()
                ),
            );
        }
    }

    // FIFO order across receives. Messages by (send queue, group), then n.
    let mut groups: BTreeMap<(&str, &str), BTreeMap<u64, &str>> = BTreeMap::new();
    for (body, s) in &sends {
        let queue = queue_of(s[0]);
        if !fifo_queues.contains(queue) {
            continue;
        }
        if let Some((group, n)) = parse_body(body) {
            groups.entry((queue, group)).or_default().insert(n, body);
        }
    }
    for ((queue, group), messages) in &groups {
        // Per message: when its first send was invoked, when an Ok send of
        // it completed (first), when a receive returning it first completed,
        // and when the receive first delivering it (count 1) was invoked.
        struct Times {
            n: u64,
            first_send: u64,
            ok_send: Option<u64>,
            first_return: Option<u64>,
            first_delivery: Option<u64>,
        }
        let times: Vec<Times> = messages
            .iter()
            .map(|(n, body)| {
                let s = &sends[body];
                let d = seen.get(body).map(Vec::as_slice).unwrap_or_default();
                Times {
                    n: *n,
                    first_send: s.iter().map(|o| o.invoke_ns).min().unwrap_or(0),
                    ok_send: s.iter().filter(|o| is_ok(o)).map(|o| o.complete_ns).min(),
                    first_return: d.iter().map(|s| s.op.complete_ns).min(),
                    first_delivery: d
                        .iter()
                        .filter(|s| s.delivery.count == 1)
                        .map(|s| s.op.invoke_ns)
                        .min(),
                }
            })
            .collect();
        for (i, a) in times.iter().enumerate() {
            let (Some(sent), Some(delivered)) = (a.ok_send, a.first_delivery) else {
                continue;
            };
            let overtaken = times[i + 1..]
                .iter()
                .find(|b| b.first_send > sent && b.first_return.is_some_and(|r| r < delivered));
            if let Some(b) = overtaken {
                tally.anomaly(
                    "fifo-order",
                    format!(
                        "{queue} group {group}: message {} was received by a receive \
                         completed at {} ns, before message {} (sent first) was first \
                         delivered by a receive invoked at {delivered} ns",
                        b.n,
                        b.first_return.unwrap_or_default(),
                        a.n
                    ),
                );
            }
        }
    }

    // FIFO order within one reply.
    for (op, queue, messages) in &replies {
        let mut last: BTreeMap<(&str, &str), u64> = BTreeMap::new();
        for d in *messages {
            if !is_fifo_body(&d.body) {
                continue;
            }
            let Some((group, n)) = parse_body(&d.body) else {
                continue;
            };
            let send_queue = sends
                .get(d.body.as_str())
                .map_or(*queue, |s| queue_of(s[0]));
            if let Some(prev) = last.insert((send_queue, group), n) {
                if n <= prev {
                    tally.anomaly(
                        "fifo-order",
                        format!(
                            "the receive from {queue} invoked at {} ns returned message {n} \
                             of group {group} after message {prev}",
                            op.invoke_ns
                        ),
                    );
                }
            }
        }
    }

    tally.finish()
}

/// The queue a send went to.
fn queue_of(op: &Op) -> &str {
    match &op.call {
        Call::Send { queue, .. } => queue,
        _ => "",
    }
}

/// Group and number of a FIFO body `g{group}-{n}`.
fn parse_body(body: &str) -> Option<(&str, u64)> {
    let (group, n) = body.strip_prefix('g')?.rsplit_once('-')?;
    Some((group, n.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::checkers::testing::{self, passed};
    use crate::chaos::history::testing::{done, op, unknown};

    fn send(queue: &str, body: &str) -> Call {
        Call::Send {
            queue: queue.into(),
            body: body.into(),
            group: parse_body(body).map(|(g, _)| g.to_string()),
        }
    }

    fn receive(queue: &str) -> Call {
        Call::Receive {
            queue: queue.into(),
            max: 10,
        }
    }

    fn delete(queue: &str, body: &str, count: u32) -> Call {
        Call::Delete {
            queue: queue.into(),
            body: body.into(),
            receipt: format!("r-{body}-{count}"),
            count,
        }
    }

    fn sent(id: &str) -> Outcome {
        Outcome::Ok {
            reply: Reply::Sent {
                message_id: id.into(),
            },
        }
    }

    /// A reply of (body, message id, count) deliveries.
    fn got(messages: &[(&str, &str, u32)]) -> Outcome {
        Outcome::Ok {
            reply: Reply::Received {
                messages: messages
                    .iter()
                    .map(|(body, id, count)| Delivery {
                        body: body.to_string(),
                        message_id: id.to_string(),
                        receipt: format!("r-{body}-{count}"),
                        count: *count,
                    })
                    .collect(),
            },
        }
    }

    /// Process `process`, from `invoke` to `complete` ns, receives from
    /// `queue` the deliveries `messages` (body, message id, count).
    fn received(
        process: u64,
        invoke: u64,
        complete: u64,
        queue: &str,
        messages: &[(&str, &str, u32)],
    ) -> Op {
        op(process, invoke, complete, receive(queue), got(messages))
    }

    /// The verdict on `h`, with f.fifo and dlq.fifo the FIFO queues.
    fn judged(h: &[Op]) -> Verdict {
        check(h, &["f.fifo".to_string(), "dlq.fifo".to_string()].into())
    }

    /// `h` holds no anomaly; its verdict.
    fn passes(h: &[Op]) -> Verdict {
        let v = judged(h);
        assert!(v.valid, "{v:?}");
        v
    }

    fn count(v: &Verdict, kind: &str) -> u64 {
        v.counts[kind]
    }

    /// Only `kind` was found, `n` times.
    fn only(v: &Verdict, kind: &str, n: u64) {
        testing::only(v, &KINDS, kind, n);
    }

    /// a sent to q (as ma) by process 1, then received once by process 2.
    fn a_sent_and_received() -> Vec<Op> {
        vec![
            op(1, 0, 10, send("q", "a"), sent("ma")),
            received(2, 20, 30, "q", &[("a", "ma", 1)]),
        ]
    }

    /// f.fifo's group g1: g1-1 then g1-2 sent by process 1 (as f1, f2).
    fn g1_sent() -> Vec<Op> {
        vec![
            op(1, 0, 10, send("f.fifo", "g1-1"), sent("f1")),
            op(1, 11, 20, send("f.fifo", "g1-2"), sent("f2")),
        ]
    }

    /// The valid history with `extra` after it holds one anomaly, of
    /// `kind`.
    fn caught_once(extra: Op, kind: &str) {
        let mut h = valid_history();
        h.push(extra);
        only(&judged(&h), kind, 1);
    }

    /// [`caught_once`], `extra` a receive from `queue` of `messages` (body,
    /// message id, count) after everything in the valid history.
    fn caught_in_a_late_receive(queue: &str, messages: &[(&str, &str, u32)], kind: &str) {
        caught_once(received(11, 600, 610, queue, messages), kind);
    }

    /// A valid history over a standard queue, a FIFO queue and its
    /// dead-letter queue: retries after unknown outcomes, a stale delete,
    /// redelivery, a move to the dead-letter queue.
    fn valid_history() -> Vec<Op> {
        vec![
            op(1, 0, 10, send("q", "a"), sent("ma")),
            op(2, 5, 15, send("q", "b"), sent("mb")),
            // A send of unknown outcome that never took effect.
            op(3, 6, 50, send("q", "c"), unknown()),
            received(4, 20, 30, "q", &[("a", "ma", 1), ("b", "mb", 1)]),
            op(4, 31, 40, delete("q", "a", 1), done()),
            // b's visibility expires: received again, then deleted with the
            // stale handle (a no-op) and the current one.
            received(5, 60, 70, "q", &[("b", "mb", 2)]),
            op(4, 71, 80, delete("q", "b", 1), done()),
            op(5, 72, 82, delete("q", "b", 2), done()),
            // FIFO: g1-1 sent twice (unknown, then ok), deduplicated.
            op(6, 0, 100, send("f.fifo", "g1-1"), unknown()),
            op(7, 101, 110, send("f.fifo", "g1-1"), sent("f1")),
            op(7, 111, 120, send("f.fifo", "g1-2"), sent("f2")),
            op(7, 121, 130, send("f.fifo", "g1-3"), sent("f3")),
            received(8, 125, 140, "f.fifo", &[("g1-1", "f1", 1)]),
            // g1-1 not deleted: it comes back before g1-2.
            received(8, 200, 210, "f.fifo", &[("g1-1", "f1", 2)]),
            op(8, 211, 220, delete("f.fifo", "g1-1", 2), done()),
            received(
                8,
                221,
                230,
                "f.fifo",
                &[("g1-2", "f2", 1), ("g1-3", "f3", 1)],
            ),
            // g1-3 is not deleted; it exceeds its receives and moves to the
            // dead-letter queue, keeping its id and count.
            op(8, 231, 240, delete("f.fifo", "g1-2", 1), done()),
            received(8, 300, 310, "dlq.fifo", &[("g1-3", "f3", 2)]),
            op(8, 311, 320, delete("dlq.fifo", "g1-3", 2), done()),
            // A receive of unknown outcome, then the final drain.
            op(9, 330, 400, receive("q"), unknown()),
            received(10, 500, 510, "q", &[]),
        ]
    }

    #[test]
    fn a_valid_history_passes() {
        let v = judged(&valid_history());
        passed(&v, "queue", &KINDS, 18, 0, 3);
        assert!(v.anomalies.is_empty());
    }

    #[test]
    fn a_lost_write_is_caught() {
        caught_once(op(11, 410, 420, send("q", "d"), sent("md")), "lost");
    }

    #[test]
    fn a_failed_or_unknown_send_never_received_is_not_lost() {
        let mut h = valid_history();
        h.push(op(
            11,
            410,
            420,
            send("q", "d"),
            Outcome::Fail {
                code: "InvalidParameterValue".into(),
                message: "no".into(),
            },
        ));
        h.push(op(12, 410, 420, send("q", "e"), unknown()));
        assert_eq!(count(&passes(&h), "fail"), 1);
    }

    #[test]
    fn a_phantom_is_caught() {
        caught_in_a_late_receive("q", &[("zz", "mz", 1)], "phantom");
    }

    #[test]
    fn a_message_received_again_after_an_acknowledged_delete_is_caught() {
        // a was deleted with count 1 at 40 ns; count 2 after that.
        caught_in_a_late_receive("q", &[("a", "ma", 2)], "received-after-delete");
    }

    #[test]
    fn a_later_count_after_a_delete_is_caught_unless_a_receive_could_have_made_it_stale() {
        let base = [
            a_sent_and_received(),
            vec![
                op(2, 31, 40, delete("q", "a", 1), done()),
                // Count 3 after the delete; the count-2 delivery was seen
                // only by a receive begun after the delete.
                received(3, 50, 60, "q", &[("a", "ma", 2)]),
                received(3, 70, 80, "q", &[("a", "ma", 3)]),
            ],
        ]
        .concat();
        // Both later deliveries are flagged as one anomaly of the delete.
        only(&judged(&base), "received-after-delete", 1);

        // An unknown receive begun before the delete may have been the
        // count-2 delivery: the count-3 one is then not judged.
        let h = vec![
            base[0].clone(),
            base[1].clone(),
            op(4, 32, 90, receive("q"), unknown()),
            base[2].clone(),
            base[4].clone(),
        ];
        passes(&h);

        // A count-2 delivery seen by a receive begun before the delete
        // made it stale.
        let h = vec![
            base[0].clone(),
            base[1].clone(),
            received(4, 25, 45, "q", &[("a", "ma", 2)]),
            base[2].clone(),
            base[4].clone(),
        ];
        passes(&h);
    }

    #[test]
    fn a_fifo_duplicate_is_caught() {
        // The retried g1-1 was enqueued a second time.
        caught_in_a_late_receive("f.fifo", &[("g1-1", "f9", 1)], "duplicate-message");
    }

    #[test]
    fn duplicates_are_only_judged_on_fifo_queues() {
        let mut h = a_sent_and_received();
        h.push(received(3, 20, 30, "q", &[("a", "mb", 1)]));
        passes(&h);
    }

    #[test]
    fn a_fifo_reorder_across_receives_is_caught() {
        let mut h = g1_sent();
        h.extend([
            received(2, 30, 40, "f.fifo", &[("g1-2", "f2", 1)]),
            op(2, 41, 50, delete("f.fifo", "g1-2", 1), done()),
            received(2, 60, 70, "f.fifo", &[("g1-1", "f1", 1)]),
            op(2, 71, 80, delete("f.fifo", "g1-1", 1), done()),
        ]);
        only(&judged(&h), "fifo-order", 1);
        // On a standard queue, order is not judged.
        let h: Vec<Op> = h
            .into_iter()
            .map(|mut o| {
                match &mut o.call {
                    Call::Send { queue, .. }
                    | Call::Receive { queue, .. }
                    | Call::Delete { queue, .. } => *queue = "q".into(),
                    _ => {}
                }
                o
            })
            .collect();
        passes(&h);
    }

    #[test]
    fn a_fifo_reorder_within_a_reply_is_caught() {
        let mut h = g1_sent();
        h.extend([
            op(1, 21, 25, send("f.fifo", "g2-1"), sent("f3")),
            received(
                2,
                30,
                40,
                "f.fifo",
                &[("g1-2", "f2", 1), ("g2-1", "f3", 1), ("g1-1", "f1", 1)],
            ),
        ]);
        // Within the reply (2 before 1); across receives nothing, since
        // both came in the same reply.
        only(&judged(&h), "fifo-order", 1);
    }

    #[test]
    fn concurrent_receives_or_an_unseen_first_delivery_are_not_a_reorder() {
        let mut h = g1_sent();
        h.extend([
            // Overlapping receives: either order is possible.
            received(2, 30, 60, "f.fifo", &[("g1-1", "f1", 1)]),
            received(3, 35, 50, "f.fifo", &[("g1-2", "f2", 1)]),
            // g1-3's first delivery went to a receive of unknown outcome.
            op(1, 21, 25, send("f.fifo", "g1-3"), sent("f3")),
            op(1, 26, 28, send("f.fifo", "g1-4"), sent("f4")),
            op(4, 61, 70, receive("f.fifo"), unknown()),
            received(5, 80, 90, "f.fifo", &[("g1-4", "f4", 1)]),
            received(5, 100, 110, "f.fifo", &[("g1-3", "f3", 2)]),
        ]);
        passes(&h);
    }
}
