//! The worker's connection to the cluster: any broker node answers, so
//! calls go to the last node that answered and move on to the next one
//! when it does not.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_proto::v1 as pb;
use sluice_proto::v1::functions_client::FunctionsClient;
use sluice_proto::v1::queues_client::QueuesClient;
use sluice_proto::v1::streams_client::StreamsClient;
use sluice_proto::v1::topics_client::TopicsClient;
use sluice_proto::v1::workers_client::WorkersClient;
use sluice_proto::v1::{GetCodeRequest, HeartbeatRequest, HeartbeatResponse, LeaveRequest};
use sluice_security::signer::{SignedChannel, Signer};
use sluice_security::tls::Connector;
use sluice_security::Credentials;
use tonic::transport::Endpoint;

/// Largest message exchanged with the cluster: a code package.
pub use sluice_core::limits::requests::WORKER_MESSAGE_MAX as MESSAGE_MAX;
/// Longest wait for one node's answer (a long poll takes 20 s).
const ATTEMPT_MAX: Duration = Duration::from_secs(40);
/// Longest wait for one node's answer to a short call.
const SHORT_MAX: Duration = Duration::from_secs(15);
/// The deadline a node is given for a short call (the server side of
/// [`SHORT_MAX`]).
const CALL_DEADLINE: Duration = Duration::from_secs(10);

/// `message` as a request the node must answer within `deadline`.
fn within<T>(message: T, deadline: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(message);
    req.set_timeout(deadline);
    req
}

/// Broker nodes to call, tried in turn.
pub struct ClusterLink {
    nodes: Vec<(String, SignedChannel)>,
    current: AtomicUsize,
}

