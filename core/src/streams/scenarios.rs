//! The stream rules of the spec, through the state machine's entry point.

use std::collections::{BTreeMap, BTreeSet};

use crate::apply::Effect;
use crate::error::DomainError;
use crate::store::StateRead;
use crate::streams::hashing;
use crate::streams::iterator::Position;
use crate::streams::records::{self, NewRecord, Placed, Read};
use crate::streams::Trimmed;
use crate::streams::{shard_id, CreateStream, Stream};
use crate::testing::World;

impl World {
    fn create_stream(&mut self, name: &str, shards: i32) {
        self.create_stream_with(name, shards, None, None, Some(0), Some(0));
    }

    fn create_stream_with(
        &mut self,
        name: &str,
        shards: i32,
        retention: Option<i32>,
        record_bytes: Option<i32>,
        records_per_second: Option<i32>,
        bytes_per_second: Option<i32>,
    ) {
        let c = CreateStream::new(
            name,
            shards,
            retention,
            record_bytes,
            records_per_second,
            bytes_per_second,
            BTreeMap::new(),
        )
        .unwrap();
        self.run(c).unwrap();
    }

    fn put(&mut self, stream: &str, records: Vec<NewRecord>) -> Vec<Result<Placed, DomainError>> {
        self.run(crate::streams::PutRecords {
            stream: stream.into(),
            records,
        })
        .unwrap()
    }

    fn put_one(&mut self, stream: &str, key: &str, data: &str) -> Placed {
        self.put(stream, vec![rec(key, data)]).remove(0).unwrap()
    }

    fn stream(&self, name: &str) -> Stream {
        self.ask(crate::streams::DescribeStream { name: name.into() })
            .unwrap()
    }

    fn position(&self, name: &str, shard: u32, p: Position) -> (u64, u64) {
        let at = self
            .ask(crate::streams::ResolvePosition {
                name: name.into(),
                shard,
                position: p,
            })
            .unwrap();
        (at.stream, at.seq)
    }

    fn read(&self, name: &str, shard: u32, p: Position, limit: u32) -> Read {
        let (stream, from) = self.position(name, shard, p);
        self.read_from(stream, shard, from, limit)
    }

    fn read_from(&self, stream: u64, shard: u32, from: u64, limit: u32) -> Read {
        self.ask(crate::streams::ReadShard {
            stream,
            shard,
            from,
            limit,
            max_bytes: records::READ_BYTES_MAX,
        })
        .unwrap()
    }

    /// Reads every shard in lineage order (parents before children) from
    /// the oldest record, as a reader following the stream would: the
    /// records of each partition key, in the order read.
    fn read_all_by_key(&self, name: &str) -> BTreeMap<String, Vec<String>> {
        let s = self.stream(name);
        let mut done = BTreeSet::new();
        let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
        while done.len() < s.shards.len() {
            let next = s
                .shards
                .iter()
                .find(|m| {
                    !done.contains(&m.index)
                        && m.parents
                            .iter()
                            .all(|p| done.contains(p) || s.shard(*p).is_none())
                })
                .expect("a readable shard");
            let r = self.read(name, next.index, Position::TrimHorizon, 10_000);
            for (_, rec) in r.records {
                by_key
                    .entry(rec.partition_key)
                    .or_default()
                    .push(String::from_utf8(rec.data).unwrap());
            }
            done.insert(next.index);
        }
        by_key
    }
}

/// A world with one stream, "s", of `shards` shards (made by `create_stream`).
fn with_stream(shards: i32) -> World {
    let mut w = World::new();
    w.create_stream("s", shards);
    w
}

fn rec(key: &str, data: &str) -> NewRecord {
    NewRecord::new("", data.as_bytes().to_vec(), key.into(), "").unwrap()
}

fn rec_at(hash: u128, data: &str) -> NewRecord {
    NewRecord::new("", data.as_bytes().to_vec(), "k".into(), &hash.to_string()).unwrap()
}

fn bodies(r: &Read) -> Vec<String> {
    r.records
        .iter()
        .map(|(_, x)| String::from_utf8(x.data.clone()).unwrap())
        .collect()
}

