//! The linearizability checker of resource creation, deletion and lookup.
//!
//! Each resource name is a register holding "present" or "absent",
//! initially absent, judged on its own (linearizability is compositional).
//! It looks at [`Call::Create`], [`Call::Remove`] and [`Call::Get`]
//! operations (counted as "ok", "fail" and "unknown"):
//!
//! - `Create` always succeeds: `Ok` makes the resource present.
//! - `Remove` `Ok` requires it present and makes it absent. A `Fail` whose
//!   code is `QueueDoesNotExist` or contains `NotFound` or `DoesNotExist`
//!   observed it absent and changed nothing: a definite outcome, placed in
//!   its interval like an `Ok`.
//! - `Get` `Ok` with `Exists { present }` observed `present`.
//! - Any other `Fail` did not happen; a `Get` of unknown outcome tells
//!   nothing. Both are ignored.
//! - A `Create` or `Remove` of unknown outcome may take effect once, at any
//!   time after its invocation, or never.
//!
//! The history of a name is linearizable when every definite operation can
//! be given a point within its interval (invocation to completion), and
//! some of the unknown ones a point after their invocation, such that the
//! register model, taking them in that order, explains every observation.
//!
//! The search is Wing & Gong's, as improved by Lowe: operations in order of
//! invocation; at each step, any operation not yet placed that was invoked
//! before the earliest completion among the definite operations not yet
//! placed may come next; a dead end backtracks; a (placed set, state) pair
//! already explored is not explored again (the set is a bitset). Two
//! reductions keep it small: a lookup consistent with the current state is
//! placed at once (placing a read early never hurts), and of the unknown
//! operations already invoked with the same effect only the earliest is
//! tried (they are interchangeable from then on), and only when it changes
//! the state.
//!
//! Anomalies: **nonlinearizable** (per name that admits no linearization;
//! the description names the shortest failing prefix of its history and
//! the operations that could not come next at the deepest point the
//! search reached) and **undecided** (per name whose search exceeded
//! [`Limits`]; this makes the verdict invalid, as the history was not
//! shown linearizable).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use super::{Tally, Verdict};
use crate::chaos::history::{Call, Op, Outcome, Reply};

/// The anomaly kinds this checker counts.
pub const KINDS: [&str; 2] = ["nonlinearizable", "undecided"];

/// Bounds on the search, so that a pathological history is reported
/// "undecided" rather than hanging the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Search states one name's history may explore.
    pub max_steps: u64,
    /// Wall-clock time the whole check may take; names not decided by then
    /// are undecided.
    pub max_time: Duration,
}

impl Default for Limits {
    /// A million states per name, a minute in all.
    fn default() -> Limits {
        Limits {
            max_steps: 1_000_000,
            max_time: Duration::from_secs(60),
        }
    }
}

/// Judges the resource operations of `ops` with the default [`Limits`].
/// See the module documentation for the rules.
pub fn check(ops: &[Op]) -> Verdict {
    check_with(ops, Limits::default())
}

/// Judges the resource operations of `ops` within `limits`.
pub fn check_with(ops: &[Op], limits: Limits) -> Verdict {
    let deadline = Instant::now() + limits.max_time;
    let mut tally = Tally::new("linear", &KINDS);
    let mut by_name: BTreeMap<&str, Vec<Entry>> = BTreeMap::new();
    for op in ops {
        let name = match &op.call {
            Call::Create { name } | Call::Remove { name } | Call::Get { name } => name,
            _ => continue,
        };
        tally.outcome(&op.outcome);
        if let Some(e) = Entry::of(op) {
            by_name.entry(name).or_default().push(e);
        }
    }
    for (name, mut entries) in by_name {
        entries.sort_by_key(|e| (e.invoke, e.complete));
        match search(&entries, limits.max_steps, deadline) {
            Search::Linearizable => {}
            Search::Undecided { steps } => tally.anomaly(
                "undecided",
                format!(
                    "{name}: gave up after {steps} search states over {} operations",
                    entries.len()
                ),
            ),
            Search::Not(failure) => {
                let description = explain(name, &entries, failure, limits.max_steps, deadline);
                tally.anomaly("nonlinearizable", description);
            }
        }
    }
    tally.finish()
}

