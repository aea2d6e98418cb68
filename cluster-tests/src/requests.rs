//! The calls the tests make again and again, each built the one way they
//! build it.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{Client, Consistency, Credentials, Error};

use crate::{wait_for, NodeId};

/// `pairs` as a map of strings: how attributes and tags are given.
pub fn string_map(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Receives from `queue` with a request naming only the queue and the wait
/// time (`None`: the queue's own): the server's default count of messages
/// and the queue's visibility timeout.
pub async fn receive_waiting(
    client: &Client,
    queue: &str,
    wait_time_seconds: Option<i32>,
) -> Result<pb::ReceiveMessageResponse, Error> {
    // A count of 0 is the field left unset: the server's default.
    client.receive_from(queue, 0, None, wait_time_seconds).await
}

/// [`Client::receive_from`] asking for every system and message attribute
/// of the messages.
pub async fn receive_with_attributes(
    client: &Client,
    queue: &str,
    max: i32,
    visibility_timeout: Option<i32>,
    wait_time_seconds: Option<i32>,
) -> Result<pb::ReceiveMessageResponse, Error> {
    client
        .receive_message(pb::ReceiveMessageRequest {
            queue_name: queue.into(),
            max_number_of_messages: max,
            visibility_timeout,
            wait_time_seconds,
            message_system_attribute_names: vec!["All".into()],
            message_attribute_names: vec!["All".into()],
            ..Default::default()
        })
        .await
}

/// The names of the queues under `prefix`, as `consistency` lists them.
pub async fn queue_names<C: FromIterator<String>>(
    client: &Client,
    prefix: &str,
    consistency: Consistency,
) -> Result<C, Error> {
    let queues = client.list_queues(prefix, consistency).await?;
    Ok(queues.into_iter().map(|q| q.name).collect())
}

/// Waits up to `timeout` (naming `what` if it runs out) until `client`'s
/// node lists exactly `expected` under `prefix` from its own state.
pub async fn wait_listed_locally(
    client: &Client,
    prefix: &str,
    expected: &BTreeSet<String>,
    timeout: Duration,
    what: &str,
) {
    wait_for(timeout, what, || async {
        let names: BTreeSet<String> = queue_names(client, prefix, Consistency::Local).await.ok()?;
        (names == *expected).then_some(())
    })
    .await
}

/// The ids of the cluster's members, as `client`'s (not local) cluster
/// status lists them.
pub async fn member_ids<C: FromIterator<NodeId>>(client: &Client) -> C {
    client
        .cluster_status(false)
        .await
        .expect("cluster status")
        .members
        .iter()
        .map(|m| m.node_id)
        .collect()
}

/// Creates a queue of each of `names` (in order, without attributes),
/// failing the test on an error; returns the names.
pub async fn create_queues(
    client: &Client,
    names: impl IntoIterator<Item = String>,
) -> BTreeSet<String> {
    let mut created = BTreeSet::new();
    for name in names {
        client
            .create_queue(&name, HashMap::new())
            .await
            .unwrap_or_else(|e| panic!("creating {name}: {e}"));
        created.insert(name);
    }
    created
}

/// Creates `dlq`, then `queue` with `attributes` and a redrive policy that
/// moves a message to `dlq` after `max_receives` receives.
pub async fn create_queue_with_dlq(
    client: &Client,
    queue: &str,
    dlq: &str,
    max_receives: u32,
    attributes: &[(&str, &str)],
) {
    client
        .create_queue(dlq, HashMap::new())
        .await
        .expect("creating the dead-letter queue");
    let policy = format!(
        r#"{{"deadLetterTargetArn":"arn:aws:sqs:us-east-1:000000000000:{dlq}","maxReceiveCount":"{max_receives}"}}"#
    );
    let mut attributes = string_map(attributes);
    attributes.insert("RedrivePolicy".into(), policy);
    client
        .create_queue(queue, attributes)
        .await
        .expect("creating the queue");
}

/// A SendMessageBatch entry `id` of `body`, every other field left unset.
pub fn send_entry(
    id: impl Into<String>,
    body: impl Into<String>,
) -> pb::SendMessageBatchRequestEntry {
    pb::SendMessageBatchRequestEntry {
        id: id.into(),
        message_body: body.into(),
        ..Default::default()
    }
}

/// Sends `entries` to `queue` in one SendMessageBatch.
pub async fn send_batch(
    client: &Client,
    queue: &str,
    entries: Vec<pb::SendMessageBatchRequestEntry>,
) -> Result<pb::SendMessageBatchResponse, Error> {
    client
        .send_message_batch(pb::SendMessageBatchRequest {
            queue_name: queue.into(),
            entries,
        })
        .await
}

/// A DeleteMessageBatch entry for each of `messages`: the `n`th is `d{n}`.
pub fn delete_entries(messages: &[pb::Message]) -> Vec<pb::DeleteMessageBatchRequestEntry> {
    messages
        .iter()
        .enumerate()
        .map(|(n, m)| pb::DeleteMessageBatchRequestEntry {
            id: format!("d{n}"),
            receipt_handle: m.receipt_handle.clone(),
        })
        .collect()
}

/// Deletes `messages`, received from `queue`, in one DeleteMessageBatch
/// (entries as [`delete_entries`] names them).
pub async fn delete_batch(
    client: &Client,
    queue: &str,
    messages: &[pb::Message],
) -> Result<pb::DeleteMessageBatchResponse, Error> {
    client
        .delete_message_batch(pb::DeleteMessageBatchRequest {
            queue_name: queue.into(),
            entries: delete_entries(messages),
        })
        .await
}

/// Receives from `queue`, up to 10 at a time and without waiting, until a
/// receive comes back empty; each message is hidden for `visibility`
/// seconds, or deleted before the next receive if `delete` (as a FIFO
/// group's next message needs). Returns the messages in the order received.
pub async fn receive_until_empty(
    client: &Client,
    queue: &str,
    visibility: i32,
    delete: bool,
) -> Vec<pb::Message> {
    let mut all = Vec::new();
    loop {
        let r = client
            .receive_from(queue, 10, Some(visibility), Some(0))
            .await
            .unwrap_or_else(|e| panic!("receiving from {queue}: {e}"));
        if r.messages.is_empty() {
            return all;
        }
        for m in r.messages {
            if delete {
                client
                    .delete_message(queue, &m.receipt_handle)
                    .await
                    .unwrap_or_else(|e| panic!("deleting from {queue}: {e}"));
            }
            all.push(m);
        }
    }
}

/// A TRIM_HORIZON iterator of `shard` of `stream`.
pub async fn trim_horizon(client: &Client, stream: &str, shard: &str) -> Result<String, Error> {
    client
        .get_shard_iterator(pb::GetShardIteratorRequest {
            stream_name: stream.into(),
            shard_id: shard.into(),
            shard_iterator_type: "TRIM_HORIZON".into(),
            ..Default::default()
        })
        .await
}

/// Splits `shard` of `stream` at hash key `at`; returns the children.
pub async fn split_shard_at(
    client: &Client,
    stream: &str,
    shard: &str,
    at: u128,
) -> Result<Vec<String>, Error> {
    client
        .split_shard(pb::SplitShardRequest {
            stream_name: stream.into(),
            shard_to_split: shard.into(),
            new_starting_hash_key: at.to_string(),
        })
        .await
}

/// A record of `data` under partition key `key`, for a PutRecords.
pub fn entry(key: impl Into<String>, data: impl Into<Vec<u8>>) -> pb::PutRecordsRequestEntry {
    pb::PutRecordsRequestEntry {
        data: data.into(),
        partition_key: key.into(),
        ..Default::default()
    }
}

/// Puts one record of `data` under partition key `key` to `stream`.
pub async fn put_data(
    client: &Client,
    stream: &str,
    key: &str,
    data: impl Into<Vec<u8>>,
) -> Result<pb::PutRecordResponse, Error> {
    client
        .put_record(pb::PutRecordRequest {
            stream_name: stream.into(),
            data: data.into(),
            partition_key: key.into(),
            ..Default::default()
        })
        .await
}

/// Puts `records` to `stream` in one PutRecords; fails the test unless
/// every one was taken.
pub async fn put_all(client: &Client, stream: &str, records: Vec<pb::PutRecordsRequestEntry>) {
    let r = client
        .put_records(pb::PutRecordsRequest {
            stream_name: stream.into(),
            records,
        })
        .await
        .expect("PutRecords");
    assert_eq!(r.failed_record_count, 0);
}

/// Creates function `name` from the package `zip`, with handler
/// `app.handler` and every other setting left to its default.
pub async fn create_app_function(client: &Client, name: &str, zip: Vec<u8>) {
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: name.into(),
            handler: "app.handler".into(),
            zip_file: zip,
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("creating function {name}: {e}"));
}

