//! A headless studio participant on str0m: joins over the signalling WebSocket, publishes
//! synthetic media or only subscribes, and reports what it received from whom.

pub mod media;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, Frequency, MediaKind, MediaTime, Mid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, Input, Output, Rtc};
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Message;

use crate::sfu::signal::{ServerMessage as Incoming, Source, TrackInfo};
pub use media::{Frame, Synthetic};

pub struct BotConfig {
    /// The signalling WebSocket: the API's studio relay, or an SFU's /signal in tests.
    pub url: String,
    pub duration: Duration,
    /// The local address for media; browsers would use every interface, a bot one.
    pub bind_ip: IpAddr,
    /// Sent as `Authorization: Bearer …` when the bot talks to an SFU directly (the API's
    /// studio relay checks the user's token in the URL instead).
    pub control_token: Option<castyard_proto::ControlToken>,
    /// Bots that measure together: `duration` then counts from the moment all of them are
    /// connected, so a bot that connects late (a loaded machine) is not judged against peers
    /// that already left.
    pub together: Option<Together>,
}

/// A count of connected bots that every bot of a run shares.
#[derive(Clone)]
pub struct Together {
    connected: std::sync::Arc<tokio::sync::watch::Sender<usize>>,
    count: usize,
    /// How long a bot waits for the others before it starts its `duration` anyway.
    patience: Duration,
}

impl Together {
    pub fn new(count: usize, patience: Duration) -> Self {
        Self {
            connected: std::sync::Arc::new(tokio::sync::watch::channel(0).0),
            count,
            patience,
        }
    }

    fn arrived(&self) {
        self.connected.send_modify(|n| *n += 1);
    }

    async fn all_connected(&self) {
        let mut rx = self.connected.subscribe();
        let _ = rx.wait_for(|n| *n >= self.count).await;
    }
}

/// What one bot received, per sender and source.
#[derive(Debug, Default, Clone)]
pub struct BotReport {
    pub participant: String,
    pub received: BTreeMap<(String, Source), Received>,
    /// Distinct tracks (sender and source) the SFU offered at the end.
    pub offered: usize,
    /// Why the bot stopped early, if it did.
    pub error: Option<String>,
    /// Sender-to-receiver delays of frames stamped with [`stamp`], in microseconds.
    pub latencies_us: Vec<u64>,
    /// How long ICE and DTLS took after the bot started; `None`: it never connected.
    pub connected_after: Option<Duration>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub frames: u64,
    pub bytes: u64,
}

impl BotReport {
    pub fn bytes(&self) -> u64 {
        self.received.values().map(|r| r.bytes).sum()
    }

    /// Tracks with media, counted once per sender and source.
    pub fn tracks(&self) -> usize {
        self.received.values().filter(|r| r.frames > 0).count()
    }

    pub fn has(&self, participant: &str, source: Source) -> bool {
        self.received
            .get(&(participant.to_owned(), source))
            .is_some_and(|r| r.frames > 0)
    }
}

struct Bot {
    rtc: Rtc,
    socket: UdpSocket,
    local: SocketAddr,
    pending: Option<SdpPendingOffer>,
    tracks: BTreeMap<Mid, (String, Source)>,
    publish: Vec<(Mid, bool)>,
    connected: bool,
    report: BotReport,
    /// The shared frames' RTP time when this bot started sending audio and video.
    base: [Option<u64>; 2],
}

