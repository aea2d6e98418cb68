//! Records: putting, reading, trimming.
//!
//! Each shard numbers its records 1, 2, 3, ... (never reused); records are
//! stored by number, so a read from a position is a range scan and a trim
//! deletes from the front. Record numbers follow arrival, so a per-second
//! index (`rts/`) finds the first record at or after a time.

use std::collections::BTreeMap;
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use super::{hashing, require, shard_id, ShardMeta, Stream};
use crate::apply::{Ctx, Effect, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::store::keys::{prefix_end, read_u64, Key};
use crate::store::{codec, StateRead, Txn};

/// Records a trim or collection step removes at most.
pub const STEP_LIMIT: usize = 2000;

/// A shard's counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardState {
    /// Number of the next record.
    pub next_seq: u64,
    /// Number of the oldest record kept.
    pub first_seq: u64,
    /// Arrival of the newest record, ms.
    pub last_arrival_ms: u64,
    /// Second of the write-limit window.
    pub window_second: u64,
    /// Records written in that second.
    pub window_records: u32,
    /// Bytes written in that second.
    pub window_bytes: u64,
}

impl ShardState {
    fn fresh() -> Self {
        ShardState {
            next_seq: 1,
            first_seq: 1,
            ..Default::default()
        }
    }

    /// Number of the newest record, 0 if none was ever written.
    pub fn last_seq(&self) -> u64 {
        self.next_seq - 1
    }
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Partition key.
    pub partition_key: String,
    /// Arrival (the leader's stamp), ms.
    pub arrival_ms: u64,
}

/// Versioned envelope of [`Record`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredRecord {
    /// Version 1.
    V1(Record),
}

/// [`StoredRecord`] borrowed from a put's record: it encodes to the same
/// bytes (postcard writes a byte string and a string alike), without a
/// copy of the data before the encoding's own.
#[derive(Serialize)]
enum StoredRecordRef<'a> {
    V1 {
        #[serde(with = "serde_bytes")]
        data: &'a [u8],
        partition_key: &'a str,
        arrival_ms: u64,
    },
}

/// A record to put, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewRecord {
    /// The data.
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    /// Partition key, 1-256 characters.
    pub partition_key: String,
    /// The hash key that picks the shard: the explicit one, else the
    /// partition key's MD5 read as a 128-bit number. Worked out where the
    /// request arrives, once, so that apply on every node does not hash
    /// (an MD5 a record on each node's one apply thread). It costs up to
    /// 19 bytes a record in the log (postcard's varint of a u128).
    pub hash_key: u128,
}

pub use crate::limits::streams::{PUT_BYTES_MAX, PUT_RECORDS_MAX, READ_BYTES_MAX};
/// Most records one GetRecords returns.
pub const READ_MAX_RECORDS: u32 = 10_000;

impl NewRecord {
    /// Validates a record at the edge against the absolute limits (the
    /// stream's own record size is checked when applied).
    pub fn new(
        prefix: &str,
        data: Vec<u8>,
        partition_key: String,
        explicit_hash_key: &str,
    ) -> Result<NewRecord, DomainError> {
        let f = |name: &str| crate::error::field_in(prefix, name);
        let chars = partition_key.chars().count();
        if !(1..=256).contains(&chars) {
            return Err(super::invalid(
                f("partition_key"),
                format!("must be 1-256 characters, got {chars}"),
            ));
        }
        let size = data.len() + partition_key.len();
        if size > super::RECORD_BYTES_MAX as usize {
            return Err(too_large(
                f("data"),
                size,
                super::RECORD_BYTES_MAX,
                "at most",
            ));
        }
        let hash_key = if explicit_hash_key.is_empty() {
            hashing::hash_key(&partition_key)
        } else {
            hashing::parse(&f("explicit_hash_key"), explicit_hash_key)?
        };
        Ok(NewRecord {
            data,
            partition_key,
            hash_key,
        })
    }

    /// A record placed by its partition key's MD5, made inside apply (a
    /// function's result sent to a stream destination).
    pub fn keyed(data: Vec<u8>, partition_key: String) -> NewRecord {
        NewRecord {
            hash_key: hashing::hash_key(&partition_key),
            data,
            partition_key,
        }
    }

