//! Shard iterators and starting positions.
//!
//! An iterator names a position in one shard of one stream (by id, so a
//! stream deleted and created again under the name does not match; and by
//! name, so the guard can authorise a read by it) and when it was issued; it
//! is valid for 5 minutes. It is opaque to clients: the API seals its fields
//! with a MAC keyed by the cluster key (`api::streams`), so one that was
//! altered, made up or kept past its lifetime fails cleanly.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// How long an iterator is valid.
pub const LIFETIME_MS: u64 = 5 * 60 * 1000;

/// Where an iterator points.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardIterator {
    /// Stream id.
    pub stream: u64,
    /// Shard index.
    pub shard: u32,
    /// Number of the next record to read.
    pub next: u64,
    /// When it was issued, ms (the issuing node's clock).
    pub issued_ms: u64,
    /// The stream's name.
    pub stream_name: String,
}

impl ShardIterator {
    /// The iterator's fields as bytes, to seal.
    pub fn fields(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(28 + self.stream_name.len());
        b.extend_from_slice(&self.stream.to_be_bytes());
        b.extend_from_slice(&self.shard.to_be_bytes());
        b.extend_from_slice(&self.next.to_be_bytes());
        b.extend_from_slice(&self.issued_ms.to_be_bytes());
        b.extend_from_slice(self.stream_name.as_bytes());
        b
    }

    /// An iterator from sealed fields (`None` if they do not make one).
    pub fn from_fields(b: &[u8]) -> Option<ShardIterator> {
        if b.len() < 28 {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(ShardIterator {
            stream: u64_at(0),
            shard: u32::from_be_bytes(b[8..12].try_into().expect("4 bytes")),
            next: u64_at(12),
            issued_ms: u64_at(20),
            stream_name: String::from_utf8(b[28..].to_vec()).ok()?,
        })
    }

    /// Refuses an iterator past its lifetime at `now_ms`.
    pub fn check_fresh(&self, field: &str, now_ms: u64) -> Result<(), DomainError> {
        if now_ms > self.issued_ms + LIFETIME_MS {
            return Err(DomainError::invalid_with_code(
                "ExpiredIteratorException",
                field,
                format!(
                    "expired {} s ago (iterators last 5 minutes); get a new one",
                    (now_ms - self.issued_ms - LIFETIME_MS) / 1000
                ),
            ));
        }
        Ok(())
    }
}

/// The error for text that is not an iterator this cluster issued.
pub fn not_an_iterator(field: &str) -> DomainError {
    super::invalid(field, "is not a shard iterator this cluster issued")
}

/// A starting position, as GetShardIterator and SubscribeToShard take it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Position {
    /// The oldest record kept.
    TrimHorizon,
    /// After the newest record.
    Latest,
    /// At this record number.
    At(u64),
    /// After this record number.
    After(u64),
    /// The first record that arrived at or after this time, ms.
    AtTimestamp(u64),
}

impl Position {
    /// Parses an iterator type and its argument for shard `shard`.
    pub fn parse(
        field: &str,
        kind: &str,
        sequence_number: &str,
        timestamp_ms: i64,
        shard: u32,
    ) -> Result<Position, DomainError> {
        let seq = || -> Result<u64, DomainError> {
            let (seq, of) =
                super::parse_sequence_number("starting_sequence_number", sequence_number)?;
            if of != shard {
                return Err(super::invalid(
                    "starting_sequence_number",
                    format!(
                        "belongs to shard {}, not {}",
                        super::shard_id(of),
                        super::shard_id(shard)
                    ),
                ));
            }
            Ok(seq)
        };
        Ok(match kind {
            "TRIM_HORIZON" => Position::TrimHorizon,
            "LATEST" => Position::Latest,
            "AT_SEQUENCE_NUMBER" => Position::At(seq()?),
            "AFTER_SEQUENCE_NUMBER" => Position::After(seq()?),
            "AT_TIMESTAMP" => {
                if timestamp_ms < 0 {
                    return Err(super::invalid("timestamp", "must not be negative"));
                }
                Position::AtTimestamp(timestamp_ms as u64)
            }
            other => {
                return Err(super::invalid(
                    field,
                    format!("must be TRIM_HORIZON, LATEST, AT_SEQUENCE_NUMBER, AFTER_SEQUENCE_NUMBER or AT_TIMESTAMP, got {other:?}"),
                ))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iterator_fields_round_trip_and_expire() {
        let it = ShardIterator {
            stream: 2,
            shard: 3,
            next: 44,
            issued_ms: 1_000,
            stream_name: "clicks".into(),
        };
        assert_eq!(ShardIterator::from_fields(&it.fields()).unwrap(), it);
        assert!(ShardIterator::from_fields(&it.fields()[..20]).is_none());
        assert!(it.check_fresh("i", 1_000 + LIFETIME_MS).is_ok());
        let expired = it.check_fresh("i", 1_001 + LIFETIME_MS).unwrap_err();
        assert_eq!(expired.code, "ExpiredIteratorException");
    }

    #[test]
    fn positions_parse_and_check_the_shard() {
        let s = crate::streams::sequence_number(5, 2);
        assert_eq!(
            Position::parse("t", "AT_SEQUENCE_NUMBER", &s, 0, 2).unwrap(),
            Position::At(5)
        );
        assert_eq!(
            Position::parse("t", "AFTER_SEQUENCE_NUMBER", &s, 0, 2).unwrap(),
            Position::After(5)
        );
        assert!(Position::parse("t", "AT_SEQUENCE_NUMBER", &s, 0, 3).is_err());
        assert_eq!(
            Position::parse("t", "AT_TIMESTAMP", "", 77, 0).unwrap(),
            Position::AtTimestamp(77)
        );
        assert_eq!(
            Position::parse("t", "LATEST", "", 0, 0).unwrap(),
            Position::Latest
        );
        assert_eq!(
            Position::parse("shard_iterator_type", "NEWEST", "", 0, 0)
                .unwrap_err()
                .field
                .as_deref(),
            Some("shard_iterator_type")
        );
    }
}
