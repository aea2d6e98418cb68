//! `sluicectl stream ...`.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;
use sluice_client::{Client, Error, Start, StreamFollower};
use sluice_proto::v1 as pb;

use crate::parse_pair;

/// How long `tail` waits before asking again when it has caught up.
const TAIL_IDLE: Duration = Duration::from_millis(200);

#[derive(Subcommand)]
pub enum StreamCmd {
    /// Create a stream.
    Create {
        /// Stream name.
        name: String,
        /// Number of shards (1-500).
        #[arg(long, default_value_t = 1)]
        shards: i32,
        /// Retention in hours (24-8760).
        #[arg(long)]
        retention: Option<i32>,
        /// Per-shard write limit in records per second (0: none).
        #[arg(long)]
        write_records_per_second: Option<i32>,
        /// Per-shard write limit in bytes per second (0: none).
        #[arg(long)]
        write_bytes_per_second: Option<i32>,
        /// Tag as KEY=VALUE; repeatable.
        #[arg(long = "tag", value_parser = parse_pair)]
        tags: Vec<(String, String)>,
    },
    /// Show a stream and its shards.
    Describe {
        /// Stream name.
        name: String,
    },
    /// List streams.
    List,
    /// Delete a stream and its records.
    Delete {
        /// Stream name.
        name: String,
    },
    /// Put a record, or one per line of stdin with --stdin.
    Put {
        /// Stream name.
        name: String,
        /// The record's data (omit with --stdin).
        data: Option<String>,
        /// Read records from stdin, one per line.
        #[arg(long)]
        stdin: bool,
        /// Partition key; by default each record's own data (its first 256
        /// characters), so equal records land on the same shard.
        #[arg(long)]
        key: Option<String>,
        /// Explicit hash key (decimal, 0 to 2^128-1) instead of the key's MD5.
        #[arg(long)]
        hash_key: Option<String>,
    },
    /// Print a shard's records from a position up to its newest, then stop.
    Get {
        /// Stream name.
        name: String,
        /// Shard id, e.g. shardId-000000000000.
        #[arg(long)]
        shard: String,
        /// trim-horizon, latest, at:SEQ, after:SEQ or time:MILLIS.
        #[arg(long, default_value = "trim-horizon")]
        from: String,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<usize>,
    },
    /// Follow a shard, or the whole stream in lineage order, until interrupted.
    Tail {
        /// Stream name.
        name: String,
        /// Follow only this shard (and stop when it closes).
        #[arg(long)]
        shard: Option<String>,
        /// trim-horizon or latest (with --shard also at:SEQ, after:SEQ,
        /// time:MILLIS).
        #[arg(long, default_value = "latest")]
        from: String,
    },
    /// Split a shard, merge two, or rescale to a number of uniform shards.
    Reshard {
        /// Stream name.
        name: String,
        /// Split this shard...
        #[arg(long, requires = "at", conflicts_with_all = ["merge", "count"])]
        split: Option<String>,
        /// ...at this hash key (the second child's first).
        #[arg(long)]
        at: Option<String>,
        /// Merge these two adjacent shards.
        #[arg(long, num_args = 2, value_names = ["SHARD", "ADJACENT"], conflicts_with = "count")]
        merge: Option<Vec<String>>,
        /// Rescale to this many uniform shards.
        #[arg(long)]
        count: Option<i32>,
    },
    /// Show the retention period, or change it.
    Retention {
        /// Stream name.
        name: String,
        /// New retention in hours (24-8760).
        hours: Option<i32>,
    },
}

