//! The gRPC servers of a node. The public port serves the public API
//! (`sluice.v1`), gRPC health checking and reflection, and Prometheus
//! metrics at `GET /metrics`; the cluster listener serves the node-to-node
//! services (`sluice.internal.v1`) and takes only the cluster's nodes. Both
//! pass every call through one guard layer ([`guard`]) that authenticates,
//! authorises ([`access`]) and meters it.

pub mod access;
pub mod bounds;
pub mod cluster;
pub mod events;
mod fields;
pub mod functions;
pub mod guard;
pub mod iam;
pub mod node;
pub mod probes;
pub mod producer;
pub mod publish_stream;
pub mod put_stream;
mod queue_messages;
pub mod queues;
pub mod receive_stream;
mod receiving;
pub mod refs;
pub mod scaler;
pub mod scheduler;
pub mod send_stream;
pub mod status;
pub mod streams;
pub mod topics;
pub mod workers;

use std::future::Future;
use std::sync::Arc;

use sluice_proto::internal::node_server::NodeServer;
use sluice_proto::internal::raft_server::RaftServer;
use sluice_proto::v1::cluster_server::ClusterServer;
use sluice_proto::v1::events_server::EventsServer;
use sluice_proto::v1::functions_server::FunctionsServer;
use sluice_proto::v1::iam_server::IamServer;
use sluice_proto::v1::queues_server::QueuesServer;
use sluice_proto::v1::scheduler_server::SchedulerServer;
use sluice_proto::v1::streams_server::StreamsServer;
use sluice_proto::v1::topics_server::TopicsServer;
use sluice_proto::v1::workers_server::WorkersServer;
use tokio::net::TcpListener;
use tonic::service::Routes;
use tonic::Status;

use crate::command::{Command, CommandOutput, Query, QueryOutput, QueryResponse, Registered};
use crate::error::DomainError;
use crate::raft::service::RaftService;
use crate::router::RouteError;

pub use crate::context::Context;

use sluice_core::limits::requests::{INTERNAL_MESSAGE_MAX, PUBLIC_MESSAGE_MAX};

/// What every gRPC handler answers: tonic's response or its status.
pub type Reply<T> = Result<tonic::Response<T>, Status>;

pub use sluice_proto::CONSISTENCY_HEADER;

impl Context {
    /// Runs `query` with the asked consistency.
    pub async fn query(&self, how: Consistency, query: Query) -> Result<QueryOutput, Status> {
        let reply: Result<QueryResponse, RouteError> = match how {
            Consistency::Linearizable => self.router.read(query).await,
            Consistency::Local => self.router.read_local(&query),
        };
        reply?.map_err(status::from_domain)
    }

    /// Answers the read `op` with the asked consistency, in its own output
    /// type.
    pub async fn ask<O>(&self, how: Consistency, op: O) -> Result<O::Output, Status>
    where
        O: Registered<Carrier = Query, Reply = QueryOutput>,
    {
        let out = self.query(how, op.carry()).await?;
        O::output(out).ok_or_else(|| status::unexpected(O::NAME))
    }

