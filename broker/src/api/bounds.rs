//! What one request may make a node hold. The guard layer checks these
//! before a handler decodes anything, so that no request costs a node more
//! than a small multiple of its legal size (a 16 MiB `SendMessageBatch` of
//! 8.4 million empty entries once took 1.6 GB to decode):
//!
//! * **bytes**: each RPC takes messages up to its largest legal request
//!   ([`byte_limit`]: a batch of ten 1 MiB messages, a 5 MiB `PutRecords`,
//!   1 MiB for calls that carry no payload);
//! * **shape**: the message is walked on the wire against its descriptor,
//!   without decoding it. More than [`ELEMENTS_MAX`] nested messages and
//!   repeated elements (what turns into allocations when decoded), nesting
//!   deeper than [`DEPTH_MAX`], a field of the wrong wire type, a string
//!   that is not UTF-8 or a malformed encoding is refused with
//!   `INVALID_ARGUMENT` naming the field, instead of failing in the decoder
//!   (which answers `INTERNAL` without a code);
//! * **in flight**: the bytes of every request the node is serving at once
//!   stay within a budget (`--request-memory`); past it, calls are refused
//!   with `RESOURCE_EXHAUSTED` (`RequestMemoryExhausted`) and may be retried.

use std::collections::HashMap;
use std::sync::Arc;

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use tonic::Status;

use super::status;

/// Nested messages and repeated elements one request may hold. The largest
/// legal request, `PutRecords`, holds 500 records.
pub const ELEMENTS_MAX: usize = 10_000;
/// Deepest nesting of messages in a request.
pub const DEPTH_MAX: usize = 16;
pub use sluice_core::limits::requests::DEFAULT_BYTES;
use sluice_core::limits::requests::{PUBLIC_MESSAGE_MAX, SLACK};

