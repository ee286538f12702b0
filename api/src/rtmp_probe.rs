//! Checks an RTMP(S) destination by completing the RTMP handshake (rml_rtmp) over TCP or TLS.

use std::time::{Duration, Instant};

use castyard_crd::DestinationErrorKind;
use castyard_media_worker::rtmp_out::{Endpoint, Failure};

/// Connects and completes the handshake, returning how long it took. No key is sent and no
/// stream is published, so probing a live destination does not disturb it. A failure is
/// reported as a show would report it (a TLS failure with its reason, say).
pub async fn handshake(url: &str, timeout: Duration) -> Result<Duration, Failure> {
    tokio::time::timeout(timeout, probe(url))
        .await
        .map_err(|_| {
            Failure::new(
                DestinationErrorKind::Unreachable,
                format!("no RTMP handshake within {} s", timeout.as_secs()),
            )
        })?
}

async fn probe(raw: &str) -> Result<Duration, Failure> {
    let endpoint = Endpoint::parse(raw)
        .map_err(|e| Failure::new(DestinationErrorKind::Rejected, format!("{e:#}")))?;
    let started = Instant::now();
    endpoint.connect().await?;
    Ok(started.elapsed())
}
