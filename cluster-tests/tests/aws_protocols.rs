//! Unmodified AWS SDKs against a Sluice cluster over the AWS wire protocols
//! (see `broker/src/aws`): boto3 and the aws CLI, from
//! `cluster-tests/python/requirements.txt`.

use std::ffi::OsStr;

use cluster_tests::{create_principal, elected_cluster, elected_secured_cluster, run_python};

#[tokio::test]
async fn boto3_and_the_aws_cli_drive_every_sqs_action_on_three_secured_nodes() {
    let (_serial, c, _) = elected_secured_cluster(3, &[]).await;
    let admin = c.client();
    let user = create_principal(&admin, "sdk-user", "user", &["AdministratorAccess"]).await;
    let reader = create_principal(&admin, "sdk-reader", "user", &["ReadOnlyAccess"]).await;
    let endpoints = c
        .addrs()
        .iter()
        .map(|a| format!("https://{a}"))
        .collect::<Vec<_>>()
        .join(",");
    let ca = c.pki.as_ref().expect("a secured cluster").ca.clone();
    let script = format!("{}/python/aws_sqs.py", env!("CARGO_MANIFEST_DIR"));
    let args: Vec<&OsStr> = vec![
        OsStr::new(&script),
        OsStr::new(&endpoints),
        ca.as_os_str(),
        OsStr::new(&user.access_key_id),
        OsStr::new(&user.secret_access_key),
        OsStr::new(&reader.access_key_id),
        OsStr::new(&reader.secret_access_key),
    ];
    let out = run_python(
        &args,
        "aws_sqs.py (are cluster-tests/python/requirements.txt installed?)",
    );
    assert!(out.contains("all SQS checks passed"), "{out}");
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
