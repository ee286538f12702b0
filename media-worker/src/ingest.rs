//! RTMP ingest (rml_rtmp): takes OBS/FFmpeg publishes by stream key and remuxes them, without
//! re-encoding, to HLS and a fragmented-MP4 recording through one `ffmpeg -c copy`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use rml_rtmp::handshake::{Handshake, HandshakeProcessResult, PeerType};
use rml_rtmp::sessions::{
    ServerSession, ServerSessionConfig, ServerSessionEvent, ServerSessionResult,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::Command;
use tokio::sync::{Semaphore, broadcast};

use crate::flv::{self, Channel, Tag};
use crate::remux::{self, Remux};

/// The RTMP application publishers use: rtmp://host/live/<stream key>.
pub const APP: &str = "live";

#[derive(Clone, Debug)]
pub struct IngestConfig {
    /// HLS goes to `<hls_root>/<broadcast id>/index.m3u8`.
    pub hls_root: PathBuf,
    /// Recordings go to `<recordings_root>/<recording id>.mp4`, posters beside them.
    pub recordings_root: PathBuf,
    pub ffmpeg: PathBuf,
    /// A connection must finish the handshake and ask to publish within this.
    pub handshake_timeout: Duration,
    /// A publisher silent this long is dropped (and its recording finalized).
    pub idle_timeout: Duration,
    /// Connections at once; more wait in the kernel's backlog rather than cost a task each.
    pub max_connections: usize,
    pub hls_segment_seconds: u32,
    /// A still of a live ingest, `<hls_root>/<id>/thumb.jpg`, is refreshed this often.
    pub thumbnail_seconds: u32,
    /// How often a live publish renews its claim on its broadcast (see `IngestHooks`).
    pub claim_refresh: Duration,
}

impl IngestConfig {
    pub fn new(data_dir: &Path) -> Self {
        Self {
            hls_root: data_dir.join("hls"),
            recordings_root: data_dir.join("recordings"),
            ffmpeg: "ffmpeg".into(),
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 256,
            hls_segment_seconds: 2,
            thumbnail_seconds: 10,
            claim_refresh: Duration::from_secs(10),
        }
    }
}

/// What a stream key opened: the broadcast it publishes, the recording it makes, and the
/// destinations it is restreamed to.
#[derive(Clone, Debug)]
pub struct Grant {
    pub broadcast_id: String,
    /// The Broadcast resource's name: the `broadcast` label of its metrics.
    pub name: String,
    pub recording_id: String,
    pub destinations: Vec<crate::rtmp_out::Target>,
    /// The studio is the show and this feed one of its participants: no HLS, no thumbnails
    /// and no HTTP-FLV of it (they would be taken for the show's), only its own recording.
    pub studio_source: bool,
}

/// A finished ingest's recording.
#[derive(Clone, Debug)]
pub struct Recording {
    pub path: PathBuf,
    pub poster: Option<PathBuf>,
    pub duration_ms: u64,
    pub size_bytes: u64,
}

/// What a stream key gets at publish time.
#[derive(Debug)]
pub enum Authorization {
    Granted(Grant),
    /// Unknown, rotated out, revoked, or its broadcast has ended.
    Unknown,
    /// Another publisher holds the key, on this process or another replica.
    Busy,
}

/// What the ingest asks of the API side: keys, and lifecycle updates.
#[async_trait::async_trait]
pub trait IngestHooks: Send + Sync + 'static {
    /// Checks the key and, when it is free, claims its broadcast for this publish.
    async fn authorize(&self, stream_key: &str) -> anyhow::Result<Authorization>;
    /// Called every few seconds while live: a claim not renewed is taken as abandoned (a
    /// replica that died mid-publish), so the key is not blocked forever.
    async fn heartbeat(&self, grant: &Grant);
    async fn started(&self, grant: &Grant);
    async fn ended(&self, grant: &Grant, recording: Recording);
    /// A destination's output changed state (with the error that made it retry).
    async fn destination(
        &self,
        grant: &Grant,
        name: &str,
        state: crate::rtmp_out::State,
        error: Option<crate::rtmp_out::Failure>,
    );
}

