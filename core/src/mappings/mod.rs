//! Event source mappings: a queue or a stream feeding a function.
//!
//! A mapping belongs to its function (its commands are scoped to the
//! function) and names its source by name. This module keeps the registry:
//! the settings, validated against Lambda's limits, and the mapping's state.
//! Which worker polls which part of a source is in [`leases`]; how far a
//! stream mapping got, in [`checkpoints`].
//!
//! | key | value |
//! | --- | --- |
//! | `esm/{function}/{uuid}` | [`StoredMapping`] |
//! | `esmid/{uuid}` | the function's name |

pub mod checkpoints;
pub mod invariants;
pub mod leases;
pub mod operations;

pub use operations::*;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{ApplyResult, DomainError};
use crate::filter::{FilterPolicy, Scope};
use crate::store::keys::Key;
use crate::store::{codec, StateRead, Txn};

/// Mappings per function, at most.
pub const PER_FUNCTION_MAX: usize = 100;
/// Filter patterns per mapping, at most (Lambda's five).
pub const FILTERS_MAX: usize = 5;
/// Longest filter pattern, bytes (Lambda's 4 096).
pub const FILTER_BYTES_MAX: usize = 4096;

/// What feeds the function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// A queue, by name.
    Queue(String),
    /// A stream, by name.
    Stream(String),
}

impl Source {
    /// The source's name.
    pub fn name(&self) -> &str {
        match self {
            Source::Queue(n) | Source::Stream(n) => n,
        }
    }
}

/// Where a stream mapping starts reading a shard it has no checkpoint for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StartingPosition {
    /// The oldest record kept.
    TrimHorizon,
    /// Records put after the mapping starts.
    Latest,
    /// The first record put at or after this time, ms since the epoch.
    AtTimestamp(u64),
}

/// A mapping's settings (Lambda's names in the comments).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    /// `Enabled`.
    pub enabled: bool,
    /// `BatchSize`.
    pub batch_size: u32,
    /// `MaximumBatchingWindowInSeconds`.
    pub batching_window_s: u32,
    /// `ScalingConfig.MaximumConcurrency` (queues; `None`: no cap).
    pub maximum_concurrency: Option<u32>,
    /// `FunctionResponseTypes` holds `ReportBatchItemFailures`.
    pub report_batch_item_failures: bool,
    /// `FilterCriteria.Filters[].Pattern`, validated (stored as text: the
    /// pollers compile them, and the engine's types stay out of the
    /// stored record).
    pub filters: Vec<String>,
    /// `StartingPosition` (streams).
    pub starting_position: Option<StartingPosition>,
    /// `ParallelizationFactor` (streams).
    pub parallelization_factor: u32,
    /// `BisectBatchOnFunctionError` (streams).
    pub bisect_on_error: bool,
    /// `MaximumRetryAttempts` (streams; -1: until the record expires).
    pub maximum_retry_attempts: i32,
    /// `MaximumRecordAgeInSeconds` (streams; -1: no limit).
    pub maximum_record_age_s: i32,
    /// `TumblingWindowInSeconds` (streams).
    pub tumbling_window_s: u32,
    /// `DestinationConfig.OnFailure.Destination` (streams): a queue or
    /// topic ARN, or empty.
    pub on_failure: String,
}

/// A mapping as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Mapping {
    /// Its id (a UUID).
    pub uuid: String,
    /// The function, by name.
    pub function: String,
    /// The source.
    pub source: Source,
    /// Its settings.
    pub settings: Settings,
    /// State-machine time of the last change.
    pub modified_ms: u64,
    /// `LastProcessingResult`: what the pollers reported last.
    pub last_result: String,
}

impl Mapping {
    /// `Enabled` or `Disabled` (Lambda's `State`).
    pub fn state(&self) -> &'static str {
        if self.settings.enabled {
            "Enabled"
        } else {
            "Disabled"
        }
    }
}

/// The stored form (variants are only appended).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredMapping {
    /// The first form.
    V1(Mapping),
}

