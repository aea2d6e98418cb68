//! The registry of worker nodes, in the replicated state.
//!
//! A worker's heartbeat, committed as a command, records where it is
//! reached, what memory it offers and which environments it holds, stamped
//! with the state machine's clock. Every node reads the registry to route
//! invocations; whether a worker is live is judged at the edge, by the
//! reading node's clock ([`is_live`]). Records not refreshed for
//! [`FORGET_AFTER_MS`] are removed by later heartbeats (a few per
//! heartbeat, oldest first, through an index by last heartbeat), so the
//! registry stays bounded without a separate sweep and each heartbeat's
//! cost is bounded.
//!
//! | key | value |
//! | --- | --- |
//! | `worker/{id}` | [`StoredWorker`] |
//! | `wseen/{last seen ms}/{id}` | `()`: workers by last heartbeat |
//! | `wcount` | `u64`: workers registered |

use serde::{Deserialize, Serialize};

use crate::apply::{Ctx, Effect};
use crate::error::{ApplyResult, DomainError};
use crate::operation::operations;
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

/// Most registered workers.
pub const WORKERS_MAX: usize = 1_000;
/// Most environment keys one heartbeat reports.
pub const WARM_KEYS_MAX: usize = 256;
/// Longest environment key, bytes.
pub const WARM_KEY_BYTES: usize = 256;
/// Silent workers forgotten per heartbeat, at most.
const FORGET_PER_HEARTBEAT: usize = 8;
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
    /// Starting for or running an invocation.
    pub busy: u32,
    /// Starting ahead of demand (not ready yet).
    pub starting: u32,
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
    /// The principal that registered it (set by the node from the caller,
    /// never taken from the request): only it may refresh or remove the
    /// record.
    pub owner: String,
    /// SHA-256 (hex) of the certificate its `WorkerHost` serves TLS with;
    /// nodes accept no other. Empty: it serves plain gRPC (only on clusters
    /// without TLS).
    pub tls_fingerprint: String,
}

