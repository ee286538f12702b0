//! Room semantics over the forwarding core: who may join and as what, the stage, mutes, the
//! active speaker, per-participant stats, and the signalling each connection receives.
//! Sans-IO: connections, datagrams and time come in; messages, datagrams and a deadline go out.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use str0m::media::{MediaKind, Mid};

use str0m::format::Codec;

use super::forward::{CoreError, CoreEvent, Forwarder, PeerId};
use super::signal::{
    self, ClientMessage, Identity, ParticipantInfo, ParticipantStats, Role, ServerMessage,
    SignalError, Source, TrackInfo,
};
use super::speaker::SpeakerDetector;
use super::tap::TapSpec;
use crate::metrics::{MediaLabels, ParticipantLabels, RoleLabels, SfuMetrics};

pub type ConnId = u64;

/// Join attempts allowed in a burst, then one per `JOIN_REFILL`: a flood of joins costs the
/// room a few cheap refusals, never a str0m peer each.
const JOIN_BURST: f64 = 20.0;
const JOIN_REFILL: Duration = Duration::from_millis(250);
const STATS_EVERY: Duration = Duration::from_secs(2);
const SPEAKER_EVERY: Duration = Duration::from_millis(100);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JoinError {
    #[error("the studio is full: at most {0} guests")]
    Full(u32),
    #[error("too many join attempts; try again in a moment")]
    Flood,
}

impl JoinError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Full(_) => "full",
            Self::Flood => "rate_limited",
        }
    }
}

struct Participant {
    conn: ConnId,
    peer: PeerId,
    identity: Identity,
    /// Published mids as the participant declared them.
    sources: BTreeMap<Mid, Source>,
    /// Published mids str0m has opened, with their kind (for undeclared ones).
    published: Vec<(Mid, MediaKind)>,
    muted: Vec<Source>,
    on_stage: bool,
}

impl Participant {
    fn source_of(&self, mid: Mid, kind: MediaKind) -> Source {
        self.sources.get(&mid).copied().unwrap_or(match kind {
            MediaKind::Audio => Source::Microphone,
            MediaKind::Video => Source::Camera,
        })
    }

    fn info(&self) -> ParticipantInfo {
        let mut publishing: Vec<Source> = self
            .published
            .iter()
            .map(|(m, k)| self.source_of(*m, *k))
            .collect();
        publishing.sort();
        publishing.dedup();
        ParticipantInfo {
            id: self.identity.participant.clone(),
            name: self.identity.name.clone(),
            role: self.identity.role,
            on_stage: self.on_stage,
            publishing,
            muted: self.muted.clone(),
        }
    }
}

pub use castyard_proto::stage::{ForwardRequest, ForwardState, StageEntry, StageTrack, TrackCodec};

/// At most a camera, microphone, screen and its audio for everyone on stage.
pub const MAX_FORWARDS: usize = 4 * 11;
/// The compositor renews its requests every half second; copies nobody renewed for this long
/// (the compositor stopped or restarted elsewhere) are dropped.
const FORWARDS_LEASE: Duration = Duration::from_secs(10);
const TAPS_EVERY: Duration = Duration::from_millis(250);

pub struct Room {
    core: Forwarder,
    max_guests: u32,
    participants: Vec<Participant>,
    /// Stage membership outlives connections: a guest whose network blips comes back on stage.
    stage: Vec<String>,
    speaker: SpeakerDetector<String>,
    outbox: Vec<(ConnId, ServerMessage)>,
    closed: Vec<ConnId>,
    next_conn: ConnId,
    join_tokens: f64,
    join_refilled: Instant,
    next_stats: Instant,
    next_speaker: Instant,
    last_stats: Instant,
    metrics: Arc<SfuMetrics>,
    forwards: Vec<ForwardRequest>,
    forwards_renewed: Instant,
    next_taps: Instant,
}

impl Room {
    /// `advertised` is the address browsers are told to send media to.
    pub fn new(
        now: Instant,
        advertised: SocketAddr,
        max_participants: u32,
        metrics: Arc<SfuMetrics>,
    ) -> Self {
        Self {
            // str0m matches a datagram's destination against its candidates, and the only
            // candidate is the advertised address (the socket may be bound to 0.0.0.0).
            core: Forwarder::new(advertised),
            max_guests: max_participants.saturating_sub(1),
            participants: Vec::new(),
            stage: Vec::new(),
            speaker: SpeakerDetector::default(),
            outbox: Vec::new(),
            closed: Vec::new(),
            next_conn: 1,
            join_tokens: JOIN_BURST,
            join_refilled: now,
            next_stats: now + STATS_EVERY,
            next_speaker: now,
            last_stats: now,
            metrics,
            forwards: Vec::new(),
            forwards_renewed: now,
            next_taps: now,
        }
    }

