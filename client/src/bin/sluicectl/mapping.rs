//! `sluicectl mapping ...`: event source mappings.

use clap::{Args, Subcommand};
use serde_json::json;
use sluice_client::{Client, Error};
use sluice_proto::v1 as pb;

#[derive(Subcommand)]
pub enum MappingCmd {
    /// Feed a function from a queue or a stream.
    Create {
        /// Function name or ARN.
        function: String,
        /// The queue's or stream's ARN.
        #[arg(long)]
        source: String,
        /// Streams: TRIM_HORIZON, LATEST or AT_TIMESTAMP.
        #[arg(long, default_value = "")]
        starting_position: String,
        /// With AT_TIMESTAMP: ms since the epoch.
        #[arg(long)]
        starting_timestamp_ms: Option<u64>,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Change a mapping's settings.
    Update {
        /// The mapping's id.
        uuid: String,
        #[command(flatten)]
        settings: SettingsArgs,
    },
    /// Show a mapping.
    Get {
        /// The mapping's id.
        uuid: String,
    },
    /// Delete a mapping.
    Delete {
        /// The mapping's id.
        uuid: String,
    },
    /// List mappings.
    List {
        /// Only this function's.
        #[arg(long, default_value = "")]
        function: String,
        /// Only this source's (ARN).
        #[arg(long, default_value = "")]
        source: String,
    },
}

/// Settings shared by create and update; unset ones keep their values.
#[derive(Args)]
pub struct SettingsArgs {
    /// Turn the mapping on.
    #[arg(long, conflicts_with = "disable")]
    enable: bool,
    /// Turn the mapping off.
    #[arg(long)]
    disable: bool,
    /// Records per invocation.
    #[arg(long)]
    batch_size: Option<u32>,
    /// Seconds to gather a batch (0-300).
    #[arg(long)]
    window: Option<u32>,
    /// Queues: pollers at most (2-1000; 0 removes the cap).
    #[arg(long)]
    max_concurrency: Option<u32>,
    /// Let the function report failed records (ReportBatchItemFailures).
    #[arg(long)]
    report_failures: Option<bool>,
    /// A filter pattern (JSON); repeatable; `--filter ''` removes them.
    #[arg(long = "filter")]
    filters: Vec<String>,
    /// Streams: batches per shard at once (1-10).
    #[arg(long)]
    parallelization: Option<u32>,
    /// Streams: split a failing batch in two.
    #[arg(long)]
    bisect: Option<bool>,
    /// Streams: retries (-1: until the record expires).
    #[arg(long, allow_negative_numbers = true)]
    max_retries: Option<i32>,
    /// Streams: oldest record to process, seconds (-1: no limit).
    #[arg(long, allow_negative_numbers = true)]
    max_age: Option<i32>,
    /// Streams: tumbling window, seconds (0-900).
    #[arg(long)]
    tumbling_window: Option<u32>,
    /// Streams: queue or topic ARN for records given up ("" removes it).
    #[arg(long)]
    on_failure: Option<String>,
}

impl SettingsArgs {
    fn request(self) -> pb::EventSourceMappingRequest {
        // `--filter ''` alone clears them.
        let cleared = self.filters.iter().any(String::is_empty);
        let filters: Vec<String> = self.filters.into_iter().filter(|f| !f.is_empty()).collect();
        pb::EventSourceMappingRequest {
            enabled: match (self.enable, self.disable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            },
            batch_size: self.batch_size,
            maximum_batching_window_in_seconds: self.window,
            maximum_concurrency: self.max_concurrency,
            set_function_response_types: self.report_failures.is_some(),
            function_response_types: match self.report_failures {
                Some(true) => vec!["ReportBatchItemFailures".into()],
                _ => Vec::new(),
            },
            set_filters: !filters.is_empty() || cleared,
            filters,
            parallelization_factor: self.parallelization,
            bisect_batch_on_function_error: self.bisect,
            maximum_retry_attempts: self.max_retries,
            maximum_record_age_in_seconds: self.max_age,
            tumbling_window_in_seconds: self.tumbling_window,
            on_failure_destination: self.on_failure,
            ..Default::default()
        }
    }
}

fn show(json: bool, m: &pb::EventSourceMapping) {
    crate::print_result(
        json,
        json!({"uuid": m.uuid, "function_arn": m.function_arn,
               "event_source_arn": m.event_source_arn, "state": m.state,
               "batch_size": m.batch_size,
               "maximum_batching_window_in_seconds": m.maximum_batching_window_in_seconds,
               "maximum_concurrency": m.maximum_concurrency,
               "function_response_types": m.function_response_types,
               "filters": m.filters, "starting_position": m.starting_position,
               "parallelization_factor": m.parallelization_factor,
               "bisect_batch_on_function_error": m.bisect_batch_on_function_error,
               "maximum_retry_attempts": m.maximum_retry_attempts,
               "maximum_record_age_in_seconds": m.maximum_record_age_in_seconds,
               "on_failure_destination": m.on_failure_destination,
               "last_processing_result": m.last_processing_result}),
        format_args!(
            "{}  {} -> {}  {}  batch {}  window {} s  {}",
            m.uuid,
            m.event_source_arn,
            m.function_arn,
            m.state,
            m.batch_size,
            m.maximum_batching_window_in_seconds,
            m.last_processing_result
        ),
    );
}

/// Runs a mapping verb.
pub async fn run(client: &Client, json: bool, cmd: MappingCmd) -> Result<(), Error> {
    match cmd {
        MappingCmd::Create {
            function,
            source,
            starting_position,
            starting_timestamp_ms,
            settings,
        } => {
            let req = pb::EventSourceMappingRequest {
                function_name: function,
                event_source_arn: source,
                starting_position,
                starting_position_timestamp_ms: starting_timestamp_ms,
                ..settings.request()
            };
            show(json, &client.create_event_source_mapping(req).await?);
        }
        MappingCmd::Update { uuid, settings } => {
            let req = pb::EventSourceMappingRequest {
                uuid,
                ..settings.request()
            };
            show(json, &client.update_event_source_mapping(req).await?);
        }
        MappingCmd::Get { uuid } => show(json, &client.get_event_source_mapping(&uuid).await?),
        MappingCmd::Delete { uuid } => {
            show(json, &client.delete_event_source_mapping(&uuid).await?)
        }
        MappingCmd::List { function, source } => {
            for m in client
                .list_event_source_mappings(&function, &source)
                .await?
            {
                show(json, &m);
            }
        }
    }
    Ok(())
}
