//! How far behind each event source mapping is, as metrics (set by the
//! leader's lease manager each second; other nodes do not set them).
//!
//! - `sluice_mapping_iterator_age_ms{function, mapping, shard}`: for a
//!   stream mapping, the age of the oldest record of the shard not yet
//!   processed (the most behind of the shard's parts), 0 when caught up.
//! - `sluice_mapping_queue_depth{function, mapping}`: for a queue mapping,
//!   the messages waiting or being processed.

use crate::error::ApplyResult;
use crate::mappings::checkpoints::Checkpoint;
use crate::mappings::leases::stream_slot;
use crate::mappings::{Mapping, StartingPosition};
use crate::store::StateRead;
use crate::streams::{records, shard_id, Stream};

/// Sets the iterator age of each shard of a stream mapping.
pub fn report_stream(
    state: &dyn StateRead,
    m: &Mapping,
    stream: &Stream,
    checkpoints: &[Checkpoint],
    now_ms: u64,
) -> ApplyResult<()> {
    for (shard, age) in stream_ages(state, m, stream, checkpoints, now_ms)? {
        metrics::gauge!("sluice_mapping_iterator_age_ms",
            "function" => m.function.clone(),
            "mapping" => m.uuid.clone(),
            "shard" => shard_id(shard))
        .set(age as f64);
    }
    Ok(())
}

/// The iterator age, ms, of each shard (by index) of a stream mapping: the
/// age of the oldest record of the shard not yet processed (the most behind
/// of the shard's parts), 0 when caught up.
pub fn stream_ages(
    state: &dyn StateRead,
    m: &Mapping,
    stream: &Stream,
    checkpoints: &[Checkpoint],
    now_ms: u64,
) -> ApplyResult<Vec<(u32, u64)>> {
    let mut ages = Vec::with_capacity(stream.shards.len());
    let pf = m.settings.parallelization_factor.max(1);
    // Where a part without a checkpoint starts, as a time (None: the
    // oldest record).
    let start_ms = match m.settings.starting_position {
        Some(StartingPosition::AtTimestamp(t)) => Some(t),
        Some(StartingPosition::Latest) => Some(crate::mappings::checkpoints::since(
            state,
            &m.function,
            &m.uuid,
        )?),
        _ => None,
    };
    for shard in &stream.shards {
        let st = records::load_state(state, stream.id, shard.index)?;
        let mut oldest: Option<u64> = None;
        for p in 0..pf {
            let slot = stream_slot(shard.index, p);
            let next = match checkpoints.iter().find(|c| c.slot == slot) {
                Some(c) if c.finished => continue,
                Some(c) => c.seq + 1,
                None => match start_ms {
                    Some(t) => records::seq_at_time(state, stream.id, shard.index, t)?,
                    None => st.first_seq,
                },
            };
            let next = next.max(st.first_seq);
            if next > st.last_seq() {
                continue;
            }
            // One key read: not the whole-stream read a GetRecords does.
            if let Some(at) = records::arrival_of(state, stream.id, shard.index, next)? {
                oldest = Some(oldest.map_or(at, |o| o.min(at)));
            }
        }
        ages.push((shard.index, oldest.map_or(0, |t| now_ms.saturating_sub(t))));
    }
    Ok(ages)
}

/// Sets the depth of a queue mapping's queue.
pub fn report_queue(state: &dyn StateRead, m: &Mapping) -> ApplyResult<()> {
    let Some(q) = crate::queues::load(state, m.source.name())? else {
        return Ok(());
    };
    let st = crate::queues::layout::load_state(state, q.id)?;
    metrics::gauge!("sluice_mapping_queue_depth",
        "function" => m.function.clone(),
        "mapping" => m.uuid.clone())
    .set((st.available + st.delayed + st.in_flight) as f64);
    Ok(())
}