/// The settings a request gives; unset fields take Lambda's defaults on
/// create and keep their values on update.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsChange {
    /// `Enabled`.
    pub enabled: Option<bool>,
    /// `BatchSize`.
    pub batch_size: Option<u32>,
    /// `MaximumBatchingWindowInSeconds`.
    pub batching_window_s: Option<u32>,
    /// `ScalingConfig.MaximumConcurrency`; `Some(0)` removes the cap.
    pub maximum_concurrency: Option<u32>,
    /// `FunctionResponseTypes`.
    pub report_batch_item_failures: Option<bool>,
    /// Filter patterns (JSON text); `Some(vec![])` removes them.
    pub filters: Option<Vec<String>>,
    /// `StartingPosition`: `TRIM_HORIZON`, `LATEST` or `AT_TIMESTAMP`.
    pub starting_position: Option<String>,
    /// `StartingPositionTimestamp`, ms since the epoch.
    pub starting_position_timestamp_ms: Option<u64>,
    /// `ParallelizationFactor`.
    pub parallelization_factor: Option<u32>,
    /// `BisectBatchOnFunctionError`.
    pub bisect_on_error: Option<bool>,
    /// `MaximumRetryAttempts`.
    pub maximum_retry_attempts: Option<i32>,
    /// `MaximumRecordAgeInSeconds`.
    pub maximum_record_age_s: Option<i32>,
    /// `TumblingWindowInSeconds`.
    pub tumbling_window_s: Option<u32>,
    /// `DestinationConfig.OnFailure.Destination`; `Some("")` removes it.
    pub on_failure: Option<String>,
}

fn invalid(field: &str, rule: impl Into<String>) -> DomainError {
    DomainError::invalid(field, rule)
}

fn in_range<T: PartialOrd + std::fmt::Display + Copy>(
    field: &str,
    v: T,
    lo: T,
    hi: T,
) -> Result<T, DomainError> {
    if v < lo || v > hi {
        return Err(invalid(
            field,
            format!("must be from {lo} to {hi}, got {v}"),
        ));
    }
    Ok(v)
}

/// `v` when it is -1 (no limit) or from `lo` to `hi`.
fn unlimited_or_in_range(field: &str, v: i32, lo: i32, hi: i32) -> Result<i32, DomainError> {
    if v == -1 {
        return Ok(v);
    }
    in_range(field, v, lo, hi)
        .map_err(|_| invalid(field, format!("must be -1 or from {lo} to {hi}, got {v}")))
}