#[test]
fn records_go_to_the_shard_of_their_key_with_increasing_numbers() {
    let mut w = with_stream(4);
    let ranges = hashing::uniform_ranges(4);
    let mut last: BTreeMap<u32, u64> = BTreeMap::new();
    for i in 0..200 {
        let key = format!("key-{}", i % 16);
        let placed = w.put_one("s", &key, &format!("d{i}"));
        let h = hashing::hash_key(&key);
        let expected = ranges
            .iter()
            .position(|(a, b)| (*a..=*b).contains(&h))
            .unwrap() as u32;
        assert_eq!(placed.shard, expected, "{key}");
        let prev = last.insert(placed.shard, placed.seq).unwrap_or(0);
        assert_eq!(placed.seq, prev + 1, "numbers are consecutive per shard");
    }
    assert!(w.effects.contains(&Effect::ShardAppended {
        stream: 1,
        shard: 0
    }));
}

#[test]
fn an_explicit_hash_key_picks_the_shard() {
    let mut w = with_stream(4);
    let ranges = hashing::uniform_ranges(4);
    for (i, (start, end)) in ranges.iter().enumerate() {
        assert_eq!(
            w.put("s", vec![rec_at(*start, "a")])[0]
                .as_ref()
                .unwrap()
                .shard,
            i as u32
        );
        assert_eq!(
            w.put("s", vec![rec_at(*end, "b")])[0]
                .as_ref()
                .unwrap()
                .shard,
            i as u32
        );
    }
}

#[test]
fn every_iterator_type_starts_where_it_says() {
    let mut w = with_stream(1);
    let a = w.put_one("s", "k", "a");
    w.advance(2);
    let t_b = w.now;
    let b = w.put_one("s", "k", "b");
    w.advance_ms(500);
    w.put_one("s", "k", "c");
    let all = |p| bodies(&w.read("s", 0, p, 100));
    assert_eq!(all(Position::TrimHorizon), ["a", "b", "c"]);
    assert_eq!(all(Position::Latest), Vec::<String>::new());
    assert_eq!(all(Position::At(b.seq)), ["b", "c"]);
    assert_eq!(all(Position::After(a.seq)), ["b", "c"]);
    assert_eq!(all(Position::AtTimestamp(t_b)), ["b", "c"]);
    assert_eq!(all(Position::AtTimestamp(t_b + 1)), ["c"]);
    assert_eq!(all(Position::AtTimestamp(w.now + 1)), Vec::<String>::new());
    // Numbers the shard never issued are refused, not skipped to.
    let c_seq = b.seq + 1;
    for p in [
        Position::At(c_seq + 1),
        Position::At(0),
        Position::After(c_seq + 1),
        Position::After(u64::MAX),
    ] {
        let err = w
            .ask(crate::streams::ResolvePosition {
                name: "s".into(),
                shard: 0,
                position: p,
            })
            .unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("starting_sequence_number"),
            "{p:?}"
        );
    }
    assert_eq!(all(Position::After(c_seq)), Vec::<String>::new());
    // LATEST sees what comes after it.
    let (stream, latest) = w.position("s", 0, Position::Latest);
    w.put_one("s", "k", "d");
    assert_eq!(bodies(&w.read_from(stream, 0, latest, 100)), ["d"]);
}

#[test]
fn a_read_stops_at_its_limit_and_says_where_to_go_on() {
    let mut w = with_stream(1);
    for i in 0..10 {
        w.put_one("s", "k", &format!("{i}"));
    }
    let first = w.read("s", 0, Position::TrimHorizon, 4);
    assert_eq!(bodies(&first), ["0", "1", "2", "3"]);
    let rest = w.read_from(1, 0, first.next, 100);
    assert_eq!(bodies(&rest), ["4", "5", "6", "7", "8", "9"]);
    assert_eq!(rest.last_seq, 10);
    assert!(rest.children.is_none(), "an open shard has no children");
}

#[test]
fn a_split_closes_the_parent_and_readers_find_the_children() {
    let mut w = with_stream(1);
    for i in 0..5 {
        w.put_one("s", &format!("k{i}"), "before");
    }
    let mid = 1u128 << 127;
    let [a, b] = w
        .run(crate::streams::SplitShard {
            name: "s".into(),
            shard: 0,
            new_start: mid,
        })
        .unwrap();
    // New records go to the children.
    let placed = w.put("s", vec![rec_at(0, "low"), rec_at(mid, "high")]);
    assert_eq!(placed[0].as_ref().unwrap().shard, a);
    assert_eq!(placed[1].as_ref().unwrap().shard, b);
    // The parent reads to its end, then names its children.
    let r = w.read("s", 0, Position::TrimHorizon, 100);
    assert_eq!(r.records.len(), 5);
    let children: Vec<u32> = r.children.unwrap().iter().map(|c| c.index).collect();
    assert_eq!(children, vec![a, b]);
    let s = w.stream("s");
    assert_eq!(s.shard(0).unwrap().closed.unwrap().last_seq, 5);
}

