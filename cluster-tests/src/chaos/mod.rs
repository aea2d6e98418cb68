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