impl ClusterLink {
    /// A link to the nodes at `addrs` (`host:port`), dialled through
    /// `connector`, each call signed with `credentials` (none: the cluster
    /// takes anonymous calls); connections are made on first use.
    pub fn new(
        addrs: &[String],
        connector: &Connector,
        credentials: Option<Credentials>,
    ) -> Result<ClusterLink, String> {
        if addrs.is_empty() {
            return Err("no cluster address given".into());
        }
        let nodes = addrs
            .iter()
            .map(|a| {
                let endpoint = Endpoint::from_shared(format!("http://{a}"))
                    .map_err(|e| format!("bad cluster address {a:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    // A node that went silent is found out; each call is
                    // bounded on its own (an invocation may take 15 min).
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .keep_alive_while_idle(true);
                let channel =
                    Signer::new(connector.channel(endpoint), credentials.clone(), "cluster");
                Ok((a.clone(), channel))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(ClusterLink {
            nodes,
            current: AtomicUsize::new(0),
        })
    }

    /// Runs `call` on the nodes in turn, from the last one that answered,
    /// until one answers; the last error when none does. An answer that is
    /// an error of the call itself (not of the node: see
    /// [`sluice_proto::is_retryable`]) is returned at once.
    async fn on_nodes<T, F, Fut>(&self, call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(SignedChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.on_nodes_within(ATTEMPT_MAX, call).await
    }

    /// Like [`ClusterLink::on_nodes`], each attempt given up after `limit`
    /// (a request's deadline binds the node that receives it, not a
    /// connection that stopped carrying answers).
    async fn on_nodes_within<T, F, Fut>(
        &self,
        limit: Duration,
        mut call: F,
    ) -> Result<T, tonic::Status>
    where
        F: FnMut(SignedChannel) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        let start = self.current.load(Ordering::Relaxed);
        let mut last = tonic::Status::unavailable("no cluster node answered");
        for k in 0..self.nodes.len() {
            let i = (start + k) % self.nodes.len();
            let attempt = tokio::time::timeout(limit, call(self.nodes[i].1.clone()));
            let answer = attempt.await.unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {limit:?}"
                )))
            });
            match answer {
                Ok(v) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Err(e) if !sluice_proto::is_retryable(&e) => return Err(e),
                Err(e) => {
                    tracing::debug!(node = %self.nodes[i].0, error = %e, "cluster node did not answer");
                    last = e;
                }
            }
        }
        Err(last)
    }

    /// Like [`ClusterLink::on_nodes`], with a `Workers` client.
    async fn each<T, F, Fut>(&self, mut call: F) -> Result<T, tonic::Status>
    where
        F: FnMut(WorkersClient<SignedChannel>) -> Fut,
        Fut: std::future::Future<Output = Result<T, tonic::Status>>,
    {
        self.on_nodes(|ch| call(WorkersClient::new(ch).max_decoding_message_size(MESSAGE_MAX)))
            .await
    }

    /// Receives up to `max` messages from `queue`, waiting up to `wait_s`
    /// seconds for the first, with every attribute.
    pub async fn receive(
        &self,
        queue: &str,
        max: u32,
        wait_s: u32,
    ) -> Result<Vec<pb::Message>, tonic::Status> {
        self.on_nodes(|ch| {
            let req = pb::ReceiveMessageRequest {
                queue_name: queue.to_string(),
                message_system_attribute_names: vec!["All".into()],
                message_attribute_names: vec!["All".into()],
                max_number_of_messages: max.clamp(1, 10) as i32,
                wait_time_seconds: Some(wait_s.min(20) as i32),
                ..Default::default()
            };
            let req = within(req, Duration::from_secs(u64::from(wait_s.min(20)) + 10));
            async move {
                QueuesClient::new(ch)
                    .max_decoding_message_size(MESSAGE_MAX)
                    .receive_message(req)
                    .await
                    .map(|r| r.into_inner().messages)
            }
        })
        .await
    }

    /// Deletes messages by receipt handle (up to 10); the failed entries'
    /// ids.
    pub async fn delete(
        &self,
        queue: &str,
        handles: Vec<(String, String)>,
    ) -> Result<Vec<String>, tonic::Status> {
        self.on_nodes(|ch| {
            let req = pb::DeleteMessageBatchRequest {
                queue_name: queue.to_string(),
                entries: handles
                    .iter()
                    .map(|(id, receipt_handle)| pb::DeleteMessageBatchRequestEntry {
                        id: id.clone(),
                        receipt_handle: receipt_handle.clone(),
                    })
                    .collect(),
            };
            let req = within(req, Duration::from_secs(30));
            async move {
                QueuesClient::new(ch)
                    .delete_message_batch(req)
                    .await
                    .map(|r| r.into_inner().failed.into_iter().map(|f| f.id).collect())
            }
        })
        .await
    }

    /// An iterator over `shard` of `stream` (`kind`: a GetShardIterator
    /// type, with its sequence number or timestamp).
    pub async fn shard_iterator(
        &self,
        stream: &str,
        shard: &str,
        kind: &str,
        sequence_number: &str,
        timestamp_ms: i64,
    ) -> Result<String, tonic::Status> {
        self.on_nodes_within(SHORT_MAX, |ch| {
            let req = within(
                pb::GetShardIteratorRequest {
                    stream_name: stream.to_string(),
                    shard_id: shard.to_string(),
                    shard_iterator_type: kind.to_string(),
                    starting_sequence_number: sequence_number.to_string(),
                    timestamp: timestamp_ms,
                },
                CALL_DEADLINE,
            );
            async move {
                StreamsClient::new(ch)
                    .get_shard_iterator(req)
                    .await
                    .map(|r| r.into_inner().shard_iterator)
            }
        })
        .await
    }

    /// Up to `limit` records from `iterator` (served by the node's own
    /// applied state), waiting up to `wait` for one when there is none yet.
    pub async fn get_records(
        &self,
        iterator: &str,
        limit: u32,
        wait: Duration,
    ) -> Result<pb::GetRecordsResponse, tonic::Status> {
        self.on_nodes_within(SHORT_MAX + wait, |ch| {
            let req = within(
                pb::GetRecordsRequest {
                    shard_iterator: iterator.to_string(),
                    limit: limit as i32,
                    wait_time_ms: wait.as_millis().min(i32::MAX as u128) as i32,
                    ..Default::default()
                },
                CALL_DEADLINE + wait,
            );
            async move {
                StreamsClient::new(ch)
                    .max_decoding_message_size(MESSAGE_MAX)
                    .get_records(req)
                    .await
                    .map(|r| r.into_inner())
            }
        })
        .await
    }

    /// Sends one message to `queue` (an on-failure record).
    pub async fn send_message(&self, queue: &str, body: &str) -> Result<(), tonic::Status> {
        self.on_nodes(|ch| {
            let req = within(
                pb::SendMessageRequest {
                    queue_name: queue.to_string(),
                    message_body: body.to_string(),
                    ..Default::default()
                },
                CALL_DEADLINE,
            );
            async move { QueuesClient::new(ch).send_message(req).await.map(|_| ()) }
        })
        .await
    }

    /// Publishes one message to the topic `topic_arn` (an on-failure
    /// record).
    pub async fn publish(&self, topic_arn: &str, message: &str) -> Result<(), tonic::Status> {
        self.on_nodes(|ch| {
            let req = within(
                pb::PublishRequest {
                    topic_arn: topic_arn.to_string(),
                    message: message.to_string(),
                    ..Default::default()
                },
                CALL_DEADLINE,
            );
            async move { TopicsClient::new(ch).publish(req).await.map(|_| ()) }
        })
        .await
    }

    /// Moves a stream mapping's checkpoint under the slot's lease.
    pub async fn commit_checkpoint(
        &self,
        req: pb::CommitCheckpointRequest,
    ) -> Result<(), tonic::Status> {
        self.each(|mut c| {
            let r = within(req.clone(), CALL_DEADLINE);
            async move { c.commit_checkpoint(r).await.map(|_| ()) }
        })
        .await
    }

    /// Records a mapping's `LastProcessingResult`.
    pub async fn report_result(
        &self,
        function: &str,
        uuid: &str,
        result: &str,
    ) -> Result<(), tonic::Status> {
        self.each(|mut c| {
            let r = within(
                pb::ReportMappingResultRequest {
                    function_name: function.to_string(),
                    mapping_uuid: uuid.to_string(),
                    result: result.to_string(),
                },
                CALL_DEADLINE,
            );
            async move { c.report_mapping_result(r).await.map(|_| ()) }
        })
        .await
    }

    /// Invokes `function` synchronously with `payload`, once: a node lost
    /// mid-call may have run it, so it is not tried on another (the
    /// caller's batch comes back instead). Given up after `limit` (the
    /// function's timeout and the time to start it).
    pub async fn invoke(
        &self,
        function: &str,
        payload: Vec<u8>,
        limit: Duration,
    ) -> Result<pb::InvokeResponse, tonic::Status> {
        let i = self.current.load(Ordering::Relaxed) % self.nodes.len();
        let node = self.nodes[i].1.clone();
        let once = |ch: SignedChannel| {
            let mut req = tonic::Request::new(pb::InvokeRequest {
                function_name: function.to_string(),
                invocation_type: "RequestResponse".into(),
                payload: payload.clone(),
                ..Default::default()
            });
            // The longest function timeout and time to start it.
            req.set_timeout(limit);
            // The function as the node knows it: the poller learnt of it
            // from the same state, and a linearizable lookup would wait,
            // under load, for the writes in flight to commit.
            req.metadata_mut().insert(
                sluice_proto::CONSISTENCY_HEADER,
                tonic::metadata::MetadataValue::from_static("local"),
            );
            async move {
                FunctionsClient::new(ch)
                    .max_decoding_message_size(MESSAGE_MAX)
                    .max_encoding_message_size(MESSAGE_MAX)
                    .invoke(req)
                    .await
                    .map(|r| r.into_inner())
            }
        };
        let answer = tokio::time::timeout(limit, once(node))
            .await
            .unwrap_or_else(|_| {
                Err(tonic::Status::deadline_exceeded(format!(
                    "no answer within {limit:?}"
                )))
            });
        if answer.is_err() {
            // The next call starts from another node.
            self.current.store(i + 1, Ordering::Relaxed);
        }
        answer
    }

    /// Sends a heartbeat.
    pub async fn heartbeat(
        &self,
        req: HeartbeatRequest,
    ) -> Result<HeartbeatResponse, tonic::Status> {
        self.each(|mut c| {
            let req = req.clone();
            async move { c.heartbeat(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Deregisters the worker (within 5 s: it runs at shutdown).
    pub async fn leave(&self, worker_id: &str) -> Result<(), tonic::Status> {
        let leave = self.each(|mut c| {
            let req = LeaveRequest {
                worker_id: worker_id.to_string(),
            };
            async move { c.leave(req).await.map(|_| ()) }
        });
        tokio::time::timeout(Duration::from_secs(5), leave)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer within 5 s")))
    }

    /// Fetches a code package (within a minute: it holds the worker's
    /// unpack lock).
    pub async fn code(&self, sha256: &str) -> Result<Vec<u8>, String> {
        let fetch = self.each(|mut c| {
            let req = GetCodeRequest {
                sha256: sha256.to_string(),
            };
            async move { c.get_code(req).await.map(|r| r.into_inner().zip) }
        });
        tokio::time::timeout(Duration::from_secs(60), fetch)
            .await
            .unwrap_or_else(|_| Err(tonic::Status::deadline_exceeded("no answer within 60 s")))
            .map_err(|e| format!("fetching the code from the cluster: {}", e.message()))
    }
}
