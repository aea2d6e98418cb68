//! `sluice.v1.Functions`.
//!
//! The registry calls become commands and queries. Invoke reads the
//! function (linearizably, so a just-updated function runs its new code)
//! and routes it to a worker (`dispatch`): one with a warm environment when
//! there is one. A function with reserved concurrency is invoked from the
//! leader, which counts its running invocations.

use super::status::IntoStatus;
use std::collections::BTreeMap;
use std::io::Cursor;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sluice_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Reply;

use super::fields::{next_token, optional};
use super::{consistency, Consistency, Context};
use crate::error::DomainError;
use crate::functions::events::{Destination, EventConfig};
use crate::functions::{
    self, Alias, AliasSpec, Code, CreateFunction, Function, Settings, SettingsChange, Version,
};
use crate::invocation::{pick, resolve, resolve_with, run_invocation};
use crate::mappings::{self, Source};

/// Functions per ListFunctions page.
const PAGE_MAX: i32 = 50;
/// Bytes of log returned with `log_type` "Tail".
const LOG_TAIL: usize = 4096;

/// Serves the functions API.
pub struct FunctionsApi {
    ctx: Context,
}

impl FunctionsApi {
    /// A functions API over `ctx`.
    pub fn new(ctx: Context) -> Self {
        FunctionsApi { ctx }
    }

    fn configuration(&self, f: &Function) -> pb::FunctionConfiguration {
        self.describe(
            &f.name,
            &f.settings,
            (&f.code_sha256, f.code_size),
            "$LATEST",
            f.modified_ms,
            f.revision,
        )
    }

    fn version_configuration(&self, name: &str, v: &Version) -> pb::FunctionConfiguration {
        let mut c = self.describe(
            name,
            &v.settings,
            (&v.code_sha256, v.code_size),
            &v.number.to_string(),
            v.created_ms,
            v.from_revision,
        );
        c.function_arn = format!("{}:{}", c.function_arn, v.number);
        c
    }

    fn describe(
        &self,
        name: &str,
        settings: &Settings,
        (sha, size): (&str, u64),
        version: &str,
        modified_ms: u64,
        revision: u64,
    ) -> pb::FunctionConfiguration {
        use crate::topics::envelope::base64 as encode;
        pb::FunctionConfiguration {
            function_name: name.to_string(),
            function_arn: self.ctx.identity.function_arn(name),
            runtime: settings.runtime.clone(),
            handler: settings.handler.clone(),
            memory_size: settings.memory_mb as i32,
            timeout: settings.timeout_s as i32,
            environment: settings.environment.clone().into_iter().collect(),
            code_sha256: encode(&hex::decode(sha).unwrap_or_default()),
            code_size: size as i64,
            version: version.to_string(),
            last_modified: sluice_core::time::timestamp(modified_ms),
            revision_id: format!("{}-{revision}", sha.get(..12).unwrap_or("")),
            description: settings.description.clone(),
            state: "Active".into(),
        }
    }

    fn alias_configuration(&self, function: &str, a: &Alias) -> pb::AliasConfiguration {
        pb::AliasConfiguration {
            alias_arn: format!("{}:{}", self.ctx.identity.function_arn(function), a.name),
            name: a.name.clone(),
            function_version: a.version.to_string(),
            description: a.description.clone(),
            additional_version_weights: a
                .additional
                .iter()
                .map(|(v, w)| {
                    (
                        v.to_string(),
                        f64::from(*w) / f64::from(functions::WEIGHT_ONE),
                    )
                })
                .collect(),
            revision_id: a.revision.to_string(),
        }
    }

    fn event_config(&self, name: &str, c: &EventConfig) -> pb::FunctionEventInvokeConfig {
        let arn = |d: &Option<Destination>| match d {
            None => String::new(),
            Some(Destination::Queue(q)) => self.ctx.identity.queue_arn(q),
            Some(Destination::Topic(t)) => self.ctx.identity.topic_arn(t),
            Some(Destination::Function(f)) => self.ctx.identity.function_arn(f),
            Some(Destination::Stream(s)) => self.ctx.identity.stream_arn(s),
        };
        pb::FunctionEventInvokeConfig {
            function_name: name.to_string(),
            maximum_retry_attempts: Some(c.max_retries as i32),
            maximum_event_age_in_seconds: Some(c.max_age_s as i32),
            on_success_destination: arn(&c.on_success),
            on_failure_destination: arn(&c.on_failure),
        }
    }

