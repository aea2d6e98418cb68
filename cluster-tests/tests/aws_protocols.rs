//! Unmodified AWS SDKs against a Sluice cluster over the AWS wire protocols
//! (see `broker/src/aws`): boto3 and the aws CLI, from
//! `cluster-tests/python/requirements.txt`.

use std::ffi::OsStr;

use cluster_tests::{create_principal, elected_secured_cluster, run_python};

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
