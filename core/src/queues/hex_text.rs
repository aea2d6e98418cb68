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

/// A UUID's runs of hex digits: where each starts in the text, and how many
/// bytes it spells. A dash stands before every run but the first.
const UUID_RUNS: [(usize, usize); 5] = [(0, 4), (9, 2), (14, 2), (19, 2), (24, 6)];
/// Not a lowercase hex digit, in [`DIGIT_VALUE`].
const NOT_HEX: u8 = 0xff;
/// The value of each lowercase hex digit, by byte; [`NOT_HEX`] for any other
/// (uppercase too: it would not read back the same).
const DIGIT_VALUE: [u8; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [NOT_HEX; 256];
    let mut i = 0;
    while i < 16 {
        table[DIGITS[i] as usize] = i as u8;
        i += 1;
    }
    table
};

/// Fills `out` with the bytes `digits` spell (two digits a byte), or says
/// that they are not all lowercase hex. It runs for every message record
/// encoded, twice (the encoding is measured before it is written): a table
/// lookup a digit, no allocation.
fn decode_into(digits: &[u8], out: &mut [u8]) -> bool {
    debug_assert_eq!(digits.len(), 2 * out.len());
    let mut bad = 0;
    for (pair, byte) in digits.chunks_exact(2).zip(out.iter_mut()) {
        let (high, low) = (
            DIGIT_VALUE[usize::from(pair[0])],
            DIGIT_VALUE[usize::from(pair[1])],
        );
        bad |= high | low;
        *byte = (high << 4) | (low & 0xf);
    }
    // A valid digit's value has no bit above the low four.
    bad & 0xf0 == 0
}

/// The 16 bytes 32 lowercase hex digits spell.
fn hex_bytes(text: &[u8]) -> Option<[u8; 16]> {
    let mut out = [0; 16];
    (text.len() == 32 && decode_into(text, &mut out)).then_some(out)
}

/// The 16 bytes a lowercase UUID (`8-4-4-4-12` hex digits) spells.
fn uuid_bytes(text: &[u8]) -> Option<[u8; 16]> {
    if text.len() != 36 {
        return None;
    }
    let mut out = [0; 16];
    let mut at = 0;
    for (start, bytes) in UUID_RUNS {
        let dashed = start == 0 || text[start - 1] == b'-';
        if !dashed || !decode_into(&text[start..start + 2 * bytes], &mut out[at..at + bytes]) {
            return None;
        }
        at += bytes;
    }
    Some(out)
}

fn stored(text: &str) -> Stored<'_> {
    let b = text.as_bytes();
    if let Some(bytes) = uuid_bytes(b) {
        return Stored::Uuid(bytes);
    }
    if let Some(bytes) = hex_bytes(b) {
        return Stored::Hex(bytes);
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
        Stored::Hex(bytes) => hex::encode(bytes),
        Stored::Uuid(bytes) => uuid_text(&bytes),
    })
}

/// `bytes` as a lowercase UUID, `8-4-4-4-12` hex digits.
pub(crate) fn uuid_text(bytes: &[u8; 16]) -> String {
    let mut text = [b'-'; 36];
    let mut at = 0;
    for (start, n) in UUID_RUNS {
        hex::encode_to_slice(&bytes[at..at + n], &mut text[start..start + 2 * n])
            .expect("each run has room for two digits a byte");
        at += n;
    }
    String::from_utf8(text.to_vec()).expect("hex digits and dashes are ASCII")
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

    /// Packed exactly when every digit is lowercase hex and every dash is
    /// in its place: each ASCII byte tried at each position of a UUID and
    /// of an MD5's text.
    #[test]
    fn one_byte_off_anywhere_keeps_the_text_as_it_is() {
        let uuid = "d6ee826f-5667-4627-948d-b817cea115f1";
        let md5 = "2e73961c8bc6e650906a9bcb8de4ca6a";
        for (text, dashes) in [(uuid, &[8, 13, 18, 23][..]), (md5, &[][..])] {
            for at in 0..text.len() {
                for byte in 0u8..0x80 {
                    let mut changed = text.as_bytes().to_vec();
                    changed[at] = byte;
                    let changed = String::from_utf8(changed).unwrap();
                    let packs = if dashes.contains(&at) {
                        byte == b'-'
                    } else {
                        byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)
                    };
                    assert_eq!(round_trip(&changed) == 17, packs, "{changed:?}");
                }
            }
        }
    }
}