/// Applies `change` to `base` (the defaults for a new mapping of `source`,
/// `fifo` for a FIFO queue) and checks the result against Lambda's rules.
pub fn settle(
    base: Option<&Settings>,
    source: &Source,
    fifo: bool,
    change: &SettingsChange,
) -> Result<Settings, DomainError> {
    let stream = matches!(source, Source::Stream(_));
    let queue_only = |field: &str, set: bool| -> Result<(), DomainError> {
        if stream && set {
            return Err(invalid(field, "applies to queue sources only"));
        }
        Ok(())
    };
    let stream_only = |field: &str, set: bool| -> Result<(), DomainError> {
        if !stream && set {
            return Err(invalid(field, "applies to stream sources only"));
        }
        Ok(())
    };
    queue_only("maximum_concurrency", change.maximum_concurrency.is_some())?;
    stream_only("starting_position", change.starting_position.is_some())?;
    stream_only(
        "parallelization_factor",
        change.parallelization_factor.is_some(),
    )?;
    stream_only("bisect_on_error", change.bisect_on_error.is_some())?;
    stream_only(
        "maximum_retry_attempts",
        change.maximum_retry_attempts.is_some(),
    )?;
    stream_only(
        "maximum_record_age_s",
        change.maximum_record_age_s.is_some(),
    )?;
    stream_only("tumbling_window_s", change.tumbling_window_s.is_some())?;
    stream_only("on_failure", change.on_failure.is_some())?;

    let mut s = match base {
        Some(b) => b.clone(),
        None => Settings {
            enabled: true,
            batch_size: if stream { 100 } else { 10 },
            batching_window_s: 0,
            maximum_concurrency: None,
            report_batch_item_failures: false,
            filters: Vec::new(),
            starting_position: None,
            parallelization_factor: 1,
            bisect_on_error: false,
            maximum_retry_attempts: -1,
            maximum_record_age_s: -1,
            tumbling_window_s: 0,
            on_failure: String::new(),
        },
    };
    if let Some(v) = change.enabled {
        s.enabled = v;
    }
    if let Some(v) = change.batch_size {
        let hi = if fifo { 10 } else { 10_000 };
        s.batch_size = in_range("batch_size", v, 1, hi).map_err(|e| {
            if fifo {
                invalid(
                    "batch_size",
                    format!("must be from 1 to 10 for a FIFO queue, got {v}"),
                )
            } else {
                e
            }
        })?;
    }
    if let Some(v) = change.batching_window_s {
        if fifo && v > 0 {
            return Err(invalid(
                "batching_window_s",
                "a FIFO queue takes no batching window (as on Lambda)",
            ));
        }
        s.batching_window_s = in_range("batching_window_s", v, 0, 300)?;
    }
    if change.starting_position_timestamp_ms.is_some()
        && change.starting_position.as_deref() != Some("AT_TIMESTAMP")
    {
        return Err(invalid(
            "starting_position_timestamp",
            "is given only with starting_position AT_TIMESTAMP",
        ));
    }
    if s.batch_size > 10 && s.batching_window_s < 1 && !stream {
        return Err(invalid(
            "batching_window_s",
            format!(
                "must be at least 1 when batch_size is over 10 (batch_size {})",
                s.batch_size
            ),
        ));
    }
    if let Some(v) = change.maximum_concurrency {
        s.maximum_concurrency = match v {
            0 => None,
            v => Some(in_range("maximum_concurrency", v, 2, 1000)?),
        };
    }
    if let Some(v) = change.report_batch_item_failures {
        s.report_batch_item_failures = v;
    }
    if let Some(patterns) = &change.filters {
        if patterns.len() > FILTERS_MAX {
            return Err(invalid(
                "filters",
                format!("at most {FILTERS_MAX} patterns, got {}", patterns.len()),
            ));
        }
        s.filters = patterns
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.len() > FILTER_BYTES_MAX {
                    return Err(invalid(
                        &format!("filters[{i}]"),
                        format!("at most {FILTER_BYTES_MAX} bytes, got {}", p.len()),
                    ));
                }
                // The pattern is matched against the event record, as
                // Lambda does: the same engine as topic filter policies,
                // on a JSON document.
                FilterPolicy::parse(p, Scope::MessageBody)
                    .map(|_| p.clone())
                    .map_err(|e| invalid(&format!("filters[{i}]"), e.0))
            })
            .collect::<Result<_, _>>()?;
    }
    if let Some(v) = &change.starting_position {
        s.starting_position = Some(match v.as_str() {
            "TRIM_HORIZON" => StartingPosition::TrimHorizon,
            "LATEST" => StartingPosition::Latest,
            "AT_TIMESTAMP" => StartingPosition::AtTimestamp(
                change.starting_position_timestamp_ms.ok_or_else(|| {
                    invalid(
                        "starting_position_timestamp",
                        "is required with AT_TIMESTAMP",
                    )
                })?,
            ),
            other => {
                return Err(invalid(
                    "starting_position",
                    format!("must be TRIM_HORIZON, LATEST or AT_TIMESTAMP, got {other:?}"),
                ))
            }
        });
    }
    if stream && s.starting_position.is_none() {
        return Err(invalid(
            "starting_position",
            "is required for a stream source",
        ));
    }
    if let Some(v) = change.parallelization_factor {
        s.parallelization_factor = in_range("parallelization_factor", v, 1, 10)?;
    }
    if let Some(v) = change.bisect_on_error {
        s.bisect_on_error = v;
    }
    if let Some(v) = change.maximum_retry_attempts {
        s.maximum_retry_attempts = unlimited_or_in_range("maximum_retry_attempts", v, 0, 10_000)?;
    }
    if let Some(v) = change.maximum_record_age_s {
        s.maximum_record_age_s = unlimited_or_in_range("maximum_record_age_s", v, 60, 604_800)?;
    }
    if let Some(v) = change.tumbling_window_s {
        s.tumbling_window_s = in_range("tumbling_window_s", v, 0, 900)?;
    }
    if let Some(v) = &change.on_failure {
        if !v.is_empty() {
            match crate::functions::events::Destination::parse("on_failure", v)? {
                crate::functions::events::Destination::Queue(_)
                | crate::functions::events::Destination::Topic(_) => {}
                _ => return Err(invalid("on_failure", "must be a queue or topic ARN")),
            }
        }
        s.on_failure = v.clone();
    }
    Ok(s)
}

