//! What the queue and stream pollers read from their lease and from a
//! function's answer alike: the filter patterns, how long an invocation may
//! take, and a partial batch response.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::Value;

use sluice_filter::{FilterPolicy, Scope};
use sluice_proto::v1 as pb;

/// The lease's filter patterns, compiled; `None` (said in the log) when
/// one does not parse: polling without it would consume what it should
/// pass, so the poller does not start.
pub fn compile_filters(lease: &pb::PollLease) -> Option<Vec<FilterPolicy>> {
    match lease
        .filters
        .iter()
        .map(|f| FilterPolicy::parse(f, Scope::MessageBody))
        .collect::<Result<Vec<_>, _>>()
    {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::error!(mapping = %lease.mapping_uuid, error = %e, "a filter pattern does not parse here: not polling");
            None
        }
    }
}

/// How long a poller waits for an invocation's answer: the function's
/// timeout, and time to find a worker and start the runtime (a lease from
/// an older node, without the timeout, gets Lambda's longest).
pub fn invoke_limit(lease: &pb::PollLease) -> Duration {
    let timeout = if lease.function_timeout_s == 0 {
        900
    } else {
        lease.function_timeout_s
    };
    Duration::from_secs(u64::from(timeout) + 60)
}

/// The message ids a function reported failed (`{"batchItemFailures":
/// [{"itemIdentifier": id}]}`); `None` fails the whole batch, as on Lambda:
/// an answer that cannot be read, that is not an object, or that names an
/// empty id or one not among `ids` (the messages it was handed). An empty
/// or null answer reports none.
pub fn reported_failures(payload: &[u8], ids: &HashSet<&str>) -> Option<HashSet<String>> {
    let v: Value = match serde_json::from_slice(payload) {
        Ok(v) => v,
        Err(_) if payload.is_empty() => return Some(HashSet::new()),
        Err(_) => return None,
    };
    let items = match &v {
        Value::Null => return Some(HashSet::new()),
        Value::Object(o) => match o.get("batchItemFailures") {
            None | Some(Value::Null) => return Some(HashSet::new()),
            Some(Value::Array(items)) => items,
            Some(_) => return None,
        },
        _ => return None,
    };
    items
        .iter()
        .map(|i| match i["itemIdentifier"].as_str() {
            Some(id) if !id.is_empty() && ids.contains(id) => Some(id.to_string()),
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reported_failures_follow_lambda() {
        let ids = HashSet::from(["a", "b"]);
        let rf = |p: &[u8]| reported_failures(p, &ids);
        let ok = rf(br#"{"batchItemFailures": [{"itemIdentifier": "a"}]}"#);
        assert_eq!(ok, Some(HashSet::from(["a".to_string()])));
        assert_eq!(rf(b"null"), Some(HashSet::new()));
        assert_eq!(rf(b""), Some(HashSet::new()));
        assert_eq!(rf(b"{}"), Some(HashSet::new()));
        assert_eq!(rf(br#"{"batchItemFailures": []}"#), Some(HashSet::new()));
        // Each of these fails the whole batch.
        for bad in [
            &br#"{"batchItemFailures": [{"x": 1}]}"#[..],
            br#"{"batchItemFailures": [{"itemIdentifier": ""}]}"#,
            br#"{"batchItemFailures": [{"itemIdentifier": "zz"}]}"#,
            br#"{"batchItemFailures": 3}"#,
            b"not json",
            br#""ok""#,
            b"[]",
        ] {
            assert_eq!(rf(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }
}
