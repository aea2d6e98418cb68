//! The stream operations: the commands that change streams and their
//! shards (what each returns and how it applies, through the modules of
//! [`crate::streams`]) and the reads of them.

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::operation::operations;
use crate::streams::iterator::Position;
use crate::streams::records::Read;
use crate::streams::records::{self, NewRecord, Placed};
use crate::streams::Stream;
use crate::streams::{self, shards, ConsumerMeta, CreateStream};

operations! {
    impl CreateStream applies -> bool = |op, txn, ctx, _| streams::create(txn, ctx, op);

    /// Delete a stream (its records are collected in the background).
    pub struct DeleteStream {
        /// Stream name.
        pub name: String,
    }
    applies -> () = |txn, _, _| streams::delete(txn, name);

    /// Put records (PutRecord, PutRecords).
    pub struct PutRecords {
        /// Stream name.
        pub stream: String,
        /// The records.
        pub records: Vec<NewRecord>,
    }
    size 32 + records.iter().map(|r| r.size() + 32).sum::<usize>();
    applies -> Vec<Result<Placed, DomainError>> = |txn, ctx, effects| {
        records::put(txn, ctx, stream, records, effects)
    };

    /// Increase or decrease the retention period.
    pub struct SetStreamRetention {
        /// Stream name.
        pub name: String,
        /// Hours.
        pub hours: u32,
        /// IncreaseStreamRetentionPeriod (else Decrease...).
        pub increase: bool,
    }
    applies -> () = |txn, _, _| streams::set_retention(txn, name, *hours, *increase);

    /// Split a shard.
    pub struct SplitShard {
        /// Stream name.
        pub name: String,
        /// Shard index.
        pub shard: u32,
        /// First hash key of the second child.
        pub new_start: u128,
    }
    applies -> [u32; 2] = |txn, ctx, effects| {
        shards::split(txn, ctx, name, *shard, *new_start, effects)
    };

    /// Merge two adjacent shards.
    pub struct MergeShards {
        /// Stream name.
        pub name: String,
        /// Shard index.
        pub shard: u32,
        /// The adjacent shard's index.
        pub adjacent: u32,
    }
    applies -> u32 = |txn, ctx, effects| shards::merge(txn, ctx, name, *shard, *adjacent, effects);

    /// Rescale to a number of uniform shards.
    pub struct UpdateShardCount {
        /// Stream name.
        pub name: String,
        /// Target open shards.
        pub target: u32,
    }
    applies -> u32 = |txn, ctx, effects| shards::update_count(txn, ctx, name, *target, effects);

    /// Register an enhanced fan-out consumer.
    pub struct RegisterConsumer {
        /// Stream name.
        pub name: String,
        /// Consumer name.
        pub consumer: String,
    }
    applies -> ConsumerMeta = |txn, ctx, _| streams::register_consumer(txn, ctx, name, consumer);

    /// Deregister a consumer.
    pub struct DeregisterConsumer {
        /// Stream name.
        pub name: String,
        /// Consumer name.
        pub consumer: String,
    }
    applies -> () = |txn, _, _| streams::deregister_consumer(txn, name, consumer);
}

/// Drop a shard's records past retention (the leader's schedule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrimShard {
    /// Stream name.
    pub name: String,
    /// Shard index.
    pub shard: u32,
}

/// What a [`TrimShard`] step did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trimmed {
    /// Records dropped.
    pub dropped: u64,
    /// More are due now.
    pub more: bool,
}

operations! {
    impl TrimShard applies -> Trimmed = |op, txn, ctx, _| {
        let TrimShard { name, shard } = op;
        let (dropped, more) = records::trim(txn, ctx, name, *shard)?;
        Ok(Trimmed { dropped, more })
    };

    /// Delete a bounded part of a deleted stream's records.
    pub struct CollectStream {
        /// Stream id.
        pub sid: u64,
    }
    applies -> bool = |txn, _, _| records::collect(txn, *sid);

    /// A stream's record (settings, shard map, consumers).
    pub struct DescribeStream {
        /// Stream name.
        pub name: String,
    }
    reads -> Stream = |state| streams::require(state, name);

    /// A page of stream names.
    pub struct ListStreams {
        /// Continue after this name.
        pub after: Option<String>,
        /// Page size.
        pub limit: u32,
    }
    reads -> (Vec<String>, bool) = |state| {
        streams::list(state, after.as_deref(), *limit as usize)
    };

    /// Records of a shard from a position.
    pub struct ReadShard {
        /// Stream id.
        pub stream: u64,
        /// Shard index.
        pub shard: u32,
        /// First record number wanted.
        pub from: u64,
        /// Most records.
        pub limit: u32,
        /// About this many bytes at most.
        pub max_bytes: u64,
    }
    reads -> Read = |state| {
        records::read(
            state,
            *stream,
            *shard,
            *from,
            *limit as usize,
            *max_bytes as usize,
        )
    };
}

/// Where a starting position points in a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvePosition {
    /// Stream name.
    pub name: String,
    /// Shard index.
    pub shard: u32,
    /// The position.
    pub position: Position,
}

/// Where a [`ResolvePosition`] points: the stream's id and a record number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// Stream id.
    pub stream: u64,
    /// Record number.
    pub seq: u64,
}

operations! {
    impl ResolvePosition reads -> Resolved = |op, state| {
        let ResolvePosition {
            name,
            shard,
            position,
        } = op;
        let s = streams::require(state, name)?;
        if s.shard(*shard).is_none() {
            return Err(crate::error::DomainError::not_found(
                "ResourceNotFoundException",
                format!(
                    "shard_id: stream {name:?} has no shard {}",
                    streams::shard_id(*shard)
                ),
            )
            .into());
        }
        let st = records::load_state(state, s.id, *shard)?;
        // A number the shard has not issued would silently skip the
        // records written before it: refuse it, as Kinesis does.
        let never_issued = |n: u64| {
            streams::invalid(
                "starting_sequence_number",
                format!(
                    "{} was never issued: shard {} has issued up to {}",
                    streams::sequence_number(n, *shard),
                    streams::shard_id(*shard),
                    streams::sequence_number(st.last_seq(), *shard)
                ),
            )
        };
        let seq = match position {
            Position::TrimHorizon => st.first_seq,
            Position::Latest => st.next_seq,
            Position::At(n) if *n == 0 || *n > st.last_seq() => return Err(never_issued(*n).into()),
            Position::At(n) => *n,
            Position::After(n) if *n > st.last_seq() => return Err(never_issued(*n).into()),
            Position::After(n) => n + 1,
            Position::AtTimestamp(ms) => records::seq_at_time(state, s.id, *shard, *ms)?,
        };
        Ok(Resolved { stream: s.id, seq })
    };
}