/// Reads an event source ARN: a queue's or a stream's.
pub fn parse_source(arn: &str) -> Result<Source, DomainError> {
    match crate::functions::events::Destination::parse("event_source_arn", arn)? {
        crate::functions::events::Destination::Queue(n) => Ok(Source::Queue(n)),
        crate::functions::events::Destination::Stream(n) => Ok(Source::Stream(n)),
        _ => Err(invalid(
            "event_source_arn",
            "must be a queue (arn:aws:sqs:…) or stream (arn:aws:kinesis:…:stream/…) ARN",
        )),
    }
}

/// `{space}/{function}/{uuid}`: a mapping's record in `space` (the mapping
/// itself, a counter of it), or the prefix of its per-slot records there.
fn mapping_key(space: &str, function: &str, uuid: &str) -> Vec<u8> {
    Key::new(space).str(function).str(uuid).build()
}

/// `{space}/{function}/{uuid}/{slot}`: a mapping's record of one slot (a
/// lease, a checkpoint).
fn slot_key(space: &str, function: &str, uuid: &str, slot: u32) -> Vec<u8> {
    Key::new(space)
        .str(function)
        .str(uuid)
        .u64(u64::from(slot))
        .build()
}

fn key(function: &str, uuid: &str) -> Vec<u8> {
    mapping_key(SPACE, function, uuid)
}

fn id_key(uuid: &str) -> Vec<u8> {
    Key::new("esmid").str(uuid).build()
}

/// The key spaces deleted with a function (its mappings).
pub const SPACE: &str = "esm";

/// A mapping by id, if it exists.
pub fn load(state: &dyn StateRead, uuid: &str) -> ApplyResult<Option<Mapping>> {
    let ik = id_key(uuid);
    let Some(f) = state.get(&ik)? else {
        return Ok(None);
    };
    let function: String = codec::decode(&ik, &f)?;
    Ok(crate::store::record_at(state, &key(&function, uuid))?.map(|StoredMapping::V1(m)| m))
}

/// A mapping by id, or `ResourceNotFoundException`.
pub fn require(state: &dyn StateRead, uuid: &str) -> ApplyResult<Mapping> {
    load(state, uuid)?.ok_or_else(|| {
        DomainError::not_found(
            "ResourceNotFoundException",
            format!("event source mapping {uuid:?} does not exist"),
        )
        .into()
    })
}

/// A function's mappings.
pub fn of_function(state: &dyn StateRead, function: &str) -> ApplyResult<Vec<Mapping>> {
    let stored: Vec<StoredMapping> =
        crate::store::records_under(state, &Key::new("esm").str(function).build())?;
    Ok(stored.into_iter().map(|StoredMapping::V1(m)| m).collect())
}

/// Every mapping (for the lease manager and listing by source).
pub fn all(state: &dyn StateRead) -> ApplyResult<Vec<Mapping>> {
    let stored: Vec<StoredMapping> = crate::store::records_under(state, &Key::new("esm").build())?;
    Ok(stored.into_iter().map(|StoredMapping::V1(m)| m).collect())
}

fn save(txn: &mut Txn<'_>, m: &Mapping) {
    txn.put_record(key(&m.function, &m.uuid), &StoredMapping::V1(m.clone()));
    txn.put_record(id_key(&m.uuid), &m.function);
}

/// A new mapping, as validated at the edge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMapping {
    /// Its id, drawn at the edge.
    pub uuid: String,
    /// The function, by name.
    pub function: String,
    /// The source.
    pub source: Source,
    /// Its settings, validated.
    pub settings: Settings,
}