impl Heartbeat {
    /// Checks the report's fields.
    pub fn validate(&self) -> Result<(), DomainError> {
        validate_id(&self.id).map_err(|e| DomainError::invalid("worker_id", e))?;
        if self.address.is_empty() || self.address.len() > 256 || !self.address.contains(':') {
            return Err(DomainError::invalid(
                "address",
                "must be host:port, at most 256 characters",
            ));
        }
        if self.owner.is_empty() || self.owner.len() > 128 {
            return Err(DomainError::invalid("owner", "must be 1-128 bytes"));
        }
        if !self.tls_fingerprint.is_empty()
            && (self.tls_fingerprint.len() != 64
                || !self.tls_fingerprint.bytes().all(|b| b.is_ascii_hexdigit()))
        {
            return Err(DomainError::invalid(
                "tls_certificate_sha256",
                "must be empty or 64 hexadecimal digits",
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
            .find(|w| w.key.is_empty() || w.key.len() > WARM_KEY_BYTES)
        {
            return Err(DomainError::invalid(
                "warm.key",
                format!(
                    "must be 1-{WARM_KEY_BYTES} bytes, got {} bytes",
                    w.key.len()
                ),
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

fn seen_key(last_seen_ms: u64, id: &str) -> Vec<u8> {
    Key::new("wseen").u64(last_seen_ms).str(id).build()
}

fn count_key() -> Vec<u8> {
    Key::new("wcount").build()
}

fn count(state: &dyn StateRead) -> ApplyResult<u64> {
    Ok(crate::store::record_at(state, &count_key())?.unwrap_or(0))
}

/// Every registered worker, by id.
pub fn list(state: &dyn StateRead) -> ApplyResult<Vec<WorkerRecord>> {
    let stored: Vec<StoredWorker> =
        crate::store::records_under(state, &Key::new("worker").build())?;
    Ok(stored.into_iter().map(|StoredWorker::V1(w)| w).collect())
}

/// One worker's record.
pub fn load(state: &dyn StateRead, id: &str) -> ApplyResult<Option<WorkerRecord>> {
    Ok(crate::store::record_at(state, &key(id))?.map(|StoredWorker::V1(w)| w))
}

/// Applies a heartbeat: records the worker, and forgets a few of the
/// workers silent for [`FORGET_AFTER_MS`] (oldest first).
pub fn heartbeat(txn: &mut Txn<'_>, ctx: &Ctx, report: &Heartbeat) -> ApplyResult<()> {
    report.validate()?;
    let mut n = count(txn)?;
    let cutoff = ctx.now_ms.saturating_sub(FORGET_AFTER_MS);
    let space = Key::new("wseen").build();
    let mut silent = Vec::new();
    for kv in txn.scan_prefix(&space) {
        let (k, _) = kv?;
        let at = crate::store::keys::read_u64(&k, space.len()).unwrap_or(u64::MAX);
        if at >= cutoff || silent.len() >= FORGET_PER_HEARTBEAT {
            break;
        }
        silent.push(k);
    }
    for k in silent {
        let id = crate::store::keys::read_str(&k, space.len() + 8)
            .map(|(id, _)| id.to_string())
            .unwrap_or_default();
        if id != report.id && load(txn, &id)?.is_some() {
            txn.delete(key(&id));
            crate::invariant::decrement(&mut n, "workers");
        }
        txn.delete(k);
    }
    match load(txn, &report.id)? {
        Some(old) if old.report.owner != report.owner => return Err(not_owner(&report.id).into()),
        Some(old) => txn.delete(seen_key(old.last_seen_ms, &report.id)),
        None if n >= WORKERS_MAX as u64 => {
            return Err(DomainError::limit(
                "LimitExceeded",
                format!("the cluster has {WORKERS_MAX} workers registered, the most it takes"),
            )
            .into())
        }
        None => n += 1,
    }
    txn.put_record(
        key(&report.id),
        &StoredWorker::V1(WorkerRecord {
            report: report.clone(),
            last_seen_ms: ctx.now_ms,
        }),
    );
    txn.put_record(seen_key(ctx.now_ms, &report.id), &());
    txn.put_record(count_key(), &n);
    Ok(())
}

fn not_owner(id: &str) -> DomainError {
    DomainError::denied(
        "AccessDenied",
        format!("worker_id: worker {id} was registered by another principal; a worker may only refresh or remove itself"),
    )
}

/// Applies a worker's leave, asked by `owner` (a worker not registered is
/// fine: nothing to do).
pub fn leave(txn: &mut Txn<'_>, id: &str, owner: &str) -> ApplyResult<()> {
    if let Some(w) = load(txn, id)? {
        if w.report.owner != owner {
            return Err(not_owner(id).into());
        }
        txn.delete(key(id));
        txn.delete(seen_key(w.last_seen_ms, id));
        let mut n = count(txn)?;
        crate::invariant::decrement(&mut n, "workers");
        txn.put_record(count_key(), &n);
    }
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

/// Checks a worker id: 1-128 characters of `[A-Za-z0-9._-]`.
pub fn validate_id(id: &str) -> Result<(), String> {
    if !crate::names::is_valid(id, 128, "._-") {
        return Err(format!(
            "worker id {id:?}: must be 1-128 characters of letters, digits, '.', '_' and '-'"
        ));
    }
    Ok(())
}

/// Checks the workers' invariant: the stored count (which caps
/// registrations) equals the worker records.
pub fn check(state: &dyn StateRead) -> Result<(), crate::invariant::CheckError> {
    let records = state.scan_prefix(&Key::new("worker").build()).count() as u64;
    let counted = count(state)?;
    crate::invariant::ensure(records == counted, "workers", || {
        format!("{counted} workers counted, {records} registered")
    })?;
    Ok(())
}

operations! {
    impl Heartbeat applies -> () = |op, txn, ctx, effects| {
        heartbeat(txn, ctx, op)?;
        effects.push(Effect::WorkersChanged);
        Ok(())
    };

    /// A worker stops.
    pub struct WorkerLeave {
        /// Worker id.
        pub id: String,
        /// Who asks (must be who registered it).
        pub owner: String,
    }
    applies -> () = |txn, _, _| leave(txn, id, owner);
}

/// The registered workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListWorkers;

operations! {
    impl ListWorkers reads -> Vec<WorkerRecord> = |_, state| crate::workers::list(state);
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::testing::{World, T0};

    fn report(id: &str) -> Heartbeat {
        Heartbeat {
            id: id.into(),
            address: "127.0.0.1:7000".into(),
            memory_mb: 1024,
            memory_used_mb: 0,
            running: 0,
            warm: vec![],
            owner: "w".into(),
            tls_fingerprint: String::new(),
        }
    }

    /// Worker `id` leaves, asked by principal `owner`.
    fn leave(w: &mut World, id: &str, owner: &str) -> Result<(), DomainError> {
        w.run(crate::workers::WorkerLeave {
            id: id.into(),
            owner: owner.into(),
        })
    }

    fn workers(w: &World) -> Vec<WorkerRecord> {
        w.ask(crate::workers::ListWorkers).unwrap()
    }

    #[test]
    fn heartbeats_register_refresh_and_forget() {
        let mut w = World::new();
        w.run(report("a")).unwrap();
        w.advance(1);
        w.run(report("b")).unwrap();
        let ws = workers(&w);
        assert_eq!(ws.len(), 2);
        assert!(is_live(&ws[0], T0 + 5_000));
        assert!(!is_live(&ws[0], T0 + LIVE_FOR_MS));
        // b keeps beating; a is forgotten once silent long enough.
        w.advance_ms(FORGET_AFTER_MS - 1_000);
        w.run(report("b")).unwrap();
        assert_eq!(workers(&w).len(), 2);
        w.advance_ms(1);
        w.run(report("b")).unwrap();
        let ws = workers(&w);
        assert_eq!(ws.len(), 1);
        assert_eq!(ws[0].report.id, "b");
        assert_eq!(ws[0].last_seen_ms, T0 + FORGET_AFTER_MS + 1);
        leave(&mut w, "b", "w").unwrap();
        assert!(workers(&w).is_empty());
    }

    #[test]
    fn the_cap_counts_live_records_and_silent_ones_make_room() {
        let mut w = World::new();
        for i in 0..WORKERS_MAX {
            w.run(report(&format!("w{i}"))).unwrap();
        }
        let e = w.run(report("late")).unwrap_err();
        assert_eq!(e.code, "LimitExceeded");
        // A known worker still beats at the cap.
        w.run(report("w7")).unwrap();
        // Once the others are silent long enough, a heartbeat forgets a few
        // of them (a bounded number) and the newcomer fits.
        w.advance_ms(FORGET_AFTER_MS + 1);
        w.run(report("late")).unwrap();
        let ws = workers(&w);
        assert_eq!(ws.len(), WORKERS_MAX + 1 - FORGET_PER_HEARTBEAT);
        assert!(ws.iter().any(|r| r.report.id == "late"));
        assert!(ws.iter().any(|r| r.report.id == "w7"));
        leave(&mut w, "late", "w").unwrap();
        leave(&mut w, "late", "w").unwrap();
        assert_eq!(workers(&w).len(), WORKERS_MAX - FORGET_PER_HEARTBEAT);
    }

    #[test]
    fn only_the_principal_that_registered_a_worker_refreshes_or_removes_it() {
        let mut w = World::new();
        w.run(report("a")).unwrap();
        let mut rogue = report("a");
        rogue.owner = "mallory".into();
        rogue.address = "10.9.9.9:1".into();
        let e = w.run(rogue).unwrap_err();
        assert_eq!(e.kind, crate::error::ErrorKind::PermissionDenied);
        let e = leave(&mut w, "a", "mallory").unwrap_err();
        assert_eq!(e.code, "AccessDenied");
        let ws = workers(&w);
        assert_eq!(ws.len(), 1);
        assert_eq!(
            ws[0].report.address, "127.0.0.1:7000",
            "the record is untouched"
        );
        leave(&mut w, "a", "w").unwrap();
        assert!(workers(&w).is_empty());
    }

    #[test]
    fn bad_reports_are_refused_and_change_nothing() {
        let mut w = World::new();
        let e = w.run(report("a b")).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("worker_id"));
        let mut bad = report("a");
        bad.address = "nowhere".into();
        let e = w.run(bad).unwrap_err();
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
            starting: 0,
        });
        assert!(worth_committing(Some(&stored), &warmer, 11_000));
    }
}