    /// The compositor's whole set of wanted copies, replacing the last one. Answers which are
    /// being served.
    pub fn set_forwards(
        &mut self,
        now: Instant,
        forwards: Vec<ForwardRequest>,
    ) -> Result<Vec<ForwardState>, SignalError> {
        if forwards.len() > MAX_FORWARDS {
            return Err(SignalError::BadMessage(format!(
                "at most {MAX_FORWARDS} forwards"
            )));
        }
        if let Some(f) = forwards
            .iter()
            .find(|f| !(96..=127).contains(&f.payload_type))
        {
            return Err(SignalError::BadMessage(format!(
                "payload type {} is not a dynamic one (96-127)",
                f.payload_type
            )));
        }
        self.forwards = forwards;
        self.forwards_renewed = now;
        let specs = self.tap_specs();
        let states = self
            .forwards
            .iter()
            .map(|f| ForwardState {
                request: f.clone(),
                active: specs.iter().any(|(r, _)| r == f),
            })
            .collect();
        let wanted: Vec<(PeerId, Mid)> = specs
            .iter()
            .filter(|(r, _)| r.keyframe)
            .map(|(_, s)| (s.origin, s.mid))
            .collect();
        self.core
            .set_taps(now, specs.into_iter().map(|(_, s)| s).collect());
        for (origin, mid) in wanted {
            self.core.tap_keyframe(now, origin, mid);
        }
        Ok(states)
    }

    /// Each served forward with the track it copies: only on-stage participants' published
    /// tracks go to the compositor.
    fn tap_specs(&self) -> Vec<(ForwardRequest, TapSpec)> {
        let mut out = Vec::new();
        for f in &self.forwards {
            let Some(p) = self
                .participants
                .iter()
                .find(|p| p.on_stage && p.identity.participant == f.participant)
            else {
                continue;
            };
            if let Some(&(mid, kind)) = p
                .published
                .iter()
                .find(|(m, k)| p.source_of(*m, *k) == f.source)
            {
                out.push((
                    f.clone(),
                    TapSpec {
                        origin: p.peer,
                        mid,
                        kind,
                        dest: f.addr,
                        payload_type: f.payload_type,
                    },
                ));
            }
        }
        out
    }

    /// Follows the stage, reconnections and the lease between two renewals.
    fn retap(&mut self, now: Instant) {
        if now.saturating_duration_since(self.forwards_renewed) > FORWARDS_LEASE {
            self.forwards.clear();
        }
        let specs = self.tap_specs().into_iter().map(|(_, s)| s).collect();
        self.core.set_taps(now, specs);
    }

    /// A new limit from the broadcast's spec; guests already in stay, as in StreamYard.
    pub fn set_max_participants(&mut self, max_participants: u32) {
        self.max_guests = max_participants.saturating_sub(1);
    }

    pub fn metrics(&self) -> &SfuMetrics {
        &self.metrics
    }

