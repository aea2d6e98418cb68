//! Lambda over its REST-JSON protocol (`/2015-03-31/functions/...` and the
//! later dated prefixes), what boto3, the aws CLI, the SDKs and the tools
//! built on them send. A route (method and path) names the action; path
//! and query carry the function and qualifier, the JSON body the rest.
//! Each action becomes the `sluice.v1.Functions` call of the same name.

use std::collections::HashMap;

use base64::Engine;
use serde_json::{json, Map, Value};
use sluice_proto::v1 as pb;

use super::call::Calls;
use super::error::AwsError;
use super::json::{array, page, put_str, Input};
use crate::identity::Identity;

/// The gRPC service the actions run on.
pub const SERVICE: &str = "sluice.v1.Functions";
/// The service name in SigV4 credential scopes.
pub const SIGNING_NAME: &str = "lambda";

/// Whether `path` is one of Lambda's: its first segment is an API version
/// date (`2015-03-31`).
pub fn is_lambda_path(path: &str) -> bool {
    let first = path.trim_start_matches('/').split('/').next().unwrap_or("");
    first.len() == 10
        && first.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        })
}

/// A Lambda request, as the front read it.
pub struct Request<'a> {
    /// The HTTP method.
    pub method: &'a http::Method,
    /// The path's segments after the version date, percent-decoded.
    pub segments: Vec<String>,
    /// The query string's parameters.
    pub query: Vec<(String, String)>,
    /// The request's headers (`Invoke` reads its options from them).
    pub headers: &'a http::HeaderMap,
    /// The body: JSON for every action but `Invoke`, whose body is the
    /// payload.
    pub body: &'a [u8],
}

impl Request<'_> {
    /// A query parameter.
    pub fn query(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON (an empty object when empty).
    pub fn json(&self) -> Result<Value, AwsError> {
        if self.body.is_empty() {
            return Ok(Value::Object(Map::new()));
        }
        serde_json::from_slice(self.body)
            .map_err(|e| AwsError::serialization(format!("the body is not JSON: {e}")))
    }
}

/// A Lambda answer: its HTTP status, headers and body.
pub struct Answer {
    /// 200, or 201, 202 and 204 where the API answers them.
    pub status: u16,
    /// Headers beyond the content type (`Invoke`'s).
    pub headers: Vec<(&'static str, String)>,
    /// The body; JSON, or `Invoke`'s payload.
    pub body: Vec<u8>,
}

impl Answer {
    /// A JSON answer.
    pub fn json(status: u16, value: Value) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: value.to_string().into_bytes(),
        }
    }

    fn empty(status: u16) -> Answer {
        Answer {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }
}

