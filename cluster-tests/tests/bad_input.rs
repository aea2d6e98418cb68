//! Bad input gets the right gRPC code, a message naming the field and the
//! rule, and changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::process::Command;
use std::time::Duration;

use cluster_tests::{
    binary, elected_cluster, member_ids, queue_names, sluicectl, string_map, NodeId,
};
use sluice_client::{Client, Consistency, Error};
use tonic::Code;

/// How a call is refused: the gRPC status and the service's error code.
type Refusal = (Code, &'static str);

const INVALID_VALUE: Refusal = (Code::InvalidArgument, "InvalidParameterValue");
const NO_SUCH_NODE: Refusal = (Code::NotFound, "NodeNotFound");
const NOT_A_MEMBER: Refusal = (Code::Unavailable, "NotClusterMember");

fn expect_err(r: Result<impl std::fmt::Debug, Error>, (status, code): Refusal, needle: &str) {
    match r {
        Err(Error::Call {
            status: s,
            code: c,
            message,
        }) => {
            assert_eq!(s, status, "{message}");
            assert_eq!(c, code, "{message}");
            assert!(
                message.contains(needle),
                "{message:?} should mention {needle:?}"
            );
        }
        other => panic!("expected {status:?}/{code}, got {other:?}"),
    }
}

async fn names(client: &Client) -> BTreeSet<String> {
    queue_names(client, "", Consistency::Linearizable)
        .await
        .unwrap()
}

/// The ids of the members, as a set.
async fn members(client: &Client) -> BTreeSet<NodeId> {
    member_ids(client).await
}

#[tokio::test]
async fn invalid_requests_are_refused_and_change_nothing() {
    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let follower = c.others(leader)[0];
    let client = c.node(follower).client(Duration::from_secs(20));
    client.create_queue("keep", HashMap::new()).await.unwrap();
    let before = names(&client).await;
    let members_before = members(&client).await;

    // An invalid queue name, sent to a follower.
    let bad_name = client.create_queue("has space", HashMap::new()).await;
    expect_err(
        bad_name,
        INVALID_VALUE,
        "queue_name: must be 1-80 characters",
    );
    let too_long = client.create_queue(&"x".repeat(81), HashMap::new()).await;
    expect_err(too_long, INVALID_VALUE, "queue_name:");
    let attributes = string_map(&[("VisibilityTimeout", "43201")]);
    expect_err(
        client.create_queue("ok-name", attributes).await,
        (Code::InvalidArgument, "InvalidAttributeValue"),
        "attributes.VisibilityTimeout: must be an integer from 0 to 43200",
    );
    let missing = client.delete_queue("missing").await;
    expect_err(missing, (Code::NotFound, "QueueDoesNotExist"), "missing");
    let attributes = string_map(&[("DelaySeconds", "5")]);
    expect_err(
        client.create_queue("keep", attributes).await,
        (Code::AlreadyExists, "QueueNameExists"),
        "different attributes",
    );

    // Unknown node ids and malformed addresses in membership calls.
    let node_9 = "node_id: node 9";
    expect_err(client.promote_learner(9).await, NO_SUCH_NODE, node_9);
    expect_err(client.remove_member(9).await, NO_SUCH_NODE, node_9);
    let unnumbered = client.add_learner(0, "127.0.0.1:1").await;
    expect_err(
        unnumbered,
        INVALID_VALUE,
        "node_id: must be a positive integer",
    );
    let portless = client.add_learner(5, "no-port").await;
    expect_err(portless, INVALID_VALUE, "address: must be host:port");
    let to_missing = client.transfer_leadership(Some(9)).await;
    expect_err(to_missing, NO_SUCH_NODE, "to_node_id: node 9");

    assert_eq!(names(&client).await, before);
    assert_eq!(members(&client).await, members_before);
}

#[tokio::test]
async fn a_node_that_is_not_in_a_cluster_yet_says_so() {
    let (_serial, mut c, _) = elected_cluster(1, &[]).await;
    c.start_joining(2);
    c.node(2).wait_listening(Duration::from_secs(30)).await;
    let lonely = c.node(2).client(Duration::from_millis(300));
    let created = lonely.create_queue("q", HashMap::new()).await;
    expect_err(created, NOT_A_MEMBER, "add-learner");
    let listed = lonely.list_queues("", Consistency::Linearizable).await;
    expect_err(listed, NOT_A_MEMBER, "not a member of a cluster");
    // Nothing was created anywhere.
    assert!(names(&c.node(1).client(Duration::from_secs(5)))
        .await
        .is_empty());
}

#[test]
fn a_malformed_peer_list_stops_the_node_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    for (peers, needle) in [
        (
            "1=127.0.0.1:7071,garbage",
            "--peers: each entry must be ID=HOST:PORT",
        ),
        (
            "1=127.0.0.1:7071,1=127.0.0.1:7072",
            "--peers: node id 1 is listed twice",
        ),
        (
            "2=127.0.0.1:7072",
            "--peers: must include this node's own id 1",
        ),
    ] {
        let out = Command::new(binary("sluice"))
            .args(["serve", "--peers", peers, "--data-dir"])
            .arg(&data)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{peers}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("sluice serve: "), "{stderr}");
        assert!(stderr.contains(needle), "{stderr}");
        assert!(
            !data.exists(),
            "a refused start must not create the data directory"
        );
    }
}

