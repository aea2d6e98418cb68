//! Messages: what a sender gives, what is stored, and the rules SQS applies to
//! both (body characters, attribute names and types, ids, sizes, MD5s).

use std::collections::BTreeMap;

use md5::{Digest, Md5};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::DomainError;

/// Most message attributes on one message.
pub const MAX_ATTRIBUTES: usize = 10;
/// Longest FIFO group or deduplication id.
pub const MAX_FIFO_ID: usize = 128;
pub use crate::limits::queues::{BATCH_MAX, MESSAGE_BYTES_MAX};

/// A message attribute value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttributeValue {
    /// `String`, `Number` or `Binary`, optionally with a custom suffix.
    pub data_type: String,
    /// For String and Number.
    pub string_value: Option<String>,
    /// For Binary.
    pub binary_value: Option<Vec<u8>>,
}

impl AttributeValue {
    /// Bytes the attribute counts toward the message size (with its name).
    pub fn size(&self, name: &str) -> usize {
        name.len()
            + self.data_type.len()
            + self.string_value.as_ref().map_or(0, String::len)
            + self.binary_value.as_ref().map_or(0, Vec::len)
    }

    fn is_binary(&self) -> bool {
        self.data_type == "Binary" || self.data_type.starts_with("Binary.")
    }
}

/// A message to send, validated at the edge. The MD5s and the content hash
/// are computed there too, so the state machine never hashes a body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewMessage {
    /// The body.
    pub body: String,
    /// Message attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// The `AWSTraceHeader` system attribute.
    pub trace_header: Option<String>,
    /// Per-message delay (standard queues).
    pub delay_seconds: Option<u32>,
    /// FIFO deduplication id given by the sender.
    pub dedup_id: Option<String>,
    /// Message group id (required on FIFO queues).
    pub group_id: Option<String>,
    /// Hex MD5 of the body.
    pub md5_of_body: String,
    /// Hex MD5 of the message attributes, if any.
    pub md5_of_attributes: Option<String>,
    /// Hex MD5 of the system attributes, if any.
    pub md5_of_system_attributes: Option<String>,
    /// Hex SHA-256 of the body, for content-based deduplication: empty
    /// unless the message is for a FIFO queue and has no deduplication id.
    pub sha256_of_body: String,
}

/// The fields of one message to send, as a request gives them.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    /// Body.
    pub body: String,
    /// Per-message delay, seconds, if given.
    pub delay_seconds: Option<i32>,
    /// Message attributes.
    pub attributes: BTreeMap<String, AttributeValue>,
    /// System attributes (only `AWSTraceHeader`).
    pub system_attributes: BTreeMap<String, AttributeValue>,
    /// Deduplication id; empty when not given.
    pub dedup_id: String,
    /// Group id; empty when not given.
    pub group_id: String,
}