/// Runs the action `request`'s route names.
pub async fn handle(
    call: Calls<'_>,
    identity: &Identity,
    request: Request<'_>,
) -> Result<Answer, AwsError> {
    // Every route but Invoke (whose body is the payload) carries JSON.
    let body = || request.json();
    let method = request.method.as_str();
    let segments: Vec<&str> = request.segments.iter().map(String::as_str).collect();
    match (method, segments.as_slice()) {
        ("POST", ["functions"]) => create_function(&call, &Input::of(&body()?)?).await,
        ("GET", ["functions"]) => list_functions(&call, &request).await,
        ("GET", ["functions", f]) => get_function(&call, &request, f, true).await,
        ("GET", ["functions", f, "configuration"]) => get_function(&call, &request, f, false).await,
        ("DELETE", ["functions", f]) => {
            let (name, qualifier) = function(f, &request);
            if !qualifier.is_empty() {
                return Err(AwsError::invalid(
                    "Qualifier",
                    "Sluice deletes whole functions: leave the qualifier out",
                ));
            }
            let req = pb::DeleteFunctionRequest {
                function_name: name,
            };
            call.run::<_, pb::DeleteFunctionResponse>("DeleteFunction", req)
                .await?;
            Ok(Answer::empty(204))
        }
        ("PUT", ["functions", f, "code"]) => {
            let input = body()?;
            let input = Input::of(&input)?;
            let req = pb::UpdateFunctionCodeRequest {
                function_name: function(f, &request).0,
                zip_file: zip(&input, "ZipFile")?,
            };
            let c: pb::FunctionConfiguration = call.run("UpdateFunctionCode", req).await?;
            published(&call, c, input.bool("Publish")?.unwrap_or(false), 200).await
        }
        ("PUT", ["functions", f, "configuration"]) => {
            update_configuration(&call, f, &request, &Input::of(&body()?)?).await
        }
        ("POST", ["functions", f, "invocations"]) => invoke(&call, f, &request).await,
        ("POST", ["functions", f, "versions"]) => {
            let input = body()?;
            let input = Input::of(&input)?;
            let req = pb::PublishVersionRequest {
                function_name: function(f, &request).0,
                description: input.string("Description")?.unwrap_or_default(),
                code_sha256: input.string("CodeSha256")?.unwrap_or_default(),
            };
            let c: pb::FunctionConfiguration = call.run("PublishVersion", req).await?;
            Ok(Answer::json(201, configuration(c)))
        }
        ("GET", ["functions", f, "versions"]) => {
            let req = pb::ListVersionsByFunctionRequest {
                function_name: function(f, &request).0,
            };
            let r: pb::ListVersionsByFunctionResponse =
                call.run("ListVersionsByFunction", req).await?;
            let versions: Vec<Value> = r.versions.into_iter().map(configuration).collect();
            Ok(Answer::json(200, json!({ "Versions": versions })))
        }
        ("POST", ["functions", f, "aliases"]) => {
            let input = body()?;
            let req = alias_request(f, None, &request, &Input::of(&input)?)?;
            let a: pb::AliasConfiguration = call.run("CreateAlias", req).await?;
            Ok(Answer::json(201, alias(a)))
        }
        ("GET", ["functions", f, "aliases"]) => {
            let req = pb::ListAliasesRequest {
                function_name: function(f, &request).0,
            };
            let r: pb::ListAliasesResponse = call.run("ListAliases", req).await?;
            let aliases: Vec<Value> = r.aliases.into_iter().map(alias).collect();
            Ok(Answer::json(200, json!({ "Aliases": aliases })))
        }
        ("GET", ["functions", f, "aliases", name]) => {
            let req = pb::GetAliasRequest {
                function_name: function(f, &request).0,
                name: name.to_string(),
            };
            let a: pb::AliasConfiguration = call.run("GetAlias", req).await?;
            Ok(Answer::json(200, alias(a)))
        }
        ("PUT", ["functions", f, "aliases", name]) => {
            let input = body()?;
            let input = Input::of(&input)?;
            let mut req = alias_request(f, Some(name), &request, &input)?;
            // What the update leaves out stays as it is.
            let current: pb::AliasConfiguration = call
                .run(
                    "GetAlias",
                    pb::GetAliasRequest {
                        function_name: req.function_name.clone(),
                        name: req.name.clone(),
                    },
                )
                .await?;
            if !input.has("FunctionVersion") {
                req.function_version = current.function_version;
            }
            if !input.has("Description") {
                req.description = current.description;
            }
            if !input.has("RoutingConfig") {
                req.additional_version_weights = current.additional_version_weights;
            }
            let a: pb::AliasConfiguration = call.run("UpdateAlias", req).await?;
            Ok(Answer::json(200, alias(a)))
        }
        ("DELETE", ["functions", f, "aliases", name]) => {
            let req = pb::GetAliasRequest {
                function_name: function(f, &request).0,
                name: name.to_string(),
            };
            call.run::<_, pb::DeleteAliasResponse>("DeleteAlias", req)
                .await?;
            Ok(Answer::empty(204))
        }
        ("PUT", ["functions", f, "concurrency"]) => {
            let input = body()?;
            let input = Input::of(&input)?;
            let n = input
                .long("ReservedConcurrentExecutions")?
                .ok_or_else(|| AwsError::missing("ReservedConcurrentExecutions"))?;
            let req = pb::FunctionConcurrency {
                function_name: function(f, &request).0,
                reserved_concurrent_executions: Some(u32::try_from(n).map_err(|_| {
                    AwsError::invalid("ReservedConcurrentExecutions", "must not be negative")
                })?),
            };
            let c: pb::FunctionConcurrency = call.run("PutFunctionConcurrency", req).await?;
            Ok(Answer::json(200, concurrency(c)))
        }
        ("GET", ["functions", f, "concurrency"]) => {
            let req = pb::GetFunctionRequest {
                function_name: function(f, &request).0,
            };
            let c: pb::FunctionConcurrency = call.run("GetFunctionConcurrency", req).await?;
            Ok(Answer::json(200, concurrency(c)))
        }
        ("DELETE", ["functions", f, "concurrency"]) => {
            let req = pb::GetFunctionRequest {
                function_name: function(f, &request).0,
            };
            call.run::<_, pb::FunctionConcurrency>("DeleteFunctionConcurrency", req)
                .await?;
            Ok(Answer::empty(204))
        }
        (_, ["functions", f, "provisioned-concurrency"]) => {
            provisioned(&call, method, f, &request, body()).await
        }
        (_, ["functions", f, "event-invoke-config"]) => {
            event_invoke_config(&call, identity, method, f, &request, body()).await
        }
        ("POST", ["event-source-mappings"]) => {
            let input = body()?;
            let req = mapping_request(None, &Input::of(&input)?)?;
            let m: pb::EventSourceMapping = call.run("CreateEventSourceMapping", req).await?;
            Ok(Answer::json(202, mapping(m)))
        }
        ("GET", ["event-source-mappings"]) => {
            let req = pb::ListEventSourceMappingsRequest {
                function_name: request.query("FunctionName").unwrap_or("").to_string(),
                event_source_arn: request.query("EventSourceArn").unwrap_or("").to_string(),
            };
            let r: pb::ListEventSourceMappingsResponse =
                call.run("ListEventSourceMappings", req).await?;
            let all: Vec<Value> = r.event_source_mappings.into_iter().map(mapping).collect();
            Ok(Answer::json(200, json!({ "EventSourceMappings": all })))
        }
        ("GET", ["event-source-mappings", id]) => {
            let req = pb::GetEventSourceMappingRequest {
                uuid: id.to_string(),
            };
            let m: pb::EventSourceMapping = call.run("GetEventSourceMapping", req).await?;
            Ok(Answer::json(200, mapping(m)))
        }
        ("PUT", ["event-source-mappings", id]) => {
            let input = body()?;
            let req = mapping_request(Some(id), &Input::of(&input)?)?;
            let m: pb::EventSourceMapping = call.run("UpdateEventSourceMapping", req).await?;
            Ok(Answer::json(202, mapping(m)))
        }
        ("DELETE", ["event-source-mappings", id]) => {
            let req = pb::GetEventSourceMappingRequest {
                uuid: id.to_string(),
            };
            let m: pb::EventSourceMapping = call.run("DeleteEventSourceMapping", req).await?;
            let mut answer = mapping(m);
            answer["State"] = json!("Deleting");
            Ok(Answer::json(202, answer))
        }
        _ => Err(AwsError {
            http_status: 404,
            code: "UnknownOperationException".into(),
            message: format!(
                "{method} /{}: not an operation Sluice serves",
                crate::error::cut(&request.segments.join("/"), 128)
            ),
        }),
    }
}

