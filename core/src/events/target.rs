//! A rule's targets: where a matched event goes, and in what shape.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::input::{Input, JsonPath};
use super::{invalid, validate_bus_name, validate_rule_name};
use crate::error::{field_in, DomainError};
use crate::limits::events::{RETRY_AGE_S, RETRY_ATTEMPTS_MAX};

/// Where a target delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Destination {
    /// A queue; a FIFO queue needs the group its messages go in (their
    /// deduplication id is the event id).
    Queue {
        /// Queue name.
        name: String,
        /// `SqsParameters.MessageGroupId`.
        group_id: Option<String>,
    },
    /// A topic; a FIFO topic needs a group as a FIFO queue does.
    Topic {
        /// Topic name.
        name: String,
        /// Message group for a FIFO topic.
        group_id: Option<String>,
    },
    /// A stream; each record's partition key is read from the event at
    /// `partition_key_path`, or is the event id.
    Stream {
        /// Stream name.
        name: String,
        /// `KinesisParameters.PartitionKeyPath`.
        partition_key_path: Option<JsonPath>,
    },
    /// A function, invoked asynchronously.
    Function {
        /// Function name.
        name: String,
        /// Version or alias; `$LATEST` when the ARN names none.
        qualifier: String,
    },
    /// Another bus, whose rules then route the event.
    Bus {
        /// Bus name.
        name: String,
    },
}

/// A rule's target, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// Id, unique within the rule.
    pub id: String,
    /// The target's ARN, as given.
    pub arn: String,
    /// Where it delivers.
    pub destination: Destination,
    /// What it delivers.
    pub input: Input,
    /// A queue that takes the event when delivery fails.
    pub dead_letter_queue: Option<String>,
    /// How a failed delivery is tried again; none: it is not.
    pub retry: Option<RetryPolicy>,
}

/// The raw fields of a target, before validation (AWS's names).
#[derive(Debug, Clone, Default)]
pub struct TargetInput {
    /// `Id`.
    pub id: String,
    /// `Arn`.
    pub arn: String,
    /// `Input`: constant JSON text.
    pub input: String,
    /// `InputPath`.
    pub input_path: String,
    /// `InputTransformer.InputPathsMap`.
    pub input_paths: BTreeMap<String, String>,
    /// `InputTransformer.InputTemplate`.
    pub input_template: String,
    /// `SqsParameters.MessageGroupId`.
    pub message_group_id: String,
    /// `KinesisParameters.PartitionKeyPath`.
    pub partition_key_path: String,
    /// `DeadLetterConfig.Arn`: an SQS queue ARN.
    pub dead_letter_arn: String,
    /// `RetryPolicy`, if given: `(MaximumRetryAttempts,
    /// MaximumEventAgeInSeconds)`, each optional.
    pub retry_policy: Option<(Option<u32>, Option<u32>)>,
}

/// The service and resource of an ARN (`arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE`).
fn arn_parts(arn: &str) -> Option<(&str, &str)> {
    let rest = arn.strip_prefix("arn:")?;
    let parts: Vec<&str> = rest.splitn(5, ':').collect();
    match parts.as_slice() {
        [_, service, _, _, resource] if !resource.is_empty() => Some((service, resource)),
        _ => None,
    }
}