/// What an operation does to the register, and what it requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// An acknowledged create: makes it present.
    Create,
    /// An acknowledged remove: requires present, makes it absent.
    Remove,
    /// A remove refused as not found: requires absent.
    Absent,
    /// A lookup that returned this.
    Read(bool),
    /// A create of unknown outcome.
    MaybeCreate,
    /// A remove of unknown outcome: if it took effect, it is absent after.
    MaybeRemove,
}

impl Effect {
    /// The state after this effect from `state`, if allowed. Unknown
    /// operations are only applied where they change the state.
    fn apply(self, state: bool) -> Option<bool> {
        match self {
            Effect::Create => Some(true),
            Effect::Remove | Effect::MaybeRemove => state.then_some(false),
            Effect::Absent => (!state).then_some(false),
            Effect::Read(p) => (p == state).then_some(state),
            Effect::MaybeCreate => (!state).then_some(true),
        }
    }

    /// True for operations that must be placed.
    fn required(self) -> bool {
        !matches!(self, Effect::MaybeCreate | Effect::MaybeRemove)
    }

    /// True for operations that do not change the state.
    fn pure(self) -> bool {
        matches!(self, Effect::Read(_) | Effect::Absent)
    }
}

/// One operation of a name, as the search sees it.
#[derive(Debug, Clone)]
struct Entry<'a> {
    op: &'a Op,
    effect: Effect,
    invoke: u64,
    /// `u64::MAX` for an unknown outcome.
    complete: u64,
}

impl<'a> Entry<'a> {
    /// The entry of `op`, or None when it tells nothing.
    fn of(op: &'a Op) -> Option<Entry<'a>> {
        let effect = match (&op.call, &op.outcome) {
            (Call::Create { .. }, Outcome::Ok { .. }) => Effect::Create,
            (Call::Create { .. }, Outcome::Unknown { .. }) => Effect::MaybeCreate,
            (Call::Remove { .. }, Outcome::Ok { .. }) => Effect::Remove,
            (Call::Remove { .. }, Outcome::Fail { code, .. }) if not_found(code) => Effect::Absent,
            (Call::Remove { .. }, Outcome::Unknown { .. }) => Effect::MaybeRemove,
            (
                Call::Get { .. },
                Outcome::Ok {
                    reply: Reply::Exists { present },
                },
            ) => Effect::Read(*present),
            _ => return None,
        };
        Some(Entry {
            op,
            effect,
            invoke: op.invoke_ns,
            complete: if effect.required() {
                op.complete_ns
            } else {
                u64::MAX
            },
        })
    }

    /// For a person: what, by whom, when.
    fn describe(&self) -> String {
        let what = match self.effect {
            Effect::Create => "create ok",
            Effect::Remove => "remove ok",
            Effect::Absent => "remove -> not found",
            Effect::Read(true) => "get -> present",
            Effect::Read(false) => "get -> absent",
            Effect::MaybeCreate => "create unknown",
            Effect::MaybeRemove => "remove unknown",
        };
        format!(
            "{what} (process {}, {}..{} ns)",
            self.op.process, self.op.invoke_ns, self.op.complete_ns
        )
    }
}

/// True for the codes of a remove that found nothing to remove.
fn not_found(code: &str) -> bool {
    code == "QueueDoesNotExist" || code.contains("NotFound") || code.contains("DoesNotExist")
}

/// A set of entry indices, plus the register's state in the last bit: the
/// search's memo key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key(Box<[u64]>);

impl Key {
    fn new(n: usize) -> Key {
        Key(vec![0; (n + 1).div_ceil(64)].into_boxed_slice())
    }

    fn has(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }

    /// This set plus `i`, with `state`.
    fn with(&self, i: usize, n: usize, state: bool) -> Key {
        let mut k = self.with_state(n, state);
        k.0[i / 64] |= 1 << (i % 64);
        k
    }

