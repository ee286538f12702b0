//! The SFU's IO: the media UDP socket and the room on their own thread, and the control port
//! on tokio (the signalling WebSocket the API relays to, the stage, /metrics and health).

use std::collections::HashMap;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::sync::{mpsc as tmpsc, oneshot};

use super::io::MediaSocket;
use super::room::{ConnId, ForwardRequest, ForwardState, JoinError, Room, StageEntry};
use super::signal::{Identity, MAX_MESSAGE, ParticipantInfo, Role, ServerMessage, SignalError};
use crate::metrics::SfuMetrics;

/// Where the SFU listens and what it tells browsers.
#[derive(Clone, Debug)]
pub struct SfuOptions {
    pub broadcast: String,
    pub max_participants: u32,
    /// The UDP socket for all peers.
    pub media: SocketAddr,
    /// The address put into SDP: differs from `media` behind NAT, a NodePort or a LoadBalancer.
    pub advertised: SocketAddr,
}

enum Command {
    Join {
        identity: Identity,
        out: tmpsc::UnboundedSender<Outgoing>,
        reply: oneshot::Sender<Result<ConnId, JoinError>>,
    },
    Message {
        conn: ConnId,
        text: String,
    },
    Disconnect {
        conn: ConnId,
    },
    Stage {
        reply: oneshot::Sender<Vec<StageEntry>>,
    },
    Participants {
        reply: oneshot::Sender<Vec<ParticipantInfo>>,
    },
    Forwards {
        forwards: Vec<ForwardRequest>,
        reply: oneshot::Sender<Result<Vec<ForwardState>, SignalError>>,
    },
    SetMaxParticipants(u32),
    Shutdown,
}

enum Outgoing {
    Text(String),
    Close,
}

/// The way into the media thread: a command, then a datagram to its socket so that a thread
/// blocked in `recv_from` wakes at once instead of at its next deadline.
#[derive(Clone)]
pub struct Sfu {
    commands: mpsc::Sender<Command>,
    waker: Arc<UdpSocket>,
    metrics: Arc<SfuMetrics>,
    heartbeat: Arc<AtomicU64>,
    running: Arc<AtomicBool>,
}

fn unix_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Sfu {
    /// Binds the media socket and starts the media thread.
    pub fn start(opts: SfuOptions) -> std::io::Result<Self> {
        let socket = MediaSocket::bind(opts.media)?;
        let local = socket.local_addr()?;
        let advertised = if opts.advertised.port() == 0 {
            SocketAddr::new(opts.advertised.ip(), local.port())
        } else {
            opts.advertised
        };
        let waker = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))?;
        waker.connect((std::net::Ipv4Addr::LOCALHOST, local.port()))?;
        let metrics = Arc::new(SfuMetrics::new(&opts.broadcast));
        let (tx, rx) = mpsc::channel();
        let heartbeat = Arc::new(AtomicU64::new(unix_secs()));
        let running = Arc::new(AtomicBool::new(true));
        let room = Room::new(
            Instant::now(),
            advertised,
            opts.max_participants,
            metrics.clone(),
        );
        let media = MediaLoop {
            socket,
            waker: waker.local_addr()?,
            room,
            commands: rx,
            conns: HashMap::new(),
            heartbeat: heartbeat.clone(),
        };
        let flag = running.clone();
        std::thread::Builder::new()
            .name("sfu-media".into())
            .spawn(move || {
                media.run();
                flag.store(false, Ordering::SeqCst);
            })?;
        tracing::info!(%local, %advertised, "SFU media socket bound");
        Ok(Self {
            commands: tx,
            waker: Arc::new(waker),
            metrics,
            heartbeat,
            running,
        })
    }

    fn send(&self, c: Command) {
        if self.commands.send(c).is_ok() {
            let _ = self.waker.send(&[0]);
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx));
        rx.await.ok()
    }

    /// Applies a changed guest limit to joins from now on.
    pub fn set_max_participants(&self, n: u32) {
        self.send(Command::SetMaxParticipants(n));
    }

    /// Tells every participant goodbye and stops the media thread.
    pub fn shutdown(&self) {
        self.send(Command::Shutdown);
    }

    fn alive(&self) -> bool {
        // The media thread beats at least every 100 ms; 5 s of silence means it is stuck.
        self.running.load(Ordering::SeqCst)
            && unix_secs().saturating_sub(self.heartbeat.load(Ordering::Relaxed)) < 5
    }

    /// The control port's routes.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/signal", get(signal))
            .route("/stage", get(stage))
            .route("/participants", get(participants))
            .route("/forwards", axum::routing::put(forwards))
            .route("/metrics", get(metrics))
            .route("/healthz", get(health))
            .route("/readyz", get(health))
            .with_state(self.clone())
    }
}

struct MediaLoop {
    socket: MediaSocket,
    waker: SocketAddr,
    room: Room,
    commands: mpsc::Receiver<Command>,
    conns: HashMap<ConnId, tmpsc::UnboundedSender<Outgoing>>,
    heartbeat: Arc<AtomicU64>,
}

impl MediaLoop {
    fn run(mut self) {
        loop {
            let now = Instant::now();
            if !self.commands() {
                self.say_goodbye();
                return;
            }
            let socket = &mut self.socket;
            let deadline = self
                .room
                .poll(now, &mut |dst, data| socket.queue(dst, data));
            let before = self.socket.dropped;
            self.socket.flush();
            if self.socket.dropped > before {
                let m = self.room.metrics();
                m.send_dropped.inc_by(self.socket.dropped - before);
            }
            self.deliver();
            self.heartbeat.store(unix_secs(), Ordering::Relaxed);
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .max(Duration::from_millis(1));
            self.socket.wait(wait);
            // Everything that has arrived goes in before the next pass: one pass per burst,
            // not one per datagram.
            let (room, waker) = (&mut self.room, self.waker);
            let at = Instant::now();
            self.socket.receive(|src, data| {
                if src != waker {
                    room.receive(at, src, data);
                }
            });
        }
    }

