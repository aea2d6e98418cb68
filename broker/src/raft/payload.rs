//! A log entry's application data, encoded once.
//!
//! The node that proposes a batch encodes its [`Proposal`] once. Those bytes
//! are what every later step writes or sends: the leader's log record, each
//! AppendEntries to a follower, the follower's own log record. Each of them
//! copies the bytes; none encodes the proposal again. A payload read back
//! from a log file or received from the leader is decoded once, when it
//! arrives, so that a damaged or foreign payload is refused there and apply
//! never meets one.
//!
//! Because every node holds the same bytes, a position inside a payload (a
//! message body's offset) means the same on every node.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::command::Proposal;
use crate::store::codec;

/// A proposal and its encoding.
#[derive(Clone)]
pub struct Payload {
    bytes: Bytes,
    proposal: Arc<Proposal>,
}

impl Payload {
    /// Encodes `proposal`: the only encoding it gets.
    pub fn new(proposal: Proposal) -> Payload {
        Payload {
            bytes: Bytes::from(codec::encode(&proposal)),
            proposal: Arc::new(proposal),
        }
    }

    /// Decodes a payload from its encoding.
    pub fn decode(bytes: Bytes) -> Result<Payload, String> {
        let proposal = codec::decode_message::<Proposal>("proposal", &bytes)?;
        Ok(Payload {
            bytes,
            proposal: Arc::new(proposal),
        })
    }

    /// The proposal.
    pub fn proposal(&self) -> &Proposal {
        &self.proposal
    }

    /// Its encoding, as every node stores and sends it.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}

impl PartialEq for Payload {
    fn eq(&self, other: &Payload) -> bool {
        self.bytes == other.bytes
    }
}

impl Eq for Payload {}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Payload({}, {} bytes)", self.proposal, self.bytes.len())
    }
}

impl fmt::Display for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.proposal.fmt(f)
    }
}

impl Serialize for Payload {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&self.bytes)
    }
}

impl<'de> Deserialize<'de> for Payload {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Payload, D::Error> {
        let bytes = serde_bytes::ByteBuf::deserialize(deserializer)?;
        Payload::decode(Bytes::from(bytes.into_vec())).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::Command;
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    fn proposal() -> Proposal {
        Proposal {
            time_ms: 1_700_000_000_000,
            commands: vec![Command::PutRecords(crate::streams::PutRecords {
                stream: "s".into(),
                records: vec![crate::streams::records::NewRecord {
                    data: (0..=255u8).cycle().take(700).collect(),
                    partition_key: "k".into(),
                    hash_key: 0,
                }],
            })],
        }
    }

    #[test]
    fn an_entry_on_disk_or_on_the_wire_carries_the_payload_bytes_unchanged() {
        let payload = Payload::new(proposal());
        let entry = Entry::<super::super::TypeConfig> {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 42),
            payload: EntryPayload::Normal(payload.clone()),
        };
        let encoded = codec::encode(&entry);
        let at = encoded
            .windows(payload.bytes().len())
            .position(|w| w == payload.bytes().as_ref())
            .expect("the entry's encoding holds the payload's bytes as they are");
        assert!(at < 32, "the payload follows a short header, at {at}");

        let back: Entry<super::super::TypeConfig> =
            codec::decode_message("log entry", &encoded).unwrap();
        let EntryPayload::Normal(read) = back.payload else {
            panic!("not a normal entry")
        };
        assert_eq!(read.bytes(), payload.bytes());
        assert_eq!(read.proposal(), payload.proposal());
    }

    #[test]
    fn a_payload_that_is_not_a_proposal_is_refused_when_it_arrives() {
        let mut bytes = codec::encode(&proposal());
        bytes.truncate(bytes.len() / 2);
        let err = Payload::decode(Bytes::from(bytes)).unwrap_err();
        assert!(err.contains("undecodable proposal"), "{err}");
    }
}
