//! Hex text stored as the bytes it spells.
//!
//! A queued message's record holds its MessageId (a UUID) and the MD5 of its
//! body as text: 36 and 32 characters, half of what the state keeps for a
//! message of a standard queue. Stored as the 16 bytes each spells, they
//! take 17 bytes apiece. Only text that reads back exactly the same is
//! stored so (lowercase hex, a UUID's dashes in their places); any other
//! text is kept as it is.
//!
//! Use as `#[serde(with = "hex_text")]` on a `String` field.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How a field is stored.
#[derive(Serialize, Deserialize)]
enum Stored<'a> {
    /// Any other text.
    Text(std::borrow::Cow<'a, str>),
    /// A lowercase UUID, `8-4-4-4-12` hex digits.
    Uuid([u8; 16]),
    /// 32 lowercase hex digits (an MD5).
    Hex([u8; 16]),
}

/// Where a UUID's dashes are.
const DASHES: [usize; 4] = [8, 13, 18, 23];

fn digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

/// The 16 bytes 32 lowercase hex digits spell. Without an allocation: it
/// runs for every message record encoded, twice (the encoding is measured
/// before it is written).
fn bytes_of(digits: impl Iterator<Item = u8>) -> Option<[u8; 16]> {
    let mut out = [0; 16];
    let mut n = 0;
    for c in digits {
        if n == 32 {
            return None;
        }
        let d = digit(c)?;
        out[n / 2] |= if n % 2 == 0 { d << 4 } else { d };
        n += 1;
    }
    (n == 32).then_some(out)
}

/// The 32 lowercase hex digits of `bytes` (with room for a UUID's dashes).
fn hex(bytes: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

fn stored(text: &str) -> Stored<'_> {
    let b = text.as_bytes();
    if b.len() == 36 && DASHES.iter().all(|&i| b[i] == b'-') {
        let digits = b.iter().enumerate().filter(|(i, _)| !DASHES.contains(i));
        if let Some(bytes) = bytes_of(digits.map(|(_, &c)| c)) {
            return Stored::Uuid(bytes);
        }
    }
    if b.len() == 32 {
        if let Some(bytes) = bytes_of(b.iter().copied()) {
            return Stored::Hex(bytes);
        }
    }
    Stored::Text(text.into())
}

/// Serializes `text`, as bytes when it is hex that reads back the same.
pub fn serialize<S: Serializer>(text: &str, s: S) -> Result<S::Ok, S::Error> {
    stored(text).serialize(s)
}

/// Reads what [`serialize`] wrote, as the text it was.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Stored::deserialize(d)? {
        Stored::Text(t) => t.into_owned(),
        Stored::Hex(bytes) => hex(&bytes),
        Stored::Uuid(bytes) => uuid_text(&bytes),
    })
}

/// `bytes` as a lowercase UUID, `8-4-4-4-12` hex digits.
pub(crate) fn uuid_text(bytes: &[u8; 16]) -> String {
    let mut text = hex(bytes);
    for at in DASHES {
        text.insert(at, '-');
    }
    text
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Field(#[serde(with = "super")] String);

    fn round_trip(text: &str) -> usize {
        let bytes = crate::store::codec::encode(&Field(text.to_string()));
        let back: Field = crate::store::codec::decode(b"k", &bytes).unwrap();
        assert_eq!(back.0, text);
        bytes.len()
    }

    #[test]
    fn every_text_reads_back_as_it_was_and_hex_packs_to_its_bytes() {
        assert_eq!(round_trip("d6ee826f-5667-4627-948d-b817cea115f1"), 17);
        assert_eq!(round_trip("2e73961c8bc6e650906a9bcb8de4ca6a"), 17);
        for text in [
            "",
            "D6EE826F-5667-4627-948D-B817CEA115F1",
            "2E73961C8BC6E650906A9BCB8DE4CA6A",
            "d6ee826f-5667-4627-948d-b817cea115fg",
            "d6ee826f05667-4627-948d-b817cea115f1",
            "2e73961c8bc6e650906a9bcb8de4ca6",
            "2e73961c8bc6e650906a9bcb8de4ca6a0",
            "é6ee826f-5667-4627-948d-b817cea115f",
            "a message id of a queue's own",
        ] {
            assert!(round_trip(text) > 17 || text.len() < 16, "{text}");
        }
    }
}
