//! The deterministic core of the state machine: one command in, one result
//! out, over a store.
//!
//! [`apply`] and [`query`] are what every replica runs for each log entry and
//! read. They read no clock (the time is in [`Ctx`]), draw no random numbers
//! and do no I/O other than through the store they are given, so every node
//! that applies the same log reaches the same state. What a command means for
//! the world outside the state (a queue now has messages for waiting
//! receivers) it reports as [`Effect`]s, which the caller acts on after the
//! commit. The Raft plumbing around them lives in
//! [`crate::raft::state_machine`].

use crate::apply::{Ctx, Effects};
use crate::command::{Command, CommandOutput, Query, QueryOutput};
use crate::error::{ApplyError, ApplyResult, DomainError};
use crate::functions::{self, DeleteFunction};
use crate::invariant::CheckError;
use crate::operation::Operation;
use crate::queues::{self, layout, redrive};
use crate::store::{StateRead, StoreError, Txn};
use crate::streams::{self, iterator::Position, records};
use crate::tags::{Tag, Tagged};
use crate::topics::{self, subscription};

/// Applies the commands of one log entry on top of `batch`, the overlay of
/// the entries applied before it in the same batch. Each command gets its
/// own transaction: a rejected one leaves no trace (writes or effects), the
/// others still apply. A store failure stops the batch: it is local, not a
/// result every replica would share.
pub fn apply_entry(
    batch: &mut Txn<'_>,
    ctx: &Ctx,
    commands: &[Command],
    effects: &mut Effects,
) -> Result<Vec<Result<CommandOutput, DomainError>>, StoreError> {
    let mut results = Vec::with_capacity(commands.len());
    for command in commands {
        let mut txn = Txn::new(&*batch);
        let before = effects.len();
        match apply(&mut txn, ctx, command, effects) {
            Ok(out) => {
                let writes = txn.into_writes();
                batch.merge(writes);
                results.push(Ok(out));
            }
            Err(ApplyError::Rejected(e)) => {
                effects.truncate(before);
                results.push(Err(e));
            }
            Err(ApplyError::Store(e)) => return Err(e),
        }
    }
    Ok(results)
}

/// Checks every domain's invariants over `state` (see [`crate::invariant`]).
pub fn check(state: &dyn StateRead) -> Result<(), CheckError> {
    queues::invariants::check(state)?;
    streams::invariants::check(state)?;
    topics::invariants::check(state)?;
    functions::invariants::check(state)?;
    crate::mappings::invariants::check(state)?;
    crate::workers::check(state)?;
    crate::iam::check(state)?;
    Ok(())
}

/// Applies one command. Writes go to `txn`; on error the caller discards them
/// (and the effects recorded meanwhile).
pub fn apply(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    command: &Command,
    effects: &mut Effects,
) -> ApplyResult<CommandOutput> {
    command.apply(txn, ctx, effects)
}

// The commands that span domains are applied here, above the domains, so
// that no domain module imports another's writes.

impl Operation for DeleteFunction {
    type Output = ();

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        functions::delete(txn, &self.name)?;
        // Its event source mappings go with it (at most 100).
        crate::mappings::delete_of_function(txn, &self.name)
    }
}

impl Operation for Tag {
    type Output = ();

    fn apply(
        &self,
        txn: &mut Txn<'_>,
        _ctx: &Ctx,
        _effects: &mut Effects,
    ) -> ApplyResult<Self::Output> {
        match &self.resource {
            Tagged::Queue(name) => queues::retag(txn, name, &self.change),
            Tagged::Topic(name) => topics::retag(txn, name, &self.change),
            Tagged::Stream(name) => streams::retag(txn, name, &self.change),
        }
    }
}

