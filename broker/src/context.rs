//! What every service of a node shares: the router, the node's identity
//! and security, the function dispatcher. Built once by the node and
//! cloned into each service; the API adds its call helpers
//! ([`crate::api`]), and the leader's background runners use it as it is.

use std::sync::Arc;

use crate::identity::Identity;
use crate::raft::Timing;
use crate::router::Router;

/// What every service of a node shares.
#[derive(Clone)]
pub struct Context {
    /// Routes calls to the leader.
    pub router: Router,
    /// Region and account for ARNs.
    pub identity: Identity,
    /// The address other nodes and clients reach this node at.
    pub advertise: String,
    /// Raft timing (leadership transfer waits out the leader lease).
    pub timing: Timing,
    /// Where long polls wait for their queue.
    pub waiters: Arc<crate::waiters::Waiters>,
    /// Routes invocations to workers.
    pub dispatcher: Arc<crate::dispatch::Dispatcher>,
    /// Invocations running by function, for reserved concurrency (counted
    /// by the leader).
    pub slots: Arc<crate::dispatch::Slots>,
    /// The worker running inside this node, if it runs one; its
    /// `WorkerHost` service is served on the cluster listener.
    pub worker: Option<Arc<sluice_worker::Worker>>,
    /// The cluster key and what is derived from it, certificates, and how
    /// to dial other nodes and workers.
    pub security: Arc<crate::auth::NodeSecurity>,
    /// Whether the node's damaged log is being repaired (it may not lead).
    pub repair: Arc<crate::raft::repair::Repair>,
}
