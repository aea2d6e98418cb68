//! The physical reference: what this machine can do at best, for the
//! benchmark report to show how close each broker comes. Fsyncs per second
//! of a file on the data disk (a 1 KiB append then `fdatasync`, one at a
//! time, as a log does for a lone write) and the bandwidth of one loopback
//! TCP connection.

use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What was measured.
pub struct Reference {
    pub fsyncs_per_s: f64,
    /// fdatasync latency quantiles, ms: p50, p99, max.
    pub fsync_ms: (f64, f64, f64),
    pub loopback_mb_per_s: f64,
}

/// Appends 1 KiB and fdatasyncs, in a loop for `duration`, in a scratch
/// file under `dir` (removed afterwards).
pub fn fsyncs(dir: &Path, duration: Duration) -> std::io::Result<(f64, (f64, f64, f64))> {
    let path = dir.join(format!("sluice-bench-fsync-{}", std::process::id()));
    let mut file = std::fs::File::create(&path)?;
    let block = [b'x'; 1024];
    let mut h = crate::histogram();
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < duration {
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        h.saturating_record((t.elapsed().as_micros() as u64).max(1));
        n += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    drop(file);
    std::fs::remove_file(&path)?;
    let q = |p: f64| h.value_at_quantile(p) as f64 / 1000.0;
    Ok((n as f64 / secs, (q(0.5), q(0.99), h.max() as f64 / 1000.0)))
}

/// Streams 1 MiB writes over one loopback TCP connection for `duration`;
/// returns megabytes a second received.
pub async fn loopback(duration: Duration) -> std::io::Result<f64> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let reader = tokio::spawn(async move {
        let (mut socket, _) = listener.accept().await?;
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        loop {
            let n = socket.read(&mut buf).await?;
            if n == 0 {
                return Ok::<u64, std::io::Error>(total);
            }
            total += n as u64;
        }
    });
    let mut out = tokio::net::TcpStream::connect(addr).await?;
    let chunk = vec![b'x'; 1 << 20];
    let start = Instant::now();
    while start.elapsed() < duration {
        out.write_all(&chunk).await?;
    }
    out.shutdown().await?;
    drop(out);
    let total = reader.await.expect("reader task")?;
    Ok(total as f64 / start.elapsed().as_secs_f64() / 1e6)
}

/// Measures both, `duration` each.
pub async fn measure(dir: &Path, duration: Duration) -> std::io::Result<Reference> {
    let (fsyncs_per_s, fsync_ms) = fsyncs(dir, duration)?;
    let loopback_mb_per_s = loopback(duration).await?;
    Ok(Reference {
        fsyncs_per_s,
        fsync_ms,
        loopback_mb_per_s,
    })
}
