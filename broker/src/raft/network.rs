//! The client half of the node-to-node transport: openraft's
//! `RaftNetworkFactory` over tonic, and the channel pool the request router
//! shares with it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{
    Fatal, NetworkError, RPCError, RaftError, RemoteError, ReplicationClosed, StreamingError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{AnyError, Snapshot, Vote};
use sluice_proto::internal::raft_client::RaftClient;
use sluice_proto::internal::{RaftPayload, SnapshotChunk};
use sluice_security::signer::{SignedChannel, Signer};
use sluice_security::tls::Connector;
use sluice_security::Credentials;
use tonic::transport::Endpoint;

use super::{Node, NodeId, TypeConfig};
use crate::store::codec;

// openraft 0.9 bounds an AppendEntries batch by its number of entries only,
// and an entry can hold megabytes (PutRecords): past APPEND_BYTES_MAX the
// rest waits for the next call.
use sluice_core::limits::replication::{APPEND_BYTES_MAX, SNAPSHOT_CHUNK};

fn entry_size(e: &openraft::Entry<TypeConfig>) -> usize {
    match &e.payload {
        openraft::EntryPayload::Normal(p) => 64 + p.bytes().len(),
        _ => 256,
    }
}

/// Cuts `entries` to about [`APPEND_BYTES_MAX`] (keeping at least one);
/// returns the log id of the last one kept if it cut anything.
fn cap_entries(entries: &mut Vec<openraft::Entry<TypeConfig>>) -> Option<openraft::LogId<NodeId>> {
    let mut total = 0;
    let keep = entries
        .iter()
        .position(|e| {
            total += entry_size(e);
            total > APPEND_BYTES_MAX
        })
        .map(|i| i.max(1))
        .filter(|k| *k < entries.len())?;
    entries.truncate(keep);
    entries.last().map(|e| e.log_id)
}

/// Lazily connected gRPC channels to other nodes' cluster listeners, by
/// address, each call signed with this node's credential (and over mutual
/// TLS when the cluster has it). A channel reconnects by itself after the
/// peer restarts.
#[derive(Clone)]
pub struct Channels {
    by_addr: Arc<Mutex<HashMap<String, SignedChannel>>>,
    connector: Connector,
    credentials: Credentials,
}

impl Channels {
    /// Channels dialled through `connector`, signed with `credentials`.
    pub fn new(connector: Connector, credentials: Credentials) -> Self {
        Channels {
            by_addr: Arc::default(),
            connector,
            credentials,
        }
    }

    /// Channels of `security`'s node to the other nodes.
    pub fn of(security: &crate::auth::NodeSecurity) -> Self {
        Self::new(
            security.cluster_connector.clone(),
            security.node_credentials.clone(),
        )
    }

    /// The channel to `addr` (`host:port`).
    pub fn get(&self, addr: &str) -> Result<SignedChannel, String> {
        // A name the override file lists is dialled at its address there,
        // looked up again on every call so a peer that moved is followed;
        // any other name is resolved by the system at each connection.
        let dial = crate::discovery::dialable(addr);
        let mut map = self.by_addr.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = map.get(dial.as_ref()) {
            return Ok(c.clone());
        }
        let endpoint = Endpoint::from_shared(format!("http://{dial}"))
            .map_err(|e| format!("invalid node address {addr:?}: {e}"))?
            .connect_timeout(Duration::from_millis(500))
            .http2_keep_alive_interval(Duration::from_secs(5))
            .keep_alive_timeout(Duration::from_secs(5))
            .keep_alive_while_idle(true);
        let channel = Signer::new(
            self.connector.channel(endpoint),
            Some(self.credentials.clone()),
            "cluster",
        );
        map.insert(dial.into_owned(), channel.clone());
        Ok(channel)
    }
}

/// True when a call failed before reaching the peer (nothing was sent), so
/// the peer is down rather than slow.
pub fn is_connect_error(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::HostUnreachable
                    | std::io::ErrorKind::NetworkUnreachable
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("tcp connect error") || text.contains("connection refused") {
            return true;
        }
        source = e.source();
    }
    false
}

/// Creates a [`PeerClient`] per replication target.
#[derive(Clone)]
pub struct Network {
    channels: Channels,
}

impl Network {
    /// A network sharing `channels`.
    pub fn new(channels: Channels) -> Self {
        Network { channels }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Node) -> Self::Network {
        PeerClient {
            target,
            addr: node.addr.clone(),
            channels: self.channels.clone(),
            round_trips: metrics::histogram!("sluice_replication_seconds", "peer" => target.to_string()),
        }
    }
}