#[test]
fn no_partition_key_is_lost_or_reordered_across_reshards() {
    let mut w = with_stream(2);
    let keys: Vec<String> = (0..16).map(|i| format!("key-{i}")).collect();
    let mut expected: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut n = 0;
    let mut put_round = |w: &mut World| {
        for k in &keys {
            let d = format!("{k}#{n}");
            w.put_one("s", k, &d);
            expected.entry(k.clone()).or_default().push(d);
            n += 1;
        }
    };
    put_round(&mut w);
    w.run(crate::streams::SplitShard {
        name: "s".into(),
        shard: 0,
        new_start: 1u128 << 126,
    })
    .unwrap();
    put_round(&mut w);
    w.run(crate::streams::MergeShards {
        name: "s".into(),
        shard: 2,
        adjacent: 3,
    })
    .unwrap();
    put_round(&mut w);
    w.run(crate::streams::UpdateShardCount {
        name: "s".into(),
        target: 3,
    })
    .unwrap();
    put_round(&mut w);
    assert_eq!(w.read_all_by_key("s"), expected);
}

#[test]
fn trimming_drops_records_past_retention_and_readers_start_at_the_oldest_left() {
    let mut w = with_stream(1);
    let old = w.put_one("s", "k", "old");
    w.advance(12 * 3600);
    w.put_one("s", "k", "young");
    w.advance(12 * 3600 + 1);
    let Trimmed { dropped, more } = w
        .run(crate::streams::TrimShard {
            name: "s".into(),
            shard: 0,
        })
        .unwrap();
    assert_eq!((dropped, more), (1, false));
    assert_eq!(
        bodies(&w.read("s", 0, Position::TrimHorizon, 10)),
        ["young"]
    );
    // An iterator into trimmed data starts at the oldest record left.
    assert_eq!(
        bodies(&w.read("s", 0, Position::At(old.seq), 10)),
        ["young"]
    );
}

#[test]
fn a_closed_shard_disappears_once_empty_after_retention() {
    let mut w = with_stream(1);
    w.put_one("s", "k", "x");
    w.run(crate::streams::SplitShard {
        name: "s".into(),
        shard: 0,
        new_start: 1,
    })
    .unwrap();
    w.advance(24 * 3600 + 2);
    w.run(crate::streams::TrimShard {
        name: "s".into(),
        shard: 0,
    })
    .unwrap();
    let s = w.stream("s");
    assert!(s.shard(0).is_none(), "the parent is gone");
    assert_eq!(s.shards.len(), 2);
    // Its children no longer need it to be read first.
    assert_eq!(w.read_all_by_key("s").len(), 0);
}

#[test]
fn trimming_a_large_shard_takes_bounded_steps() {
    let mut w = with_stream(1);
    for chunk in 0..5 {
        let batch = (0..500)
            .map(|i| rec("k", &format!("{chunk}-{i}")))
            .collect();
        w.put("s", batch);
    }
    w.advance(24 * 3600 + 2);
    let mut steps = 0;
    loop {
        steps += 1;
        let Trimmed { dropped, more } = w
            .run(crate::streams::TrimShard {
                name: "s".into(),
                shard: 0,
            })
            .unwrap();
        assert!(dropped <= records::STEP_LIMIT as u64);
        if !more {
            break;
        }
        // What is left must still look due to the leader, or the rest
        // would stay for ever once the leader's round ends.
        let stream = w.stream("s");
        let due = records::needs_trim(&w.state, &stream, &stream.shards[0], w.now).unwrap();
        assert!(due, "records past retention left after step {steps}");
    }
    assert_eq!(
        steps,
        2,
        "2 500 records in steps of {}",
        records::STEP_LIMIT
    );
    assert!(w.read("s", 0, Position::TrimHorizon, 10).records.is_empty());
}