/// The function and qualifier a path segment names: a name, `name:qualifier`,
/// or an ARN (with or without its qualifier); a `Qualifier` query
/// parameter overrides the one in the name.
fn function(segment: &str, request: &Request<'_>) -> (String, String) {
    let (name, qualifier) = match segment.strip_prefix("arn:") {
        Some(rest) => {
            let parts: Vec<&str> = rest.split(':').collect();
            (
                parts.get(5).copied().unwrap_or(segment).to_string(),
                parts.get(6).copied().unwrap_or("").to_string(),
            )
        }
        None => match segment.split_once(':') {
            Some((n, q)) => (n.to_string(), q.to_string()),
            None => (segment.to_string(), String::new()),
        },
    };
    let qualifier = request
        .query("Qualifier")
        .map(str::to_string)
        .unwrap_or(qualifier);
    (name, qualifier)
}

/// A base64 zip package member, decoded.
fn zip(input: &Input<'_>, name: &str) -> Result<Vec<u8>, AwsError> {
    let text = input.string(name)?.ok_or_else(|| {
        AwsError::invalid(
            "Code",
            format!(
                "{name}: Sluice takes code as a zip file in the request (no S3 bucket or image)"
            ),
        )
    })?;
    base64::engine::general_purpose::STANDARD
        .decode(text.as_bytes())
        .map_err(|_| AwsError::serialization(format!("{name}: must be base64")))
}

/// `Environment.Variables`, if given.
fn environment(input: &Input<'_>) -> Result<Option<HashMap<String, String>>, AwsError> {
    match input.object("Environment")? {
        None => Ok(None),
        Some(env) => Ok(Some(input.nested(env).string_map("Variables")?)),
    }
}

