//! `sluicectl function ...`.

use std::collections::HashMap;
use std::io::Read;
use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;
use sluice_client::{zip_directory, Client, Error};
use sluice_proto::v1 as pb;

use crate::parse_pair;

#[derive(Subcommand)]
pub enum FunctionCmd {
    /// Create a function from a directory or a zip file: the handler module
    /// for a managed runtime (python3.*, nodejs*), else an executable
    /// `bootstrap`.
    Create {
        /// Function name.
        name: String,
        /// A directory (zipped for you) or a .zip file.
        #[arg(long)]
        code: PathBuf,
        /// Passed to the runtime as _HANDLER, e.g. app.handler.
        #[arg(long, default_value = "")]
        handler: String,
        /// The runtime: python3.* and nodejs* start a package without a
        /// bootstrap (the managed runtimes); a package's own bootstrap runs
        /// whatever the runtime.
        #[arg(long, default_value = "provided")]
        runtime: String,
        /// MB (128-10240).
        #[arg(long, default_value_t = 128)]
        memory: i32,
        /// The function's timeout, seconds (1-900). (`--timeout` is the
        /// client's own.)
        #[arg(long, default_value_t = 3)]
        function_timeout: i32,
        /// Environment variable as NAME=VALUE; repeatable.
        #[arg(long = "env", value_parser = parse_pair)]
        env: Vec<(String, String)>,
    },
    /// Replace a function's code.
    Update {
        /// Function name.
        name: String,
        /// A directory or a .zip file.
        #[arg(long)]
        code: PathBuf,
    },
    /// Invoke a function and print its result (a function error exits 1).
    Invoke {
        /// Function name.
        name: String,
        /// The event (JSON); omit with --stdin.
        payload: Option<String>,
        /// Read the event from stdin.
        #[arg(long)]
        stdin: bool,
        /// Also print the last 4 KB of the invocation's log to stderr.
        #[arg(long)]
        log: bool,
        /// $LATEST (default), a version or an alias.
        #[arg(long, default_value = "")]
        qualifier: String,
    },
    /// Publish $LATEST as the next version.
    Publish {
        /// Function name.
        name: String,
    },
    /// List $LATEST and the published versions.
    Versions {
        /// Function name.
        name: String,
    },
    /// Create or update an alias (a name for a version, optionally with a
    /// share of invocations for a second version).
    Alias {
        /// Function name.
        name: String,
        /// Alias name.
        alias: String,
        /// The version it names.
        #[arg(long)]
        version: String,
        /// A second version and its share, VERSION=WEIGHT (0.0-1.0).
        #[arg(long, value_parser = parse_pair)]
        weight: Option<(String, String)>,
    },
    /// List a function's aliases.
    Aliases {
        /// Function name.
        name: String,
    },
    /// List functions.
    List,
    /// Show a function's configuration.
    Get {
        /// Function name.
        name: String,
    },
    /// Delete a function.
    Delete {
        /// Function name.
        name: String,
    },
    /// Print the logs of recent invocations, newest first (kept by the
    /// workers that ran them).
    Logs {
        /// Function name.
        name: String,
        /// Only this invocation's.
        #[arg(long, default_value = "")]
        request_id: String,
        /// At most this many invocations (1-1000).
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Show, set or clear a function's reserved concurrency.
    Concurrency {
        /// Function name.
        name: String,
        /// Invocations at once, at most (0-1000; 0 throttles all).
        #[arg(long, conflicts_with = "clear")]
        reserved: Option<u32>,
        /// Remove the reservation.
        #[arg(long)]
        clear: bool,
    },
    /// Show, set or clear the provisioned concurrency of a version or
    /// alias.
    Provisioned {
        /// Function name.
        name: String,
        /// Version number or alias.
        qualifier: String,
        /// Environments to keep ready (1-100).
        #[arg(long, conflicts_with = "clear")]
        count: Option<u32>,
        /// Remove the configuration.
        #[arg(long)]
        clear: bool,
    },
    /// List the workers registered with the cluster.
    Workers,
}

fn package(path: &PathBuf) -> Result<Vec<u8>, Error> {
    if path.is_dir() {
        zip_directory(path)
    } else {
        std::fs::read(path).map_err(|e| Error::Config(format!("reading {}: {e}", path.display())))
    }
}

fn show(json: bool, c: &pb::FunctionConfiguration) {
    crate::print_result(
        json,
        json!({"function_name": c.function_name, "function_arn": c.function_arn,
               "handler": c.handler, "runtime": c.runtime, "memory_size": c.memory_size,
               "timeout": c.timeout, "code_sha256": c.code_sha256, "code_size": c.code_size,
               "last_modified": c.last_modified, "revision_id": c.revision_id}),
        format_args!(
            "{}  {}  {} MB  {} s  {} bytes  {}",
            c.function_arn, c.handler, c.memory_size, c.timeout, c.code_size, c.last_modified
        ),
    );
}

fn print_alias(json: bool, a: &pb::AliasConfiguration) {
    if json {
        println!(
            "{}",
            json!({"alias_arn": a.alias_arn, "name": a.name, "function_version": a.function_version,
                   "additional_version_weights": a.additional_version_weights})
        );
    } else {
        let extra: Vec<String> = a
            .additional_version_weights
            .iter()
            .map(|(v, w)| format!("{v}={w}"))
            .collect();
        println!(
            "{}  -> {} {}",
            a.alias_arn,
            a.function_version,
            extra.join(" ")
        );
    }
}

fn decode_base64(s: &str) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(s)
        .unwrap_or_default()
}

