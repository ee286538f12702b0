//! Publishing to RTMP(S) destinations (rml_rtmp's client over TCP or rustls): one task per
//! destination, fed from a live FLV channel, reconnecting with backoff on its own.

use std::sync::{Arc, Weak};
use std::time::Duration;

use anyhow::{Context as _, bail};
use backon::BackoffBuilder;
use bytes::Bytes;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ClientSession, ClientSessionConfig, ClientSessionEvent, ClientSessionResult, PublishRequestType,
};
use rml_rtmp::time::RtmpTimestamp;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::broadcast;

use castyard_crd::DestinationErrorKind;

use crate::flv::{self, Channel, Tag};

pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Why a destination failed, in a message for the host and a kind for the status and metrics.
/// Never carries the stream key (it is only ever inside the RTMP session).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    pub kind: DestinationErrorKind,
    pub message: String,
}

impl Failure {
    pub fn new(kind: DestinationErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// rtmp[s]://host[:port]/app[/instance]: where to connect and which application to ask for.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// A DNS name, or an IP address without brackets: what TLS checks the certificate against
    /// (an IP address against its IP SANs).
    pub host: String,
    pub port: u16,
    pub tls: bool,
    pub app: String,
    pub tc_url: String,
}

impl Endpoint {
    pub fn parse(raw: &str) -> anyhow::Result<Self> {
        let url = url::Url::parse(raw).context("invalid URL")?;
        let tls = match url.scheme() {
            "rtmp" => false,
            "rtmps" => true,
            other => bail!("unsupported scheme {other}"),
        };
        let host = match url.host().context("URL has no host")? {
            url::Host::Domain(d) => d.to_owned(),
            url::Host::Ipv4(ip) => ip.to_string(),
            url::Host::Ipv6(ip) => ip.to_string(),
        };
        let port = url.port().unwrap_or(if tls { 443 } else { 1935 });
        let app = url.path().trim_matches('/').to_owned();
        Ok(Self {
            host,
            port,
            tls,
            app,
            tc_url: raw.trim_end_matches('/').to_owned(),
        })
    }

    /// TCP, then TLS for rtmps (see [`crate::tls`] for whom it trusts), then the RTMP
    /// handshake. Returns the stream and any bytes the server sent past the handshake.
    pub async fn connect(&self) -> Result<(Box<dyn Io>, Vec<u8>), Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                Failure::new(
                    DestinationErrorKind::Unreachable,
                    format!("cannot connect to {}:{}: {e}", self.host, self.port),
                )
            })?;
        let _ = tcp.set_nodelay(true);
        let mut stream: Box<dyn Io> = if self.tls {
            let tls = |m: String| Failure::new(DestinationErrorKind::Tls, format!("TLS: {m}"));
            let config = crate::tls::client_config().map_err(tls)?;
            let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                .map_err(|e| tls(format!("{} is not a valid server name: {e}", self.host)))?;
            Box::new(
                tokio_rustls::TlsConnector::from(config)
                    .connect(name, tcp)
                    .await
                    .map_err(|e| {
                        tls(crate::tls::describe(&e, &self.host)
                            .unwrap_or_else(|| format!("handshake failed: {e}")))
                    })?,
            )
        } else {
            Box::new(tcp)
        };
        let leftover = handshake(&mut stream)
            .await
            .map_err(|e| Failure::new(DestinationErrorKind::Protocol, format!("{e:#}")))?;
        Ok((stream, leftover))
    }
}

async fn handshake(stream: &mut Box<dyn Io>) -> anyhow::Result<Vec<u8>> {
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
            HandshakeProcessResult::Completed {
                response_bytes,
                remaining_bytes,
            } => {
                stream.write_all(&response_bytes).await?;
                stream.flush().await?;
                return Ok(remaining_bytes);
            }
        }
    }
}

/// One destination of a live stream. The key is only ever sent inside the RTMP session: never
/// on a command line, never in a log.
#[derive(Clone)]
pub struct Target {
    pub name: String,
    pub url: String,
    pub stream_key: String,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Connecting,
    Live,
    Retrying,
}

/// What a destination output reports as it goes (with the failure that made it retry).
pub type Report = Arc<dyn Fn(&str, State, Option<&Failure>) + Send + Sync>;

/// Publishes the channel's stream to `target` until the channel ends, reconnecting with
/// backoff (0.5 s doubling to 5 s) whenever the destination fails. Each attempt starts at the
/// last keyframe, so the destination never sees a broken GOP.
pub async fn run(
    target: Target,
    channel: Weak<Channel>,
    report: Report,
    sent_bytes: prometheus_client::metrics::counter::Counter,
) {
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(500))
        .with_max_delay(Duration::from_secs(5))
        .without_max_times()
        .build();
    loop {
        // Held only to subscribe: when the ingest ends, the channel goes, and so does this.
        let Some(subscription) = channel.upgrade().map(|c| c.subscribe()) else {
            return;
        };
        report(&target.name, State::Connecting, None);
        let live = {
            let report = report.clone();
            let name = target.name.clone();
            move || report(&name, State::Live, None)
        };
        match publish(&target, subscription, live, &sent_bytes).await {
            Ok(()) => return,
            Err(f) => {
                tracing::info!(destination = %target.name, kind = f.kind.label(), error = %f, "destination failed; retrying");
                report(&target.name, State::Retrying, Some(&f));
            }
        }
        tokio::time::sleep(backoff.next().unwrap_or(Duration::from_secs(5))).await;
    }
}

