//! IAM-style policies decided on real gRPC calls: a table of principals,
//! operations and resources, each expected to be allowed or denied, run
//! against a secured node. A denial is `PERMISSION_DENIED` naming the
//! principal, the action and the resource, and changes nothing; an allowed
//! call gets past the guard (whatever the handler then says).

use std::collections::HashMap;

use cluster_tests::{
    create_app_function, create_principal, elected_secured_cluster, entry, put_data, put_policy,
    python_function, receive_waiting, send_batch, send_entry, trim_horizon,
};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Error};
use tonic::Code;

const ACCOUNT: &str = "000000000000";

/// Custom policies, by name.
const POLICIES: &[(&str, &str)] = &[
    (
        "orders-all",
        r#"{"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": "sqs:*", "Resource": "arn:aws:sqs:*:*:orders-*"},
            {"Effect": "Deny", "Action": "sqs:DeleteQueue", "Resource": "*"}]}"#,
    ),
    (
        "eu-sender",
        r#"{"Statement": {"Effect": "Allow", "Action": "sqs:SendMessage",
            "Resource": "arn:aws:sqs:us-east-1:000000000000:orders-eu"}}"#,
    ),
    (
        "publisher",
        r#"{"Statement": [
            {"Effect": "Allow", "Action": "sns:Publish", "Resource": "arn:aws:sns:*:*:alerts"},
            {"Effect": "Allow", "Action": ["kinesis:PutRecord*", "kinesis:Get*"],
             "Resource": "arn:aws:kinesis:*:*:stream/clicks"},
            {"Effect": "Allow", "Action": "lambda:InvokeFunction",
             "Resource": "arn:aws:lambda:*:*:function:f"}]}"#,
    ),
    (
        "all-but-admin",
        r#"{"Statement": [
            {"Effect": "Allow", "Action": "*", "Resource": "*"},
            {"Effect": "Deny", "Action": ["sluice:*", "iam:*"], "Resource": "*"}]}"#,
    ),
    (
        "not-billing",
        r#"{"Statement": {"Effect": "Allow", "Action": "sqs:*",
            "NotResource": "arn:aws:sqs:*:*:billing"}}"#,
    ),
    (
        "no-deletes",
        r#"{"Statement": {"Effect": "Allow", "NotAction": ["sqs:Delete*", "sqs:Purge*"],
            "Resource": "arn:aws:sqs:*:*:*"}}"#,
    ),
];

/// Principals: name, kind, policies.
const PRINCIPALS: &[(&str, &str, &[&str])] = &[
    ("alice", "user", &["orders-all"]),
    ("eve", "user", &[]),
    ("carol", "user", &["eu-sender"]),
    ("dave", "user", &["publisher"]),
    ("frank", "user", &["all-but-admin"]),
    ("gina", "user", &["not-billing"]),
    ("hank", "user", &["no-deletes"]),
    ("bob", "user", &["ReadOnlyAccess"]),
    ("wendy", "worker", &[]),
];

