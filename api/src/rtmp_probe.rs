//! Checks an RTMP(S) destination by completing the RTMP handshake (rml_rtmp) over TCP or TLS.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Connects and completes the handshake, returning how long it took. No key is sent and no
/// stream is published, so probing a live destination does not disturb it.
pub async fn handshake(url: &str, timeout: Duration) -> anyhow::Result<Duration> {
    tokio::time::timeout(timeout, probe(url))
        .await
        .map_err(|_| anyhow::anyhow!("no RTMP handshake within {} s", timeout.as_secs()))?
}

async fn probe(raw: &str) -> anyhow::Result<Duration> {
    let url = url::Url::parse(raw).context("invalid URL")?;
    let tls = match url.scheme() {
        "rtmp" => false,
        "rtmps" => true,
        other => bail!("unsupported scheme {other}"),
    };
    let host = url.host_str().context("URL has no host")?.to_owned();
    let port = url.port().unwrap_or(if tls { 443 } else { 1935 });
    let started = Instant::now();
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot connect to {host}:{port}"))?;
    tcp.set_nodelay(true)?;
    if tls {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let config = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(host.clone())
            .context("invalid TLS server name")?;
        let stream = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(name, tcp)
            .await
            .context("TLS handshake failed")?;
        exchange(stream).await?;
    } else {
        exchange(tcp).await?;
    }
    Ok(started.elapsed())
}

async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> anyhow::Result<()> {
    let mut hs = Handshake::new(PeerType::Client);
    let c0c1 = hs
        .generate_outbound_p0_and_p1()
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    stream.write_all(&c0c1).await?;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = stream.read(&mut buf).await.context("reading handshake")?;
        if n == 0 {
            bail!("server closed the connection during the RTMP handshake");
        }
        match hs
            .process_bytes(&buf[..n])
            .map_err(|e| anyhow::anyhow!("not an RTMP server: {e:?}"))?
        {
            HandshakeProcessResult::InProgress { response_bytes } => {
                stream.write_all(&response_bytes).await?;
            }
            HandshakeProcessResult::Completed { response_bytes, .. } => {
                stream.write_all(&response_bytes).await?;
                stream.flush().await?;
                return Ok(());
            }
        }
    }
}