    /// Answers the read `op` from this node's applied state, in its own
    /// output type: the outer error is a routing failure, the inner one the
    /// state machine's answer (a caller may treat "not found" as absence).
    pub fn ask_local<O>(&self, op: O) -> Result<Result<O::Output, DomainError>, Status>
    where
        O: Registered<Carrier = Query, Reply = QueryOutput>,
    {
        match self.router.read_local(&op.carry())? {
            Ok(out) => O::output(out)
                .map(Ok)
                .ok_or_else(|| status::unexpected(O::NAME)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Commits `op` through the leader and returns its own output.
    pub async fn run<O>(&self, op: O) -> Result<O::Output, Status>
    where
        O: Registered<Carrier = Command, Reply = CommandOutput>,
    {
        self.try_run(op).await?.map_err(status::from_domain)
    }

    /// Commits `op` through the leader: the outer error is a routing
    /// failure (the outcome may be unknown), the inner one the state
    /// machine's rejection of it.
    pub async fn try_run<O>(&self, op: O) -> Result<Result<O::Output, DomainError>, Status>
    where
        O: Registered<Carrier = Command, Reply = CommandOutput>,
    {
        match self.router.write(op.carry()).await? {
            Ok(out) => O::output(out)
                .map(Ok)
                .ok_or_else(|| status::unexpected(O::NAME)),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Adds or removes tags on a queue, topic or stream.
    /// Added tags are checked here first, with the service's error code, so
    /// a bad request is refused without a proposal; the command checks the
    /// resulting set again.
    pub async fn tag(
        &self,
        resource: crate::tags::Tagged,
        change: crate::tags::Change,
        invalid: crate::tags::Invalid,
    ) -> Result<(), Status> {
        if let crate::tags::Change::Add(tags) = &change {
            crate::tags::validate(tags, invalid).map_err(status::from_domain)?;
        }
        self.run(crate::tags::Tag { resource, change }).await
    }
}

/// Whether `caller` may do `action` on `resource`, for the calls that act
/// on resources the guard could not read from the request (a stream's later
/// messages, PutEvents' buses); `operation` names the call in the audit
/// log. No caller (development mode) may do anything.
pub fn authorise(
    caller: Option<&crate::auth::caller::Caller>,
    operation: &str,
    action: &str,
    resource: &str,
) -> Result<(), Status> {
    let Some(caller) = caller else {
        return Ok(());
    };
    match caller.decide(action, resource) {
        sluice_security::policy::Decision::Allow => Ok(()),
        _ => {
            tracing::warn!(
                target: "sluice::audit",
                operation,
                principal = %caller.name(),
                action,
                resource,
                reason = "AccessDenied",
                "refused"
            );
            Err(status::permission_denied(
                "AccessDenied",
                format!("not authorized to perform: {action} on resource: {resource}"),
            ))
        }
    }
}

/// The caller of a request, as the guard layer established it.
pub fn caller<T>(request: &tonic::Request<T>) -> Result<crate::auth::caller::Caller, Status> {
    request
        .extensions()
        .get::<crate::auth::caller::Caller>()
        .cloned()
        .ok_or_else(|| status::internal("the call did not pass the guard layer"))
}

/// How a read is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// On the leader, after it confirmed its leadership (the default).
    Linearizable,
    /// From the called node's applied state, which may lag.
    Local,
}

/// Reads the consistency a call asked for.
pub fn consistency<T>(request: &tonic::Request<T>) -> Result<Consistency, Status> {
    match request.metadata().get(CONSISTENCY_HEADER) {
        None => Ok(Consistency::Linearizable),
        Some(v) => match v.to_str() {
            Ok("linearizable") => Ok(Consistency::Linearizable),
            Ok("local") => Ok(Consistency::Local),
            _ => Err(status::invalid(
                CONSISTENCY_HEADER,
                "metadata must be \"linearizable\" or \"local\"",
            )),
        },
    }
}

/// What both listeners need besides the node's context.
pub struct Serving {
    /// Turns credentials into callers.
    pub authenticator: Arc<crate::authenticator::Authenticator>,
    /// Every public operation's action and resource.
    pub table: Arc<access::Table>,
    /// How connections are taken (TLS or not, handshake bound).
    pub accept: sluice_security::tls::Accept,
    /// Request size and shape limits, and the in-flight budget.
    pub bounds: Arc<bounds::Bounds>,
}

impl Serving {
    /// The guard in front of `listener`'s services, which refuses
    /// messages over `message_max` bytes.
    fn guard(
        &self,
        listener: crate::authenticator::Listener,
        ctx: &Context,
        message_max: usize,
    ) -> guard::GuardLayer {
        guard::GuardLayer::new(
            listener,
            self.authenticator.clone(),
            self.table.clone(),
            ctx.identity.clone(),
            ctx.router.clone(),
            message_max,
            self.bounds.clone(),
        )
    }
}

/// The public services, each with its size limits.
fn public_routes(ctx: &Context) -> Routes {
    Routes::new(
        QueuesServer::new(queues::QueuesApi::new(ctx.clone()))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX),
    )
    .add_service(
        StreamsServer::new(streams::StreamsApi::new(ctx.clone()))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX),
    )
    .add_service(
        TopicsServer::new(topics::TopicsApi::new(ctx.clone()))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX),
    )
    .add_service(
        FunctionsServer::new(functions::FunctionsApi::new(ctx.clone()))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX)
            .max_encoding_message_size(PUBLIC_MESSAGE_MAX),
    )
    .add_service(
        EventsServer::new(events::EventsApi::new(ctx.clone()))
            .max_decoding_message_size(PUBLIC_MESSAGE_MAX),
    )
    .add_service(SchedulerServer::new(scheduler::SchedulerApi::new(
        ctx.clone(),
    )))
    .add_service(ClusterServer::new(cluster::ClusterApi::new(ctx.clone())))
    .add_service(
        WorkersServer::new(workers::WorkersApi::new(ctx.clone()))
            .max_encoding_message_size(sluice_worker::cluster::MESSAGE_MAX),
    )
}

