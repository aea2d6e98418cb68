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
    let out = postcard::serialize_with_flavor(value, SizedVec(Vec::with_capacity(size)))
        .expect("postcard encoding of broker types is infallible");
    debug_assert_eq!(out.len(), size, "the size pass measures the encoding");
    out
}

/// Postcard's output into a `Vec` sized beforehand. Byte strings are
/// copied whole: postcard's `Extend` flavor pushes them a byte at a time
/// (the record data of batched PutRecords, twice per node), and its own
/// `Vec` flavor cannot start from a sized one.
struct SizedVec(Vec<u8>);

impl postcard::ser_flavors::Flavor for SizedVec {
    type Output = Vec<u8>;

    #[inline(always)]
    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.0.push(byte);
        Ok(())
    }

    #[inline(always)]
    fn try_extend(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(bytes);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<Vec<u8>> {
        Ok(self.0)
    }
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

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        key: String,
        counts: Vec<u64>,
        at: Option<u128>,
    }

    /// The sized output is postcard's encoding to the byte, so every
    /// stored and replicated encoding reads back as before.
    #[test]
    fn the_sized_encoding_is_postcards_own() {
        for len in [0, 1, 127, 128, 1024, 70_000] {
            let value = Sample {
                data: (0..len).map(|i| (i % 251) as u8).collect(),
                key: "ключ-".repeat(len % 7),
                counts: (0..(len as u64 % 300)).map(|i| i << 40).collect(),
                at: (len % 2 == 0).then_some(u128::MAX - len as u128),
            };
            let ours = super::encode(&value);
            assert_eq!(ours, postcard::to_stdvec(&value).unwrap(), "length {len}");
            assert_eq!(ours.capacity(), ours.len(), "length {len}: sized once");
            assert_eq!(super::decode::<Sample>(b"k", &ours).unwrap(), value);
        }
    }
}