async fn create_function(call: &Calls<'_>, input: &Input<'_>) -> Result<Answer, AwsError> {
    if let Some(kind) = input.string("PackageType")? {
        if kind != "Zip" {
            return Err(AwsError::invalid(
                "PackageType",
                "Sluice runs zip packages only",
            ));
        }
    }
    let code = input
        .object("Code")?
        .ok_or_else(|| AwsError::missing("Code"))?;
    let req = pb::CreateFunctionRequest {
        function_name: input.required("FunctionName")?,
        runtime: input.string("Runtime")?.unwrap_or_default(),
        handler: input.string("Handler")?.unwrap_or_default(),
        memory_size: input.int("MemorySize")?.unwrap_or(0),
        timeout: input.int("Timeout")?.unwrap_or(0),
        environment: environment(input)?.unwrap_or_default(),
        zip_file: zip(&input.nested(code), "ZipFile")?,
        description: input.string("Description")?.unwrap_or_default(),
    };
    let c: pb::FunctionConfiguration = call.run("CreateFunction", req).await?;
    published(call, c, input.bool("Publish")?.unwrap_or(false), 201).await
}

/// `c`, or with `publish` the version published from it.
async fn published(
    call: &Calls<'_>,
    c: pb::FunctionConfiguration,
    publish: bool,
    status: u16,
) -> Result<Answer, AwsError> {
    if !publish {
        return Ok(Answer::json(status, configuration(c)));
    }
    let req = pb::PublishVersionRequest {
        function_name: c.function_name,
        description: String::new(),
        code_sha256: c.code_sha256,
    };
    let v: pb::FunctionConfiguration = call.run("PublishVersion", req).await?;
    Ok(Answer::json(status, configuration(v)))
}

async fn list_functions(call: &Calls<'_>, request: &Request<'_>) -> Result<Answer, AwsError> {
    let max_items = match request.query("MaxItems") {
        None => 0,
        Some(n) => n
            .parse::<i32>()
            .map_err(|_| AwsError::invalid("MaxItems", "must be an integer from 1 to 50"))?,
    };
    let req = pb::ListFunctionsRequest {
        marker: request.query("Marker").unwrap_or("").to_string(),
        max_items,
    };
    let r: pb::ListFunctionsResponse = call.run("ListFunctions", req).await?;
    let functions = array(r.functions, configuration);
    Ok(Answer::json(
        200,
        page("Functions", functions, "NextMarker", r.next_marker),
    ))
}

/// `GetFunction` (with `whole`) or `GetFunctionConfiguration` of the
/// function, or of the version its qualifier names.
async fn get_function(
    call: &Calls<'_>,
    request: &Request<'_>,
    segment: &str,
    whole: bool,
) -> Result<Answer, AwsError> {
    let (name, qualifier) = function(segment, request);
    let c = match qualifier.as_str() {
        "" | "$LATEST" => {
            let req = pb::GetFunctionRequest {
                function_name: name.clone(),
            };
            let r: pb::GetFunctionResponse = call.run("GetFunction", req).await?;
            r.configuration.unwrap_or_default()
        }
        q => version_of(call, &name, q).await?,
    };
    if !whole {
        return Ok(Answer::json(200, configuration(c)));
    }
    let mut out = json!({
        "Configuration": configuration(c),
        "Code": { "RepositoryType": "S3" },
    });
    let req = pb::GetFunctionRequest {
        function_name: name,
    };
    let concurrency: pb::FunctionConcurrency = call.run("GetFunctionConcurrency", req).await?;
    if let Some(n) = concurrency.reserved_concurrent_executions {
        out["Concurrency"] = json!({ "ReservedConcurrentExecutions": n });
    }
    Ok(Answer::json(200, out))
}