    fn take_join_token(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.join_refilled);
        self.join_tokens =
            (self.join_tokens + elapsed.as_secs_f64() / JOIN_REFILL.as_secs_f64()).min(JOIN_BURST);
        self.join_refilled = now;
        if self.join_tokens >= 1.0 {
            self.join_tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// A new connection for an authenticated participant. A participant who is already here
    /// (a reload, a second tab) replaces their old connection.
    pub fn join(&mut self, now: Instant, identity: Identity) -> Result<ConnId, JoinError> {
        if !self.take_join_token(now) {
            return Err(JoinError::Flood);
        }
        if let Some(old) = self
            .participants
            .iter()
            .find(|p| p.identity.participant == identity.participant)
            .map(|p| p.conn)
        {
            self.bye(old, "replaced by a newer connection");
        }
        let guests = self
            .participants
            .iter()
            .filter(|p| p.identity.role == Role::Guest)
            .count() as u32;
        if identity.role == Role::Guest && guests >= self.max_guests {
            return Err(JoinError::Full(self.max_guests));
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        let peer = self.core.add_peer(now);
        let on_stage = self.stage.contains(&identity.participant);
        let p = Participant {
            conn,
            peer,
            identity,
            sources: BTreeMap::new(),
            published: Vec::new(),
            muted: Vec::new(),
            on_stage,
        };
        let info = p.info();
        self.metrics
            .participants
            .get_or_create(&RoleLabels {
                role: p.identity.role.as_str().into(),
            })
            .inc();
        let joined = ServerMessage::Joined {
            participant: p.identity.participant.clone(),
            role: p.identity.role,
            participants: self.participants.iter().map(Participant::info).collect(),
            active_speaker: self.speaker.current().cloned(),
        };
        self.participants.push(p);
        self.outbox.push((conn, joined));
        self.tell_others(conn, ServerMessage::Participant(info));
        Ok(conn)
    }

    /// The connection's transport closed (or the relay gave up on it).
    pub fn disconnect(&mut self, conn: ConnId) {
        self.remove(conn);
    }

    /// One text message from a connection. Errors are answered on that connection only.
    pub fn message(&mut self, conn: ConnId, text: &str) {
        if !self.participants.iter().any(|p| p.conn == conn) {
            return;
        }
        if let Err(e) = signal::parse(text).and_then(|m| self.handle(conn, m)) {
            self.outbox.push((conn, ServerMessage::error(&e)));
        }
    }

    fn index(&self, conn: ConnId) -> usize {
        self.participants
            .iter()
            .position(|p| p.conn == conn)
            .expect("callers check the connection exists")
    }

    fn handle(&mut self, conn: ConnId, msg: ClientMessage) -> Result<(), SignalError> {
        let i = self.index(conn);
        let peer = self.participants[i].peer;
        match msg {
            ClientMessage::Ping => self.outbox.push((conn, ServerMessage::Pong)),
            ClientMessage::Offer { sdp, sources } => {
                let mut parsed = BTreeMap::new();
                for (mid, source) in sources {
                    parsed.insert(Mid::from(mid.as_str()), source);
                }
                let answer = self.core.accept_offer(peer, &sdp).map_err(sdp_error)?;
                let p = &mut self.participants[i];
                p.sources = parsed;
                let tracks = self.tracks_for(peer);
                self.outbox.push((
                    conn,
                    ServerMessage::Answer {
                        sdp: answer.to_sdp_string(),
                        tracks,
                    },
                ));
            }
            ClientMessage::Answer { sdp } => {
                self.core.accept_answer(peer, &sdp).map_err(sdp_error)?;
            }
            ClientMessage::Mute { source, muted } => {
                let p = &mut self.participants[i];
                p.muted.retain(|s| *s != source);
                if muted {
                    p.muted.push(source);
                    p.muted.sort();
                }
                let info = p.info();
                self.tell_all(ServerMessage::Participant(info));
            }
            ClientMessage::View { mid, width, height } => {
                let size = (width.min(16_384), height.min(16_384));
                self.core
                    .set_view(peer, Mid::from(mid.as_str()), Some(size));
            }
            ClientMessage::Stage {
                participant,
                on_stage,
            } => {
                if self.participants[i].identity.role != Role::Host {
                    return Err(SignalError::Forbidden(
                        "only the host moves people on stage",
                    ));
                }
                self.set_stage(&participant, on_stage)?;
            }
            ClientMessage::Leave => self.bye(conn, "left"),
        }
        Ok(())
    }

    /// Moves a participant on or off stage; the API's stage edits come here too.
    pub fn set_stage(&mut self, participant: &str, on_stage: bool) -> Result<(), SignalError> {
        let Some(p) = self
            .participants
            .iter_mut()
            .find(|p| p.identity.participant == participant)
        else {
            return Err(SignalError::NotFound(format!(
                "no participant {participant} in the studio"
            )));
        };
        p.on_stage = on_stage;
        let info = p.info();
        self.stage.retain(|s| s != participant);
        if on_stage {
            self.stage.push(participant.to_owned());
        }
        self.metrics.on_stage.set(self.on_stage_count() as i64);
        self.tell_all(ServerMessage::Participant(info));
        Ok(())
    }

    fn on_stage_count(&self) -> usize {
        self.participants.iter().filter(|p| p.on_stage).count()
    }

    /// Who is on stage, in the order they were put there: what the compositor lays out.
    pub fn stage(&self) -> Vec<StageEntry> {
        let speaker = self.speaker.current();
        self.stage
            .iter()
            .filter_map(|id| {
                self.participants
                    .iter()
                    .find(|p| &p.identity.participant == id)
            })
            .map(|p| {
                let info = p.info();
                let tracks = p
                    .published
                    .iter()
                    .filter_map(|&(mid, kind)| {
                        let codec = match self.core.codec(p.peer, mid)? {
                            Codec::Vp8 => TrackCodec::Vp8,
                            Codec::H264 => TrackCodec::H264,
                            Codec::Opus => TrackCodec::Opus,
                            _ => return None,
                        };
                        Some(StageTrack {
                            source: p.source_of(mid, kind),
                            codec,
                        })
                    })
                    .collect();
                StageEntry {
                    speaking: speaker == Some(&info.id),
                    participant: info.id,
                    name: info.name,
                    publishing: info.publishing,
                    muted: info.muted,
                    tracks,
                }
            })
            .collect()
    }

    pub fn participants(&self) -> Vec<ParticipantInfo> {
        self.participants.iter().map(Participant::info).collect()
    }

    /// A datagram on the media socket.
    pub fn receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        self.core.receive(now, source, contents)
    }

    /// Moves time to `now`: sends datagrams through `send`, queues signalling, and returns the
    /// deadline of the next call.
    pub fn poll(&mut self, now: Instant, send: &mut dyn FnMut(SocketAddr, &[u8])) -> Instant {
        let mut deadline = self.core.poll(now, send);
        for e in self.core.take_events() {
            self.core_event(now, e);
        }
        if now >= self.next_speaker {
            self.next_speaker = now + SPEAKER_EVERY;
            if let Some(change) = self.speaker.tick(now) {
                self.tell_all(ServerMessage::ActiveSpeaker {
                    participant: change,
                });
            }
        }
        if now >= self.next_stats {
            self.next_stats = now + STATS_EVERY;
            self.stats(now);
        }
        if now >= self.next_taps {
            self.next_taps = now + TAPS_EVERY;
            self.retap(now);
        }
        deadline = deadline
            .min(self.next_speaker)
            .min(self.next_stats)
            .min(self.next_taps);
        // Events may have queued offers: let the core send them before sleeping.
        if !self.outbox.is_empty() {
            deadline = deadline.min(now + Duration::from_millis(1));
        }
        deadline
    }

    /// Signalling to deliver, in order, and connections to close after it.
    pub fn drain(&mut self) -> (Vec<(ConnId, ServerMessage)>, Vec<ConnId>) {
        (
            std::mem::take(&mut self.outbox),
            std::mem::take(&mut self.closed),
        )
    }

    fn core_event(&mut self, now: Instant, e: CoreEvent) {
        match e {
            CoreEvent::TrackOpen { peer, mid, kind } => {
                if let Some(p) = self.participants.iter_mut().find(|p| p.peer == peer) {
                    p.published.push((mid, kind));
                    let info = p.info();
                    self.tell_all(ServerMessage::Participant(info));
                }
            }
            CoreEvent::Offer { peer, offer } => {
                if let Some(conn) = self.conn_of(peer) {
                    let tracks = self.tracks_for(peer);
                    self.outbox.push((
                        conn,
                        ServerMessage::Offer {
                            sdp: offer.to_sdp_string(),
                            tracks,
                        },
                    ));
                }
            }
            CoreEvent::AudioLevel { peer, level } => {
                if let Some(p) = self.participants.iter().find(|p| p.peer == peer)
                    && !p.muted.contains(&Source::Microphone)
                {
                    self.speaker.observe(&p.identity.participant, level, now);
                }
            }
            CoreEvent::Gone { peer } => {
                if let Some(conn) = self.conn_of(peer) {
                    self.bye(conn, "the media connection was lost");
                }
            }
        }
    }

    fn conn_of(&self, peer: PeerId) -> Option<ConnId> {
        self.participants
            .iter()
            .find(|p| p.peer == peer)
            .map(|p| p.conn)
    }

    fn tracks_for(&self, peer: PeerId) -> Vec<TrackInfo> {
        self.core
            .outgoing(peer)
            .into_iter()
            .filter_map(|(mid, origin, mid_in, kind)| {
                let p = self.participants.iter().find(|p| p.peer == origin)?;
                Some(TrackInfo {
                    mid: mid.to_string(),
                    participant: p.identity.participant.clone(),
                    source: p.source_of(mid_in, kind),
                })
            })
            .collect()
    }

    fn bye(&mut self, conn: ConnId, reason: &str) {
        self.outbox.push((
            conn,
            ServerMessage::Bye {
                reason: reason.into(),
            },
        ));
        self.remove(conn);
        self.closed.push(conn);
    }

    fn remove(&mut self, conn: ConnId) {
        let Some(i) = self.participants.iter().position(|p| p.conn == conn) else {
            return;
        };
        let p = self.participants.remove(i);
        self.core.remove_peer(p.peer);
        self.speaker.forget(&p.identity.participant);
        let id = p.identity.participant;
        self.metrics
            .participants
            .get_or_create(&RoleLabels {
                role: p.identity.role.as_str().into(),
            })
            .dec();
        self.metrics.on_stage.set(self.on_stage_count() as i64);
        let labels = ParticipantLabels {
            participant: id.clone(),
        };
        self.metrics.rtt.remove(&labels);
        self.metrics.jitter.remove(&labels);
        self.tell_all(ServerMessage::ParticipantLeft { participant: id });
    }

    fn stats(&mut self, now: Instant) {
        let secs = now
            .saturating_duration_since(self.last_stats)
            .as_secs_f64()
            .max(0.001);
        self.last_stats = now;
        self.metrics
            .forwarded_packets
            .inc_by(self.core.take_tap_packets());
        let mut all = Vec::new();
        for p in &self.participants {
            let c = self.core.take_counters(p.peer);
            let id = &p.identity.participant;
            let m = &self.metrics;
            for (i, kind) in ["audio", "video"].iter().enumerate() {
                let labels = MediaLabels {
                    participant: id.clone(),
                    kind: (*kind).into(),
                };
                m.received_bytes
                    .get_or_create(&labels)
                    .inc_by(c.received_bytes[i]);
                m.sent_bytes.get_or_create(&labels).inc_by(c.sent_bytes[i]);
            }
            let labels = ParticipantLabels {
                participant: id.clone(),
            };
            m.received_packets
                .get_or_create(&labels)
                .inc_by(c.received_packets);
            m.lost_packets.get_or_create(&labels).inc_by(c.lost_packets);
            m.forwarded_packets.inc_by(c.forwarded_packets);
            m.keyframe_requests.inc_by(c.keyframe_requests);
            if let Some(rtt) = c.rtt {
                m.rtt.get_or_create(&labels).set(rtt.as_secs_f64());
            }
            if let Some(j) = c.jitter {
                m.jitter.get_or_create(&labels).set(j.as_secs_f64());
            }
            let bits = |b: u64| (b as f64 * 8.0 / secs) as u64;
            all.push(ParticipantStats {
                participant: id.clone(),
                bitrate_in_bps: bits(c.received_bytes.iter().sum()),
                bitrate_out_bps: bits(c.sent_bytes.iter().sum()),
                packet_loss: c.loss.unwrap_or(0.0),
                rtt_ms: c.rtt.map(|d| d.as_millis() as u64),
                jitter_ms: c.jitter.map(|d| d.as_millis() as u64),
            });
        }
        let hosts: Vec<ConnId> = self
            .participants
            .iter()
            .filter(|p| p.identity.role == Role::Host)
            .map(|p| p.conn)
            .collect();
        for conn in hosts {
            self.outbox.push((
                conn,
                ServerMessage::Stats {
                    participants: all.clone(),
                },
            ));
        }
    }

    fn tell_all(&mut self, msg: ServerMessage) {
        for p in &self.participants {
            self.outbox.push((p.conn, msg.clone()));
        }
    }

    fn tell_others(&mut self, conn: ConnId, msg: ServerMessage) {
        for p in self.participants.iter().filter(|p| p.conn != conn) {
            self.outbox.push((p.conn, msg.clone()));
        }
    }
}

fn sdp_error(e: CoreError) -> SignalError {
    match e {
        CoreError::BadSdp(m) => SignalError::BadSdp(m),
        CoreError::Refused(e) => SignalError::BadSdp(e.to_string()),
        CoreError::NoPendingOffer => SignalError::Conflict(e.to_string()),
        CoreError::NoPeer => SignalError::NotFound(e.to_string()),
    }
}