/// One operation, on one resource.
#[derive(Debug, Clone)]
enum Op {
    Send(&'static str),
    SendBatch(&'static str),
    Receive(&'static str),
    CreateQueue(&'static str),
    DeleteQueue(&'static str),
    ListQueues,
    GetQueueUrl(&'static str),
    GetQueueAttributes(&'static str),
    DeleteMessage(&'static str),
    Purge(&'static str),
    Publish(&'static str),
    PutRecord(&'static str),
    PutRecords(&'static str),
    GetShardIterator(&'static str),
    GetRecords,
    DeleteStream(&'static str),
    DescribeStream(&'static str),
    Invoke(&'static str),
    ClusterStatus,
    RemoveMember,
    TriggerSnapshot,
    CreatePrincipal,
    WhoAmI,
    Heartbeat,
    ListWorkers,
}

impl Op {
    /// The action and resource a denial must name.
    fn names(&self) -> (&'static str, String) {
        let q = |n: &str| format!("arn:aws:sqs:us-east-1:{ACCOUNT}:{n}");
        let s = |n: &str| format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{n}");
        let cluster = format!("arn:aws:sluice:us-east-1:{ACCOUNT}:cluster");
        match self {
            Op::Send(n) | Op::SendBatch(n) => ("sqs:SendMessage", q(n)),
            Op::Receive(n) => ("sqs:ReceiveMessage", q(n)),
            Op::CreateQueue(n) => ("sqs:CreateQueue", q(n)),
            Op::DeleteQueue(n) => ("sqs:DeleteQueue", q(n)),
            Op::ListQueues => ("sqs:ListQueues", "*".into()),
            Op::GetQueueUrl(n) => ("sqs:GetQueueUrl", q(n)),
            Op::GetQueueAttributes(n) => ("sqs:GetQueueAttributes", q(n)),
            Op::DeleteMessage(n) => ("sqs:DeleteMessage", q(n)),
            Op::Purge(n) => ("sqs:PurgeQueue", q(n)),
            Op::Publish(n) => (
                "sns:Publish",
                format!("arn:aws:sns:us-east-1:{ACCOUNT}:{n}"),
            ),
            Op::PutRecord(n) => ("kinesis:PutRecord", s(n)),
            Op::PutRecords(n) => ("kinesis:PutRecords", s(n)),
            Op::GetShardIterator(n) => ("kinesis:GetShardIterator", s(n)),
            Op::GetRecords => ("kinesis:GetRecords", s("clicks")),
            Op::DeleteStream(n) => ("kinesis:DeleteStream", s(n)),
            Op::DescribeStream(n) => ("kinesis:DescribeStream", s(n)),
            Op::Invoke(n) => (
                "lambda:InvokeFunction",
                format!("arn:aws:lambda:us-east-1:{ACCOUNT}:function:{n}"),
            ),
            Op::ClusterStatus => ("sluice:GetClusterStatus", cluster),
            Op::RemoveMember => ("sluice:RemoveMember", cluster),
            Op::TriggerSnapshot => ("sluice:TriggerSnapshot", cluster),
            Op::CreatePrincipal => (
                "iam:CreatePrincipal",
                format!("arn:aws:iam::{ACCOUNT}:user/mallory"),
            ),
            Op::WhoAmI => ("sts:GetCallerIdentity", "*".into()),
            Op::Heartbeat => (
                "sluice:Heartbeat",
                format!("arn:aws:sluice:us-east-1:{ACCOUNT}:worker/policy-w"),
            ),
            Op::ListWorkers => ("sluice:ListWorkers", "*".into()),
        }
    }

    /// Makes the call.
    async fn call(&self, c: &Client, iterator: &str) -> Result<(), Error> {
        let msg = |q: &str| pb::SendMessageRequest {
            queue_name: q.into(),
            message_body: "x".into(),
            ..Default::default()
        };
        match self {
            Op::Send(n) => c.send_message(msg(n)).await.map(drop),
            Op::SendBatch(n) => send_batch(c, n, vec![send_entry("1", "x")]).await.map(drop),
            Op::Receive(n) => receive_waiting(c, n, Some(0)).await.map(drop),
            Op::CreateQueue(n) => c.create_queue(n, HashMap::new()).await.map(drop),
            Op::DeleteQueue(n) => c.delete_queue(n).await,
            Op::ListQueues => c
                .list_queues("", sluice_client::Consistency::Linearizable)
                .await
                .map(drop),
            Op::GetQueueUrl(n) => c
                .get_queue_url(n, sluice_client::Consistency::Linearizable)
                .await
                .map(drop),
            Op::GetQueueAttributes(n) => c.get_queue_attributes(n, &["All"]).await.map(drop),
            Op::DeleteMessage(n) => c.delete_message(n, "not-a-handle").await,
            Op::Purge(n) => c.purge_queue(n).await,
            Op::Publish(n) => c
                .publish(pb::PublishRequest {
                    topic_arn: n.to_string(),
                    message: "x".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::PutRecord(n) => put_data(c, n, "k", "x").await.map(drop),
            Op::PutRecords(n) => c
                .put_records(pb::PutRecordsRequest {
                    stream_name: n.to_string(),
                    records: vec![entry("k", "x")],
                })
                .await
                .map(drop),
            Op::GetShardIterator(n) => trim_horizon(c, n, "shardId-000000000000").await.map(drop),
            Op::GetRecords => c.get_records(iterator, 10).await.map(drop),
            Op::DeleteStream(n) => c.delete_stream(n).await,
            Op::DescribeStream(n) => c.describe_stream(n).await.map(drop),
            Op::Invoke(n) => c
                .invoke(pb::InvokeRequest {
                    function_name: n.to_string(),
                    invocation_type: "DryRun".into(),
                    ..Default::default()
                })
                .await
                .map(drop),
            Op::ClusterStatus => c.cluster_status(false).await.map(drop),
            Op::RemoveMember => c.remove_member(9).await.map(drop),
            Op::TriggerSnapshot => c.trigger_snapshot().await.map(drop),
            Op::CreatePrincipal => c
                .iam(
                    pb::CreatePrincipalRequest {
                        name: "mallory".into(),
                        ..Default::default()
                    },
                    |mut c, r| async move { c.create_principal(r).await },
                )
                .await
                .map(drop),
            Op::WhoAmI => c
                .iam(pb::GetCallerIdentityRequest {}, |mut c, r| async move {
                    c.get_caller_identity(r).await
                })
                .await
                .map(drop),
            Op::Heartbeat => c
                .call(|ch| async move {
                    sluice_client::sluice_proto::v1::workers_client::WorkersClient::new(ch)
                        .heartbeat(pb::HeartbeatRequest {
                            worker_id: "policy-w".into(),
                            address: "127.0.0.1:9".into(),
                            memory_mb: 128,
                            tls_certificate_sha256: "cd".repeat(32),
                            ..Default::default()
                        })
                        .await
                })
                .await
                .map(drop),
            Op::ListWorkers => c.list_workers().await.map(drop),
        }
    }
}

/// Allowed or denied.
const ALLOW: bool = true;
const DENY: bool = false;

fn cases() -> Vec<(&'static str, Op, bool)> {
    vec![
        ("alice", Op::Send("orders-eu"), ALLOW),
        ("alice", Op::Send("billing"), DENY),
        ("alice", Op::CreateQueue("orders-new"), ALLOW),
        ("alice", Op::DeleteQueue("orders-us"), DENY),
        ("alice", Op::Receive("orders-us"), ALLOW),
        ("alice", Op::ListQueues, DENY),
        ("alice", Op::Publish("alerts"), DENY),
        ("alice", Op::Heartbeat, DENY),
        ("eve", Op::Send("orders-eu"), DENY),
        ("eve", Op::GetQueueUrl("orders-eu"), DENY),
        ("eve", Op::WhoAmI, ALLOW),
        ("carol", Op::Send("orders-eu"), ALLOW),
        ("carol", Op::SendBatch("orders-eu"), ALLOW),
        ("carol", Op::Send("orders-us"), DENY),
        ("carol", Op::Receive("orders-eu"), DENY),
        ("dave", Op::Publish("alerts"), ALLOW),
        ("dave", Op::Publish("audit"), DENY),
        ("dave", Op::PutRecord("clicks"), ALLOW),
        ("dave", Op::PutRecords("clicks"), ALLOW),
        ("dave", Op::GetShardIterator("clicks"), ALLOW),
        ("dave", Op::GetRecords, ALLOW),
        ("dave", Op::DeleteStream("clicks"), DENY),
        ("dave", Op::DescribeStream("clicks"), DENY),
        ("dave", Op::Invoke("f"), ALLOW),
        ("dave", Op::Invoke("g"), DENY),
        ("frank", Op::CreateQueue("scratch"), ALLOW),
        ("frank", Op::ClusterStatus, DENY),
        ("frank", Op::CreatePrincipal, DENY),
        ("frank", Op::TriggerSnapshot, DENY),
        ("gina", Op::Send("orders-eu"), ALLOW),
        ("gina", Op::Send("billing"), DENY),
        ("hank", Op::Send("billing"), ALLOW),
        ("hank", Op::DeleteMessage("billing"), DENY),
        ("hank", Op::Purge("billing"), DENY),
        ("hank", Op::Publish("alerts"), DENY),
        ("bob", Op::GetQueueAttributes("billing"), ALLOW),
        ("bob", Op::Send("billing"), DENY),
        ("bob", Op::Receive("billing"), DENY),
        ("bob", Op::DescribeStream("clicks"), ALLOW),
        ("bob", Op::GetRecords, ALLOW),
        ("bob", Op::RemoveMember, DENY),
        ("bob", Op::ListWorkers, ALLOW),
        ("bob", Op::Heartbeat, DENY),
        ("wendy", Op::Heartbeat, ALLOW),
        ("wendy", Op::Send("orders-eu"), ALLOW),
        ("wendy", Op::DeleteQueue("orders-eu"), DENY),
        ("wendy", Op::CreateQueue("wendys"), DENY),
    ]
}

#[tokio::test]
async fn a_table_of_principals_actions_and_resources_is_decided_as_iam_decides() {
    let (_serial, c, _) = elected_secured_cluster(1, &[]).await;
    let admin = c.client();
    for q in ["orders-eu", "orders-us", "billing"] {
        admin.create_queue(q, HashMap::new()).await.unwrap();
    }
    for t in ["alerts", "audit"] {
        admin.create_topic(t, HashMap::new()).await.unwrap();
    }
    admin.create_stream_with_shards("clicks", 1).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let zip = python_function(dir.path(), "def handler(e, c):\n    return e\n");
    create_app_function(&admin, "f", zip).await;
    let iterator = trim_horizon(&admin, "clicks", "shardId-000000000000")
        .await
        .unwrap();
    for (name, document) in POLICIES {
        put_policy(&admin, name, document)
            .await
            .unwrap_or_else(|e| panic!("policy {name}: {e}"));
    }
    let mut clients: HashMap<&str, Client> = HashMap::new();
    for (name, kind, policies) in PRINCIPALS {
        let creds = create_principal(&admin, name, kind, policies).await;
        clients.insert(name, c.single_attempt_client(Some(creds)));
    }

    let cases = cases();
    assert!(cases.len() >= 30);
    let mut wrong = Vec::new();
    for (who, op, allowed) in &cases {
        let result = op.call(&clients[who], &iterator).await;
        let denied = matches!(&result, Err(e) if e.status() == Some(Code::PermissionDenied) && e.code() == Some("AccessDenied"));
        if let Err(e) = &result {
            assert_ne!(e.status(), Some(Code::Unauthenticated), "{who} {op:?}: {e}");
        }
        if denied == *allowed {
            wrong.push(format!(
                "{who} {op:?}: expected {}, got {result:?}",
                if *allowed { "allow" } else { "deny" }
            ));
            continue;
        }
        if let Err(e) = &result {
            if denied {
                let (action, resource) = op.names();
                let text = e.to_string();
                let principal = format!("arn:aws:iam::{ACCOUNT}:user/{who}");
                if !(text.contains(action) && text.contains(&resource) && text.contains(&principal))
                {
                    wrong.push(format!("{who} {op:?}: the denial does not name {principal}, {action} and {resource}: {text}"));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases wrong:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );

    // Denied calls changed nothing: the queues are all there, the stream
    // too, and nobody called mallory was made.
    for q in ["orders-eu", "orders-us", "billing"] {
        admin
            .get_queue_url(q, sluice_client::Consistency::Linearizable)
            .await
            .unwrap();
    }
    admin.describe_stream("clicks").await.unwrap();
    let e = admin
        .iam(
            pb::GetPrincipalRequest {
                name: "mallory".into(),
            },
            |mut c, r| async move { c.get_principal(r).await },
        )
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Code::NotFound));

    // A detached policy no longer grants; a deleted key no longer signs.
    admin
        .iam(
            pb::DetachPolicyRequest {
                name: "carol".into(),
                policy: "eu-sender".into(),
            },
            |mut c, r| async move { c.detach_policy(r).await },
        )
        .await
        .unwrap();
    let e = Op::Send("orders-eu")
        .call(&clients["carol"], &iterator)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Code::PermissionDenied), "{e}");
    let bob = admin
        .iam(
            pb::GetPrincipalRequest { name: "bob".into() },
            |mut c, r| async move { c.get_principal(r).await },
        )
        .await
        .unwrap();
    admin
        .iam(
            pb::DeleteAccessKeyRequest {
                name: "bob".into(),
                access_key_id: bob.access_keys[0].access_key_id.clone(),
            },
            |mut c, r| async move { c.delete_access_key(r).await },
        )
        .await
        .unwrap();
    let e = Op::ClusterStatus
        .call(&clients["bob"], &iterator)
        .await
        .unwrap_err();
    assert_eq!(e.status(), Some(Code::Unauthenticated), "{e}");
    assert_eq!(e.code(), Some("InvalidClientTokenId"));
}
