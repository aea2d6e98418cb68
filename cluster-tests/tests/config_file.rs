//! A node configured by file, with flags overriding it.

use std::time::Duration;

use cluster_tests::{binary, free_port, metric_value, scrape, serial, wait_for_status};

#[tokio::test]
async fn a_node_starts_from_a_config_file_and_flags_override_it() {
    let _serial = serial().await;
    let dir = tempfile::tempdir().unwrap();
    let file_port = free_port();
    let flag_port = free_port();
    let config = dir.path().join("sluice.toml");
    std::fs::write(
        &config,
        format!(
            "node-id = 7\nlisten = \"127.0.0.1:{file_port}\"\nregion = \"eu-west-1\"\naccount-id = \"123456789012\"\nthreads = 1\ndata-dir = \"{}\"\n",
            dir.path().join("data").display()
        ),
    )
    .unwrap();
    // --listen on the command line wins over the file's.
    let mut child = std::process::Command::new(binary("sluice"))
        .args(["serve", "--config"])
        .arg(&config)
        .args(["--listen", &format!("127.0.0.1:{flag_port}")])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let addr = format!("127.0.0.1:{flag_port}");
    let client = sluice_client::Client::with_options(
        [addr.as_str()],
        sluice_client::Options {
            deadline: Duration::from_millis(300),
            ..Default::default()
        },
    )
    .unwrap();
    let status = wait_for_status(
        &client,
        Duration::from_secs(20),
        "the configured node to lead",
        |s| (s.state == "leader").then_some(s),
    )
    .await;
    assert_eq!(status.node_id, 7);
    assert_eq!(status.region, "eu-west-1");
    assert_eq!(status.account_id, "123456789012");
    let url = client
        .create_queue("configured", Default::default())
        .await
        .unwrap();
    assert_eq!(url, format!("http://{addr}/123456789012/configured"));
    assert!(dir.path().join("data").join("db").exists());
    // The file's `threads`: one thread runs the node's tasks, where the
    // default is one per core.
    let text = scrape(&addr);
    assert_eq!(metric_value(&text, "sluice_runtime_threads"), 1.0, "{text}");
    let _ = child.kill();
    let _ = child.wait();
    // The file's port was not used.
    assert!(std::net::TcpListener::bind(("127.0.0.1", file_port)).is_ok());
}