/// Until the publish is accepted, a failure is the server's answer (Protocol, or Rejected when
/// it says no); after it, the connection dropped.
async fn publish(
    target: &Target,
    (first, rx): (Vec<Tag>, broadcast::Receiver<Tag>),
    live: impl Fn(),
    sent_bytes: &prometheus_client::metrics::counter::Counter,
) -> Result<(), Failure> {
    let ep = Endpoint::parse(&target.url)
        .map_err(|e| Failure::new(DestinationErrorKind::Rejected, format!("{e:#}")))?;
    let (stream, leftover) = ep.connect().await?;
    let (reader, writer) = tokio::io::split(stream);
    let (session, reader, writer) = start_publishing(target, &ep, reader, writer, leftover)
        .await
        .map_err(|e| {
            e.downcast::<Failure>()
                .unwrap_or_else(|e| Failure::new(DestinationErrorKind::Protocol, format!("{e:#}")))
        })?;
    live();
    stream_tags(session, reader, writer, first, rx, sent_bytes)
        .await
        .map_err(|e| Failure::new(DestinationErrorKind::Dropped, format!("{e:#}")))
}

type Reader = tokio::io::ReadHalf<Box<dyn Io>>;
type Writer = tokio::io::WriteHalf<Box<dyn Io>>;

async fn start_publishing(
    target: &Target,
    ep: &Endpoint,
    mut reader: Reader,
    mut writer: Writer,
    leftover: Vec<u8>,
) -> anyhow::Result<(ClientSession, Reader, Writer)> {
    let mut config = ClientSessionConfig::new();
    config.tc_url = Some(ep.tc_url.clone());
    let (mut session, initial) =
        ClientSession::new(config).map_err(|e| anyhow::anyhow!("RTMP session: {e:?}"))?;
    write_all(&mut writer, initial).await?;
    let r = session
        .request_connection(ep.app.clone())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    write_all(&mut writer, vec![r]).await?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut pending = leftover;
    let mut published = false;
    // Until the server accepts the connection and then the publish.
    while !published {
        if pending.is_empty() {
            let n = tokio::time::timeout(Duration::from_secs(10), reader.read(&mut buf))
                .await
                .context("no answer from the destination")??;
            anyhow::ensure!(n > 0, "the destination closed the connection");
            pending.extend_from_slice(&buf[..n]);
        }
        let results = session
            .handle_input(&pending)
            .map_err(|e| anyhow::anyhow!("bad RTMP from the destination: {e:?}"))?;
        pending.clear();
        for r in results {
            match r {
                ClientSessionResult::OutboundResponse(p) => writer.write_all(&p.bytes).await?,
                ClientSessionResult::RaisedEvent(ClientSessionEvent::ConnectionRequestAccepted) => {
                    let r = session
                        .request_publishing(target.stream_key.clone(), PublishRequestType::Live)
                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                    write_all(&mut writer, vec![r]).await?;
                }
                ClientSessionResult::RaisedEvent(
                    ClientSessionEvent::ConnectionRequestRejected { description },
                ) => {
                    return Err(Failure::new(
                        DestinationErrorKind::Rejected,
                        format!("connection refused: {description}"),
                    )
                    .into());
                }
                ClientSessionResult::RaisedEvent(ClientSessionEvent::PublishRequestAccepted) => {
                    published = true;
                }
                _ => {}
            }
        }
    }
    Ok((session, reader, writer))
}

async fn stream_tags(
    mut session: ClientSession,
    mut reader: Reader,
    mut writer: Writer,
    first: Vec<Tag>,
    mut rx: broadcast::Receiver<Tag>,
    sent_bytes: &prometheus_client::metrics::counter::Counter,
) -> anyhow::Result<()> {
    let mut buf = vec![0u8; 16 * 1024];
    // Timestamps restart at zero for each connection, as a fresh publish.
    let base = first.first().map_or(0, |t| t.timestamp_ms);
    let send = |session: &mut ClientSession, t: &Tag| -> anyhow::Result<Bytes> {
        sent_bytes.inc_by(t.data.len() as u64);
        let ts = RtmpTimestamp::new(t.timestamp_ms.saturating_sub(base));
        let r = match t.kind {
            flv::VIDEO => session.publish_video_data(t.data.clone(), ts, false),
            _ => session.publish_audio_data(t.data.clone(), ts, false),
        }
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        match r {
            ClientSessionResult::OutboundResponse(p) => Ok(Bytes::from(p.bytes)),
            _ => Ok(Bytes::new()),
        }
    };
    for t in &first {
        writer.write_all(&send(&mut session, t)?).await?;
    }
    loop {
        tokio::select! {
            tag = rx.recv() => match tag {
                Ok(t) => writer.write_all(&send(&mut session, &t)?).await?,
                // The destination is too slow for the stream: start again at a keyframe.
                Err(broadcast::error::RecvError::Lagged(n)) => bail!("fell {n} tags behind"),
                Err(broadcast::error::RecvError::Closed) => {
                    if let Ok(r) = session.stop_publishing() {
                        write_all(&mut writer, r).await.ok();
                    }
                    writer.shutdown().await.ok();
                    return Ok(());
                }
            },
            // Acknowledgements and pings from the destination; a closed socket is a failure.
            n = reader.read(&mut buf) => {
                let n = n.context("reading from the destination")?;
                anyhow::ensure!(n > 0, "the destination closed the connection");
                let results = session
                    .handle_input(&buf[..n])
                    .map_err(|e| anyhow::anyhow!("bad RTMP from the destination: {e:?}"))?;
                write_all(&mut writer, results).await?;
            }
        }
    }
}

async fn write_all(
    writer: &mut (impl AsyncWrite + Unpin),
    results: Vec<ClientSessionResult>,
) -> anyhow::Result<()> {
    for r in results {
        if let ClientSessionResult::OutboundResponse(p) = r {
            writer.write_all(&p.bytes).await?;
        }
    }
    Ok(())
}