impl NewMessage {
    /// Validates a message to send to a FIFO (or standard) queue and
    /// computes its digests. `prefix` names the entry in a batch.
    pub fn validate(prefix: &str, fifo: bool, m: Outgoing) -> Result<NewMessage, DomainError> {
        let f = |name: &str| crate::error::field_in(prefix, name);
        validate_body(&f("message_body"), &m.body)?;
        let delay_seconds = match m.delay_seconds {
            None => None,
            Some(_) if fifo => {
                return Err(DomainError::invalid(
                    f("delay_seconds"),
                    "is not allowed per message on FIFO queues; set the queue's DelaySeconds",
                ))
            }
            Some(d) if (0..=super::attributes::DELAY_MAX as i32).contains(&d) => Some(d as u32),
            Some(d) => {
                return Err(DomainError::invalid(
                    f("delay_seconds"),
                    format!(
                        "must be from 0 to {}, got {d}",
                        super::attributes::DELAY_MAX
                    ),
                ))
            }
        };
        validate_attributes(&f("message_attributes"), &m.attributes, |_, _| Ok(()))?;
        let mut trace_header = None;
        for (name, v) in &m.system_attributes {
            if name != "AWSTraceHeader" {
                return Err(DomainError::invalid(
                    f("message_system_attributes"),
                    format!("only AWSTraceHeader is supported, got {name:?}"),
                ));
            }
            if v.data_type != "String" {
                return Err(DomainError::invalid(
                    f("message_system_attributes.AWSTraceHeader.data_type"),
                    "must be String",
                ));
            }
            validate_attribute_value(&f("message_system_attributes.AWSTraceHeader"), v)?;
            trace_header = v.string_value.clone();
        }
        let dedup_id = if m.dedup_id.is_empty() {
            None
        } else if !fifo {
            return Err(DomainError::invalid(
                f("message_deduplication_id"),
                "is only valid on FIFO queues",
            ));
        } else {
            validate_fifo_id(&f("message_deduplication_id"), &m.dedup_id)?;
            Some(m.dedup_id)
        };
        let group_id = if m.group_id.is_empty() {
            if fifo {
                return Err(DomainError::invalid_with_code(
                    "MissingParameter",
                    f("message_group_id"),
                    "is required on FIFO queues",
                ));
            }
            None
        } else {
            validate_fifo_id(&f("message_group_id"), &m.group_id)?;
            Some(m.group_id)
        };
        let nm = NewMessage {
            md5_of_body: md5_hex(m.body.as_bytes()),
            // Only content-based deduplication reads it: a standard queue's
            // message, or one with its own deduplication id, carries none.
            sha256_of_body: if fifo && dedup_id.is_none() {
                sha256_hex(m.body.as_bytes())
            } else {
                String::new()
            },
            md5_of_attributes: md5_of_attributes(&m.attributes),
            md5_of_system_attributes: md5_of_attributes(&m.system_attributes),
            trace_header,
            body: m.body,
            attributes: m.attributes,
            delay_seconds,
            dedup_id,
            group_id,
        };
        if nm.size() > MESSAGE_BYTES_MAX {
            return Err(DomainError::invalid(
                f("message_body"),
                format!(
                    "the message is {} bytes with its attributes; at most {MESSAGE_BYTES_MAX}",
                    nm.size()
                ),
            ));
        }
        Ok(nm)
    }

    /// Bytes the message counts toward the queue's MaximumMessageSize.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|(n, v)| v.size(n))
                .sum::<usize>()
    }
}

/// Checks a message body: non-empty, the characters SQS allows.
pub fn validate_body(field: &str, body: &str) -> Result<(), DomainError> {
    if body.is_empty() {
        return Err(DomainError::invalid(field, "must not be empty"));
    }
    if plain_ascii(body.as_bytes()) {
        return Ok(());
    }
    if let Some(bad) = body.chars().find(|c| {
        let c = *c as u32;
        !(c == 0x9 || c == 0xA || c == 0xD || (0x20..=0xFFFD).contains(&c) || c >= 0x10000)
            || c == 0xFFFE
            || c == 0xFFFF
    }) {
        return Err(DomainError::invalid(
            field,
            format!(
                "contains U+{:04X}; allowed are #x9, #xA, #xD, #x20-#xD7FF, #xE000-#xFFFD and #x10000-#x10FFFF",
                bad as u32
            ),
        ));
    }
    Ok(())
}

/// Whether `bytes` are all ASCII that SQS allows (tab, newline, carriage
/// return, U+0020-U+007F): most bodies are, and this settles them without
/// decoding a character. Each block is tested without an early exit, so that
/// the compiler can test many bytes at once.
fn plain_ascii(bytes: &[u8]) -> bool {
    bytes.chunks(64).all(|block| {
        block.iter().fold(true, |ok, &b| {
            ok & ((0x20..=0x7f).contains(&b) | (b == b'\t') | (b == b'\n') | (b == b'\r'))
        })
    })
}