#[test]
fn the_per_shard_write_limits_refuse_the_excess_until_the_next_second() {
    let mut w = World::new();
    w.create_stream_with("s", 1, None, None, Some(3), Some(0));
    let r = w.put("s", (0..5).map(|i| rec("k", &i.to_string())).collect());
    let codes: Vec<_> = r
        .iter()
        .map(|x| x.as_ref().err().map(|e| e.code.as_str()))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            None,
            None,
            Some("ProvisionedThroughputExceededException"),
            Some("ProvisionedThroughputExceededException")
        ]
    );
    w.advance(1);
    assert!(w.put("s", vec![rec("k", "again")])[0].is_ok());
    // Refused records take no sequence number.
    let all = w.read("s", 0, Position::TrimHorizon, 10);
    let seqs: Vec<u64> = all.records.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);

    // Bytes count data and partition key, as in Kinesis: 6 + 4 fit in 10,
    // the next 2 do not.
    w.create_stream_with("bytes", 1, None, None, Some(0), Some(10));
    let r = w.put(
        "bytes",
        vec![rec("k", "12345"), rec("k", "678"), rec("k", "9")],
    );
    assert!(r[0].is_ok() && r[1].is_ok() && r[2].is_err(), "{r:?}");

    // A record alone in its second always fits, even one larger than the
    // byte limit (a 2 MiB record under the default 1 MiB/s, on a stream
    // that takes records that large); the next in that second does not.
    w.create_stream_with("big", 1, None, Some(10 << 20), None, None);
    let two_mib = || NewRecord::new("", vec![0; 2 << 20], "k".into(), "").unwrap();
    let r = w.put("big", vec![two_mib(), rec("k", "x")]);
    assert!(r[0].is_ok(), "{r:?}");
    assert_eq!(
        r[1].as_ref().unwrap_err().code,
        "ProvisionedThroughputExceededException"
    );
}

#[test]
fn a_read_returns_at_most_ten_mib_yet_always_one_record() {
    let mut w = World::new();
    w.create_stream_with("s", 1, None, Some(10 << 20), Some(0), Some(0));
    let mib = |n: usize| NewRecord::new("", vec![n as u8; 1 << 20], "k".into(), "").unwrap();
    // Twelve 1 MiB records, four per put, then one of 10 MiB (as PutRecord
    // takes it).
    for batch in 0..3 {
        let placed = w.put("s", (0..4).map(|i| mib(batch * 4 + i)).collect());
        assert!(placed.iter().all(Result::is_ok));
    }
    // The largest record: 10 MiB of data and partition key together.
    let huge = NewRecord::new("", vec![0; (10 << 20) - 1], "k".into(), "").unwrap();
    assert!(w.put("s", vec![huge]).remove(0).is_ok());
    let first = w.read("s", 0, Position::TrimHorizon, records::READ_MAX_RECORDS);
    // The 10 MiB bound counts data: ten 1 MiB records fill it, an eleventh
    // would not fit.
    let sizes: usize = first.records.iter().map(|(_, r)| r.data.len()).sum();
    assert!(sizes as u64 <= records::READ_BYTES_MAX);
    assert_eq!(first.records.len(), 10);
    let second = w.read_from(1, 0, first.next, records::READ_MAX_RECORDS);
    assert_eq!(second.records.len(), 2, "the rest of the 1 MiB records");
    let third = w.read_from(1, 0, second.next, records::READ_MAX_RECORDS);
    assert_eq!(third.records.len(), 1, "a 10 MiB record comes alone");
    assert_eq!(third.records[0].1.data.len(), (10 << 20) - 1);
}

#[test]
fn records_larger_than_the_stream_allows_fail_alone() {
    let mut w = World::new();
    w.create_stream_with("s", 1, None, Some(1024), Some(0), Some(0));
    let big = NewRecord::new("", vec![0; 1025], "k".into(), "").unwrap();
    let r = w.put("s", vec![rec("k", "ok"), big]);
    assert!(r[0].is_ok());
    let err = r[1].as_ref().unwrap_err();
    assert_eq!(err.field.as_deref(), Some("data"));
    assert!(err.message.contains("at most 1024"));
}

#[test]
fn a_record_size_counts_its_partition_key_with_its_data() {
    // Kinesis: the data blob plus the partition key must not exceed the
    // maximum record size.
    let mut w = World::new();
    w.create_stream_with("s", 1, None, None, Some(0), Some(0));
    let key = "k".repeat(256);
    let record = |data: usize| NewRecord::new("", vec![7; data], key.clone(), "").unwrap();
    let r = w.put("s", vec![record((1 << 20) - 256), record((1 << 20) - 255)]);
    assert!(r[0].is_ok(), "1 MiB with its key fits: {r:?}");
    let err = r[1].as_ref().unwrap_err();
    assert_eq!(err.code, "InvalidArgumentException");
    assert_eq!(err.field.as_deref(), Some("data"));
    assert!(
        err.message.contains("data and partition key") && err.message.contains("1048576"),
        "{}",
        err.message
    );
    // The absolute limit at the edge counts the key too, named per entry.
    let max = crate::streams::RECORD_BYTES_MAX as usize;
    assert!(NewRecord::new("records[3]", vec![0; max - 256], key.clone(), "").is_ok());
    let err = NewRecord::new("records[3]", vec![0; max - 255], key.clone(), "").unwrap_err();
    assert_eq!(err.field.as_deref(), Some("records[3].data"));
    assert!(err.message.contains("partition key"), "{}", err.message);
    // A multi-byte key counts its UTF-8 bytes.
    let wide = "ü".repeat(256);
    assert!(NewRecord::new("", vec![0; max - 512], wide.clone(), "").is_ok());
    assert!(NewRecord::new("", vec![0; max - 511], wide, "").is_err());
}