/// Runs a stream verb.
pub async fn run(client: &Client, json: bool, cmd: StreamCmd) -> Result<(), Error> {
    match cmd {
        StreamCmd::Create {
            name,
            shards,
            retention,
            write_records_per_second,
            write_bytes_per_second,
            tags,
        } => {
            let r = client
                .create_stream(pb::CreateStreamRequest {
                    stream_name: name,
                    shard_count: shards,
                    max_record_size_in_bytes: None,
                    shard_write_records_per_second: write_records_per_second,
                    shard_write_bytes_per_second: write_bytes_per_second,
                    tags: tags.into_iter().collect::<HashMap<_, _>>(),
                    retention_period_hours: retention,
                })
                .await?;
            crate::print_result(
                json,
                json!({"stream_arn": r.stream_arn, "created": r.created}),
                &r.stream_arn,
            );
        }
        StreamCmd::Describe { name } => {
            let d = client.describe_stream(&name).await?;
            let shards = client.list_shards(&name).await?;
            if json {
                let shards: Vec<_> = shards.iter().map(shard_json).collect();
                println!(
                    "{}",
                    json!({
                        "stream_name": d.stream_name, "stream_arn": d.stream_arn,
                        "retention_period_hours": d.retention_period_hours,
                        "stream_creation_timestamp": d.stream_creation_timestamp,
                        "max_record_size_in_bytes": d.max_record_size_in_bytes,
                        "shard_write_records_per_second": d.shard_write_records_per_second,
                        "shard_write_bytes_per_second": d.shard_write_bytes_per_second,
                        "shards": shards,
                    })
                );
            } else {
                println!("{} ({})", d.stream_name, d.stream_arn);
                println!(
                    "retention {} h, records up to {} bytes, per-shard writes {} rec/s {} B/s",
                    d.retention_period_hours,
                    d.max_record_size_in_bytes,
                    limit_text(d.shard_write_records_per_second),
                    limit_text(d.shard_write_bytes_per_second)
                );
                println!(
                    "{:<22} {:<7} {:<22} {:>40} {:>40}",
                    "SHARD", "STATE", "PARENTS", "FIRST HASH", "LAST HASH"
                );
                for s in &shards {
                    let closed = s
                        .sequence_number_range
                        .as_ref()
                        .is_some_and(|r| !r.ending_sequence_number.is_empty());
                    let parents = [&s.parent_shard_id, &s.adjacent_parent_shard_id]
                        .into_iter()
                        .filter(|p| !p.is_empty())
                        .map(|p| p.trim_start_matches("shardId-").trim_start_matches('0'))
                        .map(|p| if p.is_empty() { "0" } else { p })
                        .collect::<Vec<_>>()
                        .join(",");
                    let range = s.hash_key_range.clone().unwrap_or_default();
                    println!(
                        "{:<22} {:<7} {:<22} {:>40} {:>40}",
                        s.shard_id,
                        if closed { "closed" } else { "open" },
                        if parents.is_empty() {
                            "-".into()
                        } else {
                            parents
                        },
                        range.starting_hash_key,
                        range.ending_hash_key
                    );
                }
            }
        }
        StreamCmd::List => {
            crate::print_names(json, &client.list_streams().await?);
        }
        StreamCmd::Delete { name } => {
            client.delete_stream(&name).await?;
            crate::print_removed(json, "deleted", &name);
        }
        StreamCmd::Put {
            name,
            data,
            stdin,
            key,
            hash_key,
        } => {
            let lines = crate::arg_or_stdin(data, stdin, "the record's data")?;
            let record = |line: String| pb::PutRecordRequest {
                stream_name: String::new(),
                partition_key: key
                    .clone()
                    .unwrap_or_else(|| line.chars().take(256).collect()),
                explicit_hash_key: hash_key.clone().unwrap_or_default(),
                data: line.into_bytes(),
            };
            let print = |r: pb::PutRecordResponse| {
                crate::print_result(
                    json,
                    json!({"shard_id": r.shard_id, "sequence_number": r.sequence_number}),
                    format!("{} {}", r.shard_id, r.sequence_number),
                )
            };
            let mut lines = lines;
            if lines.len() == 1 {
                let mut one = record(lines.remove(0));
                one.stream_name = name;
                print(client.put_record(one).await?);
            } else {
                // Lines go over one stream, in order; each is answered on
                // its own, and those that failed are named by line.
                let sender = client.record_sender(&name);
                crate::send_lines(&sender, lines.into_iter().map(record), print).await?;
            }
        }
        StreamCmd::Get {
            name,
            shard,
            from,
            max,
        } => {
            let mut it = iterator(client, &name, &shard, &from).await?;
            let mut left = max.unwrap_or(usize::MAX);
            while left > 0 {
                let r = client.get_records(&it, left.min(10_000) as i32).await?;
                left -= r.records.len().min(left);
                for rec in &r.records {
                    print_record(json, &shard, rec);
                }
                if r.next_shard_iterator.is_empty()
                    || (r.records.is_empty() && r.millis_behind_latest == 0)
                {
                    break;
                }
                it = r.next_shard_iterator;
            }
        }
        StreamCmd::Tail { name, shard, from } => match shard {
            Some(shard) => {
                let mut it = iterator(client, &name, &shard, &from).await?;
                loop {
                    let r = client.get_records(&it, 10_000).await?;
                    for rec in &r.records {
                        print_record(json, &shard, rec);
                    }
                    if r.next_shard_iterator.is_empty() {
                        let children: Vec<_> =
                            r.child_shards.iter().map(|c| c.shard_id.as_str()).collect();
                        eprintln!("{shard} is closed; its children: {}", children.join(", "));
                        return Ok(());
                    }
                    it = r.next_shard_iterator;
                    if r.records.is_empty() {
                        tokio::time::sleep(TAIL_IDLE).await;
                    }
                }
            }
            None => {
                let start = match from.as_str() {
                    "trim-horizon" => Start::TrimHorizon,
                    "latest" => Start::Latest,
                    other => {
                        return Err(Error::Config(format!(
                        "--from: following a whole stream starts at trim-horizon or latest, not {other:?}"
                    )))
                    }
                };
                let mut follower = StreamFollower::new(client.clone(), &name, start).await?;
                loop {
                    let records = follower.poll(10_000).await?;
                    for (shard, rec) in &records {
                        print_record(json, shard, rec);
                    }
                    if records.is_empty() {
                        tokio::time::sleep(TAIL_IDLE).await;
                    }
                }
            }
        },
        StreamCmd::Reshard {
            name,
            split,
            at,
            merge,
            count,
        } => {
            if let Some(shard) = split {
                let children = client
                    .split_shard(pb::SplitShardRequest {
                        stream_name: name,
                        shard_to_split: shard,
                        new_starting_hash_key: at.unwrap_or_default(),
                    })
                    .await?;
                crate::print_result(
                    json,
                    json!({ "child_shard_ids": children }),
                    children.join(" "),
                );
            } else if let Some(pair) = merge {
                let child = client
                    .merge_shards(pb::MergeShardsRequest {
                        stream_name: name,
                        shard_to_merge: pair[0].clone(),
                        adjacent_shard_to_merge: pair[1].clone(),
                    })
                    .await?;
                crate::print_result(json, json!({ "child_shard_id": child }), &child);
            } else if let Some(target) = count {
                let r = client.update_shard_count(&name, target).await?;
                crate::print_result(
                    json,
                    json!({"current_shard_count": r.current_shard_count, "target_shard_count": r.target_shard_count}),
                    format_args!(
                        "{} open shards, was {}",
                        r.target_shard_count, r.current_shard_count
                    ),
                );
            } else {
                return Err(Error::Config(
                    "give --split SHARD --at HASH, --merge SHARD ADJACENT or --count N".into(),
                ));
            }
        }
        StreamCmd::Retention { name, hours } => {
            let current = client.describe_stream(&name).await?.retention_period_hours;
            if let Some(h) = hours {
                if h != current {
                    client.set_stream_retention(&name, h, h > current).await?;
                }
            }
            let now = client.describe_stream(&name).await?.retention_period_hours;
            crate::print_result(
                json,
                json!({ "retention_period_hours": now }),
                format_args!("{now} hours"),
            );
        }
    }
    Ok(())
}