/// Checks a message's attributes: at most [`MAX_ATTRIBUTES`], each a
/// valid name with a valid value, which then passes `also` (a service's
/// own rule), given the value's field. `field` names the attributes in
/// errors (`entries[2].message_attributes`).
pub fn validate_attributes(
    field: &str,
    attributes: &BTreeMap<String, AttributeValue>,
    mut also: impl FnMut(String, &AttributeValue) -> Result<(), DomainError>,
) -> Result<(), DomainError> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(DomainError::invalid(
            field,
            format!(
                "at most {MAX_ATTRIBUTES} attributes, got {}",
                attributes.len()
            ),
        ));
    }
    for (name, v) in attributes {
        let value_field = format!("{field}.{name}");
        validate_attribute_name(field, name)?;
        validate_attribute_value(&value_field, v)?;
        also(value_field, v)?;
    }
    Ok(())
}

/// Checks a message attribute name.
pub fn validate_attribute_name(field: &str, name: &str) -> Result<(), DomainError> {
    let rule = "names are 1-256 characters of A-Z, a-z, 0-9, '_', '-' and '.', do not start or end with '.', have no '..', and do not start with \"AWS.\" or \"Amazon.\"";
    let lower = name.to_ascii_lowercase();
    let ok = crate::names::is_valid(name, 256, "_-.")
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && !lower.starts_with("aws.")
        && !lower.starts_with("amazon.");
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(field, format!("{name:?}: {rule}")))
    }
}

fn is_number(s: &str) -> bool {
    let s = s.trim();
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    let (mantissa, exponent) = match digits.split_once(['e', 'E']) {
        Some((m, e)) => (m, Some(e)),
        None => (digits, None),
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mantissa_ok = !(int.is_empty() && frac.is_empty())
        && int.chars().all(|c| c.is_ascii_digit())
        && frac.chars().all(|c| c.is_ascii_digit())
        && int.len() + frac.len() <= 38;
    let exponent_ok = exponent.is_none_or(|e| {
        let e = e.strip_prefix(['-', '+']).unwrap_or(e);
        !e.is_empty() && e.len() <= 3 && e.chars().all(|c| c.is_ascii_digit())
    });
    if !(mantissa_ok && exponent_ok) {
        return false;
    }
    // SQS takes magnitudes from 10^-128 to 10^126 (and zero). The order of
    // magnitude is that of the first significant digit, shifted by the
    // exponent.
    let exponent: i64 = exponent.map_or(0, |e| e.parse().unwrap_or(0));
    let int = int.trim_start_matches('0');
    let (order, significant) = if !int.is_empty() {
        (int.len() as i64 - 1 + exponent, format!("{int}{frac}"))
    } else {
        let zeros = frac.len() - frac.trim_start_matches('0').len();
        (-(zeros as i64) - 1 + exponent, frac[zeros..].to_string())
    };
    let significant = significant.trim_end_matches('0');
    significant.is_empty() || (-128..126).contains(&order) || (order == 126 && significant == "1")
}

/// Checks a message attribute value.
pub fn validate_attribute_value(field: &str, v: &AttributeValue) -> Result<(), DomainError> {
    let (base, custom) = match v.data_type.split_once('.') {
        Some((b, c)) => (b, Some(c)),
        None => (v.data_type.as_str(), None),
    };
    if !matches!(base, "String" | "Number" | "Binary")
        || custom.is_some_and(|c| c.is_empty())
        || v.data_type.len() > 256
    {
        return Err(DomainError::invalid(
            format!("{field}.data_type"),
            format!(
                "must be String, Number or Binary, optionally with a .suffix (at most 256 characters), got {:?}",
                v.data_type
            ),
        ));
    }
    if base == "Binary" {
        if v.binary_value.as_ref().is_none_or(|b| b.is_empty()) {
            return Err(DomainError::invalid(
                format!("{field}.binary_value"),
                "must not be empty for a Binary attribute",
            ));
        }
        return Ok(());
    }
    let s = v.string_value.as_deref().unwrap_or("");
    if s.is_empty() {
        return Err(DomainError::invalid(
            format!("{field}.string_value"),
            format!("must not be empty for a {base} attribute"),
        ));
    }
    if base == "Number" && !is_number(s) {
        return Err(DomainError::invalid(
            format!("{field}.string_value"),
            format!(
                "must be a number of at most 38 significant digits from 10^-128 to 10^126 in magnitude, or 0; got {:?}",
                crate::error::cut(s, 64)
            ),
        ));
    }
    validate_body(&format!("{field}.string_value"), s)
}

/// Checks a FIFO group or deduplication id.
pub fn validate_fifo_id(field: &str, id: &str) -> Result<(), DomainError> {
    let ok = !id.is_empty()
        && id.len() <= MAX_FIFO_ID
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c.is_ascii_punctuation());
    if ok {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "must be 1-128 characters of letters, digits and ASCII punctuation",
        ))
    }
}

