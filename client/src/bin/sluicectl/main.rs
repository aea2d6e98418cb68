//! `sluicectl`: manage a Sluice cluster from the command line.
//!
//! Errors print as one line, `sluicectl: <code>: <message>`, and exit with
//! status 1 (2 for usage errors).

use std::collections::HashMap;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

mod events;
mod function;
mod iam;
mod mapping;
mod queue;
mod stream;
mod topic;

use function::FunctionCmd;
use queue::QueueCmd;
use serde_json::json;
use sluice_client::{Client, Error, Options};
use sluice_proto::v1 as pb;
use stream::StreamCmd;
use topic::TopicCmd;

/// Manage a Sluice cluster.
#[derive(Parser)]
#[command(name = "sluicectl", version)]
struct Cli {
    /// Broker nodes to talk to, comma-separated HOST:PORT.
    #[arg(
        long,
        env = "SLUICE_CLUSTER",
        default_value = "127.0.0.1:7070",
        global = true
    )]
    cluster: String,
    /// Give up retrying an unavailable cluster after this many seconds.
    #[arg(long, default_value_t = 30, global = true)]
    timeout: u64,
    /// Print results as JSON.
    #[arg(long, global = true)]
    json: bool,
    /// Connect with TLS (implied by --tls-ca and --tls-cert).
    #[arg(long, env = "SLUICE_TLS", global = true)]
    tls: bool,
    /// Trust the cluster's certificates from this CA (PEM) [default with
    /// --tls: the public web PKI].
    #[arg(long, env = "SLUICE_TLS_CA", global = true)]
    tls_ca: Option<std::path::PathBuf>,
    /// Present this client certificate (PEM): the cluster takes the caller
    /// for the principal its subject's common name names.
    #[arg(long, env = "SLUICE_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<std::path::PathBuf>,
    /// The key of --tls-cert (PEM).
    #[arg(long, env = "SLUICE_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<std::path::PathBuf>,
    /// The name the cluster's certificates carry, when not the host dialled.
    #[arg(long, global = true)]
    tls_server_name: Option<String>,
    /// A file with access_key_id and secret_access_key to sign calls with
    /// [default: SLUICE_ACCESS_KEY_ID and SLUICE_SECRET_ACCESS_KEY, if set].
    #[arg(long, env = "SLUICE_CREDENTIALS_FILE", global = true)]
    credentials_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Cluster status and membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Queues.
    #[command(subcommand)]
    Queue(QueueCmd),
    /// Streams.
    #[command(subcommand)]
    Stream(StreamCmd),
    /// Topics and subscriptions.
    #[command(subcommand)]
    Topic(TopicCmd),
    /// Event source mappings: queues and streams feeding functions.
    #[command(subcommand)]
    Mapping(mapping::MappingCmd),
    /// Functions: create, invoke, publish, alias, logs, concurrency, workers.
    #[command(subcommand)]
    Function(FunctionCmd),
    /// Principals, access keys and policies.
    #[command(subcommand)]
    Iam(iam::IamCmd),
    /// Event buses, rules, targets and events.
    #[command(subcommand)]
    Events(events::EventsCmd),
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Leader, term, members and their replication lag.
    Status {
        /// The called node's own view instead of the leader's.
        #[arg(long)]
        local: bool,
    },
    /// Add a node (started with `sluice serve --join`) as a learner.
    AddLearner {
        /// The new node's id.
        node_id: u64,
        /// HOST:PORT the other nodes reach it at.
        address: String,
    },
    /// Make a learner a voter.
    Promote {
        /// The learner's id.
        node_id: u64,
    },
    /// Remove a voter or learner.
    Remove {
        /// The member's id.
        node_id: u64,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        /// The voter to lead; by default the most caught-up one.
        #[arg(long)]
        to: Option<u64>,
    },
    /// Build a snapshot on the (first) node given by --cluster.
    Snapshot,
}

/// Sends `items` (lines of stdin) over one producer call, in order, all in
/// flight at once; prints each reply, and names each line that failed (the
/// first failure is the command's error).
async fn send_lines<K: sluice_client::Kind>(
    sender: &sluice_client::Sender<K>,
    items: impl Iterator<Item = K::Item>,
    print: impl Fn(K::Done),
) -> Result<(), Error> {
    let replies: Vec<_> = items.map(|item| sender.send(item)).collect();
    let mut failed = None;
    for (line, reply) in replies.into_iter().enumerate() {
        match reply.await {
            Ok(r) => print(r),
            Err(e) => {
                eprintln!("line {}: {e}", line + 1);
                failed.get_or_insert(e);
            }
        }
    }
    failed.map_or(Ok(()), Err)
}