    /// Applies queued commands; false on shutdown.
    fn commands(&mut self) -> bool {
        while let Ok(c) = self.commands.try_recv() {
            let now = Instant::now();
            match c {
                Command::Join {
                    identity,
                    out,
                    reply,
                } => {
                    let r = self.room.join(now, identity);
                    if let Ok(conn) = r {
                        self.conns.insert(conn, out);
                    }
                    let _ = reply.send(r);
                }
                Command::Message { conn, text } => self.room.message(conn, &text),
                Command::Disconnect { conn } => {
                    self.conns.remove(&conn);
                    self.room.disconnect(conn);
                }
                Command::Stage { reply } => {
                    let _ = reply.send(self.room.stage());
                }
                Command::Participants { reply } => {
                    let _ = reply.send(self.room.participants());
                }
                Command::Forwards { forwards, reply } => {
                    let _ = reply.send(self.room.set_forwards(now, forwards));
                }
                Command::SetMaxParticipants(n) => self.room.set_max_participants(n),
                Command::Shutdown => return false,
            }
        }
        true
    }

    fn deliver(&mut self) {
        let (messages, closed) = self.room.drain();
        for (conn, msg) in messages {
            if let Some(out) = self.conns.get(&conn) {
                let _ = out.send(Outgoing::Text(msg.to_json()));
            }
        }
        for conn in closed {
            if let Some(out) = self.conns.remove(&conn) {
                let _ = out.send(Outgoing::Close);
            }
        }
    }

    fn say_goodbye(&mut self) {
        let bye = ServerMessage::Bye {
            reason: "the studio closed".into(),
        }
        .to_json();
        for (_, out) in self.conns.drain() {
            let _ = out.send(Outgoing::Text(bye.clone()));
            let _ = out.send(Outgoing::Close);
        }
    }
}

#[derive(Deserialize)]
struct SignalQuery {
    participant: String,
    name: String,
    role: Role,
}

fn bad_request(message: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(castyard_proto::ErrorBody::new("bad_request", message)),
    )
        .into_response()
}

async fn signal(
    State(sfu): State<Sfu>,
    query: Result<Query<SignalQuery>, axum::extract::rejection::QueryRejection>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let q = match query {
        Ok(Query(q)) => q,
        Err(e) => return bad_request(format!("participant, name and role are required: {e}")),
    };
    if q.participant.is_empty() || q.participant.len() > 64 || q.name.len() > 100 {
        return bad_request("participant must be 1-64 characters, name at most 100".into());
    }
    let ws = match ws {
        Ok(ws) => ws,
        Err(e) => return bad_request(format!("a WebSocket upgrade is required: {e}")),
    };
    let identity = Identity {
        participant: q.participant,
        name: q.name,
        role: q.role,
    };
    // Room for the largest message the room answers with an error instead of a hang-up.
    ws.max_message_size(MAX_MESSAGE * 2)
        .max_frame_size(MAX_MESSAGE * 2)
        .on_upgrade(move |socket| session(sfu, identity, socket))
}

async fn session(sfu: Sfu, identity: Identity, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (out, mut outgoing) = tmpsc::unbounded_channel();
    let joined = sfu
        .ask(|reply| Command::Join {
            identity,
            out,
            reply,
        })
        .await;
    let conn = match joined {
        Some(Ok(conn)) => conn,
        Some(Err(e)) => {
            let msg = ServerMessage::Error {
                code: e.code().into(),
                message: e.to_string(),
            };
            let _ = sink.send(Message::Text(msg.to_json().into())).await;
            let _ = sink.close().await;
            return;
        }
        None => return,
    };
    loop {
        tokio::select! {
            m = stream.next() => match m {
                Some(Ok(Message::Text(text))) => {
                    sfu.send(Command::Message { conn, text: text.to_string() });
                }
                Some(Ok(Message::Binary(_))) => {
                    sfu.send(Command::Message { conn, text: "binary frame".into() });
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            },
            o = outgoing.recv() => match o {
                Some(Outgoing::Text(t)) => {
                    if sink.send(Message::Text(t.into())).await.is_err() {
                        break;
                    }
                }
                Some(Outgoing::Close) | None => {
                    let _ = sink.close().await;
                    break;
                }
            },
        }
    }
    sfu.send(Command::Disconnect { conn });
}

async fn stage(State(sfu): State<Sfu>) -> Response {
    match sfu.ask(|reply| Command::Stage { reply }).await {
        Some(s) => Json(s).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// The compositor's copies of on-stage tracks, as plain RTP: the whole wanted set each time,
/// renewed every half second (a set not renewed for 10 s lapses).
async fn forwards(State(sfu): State<Sfu>, body: axum::body::Bytes) -> Response {
    let forwards: Vec<ForwardRequest> = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("a list of forwards is required: {e}")),
    };
    match sfu.ask(|reply| Command::Forwards { forwards, reply }).await {
        Some(Ok(states)) => Json(states).into_response(),
        Some(Err(e)) => bad_request(e.to_string()),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn participants(State(sfu): State<Sfu>) -> Response {
    match sfu.ask(|reply| Command::Participants { reply }).await {
        Some(s) => Json(s).into_response(),
        None => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

async fn metrics(State(sfu): State<Sfu>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        sfu.metrics.encode(),
    )
        .into_response()
}

async fn health(State(sfu): State<Sfu>) -> StatusCode {
    if sfu.alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}