#[test]
fn every_put_limit_is_checked_at_the_edge() {
    assert!(NewRecord::new("records[0]", vec![], "".into(), "").is_err());
    assert!(NewRecord::new("r", vec![], "k".repeat(257), "").is_err());
    assert!(NewRecord::new("r", vec![], "ü".repeat(256), "").is_ok());
    assert!(NewRecord::new("r", vec![0; 10_485_761], "k".into(), "").is_err());
    assert!(NewRecord::new("r", vec![], "k".into(), "not a number").is_err());
    let one = || NewRecord::new("", vec![0; 10], "k".into(), "").unwrap();
    assert!(records::validate_batch(&[]).is_err());
    assert!(records::validate_batch(&vec![one(); 500]).is_ok());
    assert!(records::validate_batch(&vec![one(); 501]).is_err());
    let mib = || NewRecord::new("", vec![0; 1 << 20], "k".into(), "").unwrap();
    assert!(records::validate_batch(&[mib(), mib(), mib(), mib(), mib()]).is_err());
}

#[test]
fn retention_changes_go_the_way_their_action_says() {
    let mut w = with_stream(1);
    let set = |w: &mut World, hours, increase| {
        w.run(crate::streams::SetStreamRetention {
            name: "s".into(),
            hours,
            increase,
        })
    };
    assert!(set(&mut w, 48, true).is_ok());
    assert!(set(&mut w, 24, true).is_err());
    assert!(set(&mut w, 72, false).is_err());
    assert!(set(&mut w, 24, false).is_ok());
    assert_eq!(w.stream("s").retention_hours, 24);
}

#[test]
fn a_deleted_stream_is_collected_and_its_iterators_fail() {
    let mut w = with_stream(2);
    for i in 0..50 {
        w.put_one("s", &format!("k{i}"), "x");
    }
    let (sid, _) = w.position("s", 0, Position::TrimHorizon);
    w.run(crate::streams::DeleteStream { name: "s".into() })
        .unwrap();
    let err = w
        .ask(crate::streams::ReadShard {
            stream: sid,
            shard: 0,
            from: 1,
            limit: 10,
            max_bytes: 1 << 20,
        })
        .unwrap_err();
    assert_eq!(err.code, "ResourceNotFoundException");
    for sid in records::garbage(&w.state, 10).unwrap() {
        while !w.run(crate::streams::CollectStream { sid }).unwrap() {}
    }
    let leftover = w
        .state
        .scan_prefix(b"")
        .map(|kv| crate::store::keys::display(&kv.unwrap().0))
        .filter(|k| !k.starts_with("seq/"))
        .count();
    assert_eq!(leftover, 0);
    // The name starts afresh.
    w.create_stream("s", 1);
    assert!(w.read("s", 0, Position::TrimHorizon, 10).records.is_empty());
}

#[test]
fn consumers_register_once_and_deregister() {
    let mut w = with_stream(1);
    let reg = |w: &mut World, c: &str| {
        w.run(crate::streams::RegisterConsumer {
            name: "s".into(),
            consumer: c.into(),
        })
    };
    let a = reg(&mut w, "a").unwrap();
    w.advance(1);
    assert_eq!(reg(&mut w, "a").unwrap(), a, "registering again returns it");
    for i in 0..19 {
        reg(&mut w, &format!("c{i}")).unwrap();
    }
    assert_eq!(
        reg(&mut w, "one-too-many").unwrap_err().code,
        "LimitExceededException"
    );
    w.run(crate::streams::DeregisterConsumer {
        name: "s".into(),
        consumer: "a".into(),
    })
    .unwrap();
    assert!(w
        .run(crate::streams::DeregisterConsumer {
            name: "s".into(),
            consumer: "a".into(),
        })
        .is_err());
    assert_eq!(shard_id(0), "shardId-000000000000");
}
