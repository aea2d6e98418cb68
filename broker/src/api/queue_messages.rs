//! How a queue request's names and messages map to the domain's types:
//! what the queue handlers and the send stream share.

use std::collections::HashMap;

use sluice_proto::v1 as pb;
use tonic::Status;

use super::status::IntoStatus;
use crate::queues;
use crate::queues::delivery::SentMessage;
use crate::queues::message::{AttributeValue, Outgoing};

/// The queue a request names: a name, or a queue URL whose last segment is
/// the name and whose segment before it is this cluster's account id (a URL
/// of another account or region names a queue this cluster does not have).
pub(crate) fn queue_ref(
    identity: &crate::identity::Identity,
    field: &str,
    given: &str,
) -> Result<String, Status> {
    let Some((rest, name)) = given.rsplit_once('/') else {
        queues::validate_name(field, given).map_err(super::status::from_domain)?;
        return Ok(given.to_string());
    };
    queues::validate_name(field, name).map_err(super::status::from_domain)?;
    let account = rest.rsplit('/').next().unwrap_or("");
    let host = rest
        .split_once("://")
        .map_or(rest, |(_, r)| r)
        .split('/')
        .next()
        .unwrap_or("");
    // AWS's own endpoints name their region: sqs.REGION.amazonaws.com,
    // REGION.queue.amazonaws.com.
    let region = host
        .strip_prefix("sqs.")
        .and_then(|h| h.split('.').next())
        .or_else(|| host.strip_suffix(".queue.amazonaws.com"));
    if account != identity.account_id || region.is_some_and(|r| r != identity.region) {
        return Err(queues::does_not_exist(&crate::error::cut(given, 256)).into_status());
    }
    Ok(name.to_string())
}

/// A message attribute as the domain holds it.
pub(super) fn to_value(v: pb::MessageAttributeValue) -> AttributeValue {
    let binary = v.data_type == "Binary" || v.data_type.starts_with("Binary.");
    AttributeValue {
        data_type: v.data_type,
        string_value: (!binary).then_some(v.string_value),
        binary_value: binary.then_some(v.binary_value),
    }
}

/// A message attribute as the API returns it.
pub(super) fn from_value(v: &AttributeValue) -> pb::MessageAttributeValue {
    pb::MessageAttributeValue {
        data_type: v.data_type.clone(),
        string_value: v.string_value.clone().unwrap_or_default(),
        binary_value: v.binary_value.clone().unwrap_or_default(),
    }
}

/// The fields of a message to send, as `SendMessage`, a batch entry or a
/// stream's message gives them.
pub(super) fn outgoing(
    body: String,
    delay_seconds: Option<i32>,
    attributes: HashMap<String, pb::MessageAttributeValue>,
    system_attributes: HashMap<String, pb::MessageAttributeValue>,
    dedup_id: String,
    group_id: String,
) -> Outgoing {
    Outgoing {
        body,
        delay_seconds,
        attributes: attributes
            .into_iter()
            .map(|(k, v)| (k, to_value(v)))
            .collect(),
        system_attributes: system_attributes
            .into_iter()
            .map(|(k, v)| (k, to_value(v)))
            .collect(),
        dedup_id,
        group_id,
    }
}

/// The reply to a sent message.
pub(super) fn sent(s: SentMessage) -> pb::SendMessageResponse {
    pb::SendMessageResponse {
        message_id: s.message_id,
        md5_of_message_body: s.md5_of_body,
        md5_of_message_attributes: s.md5_of_attributes.unwrap_or_default(),
        md5_of_message_system_attributes: s.md5_of_system_attributes.unwrap_or_default(),
        sequence_number: s.sequence_number.unwrap_or_default(),
    }
}
