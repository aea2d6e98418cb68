//! AWS Signature Version 4, both halves: signing a request and checking a
//! signed one.
//!
//! Sluice's gRPC clients sign every call the way AWS SDKs sign HTTP
//! requests, with the service name `sluice`: the canonical request is the
//! method (`POST`), the gRPC path, an empty query, the `content-type` and
//! `x-amz-date` headers, and `UNSIGNED-PAYLOAD` (the call travels over TLS,
//! which protects the body; signing it would mean buffering every message).
//! The same checking code serves the AWS wire protocols, where SDKs sign
//! the payload's hash.
//!
//! ```text
//! Authorization: AWS4-HMAC-SHA256 Credential=AKID/20261202/us-east-1/sluice/aws4_request,
//!                SignedHeaders=content-type;x-amz-date, Signature=<64 hex digits>
//! X-Amz-Date: 20261202T172000Z
//! ```
//!
//! A signature is good for [`MAX_SKEW_MS`] either side of the server's
//! clock, as on AWS.

use http::HeaderMap;
use ring::{digest, hmac};

use crate::civil::{civil_from_days, days_from_civil};

/// The algorithm name in `Authorization` headers.
pub const ALGORITHM: &str = "AWS4-HMAC-SHA256";
/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ`.
pub const DATE_HEADER: &str = "x-amz-date";
/// Header naming the payload hash (or [`UNSIGNED_PAYLOAD`]).
pub const CONTENT_SHA256_HEADER: &str = "x-amz-content-sha256";
/// The payload hash of a request whose body is not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";
/// How far a request's signing time may be from the server's clock.
pub const MAX_SKEW_MS: u64 = 5 * 60 * 1000;
/// The service name Sluice's gRPC API is signed for.
pub const GRPC_SERVICE: &str = "sluice";

/// Why a request's signature was refused. Each variant has the AWS error
/// code it answers with ([`SigError::code`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SigError {
    /// No `Authorization` header.
    #[error("the request is not signed: it has no Authorization header (give an access key id and secret)")]
    Missing,
    /// The header is there but is not a SigV4 authorization.
    #[error("Authorization header: {0}")]
    Incomplete(String),
    /// The signing time is missing, malformed or too far from now.
    #[error("{0}")]
    Expired(String),
    /// The signature does not match the request.
    #[error("the request signature we calculated does not match the signature you provided; check your secret access key and signing method")]
    Mismatch,
}

impl SigError {
    /// The AWS error code.
    pub fn code(&self) -> &'static str {
        match self {
            SigError::Missing => "MissingAuthenticationToken",
            SigError::Incomplete(_) => "IncompleteSignature",
            SigError::Expired(_) => "RequestExpired",
            SigError::Mismatch => "SignatureDoesNotMatch",
        }
    }
}

/// The credential scope of a signature: date, region, service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    /// `YYYYMMDD`.
    pub date: String,
    /// Region, e.g. `us-east-1`.
    pub region: String,
    /// Service, e.g. `sluice` or `sqs`.
    pub service: String,
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// The key a signature for `scope` is made with.
pub fn signing_key(secret: &str, scope: &Scope) -> hmac::Key {
    let step = |key: &[u8], data: &str| {
        hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), data.as_bytes())
    };
    let k_date = step(format!("AWS4{secret}").as_bytes(), &scope.date);
    let k_region = step(k_date.as_ref(), &scope.region);
    let k_service = step(k_region.as_ref(), &scope.service);
    let k_signing = step(k_service.as_ref(), "aws4_request");
    hmac::Key::new(hmac::HMAC_SHA256, k_signing.as_ref())
}

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex::encode(digest::digest(&digest::SHA256, data))
}

/// URI-encodes `s` as SigV4 does: unreserved characters stay, everything
/// else becomes `%XX`; `/` stays when `keep_slash`.
pub fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |c: u8| (c as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The canonical query string of a raw query (`a=1&b=2`): parameters
/// decoded, encoded again, sorted by name then value.
pub fn canonical_query(query: &str) -> String {
    let mut pairs: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (
                uri_encode(&percent_decode(k), false),
                uri_encode(&percent_decode(v), false),
            )
        })
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

fn header_value(headers: &HeaderMap, name: &str) -> Option<String> {
    let values: Vec<String> = headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    (!values.is_empty()).then(|| values.join(","))
}

/// What a request looks like to SigV4.
#[derive(Debug, Clone)]
pub struct Canonical<'a> {
    /// `GET`, `POST`, ...
    pub method: &'a str,
    /// The path as sent (already percent-encoded).
    pub path: &'a str,
    /// The raw query, without `?`.
    pub query: &'a str,
    /// The payload's hex SHA-256, or [`UNSIGNED_PAYLOAD`].
    pub payload_hash: &'a str,
    /// The request's authority (`host:port`) when it came over HTTP/2,
    /// which carries it as the `:authority` pseudo-header rather than a
    /// `Host` header: the value of a signed `:authority` (what SDKs sign
    /// over HTTP/2, the JavaScript SDK's Kinesis client among them), and of
    /// a signed `host` the request has no header for.
    pub authority: Option<&'a str>,
}

impl Canonical<'_> {
    /// The canonical request over `signed` (lowercase header names, sorted)
    /// of `headers`, or the name of a signed header the request lacks.
    ///
    /// The path is encoded once more, as SigV4 asks of every service but S3.
    pub fn text(&self, headers: &HeaderMap, signed: &[String]) -> Result<String, String> {
        let mut out = String::with_capacity(256);
        out.push_str(self.method);
        out.push('\n');
        let path = if self.path.is_empty() { "/" } else { self.path };
        out.push_str(&uri_encode(path, true));
        out.push('\n');
        out.push_str(&canonical_query(self.query));
        out.push('\n');
        for name in signed {
            let value = header_value(headers, name)
                .or_else(|| match name.as_str() {
                    ":authority" | "host" => self.authority.map(str::to_string),
                    _ => None,
                })
                .ok_or_else(|| name.clone())?;
            out.push_str(name);
            out.push(':');
            out.push_str(&value);
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&signed.join(";"));
        out.push('\n');
        out.push_str(self.payload_hash);
        Ok(out)
    }
}

/// The string a signature is made over.
pub fn string_to_sign(amz_date: &str, scope: &Scope, canonical_request: &str) -> String {
    format!(
        "{ALGORITHM}\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request.as_bytes())
    )
}

/// A parsed `Authorization: AWS4-HMAC-SHA256 ...` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization {
    /// The access key id.
    pub access_key_id: String,
    /// The credential scope.
    pub scope: Scope,
    /// Lowercase names of the signed headers, as listed.
    pub signed_headers: Vec<String>,
    /// The signature, decoded.
    pub signature: Vec<u8>,
}

impl Authorization {
    /// Parses the header's value.
    pub fn parse(value: &str) -> Result<Authorization, SigError> {
        let bad = |what: &str| SigError::Incomplete(what.to_string());
        let rest = value
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| bad(&format!("must start with {ALGORITHM}")))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = Some(v);
            }
        }
        let credential = credential.ok_or_else(|| bad("Credential= is missing"))?;
        let signed = signed.ok_or_else(|| bad("SignedHeaders= is missing"))?;
        let signature = signature.ok_or_else(|| bad("Signature= is missing"))?;
        let parts: Vec<&str> = credential.split('/').collect();
        let [akid, date, region, service, "aws4_request"] = parts.as_slice() else {
            return Err(bad(
                "Credential= must be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
            ));
        };
        if akid.is_empty()
            || akid.len() > 128
            || date.len() != 8
            || !date.bytes().all(|b| b.is_ascii_digit())
            || region.is_empty()
            || service.is_empty()
        {
            return Err(bad(
                "Credential= must be ACCESS_KEY_ID/YYYYMMDD/REGION/SERVICE/aws4_request",
            ));
        }
        let signed_headers: Vec<String> = signed.split(';').map(str::to_string).collect();
        if signed_headers.iter().any(|h| h.is_empty())
            || signed_headers.windows(2).any(|w| w[0] >= w[1])
            || signed_headers
                .iter()
                .any(|h| h.bytes().any(|b| b.is_ascii_uppercase()))
        {
            return Err(bad(
                "SignedHeaders= must list lowercase header names, sorted, separated by ';'",
            ));
        }
        if !signed_headers.iter().any(|h| h == DATE_HEADER) {
            return Err(bad("SignedHeaders= must include x-amz-date"));
        }
        let signature = hex::decode(signature)
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or_else(|| bad("Signature= must be 64 hexadecimal digits"))?;
        Ok(Authorization {
            access_key_id: akid.to_string(),
            scope: Scope {
                date: date.to_string(),
                region: region.to_string(),
                service: service.to_string(),
            },
            signed_headers,
            signature,
        })
    }
}

/// A signed request, read from its headers and ready to check against the
/// secret of [`Signed::authorization`]'s access key.
#[derive(Debug, Clone)]
pub struct Signed {
    /// Who signed, and how.
    pub authorization: Authorization,
    /// The `x-amz-date`.
    pub amz_date: String,
    string_to_sign: String,
}

impl Signed {
    /// Reads the signature of a request and builds what it must have been
    /// made over. `now_ms` bounds the signing time; `service`, when given,
    /// is the only service name accepted in the scope.
    pub fn read(
        canonical: &Canonical<'_>,
        headers: &HeaderMap,
        now_ms: u64,
        service: Option<&str>,
    ) -> Result<Signed, SigError> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(SigError::Missing)?
            .to_str()
            .map_err(|_| SigError::Incomplete("must be ASCII".into()))?;
        let authorization = Authorization::parse(value)?;
        if let Some(s) = service {
            if authorization.scope.service != s {
                return Err(SigError::Incomplete(format!(
                    "Credential= names service {:?}; this endpoint takes {s:?}",
                    authorization.scope.service
                )));
            }
        }
        let amz_date = header_value(headers, DATE_HEADER)
            .ok_or_else(|| SigError::Expired("the x-amz-date header is missing".into()))?;
        let signed_ms = parse_amz_date(&amz_date).ok_or_else(|| {
            SigError::Expired(format!(
                "x-amz-date: must be YYYYMMDDTHHMMSSZ, got {:?}",
                cut(&amz_date)
            ))
        })?;
        if !amz_date.starts_with(&authorization.scope.date) {
            return Err(SigError::Incomplete(format!(
                "the Credential= date {} is not the x-amz-date's day",
                authorization.scope.date
            )));
        }
        if signed_ms.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(SigError::Expired(format!(
                "signature expired: signed at {amz_date}, {} s from the server's time {} (the limit is {} s); check the client's clock",
                signed_ms.abs_diff(now_ms) / 1000,
                format_amz_date(now_ms),
                MAX_SKEW_MS / 1000
            )));
        }
        let text = canonical
            .text(headers, &authorization.signed_headers)
            .map_err(|h| SigError::Incomplete(format!("signed header {h:?} is missing")))?;
        let string_to_sign = string_to_sign(&amz_date, &authorization.scope, &text);
        Ok(Signed {
            authorization,
            amz_date,
            string_to_sign,
        })
    }

    /// Checks the signature against `secret` (in constant time).
    pub fn verify(&self, secret: &str) -> Result<(), SigError> {
        let key = signing_key(secret, &self.authorization.scope);
        hmac::verify(
            &key,
            self.string_to_sign.as_bytes(),
            &self.authorization.signature,
        )
        .map_err(|_| SigError::Mismatch)
    }
}

fn cut(s: &str) -> &str {
    match s.char_indices().nth(32) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// Signs a request: returns the `Authorization` header for `canonical` over
/// the `signed` headers of `headers` (which must include `x-amz-date`, set to
/// `amz_date`).
pub fn sign(
    access_key_id: &str,
    secret: &str,
    scope: &Scope,
    amz_date: &str,
    canonical: &Canonical<'_>,
    headers: &HeaderMap,
    signed: &[String],
) -> Result<String, String> {
    let text = canonical.text(headers, signed)?;
    let sts = string_to_sign(amz_date, scope, &text);
    let signature = hmac::sign(&signing_key(secret, scope), sts.as_bytes());
    Ok(format!(
        "{ALGORITHM} Credential={access_key_id}/{scope}, SignedHeaders={}, Signature={}",
        signed.join(";"),
        hex::encode(signature.as_ref())
    ))
}

/// `YYYYMMDDTHHMMSSZ` for `ms` since the Unix epoch.
pub fn format_amz_date(ms: u64) -> String {
    let secs = (ms / 1000) as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Milliseconds since the Unix epoch of a `YYYYMMDDTHHMMSSZ` time.
pub fn parse_amz_date(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let t = s.get(r)?;
        t.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| t.parse().ok())?
    };
    let (y, mo, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (h, mi, se) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
        return None;
    }
    let secs = days_from_civil(y, mo, d) * 86_400 + h * 3600 + mi * 60 + se;
    u64::try_from(secs).ok().map(|s| s * 1000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    /// The worked example of AWS's Signature Version 4 documentation
    /// (IAM ListUsers, 2015-08-30).
    fn aws_example() -> (HeaderMap, Canonical<'static>, Scope) {
        let mut h = HeaderMap::new();
        h.insert(
            "content-type",
            HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
        );
        h.insert("host", HeaderValue::from_static("iam.amazonaws.com"));
        h.insert(DATE_HEADER, HeaderValue::from_static("20150830T123600Z"));
        let c = Canonical {
            method: "GET",
            path: "/",
            query: "Action=ListUsers&Version=2010-05-08",
            payload_hash: "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            authority: None,
        };
        let scope = Scope {
            date: "20150830".into(),
            region: "us-east-1".into(),
            service: "iam".into(),
        };
        (h, c, scope)
    }

    const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

    #[test]
    fn the_aws_documentation_example_signs_to_its_published_values() {
        let (h, c, scope) = aws_example();
        let signed: Vec<String> = ["content-type", "host", "x-amz-date"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let text = c.text(&h, &signed).unwrap();
        assert_eq!(
            sha256_hex(text.as_bytes()),
            "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59"
        );
        // The signing key the documentation derives for this scope.
        let k = signing_key(EXAMPLE_SECRET, &scope);
        let probe = hmac::sign(&k, b"");
        let expected_key =
            hex::decode("c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9")
                .unwrap();
        assert_eq!(
            probe.as_ref(),
            hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &expected_key), b"").as_ref()
        );
        let header = sign(
            "AKIDEXAMPLE",
            EXAMPLE_SECRET,
            &scope,
            "20150830T123600Z",
            &c,
            &h,
            &signed,
        )
        .unwrap();
        assert!(
            header.ends_with(
                "Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
            ),
            "{header}"
        );
    }

    fn signed_headers(now_ms: u64) -> (HeaderMap, Canonical<'static>) {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/grpc"));
        h.insert(
            DATE_HEADER,
            HeaderValue::from_str(&format_amz_date(now_ms)).unwrap(),
        );
        let c = Canonical {
            method: "POST",
            path: "/sluice.v1.Queues/SendMessage",
            query: "",
            payload_hash: UNSIGNED_PAYLOAD,
            authority: None,
        };
        let scope = Scope {
            date: format_amz_date(now_ms)[..8].to_string(),
            region: "us-east-1".into(),
            service: GRPC_SERVICE.into(),
        };
        let signed = vec!["content-type".to_string(), DATE_HEADER.to_string()];
        let auth = sign(
            "AK",
            "secret",
            &scope,
            &format_amz_date(now_ms),
            &c,
            &h,
            &signed,
        )
        .unwrap();
        h.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_str(&auth).unwrap(),
        );
        (h, c)
    }

    #[test]
    fn an_http2_request_signs_its_authority_as_the_pseudo_header_or_as_host() {
        let now = 1_764_700_000_000;
        let date = format_amz_date(now);
        let scope = Scope {
            date: date[..8].to_string(),
            region: "us-east-1".into(),
            service: "kinesis".into(),
        };
        let mut h = HeaderMap::new();
        h.insert(DATE_HEADER, HeaderValue::from_str(&date).unwrap());
        let c = Canonical {
            method: "POST",
            path: "/",
            query: "",
            payload_hash: UNSIGNED_PAYLOAD,
            authority: Some("127.0.0.1:7070"),
        };
        for name in [":authority", "host"] {
            // What the client signed: the authority it sent, as a header.
            let mut sent = h.clone();
            sent.insert(
                "x-signed-authority",
                HeaderValue::from_static("127.0.0.1:7070"),
            );
            let as_sent = Canonical {
                authority: None,
                ..c.clone()
            };
            let mut text = as_sent
                .text(&sent, &["x-signed-authority".into(), DATE_HEADER.into()])
                .unwrap();
            text = text.replace("x-signed-authority", name);
            let signature = hmac::sign(
                &signing_key("secret", &scope),
                string_to_sign(&date, &scope, &text).as_bytes(),
            );
            let mut received = h.clone();
            received.insert(
                http::header::AUTHORIZATION,
                HeaderValue::from_str(&format!(
                    "{ALGORITHM} Credential=AK/{scope}, SignedHeaders={name};{DATE_HEADER}, Signature={}",
                    hex::encode(signature.as_ref())
                ))
                .unwrap(),
            );
            Signed::read(&c, &received, now, Some("kinesis"))
                .unwrap()
                .verify("secret")
                .unwrap();
            // Without the authority (HTTP/1.1 has none in its URI) the
            // signed header is missing.
            let without = Canonical {
                authority: None,
                ..c.clone()
            };
            let err = Signed::read(&without, &received, now, Some("kinesis")).unwrap_err();
            assert_eq!(err.code(), "IncompleteSignature", "{name}");
        }
    }

    #[test]
    fn a_signed_request_verifies_and_any_change_fails() {
        let now = 1_764_700_000_000;
        let (h, c) = signed_headers(now);
        let s = Signed::read(&c, &h, now, Some(GRPC_SERVICE)).unwrap();
        assert_eq!(s.authorization.access_key_id, "AK");
        s.verify("secret").unwrap();
        assert_eq!(s.verify("Secret"), Err(SigError::Mismatch));
        // Another method path: the signature no longer matches.
        let other = Canonical {
            path: "/sluice.v1.Queues/DeleteQueue",
            ..c.clone()
        };
        let s = Signed::read(&other, &h, now, None).unwrap();
        assert_eq!(s.verify("secret"), Err(SigError::Mismatch));
        // A changed signed header.
        let mut changed = h.clone();
        changed.insert("content-type", HeaderValue::from_static("application/json"));
        let s = Signed::read(&c, &changed, now, None).unwrap();
        assert_eq!(s.verify("secret"), Err(SigError::Mismatch));
        // Wrong service.
        let err = Signed::read(&c, &h, now, Some("sqs")).unwrap_err();
        assert_eq!(err.code(), "IncompleteSignature");
    }

    #[test]
    fn stale_missing_and_malformed_signatures_are_told_apart() {
        let now = 1_764_700_000_000;
        let (h, c) = signed_headers(now);
        let late = Signed::read(&c, &h, now + MAX_SKEW_MS + 1000, None).unwrap_err();
        assert_eq!(late.code(), "RequestExpired");
        assert!(
            late.to_string().contains("check the client's clock"),
            "{late}"
        );
        assert!(Signed::read(&c, &h, now + MAX_SKEW_MS - 1000, None).is_ok());
        assert_eq!(
            Signed::read(&c, &HeaderMap::new(), now, None).unwrap_err(),
            SigError::Missing
        );
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=AK/2026/us-east-1/sluice/aws4_request, SignedHeaders=x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AK/20261202/us-east-1/sluice/aws4_request, SignedHeaders=host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AK/20261202/us-east-1/sluice/aws4_request, SignedHeaders=x-amz-date;host, Signature=00",
            "AWS4-HMAC-SHA256 Credential=AK/20261202/us-east-1/sluice/aws4_request, SignedHeaders=x-amz-date, Signature=zz",
        ] {
            let err = Authorization::parse(bad).unwrap_err();
            assert_eq!(err.code(), "IncompleteSignature", "{bad}: {err}");
        }
    }

    #[test]
    fn amz_dates_round_trip() {
        for ms in [0, 1_440_938_160_000, 1_764_700_000_000, 4_102_444_800_000] {
            let s = format_amz_date(ms);
            assert_eq!(parse_amz_date(&s), Some(ms), "{s}");
        }
        assert_eq!(format_amz_date(1_440_938_160_000), "20150830T123600Z");
        for bad in [
            "20150830T123600",
            "2015083OT123600Z",
            "20151330T123600Z",
            "",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }

    #[test]
    fn queries_and_paths_are_canonicalised_as_sigv4_says() {
        assert_eq!(canonical_query("b=2&a=1&a=0"), "a=0&a=1&b=2");
        assert_eq!(canonical_query("k=a%20b&e="), "e=&k=a%20b");
        assert_eq!(canonical_query("k=a b"), "k=a%20b");
        assert_eq!(uri_encode("/a b/c~", true), "/a%20b/c~");
        assert_eq!(uri_encode("/a%20b", true), "/a%2520b");
    }
}