/// Answers one query from `state`.
pub fn query(state: &dyn StateRead, query: &Query) -> ApplyResult<QueryOutput> {
    match query {
        Query::GetQueue { name } => Ok(QueryOutput::Queue(queues::require(state, name)?)),
        Query::ListQueues(req) => Ok(QueryOutput::Queues(queues::list(state, req)?)),
        Query::QueueDetails { name } => {
            let q = queues::require(state, name)?;
            let s = layout::load_state(state, q.id)?;
            Ok(QueryOutput::QueueDetails(q, s))
        }
        Query::QueueName { qid } => Ok(QueryOutput::QueueName(queues::name_of(state, *qid)?)),
        Query::DeadLetterSources { name, after, limit } => {
            queues::require(state, name)?;
            Ok(QueryOutput::Queues(queues::dead_letter_sources(
                state,
                name,
                after.as_deref(),
                *limit as usize,
            )?))
        }
        Query::MoveTasks { name } => {
            let q = queues::require(state, name)?;
            Ok(QueryOutput::MoveTasks(redrive::tasks(state, q.id)?))
        }
        Query::GetFunction { name } => Ok(QueryOutput::Function(functions::require(state, name)?)),
        Query::ListFunctions { after, limit } => {
            let (fs, more) = functions::list(state, after.as_deref(), *limit as usize)?;
            Ok(QueryOutput::Functions(fs, more))
        }
        Query::FunctionCode { sha256 } => Ok(QueryOutput::Code(functions::code(state, sha256)?)),
        Query::ListVersions { name } => Ok(QueryOutput::Versions(
            functions::require(state, name)?,
            functions::versions(state, name)?,
        )),
        Query::ListAliases { name } => {
            functions::require(state, name)?;
            Ok(QueryOutput::Aliases(functions::aliases(state, name)?))
        }
        Query::EventInvokeConfig { name } => {
            functions::require(state, name)?;
            Ok(QueryOutput::EventConfig(functions::events::config(
                state, name,
            )?))
        }
        Query::InvokeTarget { name, qualifier } => Ok(QueryOutput::Target(functions::target(
            state, name, qualifier,
        )?)),
        Query::ListWorkers => Ok(QueryOutput::Workers(crate::workers::list(state)?)),
        Query::FunctionConcurrency { name } => {
            functions::require(state, name)?;
            Ok(QueryOutput::Concurrency(functions::concurrency::reserved(
                state, name,
            )?))
        }
        Query::Provisioned { name } => Ok(QueryOutput::Provisioned(match name {
            Some(name) => {
                functions::require(state, name)?;
                functions::concurrency::provisioned_of(state, name)?
            }
            None => functions::concurrency::provisioned_all(state)?,
        })),
        Query::GetMapping { uuid } => {
            Ok(QueryOutput::Mapping(crate::mappings::require(state, uuid)?))
        }
        Query::ListMappings { function } => Ok(QueryOutput::Mappings(match function {
            Some(f) => crate::mappings::of_function(state, f)?,
            None => crate::mappings::all(state)?,
        })),
        Query::ListLeases => Ok(QueryOutput::Leases(crate::mappings::leases::all(state)?)),
        Query::Iam(q) => Ok(QueryOutput::Iam(crate::iam::query(state, q)?)),
        Query::MappingCheckpoints { function, uuid } => Ok(QueryOutput::Checkpoints(
            crate::mappings::checkpoints::of_mapping(state, function, uuid)?,
            crate::mappings::checkpoints::since(state, function, uuid)?,
        )),
        Query::GetTopic { name } => {
            let (t, c) = topics::details(state, name)?;
            Ok(QueryOutput::Topic(t, c))
        }
        Query::ListTopics { after, limit } => {
            let (names, more) = topics::list(state, after.as_deref(), *limit as usize)?;
            Ok(QueryOutput::Topics(names, more))
        }
        Query::GetSubscription { topic, id } => {
            let t = topics::require(state, topic)?;
            let s = subscription::require_sub(state, t.id, id)?;
            Ok(QueryOutput::Subscription(t, s))
        }
        Query::ListSubscriptions {
            topic,
            after,
            limit,
        } => {
            let (subs, next) = topics::list_subscriptions(
                state,
                topic.as_deref(),
                after.as_ref().map(|(a, b)| (a.as_str(), b.as_str())),
                (*limit).max(1) as usize,
            )?;
            Ok(QueryOutput::Subscriptions(subs, next))
        }
        Query::DescribeStream { name } => Ok(QueryOutput::Stream(streams::require(state, name)?)),
        Query::ListStreams { after, limit } => {
            let (names, more) = streams::list(state, after.as_deref(), *limit as usize)?;
            Ok(QueryOutput::Streams(names, more))
        }
        Query::ReadShard {
            stream,
            shard,
            from,
            limit,
            max_bytes,
        } => Ok(QueryOutput::Records(records::read(
            state,
            *stream,
            *shard,
            *from,
            *limit as usize,
            *max_bytes as usize,
        )?)),
        Query::ResolvePosition {
            name,
            shard,
            position,
        } => {
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
                Position::At(n) if *n == 0 || *n > st.last_seq() => {
                    return Err(never_issued(*n).into())
                }
                Position::At(n) => *n,
                Position::After(n) if *n > st.last_seq() => return Err(never_issued(*n).into()),
                Position::After(n) => n + 1,
                Position::AtTimestamp(ms) => records::seq_at_time(state, s.id, *shard, *ms)?,
            };
            Ok(QueryOutput::Position { stream: s.id, seq })
        }
    }
}
