//! Kinesis's CBOR protocol (`application/x-amz-cbor-1.1`, the Java SDK's
//! default): the same operations and members as AWS JSON 1.1, in CBOR.
//! A request is turned into the JSON shape the handlers read (byte
//! strings become base64 text, as JSON carries blobs; a timestamp, tag 1
//! with epoch milliseconds as the SDK writes it, becomes seconds) and the
//! answer back (`Data` as a byte string, `*Timestamp` members as tag 1
//! with epoch milliseconds).

use base64::Engine;
use ciborium::value::Value as Cbor;
use serde_json::{Map, Number, Value};

use super::error::AwsError;

/// The content type of CBOR requests and answers.
pub const CONTENT_TYPE: &str = "application/x-amz-cbor-1.1";

/// The deepest nesting a request may have: Kinesis's shapes are three
/// levels deep; this bounds the conversion's recursion.
const DEPTH_MAX: usize = 16;

/// Whether `headers` say the body is CBOR.
pub fn is_cbor(headers: &http::HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with(CONTENT_TYPE))
}

/// A CBOR request body as the JSON shape the handlers read.
pub fn decode(body: &[u8]) -> Result<Value, AwsError> {
    if body.is_empty() {
        return Ok(Value::Object(Map::new()));
    }
    let cbor: Cbor = ciborium::de::from_reader_with_recursion_limit(body, DEPTH_MAX)
        .map_err(|e| AwsError::serialization(format!("the body is not CBOR: {e}")))?;
    to_json(cbor, 0)
}

fn to_json(cbor: Cbor, depth: usize) -> Result<Value, AwsError> {
    if depth > DEPTH_MAX {
        return Err(AwsError::serialization(format!(
            "the body nests deeper than {DEPTH_MAX} levels"
        )));
    }
    Ok(match cbor {
        Cbor::Null => Value::Null,
        Cbor::Bool(b) => Value::Bool(b),
        Cbor::Text(s) => Value::String(s),
        Cbor::Bytes(b) => Value::String(base64::engine::general_purpose::STANDARD.encode(b)),
        Cbor::Integer(i) => {
            let n = i128::from(i);
            match (i64::try_from(n), u64::try_from(n)) {
                (Ok(n), _) => Value::Number(n.into()),
                (_, Ok(n)) => Value::Number(n.into()),
                _ => return Err(AwsError::serialization("an integer is out of range")),
            }
        }
        Cbor::Float(f) => Number::from_f64(f)
            .map(Value::Number)
            .ok_or_else(|| AwsError::serialization("a number is not finite"))?,
        // Epoch time: the SDK writes milliseconds; the JSON shape has
        // seconds.
        Cbor::Tag(1, inner) => {
            let ms = match *inner {
                Cbor::Integer(i) => i128::from(i) as f64,
                Cbor::Float(f) => f,
                _ => return Err(AwsError::serialization("a timestamp must be a number")),
            };
            Number::from_f64(ms / 1000.0)
                .map(Value::Number)
                .ok_or_else(|| AwsError::serialization("a timestamp is not finite"))?
        }
        Cbor::Tag(_, inner) => to_json(*inner, depth + 1)?,
        Cbor::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| to_json(v, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Cbor::Map(entries) => {
            let mut out = Map::new();
            for (k, v) in entries {
                let Cbor::Text(k) = k else {
                    return Err(AwsError::serialization("a map key must be text"));
                };
                out.insert(k, to_json(v, depth + 1)?);
            }
            Value::Object(out)
        }
        _ => return Err(AwsError::serialization("a value CBOR cannot carry here")),
    })
}

/// An answer in the JSON shape, as CBOR.
pub fn encode(answer: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing to a Vec cannot fail, and every JSON value has a CBOR form.
    ciborium::ser::into_writer(&to_cbor(None, answer), &mut out)
        .expect("a JSON value encodes as CBOR");
    out
}

fn to_cbor(member: Option<&str>, value: &Value) -> Cbor {
    match value {
        Value::Null => Cbor::Null,
        Value::Bool(b) => Cbor::Bool(*b),
        Value::Number(n) if member.is_some_and(|m| m.ends_with("Timestamp")) => {
            let ms = (n.as_f64().unwrap_or(0.0) * 1000.0).round() as i64;
            Cbor::Tag(1, Box::new(Cbor::Integer(ms.into())))
        }
        Value::Number(n) => match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Cbor::Integer(i.into()),
            (_, Some(u)) => Cbor::Integer(u.into()),
            _ => Cbor::Float(n.as_f64().unwrap_or(0.0)),
        },
        // Blobs travel as bytes in CBOR: in Kinesis's answers, `Data`.
        Value::String(s) if member == Some("Data") => Cbor::Bytes(
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .unwrap_or_else(|_| s.as_bytes().to_vec()),
        ),
        Value::String(s) => Cbor::Text(s.clone()),
        Value::Array(items) => Cbor::Array(items.iter().map(|v| to_cbor(member, v)).collect()),
        Value::Object(members) => Cbor::Map(
            members
                .iter()
                .map(|(k, v)| (Cbor::Text(k.clone()), to_cbor(Some(k), v)))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cbor(value: &Cbor) -> Vec<u8> {
        let mut out = Vec::new();
        ciborium::ser::into_writer(value, &mut out).unwrap();
        out
    }

    #[test]
    fn a_request_reads_as_its_json_shape() {
        let request = Cbor::Map(vec![
            (Cbor::Text("StreamName".into()), Cbor::Text("s".into())),
            (Cbor::Text("Data".into()), Cbor::Bytes(vec![0, 255])),
            (
                Cbor::Text("Timestamp".into()),
                Cbor::Tag(1, Box::new(Cbor::Integer(1_700_000_000_500i64.into()))),
            ),
            (Cbor::Text("Limit".into()), Cbor::Integer(10.into())),
        ]);
        assert_eq!(
            decode(&cbor(&request)).unwrap(),
            serde_json::json!({"StreamName": "s", "Data": "AP8=", "Timestamp": 1_700_000_000.5, "Limit": 10})
        );
        assert_eq!(decode(b"").unwrap(), serde_json::json!({}));
        assert!(decode(&[0xff, 0x00]).is_err());
        let deep = (0..40).fold(Cbor::Null, |v, _| Cbor::Array(vec![v]));
        assert!(decode(&cbor(&deep)).is_err());
    }

    #[test]
    fn an_answer_carries_data_as_bytes_and_timestamps_as_epoch_milliseconds() {
        let answer = serde_json::json!({
            "Records": [{"Data": "AP8=", "ApproximateArrivalTimestamp": 1_700_000_000.25, "PartitionKey": "k"}],
            "MillisBehindLatest": 0,
        });
        let back: Cbor = ciborium::de::from_reader(&encode(&answer)[..]).unwrap();
        let Cbor::Map(top) = back else { panic!() };
        let records = &top
            .iter()
            .find(|(k, _)| k == &Cbor::Text("Records".into()))
            .unwrap()
            .1;
        let Cbor::Array(records) = records else {
            panic!()
        };
        let Cbor::Map(record) = &records[0] else {
            panic!()
        };
        let get = |name: &str| {
            &record
                .iter()
                .find(|(k, _)| k == &Cbor::Text(name.into()))
                .unwrap()
                .1
        };
        assert_eq!(get("Data"), &Cbor::Bytes(vec![0, 255]));
        assert_eq!(
            get("ApproximateArrivalTimestamp"),
            &Cbor::Tag(1, Box::new(Cbor::Integer(1_700_000_000_250i64.into())))
        );
        assert_eq!(get("PartitionKey"), &Cbor::Text("k".into()));
    }
}
