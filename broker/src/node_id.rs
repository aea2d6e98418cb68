//! How nodes are named. A leaf: the transport security below Raft and Raft
//! itself both name nodes.

/// A node's id in the cluster. Positive; unique over the cluster's life.
pub type NodeId = u64;