/// A mapping of `function` to the stream `stream_arn`, read from its trim
/// horizon; every other setting is left to its default (or to the test's
/// own fields before `..`).
pub fn stream_mapping(function: &str, stream_arn: &str) -> pb::EventSourceMappingRequest {
    pb::EventSourceMappingRequest {
        function_name: function.into(),
        event_source_arn: stream_arn.into(),
        starting_position: "TRIM_HORIZON".into(),
        ..Default::default()
    }
}

/// Turns the event source mapping `uuid` on or off, changing nothing else.
pub async fn set_mapping_enabled(
    client: &Client,
    uuid: &str,
    enabled: bool,
) -> Result<pb::EventSourceMapping, Error> {
    client
        .update_event_source_mapping(pb::EventSourceMappingRequest {
            uuid: uuid.into(),
            enabled: Some(enabled),
            ..Default::default()
        })
        .await
}

/// Invokes a function and fails the test if the function failed (showing
/// what it returned); returns the reply and its payload as JSON.
pub async fn invoke_ok(
    client: &Client,
    req: pb::InvokeRequest,
) -> (pb::InvokeResponse, serde_json::Value) {
    let r = client.invoke(req).await.expect("invoke");
    assert_eq!(
        r.function_error,
        "",
        "{}",
        String::from_utf8_lossy(&r.payload)
    );
    let v = serde_json::from_slice(&r.payload).expect("a JSON payload");
    (r, v)
}

/// Puts the custom policy `name` holding `document` (as `admin`).
pub async fn put_policy(
    admin: &Client,
    name: &str,
    document: &str,
) -> Result<pb::PolicyInfo, Error> {
    admin
        .iam(
            pb::PutPolicyRequest {
                name: name.into(),
                document: document.into(),
            },
            |mut c, r| async move { c.put_policy(r).await },
        )
        .await
}

/// Makes principal `name` of `kind` with `policies` (as `admin`) and an
/// access key for it; returns the key.
pub async fn create_principal(
    admin: &Client,
    name: &str,
    kind: &str,
    policies: &[&str],
) -> Credentials {
    admin
        .iam(
            pb::CreatePrincipalRequest {
                name: name.into(),
                kind: kind.into(),
                policies: policies.iter().map(|s| s.to_string()).collect(),
            },
            |mut c, r| async move { c.create_principal(r).await },
        )
        .await
        .expect("create principal");
    let k = admin
        .iam(
            pb::CreateAccessKeyRequest { name: name.into() },
            |mut c, r| async move { c.create_access_key(r).await },
        )
        .await
        .expect("create access key");
    Credentials {
        access_key_id: k.access_key_id,
        secret_access_key: k.secret_access_key,
    }
}