/// The largest message the RPC `method` of `service` takes.
pub fn byte_limit(service: &str, method: &str) -> usize {
    use sluice_core::limits::{functions, queues, streams, topics};
    match (service, method) {
        // Each message of a stream is held to this limit on its own.
        ("sluice.v1.Queues", "SendMessage" | "SendMessageStream") => {
            queues::MESSAGE_BYTES_MAX + SLACK
        }
        ("sluice.v1.Queues", "SendMessageBatch") => {
            queues::BATCH_MAX * queues::MESSAGE_BYTES_MAX + SLACK
        }
        ("sluice.v1.Topics", "Publish" | "PublishStream") => topics::MESSAGE_BYTES_MAX + SLACK,
        ("sluice.v1.Topics", "PublishBatch") => {
            topics::BATCH_MAX * topics::MESSAGE_BYTES_MAX + SLACK
        }
        ("sluice.v1.Streams", "PutRecord" | "PutRecordStream") => {
            streams::RECORD_BYTES_MAX as usize + SLACK
        }
        // Partition keys and hash keys come on top of the data.
        ("sluice.v1.Streams", "PutRecords") => streams::PUT_BYTES_MAX + streams::PUT_KEYS_BYTES,
        ("sluice.v1.Functions", "Invoke") => functions::INVOKE_PAYLOAD_MAX + SLACK,
        ("sluice.v1.Functions", "CreateFunction" | "UpdateFunctionCode") => PUBLIC_MESSAGE_MAX,
        // Invocation results and logs come back through the workers API.
        ("sluice.v1.Workers", _) => PUBLIC_MESSAGE_MAX,
        _ => DEFAULT_BYTES,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Message(usize),
    String,
    Bytes,
    Varint,
    Fixed64,
    Fixed32,
}

#[derive(Debug, Clone)]
struct Field {
    name: String,
    kind: Kind,
    repeated: bool,
}

#[derive(Debug, Default)]
struct Shape {
    fields: HashMap<u32, Field>,
}

/// The request shapes of every RPC, from the proto descriptors.
#[derive(Debug)]
pub struct Bounds {
    shapes: Vec<Shape>,
    /// `/package.Service/Method` → (byte limit, input shape).
    rpcs: HashMap<String, (usize, usize)>,
    /// The RPCs whose request is a stream of messages.
    streamed: std::collections::HashSet<String>,
    memory: Arc<tokio::sync::Semaphore>,
    memory_max: usize,
}

/// What a request may not be.
#[derive(Debug, PartialEq, Eq)]
struct Violation {
    field: String,
    rule: String,
}

fn violation(path: &[&str], rule: impl Into<String>) -> Violation {
    Violation {
        field: if path.is_empty() {
            "request".into()
        } else {
            path.join(".")
        },
        rule: rule.into(),
    }
}

fn varint(bytes: &[u8], at: &mut usize) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *bytes.get(*at)?;
        *at += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

impl Bounds {
    /// Builds the shapes of every RPC in `descriptors` (an encoded
    /// `FileDescriptorSet`), with `memory` bytes of requests in flight.
    pub fn build(descriptors: &[u8], memory: usize) -> Bounds {
        let fds = prost_types::FileDescriptorSet::decode(descriptors)
            .expect("the generated descriptor set decodes");
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut protos = Vec::new();
        fn collect<'a>(
            prefix: &str,
            message: &'a prost_types::DescriptorProto,
            index: &mut HashMap<String, usize>,
            protos: &mut Vec<&'a prost_types::DescriptorProto>,
        ) {
            let name = format!("{prefix}.{}", message.name());
            index.insert(name.clone(), protos.len());
            protos.push(message);
            for nested in &message.nested_type {
                collect(&name, nested, index, protos);
            }
        }
        for file in &fds.file {
            for m in &file.message_type {
                collect(&format!(".{}", file.package()), m, &mut index, &mut protos);
            }
        }
        let shapes = protos
            .iter()
            .map(|m| Shape {
                fields: m
                    .field
                    .iter()
                    .map(|f| {
                        let kind = match f.r#type() {
                            Type::Message | Type::Group => Kind::Message(
                                *index
                                    .get(f.type_name())
                                    .unwrap_or_else(|| panic!("unknown type {}", f.type_name())),
                            ),
                            Type::String => Kind::String,
                            Type::Bytes => Kind::Bytes,
                            Type::Double | Type::Fixed64 | Type::Sfixed64 => Kind::Fixed64,
                            Type::Float | Type::Fixed32 | Type::Sfixed32 => Kind::Fixed32,
                            _ => Kind::Varint,
                        };
                        (
                            f.number() as u32,
                            Field {
                                name: f.name().to_string(),
                                kind,
                                repeated: f.label() == Label::Repeated,
                            },
                        )
                    })
                    .collect(),
            })
            .collect();
        let mut rpcs = HashMap::new();
        let mut streamed = std::collections::HashSet::new();
        for file in &fds.file {
            for service in &file.service {
                let full = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    let input = *index
                        .get(method.input_type())
                        .unwrap_or_else(|| panic!("unknown type {}", method.input_type()));
                    let path = format!("/{full}/{}", method.name());
                    if method.client_streaming() {
                        streamed.insert(path.clone());
                    }
                    rpcs.insert(path, (byte_limit(&full, method.name()), input));
                }
            }
        }
        Bounds {
            shapes,
            rpcs,
            streamed,
            memory: Arc::new(tokio::sync::Semaphore::new(memory)),
            memory_max: memory,
        }
    }

    /// The largest message the RPC at `path` takes, if it is one of the
    /// descriptors'.
    pub fn limit(&self, path: &str) -> Option<usize> {
        self.rpcs.get(path).map(|(limit, _)| *limit)
    }

    /// Takes `len` bytes of the in-flight budget for a request, or refuses.
    pub fn reserve(&self, len: usize) -> Result<tokio::sync::OwnedSemaphorePermit, Status> {
        let want = u32::try_from(len.max(1)).unwrap_or(u32::MAX);
        self.memory
            .clone()
            .try_acquire_many_owned(want)
            .map_err(|_| {
                metrics::counter!("sluice_request_memory_refusals_total").increment(1);
                status::request_memory_exhausted(len, self.memory_max)
            })
    }

    /// Whether the RPC at `path` takes a stream of messages (each of which
    /// must be checked as it comes, not only the first).
    pub fn streams_in(&self, path: &str) -> bool {
        self.streamed.contains(path)
    }

    /// Checks the shape of `message`, a request of the RPC at `path`.
    pub fn check(&self, path: &str, message: &[u8]) -> Result<(), Status> {
        let Some((_, input)) = self.rpcs.get(path) else {
            return Ok(());
        };
        let mut elements = 0;
        let mut trail = Vec::new();
        self.walk(message, *input, &mut trail, &mut elements)
            .map_err(|v| status::invalid_request(&v.field, v.rule))
    }

    fn walk<'a>(
        &'a self,
        bytes: &[u8],
        shape: usize,
        path: &mut Vec<&'a str>,
        elements: &mut usize,
    ) -> Result<(), Violation> {
        if path.len() > DEPTH_MAX {
            return Err(violation(path, format!("nested deeper than {DEPTH_MAX}")));
        }
        let shape = &self.shapes[shape];
        let mut at = 0;
        while at < bytes.len() {
            let key = varint(bytes, &mut at)
                .ok_or_else(|| violation(path, "malformed protobuf: truncated field key"))?;
            let (number, wire) = ((key >> 3) as u32, key & 7);
            if number == 0 {
                return Err(violation(path, "malformed protobuf: field number 0"));
            }
            let field = shape.fields.get(&number);
            if let Some(f) = field {
                path.push(&f.name);
            }
            let truncated = |path: &[&str]| violation(path, "malformed protobuf: truncated value");
            let value = match wire {
                0 => {
                    varint(bytes, &mut at).ok_or_else(|| truncated(path))?;
                    None
                }
                1 | 5 => {
                    at += if wire == 1 { 8 } else { 4 };
                    if at > bytes.len() {
                        return Err(truncated(path));
                    }
                    None
                }
                2 => {
                    let len = varint(bytes, &mut at).ok_or_else(|| truncated(path))?;
                    let end = usize::try_from(len)
                        .ok()
                        .and_then(|l| at.checked_add(l))
                        .filter(|e| *e <= bytes.len())
                        .ok_or_else(|| truncated(path))?;
                    let value = &bytes[at..end];
                    at = end;
                    Some(value)
                }
                w => {
                    return Err(violation(
                        path,
                        format!("malformed protobuf: wire type {w} is not used"),
                    ))
                }
            };
            let Some(f) = field else {
                // Unknown fields are skipped by the decoder, and kept by
                // nothing.
                continue;
            };
            let expected = match f.kind {
                Kind::Message(_) | Kind::String | Kind::Bytes => wire == 2,
                Kind::Varint => wire == 0 || (f.repeated && wire == 2),
                Kind::Fixed64 => wire == 1 || (f.repeated && wire == 2),
                Kind::Fixed32 => wire == 5 || (f.repeated && wire == 2),
            };
            if !expected {
                return Err(violation(
                    path,
                    format!("wire type {wire} does not fit this field's type"),
                ));
            }
            if f.repeated || matches!(f.kind, Kind::Message(_)) {
                *elements += 1;
                if *elements > ELEMENTS_MAX {
                    return Err(violation(
                        path,
                        format!(
                            "the request holds more than {ELEMENTS_MAX} messages and list elements"
                        ),
                    ));
                }
            }
            match (f.kind, value) {
                (Kind::Message(sub), Some(v)) => self.walk(v, sub, path, elements)?,
                (Kind::String, Some(v)) if std::str::from_utf8(v).is_err() => {
                    return Err(violation(path, "must be valid UTF-8"));
                }
                _ => {}
            }
            path.pop();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use sluice_proto::v1 as pb;

    use super::*;

    fn bounds() -> Bounds {
        Bounds::build(sluice_proto::FILE_DESCRIPTOR_SET, 1 << 20)
    }

    const BATCH: &str = "/sluice.v1.Queues/SendMessageBatch";

    fn rule_of(status: Status) -> (tonic::Code, String) {
        (status.code(), status.message().to_string())
    }

    #[test]
    fn every_rpc_has_a_limit_and_batches_get_their_legal_size() {
        let b = bounds();
        assert_eq!(b.limit(BATCH), Some(10 * 1_048_576 + SLACK));
        assert_eq!(
            b.limit("/sluice.v1.Streams/PutRecords"),
            Some(5 * 1_048_576 + 512 * 1024)
        );
        assert_eq!(b.limit("/sluice.v1.Queues/ListQueues"), Some(DEFAULT_BYTES));
        assert_eq!(b.limit("/sluice.v1.Queues/Nope"), None);
    }

    #[test]
    fn legal_requests_pass() {
        let b = bounds();
        let request = pb::SendMessageBatchRequest {
            queue_name: "q".into(),
            entries: (0..10)
                .map(|i| pb::SendMessageBatchRequestEntry {
                    id: i.to_string(),
                    message_body: "x".repeat(1000),
                    message_attributes: (0..10)
                        .map(|a| {
                            (
                                format!("a{a}"),
                                pb::MessageAttributeValue {
                                    data_type: "String".into(),
                                    string_value: "v".into(),
                                    ..Default::default()
                                },
                            )
                        })
                        .collect(),
                    ..Default::default()
                })
                .collect(),
        };
        b.check(BATCH, &request.encode_to_vec()).unwrap();
        let records = pb::PutRecordsRequest {
            stream_name: "s".into(),
            records: (0..500)
                .map(|i| pb::PutRecordsRequestEntry {
                    data: vec![1; 10],
                    partition_key: i.to_string(),
                    ..Default::default()
                })
                .collect(),
        };
        b.check("/sluice.v1.Streams/PutRecords", &records.encode_to_vec())
            .unwrap();
    }

    #[test]
    fn millions_of_empty_entries_are_refused_before_they_are_decoded() {
        let b = bounds();
        // Field 2 (entries), length 0: two bytes per entry.
        let mut bytes = Vec::new();
        for _ in 0..100_000 {
            bytes.extend_from_slice(&[0x12, 0x00]);
        }
        let (code, message) = rule_of(b.check(BATCH, &bytes).unwrap_err());
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert!(
            message.contains("entries") && message.contains("10000"),
            "{message}"
        );
        // Nested: one entry holding a hundred thousand empty attributes.
        let mut entry = Vec::new();
        for _ in 0..100_000 {
            entry.extend_from_slice(&[0x22, 0x00]);
        }
        let mut bytes = vec![0x12];
        prost::encoding::encode_varint(entry.len() as u64, &mut bytes);
        bytes.extend_from_slice(&entry);
        let (_, message) = rule_of(b.check(BATCH, &bytes).unwrap_err());
        assert!(message.contains("entries.message_attributes"), "{message}");
    }

    #[test]
    fn malformed_requests_are_refused_naming_the_field() {
        let b = bounds();
        // queue_name (1) as a varint.
        let (code, message) = rule_of(b.check(BATCH, &[0x08, 0x01]).unwrap_err());
        assert_eq!(code, tonic::Code::InvalidArgument);
        assert!(message.contains("queue_name"), "{message}");
        // queue_name claims 100 bytes, has 2.
        let (_, message) = rule_of(b.check(BATCH, &[0x0a, 100, b'a', b'b']).unwrap_err());
        assert!(message.contains("truncated"), "{message}");
        // Not UTF-8.
        let (_, message) = rule_of(b.check(BATCH, &[0x0a, 2, 0xff, 0xfe]).unwrap_err());
        assert!(message.contains("UTF-8"), "{message}");
        // Wire type 7.
        assert!(b.check(BATCH, &[0x0f]).is_err());
    }

    #[test]
    fn the_in_flight_budget_refuses_once_spent_and_is_given_back() {
        let b = bounds();
        let first = b.reserve(700 * 1024).unwrap();
        let refused = b.reserve(400 * 1024).unwrap_err();
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        drop(first);
        let _second = b.reserve(400 * 1024).unwrap();
    }
}
