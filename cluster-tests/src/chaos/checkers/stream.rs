//! The stream checker: Kinesis semantics of puts and reads.
//!
//! It looks at [`Call::Put`] and [`Call::Read`] operations (counted as
//! "ok", "fail" and "unknown"). A sequence number is 26 decimal digits: 20
//! digits of the record's number in its shard (1, 2, 3, ...: dense, never
//! reused), then 6 digits of the shard's index; records are compared by
//! their number. A position is a (stream, shard, number). Each reader reads
//! each shard from its start, call after call, each read's `after` being
//! the last sequence number it saw (`None` at first).
//!
//! Anomalies:
//!
//! - **reader-reorder**: a read whose records are not strictly increasing,
//!   or whose first record is not after its `after`.
//! - **gap**: a read that skips a number: its first record is not the one
//!   right after its `after` (number 1 when `after` is `None`), or two of
//!   its records are not consecutive.
//! - **divergence**: readers (or one reader's reads) saw different data at
//!   one position.
//! - **duplicate**: the same data at two positions. Each put is one
//!   attempt with unique data, so a record never appears twice.
//! - **phantom**: data read that no put carried, or whose every put failed
//!   (a failure means it did not take effect).
//! - **lost**: a put acknowledged (`Ok`) at a position some reader read to
//!   or past, whose data no reader returned anywhere (the position, if
//!   read, held other data).
//! - **unread**: like lost, but no reader reached the put's position, so
//!   the history cannot tell; this too makes the verdict invalid, since a
//!   chaos run ends by reading every shard to its end.
//! - **misplaced**: a put acknowledged at one position whose data was read
//!   only at other positions.
//! - **malformed**: a sequence number that is not 26 digits.
//!
//! Each read counts at most once per kind (reorder, gap); each position
//! once (divergence); each data once (duplicate, phantom); each put once
//! (lost, unread, misplaced).

use std::collections::{BTreeMap, BTreeSet};

use super::{Tally, Verdict};
use crate::chaos::history::{Call, Op, Outcome, Reply};

/// The anomaly kinds this checker counts.
pub const KINDS: [&str; 9] = [
    "lost",
    "unread",
    "reader-reorder",
    "gap",
    "divergence",
    "duplicate",
    "phantom",
    "misplaced",
    "malformed",
];

/// The record number within its shard of a sequence number (its first 20
/// of 26 digits), or None when it is not 26 digits.
pub fn record_number(seq: &str) -> Option<u64> {
    if seq.len() != 26 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    seq[..20].parse().ok()
}

