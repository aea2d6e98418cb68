//! Receipt handles.
//!
//! A handle names one delivery of one message: the queue id and generation,
//! the message's sequence number and its receive count at that delivery. The
//! next receive of the message increments the count, so an older handle no
//! longer matches and cannot delete or hide a message delivered again since.
//! The fields are derived, not random, so every replica agrees on them; the
//! API seals them with a MAC keyed by the cluster key (`api::queues`), so a
//! handle cannot be computed from another or made up.

use crate::error::DomainError;

/// Bytes of a receipt's fields.
pub const FIELD_BYTES: usize = 28;

/// What a receipt handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Receipt {
    /// Queue id.
    pub qid: u64,
    /// Queue generation (a purge starts a new one).
    pub gen: u64,
    /// Message sequence number.
    pub seq: u64,
    /// The message's receive count at this delivery.
    pub receive_count: u32,
}

impl Receipt {
    /// The receipt's fields as bytes, to seal.
    pub fn fields(&self) -> [u8; FIELD_BYTES] {
        let mut b = [0u8; FIELD_BYTES];
        b[..8].copy_from_slice(&self.qid.to_be_bytes());
        b[8..16].copy_from_slice(&self.gen.to_be_bytes());
        b[16..24].copy_from_slice(&self.seq.to_be_bytes());
        b[24..].copy_from_slice(&self.receive_count.to_be_bytes());
        b
    }

    /// A receipt from sealed fields (`None` if they are not one).
    pub fn from_fields(b: &[u8]) -> Option<Receipt> {
        if b.len() != FIELD_BYTES {
            return None;
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Some(Receipt {
            qid: u64_at(0),
            gen: u64_at(8),
            seq: u64_at(16),
            receive_count: u32::from_be_bytes(b[24..28].try_into().expect("4 bytes")),
        })
    }
}

/// The error for text that is not a receipt handle this cluster issued
/// (`field` names the request field).
pub fn invalid_handle(field: &str) -> DomainError {
    DomainError::invalid_with_code(
        "ReceiptHandleIsInvalid",
        field,
        "is not a receipt handle this cluster issued",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipt_fields_round_trip() {
        let r = Receipt {
            qid: 3,
            gen: 1,
            seq: 99,
            receive_count: 2,
        };
        assert_eq!(Receipt::from_fields(&r.fields()).unwrap(), r);
        assert!(Receipt::from_fields(&r.fields()[..27]).is_none());
    }
}