#[tokio::test]
async fn sluicectl_prints_errors_as_one_line_and_fails() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let addr = c.nodes[&1].addr.clone();
    let run = |args: &[&str]| sluicectl(&addr, 5).args(args).output().unwrap();
    let out = run(&["queue", "create", "bad name"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("sluicectl: InvalidParameterValue: queue_name: must be"),
        "{stderr}"
    );
    let out = run(&["cluster", "promote", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .starts_with("sluicectl: NodeNotFound: node_id: node 7"));

    let out = run(&["queue", "create", "fine", "-a", "VisibilityTimeout=60"]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout)
        .trim()
        .ends_with("/000000000000/fine"));
    let out = run(&["--json", "queue", "list"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"name\":\"fine\""));
}

/// Tags on queues, topics and streams go through one replicated command:
/// added, replaced, listed and removed on a follower's request, and a tag the
/// rules refuse is refused with the service's code, naming the field and the
/// rule, and changes nothing.
#[tokio::test]
async fn tags_on_queues_topics_and_streams_follow_one_rule_set() {
    use sluice_client::sluice_proto::v1 as pb;
    use sluice_client::sluice_proto::v1::streams_client::StreamsClient;
    use sluice_client::sluice_proto::v1::topics_client::TopicsClient;

    let (_serial, mut c, leader) = elected_cluster(3, &[]).await;
    let follower = c.others(leader)[0];
    let client = c.node(follower).client(Duration::from_secs(20));
    let tags = string_map;

    // A queue.
    client.create_queue("tagged", HashMap::new()).await.unwrap();
    client
        .tag_queue("tagged", tags(&[("team", "a"), ("env", "dev")]))
        .await
        .unwrap();
    client
        .tag_queue("tagged", tags(&[("env", "prod")]))
        .await
        .unwrap();
    let reserved = client
        .tag_queue("tagged", tags(&[("aws:owner", "x")]))
        .await;
    expect_err(reserved, INVALID_VALUE, "reserved prefix");
    client
        .untag_queue("tagged", vec!["team".into()])
        .await
        .unwrap();
    assert_eq!(
        client.list_queue_tags("tagged").await.unwrap(),
        tags(&[("env", "prod")])
    );

    // A topic and a stream, through the generated clients.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", c.node(follower).addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
    let mut topics = TopicsClient::new(channel.clone());
    let arn = topics
        .create_topic(pb::CreateTopicRequest {
            name: "tagged".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .topic_arn;
    topics
        .tag_resource(pb::TagResourceRequest {
            resource_arn: arn.clone(),
            tags: tags(&[("team", "b")]),
        })
        .await
        .unwrap();
    let too_long = "v".repeat(257);
    let e = topics
        .tag_resource(pb::TagResourceRequest {
            resource_arn: arn.clone(),
            tags: tags(&[("k", &too_long)]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(
        e.message().contains("tags.k") && e.message().contains("at most 256"),
        "{}",
        e.message()
    );
    let listed = topics
        .list_tags_for_resource(pb::ListTagsForResourceRequest {
            resource_arn: arn.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        format!("{listed:?}").matches("team").count(),
        1,
        "{listed:?}"
    );
    assert!(!format!("{listed:?}").contains(&too_long));

    let mut streams = StreamsClient::new(channel);
    streams
        .create_stream(pb::CreateStreamRequest {
            stream_name: "tagged".into(),
            shard_count: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    streams
        .add_tags_to_stream(pb::AddTagsToStreamRequest {
            stream_name: "tagged".into(),
            tags: tags(&[("team", "c"), ("gone", "soon")]),
        })
        .await
        .unwrap();
    let e = streams
        .add_tags_to_stream(pb::AddTagsToStreamRequest {
            stream_name: "tagged".into(),
            tags: tags(&[("aws:x", "y")]),
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("reserved prefix"), "{}", e.message());
    streams
        .remove_tags_from_stream(pb::RemoveTagsFromStreamRequest {
            stream_name: "tagged".into(),
            tag_keys: vec!["gone".into()],
        })
        .await
        .unwrap();
    let listed = streams
        .list_tags_for_stream(pb::ListTagsForStreamRequest {
            stream_name: "tagged".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let listed = format!("{listed:?}");
    assert!(
        listed.contains("team") && listed.contains("\"c\""),
        "{listed}"
    );
    assert!(
        !listed.contains("gone") && !listed.contains("aws:x"),
        "{listed}"
    );
}
