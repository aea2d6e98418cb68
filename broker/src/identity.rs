//! Resource identifiers in the AWS shapes: ARNs and queue URLs.

/// The region and account id a cluster presents in ARNs. Every node of a
/// cluster must be started with the same values (the cluster status shows
/// each node's, so a mismatch is visible).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// e.g. `us-east-1`.
    pub region: String,
    /// Twelve digits, e.g. `000000000000`.
    pub account_id: String,
}

impl Default for Identity {
    fn default() -> Self {
        Identity {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
        }
    }
}

impl Identity {
    /// `arn:aws:sqs:{region}:{account}:{name}`
    pub fn queue_arn(&self, name: &str) -> String {
        format!("arn:aws:sqs:{}:{}:{name}", self.region, self.account_id)
    }

    /// `arn:aws:sns:{region}:{account}:{name}`
    pub fn topic_arn(&self, name: &str) -> String {
        format!("arn:aws:sns:{}:{}:{name}", self.region, self.account_id)
    }

    /// `arn:aws:lambda:{region}:{account}:function:{name}`
    pub fn function_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:function:{name}",
            self.region, self.account_id
        )
    }

    /// `arn:aws:events:{region}:{account}:event-bus/{name}`
    pub fn bus_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:events:{}:{}:event-bus/{name}",
            self.region, self.account_id
        )
    }

    /// `arn:aws:scheduler:{region}:{account}:schedule/{group}/{name}`.
    pub fn schedule_arn(&self, group: &str, name: &str) -> String {
        format!(
            "arn:aws:scheduler:{}:{}:schedule/{group}/{name}",
            self.region, self.account_id
        )
    }

    /// `arn:aws:events:{region}:{account}:{kind}/{name}`: an archive or a
    /// replay.
    pub fn events_arn(&self, kind: &str, name: &str) -> String {
        format!(
            "arn:aws:events:{}:{}:{kind}/{name}",
            self.region, self.account_id
        )
    }

    /// `arn:aws:events:{region}:{account}:rule/[{bus}/]{name}`: the bus is
    /// left out for the default one, as EventBridge writes it.
    pub fn rule_arn(&self, bus: &str, name: &str) -> String {
        crate::events::put::Origin {
            account: self.account_id.clone(),
            region: self.region.clone(),
        }
        .rule_arn(bus, name)
    }

    /// `arn:aws:kinesis:{region}:{account}:stream/{name}`
    pub fn stream_arn(&self, name: &str) -> String {
        format!(
            "arn:aws:kinesis:{}:{}:stream/{name}",
            self.region, self.account_id
        )
    }

    /// `arn:aws:kinesis:{region}:{account}:stream/{stream}/consumer/{name}:{created seconds}`
    pub fn consumer_arn(&self, stream: &str, consumer: &str, created_ms: u64) -> String {
        format!(
            "{}/consumer/{consumer}:{}",
            self.stream_arn(stream),
            created_ms / 1000
        )
    }

    /// The ARN of a principal (IAM's user form).
    pub fn principal_arn(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:user/{name}", self.account_id)
    }

    /// The ARN of a custom or built-in policy.
    pub fn policy_arn(&self, name: &str) -> String {
        format!("arn:aws:iam::{}:policy/{name}", self.account_id)
    }

    /// The ARN of an event source mapping (Lambda's form).
    pub fn mapping_arn(&self, uuid: &str) -> String {
        format!(
            "arn:aws:lambda:{}:{}:event-source-mapping:{uuid}",
            self.region, self.account_id
        )
    }

    /// The ARN of something of the cluster's own: `cluster`,
    /// `worker/{id}`, `node/{id}`.
    pub fn sluice_arn(&self, resource: &str) -> String {
        format!(
            "arn:aws:sluice:{}:{}:{resource}",
            self.region, self.account_id
        )
    }

    /// The queue's URL as served by the node at `advertise`, in the shape the
    /// AWS emulators use: `http://{host:port}/{account}/{name}`.
    pub fn queue_url(&self, advertise: &str, name: &str) -> String {
        format!("http://{advertise}/{}/{name}", self.account_id)
    }

    /// Checks the settings: a region of lowercase letters, digits and dashes,
    /// and a 12-digit account id.
    pub fn validate(&self) -> Result<(), String> {
        if self.region.is_empty()
            || !self
                .region
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        {
            return Err(format!(
                "--region: must be lowercase letters, digits and '-', got {:?}",
                self.region
            ));
        }
        if self.account_id.len() != 12 || !self.account_id.chars().all(|c| c.is_ascii_digit()) {
            return Err(format!(
                "--account-id: must be 12 digits, got {:?}",
                self.account_id
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes_match_aws() {
        let id = Identity::default();
        assert_eq!(id.queue_arn("q"), "arn:aws:sqs:us-east-1:000000000000:q");
        assert_eq!(
            id.queue_url("127.0.0.1:7070", "q"),
            "http://127.0.0.1:7070/000000000000/q"
        );
        assert!(id.validate().is_ok());
        assert_eq!(
            id.stream_arn("clicks"),
            "arn:aws:kinesis:us-east-1:000000000000:stream/clicks"
        );
        assert_eq!(
            id.consumer_arn("clicks", "app", 1_700_000_000_123),
            "arn:aws:kinesis:us-east-1:000000000000:stream/clicks/consumer/app:1700000000"
        );
        let bad = Identity {
            account_id: "12".into(),
            ..Identity::default()
        };
        assert!(bad.validate().unwrap_err().starts_with("--account-id"));
    }
}
