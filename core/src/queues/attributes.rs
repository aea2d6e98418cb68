//! Queue attributes: parsing SQS's string attribute maps into typed values,
//! with the limits of the spec's queue table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;

/// Visibility timeout range, seconds.
pub const VISIBILITY_TIMEOUT_MAX: u32 = 43_200;
/// Queue and message delay range, seconds.
pub const DELAY_MAX: u32 = 900;
/// Retention range, seconds.
pub const RETENTION_MIN: u32 = 60;
/// Retention range, seconds.
pub const RETENTION_MAX: u32 = 1_209_600;
/// Settable maximum message size range, bytes.
pub const MESSAGE_SIZE_MIN: u32 = 1_024;
/// Settable maximum message size range, bytes.
pub const MESSAGE_SIZE_MAX: u32 = crate::limits::queues::MESSAGE_BYTES_MAX as u32;
/// Long-poll wait range, seconds.
pub const RECEIVE_WAIT_MAX: u32 = 20;
/// Redrive `maxReceiveCount` range.
pub const MAX_RECEIVE_COUNT_MAX: u32 = 1_000;

/// How FIFO deduplication ids are scoped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DedupScope {
    /// One deduplication space per queue (the default).
    Queue,
    /// One deduplication space per message group (high-throughput mode).
    MessageGroup,
}

impl DedupScope {
    /// How SQS spells it.
    fn spelling(self) -> &'static str {
        match self {
            DedupScope::Queue => "queue",
            DedupScope::MessageGroup => "messageGroup",
        }
    }
}

/// Where the FIFO throughput limit applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThroughputLimit {
    /// Per queue (the default).
    PerQueue,
    /// Per message group (high-throughput mode).
    PerMessageGroupId,
}

impl ThroughputLimit {
    /// How SQS spells it.
    fn spelling(self) -> &'static str {
        match self {
            ThroughputLimit::PerQueue => "perQueue",
            ThroughputLimit::PerMessageGroupId => "perMessageGroupId",
        }
    }
}

/// Where messages go after too many receives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RedrivePolicy {
    /// Name of the dead-letter queue.
    pub dead_letter_queue: String,
    /// Receives after which the next receive moves the message, 1-1000.
    pub max_receive_count: u32,
}

/// A queue's settings, with the defaults of SQS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueAttributes {
    /// FIFO queue (name ends in `.fifo`).
    pub fifo: bool,
    /// Seconds a received message stays hidden, 0-43200.
    pub visibility_timeout: u32,
    /// Seconds new messages stay hidden, 0-900.
    pub delay_seconds: u32,
    /// Seconds a message is kept, 60-1209600.
    pub retention_period: u32,
    /// Largest message body in bytes, 1024-1048576.
    pub maximum_message_size: u32,
    /// Default long-poll wait of a receive, 0-20 seconds.
    pub receive_wait_time: u32,
    /// FIFO: deduplicate by SHA-256 of the body when no id is given.
    pub content_based_deduplication: bool,
    /// FIFO: scope of deduplication.
    pub deduplication_scope: DedupScope,
    /// FIFO: scope of the throughput limit.
    pub fifo_throughput_limit: ThroughputLimit,
    /// Dead-letter redrive.
    pub redrive_policy: Option<RedrivePolicy>,
}

impl QueueAttributes {
    /// The defaults for a standard or FIFO queue.
    pub fn defaults(fifo: bool) -> Self {
        QueueAttributes {
            fifo,
            visibility_timeout: 30,
            delay_seconds: 0,
            retention_period: 345_600,
            maximum_message_size: MESSAGE_SIZE_MAX,
            receive_wait_time: 0,
            content_based_deduplication: false,
            deduplication_scope: DedupScope::Queue,
            fifo_throughput_limit: ThroughputLimit::PerQueue,
            redrive_policy: None,
        }
    }

    /// These attributes with `attrs` set.
    pub fn with(mut self, attrs: &[Attribute]) -> Self {
        for a in attrs {
            match a {
                Attribute::VisibilityTimeout(v) => self.visibility_timeout = *v,
                Attribute::DelaySeconds(v) => self.delay_seconds = *v,
                Attribute::MessageRetentionPeriod(v) => self.retention_period = *v,
                Attribute::MaximumMessageSize(v) => self.maximum_message_size = *v,
                Attribute::ReceiveMessageWaitTimeSeconds(v) => self.receive_wait_time = *v,
                Attribute::FifoQueue(v) => self.fifo = *v,
                Attribute::ContentBasedDeduplication(v) => self.content_based_deduplication = *v,
                Attribute::DeduplicationScope(v) => self.deduplication_scope = *v,
                Attribute::FifoThroughputLimit(v) => self.fifo_throughput_limit = *v,
                Attribute::RedrivePolicy(v) => self.redrive_policy = v.clone(),
            }
        }
        self
    }

