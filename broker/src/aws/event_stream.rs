//! AWS's event-stream encoding (`application/vnd.amazon.eventstream`): how
//! Kinesis's `SubscribeToShard` sends its events over one HTTP response.
//! A message is a prelude (total length, headers' length, the prelude's
//! CRC-32), headers (name, type 7 for strings, value), the payload and the
//! CRC-32 of all that came before; integers big-endian.

use bytes::{BufMut, Bytes, BytesMut};

/// The content type of an event-stream response.
pub const CONTENT_TYPE: &str = "application/vnd.amazon.eventstream";

/// The header value type of a string.
const STRING: u8 = 7;

/// One message with string `headers` and `payload`.
pub fn message(headers: &[(&str, &str)], payload: &[u8]) -> Bytes {
    let headers_len: usize = headers
        .iter()
        .map(|(name, value)| 1 + name.len() + 1 + 2 + value.len())
        .sum();
    let total = 12 + headers_len + payload.len() + 4;
    let mut out = BytesMut::with_capacity(total);
    out.put_u32(total as u32);
    out.put_u32(headers_len as u32);
    let prelude_crc = crc32fast::hash(&out[..8]);
    out.put_u32(prelude_crc);
    for (name, value) in headers {
        // Names are this module's constants; values are short type names.
        debug_assert!(name.len() <= u8::MAX as usize && value.len() <= u16::MAX as usize);
        out.put_u8(name.len() as u8);
        out.put_slice(name.as_bytes());
        out.put_u8(STRING);
        out.put_u16(value.len() as u16);
        out.put_slice(value.as_bytes());
    }
    out.put_slice(payload);
    let crc = crc32fast::hash(&out);
    out.put_u32(crc);
    out.freeze()
}

/// An event named `event_type` carrying `payload` of `content_type`.
pub fn event(event_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(
        &[
            (":event-type", event_type),
            (":content-type", content_type),
            (":message-type", "event"),
        ],
        payload,
    )
}

/// An exception (`ResourceNotFoundException`, ...) ending the stream.
pub fn exception(exception_type: &str, content_type: &str, payload: &[u8]) -> Bytes {
    message(
        &[
            (":exception-type", exception_type),
            (":content-type", content_type),
            (":message-type", "exception"),
        ],
        payload,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_match_the_aws_sdks_test_vectors() {
        // The vectors the AWS SDKs' event-stream codecs test against:
        // `payload_no_headers` and `payload_one_str_header`.
        let payload = b"{'foo':'bar'}";
        let mut no_headers = vec![0, 0, 0, 29, 0, 0, 0, 0, 253, 82, 140, 90];
        no_headers.extend_from_slice(payload);
        no_headers.extend_from_slice(&[195, 101, 57, 54]);
        assert_eq!(&message(&[], payload)[..], &no_headers[..]);
        let mut one_header = vec![0, 0, 0, 61, 0, 0, 0, 32, 7, 253, 131, 150, 12];
        one_header.extend_from_slice(b"content-type");
        one_header.extend_from_slice(&[7, 0, 16]);
        one_header.extend_from_slice(b"application/json");
        one_header.extend_from_slice(payload);
        one_header.extend_from_slice(&[141, 156, 8, 177]);
        assert_eq!(
            &message(&[("content-type", "application/json")], payload)[..],
            &one_header[..]
        );
        let e = event("SubscribeToShardEvent", "application/json", b"{}");
        let headers_len = u32::from_be_bytes(e[4..8].try_into().unwrap()) as usize;
        let headers = &e[12..12 + headers_len];
        assert_eq!(headers[0] as usize, ":event-type".len());
        assert_eq!(&headers[1..12], b":event-type");
        assert_eq!(headers[12], STRING);
        assert_eq!(&e[12 + headers_len..e.len() - 4], b"{}");
        assert_eq!(
            &e[e.len() - 4..],
            &crc32fast::hash(&e[..e.len() - 4]).to_be_bytes()
        );
    }
}
