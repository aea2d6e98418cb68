//! Streams: Kinesis-style sharded, ordered, replayable logs.
//!
//! Pure domain logic, like [`crate::queues`]: commands and queries over a
//! store, the time from the state machine's clock.
//!
//! | key | value |
//! | --- | --- |
//! | `stream/{name}` | [`StoredStream`]: settings and the shard map |
//! | `sname/{id}` | the stream's name |
//! | `shard/{id}/{index}` | [`records::ShardState`]: sequence counter, trim point, write window |
//! | `rec/{id}/{index}/{seq}` | a record |
//! | `rts/{id}/{index}/{second}` | first sequence number written in that second |
//! | `sgc/{id}` | a deleted stream to collect |
//! | `seq/stream-id` | next stream id |

pub mod hashing;
pub mod invariants;
pub mod iterator;
pub mod operations;
pub mod records;
#[cfg(test)]
mod scenarios;
pub mod shards;

pub use operations::*;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{ApplyResult, DomainError};
use crate::store::keys::{self, Key};
use crate::store::{StateRead, Txn};

pub use crate::limits::streams::{NAME_MAX, RECORD_BYTES_MAX};
/// Most shards a stream may have open.
pub const SHARDS_MAX: u32 = 500;
/// Retention range, hours.
pub const RETENTION_MIN_HOURS: u32 = 24;
/// Retention range, hours.
pub const RETENTION_MAX_HOURS: u32 = 8760;
/// Default largest record.
pub const RECORD_BYTES_DEFAULT: u32 = 1_048_576;
/// Default per-shard write limit, records per second.
pub const WRITE_RECORDS_DEFAULT: u32 = 1000;
/// Default per-shard write limit, bytes per second.
pub const WRITE_BYTES_DEFAULT: u32 = 1_048_576;
/// Most registered consumers per stream.
pub const CONSUMERS_MAX: usize = 20;

/// Bad input to a stream call: `INVALID_ARGUMENT` with Kinesis's code,
/// naming the field and the rule.
pub fn invalid(field: impl Into<String>, rule: impl Into<String>) -> DomainError {
    DomainError::invalid_with_code("InvalidArgumentException", field, rule)
}

/// Checks a stream or consumer name: 1-128 characters of `[A-Za-z0-9_.-]`.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    if crate::names::is_valid(name, NAME_MAX, "_.-") {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be 1-128 characters of A-Z, a-z, 0-9, '_', '.' and '-', got {name:?}"),
        ))
    }
}

/// A shard as the stream's map lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardMeta {
    /// Number in the shard id (`shardId-000000000003`); never reused.
    pub index: u32,
    /// First hash key of its range.
    pub start_hash: u128,
    /// Last hash key of its range.
    pub end_hash: u128,
    /// Shards it was split or merged from; readers finish them first.
    pub parents: Vec<u32>,
    /// Set when the shard no longer takes records.
    pub closed: Option<Closed>,
}

/// When and where a shard was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Closed {
    /// Its last sequence number (0 when it never got a record).
    pub last_seq: u64,
    /// When, ms.
    pub at_ms: u64,
}

impl ShardMeta {
    /// True while it takes records.
    pub fn is_open(&self) -> bool {
        self.closed.is_none()
    }

    /// Whether the hash key falls in its range.
    pub fn holds(&self, hash: u128) -> bool {
        (self.start_hash..=self.end_hash).contains(&hash)
    }
}

/// A registered (enhanced fan-out) consumer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsumerMeta {
    /// Name.
    pub name: String,
    /// When registered, ms.
    pub created_ms: u64,
}

/// A stream as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stream {
    /// Name.
    pub name: String,
    /// Id, never reused.
    pub id: u64,
    /// Creation, ms.
    pub created_ms: u64,
    /// Retention, hours.
    pub retention_hours: u32,
    /// Largest record, bytes.
    pub max_record_bytes: u32,
    /// Per-shard write limit, records per second (0: none).
    pub write_records_per_second: u32,
    /// Per-shard write limit, bytes per second (0: none).
    pub write_bytes_per_second: u32,
    /// Every shard still holding records, open or closed, by index.
    pub shards: Vec<ShardMeta>,
    /// Index of the next shard created.
    pub next_shard_index: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Registered consumers.
    pub consumers: Vec<ConsumerMeta>,
}