/// The Raft transport to one peer.
pub struct PeerClient {
    target: NodeId,
    addr: String,
    /// Asked for the channel at every call, not once: a peer known by a
    /// name that moved (a rescheduled pod) is then followed.
    channels: Channels,
    /// Round trips of AppendEntries that carry entries.
    round_trips: metrics::Histogram,
}

fn transport_error<E: std::error::Error>(status: tonic::Status) -> RPCError<NodeId, Node, E> {
    if is_connect_error(&status) {
        RPCError::Unreachable(Unreachable::new(&status))
    } else {
        RPCError::Network(NetworkError::new(&status))
    }
}

impl PeerClient {
    fn client<E: std::error::Error>(
        &self,
    ) -> Result<RaftClient<SignedChannel>, RPCError<NodeId, Node, E>> {
        self.channels
            .get(&self.addr)
            .map(RaftClient::new)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&AnyError::error(e))))
    }

    async fn call<Req, Resp, E, F, Fut>(
        &self,
        what: &str,
        req: &Req,
        ttl: Duration,
        rpc: F,
    ) -> Result<Resp, RPCError<NodeId, Node, RaftError<NodeId, E>>>
    where
        Req: serde::Serialize,
        Resp: serde::de::DeserializeOwned,
        E: std::error::Error + serde::de::DeserializeOwned,
        F: FnOnce(RaftClient<SignedChannel>, tonic::Request<RaftPayload>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftPayload>, tonic::Status>>,
    {
        let client = self.client()?;
        let mut request = tonic::Request::new(RaftPayload {
            data: codec::encode(req),
        });
        request.set_timeout(ttl);
        let reply = rpc(client, request).await.map_err(transport_error)?;
        let result: Result<Resp, RaftError<NodeId, E>> =
            codec::decode_message(what, &reply.into_inner().data)
                .map_err(|e| RPCError::Network(NetworkError::new(&AnyError::error(e))))?;
        result.map_err(|e| {
            RPCError::RemoteError(RemoteError::new_with_node(
                self.target,
                Node::new(self.addr.clone()),
                e,
            ))
        })
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        let cut = cap_entries(&mut rpc.entries);
        // Heartbeats (no entries) would hide what replication costs.
        let started = (!rpc.entries.is_empty()).then(std::time::Instant::now);
        let reply = self
            .call(
                "append-entries reply",
                &rpc,
                option.hard_ttl(),
                |mut c, r| async move { c.append_entries(r).await },
            )
            .await?;
        if let Some(t) = started {
            self.round_trips.record(t.elapsed().as_secs_f64());
        }
        // The follower took what was sent; tell openraft how far that was.
        Ok(match (reply, cut) {
            (AppendEntriesResponse::Success, Some(last)) => {
                AppendEntriesResponse::PartialSuccess(Some(last))
            }
            (reply, _) => reply,
        })
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Node, RaftError<NodeId>>> {
        self.call(
            "vote reply",
            &rpc,
            option.hard_ttl(),
            |mut c, r| async move { c.vote(r).await },
        )
        .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote<NodeId>,
        snapshot: Snapshot<TypeConfig>,
        cancel: impl Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<NodeId>, StreamingError<TypeConfig, Fatal<NodeId>>> {
        let mut client = self.client::<Fatal<NodeId>>().map_err(|_| {
            StreamingError::Unreachable(Unreachable::new(&AnyError::error("bad address")))
        })?;
        let file = *snapshot.snapshot;
        let header = codec::encode(&(vote, snapshot.meta.clone()));
        tracing::info!(target = self.target, snapshot = %snapshot.meta, "sending snapshot");
        let (tx, rx) = tokio::sync::mpsc::channel::<SnapshotChunk>(4);
        // Streams the file, with the bodies it only references read from
        // this node's log, into the request; stops when the call ends.
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let reader = tokio::task::spawn_blocking(move || {
            let ended = tx.clone();
            let first = SnapshotChunk {
                header,
                data: Vec::new(),
            };
            if tx.blocking_send(first).is_err() {
                return Ok(());
            }
            let sent = file.send_to(Chunks::new(tx, stopped.clone()));
            match sent {
                // The call ended first: its reply says what happened.
                Err(_) if ended.is_closed() || stopped.load(Ordering::Relaxed) => Ok(()),
                sent => sent.map(drop),
            }
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let reply = tokio::select! {
            closed = cancel => {
                // A blocking task cannot be aborted: it stops at its next
                // chunk.
                stop.store(true, Ordering::Relaxed);
                return Err(StreamingError::Closed(closed));
            }
            reply = client.install_snapshot(stream) => reply,
        };
        stop.store(true, Ordering::Relaxed);
        match reader.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(StreamingError::Network(NetworkError::new(&e))),
            Err(e) => return Err(StreamingError::Network(NetworkError::new(&e))),
        }
        let reply = reply.map_err(|status| {
            if is_connect_error(&status) {
                StreamingError::Unreachable(Unreachable::new(&status))
            } else {
                StreamingError::Network(NetworkError::new(&status))
            }
        })?;
        let result: Result<SnapshotResponse<NodeId>, Fatal<NodeId>> =
            codec::decode_message("snapshot reply", &reply.into_inner().data)
                .map_err(|e| StreamingError::Network(NetworkError::new(&AnyError::error(e))))?;
        result.map_err(|e| {
            StreamingError::RemoteError(RemoteError::new_with_node(
                self.target,
                Node::new(self.addr.clone()),
                e,
            ))
        })
    }
}

/// The request stream of a snapshot call as a [`std::io::Write`]: bytes go
/// out in chunks of [`SNAPSHOT_CHUNK`]. Call only off the async runtime.
/// Writes fail once the call has ended or `stop` is set.
struct Chunks {
    tx: tokio::sync::mpsc::Sender<SnapshotChunk>,
    buf: Vec<u8>,
    stop: Arc<AtomicBool>,
}

impl Chunks {
    fn new(tx: tokio::sync::mpsc::Sender<SnapshotChunk>, stop: Arc<AtomicBool>) -> Self {
        Chunks {
            tx,
            buf: Vec::with_capacity(SNAPSHOT_CHUNK),
            stop,
        }
    }

    fn send(&mut self) -> std::io::Result<()> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the snapshot send was stopped",
            ));
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(SNAPSHOT_CHUNK));
        self.tx
            .blocking_send(SnapshotChunk {
                header: Vec::new(),
                data,
            })
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the snapshot call ended")
            })
    }
}