/// Judges the stream operations of `ops`. See the module documentation for
/// the rules.
pub fn check(ops: &[Op]) -> Verdict {
    let mut tally = Tally::new("stream", &KINDS);

    // Puts by (stream, data), whatever their outcome.
    let mut puts: BTreeMap<(&str, &str), Vec<&Op>> = BTreeMap::new();
    // Successful reads by (stream, shard, reader), in invocation order.
    let mut reads: BTreeMap<(&str, &str, u32), Vec<&Op>> = BTreeMap::new();
    for op in ops {
        match &op.call {
            Call::Put { stream, data, .. } => {
                tally.outcome(&op.outcome);
                puts.entry((stream, data)).or_default().push(op);
            }
            Call::Read {
                stream,
                reader,
                shard,
                ..
            } => {
                tally.outcome(&op.outcome);
                if matches!(op.outcome, Outcome::Ok { .. }) {
                    reads.entry((stream, shard, *reader)).or_default().push(op);
                }
            }
            _ => {}
        }
    }

    // What each position held, for whom; where each data was read; how far
    // readers got in each shard.
    let mut held: BTreeMap<(&str, &str, u64), BTreeMap<&str, BTreeSet<u32>>> = BTreeMap::new();
    let mut found: BTreeMap<(&str, &str), BTreeSet<(&str, u64)>> = BTreeMap::new();
    let mut reached: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for ((stream, shard, reader), list) in &mut reads {
        list.sort_by_key(|o| o.invoke_ns);
        for op in list.iter() {
            let Call::Read { after, .. } = &op.call else {
                continue;
            };
            let Some(Reply::Records { records }) = op.outcome.reply() else {
                continue;
            };
            let mut prev = match after {
                None => Some(0),
                Some(a) => {
                    let n = record_number(a);
                    if n.is_none() {
                        tally.anomaly(
                            "malformed",
                            format!("reader {reader} read {stream}/{shard} after {a:?}"),
                        );
                    }
                    n
                }
            };
            let mut reordered = None;
            let mut gap = None;
            for r in records {
                let Some(n) = record_number(&r.seq) else {
                    tally.anomaly(
                        "malformed",
                        format!(
                            "reader {reader} got sequence number {:?} from {stream}/{shard}",
                            r.seq
                        ),
                    );
                    continue;
                };
                if let Some(p) = prev {
                    if n <= p && reordered.is_none() {
                        reordered = Some((p, n));
                    } else if n > p + 1 && gap.is_none() {
                        gap = Some((p, n));
                    }
                }
                prev = Some(n);
                held.entry((stream, shard, n))
                    .or_default()
                    .entry(&r.data)
                    .or_default()
                    .insert(*reader);
                found
                    .entry((stream, &r.data))
                    .or_default()
                    .insert((shard, n));
                let max = reached.entry((stream, shard)).or_default();
                *max = (*max).max(n);
            }
            let after = after.as_deref().unwrap_or("the start");
            if let Some((p, n)) = reordered {
                tally.anomaly(
                    "reader-reorder",
                    format!(
                        "reader {reader}'s read of {stream}/{shard} after {after} \
                         (invoked at {} ns) returned record {n} after record {p}",
                        op.invoke_ns
                    ),
                );
            }
            if let Some((p, n)) = gap {
                tally.anomaly(
                    "gap",
                    format!(
                        "reader {reader}'s read of {stream}/{shard} after {after} \
                         (invoked at {} ns) went from record {p} to record {n}",
                        op.invoke_ns
                    ),
                );
            }
        }
    }

    for ((stream, shard, n), datas) in &held {
        if datas.len() > 1 {
            let seen: Vec<String> = datas
                .iter()
                .map(|(d, readers)| format!("{d:?} (readers {readers:?})"))
                .collect();
            tally.anomaly(
                "divergence",
                format!(
                    "record {n} of {stream}/{shard} was read as {}",
                    seen.join(" and ")
                ),
            );
        }
    }

    for ((stream, data), positions) in &found {
        if positions.len() > 1 {
            tally.anomaly(
                "duplicate",
                format!("{data:?} was read at {positions:?} of {stream}"),
            );
        }
        match puts.get(&(stream, data)) {
            None => tally.anomaly(
                "phantom",
                format!("{data:?} was read from {stream} at {positions:?} but never put"),
            ),
            Some(p) if p.iter().all(|o| matches!(o.outcome, Outcome::Fail { .. })) => tally
                .anomaly(
                    "phantom",
                    format!("{data:?} was read from {stream} at {positions:?} but its put failed"),
                ),
            Some(_) => {}
        }
    }

    for ((stream, data), list) in &puts {
        for op in list {
            let Some(Reply::Placed { shard, seq }) = op.outcome.reply() else {
                continue;
            };
            let Some(n) = record_number(seq) else {
                tally.anomaly(
                    "malformed",
                    format!("the put of {data:?} to {stream} was placed at {seq:?}"),
                );
                continue;
            };
            match found.get(&(stream, data)) {
                Some(positions) => {
                    if !positions.contains(&(shard.as_str(), n)) {
                        tally.anomaly(
                            "misplaced",
                            format!(
                                "the put of {data:?} to {stream} was placed at record {n} \
                                 of {shard} but read at {positions:?}"
                            ),
                        );
                    }
                }
                None => {
                    let max = reached.get(&(stream, shard.as_str())).copied().unwrap_or(0);
                    if max >= n {
                        let there = held
                            .get(&(stream, shard.as_str(), n))
                            .map(|d| format!(", which held {:?}", d.keys().collect::<Vec<_>>()))
                            .unwrap_or_default();
                        tally.anomaly(
                            "lost",
                            format!(
                                "the put of {data:?} to {stream} (acknowledged at {} ns as \
                                 record {n} of {shard}) was never read, though readers reached \
                                 record {max}{there}",
                                op.complete_ns
                            ),
                        );
                    } else {
                        tally.anomaly(
                            "unread",
                            format!(
                                "the put of {data:?} to {stream} (acknowledged at {} ns as \
                                 record {n} of {shard}) was never read; readers reached \
                                 record {max} only",
                                op.complete_ns
                            ),
                        );
                    }
                }
            }
        }
    }

    tally.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::checkers::testing::{self, passed};
    use crate::chaos::history::testing::{op, unknown};
    use crate::chaos::history::StreamRecord;

    const SHARDS: [&str; 2] = ["shardId-000000000000", "shardId-000000000001"];

    fn seq(shard: usize, n: u64) -> String {
        format!("{n:020}{shard:06}")
    }

    fn put(data: &str) -> Call {
        Call::Put {
            stream: "s".into(),
            key: format!("k-{data}"),
            data: data.into(),
        }
    }

    fn placed(shard: usize, n: u64) -> Outcome {
        Outcome::Ok {
            reply: Reply::Placed {
                shard: SHARDS[shard].into(),
                seq: seq(shard, n),
            },
        }
    }

    fn read(reader: u32, shard: usize, after: Option<u64>) -> Call {
        Call::Read {
            stream: "s".into(),
            reader,
            shard: SHARDS[shard].into(),
            after: after.map(|n| seq(shard, n)),
        }
    }

    /// Records (number, data) of `shard`.
    fn records(shard: usize, records: &[(u64, &str)]) -> Outcome {
        Outcome::Ok {
            reply: Reply::Records {
                records: records
                    .iter()
                    .map(|(n, d)| StreamRecord {
                        seq: seq(shard, *n),
                        data: d.to_string(),
                    })
                    .collect(),
            },
        }
    }

    /// Process `process`, from `invoke` to `complete` ns, reads `shard` for
    /// `reader` after record `after` and gets the records `got` (number,
    /// data).
    fn reads(
        process: u64,
        invoke: u64,
        complete: u64,
        reader: u32,
        shard: usize,
        after: Option<u64>,
        got: &[(u64, &str)],
    ) -> Op {
        op(
            process,
            invoke,
            complete,
            read(reader, shard, after),
            records(shard, got),
        )
    }

    /// Puts a1..a3 to shard 0 and b1, b2 to shard 1 (b2 of unknown outcome
    /// but applied; c never applied), each read by readers 1 and 2.
    fn valid_history() -> Vec<Op> {
        vec![
            op(1, 0, 10, put("a1"), placed(0, 1)),
            op(1, 11, 20, put("a2"), placed(0, 2)),
            op(2, 0, 10, put("b1"), placed(1, 1)),
            op(2, 11, 50, put("b2"), unknown()),
            op(3, 12, 60, put("c"), unknown()),
            op(1, 21, 30, put("a3"), placed(0, 3)),
            reads(10, 5, 15, 1, 0, None, &[(1, "a1")]),
            reads(10, 16, 25, 1, 0, Some(1), &[(2, "a2")]),
            reads(10, 26, 40, 1, 0, Some(2), &[(3, "a3")]),
            reads(10, 41, 45, 1, 0, Some(3), &[]),
            reads(10, 46, 60, 1, 1, None, &[(1, "b1"), (2, "b2")]),
            // Reader 2 reads everything at the end; one read fails first.
            op(
                11,
                99,
                100,
                read(2, 0, None),
                Outcome::Fail {
                    code: "ProvisionedThroughputExceededException".into(),
                    message: "slow down".into(),
                },
            ),
            reads(11, 100, 110, 2, 0, None, &[(1, "a1"), (2, "a2"), (3, "a3")]),
            reads(11, 111, 120, 2, 1, None, &[(1, "b1")]),
            reads(11, 121, 130, 2, 1, Some(1), &[(2, "b2")]),
            reads(11, 131, 140, 2, 1, Some(2), &[]),
        ]
    }

    /// The valid history with `extra` after it holds one anomaly, of
    /// `kind`.
    fn caught_once(extra: impl IntoIterator<Item = Op>, kind: &str) {
        let mut h = valid_history();
        h.extend(extra);
        testing::only(&check(&h), &KINDS, kind, 1);
    }

    #[test]
    fn sequence_numbers_compare_by_their_record_number() {
        assert_eq!(record_number("00000000000000000012000003"), Some(12));
        assert_eq!(record_number("12000003"), None);
        assert_eq!(record_number("0000000000000000001x000003"), None);
    }

    #[test]
    fn a_valid_history_passes() {
        passed(&check(&valid_history()), "stream", &KINDS, 13, 1, 2);
    }

    #[test]
    fn a_lost_record_is_caught() {
        // d was acknowledged as record 4 of shard 0, but readers found c
        // (a put of unknown outcome) there.
        caught_once(
            [
                op(1, 31, 35, put("d"), placed(0, 4)),
                reads(11, 141, 150, 2, 0, Some(3), &[(4, "c")]),
            ],
            "lost",
        );
    }

    #[test]
    fn a_record_beyond_every_reader_is_unread() {
        caught_once([op(1, 31, 35, put("d"), placed(0, 4))], "unread");
    }

    #[test]
    fn a_duplicate_is_caught() {
        // a1 appears again as record 4 of shard 0.
        caught_once(
            [reads(11, 141, 150, 2, 0, Some(3), &[(4, "a1")])],
            "duplicate",
        );
    }

    #[test]
    fn a_reorder_within_a_reader_is_caught() {
        // Reader 1 asked for what follows record 3 and got record 3 again.
        caught_once(
            [reads(10, 61, 70, 1, 0, Some(3), &[(3, "a3")])],
            "reader-reorder",
        );
    }

    #[test]
    fn a_gap_is_caught() {
        // Reader 3 skips record 2.
        caught_once(
            [reads(12, 200, 210, 3, 0, None, &[(1, "a1"), (3, "a3")])],
            "gap",
        );
    }

    #[test]
    fn two_readers_diverging_are_caught() {
        // Reader 3 sees c where the others saw a2 (c's put was unknown).
        caught_once(
            [reads(
                12,
                200,
                210,
                3,
                0,
                None,
                &[(1, "a1"), (2, "c"), (3, "a3")],
            )],
            "divergence",
        );
    }

    #[test]
    fn a_phantom_and_a_misplaced_record_are_caught() {
        caught_once(
            [reads(12, 200, 210, 2, 0, Some(3), &[(4, "zz")])],
            "phantom",
        );

        // e was acknowledged as record 5 but read as record 4.
        caught_once(
            [
                op(1, 31, 35, put("e"), placed(0, 5)),
                reads(11, 141, 150, 2, 0, Some(3), &[(4, "e")]),
            ],
            "misplaced",
        );
    }
}