/// Applies `CreateEventSourceMapping`.
pub fn create(txn: &mut Txn<'_>, ctx: &Ctx, new: &NewMapping) -> ApplyResult<Mapping> {
    crate::functions::require(txn, &new.function)?;
    if load(txn, &new.uuid)?.is_some() {
        return Err(DomainError::already_exists(
            "ResourceConflictException",
            format!("event source mapping {:?} already exists", new.uuid),
        )
        .into());
    }
    let existing = of_function(txn, &new.function)?;
    if existing.len() >= PER_FUNCTION_MAX {
        return Err(DomainError::limit(
            "LimitExceeded",
            format!(
                "function {:?} has {PER_FUNCTION_MAX} event source mappings, the most it takes",
                new.function
            ),
        )
        .into());
    }
    if existing.iter().any(|m| m.source == new.source) {
        return Err(DomainError::already_exists(
            "ResourceConflictException",
            format!(
                "function {:?} already has a mapping from {:?}",
                new.function,
                new.source.name()
            ),
        )
        .into());
    }
    let m = Mapping {
        uuid: new.uuid.clone(),
        function: new.function.clone(),
        source: new.source.clone(),
        settings: new.settings.clone(),
        modified_ms: ctx.now_ms,
        last_result: NO_RECORDS.into(),
    };
    save(txn, &m);
    if matches!(m.source, Source::Stream(_)) {
        checkpoints::set_since(txn, &m.function, &m.uuid, ctx.now_ms);
    }
    Ok(m)
}

/// `LastProcessingResult` before any batch was processed.
pub const NO_RECORDS: &str = "No records processed";
/// Longest `LastProcessingResult` kept, bytes.
pub const RESULT_BYTES_MAX: usize = 256;

/// Applies `SetMappingResult`: what a poller saw last (`OK`, or `PROBLEM:`
/// and why). Leaves `modified_ms` alone: it is not a settings change.
pub fn set_result(txn: &mut Txn<'_>, function: &str, uuid: &str, result: &str) -> ApplyResult<()> {
    if result.is_empty() || result.len() > RESULT_BYTES_MAX {
        return Err(invalid(
            "result",
            format!(
                "must be 1 to {RESULT_BYTES_MAX} bytes, got {}",
                result.len()
            ),
        )
        .into());
    }
    let mut m = require(txn, uuid)?;
    if m.function != function {
        return Err(not_of(uuid, function));
    }
    if m.last_result != result {
        m.last_result = result.to_string();
        save(txn, &m);
    }
    Ok(())
}

/// Applies `UpdateEventSourceMapping` with settings validated at the edge
/// against the mapping as it was read there (`expected`: refused when it
/// changed since).
pub fn update(
    txn: &mut Txn<'_>,
    ctx: &Ctx,
    function: &str,
    uuid: &str,
    expected_ms: u64,
    settings: &Settings,
) -> ApplyResult<Mapping> {
    let mut m = require(txn, uuid)?;
    if m.function != function {
        return Err(not_of(uuid, function));
    }
    if m.modified_ms != expected_ms {
        return Err(DomainError::precondition(
            "ResourceInUseException",
            format!("event source mapping {uuid:?} changed meanwhile; read it and try again"),
        )
        .into());
    }
    let (old_pf, new_pf) = (
        m.settings.parallelization_factor,
        settings.parallelization_factor,
    );
    m.settings = settings.clone();
    m.modified_ms = ctx.now_ms.max(expected_ms + 1);
    save(txn, &m);
    if matches!(m.source, Source::Stream(_)) && old_pf != new_pf {
        checkpoints::repartition(txn, function, uuid, old_pf, new_pf)?;
    }
    Ok(m)
}

/// The refusal of a command naming a mapping with another function than
/// its own (commands are scoped to the function they name).
fn not_of(uuid: &str, function: &str) -> crate::error::ApplyError {
    DomainError::not_found(
        "ResourceNotFoundException",
        format!("function {function:?} has no event source mapping {uuid:?}"),
    )
    .into()
}

/// Applies `DeleteEventSourceMapping`.
pub fn delete(txn: &mut Txn<'_>, function: &str, uuid: &str) -> ApplyResult<Mapping> {
    let m = require(txn, uuid)?;
    if m.function != function {
        return Err(not_of(uuid, function));
    }
    forget(txn, &m)?;
    Ok(m)
}

/// Deletes a function's mappings (with the function).
pub fn delete_of_function(txn: &mut Txn<'_>, function: &str) -> ApplyResult<()> {
    for m in of_function(txn, function)? {
        forget(txn, &m)?;
    }
    Ok(())
}