    /// True when every attribute in `attrs` already has that value here.
    pub fn matches(&self, attrs: &[Attribute]) -> bool {
        self.clone().with(attrs) == *self
    }

    /// The attributes as SQS names them, with string values.
    pub fn to_map(&self, arn_of: impl Fn(&str) -> String) -> BTreeMap<String, String> {
        let mut m = BTreeMap::new();
        m.insert(
            "VisibilityTimeout".into(),
            self.visibility_timeout.to_string(),
        );
        m.insert("DelaySeconds".into(), self.delay_seconds.to_string());
        m.insert(
            "MessageRetentionPeriod".into(),
            self.retention_period.to_string(),
        );
        m.insert(
            "MaximumMessageSize".into(),
            self.maximum_message_size.to_string(),
        );
        m.insert(
            "ReceiveMessageWaitTimeSeconds".into(),
            self.receive_wait_time.to_string(),
        );
        if self.fifo {
            m.insert("FifoQueue".into(), "true".into());
            m.insert(
                "ContentBasedDeduplication".into(),
                self.content_based_deduplication.to_string(),
            );
            m.insert(
                "DeduplicationScope".into(),
                self.deduplication_scope.spelling().into(),
            );
            m.insert(
                "FifoThroughputLimit".into(),
                self.fifo_throughput_limit.spelling().into(),
            );
        }
        if let Some(r) = &self.redrive_policy {
            m.insert(
                "RedrivePolicy".into(),
                format!(
                    "{{\"deadLetterTargetArn\":\"{}\",\"maxReceiveCount\":{}}}",
                    arn_of(&r.dead_letter_queue),
                    r.max_receive_count
                ),
            );
        }
        m
    }
}

/// One attribute set by a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Attribute {
    /// `VisibilityTimeout`
    VisibilityTimeout(u32),
    /// `DelaySeconds`
    DelaySeconds(u32),
    /// `MessageRetentionPeriod`
    MessageRetentionPeriod(u32),
    /// `MaximumMessageSize`
    MaximumMessageSize(u32),
    /// `ReceiveMessageWaitTimeSeconds`
    ReceiveMessageWaitTimeSeconds(u32),
    /// `FifoQueue`
    FifoQueue(bool),
    /// `ContentBasedDeduplication`
    ContentBasedDeduplication(bool),
    /// `DeduplicationScope`
    DeduplicationScope(DedupScope),
    /// `FifoThroughputLimit`
    FifoThroughputLimit(ThroughputLimit),
    /// `RedrivePolicy` (empty string removes it)
    RedrivePolicy(Option<RedrivePolicy>),
}

fn field(name: &str) -> String {
    format!("attributes.{name}")
}

/// The SQS error for a value attribute `name` cannot take.
fn invalid_value(name: &str, rule: impl Into<String>) -> DomainError {
    DomainError::invalid_with_code("InvalidAttributeValue", field(name), rule)
}

fn parse_int(name: &str, value: &str, min: u32, max: u32) -> Result<u32, DomainError> {
    let rule = || format!("must be an integer from {min} to {max}, got {value:?}");
    let v: u32 = value
        .trim()
        .parse()
        .map_err(|_| invalid_value(name, rule()))?;
    if v < min || v > max {
        return Err(invalid_value(name, rule()));
    }
    Ok(v)
}

/// Which of the two `choices` `value` of attribute `name` spells (as
/// `spelling` spells them).
fn parse_either<T: Copy>(
    name: &str,
    value: &str,
    choices: [T; 2],
    spelling: fn(T) -> &'static str,
) -> Result<T, DomainError> {
    let [a, b] = choices.map(spelling);
    if value == a {
        Ok(choices[0])
    } else if value == b {
        Ok(choices[1])
    } else {
        Err(invalid_value(
            name,
            format!("must be \"{a}\" or \"{b}\", got {value:?}"),
        ))
    }
}

fn parse_bool(name: &str, value: &str) -> Result<bool, DomainError> {
    parse_either(
        name,
        value,
        [true, false],
        |b| if b { "true" } else { "false" },
    )
}

/// Parses an SQS queue ARN and returns the queue name.
pub fn queue_name_from_arn(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let (arn_lit, partition, service) = (parts.next()?, parts.next()?, parts.next()?);
    let (_region, _account, name) = (parts.next()?, parts.next()?, parts.next()?);
    (arn_lit == "arn" && !partition.is_empty() && service == "sqs" && !name.is_empty())
        .then_some(name)
}

