//! `sluice.v1.Functions`.
//!
//! The registry calls become commands and queries. Invoke reads the
//! function (linearizably, so a just-updated function runs its new code)
//! and runs it on this node's in-process worker: a warm environment when
//! one is idle, else a new one, whose code is fetched by hash once per node.

use std::collections::BTreeMap;
use std::io::Cursor;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use sluice_proto::v1 as pb;
use sluice_worker::{FunctionConfig, FunctionSpec, Invoked, PoolError};
use tonic::{Request, Response, Status};

use super::{consistency, observe, Consistency, Context};
use crate::command::{Command, CommandOutput, Query, QueryOutput};
use crate::error::DomainError;
use crate::functions::events::{Destination, EventConfig};
use crate::functions::{
    self, Alias, AliasSpec, Code, CreateFunction, Function, Settings, SettingsChange, Version,
};

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
            last_modified: crate::topics::envelope::timestamp(modified_ms),
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
    ) -> Result<Response<pb::AliasConfiguration>, Status> {
        let (name, spec) = Self::alias_spec(req)?;
        let command = Command::PutAlias {
            name: name.clone(),
            spec,
            create,
        };
        match self.ctx.command(command).await? {
            CommandOutput::Alias(a) => Ok(Response::new(self.alias_configuration(&name, &a))),
            _ => Err(super::status::unexpected("PutAlias")),
        }
    }

    fn alias_spec(req: pb::AliasRequest) -> Result<(String, AliasSpec), DomainError> {
        let name = name_ref("function_name", &req.function_name)?;
        let weights: BTreeMap<String, f64> = req.additional_version_weights.into_iter().collect();
        let spec = AliasSpec::new(&req.name, &req.function_version, &req.description, &weights)?;
        Ok((name, spec))
    }

    async fn function_output(&self, command: Command, what: &str) -> Result<Function, Status> {
        match self.ctx.command(command).await? {
            CommandOutput::Function(f) => Ok(f),
            _ => Err(super::status::unexpected(what)),
        }
    }
}