    /// This set with `state` (kept in bit `n`).
    fn with_state(&self, n: usize, state: bool) -> Key {
        let mut k = self.clone();
        if state {
            k.0[n / 64] |= 1 << (n % 64);
        } else {
            k.0[n / 64] &= !(1 << (n % 64));
        }
        k
    }
}

/// Where the search got furthest: how many required operations it placed,
/// the state then, the last operations placed, and those that could not
/// come next.
#[derive(Debug, Clone)]
struct Failure {
    placed: usize,
    state: bool,
    last: Vec<usize>,
    blocked: Vec<usize>,
}

/// The result of a search.
#[derive(Debug)]
enum Search {
    Linearizable,
    Not(Failure),
    Undecided { steps: u64 },
}

/// One search state on the stack.
struct Frame {
    key: Key,
    state: bool,
    /// How many unknown creates and removes were placed: always the
    /// earliest invoked ones.
    used: (usize, usize),
    /// Required operations placed.
    placed: usize,
    /// The operation placed to get here.
    applied: Option<usize>,
    /// The operations to try next, and how many were tried.
    next: Vec<usize>,
    tried: usize,
}

/// The operations of a name as the search uses them: entries sorted by
/// invocation, and the unknown creates and removes in that order.
struct Problem<'e, 'a> {
    entries: &'e [Entry<'a>],
    creates: Vec<usize>,
    removes: Vec<usize>,
    required: usize,
}

impl<'e, 'a> Problem<'e, 'a> {
    fn new(entries: &'e [Entry<'a>]) -> Problem<'e, 'a> {
        let of = |effect| {
            (0..entries.len())
                .filter(|&i| entries[i].effect == effect)
                .collect()
        };
        Problem {
            entries,
            creates: of(Effect::MaybeCreate),
            removes: of(Effect::MaybeRemove),
            required: entries.iter().filter(|e| e.effect.required()).count(),
        }
    }

    /// The earliest completion of a required operation not yet placed:
    /// whatever comes next was invoked by then.
    fn horizon(&self, key: &Key) -> u64 {
        (0..self.entries.len())
            .filter(|&i| !key.has(i) && self.entries[i].effect.required())
            .map(|i| self.entries[i].complete)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// The operations that may come next from (`key`, `state`, `used`):
    /// required ones not yet placed, invoked by the horizon and allowed
    /// from `state`, and the next unknown create or remove if invoked by
    /// then and it changes the state. A lookup allowed now is placed alone.
    fn candidates(&self, key: &Key, state: bool, used: (usize, usize)) -> Vec<usize> {
        let horizon = self.horizon(key);
        let mut out = Vec::new();
        for (i, e) in self.entries.iter().enumerate() {
            if e.invoke > horizon {
                break;
            }
            if key.has(i) || !e.effect.required() || e.effect.apply(state).is_none() {
                continue;
            }
            if e.effect.pure() {
                return vec![i];
            }
            out.push(i);
        }
        let unknown = if state {
            self.removes.get(used.1)
        } else {
            self.creates.get(used.0)
        };
        if let Some(&i) = unknown.filter(|&&i| self.entries[i].invoke <= horizon) {
            out.push(i);
        }
        out
    }

    /// The required operations not yet placed invoked by the horizon: the
    /// ones that could not come next where the search got stuck.
    fn pending(&self, key: &Key) -> Vec<usize> {
        let horizon = self.horizon(key);
        (0..self.entries.len())
            .filter(|&i| {
                let e = &self.entries[i];
                !key.has(i) && e.effect.required() && e.invoke <= horizon
            })
            .collect()
    }
}

