//! Jepsen-style chaos testing of a Sluice cluster: nodes as separate hosts
//! (network namespaces on a private bridge), a nemesis injecting faults on
//! a seeded random schedule, clients recording a history of every
//! operation, and checkers judging the history against the model
//! afterwards.

pub mod checkers;
pub mod history;