impl Target {
    /// Validates a target; `prefix` names it in errors (`targets[0]`).
    pub fn new(prefix: &str, t: TargetInput) -> Result<Target, DomainError> {
        let f = |name: &str| field_in(prefix, name);
        validate_rule_name(&f("id"), &t.id)?;
        let group = (!t.message_group_id.is_empty()).then(|| t.message_group_id.clone());
        let destination = match arn_parts(&t.arn) {
            Some(("sqs", name)) => {
                crate::queues::validate_name(&f("arn"), name)?;
                if crate::queues::is_fifo_name(name) != group.is_some() {
                    return Err(invalid(
                        f("sqs_parameters.message_group_id"),
                        "is required for a FIFO queue and only valid for one",
                    ));
                }
                Destination::Queue {
                    name: name.into(),
                    group_id: group.clone(),
                }
            }
            Some(("sns", name)) => {
                crate::topics::validate_name(&f("arn"), name)?;
                if name.ends_with(crate::names::FIFO_SUFFIX) != group.is_some() {
                    return Err(invalid(
                        f("sqs_parameters.message_group_id"),
                        "is required for a FIFO topic and only valid for one",
                    ));
                }
                Destination::Topic {
                    name: name.into(),
                    group_id: group.clone(),
                }
            }
            Some(("kinesis", resource)) => {
                let name = resource.strip_prefix("stream/").ok_or_else(|| {
                    invalid(f("arn"), "a stream ARN ends in stream/NAME")
                })?;
                crate::streams::validate_name(&f("arn"), name)?;
                let partition_key_path = (!t.partition_key_path.is_empty())
                    .then(|| JsonPath::parse(&f("kinesis_parameters.partition_key_path"), &t.partition_key_path))
                    .transpose()?;
                Destination::Stream {
                    name: name.into(),
                    partition_key_path,
                }
            }
            Some(("lambda", resource)) => {
                let rest = resource.strip_prefix("function:").ok_or_else(|| {
                    invalid(f("arn"), "a function ARN ends in function:NAME[:QUALIFIER]")
                })?;
                let (name, qualifier) = rest.split_once(':').unwrap_or((rest, "$LATEST"));
                crate::functions::validate_name(&f("arn"), name)?;
                Destination::Function {
                    name: name.into(),
                    qualifier: qualifier.into(),
                }
            }
            Some(("events", resource)) => {
                let name = resource.strip_prefix("event-bus/").ok_or_else(|| {
                    invalid(f("arn"), "an event bus ARN ends in event-bus/NAME")
                })?;
                validate_bus_name(&f("arn"), name)?;
                Destination::Bus { name: name.into() }
            }
            _ => {
                return Err(invalid(
                    f("arn"),
                    format!(
                        "must be the ARN of an SQS queue, SNS topic, Kinesis stream, Lambda function or event bus, got {:?}",
                        t.arn
                    ),
                ))
            }
        };
        if group.is_some()
            && !matches!(
                destination,
                Destination::Queue { .. } | Destination::Topic { .. }
            )
        {
            return Err(invalid(
                f("sqs_parameters.message_group_id"),
                "is only valid for a queue or topic target",
            ));
        }
        if !t.partition_key_path.is_empty() && !matches!(destination, Destination::Stream { .. }) {
            return Err(invalid(
                f("kinesis_parameters.partition_key_path"),
                "is only valid for a stream target",
            ));
        }
        let input = Input::new(
            prefix,
            &t.input,
            &t.input_path,
            &t.input_paths,
            &t.input_template,
        )?;
        if matches!(destination, Destination::Bus { .. }) && input != Input::Event {
            return Err(invalid(
                f("input"),
                "another bus takes the event itself: a bus target takes no input settings",
            ));
        }
        let dead_letter_queue = if t.dead_letter_arn.is_empty() {
            None
        } else {
            match arn_parts(&t.dead_letter_arn) {
                Some(("sqs", name)) if !crate::queues::is_fifo_name(name) => {
                    crate::queues::validate_name(&f("dead_letter_config.arn"), name)?;
                    Some(name.to_string())
                }
                _ => {
                    return Err(invalid(
                        f("dead_letter_config.arn"),
                        format!(
                            "must be the ARN of a standard SQS queue, got {:?}",
                            t.dead_letter_arn
                        ),
                    ))
                }
            }
        };
        let retry = match t.retry_policy {
            None => None,
            Some(_) if matches!(destination, Destination::Bus { .. }) => {
                return Err(invalid(
                    f("retry_policy"),
                    "a bus target is not retried: handing an event to another bus fails only when it is missing",
                ))
            }
            Some((attempts, age)) => Some(RetryPolicy::new(
                &f("retry_policy"),
                attempts,
                age,
            )?),
        };
        Ok(Target {
            id: t.id,
            arn: t.arn,
            destination,
            input,
            dead_letter_queue,
            retry,
        })
    }
}

/// A target's `RetryPolicy`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// `MaximumRetryAttempts`: tries after the first, 0-185.
    pub max_attempts: u32,
    /// `MaximumEventAgeInSeconds`: 60-86 400.
    pub max_age_s: u32,
}

impl RetryPolicy {
    /// Validates a policy; its fields are named under `prefix`. Either
    /// member may be left out (185 attempts, 86 400 s).
    pub fn new(
        prefix: &str,
        max_attempts: Option<u32>,
        max_age_s: Option<u32>,
    ) -> Result<RetryPolicy, DomainError> {
        let f = |name: &str| field_in(prefix, name);
        let max_attempts = max_attempts.unwrap_or(RETRY_ATTEMPTS_MAX);
        if max_attempts > RETRY_ATTEMPTS_MAX {
            return Err(invalid(
                f("maximum_retry_attempts"),
                format!("must be 0-{RETRY_ATTEMPTS_MAX}, got {max_attempts}"),
            ));
        }
        let (age_min, age_max) = RETRY_AGE_S;
        let max_age_s = max_age_s.unwrap_or(age_max);
        if !(age_min..=age_max).contains(&max_age_s) {
            return Err(invalid(
                f("maximum_event_age_in_seconds"),
                format!("must be {age_min}-{age_max}, got {max_age_s}"),
            ));
        }
        Ok(RetryPolicy {
            max_attempts,
            max_age_s,
        })
    }
}