    /// CreateAlias (`create`) or UpdateAlias.
    async fn put_alias(
        &self,
        req: pb::AliasRequest,
        create: bool,
    ) -> Reply<pb::AliasConfiguration> {
        let (name, spec) = Self::alias_spec(req).map_err(super::status::from_domain)?;
        let command = crate::functions::PutAlias {
            name: name.clone(),
            spec,
            create,
        };
        let a = self.ctx.run(command).await?;
        Ok(Response::new(self.alias_configuration(&name, &a)))
    }

    fn alias_spec(req: pb::AliasRequest) -> Result<(String, AliasSpec), DomainError> {
        let name = name_ref("function_name", &req.function_name)?;
        let weights: BTreeMap<String, f64> = req.additional_version_weights.into_iter().collect();
        let spec = AliasSpec::new(&req.name, &req.function_version, &req.description, &weights)?;
        Ok((name, spec))
    }

    /// A mapping by id, linearizably.
    async fn mapping(&self, uuid: &str) -> Result<mappings::Mapping, Status> {
        if uuid.is_empty() || uuid.len() > 64 {
            return Err(DomainError::invalid("uuid", "must be 1-64 characters").into_status());
        }
        self.ctx
            .ask(
                Consistency::Linearizable,
                crate::mappings::GetMapping {
                    uuid: uuid.to_string(),
                },
            )
            .await
    }

    /// A mapping as the API shows it.
    fn mapping_out(&self, m: &mappings::Mapping) -> pb::EventSourceMapping {
        let s = &m.settings;
        let (starting_position, starting_position_timestamp_ms) = match s.starting_position {
            None => (String::new(), 0),
            Some(mappings::StartingPosition::TrimHorizon) => ("TRIM_HORIZON".to_string(), 0),
            Some(mappings::StartingPosition::Latest) => ("LATEST".to_string(), 0),
            Some(mappings::StartingPosition::AtTimestamp(t)) => ("AT_TIMESTAMP".to_string(), t),
        };
        pb::EventSourceMapping {
            uuid: m.uuid.clone(),
            function_arn: self.ctx.identity.function_arn(&m.function),
            event_source_arn: match &m.source {
                Source::Queue(n) => self.ctx.identity.queue_arn(n),
                Source::Stream(n) => self.ctx.identity.stream_arn(n),
            },
            state: m.state().to_string(),
            batch_size: s.batch_size,
            maximum_batching_window_in_seconds: s.batching_window_s,
            maximum_concurrency: s.maximum_concurrency.unwrap_or(0),
            function_response_types: if s.report_batch_item_failures {
                vec!["ReportBatchItemFailures".to_string()]
            } else {
                Vec::new()
            },
            filters: s.filters.clone(),
            starting_position,
            starting_position_timestamp_ms,
            parallelization_factor: s.parallelization_factor,
            bisect_batch_on_function_error: s.bisect_on_error,
            maximum_retry_attempts: s.maximum_retry_attempts,
            maximum_record_age_in_seconds: s.maximum_record_age_s,
            tumbling_window_in_seconds: s.tumbling_window_s,
            on_failure_destination: s.on_failure.clone(),
            last_modified_ms: m.modified_ms,
            last_processing_result: m.last_result.clone(),
        }
    }

    /// Sets (`Some`) or removes (`None`) a function's reserved concurrency.
    async fn set_reserved(
        &self,
        name: String,
        reserved: Option<u32>,
    ) -> Reply<pb::FunctionConcurrency> {
        let command = crate::functions::PutFunctionConcurrency {
            name: name.clone(),
            reserved,
        };
        self.ctx.run(command).await?;
        Ok(Response::new(pb::FunctionConcurrency {
            function_name: name,
            reserved_concurrent_executions: reserved,
        }))
    }

    /// Sets (`Some`) or removes (`None`) a qualifier's provisioned
    /// concurrency.
    async fn set_provisioned(
        &self,
        name: &str,
        qualifier: &str,
        requested: Option<u32>,
    ) -> Result<(), Status> {
        let command = crate::functions::PutProvisionedConcurrency {
            name: name.to_string(),
            qualifier: qualifier.to_string(),
            requested,
        };
        self.ctx.run(command).await
    }

