//! `sluice.v1.Iam`: principals, access keys and policies.
//!
//! An access key's secret is made here, at the edge, sealed under the
//! cluster key before its command is proposed, and returned once in the
//! answer: the log, the snapshots and the state only ever hold the sealed
//! form, and no later call returns it.

use super::status::IntoStatus;
use sluice_proto::v1 as pb;
use sluice_security::Credentials;
use tonic::{Request, Response, Status};

use super::Reply;

use super::fields::{next_token, optional};
use super::{Consistency, Context};
use crate::command::{Command, CommandOutput, Query, QueryOutput, Registered};
use crate::error::DomainError;
use crate::iam::{self, builtin, Kind};

/// Serves principals and policies.
pub struct IamApi {
    ctx: Context,
}

impl IamApi {
    /// The service over a node's context.
    pub fn new(ctx: Context) -> Self {
        IamApi { ctx }
    }

    /// Commits an IAM command that returns the principal it changed.
    async fn principal_command<O>(&self, op: O) -> Reply<pb::Principal>
    where
        O: Registered<Carrier = Command, Reply = CommandOutput, Output = iam::Principal>,
    {
        let p = self.ctx.run(op).await?;
        Ok(Response::new(self.principal_out(p)))
    }

    /// IAM reads are linearizable: a key made a moment ago is listed.
    async fn ask<O>(&self, read: O) -> Result<O::Output, Status>
    where
        O: Registered<Carrier = Query, Reply = QueryOutput>,
    {
        self.ctx.ask(Consistency::Linearizable, read).await
    }

    fn principal_out(&self, p: iam::Principal) -> pb::Principal {
        pb::Principal {
            arn: self.ctx.identity.principal_arn(&p.name),
            name: p.name,
            kind: p.kind.as_str().into(),
            policies: p.policies,
            access_keys: p
                .keys
                .into_iter()
                .map(|k| pb::AccessKeyInfo {
                    access_key_id: k.id,
                    created_ms: k.created_ms,
                })
                .collect(),
            created_ms: p.created_ms,
        }
    }

    fn policy_out(
        &self,
        name: &str,
        document: &str,
        builtin: bool,
        updated_ms: u64,
    ) -> pb::PolicyInfo {
        pb::PolicyInfo {
            name: name.into(),
            arn: self.ctx.identity.policy_arn(name),
            document: document.into(),
            builtin,
            updated_ms,
        }
    }
}

/// A principal's or policy's name, checked.
fn name(field: &str, value: &str) -> Result<String, Status> {
    iam::validate_name(field, value).map_err(super::status::from_domain)?;
    Ok(value.to_string())
}

#[tonic::async_trait]
impl pb::iam_server::Iam for IamApi {
    async fn create_principal(
        &self,
        request: Request<pb::CreatePrincipalRequest>,
    ) -> Reply<pb::Principal> {
        let r = request.into_inner();
        let kind = Kind::parse("kind", &r.kind).map_err(super::status::from_domain)?;
        let policies = if r.policies.is_empty() && kind == Kind::Worker {
            vec![builtin::WORKER_ACCESS.to_string()]
        } else {
            r.policies
        };
        for (i, p) in policies.iter().enumerate() {
            iam::validate_name(&format!("policies[{i}]"), p).map_err(super::status::from_domain)?;
        }
        self.principal_command(iam::CreatePrincipal {
            name: name("name", &r.name)?,
            kind,
            policies,
        })
        .await
    }

    async fn get_principal(
        &self,
        request: Request<pb::GetPrincipalRequest>,
    ) -> Reply<pb::Principal> {
        let n = name("name", &request.into_inner().name)?;
        let p = self.ask(iam::GetPrincipal { name: n }).await?;
        Ok(Response::new(self.principal_out(p)))
    }

    async fn list_principals(
        &self,
        request: Request<pb::ListPrincipalsRequest>,
    ) -> Reply<pb::ListPrincipalsResponse> {
        let r = request.into_inner();
        let limit = match r.max_items {
            0 => 100,
            n if (1..=iam::LIST_MAX as i32).contains(&n) => n as usize,
            n => {
                return Err(DomainError::invalid(
                    "max_items",
                    format!("must be 1-{}, got {n}", iam::LIST_MAX),
                )
                .into_status())
            }
        };
        let after = optional(&r.next_token, |token| name("next_token", token))?;
        let (ps, more) = self.ask(iam::ListPrincipals { after, limit }).await?;
        let next_token = next_token(more, &ps, |p| p.name.clone());
        Ok(Response::new(pb::ListPrincipalsResponse {
            principals: ps.into_iter().map(|p| self.principal_out(p)).collect(),
            next_token,
        }))
    }