/// The configuration of the version `qualifier` (a number or an alias)
/// names.
async fn version_of(
    call: &Calls<'_>,
    name: &str,
    qualifier: &str,
) -> Result<pb::FunctionConfiguration, AwsError> {
    let version = if qualifier.chars().all(|c| c.is_ascii_digit()) {
        qualifier.to_string()
    } else {
        let req = pb::GetAliasRequest {
            function_name: name.to_string(),
            name: qualifier.to_string(),
        };
        let a: pb::AliasConfiguration = call.run("GetAlias", req).await?;
        a.function_version
    };
    let req = pb::ListVersionsByFunctionRequest {
        function_name: name.to_string(),
    };
    let r: pb::ListVersionsByFunctionResponse = call.run("ListVersionsByFunction", req).await?;
    r.versions
        .into_iter()
        .find(|v| v.version == version)
        .ok_or_else(|| AwsError {
            http_status: 404,
            code: "ResourceNotFoundException".into(),
            message: format!(
                "function {name:?} has no version {:?}",
                crate::error::cut(&version, 64)
            ),
        })
}

async fn update_configuration(
    call: &Calls<'_>,
    segment: &str,
    request: &Request<'_>,
    input: &Input<'_>,
) -> Result<Answer, AwsError> {
    let env = environment(input)?;
    let req = pb::UpdateFunctionConfigurationRequest {
        function_name: function(segment, request).0,
        handler: input.string("Handler")?,
        memory_size: input.int("MemorySize")?,
        timeout: input.int("Timeout")?,
        replace_environment: env.is_some(),
        environment: env.unwrap_or_default(),
        description: input.string("Description")?,
        runtime: input.string("Runtime")?,
    };
    let c: pb::FunctionConfiguration = call.run("UpdateFunctionConfiguration", req).await?;
    Ok(Answer::json(200, configuration(c)))
}

async fn invoke(
    call: &Calls<'_>,
    segment: &str,
    request: &Request<'_>,
) -> Result<Answer, AwsError> {
    let (name, qualifier) = function(segment, request);
    let req = pb::InvokeRequest {
        function_name: name,
        invocation_type: request
            .header("x-amz-invocation-type")
            .unwrap_or("")
            .to_string(),
        payload: request.body.to_vec(),
        qualifier,
        log_type: request.header("x-amz-log-type").unwrap_or("").to_string(),
    };
    let r: pb::InvokeResponse = call.run("Invoke", req).await?;
    let mut headers = Vec::new();
    if !r.function_error.is_empty() {
        headers.push(("x-amz-function-error", r.function_error));
    }
    if !r.log_result.is_empty() {
        headers.push(("x-amz-log-result", r.log_result));
    }
    if !r.executed_version.is_empty() {
        headers.push(("x-amz-executed-version", r.executed_version));
    }
    if !r.request_id.is_empty() {
        headers.push(("x-amzn-requestid", r.request_id));
    }
    Ok(Answer {
        status: u16::try_from(r.status_code).unwrap_or(200),
        headers,
        body: r.payload,
    })
}

fn alias_request(
    segment: &str,
    name: Option<&str>,
    request: &Request<'_>,
    input: &Input<'_>,
) -> Result<pb::AliasRequest, AwsError> {
    let weights = match input.object("RoutingConfig")? {
        None => HashMap::new(),
        Some(routing) => {
            let routing = input.nested(routing);
            let mut out = HashMap::new();
            for (version, weight) in routing
                .object("AdditionalVersionWeights")?
                .into_iter()
                .flatten()
            {
                let weight = weight.as_f64().ok_or_else(|| {
                    AwsError::serialization(format!(
                        "RoutingConfig.AdditionalVersionWeights.{version}: must be a number"
                    ))
                })?;
                out.insert(version.clone(), weight);
            }
            out
        }
    };
    Ok(pb::AliasRequest {
        function_name: function(segment, request).0,
        name: match name {
            Some(n) => n.to_string(),
            None => input.required("Name")?,
        },
        function_version: input.string("FunctionVersion")?.unwrap_or_default(),
        description: input.string("Description")?.unwrap_or_default(),
        additional_version_weights: weights,
    })
}