    /// A provisioned configuration with how many of its environments the
    /// live workers hold (from this node's applied state, after a
    /// linearizable check that the configuration exists).
    async fn provisioned_status(
        &self,
        name: &str,
        qualifier: &str,
    ) -> Reply<pb::ProvisionedConcurrencyConfig> {
        let qualifier = &functions::concurrency::normalize_qualifier(qualifier);
        let configs = self
            .ctx
            .ask(
                Consistency::Linearizable,
                crate::functions::Provisioned {
                    name: Some(name.to_string()),
                },
            )
            .await?;
        let Some(c) = configs.into_iter().find(|c| c.qualifier == *qualifier) else {
            return Err(DomainError::not_found(
                "ProvisionedConcurrencyConfigNotFoundException",
                format!("function {name:?} has no provisioned concurrency on {qualifier:?}"),
            )
            .into_status());
        };
        let workers = super::workers::registered(&self.ctx)?;
        let available = super::workers::provisioned(&self.ctx, Some(name))?
            .into_iter()
            .find(|(p, _)| p.qualifier == *qualifier)
            .map_or(0, |(_, spec)| {
                super::workers::available(&workers, &spec.key, crate::clock::now_ms())
            })
            .min(c.requested);
        Ok(Response::new(pb::ProvisionedConcurrencyConfig {
            function_name: c.function,
            qualifier: c.qualifier,
            requested: c.requested,
            available,
            status: if available >= c.requested {
                "READY"
            } else {
                "IN_PROGRESS"
            }
            .to_string(),
        }))
    }

    /// Hands a synchronous invocation to the leader (once: the leader runs
    /// it whatever it sees).
    async fn forward_invoke(
        &self,
        leader_addr: &str,
        name: String,
        qualifier: String,
        log_type: String,
        payload: Bytes,
    ) -> Reply<pb::InvokeResponse> {
        let channel = self
            .ctx
            .dispatcher
            .channel(leader_addr)
            .map_err(super::status::internal)?;
        let mut client = pb::functions_client::FunctionsClient::new(channel)
            .max_decoding_message_size(super::PUBLIC_MESSAGE_MAX)
            .max_encoding_message_size(super::PUBLIC_MESSAGE_MAX);
        let mut request = Request::new(pb::InvokeRequest {
            function_name: name,
            invocation_type: "RequestResponse".into(),
            payload: payload.to_vec(),
            qualifier,
            log_type,
        });
        request.metadata_mut().insert(
            sluice_proto::FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        // The longest function timeout, and time to start it.
        request.set_timeout(std::time::Duration::from_secs(
            u64::from(*functions::TIMEOUT_S.end()) + 30,
        ));
        client
            .invoke(request)
            .await
            .map_err(super::status::forwarded_invocation)
    }
}

/// Checks a zip package for a function of `runtime`: size, a readable
/// archive, with a `bootstrap` at its root unless a managed runtime starts
/// it.
fn package(field: &str, zip: Vec<u8>, runtime: &str) -> Result<Code, DomainError> {
    if zip.is_empty() {
        return Err(DomainError::invalid(field, "the zip package is required"));
    }
    if zip.len() > functions::CODE_BYTES_MAX {
        return Err(DomainError::invalid(
            field,
            format!(
                "the package is {} bytes; at most {}",
                zip.len(),
                functions::CODE_BYTES_MAX
            ),
        ));
    }
    let archive = zip::ZipArchive::new(Cursor::new(&zip))
        .map_err(|e| DomainError::invalid(field, format!("is not a zip package: {e}")))?;
    let unpacked =
        sluice_worker::unpacked_size(&zip).map_err(|e| DomainError::invalid(field, e))?;
    if unpacked > sluice_worker::UNPACKED_MAX {
        return Err(DomainError::invalid(
            field,
            format!(
                "the package unpacks to {unpacked} bytes; at most {}",
                sluice_worker::UNPACKED_MAX
            ),
        ));
    }
    if !sluice_worker::runtimes::is_managed(runtime)
        && !archive
            .file_names()
            .any(|n| n.is_ok_and(|n| n == "bootstrap"))
    {
        return Err(DomainError::invalid(
            field,
            format!(
                "the package needs an executable bootstrap file at its root (its runtime {runtime:?} is not a managed one: python3.* or nodejs*)"
            ),
        ));
    }
    Ok(Code {
        sha256: hex::encode(Sha256::digest(&zip)),
        zip,
    })
}

/// The function a request's `function_name` names (see [`name_ref`]).
fn function_name(given: &str) -> Result<String, Status> {
    name_ref("function_name", given).map_err(super::status::from_domain)
}

/// Refuses a negative memory size or timeout (absent ones pass).
fn check_sizes(memory_size: Option<i32>, timeout: Option<i32>) -> Result<(), Status> {
    for (field, v) in [("memory_size", memory_size), ("timeout", timeout)] {
        if let Some(v) = v.filter(|v| *v < 0) {
            return Err(
                DomainError::invalid(field, format!("must not be negative, got {v}")).into_status(),
            );
        }
    }
    Ok(())
}

pub(crate) fn name_ref(field: &str, given: &str) -> Result<String, DomainError> {
    // A function ARN names the function too.
    let name = given
        .strip_prefix("arn:")
        .and_then(|rest| rest.split(':').nth(5))
        .unwrap_or(given);
    functions::validate_name(field, name)?;
    Ok(name.to_string())
}

#[tonic::async_trait]
impl pb::functions_server::Functions for FunctionsApi {
    async fn create_function(
        &self,
        request: Request<pb::CreateFunctionRequest>,
    ) -> Reply<pb::FunctionConfiguration> {
        let req = request.into_inner();
        functions::validate_name("function_name", &req.function_name)
            .map_err(super::status::from_domain)?;
        check_sizes(Some(req.memory_size), Some(req.timeout))?;
        let settings = Settings {
            runtime: req.runtime,
            handler: req.handler,
            memory_mb: if req.memory_size == 0 {
                128
            } else {
                req.memory_size.max(0) as u32
            },
            timeout_s: if req.timeout == 0 {
                3
            } else {
                req.timeout.max(0) as u32
            },
            environment: req.environment.into_iter().collect(),
            description: req.description,
        };
        settings.validate().map_err(super::status::from_domain)?;
        let code = package("zip_file", req.zip_file, &settings.runtime)
            .map_err(super::status::from_domain)?;
        let f = self
            .ctx
            .run(CreateFunction {
                name: req.function_name,
                settings,
                code,
            })
            .await?;
        Ok(Response::new(self.configuration(&f)))
    }

