//! Encoding of stored records and node-to-node messages.
//!
//! Records are postcard-encoded serde types. Postcard is compact and fast but
//! not self-describing, so stored types follow one rule to stay readable
//! across versions: enum variants are only ever appended, and a struct that
//! must change gets a new variant of its enclosing versioned enum instead of a
//! new field.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{keys, StoreError};

/// Encodes `value`.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    // Serialising into a Vec cannot fail for the plain data types the broker
    // stores (no maps with non-string keys, no custom serialisers that fail).
    // Sized first: growing the Vec as it is written copied a record's bytes
    // several times over (a tenth of the CPU of batched PutRecords).
    let size = postcard::experimental::serialized_size(value)
        .expect("postcard encoding of broker types is infallible");
    let out = postcard::to_extend(value, Vec::with_capacity(size))
        .expect("postcard encoding of broker types is infallible");
    debug_assert_eq!(out.len(), size, "the size pass measures the encoding");
    out
}

/// Decodes a record stored under `key`.
pub fn decode<T: DeserializeOwned>(key: &[u8], bytes: &[u8]) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        key: keys::display(key),
        reason: e.to_string(),
    })
}

/// Decodes a message received from another node.
pub fn decode_message<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("undecodable {what}: {e}"))
}
