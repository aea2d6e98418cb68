//! Topics and streams as a request names them (a name or an ARN), read to
//! their names: shared by the unary services, the producer streams and the
//! access table.

use tonic::Status;

use super::status::from_domain;
use crate::{streams, topics};

/// The topic a request names: its ARN or its bare name.
pub fn topic_ref(field: &str, given: &str) -> Result<String, Status> {
    let name = topics::name_from_ref(given);
    topics::validate_name(field, name).map_err(from_domain)?;
    Ok(name.to_string())
}

/// The stream a request names: a name, or a stream (or consumer) ARN.
pub fn stream_ref(field: &str, given: &str) -> Result<String, Status> {
    let name = match given.split_once(":stream/") {
        Some((_, rest)) => rest.split('/').next().unwrap_or(rest),
        None => given,
    };
    streams::validate_name(field, name).map_err(from_domain)?;
    Ok(name.to_string())
}