/// Searches for a linearization of `entries` (sorted by invocation).
///
/// The memo keeps, per (required operations placed, state), the numbers of
/// unknown creates and removes used on the ways explored: a way that used
/// at least as many of each is no better (the unused ones stay available
/// for ever), so it is not explored again.
fn search(entries: &[Entry], max_steps: u64, deadline: Instant) -> Search {
    let problem = Problem::new(entries);
    let n = entries.len();
    let root = Key::new(n);
    let mut seen: HashMap<Key, Vec<(usize, usize)>> = HashMap::new();
    seen.insert(root.clone(), vec![(0, 0)]);
    let mut stack = vec![Frame {
        next: problem.candidates(&root, false, (0, 0)),
        key: root,
        state: false,
        used: (0, 0),
        placed: 0,
        applied: None,
        tried: 0,
    }];
    let mut best = Failure {
        placed: 0,
        state: false,
        last: Vec::new(),
        blocked: Vec::new(),
    };
    let mut best_key = stack[0].key.clone();
    let mut steps = 0u64;
    while let Some(top) = stack.last_mut() {
        if top.placed == problem.required {
            return Search::Linearizable;
        }
        let Some(&i) = top.next.get(top.tried) else {
            stack.pop();
            continue;
        };
        top.tried += 1;
        let effect = entries[i].effect;
        let state = effect.apply(top.state).expect("candidates are allowed");
        let (key, used) = match effect {
            Effect::MaybeCreate => (top.key.with_state(n, state), (top.used.0 + 1, top.used.1)),
            Effect::MaybeRemove => (top.key.with_state(n, state), (top.used.0, top.used.1 + 1)),
            _ => (top.key.with(i, n, state), top.used),
        };
        let ways = seen.entry(key.clone()).or_default();
        if ways.iter().any(|&(c, r)| c <= used.0 && r <= used.1) {
            continue;
        }
        ways.retain(|&(c, r)| !(used.0 <= c && used.1 <= r));
        ways.push(used);
        steps += 1;
        if steps > max_steps || (steps & 0xff == 0 && Instant::now() > deadline) {
            return Search::Undecided { steps };
        }
        let placed = top.placed + usize::from(effect.required());
        let frame = Frame {
            next: problem.candidates(&key, state, used),
            key,
            state,
            used,
            placed,
            applied: Some(i),
            tried: 0,
        };
        if placed > best.placed {
            best.placed = placed;
            best.state = state;
            best_key = frame.key.clone();
            let path: Vec<usize> = stack.iter().filter_map(|f| f.applied).chain([i]).collect();
            best.last = path[path.len().saturating_sub(3)..].to_vec();
        }
        stack.push(frame);
    }
    best.blocked = problem.pending(&best_key);
    Search::Not(best)
}

/// The first `t` ns of `entries`: operations invoked by then, those that
/// completed later made unknown (lookups and not-found removes, which
/// change nothing, dropped).
fn prefix<'a>(entries: &[Entry<'a>], t: u64) -> Vec<Entry<'a>> {
    entries
        .iter()
        .filter(|e| e.invoke <= t)
        .filter_map(|e| {
            if e.complete <= t {
                return Some(e.clone());
            }
            let effect = match e.effect {
                Effect::Create | Effect::MaybeCreate => Effect::MaybeCreate,
                Effect::Remove | Effect::MaybeRemove => Effect::MaybeRemove,
                Effect::Read(_) | Effect::Absent => return None,
            };
            Some(Entry {
                effect,
                complete: u64::MAX,
                ..e.clone()
            })
        })
        .collect()
}