async fn provisioned(
    call: &Calls<'_>,
    method: &str,
    segment: &str,
    request: &Request<'_>,
    body: Result<Value, AwsError>,
) -> Result<Answer, AwsError> {
    let (name, qualifier) = function(segment, request);
    let mut req = pb::ProvisionedConcurrencyConfig {
        function_name: name,
        qualifier,
        ..Default::default()
    };
    let (rpc, status) = match method {
        "PUT" => {
            let input = body?;
            let input = Input::of(&input)?;
            let n = input
                .long("ProvisionedConcurrentExecutions")?
                .ok_or_else(|| AwsError::missing("ProvisionedConcurrentExecutions"))?;
            req.requested = u32::try_from(n).map_err(|_| {
                AwsError::invalid("ProvisionedConcurrentExecutions", "must be 1 to 100")
            })?;
            ("PutProvisionedConcurrencyConfig", 202)
        }
        "GET" => ("GetProvisionedConcurrencyConfig", 200),
        "DELETE" => ("DeleteProvisionedConcurrencyConfig", 204),
        other => return Err(AwsError::unknown_operation(other)),
    };
    let c: pb::ProvisionedConcurrencyConfig = call.run(rpc, req).await?;
    if status == 204 {
        return Ok(Answer::empty(204));
    }
    Ok(Answer::json(
        status,
        json!({
            "RequestedProvisionedConcurrentExecutions": c.requested,
            "AvailableProvisionedConcurrentExecutions": c.available,
            "AllocatedProvisionedConcurrentExecutions": c.available,
            "Status": c.status,
        }),
    ))
}

/// `Put` (PUT), `Update` (POST: the members given change), `Get` and
/// `Delete` (back to the defaults) of a function's event invoke config.
async fn event_invoke_config(
    call: &Calls<'_>,
    identity: &Identity,
    method: &str,
    segment: &str,
    request: &Request<'_>,
    body: Result<Value, AwsError>,
) -> Result<Answer, AwsError> {
    let (name, _) = function(segment, request);
    let get = || pb::GetFunctionRequest {
        function_name: name.clone(),
    };
    let current = match method {
        "GET" => {
            let c: pb::FunctionEventInvokeConfig =
                call.run("GetFunctionEventInvokeConfig", get()).await?;
            return Ok(Answer::json(200, invoke_config(c, identity)));
        }
        "PUT" | "DELETE" => pb::FunctionEventInvokeConfig {
            function_name: name.clone(),
            ..Default::default()
        },
        "POST" => call.run("GetFunctionEventInvokeConfig", get()).await?,
        other => return Err(AwsError::unknown_operation(other)),
    };
    let mut next = current;
    if method != "DELETE" {
        let input = body?;
        let input = Input::of(&input)?;
        if let Some(n) = input.int("MaximumRetryAttempts")? {
            next.maximum_retry_attempts = Some(n);
        }
        if let Some(n) = input.int("MaximumEventAgeInSeconds")? {
            next.maximum_event_age_in_seconds = Some(n);
        }
        if let Some(destinations) = input.object("DestinationConfig")? {
            let destinations = input.nested(destinations);
            for (member, slot) in [
                ("OnSuccess", &mut next.on_success_destination),
                ("OnFailure", &mut next.on_failure_destination),
            ] {
                if let Some(d) = destinations.object(member)? {
                    *slot = destinations
                        .nested(d)
                        .string("Destination")?
                        .unwrap_or_default();
                }
            }
        }
    }
    let c: pb::FunctionEventInvokeConfig = call.run("PutFunctionEventInvokeConfig", next).await?;
    if method == "DELETE" {
        return Ok(Answer::empty(204));
    }
    Ok(Answer::json(200, invoke_config(c, identity)))
}