    /// Bytes the record counts toward limits: its data and its partition
    /// key (UTF-8), as Kinesis counts them.
    pub fn size(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// The refusal of a record of `size` bytes (data and partition key) over
/// `max`.
fn too_large(field: String, size: usize, max: u32, limit: &str) -> DomainError {
    super::invalid(
        field,
        format!(
            "the record's data and partition key are {size} bytes together; {limit} {max} (the partition key counts toward the record size)"
        ),
    )
}

/// Checks a PutRecords request: 1-500 records, 5 MiB in all.
pub fn validate_batch(records: &[NewRecord]) -> Result<(), DomainError> {
    if records.is_empty() || records.len() > PUT_RECORDS_MAX {
        return Err(super::invalid(
            "records",
            format!(
                "must have 1 to {PUT_RECORDS_MAX} records, got {}",
                records.len()
            ),
        ));
    }
    let total: usize = records.iter().map(NewRecord::size).sum();
    if total > PUT_BYTES_MAX {
        return Err(super::invalid(
            "records",
            format!(
                "the records' data and partition keys are {total} bytes in all; at most {PUT_BYTES_MAX}"
            ),
        ));
    }
    Ok(())
}

/// Where a put record went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placed {
    /// Shard index.
    pub shard: u32,
    /// Its number in the shard.
    pub seq: u64,
}

/// `{space}/{id}/{index}`: the start of one kind of a shard's keys.
fn shard_key(space: &str, sid: u64, shard: u32) -> Key {
    Key::new(space).u64(sid).u64(u64::from(shard))
}

/// `shard/{id}/{index}`
pub fn state_key(sid: u64, shard: u32) -> Vec<u8> {
    shard_key("shard", sid, shard).build()
}

/// The start of every record key: a node may keep the keys under it in an
/// engine of their own (the broker's record files).
pub const RECORDS: &[u8] = b"rec/";

/// `rec/{id}/{index}/{seq}`
pub fn record_key(sid: u64, shard: u32, seq: u64) -> Vec<u8> {
    shard_key("rec", sid, shard).u64(seq).build()
}

/// The stream id, shard index and record number of a [`record_key`].
pub fn parse_record_key(key: &[u8]) -> Option<(u64, u32, u64)> {
    let rest = key.strip_prefix(RECORDS)?;
    if rest.len() != 24 {
        return None;
    }
    let shard = u32::try_from(read_u64(rest, 8)?).ok()?;
    Some((read_u64(rest, 0)?, shard, read_u64(rest, 16)?))
}

/// Prefix of a shard's `rec/` keys.
pub fn record_prefix(sid: u64, shard: u32) -> Vec<u8> {
    shard_key("rec", sid, shard).build()
}

fn second_key(sid: u64, shard: u32, second: u64) -> Vec<u8> {
    shard_key("rts", sid, shard).u64(second).build()
}

fn second_prefix(sid: u64, shard: u32) -> Vec<u8> {
    shard_key("rts", sid, shard).build()
}

/// Reads a shard's counters.
pub fn load_state(state: &dyn StateRead, sid: u64, shard: u32) -> ApplyResult<ShardState> {
    Ok(crate::store::record_at(state, &state_key(sid, shard))?.unwrap_or_else(ShardState::fresh))
}

fn throughput_exceeded(stream: &Stream, shard: u32) -> DomainError {
    DomainError::limit(
        "ProvisionedThroughputExceededException",
        format!(
            "rate exceeded for shard {} in stream {:?} (limits: {} records/s, {} bytes/s)",
            shard_id(shard),
            stream.name,
            stream.write_records_per_second,
            stream.write_bytes_per_second
        ),
    )
}

/// Puts records; each succeeds or fails on its own.
pub fn put(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    records: &[NewRecord],
    effects: &mut Effects,
) -> ApplyResult<Vec<Result<Placed, DomainError>>> {
    let stream = require(txn, name)?;
    let now = ctx.now_ms;
    let second = now / 1000;
    let mut states: BTreeMap<u32, ShardState> = BTreeMap::new();
    let mut results = Vec::with_capacity(records.len());
    for r in records {
        if r.size() > stream.max_record_bytes as usize {
            results.push(Err(too_large(
                "data".into(),
                r.size(),
                stream.max_record_bytes,
                "the stream takes at most",
            )));
            continue;
        }
        let hash = r.hash_key;
        let Some(shard) = stream.open_shard_for(hash).map(|s| s.index) else {
            results.push(Err(DomainError::precondition(
                "InternalFailure",
                format!("no open shard holds hash key {hash}"),
            )));
            continue;
        };
        let st = match states.entry(shard) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(load_state(txn, stream.id, shard)?)
            }
        };
        if st.window_second != second {
            st.window_second = second;
            st.window_records = 0;
            st.window_bytes = 0;
        }
        let size = r.size() as u64;
        let over_records = stream.write_records_per_second > 0
            && st.window_records >= stream.write_records_per_second;
        // The first record of a second always fits, so a record larger than
        // the byte limit (on a stream that takes records over 1 MiB) is not
        // refused for ever; the limit holds from the second record on.
        let over_bytes = stream.write_bytes_per_second > 0
            && st.window_records > 0
            && st.window_bytes + size > u64::from(stream.write_bytes_per_second);
        if over_records || over_bytes {
            results.push(Err(throughput_exceeded(&stream, shard)));
            continue;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        if st.last_arrival_ms / 1000 != second || seq == 1 {
            txn.put_record(second_key(stream.id, shard, second), &seq);
        }
        st.last_arrival_ms = now;
        st.window_records += 1;
        st.window_bytes += size;
        txn.put_record(
            record_key(stream.id, shard, seq),
            &StoredRecordRef::V1 {
                data: &r.data,
                partition_key: &r.partition_key,
                arrival_ms: now,
            },
        );
        results.push(Ok(Placed { shard, seq }));
    }
    for (shard, st) in states {
        txn.put_record(state_key(stream.id, shard), &st);
        effects.push(Effect::ShardAppended {
            stream: stream.id,
            shard,
        });
    }
    Ok(results)
}