fn parse_redrive_policy(value: &str) -> Result<Option<RedrivePolicy>, DomainError> {
    let name = "RedrivePolicy";
    if value.trim().is_empty() {
        return Ok(None);
    }
    let bad = |rule: String| invalid_value(name, rule);
    let json: serde_json::Value =
        serde_json::from_str(value).map_err(|e| bad(format!("must be a JSON object: {e}")))?;
    let obj = json
        .as_object()
        .ok_or_else(|| bad("must be a JSON object".into()))?;
    for key in obj.keys() {
        if key != "deadLetterTargetArn" && key != "maxReceiveCount" {
            return Err(bad(format!("unknown key {key:?}")));
        }
    }
    let arn = obj
        .get("deadLetterTargetArn")
        .and_then(|v| v.as_str())
        .ok_or_else(|| bad("deadLetterTargetArn is required and must be a string".into()))?;
    let dlq = queue_name_from_arn(arn).ok_or_else(|| {
        bad(format!(
            "deadLetterTargetArn {arn:?} is not an SQS queue ARN"
        ))
    })?;
    super::validate_name("attributes.RedrivePolicy.deadLetterTargetArn", dlq)?;
    let count = match obj.get("maxReceiveCount") {
        Some(serde_json::Value::Number(n)) => n.as_u64(),
        Some(serde_json::Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .filter(|n| (1..=u64::from(MAX_RECEIVE_COUNT_MAX)).contains(n))
    .ok_or_else(|| {
        bad(format!(
            "maxReceiveCount is required and must be an integer from 1 to {MAX_RECEIVE_COUNT_MAX}"
        ))
    })?;
    Ok(Some(RedrivePolicy {
        dead_letter_queue: dlq.to_string(),
        max_receive_count: count as u32,
    }))
}

/// Parses an SQS attribute map for a queue that is FIFO or not (decided by
/// its name). Attributes that only FIFO queues have are refused on standard
/// queues, as SQS does.
pub fn parse(attrs: &BTreeMap<String, String>, fifo: bool) -> Result<Vec<Attribute>, DomainError> {
    let mut out = Vec::with_capacity(attrs.len());
    for (name, value) in attrs {
        let fifo_only = || {
            if fifo {
                Ok(())
            } else {
                Err(DomainError::invalid_with_code(
                    "InvalidAttributeName",
                    field(name),
                    "is only valid on FIFO queues (names ending in .fifo)",
                ))
            }
        };
        let int = |min, max| parse_int(name, value, min, max);
        let a = match name.as_str() {
            "VisibilityTimeout" => Attribute::VisibilityTimeout(int(0, VISIBILITY_TIMEOUT_MAX)?),
            "DelaySeconds" => Attribute::DelaySeconds(int(0, DELAY_MAX)?),
            "MessageRetentionPeriod" => {
                Attribute::MessageRetentionPeriod(int(RETENTION_MIN, RETENTION_MAX)?)
            }
            "MaximumMessageSize" => {
                Attribute::MaximumMessageSize(int(MESSAGE_SIZE_MIN, MESSAGE_SIZE_MAX)?)
            }
            "ReceiveMessageWaitTimeSeconds" => {
                Attribute::ReceiveMessageWaitTimeSeconds(int(0, RECEIVE_WAIT_MAX)?)
            }
            "FifoQueue" => {
                let v = parse_bool(name, value)?;
                if v != fifo {
                    return Err(invalid_value(
                        name,
                        "must be \"true\" exactly when the queue name ends in .fifo",
                    ));
                }
                Attribute::FifoQueue(v)
            }
            "ContentBasedDeduplication" => {
                fifo_only()?;
                Attribute::ContentBasedDeduplication(parse_bool(name, value)?)
            }
            "DeduplicationScope" => {
                fifo_only()?;
                Attribute::DeduplicationScope(parse_either(
                    name,
                    value,
                    [DedupScope::Queue, DedupScope::MessageGroup],
                    DedupScope::spelling,
                )?)
            }
            "FifoThroughputLimit" => {
                fifo_only()?;
                Attribute::FifoThroughputLimit(parse_either(
                    name,
                    value,
                    [
                        ThroughputLimit::PerQueue,
                        ThroughputLimit::PerMessageGroupId,
                    ],
                    ThroughputLimit::spelling,
                )?)
            }
            "RedrivePolicy" => Attribute::RedrivePolicy(parse_redrive_policy(value)?),
            _ => {
                return Err(DomainError::invalid_with_code(
                    "InvalidAttributeName",
                    field(name),
                    "is not a queue attribute Sluice knows",
                ))
            }
        };
        out.push(a);
    }
    Ok(out)
}

/// Checks rules that involve several attributes at once.
pub fn check_combination(attrs: &QueueAttributes) -> Result<(), DomainError> {
    if attrs.fifo_throughput_limit == ThroughputLimit::PerMessageGroupId
        && attrs.deduplication_scope != DedupScope::MessageGroup
    {
        return Err(DomainError::invalid_with_code(
            "InvalidAttributeValue",
            "attributes.FifoThroughputLimit",
            "perMessageGroupId requires DeduplicationScope messageGroup",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::map;

    #[test]
    fn parses_every_standard_attribute_at_its_bounds() {
        let attrs = parse(
            &map(&[
                ("VisibilityTimeout", "43200"),
                ("DelaySeconds", "0"),
                ("MessageRetentionPeriod", "60"),
                ("MaximumMessageSize", "1024"),
                ("ReceiveMessageWaitTimeSeconds", "20"),
            ]),
            false,
        )
        .unwrap();
        let q = QueueAttributes::defaults(false).with(&attrs);
        assert_eq!(q.visibility_timeout, 43_200);
        assert_eq!(q.retention_period, 60);
        assert_eq!(q.maximum_message_size, 1024);
        assert_eq!(q.receive_wait_time, 20);
    }

    #[test]
    fn out_of_range_values_name_the_attribute_and_range() {
        for (name, value, range) in [
            ("VisibilityTimeout", "43201", "0 to 43200"),
            ("DelaySeconds", "901", "0 to 900"),
            ("MessageRetentionPeriod", "59", "60 to 1209600"),
            ("MaximumMessageSize", "1023", "1024 to 1048576"),
            ("ReceiveMessageWaitTimeSeconds", "21", "0 to 20"),
            ("VisibilityTimeout", "-1", "0 to 43200"),
            ("DelaySeconds", "ten", "0 to 900"),
        ] {
            let err = parse(&map(&[(name, value)]), false).unwrap_err();
            assert_eq!(
                err.field.as_deref(),
                Some(format!("attributes.{name}").as_str())
            );
            assert!(err.message.contains(range), "{}", err.message);
            assert_eq!(err.code, "InvalidAttributeValue");
        }
    }

    #[test]
    fn unknown_and_fifo_only_attributes_are_refused_on_standard_queues() {
        let err = parse(&map(&[("Colour", "blue")]), false).unwrap_err();
        assert_eq!(err.code, "InvalidAttributeName");
        let err = parse(&map(&[("ContentBasedDeduplication", "true")]), false).unwrap_err();
        assert!(
            err.message.contains("only valid on FIFO"),
            "{}",
            err.message
        );
        assert!(parse(&map(&[("ContentBasedDeduplication", "true")]), true).is_ok());
    }

    #[test]
    fn fifo_attribute_must_agree_with_the_name() {
        assert!(parse(&map(&[("FifoQueue", "true")]), false).is_err());
        assert!(parse(&map(&[("FifoQueue", "false")]), true).is_err());
        assert!(parse(&map(&[("FifoQueue", "true")]), true).is_ok());
    }

    #[test]
    fn redrive_policy_parses_string_or_number_counts() {
        for policy in [
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":"5"}"#,
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":5}"#,
        ] {
            let attrs = parse(&map(&[("RedrivePolicy", policy)]), false).unwrap();
            assert_eq!(
                attrs,
                vec![Attribute::RedrivePolicy(Some(RedrivePolicy {
                    dead_letter_queue: "dlq".into(),
                    max_receive_count: 5
                }))]
            );
        }
        for bad in [
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":0}"#,
            r#"{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:dlq","maxReceiveCount":1001}"#,
            r#"{"deadLetterTargetArn":"not-an-arn","maxReceiveCount":3}"#,
            r#"{"maxReceiveCount":3}"#,
            r#"[1,2]"#,
            r#"{"#,
        ] {
            let err = parse(&map(&[("RedrivePolicy", bad)]), false).unwrap_err();
            assert_eq!(
                err.field.as_deref(),
                Some("attributes.RedrivePolicy"),
                "{bad}"
            );
        }
    }

    #[test]
    fn throughput_limit_per_group_needs_group_dedup_scope() {
        let attrs = parse(&map(&[("FifoThroughputLimit", "perMessageGroupId")]), true).unwrap();
        let q = QueueAttributes::defaults(true).with(&attrs);
        assert!(check_combination(&q).is_err());
        let attrs = parse(
            &map(&[
                ("FifoThroughputLimit", "perMessageGroupId"),
                ("DeduplicationScope", "messageGroup"),
            ]),
            true,
        )
        .unwrap();
        assert!(check_combination(&QueueAttributes::defaults(true).with(&attrs)).is_ok());
    }

    #[test]
    fn matches_compares_only_given_attributes() {
        let q = QueueAttributes::defaults(false).with(&[Attribute::VisibilityTimeout(60)]);
        assert!(q.matches(&[]));
        assert!(q.matches(&[Attribute::VisibilityTimeout(60)]));
        assert!(!q.matches(&[Attribute::VisibilityTimeout(30)]));
        assert!(q.matches(&[Attribute::DelaySeconds(0)]));
    }
}
