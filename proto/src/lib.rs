//! Sluice's gRPC API, generated at build time from the `.proto` files in this
//! crate.
//!
//! * [`v1`] is the public API (package `sluice.v1`): one service per resource
//!   kind (`Queues`, `Topics`, `Streams`, `Functions`, `Events`) and `Cluster`.
//! * [`internal`] holds the node-to-node services (package
//!   `sluice.internal.v1`): the Raft transport and request routing. They are
//!   served on the cluster listener only and are not a stable API.

/// The public API, package `sluice.v1`.
pub mod v1 {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("sluice.v1");
}

/// Node-to-node services, package `sluice.internal.v1`.
pub mod internal {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("sluice.internal.v1");
}

/// KEDA's external scaler service (package `externalscaler`), which nodes
/// serve so KEDA can scale workers on queue depth and stream iterator age.
pub mod externalscaler {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("externalscaler");
}

/// Encoded `FileDescriptorSet` of every Sluice proto file, for gRPC server
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_descriptor.bin"));

/// Encoded `FileDescriptorSet` of the public Sluice proto files (without
/// the node-to-node services): what the public port's reflection serves.
pub const PUBLIC_FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/sluice_public_descriptor.bin"));

/// Metadata key carrying the stable error code (e.g. `QueueDoesNotExist`) of
/// every error a Sluice node returns.
pub const ERROR_CODE_HEADER: &str = "sluice-error-code";

/// Metadata key choosing the consistency of a read: `linearizable` (the
/// default) or `local`.
pub const CONSISTENCY_HEADER: &str = "sluice-consistency";

/// Metadata key a node sets on a call it forwards to the leader.
pub const FORWARDED_HEADER: &str = "sluice-forwarded";

/// True when a call failed in transport rather than being answered: the node
/// was unreachable, or the connection broke while the call was in flight
/// (a killed process shows up as `UNKNOWN`, `INTERNAL`, `CANCELLED` or
/// `ABORTED` from the HTTP/2 layer). Statuses a Sluice node returns always
/// carry [`ERROR_CODE_HEADER`], so they are never mistaken for one; an
/// `UNAVAILABLE` from a node means "try another node" and counts too.
///
/// A write that failed this way may or may not have been applied.
pub fn is_retryable(status: &tonic::Status) -> bool {
    use tonic::Code;
    match status.code() {
        Code::Unavailable => true,
        Code::Unknown | Code::Internal | Code::Cancelled | Code::Aborted => {
            status.metadata().get(ERROR_CODE_HEADER).is_none()
        }
        _ => false,
    }
}

/// Whether a call failed before anything was sent: the connection was
/// refused or never made. The transport says so in the status or in one of
/// the errors behind it (the wording depends on the tonic and hyper
/// versions, so both are read; the errors behind a status are this process's
/// own, never sent over the wire). A refusal (`ECONNREFUSED`) only ever
/// answers a connect: an established connection that breaks is reset.
pub fn never_sent(status: &tonic::Status) -> bool {
    const CONNECTING: [&str; 3] = ["tcp connect error", "tcp open error", "dns error"];
    let says = |text: &str| CONNECTING.iter().any(|m| text.contains(m));
    // The message may have come from the far side; only this node's
    // transport words it so with UNAVAILABLE.
    if status.code() == tonic::Code::Unavailable
        && CONNECTING.iter().any(|m| status.message().starts_with(m))
    {
        return true;
    }
    let mut source = std::error::Error::source(status);
    while let Some(e) = source {
        let refused = e
            .downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::ConnectionRefused);
        if refused || says(&e.to_string()) {
            return true;
        }
        source = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::metadata::MetadataValue;
    use tonic::{Code, Status};

    fn from_node(code: Code) -> Status {
        let mut s = Status::new(code, "answered by a node");
        s.metadata_mut().insert(
            ERROR_CODE_HEADER,
            MetadataValue::from_static("InternalError"),
        );
        s
    }

    #[test]
    fn broken_calls_are_retryable_and_answers_are_not() {
        for code in [
            Code::Unknown,
            Code::Internal,
            Code::Cancelled,
            Code::Aborted,
        ] {
            assert!(
                is_retryable(&Status::new(code, "h2 protocol error")),
                "{code:?}"
            );
            assert!(!is_retryable(&from_node(code)), "{code:?}");
        }
        assert!(is_retryable(&Status::unavailable("connection refused")));
        assert!(is_retryable(&from_node(Code::Unavailable)));
        for code in [
            Code::InvalidArgument,
            Code::NotFound,
            Code::DeadlineExceeded,
        ] {
            assert!(!is_retryable(&Status::new(code, "x")), "{code:?}");
        }
    }
}
