//! The registry of worker nodes, in the replicated state.
//!
//! A worker's heartbeat, committed as a command, records where it is
//! reached, what memory it offers and which environments it holds, stamped
//! with the state machine's clock. Every node reads the registry to route
//! invocations; whether a worker is live is judged at the edge, by the
//! reading node's clock ([`is_live`]). Records not refreshed for
//! [`FORGET_AFTER_MS`] are removed by the next heartbeat applied, so the
//! registry stays bounded without a separate sweep.
//!
//! | key | value |
//! | --- | --- |
//! | `worker/{id}` | [`StoredWorker`] |

use serde::{Deserialize, Serialize};

use crate::error::{ApplyResult, DomainError};
use crate::machine::Ctx;
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

/// Most registered workers.
pub const WORKERS_MAX: usize = 1_000;
/// Most environment keys one heartbeat reports.
pub const WARM_KEYS_MAX: usize = 1_000;
/// A worker whose last heartbeat is older than this gets no invocations.
pub const LIVE_FOR_MS: u64 = 10_000;
/// A worker silent for this long is removed from the registry.
pub const FORGET_AFTER_MS: u64 = 600_000;
/// Heartbeat period asked of workers.
pub const HEARTBEAT_MS: u64 = 1_000;
/// An unchanged heartbeat is committed at most this often.
pub const REFRESH_MS: u64 = 3_000;

/// Environments a worker holds for one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Warm {
    /// Environment key (function, version, revision, code, settings).
    pub key: String,
    /// Idle and ready.
    pub idle: u32,
    /// Starting or running an invocation.
    pub busy: u32,
}

/// What a worker reports about itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Its id.
    pub id: String,
    /// `host:port` of its `WorkerHost` service.
    pub address: String,
    /// Memory offered to functions, MB.
    pub memory_mb: u64,
    /// Memory its environments are sized for, MB.
    pub memory_used_mb: u64,
    /// Invocations running.
    pub running: u32,
    /// Its environments.
    pub warm: Vec<Warm>,
}

impl Heartbeat {
    /// Checks the report's fields.
    pub fn validate(&self) -> Result<(), DomainError> {
        sluice_worker::validate_id(&self.id).map_err(|e| DomainError::invalid("worker_id", e))?;
        if self.address.is_empty() || self.address.len() > 256 || !self.address.contains(':') {
            return Err(DomainError::invalid(
                "address",
                "must be host:port, at most 256 characters",
            ));
        }
        if self.warm.len() > WARM_KEYS_MAX {
            return Err(DomainError::invalid(
                "warm",
                format!(
                    "at most {WARM_KEYS_MAX} environment keys, got {}",
                    self.warm.len()
                ),
            ));
        }
        if let Some(w) = self
            .warm
            .iter()
            .find(|w| w.key.is_empty() || w.key.len() > 512)
        {
            return Err(DomainError::invalid(
                "warm.key",
                format!("must be 1-512 characters, got {} characters", w.key.len()),
            ));
        }
        Ok(())
    }
}

/// A registered worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerRecord {
    /// Its last report.
    pub report: Heartbeat,
    /// State-machine time of its last committed heartbeat.
    pub last_seen_ms: u64,
}

/// The stored form (variants are only appended).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StoredWorker {
    /// The first form.
    V1(WorkerRecord),
}

fn key(id: &str) -> Vec<u8> {
    Key::new("worker").str(id).build()
}

/// Every registered worker, by id.
pub fn list(state: &dyn StateRead) -> ApplyResult<Vec<WorkerRecord>> {
    let stored: Vec<StoredWorker> =
        crate::store::records_under(state, &Key::new("worker").build())?;
    Ok(stored.into_iter().map(|StoredWorker::V1(w)| w).collect())
}

/// One worker's record.
pub fn load(state: &dyn StateRead, id: &str) -> ApplyResult<Option<WorkerRecord>> {
    let k = key(id);
    match state.get(&k)? {
        None => Ok(None),
        Some(b) => {
            let StoredWorker::V1(w) = crate::store::codec::decode(&k, &b)?;
            Ok(Some(w))
        }
    }
}