impl Stream {
    /// The shard with `index`.
    pub fn shard(&self, index: u32) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.index == index)
    }

    /// The open shard holding `hash`.
    pub fn open_shard_for(&self, hash: u128) -> Option<&ShardMeta> {
        self.shards.iter().find(|s| s.is_open() && s.holds(hash))
    }

    /// Open shards.
    pub fn open_shards(&self) -> impl Iterator<Item = &ShardMeta> {
        self.shards.iter().filter(|s| s.is_open())
    }

    /// Shards whose parents include `index`.
    pub fn children_of(&self, index: u32) -> Vec<&ShardMeta> {
        self.shards
            .iter()
            .filter(|s| s.parents.contains(&index))
            .collect()
    }

    /// Retention, ms.
    pub fn retention_ms(&self) -> u64 {
        u64::from(self.retention_hours) * 3_600_000
    }
}

crate::tags::has_tags!(Stream, invalid_tag);

/// Versioned envelope of [`Stream`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredStream {
    /// Version 1.
    V1(Stream),
}

/// `shardId-000000000003` for index 3.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

/// The index in a shard id.
pub fn parse_shard_id(field: &str, id: &str) -> Result<u32, DomainError> {
    id.strip_prefix("shardId-")
        .filter(|d| d.len() == 12)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| {
            invalid(
                field,
                format!("{id:?} is not a shard id (shardId- and 12 digits)"),
            )
        })
}

/// A record's sequence number as Kinesis prints it: 26 decimal digits,
/// the sequence in the shard then the shard index, so it increases within a
/// shard and names its shard.
pub fn sequence_number(seq: u64, shard: u32) -> String {
    format!("{seq:020}{shard:06}")
}

/// The (sequence, shard index) of a sequence number.
pub fn parse_sequence_number(field: &str, s: &str) -> Result<(u64, u32), DomainError> {
    let bad = || {
        invalid(
            field,
            format!("{s:?} is not a sequence number this cluster issued (26 digits)"),
        )
    };
    if s.len() != 26 || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let seq = s[..20].parse().map_err(|_| bad())?;
    let shard = s[20..].parse().map_err(|_| bad())?;
    Ok((seq, shard))
}

fn stream_key(name: &str) -> Vec<u8> {
    Key::new("stream").str(name).build()
}

fn name_key(id: u64) -> Vec<u8> {
    Key::new("sname").u64(id).build()
}

fn next_id_key() -> Vec<u8> {
    Key::new("seq").str("stream-id").build()
}

/// `sgc/{id}`
pub fn gc_key(id: u64) -> Vec<u8> {
    Key::new("sgc").u64(id).build()
}

/// Prefix of every `sgc/` marker.
pub fn gc_prefix() -> Vec<u8> {
    Key::new("sgc").build()
}

/// The error for a missing stream.
pub fn not_found(name: &str) -> DomainError {
    DomainError::not_found(
        "ResourceNotFoundException",
        format!("stream {name:?} does not exist"),
    )
}

