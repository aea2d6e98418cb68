//! The JSON documents SNS delivers: the notification envelope and the
//! subscription confirmation request.
//!
//! Signatures are not produced: `SignatureVersion`, `Signature` and
//! `SigningCertURL` are left out, since Sluice has no certificate to sign
//! with (see docs/topics.md).

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use crate::queues::message::AttributeValue;
use crate::time::timestamp;

/// The fields of a notification.
pub struct Notification<'a> {
    /// Message id.
    pub message_id: &'a str,
    /// Topic ARN.
    pub topic_arn: &'a str,
    /// Subject, if any.
    pub subject: Option<&'a str>,
    /// The message text for this subscription.
    pub message: &'a str,
    /// State-machine time of the publish, ms.
    pub timestamp_ms: u64,
    /// Message attributes.
    pub attributes: &'a BTreeMap<String, AttributeValue>,
    /// FIFO topics: the sequence number.
    pub sequence_number: Option<&'a str>,
}

/// The JSON envelope of a notification.
pub fn notification(n: &Notification<'_>) -> String {
    let mut o = Map::new();
    o.insert("Type".into(), json!("Notification"));
    o.insert("MessageId".into(), json!(n.message_id));
    if let Some(s) = n.sequence_number {
        o.insert("SequenceNumber".into(), json!(s));
    }
    o.insert("TopicArn".into(), json!(n.topic_arn));
    if let Some(s) = n.subject {
        o.insert("Subject".into(), json!(s));
    }
    o.insert("Message".into(), json!(n.message));
    o.insert("Timestamp".into(), json!(timestamp(n.timestamp_ms)));
    if !n.attributes.is_empty() {
        let attrs: Map<String, Value> = n
            .attributes
            .iter()
            .map(|(k, v)| {
                let value = match (&v.string_value, &v.binary_value) {
                    (Some(s), _) => s.clone(),
                    (None, Some(b)) => base64(b),
                    (None, None) => String::new(),
                };
                (k.clone(), json!({"Type": v.data_type, "Value": value}))
            })
            .collect();
        o.insert("MessageAttributes".into(), Value::Object(attrs));
    }
    Value::Object(o).to_string()
}

/// The event a function subscribed to a topic is invoked with (the
/// `aws:sns` shape): the notification `body` (the JSON envelope, or for a
/// raw body a minimal one around it) as the record's `Sns`.
pub fn lambda_event(
    subscription_arn: &str,
    message_id: &str,
    topic_arn: &str,
    body: &str,
) -> String {
    let sns = match serde_json::from_str::<Value>(body) {
        Ok(Value::Object(o)) if o.get("Type") == Some(&json!("Notification")) => Value::Object(o),
        _ => json!({"Type": "Notification", "MessageId": message_id, "TopicArn": topic_arn,
                    "Message": body}),
    };
    json!({"Records": [{
        "EventSource": "aws:sns",
        "EventVersion": "1.0",
        "EventSubscriptionArn": subscription_arn,
        "Sns": sns,
    }]})
    .to_string()
}

/// The confirmation request an HTTP/S endpoint receives when subscribed.
pub fn confirmation(
    message_id: &str,
    topic_arn: &str,
    token: &str,
    subscribe_url: &str,
    timestamp_ms: u64,
) -> String {
    let mut o = Map::new();
    o.insert("Type".into(), json!("SubscriptionConfirmation"));
    o.insert("MessageId".into(), json!(message_id));
    o.insert("Token".into(), json!(token));
    o.insert("TopicArn".into(), json!(topic_arn));
    o.insert(
        "Message".into(),
        json!(format!(
            "You have chosen to subscribe to the topic {topic_arn}.\nTo confirm the subscription, visit the SubscribeURL included in this message."
        )),
    );
    o.insert("SubscribeURL".into(), json!(subscribe_url));
    o.insert("Timestamp".into(), json!(timestamp(timestamp_ms)));
    Value::Object(o).to_string()
}

/// Standard base64, padded (binary attributes; Lambda hashes and logs).
pub fn base64(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}

/// `%`-encodes a query parameter value.
pub fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// The URL a subscriber visits to confirm its subscription, on the node
/// reachable at `base_url`.
pub fn confirmation_url(base_url: &str, topic_arn: &str, token: &str) -> String {
    format!(
        "{base_url}/topics/confirm?TopicArn={}&Token={}",
        percent_encode(topic_arn),
        percent_encode(token)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_get_the_envelope_as_an_sns_record() {
        let body = r#"{"Type":"Notification","MessageId":"m1","TopicArn":"t","Message":"hi"}"#;
        let e: Value = serde_json::from_str(&lambda_event("t:s", "m1", "t", body)).unwrap();
        let r = &e["Records"][0];
        assert_eq!(r["EventSource"], "aws:sns");
        assert_eq!(r["EventSubscriptionArn"], "t:s");
        assert_eq!(r["Sns"]["Message"], "hi");
        assert_eq!(r["Sns"]["MessageId"], "m1");
        // A body that is not an envelope is wrapped in one.
        let e: Value = serde_json::from_str(&lambda_event("t:s", "m2", "t", "raw text")).unwrap();
        assert_eq!(e["Records"][0]["Sns"]["Message"], "raw text");
        assert_eq!(e["Records"][0]["Sns"]["MessageId"], "m2");
    }

    #[test]
    fn binary_attributes_are_base64() {
        assert_eq!(base64(b"Man"), "TWFu");
        assert_eq!(base64(b"Ma"), "TWE=");
        assert_eq!(base64(b"M"), "TQ==");
    }

    #[test]
    fn the_envelope_has_the_sns_fields() {
        let attrs = BTreeMap::from([(
            "color".to_string(),
            AttributeValue {
                data_type: "String".into(),
                string_value: Some("red".into()),
                binary_value: None,
            },
        )]);
        let text = notification(&Notification {
            message_id: "m-1",
            topic_arn: "arn:aws:sns:us-east-1:000000000000:t",
            subject: Some("hi"),
            message: "hello \"world\"",
            timestamp_ms: 0,
            attributes: &attrs,
            sequence_number: None,
        });
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["Type"], "Notification");
        assert_eq!(v["MessageId"], "m-1");
        assert_eq!(v["Subject"], "hi");
        assert_eq!(v["Message"], "hello \"world\"");
        assert_eq!(v["MessageAttributes"]["color"]["Value"], "red");
        assert_eq!(v["MessageAttributes"]["color"]["Type"], "String");
    }
}