    async fn delete_principal(
        &self,
        request: Request<pb::DeletePrincipalRequest>,
    ) -> Reply<pb::DeletePrincipalResponse> {
        let n = name("name", &request.into_inner().name)?;
        self.ctx.run(iam::DeletePrincipal { name: n }).await?;
        Ok(Response::new(pb::DeletePrincipalResponse {}))
    }

    async fn create_access_key(
        &self,
        request: Request<pb::CreateAccessKeyRequest>,
    ) -> Reply<pb::CreateAccessKeyResponse> {
        let who = name("name", &request.into_inner().name)?;
        let fresh = Credentials::generate();
        let sealed = sluice_security::seal::seal(
            &self.ctx.security.cluster_key,
            &fresh.access_key_id,
            &fresh.secret_access_key,
        );
        self.ctx
            .run(iam::CreateAccessKey {
                principal: who.clone(),
                access_key_id: fresh.access_key_id.clone(),
                sealed_secret: sealed,
            })
            .await?;
        Ok(Response::new(pb::CreateAccessKeyResponse {
            name: who,
            access_key_id: fresh.access_key_id,
            secret_access_key: fresh.secret_access_key,
        }))
    }

    async fn delete_access_key(
        &self,
        request: Request<pb::DeleteAccessKeyRequest>,
    ) -> Reply<pb::Principal> {
        let r = request.into_inner();
        sluice_security::credentials::validate_key_id(&r.access_key_id)
            .map_err(|e| DomainError::invalid("access_key_id", e))
            .map_err(super::status::from_domain)?;
        self.principal_command(iam::DeleteAccessKey {
            principal: name("name", &r.name)?,
            access_key_id: r.access_key_id,
        })
        .await
    }

    async fn put_policy(&self, request: Request<pb::PutPolicyRequest>) -> Reply<pb::PolicyInfo> {
        let r = request.into_inner();
        iam::validate_policy(&r.name, &r.document).map_err(super::status::from_domain)?;
        let p = self
            .ctx
            .run(iam::PutPolicy {
                name: r.name,
                document: r.document,
            })
            .await?;
        Ok(Response::new(self.policy_out(
            &p.name,
            &p.document,
            false,
            p.updated_ms,
        )))
    }

    async fn get_policy(&self, request: Request<pb::GetPolicyRequest>) -> Reply<pb::PolicyInfo> {
        let n = name("name", &request.into_inner().name)?;
        if let Some(doc) = builtin::document(&n) {
            return Ok(Response::new(self.policy_out(&n, doc, true, 0)));
        }
        let p = self.ask(iam::GetPolicy { name: n }).await?;
        Ok(Response::new(self.policy_out(
            &p.name,
            &p.document,
            false,
            p.updated_ms,
        )))
    }

    async fn list_policies(
        &self,
        _request: Request<pb::ListPoliciesRequest>,
    ) -> Reply<pb::ListPoliciesResponse> {
        let mut policies: Vec<pb::PolicyInfo> = builtin::NAMES
            .iter()
            .map(|n| self.policy_out(n, builtin::document(n).unwrap_or_default(), true, 0))
            .collect();
        let custom = self.ask(iam::ListPolicies).await?;
        policies.extend(
            custom
                .into_iter()
                .map(|p| self.policy_out(&p.name, &p.document, false, p.updated_ms)),
        );
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn delete_policy(
        &self,
        request: Request<pb::DeletePolicyRequest>,
    ) -> Reply<pb::DeletePolicyResponse> {
        let n = name("name", &request.into_inner().name)?;
        self.ctx.run(iam::DeletePolicy { name: n }).await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    async fn attach_policy(
        &self,
        request: Request<pb::AttachPolicyRequest>,
    ) -> Reply<pb::Principal> {
        let r = request.into_inner();
        self.principal_command(iam::AttachPolicy {
            principal: name("name", &r.name)?,
            policy: name("policy", &r.policy)?,
        })
        .await
    }

    async fn detach_policy(
        &self,
        request: Request<pb::DetachPolicyRequest>,
    ) -> Reply<pb::Principal> {
        let r = request.into_inner();
        self.principal_command(iam::DetachPolicy {
            principal: name("name", &r.name)?,
            policy: name("policy", &r.policy)?,
        })
        .await
    }

    async fn get_caller_identity(
        &self,
        request: Request<pb::GetCallerIdentityRequest>,
    ) -> Reply<pb::GetCallerIdentityResponse> {
        let caller = super::caller(&request)?;
        Ok(Response::new(pb::GetCallerIdentityResponse {
            name: caller.name(),
            kind: caller.kind().into(),
            arn: caller.arn(&self.ctx.identity),
            account: self.ctx.identity.account_id.clone(),
            access_key_id: caller.access_key_id().unwrap_or_default().into(),
        }))
    }
}