/// Runs one bot until `duration` passes, the SFU ends it, or an error. Publishes the frames
/// of `media` when given, else only subscribes.
pub async fn run(cfg: BotConfig, media: Option<broadcast::Receiver<Frame>>) -> BotReport {
    match run_inner(&cfg, media).await {
        Ok(r) => r,
        Err(e) => BotReport {
            error: Some(format!("{e:#}")),
            ..BotReport::default()
        },
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run_inner(
    cfg: &BotConfig,
    mut media: Option<broadcast::Receiver<Frame>>,
) -> anyhow::Result<BotReport> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let mut req = cfg.url.as_str().into_client_request()?;
    if let Some(token) = &cfg.control_token {
        req.headers_mut()
            .insert(hyper::header::AUTHORIZATION, token.bearer().parse()?);
    }
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| anyhow::anyhow!("cannot connect to {}: {e}", redact(&cfg.url)))?;
    let participant = loop {
        match next(&mut ws).await? {
            Incoming::Joined { participant, .. } => break participant,
            Incoming::Error { code, message } => anyhow::bail!("{code}: {message}"),
            Incoming::Bye { reason } => anyhow::bail!("refused: {reason}"),
            _ => {}
        }
    };
    let socket = UdpSocket::bind((cfg.bind_ip, 0)).await?;
    let local = socket.local_addr()?;
    let mut rtc = Rtc::builder().build(Instant::now());
    rtc.add_local_candidate(Candidate::host(local, "udp")?);
    let mut bot = Bot {
        rtc,
        socket,
        local,
        pending: None,
        tracks: BTreeMap::new(),
        publish: Vec::new(),
        connected: false,
        report: BotReport {
            participant,
            ..BotReport::default()
        },
        base: [None, None],
    };
    let offer = bot.offer(media.is_some());
    ws.send(Message::Text(offer.into())).await?;
    let started = tokio::time::Instant::now();
    // Alone, the bot stays `duration`; together, `duration` after the last one connected.
    let mut end = started
        + match &cfg.together {
            None => cfg.duration,
            Some(t) => t.patience + cfg.duration,
        };
    let mut waiting = cfg.together.clone();
    let mut buf = vec![0u8; 2048];
    loop {
        let was_connected = bot.connected;
        let wait = bot.drain().await?;
        if bot.connected && !was_connected {
            bot.report.connected_after = Some(started.elapsed());
            if let Some(t) = &cfg.together {
                t.arrived();
            }
        }
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            () = async { waiting.as_ref().unwrap().all_connected().await }, if waiting.is_some() => {
                end = tokio::time::Instant::now() + cfg.duration;
                waiting = None;
            }
            _ = tokio::time::sleep_until(wait.into()) => {
                bot.rtc.handle_input(Input::Timeout(Instant::now()))?;
            }
            r = bot.socket.recv_from(&mut buf) => {
                let (n, source) = r?;
                if let Ok(contents) = buf[..n].try_into() {
                    bot.rtc.handle_input(Input::Receive(Instant::now(), Receive {
                        proto: Protocol::Udp, source, destination: bot.local, contents,
                    }))?;
                }
            }
            msg = next(&mut ws) => {
                if let Some(reply) = bot.signal(msg?)? {
                    ws.send(Message::Text(reply.into())).await?;
                }
            }
            f = recv_frame(&mut media) => match f {
                Some(frame) => bot.write(frame)?,
                None => media = None,
            },
        }
    }
    let _ = ws.send(Message::Text(r#"{"type":"leave"}"#.into())).await;
    let _ = ws.close(None).await;
    let offered: std::collections::BTreeSet<_> = bot.tracks.values().collect();
    bot.report.offered = offered.len();
    Ok(bot.report)
}

async fn recv_frame(media: &mut Option<broadcast::Receiver<Frame>>) -> Option<Frame> {
    let Some(rx) = media else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(f) => return Some(f),
            // A bot that fell behind skips frames; the decoder recovers at the next keyframe.
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

async fn next(ws: &mut Ws) -> anyhow::Result<Incoming> {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(serde_json::from_str(&t)?),
            Some(Ok(Message::Close(_))) | None => anyhow::bail!("the signalling connection closed"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
        }
    }
}

const STAMP: &[u8; 4] = b"CYTS";

fn unix_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// A frame payload of `len` bytes carrying the time it was made, so a receiver in the same
/// machine can measure the delay (benchmarks). Its first byte marks a VP8 delta frame.
pub fn stamp(len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len.max(12));
    f.extend_from_slice(STAMP);
    f.extend_from_slice(&unix_micros().to_be_bytes());
    f.resize(len.max(12), 0x55);
    f
}

/// How long ago a payload made by [`stamp`] was made, in microseconds.
pub fn delay_us(data: &[u8]) -> Option<u64> {
    if data.len() < 12 || &data[..4] != STAMP {
        return None;
    }
    let sent = u64::from_be_bytes(data[4..12].try_into().ok()?);
    Some(unix_micros().saturating_sub(sent))
}

/// A URL without its query, where tokens travel.
fn redact(url: &str) -> &str {
    url.split('?').next().unwrap_or(url)
}