/// Why a publish was refused; what the publisher is told in NetStream.Publish.BadName.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    UnknownKey,
    AlreadyPublishing,
    WrongApp,
}

impl Refusal {
    fn describe(self) -> &'static str {
        match self {
            Self::UnknownKey => "unknown or revoked stream key",
            Self::AlreadyPublishing => "this stream key is already publishing",
            Self::WrongApp => "publish to rtmp://<host>/live/<stream key>",
        }
    }
}

pub struct Ingest {
    config: IngestConfig,
    metrics: crate::metrics::IngestMetrics,
    hooks: Arc<dyn IngestHooks>,
    /// Broadcasts with a publisher now, and their tags for late joiners: a second publisher
    /// on one key is refused.
    /// Each live broadcast's channel and metrics label.
    /// Live publishes by broadcast id.
    publishing: Mutex<HashMap<String, Live>>,
    slots: Arc<Semaphore>,
    /// Set at shutdown: live publishes end as if their publisher had stopped.
    stop: tokio::sync::watch::Sender<bool>,
    /// Each publish holds a read guard until its recording is registered; shutdown takes the
    /// write side, so it returns only when every one is.
    running: tokio::sync::RwLock<()>,
}

impl Ingest {
    pub fn new(
        config: IngestConfig,
        hooks: Arc<dyn IngestHooks>,
        metrics: crate::metrics::IngestMetrics,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(config.max_connections));
        Arc::new(Self {
            config,
            metrics,
            hooks,
            publishing: Mutex::default(),
            stop: tokio::sync::watch::channel(false).0,
            running: tokio::sync::RwLock::new(()),
            slots,
        })
    }

    /// The broadcast's live publish, if it is the show (`false`) or a studio source (`true`).
    fn live_as(&self, broadcast_id: &str, source: bool) -> Option<(Arc<Channel>, String)> {
        let publishing = self.publishing.lock().expect("lock poisoned");
        let live = publishing.get(broadcast_id)?;
        (live.studio_source == source).then(|| (live.channel.clone(), live.name.clone()))
    }

    fn live(&self, broadcast_id: &str) -> Option<(Arc<Channel>, String)> {
        self.live_as(broadcast_id, false)
    }

    /// Whether the broadcast has a publisher now that is its show (its HTTP-FLV can be watched).
    pub fn is_live(&self, broadcast_id: &str) -> bool {
        self.live(broadcast_id).is_some()
    }

    /// Whether the broadcast has a publisher now that is a source in its studio.
    pub fn is_source_live(&self, broadcast_id: &str) -> bool {
        self.live_as(broadcast_id, true).is_some()
    }

    /// A studio source's tags from its last keyframe on, for the studio alone (not a viewer).
    pub fn tap_source(
        &self,
        broadcast_id: &str,
    ) -> Option<(Vec<crate::flv::Tag>, broadcast::Receiver<crate::flv::Tag>)> {
        Some(self.live_as(broadcast_id, true)?.0.subscribe())
    }

    /// The FFmpeg the ingest runs, for whoever re-encodes a feed.
    pub fn ffmpeg(&self) -> &Path {
        &self.config.ffmpeg
    }

    /// A live ingest's tags from its last keyframe on, for an HTTP-FLV viewer; None when the
    /// broadcast has no publisher. The receiver closes when the publish ends; the viewer is
    /// counted until it is dropped.
    pub fn watch(&self, broadcast_id: &str) -> Option<FlvViewer> {
        let (channel, name) = self.live(broadcast_id)?;
        let (first, rx) = channel.subscribe();
        let gauge = self
            .metrics
            .flv_viewers
            .get_or_create(&crate::metrics::BroadcastLabels { broadcast: name })
            .clone();
        gauge.inc();
        Some(FlvViewer {
            first,
            rx,
            counted: Counted(gauge),
        })
    }

    /// Ends every live publish (finalizing and registering each recording) and refuses new
    /// ones; returns when all are done.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let _all = self.running.write().await;
    }

    /// Accepts connections until the listener fails; each publisher runs on its own task.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) -> anyhow::Result<()> {
        loop {
            let permit = self.slots.clone().acquire_owned().await?;
            let (tcp, peer) = listener.accept().await.context("accepting RTMP")?;
            let this = self.clone();
            tokio::spawn(async move {
                let _permit = permit;
                if let Err(e) = this.connection(tcp, peer).await {
                    tracing::info!(%peer, error = %e, "RTMP connection closed");
                }
            });
        }
    }

    async fn connection(&self, mut tcp: TcpStream, peer: SocketAddr) -> anyhow::Result<()> {
        tcp.set_nodelay(true).ok();
        let setup = tokio::time::timeout(self.config.handshake_timeout, self.setup(&mut tcp));
        let (session, request, key, leftover) = match setup.await {
            Ok(r) => r?,
            Err(_) => anyhow::bail!("no publish request within the handshake timeout"),
        };
        self.publish(tcp, peer, session, request, key, leftover)
            .await
    }

    /// Handshake and session up to the publish request: (session, request id, key, bytes
    /// already read past it).
    async fn setup(
        &self,
        tcp: &mut TcpStream,
    ) -> anyhow::Result<(ServerSession, u32, String, Vec<u8>)> {
        let mut handshake = Handshake::new(PeerType::Server);
        let mut buf = vec![0u8; 8192];
        let remaining = loop {
            let n = tcp.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "closed during the handshake");
            match handshake
                .process_bytes(&buf[..n])
                .map_err(|e| anyhow::anyhow!("bad RTMP handshake: {e:?}"))?
            {
                HandshakeProcessResult::InProgress { response_bytes } => {
                    tcp.write_all(&response_bytes).await?
                }
                HandshakeProcessResult::Completed {
                    response_bytes,
                    remaining_bytes,
                } => {
                    tcp.write_all(&response_bytes).await?;
                    break remaining_bytes;
                }
            }
        };
        let (mut session, initial) = ServerSession::new(ServerSessionConfig::new())
            .map_err(|e| anyhow::anyhow!("RTMP session: {e:?}"))?;
        send(tcp, initial).await?;
        let mut pending = remaining;
        loop {
            if !pending.is_empty() {
                let results = session
                    .handle_input(&pending)
                    .map_err(|e| anyhow::anyhow!("bad RTMP data: {e:?}"))?;
                pending.clear();
                for r in results {
                    match r {
                        ServerSessionResult::OutboundResponse(p) => tcp.write_all(&p.bytes).await?,
                        ServerSessionResult::RaisedEvent(ev) => match ev {
                            ServerSessionEvent::ConnectionRequested {
                                request_id,
                                app_name,
                            } => {
                                if app_name != APP {
                                    let out = session
                                        .reject_request(
                                            request_id,
                                            "NetConnection.Connect.Rejected",
                                            Refusal::WrongApp.describe(),
                                        )
                                        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                                    send(tcp, out).await?;
                                    anyhow::bail!("refused: connect to app {app_name:?}");
                                }
                                let out = session
                                    .accept_request(request_id)
                                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                                send(tcp, out).await?;
                            }
                            ServerSessionEvent::PublishStreamRequested {
                                request_id,
                                stream_key,
                                ..
                            } => return Ok((session, request_id, stream_key, Vec::new())),
                            ServerSessionEvent::PlayStreamRequested { request_id, .. } => {
                                let out = session
                                    .reject_request(
                                        request_id,
                                        "NetStream.Play.Failed",
                                        "RTMP playback is not offered; watch over HLS",
                                    )
                                    .map_err(|e| anyhow::anyhow!("{e:?}"))?;
                                send(tcp, out).await?;
                                anyhow::bail!("refused: RTMP play");
                            }
                            _ => {}
                        },
                        ServerSessionResult::UnhandleableMessageReceived(_) => {}
                    }
                }
            }
            let n = tcp.read(&mut buf).await?;
            anyhow::ensure!(n > 0, "closed before publishing");
            pending.extend_from_slice(&buf[..n]);
        }
    }

    async fn publish(
        &self,
        mut tcp: TcpStream,
        peer: SocketAddr,
        mut session: ServerSession,
        request: u32,
        key: String,
        mut pending: Vec<u8>,
    ) -> anyhow::Result<()> {
        let Ok(_running) = self.running.try_read() else {
            anyhow::bail!("shutting down");
        };
        if *self.stop.borrow() {
            anyhow::bail!("shutting down");
        }
        // The key is checked before anything is spawned or written.
        let grant = match self.hooks.authorize(&key).await? {
            Authorization::Granted(g) => g,
            Authorization::Unknown => {
                return refuse(&mut tcp, &mut session, request, Refusal::UnknownKey).await;
            }
            Authorization::Busy => {
                return refuse(&mut tcp, &mut session, request, Refusal::AlreadyPublishing).await;
            }
        };
        let channel = Arc::new(Channel::default());
        let taken = {
            let mut publishing = self.publishing.lock().expect("lock poisoned");
            let taken = publishing.contains_key(&grant.broadcast_id);
            if !taken {
                publishing.insert(
                    grant.broadcast_id.clone(),
                    Live {
                        channel: channel.clone(),
                        name: grant.name.clone(),
                        studio_source: grant.studio_source,
                    },
                );
            }
            taken
        };
        if taken {
            return refuse(&mut tcp, &mut session, request, Refusal::AlreadyPublishing).await;
        }
        let _publishing = Publishing {
            set: &self.publishing,
            id: grant.broadcast_id.clone(),
        };
        let out = session
            .accept_request(request)
            .map_err(|e| anyhow::anyhow!("{e:?}"))?;
        send(&mut tcp, out).await?;
        tracing::info!(%peer, broadcast = %grant.broadcast_id, "ingest started");
        let labels = crate::metrics::BroadcastLabels {
            broadcast: grant.name.clone(),
        };
        self.metrics.publishing.get_or_create(&labels).set(1);
        let received = self.metrics.received_bytes.get_or_create(&labels).clone();

        let hls = self.config.hls_root.join(&grant.broadcast_id);
        // A previous publish's segments would be served as this one's.
        let _ = tokio::fs::remove_dir_all(&hls).await;
        let outputs = remux::Outputs {
            hls: (!grant.studio_source).then_some(remux::Hls {
                dir: hls,
                segment_seconds: self.config.hls_segment_seconds,
                low_latency: false,
            }),
            mp4: Some(
                self.config
                    .recordings_root
                    .join(format!("{}.mp4", grant.recording_id)),
            ),
        };
        let mut output = Remux::start(&self.config.ffmpeg, &outputs).await?;
        self.restream(&grant, &channel);
        // A studio source's broadcast has the compositor's show, and its thumbnail.
        let thumbnails = (!grant.studio_source).then(|| {
            tokio::spawn(thumbnails(
                self.config.clone(),
                grant.broadcast_id.clone(),
                channel.subscribe(),
            ))
        });
        self.hooks.started(&grant).await;
        let mut sinks = Sinks {
            output: &mut output,
            channel: &channel,
            received: &received,
            grant: &grant,
        };
        let streamed = self
            .stream(&mut tcp, &mut session, &mut sinks, &mut pending)
            .await;
        if let Err(e) = &streamed {
            tracing::info!(%peer, broadcast = %grant.broadcast_id, error = %e, "ingest interrupted");
        }
        // However the publisher went, the recording is finalized and registered.
        if let Some(t) = thumbnails {
            t.abort();
        }
        let done = output.finish().await?;
        let path = outputs.mp4.expect("set above");
        let recording = Recording {
            poster: remux::poster(&self.config.ffmpeg, &path, done.duration_ms).await,
            path,
            duration_ms: done.duration_ms,
            size_bytes: done.size_bytes,
        };
        tracing::info!(
            broadcast = %grant.broadcast_id,
            duration_ms = recording.duration_ms,
            size_bytes = recording.size_bytes,
            "ingest ended"
        );
        self.hooks.ended(&grant, recording).await;
        // The channel goes first, so that no restream output reports after its series are gone.
        drop(_publishing);
        drop(channel);
        let names: Vec<String> = grant.destinations.iter().map(|d| d.name.clone()).collect();
        self.metrics.forget(&grant.name, &names);
        Ok(())
    }

    /// One output per destination, each on its own: a failing destination is retried without
    /// touching the others, the HLS or the recording.
    fn restream(&self, grant: &Grant, channel: &Arc<Channel>) {
        if grant.destinations.is_empty() {
            return;
        }
        // Reports go through one queue so that each destination's states arrive in order.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(
            String,
            crate::rtmp_out::State,
            Option<crate::rtmp_out::Failure>,
        )>();
        let hooks = self.hooks.clone();
        let g = grant.clone();
        tokio::spawn(async move {
            while let Some((name, state, error)) = rx.recv().await {
                hooks.destination(&g, &name, state, error).await;
            }
        });
        let metrics = self.metrics.clone();
        let broadcast = grant.name.clone();
        let report: crate::rtmp_out::Report = Arc::new(move |name: &str, state, error| {
            metrics.set_destination_state(&broadcast, name, state.into());
            if state == crate::rtmp_out::State::Retrying {
                metrics
                    .destination_retries
                    .get_or_create(&crate::metrics::BroadcastDestinationLabels {
                        broadcast: broadcast.clone(),
                        destination: name.to_owned(),
                    })
                    .inc();
            }
            if let Some(f) = error {
                metrics
                    .destination_failures
                    .get_or_create(&crate::metrics::BroadcastDestinationKindLabels {
                        broadcast: broadcast.clone(),
                        destination: name.to_owned(),
                        kind: f.kind.label().to_owned(),
                    })
                    .inc();
            }
            let _ = tx.send((name.to_owned(), state, error.cloned()));
        });
        for target in &grant.destinations {
            let sent = self
                .metrics
                .destination_sent_bytes
                .get_or_create(&crate::metrics::BroadcastDestinationLabels {
                    broadcast: grant.name.clone(),
                    destination: target.name.clone(),
                })
                .clone();
            tokio::spawn(crate::rtmp_out::run(
                target.clone(),
                Arc::downgrade(channel),
                report.clone(),
                sent,
            ));
        }
    }

    async fn stream(
        &self,
        tcp: &mut TcpStream,
        session: &mut ServerSession,
        sinks: &mut Sinks<'_>,
        pending: &mut Vec<u8>,
    ) -> anyhow::Result<()> {
        let mut buf = vec![0u8; 64 * 1024];
        let mut stop = self.stop.subscribe();
        let mut heartbeat = tokio::time::interval(self.config.claim_refresh);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        heartbeat.tick().await;
        loop {
            if !pending.is_empty() {
                let results = session
                    .handle_input(pending)
                    .map_err(|e| anyhow::anyhow!("bad RTMP data: {e:?}"))?;
                pending.clear();
                for r in results {
                    match r {
                        ServerSessionResult::OutboundResponse(p) => tcp.write_all(&p.bytes).await?,
                        ServerSessionResult::RaisedEvent(ev) => {
                            let (kind, data, timestamp) = match ev {
                                ServerSessionEvent::VideoDataReceived {
                                    data, timestamp, ..
                                } => (flv::VIDEO, data, timestamp),
                                ServerSessionEvent::AudioDataReceived {
                                    data, timestamp, ..
                                } => (flv::AUDIO, data, timestamp),
                                ServerSessionEvent::PublishStreamFinished { .. } => return Ok(()),
                                _ => continue,
                            };
                            let tag = Tag {
                                kind,
                                timestamp_ms: timestamp.value,
                                data,
                            };
                            sinks.received.inc_by(tag.data.len() as u64);
                            sinks.output.tag(&tag).await?;
                            sinks.channel.push(tag);
                        }
                        ServerSessionResult::UnhandleableMessageReceived(_) => {}
                    }
                }
            }
            let idle = self.config.idle_timeout;
            let n = tokio::select! {
                n = tokio::time::timeout(idle, tcp.read(&mut buf)) => {
                    n.map_err(|_| anyhow::anyhow!("publisher silent for {idle:?}"))??
                }
                // Shutting down: end as if the publisher had stopped, so outputs finalize.
                _ = async { stop.wait_for(|s| *s).await.map(|_| ()) } => return Ok(()),
                _ = heartbeat.tick() => {
                    self.hooks.heartbeat(sinks.grant).await;
                    continue;
                }
            };
            if n == 0 {
                return Ok(());
            }
            pending.extend_from_slice(&buf[..n]);
        }
    }
}

