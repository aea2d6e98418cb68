//! Rust client for Sluice.
//!
//! A [`Client`] takes the addresses of some or all broker nodes. Any node
//! answers any call (followers forward to the leader), so the client only has
//! to find one that is up: a call that fails with `UNAVAILABLE` (the node is
//! down, not a member yet, or no leader was elected in time), or whose
//! connection broke mid-call, is retried on the next node until the
//! client's deadline: at once when the node refused the connection (it is
//! not running), after an exponential back-off otherwise or once every node
//! refused.
//!
//! Retried writes are delivered at least once: when a node fails after
//! forwarding a write, the retry may apply it a second time. The calls whose
//! retry is harmless say so (CreateQueue is idempotent). The nodes never
//! resend a write themselves once its outcome is unknown: they answer
//! `UNAVAILABLE` with the code `LeaderChanged`, `LeaderLost`,
//! `LeaderTimeout`, `NoQuorum` or `Abandoned`. A client whose `deadline`
//! is zero makes a single attempt, and such an error then means the write
//! may or may not have been applied.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sluice_client::Error> {
//! let client = sluice_client::Client::new(["127.0.0.1:7070"])?;
//! let url = client.create_queue("jobs", Default::default()).await?;
//! println!("{url}");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use sluice_proto::v1 as pb;
use sluice_proto::v1::cluster_client::ClusterClient;
use sluice_proto::v1::events_client::EventsClient;
use sluice_proto::v1::functions_client::FunctionsClient;
pub use sluice_proto::v1::iam_client::IamClient;
use sluice_proto::v1::queues_client::QueuesClient;
use sluice_proto::v1::scheduler_client::SchedulerClient;
use sluice_proto::v1::streams_client::StreamsClient;
use sluice_proto::v1::topics_client::TopicsClient;
use sluice_proto::v1::workers_client::WorkersClient;
use sluice_security::signer::{SignedChannel, Signer};
use tonic::transport::Endpoint;

pub use sluice_security::tls::{CertFiles, ClientTls};
pub use sluice_security::Credentials;
use tonic::{Code, Status};
use tonic_types::StatusExt;

pub use sluice_proto;

pub use sluice_proto::{CONSISTENCY_HEADER, ERROR_CODE_HEADER};

/// Largest reply the client accepts (a GetRecords reply is up to 10 MiB,
/// a ReceiveMessage reply up to ten 1 MiB messages).
pub const MAX_REPLY_BYTES: usize = 64 << 20;

/// Calls `$method` of a service's generated client (made by the
/// constructor of that name in [`clients`]) with the request `$req`,
/// retried as [`Client::call`] retries; resolves to the reply's message.
macro_rules! rpc {
    ($client:ident.$service:ident.$method:ident($req:expr)) => {
        $client.unary(clients::$service, $req, |mut c, r| async move {
            c.$method(r).await
        })
    };
}

/// The generated client of each service over one node's channel, taking
/// replies up to [`MAX_REPLY_BYTES`] (tonic's default of 4 MiB refuses a
/// receive of ten large messages or a large code package).
mod clients {
    use super::*;

    /// The queue service.
    pub fn queues(ch: SignedChannel) -> QueuesClient<SignedChannel> {
        QueuesClient::new(ch).max_decoding_message_size(MAX_REPLY_BYTES)
    }

    /// The topic service.
    pub fn topics(ch: SignedChannel) -> TopicsClient<SignedChannel> {
        TopicsClient::new(ch).max_decoding_message_size(MAX_REPLY_BYTES)
    }

    /// The function service; its requests carry code packages, as large.
    pub fn functions(ch: SignedChannel) -> FunctionsClient<SignedChannel> {
        FunctionsClient::new(ch)
            .max_decoding_message_size(MAX_REPLY_BYTES)
            .max_encoding_message_size(MAX_REPLY_BYTES)
    }

    /// The stream service.
    pub fn streams(ch: SignedChannel) -> StreamsClient<SignedChannel> {
        StreamsClient::new(ch).max_decoding_message_size(MAX_REPLY_BYTES)
    }

    /// The IAM service.
    pub fn iam(ch: SignedChannel) -> IamClient<SignedChannel> {
        IamClient::new(ch)
    }

    /// The event-bus service.
    pub fn events(ch: SignedChannel) -> EventsClient<SignedChannel> {
        EventsClient::new(ch).max_decoding_message_size(MAX_REPLY_BYTES)
    }

    /// The scheduler service.
    pub fn scheduler(ch: SignedChannel) -> SchedulerClient<SignedChannel> {
        SchedulerClient::new(ch).max_decoding_message_size(MAX_REPLY_BYTES)
    }
}

/// How often an idle connection is pinged, and how long the answer may
/// take before the connection counts as lost.
const KEEPALIVE: Duration = Duration::from_secs(5);
/// Longest attempt of a synchronous Invoke: the longest function timeout
/// (900 s) and time to start it.
const INVOKE_ATTEMPT_MAX: Duration = Duration::from_secs(960);

mod consumer;
mod events;
mod follower;
mod package;
mod sender;
pub use consumer::{Consumer, ConsumerOptions, Settler};
pub use follower::{Start, StreamFollower};
pub use package::zip_directory;
pub use sender::{
    Kind, MessageSender, Messages, Publications, Publisher, RecordSender, Records, Sender,
};

/// A failed call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client was given no usable address.
    #[error("{0}")]
    Config(String),
    /// The cluster answered with an error.
    #[error("{code}: {message}")]
    Call {
        /// gRPC status code.
        status: Code,
        /// Stable machine-readable code, e.g. `QueueDoesNotExist`.
        code: String,
        /// What went wrong, naming the field and rule for bad input.
        message: String,
    },
}

impl Error {
    /// The gRPC status code, if the cluster answered.
    pub fn status(&self) -> Option<Code> {
        match self {
            Error::Call { status, .. } => Some(*status),
            Error::Config(_) => None,
        }
    }