impl std::io::Write for Chunks {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        let n = bytes.len().min(SNAPSHOT_CHUNK - self.buf.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == SNAPSHOT_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{Command, Proposal};
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    fn entry(index: u64, bytes: usize) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(crate::raft::payload::Payload::new(Proposal {
                time_ms: 0,
                commands: vec![Command::PutRecords(crate::streams::PutRecords {
                    stream: "s".into(),
                    records: vec![crate::streams::records::NewRecord {
                        data: vec![0; bytes],
                        partition_key: "k".into(),
                        hash_key: 0,
                    }],
                })],
            })),
        }
    }

    /// Chunks go out at `SNAPSHOT_CHUNK` bytes but the last, in order;
    /// once the call has ended, or the send is stopped, writes fail.
    #[test]
    fn chunks_cut_a_stream_and_stop_when_told_or_when_the_call_ends() {
        use std::io::Write;
        let bytes: Vec<u8> = (0..SNAPSHOT_CHUNK * 5 / 2).map(|i| i as u8).collect();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let stop = Arc::new(AtomicBool::new(false));
        let mut out = Chunks::new(tx, stop.clone());
        for piece in bytes.chunks(1000) {
            out.write_all(piece).unwrap();
        }
        out.flush().unwrap();
        drop(out);
        let mut got = Vec::new();
        let mut sizes = Vec::new();
        while let Ok(c) = rx.try_recv() {
            sizes.push(c.data.len());
            got.extend(c.data);
        }
        assert_eq!(sizes, [SNAPSHOT_CHUNK, SNAPSHOT_CHUNK, SNAPSHOT_CHUNK / 2]);
        assert_eq!(got, bytes);

        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let mut out = Chunks::new(tx, stop.clone());
        drop(rx);
        let err = out.write_all(&bytes).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe);

        let (tx, _rx) = tokio::sync::mpsc::channel(8);
        let mut out = Chunks::new(tx, stop.clone());
        stop.store(true, Ordering::Relaxed);
        let err = out.write_all(&bytes).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::BrokenPipe, "{err}");
    }

    #[test]
    fn large_batches_are_cut_to_the_byte_budget_keeping_at_least_one() {
        let mut small: Vec<_> = (1..=10).map(|i| entry(i, 1000)).collect();
        assert_eq!(cap_entries(&mut small), None);
        assert_eq!(small.len(), 10);

        let mut big: Vec<_> = (1..=10).map(|i| entry(i, 3 << 20)).collect();
        let last = cap_entries(&mut big).unwrap();
        assert_eq!(big.len(), 2, "two 3 MiB entries fit in 8 MiB");
        assert_eq!(last.index, 2);

        let mut huge = vec![entry(1, 20 << 20), entry(2, 1)];
        assert_eq!(
            cap_entries(&mut huge).unwrap().index,
            1,
            "one entry always goes"
        );
        assert_eq!(huge.len(), 1);
    }
}