/// Applies a heartbeat: records the worker, and forgets the workers silent
/// for [`FORGET_AFTER_MS`].
pub fn heartbeat(txn: &mut Txn<'_>, ctx: &Ctx, report: &Heartbeat) -> ApplyResult<()> {
    report.validate()?;
    let all = list(txn)?;
    for w in &all {
        if w.report.id != report.id && w.last_seen_ms + FORGET_AFTER_MS < ctx.now_ms {
            txn.delete(key(&w.report.id));
        }
    }
    let known = all.iter().any(|w| w.report.id == report.id);
    if !known && all.len() >= WORKERS_MAX {
        return Err(DomainError::limit(
            "LimitExceeded",
            format!("the cluster has {WORKERS_MAX} workers registered, the most it takes"),
        )
        .into());
    }
    txn.put_record(
        key(&report.id),
        &StoredWorker::V1(WorkerRecord {
            report: report.clone(),
            last_seen_ms: ctx.now_ms,
        }),
    );
    Ok(())
}

/// Applies a worker's leave (a worker not registered is fine: nothing to
/// do).
pub fn leave(txn: &mut Txn<'_>, id: &str) -> ApplyResult<()> {
    txn.delete(key(id));
    Ok(())
}

/// Whether `w` gets invocations at `now_ms` (the reading node's clock).
pub fn is_live(w: &WorkerRecord, now_ms: u64) -> bool {
    now_ms.saturating_sub(w.last_seen_ms) < LIVE_FOR_MS
}

/// Whether a new report must be committed, or the stored record says the
/// same closely enough (keeps an idle cluster from writing a heartbeat per
/// worker per second).
pub fn worth_committing(stored: Option<&WorkerRecord>, report: &Heartbeat, now_ms: u64) -> bool {
    let Some(old) = stored else { return true };
    let shape = |h: &Heartbeat| {
        h.warm
            .iter()
            .map(|w| (w.key.clone(), w.idle > 0))
            .collect::<Vec<_>>()
    };
    old.report.address != report.address
        || old.report.memory_mb != report.memory_mb
        || shape(&old.report) != shape(report)
        || now_ms.saturating_sub(old.last_seen_ms) >= REFRESH_MS
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Query, QueryOutput};
    use crate::testing::{World, T0};

    fn report(id: &str) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            address: "127.0.0.1:7000".into(),
            memory_mb: 1024,
            memory_used_mb: 0,
            running: 0,
            warm: vec![],
        }
    }

    fn workers(w: &World) -> Vec<WorkerRecord> {
        match w.query(Query::ListWorkers).unwrap() {
            QueryOutput::Workers(ws) => ws,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn heartbeats_register_refresh_and_forget() {
        let mut w = World::new();
        w.run(Command::WorkerHeartbeat(report("a"))).unwrap();
        w.advance(1);
        w.run(Command::WorkerHeartbeat(report("b"))).unwrap();
        let ws = workers(&w);
        assert_eq!(ws.len(), 2);
        assert!(is_live(&ws[0], T0 + 5_000));
        assert!(!is_live(&ws[0], T0 + LIVE_FOR_MS));
        // b keeps beating; a is forgotten once silent long enough.
        w.advance_ms(FORGET_AFTER_MS - 1_000);
        w.run(Command::WorkerHeartbeat(report("b"))).unwrap();
        assert_eq!(workers(&w).len(), 2);
        w.advance_ms(1);
        w.run(Command::WorkerHeartbeat(report("b"))).unwrap();
        let ws = workers(&w);
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0].report.id, "b");
        assert_eq!(ws[0].last_seen_ms, T0 + FORGET_AFTER_MS + 1);
        w.run(Command::WorkerLeave { id: "b".into() }).unwrap();
        assert!(workers(&w).is_empty());
    }

    #[test]
    fn bad_reports_are_refused_and_change_nothing() {
        let mut w = World::new();
        let e = w.run(Command::WorkerHeartbeat(report("a b"))).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("worker_id"));
        let mut bad = report("a");
        bad.address = "nowhere".into();
        let e = w.run(Command::WorkerHeartbeat(bad)).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("address"));
        assert!(workers(&w).is_empty());
    }

    #[test]
    fn unchanged_reports_are_committed_only_to_refresh() {
        let stored = WorkerRecord {
            report: report("a"),
            last_seen_ms: 10_000,
        };
        assert!(worth_committing(None, &report("a"), 0));
        assert!(!worth_committing(Some(&stored), &report("a"), 11_000));
        assert!(worth_committing(
            Some(&stored),
            &report("a"),
            10_000 + REFRESH_MS
        ));
        let mut warmer = report("a");
        warmer.warm.push(Warm {
            key: "k".into(),
            idle: 1,
            busy: 0,
        });
        assert!(worth_committing(Some(&stored), &warmer, 11_000));
    }
}
