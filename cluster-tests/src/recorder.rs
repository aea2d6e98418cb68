//! Where test functions report what they were handed: functions write
//! nowhere but their own /tmp (they run as an unprivileged user in a
//! read-only filesystem), so they POST their notes to an HTTP endpoint in
//! the test process instead of appending to a file.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// An HTTP endpoint that keeps every body POSTed to it, by path.
pub struct Recorder {
    /// `http://IP:PORT`: functions POST to `{url}/{anything}`.
    pub url: String,
    notes: Arc<Mutex<BTreeMap<String, String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Recorder {
    /// Listens on `ip` (loopback, or the address a chaos run's nodes reach
    /// the test process at).
    pub async fn start(ip: &str) -> Recorder {
        let notes: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
        let kept = notes.clone();
        let app =
            axum::Router::new().fallback(move |uri: axum::http::Uri, body: axum::body::Bytes| {
                let mut n = kept.lock().unwrap_or_else(|e| e.into_inner());
                let text = n.entry(uri.path().to_string()).or_default();
                text.push_str(&String::from_utf8_lossy(&body));
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                async { "noted" }
            });
        let listener = tokio::net::TcpListener::bind((ip, 0))
            .await
            .expect("binding the recorder");
        let url = format!("http://{}", listener.local_addr().expect("its address"));
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Recorder { url, notes, task }
    }

    /// Everything POSTed to `path` (e.g. `/seen`), in arrival order.
    pub fn text(&self, path: &str) -> String {
        let n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        n.get(path).cloned().unwrap_or_default()
    }

    /// Everything POSTed to any path, path by path.
    pub fn all(&self) -> String {
        let n = self.notes.lock().unwrap_or_else(|e| e.into_inner());
        n.values().cloned().collect()
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}
