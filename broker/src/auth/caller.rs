//! Who made a call, as the guard layer established it; handlers find it in
//! the request's extensions.

use std::sync::Arc;

use sluice_security::policy::{self, Decision, Policy};

use crate::iam::{Kind, Principal};
use crate::identity::Identity;
use crate::node_id::NodeId;

/// Owners of worker records that are nodes start with this.
pub const NODE_OWNER: &str = "node/";

/// How a principal proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// A request signed with this access key.
    AccessKey(String),
    /// A client certificate whose subject names the principal.
    Certificate,
}

/// A stored principal with its policies parsed.
#[derive(Debug)]
pub struct Resolved {
    /// The principal.
    pub principal: Principal,
    /// Its attached policies.
    pub policies: Vec<Policy>,
}

/// The caller of one request.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Nobody in particular: authentication is off (the development mode,
    /// or `--insecure`), and anything goes.
    Anonymous,
    /// The administrator whose access key each node's configuration holds.
    Admin {
        /// The key it signed with.
        access_key_id: String,
    },
    /// Another node of the cluster (or this node's own worker).
    Node(NodeId),
    /// A stored principal.
    Principal(Arc<Resolved>, Proof),
}

impl Caller {
    /// The name it goes by in logs and in worker records.
    pub fn name(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Admin { .. } => "admin".into(),
            Caller::Node(id) => format!("node-{id}"),
            Caller::Principal(r, _) => r.principal.name.clone(),
        }
    }

    /// Who owns what it registers (a worker record): unambiguous across
    /// kinds (`principal/NAME`, `node/ID`, `admin`, `anonymous`; principal
    /// names cannot hold `/`).
    pub fn owner(&self) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Admin { .. } => "admin".into(),
            Caller::Node(id) => format!("{NODE_OWNER}{id}"),
            Caller::Principal(r, _) => format!("principal/{}", r.principal.name),
        }
    }

    /// What kind of caller: `anonymous`, `admin`, `node`, `user` or `worker`.
    pub fn kind(&self) -> &'static str {
        match self {
            Caller::Anonymous => "anonymous",
            Caller::Admin { .. } => "admin",
            Caller::Node(_) => "node",
            Caller::Principal(r, _) => r.principal.kind.as_str(),
        }
    }

    /// Its ARN, as AWS names the caller in an access-denied message.
    pub fn arn(&self, id: &Identity) -> String {
        match self {
            Caller::Anonymous => "anonymous".into(),
            Caller::Admin { .. } => format!("arn:aws:iam::{}:root", id.account_id),
            Caller::Node(n) => format!("arn:aws:sluice:{}:{}:node/{n}", id.region, id.account_id),
            Caller::Principal(r, _) => id.principal_arn(&r.principal.name),
        }
    }

    /// The access key it signed with, if it signed.
    pub fn access_key_id(&self) -> Option<&str> {
        match self {
            Caller::Admin { access_key_id } => Some(access_key_id),
            Caller::Principal(_, Proof::AccessKey(k)) => Some(k),
            _ => None,
        }
    }

    /// Whether the workers API takes it: worker principals, and nodes (their
    /// in-process workers). Without authentication anyone is taken.
    pub fn is_worker(&self) -> bool {
        match self {
            Caller::Anonymous | Caller::Node(_) => true,
            Caller::Principal(r, _) => r.principal.kind == Kind::Worker,
            Caller::Admin { .. } => false,
        }
    }

    /// Whether it may do `action` to `resource`.
    pub fn decide(&self, action: &str, resource: &str) -> Decision {
        match self {
            Caller::Anonymous | Caller::Admin { .. } | Caller::Node(_) => Decision::Allow,
            Caller::Principal(r, _) => policy::decide(&r.policies, action, resource),
        }
    }

    /// Whether its permissions depend on the resource (so the guard must
    /// read it from the request).
    pub fn policy_bound(&self) -> bool {
        matches!(self, Caller::Principal(..))
    }
}
