//! Jepsen-style chaos testing of a Sluice cluster: nodes as separate hosts
//! (network namespaces on a private bridge), a nemesis injecting faults on
//! a seeded random schedule, clients recording a history of every
//! operation, and checkers judging the history against the model
//! afterwards. [`run::run`] does one run from start to verdict; the
//! `cluster-tests` binary is its command line.

pub mod checkers;
pub mod history;
pub mod nemesis;
pub mod net;
pub mod nodes;
pub mod report;
pub mod run;
pub mod workloads;

/// The one of `all` whose displayed name is `s`, or an error saying that
/// `s` is no known `what` and naming the choices.
pub(crate) fn parse_named<T: Copy + std::fmt::Display>(
    all: &[T],
    s: &str,
    what: &str,
) -> Result<T, String> {
    all.iter()
        .copied()
        .find(|v| v.to_string() == s)
        .ok_or_else(|| {
            let names: Vec<String> = all.iter().map(T::to_string).collect();
            format!("unknown {what} {s:?}; choose from {}", names.join(", "))
        })
}
