//! Receipt handles.
//!
//! A handle names one delivery of one message: the queue id and generation,
//! the message's sequence number and its receive count at that delivery. The
//! next receive of the message increments the count, so an older handle no
//! longer matches and cannot delete or hide a message delivered again since.
//! The handle is derived, not random, so every replica agrees on it; a
//! checksum makes a mistyped or truncated handle fail cleanly.

use crate::error::DomainError;

const PREFIX: &str = "sl1-";

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
    /// The handle's text.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(32);
        b.extend_from_slice(&self.qid.to_be_bytes());
        b.extend_from_slice(&self.gen.to_be_bytes());
        b.extend_from_slice(&self.seq.to_be_bytes());
        b.extend_from_slice(&self.receive_count.to_be_bytes());
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_be_bytes());
        format!("{PREFIX}{}", hex::encode(b))
    }

    /// Parses a handle; `field` names the request field in the error.
    pub fn decode(field: &str, handle: &str) -> Result<Receipt, DomainError> {
        let invalid = || {
            DomainError::invalid_with_code(
                "ReceiptHandleIsInvalid",
                field,
                "is not a receipt handle this cluster issued",
            )
        };
        let hexed = handle.strip_prefix(PREFIX).ok_or_else(invalid)?;
        let b = hex::decode(hexed).map_err(|_| invalid())?;
        if b.len() != 32 {
            return Err(invalid());
        }
        let crc = u32::from_be_bytes(b[28..32].try_into().expect("4 bytes"));
        if crc32fast::hash(&b[..28]) != crc {
            return Err(invalid());
        }
        let u64_at = |i: usize| u64::from_be_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        Ok(Receipt {
            qid: u64_at(0),
            gen: u64_at(8),
            seq: u64_at(16),
            receive_count: u32::from_be_bytes(b[24..28].try_into().expect("4 bytes")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_damage() {
        let r = Receipt {
            qid: 3,
            gen: 1,
            seq: 99,
            receive_count: 2,
        };
        let h = r.encode();
        assert_eq!(Receipt::decode("receipt_handle", &h).unwrap(), r);
        let mut damaged = h.clone().into_bytes();
        let last = damaged.len() - 1;
        damaged[last] = if damaged[last] == b'0' { b'1' } else { b'0' };
        let err =
            Receipt::decode("receipt_handle", &String::from_utf8(damaged).unwrap()).unwrap_err();
        assert_eq!(err.code, "ReceiptHandleIsInvalid");
        assert_eq!(err.field.as_deref(), Some("receipt_handle"));
        assert!(Receipt::decode("h", "garbage").is_err());
        assert!(Receipt::decode("h", &h[..h.len() - 2]).is_err());
    }
}