/// Checks a zip package: size, a readable archive with a `bootstrap` at
/// its root.
fn package(field: &str, zip: Vec<u8>) -> Result<Code, DomainError> {
    if zip.is_empty() {
        return Err(DomainError::invalid(field, "the zip package is required"));
    }
    if zip.len() > functions::CODE_MAX {
        return Err(DomainError::invalid(
            field,
            format!(
                "the package is {} bytes; at most {}",
                zip.len(),
                functions::CODE_MAX
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
    if !archive
        .file_names()
        .any(|n| n.is_ok_and(|n| n == "bootstrap"))
    {
        return Err(DomainError::invalid(
            field,
            "the package needs an executable bootstrap file at its root",
        ));
    }
    Ok(Code {
        sha256: hex::encode(Sha256::digest(&zip)),
        zip,
    })
}

fn name_ref(field: &str, given: &str) -> Result<String, DomainError> {
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
    ) -> Result<Response<pb::FunctionConfiguration>, Status> {
        observe("CreateFunction", async {
            let req = request.into_inner();
            functions::validate_name("function_name", &req.function_name)?;
            for (field, v) in [("memory_size", req.memory_size), ("timeout", req.timeout)] {
                if v < 0 {
                    return Err(DomainError::invalid(
                        field,
                        format!("must not be negative, got {v}"),
                    )
                    .into());
                }
            }
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
            settings.validate()?;
            let code = package("zip_file", req.zip_file)?;
            let f = self
                .function_output(
                    Command::CreateFunction(CreateFunction {
                        name: req.function_name,
                        settings,
                        code,
                    }),
                    "CreateFunction",
                )
                .await?;
            Ok(Response::new(self.configuration(&f)))
        })
        .await
    }

    async fn get_function(
        &self,
        request: Request<pb::GetFunctionRequest>,
    ) -> Result<Response<pb::GetFunctionResponse>, Status> {
        observe("GetFunction", async {
            let how = consistency(&request)?;
            let name = name_ref("function_name", &request.into_inner().function_name)?;
            let QueryOutput::Function(f) = self.ctx.query(how, Query::GetFunction { name }).await?
            else {
                return Err(super::status::unexpected("GetFunction"));
            };
            Ok(Response::new(pb::GetFunctionResponse {
                configuration: Some(self.configuration(&f)),
            }))
        })
        .await
    }

    async fn list_functions(
        &self,
        request: Request<pb::ListFunctionsRequest>,
    ) -> Result<Response<pb::ListFunctionsResponse>, Status> {
        observe("ListFunctions", async {
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
                    .into())
                }
            };
            let after = if req.marker.is_empty() {
                None
            } else {
                Some(name_ref("marker", &req.marker)?)
            };
            let QueryOutput::Functions(fs, more) = self
                .ctx
                .query(
                    how,
                    Query::ListFunctions {
                        after,
                        limit: limit as u32,
                    },
                )
                .await?
            else {
                return Err(super::status::unexpected("ListFunctions"));
            };
            Ok(Response::new(pb::ListFunctionsResponse {
                next_marker: if more {
                    fs.last().map(|f| f.name.clone()).unwrap_or_default()
                } else {
                    String::new()
                },
                functions: fs.iter().map(|f| self.configuration(f)).collect(),
            }))
        })
        .await
    }

    async fn delete_function(
        &self,
        request: Request<pb::DeleteFunctionRequest>,
    ) -> Result<Response<pb::DeleteFunctionResponse>, Status> {
        observe("DeleteFunction", async {
            let name = name_ref("function_name", &request.into_inner().function_name)?;
            self.ctx
                .done(Command::DeleteFunction { name }, "DeleteFunction")
                .await?;
            Ok(Response::new(pb::DeleteFunctionResponse {}))
        })
        .await
    }

    async fn update_function_code(
        &self,
        request: Request<pb::UpdateFunctionCodeRequest>,
    ) -> Result<Response<pb::FunctionConfiguration>, Status> {
        observe("UpdateFunctionCode", async {
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            let code = package("zip_file", req.zip_file)?;
            let f = self
                .function_output(
                    Command::UpdateFunctionCode { name, code },
                    "UpdateFunctionCode",
                )
                .await?;
            Ok(Response::new(self.configuration(&f)))
        })
        .await
    }

    async fn update_function_configuration(
        &self,
        request: Request<pb::UpdateFunctionConfigurationRequest>,
    ) -> Result<Response<pb::FunctionConfiguration>, Status> {
        observe("UpdateFunctionConfiguration", async {
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            for (field, v) in [("memory_size", req.memory_size), ("timeout", req.timeout)] {
                if let Some(v) = v.filter(|v| *v < 0) {
                    return Err(DomainError::invalid(
                        field,
                        format!("must not be negative, got {v}"),
                    )
                    .into());
                }
            }
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
                .function_output(
                    Command::UpdateFunctionConfiguration { name, change },
                    "UpdateFunctionConfiguration",
                )
                .await?;
            Ok(Response::new(self.configuration(&f)))
        })
        .await
    }

    async fn publish_version(
        &self,
        request: Request<pb::PublishVersionRequest>,
    ) -> Result<Response<pb::FunctionConfiguration>, Status> {
        observe("PublishVersion", async {
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            let expected_sha256 = if req.code_sha256.is_empty() {
                None
            } else {
                Some(hex::encode(decode_base64(&req.code_sha256).ok_or_else(
                    || {
                        DomainError::invalid(
                            "code_sha256",
                            "must be base64, as FunctionConfiguration reports it",
                        )
                    },
                )?))
            };
            match self
                .ctx
                .command(Command::PublishVersion {
                    name: name.clone(),
                    expected_sha256,
                })
                .await?
            {
                CommandOutput::Version(v) => {
                    Ok(Response::new(self.version_configuration(&name, &v)))
                }
                _ => Err(super::status::unexpected("PublishVersion")),
            }
        })
        .await
    }

    async fn list_versions_by_function(
        &self,
        request: Request<pb::ListVersionsByFunctionRequest>,
    ) -> Result<Response<pb::ListVersionsByFunctionResponse>, Status> {
        observe("ListVersionsByFunction", async {
            let how = consistency(&request)?;
            let name = name_ref("function_name", &request.into_inner().function_name)?;
            let QueryOutput::Versions(f, vs) =
                self.ctx.query(how, Query::ListVersions { name }).await?
            else {
                return Err(super::status::unexpected("ListVersionsByFunction"));
            };
            let mut versions = vec![self.configuration(&f)];
            versions.extend(vs.iter().map(|v| self.version_configuration(&f.name, v)));
            Ok(Response::new(pb::ListVersionsByFunctionResponse {
                versions,
            }))
        })
        .await
    }

    async fn create_alias(
        &self,
        request: Request<pb::AliasRequest>,
    ) -> Result<Response<pb::AliasConfiguration>, Status> {
        observe("CreateAlias", self.put_alias(request.into_inner(), true)).await
    }

    async fn update_alias(
        &self,
        request: Request<pb::AliasRequest>,
    ) -> Result<Response<pb::AliasConfiguration>, Status> {
        observe("UpdateAlias", self.put_alias(request.into_inner(), false)).await
    }

    async fn get_alias(
        &self,
        request: Request<pb::GetAliasRequest>,
    ) -> Result<Response<pb::AliasConfiguration>, Status> {
        observe("GetAlias", async {
            let how = consistency(&request)?;
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            let QueryOutput::Aliases(all) = self
                .ctx
                .query(how, Query::ListAliases { name: name.clone() })
                .await?
            else {
                return Err(super::status::unexpected("GetAlias"));
            };
            let a = all.iter().find(|a| a.name == req.name).ok_or_else(|| {
                DomainError::not_found(
                    "ResourceNotFoundException",
                    format!("function {name:?} has no alias {:?}", req.name),
                )
            })?;
            Ok(Response::new(self.alias_configuration(&name, a)))
        })
        .await
    }

    async fn delete_alias(
        &self,
        request: Request<pb::GetAliasRequest>,
    ) -> Result<Response<pb::DeleteAliasResponse>, Status> {
        observe("DeleteAlias", async {
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            self.ctx
                .done(
                    Command::DeleteAlias {
                        name,
                        alias: req.name,
                    },
                    "DeleteAlias",
                )
                .await?;
            Ok(Response::new(pb::DeleteAliasResponse {}))
        })
        .await
    }

    async fn list_aliases(
        &self,
        request: Request<pb::ListAliasesRequest>,
    ) -> Result<Response<pb::ListAliasesResponse>, Status> {
        observe("ListAliases", async {
            let how = consistency(&request)?;
            let name = name_ref("function_name", &request.into_inner().function_name)?;
            let QueryOutput::Aliases(all) = self
                .ctx
                .query(how, Query::ListAliases { name: name.clone() })
                .await?
            else {
                return Err(super::status::unexpected("ListAliases"));
            };
            Ok(Response::new(pb::ListAliasesResponse {
                aliases: all
                    .iter()
                    .map(|a| self.alias_configuration(&name, a))
                    .collect(),
            }))
        })
        .await
    }

    async fn put_function_event_invoke_config(
        &self,
        request: Request<pb::FunctionEventInvokeConfig>,
    ) -> Result<Response<pb::FunctionEventInvokeConfig>, Status> {
        observe("PutFunctionEventInvokeConfig", async {
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            let destination =
                |field: &str, arn: &str| -> Result<Option<Destination>, DomainError> {
                    if arn.is_empty() {
                        Ok(None)
                    } else {
                        Destination::parse(field, arn).map(Some)
                    }
                };
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
                on_success: destination("on_success_destination", &req.on_success_destination)?,
                on_failure: destination("on_failure_destination", &req.on_failure_destination)?,
            };
            if req.maximum_retry_attempts.is_some_and(|n| n < 0) {
                return Err(
                    DomainError::invalid("maximum_retry_attempts", "must be from 0 to 2").into(),
                );
            }
            config.validate()?;
            self.ctx
                .done(
                    Command::PutEventInvokeConfig {
                        name: name.clone(),
                        config: config.clone(),
                    },
                    "PutFunctionEventInvokeConfig",
                )
                .await?;
            Ok(Response::new(self.event_config(&name, &config)))
        })
        .await
    }

    async fn get_function_event_invoke_config(
        &self,
        request: Request<pb::GetFunctionRequest>,
    ) -> Result<Response<pb::FunctionEventInvokeConfig>, Status> {
        observe("GetFunctionEventInvokeConfig", async {
            let how = consistency(&request)?;
            let name = name_ref("function_name", &request.into_inner().function_name)?;
            let QueryOutput::EventConfig(c) = self
                .ctx
                .query(how, Query::EventInvokeConfig { name: name.clone() })
                .await?
            else {
                return Err(super::status::unexpected("GetFunctionEventInvokeConfig"));
            };
            Ok(Response::new(self.event_config(&name, &c)))
        })
        .await
    }

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        observe("Invoke", async {
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            if req.qualifier.len() > 128 {
                return Err(DomainError::invalid("qualifier", "at most 128 characters").into());
            }
            let tail = match req.log_type.as_str() {
                "" | "None" => false,
                "Tail" => true,
                other => {
                    return Err(DomainError::invalid(
                        "log_type",
                        format!("must be None or Tail, got {other:?}"),
                    )
                    .into())
                }
            };
            let (limit, what) = if req.invocation_type == "Event" {
                (256 << 10, "an asynchronous")
            } else {
                (6 << 20, "a synchronous")
            };
            if req.payload.len() > limit {
                return Err(DomainError::invalid(
                    "payload",
                    format!(
                        "at most {limit} bytes for {what} invocation, got {}",
                        req.payload.len()
                    ),
                )
                .into());
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
                        executed_version: pick(&target).0,
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
                        .done(
                            Command::EnqueueEvent {
                                name,
                                qualifier: req.qualifier,
                                request_id: request_id.clone(),
                                payload: payload.to_vec(),
                            },
                            "Invoke",
                        )
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
                    .into())
                }
            }
            let request_id = uuid::Uuid::new_v4().to_string();
            let (ran, version) =
                run_invocation(&self.ctx, &name, &req.qualifier, &request_id, payload).await?;
            let log_result = if tail {
                let text = ran.log.join("\n");
                let bytes = text.as_bytes();
                crate::topics::envelope::base64(&bytes[bytes.len().saturating_sub(LOG_TAIL)..])
            } else {
                String::new()
            };
            let (function_error, payload) = match ran.invoked {
                Invoked::Ok(body) => (String::new(), body.to_vec()),
                Invoked::FunctionError(doc) => ("Unhandled".to_string(), doc.to_vec()),
            };
            Ok(Response::new(pb::InvokeResponse {
                status_code: 200,
                function_error,
                payload,
                log_result,
                executed_version: version,
                request_id,
            }))
        })
        .await
    }
}

