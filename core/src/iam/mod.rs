//! Principals, their access keys and the policies attached to them, in the
//! replicated state.
//!
//! A principal is a user or a worker (nodes and the bootstrap administrator
//! are not stored: nodes prove the cluster key, the administrator's access
//! key comes from each node's configuration). It has up to
//! [`KEYS_PER_PRINCIPAL`] access keys, so a key can be rotated without a
//! gap, and up to [`ATTACHED_MAX`] policies: built-in ones ([`builtin`]) or
//! custom documents stored here. Secrets are stored sealed under the cluster
//! key (`sluice_security::seal`): the log, snapshots and the store never see
//! one in clear.
//!
//! Every change bumps a generation counter, so a node can cache what it
//! resolved of a key (its secret opened, its policies parsed) and know with
//! one read whether the cache still holds.
//!
//! | key | value |
//! | --- | --- |
//! | `iam/p/{name}` | [`Stored::Principal`] |
//! | `iam/k/{access key id}` | [`Stored::Key`] |
//! | `iam/pol/{name}` | [`Stored::Policy`] |
//! | `iam/gen` | `u64`: bumped by every change |
//! | `iam/np`, `iam/npol` | `u64`: principals and custom policies held |

pub mod builtin;

use serde::{Deserialize, Serialize};

use crate::apply::Ctx;
use crate::error::{ApplyResult, DomainError};
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

pub use crate::limits::iam::NAME_MAX;
/// Most principals.
pub const PRINCIPALS_MAX: u64 = 5_000;
/// Most custom policies.
pub const POLICIES_MAX: u64 = 1_500;
/// Most access keys of one principal (two, as IAM: one to rotate to).
pub const KEYS_PER_PRINCIPAL: usize = 2;
/// Most policies attached to one principal.
pub const ATTACHED_MAX: usize = 10;
/// Most principals or policies in one list answer.
pub const LIST_MAX: usize = 1_000;

/// What a principal is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// A person or an application.
    User,
    /// A worker node: the only kind the workers API takes.
    Worker,
}

impl Kind {
    /// `user` or `worker`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Worker => "worker",
        }
    }

    /// Parses `user` or `worker` (`field` names the request field).
    pub fn parse(field: &str, s: &str) -> Result<Kind, DomainError> {
        match s {
            "" | "user" => Ok(Kind::User),
            "worker" => Ok(Kind::Worker),
            _ => Err(DomainError::invalid(
                field,
                format!("must be \"user\" or \"worker\", got {:?}", cut(s)),
            )),
        }
    }
}

/// An access key as a principal's record lists it (never the secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyMeta {
    /// The access key id.
    pub id: String,
    /// When it was made.
    pub created_ms: u64,
}

/// A principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Principal {
    /// Its name.
    pub name: String,
    /// User or worker.
    pub kind: Kind,
    /// Attached policies, by name.
    pub policies: Vec<String>,
    /// Its access keys.
    pub keys: Vec<KeyMeta>,
    /// When it was made.
    pub created_ms: u64,
}

/// A stored access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    /// Whose it is.
    pub principal: String,
    /// The secret, sealed under the cluster key.
    pub sealed_secret: String,
    /// When it was made.
    pub created_ms: u64,
}

/// A custom policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CustomPolicy {
    /// Its name.
    pub name: String,
    /// The JSON document, as given.
    pub document: String,
    /// When it was last written.
    pub updated_ms: u64,
}

/// Stored forms (variants are only appended).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Stored {
    /// A principal.
    Principal(Principal),
    /// An access key.
    Key(AccessKey),
    /// A custom policy.
    Policy(CustomPolicy),
}

