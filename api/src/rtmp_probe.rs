//! Checks an RTMP(S) destination by completing the RTMP handshake (rml_rtmp) over TCP or TLS.

use std::time::{Duration, Instant};

/// Connects and completes the handshake, returning how long it took. No key is sent and no
/// stream is published, so probing a live destination does not disturb it.
pub async fn handshake(url: &str, timeout: Duration) -> anyhow::Result<Duration> {
    tokio::time::timeout(timeout, probe(url))
        .await
        .map_err(|_| anyhow::anyhow!("no RTMP handshake within {} s", timeout.as_secs()))?
}

async fn probe(raw: &str) -> anyhow::Result<Duration> {
    let endpoint = castyard_media_worker::rtmp_out::Endpoint::parse(raw)?;
    let started = Instant::now();
    endpoint.connect().await?;
    Ok(started.elapsed())
}