fn mapping_request(
    id: Option<&str>,
    input: &Input<'_>,
) -> Result<pb::EventSourceMappingRequest, AwsError> {
    let unsigned = |name: &str| -> Result<Option<u32>, AwsError> {
        input
            .long(name)?
            .map(|n| u32::try_from(n).map_err(|_| AwsError::invalid(name, "must not be negative")))
            .transpose()
    };
    let filters = match input.object("FilterCriteria")? {
        None => None,
        Some(criteria) => Some(input.nested(criteria).each("Filters", |f| {
            f.string("Pattern")?
                .ok_or_else(|| AwsError::missing("FilterCriteria.Filters.Pattern"))
        })?),
    };
    let on_failure = match input.object("DestinationConfig")? {
        None => None,
        Some(d) => {
            let d = input.nested(d);
            match d.object("OnFailure")? {
                None => None,
                Some(f) => Some(d.nested(f).string("Destination")?.unwrap_or_default()),
            }
        }
    };
    let maximum_concurrency = match input.object("ScalingConfig")? {
        None => None,
        Some(s) => {
            let n = input.nested(s).long("MaximumConcurrency")?;
            n.map(|n| {
                u32::try_from(n).map_err(|_| {
                    AwsError::invalid("ScalingConfig.MaximumConcurrency", "must be 2 to 1000")
                })
            })
            .transpose()?
        }
    };
    Ok(pb::EventSourceMappingRequest {
        uuid: id.unwrap_or("").to_string(),
        function_name: input.string("FunctionName")?.unwrap_or_default(),
        event_source_arn: input.string("EventSourceArn")?.unwrap_or_default(),
        enabled: input.bool("Enabled")?,
        batch_size: unsigned("BatchSize")?,
        maximum_batching_window_in_seconds: unsigned("MaximumBatchingWindowInSeconds")?,
        maximum_concurrency,
        function_response_types: input.strings("FunctionResponseTypes")?,
        set_function_response_types: input.has("FunctionResponseTypes"),
        set_filters: filters.is_some(),
        filters: filters.unwrap_or_default(),
        starting_position: input.string("StartingPosition")?.unwrap_or_default(),
        starting_position_timestamp_ms: input
            .epoch_ms("StartingPositionTimestamp")?
            .map(|ms| ms as u64),
        parallelization_factor: unsigned("ParallelizationFactor")?,
        bisect_batch_on_function_error: input.bool("BisectBatchOnFunctionError")?,
        maximum_retry_attempts: input.int("MaximumRetryAttempts")?,
        maximum_record_age_in_seconds: input.int("MaximumRecordAgeInSeconds")?,
        tumbling_window_in_seconds: unsigned("TumblingWindowInSeconds")?,
        on_failure_destination: on_failure,
    })
}

/// A function's configuration in Lambda's shape.
fn configuration(c: pb::FunctionConfiguration) -> Value {
    let mut out = Map::new();
    out.insert("FunctionName".into(), json!(c.function_name));
    out.insert("FunctionArn".into(), json!(c.function_arn));
    put_str(&mut out, "Runtime", c.runtime);
    put_str(&mut out, "Handler", c.handler);
    out.insert("CodeSize".into(), json!(c.code_size));
    out.insert("Description".into(), json!(c.description));
    out.insert("Timeout".into(), json!(c.timeout));
    out.insert("MemorySize".into(), json!(c.memory_size));
    out.insert("LastModified".into(), json!(c.last_modified));
    out.insert("CodeSha256".into(), json!(c.code_sha256));
    out.insert("Version".into(), json!(c.version));
    if !c.environment.is_empty() {
        out.insert("Environment".into(), json!({ "Variables": c.environment }));
    }
    out.insert("RevisionId".into(), json!(c.revision_id));
    out.insert("State".into(), json!(c.state));
    // Changes take effect when the call answers.
    out.insert("LastUpdateStatus".into(), json!("Successful"));
    out.insert("PackageType".into(), json!("Zip"));
    Value::Object(out)
}

fn alias(a: pb::AliasConfiguration) -> Value {
    let mut out = json!({
        "AliasArn": a.alias_arn,
        "Name": a.name,
        "FunctionVersion": a.function_version,
        "Description": a.description,
        "RevisionId": a.revision_id,
    });
    if !a.additional_version_weights.is_empty() {
        out["RoutingConfig"] = json!({ "AdditionalVersionWeights": a.additional_version_weights });
    }
    out
}

fn concurrency(c: pb::FunctionConcurrency) -> Value {
    match c.reserved_concurrent_executions {
        Some(n) => json!({ "ReservedConcurrentExecutions": n }),
        None => json!({}),
    }
}

fn invoke_config(c: pb::FunctionEventInvokeConfig, identity: &Identity) -> Value {
    let mut destinations = Map::new();
    for (member, arn) in [
        ("OnSuccess", c.on_success_destination),
        ("OnFailure", c.on_failure_destination),
    ] {
        if !arn.is_empty() {
            destinations.insert(member.into(), json!({ "Destination": arn }));
        }
    }
    let mut out = json!({
        "FunctionArn": identity.function_arn(&c.function_name),
        "MaximumRetryAttempts": c.maximum_retry_attempts.unwrap_or(2),
        "MaximumEventAgeInSeconds": c.maximum_event_age_in_seconds.unwrap_or(21_600),
    });
    if !destinations.is_empty() {
        out["DestinationConfig"] = Value::Object(destinations);
    }
    out
}

