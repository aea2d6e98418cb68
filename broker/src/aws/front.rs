//! The HTTP side of the AWS protocols: reads a request, authenticates it,
//! hands it to the protocol of its target and writes the answer.

use std::sync::Arc;

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use tokio::sync::OwnedSemaphorePermit;
use tonic::Status;

use super::call::{Calls, Dispatch};
use super::error::AwsError;
use super::json::Input;
use super::{cbor, event_stream, events, kinesis, lambda, query, scheduler, sns, sqs, sts};
use crate::authenticator::Authenticator;
use crate::identity::Identity;

/// The header naming a JSON protocol's operation: `AmazonSQS.SendMessage`.
pub const TARGET_HEADER: &str = "x-amz-target";

/// Takes `len` bytes of the node's in-flight request memory (the budget
/// the gRPC requests share), or refuses.
pub type Reserve = dyn Fn(usize) -> Result<OwnedSemaphorePermit, Status> + Send + Sync;

/// What the AWS protocols need of the node.
pub struct Front {
    /// Checks SigV4 signatures against the cluster's access keys.
    pub authenticator: Arc<Authenticator>,
    /// The public services behind their guard.
    pub dispatch: Dispatch,
    /// The account id in queue URLs.
    pub identity: Identity,
    /// `https` when the public port takes TLS, else `http`: the scheme of
    /// the URLs in answers.
    pub scheme: &'static str,
    /// Largest request body, bytes.
    pub body_max: usize,
    /// The in-flight request memory budget.
    pub reserve: Arc<Reserve>,
}