    async fn get_function(
        &self,
        request: Request<pb::GetFunctionRequest>,
    ) -> Reply<pb::GetFunctionResponse> {
        let how = consistency(&request)?;
        let name = function_name(&request.into_inner().function_name)?;
        let f = self
            .ctx
            .ask(how, crate::functions::GetFunction { name })
            .await?;
        Ok(Response::new(pb::GetFunctionResponse {
            configuration: Some(self.configuration(&f)),
        }))
    }

    async fn list_functions(
        &self,
        request: Request<pb::ListFunctionsRequest>,
    ) -> Reply<pb::ListFunctionsResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let limit = match req.max_items {
            0 => PAGE_MAX,
            n if (1..=PAGE_MAX).contains(&n) => n,
            n => {
                return Err(DomainError::invalid(
                    "max_items",
                    format!("must be from 1 to {PAGE_MAX} (0: {PAGE_MAX}), got {n}"),
                )
                .into_status())
            }
        };
        let after = optional(&req.marker, |marker| name_ref("marker", marker))
            .map_err(super::status::from_domain)?;
        let (fs, more) = self
            .ctx
            .ask(
                how,
                crate::functions::ListFunctions {
                    after,
                    limit: limit as u32,
                },
            )
            .await?;
        Ok(Response::new(pb::ListFunctionsResponse {
            next_marker: next_token(more, &fs, |f| f.name.clone()),
            functions: fs.iter().map(|f| self.configuration(f)).collect(),
        }))
    }

    async fn delete_function(
        &self,
        request: Request<pb::DeleteFunctionRequest>,
    ) -> Reply<pb::DeleteFunctionResponse> {
        let name = function_name(&request.into_inner().function_name)?;
        self.ctx
            .run(crate::functions::DeleteFunction { name })
            .await?;
        Ok(Response::new(pb::DeleteFunctionResponse {}))
    }

