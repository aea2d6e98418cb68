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

// The state machine and its domains live in the core crate; the broker
// names them through these re-exports, so its own modules read as if they
// were local (`crate::queues::...`) while Cargo keeps the core free of I/O.
pub use sluice_core::{
    apply, command, error, events, filter, functions, iam, machine, mappings, queues, schedules,
    streams, tags, testing, topics, workers,
};

pub mod api;
pub mod auth;
pub mod authenticator;
pub mod aws;
pub mod bootstrap;
pub mod clock;
pub mod config;
pub mod context;
pub mod deliverer;
pub mod discovery;
pub mod disk;
pub mod dispatch;
pub mod housekeeper;
pub mod identity;
pub mod invocation;
pub mod invoker;
pub mod lag;
pub mod leases;
pub mod membership;
pub mod metrics;
pub mod node;
pub mod node_id;
pub mod outbound;
pub mod raft;
pub mod router;
pub mod store;
pub mod transfer;
pub mod waiters;
