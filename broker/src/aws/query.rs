//! The AWS query protocol's pieces: form bodies in, XML out.

use axum::response::{IntoResponse, Response};

use super::error::AwsError;

/// The form content type query-protocol requests carry.
pub const FORM: &str = "application/x-www-form-urlencoded";

/// The `key=value&...` pairs of a form body, percent-decoded (`+` is a
/// space); `None` when a value is not UTF-8 after decoding.
pub fn form(body: &[u8]) -> Option<Vec<(String, String)>> {
    let text = std::str::from_utf8(body).ok()?;
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            Some((decode(k)?, decode(v)?))
        })
        .collect()
}

fn decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = s.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `s` with XML's five special characters escaped.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

/// The error for an action this endpoint does not serve.
pub fn invalid_action(action: &str) -> AwsError {
    AwsError {
        http_status: 400,
        code: "InvalidAction".into(),
        message: format!(
            "{} is not an action Sluice serves over the query protocol",
            crate::error::cut(action, 128)
        ),
    }
}

/// An XML answer.
pub fn xml(body: String) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

/// An error in the query protocol's XML shape.
pub fn error(e: &AwsError, request_id: &str) -> Response {
    let kind = if e.sender_fault() {
        "Sender"
    } else {
        "Receiver"
    };
    let body = format!(
        "<ErrorResponse><Error><Type>{kind}</Type><Code>{}</Code><Message>{}</Message>\
         </Error><RequestId>{request_id}</RequestId></ErrorResponse>",
        escape(&e.code),
        escape(&e.message)
    );
    let status = http::StatusCode::from_u16(e.http_status).unwrap_or(http::StatusCode::BAD_REQUEST);
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/xml"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_is_percent_decoded_and_bad_escapes_are_refused() {
        assert_eq!(
            form(b"Action=GetCallerIdentity&Version=2011-06-15&X=a+b%2Fc").unwrap(),
            vec![
                ("Action".to_string(), "GetCallerIdentity".to_string()),
                ("Version".to_string(), "2011-06-15".to_string()),
                ("X".to_string(), "a b/c".to_string()),
            ]
        );
        assert_eq!(form(b"A=%zz"), None);
        assert_eq!(form(b"A=%4"), None);
        assert_eq!(escape("<a&'\">"), "&lt;a&amp;&apos;&quot;&gt;");
    }
}
