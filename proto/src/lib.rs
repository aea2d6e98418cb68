//! Sluice's gRPC API, generated at build time from the `.proto` files in this
//! crate.
//!
//! * [`v1`] is the public API (package `sluice.v1`): one service per resource
//!   kind (`Queues`, `Topics`, `Streams`, `Functions`) and `Cluster`.
//! * [`internal`] holds the node-to-node services (package
//!   `sluice.internal.v1`): the Raft transport and request routing. They are
//!   served on the same port but are not a stable API.

/// The public API, package `sluice.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("sluice.v1");
}

/// Node-to-node services, package `sluice.internal.v1`.
pub mod internal {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("sluice.internal.v1");
}

/// Encoded `FileDescriptorSet` of every Sluice proto file, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));