/// What a read of a shard returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Read {
    /// The stream's name.
    pub stream: String,
    /// (number, record) in order.
    pub records: Vec<(u64, Record)>,
    /// Number to read from next.
    pub next: u64,
    /// The shard's newest record's arrival, ms (0: none yet).
    pub last_arrival_ms: u64,
    /// The newest record's number.
    pub last_seq: u64,
    /// Set when the shard is closed and `next` is past its last record.
    pub children: Option<Vec<ShardMeta>>,
}

/// Reads up to `limit` records (and about `max_bytes`) from number `from`
/// of a shard; a position before the oldest record kept reads from it.
pub fn read(
    state: &dyn StateRead,
    sid: u64,
    shard: u32,
    from: u64,
    limit: usize,
    max_bytes: usize,
) -> ApplyResult<Read> {
    let name = super::name_of(state, sid)?.ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            "the stream of this position no longer exists",
        )
    })?;
    let stream = require(state, &name)?;
    let meta = stream.shard(shard).ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            format!(
                "shard {} of stream {name:?} no longer exists (trimmed after it closed)",
                shard_id(shard)
            ),
        )
    })?;
    let st = load_state(state, sid, shard)?;
    let start = from.max(st.first_seq);
    let mut records = Vec::new();
    let mut bytes = 0;
    let mut next = start;
    for kv in state
        .range(
            Bound::Included(record_key(sid, shard, start)),
            prefix_end(&record_prefix(sid, shard)),
            false,
        )
        .take(limit)
    {
        let (k, v) = kv?;
        let seq = read_u64(&k, record_prefix(sid, shard).len()).unwrap_or(0);
        let StoredRecord::V1(r) = codec::decode(&k, &v)?;
        if !records.is_empty() && bytes + r.data.len() > max_bytes {
            break;
        }
        bytes += r.data.len();
        next = seq + 1;
        records.push((seq, r));
    }
    let children = match meta.closed {
        Some(c) if next > c.last_seq => {
            Some(stream.children_of(shard).into_iter().cloned().collect())
        }
        _ => None,
    };
    Ok(Read {
        stream: name,
        records,
        next,
        last_arrival_ms: st.last_arrival_ms,
        last_seq: st.last_seq(),
        children,
    })
}

