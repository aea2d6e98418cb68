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
pub mod operations;

pub use operations::*;

use serde::{Deserialize, Serialize};

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

impl Stored {
    fn into_principal(self) -> Option<Principal> {
        match self {
            Stored::Principal(p) => Some(p),
            _ => None,
        }
    }

    fn into_policy(self) -> Option<CustomPolicy> {
        match self {
            Stored::Policy(p) => Some(p),
            _ => None,
        }
    }
}

fn cut(s: &str) -> String {
    s.chars().take(70).collect()
}

/// Checks a principal or policy name: 1-64 of `[A-Za-z0-9+=,.@_-]`, as IAM
/// user names.
pub fn validate_name(field: &str, name: &str) -> Result<(), DomainError> {
    if crate::names::is_valid(name, NAME_MAX, "+=,.@_-") {
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

/// Where principals are stored, by name.
const PRINCIPALS: &str = "iam/p";
/// Where custom policies are stored, by name.
const POLICIES: &str = "iam/pol";

fn principal_key(name: &str) -> Vec<u8> {
    Key::new(PRINCIPALS).str(name).build()
}

fn access_key_key(id: &str) -> Vec<u8> {
    Key::new("iam/k").str(id).build()
}

fn policy_key(name: &str) -> Vec<u8> {
    Key::new(POLICIES).str(name).build()
}

fn counter(state: &dyn StateRead, name: &str) -> ApplyResult<u64> {
    Ok(crate::store::record_at(state, &Key::new(name).build())?.unwrap_or(0))
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
    Ok(crate::store::record_at(state, key)?)
}

fn no_principal(name: &str) -> DomainError {
    DomainError::not_found(
        "NoSuchEntity",
        format!("principal: no principal is named {name:?}"),
    )
}

/// Every record stored under `space` (principals or policies, which
/// `pick` takes out of [`Stored`]), in name order.
fn all_under<T>(
    state: &dyn StateRead,
    space: &str,
    pick: fn(Stored) -> Option<T>,
) -> ApplyResult<Vec<T>> {
    let all: Vec<Stored> = crate::store::records_under(state, &Key::new(space).build())?;
    Ok(all.into_iter().filter_map(pick).collect())
}

/// A principal, if it exists.
pub fn principal(state: &dyn StateRead, name: &str) -> ApplyResult<Option<Principal>> {
    Ok(load(state, &principal_key(name))?.and_then(Stored::into_principal))
}

fn require_principal(state: &dyn StateRead, name: &str) -> ApplyResult<Principal> {
    principal(state, name)?.ok_or_else(|| no_principal(name).into())
}

/// A custom policy, if it exists.
pub fn policy(state: &dyn StateRead, name: &str) -> ApplyResult<Option<CustomPolicy>> {
    Ok(load(state, &policy_key(name))?.and_then(Stored::into_policy))
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

/// Moves the IAM generation: every node's authenticator reloads what it
/// cached when it sees a new one.
fn bump_generation(txn: &mut Txn<'_>) -> ApplyResult<()> {
    let generation = counter(txn, "iam/gen")?;
    set_counter(txn, "iam/gen", generation + 1);
    Ok(())
}

fn too_many_attached() -> DomainError {
    DomainError::limit(
        "LimitExceeded",
        format!("policies: a principal may have at most {ATTACHED_MAX} policies attached"),
    )
}

/// Checks the IAM invariants: the counts that cap principals and policies
/// equal their records.
pub fn check(state: &dyn StateRead) -> Result<(), crate::invariant::CheckError> {
    for (counter_name, space, what) in [
        ("iam/np", PRINCIPALS, "principals"),
        ("iam/npol", POLICIES, "policies"),
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

    use crate::testing::World;

    fn generation(w: &World) -> u64 {
        w.ask(Generation).unwrap()
    }

    fn create(w: &mut World, name: &str, policies: &[&str]) -> Result<Principal, DomainError> {
        w.run(CreatePrincipal {
            name: name.into(),
            kind: Kind::User,
            policies: policies.iter().map(|s| s.to_string()).collect(),
        })
    }

    fn add_key(w: &mut World, who: &str, id: &str) -> Result<Principal, DomainError> {
        w.run(CreateAccessKey {
            principal: who.into(),
            access_key_id: id.into(),
            sealed_secret: "s1.x.y".into(),
        })
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
        let (k, p) = w
            .ask(GetAccessKey {
                id: "SLAKAAAAAAAAAAAAAAA2".into(),
            })
            .unwrap()
            .expect("the key exists");
        assert_eq!(k.principal, "alice");
        assert_eq!(p.keys.len(), 2);
        w.run(PutPolicy {
                name: "orders".into(),
                document: r#"{"Statement": {"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:*:*:orders"}}"#.into(),
            },
        )
        .unwrap();
        w.run(AttachPolicy {
            principal: "alice".into(),
            policy: "orders".into(),
        })
        .unwrap();
        let e = w
            .run(DeletePolicy {
                name: "orders".into(),
            })
            .unwrap_err();
        assert_eq!(e.code, "DeleteConflict");
        w.run(DetachPolicy {
            principal: "alice".into(),
            policy: "orders".into(),
        })
        .unwrap();
        w.run(DeletePolicy {
            name: "orders".into(),
        })
        .unwrap();
        w.run(DeletePrincipal {
            name: "alice".into(),
        })
        .unwrap();
        let gone = w
            .ask(GetAccessKey {
                id: "SLAKAAAAAAAAAAAAAAA1".into(),
            })
            .unwrap();
        assert!(gone.is_none(), "the key went with its principal: {gone:?}");
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
        let e = w.run(PutPolicy {
                name: "p".into(),
                document: r#"{"Statement": {"Effect": "Allow", "Action": "*", "Resource": "*", "Condition": {}}}"#.into(),
            },
        )
        .unwrap_err();
        assert_eq!(e.code, "MalformedPolicyDocument");
        assert!(e.message.contains("Statement.Condition"), "{}", e.message);
        let e = w
            .run(PutPolicy {
                name: "AdministratorAccess".into(),
                document: r#"{"Statement": {"Effect": "Deny", "Action": "*", "Resource": "*"}}"#
                    .into(),
            })
            .unwrap_err();
        assert!(e.message.contains("built-in"), "{}", e.message);
        let e = add_key(&mut w, "a", "short").unwrap_err();
        assert_eq!(e.field.as_deref(), Some("access_key_id"));
    }
}
