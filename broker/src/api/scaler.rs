//! KEDA's external scaler service (`externalscaler.ExternalScaler`), so a
//! KEDA `ScaledObject` scales `sluice worker` Deployments on Sluice's own
//! backlog, down to zero and back.
//!
//! A trigger's `scalerMetadata` names what to watch:
//!
//! - `queue: NAME`: the messages visible plus in flight (KEDA's SQS scaler
//!   counts the same); `scaleOnInFlight: "false"` counts visible only.
//!   Metric `sluice-queue-NAME`, target 10 a worker by default.
//! - `stream: NAME` (and optionally `function: NAME`): the largest
//!   iterator age, ms, over the event source mappings reading the stream
//!   (those of that function only). Metric
//!   `sluice-stream-NAME-iterator-age-ms`, target 60 000 by default.
//!
//! `target` overrides the target (a positive number), `activationTarget`
//! (default 0) is the value the metric must pass for IsActive. Reads are
//! the answering node's own state (a scaler needs a fresh estimate, not a
//! linearizable one), so any node can serve KEDA.

use super::status::IntoStatus;
use std::collections::HashMap;
use std::pin::Pin;
use std::time::Duration;

use sluice_proto::externalscaler as pb;
use sluice_proto::externalscaler::external_scaler_server::ExternalScaler;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::Reply;

use super::{status, Context};
use crate::clock::now_ms;
use crate::error::{ApplyError, DomainError};
use crate::mappings::Source;

/// How often StreamIsActive looks again.
const STREAM_POLL: Duration = Duration::from_secs(1);
/// Default targets: messages a worker, and ms of iterator age.
const QUEUE_TARGET: f64 = 10.0;
const STREAM_TARGET: f64 = 60_000.0;

/// Serves KEDA's external scaler RPCs.
pub struct ScalerApi {
    ctx: Context,
}

impl ScalerApi {
    /// Serves `ctx`'s node.
    pub fn new(ctx: Context) -> Self {
        ScalerApi { ctx }
    }
}

/// What a trigger watches.
#[derive(Debug, Clone, PartialEq)]
enum Watch {
    Queue {
        name: String,
        in_flight: bool,
    },
    Stream {
        name: String,
        function: Option<String>,
    },
}

/// A trigger's metadata, checked.
#[derive(Debug, Clone, PartialEq)]
struct Trigger {
    watch: Watch,
    target: f64,
    activation: f64,
}

impl Trigger {
    fn parse(meta: &HashMap<String, String>) -> Result<Trigger, DomainError> {
        let field = |k: &str| format!("scalerMetadata.{k}");
        let number = |k: &str, min_exclusive: bool| -> Result<Option<f64>, DomainError> {
            let Some(text) = meta.get(k) else {
                return Ok(None);
            };
            let v: f64 = text.trim().parse().map_err(|_| {
                DomainError::invalid(field(k), format!("must be a number, got {text:?}"))
            })?;
            let ok = v.is_finite() && if min_exclusive { v > 0.0 } else { v >= 0.0 };
            if !ok {
                let rule = if min_exclusive {
                    "must be greater than 0"
                } else {
                    "must be 0 or more"
                };
                return Err(DomainError::invalid(field(k), format!("{rule}, got {v}")));
            }
            Ok(Some(v))
        };
        let watch = match (meta.get("queue"), meta.get("stream")) {
            (Some(q), None) => Watch::Queue {
                name: q.clone(),
                in_flight: match meta.get("scaleOnInFlight").map(|s| s.trim()) {
                    None | Some("true") => true,
                    Some("false") => false,
                    Some(other) => {
                        return Err(DomainError::invalid(
                            field("scaleOnInFlight"),
                            format!("must be true or false, got {other:?}"),
                        ))
                    }
                },
            },
            (None, Some(s)) => Watch::Stream {
                name: s.clone(),
                function: meta.get("function").cloned(),
            },
            (Some(_), Some(_)) => {
                return Err(DomainError::invalid(
                    "scalerMetadata",
                    "give queue or stream, not both",
                ))
            }
            (None, None) => {
                return Err(DomainError::invalid(
                    "scalerMetadata",
                    "must name a queue (queue: NAME) or a stream (stream: NAME)",
                ))
            }
        };
        let default_target = match watch {
            Watch::Queue { .. } => QUEUE_TARGET,
            Watch::Stream { .. } => STREAM_TARGET,
        };
        Ok(Trigger {
            watch,
            target: number("target", true)?.unwrap_or(default_target),
            activation: number("activationTarget", false)?.unwrap_or(0.0),
        })
    }

    fn metric_name(&self) -> String {
        match &self.watch {
            Watch::Queue { name, .. } => format!("sluice-queue-{name}"),
            Watch::Stream { name, .. } => format!("sluice-stream-{name}-iterator-age-ms"),
        }
    }
}

fn trigger_of(r: &pb::ScaledObjectRef) -> Result<Trigger, Status> {
    Trigger::parse(&r.scaler_metadata).map_err(super::status::from_domain)
}

fn store_status(e: ApplyError) -> Status {
    match e {
        ApplyError::Rejected(d) => d.into_status(),
        ApplyError::Store(s) => status::internal(format!("reading the state: {s}")),
    }
}

