//! The built-in policies: attachable by name, never stored, never changed.

/// Everything on everything.
pub const ADMINISTRATOR_ACCESS: &str = "AdministratorAccess";
/// Reads of every resource, of the cluster's status and of the scaler's
/// metrics; no writes, and no receive (it changes a message's visibility).
pub const READ_ONLY_ACCESS: &str = "ReadOnlyAccess";
/// What a worker node needs: the workers API, and what its event source
/// mapping pollers call (receive and delete from queues, read streams,
/// invoke functions, send failures to queues and topics).
pub const WORKER_ACCESS: &str = "SluiceWorkerAccess";

/// The built-in policies' names.
pub const NAMES: &[&str] = &[ADMINISTRATOR_ACCESS, READ_ONLY_ACCESS, WORKER_ACCESS];

/// The document of a built-in policy.
pub fn document(name: &str) -> Option<&'static str> {
    Some(match name {
        ADMINISTRATOR_ACCESS => {
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}"#
        }
        READ_ONLY_ACCESS => {
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
  "sqs:Get*", "sqs:List*",
  "sns:Get*", "sns:List*",
  "kinesis:Describe*", "kinesis:List*", "kinesis:Get*", "kinesis:SubscribeToShard",
  "lambda:Get*", "lambda:List*",
  "events:Describe*", "events:List*", "events:TestEventPattern",
  "scheduler:Get*", "scheduler:List*",
  "iam:Get*", "iam:List*",
  "sluice:GetClusterStatus", "sluice:ListWorkers", "sluice:GetScalerMetrics"
], "Resource": "*"}]}"#
        }
        WORKER_ACCESS => {
            r#"{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": [
  "sluice:Heartbeat", "sluice:LeaveWorker", "sluice:GetCode", "sluice:ListWorkers",
  "sluice:CommitCheckpoint", "sluice:ReportMappingResult",
  "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:SendMessage", "sqs:GetQueueUrl",
  "sns:Publish",
  "kinesis:GetShardIterator", "kinesis:GetRecords", "kinesis:DescribeStream", "kinesis:ListShards",
  "lambda:InvokeFunction", "lambda:GetFunction"
], "Resource": "*"}]}"#
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_policy_parses() {
        for name in NAMES {
            sluice_security::policy::Policy::parse(document(name).unwrap())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
