//! Function start-up: the latency of an invocation that starts a new
//! execution environment (cold) and of one that reuses a warm one.
//!
//! A Python function on the official runtime client (`awslambdaric`) is
//! created on the cluster. Warm: the same environment answers `n`
//! invocations in turn. Cold: before each of `n` invocations the function's
//! configuration changes (a new revision), so the invocation needs a new
//! environment; only the invocation is timed. Provisioned: before each of
//! `n` first invocations of a newly published version, that version gets
//! provisioned concurrency 1 and the bench waits until the cluster reports
//! it READY; only the first invocation is timed.

use std::os::unix::fs::PermissionsExt;
use std::time::Instant;

use hdrhistogram::Histogram;
use sluice_client::sluice_proto::v1 as pb;
use sluice_client::{zip_directory, Client};

use crate::{p50_p99_text, quantiles_ms};

const APP: &str = "def handler(event, context):\n    return {\"ok\": True}\n";

/// Medians and tails of cold and warm invocations, in microseconds.
pub struct Starts {
    /// Cold invocations.
    pub cold: Histogram<u64>,
    /// Warm invocations.
    pub warm: Histogram<u64>,
    /// First invocations of versions with provisioned concurrency.
    pub provisioned: Histogram<u64>,
}

impl Starts {
    /// The report of a run of `n` invocations of each kind, as JSON and as
    /// a line of text.
    pub fn report(&self, n: usize) -> (serde_json::Value, String) {
        let json = serde_json::json!({
            "workload": "FunctionStarts",
            "invocations": n,
            "cold_ms": quantiles_ms(&self.cold),
            "warm_ms": quantiles_ms(&self.warm),
            "provisioned_first_ms": quantiles_ms(&self.provisioned),
        });
        let text = format!(
            "function starts, {n} each: cold {}; warm {}; first invoke with provisioned concurrency {}",
            p50_p99_text(&self.cold),
            p50_p99_text(&self.warm),
            p50_p99_text(&self.provisioned),
        );
        (json, text)
    }
}

async fn invoke(client: &Client, name: &str) -> Result<u64, String> {
    invoke_version(client, name, "").await
}

async fn invoke_version(client: &Client, name: &str, qualifier: &str) -> Result<u64, String> {
    let started = Instant::now();
    let r = client
        .invoke(pb::InvokeRequest {
            function_name: name.into(),
            payload: b"{}".to_vec(),
            qualifier: qualifier.into(),
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    if !r.function_error.is_empty() {
        return Err(String::from_utf8_lossy(&r.payload).into_owned());
    }
    Ok((started.elapsed().as_micros() as u64).max(1))
}

/// Changes the function's description: a new revision, whose invocations
/// need new environments.
async fn new_revision(client: &Client, name: &str, description: String) -> Result<(), String> {
    let req = pb::UpdateFunctionConfigurationRequest {
        function_name: name.into(),
        description: Some(description),
        ..Default::default()
    };
    client
        .call(|ch| {
            let req = req.clone();
            async move {
                pb::functions_client::FunctionsClient::new(ch)
                    .update_function_configuration(req)
                    .await
            }
        })
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Runs `n` warm and `n` cold invocations of a fresh function `name`.
pub async fn starts(client: &Client, name: &str, n: usize) -> Result<Starts, String> {
    let dir = std::env::temp_dir().join(format!("sluice-bench-fn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    std::fs::write(dir.join("app.py"), APP).map_err(|e| e.to_string())?;
    let bootstrap = dir.join("bootstrap");
    std::fs::write(
        &bootstrap,
        "#!/bin/sh\nexec python3 -m awslambdaric \"$_HANDLER\"\n",
    )
    .map_err(|e| e.to_string())?;
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    let zip = zip_directory(&dir).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&dir);
    client
        .create_function(pb::CreateFunctionRequest {
            function_name: name.into(),
            runtime: "python3".into(),
            handler: "app.handler".into(),
            zip_file: zip,
            ..Default::default()
        })
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Starts {
        cold: crate::histogram(),
        warm: crate::histogram(),
        provisioned: crate::histogram(),
    };
    // The first invocation is cold; the next n reuse its environment.
    invoke(client, name).await?;
    for _ in 0..n {
        out.warm.saturating_record(invoke(client, name).await?);
    }
    for i in 0..n {
        new_revision(client, name, format!("revision {i}")).await?;
        out.cold.saturating_record(invoke(client, name).await?);
    }
    for i in 0..n {
        new_revision(client, name, format!("provisioned {i}")).await?;
        let version = client
            .publish_version(name)
            .await
            .map_err(|e| e.to_string())?
            .version;
        client
            .put_provisioned_concurrency(name, &version, Some(1))
            .await
            .map_err(|e| e.to_string())?;
        let asked = Instant::now();
        loop {
            let p = client
                .provisioned_concurrency(name, &version)
                .await
                .map_err(|e| e.to_string())?;
            if p.status == "READY" {
                break;
            }
            if asked.elapsed().as_secs() > 60 {
                return Err(format!("version {version} not READY after 60 s"));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        out.provisioned
            .saturating_record(invoke_version(client, name, &version).await?);
        client
            .put_provisioned_concurrency(name, &version, None)
            .await
            .map_err(|e| e.to_string())?;
    }
    let _ = client.delete_function(name).await;
    Ok(out)
}