/// A change to principals, keys or policies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IamCommand {
    /// Make a principal, with policies attached.
    CreatePrincipal {
        /// Its name.
        name: String,
        /// User or worker.
        kind: Kind,
        /// Policies to attach.
        policies: Vec<String>,
    },
    /// Delete a principal and its access keys.
    DeletePrincipal {
        /// Its name.
        name: String,
    },
    /// Record an access key made at the edge (its secret already sealed).
    CreateAccessKey {
        /// Whose.
        principal: String,
        /// The new key's id.
        access_key_id: String,
        /// Its secret, sealed.
        sealed_secret: String,
    },
    /// Delete an access key.
    DeleteAccessKey {
        /// Whose.
        principal: String,
        /// Which.
        access_key_id: String,
    },
    /// Create or replace a custom policy.
    PutPolicy {
        /// Its name.
        name: String,
        /// The JSON document.
        document: String,
    },
    /// Delete a custom policy that nothing has attached.
    DeletePolicy {
        /// Its name.
        name: String,
    },
    /// Attach a policy to a principal.
    AttachPolicy {
        /// To whom.
        principal: String,
        /// Which policy.
        policy: String,
    },
    /// Detach a policy from a principal.
    DetachPolicy {
        /// From whom.
        principal: String,
        /// Which policy.
        policy: String,
    },
}

/// What an IAM command returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IamOutput {
    /// The principal as it now is.
    Principal(Principal),
    /// The policy as it now is.
    Policy(CustomPolicy),
    /// Nothing to return.
    Done,
}

/// A read of principals, keys or policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum IamQuery {
    /// One principal.
    Principal {
        /// Its name.
        name: String,
    },
    /// Principals in name order after `after`.
    Principals {
        /// Start after this name.
        after: Option<String>,
        /// At most this many.
        limit: usize,
    },
    /// An access key and its principal (`None` when unknown).
    AccessKey {
        /// The access key id.
        id: String,
    },
    /// One custom policy.
    Policy {
        /// Its name.
        name: String,
    },
    /// Every custom policy.
    Policies,
    /// The generation counter.
    Generation,
}

/// What an IAM query returns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IamQueryOutput {
    /// One principal.
    Principal(Principal),
    /// A page of principals, and whether more follow.
    Principals(Vec<Principal>, bool),
    /// A key and its principal.
    AccessKey(Option<(AccessKey, Principal)>),
    /// One policy.
    Policy(CustomPolicy),
    /// Every custom policy.
    Policies(Vec<CustomPolicy>),
    /// The generation.
    Generation(u64),
}

fn cut(s: &str) -> String {
    s.chars().take(70).collect()
}

/// Checks a principal or policy name: 1-64 of `[A-Za-z0-9+=,.@_-]`, as IAM
/// user names.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    let ok = !name.is_empty()
        && name.len() <= NAME_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            format!(
                "must be 1-{NAME_MAX} characters of letters, digits and +=,.@_-, got {:?}",
                cut(name)
            ),
        ))
    }
}

/// Checks a policy document (and that its name is not a built-in one's).
pub fn validate_policy(name: &str, document: &str) -> Result<(), DomainError> {
    validate_name("name", name)?;
    if builtin::document(name).is_some() {
        return Err(DomainError::invalid(
            "name",
            format!("{name} is a built-in policy; choose another name"),
        ));
    }
    sluice_security::policy::Policy::parse(document).map_err(|e| {
        DomainError::invalid_with_code("MalformedPolicyDocument", "document", e.to_string())
    })?;
    Ok(())
}

fn principal_key(name: &str) -> Vec<u8> {
    Key::new("iam/p").str(name).build()
}

fn access_key_key(id: &str) -> Vec<u8> {
    Key::new("iam/k").str(id).build()
}

fn policy_key(name: &str) -> Vec<u8> {
    Key::new("iam/pol").str(name).build()
}

fn counter(state: &dyn StateRead, name: &str) -> ApplyResult<u64> {
    let k = Key::new(name).build();
    Ok(match state.get(&k)? {
        Some(b) => crate::store::codec::decode(&k, &b)?,
        None => 0,
    })
}

fn set_counter(txn: &mut Txn<'_>, name: &str, n: u64) {
    txn.put_record(Key::new(name).build(), &n);
}

