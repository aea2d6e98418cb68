//! The stream commands: what each changes, what it returns and how it
//! applies (through the modules of [`crate::streams`]).

use serde::{Deserialize, Serialize};

use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::operation::Operation;
use crate::store::Txn;
use crate::streams::records::{self, NewRecord, Placed};
use crate::streams::{self, shards, ConsumerMeta, CreateStream};

impl Operation for CreateStream {
    type Output = bool;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        streams::create(txn, ctx, self)
    }
}

/// Delete a stream (its records are collected in the background).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeleteStream {
    /// Stream name.
    pub name: String,
}

impl Operation for DeleteStream {
    type Output = ();

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let DeleteStream { name } = self;
        streams::delete(txn, name)
    }
}

/// Put records (PutRecord, PutRecords).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PutRecords {
    /// Stream name.
    pub stream: String,
    /// The records.
    pub records: Vec<NewRecord>,
}

impl Operation for PutRecords {
    type Output = Vec<Result<Placed, DomainError>>;

    fn size_hint(&self) -> usize {
        32 + self.records.iter().map(|r| r.size() + 32).sum::<usize>()
    }

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let PutRecords { stream, records } = self;
        records::put(txn, ctx, stream, records, effects)
    }
}

/// Increase or decrease the retention period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetStreamRetention {
    /// Stream name.
    pub name: String,
    /// Hours.
    pub hours: u32,
    /// IncreaseStreamRetentionPeriod (else Decrease...).
    pub increase: bool,
}

impl Operation for SetStreamRetention {
    type Output = ();

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let SetStreamRetention {
            name,
            hours,
            increase,
        } = self;
        streams::set_retention(txn, name, *hours, *increase)
    }
}

/// Split a shard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitShard {
    /// Stream name.
    pub name: String,
    /// Shard index.
    pub shard: u32,
    /// First hash key of the second child.
    pub new_start: u128,
}

impl Operation for SplitShard {
    type Output = [u32; 2];

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let SplitShard {
            name,
            shard,
            new_start,
        } = self;
        shards::split(txn, ctx, name, *shard, *new_start, effects)
    }
}

/// Merge two adjacent shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MergeShards {
    /// Stream name.
    pub name: String,
    /// Shard index.
    pub shard: u32,
    /// The adjacent shard's index.
    pub adjacent: u32,
}

impl Operation for MergeShards {
    type Output = u32;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let MergeShards {
            name,
            shard,
            adjacent,
        } = self;
        shards::merge(txn, ctx, name, *shard, *adjacent, effects)
    }
}

/// Rescale to a number of uniform shards.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UpdateShardCount {
    /// Stream name.
    pub name: String,
    /// Target open shards.
    pub target: u32,
}

impl Operation for UpdateShardCount {
    type Output = u32;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let UpdateShardCount { name, target } = self;
        shards::update_count(txn, ctx, name, *target, effects)
    }
}

/// Register an enhanced fan-out consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RegisterConsumer {
    /// Stream name.
    pub name: String,
    /// Consumer name.
    pub consumer: String,
}

impl Operation for RegisterConsumer {
    type Output = ConsumerMeta;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let RegisterConsumer { name, consumer } = self;
        streams::register_consumer(txn, ctx, name, consumer)
    }
}

/// Deregister a consumer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeregisterConsumer {
    /// Stream name.
    pub name: String,
    /// Consumer name.
    pub consumer: String,
}

impl Operation for DeregisterConsumer {
    type Output = ();

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let DeregisterConsumer { name, consumer } = self;
        streams::deregister_consumer(txn, name, consumer)
    }
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

impl Operation for TrimShard {
    type Output = Trimmed;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let TrimShard { name, shard } = self;
        let (dropped, more) = records::trim(txn, ctx, name, *shard)?;
        Ok(Trimmed { dropped, more })
    }
}

/// Delete a bounded part of a deleted stream's records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CollectStream {
    /// Stream id.
    pub sid: u64,
}

impl Operation for CollectStream {
    type Output = bool;

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        let CollectStream { sid } = self;
        records::collect(txn, *sid)
    }
}
