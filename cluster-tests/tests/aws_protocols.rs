//! Unmodified AWS SDKs against a Sluice cluster over the AWS wire protocols
//! (see `broker/src/aws`): boto3 and the aws CLI, from
//! `cluster-tests/python/requirements.txt`.

use std::ffi::OsStr;

use cluster_tests::{
    create_principal, elected_cluster, elected_secured_cluster, run_python, run_python_with,
};

/// Runs `script` (in `cluster-tests/python`) against three secured nodes
/// with a key allowed everything and a read-only one; its output. With
/// `sdk`, that directory comes first on `PYTHONPATH`.
async fn drive(script: &str, sdk: Option<&std::path::Path>, flags: &[&str]) -> String {
    let (_serial, c, _) = elected_secured_cluster(3, flags).await;
    let admin = c.client();
    let user = create_principal(&admin, "sdk-user", "user", &["AdministratorAccess"]).await;
    let reader = create_principal(&admin, "sdk-reader", "user", &["ReadOnlyAccess"]).await;
    let (endpoints, ca) = c.sdk_endpoints();
    let path = format!("{}/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let args: Vec<&OsStr> = vec![
        OsStr::new(&path),
        OsStr::new(&endpoints),
        ca.as_os_str(),
        OsStr::new(&user.access_key_id),
        OsStr::new(&user.secret_access_key),
        OsStr::new(&reader.access_key_id),
        OsStr::new(&reader.secret_access_key),
    ];
    run_python_with(
        &args,
        sdk,
        &format!(
            "{script} (are cluster-tests/python/requirements*.txt installed? see scripts/test)"
        ),
    )
}

#[tokio::test]
async fn boto3_and_the_aws_cli_drive_every_sqs_action_on_three_secured_nodes() {
    let out = drive("aws_sqs.py", None, &[]).await;
    assert!(
        out.contains("all SQS checks passed over the json protocol"),
        "{out}"
    );
}

#[tokio::test]
async fn an_older_boto3_drives_every_sqs_action_over_the_query_protocol() {
    // scripts/test installs boto3 1.28.0, the last before SQS moved to
    // JSON, here (requirements-query.txt).
    let sdk = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/query-sdk");
    assert!(
        sdk.join("boto3").is_dir(),
        "{} is missing: run scripts/test, or pip install --target it -r cluster-tests/python/requirements-query.txt",
        sdk.display()
    );
    let out = drive("aws_sqs.py", Some(&sdk), &[]).await;
    assert!(
        out.contains("SQS over the query protocol (botocore 1.31.0)"),
        "{out}"
    );
    assert!(
        out.contains("all SQS checks passed over the query protocol"),
        "{out}"
    );
}

#[tokio::test]
async fn boto3_and_the_aws_cli_drive_every_sns_action_on_three_secured_nodes() {
    // The HTTP subscription's endpoint listens on loopback.
    let out = drive("aws_sns.py", None, &["--http-allow", "127.0.0.0/8"]).await;
    assert!(out.contains("all SNS checks passed"), "{out}");
}

#[tokio::test]
async fn an_sdk_long_poll_outlasts_the_idle_timeout_of_its_connection() {
    let (_serial, c, _) = elected_cluster(1, &["--idle-timeout-secs", "1"]).await;
    let endpoint = format!("http://{}", c.addrs()[0]);
    // One attempt only: a connection closed under the poll is an error,
    // not a silent retry.
    let code = r#"
import sys, time, boto3, botocore.config
sqs = boto3.client("sqs", endpoint_url=sys.argv[1], region_name="us-east-1",
                   aws_access_key_id="x", aws_secret_access_key="y",
                   config=botocore.config.Config(retries={"total_max_attempts": 1}))
url = sqs.create_queue(QueueName="idle")["QueueUrl"]
started = time.time()
r = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=3)
print("waited %.1f" % (time.time() - started), len(r.get("Messages", [])))
"#;
    let out = run_python(
        &[OsStr::new("-c"), OsStr::new(code), OsStr::new(&endpoint)],
        "the long-poll script (is boto3 installed?)",
    );
    let waited: f64 = out
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output: {out}"));
    assert!(waited >= 2.5, "the poll ended early: {out}");
    assert!(out.trim_end().ends_with(" 0"), "{out}");
}