/// Counts one more of what counter `name` counts, refused at `max` (the
/// command's overlay drops the count if the command fails later).
fn count_one_more(txn: &mut Txn<'_>, name: &str, max: u64, what: &str) -> ApplyResult<()> {
    let n = counter(txn, name)?;
    if n >= max {
        return Err(DomainError::limit(
            "LimitExceeded",
            format!("the cluster holds {max} {what}, the most it takes"),
        )
        .into());
    }
    set_counter(txn, name, n + 1);
    Ok(())
}

fn count_one_less(txn: &mut Txn<'_>, name: &str) -> ApplyResult<()> {
    let mut n = counter(txn, name)?;
    crate::invariant::decrement(&mut n, name);
    set_counter(txn, name, n);
    Ok(())
}

fn load(state: &dyn StateRead, key: &[u8]) -> ApplyResult<Option<Stored>> {
    match state.get(key)? {
        None => Ok(None),
        Some(b) => Ok(Some(crate::store::codec::decode(key, &b)?)),
    }
}

fn no_principal(name: &str) -> DomainError {
    DomainError::not_found(
        "NoSuchEntity",
        format!("principal: no principal is named {name:?}"),
    )
}

/// A principal, if it exists.
pub fn principal(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Principal>> {
    Ok(match load(state, &principal_key(name))? {
        Some(Stored::Principal(p)) => Some(p),
        _ => None,
    })
}

fn require_principal(state: &dyn StateRead, name: &str) -> ApplyResult<Principal> {
    principal(state, name)?.ok_or_else(|| no_principal(name).into())
}

/// A custom policy, if it exists.
pub fn policy(state: &dyn StateRead, name: &str) -> ApplyResult<Option<CustomPolicy>> {
    Ok(match load(state, &policy_key(name))? {
        Some(Stored::Policy(p)) => Some(p),
        _ => None,
    })
}

fn policy_exists(state: &dyn StateRead, name: &str) -> ApplyResult<bool> {
    Ok(builtin::document(name).is_some() || policy(state, name)?.is_some())
}

fn no_policy(name: &str) -> DomainError {
    DomainError::not_found(
        "NoSuchEntity",
        format!(
            "policy: no policy is named {name:?} (built-in: {})",
            builtin::NAMES.join(", ")
        ),
    )
}

fn save_principal(txn: &mut Txn<'_>, p: &Principal) {
    txn.put_record(principal_key(&p.name), &Stored::Principal(p.clone()));
}

/// Applies an IAM command.
pub fn apply(txn: &mut Txn<'_>, ctx: &Ctx, command: &IamCommand) -> ApplyResult<IamOutput> {
    let out = match command {
        IamCommand::CreatePrincipal {
            name,
            kind,
            policies,
        } => {
            validate_name("name", name)?;
            if principal(txn, name)?.is_some() {
                return Err(DomainError::already_exists(
                    "EntityAlreadyExists",
                    format!("name: a principal named {name:?} exists"),
                )
                .into());
            }
            count_one_more(txn, "iam/np", PRINCIPALS_MAX, "principals")?;
            let mut attached: Vec<String> = Vec::new();
            for p in policies {
                if !policy_exists(txn, p)? {
                    return Err(no_policy(p).into());
                }
                if !attached.contains(p) {
                    attached.push(p.clone());
                }
            }
            if attached.len() > ATTACHED_MAX {
                return Err(too_many_attached().into());
            }
            let p = Principal {
                name: name.clone(),
                kind: *kind,
                policies: attached,
                keys: Vec::new(),
                created_ms: ctx.now_ms,
            };
            save_principal(txn, &p);
            IamOutput::Principal(p)
        }
        IamCommand::DeletePrincipal { name } => {
            let p = require_principal(txn, name)?;
            for k in &p.keys {
                txn.delete(access_key_key(&k.id));
            }
            txn.delete(principal_key(name));
            count_one_less(txn, "iam/np")?;
            IamOutput::Done
        }
        IamCommand::CreateAccessKey {
            principal: name,
            access_key_id,
            sealed_secret,
        } => {
            sluice_security::credentials::validate_key_id(access_key_id)
                .map_err(|e| DomainError::invalid("access_key_id", e))?;
            let mut p = require_principal(txn, name)?;
            if p.keys.len() >= KEYS_PER_PRINCIPAL {
                return Err(DomainError::limit(
                    "LimitExceeded",
                    format!("principal: {name} has {KEYS_PER_PRINCIPAL} access keys, the most one may have; delete one first"),
                )
                .into());
            }
            if load(txn, &access_key_key(access_key_id))?.is_some() {
                return Err(DomainError::already_exists(
                    "EntityAlreadyExists",
                    "access_key_id: that access key id is taken",
                )
                .into());
            }
            txn.put_record(
                access_key_key(access_key_id),
                &Stored::Key(AccessKey {
                    principal: name.clone(),
                    sealed_secret: sealed_secret.clone(),
                    created_ms: ctx.now_ms,
                }),
            );
            p.keys.push(KeyMeta {
                id: access_key_id.clone(),
                created_ms: ctx.now_ms,
            });
            save_principal(txn, &p);
            IamOutput::Principal(p)
        }
        IamCommand::DeleteAccessKey {
            principal: name,
            access_key_id,
        } => {
            let mut p = require_principal(txn, name)?;
            let before = p.keys.len();
            p.keys.retain(|k| k.id != *access_key_id);
            if p.keys.len() == before {
                return Err(DomainError::not_found(
                    "NoSuchEntity",
                    format!("access_key_id: {name} has no access key {access_key_id:?}"),
                )
                .into());
            }
            txn.delete(access_key_key(access_key_id));
            save_principal(txn, &p);
            IamOutput::Principal(p)
        }
        IamCommand::PutPolicy { name, document } => {
            validate_policy(name, document)?;
            if policy(txn, name)?.is_none() {
                count_one_more(txn, "iam/npol", POLICIES_MAX, "policies")?;
            }
            let p = CustomPolicy {
                name: name.clone(),
                document: document.clone(),
                updated_ms: ctx.now_ms,
            };
            txn.put_record(policy_key(name), &Stored::Policy(p.clone()));
            IamOutput::Policy(p)
        }
        IamCommand::DeletePolicy { name } => {
            if builtin::document(name).is_some() {
                return Err(DomainError::invalid(
                    "name",
                    format!("{name} is a built-in policy and cannot be deleted"),
                )
                .into());
            }
            if policy(txn, name)?.is_none() {
                return Err(no_policy(name).into());
            }
            let holders: Vec<Principal> =
                crate::store::records_under::<Stored>(txn, &Key::new("iam/p").build())?
                    .into_iter()
                    .filter_map(|s| match s {
                        Stored::Principal(p) if p.policies.contains(name) => Some(p),
                        _ => None,
                    })
                    .collect();
            if let Some(h) = holders.first() {
                return Err(DomainError::precondition(
                    "DeleteConflict",
                    format!(
                        "name: policy {name} is attached to {} principal(s), {} among them; detach it first",
                        holders.len(),
                        h.name
                    ),
                )
                .into());
            }
            txn.delete(policy_key(name));
            count_one_less(txn, "iam/npol")?;
            IamOutput::Done
        }
        IamCommand::AttachPolicy {
            principal: name,
            policy: pol,
        } => {
            let mut p = require_principal(txn, name)?;
            if !policy_exists(txn, pol)? {
                return Err(no_policy(pol).into());
            }
            if !p.policies.contains(pol) {
                if p.policies.len() >= ATTACHED_MAX {
                    return Err(too_many_attached().into());
                }
                p.policies.push(pol.clone());
                save_principal(txn, &p);
            }
            IamOutput::Principal(p)
        }
        IamCommand::DetachPolicy {
            principal: name,
            policy: pol,
        } => {
            let mut p = require_principal(txn, name)?;
            if !p.policies.contains(pol) {
                return Err(DomainError::not_found(
                    "NoSuchEntity",
                    format!("policy: {pol} is not attached to {name}"),
                )
                .into());
            }
            p.policies.retain(|x| x != pol);
            save_principal(txn, &p);
            IamOutput::Principal(p)
        }
    };
    let generation = counter(txn, "iam/gen")?;
    set_counter(txn, "iam/gen", generation + 1);
    Ok(out)
}

fn too_many_attached() -> DomainError {
    DomainError::limit(
        "LimitExceeded",
        format!("policies: a principal may have at most {ATTACHED_MAX} policies attached"),
    )
}

/// Answers an IAM query.
pub fn query(state: &dyn StateRead, query: &IamQuery) -> ApplyResult<IamQueryOutput> {
    Ok(match query {
        IamQuery::Principal { name } => IamQueryOutput::Principal(require_principal(state, name)?),
        IamQuery::Principals { after, limit } => {
            let all: Vec<Stored> = crate::store::records_under(state, &Key::new("iam/p").build())?;
            let mut ps: Vec<Principal> = all
                .into_iter()
                .filter_map(|s| match s {
                    Stored::Principal(p) => Some(p),
                    _ => None,
                })
                .filter(|p| after.as_ref().is_none_or(|a| p.name > *a))
                .collect();
            ps.sort_by(|a, b| a.name.cmp(&b.name));
            let limit = (*limit).clamp(1, LIST_MAX);
            let more = ps.len() > limit;
            ps.truncate(limit);
            IamQueryOutput::Principals(ps, more)
        }
        IamQuery::AccessKey { id } => {
            let found = match load(state, &access_key_key(id))? {
                Some(Stored::Key(k)) => principal(state, &k.principal)?.map(|p| (k, p)),
                _ => None,
            };
            IamQueryOutput::AccessKey(found)
        }
        IamQuery::Policy { name } => {
            IamQueryOutput::Policy(policy(state, name)?.ok_or_else(|| no_policy(name))?)
        }
        IamQuery::Policies => {
            let all: Vec<Stored> =
                crate::store::records_under(state, &Key::new("iam/pol").build())?;
            IamQueryOutput::Policies(
                all.into_iter()
                    .filter_map(|s| match s {
                        Stored::Policy(p) => Some(p),
                        _ => None,
                    })
                    .collect(),
            )
        }
        IamQuery::Generation => IamQueryOutput::Generation(counter(state, "iam/gen")?),
    })
}

/// Checks the IAM invariants: the counts that cap principals and policies
/// equal their records.
pub fn check(state: &dyn StateRead) -> Result<(), crate::invariant::CheckError> {
    for (counter_name, space, what) in [
        ("iam/np", "iam/p", "principals"),
        ("iam/npol", "iam/pol", "policies"),
    ] {
        let records = state.scan_prefix(&Key::new(space).build()).count() as u64;
        let counted = counter(state, counter_name)?;
        crate::invariant::ensure(records == counted, "iam", || {
            format!("{counted} {what} counted, {records} stored")
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, CommandOutput, Query, QueryOutput};
    use crate::testing::World;

    fn run(w: &mut World, c: IamCommand) -> Result<IamOutput, DomainError> {
        match w.run(Command::Iam(c))? {
            CommandOutput::Iam(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    fn ask(w: &World, q: IamQuery) -> Result<IamQueryOutput, DomainError> {
        match w.query(Query::Iam(q))? {
            QueryOutput::Iam(o) => Ok(o),
            other => panic!("{other:?}"),
        }
    }

    fn generation(w: &World) -> u64 {
        match ask(w, IamQuery::Generation).unwrap() {
            IamQueryOutput::Generation(g) => g,
            other => panic!("{other:?}"),
        }
    }

    fn create(w: &mut World, name: &str, policies: &[&str]) -> Result<IamOutput, DomainError> {
        run(
            w,
            IamCommand::CreatePrincipal {
                name: name.into(),
                kind: Kind::User,
                policies: policies.iter().map(|s| s.to_string()).collect(),
            },
        )
    }

    fn add_key(w: &mut World, who: &str, id: &str) -> Result<IamOutput, DomainError> {
        run(
            w,
            IamCommand::CreateAccessKey {
                principal: who.into(),
                access_key_id: id.into(),
                sealed_secret: "s1.x.y".into(),
            },
        )
    }

    #[test]
    fn principals_keys_and_policies_live_and_die_together() {
        let mut w = World::new();
        assert_eq!(generation(&w), 0);
        create(&mut w, "alice", &["ReadOnlyAccess"]).unwrap();
        assert_eq!(generation(&w), 1);
        add_key(&mut w, "alice", "SLAKAAAAAAAAAAAAAAA1").unwrap();
        add_key(&mut w, "alice", "SLAKAAAAAAAAAAAAAAA2").unwrap();
        let e = add_key(&mut w, "alice", "SLAKAAAAAAAAAAAAAAA3").unwrap_err();
        assert_eq!(e.code, "LimitExceeded");
        match ask(
            &w,
            IamQuery::AccessKey {
                id: "SLAKAAAAAAAAAAAAAAA2".into(),
            },
        )
        .unwrap()
        {
            IamQueryOutput::AccessKey(Some((k, p))) => {
                assert_eq!(k.principal, "alice");
                assert_eq!(p.keys.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        run(
            &mut w,
            IamCommand::PutPolicy {
                name: "orders".into(),
                document: r#"{"Statement": {"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:*:*:orders"}}"#.into(),
            },
        )
        .unwrap();
        run(
            &mut w,
            IamCommand::AttachPolicy {
                principal: "alice".into(),
                policy: "orders".into(),
            },
        )
        .unwrap();
        let e = run(
            &mut w,
            IamCommand::DeletePolicy {
                name: "orders".into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.code, "DeleteConflict");
        run(
            &mut w,
            IamCommand::DetachPolicy {
                principal: "alice".into(),
                policy: "orders".into(),
            },
        )
        .unwrap();
        run(
            &mut w,
            IamCommand::DeletePolicy {
                name: "orders".into(),
            },
        )
        .unwrap();
        run(
            &mut w,
            IamCommand::DeletePrincipal {
                name: "alice".into(),
            },
        )
        .unwrap();
        match ask(
            &w,
            IamQuery::AccessKey {
                id: "SLAKAAAAAAAAAAAAAAA1".into(),
            },
        )
        .unwrap()
        {
            IamQueryOutput::AccessKey(None) => {}
            other => panic!("the key went with its principal: {other:?}"),
        }
        // Refused commands do not bump the generation.
        let g = generation(&w);
        assert!(create(&mut w, "bob", &["NoSuchPolicy"]).is_err());
        assert_eq!(generation(&w), g);
    }

    #[test]
    fn bad_names_documents_and_duplicates_are_refused_naming_the_field() {
        let mut w = World::new();
        let e = create(&mut w, "has space", &[]).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        create(&mut w, "a", &[]).unwrap();
        assert_eq!(
            create(&mut w, "a", &[]).unwrap_err().code,
            "EntityAlreadyExists"
        );
        let e = run(
            &mut w,
            IamCommand::PutPolicy {
                name: "p".into(),
                document: r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}}"#.into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.code, "MalformedPolicyDocument");
        assert!(e.message.contains("Statement.Condition"), "{}", e.message);
        let e = run(
            &mut w,
            IamCommand::PutPolicy {
                name: "AdministratorAccess".into(),
                document: r#"{"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}}"#
                    .into(),
            },
        )
        .unwrap_err();
        assert!(e.message.contains("built-in"), "{}", e.message);
        let e = add_key(&mut w, "a", "short").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("access_key_id"));
    }
}