/// Reads standard base64; `None` when it is not.
fn decode_base64(s: &str) -> Option<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s).ok()
}

/// Resolves what an invocation runs, linearizably (so a just-updated
/// function runs its new code).
async fn resolve(ctx: &Context, name: &str, qualifier: &str) -> Result<functions::Target, Status> {
    match ctx
        .query(
            Consistency::Linearizable,
            Query::InvokeTarget {
                name: name.to_string(),
                qualifier: qualifier.to_string(),
            },
        )
        .await?
    {
        QueryOutput::Target(t) => Ok(t),
        _ => Err(super::status::unexpected("Invoke")),
    }
}

/// The version an invocation of `target` runs: an alias with a second
/// version sends it its share, drawn here (the state machine draws
/// nothing). Returns the version's name, settings, code hash and revision.
fn pick(target: &functions::Target) -> (String, &Settings, String, u64) {
    let chosen = match (&target.version, &target.additional) {
        (Some(v), Some((extra, weight))) => {
            let draw = (uuid::Uuid::new_v4().as_u128() % u128::from(functions::WEIGHT_ONE)) as u32;
            Some(if draw < *weight { extra } else { v })
        }
        (v, _) => v.as_ref(),
    };
    let f = &target.function;
    match chosen {
        Some(v) => (
            v.number.to_string(),
            &v.settings,
            v.code_sha256.clone(),
            v.from_revision,
        ),
        None => (
            "$LATEST".to_string(),
            &f.settings,
            f.code_sha256.clone(),
            f.revision,
        ),
    }
}