/// Serves the public port on `listener` until `shutdown` completes: the
/// public API, principals and policies, gRPC health checking and
/// reflection (of the public services only), KEDA's external scaler,
/// Prometheus metrics at `GET /metrics`, the probes and subscription
/// confirmation links. Every call passes the guard layer.
pub async fn serve_public(
    listener: TcpListener,
    ctx: Context,
    serving: Serving,
    guard: Arc<crate::raft::service::VoteGuard>,
    metrics: Arc<crate::metrics::Exporter>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let timing = ctx.timing.clone();
    let (health, health_service) = tonic_health::server::health_reporter();
    use tonic::server::NamedService;
    for service in [
        "",
        QueuesServer::<queues::QueuesApi>::NAME,
        StreamsServer::<streams::StreamsApi>::NAME,
        TopicsServer::<topics::TopicsApi>::NAME,
        FunctionsServer::<functions::FunctionsApi>::NAME,
        EventsServer::<events::EventsApi>::NAME,
        SchedulerServer::<scheduler::SchedulerApi>::NAME,
        ClusterServer::<cluster::ClusterApi>::NAME,
    ] {
        health
            .set_service_status(service, tonic_health::ServingStatus::Serving)
            .await;
    }

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::PUBLIC_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .expect("the generated descriptor set is valid");
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::PUBLIC_FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .expect("the generated descriptor set is valid");

    let routes = public_routes(&ctx)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(IamServer::new(iam::IamApi::new(ctx.clone())))
        .add_service(
            sluice_proto::externalscaler::external_scaler_server::ExternalScalerServer::new(
                scaler::ScalerApi::new(ctx.clone()),
            ),
        );
    let front = Arc::new(aws_front(&ctx, &serving));
    let confirm_ctx = ctx.clone();
    let (live_router, ready_router) = (ctx.router.clone(), ctx.router.clone());
    let router = routes
        .into_axum_router()
        .route(
            "/metrics",
            axum::routing::get(move || {
                let metrics = metrics.clone();
                async move { metrics.render() }
            }),
        )
        .route(
            "/live",
            axum::routing::get(move || probes::live(live_router.clone())),
        )
        .route(
            "/ready",
            axum::routing::get(move || {
                probes::ready(ready_router.clone(), guard.clone(), timing.election_max)
            }),
        )
        // AWS requests post to `/`, or (older SQS SDKs) to a queue's URL;
        // anything else no route takes is an unknown gRPC method.
        .fallback(move |request: axum::extract::Request| {
            let front = front.clone();
            async move {
                if crate::aws::is_aws_request(&request) {
                    front.serve(request).await
                } else {
                    axum::response::IntoResponse::into_response(
                        tonic::Status::unimplemented("no such method or route")
                            .into_http::<axum::body::Body>(),
                    )
                }
            }
        })
        .route(
            "/topics/confirm",
            axum::routing::get(move |axum::extract::RawQuery(q): axum::extract::RawQuery| {
                topics::confirm_url(confirm_ctx.clone(), q)
            }),
        );
    let layer = serving.guard(
        crate::authenticator::Listener::Public,
        &ctx,
        PUBLIC_MESSAGE_MAX,
    );
    tonic::transport::Server::builder()
        .accept_http1(true)
        .layer(layer)
        .add_routes(Routes::from(router))
        .serve_with_incoming_shutdown(
            sluice_security::tls::incoming(listener, serving.accept),
            shutdown,
        )
        .await
}

/// The AWS protocols' front: its operations run in-process through a guard
/// and handlers of their own, the same as the listener's.
fn aws_front(ctx: &Context, serving: &Serving) -> crate::aws::front::Front {
    let layer = serving.guard(
        crate::authenticator::Listener::Public,
        ctx,
        PUBLIC_MESSAGE_MAX,
    );
    let routes = public_routes(ctx).add_service(IamServer::new(iam::IamApi::new(ctx.clone())));
    let guarded = tower::Layer::layer(&layer, routes);
    let dispatch = crate::aws::call::Dispatch::new(move |request| {
        let service = guarded.clone();
        async move {
            match tower::ServiceExt::oneshot(service, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    });
    let bounds = serving.bounds.clone();
    crate::aws::front::Front {
        authenticator: serving.authenticator.clone(),
        dispatch,
        identity: ctx.identity.clone(),
        scheme: if serving.accept.tls.is_some() {
            "https"
        } else {
            "http"
        },
        // Base64 makes binary values a third larger in JSON than in gRPC.
        body_max: PUBLIC_MESSAGE_MAX * 2,
        reserve: Arc::new(move |len| bounds.reserve(len)),
    }
}

/// Serves the cluster listener on `listener` until `shutdown` completes:
/// the node-to-node services (Raft, request routing), the public services
/// for calls forwarded between nodes and for this node's own worker, and
/// that worker's `WorkerHost`. Only nodes are taken.
pub async fn serve_cluster(
    listener: TcpListener,
    ctx: Context,
    serving: Serving,
    raft_service: RaftService,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let routes = public_routes(&ctx)
        .add_service(
            RaftServer::new(raft_service)
                .max_decoding_message_size(INTERNAL_MESSAGE_MAX)
                .max_encoding_message_size(INTERNAL_MESSAGE_MAX),
        )
        .add_service(
            NodeServer::new(node::NodeApi::new(ctx.clone()))
                .max_decoding_message_size(INTERNAL_MESSAGE_MAX)
                .max_encoding_message_size(INTERNAL_MESSAGE_MAX),
        );
    let routes = match &ctx.worker {
        Some(w) => routes.add_service(w.service()),
        None => routes,
    };
    let layer = serving.guard(
        crate::authenticator::Listener::Cluster,
        &ctx,
        INTERNAL_MESSAGE_MAX,
    );
    tonic::transport::Server::builder()
        .layer(layer)
        .add_routes(routes)
        .serve_with_incoming_shutdown(
            sluice_security::tls::incoming(listener, serving.accept),
            shutdown,
        )
        .await
}
