//! The Sluice broker node.
//!
//! A node replicates every change through Raft ([`raft`], openraft over the
//! [`store`]) and serves the gRPC API ([`api`]). The layers, from the edge in:
//!
//! * [`api`] validates requests, maps errors to gRPC statuses in one place
//!   (`api::status`) and hands commands and queries to the [`router`];
//! * [`router`] runs them on the leader, forwarding from followers;
//! * [`raft`] stamps, replicates and commits commands, then applies them
//!   through [`machine`], the pure and deterministic dispatch into the domain
//!   modules ([`queues`]);
//! * [`store`] is the storage engine boundary.
//!
//! `docs/architecture.md` describes the write path and the invariants.

pub mod api;
pub mod apply;
pub mod auth;
pub mod bootstrap;
pub mod clock;
pub mod command;
pub mod config;
pub mod context;
pub mod deliverer;
pub mod discovery;
pub mod disk;
pub mod dispatch;
pub mod error;
pub use sluice_filter as filter;
pub mod functions;
pub mod housekeeper;
pub mod iam;
pub mod identity;
pub mod invocation;
pub mod invoker;
pub mod lag;
pub mod leases;
pub mod machine;
pub mod mappings;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod outbound;
pub mod queues;
pub mod raft;
pub mod router;
pub mod store;
pub mod streams;
#[cfg(test)]
pub(crate) mod testing;
pub mod topics;
pub mod waiters;
pub mod workers;
