//! The Sluice state machine, free of I/O.
//!
//! This crate holds what every replica computes the same way: the command
//! model ([`command`]), the deterministic apply ([`machine`]) and the domain
//! modules it dispatches into ([`queues`], [`topics`], [`streams`],
//! [`functions`], [`mappings`], [`events`], [`iam`], [`workers`]), over the storage
//! boundary of [`store`]. It depends on no async runtime, gRPC, Raft library,
//! storage engine or metrics crate, so Cargo enforces the layering: the
//! broker (`sluice-broker`) adds the engines, Raft, routing and the API
//! around it.
//!
//! The layers, from the inside out:
//!
//! * [`store`]: read access ([`store::StateRead`]), the per-command
//!   overlay ([`store::Txn`]), encodings and keys;
//! * [`apply`]: what a command sees besides the store (the clock) and what it
//!   reports outside (effects, fired after commit);
//! * the domain modules: one per service, each its own commands, rules and
//!   records;
//! * [`command`] and [`machine`]: the replicated command model and its
//!   dispatch into the domains.
//!
//! `docs/architecture.md` draws the crate graph and lists the modules.

pub mod apply;
pub mod command;
pub mod error;
pub mod events;
pub use sluice_filter as filter;
pub mod functions;
pub mod iam;
pub mod invariant;
pub mod limits;
pub mod machine;
pub mod mappings;
pub mod names;
pub mod operation;
pub mod queues;
pub mod schedules;
#[cfg(test)]
mod simulation;
pub mod store;
pub mod streams;
pub mod tags;
pub mod testing;
pub mod time;
pub mod topics;
pub mod workers;