/// Runs a function verb; true when the invoked function failed.
pub async fn run(client: &Client, json: bool, cmd: FunctionCmd) -> Result<bool, Error> {
    match cmd {
        FunctionCmd::Create {
            name,
            code,
            handler,
            runtime,
            memory,
            function_timeout,
            env,
        } => {
            let c = client
                .create_function(pb::CreateFunctionRequest {
                    function_name: name,
                    runtime,
                    handler,
                    memory_size: memory,
                    timeout: function_timeout,
                    environment: env.into_iter().collect::<HashMap<_, _>>(),
                    zip_file: package(&code)?,
                    description: String::new(),
                })
                .await?;
            show(json, &c);
        }
        FunctionCmd::Update { name, code } => {
            let c = client.update_function_code(&name, package(&code)?).await?;
            show(json, &c);
        }
        FunctionCmd::Invoke {
            name,
            payload,
            stdin,
            log,
            qualifier,
        } => {
            let payload = match (payload, stdin) {
                (Some(p), false) => p.into_bytes(),
                (None, true) => {
                    let mut buf = Vec::new();
                    std::io::stdin()
                        .read_to_end(&mut buf)
                        .map_err(|e| Error::Config(format!("reading stdin: {e}")))?;
                    buf
                }
                (None, false) => b"{}".to_vec(),
                (Some(_), true) => {
                    return Err(Error::Config(
                        "give the payload as an argument or with --stdin, not both".into(),
                    ))
                }
            };
            let r = client
                .invoke(pb::InvokeRequest {
                    function_name: name,
                    invocation_type: "RequestResponse".into(),
                    payload,
                    qualifier,
                    log_type: if log { "Tail".into() } else { "None".into() },
                })
                .await?;
            if log {
                eprintln!("{}", String::from_utf8_lossy(&decode_base64(&r.log_result)));
            }
            let text = String::from_utf8_lossy(&r.payload);
            crate::print_result(
                json,
                json!({"status_code": r.status_code, "function_error": r.function_error,
                       "payload": text, "executed_version": r.executed_version}),
                &text,
            );
            return Ok(!r.function_error.is_empty());
        }
        FunctionCmd::Publish { name } => show(json, &client.publish_version(&name).await?),
        FunctionCmd::Versions { name } => {
            for c in client.list_versions(&name).await? {
                if json {
                    show(json, &c);
                } else {
                    println!("{:<8} {}  {}", c.version, c.code_sha256, c.last_modified);
                }
            }
        }
        FunctionCmd::Alias {
            name,
            alias,
            version,
            weight,
        } => {
            let mut weights = HashMap::new();
            if let Some((v, w)) = weight {
                let w: f64 = w
                    .parse()
                    .map_err(|_| Error::Config(format!("--weight: {w:?} is not a number")))?;
                weights.insert(v, w);
            }
            let exists = client
                .list_aliases(&name)
                .await?
                .iter()
                .any(|a| a.name == alias);
            let a = client
                .put_alias(
                    pb::AliasRequest {
                        function_name: name,
                        name: alias,
                        function_version: version,
                        description: String::new(),
                        additional_version_weights: weights,
                    },
                    !exists,
                )
                .await?;
            print_alias(json, &a);
        }
        FunctionCmd::Aliases { name } => {
            for a in client.list_aliases(&name).await? {
                print_alias(json, &a);
            }
        }
        FunctionCmd::List => {
            for c in client.list_functions().await? {
                show(json, &c);
            }
        }
        FunctionCmd::Get { name } => show(json, &client.get_function(&name).await?),
        FunctionCmd::Delete { name } => {
            client.delete_function(&name).await?;
            crate::print_removed(json, "deleted", &name);
        }
        FunctionCmd::Logs {
            name,
            request_id,
            limit,
        } => {
            for l in client.function_logs(&name, &request_id, limit).await? {
                if json {
                    println!(
                        "{}",
                        json!({"request_id": l.request_id, "version": l.version,
                               "started_ms": l.started_ms, "duration_us": l.duration_us,
                               "function_error": l.function_error, "cold_start": l.cold_start,
                               "worker_id": l.worker_id, "lines": l.lines})
                    );
                } else {
                    println!(
                        "== {} version {} on {}{}{}",
                        l.request_id,
                        l.version,
                        l.worker_id,
                        if l.cold_start { ", cold start" } else { "" },
                        if l.function_error { ", failed" } else { "" }
                    );
                    for line in &l.lines {
                        println!("{line}");
                    }
                }
            }
        }
        FunctionCmd::Concurrency {
            name,
            reserved,
            clear,
        } => {
            let now = if clear || reserved.is_some() {
                client
                    .put_function_concurrency(&name, reserved)
                    .await?
                    .reserved_concurrent_executions
            } else {
                client.function_concurrency(&name).await?
            };
            match (json, now) {
                (true, n) => println!("{}", json!({"function_name": name, "reserved": n})),
                (false, Some(n)) => println!("{name}: {n} reserved"),
                (false, None) => println!("{name}: none reserved"),
            }
        }
        FunctionCmd::Provisioned {
            name,
            qualifier,
            count,
            clear,
        } => {
            let c = if clear || count.is_some() {
                client
                    .put_provisioned_concurrency(&name, &qualifier, count)
                    .await?
            } else {
                client.provisioned_concurrency(&name, &qualifier).await?
            };
            if json {
                println!(
                    "{}",
                    json!({"function_name": c.function_name, "qualifier": c.qualifier,
                           "requested": c.requested, "available": c.available, "status": c.status})
                );
            } else if clear {
                println!("{name}:{qualifier}: provisioned concurrency removed");
            } else {
                println!(
                    "{name}:{qualifier}: {} of {} ready ({})",
                    c.available, c.requested, c.status
                );
            }
        }
        FunctionCmd::Workers => {
            for w in client.list_workers().await? {
                let warm: u32 = w.warm.iter().map(|e| e.idle + e.busy).sum();
                crate::print_result(
                    json,
                    json!({"worker_id": w.worker_id, "address": w.address, "live": w.live,
                           "memory_mb": w.memory_mb, "memory_used_mb": w.memory_used_mb,
                           "running": w.running, "environments": warm,
                           "last_seen_ago_ms": w.last_seen_ago_ms}),
                    format_args!(
                        "{}  {}  {}  {}/{} MB  {} running  {} environments  seen {} ms ago",
                        w.worker_id,
                        w.address,
                        if w.live { "live" } else { "silent" },
                        w.memory_used_mb,
                        w.memory_mb,
                        w.running,
                        warm,
                        w.last_seen_ago_ms
                    ),
                );
            }
        }
    }
    Ok(false)
}