impl Bot {
    fn offer(&mut self, publish: bool) -> String {
        let mut api = self.rtc.sdp_api();
        let mut sources = BTreeMap::new();
        if publish {
            let stream = Some(self.report.participant.clone());
            let a = api.add_media(
                MediaKind::Audio,
                Direction::SendOnly,
                stream.clone(),
                None,
                None,
            );
            let v = api.add_media(MediaKind::Video, Direction::SendOnly, stream, None, None);
            sources.insert(a.to_string(), Source::Microphone);
            sources.insert(v.to_string(), Source::Camera);
            self.publish = vec![(a, true), (v, false)];
        } else {
            // Publishing nothing still needs a transport; a data channel gives it one m-line.
            api.add_channel("castyard".into());
        }
        let (offer, pending) = api.apply().expect("a new media or channel is a change");
        self.pending = Some(pending);
        serde_json::json!({"type": "offer", "sdp": offer.to_sdp_string(), "sources": sources})
            .to_string()
    }

    fn learn(&mut self, tracks: Vec<TrackInfo>) {
        self.tracks = tracks
            .into_iter()
            .map(|t| (Mid::from(t.mid.as_str()), (t.participant, t.source)))
            .collect();
    }

    fn signal(&mut self, msg: Incoming) -> anyhow::Result<Option<String>> {
        match msg {
            Incoming::Answer { sdp, tracks } => {
                if let Some(pending) = self.pending.take() {
                    let answer = SdpAnswer::from_sdp_string(&sdp)?;
                    self.rtc.sdp_api().accept_answer(pending, answer)?;
                }
                self.learn(tracks);
                Ok(None)
            }
            Incoming::Offer { sdp, tracks } => {
                let offer = SdpOffer::from_sdp_string(&sdp)?;
                let answer = self.rtc.sdp_api().accept_offer(offer)?;
                self.learn(tracks);
                Ok(Some(
                    serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()})
                        .to_string(),
                ))
            }
            Incoming::Bye { reason } => anyhow::bail!("the SFU ended the session: {reason}"),
            Incoming::Error { code, message } => {
                tracing::warn!(%code, "signalling error: {message}");
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    /// Sends what str0m has to send and takes its events; returns when to wake it next.
    async fn drain(&mut self) -> anyhow::Result<Instant> {
        loop {
            match self.rtc.poll_output()? {
                Output::Timeout(t) => return Ok(t),
                Output::Transmit(t) => {
                    let _ = self.socket.send_to(&t.contents, t.destination).await;
                }
                Output::Event(Event::Connected) => self.connected = true,
                Output::Event(Event::MediaData(d)) => {
                    if let Some(delay) = delay_us(&d.data) {
                        self.report.latencies_us.push(delay);
                    }
                    if let Some(key) = self.tracks.get(&d.mid) {
                        let r = self.report.received.entry(key.clone()).or_default();
                        r.frames += 1;
                        r.bytes += d.data.len() as u64;
                    }
                }
                Output::Event(_) => {}
            }
        }
    }

    fn write(&mut self, frame: Frame) -> anyhow::Result<()> {
        if !self.connected {
            return Ok(());
        }
        let Some(&(mid, _)) = self.publish.iter().find(|(_, audio)| *audio == frame.audio) else {
            return Ok(());
        };
        let (codec, clock) = if frame.audio {
            (Codec::Opus, Frequency::FORTY_EIGHT_KHZ)
        } else {
            (Codec::Vp8, Frequency::NINETY_KHZ)
        };
        let Some(writer) = self.rtc.writer(mid) else {
            return Ok(());
        };
        let Some(pt) = writer
            .payload_params()
            .find(|p| p.spec().codec == codec)
            .map(|p| p.pt())
        else {
            return Ok(());
        };
        // Frames are shared by every bot; each rebases them to its own start.
        let start = *self.base[usize::from(frame.audio)].get_or_insert(frame.rtp_time);
        let time = MediaTime::new(frame.rtp_time.saturating_sub(start), clock);
        let writer = if frame.audio {
            // A steady tone at speaking level, so the active speaker has something to go on.
            writer.audio_level(-30, true)
        } else {
            writer
        };
        writer.write(pt, Instant::now(), time, frame.data)?;
        Ok(())
    }
}