fn mapping(m: pb::EventSourceMapping) -> Value {
    let stream = m.event_source_arn.starts_with("arn:aws:kinesis:");
    let mut out = json!({
        "UUID": m.uuid,
        "FunctionArn": m.function_arn,
        "EventSourceArn": m.event_source_arn,
        "State": m.state,
        "BatchSize": m.batch_size,
        "MaximumBatchingWindowInSeconds": m.maximum_batching_window_in_seconds,
        "FunctionResponseTypes": m.function_response_types,
        "LastModified": m.last_modified_ms as f64 / 1000.0,
    });
    if !m.last_processing_result.is_empty() {
        out["LastProcessingResult"] = json!(m.last_processing_result);
    }
    if !m.filters.is_empty() {
        let filters: Vec<Value> = m.filters.iter().map(|p| json!({ "Pattern": p })).collect();
        out["FilterCriteria"] = json!({ "Filters": filters });
    }
    if m.maximum_concurrency > 0 {
        out["ScalingConfig"] = json!({ "MaximumConcurrency": m.maximum_concurrency });
    }
    if stream {
        out["StartingPosition"] = json!(m.starting_position);
        if m.starting_position_timestamp_ms > 0 {
            out["StartingPositionTimestamp"] =
                json!(m.starting_position_timestamp_ms as f64 / 1000.0);
        }
        out["ParallelizationFactor"] = json!(m.parallelization_factor);
        out["BisectBatchOnFunctionError"] = json!(m.bisect_batch_on_function_error);
        out["MaximumRetryAttempts"] = json!(m.maximum_retry_attempts);
        out["MaximumRecordAgeInSeconds"] = json!(m.maximum_record_age_in_seconds);
        out["TumblingWindowInSeconds"] = json!(m.tumbling_window_in_seconds);
        if !m.on_failure_destination.is_empty() {
            out["DestinationConfig"] =
                json!({ "OnFailure": { "Destination": m.on_failure_destination } });
        }
    }
    out
}

/// `e` in Lambda's terms: its modeled exception names and their HTTP
/// statuses (a missing resource is 404, a conflict 409, throttling 429).
pub fn lambda_error(mut e: AwsError) -> AwsError {
    let (code, status) = match e.code.as_str() {
        "InvalidParameterValue" | "MissingParameter" => ("InvalidParameterValueException", 400),
        "SerializationException" => ("InvalidRequestContentException", 400),
        "AccessDenied" => ("AccessDeniedException", 403),
        "RequestThrottled" | "TooManyRequestsException" => ("TooManyRequestsException", 429),
        "ResourceNotFoundException" => ("ResourceNotFoundException", 404),
        "ResourceConflictException" => ("ResourceConflictException", 409),
        "RequestEntityTooLarge" => ("RequestTooLargeException", 413),
        "InternalFailure" | "ServiceUnavailable" => ("ServiceException", 500),
        _ => return e,
    };
    e.code = code.to_string();
    e.http_status = status;
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_paths_start_with_an_api_date() {
        assert!(is_lambda_path("/2015-03-31/functions/f/invocations"));
        assert!(is_lambda_path(
            "/2019-09-25/functions/f/event-invoke-config"
        ));
        assert!(!is_lambda_path("/"));
        assert!(!is_lambda_path("/000000000000/queue"));
        assert!(!is_lambda_path("/sluice.v1.Queues/SendMessage"));
        assert!(!is_lambda_path("/2015-0a-31/functions"));
    }

    #[test]
    fn a_function_is_named_by_name_qualified_name_or_arn() {
        let headers = http::HeaderMap::new();
        let request = |query: Vec<(String, String)>| Request {
            method: &http::Method::GET,
            segments: Vec::new(),
            query,
            headers: &headers,
            body: b"",
        };
        let plain = request(Vec::new());
        assert_eq!(function("f", &plain), ("f".into(), "".into()));
        assert_eq!(function("f:live", &plain), ("f".into(), "live".into()));
        assert_eq!(
            function("arn:aws:lambda:us-east-1:000000000000:function:f:2", &plain),
            ("f".into(), "2".into())
        );
        let qualified = request(vec![("Qualifier".into(), "3".into())]);
        assert_eq!(function("f:live", &qualified), ("f".into(), "3".into()));
        let e = lambda_error(AwsError::missing("FunctionName"));
        assert_eq!(
            (e.code.as_str(), e.http_status),
            ("InvalidParameterValueException", 400)
        );
    }
}
