//! `sluicectl iam`: principals, access keys and policies.

use clap::Subcommand;
use serde_json::json;
use sluice_client::{Client, Error};
use sluice_proto::v1 as pb;

/// One call of the IAM service: `iam!(client, method, request)`.
macro_rules! iam {
    ($client:expr, $method:ident, $request:expr) => {
        $client
            .iam($request, |mut c, r| async move { c.$method(r).await })
            .await?
    };
}

#[derive(Subcommand)]
pub enum IamCmd {
    /// Make a principal: a user, or a worker (which gets SluiceWorkerAccess
    /// unless --policy says otherwise).
    CreatePrincipal {
        /// 1-64 of letters, digits and +=,.@_-.
        name: String,
        /// `user` or `worker`.
        #[arg(long, default_value = "user")]
        kind: String,
        /// A policy to attach (built-in or custom); repeatable.
        #[arg(long = "policy")]
        policies: Vec<String>,
    },
    /// One principal, with its policies and access key ids.
    GetPrincipal {
        /// Its name.
        name: String,
    },
    /// Every principal.
    ListPrincipals,
    /// Delete a principal and its access keys.
    DeletePrincipal {
        /// Its name.
        name: String,
    },
    /// Make an access key and print it as a credentials file (the secret is
    /// shown this once).
    CreateKey {
        /// Whose key.
        name: String,
        /// Print it as environment variables instead
        /// (`SLUICE_ACCESS_KEY_ID=...`, `SLUICE_SECRET_ACCESS_KEY=...`).
        #[arg(long)]
        env: bool,
    },
    /// Delete an access key.
    DeleteKey {
        /// Whose key.
        name: String,
        /// The access key id.
        access_key_id: String,
    },
    /// Create or replace a custom policy from a JSON file.
    PutPolicy {
        /// Its name.
        name: String,
        /// The policy document (IAM's JSON), `-` for stdin.
        #[arg(long)]
        file: String,
    },
    /// One policy's document.
    GetPolicy {
        /// Its name.
        name: String,
    },
    /// Every policy, built-in and custom.
    ListPolicies,
    /// Delete a custom policy no principal has attached.
    DeletePolicy {
        /// Its name.
        name: String,
    },
    /// Attach a policy to a principal.
    Attach {
        /// The principal.
        name: String,
        /// The policy.
        policy: String,
    },
    /// Detach a policy from a principal.
    Detach {
        /// The principal.
        name: String,
        /// The policy.
        policy: String,
    },
    /// Who the cluster takes this caller for.
    Whoami,
}

fn show_principal(json: bool, p: &pb::Principal) {
    let keys: Vec<&str> = p
        .access_keys
        .iter()
        .map(|k| k.access_key_id.as_str())
        .collect();
    crate::print_result(
        json,
        json!({"name": p.name, "kind": p.kind, "arn": p.arn, "policies": p.policies,
               "access_key_ids": keys, "created_ms": p.created_ms}),
        format_args!(
            "{}  {}  policies: {}  keys: {}",
            p.name,
            p.kind,
            p.policies.join(","),
            keys.join(",")
        ),
    );
}

/// Runs an `iam` command.
pub async fn run(client: &Client, json: bool, cmd: IamCmd) -> Result<(), Error> {
    match cmd {
        IamCmd::CreatePrincipal {
            name,
            kind,
            policies,
        } => {
            let p = iam!(
                client,
                create_principal,
                pb::CreatePrincipalRequest {
                    name,
                    kind,
                    policies,
                }
            );
            show_principal(json, &p);
        }
        IamCmd::GetPrincipal { name } => {
            let p = iam!(client, get_principal, pb::GetPrincipalRequest { name });
            show_principal(json, &p);
        }
        IamCmd::ListPrincipals => {
            let mut token = String::new();
            loop {
                let page = iam!(
                    client,
                    list_principals,
                    pb::ListPrincipalsRequest {
                        next_token: token.clone(),
                        max_items: 0,
                    }
                );
                for p in &page.principals {
                    show_principal(json, p);
                }
                if page.next_token.is_empty() {
                    break;
                }
                token = page.next_token;
            }
        }
        IamCmd::DeletePrincipal { name } => {
            iam!(
                client,
                delete_principal,
                pb::DeletePrincipalRequest { name }
            );
        }
        IamCmd::CreateKey { name, env } => {
            let k = iam!(
                client,
                create_access_key,
                pb::CreateAccessKeyRequest { name }
            );
            if json {
                println!(
                    "{}",
                    json!({"name": k.name, "access_key_id": k.access_key_id,
                           "secret_access_key": k.secret_access_key})
                );
            } else {
                let credentials = sluice_client::Credentials {
                    access_key_id: k.access_key_id,
                    secret_access_key: k.secret_access_key,
                };
                if env {
                    print!("{}", credentials.to_env_text());
                } else {
                    print!("{}", credentials.to_file_text());
                }
            }
        }
        IamCmd::DeleteKey {
            name,
            access_key_id,
        } => {
            let p = iam!(
                client,
                delete_access_key,
                pb::DeleteAccessKeyRequest {
                    name,
                    access_key_id,
                }
            );
            show_principal(json, &p);
        }
        IamCmd::PutPolicy { name, file } => {
            let document = if file == "-" {
                std::io::read_to_string(std::io::stdin())
                    .map_err(|e| Error::Config(format!("--file -: {e}")))?
            } else {
                std::fs::read_to_string(&file)
                    .map_err(|e| Error::Config(format!("--file {file}: {e}")))?
            };
            let p = iam!(client, put_policy, pb::PutPolicyRequest { name, document });
            crate::print_result(json, json!({"name": p.name, "arn": p.arn}), &p.arn);
        }
        IamCmd::GetPolicy { name } => {
            let p = iam!(client, get_policy, pb::GetPolicyRequest { name });
            println!("{}", p.document);
        }
        IamCmd::ListPolicies => {
            let ps = iam!(client, list_policies, pb::ListPoliciesRequest {});
            for p in ps.policies {
                crate::print_result(
                    json,
                    json!({"name": p.name, "arn": p.arn, "builtin": p.builtin}),
                    format_args!("{}{}", p.name, if p.builtin { "  (built-in)" } else { "" }),
                );
            }
        }
        IamCmd::DeletePolicy { name } => {
            iam!(client, delete_policy, pb::DeletePolicyRequest { name });
        }
        IamCmd::Attach { name, policy } => {
            let p = iam!(
                client,
                attach_policy,
                pb::AttachPolicyRequest { name, policy }
            );
            show_principal(json, &p);
        }
        IamCmd::Detach { name, policy } => {
            let p = iam!(
                client,
                detach_policy,
                pb::DetachPolicyRequest { name, policy }
            );
            show_principal(json, &p);
        }
        IamCmd::Whoami => {
            let me = iam!(client, get_caller_identity, pb::GetCallerIdentityRequest {});
            crate::print_result(
                json,
                json!({"name": me.name, "kind": me.kind, "arn": me.arn,
                       "account": me.account, "access_key_id": me.access_key_id}),
                format_args!("{} ({}) {}", me.name, me.kind, me.arn),
            );
        }
    }
    Ok(())
}
