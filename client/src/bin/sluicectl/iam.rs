//! `sluicectl iam`: principals, access keys and policies.

use clap::Subcommand;
use serde_json::json;
use sluice_client::{Client, Error};
use sluice_proto::v1 as pb;

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
    if json {
        println!(
            "{}",
            json!({"name": p.name, "kind": p.kind, "arn": p.arn, "policies": p.policies,
                   "access_key_ids": keys, "created_ms": p.created_ms})
        );
    } else {
        println!(
            "{}  {}  policies: {}  keys: {}",
            p.name,
            p.kind,
            p.policies.join(","),
            keys.join(",")
        );
    }
}

/// Runs an `iam` command.
pub async fn run(client: &Client, json: bool, cmd: IamCmd) -> Result<(), Error> {
    match cmd {
        IamCmd::CreatePrincipal {
            name,
            kind,
            policies,
        } => {
            let p = client
                .iam(
                    pb::CreatePrincipalRequest {
                        name,
                        kind,
                        policies,
                    },
                    |mut c, r| async move { c.create_principal(r).await },
                )
                .await?;
            show_principal(json, &p);
        }
        IamCmd::GetPrincipal { name } => {
            let p = client
                .iam(pb::GetPrincipalRequest { name }, |mut c, r| async move {
                    c.get_principal(r).await
                })
                .await?;
            show_principal(json, &p);
        }
        IamCmd::ListPrincipals => {
            let mut token = String::new();
            loop {
                let page = client
                    .iam(
                        pb::ListPrincipalsRequest {
                            next_token: token.clone(),
                            max_items: 0,
                        },
                        |mut c, r| async move { c.list_principals(r).await },
                    )
                    .await?;
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
            client
                .iam(pb::DeletePrincipalRequest { name }, |mut c, r| async move {
                    c.delete_principal(r).await
                })
                .await?;
        }
        IamCmd::CreateKey { name, env } => {
            let k = client
                .iam(pb::CreateAccessKeyRequest { name }, |mut c, r| async move {
                    c.create_access_key(r).await
                })
                .await?;
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
            let p = client
                .iam(
                    pb::DeleteAccessKeyRequest {
                        name,
                        access_key_id,
                    },
                    |mut c, r| async move { c.delete_access_key(r).await },
                )
                .await?;
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
            let p = client
                .iam(
                    pb::PutPolicyRequest { name, document },
                    |mut c, r| async move { c.put_policy(r).await },
                )
                .await?;
            println!(
                "{}",
                if json {
                    json!({"name": p.name, "arn": p.arn}).to_string()
                } else {
                    p.arn
                }
            );
        }
        IamCmd::GetPolicy { name } => {
            let p = client
                .iam(pb::GetPolicyRequest { name }, |mut c, r| async move {
                    c.get_policy(r).await
                })
                .await?;
            println!("{}", p.document);
        }
        IamCmd::ListPolicies => {
            let ps = client
                .iam(pb::ListPoliciesRequest {}, |mut c, r| async move {
                    c.list_policies(r).await
                })
                .await?;
            for p in ps.policies {
                if json {
                    println!(
                        "{}",
                        json!({"name": p.name, "arn": p.arn, "builtin": p.builtin})
                    );
                } else {
                    println!("{}{}", p.name, if p.builtin { "  (built-in)" } else { "" });
                }
            }
        }
        IamCmd::DeletePolicy { name } => {
            client
                .iam(pb::DeletePolicyRequest { name }, |mut c, r| async move {
                    c.delete_policy(r).await
                })
                .await?;
        }
        IamCmd::Attach { name, policy } => {
            let p = client
                .iam(
                    pb::AttachPolicyRequest { name, policy },
                    |mut c, r| async move { c.attach_policy(r).await },
                )
                .await?;
            show_principal(json, &p);
        }
        IamCmd::Detach { name, policy } => {
            let p = client
                .iam(
                    pb::DetachPolicyRequest { name, policy },
                    |mut c, r| async move { c.detach_policy(r).await },
                )
                .await?;
            show_principal(json, &p);
        }
        IamCmd::Whoami => {
            let me = client
                .iam(pb::GetCallerIdentityRequest {}, |mut c, r| async move {
                    c.get_caller_identity(r).await
                })
                .await?;
            if json {
                println!(
                    "{}",
                    json!({"name": me.name, "kind": me.kind, "arn": me.arn,
                           "account": me.account, "access_key_id": me.access_key_id})
                );
            } else {
                println!("{} ({}) {}", me.name, me.kind, me.arn);
            }
        }
    }
    Ok(())
}