/// Runs one invocation of function `name` at `qualifier` on this node's
/// in-process worker; the result and the version that ran. Shared by
/// synchronous Invoke and the leader's runner of asynchronous events.
pub async fn run_invocation(
    ctx: &Context,
    name: &str,
    qualifier: &str,
    request_id: &str,
    payload: Bytes,
) -> Result<(sluice_worker::Ran, String), Status> {
    let target = resolve(ctx, name, qualifier).await?;
    let f = &target.function;
    let (version, settings, code_sha256, revision) = pick(&target);
    // Environments are shared only by invocations of the same code and
    // settings (a function deleted and created again starts its revisions
    // over, so the revision alone would not tell).
    let settings_digest = hex::encode(&Sha256::digest(format!("{settings:?}").as_bytes())[..8]);
    let key = format!(
        "{}#{version}#{revision}#{code_sha256}#{settings_digest}",
        f.name
    );
    let arn = if qualifier.is_empty() {
        ctx.identity.function_arn(&f.name)
    } else {
        format!("{}:{qualifier}", ctx.identity.function_arn(&f.name))
    };
    let spec = FunctionSpec {
        key,
        code_sha256: code_sha256.clone(),
        config: FunctionConfig {
            name: f.name.clone(),
            version: version.clone(),
            arn,
            handler: settings.handler.clone(),
            memory_mb: settings.memory_mb,
            timeout_s: settings.timeout_s,
            ephemeral_mb: 512,
            region: ctx.identity.region.clone(),
            environment: settings.environment.clone(),
        },
    };
    let fetch_ctx = ctx.clone();
    let fetch = move || async move {
        match fetch_ctx
            .query(
                Consistency::Linearizable,
                Query::FunctionCode {
                    sha256: code_sha256,
                },
            )
            .await
        {
            Ok(QueryOutput::Code(Some(zip))) => Ok(zip),
            Ok(_) => Err("the code package is gone (the function changed)".to_string()),
            Err(s) => Err(s.message().to_string()),
        }
    };
    let ran = ctx
        .worker
        .invoke(&spec, fetch, request_id, payload)
        .await
        .map_err(|e| match e {
            PoolError::Code(why) => DomainError::precondition("InvalidZipFileException", why),
            PoolError::Start(why) => {
                DomainError::precondition("InvalidRuntimeException", why.to_string())
            }
        })?;
    metrics::counter!("sluice_function_invocations_total", "function" => f.name.clone())
        .increment(1);
    if ran.cold {
        metrics::counter!("sluice_function_cold_starts_total", "function" => f.name.clone())
            .increment(1);
    }
    if matches!(ran.invoked, Invoked::FunctionError(_)) {
        metrics::counter!("sluice_function_errors_total", "function" => f.name.clone())
            .increment(1);
    }
    Ok((ran, version))
}