    /// The stable error code (e.g. `QueueDoesNotExist`), if there is one.
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Call { code, .. } => Some(code),
            Error::Config(_) => None,
        }
    }
}

impl From<Status> for Error {
    fn from(s: Status) -> Self {
        let code = s
            .metadata()
            .get(ERROR_CODE_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| s.get_error_details().error_info().map(|i| i.reason.clone()))
            .unwrap_or_else(|| format!("{:?}", s.code()));
        Error::Call {
            status: s.code(),
            code,
            message: s.message().to_string(),
        }
    }
}

/// How reads are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Consistency {
    /// On the leader after it confirmed its leadership (the default).
    #[default]
    Linearizable,
    /// From the called node's state, which may lag the leader.
    Local,
}

/// Client settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// How long a call keeps retrying `UNAVAILABLE`.
    pub deadline: Duration,
    /// First back-off; doubles per retry up to `max_backoff`. A node that
    /// refuses the connection is passed over without one.
    pub initial_backoff: Duration,
    /// Longest back-off.
    pub max_backoff: Duration,
    /// Timeout of one attempt.
    pub attempt_timeout: Duration,
    /// TLS to the nodes (off by default: the development mode).
    pub tls: ClientTls,
    /// The access key every call is signed with (none: calls are not
    /// signed, as the development mode takes them).
    pub credentials: Option<Credentials>,
    /// The region calls are signed for (nodes take any).
    pub region: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            deadline: Duration::from_secs(30),
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(1),
            attempt_timeout: Duration::from_secs(20),
            tls: ClientTls::default(),
            credentials: None,
            region: "us-east-1".into(),
        }
    }
}

/// A client of a Sluice cluster. Calls may run concurrently; clones share
/// the connections.
pub struct Client {
    nodes: Vec<(String, SignedChannel)>,
    next: AtomicUsize,
    options: Options,
}

impl Clone for Client {
    fn clone(&self) -> Self {
        Client {
            nodes: self.nodes.clone(),
            next: AtomicUsize::new(self.next.load(Ordering::Relaxed)),
            options: self.options.clone(),
        }
    }
}

/// A queue as `ListQueues` returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueEntry {
    /// Queue name.
    pub name: String,
    /// Queue URL.
    pub url: String,
}

impl Client {
    /// A client of the nodes at `addrs` (`host:port`), with default options.
    pub fn new<I, S>(addrs: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        Self::with_options(addrs, Options::default())
    }