/// The one value given as an argument, or with `--stdin` one per non-empty
/// line of stdin.
fn arg_or_stdin(arg: Option<String>, stdin: bool, what: &str) -> Result<Vec<String>, Error> {
    if stdin {
        Ok(std::io::stdin()
            .lines()
            .map_while(Result::ok)
            .filter(|l| !l.is_empty())
            .collect())
    } else {
        let v = arg.ok_or_else(|| Error::Config(format!("give {what}, or --stdin")))?;
        Ok(vec![v])
    }
}

/// Prints attributes sorted by name, as a table or a JSON object.
fn print_attributes(json: bool, attrs: impl IntoIterator<Item = (String, String)>) {
    let sorted: std::collections::BTreeMap<_, _> = attrs.into_iter().collect();
    if json {
        println!("{}", json!(sorted));
    } else {
        let width = sorted.keys().map(String::len).max().unwrap_or(0);
        for (k, v) in sorted {
            println!("{k:<width$}  {v}");
        }
    }
}

/// Prints one result: the JSON value with --json, else the plain text.
fn print_result(json: bool, value: serde_json::Value, text: impl std::fmt::Display) {
    if json {
        println!("{value}");
    } else {
        println!("{text}");
    }
}

/// Prints rows: with --json one JSON array of `as_json` of each, else
/// `as_line` of each, one a line.
fn print_rows<T>(
    json: bool,
    rows: &[T],
    as_json: impl Fn(&T) -> serde_json::Value,
    as_line: impl Fn(&T) -> String,
) {
    if json {
        println!(
            "{}",
            serde_json::Value::Array(rows.iter().map(as_json).collect())
        );
    } else {
        for r in rows {
            println!("{}", as_line(r));
        }
    }
}

/// Prints a list of names: a JSON array with --json, else one a line.
fn print_names(json: bool, names: &[String]) {
    if json {
        println!("{}", json!(names));
    } else {
        for n in names {
            println!("{n}");
        }
    }
}

/// With --json, prints `{key: name}` for what a verb removed; without, nothing.
fn print_removed(json: bool, key: &str, name: &str) {
    if json {
        println!("{}", json!({ key: name }));
    }
}

/// A message to send to a queue or publish to a topic: its body or
/// bodies, FIFO ids and attributes.
#[derive(clap::Args)]
struct Outgoing {
    /// The body (omit with --stdin).
    body: Option<String>,
    /// Read bodies from stdin, one per line.
    #[arg(long)]
    stdin: bool,
    /// Message group id (FIFO).
    #[arg(long)]
    group: Option<String>,
    /// Deduplication id (FIFO).
    #[arg(long)]
    dedup: Option<String>,
    /// String attribute as NAME=VALUE; repeatable.
    #[arg(long = "attribute", short = 'a', value_parser = parse_pair)]
    attributes: Vec<(String, String)>,
    /// Number attribute as NAME=VALUE; repeatable.
    #[arg(long = "number", short = 'n', value_parser = parse_pair)]
    numbers: Vec<(String, String)>,
}

impl Outgoing {
    /// The body given, or with `--stdin` one per line.
    fn bodies(&self) -> Result<Vec<String>, Error> {
        arg_or_stdin(self.body.clone(), self.stdin, "the message body")
    }

    /// The message attributes, String and Number.
    fn attributes(&self) -> HashMap<String, pb::MessageAttributeValue> {
        let typed = |data_type: &str, pairs: &[(String, String)]| {
            pairs
                .iter()
                .map(|(k, v)| {
                    let value = pb::MessageAttributeValue {
                        data_type: data_type.into(),
                        string_value: v.clone(),
                        binary_value: Vec::new(),
                    };
                    (k.clone(), value)
                })
                .collect::<Vec<_>>()
        };
        typed("String", &self.attributes)
            .into_iter()
            .chain(typed("Number", &self.numbers))
            .collect()
    }
}

fn parse_pair(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))
}

fn members_json(members: &[pb::MemberStatus]) -> serde_json::Value {
    members
        .iter()
        .map(|m| {
            json!({
                "node_id": m.node_id, "address": m.address, "role": m.role,
                "matched_index": m.matched_index, "lag": m.lag,
            })
        })
        .collect()
}

