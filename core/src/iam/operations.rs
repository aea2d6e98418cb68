//! The IAM operations: the commands that change principals, access keys and
//! policies (every one moves the IAM generation, which tells the nodes'
//! authenticators to reload) and the reads of them.

use serde::{Deserialize, Serialize};

use super::{
    access_key_key, builtin, bump_generation, count_one_less, count_one_more, counter, load,
    no_policy, policy, policy_exists, policy_key, principal, principal_key, require_principal,
    save_principal, too_many_attached, validate_name, validate_policy, AccessKey, CustomPolicy,
    KeyMeta, Kind, Principal, Stored, ATTACHED_MAX, KEYS_PER_PRINCIPAL, LIST_MAX, POLICIES_MAX,
    PRINCIPALS_MAX,
};
use crate::apply::{Ctx, Effects};
use crate::error::{ApplyResult, DomainError};
use crate::operation::{Lookup, Operation};
use crate::store::keys::Key;
use crate::store::{StateRead, Txn};

/// Make a principal, with policies attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePrincipal {
    /// Its name.
    pub name: String,
    /// User or worker.
    pub kind: Kind,
    /// Policies to attach.
    pub policies: Vec<String>,
}

impl Operation for CreatePrincipal {
    type Output = Principal;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let CreatePrincipal {
            name,
            kind,
            policies,
        } = self;

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
        Ok(p)
    }
}

/// Delete a principal and its access keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePrincipal {
    /// Its name.
    pub name: String,
}

impl Operation for DeletePrincipal {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let DeletePrincipal { name } = self;

        let p = require_principal(txn, name)?;
        for k in &p.keys {
            txn.delete(access_key_key(&k.id));
        }
        txn.delete(principal_key(name));
        count_one_less(txn, "iam/np")
    }
}

/// Record an access key made at the edge (its secret already sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateAccessKey {
    /// Whose.
    pub principal: String,
    /// The new key's id.
    pub access_key_id: String,
    /// Its secret, sealed.
    pub sealed_secret: String,
}

impl Operation for CreateAccessKey {
    type Output = Principal;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let CreateAccessKey {
            principal: name,
            access_key_id,
            sealed_secret,
        } = self;

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
        Ok(p)
    }
}

/// Delete an access key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteAccessKey {
    /// Whose.
    pub principal: String,
    /// Which.
    pub access_key_id: String,
}

impl Operation for DeleteAccessKey {
    type Output = Principal;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let DeleteAccessKey {
            principal: name,
            access_key_id,
        } = self;

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
        Ok(p)
    }
}

/// Create or replace a custom policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutPolicy {
    /// Its name.
    pub name: String,
    /// The JSON document.
    pub document: String,
}

impl Operation for PutPolicy {
    type Output = CustomPolicy;

    fn apply(&self, txn: &mut Txn<'_>, ctx: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let PutPolicy { name, document } = self;

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
        Ok(p)
    }
}

/// Delete a custom policy that nothing has attached.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletePolicy {
    /// Its name.
    pub name: String,
}

impl Operation for DeletePolicy {
    type Output = ();

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let DeletePolicy { name } = self;

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
        count_one_less(txn, "iam/npol")
    }
}

/// Attach a policy to a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttachPolicy {
    /// To whom.
    pub principal: String,
    /// Which policy.
    pub policy: String,
}

impl Operation for AttachPolicy {
    type Output = Principal;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let AttachPolicy {
            principal: name,
            policy: pol,
        } = self;

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
        Ok(p)
    }
}

/// Detach a policy from a principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetachPolicy {
    /// From whom.
    pub principal: String,
    /// Which policy.
    pub policy: String,
}

impl Operation for DetachPolicy {
    type Output = Principal;

    fn apply(&self, txn: &mut Txn<'_>, _: &Ctx, _: &mut Effects) -> ApplyResult<Self::Output> {
        bump_generation(txn)?;
        let DetachPolicy {
            principal: name,
            policy: pol,
        } = self;

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
        Ok(p)
    }
}

/// One principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPrincipal {
    /// Its name.
    pub name: String,
}

impl Lookup for GetPrincipal {
    type Output = Principal;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        require_principal(state, &self.name)
    }
}

/// Principals in name order after `after`, and whether more follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPrincipals {
    /// Start after this name.
    pub after: Option<String>,
    /// At most this many (1 to [`LIST_MAX`]).
    pub limit: usize,
}

impl Lookup for ListPrincipals {
    type Output = (Vec<Principal>, bool);

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let all: Vec<Stored> = crate::store::records_under(state, &Key::new("iam/p").build())?;
        let mut ps: Vec<Principal> = all
            .into_iter()
            .filter_map(|s| match s {
                Stored::Principal(p) => Some(p),
                _ => None,
            })
            .filter(|p| self.after.as_ref().is_none_or(|a| p.name > *a))
            .collect();
        ps.sort_by(|a, b| a.name.cmp(&b.name));
        let limit = self.limit.clamp(1, LIST_MAX);
        let more = ps.len() > limit;
        ps.truncate(limit);
        Ok((ps, more))
    }
}

/// An access key and its principal (`None` when unknown).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetAccessKey {
    /// The access key id.
    pub id: String,
}

impl Lookup for GetAccessKey {
    type Output = Option<(AccessKey, Principal)>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        Ok(match load(state, &access_key_key(&self.id))? {
            Some(Stored::Key(k)) => principal(state, &k.principal)?.map(|p| (k, p)),
            _ => None,
        })
    }
}

/// One custom policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetPolicy {
    /// Its name.
    pub name: String,
}

impl Lookup for GetPolicy {
    type Output = CustomPolicy;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        Ok(policy(state, &self.name)?.ok_or_else(|| no_policy(&self.name))?)
    }
}

/// Every custom policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPolicies;

impl Lookup for ListPolicies {
    type Output = Vec<CustomPolicy>;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        let all: Vec<Stored> = crate::store::records_under(state, &Key::new("iam/pol").build())?;
        Ok(all
            .into_iter()
            .filter_map(|s| match s {
                Stored::Policy(p) => Some(p),
                _ => None,
            })
            .collect())
    }
}

/// The IAM generation: it moves with every IAM command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation;

impl Lookup for Generation {
    type Output = u64;

    fn read(&self, state: &dyn StateRead) -> ApplyResult<Self::Output> {
        counter(state, "iam/gen")
    }
}