/// When record `seq` of a shard arrived, ms, if it is kept.
pub fn arrival_of(
    state: &dyn StateRead,
    sid: u64,
    shard: u32,
    seq: u64,
) -> ApplyResult<Option<u64>> {
    let key = record_key(sid, shard, seq);
    Ok(match state.get(&key)? {
        Some(v) => {
            let StoredRecord::V1(r) = codec::decode(&key, &v)?;
            Some(r.arrival_ms)
        }
        None => None,
    })
}

/// The number of the first record that arrived at or after `at_ms` (or the
/// next number, if none did yet).
pub fn seq_at_time(state: &dyn StateRead, sid: u64, shard: u32, at_ms: u64) -> ApplyResult<u64> {
    let st = load_state(state, sid, shard)?;
    let prefix = second_prefix(sid, shard);
    // The first second that could hold it, then the records of that second.
    let mut candidate = None;
    for kv in state
        .range(
            Bound::Included(second_key(sid, shard, at_ms / 1000)),
            prefix_end(&prefix),
            false,
        )
        .take(1)
    {
        let (k, v) = kv?;
        candidate = Some(codec::decode::<u64>(&k, &v)?);
    }
    let Some(mut seq) = candidate else {
        return Ok(st.next_seq);
    };
    seq = seq.max(st.first_seq);
    for kv in state.range(
        Bound::Included(record_key(sid, shard, seq)),
        prefix_end(&record_prefix(sid, shard)),
        false,
    ) {
        let (k, v) = kv?;
        let StoredRecord::V1(r) = codec::decode(&k, &v)?;
        if r.arrival_ms >= at_ms {
            return Ok(read_u64(&k, record_prefix(sid, shard).len()).unwrap_or(seq));
        }
    }
    Ok(st.next_seq)
}

/// Drops a shard's records past the retention window, at most
/// [`STEP_LIMIT`]; a closed shard with nothing left is removed from the map
/// once its retention has passed. Returns (records dropped, more to do).
pub fn trim(txn: &mut Txn<'_>, ctx: &Ctx, name: &str, shard: u32) -> ApplyResult<(u64, bool)> {
    let mut stream = require(txn, name)?;
    let Some(meta) = stream.shard(shard).cloned() else {
        return Ok((0, false));
    };
    let sid = stream.id;
    let boundary = ctx.now_ms.saturating_sub(stream.retention_ms());
    let mut st = load_state(txn, sid, shard)?;
    // Every second before the boundary's second is wholly past it.
    let cut_second = boundary / 1000;
    let prefix = second_prefix(sid, shard);
    let mut cut = st.next_seq;
    for kv in txn
        .range(
            Bound::Included(second_key(sid, shard, cut_second)),
            prefix_end(&prefix),
            false,
        )
        .take(1)
    {
        let (k, v) = kv?;
        cut = codec::decode::<u64>(&k, &v)?;
    }
    let mut dropped = 0u64;
    let stop = cut.min(st.first_seq + STEP_LIMIT as u64);
    let doomed: Vec<Vec<u8>> = txn
        .range(
            Bound::Included(record_key(sid, shard, st.first_seq)),
            Bound::Excluded(record_key(sid, shard, stop)),
            false,
        )
        .map(|kv| kv.map(|(k, _)| k))
        .collect::<Result<_, _>>()?;
    for k in doomed {
        txn.delete(k);
        dropped += 1;
    }
    let more = stop < cut;
    if stop > st.first_seq {
        st.first_seq = stop;
    }
    // The per-second index of the trimmed seconds goes only once their
    // records are all gone: it is what tells the leader a trim is due.
    let old_seconds: Vec<Vec<u8>> = if more {
        Vec::new()
    } else {
        txn.range(
            Bound::Included(prefix.clone()),
            Bound::Excluded(second_key(sid, shard, cut_second)),
            false,
        )
        .take(STEP_LIMIT)
        .map(|kv| kv.map(|(k, _)| k))
        .collect::<Result<_, _>>()?
    };
    for k in old_seconds {
        txn.delete(k);
    }
    let empty = st.first_seq > st.last_seq();
    let expired_closed = meta
        .closed
        .is_some_and(|c| c.at_ms + stream.retention_ms() <= ctx.now_ms);
    if empty && expired_closed {
        stream.shards.retain(|s| s.index != shard);
        super::save(txn, &stream);
        txn.delete(state_key(sid, shard));
    } else {
        txn.put_record(state_key(sid, shard), &st);
    }
    Ok((dropped, more))
}