/// One live publish: its tags, its broadcast's name (metrics' label), and whether the feed is a
/// studio source rather than the show.
struct Live {
    channel: Arc<Channel>,
    name: String,
    studio_source: bool,
}

/// An HTTP-FLV viewer's start (codec headers and GOP) and live tags.
pub struct FlvViewer {
    pub first: Vec<Tag>,
    pub rx: broadcast::Receiver<Tag>,
    /// Keep it as long as the viewer is served: it is counted until this drops.
    pub counted: Counted,
}

pub struct Counted(prometheus_client::metrics::gauge::Gauge);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Where a live publish's tags go, and whose they are.
struct Sinks<'a> {
    output: &'a mut Remux,
    channel: &'a Channel,
    received: &'a prometheus_client::metrics::counter::Counter,
    grant: &'a Grant,
}

/// Removes a broadcast from the publishing set however its publish ends.
struct Publishing<'a> {
    set: &'a Mutex<HashMap<String, Live>>,
    id: String,
}

impl Drop for Publishing<'_> {
    fn drop(&mut self) {
        self.set.lock().expect("lock poisoned").remove(&self.id);
    }
}

async fn send(tcp: &mut TcpStream, results: Vec<ServerSessionResult>) -> anyhow::Result<()> {
    for r in results {
        if let ServerSessionResult::OutboundResponse(p) = r {
            tcp.write_all(&p.bytes).await?;
        }
    }
    Ok(())
}

