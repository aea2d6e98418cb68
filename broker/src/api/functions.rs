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
use crate::functions::{self, Code, CreateFunction, Function, Settings, SettingsChange};

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
        use crate::topics::envelope::base64 as encode;
        pb::FunctionConfiguration {
            function_name: f.name.clone(),
            function_arn: self.ctx.identity.function_arn(&f.name),
            runtime: f.settings.runtime.clone(),
            handler: f.settings.handler.clone(),
            memory_size: f.settings.memory_mb as i32,
            timeout: f.settings.timeout_s as i32,
            environment: f.settings.environment.clone().into_iter().collect(),
            code_sha256: encode(&hex::decode(&f.code_sha256).unwrap_or_default()),
            code_size: f.code_size as i64,
            version: "$LATEST".into(),
            last_modified: crate::topics::envelope::timestamp(f.modified_ms),
            revision_id: format!("{}-{}", f.code_sha256.get(..12).unwrap_or(""), f.revision),
            description: f.settings.description.clone(),
            state: "Active".into(),
        }
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

    async fn invoke(
        &self,
        request: Request<pb::InvokeRequest>,
    ) -> Result<Response<pb::InvokeResponse>, Status> {
        observe("Invoke", async {
            let req = request.into_inner();
            let name = name_ref("function_name", &req.function_name)?;
            if !(req.qualifier.is_empty() || req.qualifier == "$LATEST") {
                return Err(DomainError::invalid(
                    "qualifier",
                    "only $LATEST can be invoked so far (versions and aliases are not built yet)",
                )
                .into());
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
            if req.payload.len() > 6 << 20 {
                return Err(DomainError::invalid(
                    "payload",
                    format!(
                        "at most 6 MiB for a synchronous invocation, got {}",
                        req.payload.len()
                    ),
                )
                .into());
            }
            let QueryOutput::Function(f) = self
                .ctx
                .query(Consistency::Linearizable, Query::GetFunction { name })
                .await?
            else {
                return Err(super::status::unexpected("Invoke"));
            };
            match req.invocation_type.as_str() {
                "" | "RequestResponse" => {}
                "DryRun" => {
                    return Ok(Response::new(pb::InvokeResponse {
                        status_code: 204,
                        executed_version: "$LATEST".into(),
                        ..Default::default()
                    }))
                }
                "Event" => {
                    return Err(DomainError::precondition(
                        "InvalidParameterValueException",
                        "invocation_type Event: asynchronous invocation is not built yet",
                    )
                    .into())
                }
                other => {
                    return Err(DomainError::invalid(
                        "invocation_type",
                        format!("must be RequestResponse, Event or DryRun, got {other:?}"),
                    )
                    .into())
                }
            }
            let payload = if req.payload.is_empty() {
                Bytes::from_static(b"{}")
            } else {
                Bytes::from(req.payload)
            };
            let spec = FunctionSpec {
                key: format!("{}#$LATEST#{}", f.name, f.revision),
                code_sha256: f.code_sha256.clone(),
                config: FunctionConfig {
                    name: f.name.clone(),
                    version: "$LATEST".into(),
                    arn: self.ctx.identity.function_arn(&f.name),
                    handler: f.settings.handler.clone(),
                    memory_mb: f.settings.memory_mb,
                    timeout_s: f.settings.timeout_s,
                    region: self.ctx.identity.region.clone(),
                    environment: f.settings.environment.clone(),
                },
            };
            let ctx = self.ctx.clone();
            let sha = f.code_sha256.clone();
            let fetch = move || async move {
                match ctx
                    .query(
                        Consistency::Linearizable,
                        Query::FunctionCode { sha256: sha },
                    )
                    .await
                {
                    Ok(QueryOutput::Code(Some(zip))) => Ok(zip),
                    Ok(_) => Err("the code package is gone (the function changed)".to_string()),
                    Err(s) => Err(s.message().to_string()),
                }
            };
            let request_id = uuid::Uuid::new_v4().to_string();
            let ran = self
                .ctx
                .worker
                .invoke(&spec, fetch, &request_id, payload)
                .await
                .map_err(|e| match e {
                    PoolError::Code(why) => {
                        DomainError::precondition("InvalidZipFileException", why)
                    }
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
            let log_result = if tail {
                let text = ran.log.join("\n");
                let bytes = text.as_bytes();
                crate::topics::envelope::base64(&bytes[bytes.len().saturating_sub(LOG_TAIL)..])
            } else {
                String::new()
            };
            let (function_error, payload) = match ran.invoked {
                Invoked::Ok(body) => (String::new(), body.to_vec()),
                Invoked::FunctionError(doc) => {
                    metrics::counter!("sluice_function_errors_total", "function" => f.name.clone())
                        .increment(1);
                    ("Unhandled".to_string(), doc.to_vec())
                }
            };
            Ok(Response::new(pb::InvokeResponse {
                status_code: 200,
                function_error,
                payload,
                log_result,
                executed_version: "$LATEST".into(),
            }))
        })
        .await
    }
}