/// Reads a stream.
pub fn load(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Stream>> {
    Ok(crate::store::record_at(state, &stream_key(name))?.map(|StoredStream::V1(s)| s))
}

/// Reads a stream or fails with `ResourceNotFoundException`.
pub fn require(state: &dyn StateRead, name: &str) -> ApplyResult<Stream> {
    load(state, name)?.ok_or_else(|| not_found(name).into())
}

/// The name of the stream with id `id`.
pub fn name_of(state: &dyn StateRead, id: u64) -> ApplyResult<Option<String>> {
    Ok(crate::store::record_at(state, &name_key(id))?)
}

/// Writes a stream.
pub fn save(txn: &mut Txn<'_>, s: &Stream) {
    txn.put_record(stream_key(&s.name), &StoredStream::V1(s.clone()));
}

/// The `CreateStream` command, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateStream {
    /// Name.
    pub name: String,
    /// Shards, 1-500.
    pub shard_count: u32,
    /// Retention, hours.
    pub retention_hours: u32,
    /// Largest record, bytes.
    pub max_record_bytes: u32,
    /// Per-shard records per second (0: no limit).
    pub write_records_per_second: u32,
    /// Per-shard bytes per second (0: no limit).
    pub write_bytes_per_second: u32,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

fn in_range(field: &str, v: i64, min: i64, max: i64) -> Result<u32, DomainError> {
    if (min..=max).contains(&v) {
        Ok(v as u32)
    } else {
        Err(invalid(
            field,
            format!("must be from {min} to {max}, got {v}"),
        ))
    }
}

/// The Kinesis error for a broken tag rule.
pub fn invalid_tag(field: String, rule: String) -> DomainError {
    invalid(field, rule)
}

impl CreateStream {
    /// Validates a request at the edge; unset settings take their defaults.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        shard_count: i32,
        retention_hours: Option<i32>,
        max_record_bytes: Option<i32>,
        write_records_per_second: Option<i32>,
        write_bytes_per_second: Option<i32>,
        tags: BTreeMap<String, String>,
    ) -> Result<Self, DomainError> {
        validate_name("stream_name", name)?;
        crate::tags::validate(&tags, invalid_tag)?;
        Ok(CreateStream {
            name: name.to_string(),
            shard_count: in_range("shard_count", shard_count.into(), 1, SHARDS_MAX.into())?,
            retention_hours: match retention_hours {
                None => RETENTION_MIN_HOURS,
                Some(h) => in_range(
                    "retention_period_hours",
                    h.into(),
                    RETENTION_MIN_HOURS.into(),
                    RETENTION_MAX_HOURS.into(),
                )?,
            },
            max_record_bytes: match max_record_bytes {
                None => RECORD_BYTES_DEFAULT,
                Some(b) => in_range(
                    "max_record_size_in_bytes",
                    b.into(),
                    1024,
                    RECORD_BYTES_MAX.into(),
                )?,
            },
            write_records_per_second: match write_records_per_second {
                None => WRITE_RECORDS_DEFAULT,
                Some(v) => in_range("shard_write_records_per_second", v.into(), 0, 1_000_000)?,
            },
            write_bytes_per_second: match write_bytes_per_second {
                None => WRITE_BYTES_DEFAULT,
                Some(v) => in_range("shard_write_bytes_per_second", v.into(), 0, i32::MAX.into())?,
            },
            tags,
        })
    }
}

/// Applies `CreateStream`: creates it, or confirms an identical one exists
/// (`false`), or fails with `ResourceInUseException`.
pub fn create(txn: &mut Txn<'_>, ctx: &Ctx, c: &CreateStream) -> ApplyResult<bool> {
    if let Some(existing) = load(txn, &c.name)? {
        let same = existing.open_shards().count() as u32 == c.shard_count
            && existing.retention_hours == c.retention_hours
            && existing.max_record_bytes == c.max_record_bytes
            && existing.write_records_per_second == c.write_records_per_second
            && existing.write_bytes_per_second == c.write_bytes_per_second;
        if same {
            return Ok(false);
        }
        return Err(DomainError::already_exists(
            "ResourceInUseException",
            format!("stream {:?} already exists with other settings", c.name),
        )
        .into());
    }
    let id = txn.next_id(next_id_key())?;
    let shards = hashing::uniform_ranges(c.shard_count)
        .into_iter()
        .enumerate()
        .map(|(i, (start_hash, end_hash))| ShardMeta {
            index: i as u32,
            start_hash,
            end_hash,
            parents: Vec::new(),
            closed: None,
        })
        .collect();
    let stream = Stream {
        name: c.name.clone(),
        id,
        created_ms: ctx.now_ms,
        retention_hours: c.retention_hours,
        max_record_bytes: c.max_record_bytes,
        write_records_per_second: c.write_records_per_second,
        write_bytes_per_second: c.write_bytes_per_second,
        shards,
        next_shard_index: c.shard_count,
        tags: c.tags.clone(),
        consumers: Vec::new(),
    };
    txn.put_record(name_key(id), &c.name);
    save(txn, &stream);
    Ok(true)
}

/// Applies `DeleteStream`: the stream goes at once, its records are
/// collected in the background.
pub fn delete(txn: &mut Txn<'_>, name: &str) -> ApplyResult<()> {
    let s = require(txn, name)?;
    txn.put(gc_key(s.id), Vec::new());
    txn.delete(name_key(s.id));
    txn.delete(stream_key(name));
    Ok(())
}

