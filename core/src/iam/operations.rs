//! The IAM operations: the commands that change principals, access keys and
//! policies (every one moves the IAM generation, which tells the nodes'
//! authenticators to reload) and the reads of them.

use serde::{Deserialize, Serialize};

use super::{
    access_key_key, all_under, builtin, bump_generation, count_one_less, count_one_more, counter,
    load, no_policy, policy, policy_exists, policy_key, principal, principal_key,
    require_principal, save_principal, too_many_attached, validate_name, validate_policy,
    AccessKey, CustomPolicy, KeyMeta, Kind, Principal, Stored, ATTACHED_MAX, KEYS_PER_PRINCIPAL,
    LIST_MAX, POLICIES, POLICIES_MAX, PRINCIPALS, PRINCIPALS_MAX,
};
use crate::error::DomainError;
use crate::operation::operations;

operations! {
    /// Make a principal, with policies attached.
    pub struct CreatePrincipal {
        /// Its name.
        pub name: String,
        /// User or worker.
        pub kind: Kind,
        /// Policies to attach.
        pub policies: Vec<String>,
    }
    applies -> Principal = |txn, ctx, _| {
        bump_generation(txn)?;
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
    };

    /// Delete a principal and its access keys.
    pub struct DeletePrincipal {
        /// Its name.
        pub name: String,
    }
    applies -> () = |txn, _, _| {
        bump_generation(txn)?;
        let p = require_principal(txn, name)?;
        for k in &p.keys {
            txn.delete(access_key_key(&k.id));
        }
        txn.delete(principal_key(name));
        count_one_less(txn, "iam/np")
    };

    /// Record an access key made at the edge (its secret already sealed).
    pub struct CreateAccessKey {
        /// Whose.
        pub principal: String,
        /// The new key's id.
        pub access_key_id: String,
        /// Its secret, sealed.
        pub sealed_secret: String,
    }
    applies -> Principal = |txn, ctx, _| {
        bump_generation(txn)?;
        sluice_security::credentials::validate_key_id(access_key_id)
            .map_err(|e| DomainError::invalid("access_key_id", e))?;
        let mut p = require_principal(txn, principal)?;
        if p.keys.len() >= KEYS_PER_PRINCIPAL {
            return Err(DomainError::limit(
                "LimitExceeded",
                format!(
                    "principal: {principal} has {KEYS_PER_PRINCIPAL} access keys, \
                     the most one may have; delete one first"
                ),
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
                principal: principal.clone(),
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
    };

    /// Delete an access key.
    pub struct DeleteAccessKey {
        /// Whose.
        pub principal: String,
        /// Which.
        pub access_key_id: String,
    }
    applies -> Principal = |txn, _, _| {
        bump_generation(txn)?;
        let mut p = require_principal(txn, principal)?;
        let before = p.keys.len();
        p.keys.retain(|k| k.id != *access_key_id);
        if p.keys.len() == before {
            return Err(DomainError::not_found(
                "NoSuchEntity",
                format!("access_key_id: {principal} has no access key {access_key_id:?}"),
            )
            .into());
        }
        txn.delete(access_key_key(access_key_id));
        save_principal(txn, &p);
        Ok(p)
    };

    /// Create or replace a custom policy.
    pub struct PutPolicy {
        /// Its name.
        pub name: String,
        /// The JSON document.
        pub document: String,
    }
    applies -> CustomPolicy = |txn, ctx, _| {
        bump_generation(txn)?;
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
    };

    /// Delete a custom policy that nothing has attached.
    pub struct DeletePolicy {
        /// Its name.
        pub name: String,
    }
    applies -> () = |txn, _, _| {
        bump_generation(txn)?;
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
        let holders: Vec<Principal> = all_under(txn, PRINCIPALS, Stored::into_principal)?
            .into_iter()
            .filter(|p| p.policies.contains(name))
            .collect();
        if let Some(h) = holders.first() {
            return Err(DomainError::precondition(
                "DeleteConflict",
                format!(
                    "name: policy {name} is attached to {} principal(s), {} among them; \
                     detach it first",
                    holders.len(),
                    h.name
                ),
            )
            .into());
        }
        txn.delete(policy_key(name));
        count_one_less(txn, "iam/npol")
    };

    /// Attach a policy to a principal.
    pub struct AttachPolicy {
        /// To whom.
        pub principal: String,
        /// Which policy.
        pub policy: String,
    }
    applies -> Principal = |txn, _, _| {
        bump_generation(txn)?;
        let mut p = require_principal(txn, principal)?;
        if !policy_exists(txn, policy)? {
            return Err(no_policy(policy).into());
        }
        if !p.policies.contains(policy) {
            if p.policies.len() >= ATTACHED_MAX {
                return Err(too_many_attached().into());
            }
            p.policies.push(policy.clone());
            save_principal(txn, &p);
        }
        Ok(p)
    };

    /// Detach a policy from a principal.
    pub struct DetachPolicy {
        /// From whom.
        pub principal: String,
        /// Which policy.
        pub policy: String,
    }
    applies -> Principal = |txn, _, _| {
        bump_generation(txn)?;
        let mut p = require_principal(txn, principal)?;
        if !p.policies.contains(policy) {
            return Err(DomainError::not_found(
                "NoSuchEntity",
                format!("policy: {policy} is not attached to {principal}"),
            )
            .into());
        }
        p.policies.retain(|x| x != policy);
        save_principal(txn, &p);
        Ok(p)
    };

    /// One principal.
    pub struct GetPrincipal {
        /// Its name.
        pub name: String,
    }
    reads -> Principal = |state| require_principal(state, name);

    /// Principals in name order after `after`, and whether more follow.
    pub struct ListPrincipals {
        /// Start after this name.
        pub after: Option<String>,
        /// At most this many (1 to [`LIST_MAX`]).
        pub limit: usize,
    }
    reads -> (Vec<Principal>, bool) = |state| {
        let mut ps: Vec<Principal> = all_under(state, PRINCIPALS, Stored::into_principal)?
            .into_iter()
            .filter(|p| after.as_ref().is_none_or(|a| p.name > *a))
            .collect();
        ps.sort_by(|a, b| a.name.cmp(&b.name));
        let limit = (*limit).clamp(1, LIST_MAX);
        let more = ps.len() > limit;
        ps.truncate(limit);
        Ok((ps, more))
    };

    /// An access key and its principal (`None` when unknown).
    pub struct GetAccessKey {
        /// The access key id.
        pub id: String,
    }
    reads -> Option<(AccessKey, Principal)> = |state| {
        Ok(match load(state, &access_key_key(id))? {
            Some(Stored::Key(k)) => principal(state, &k.principal)?.map(|p| (k, p)),
            _ => None,
        })
    };

    /// One custom policy.
    pub struct GetPolicy {
        /// Its name.
        pub name: String,
    }
    reads -> CustomPolicy = |state| Ok(policy(state, name)?.ok_or_else(|| no_policy(name))?);
}

/// Every custom policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListPolicies;

operations! {
    impl ListPolicies reads -> Vec<CustomPolicy> = |_op, state| {
        all_under(state, POLICIES, Stored::into_policy)
    };
}

/// The IAM generation: it moves with every IAM command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Generation;

operations! {
    impl Generation reads -> u64 = |_, state| counter(state, "iam/gen");
}