    async fn update_function_code(
        &self,
        request: Request<pb::UpdateFunctionCodeRequest>,
    ) -> Reply<pb::FunctionConfiguration> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        // The runtime says whether the package must bring its bootstrap.
        let current = self
            .ctx
            .ask(how, crate::functions::GetFunction { name: name.clone() })
            .await?;
        let code = package("zip_file", req.zip_file, &current.settings.runtime)
            .map_err(super::status::from_domain)?;
        let f = self
            .ctx
            .run(crate::functions::UpdateFunctionCode { name, code })
            .await?;
        Ok(Response::new(self.configuration(&f)))
    }

    async fn update_function_configuration(
        &self,
        request: Request<pb::UpdateFunctionConfigurationRequest>,
    ) -> Reply<pb::FunctionConfiguration> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        check_sizes(req.memory_size, req.timeout)?;
        let change = SettingsChange {
            handler: req.handler,
            memory_mb: req.memory_size.map(|m| m.max(0) as u32),
            timeout_s: req.timeout.map(|t| t.max(0) as u32),
            environment: req
                .replace_environment
                .then(|| req.environment.into_iter().collect::<BTreeMap<_, _>>()),
            description: req.description,
            runtime: req.runtime,
        };
        let f = self
            .ctx
            .run(crate::functions::UpdateFunctionConfiguration { name, change })
            .await?;
        Ok(Response::new(self.configuration(&f)))
    }

    async fn publish_version(
        &self,
        request: Request<pb::PublishVersionRequest>,
    ) -> Reply<pb::FunctionConfiguration> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        let expected_sha256 = optional(&req.code_sha256, |sha| {
            decode_base64(sha).map(hex::encode).ok_or_else(|| {
                DomainError::invalid(
                    "code_sha256",
                    "must be base64, as FunctionConfiguration reports it",
                )
            })
        })
        .map_err(super::status::from_domain)?;
        let v = self
            .ctx
            .run(crate::functions::PublishVersion {
                name: name.clone(),
                expected_sha256,
            })
            .await?;
        Ok(Response::new(self.version_configuration(&name, &v)))
    }

    async fn list_versions_by_function(
        &self,
        request: Request<pb::ListVersionsByFunctionRequest>,
    ) -> Reply<pb::ListVersionsByFunctionResponse> {
        let how = consistency(&request)?;
        let name = function_name(&request.into_inner().function_name)?;
        let (f, vs) = self
            .ctx
            .ask(how, crate::functions::ListVersions { name })
            .await?;
        let mut versions = vec![self.configuration(&f)];
        versions.extend(vs.iter().map(|v| self.version_configuration(&f.name, v)));
        Ok(Response::new(pb::ListVersionsByFunctionResponse {
            versions,
        }))
    }

    async fn create_alias(
        &self,
        request: Request<pb::AliasRequest>,
    ) -> Reply<pb::AliasConfiguration> {
        self.put_alias(request.into_inner(), true).await
    }

    async fn update_alias(
        &self,
        request: Request<pb::AliasRequest>,
    ) -> Reply<pb::AliasConfiguration> {
        self.put_alias(request.into_inner(), false).await
    }

    async fn get_alias(
        &self,
        request: Request<pb::GetAliasRequest>,
    ) -> Reply<pb::AliasConfiguration> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        let all = self
            .ctx
            .ask(how, crate::functions::ListAliases { name: name.clone() })
            .await?;
        let a = all
            .iter()
            .find(|a| a.name == req.name)
            .ok_or_else(|| {
                DomainError::not_found(
                    "ResourceNotFoundException",
                    format!("function {name:?} has no alias {:?}", req.name),
                )
            })
            .map_err(super::status::from_domain)?;
        Ok(Response::new(self.alias_configuration(&name, a)))
    }

    async fn delete_alias(
        &self,
        request: Request<pb::GetAliasRequest>,
    ) -> Reply<pb::DeleteAliasResponse> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        self.ctx
            .run(crate::functions::DeleteAlias {
                name,
                alias: req.name,
            })
            .await?;
        Ok(Response::new(pb::DeleteAliasResponse {}))
    }

    async fn list_aliases(
        &self,
        request: Request<pb::ListAliasesRequest>,
    ) -> Reply<pb::ListAliasesResponse> {
        let how = consistency(&request)?;
        let name = function_name(&request.into_inner().function_name)?;
        let all = self
            .ctx
            .ask(how, crate::functions::ListAliases { name: name.clone() })
            .await?;
        Ok(Response::new(pb::ListAliasesResponse {
            aliases: all
                .iter()
                .map(|a| self.alias_configuration(&name, a))
                .collect(),
        }))
    }

    async fn put_function_event_invoke_config(
        &self,
        request: Request<pb::FunctionEventInvokeConfig>,
    ) -> Reply<pb::FunctionEventInvokeConfig> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        let destination = |field: &str, arn: &str| optional(arn, |a| Destination::parse(field, a));
        let config = EventConfig {
            max_retries: req
                .maximum_retry_attempts
                .unwrap_or(2)
                .max(-1)
                .clamp(-1, i32::MAX) as u32,
            max_age_s: req
                .maximum_event_age_in_seconds
                .unwrap_or(21_600)
                .clamp(0, i32::MAX) as u32,
            on_success: destination("on_success_destination", &req.on_success_destination)
                .map_err(super::status::from_domain)?,
            on_failure: destination("on_failure_destination", &req.on_failure_destination)
                .map_err(super::status::from_domain)?,
        };
        if req.maximum_retry_attempts.is_some_and(|n| n < 0) {
            return Err(
                DomainError::invalid("maximum_retry_attempts", "must be from 0 to 2").into_status(),
            );
        }
        config.validate().map_err(super::status::from_domain)?;
        self.ctx
            .run(crate::functions::PutEventInvokeConfig {
                name: name.clone(),
                config: config.clone(),
            })
            .await?;
        Ok(Response::new(self.event_config(&name, &config)))
    }

    async fn get_function_event_invoke_config(
        &self,
        request: Request<pb::GetFunctionRequest>,
    ) -> Reply<pb::FunctionEventInvokeConfig> {
        let how = consistency(&request)?;
        let name = function_name(&request.into_inner().function_name)?;
        let c = self
            .ctx
            .ask(
                how,
                crate::functions::EventInvokeConfig { name: name.clone() },
            )
            .await?;
        Ok(Response::new(self.event_config(&name, &c)))
    }

    async fn invoke(&self, request: Request<pb::InvokeRequest>) -> Reply<pb::InvokeResponse> {
        let forwarded = request
            .metadata()
            .get(sluice_proto::FORWARDED_HEADER)
            .is_some();
        // A synchronous invoke may ask for the function as this node knows
        // it (mapping pollers do): see `resolve_with`.
        let local = consistency(&request)? == Consistency::Local;
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        if req.qualifier.len() > 128 {
            return Err(DomainError::invalid("qualifier", "at most 128 characters").into_status());
        }
        let tail = match req.log_type.as_str() {
            "" | "None" => false,
            "Tail" => true,
            other => {
                return Err(DomainError::invalid(
                    "log_type",
                    format!("must be None or Tail, got {other:?}"),
                )
                .into_status())
            }
        };
        let (limit, what) = if req.invocation_type == "Event" {
            (
                sluice_core::limits::functions::EVENT_PAYLOAD_MAX,
                "an asynchronous",
            )
        } else {
            (
                sluice_core::limits::functions::INVOKE_PAYLOAD_MAX,
                "a synchronous",
            )
        };
        if req.payload.len() > limit {
            return Err(DomainError::invalid(
                "payload",
                format!(
                    "at most {limit} bytes for {what} invocation, got {}",
                    req.payload.len()
                ),
            )
            .into_status());
        }
        let payload = if req.payload.is_empty() {
            Bytes::from_static(b"{}")
        } else {
            Bytes::from(req.payload)
        };
        match req.invocation_type.as_str() {
            "" | "RequestResponse" => {}
            "DryRun" => {
                let target = resolve(&self.ctx, &name, &req.qualifier).await?;
                return Ok(Response::new(pb::InvokeResponse {
                    status_code: 204,
                    executed_version: pick(&target)
                        .map_or_else(|| "$LATEST".to_string(), |v| v.number.to_string()),
                    ..Default::default()
                }));
            }
            "Event" => {
                // A missing version or alias is refused now, as Lambda
                // does; the event is committed before the call
                // answers 202.
                resolve(&self.ctx, &name, &req.qualifier).await?;
                let request_id = uuid::Uuid::new_v4().to_string();
                self.ctx
                    .run(crate::functions::EnqueueEvent {
                        name,
                        qualifier: req.qualifier,
                        request_id: request_id.clone(),
                        payload: payload.to_vec(),
                    })
                    .await?;
                return Ok(Response::new(pb::InvokeResponse {
                    status_code: 202,
                    request_id,
                    ..Default::default()
                }));
            }
            other => {
                return Err(DomainError::invalid(
                    "invocation_type",
                    format!("must be RequestResponse, Event or DryRun, got {other:?}"),
                )
                .into_status())
            }
        }
        let target = resolve_with(&self.ctx, local, &name, &req.qualifier).await?;
        if target.reserved.is_some() && !forwarded {
            // Reserved concurrency is counted by the leader: the
            // invocation runs from there.
            if let Some((leader, addr)) = self.ctx.router.leader() {
                if leader != self.ctx.router.id() {
                    return self
                        .forward_invoke(&addr, name, req.qualifier, req.log_type, payload)
                        .await;
                }
            }
        }
        let request_id = uuid::Uuid::new_v4().to_string();
        let ran = run_invocation(
            &self.ctx,
            &target,
            &req.qualifier,
            &request_id,
            payload.to_vec(),
        )
        .await?;
        let log_result = if tail {
            let text = ran.answer.log.join("\n");
            let bytes = text.as_bytes();
            crate::topics::envelope::base64(&bytes[bytes.len().saturating_sub(LOG_TAIL)..])
        } else {
            String::new()
        };
        Ok(Response::new(pb::InvokeResponse {
            status_code: 200,
            function_error: if ran.answer.function_error {
                "Unhandled".to_string()
            } else {
                String::new()
            },
            payload: ran.answer.payload,
            log_result,
            executed_version: ran.version,
            request_id,
        }))
    }

    async fn get_function_logs(
        &self,
        request: Request<pb::GetFunctionLogsRequest>,
    ) -> Reply<pb::LogsResponse> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        let limit = match req.limit {
            0 => 50,
            n if n <= sluice_worker::host::LOGS_LIMIT_MAX => n,
            n => {
                return Err(DomainError::invalid(
                    "limit",
                    format!(
                        "must be from 1 to {}, got {n}",
                        sluice_worker::host::LOGS_LIMIT_MAX
                    ),
                )
                .into_status())
            }
        };
        self.ctx
            .ask(
                Consistency::Local,
                crate::functions::GetFunction { name: name.clone() },
            )
            .await?;
        let logs = self
            .ctx
            .dispatcher
            .logs(self.ctx.router.state(), &name, &req.request_id, limit)
            .await
            .map_err(super::status::internal)?;
        Ok(Response::new(logs))
    }

    async fn put_function_concurrency(
        &self,
        request: Request<pb::FunctionConcurrency>,
    ) -> Reply<pb::FunctionConcurrency> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        let Some(reserved) = req.reserved_concurrent_executions else {
            return Err(DomainError::invalid(
                "reserved_concurrent_executions",
                "must be set (DeleteFunctionConcurrency removes the reservation)",
            )
            .into_status());
        };
        self.set_reserved(name, Some(reserved)).await
    }

    async fn get_function_concurrency(
        &self,
        request: Request<pb::GetFunctionRequest>,
    ) -> Reply<pb::FunctionConcurrency> {
        let how = consistency(&request)?;
        let name = function_name(&request.into_inner().function_name)?;
        let reserved = self
            .ctx
            .ask(
                how,
                crate::functions::FunctionConcurrency { name: name.clone() },
            )
            .await?;
        Ok(Response::new(pb::FunctionConcurrency {
            function_name: name,
            reserved_concurrent_executions: reserved,
        }))
    }

    async fn delete_function_concurrency(
        &self,
        request: Request<pb::GetFunctionRequest>,
    ) -> Reply<pb::FunctionConcurrency> {
        let name = function_name(&request.into_inner().function_name)?;
        self.set_reserved(name, None).await
    }

    async fn put_provisioned_concurrency_config(
        &self,
        request: Request<pb::ProvisionedConcurrencyConfig>,
    ) -> Reply<pb::ProvisionedConcurrencyConfig> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        self.set_provisioned(&name, &req.qualifier, Some(req.requested))
            .await?;
        self.provisioned_status(&name, &req.qualifier).await
    }

    async fn get_provisioned_concurrency_config(
        &self,
        request: Request<pb::ProvisionedConcurrencyConfig>,
    ) -> Reply<pb::ProvisionedConcurrencyConfig> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        self.provisioned_status(&name, &req.qualifier).await
    }

    async fn delete_provisioned_concurrency_config(
        &self,
        request: Request<pb::ProvisionedConcurrencyConfig>,
    ) -> Reply<pb::ProvisionedConcurrencyConfig> {
        let req = request.into_inner();
        let name = function_name(&req.function_name)?;
        self.set_provisioned(&name, &req.qualifier, None).await?;
        Ok(Response::new(pb::ProvisionedConcurrencyConfig {
            function_name: name,
            qualifier: functions::concurrency::normalize_qualifier(&req.qualifier),
            ..Default::default()
        }))
    }

    async fn create_event_source_mapping(
        &self,
        request: Request<pb::EventSourceMappingRequest>,
    ) -> Reply<pb::EventSourceMapping> {
        let req = request.into_inner();
        let function = function_name(&req.function_name)?;
        let source =
            mappings::parse_source(&req.event_source_arn).map_err(super::status::from_domain)?;
        // The source must exist now (Lambda refuses a missing one).
        match &source {
            Source::Queue(name) => {
                let q = self
                    .ctx
                    .ask(
                        Consistency::Linearizable,
                        crate::queues::GetQueue { name: name.clone() },
                    )
                    .await?;
                // A batch must not reappear in the queue while the function
                // still runs it (Lambda's rule).
                let f = self
                    .ctx
                    .ask(
                        Consistency::Linearizable,
                        crate::functions::GetFunction {
                            name: function.clone(),
                        },
                    )
                    .await?;
                if f.settings.timeout_s > q.attributes.visibility_timeout {
                    return Err(DomainError::invalid(
                        "event_source_arn",
                        format!(
                            "the queue's VisibilityTimeout ({} s) must be at least the function's timeout ({} s)",
                            q.attributes.visibility_timeout, f.settings.timeout_s
                        ),
                    )
                    .into_status());
                }
            }
            Source::Stream(name) => {
                self.ctx
                    .ask(
                        Consistency::Linearizable,
                        crate::streams::DescribeStream { name: name.clone() },
                    )
                    .await?;
            }
        }
        let settings = mappings::settle(
            None,
            &source,
            is_fifo(&source),
            &change_of(&req).map_err(super::status::from_domain)?,
        )
        .map_err(super::status::from_domain)?;
        let new = mappings::NewMapping {
            uuid: uuid::Uuid::new_v4().to_string(),
            function,
            source,
            settings,
        };
        let m = self.ctx.run(new).await?;
        Ok(Response::new(self.mapping_out(&m)))
    }

    async fn update_event_source_mapping(
        &self,
        request: Request<pb::EventSourceMappingRequest>,
    ) -> Reply<pb::EventSourceMapping> {
        let req = request.into_inner();
        let m = self.mapping(&req.uuid).await?;
        if !req.function_name.is_empty() && function_name(&req.function_name)? != m.function {
            return Err(DomainError::invalid(
                "function_name",
                "a mapping's function cannot change (delete it and create another)",
            )
            .into_status());
        }
        if !req.event_source_arn.is_empty() {
            return Err(DomainError::invalid(
                "event_source_arn",
                "a mapping's source cannot change",
            )
            .into_status());
        }
        if !req.starting_position.is_empty() {
            return Err(DomainError::invalid(
                "starting_position",
                "is set when the mapping is created",
            )
            .into_status());
        }
        let settings = mappings::settle(
            Some(&m.settings),
            &m.source,
            is_fifo(&m.source),
            &change_of(&req).map_err(super::status::from_domain)?,
        )
        .map_err(super::status::from_domain)?;
        let m = self
            .ctx
            .run(crate::mappings::UpdateEventSourceMapping {
                function: m.function,
                uuid: m.uuid,
                expected_ms: m.modified_ms,
                settings,
            })
            .await?;
        Ok(Response::new(self.mapping_out(&m)))
    }

    async fn get_event_source_mapping(
        &self,
        request: Request<pb::GetEventSourceMappingRequest>,
    ) -> Reply<pb::EventSourceMapping> {
        let m = self.mapping(&request.into_inner().uuid).await?;
        Ok(Response::new(self.mapping_out(&m)))
    }

    async fn delete_event_source_mapping(
        &self,
        request: Request<pb::GetEventSourceMappingRequest>,
    ) -> Reply<pb::EventSourceMapping> {
        let m = self.mapping(&request.into_inner().uuid).await?;
        let m = self
            .ctx
            .run(crate::mappings::DeleteEventSourceMapping {
                function: m.function,
                uuid: m.uuid,
            })
            .await?;
        let mut out = self.mapping_out(&m);
        out.state = "Deleting".into();
        Ok(Response::new(out))
    }

    async fn list_event_source_mappings(
        &self,
        request: Request<pb::ListEventSourceMappingsRequest>,
    ) -> Reply<pb::ListEventSourceMappingsResponse> {
        let how = consistency(&request)?;
        let req = request.into_inner();
        let function = optional(&req.function_name, function_name)?;
        let source = optional(&req.event_source_arn, mappings::parse_source)
            .map_err(super::status::from_domain)?;
        let all = self
            .ctx
            .ask(how, crate::mappings::ListMappings { function })
            .await?;
        let event_source_mappings = all
            .iter()
            .filter(|m| source.as_ref().is_none_or(|s| *s == m.source))
            .map(|m| self.mapping_out(m))
            .collect();
        Ok(Response::new(pb::ListEventSourceMappingsResponse {
            event_source_mappings,
        }))
    }
}