impl ScalerApi {
    /// The trigger's metric now, from this node's state.
    fn measure(&self, t: &Trigger) -> Result<f64, Status> {
        self.ctx
            .router
            .state()
            .read(|s| -> Result<f64, ApplyError> {
                match &t.watch {
                    Watch::Queue { name, in_flight } => {
                        let q = crate::queues::load(s, name)?.ok_or_else(|| {
                            DomainError::not_found(
                                "QueueDoesNotExist",
                                format!("scalerMetadata.queue: no queue named {name}"),
                            )
                        })?;
                        let st = crate::queues::layout::load_state(s, q.id)?;
                        let extra = if *in_flight { st.in_flight } else { 0 };
                        Ok((st.available + extra) as f64)
                    }
                    Watch::Stream { name, function } => {
                        let stream = crate::streams::load(s, name)?.ok_or_else(|| {
                            DomainError::not_found(
                                "ResourceNotFoundException",
                                format!("scalerMetadata.stream: no stream named {name}"),
                            )
                        })?;
                        let now = now_ms();
                        let mut oldest = 0u64;
                        for m in crate::mappings::all(s)? {
                            let reads_it = matches!(&m.source, Source::Stream(n) if n == name);
                            let of_function = function.as_ref().is_none_or(|f| *f == m.function);
                            if !reads_it || !of_function || !m.settings.enabled {
                                continue;
                            }
                            let checkpoints =
                                crate::mappings::checkpoints::of_mapping(s, &m.function, &m.uuid)?;
                            for (_, age) in
                                crate::lag::stream_ages(s, &m, &stream, &checkpoints, now)?
                            {
                                oldest = oldest.max(age);
                            }
                        }
                        Ok(oldest as f64)
                    }
                }
            })
            .map_err(store_status)
    }

    /// Whether the metric is past the activation target.
    fn active(&self, t: &Trigger) -> Result<bool, Status> {
        Ok(self.measure(t)? > t.activation)
    }
}

type ActiveStream = Pin<Box<dyn Stream<Item = Result<pb::IsActiveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ExternalScaler for ScalerApi {
    async fn is_active(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Reply<pb::IsActiveResponse> {
        let t = trigger_of(request.get_ref())?;
        Ok(Response::new(pb::IsActiveResponse {
            result: self.active(&t)?,
        }))
    }

    type StreamIsActiveStream = ActiveStream;

    /// Sends the activity at once, then each time it changes.
    async fn stream_is_active(&self, request: Request<pb::ScaledObjectRef>) -> Reply<ActiveStream> {
        let t = trigger_of(request.get_ref())?;
        let first = self.active(&t)?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let api = ScalerApi {
            ctx: self.ctx.clone(),
        };
        tokio::spawn(async move {
            let mut last = first;
            if tx
                .send(Ok(pb::IsActiveResponse { result: first }))
                .await
                .is_err()
            {
                return;
            }
            loop {
                tokio::select! {
                    _ = tx.closed() => return,
                    _ = tokio::time::sleep(STREAM_POLL) => {}
                }
                let now = match api.active(&t) {
                    Ok(a) => a,
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                if now != last {
                    last = now;
                    if tx
                        .send(Ok(pb::IsActiveResponse { result: now }))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_metric_spec(
        &self,
        request: Request<pb::ScaledObjectRef>,
    ) -> Reply<pb::GetMetricSpecResponse> {
        let t = trigger_of(request.get_ref())?;
        Ok(Response::new(pb::GetMetricSpecResponse {
            metric_specs: vec![pb::MetricSpec {
                metric_name: t.metric_name(),
                target_size: t.target.ceil() as i64,
                target_size_float: t.target,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<pb::GetMetricsRequest>,
    ) -> Reply<pb::GetMetricsResponse> {
        let r = request.into_inner();
        let object = r
            .scaled_object_ref
            .ok_or_else(|| status::invalid("scaledObjectRef", "is required"))?;
        let t = trigger_of(&object)?;
        let value = self.measure(&t)?;
        // KEDA asks by the name GetMetricSpec gave, possibly prefixed
        // ("s0-…"); answer under the name asked for.
        let name = if r.metric_name.is_empty() {
            t.metric_name()
        } else {
            r.metric_name
        };
        Ok(Response::new(pb::GetMetricsResponse {
            metric_values: vec![pb::MetricValue {
                metric_name: name,
                metric_value: value.round() as i64,
                metric_value_float: value,
            }],
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn triggers_parse_with_defaults() {
        let t = Trigger::parse(&meta(&[("queue", "jobs")])).unwrap();
        assert_eq!(t.target, 10.0);
        assert_eq!(t.activation, 0.0);
        assert_eq!(t.metric_name(), "sluice-queue-jobs");
        let t = Trigger::parse(&meta(&[
            ("stream", "clicks"),
            ("function", "f"),
            ("target", "5000"),
            ("activationTarget", "100"),
        ]))
        .unwrap();
        assert_eq!(
            t.watch,
            Watch::Stream {
                name: "clicks".into(),
                function: Some("f".into())
            }
        );
        assert_eq!((t.target, t.activation), (5000.0, 100.0));
    }

    #[test]
    fn bad_metadata_names_the_key_and_rule() {
        for (m, needle) in [
            (meta(&[]), "scalerMetadata: must name a queue"),
            (meta(&[("queue", "a"), ("stream", "b")]), "not both"),
            (
                meta(&[("queue", "a"), ("target", "0")]),
                "target: must be greater than 0",
            ),
            (
                meta(&[("queue", "a"), ("target", "x")]),
                "target: must be a number",
            ),
            (
                meta(&[("queue", "a"), ("activationTarget", "-1")]),
                "activationTarget: must be 0 or more",
            ),
            (
                meta(&[("queue", "a"), ("scaleOnInFlight", "maybe")]),
                "scaleOnInFlight: must be true or false",
            ),
        ] {
            let e = Trigger::parse(&m).unwrap_err();
            assert!(e.message.contains(needle), "{}", e.message);
        }
    }
}
