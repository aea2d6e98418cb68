//! A second SDK, from another registry: the AWS SDK for JavaScript v3
//! (npm), unmodified, runs a smoke test of SQS, SNS, Kinesis, Lambda and STS
//! against three secured nodes (`cluster-tests/js/smoke.mjs`, its packages
//! pinned in `cluster-tests/js/package-lock.json`).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use cluster_tests::{create_principal, elected_secured_cluster};

#[tokio::test]
async fn the_javascript_sdk_runs_a_smoke_test_of_every_service_on_three_secured_nodes() {
    let js = Path::new(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        js.join("node_modules/@aws-sdk").is_dir(),
        "{} is missing: run scripts/test, or npm ci --prefix cluster-tests/js",
        js.join("node_modules").display()
    );
    let (_serial, c, _) = elected_secured_cluster(3, &[]).await;
    let admin = c.client();
    let user = create_principal(&admin, "js-user", "user", &["AdministratorAccess"]).await;
    let (endpoints, ca) = c.sdk_endpoints();
    let started = Instant::now();
    let out = Command::new("node")
        .arg(js.join("smoke.mjs"))
        .arg(&endpoints)
        .arg(&ca)
        .arg(&user.access_key_id)
        .arg(&user.secret_access_key)
        // The SDK warns on every run that its releases after January 2027
        // want Node.js 22; the pinned ones run on 20.
        .env("AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED", "true")
        .output()
        .expect("running node (is Node.js 20 or later installed?)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "smoke.mjs failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains("all JS checks passed"),
        "{stdout}\n{stderr}"
    );
    eprintln!(
        "smoke.mjs passed in {:.1} s:\n{stdout}",
        started.elapsed().as_secs_f64()
    );
}