/// Whether a source is a FIFO queue (its batches are at most 10).
fn is_fifo(source: &Source) -> bool {
    matches!(source, Source::Queue(n) if n.ends_with(".fifo"))
}

/// The settings a mapping request gives.
fn change_of(req: &pb::EventSourceMappingRequest) -> Result<mappings::SettingsChange, DomainError> {
    let report_batch_item_failures = if req.set_function_response_types {
        for t in &req.function_response_types {
            if t != "ReportBatchItemFailures" {
                return Err(DomainError::invalid(
                    "function_response_types",
                    format!("may hold only ReportBatchItemFailures, got {t:?}"),
                ));
            }
        }
        Some(!req.function_response_types.is_empty())
    } else {
        None
    };
    Ok(mappings::SettingsChange {
        enabled: req.enabled,
        batch_size: req.batch_size,
        batching_window_s: req.maximum_batching_window_in_seconds,
        maximum_concurrency: req.maximum_concurrency,
        report_batch_item_failures,
        filters: req.set_filters.then(|| req.filters.clone()),
        starting_position: (!req.starting_position.is_empty())
            .then(|| req.starting_position.clone()),
        starting_position_timestamp_ms: req.starting_position_timestamp_ms,
        parallelization_factor: req.parallelization_factor,
        bisect_on_error: req.bisect_batch_on_function_error,
        maximum_retry_attempts: req.maximum_retry_attempts,
        maximum_record_age_s: req.maximum_record_age_in_seconds,
        tumbling_window_s: req.tumbling_window_in_seconds,
        on_failure: req.on_failure_destination.clone(),
    })
}

/// Reads standard base64; `None` when it is not.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}