/// Describes why `name`'s history is not linearizable: the shortest
/// failing prefix (a prefix of a linearizable history is linearizable, so
/// a binary search over completion times finds it), and where the search
/// of that prefix got stuck.
fn explain(
    name: &str,
    entries: &[Entry],
    failure: Failure,
    max_steps: u64,
    deadline: Instant,
) -> String {
    let mut times: Vec<u64> = entries
        .iter()
        .filter(|e| e.effect.required())
        .map(|e| e.complete)
        .collect();
    times.sort_unstable();
    times.dedup();
    // The full history (the prefix up to the last completion) fails; find
    // the first completion time at which the prefix fails. Undecided
    // prefixes count as passing (keeping the window wider, never wrong).
    let (mut lo, mut hi) = (0, times.len().saturating_sub(1));
    let mut sub = entries.to_vec();
    let mut failure = failure;
    while lo < hi {
        let mid = (lo + hi) / 2;
        let p = prefix(entries, times[mid]);
        match search(&p, max_steps, deadline) {
            Search::Not(f) => {
                hi = mid;
                sub = p;
                failure = f;
            }
            _ => lo = mid + 1,
        }
    }
    let t = times.get(hi).copied().unwrap_or(0);
    let list = |ix: &[usize]| {
        ix.iter()
            .take(8)
            .map(|&i| sub[i].describe())
            .collect::<Vec<_>>()
            .join("; ")
    };
    let culprit = entries
        .iter()
        .filter(|e| e.effect.required() && e.complete == t)
        .map(Entry::describe)
        .collect::<Vec<_>>()
        .join("; ");
    let start = failure
        .blocked
        .iter()
        .map(|&i| sub[i].invoke)
        .min()
        .unwrap_or(t);
    format!(
        "{name}: not linearizable; the history up to {t} ns already fails, when {culprit} \
         completes. At best {} of its {} definite operations fit, the last being [{}], \
         leaving it {}; then none of these could come next (window {start}..{t} ns): [{}]",
        failure.placed,
        sub.iter().filter(|e| e.effect.required()).count(),
        list(&failure.last),
        if failure.state { "present" } else { "absent" },
        list(&failure.blocked),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::checkers::testing::{self, passed};
    use crate::chaos::history::testing::{done, op, unknown};

    fn create(name: &str) -> Call {
        Call::Create { name: name.into() }
    }

    fn remove(name: &str) -> Call {
        Call::Remove { name: name.into() }
    }

    fn get(name: &str) -> Call {
        Call::Get { name: name.into() }
    }

    fn exists(present: bool) -> Outcome {
        Outcome::Ok {
            reply: Reply::Exists { present },
        }
    }

    fn fail(code: &str) -> Outcome {
        Outcome::Fail {
            code: code.into(),
            message: "refused".into(),
        }
    }

    /// Only `kind` was found, `n` times.
    fn only(v: &Verdict, kind: &str, n: u64) {
        testing::only(v, &KINDS, kind, n);
    }

    /// A valid history with concurrent and unknown operations, over two
    /// names.
    fn valid_history() -> Vec<Op> {
        vec![
            // The create takes effect between 20 and 30.
            op(1, 0, 100, create("x"), done()),
            op(2, 10, 20, get("x"), exists(false)),
            op(3, 30, 40, get("x"), exists(true)),
            // A remove of unknown outcome that takes effect after 80.
            op(2, 50, 60, remove("x"), unknown()),
            op(4, 70, 80, get("x"), exists(true)),
            op(5, 110, 120, get("x"), exists(false)),
            // A create of unknown outcome that takes effect after 160.
            op(6, 130, 140, create("x"), unknown()),
            op(7, 150, 160, remove("x"), fail("QueueDoesNotExist")),
            op(8, 200, 210, get("x"), exists(true)),
            // Refused for another reason: did not happen.
            op(9, 205, 215, remove("x"), fail("AccessDenied")),
            op(10, 220, 230, remove("x"), done()),
            // Concurrent removes: one succeeds, the other finds nothing.
            op(11, 240, 260, create("x"), done()),
            op(12, 270, 300, remove("x"), done()),
            op(13, 275, 290, remove("x"), fail("ResourceNotFoundException")),
            op(14, 310, 320, get("x"), exists(false)),
            op(15, 315, 330, get("x"), unknown()),
            // Another name, independent.
            op(16, 0, 10, create("y"), done()),
            op(17, 20, 30, get("y"), exists(true)),
        ]
    }

    #[test]
    fn a_valid_history_with_concurrent_and_unknown_operations_passes() {
        passed(&check(&valid_history()), "linear", &KINDS, 12, 3, 3);
    }

    #[test]
    fn a_stale_read_is_caught() {
        let mut h = valid_history();
        h.extend([
            op(20, 0, 10, create("z"), done()),
            op(21, 20, 30, get("z"), exists(true)),
            // Absent after the create was acknowledged, no remove invoked.
            op(22, 40, 50, get("z"), exists(false)),
            op(21, 60, 70, get("z"), exists(true)),
            op(21, 80, 90, remove("z"), done()),
        ]);
        let v = check(&h);
        only(&v, "nonlinearizable", 1);
        let d = &v.anomalies[0];
        assert!(d.contains("z: not linearizable"), "{d}");
        assert!(d.contains("up to 50 ns"), "{d}");
        assert!(d.contains("get -> absent (process 22, 40..50 ns)"), "{d}");
    }

    #[test]
    fn a_lost_create_is_caught() {
        let mut h = valid_history();
        h.extend([
            op(20, 0, 10, create("z"), done()),
            // Nothing else removes it, yet it is not there.
            op(21, 20, 30, remove("z"), fail("QueueDoesNotExist")),
            op(22, 40, 50, get("z"), exists(false)),
        ]);
        let v = check(&h);
        only(&v, "nonlinearizable", 1);
        assert!(v.anomalies[0].contains("up to 30 ns"), "{v:?}");
    }

    #[test]
    fn a_read_concurrent_with_an_unknown_remove_may_see_either() {
        let h = vec![
            op(1, 0, 10, create("x"), done()),
            op(2, 20, 30, remove("x"), unknown()),
            op(3, 40, 50, get("x"), exists(true)),
            op(4, 60, 70, get("x"), exists(false)),
        ];
        assert!(check(&h).valid);
        // But it cannot take effect twice.
        let mut h = h;
        h.extend([
            op(5, 80, 90, create("x"), done()),
            op(6, 100, 110, get("x"), exists(false)),
        ]);
        only(&check(&h), "nonlinearizable", 1);
    }

    #[test]
    fn a_search_over_its_limit_is_undecided() {
        let v = check_with(
            &valid_history(),
            Limits {
                max_steps: 2,
                max_time: Duration::from_secs(60),
            },
        );
        assert!(v.counts["undecided"] >= 1, "{v:?}");
        assert!(!v.valid);
    }

    /// A long history of one name from a simulated register: overlapping
    /// operations, some of unknown outcome; it must pass, quickly.
    #[test]
    fn a_long_concurrent_history_is_decided_quickly() {
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |m: u64| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng % m
        };
        let mut state = false;
        let mut h = Vec::new();
        for k in 0..400u64 {
            // Linearization points 10 ns apart, intervals up to 80 ns wide.
            let at = 100 + 10 * k;
            let invoke = at - next(40);
            let complete = at + next(40);
            let (call, outcome) = match next(3) {
                0 => {
                    state = true;
                    (create("x"), done())
                }
                1 => {
                    let outcome = if state {
                        done()
                    } else {
                        fail("QueueDoesNotExist")
                    };
                    state = false;
                    (remove("x"), outcome)
                }
                _ => (get("x"), exists(state)),
            };
            let outcome = if next(10) == 0 { unknown() } else { outcome };
            h.push(op(k, invoke, complete, call, outcome));
        }
        let limits = Limits {
            max_steps: 200_000,
            max_time: Duration::from_secs(60),
        };
        let started = Instant::now();
        let v = check_with(&h, limits);
        assert!(v.valid, "{v:?}");
        // At the end, the resource flickers more often than the unknown
        // operations could explain: the whole space is searched, and fails.
        h.push(op(1000, 5000, 5010, create("x"), done()));
        for j in 0..60 {
            let at = 5020 + 20 * j;
            h.push(op(1001, at, at + 10, get("x"), exists(j % 2 == 1)));
        }
        let v = check_with(&h, limits);
        only(&v, "nonlinearizable", 1);
        assert!(v.anomalies[0].contains("x: not linearizable"), "{v:?}");
        assert!(started.elapsed() < Duration::from_secs(20));
    }
}