fn limit_text(v: i32) -> String {
    if v == 0 {
        "unlimited".into()
    } else {
        v.to_string()
    }
}

fn shard_json(s: &pb::Shard) -> serde_json::Value {
    let range = s.hash_key_range.clone().unwrap_or_default();
    let seqs = s.sequence_number_range.clone().unwrap_or_default();
    json!({
        "shard_id": s.shard_id, "parent_shard_id": s.parent_shard_id,
        "adjacent_parent_shard_id": s.adjacent_parent_shard_id,
        "starting_hash_key": range.starting_hash_key, "ending_hash_key": range.ending_hash_key,
        "starting_sequence_number": seqs.starting_sequence_number,
        "ending_sequence_number": seqs.ending_sequence_number,
    })
}

/// A shard iterator for a `--from` position.
async fn iterator(client: &Client, stream: &str, shard: &str, from: &str) -> Result<String, Error> {
    let (kind, seq, timestamp) = match from.split_once(':') {
        None if from == "trim-horizon" => ("TRIM_HORIZON", "", 0),
        None if from == "latest" => ("LATEST", "", 0),
        Some(("at", seq)) => ("AT_SEQUENCE_NUMBER", seq, 0),
        Some(("after", seq)) => ("AFTER_SEQUENCE_NUMBER", seq, 0),
        Some(("time", ms)) => (
            "AT_TIMESTAMP",
            "",
            ms.parse::<i64>().map_err(|_| {
                Error::Config(format!(
                    "--from time:MILLIS needs milliseconds since the epoch, got {ms:?}"
                ))
            })?,
        ),
        _ => {
            return Err(Error::Config(format!(
            "--from must be trim-horizon, latest, at:SEQ, after:SEQ or time:MILLIS, not {from:?}"
        )))
        }
    };
    client
        .get_shard_iterator(pb::GetShardIteratorRequest {
            stream_name: stream.to_string(),
            shard_id: shard.to_string(),
            shard_iterator_type: kind.into(),
            starting_sequence_number: seq.into(),
            timestamp,
        })
        .await
}

fn print_record(json: bool, shard: &str, r: &pb::Record) {
    let mut out = std::io::stdout().lock();
    let _ = if json {
        let mut v = json!({
            "shard_id": shard, "sequence_number": r.sequence_number,
            "partition_key": r.partition_key,
            "approximate_arrival_timestamp": r.approximate_arrival_timestamp,
        });
        // Text data as text; anything else as hex.
        match std::str::from_utf8(&r.data) {
            Ok(text) => v["data"] = json!(text),
            Err(_) => {
                v["data_hex"] = json!(r
                    .data
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<String>())
            }
        }
        writeln!(out, "{v}")
    } else {
        writeln!(out, "{}", String::from_utf8_lossy(&r.data))
    };
    let _ = out.flush();
}