/// Deletes a mapping's record, its id and its leases and checkpoints.
fn forget(txn: &mut Txn<'_>, m: &Mapping) -> ApplyResult<()> {
    txn.delete(key(&m.function, &m.uuid));
    txn.delete(id_key(&m.uuid));
    leases::drop_mapping(txn, &m.function, &m.uuid)?;
    checkpoints::drop_mapping(txn, &m.function, &m.uuid)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::World;

    fn queue() -> Source {
        Source::Queue("jobs".into())
    }

    fn stream() -> Source {
        Source::Stream("clicks".into())
    }

    fn field_of(e: DomainError) -> String {
        e.field.unwrap_or_default()
    }

    /// No change but what `edit` makes.
    fn change(edit: impl FnOnce(&mut SettingsChange)) -> SettingsChange {
        let mut c = SettingsChange::default();
        edit(&mut c);
        c
    }

    #[test]
    fn defaults_follow_lambda() {
        let q = settle(None, &queue(), false, &SettingsChange::default()).unwrap();
        assert_eq!(
            (q.batch_size, q.batching_window_s, q.enabled),
            (10, 0, true)
        );
        let trim_horizon = change(|c| c.starting_position = Some("TRIM_HORIZON".into()));
        let s = settle(None, &stream(), false, &trim_horizon).unwrap();
        assert_eq!(s.batch_size, 100);
        assert_eq!(s.parallelization_factor, 1);
        assert_eq!(s.maximum_retry_attempts, -1);
        assert_eq!(s.starting_position, Some(StartingPosition::TrimHorizon));
    }

    #[test]
    fn every_rule_names_its_field() {
        let bad: Vec<(Source, bool, SettingsChange, &str)> = vec![
            (
                queue(),
                false,
                change(|c| c.batch_size = Some(0)),
                "batch_size",
            ),
            (
                queue(),
                true,
                change(|c| c.batch_size = Some(11)),
                "batch_size",
            ),
            (
                queue(),
                false,
                change(|c| c.batch_size = Some(100)),
                "batching_window_s",
            ),
            (
                queue(),
                false,
                change(|c| c.batching_window_s = Some(301)),
                "batching_window_s",
            ),
            (
                queue(),
                false,
                change(|c| c.maximum_concurrency = Some(1)),
                "maximum_concurrency",
            ),
            (
                queue(),
                false,
                change(|c| c.starting_position = Some("LATEST".into())),
                "starting_position",
            ),
            (
                queue(),
                false,
                change(|c| c.filters = Some(vec!["{".into()])),
                "filters[0]",
            ),
            (
                queue(),
                false,
                change(|c| c.filters = Some(vec!["{}".into(); 6])),
                "filters",
            ),
            (
                stream(),
                false,
                SettingsChange::default(),
                "starting_position",
            ),
            (
                stream(),
                false,
                change(|c| c.starting_position = Some("AT_TIMESTAMP".into())),
                "starting_position_timestamp",
            ),
            (
                stream(),
                false,
                change(|c| c.starting_position = Some("NOW".into())),
                "starting_position",
            ),
            (
                queue(),
                true,
                change(|c| c.batching_window_s = Some(1)),
                "batching_window_s",
            ),
            (
                queue(),
                false,
                change(|c| c.starting_position_timestamp_ms = Some(1)),
                "starting_position_timestamp",
            ),
        ];
        for (source, fifo, change, field) in bad {
            let e = settle(None, &source, fifo, &change).unwrap_err();
            assert_eq!(field_of(e), field, "{change:?}");
        }
        let base = settle(
            None,
            &stream(),
            false,
            &change(|c| c.starting_position = Some("LATEST".into())),
        )
        .unwrap();
        let bad_stream: Vec<(SettingsChange, &str)> = vec![
            (
                change(|c| c.parallelization_factor = Some(11)),
                "parallelization_factor",
            ),
            (
                change(|c| c.maximum_retry_attempts = Some(-2)),
                "maximum_retry_attempts",
            ),
            (
                change(|c| c.maximum_retry_attempts = Some(10_001)),
                "maximum_retry_attempts",
            ),
            (
                change(|c| c.maximum_record_age_s = Some(59)),
                "maximum_record_age_s",
            ),
            (
                change(|c| c.tumbling_window_s = Some(901)),
                "tumbling_window_s",
            ),
            (
                change(|c| c.on_failure = Some("arn:aws:lambda:us-east-1:0:function:f".into())),
                "on_failure",
            ),
            (
                change(|c| c.maximum_concurrency = Some(5)),
                "maximum_concurrency",
            ),
        ];
        for (change, field) in bad_stream {
            let e = settle(Some(&base), &stream(), false, &change).unwrap_err();
            assert_eq!(field_of(e), field, "{change:?}");
        }
        // Good ones, and an update keeping what it does not name.
        let good = settle(
            Some(&base),
            &stream(),
            false,
            &SettingsChange {
                maximum_retry_attempts: Some(2),
                bisect_on_error: Some(true),
                on_failure: Some("arn:aws:sqs:us-east-1:000000000000:dlq".into()),
                filters: Some(vec![r#"{"data": {"kind": ["a"]}}"#.into()]),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(good.maximum_retry_attempts, 2);
        assert!(good.bisect_on_error);
        assert_eq!(good.starting_position, Some(StartingPosition::Latest));
        assert_eq!(good.filters.len(), 1);
    }

    fn new_mapping(uuid: &str, source: Source) -> NewMapping {
        let settings = settle(
            None,
            &source,
            false,
            &change(|c| {
                c.starting_position = matches!(source, Source::Stream(_)).then(|| "LATEST".into())
            }),
        )
        .unwrap();
        NewMapping {
            uuid: uuid.into(),
            function: "f".into(),
            source,
            settings,
        }
    }

    fn mapping(out: Mapping) -> Mapping {
        out
    }

    /// Deletes mapping `uuid`, naming `function` as its function.
    fn delete_mapping(w: &mut World, function: &str, uuid: &str) -> Result<Mapping, DomainError> {
        w.run(crate::mappings::DeleteEventSourceMapping {
            function: function.into(),
            uuid: uuid.into(),
        })
    }

    #[test]
    fn mappings_are_created_updated_listed_and_deleted_with_their_function() {
        let mut w = World::new();
        // No function yet.
        let e = w.run(new_mapping("u1", queue())).unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
        w.run(crate::testing::new_function("f")).unwrap();
        let m = mapping(w.run(new_mapping("u1", queue())).unwrap());
        assert_eq!(m.state(), "Enabled");
        // One mapping per source and function.
        let e = w.run(new_mapping("u2", queue())).unwrap_err();
        assert_eq!(e.code, "ResourceConflictException");
        w.run(new_mapping("u3", stream())).unwrap();
        let all = w
            .ask(crate::mappings::ListMappings { function: None })
            .unwrap();
        assert_eq!(all.len(), 2);
        // Updates are fenced by the version read at the edge.
        let mut disabled = m.settings.clone();
        disabled.enabled = false;
        w.advance(1);
        let updated = mapping(
            w.run(crate::mappings::UpdateEventSourceMapping {
                function: "f".into(),
                uuid: "u1".into(),
                expected_ms: m.modified_ms,
                settings: disabled.clone(),
            })
            .unwrap(),
        );
        assert_eq!(updated.state(), "Disabled");
        let e = w
            .run(crate::mappings::UpdateEventSourceMapping {
                function: "f".into(),
                uuid: "u1".into(),
                expected_ms: m.modified_ms,
                settings: disabled,
            })
            .unwrap_err();
        assert_eq!(e.code, "ResourceInUseException");
        // A command naming another function than the mapping's is refused.
        let e = delete_mapping(&mut w, "g", "u1").unwrap_err();
        assert_eq!(e.code, "ResourceNotFoundException");
        delete_mapping(&mut w, "f", "u1").unwrap();
        assert!(w
            .ask(crate::mappings::GetMapping { uuid: "u1".into() })
            .is_err());
        // Deleting the function deletes its mappings.
        w.run(crate::functions::DeleteFunction { name: "f".into() })
            .unwrap();
        let all = w
            .ask(crate::mappings::ListMappings { function: None })
            .unwrap();
        assert!(all.is_empty());
        assert!(w
            .ask(crate::mappings::GetMapping { uuid: "u3".into() })
            .is_err());
    }
}