#[tokio::test]
async fn forms_posted_to_a_queue_url_are_sqs_and_unknown_grpc_methods_stay_unimplemented() {
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let base = format!("http://{}", c.addrs()[0]);
    let http = reqwest::Client::new();
    let form = |body: &'static str| {
        http.post(format!("{base}/000000000000/by-path"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
    };
    let created = form("Action=CreateQueue&QueueName=by-path")
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let sent = form("Action=SendMessage&MessageBody=hi")
        .send()
        .await
        .unwrap();
    let text = sent.text().await.unwrap();
    assert!(text.contains("<SendMessageResult><MD5OfMessageBody>49f68a5c8493ec2c0bf489821c21fc3b</MD5OfMessageBody>"), "{text}");
    let missing = http
        .post(format!("{base}/000000000000/no-such-queue"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("Action=SendMessage&MessageBody=hi")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 400);
    let text = missing.text().await.unwrap();
    assert!(
        text.contains("<Code>AWS.SimpleQueueService.NonExistentQueue</Code>"),
        "{text}"
    );
    // A gRPC call of a method no service has is still gRPC's Unimplemented.
    let grpc = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap()
        .post(format!("{base}/sluice.v1.Queues/NoSuchMethod"))
        .header("content-type", "application/grpc")
        .body(vec![0u8, 0, 0, 0, 0])
        .send()
        .await
        .unwrap();
    assert_eq!(grpc.headers()["grpc-status"], "12", "{:?}", grpc.headers());
}

#[tokio::test]
async fn boto3_and_the_aws_cli_drive_every_kinesis_action_on_three_secured_nodes() {
    let out = drive("aws_kinesis.py", None, &[]).await;
    assert!(out.contains("all Kinesis checks passed"), "{out}");
}

#[tokio::test]
async fn boto3_and_the_aws_cli_drive_every_eventbridge_action_on_three_secured_nodes() {
    let out = drive("aws_events.py", None, &[]).await;
    assert!(out.contains("all EventBridge checks passed"), "{out}");
}

#[tokio::test]
async fn boto3_and_the_aws_cli_drive_every_lambda_action_on_three_secured_nodes() {
    // scripts/test installs the Python runtime interface client here
    // (requirements-runtimes.txt); the functions' zips have no bootstrap.
    let runtimes =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/lambda-runtimes");
    assert!(
        runtimes.join("python/awslambdaric").is_dir(),
        "{} is missing: run scripts/test, or pip install --target it/python -r cluster-tests/python/requirements-runtimes.txt",
        runtimes.display()
    );
    let runtimes = runtimes.to_string_lossy().into_owned();
    let out = drive("aws_lambda.py", None, &["--runtimes-dir", &runtimes]).await;
    assert!(out.contains("all Lambda checks passed"), "{out}");
}

/// A Kinesis call in CBOR, as the Java SDK sends it by default (unsigned:
/// the development node takes any signature, or none).
async fn cbor_call(
    base: &str,
    action: &str,
    members: Vec<(&str, ciborium::value::Value)>,
) -> (u16, ciborium::value::Value) {
    use ciborium::value::Value;
    let request = Value::Map(
        members
            .into_iter()
            .map(|(k, v)| (Value::Text(k.into()), v))
            .collect(),
    );
    let mut body = Vec::new();
    ciborium::ser::into_writer(&request, &mut body).unwrap();
    let answer = reqwest::Client::new()
        .post(format!("{base}/"))
        .header("x-amz-target", format!("Kinesis_20131202.{action}"))
        .header("content-type", "application/x-amz-cbor-1.1")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = answer.status().as_u16();
    assert_eq!(
        answer.headers()["content-type"],
        "application/x-amz-cbor-1.1",
        "{action}"
    );
    let bytes = answer.bytes().await.unwrap();
    (status, ciborium::de::from_reader(&bytes[..]).unwrap())
}

/// The member `name` of a CBOR map.
fn member<'v>(map: &'v ciborium::value::Value, name: &str) -> &'v ciborium::value::Value {
    let ciborium::value::Value::Map(entries) = map else {
        panic!("not a map: {map:?}")
    };
    &entries
        .iter()
        .find(|(k, _)| k.as_text() == Some(name))
        .unwrap_or_else(|| panic!("no {name} in {map:?}"))
        .1
}

#[tokio::test]
async fn kinesis_speaks_cbor_with_blobs_as_bytes_and_timestamps_as_epoch_milliseconds() {
    use ciborium::value::Value;
    let (_serial, c, _) = elected_cluster(1, &[]).await;
    let base = format!("http://{}", c.addrs()[0]);
    let text = |s: &str| Value::Text(s.into());
    let (status, _) = cbor_call(
        &base,
        "CreateStream",
        vec![
            ("StreamName", text("cbor")),
            ("ShardCount", Value::Integer(1.into())),
        ],
    )
    .await;
    assert_eq!(status, 200);
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let (status, put) = cbor_call(
        &base,
        "PutRecord",
        vec![
            ("StreamName", text("cbor")),
            ("Data", Value::Bytes(vec![0, 1, 255])),
            ("PartitionKey", text("k")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{put:?}");
    assert_eq!(member(&put, "ShardId"), &text("shardId-000000000000"));
    let (_, it) = cbor_call(
        &base,
        "GetShardIterator",
        vec![
            ("StreamName", text("cbor")),
            ("ShardId", text("shardId-000000000000")),
            ("ShardIteratorType", text("AT_TIMESTAMP")),
            // Tag 1 with epoch milliseconds, as the Java SDK writes it.
            (
                "Timestamp",
                Value::Tag(1, Box::new(Value::Integer((before - 1_000).into()))),
            ),
        ],
    )
    .await;
    let (status, got) = cbor_call(
        &base,
        "GetRecords",
        vec![("ShardIterator", member(&it, "ShardIterator").clone())],
    )
    .await;
    assert_eq!(status, 200, "{got:?}");
    let Value::Array(records) = member(&got, "Records") else {
        panic!("{got:?}")
    };
    assert_eq!(records.len(), 1, "{got:?}");
    assert_eq!(member(&records[0], "Data"), &Value::Bytes(vec![0, 1, 255]));
    let Value::Tag(1, ms) = member(&records[0], "ApproximateArrivalTimestamp") else {
        panic!("{got:?}")
    };
    let ms = i64::try_from(ms.as_integer().expect("epoch milliseconds")).unwrap();
    assert!(
        (before - 1_000..before + 60_000).contains(&ms),
        "{ms} vs {before}"
    );
    // Errors come back in CBOR too, typed.
    let (status, e) = cbor_call(
        &base,
        "DescribeStream",
        vec![("StreamName", text("no-such-stream"))],
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(member(&e, "__type"), &text("ResourceNotFoundException"));
}
