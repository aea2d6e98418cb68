//! One request must not make a node fall over: hostile requests of every
//! batch RPC, each as large as the node reads and holding as many empty
//! entries as fit (two bytes each on the wire, hundreds of bytes decoded),
//! sent ten at a time to a node held to 1 GiB of memory.

use std::collections::HashMap;
use std::time::Duration;

use bytes::BufMut;
use cluster_tests::elected_cluster;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::{Code, Status};

/// Sends and receives message bytes as they are: requests no client
/// library would build.
#[derive(Clone, Copy)]
struct Raw;

impl Encoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Vec<u8>;
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        use bytes::Buf;
        let mut out = vec![0; src.remaining()];
        src.copy_to_slice(&mut out);
        Ok(Some(out))
    }
}

impl Codec for Raw {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

async fn call(addr: &str, path: &'static str, body: Vec<u8>) -> Result<Vec<u8>, Status> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let mut grpc = tonic::client::Grpc::new(channel)
        .max_encoding_message_size(usize::MAX)
        .max_decoding_message_size(usize::MAX);
    grpc.ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    grpc.unary(
        tonic::Request::new(body),
        PathAndQuery::from_static(path),
        Raw,
    )
    .await
    .map(|r| r.into_inner())
}

/// `n` bytes of empty entries of field 2 after a name in field 1.
fn empty_entries(name: &[u8], n: usize) -> Vec<u8> {
    let mut body = vec![0x0a, name.len() as u8];
    body.extend_from_slice(name);
    while body.len() + 2 <= n {
        body.extend_from_slice(&[0x12, 0x00]);
    }
    body
}

/// The largest message `path` takes, from its refusal of a larger one.
async fn limit_of(addr: &str, path: &'static str) -> usize {
    let refused = call(addr, path, vec![0; 17 << 20]).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    let message = refused.message();
    message
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no limit in {message:?}"))
}

/// Puts `pid` in a new memory cgroup held to `bytes`, where the machine
/// has one to give (v2 or v1); returns its directory.
fn memory_cgroup(pid: u32, bytes: u64) -> Option<std::path::PathBuf> {
    let v2 = std::path::Path::new("/sys/fs/cgroup");
    let v2_memory = std::fs::read_to_string(v2.join("cgroup.controllers"))
        .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"));
    let (dir, limit_file) = if v2_memory {
        (v2.join(format!("sluice-limits-{pid}")), "memory.max")
    } else {
        (
            std::path::Path::new("/sys/fs/cgroup/memory").join(format!("sluice-limits-{pid}")),
            "memory.limit_in_bytes",
        )
    };
    std::fs::create_dir(&dir).ok()?;
    let placed = std::fs::write(dir.join(limit_file), bytes.to_string())
        .and_then(|()| std::fs::write(dir.join("cgroup.procs"), pid.to_string()));
    if placed.is_err() {
        let _ = std::fs::remove_dir(&dir);
        return None;
    }
    Some(dir)
}

/// The peak resident memory of `pid`, bytes.
fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    kb * 1024
}

#[tokio::test(flavor = "multi_thread")]
async fn a_node_held_to_one_gib_survives_ten_concurrent_maximal_hostile_requests_of_every_batch_rpc(
) {
    let (_serial, mut c, _) = elected_cluster(1, &[]).await;
    let addr = c.nodes[&1].addr.clone();
    let pid = c.node(1).pid().unwrap();
    let cgroup = memory_cgroup(pid, 1 << 30);
    eprintln!("memory cgroup: {cgroup:?}");
    let client = c.node(1).client(Duration::from_secs(20));
    client.create_queue("q", HashMap::new()).await.unwrap();
    client.create_stream_with_shards("s", 1).await.unwrap();
    let topic = client.create_topic("t", HashMap::new()).await.unwrap();

    let rpcs: [(&'static str, Vec<u8>); 5] = [
        ("/sluice.v1.Queues/SendMessageBatch", b"q".to_vec()),
        ("/sluice.v1.Queues/DeleteMessageBatch", b"q".to_vec()),
        (
            "/sluice.v1.Queues/ChangeMessageVisibilityBatch",
            b"q".to_vec(),
        ),
        ("/sluice.v1.Topics/PublishBatch", topic.into_bytes()),
        ("/sluice.v1.Streams/PutRecords", b"s".to_vec()),
    ];
    let mut calls = Vec::new();
    for (path, name) in &rpcs {
        let limit = limit_of(&addr, path).await;
        assert!(limit < 16 << 20, "{path}: {limit}");
        let body = empty_entries(name, limit);
        for _ in 0..10 {
            let (addr, body) = (addr.clone(), body.clone());
            let path: &'static str = path;
            calls.push(tokio::spawn(async move {
                (path, call(&addr, path, body).await)
            }));
        }
    }
    for call in calls {
        let (path, result) = call.await.unwrap();
        let refused = result.expect_err(path);
        assert!(
            matches!(
                refused.code(),
                Code::InvalidArgument | Code::ResourceExhausted
            ),
            "{path}: {refused:?}"
        );
        let code = refused
            .metadata()
            .get("sluice-error-code")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        assert!(
            code == "MalformedRequest" || code == "RequestMemoryExhausted",
            "{path}: {code} {refused:?}"
        );
        assert!(refused.message().len() < 300, "{path}: a short message");
    }
    assert!(c.node(1).is_running(), "the node survived");
    let peak = peak_rss(pid);
    eprintln!("peak RSS of the node: {} MiB", peak >> 20);
    assert!(peak < 1 << 30, "peak RSS {peak}");
    // And it still serves.
    client.send_body("q", "after").await.unwrap();
    c.node(1).kill9();
    if let Some(dir) = cgroup {
        let _ = std::fs::remove_dir(dir);
    }
}