impl Front {
    /// Answers one AWS-protocol request.
    pub async fn serve(self: Arc<Self>, request: axum::extract::Request) -> Response {
        let path = request.uri().path();
        if lambda::is_lambda_path(path) || scheduler::is_scheduler_path(path) {
            return self.rest(request).await;
        }
        let target = request
            .headers()
            .get(TARGET_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        match target.split_once('.').filter(|_| !target.is_empty()) {
            Some(("AmazonSQS", action)) => {
                let answer = async {
                    let r = self.json(request, sqs::SIGNING_NAME).await?;
                    let urls = self.urls(&r.parts);
                    let input = Input::of(&r.members)?;
                    sqs::handle(self.calls(r.caller, sqs::SERVICE), &urls, action, input).await
                }
                .await;
                match answer {
                    Ok(answer) => json_answer(sqs::CONTENT_TYPE, answer),
                    Err(e) => e.json_response(sqs::CONTENT_TYPE, sqs::NAMESPACE, true),
                }
            }
            Some((kinesis::TARGET_PREFIX, "SubscribeToShard")) => {
                let cbor = cbor::is_cbor(request.headers());
                match self.subscribe_to_shard(request, cbor).await {
                    Ok(response) => response,
                    Err(e) => kinesis_error(cbor, e),
                }
            }
            Some((kinesis::TARGET_PREFIX, action)) => {
                let cbor = cbor::is_cbor(request.headers());
                let answer = async {
                    let r = self.json(request, kinesis::SIGNING_NAME).await?;
                    let input = Input::of(&r.members)?;
                    kinesis::handle(self.calls(r.caller, kinesis::SERVICE), action, input).await
                }
                .await;
                match (answer, cbor) {
                    (Ok(answer), false) => json_answer(kinesis::CONTENT_TYPE, answer),
                    (Ok(answer), true) => cbor_answer(http::StatusCode::OK, &answer),
                    (Err(e), cbor) => kinesis_error(cbor, e),
                }
            }
            Some((events::TARGET_PREFIX, action)) => {
                let answer = async {
                    let r = self.json(request, events::SIGNING_NAME).await?;
                    let input = Input::of(&r.members)?;
                    events::handle(self.calls(r.caller, events::SERVICE), action, input).await
                }
                .await;
                match answer {
                    Ok(answer) => json_answer(events::CONTENT_TYPE, answer),
                    Err(e) => e.json_response(events::CONTENT_TYPE, events::NAMESPACE, false),
                }
            }
            None if is_form(request.headers()) => self.query(request).await,
            _ => AwsError::unknown_operation(&target).json_response(
                "application/x-amz-json-1.0",
                "com.amazonaws.sluice",
                false,
            ),
        }
    }

    /// A query-protocol request (a form post): SQS (older SDKs; the Java
    /// v1 SDK posts to the queue's URL), SNS, or STS's
    /// `GetCallerIdentity`. The service is the signature's, else the one
    /// serving the `Action`.
    async fn query(&self, request: axum::extract::Request) -> Response {
        let request_id = uuid::Uuid::new_v4().to_string();
        let (parts, body) = request.into_parts();
        let mut service = signed_service(&parts.headers);
        let answer = async {
            let (body, _permit) = self.read(&parts, body).await?;
            let form = query::form(&body).ok_or_else(|| {
                AwsError::serialization("the form body is not percent-encoded UTF-8")
            })?;
            let action = form
                .iter()
                .find(|(k, _)| k == "Action")
                .map(|(_, v)| v.clone())
                .ok_or_else(|| AwsError::missing("Action"))?;
            let name = service.clone().unwrap_or_else(|| {
                if sns::ACTIONS.contains(&action.as_str()) {
                    sns::SIGNING_NAME.into()
                } else if action == "GetCallerIdentity" {
                    sts::SIGNING_NAME.into()
                } else {
                    sqs::SIGNING_NAME.into()
                }
            });
            service = Some(name.clone());
            let caller = self.caller(&parts, &body, &name).await?;
            match name.as_str() {
                sts::SIGNING_NAME => sts::handle(&self.identity, &caller, &action, &request_id),
                sns::SIGNING_NAME => {
                    let input = sns::QUERY.input(&action, &form)?;
                    let answer = sns::handle(
                        self.calls(caller, sns::SERVICE),
                        &action,
                        Input::of_form(&input)?,
                    )
                    .await?;
                    Ok(sns::QUERY.answer(&action, &answer, &request_id))
                }
                sqs::SIGNING_NAME => {
                    let mut input = sqs::QUERY.input(&action, &form)?;
                    // The Java v1 SDK posts to the queue's URL and leaves
                    // `QueueUrl` out of the form.
                    let path = parts.uri.path().trim_matches('/');
                    if let (Some(members), false) = (input.as_object_mut(), path.is_empty()) {
                        members
                            .entry("QueueUrl")
                            .or_insert_with(|| path.rsplit('/').next().unwrap_or(path).into());
                    }
                    let urls = self.urls(&parts);
                    let input = Input::of_form(&input)?;
                    let answer =
                        sqs::handle(self.calls(caller, sqs::SERVICE), &urls, &action, input)
                            .await?;
                    Ok(sqs::QUERY.answer(&action, &answer, &request_id))
                }
                other => Err(AwsError::unknown_operation(&format!("{other}:{action}"))),
            }
        }
        .await;
        match answer {
            Ok(xml) => query::xml(xml),
            Err(mut e) => {
                if service.as_deref() == Some(sqs::SIGNING_NAME) {
                    e.code = crate::aws::error::sqs_query_code(&e.code).to_string();
                }
                if service.as_deref() == Some(sns::SIGNING_NAME) {
                    e = sns::sns_error(e);
                }
                query::error(&e, &request_id)
            }
        }
    }

    /// A REST request (Lambda's, under an API date; Scheduler's): the route
    /// names the action.
    async fn rest(&self, request: axum::extract::Request) -> Response {
        let is_scheduler = scheduler::is_scheduler_path(request.uri().path());
        let answer = async {
            let (parts, body) = request.into_parts();
            let (body, _permit) = self.read(&parts, body).await?;
            let signing = if is_scheduler {
                scheduler::SIGNING_NAME
            } else {
                lambda::SIGNING_NAME
            };
            let caller = self.caller(&parts, &body, signing).await?;
            let segments = parts
                .uri
                .path()
                .trim_start_matches('/')
                .split('/')
                // Lambda's first segment is its API date.
                .skip(usize::from(!is_scheduler))
                .filter(|s| !s.is_empty())
                .map(|s| {
                    query::percent_decode(s, false)
                        .ok_or_else(|| AwsError::invalid("path", "must be percent-encoded UTF-8"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            let query = match parts.uri.query() {
                None => Vec::new(),
                Some(q) => query::form(q.as_bytes())
                    .ok_or_else(|| AwsError::invalid("query", "must be percent-encoded UTF-8"))?,
            };
            let request = lambda::Request {
                method: &parts.method,
                segments,
                query,
                headers: &parts.headers,
                body: &body,
            };
            if is_scheduler {
                scheduler::handle(self.calls(caller, scheduler::SERVICE), request).await
            } else {
                lambda::handle(self.calls(caller, lambda::SERVICE), &self.identity, request).await
            }
        }
        .await;
        match answer {
            Ok(a) => {
                let status = http::StatusCode::from_u16(a.status).unwrap_or(http::StatusCode::OK);
                let mut response = (status, a.body).into_response();
                let headers = response.headers_mut();
                headers.insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/json"),
                );
                for (name, value) in a.headers {
                    if let Ok(v) = http::HeaderValue::from_str(&value) {
                        headers.insert(name, v);
                    }
                }
                response
            }
            Err(e) if is_scheduler => scheduler::scheduler_error(e).rest_json_response(),
            Err(e) => lambda::lambda_error(e).rest_json_response(),
        }
    }

    /// Who signed the request, for `service`.
    async fn caller(
        &self,
        parts: &http::request::Parts,
        body: &[u8],
        service: &str,
    ) -> Result<crate::auth::caller::Caller, AwsError> {
        self.authenticator
            .authenticate_aws(parts, body, service)
            .await
            .map_err(|e| AwsError {
                http_status: 403,
                code: e.code.to_string(),
                message: e.message,
            })
    }

    /// Kinesis's `SubscribeToShard`: an `initial-response` event, then
    /// each `SubscribeToShardEvent` as the gRPC stream yields it, in AWS's
    /// event-stream encoding; a refusal mid-stream ends it with an
    /// exception event.
    async fn subscribe_to_shard(
        &self,
        request: axum::extract::Request,
        cbor: bool,
    ) -> Result<Response, AwsError> {
        use futures::StreamExt;
        let r = self.json(request, kinesis::SIGNING_NAME).await?;
        let req = kinesis::subscribe_request(&Input::of(&r.members)?)?;
        let events = self
            .dispatch
            .call_stream::<_, sluice_proto::v1::SubscribeToShardEvent>(
                &format!("/{}/SubscribeToShard", kinesis::SERVICE),
                r.caller,
                req,
            )
            .await
            .map_err(|s| AwsError::from_status(&s))?;
        // Payloads in the request's encoding: JSON, or CBOR.
        let (content_type, encode): (&str, fn(&serde_json::Value) -> Vec<u8>) = if cbor {
            (cbor::CONTENT_TYPE, cbor::encode)
        } else {
            ("application/json", |v| v.to_string().into_bytes())
        };
        let first = futures::stream::once(async move {
            event_stream::event(
                "initial-response",
                content_type,
                &encode(&serde_json::json!({})),
            )
        });
        let rest = events.map(move |item| match item {
            Ok(e) => event_stream::event(
                "SubscribeToShardEvent",
                content_type,
                &encode(&kinesis::subscribe_event(e)),
            ),
            Err(status) => {
                let e = AwsError::from_status(&status);
                let body = serde_json::json!({ "message": e.message });
                event_stream::exception(&e.code, content_type, &encode(&body))
            }
        });
        let body = first.chain(rest).map(Ok::<_, std::convert::Infallible>);
        let mut response = axum::body::Body::from_stream(body).into_response();
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(event_stream::CONTENT_TYPE),
        );
        Ok(response)
    }

    /// A JSON-protocol request read whole and its signature checked for
    /// `service`.
    async fn json(
        &self,
        request: axum::extract::Request,
        service: &str,
    ) -> Result<JsonRequest, AwsError> {
        let (parts, body) = request.into_parts();
        let (body, permit) = self.read(&parts, body).await?;
        let caller = self.caller(&parts, &body, service).await?;
        let members = if cbor::is_cbor(&parts.headers) {
            cbor::decode(&body)?
        } else if body.is_empty() {
            serde_json::Value::Object(Default::default())
        } else {
            serde_json::from_slice(&body)
                .map_err(|e| AwsError::serialization(format!("the body is not JSON: {e}")))?
        };
        Ok(JsonRequest {
            parts,
            caller,
            members,
            _permit: permit,
        })
    }

    /// Calls of `service` as `caller`.
    fn calls(&self, caller: crate::auth::caller::Caller, service: &'static str) -> Calls<'_> {
        Calls {
            dispatch: &self.dispatch,
            caller,
            service,
        }
    }

    /// Where queue URLs in answers to `parts` point.
    fn urls(&self, parts: &http::request::Parts) -> sqs::Urls {
        sqs::Urls {
            base: format!("{}://{}", self.scheme, host(parts)),
            account_id: self.identity.account_id.clone(),
        }
    }

    /// The whole body, within the size limit and the memory budget (held
    /// until the answer is written).
    async fn read(
        &self,
        parts: &http::request::Parts,
        body: axum::body::Body,
    ) -> Result<(Bytes, OwnedSemaphorePermit), AwsError> {
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        // Read no more than was reserved: the declared length, nothing for
        // a request that has no body, else the limit.
        let limit = match declared {
            Some(n) => n,
            None if http_body::Body::is_end_stream(&body) => 0,
            None => self.body_max,
        };
        let too_large = || AwsError {
            http_status: 413,
            code: "RequestEntityTooLarge".into(),
            message: format!(
                "body: must be at most {} bytes and no longer than its Content-Length",
                self.body_max
            ),
        };
        if limit > self.body_max {
            return Err(too_large());
        }
        let permit = (self.reserve)(limit).map_err(|s| AwsError::from_status(&s))?;
        let bytes = Limited::new(body, limit)
            .collect()
            .await
            .map_err(|_| too_large())?
            .to_bytes();
        Ok((bytes, permit))
    }
}

/// A Kinesis error in AWS JSON 1.1 or, for a CBOR request, in CBOR; a
/// refusal is `AccessDeniedException`, the exception Kinesis models for it.
fn kinesis_error(cbor: bool, mut e: AwsError) -> Response {
    if e.code == "AccessDenied" {
        e.code = "AccessDeniedException".into();
    }
    if !cbor {
        return e.json_response(kinesis::CONTENT_TYPE, kinesis::NAMESPACE, false);
    }
    let body = serde_json::json!({ "__type": e.code, "message": e.message });
    let status = http::StatusCode::from_u16(e.http_status).unwrap_or(http::StatusCode::BAD_REQUEST);
    cbor_answer(status, &body)
}

/// `answer` in CBOR.
fn cbor_answer(status: http::StatusCode, answer: &serde_json::Value) -> Response {
    let mut response = (status, cbor::encode(answer)).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(cbor::CONTENT_TYPE),
    );
    if let Ok(v) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// A JSON-protocol request, read and authenticated.
struct JsonRequest {
    parts: http::request::Parts,
    caller: crate::auth::caller::Caller,
    members: serde_json::Value,
    /// Its share of the in-flight request memory, held until answered.
    _permit: OwnedSemaphorePermit,
}

/// The service a SigV4 `Authorization` header's credential scope names
/// (`Credential=KEY/DATE/REGION/SERVICE/aws4_request`), if any; the
/// signature itself is checked later, for that service.
fn signed_service(headers: &http::HeaderMap) -> Option<String> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let credential = value.split("Credential=").nth(1)?;
    let scope = credential.split([',', ' ']).next()?;
    let service = scope.split('/').nth(3)?;
    (!service.is_empty() && service.len() <= 32).then(|| service.to_string())
}

/// The host the request was sent to, for the URLs in the answer.
fn host(parts: &http::request::Parts) -> String {
    parts
        .headers
        .get(http::header::HOST)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .or_else(|| parts.uri.authority().map(|a| a.to_string()))
        .filter(|h| !h.is_empty() && h.len() <= 255 && h.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "localhost".into())
}

fn json_answer(content_type: &'static str, answer: serde_json::Value) -> Response {
    let mut response = answer.to_string().into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    if let Ok(v) = http::HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()) {
        response.headers_mut().insert("x-amzn-requestid", v);
    }
    response
}

/// Whether the body is a form: the query protocol.
pub fn is_form(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(query::FORM))
}
