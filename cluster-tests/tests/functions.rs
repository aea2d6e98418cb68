//! Functions on a three-node cluster: a Python function written for AWS
//! Lambda (the official `awslambdaric` runtime client) is created once and
//! invoked through every node, each running it on its in-process worker.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;

use cluster_tests::{serial, Cluster};
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::zip_directory;

const APP: &str = r#"
import os

def handler(event, context):
    print("handling", event)
    return {"hello": event.get("name"), "function": context.function_name,
            "greeting": os.environ.get("GREETING"), "pid": os.getpid()}

def fail(event, context):
    raise KeyError("missing " + event.get("name", "?"))
"#;

#[tokio::test]
async fn a_python_lambda_function_runs_through_any_node() {
    let _serial = serial().await;
    let c = Cluster::start(3, &[]);
    let code = tempfile::tempdir().unwrap();
    std::fs::write(code.path().join("app.py"), APP).unwrap();
    let bootstrap = code.path().join("bootstrap");
    std::fs::write(
        &bootstrap,
        "#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let zip = zip_directory(code.path()).unwrap();
    let admin = c.client();
    let create = |name: &str, handler: &str| pb::CreateFunctionRequest {
        function_name: name.into(),
        runtime: "python3.11".into(),
        handler: handler.into(),
        memory_size: 256,
        timeout: 10,
        environment: HashMap::from([("GREETING".to_string(), "hi".to_string())]),
        zip_file: zip.clone(),
        description: String::new(),
    };
    let made = admin
        .create_function(create("hello", "app.handler"))
        .await
        .unwrap();
    assert_eq!(
        made.function_arn,
        "arn:aws:lambda:us-east-1:000000000000:function:hello"
    );
    admin
        .create_function(create("broken", "app.fail"))
        .await
        .unwrap();
    let again = admin.create_function(create("hello", "app.handler")).await;
    assert_eq!(again.unwrap_err().code(), Some("ResourceConflictException"));

    let invoke = |name: &str, payload: &str| pb::InvokeRequest {
        function_name: name.into(),
        payload: payload.as_bytes().to_vec(),
        log_type: "Tail".into(),
        ..Default::default()
    };
    for first in 0..3 {
        let client = c.client_from(first);
        let mut pids = Vec::new();
        for round in 0..2 {
            let r = client
                .invoke(invoke(
                    "hello",
                    &format!(r#"{{"name": "n{first}-{round}"}}"#),
                ))
                .await
                .unwrap();
            assert_eq!(r.status_code, 200);
            assert_eq!(
                r.function_error,
                "",
                "{}",
                String::from_utf8_lossy(&r.payload)
            );
            let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
            assert_eq!(v["hello"], format!("n{first}-{round}"));
            assert_eq!(v["function"], "hello");
            assert_eq!(v["greeting"], "hi");
            assert!(!r.log_result.is_empty());
            pids.push(v["pid"].clone());
        }
        // The second invocation on a node reuses its warm environment.
        assert_eq!(pids[0], pids[1], "node {first}");
        let r = client
            .invoke(invoke("broken", r#"{"name": "x"}"#))
            .await
            .unwrap();
        assert_eq!(r.function_error, "Unhandled");
        let v: serde_json::Value = serde_json::from_slice(&r.payload).unwrap();
        assert_eq!(v["errorType"], "KeyError");
        assert_eq!(v["errorMessage"], "'missing x'");
    }
    let listed: Vec<String> = admin
        .list_functions()
        .await
        .unwrap()
        .into_iter()
        .map(|f| f.function_name)
        .collect();
    assert_eq!(listed, ["broken", "hello"]);
    admin.delete_function("broken").await.unwrap();
    let gone = admin.invoke(invoke("broken", "{}")).await.unwrap_err();
    assert_eq!(gone.code(), Some("ResourceNotFoundException"));
    let bad = admin
        .create_function(pb::CreateFunctionRequest {
            zip_file: b"not a zip".to_vec(),
            ..create("bad", "x")
        })
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Some("InvalidParameterValue"));
    assert!(bad.to_string().contains("zip_file"), "{bad}");
}