/// Names in order after `after`, at most `limit`; and whether more follow.
pub fn list(
    state: &dyn StateRead,
    after: Option<&str>,
    limit: usize,
) -> ApplyResult<(Vec<String>, bool)> {
    Ok(keys::names_after(state, "stream", after, limit)?)
}

/// Every stream name (the leader's housekeeper walks them).
pub fn all_names(state: &dyn StateRead) -> ApplyResult<Vec<String>> {
    Ok(list(state, None, usize::MAX)?.0)
}

/// Applies a retention change; `increase` says which of the two actions.
pub fn set_retention(txn: &mut Txn<'_>, name: &str, hours: u32, increase: bool) -> ApplyResult<()> {
    let mut s = require(txn, name)?;
    let ok = if increase {
        hours >= s.retention_hours
    } else {
        hours <= s.retention_hours
    };
    if !ok {
        return Err(invalid(
            "retention_period_hours",
            format!(
                "must be {} the current {} hours to {} it",
                if increase { "at least" } else { "at most" },
                s.retention_hours,
                if increase { "increase" } else { "decrease" }
            ),
        )
        .into());
    }
    s.retention_hours = hours;
    save(txn, &s);
    Ok(())
}

/// Registers a consumer; registering one that exists returns it.
pub fn register_consumer(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    name: &str,
    consumer: &str,
) -> ApplyResult<ConsumerMeta> {
    let mut s = require(txn, name)?;
    if let Some(c) = s.consumers.iter().find(|c| c.name == consumer) {
        return Ok(c.clone());
    }
    if s.consumers.len() >= CONSUMERS_MAX {
        return Err(DomainError::limit(
            "LimitExceededException",
            format!("stream {name:?} already has {CONSUMERS_MAX} consumers"),
        )
        .into());
    }
    let c = ConsumerMeta {
        name: consumer.to_string(),
        created_ms: ctx.now_ms,
    };
    s.consumers.push(c.clone());
    save(txn, &s);
    Ok(c)
}

/// Deregisters a consumer.
pub fn deregister_consumer(txn: &mut Txn<'_>, name: &str, consumer: &str) -> ApplyResult<()> {
    let mut s = require(txn, name)?;
    let before = s.consumers.len();
    s.consumers.retain(|c| c.name != consumer);
    if s.consumers.len() == before {
        return Err(DomainError::not_found(
            "ResourceNotFoundException",
            format!("consumer_name: stream {name:?} has no consumer {consumer:?}"),
        )
        .into());
    }
    save(txn, &s);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_ids_and_sequence_numbers_round_trip() {
        assert!(validate_name("stream_name", "clicks.v2_raw-1").is_ok());
        for bad in ["", "has space", "ü", &"n".repeat(129)] {
            assert_eq!(
                validate_name("stream_name", bad)
                    .unwrap_err()
                    .field
                    .as_deref(),
                Some("stream_name")
            );
        }
        assert_eq!(shard_id(3), "shardId-000000000003");
        assert_eq!(
            parse_shard_id("shard_id", "shardId-000000000003").unwrap(),
            3
        );
        assert!(parse_shard_id("shard_id", "shard-3").is_err());
        let s = sequence_number(42, 7);
        assert_eq!(s.len(), 26);
        assert_eq!(parse_sequence_number("n", &s).unwrap(), (42, 7));
        assert!(sequence_number(42, 7) < sequence_number(43, 7));
        assert!(parse_sequence_number("n", "12").is_err());
    }

    #[test]
    fn create_stream_validates_every_setting() {
        let ok =
            |count, ret, rec| CreateStream::new("s", count, ret, rec, None, None, BTreeMap::new());
        assert!(ok(1, None, None).is_ok());
        assert!(ok(500, Some(8760), Some(10_485_760)).is_ok());
        for (r, field) in [
            (ok(0, None, None), "shard_count"),
            (ok(501, None, None), "shard_count"),
            (ok(1, Some(23), None), "retention_period_hours"),
            (ok(1, Some(8761), None), "retention_period_hours"),
            (ok(1, None, Some(10_485_761)), "max_record_size_in_bytes"),
        ] {
            assert_eq!(r.unwrap_err().field.as_deref(), Some(field));
        }
    }
}