    /// A client with explicit options.
    pub fn with_options<I, S>(addrs: I, options: Options) -> Result<Self, Error>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let connector = options
            .tls
            .connector()
            .map_err(|e| Error::Config(format!("TLS: {e}")))?;
        if let Some(c) = &options.credentials {
            c.validate().map_err(Error::Config)?;
        }
        let mut nodes = Vec::new();
        for addr in addrs {
            let addr = addr.as_ref().trim();
            if addr.is_empty() {
                continue;
            }
            let uri = if addr.contains("://") {
                addr.to_string()
            } else {
                format!("http://{addr}")
            };
            let endpoint = Endpoint::from_shared(uri)
                .map_err(|e| Error::Config(format!("node address {addr:?}: {e}")))?
                .connect_timeout(Duration::from_secs(1))
                // A node that went silent (a partition drops its packets)
                // is found out: a streaming call has no per-call deadline,
                // and would otherwise wait on it for good.
                .http2_keep_alive_interval(KEEPALIVE)
                .keep_alive_timeout(KEEPALIVE)
                .keep_alive_while_idle(true);
            let channel = Signer::new(
                connector.channel(endpoint),
                options.credentials.clone(),
                &options.region,
            );
            nodes.push((addr.to_string(), channel));
        }
        if nodes.is_empty() {
            return Err(Error::Config(
                "no node address given (e.g. 127.0.0.1:7070)".into(),
            ));
        }
        Ok(Client {
            nodes,
            next: AtomicUsize::new(0),
            options,
        })
    }

    /// The node addresses this client uses.
    pub fn addresses(&self) -> Vec<&str> {
        self.nodes.iter().map(|(a, _)| a.as_str()).collect()
    }

    /// Runs `call` against the nodes in turn until it succeeds, fails with
    /// something other than `UNAVAILABLE`, or the deadline passes. Use it
    /// with the generated clients for calls this type has no method for.
    pub async fn call<T, F, Fut>(&self, call: F) -> Result<T, Error>
    where
        F: FnMut(SignedChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_within(self.options.attempt_timeout, call).await
    }

    /// Like [`Client::call`], with a longer timeout per attempt (for long
    /// polls).
    pub async fn call_within<T, F, Fut>(
        &self,
        attempt_timeout: Duration,
        mut call: F,
    ) -> Result<T, Error>
    where
        F: FnMut(SignedChannel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let started = Instant::now();
        let mut backoff = self.options.initial_backoff;
        // Nodes that refused a connection since the last answer. A refusal
        // costs nothing and says nothing about the others, so the next node
        // is tried at once; the back-off applies once every node refused.
        let mut refused = 0;
        loop {
            let i = self.next.load(Ordering::Relaxed) % self.nodes.len();
            let channel = self.nodes[i].1.clone();
            let attempt = tokio::time::timeout(attempt_timeout, call(channel)).await;
            let status = match attempt {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(s)) => s,
                Err(_) => Status::unavailable("the node did not answer in time"),
            };
            if !sluice_proto::is_retryable(&status) {
                return Err(status.into());
            }
            // Try another node next time.
            let _ = self
                .next
                .compare_exchange(i, i + 1, Ordering::Relaxed, Ordering::Relaxed);
            if sluice_proto::never_sent(&status) {
                refused += 1;
                if refused < self.nodes.len() {
                    if started.elapsed() >= self.options.deadline {
                        return Err(status.into());
                    }
                    continue;
                }
            }
            refused = 0;
            let hint = status
                .metadata()
                .get("retry-after-ms")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
                .unwrap_or_default();
            let wait = backoff.max(hint.min(self.options.max_backoff));
            if started.elapsed() + wait > self.options.deadline {
                return Err(status.into());
            }
            tokio::time::sleep(wait).await;
            backoff = (backoff * 2).min(self.options.max_backoff);
        }
    }

    fn read_request<T>(msg: T, consistency: Consistency) -> tonic::Request<T> {
        let mut r = tonic::Request::new(msg);
        if consistency == Consistency::Local {
            r.metadata_mut().insert(
                CONSISTENCY_HEADER,
                tonic::metadata::MetadataValue::from_static("local"),
            );
        }
        r
    }

    /// Creates a queue (idempotent for identical attributes) and returns its
    /// URL.
    pub async fn create_queue(
        &self,
        name: &str,
        attributes: HashMap<String, String>,
    ) -> Result<String, Error> {
        self.create_queue_with_tags(name, attributes, HashMap::new())
            .await
            .map(|r| r.queue_url)
    }

    /// Creates a queue with tags.
    pub async fn create_queue_with_tags(
        &self,
        name: &str,
        attributes: HashMap<String, String>,
        tags: HashMap<String, String>,
    ) -> Result<pb::CreateQueueResponse, Error> {
        let req = pb::CreateQueueRequest {
            queue_name: name.to_string(),
            attributes,
            tags,
        };
        self.call(|ch| {
            let req = req.clone();
            async move {
                clients::queues(ch)
                    .create_queue(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// The URL of a queue.
    pub async fn get_queue_url(
        &self,
        name: &str,
        consistency: Consistency,
    ) -> Result<String, Error> {
        let req = pb::GetQueueUrlRequest {
            queue_name: name.to_string(),
            queue_owner_aws_account_id: String::new(),
        };
        self.call(|ch| {
            let req = Self::read_request(req.clone(), consistency);
            async move {
                clients::queues(ch)
                    .get_queue_url(req)
                    .await
                    .map(|r| r.into_inner().queue_url)
            }
        })
        .await
    }

    /// One page of queues.
    pub async fn list_queues_page(
        &self,
        prefix: &str,
        max_results: i32,
        next_token: &str,
        consistency: Consistency,
    ) -> Result<pb::ListQueuesResponse, Error> {
        let req = pb::ListQueuesRequest {
            queue_name_prefix: prefix.to_string(),
            max_results,
            next_token: next_token.to_string(),
        };
        self.call(|ch| {
            let req = Self::read_request(req.clone(), consistency);
            async move {
                clients::queues(ch)
                    .list_queues(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Every queue whose name starts with `prefix`, following pages.
    pub async fn list_queues(
        &self,
        prefix: &str,
        consistency: Consistency,
    ) -> Result<Vec<QueueEntry>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .list_queues_page(prefix, 0, &token, consistency)
                .await?;
            out.extend(
                page.queue_names
                    .into_iter()
                    .zip(page.queue_urls)
                    .map(|(name, url)| QueueEntry { name, url }),
            );
            if page.next_token.is_empty() {
                return Ok(out);
            }
            token = page.next_token;
        }
    }

    /// Deletes a queue.
    pub async fn delete_queue(&self, name: &str) -> Result<(), Error> {
        let req = pb::DeleteQueueRequest {
            queue_name: name.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move { clients::queues(ch).delete_queue(req).await.map(|_| ()) }
        })
        .await
    }

    /// Runs one call of the `Iam` service (principals, access keys,
    /// policies), retried like any call: `client.iam(req, |mut c, r| async
    /// move { c.create_principal(r).await })`.
    pub async fn iam<Req, Resp, F, Fut>(&self, req: Req, f: F) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(IamClient<SignedChannel>, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.unary(clients::iam, req, f).await
    }

    /// Runs one call on the generated client `client` makes over a node's
    /// channel, retried as [`Client::call`] retries; the reply's message.
    async fn unary<C, Req, Resp, F, Fut>(
        &self,
        client: fn(SignedChannel) -> C,
        req: Req,
        f: F,
    ) -> Result<Resp, Error>
    where
        Req: Clone,
        F: Fn(C, Req) -> Fut,
        Fut: Future<Output = Result<tonic::Response<Resp>, Status>>,
    {
        self.call(|ch| {
            let fut = f(client(ch), req.clone());
            async move { fut.await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Sends a message. Retried on a broken connection, so a standard queue
    /// may get it twice (a FIFO queue deduplicates).
    pub async fn send_message(
        &self,
        req: pb::SendMessageRequest,
    ) -> Result<pb::SendMessageResponse, Error> {
        rpc!(self.queues.send_message(req)).await
    }

    /// Sends one message with a body and nothing else (no attributes, delay
    /// or FIFO fields).
    pub async fn send_body(
        &self,
        queue: &str,
        body: &str,
    ) -> Result<pb::SendMessageResponse, Error> {
        self.send_message(pb::SendMessageRequest {
            queue_name: queue.to_string(),
            message_body: body.to_string(),
            ..Default::default()
        })
        .await
    }

    /// Sends up to 10 messages; each entry succeeds or fails on its own.
    pub async fn send_message_batch(
        &self,
        req: pb::SendMessageBatchRequest,
    ) -> Result<pb::SendMessageBatchResponse, Error> {
        rpc!(self.queues.send_message_batch(req)).await
    }

    /// Receives up to `max` messages from `queue`, hiding them for
    /// `visibility_timeout` seconds and waiting up to `wait_time_seconds` for
    /// one to arrive (`None`: the queue's own settings).
    pub async fn receive_from(
        &self,
        queue: &str,
        max: i32,
        visibility_timeout: Option<i32>,
        wait_time_seconds: Option<i32>,
    ) -> Result<pb::ReceiveMessageResponse, Error> {
        self.receive_message(pb::ReceiveMessageRequest {
            queue_name: queue.to_string(),
            max_number_of_messages: max,
            visibility_timeout,
            wait_time_seconds,
            ..Default::default()
        })
        .await
    }

    /// Receives messages, waiting up to the request's (or the queue's) wait
    /// time for one to arrive.
    pub async fn receive_message(
        &self,
        req: pb::ReceiveMessageRequest,
    ) -> Result<pb::ReceiveMessageResponse, Error> {
        let wait = Duration::from_secs(req.wait_time_seconds.unwrap_or(20).max(0) as u64);
        self.call_within(self.long_poll_timeout(wait), |ch| {
            let req = req.clone();
            async move {
                clients::queues(ch)
                    .receive_message(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// How long an attempt of a call that may wait `wait` for its answer
    /// is given.
    fn long_poll_timeout(&self, wait: Duration) -> Duration {
        self.options
            .attempt_timeout
            .max(wait + Duration::from_secs(10))
    }

    /// Deletes a message by receipt handle.
    pub async fn delete_message(&self, queue: &str, receipt_handle: &str) -> Result<(), Error> {
        let req = pb::DeleteMessageRequest {
            queue_name: queue.to_string(),
            receipt_handle: receipt_handle.to_string(),
        };
        rpc!(self.queues.delete_message(req)).await.map(|_| ())
    }

    /// Deletes up to 10 messages.
    pub async fn delete_message_batch(
        &self,
        req: pb::DeleteMessageBatchRequest,
    ) -> Result<pb::DeleteMessageBatchResponse, Error> {
        rpc!(self.queues.delete_message_batch(req)).await
    }

    /// Changes the visibility timeout of a received message.
    pub async fn change_message_visibility(
        &self,
        queue: &str,
        receipt_handle: &str,
        seconds: i32,
    ) -> Result<(), Error> {
        let req = pb::ChangeMessageVisibilityRequest {
            queue_name: queue.to_string(),
            receipt_handle: receipt_handle.to_string(),
            visibility_timeout: seconds,
        };
        rpc!(self.queues.change_message_visibility(req))
            .await
            .map(|_| ())
    }

    /// Changes the visibility timeout of up to 10 received messages.
    pub async fn change_message_visibility_batch(
        &self,
        req: pb::ChangeMessageVisibilityBatchRequest,
    ) -> Result<pb::ChangeMessageVisibilityBatchResponse, Error> {
        rpc!(self.queues.change_message_visibility_batch(req)).await
    }

    /// Deletes every message of a queue.
    pub async fn purge_queue(&self, queue: &str) -> Result<(), Error> {
        let req = pb::PurgeQueueRequest {
            queue_name: queue.to_string(),
        };
        rpc!(self.queues.purge_queue(req)).await.map(|_| ())
    }

    /// A queue's attributes (`names` empty: all of them).
    pub async fn get_queue_attributes(
        &self,
        queue: &str,
        names: &[&str],
    ) -> Result<HashMap<String, String>, Error> {
        let req = pb::GetQueueAttributesRequest {
            queue_name: queue.to_string(),
            attribute_names: names.iter().map(|n| n.to_string()).collect(),
        };
        rpc!(self.queues.get_queue_attributes(req))
            .await
            .map(|r| r.attributes)
    }

    /// Sets queue attributes.
    pub async fn set_queue_attributes(
        &self,
        queue: &str,
        attributes: HashMap<String, String>,
    ) -> Result<(), Error> {
        let req = pb::SetQueueAttributesRequest {
            queue_name: queue.to_string(),
            attributes,
        };
        rpc!(self.queues.set_queue_attributes(req))
            .await
            .map(|_| ())
    }

    /// Adds or replaces tags.
    pub async fn tag_queue(&self, queue: &str, tags: HashMap<String, String>) -> Result<(), Error> {
        let req = pb::TagQueueRequest {
            queue_name: queue.to_string(),
            tags,
        };
        rpc!(self.queues.tag_queue(req)).await.map(|_| ())
    }

    /// Removes tags.
    pub async fn untag_queue(&self, queue: &str, keys: Vec<String>) -> Result<(), Error> {
        let req = pb::UntagQueueRequest {
            queue_name: queue.to_string(),
            tag_keys: keys,
        };
        rpc!(self.queues.untag_queue(req)).await.map(|_| ())
    }

    /// A queue's tags.
    pub async fn list_queue_tags(&self, queue: &str) -> Result<HashMap<String, String>, Error> {
        let req = pb::ListQueueTagsRequest {
            queue_name: queue.to_string(),
        };
        rpc!(self.queues.list_queue_tags(req)).await.map(|r| r.tags)
    }

    /// Queues that use `queue` as their dead-letter queue.
    pub async fn list_dead_letter_source_queues(&self, queue: &str) -> Result<Vec<String>, Error> {
        let req = pb::ListDeadLetterSourceQueuesRequest {
            queue_name: queue.to_string(),
            max_results: 0,
            next_token: String::new(),
        };
        rpc!(self.queues.list_dead_letter_source_queues(req))
            .await
            .map(|r| r.queue_names)
    }

    /// Starts moving a dead-letter queue's messages back (or to `to`).
    pub async fn start_message_move_task(
        &self,
        req: pb::StartMessageMoveTaskRequest,
    ) -> Result<String, Error> {
        rpc!(self.queues.start_message_move_task(req))
            .await
            .map(|r| r.task_handle)
    }

    /// A dead-letter queue's move tasks, newest first.
    pub async fn list_message_move_tasks(
        &self,
        source_arn: &str,
        max: i32,
    ) -> Result<Vec<pb::MessageMoveTask>, Error> {
        let req = pb::ListMessageMoveTasksRequest {
            source_arn: source_arn.to_string(),
            max_results: max,
        };
        rpc!(self.queues.list_message_move_tasks(req))
            .await
            .map(|r| r.results)
    }

    /// Cancels a move task; returns how many messages it moved.
    pub async fn cancel_message_move_task(&self, handle: &str) -> Result<i64, Error> {
        let req = pb::CancelMessageMoveTaskRequest {
            task_handle: handle.to_string(),
        };
        rpc!(self.queues.cancel_message_move_task(req))
            .await
            .map(|r| r.approximate_number_of_messages_moved)
    }

    /// Creates a topic (an identical existing one is returned); its ARN.
    /// Idempotent, so a retry is harmless.
    pub async fn create_topic(
        &self,
        name: &str,
        attributes: HashMap<String, String>,
    ) -> Result<String, Error> {
        let req = pb::CreateTopicRequest {
            name: name.to_string(),
            attributes,
            tags: HashMap::new(),
        };
        rpc!(self.topics.create_topic(req))
            .await
            .map(|r| r.topic_arn)
    }

    /// Deletes a topic (a missing one too).
    pub async fn delete_topic(&self, topic: &str) -> Result<(), Error> {
        let req = pb::DeleteTopicRequest {
            topic_arn: topic.to_string(),
        };
        rpc!(self.topics.delete_topic(req)).await.map(|_| ())
    }

    /// Every topic ARN.
    pub async fn list_topics(&self) -> Result<Vec<String>, Error> {
        let mut arns = Vec::new();
        let mut token = String::new();
        loop {
            let req = pb::ListTopicsRequest { next_token: token };
            let r = rpc!(self.topics.list_topics(req)).await?;
            arns.extend(r.topic_arns);
            if r.next_token.is_empty() {
                return Ok(arns);
            }
            token = r.next_token;
        }
    }

    /// A topic's attributes and counts.
    pub async fn get_topic_attributes(
        &self,
        topic: &str,
    ) -> Result<HashMap<String, String>, Error> {
        let req = pb::GetTopicAttributesRequest {
            topic_arn: topic.to_string(),
        };
        rpc!(self.topics.get_topic_attributes(req))
            .await
            .map(|r| r.attributes)
    }

    /// Sets one topic attribute.
    pub async fn set_topic_attribute(
        &self,
        topic: &str,
        name: &str,
        value: &str,
    ) -> Result<(), Error> {
        let req = pb::SetTopicAttributesRequest {
            topic_arn: topic.to_string(),
            attribute_name: name.to_string(),
            attribute_value: value.to_string(),
        };
        rpc!(self.topics.set_topic_attributes(req))
            .await
            .map(|_| ())
    }

    /// Subscribes an endpoint; the subscription ARN (also of an HTTP/S
    /// subscription pending confirmation). Subscribing the same endpoint
    /// again returns the same subscription, so a retry is harmless.
    pub async fn subscribe(
        &self,
        topic: &str,
        protocol: &str,
        endpoint: &str,
        attributes: HashMap<String, String>,
    ) -> Result<String, Error> {
        let req = pb::SubscribeRequest {
            topic_arn: topic.to_string(),
            protocol: protocol.to_string(),
            endpoint: endpoint.to_string(),
            attributes,
            return_subscription_arn: true,
        };
        rpc!(self.topics.subscribe(req))
            .await
            .map(|r| r.subscription_arn)
    }

    /// Confirms an HTTP/S subscription with the token it was sent.
    pub async fn confirm_subscription(&self, topic: &str, token: &str) -> Result<String, Error> {
        let req = pb::ConfirmSubscriptionRequest {
            topic_arn: topic.to_string(),
            token: token.to_string(),
            authenticate_on_unsubscribe: false,
        };
        rpc!(self.topics.confirm_subscription(req))
            .await
            .map(|r| r.subscription_arn)
    }

    /// Removes a subscription.
    pub async fn unsubscribe(&self, subscription_arn: &str) -> Result<(), Error> {
        let req = pb::UnsubscribeRequest {
            subscription_arn: subscription_arn.to_string(),
        };
        rpc!(self.topics.unsubscribe(req)).await.map(|_| ())
    }

    /// Every subscription, of one topic or (`None`) of all.
    pub async fn list_subscriptions(
        &self,
        topic: Option<&str>,
    ) -> Result<Vec<pb::Subscription>, Error> {
        let mut out = Vec::new();
        let mut token = String::new();
        loop {
            let r = match topic {
                Some(t) => {
                    let req = pb::ListSubscriptionsByTopicRequest {
                        topic_arn: t.to_string(),
                        next_token: token,
                    };
                    rpc!(self.topics.list_subscriptions_by_topic(req)).await?
                }
                None => {
                    let req = pb::ListSubscriptionsRequest { next_token: token };
                    rpc!(self.topics.list_subscriptions(req)).await?
                }
            };
            out.extend(r.subscriptions);
            if r.next_token.is_empty() {
                return Ok(out);
            }
            token = r.next_token;
        }
    }

    /// A subscription's attributes.
    pub async fn get_subscription_attributes(
        &self,
        subscription_arn: &str,
    ) -> Result<HashMap<String, String>, Error> {
        let req = pb::GetSubscriptionAttributesRequest {
            subscription_arn: subscription_arn.to_string(),
        };
        rpc!(self.topics.get_subscription_attributes(req))
            .await
            .map(|r| r.attributes)
    }

    /// Sets one subscription attribute (e.g. FilterPolicy).
    pub async fn set_subscription_attribute(
        &self,
        subscription_arn: &str,
        name: &str,
        value: &str,
    ) -> Result<(), Error> {
        let req = pb::SetSubscriptionAttributesRequest {
            subscription_arn: subscription_arn.to_string(),
            attribute_name: name.to_string(),
            attribute_value: value.to_string(),
        };
        rpc!(self.topics.set_subscription_attributes(req))
            .await
            .map(|_| ())
    }

    /// Publishes a message. A retry after a lost reply may publish it twice
    /// on a standard topic (FIFO topics deduplicate).
    pub async fn publish(&self, req: pb::PublishRequest) -> Result<pb::PublishResponse, Error> {
        rpc!(self.topics.publish(req)).await
    }

    /// Publishes up to 10 messages; each succeeds or fails on its own.
    pub async fn publish_batch(
        &self,
        req: pb::PublishBatchRequest,
    ) -> Result<pb::PublishBatchResponse, Error> {
        rpc!(self.topics.publish_batch(req)).await
    }

    /// Creates a function from a zip package (see [`zip_directory`]).
    pub async fn create_function(
        &self,
        req: pb::CreateFunctionRequest,
    ) -> Result<pb::FunctionConfiguration, Error> {
        rpc!(self.functions.create_function(req)).await
    }

    /// A function's configuration.
    pub async fn get_function(&self, name: &str) -> Result<pb::FunctionConfiguration, Error> {
        let req = pb::GetFunctionRequest {
            function_name: name.to_string(),
        };
        rpc!(self.functions.get_function(req))
            .await
            .map(|r| r.configuration.unwrap_or_default())
    }

    /// Every function.
    pub async fn list_functions(&self) -> Result<Vec<pb::FunctionConfiguration>, Error> {
        let mut out = Vec::new();
        let mut marker = String::new();
        loop {
            let req = pb::ListFunctionsRequest {
                marker,
                max_items: 0,
            };
            let r = rpc!(self.functions.list_functions(req)).await?;
            out.extend(r.functions);
            if r.next_marker.is_empty() {
                return Ok(out);
            }
            marker = r.next_marker;
        }
    }

    /// Deletes a function.
    pub async fn delete_function(&self, name: &str) -> Result<(), Error> {
        let req = pb::DeleteFunctionRequest {
            function_name: name.to_string(),
        };
        rpc!(self.functions.delete_function(req)).await.map(|_| ())
    }

    /// Replaces a function's code.
    pub async fn update_function_code(
        &self,
        name: &str,
        zip_file: Vec<u8>,
    ) -> Result<pb::FunctionConfiguration, Error> {
        let req = pb::UpdateFunctionCodeRequest {
            function_name: name.to_string(),
            zip_file,
        };
        rpc!(self.functions.update_function_code(req)).await
    }

    /// Publishes `$LATEST` as a version (or returns the last one when
    /// nothing changed).
    pub async fn publish_version(&self, name: &str) -> Result<pb::FunctionConfiguration, Error> {
        let req = pb::PublishVersionRequest {
            function_name: name.to_string(),
            ..Default::default()
        };
        rpc!(self.functions.publish_version(req)).await
    }

    /// `$LATEST` and every published version.
    pub async fn list_versions(&self, name: &str) -> Result<Vec<pb::FunctionConfiguration>, Error> {
        let req = pb::ListVersionsByFunctionRequest {
            function_name: name.to_string(),
        };
        rpc!(self.functions.list_versions_by_function(req))
            .await
            .map(|r| r.versions)
    }

    /// Creates (`create`) or updates an alias.
    pub async fn put_alias(
        &self,
        req: pb::AliasRequest,
        create: bool,
    ) -> Result<pb::AliasConfiguration, Error> {
        if create {
            rpc!(self.functions.create_alias(req)).await
        } else {
            rpc!(self.functions.update_alias(req)).await
        }
    }

    /// Sets a function's retries and destinations for asynchronous
    /// invocations.
    pub async fn put_event_invoke_config(
        &self,
        req: pb::FunctionEventInvokeConfig,
    ) -> Result<pb::FunctionEventInvokeConfig, Error> {
        rpc!(self.functions.put_function_event_invoke_config(req)).await
    }

    /// A function's aliases.
    pub async fn list_aliases(&self, name: &str) -> Result<Vec<pb::AliasConfiguration>, Error> {
        let req = pb::ListAliasesRequest {
            function_name: name.to_string(),
        };
        rpc!(self.functions.list_aliases(req))
            .await
            .map(|r| r.aliases)
    }

    /// Invokes a function. A function error is an `Ok` reply with
    /// `function_error` set.
    pub async fn invoke(&self, req: pb::InvokeRequest) -> Result<pb::InvokeResponse, Error> {
        // A synchronous invocation may run for the longest function
        // timeout (15 minutes): an attempt is not cut short before.
        self.call_within(INVOKE_ATTEMPT_MAX, |ch| {
            let mut c = clients::functions(ch);
            let r = req.clone();
            async move { c.invoke(r).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// The logs of a function's recent invocations (of one invocation with
    /// `request_id`), newest first, gathered from the live workers.
    pub async fn function_logs(
        &self,
        name: &str,
        request_id: &str,
        limit: u32,
    ) -> Result<Vec<pb::InvocationLog>, Error> {
        let req = pb::GetFunctionLogsRequest {
            function_name: name.to_string(),
            request_id: request_id.to_string(),
            limit,
        };
        rpc!(self.functions.get_function_logs(req))
            .await
            .map(|r| r.logs)
    }

    /// Sets (`Some`) or removes (`None`) a function's reserved concurrency.
    pub async fn put_function_concurrency(
        &self,
        name: &str,
        reserved: Option<u32>,
    ) -> Result<pb::FunctionConcurrency, Error> {
        match reserved {
            Some(n) => {
                let req = pb::FunctionConcurrency {
                    function_name: name.to_string(),
                    reserved_concurrent_executions: Some(n),
                };
                rpc!(self.functions.put_function_concurrency(req)).await
            }
            None => {
                let req = pb::GetFunctionRequest {
                    function_name: name.to_string(),
                };
                rpc!(self.functions.delete_function_concurrency(req)).await
            }
        }
    }

    /// A function's reserved concurrency.
    pub async fn function_concurrency(&self, name: &str) -> Result<Option<u32>, Error> {
        let req = pb::GetFunctionRequest {
            function_name: name.to_string(),
        };
        rpc!(self.functions.get_function_concurrency(req))
            .await
            .map(|r| r.reserved_concurrent_executions)
    }

    /// Sets (`Some`) or removes (`None`) the provisioned concurrency of a
    /// version or alias.
    pub async fn put_provisioned_concurrency(
        &self,
        name: &str,
        qualifier: &str,
        requested: Option<u32>,
    ) -> Result<pb::ProvisionedConcurrencyConfig, Error> {
        let req = pb::ProvisionedConcurrencyConfig {
            function_name: name.to_string(),
            qualifier: qualifier.to_string(),
            requested: requested.unwrap_or(0),
            ..Default::default()
        };
        match requested {
            Some(_) => rpc!(self.functions.put_provisioned_concurrency_config(req)).await,
            None => rpc!(self.functions.delete_provisioned_concurrency_config(req)).await,
        }
    }

    /// The provisioned concurrency of a version or alias, with how many
    /// environments are ready.
    pub async fn provisioned_concurrency(
        &self,
        name: &str,
        qualifier: &str,
    ) -> Result<pb::ProvisionedConcurrencyConfig, Error> {
        let req = pb::ProvisionedConcurrencyConfig {
            function_name: name.to_string(),
            qualifier: qualifier.to_string(),
            ..Default::default()
        };
        rpc!(self.functions.get_provisioned_concurrency_config(req)).await
    }

    /// Creates an event source mapping.
    pub async fn create_event_source_mapping(
        &self,
        req: pb::EventSourceMappingRequest,
    ) -> Result<pb::EventSourceMapping, Error> {
        rpc!(self.functions.create_event_source_mapping(req)).await
    }

    /// Changes an event source mapping's settings (`req.uuid` names it).
    pub async fn update_event_source_mapping(
        &self,
        req: pb::EventSourceMappingRequest,
    ) -> Result<pb::EventSourceMapping, Error> {
        rpc!(self.functions.update_event_source_mapping(req)).await
    }

    /// An event source mapping.
    pub async fn get_event_source_mapping(
        &self,
        uuid: &str,
    ) -> Result<pb::EventSourceMapping, Error> {
        let req = pb::GetEventSourceMappingRequest {
            uuid: uuid.to_string(),
        };
        rpc!(self.functions.get_event_source_mapping(req)).await
    }

    /// Deletes an event source mapping.
    pub async fn delete_event_source_mapping(
        &self,
        uuid: &str,
    ) -> Result<pb::EventSourceMapping, Error> {
        let req = pb::GetEventSourceMappingRequest {
            uuid: uuid.to_string(),
        };
        rpc!(self.functions.delete_event_source_mapping(req)).await
    }

    /// Event source mappings, of one function and/or one source when given
    /// (empty strings: all).
    pub async fn list_event_source_mappings(
        &self,
        function: &str,
        source_arn: &str,
    ) -> Result<Vec<pb::EventSourceMapping>, Error> {
        let req = pb::ListEventSourceMappingsRequest {
            function_name: function.to_string(),
            event_source_arn: source_arn.to_string(),
        };
        rpc!(self.functions.list_event_source_mappings(req))
            .await
            .map(|r| r.event_source_mappings)
    }

    /// The workers registered with the cluster.
    pub async fn list_workers(&self) -> Result<Vec<pb::WorkerInfo>, Error> {
        self.call(|ch| async move {
            WorkersClient::new(ch)
                .list_workers(pb::ListWorkersRequest {})
                .await
                .map(|r| r.into_inner().workers)
        })
        .await
    }

    /// Creates a stream (an identical existing one is returned).
    pub async fn create_stream(
        &self,
        req: pb::CreateStreamRequest,
    ) -> Result<pb::CreateStreamResponse, Error> {
        rpc!(self.streams.create_stream(req)).await
    }

    /// Creates a stream of `shards` shards with the default retention and
    /// throughput limits.
    pub async fn create_stream_with_shards(&self, name: &str, shards: i32) -> Result<(), Error> {
        self.create_stream(pb::CreateStreamRequest {
            stream_name: name.to_string(),
            shard_count: shards,
            ..Default::default()
        })
        .await
        .map(|_| ())
    }

    /// Creates a stream of `shards` shards with no write limit per shard
    /// (the per-shard records and bytes per second set to 0).
    pub async fn create_unthrottled_stream(&self, name: &str, shards: i32) -> Result<(), Error> {
        self.create_stream(pb::CreateStreamRequest {
            stream_name: name.to_string(),
            shard_count: shards,
            shard_write_records_per_second: Some(0),
            shard_write_bytes_per_second: Some(0),
            ..Default::default()
        })
        .await
        .map(|_| ())
    }

    /// Deletes a stream.
    pub async fn delete_stream(&self, name: &str) -> Result<(), Error> {
        let req = pb::DeleteStreamRequest {
            stream_name: name.to_string(),
        };
        rpc!(self.streams.delete_stream(req)).await.map(|_| ())
    }

    /// Stream names.
    pub async fn list_streams(&self) -> Result<Vec<String>, Error> {
        let mut names = Vec::new();
        loop {
            let req = pb::ListStreamsRequest {
                limit: 1000,
                exclusive_start_stream_name: names.last().cloned().unwrap_or_default(),
            };
            let r = rpc!(self.streams.list_streams(req)).await?;
            names.extend(r.stream_names);
            if !r.has_more_streams {
                return Ok(names);
            }
        }
    }

    /// Every shard of a stream, open and closed.
    pub async fn list_shards(&self, stream: &str) -> Result<Vec<pb::Shard>, Error> {
        let mut shards: Vec<pb::Shard> = Vec::new();
        loop {
            let req = pb::ListShardsRequest {
                stream_name: stream.to_string(),
                max_results: 1000,
                exclusive_start_shard_id: String::new(),
                next_token: shards
                    .last()
                    .map(|s| s.shard_id.clone())
                    .unwrap_or_default(),
            };
            let r = rpc!(self.streams.list_shards(req)).await?;
            shards.extend(r.shards);
            if r.next_token.is_empty() {
                return Ok(shards);
            }
        }
    }

    /// The stream's description (first page of shards).
    pub async fn describe_stream(&self, stream: &str) -> Result<pb::StreamDescription, Error> {
        let req = pb::DescribeStreamRequest {
            stream_name: stream.to_string(),
            limit: 10_000,
            exclusive_start_shard_id: String::new(),
        };
        rpc!(self.streams.describe_stream(req))
            .await
            .map(|r| r.stream_description.unwrap_or_default())
    }

    /// Puts one record.
    pub async fn put_record(
        &self,
        req: pb::PutRecordRequest,
    ) -> Result<pb::PutRecordResponse, Error> {
        rpc!(self.streams.put_record(req)).await
    }

    /// Puts up to 500 records; each succeeds or fails on its own.
    pub async fn put_records(
        &self,
        req: pb::PutRecordsRequest,
    ) -> Result<pb::PutRecordsResponse, Error> {
        rpc!(self.streams.put_records(req)).await
    }

    /// A shard iterator.
    pub async fn get_shard_iterator(
        &self,
        req: pb::GetShardIteratorRequest,
    ) -> Result<String, Error> {
        rpc!(self.streams.get_shard_iterator(req))
            .await
            .map(|r| r.shard_iterator)
    }

    /// Records from an iterator.
    pub async fn get_records(
        &self,
        iterator: &str,
        limit: i32,
    ) -> Result<pb::GetRecordsResponse, Error> {
        self.get_records_waiting(iterator, limit, Duration::ZERO)
            .await
    }

    /// Records from an iterator, waiting up to `wait` (at most 20 s) for
    /// one to be appended when there is none yet: a long poll, which
    /// answers as soon as the node applies a record (a Sluice extension).
    pub async fn get_records_waiting(
        &self,
        iterator: &str,
        limit: i32,
        wait: Duration,
    ) -> Result<pb::GetRecordsResponse, Error> {
        let req = pb::GetRecordsRequest {
            shard_iterator: iterator.to_string(),
            limit,
            stream_name: String::new(),
            wait_time_ms: wait.as_millis().min(i32::MAX as u128) as i32,
        };
        self.call_within(self.long_poll_timeout(wait), |ch| {
            let req = req.clone();
            async move {
                clients::streams(ch)
                    .get_records(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Splits a shard.
    pub async fn split_shard(&self, req: pb::SplitShardRequest) -> Result<Vec<String>, Error> {
        rpc!(self.streams.split_shard(req))
            .await
            .map(|r| r.child_shard_ids)
    }

    /// Merges two adjacent shards.
    pub async fn merge_shards(&self, req: pb::MergeShardsRequest) -> Result<String, Error> {
        rpc!(self.streams.merge_shards(req))
            .await
            .map(|r| r.child_shard_id)
    }

    /// Rescales to a number of uniform shards.
    pub async fn update_shard_count(
        &self,
        stream: &str,
        target: i32,
    ) -> Result<pb::UpdateShardCountResponse, Error> {
        let req = pb::UpdateShardCountRequest {
            stream_name: stream.to_string(),
            target_shard_count: target,
            scaling_type: "UNIFORM_SCALING".into(),
        };
        rpc!(self.streams.update_shard_count(req)).await
    }

    /// Changes the retention period (increase or decrease, as the action).
    pub async fn set_stream_retention(
        &self,
        stream: &str,
        hours: i32,
        increase: bool,
    ) -> Result<(), Error> {
        let req = pb::StreamRetentionRequest {
            stream_name: stream.to_string(),
            retention_period_hours: hours,
        };
        if increase {
            rpc!(self.streams.increase_stream_retention_period(req))
                .await
                .map(|_| ())
        } else {
            rpc!(self.streams.decrease_stream_retention_period(req))
                .await
                .map(|_| ())
        }
    }

    /// Registers an enhanced fan-out consumer.
    pub async fn register_stream_consumer(
        &self,
        stream: &str,
        name: &str,
    ) -> Result<pb::Consumer, Error> {
        let req = pb::RegisterStreamConsumerRequest {
            stream_arn: stream.to_string(),
            consumer_name: name.to_string(),
        };
        rpc!(self.streams.register_stream_consumer(req))
            .await
            .map(|r| r.consumer.unwrap_or_default())
    }

    /// Subscribes to a shard: events as records commit, for up to 5
    /// minutes. Not retried once established.
    pub async fn subscribe_to_shard(
        &self,
        req: pb::SubscribeToShardRequest,
    ) -> Result<tonic::Streaming<pb::SubscribeToShardEvent>, Error> {
        self.call(|ch| {
            let req = req.clone();
            async move {
                clients::streams(ch)
                    .subscribe_to_shard(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// The cluster's status, as the leader sees it (or the called node, when
    /// `local`).
    pub async fn cluster_status(&self, local: bool) -> Result<pb::GetClusterStatusResponse, Error> {
        self.call(|ch| async move {
            ClusterClient::new(ch)
                .get_cluster_status(pb::GetClusterStatusRequest { local })
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Adds a learner and waits (bounded) for it to catch up.
    pub async fn add_learner(
        &self,
        node_id: u64,
        address: &str,
    ) -> Result<pb::MembershipResponse, Error> {
        let req = pb::AddLearnerRequest {
            node_id,
            address: address.to_string(),
        };
        self.call(|ch| {
            let req = req.clone();
            async move {
                ClusterClient::new(ch)
                    .add_learner(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Promotes a learner to voter.
    pub async fn promote_learner(&self, node_id: u64) -> Result<pb::MembershipResponse, Error> {
        self.call(|ch| async move {
            ClusterClient::new(ch)
                .promote_learner(pb::PromoteLearnerRequest { node_id })
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Removes a member.
    pub async fn remove_member(&self, node_id: u64) -> Result<pb::MembershipResponse, Error> {
        self.call(|ch| async move {
            ClusterClient::new(ch)
                .remove_member(pb::RemoveMemberRequest { node_id })
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Hands leadership to `to`, or to the most caught-up other voter.
    pub async fn transfer_leadership(
        &self,
        to: Option<u64>,
    ) -> Result<pb::TransferLeadershipResponse, Error> {
        self.call(|ch| async move {
            ClusterClient::new(ch)
                .transfer_leadership(pb::TransferLeadershipRequest { to_node_id: to })
                .await
                .map(|r| r.into_inner())
        })
        .await
    }

    /// Builds a snapshot on the first reachable node of this client.
    pub async fn trigger_snapshot(&self) -> Result<pb::TriggerSnapshotResponse, Error> {
        self.call(|ch| async move {
            ClusterClient::new(ch)
                .trigger_snapshot(pb::TriggerSnapshotRequest {})
                .await
                .map(|r| r.into_inner())
        })
        .await
    }
}