fn print_members(members: &[pb::MemberStatus]) {
    println!(
        "{:<8} {:<24} {:<8} {:>10} {:>8}",
        "NODE", "ADDRESS", "ROLE", "MATCHED", "LAG"
    );
    for m in members {
        let opt = |v: Option<u64>| v.map(|v| v.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<8} {:<24} {:<8} {:>10} {:>8}",
            m.node_id,
            m.address,
            m.role,
            opt(m.matched_index),
            opt(m.lag)
        );
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let credentials = match &cli.credentials_file {
        Some(p) => Some(sluice_client::Credentials::from_file(p).map_err(Error::Config)?),
        None => sluice_client::Credentials::from_env().map_err(Error::Config)?,
    };
    let client = Client::with_options(
        cli.cluster.split(','),
        Options {
            deadline: Duration::from_secs(cli.timeout),
            tls: sluice_client::ClientTls {
                enabled: cli.tls,
                ca: cli.tls_ca.clone(),
                cert: cli
                    .tls_cert
                    .clone()
                    .zip(cli.tls_key.clone())
                    .map(|(cert, key)| sluice_client::CertFiles { cert, key }),
                server_name: cli.tls_server_name.clone(),
            },
            credentials,
            ..Options::default()
        },
    )?;
    let json = cli.json;
    match cli.command {
        Command::Cluster(cmd) => match cmd {
            ClusterCmd::Status { local } => {
                let s = client.cluster_status(local).await?;
                if json {
                    println!(
                        "{}",
                        json!({
                            "node_id": s.node_id, "state": s.state, "leader_id": s.leader_id,
                            "term": s.term, "last_log_index": s.last_log_index,
                            "applied_index": s.applied_index, "snapshot_index": s.snapshot_index,
                            "purged_index": s.purged_index, "region": s.region,
                            "account_id": s.account_id, "members": members_json(&s.members),
                            "repair_target": s.repair_target,
                        })
                    );
                } else {
                    let leader = s
                        .leader_id
                        .map(|l| l.to_string())
                        .unwrap_or_else(|| "none".into());
                    println!(
                        "answered by node {} ({}); leader {leader}, term {}",
                        s.node_id, s.state, s.term
                    );
                    println!(
                        "log {} applied {} snapshot {} purged {}",
                        s.last_log_index,
                        s.applied_index,
                        s.snapshot_index
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        s.purged_index
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                    );
                    if let Some(target) = s.repair_target {
                        println!(
                            "repairing a damaged log from the leader: no votes or leadership until the log reaches {target}"
                        );
                    }
                    print_members(&s.members);
                }
            }
            ClusterCmd::AddLearner { node_id, address } => {
                let m = client.add_learner(node_id, &address).await?;
                show_membership(json, &m);
            }
            ClusterCmd::Promote { node_id } => {
                let m = client.promote_learner(node_id).await?;
                show_membership(json, &m);
            }
            ClusterCmd::Remove { node_id } => {
                let m = client.remove_member(node_id).await?;
                show_membership(json, &m);
            }
            ClusterCmd::TransferLeader { to } => {
                let t = client.transfer_leadership(to).await?;
                print_result(
                    json,
                    json!({"previous_leader_id": t.previous_leader_id, "new_leader_id": t.new_leader_id, "term": t.term}),
                    format_args!(
                        "leadership moved from node {} to node {} (term {})",
                        t.previous_leader_id, t.new_leader_id, t.term
                    ),
                );
            }
            ClusterCmd::Snapshot => {
                let s = client.trigger_snapshot().await?;
                print_result(
                    json,
                    json!({"node_id": s.node_id, "snapshot_index": s.snapshot_index}),
                    format_args!("node {} snapshot at index {}", s.node_id, s.snapshot_index),
                );
            }
        },
        Command::Queue(cmd) => queue::run(&client, json, cmd).await?,
        Command::Stream(cmd) => stream::run(&client, json, cmd).await?,
        Command::Topic(cmd) => topic::run(&client, json, cmd).await?,
        Command::Mapping(cmd) => mapping::run(&client, json, cmd).await?,
        Command::Iam(cmd) => iam::run(&client, json, cmd).await?,
        Command::Events(cmd) => events::run(&client, json, cmd).await?,
        Command::Function(cmd) => {
            if function::run(&client, json, cmd).await? {
                return Err(Error::Config("the function failed".into()));
            }
        }
    }
    Ok(())
}

fn show_membership(json: bool, m: &pb::MembershipResponse) {
    if json {
        println!(
            "{}",
            json!({"log_index": m.log_index, "members": members_json(&m.members)})
        );
    } else {
        print_members(&m.members);
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sluicectl: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let line = e.to_string().replace('\n', " ");
            eprintln!("sluicectl: {line}");
            ExitCode::FAILURE
        }
    }
}