async fn refuse(
    tcp: &mut TcpStream,
    session: &mut ServerSession,
    request: u32,
    why: Refusal,
) -> anyhow::Result<()> {
    let out = session
        .reject_request(request, "NetStream.Publish.BadName", why.describe())
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    send(tcp, out).await?;
    tcp.shutdown().await.ok();
    anyhow::bail!("publish refused: {}", why.describe())
}

/// Refreshes a live ingest's thumbnail from its keyframes alone (the decoder skips every other
/// frame, so this costs little). A separate process: if it fails, only the thumbnail stops.
async fn thumbnails(
    config: IngestConfig,
    broadcast_id: String,
    (first, mut rx): (Vec<Tag>, broadcast::Receiver<Tag>),
) {
    let out = config.hls_root.join(&broadcast_id).join("thumb.jpg");
    let filter = format!("fps=1/{},scale=480:-2", config.thumbnail_seconds.max(1));
    let child = Command::new(&config.ffmpeg)
        .args(["-hide_banner", "-loglevel", "error", "-skip_frame", "nokey"])
        .args(["-f", "flv", "-i", "pipe:0", "-map", "0:v:0", "-vf", &filter])
        .args(["-q:v", "5", "-update", "1", "-atomic_writing", "1", "-y"])
        .arg(&out)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn();
    let Ok(mut child) = child else {
        tracing::warn!(broadcast = %broadcast_id, "could not start the thumbnailer");
        return;
    };
    let Some(mut stdin) = child.stdin.take() else {
        return;
    };
    let feed = async || -> std::io::Result<()> {
        stdin.write_all(&flv::HEADER).await?;
        for t in first {
            stdin.write_all(&t.encode()).await?;
        }
        loop {
            match rx.recv().await {
                Ok(t) => stdin.write_all(&t.encode()).await?,
                // Behind: skip ahead; the next keyframe makes the next still.
                Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return Ok(()),
            }
        }
    };
    if let Err(e) = feed().await {
        tracing::debug!(broadcast = %broadcast_id, error = %e, "thumbnailer stopped");
    }
}