/// Whether a shard has records past retention, or is a closed, empty,
/// expired shard to drop (a leader-side, read-only look).
pub fn needs_trim(
    state: &dyn StateRead,
    stream: &Stream,
    shard: &ShardMeta,
    now_ms: u64,
) -> ApplyResult<bool> {
    let boundary = now_ms.saturating_sub(stream.retention_ms());
    let st = load_state(state, stream.id, shard.index)?;
    let prefix = second_prefix(stream.id, shard.index);
    let first_second = state
        .first_with_prefix(&prefix)?
        .and_then(|(k, _)| read_u64(&k, prefix.len()));
    let old_records = first_second.is_some_and(|s| s < boundary / 1000);
    let droppable = shard
        .closed
        .is_some_and(|c| c.at_ms + stream.retention_ms() <= now_ms)
        && st.first_seq > st.last_seq();
    Ok(old_records || droppable)
}

/// Deletes up to [`STEP_LIMIT`] keys of a deleted stream; returns true when
/// nothing is left.
pub fn collect(txn: &mut Txn<'_>, sid: u64) -> ApplyResult<bool> {
    // Only a deleted stream's data, which its marker names: a collect of any
    // other id (a live stream's) finds nothing to do.
    if txn.get(&super::gc_key(sid))?.is_none() {
        return Ok(true);
    }
    let prefixes = ["rec", "rts", "shard"].map(|space| Key::new(space).u64(sid).build());
    if !txn.delete_prefixes(&prefixes, STEP_LIMIT)? {
        return Ok(false);
    }
    txn.delete(super::gc_key(sid));
    Ok(true)
}

/// Deleted streams waiting to be collected.
pub fn garbage(state: &dyn StateRead, limit: usize) -> ApplyResult<Vec<u64>> {
    let prefix = super::gc_prefix();
    let mut out = Vec::new();
    for kv in state.scan_prefix(&prefix).take(limit) {
        let (k, _) = kv?;
        out.push(read_u64(&k, prefix.len()).unwrap_or(0));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A put encodes its borrowed record exactly as the owned one, which
    /// is what every read decodes.
    #[test]
    fn a_borrowed_record_encodes_as_the_stored_one() {
        for (data, key, at) in [
            (&b""[..], "k", 0),
            (&[0u8, 255, 7][..], "p\u{e9}", u64::MAX),
        ] {
            let borrowed = codec::encode(&StoredRecordRef::V1 {
                data,
                partition_key: key,
                arrival_ms: at,
            });
            let record = Record {
                data: data.to_vec(),
                partition_key: key.into(),
                arrival_ms: at,
            };
            assert_eq!(borrowed, codec::encode(&StoredRecord::V1(record.clone())));
            let StoredRecord::V1(back) = codec::decode(b"k", &borrowed).unwrap();
            assert_eq!(back, record);
        }
    }

    /// The hash key travels in the command: the partition key's MD5 unless
    /// the request named one, the same however the record was made.
    #[test]
    fn a_record_carries_the_hash_key_that_places_it() {
        let by_key = NewRecord::new("", b"d".to_vec(), "user-7".into(), "").unwrap();
        assert_eq!(by_key.hash_key, hashing::hash_key("user-7"));
        assert_eq!(NewRecord::keyed(b"d".to_vec(), "user-7".into()), by_key);
        let explicit = NewRecord::new("", b"d".to_vec(), "user-7".into(), "42").unwrap();
        assert_eq!(explicit.hash_key, 42);
        let err = NewRecord::new("r", b"d".to_vec(), "k".into(), "x").unwrap_err();
        assert!(err.to_string().contains("explicit_hash_key"), "{err}");
    }

    #[test]
    fn record_keys_parse_back() {
        let key = record_key(7, 3, 1 << 40);
        assert_eq!(parse_record_key(&key), Some((7, 3, 1 << 40)));
        assert_eq!(parse_record_key(&record_prefix(7, 3)), None);
        assert_eq!(parse_record_key(b"rts/0123456789abcdef01234567"), None);
    }
}