/// Checks a batch entry id.
pub fn validate_batch_id(field: &str, id: &str) -> Result<(), DomainError> {
    if crate::names::is_valid(id, 80, "_-") {
        Ok(())
    } else {
        Err(DomainError::invalid_with_code(
            "InvalidBatchEntryId",
            field,
            "must be 1-80 characters of A-Z, a-z, 0-9, '_' and '-'",
        ))
    }
}

/// Checks the entry ids of a batch: 1-10 entries, ids valid and distinct.
pub fn validate_batch_ids<'a>(
    field: &str,
    ids: impl ExactSizeIterator<Item = &'a str>,
) -> Result<(), DomainError> {
    if ids.len() == 0 {
        return Err(DomainError::invalid_with_code(
            "EmptyBatchRequest",
            field,
            "must have at least one entry",
        ));
    }
    if ids.len() > BATCH_MAX {
        return Err(DomainError::invalid_with_code(
            "TooManyEntriesInBatchRequest",
            field,
            format!("must have at most {BATCH_MAX} entries, got {}", ids.len()),
        ));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, id) in ids.enumerate() {
        validate_batch_id(&format!("{field}[{i}].id"), id)?;
        if !seen.insert(id) {
            return Err(DomainError::invalid_with_code(
                "BatchEntryIdsNotDistinct",
                format!("{field}[{i}].id"),
                format!("{id:?} is used by more than one entry"),
            ));
        }
    }
    Ok(())
}

/// Checks that a batch's messages fit in one request (1 MiB in all).
pub fn validate_batch_size(messages: &[NewMessage]) -> Result<(), DomainError> {
    let total: usize = messages.iter().map(NewMessage::size).sum();
    if total > MESSAGE_BYTES_MAX {
        return Err(DomainError::invalid_with_code(
            "BatchRequestTooLong",
            "entries",
            format!("the batch is {total} bytes; at most {MESSAGE_BYTES_MAX} in all"),
        ));
    }
    Ok(())
}

/// Hex MD5 of `bytes`.
pub fn md5_hex(bytes: &[u8]) -> String {
    hex::encode(Md5::digest(bytes))
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The MD5 SQS computes over message attributes: for each attribute in name
/// order, the name, the data type (each a 4-byte big-endian length and the
/// UTF-8 bytes), a transport byte (1 string, 2 binary) and the value (length
/// and bytes). `None` when there are no attributes.
pub fn md5_of_attributes(attrs: &BTreeMap<String, AttributeValue>) -> Option<String> {
    if attrs.is_empty() {
        return None;
    }
    let mut buf = Vec::new();
    let put = |bytes: &[u8], buf: &mut Vec<u8>| {
        buf.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        buf.extend_from_slice(bytes);
    };
    for (name, v) in attrs {
        put(name.as_bytes(), &mut buf);
        put(v.data_type.as_bytes(), &mut buf);
        if v.is_binary() {
            buf.push(2);
            put(v.binary_value.as_deref().unwrap_or(&[]), &mut buf);
        } else {
            buf.push(1);
            put(v.string_value.as_deref().unwrap_or("").as_bytes(), &mut buf);
        }
    }
    Some(md5_hex(&buf))
}

/// The MessageId of message `seq` of queue `queue_id`: derived, not random,
/// so every replica computes the same one. Shaped as a version-4 UUID.
pub fn message_id(queue_id: u64, seq: u64) -> String {
    derived_uuid(b"sluice/message-id", queue_id, seq)
}

/// The new MessageId a move task gives message `seq` of queue `queue_id`
/// (a dead-letter queue) as it redrives it: derived like [`message_id`],
/// under its own tag, so it differs from every id sent or redriven before
/// (queue ids and sequence numbers are never reused).
pub fn redriven_message_id(queue_id: u64, seq: u64) -> String {
    derived_uuid(b"sluice/redriven-message-id", queue_id, seq)
}

/// A version-4-shaped UUID derived from a tag and two numbers.
pub fn derived_uuid(tag: &[u8], a: u64, b: u64) -> String {
    let mut h = Sha256::new();
    h.update(tag);
    h.update(a.to_be_bytes());
    h.update(b.to_be_bytes());
    let d = h.finalize();
    let mut b = [0u8; 16];
    b.copy_from_slice(&d[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    super::hex_text::uuid_text(&b)
}

/// A FIFO sequence number as SQS prints it: a long decimal string.
pub fn sequence_number(seq: u64) -> String {
    format!("{seq:020}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(t: &str, s: &str) -> AttributeValue {
        AttributeValue {
            data_type: t.into(),
            string_value: Some(s.into()),
            binary_value: None,
        }
    }

    #[test]
    fn bodies_allow_the_sqs_characters_only() {
        assert!(validate_body("b", "hello\tworld\n\r ü €").is_ok());
        assert!(validate_body("b", "\u{10348}").is_ok());
        assert!(validate_body("b", "").is_err());
        let err = validate_body("message_body", "bell\u{7}").unwrap_err();
        assert!(err.message.contains("U+0007"), "{}", err.message);
        assert!(validate_body("b", "\u{FFFE}").is_err());
    }

    /// The ASCII shortcut and the character rule agree on every ASCII
    /// character, in a printable body and after a non-ASCII one.
    #[test]
    fn every_ascii_character_is_judged_by_the_sqs_rule() {
        for byte in 0u8..0x80 {
            let allowed = matches!(byte, 0x9 | 0xA | 0xD) || byte >= 0x20;
            for body in [format!("ab{}c", byte as char), format!("ü{}", byte as char)] {
                assert_eq!(validate_body("b", &body).is_ok(), allowed, "{byte:#x}");
            }
        }
    }

    #[test]
    fn attribute_names_follow_the_rules() {
        for ok in ["a", "order.id", "x-y_z", &"n".repeat(256)] {
            assert!(validate_attribute_name("n", ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            ".a",
            "a.",
            "a..b",
            "AWS.x",
            "amazon.y",
            "sp ace",
            &"n".repeat(257),
        ] {
            assert!(validate_attribute_name("n", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn attribute_values_are_typed() {
        assert!(validate_attribute_value("a", &attr("String", "x")).is_ok());
        assert!(validate_attribute_value("a", &attr("Number", "-12.5e3")).is_ok());
        assert!(validate_attribute_value("a", &attr("Number.int", "42")).is_ok());
        assert!(validate_attribute_value("a", &attr("Number", "12abc")).is_err());
        assert!(validate_attribute_value("a", &attr("Number", &"9".repeat(39))).is_err());
        // SQS's range: 10^-128 to 10^126, and zero.
        for ok in [
            "1e126", "9.99e125", "-1e126", "1e-128", "0", "0e400", "0.000", "12e-3",
        ] {
            assert!(
                validate_attribute_value("a", &attr("Number", ok)).is_ok(),
                "{ok}"
            );
        }
        for bad in [
            "1e400",
            "1.1e126",
            "2e126",
            "10e126",
            "1e-129",
            "0.01e-127",
            "-1e127",
        ] {
            assert!(
                validate_attribute_value("a", &attr("Number", bad)).is_err(),
                "{bad}"
            );
        }
        assert!(validate_attribute_value("a", &attr("String", "")).is_err());
        assert!(validate_attribute_value("a", &attr("Text", "x")).is_err());
        assert!(validate_attribute_value("a", &attr("String.", "x")).is_err());
        let bin = AttributeValue {
            data_type: "Binary".into(),
            string_value: None,
            binary_value: Some(vec![1, 2]),
        };
        assert!(validate_attribute_value("a", &bin).is_ok());
        let empty = AttributeValue {
            binary_value: Some(vec![]),
            ..bin
        };
        let err = validate_attribute_value("message_attributes.x", &empty).unwrap_err();
        assert_eq!(
            err.field.as_deref(),
            Some("message_attributes.x.binary_value")
        );
    }

    #[test]
    fn batch_ids_must_be_valid_and_distinct() {
        assert!(validate_batch_ids("entries", ["a", "b"].into_iter()).is_ok());
        assert_eq!(
            validate_batch_ids("entries", ["a", "a"].into_iter())
                .unwrap_err()
                .code,
            "BatchEntryIdsNotDistinct"
        );
        assert_eq!(
            validate_batch_ids("entries", std::iter::empty())
                .unwrap_err()
                .code,
            "EmptyBatchRequest"
        );
        let eleven: Vec<String> = (0..11).map(|i| format!("e{i}")).collect();
        assert_eq!(
            validate_batch_ids("entries", eleven.iter().map(String::as_str))
                .unwrap_err()
                .code,
            "TooManyEntriesInBatchRequest"
        );
        assert_eq!(
            validate_batch_ids("entries", ["no spaces"].into_iter())
                .unwrap_err()
                .code,
            "InvalidBatchEntryId"
        );
    }

    #[test]
    fn a_batch_must_fit_in_one_mebibyte() {
        let m = |n: usize| {
            NewMessage::validate(
                "",
                false,
                Outgoing {
                    body: "x".repeat(n),
                    ..Outgoing::default()
                },
            )
            .unwrap()
        };
        assert!(validate_batch_size(&[m(500_000), m(500_000)]).is_ok());
        let err = validate_batch_size(&[m(600_000), m(500_000)]).unwrap_err();
        assert_eq!(err.code, "BatchRequestTooLong");
        assert_eq!(err.field.as_deref(), Some("entries"));
    }

    #[test]
    fn md5s_match_known_values() {
        // MD5 of "hello" is a well-known vector.
        assert_eq!(md5_hex(b"hello"), "5d41402abc4b2a76b9719d911017c592");
        // The attribute MD5 is the MD5 of the documented encoding.
        let attrs = BTreeMap::from([("k".to_string(), attr("String", "v"))]);
        let mut expected = Vec::new();
        for part in [&b"k"[..], b"String"] {
            expected.extend_from_slice(&(part.len() as u32).to_be_bytes());
            expected.extend_from_slice(part);
        }
        expected.push(1);
        expected.extend_from_slice(&1u32.to_be_bytes());
        expected.push(b'v');
        assert_eq!(md5_of_attributes(&attrs).unwrap(), md5_hex(&expected));
        assert_eq!(md5_of_attributes(&BTreeMap::new()), None);
    }

    #[test]
    fn message_ids_are_stable_uuids() {
        let a = message_id(1, 7);
        assert_eq!(a, message_id(1, 7));
        assert_ne!(a, message_id(1, 8));
        assert_ne!(a, message_id(2, 7));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        // Pinned: a replica must derive the ids the others derived.
        assert_eq!(a, "9eaa3f46-eb99-4ebe-ac38-82a960368762");
    }
}
