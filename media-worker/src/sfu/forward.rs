//! The forwarding core: str0m peers, each publisher's tracks fanned out to every other peer,
//! simulcast layers picked per subscriber, keyframe requests routed back to the publisher.
//! It knows nothing of rooms, roles or signalling transports (the room sits above it).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use str0m::bwe::{Bitrate, BweKind};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaData, MediaKind, Mid, Rid};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc, RtcError};

use super::estimate::LossBased;
use super::layers::{Admit, LayerPick};
use super::tap::{Tap, TapNeed, TapSpec, wants_keyframe};

pub type PeerId = u64;

/// A publisher must not be asked for keyframes more often than this, however many
/// subscribers lose packets at once.
const KEYFRAME_THROTTLE: Duration = Duration::from_millis(500);
/// A peer we hear nothing from (not even STUN consent checks, which browsers send every few
/// seconds) for this long has vanished: its tracks are stopped for everyone.
pub const PEER_TIMEOUT: Duration = Duration::from_secs(15);
#[derive(Debug)]
pub struct TrackIn {
    pub origin: PeerId,
    pub mid: Mid,
    pub kind: MediaKind,
}

#[derive(Debug)]
struct TrackInEntry {
    id: Arc<TrackIn>,
    last_keyframe_request: Option<Instant>,
    /// Known from the first frame: the compositor's decoder is set up for it.
    codec: Option<Codec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    ToOpen,
    Negotiating(Mid),
    Open(Mid),
    ToStop(Mid),
    NegotiatingStop(Mid),
}

#[derive(Debug)]
struct TrackOut {
    track_in: Weak<TrackIn>,
    state: OutState,
    layer: LayerPick,
}

impl TrackOut {
    fn mid(&self) -> Option<Mid> {
        match self.state {
            OutState::ToOpen => None,
            OutState::Negotiating(m)
            | OutState::Open(m)
            | OutState::ToStop(m)
            | OutState::NegotiatingStop(m) => Some(m),
        }
    }
}

/// Traffic counters a peer accumulates between two reads by the room's stats.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct PeerCounters {
    pub received_bytes: [u64; 2],
    pub sent_bytes: [u64; 2],
    pub received_packets: u64,
    pub lost_packets: u64,
    pub forwarded_packets: u64,
    /// Keyframe requests sent to this peer as a publisher.
    pub keyframe_requests: u64,
    pub rtt: Option<Duration>,
    pub jitter: Option<Duration>,
    pub loss: Option<f32>,
}

fn kind_index(kind: MediaKind) -> usize {
    match kind {
        MediaKind::Audio => 0,
        MediaKind::Video => 1,
    }
}

pub struct Peer {
    pub id: PeerId,
    rtc: Rtc,
    tracks_in: Vec<TrackInEntry>,
    tracks_out: Vec<TrackOut>,
    pending: Option<SdpPendingOffer>,
    /// The SFU offers only once the peer's own first offer was answered: before that it has no
    /// transport to receive on.
    negotiated: bool,
    /// This peer's bandwidth: from its REMB when it sends one, else from the loss it reports.
    bwe: Option<Bitrate>,
    remb: bool,
    loss_based: LossBased,
    video_share: Option<u64>,
    created: Instant,
    last_heard: Instant,
    next_timeout: Instant,
    /// Something reached this peer's str0m (a datagram, media to send, a request, an SDP
    /// change) since it was last drained. A peer neither dirty nor due is not polled: with a
    /// dozen peers, polling all of them for every datagram was most of the SFU's CPU.
    dirty: bool,
    counters: PeerCounters,
    /// Cumulative str0m stats per (mid, rid, ingress?), to turn them into counter deltas.
    last_stats: Vec<(Mid, Option<Rid>, bool, [u64; 3])>,
}

/// What the core tells the room.
#[derive(Debug)]
pub enum CoreEvent {
    /// A peer published a new track.
    TrackOpen {
        peer: PeerId,
        mid: Mid,
        kind: MediaKind,
    },
    /// The SFU needs the peer to accept this offer (tracks to receive came or went).
    Offer { peer: PeerId, offer: SdpOffer },
    /// The RFC 6464 level of a published audio packet: 0 is loudest, 127 silence.
    AudioLevel { peer: PeerId, level: u8 },
    /// A peer is gone (ICE or DTLS failed, timed out, or it was removed).
    Gone { peer: PeerId },
}

// Media dominates the queue, so boxing it would cost an allocation per packet to save space
// on the rare other variants.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
enum Propagated {
    TrackOpen(PeerId, Weak<TrackIn>),
    MediaData(PeerId, MediaData),
    KeyframeRequest {
        origin: PeerId,
        mid_in: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum CoreError {
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    #[error("the SDP was refused: {0}")]
    Refused(#[from] RtcError),
    #[error("no offer from the SFU is waiting for an answer")]
    NoPendingOffer,
    #[error("no such peer")]
    NoPeer,
}

/// The core: every peer, the shared UDP address, and what is queued between them.
pub struct Forwarder {
    local: SocketAddr,
    peers: Vec<Peer>,
    queue: VecDeque<Propagated>,
    events: Vec<CoreEvent>,
    next_id: PeerId,
    /// Plain RTP copies of tracks for the compositor.
    taps: Vec<Tap>,
    /// Packets sent to the compositor since the stats last took them.
    tap_packets: u64,
}

impl Forwarder {
    /// `local` is the address peers send to: our one host candidate.
    pub fn new(local: SocketAddr) -> Self {
        Self {
            local,
            peers: Vec::new(),
            queue: VecDeque::new(),
            events: Vec::new(),
            next_id: 1,
            taps: Vec::new(),
            tap_packets: 0,
        }
    }

    /// A new peer, ICE-lite on our one UDP port, not yet negotiated.
    pub fn add_peer(&mut self, now: Instant) -> PeerId {
        let mut rtc = Rtc::builder()
            .set_ice_lite(true)
            .clear_codecs()
            .enable_opus(true, false)
            .enable_vp8(true)
            .enable_h264(true)
            .set_stats_interval(Some(Duration::from_secs(1)))
            .build(now);
        let candidate = Candidate::host(self.local, "udp").expect("an IP address is a valid host");
        rtc.add_local_candidate(candidate);
        let id = self.next_id;
        self.next_id += 1;
        let mut peer = Peer {
            id,
            rtc,
            tracks_in: Vec::new(),
            tracks_out: Vec::new(),
            pending: None,
            negotiated: false,
            bwe: None,
            remb: false,
            loss_based: LossBased::new(now),
            video_share: None,
            created: now,
            last_heard: now,
            next_timeout: now,
            dirty: true,
            counters: PeerCounters::default(),
            last_stats: Vec::new(),
        };
        for entry in self.peers.iter().flat_map(|p| p.tracks_in.iter()) {
            peer.subscribe(Arc::downgrade(&entry.id));
        }
        self.peers.push(peer);
        id
    }

    pub fn remove_peer(&mut self, id: PeerId) {
        if let Some(i) = self.peers.iter().position(|p| p.id == id) {
            let mut peer = self.peers.remove(i);
            peer.rtc.disconnect();
            // Dropping its strong track references makes every subscriber stop them.
            self.events.push(CoreEvent::Gone { peer: id });
            self.taps.retain(|t| t.spec.origin != id);
            // Its subscribers renegotiate the tracks they lose.
            for p in &mut self.peers {
                p.dirty = true;
            }
        }
    }

    /// A peer about to be changed from outside a poll: it is drained at the next one.
    fn peer(&mut self, id: PeerId) -> Result<&mut Peer, CoreError> {
        let p = self
            .peers
            .iter_mut()
            .find(|p| p.id == id)
            .ok_or(CoreError::NoPeer)?;
        p.dirty = true;
        Ok(p)
    }

    /// The peer's offer (publishing, or any change on its side); returns our answer.
    pub fn accept_offer(&mut self, id: PeerId, sdp: &str) -> Result<SdpAnswer, CoreError> {
        let offer = SdpOffer::from_sdp_string(sdp).map_err(|e| CoreError::BadSdp(e.to_string()))?;
        let peer = self.peer(id)?;
        let answer = peer.rtc.sdp_api().accept_offer(offer)?;
        // An offer from the peer rolls back ours (we are the polite side); redo it afterwards.
        peer.pending = None;
        for t in &mut peer.tracks_out {
            match t.state {
                OutState::Negotiating(_) => t.state = OutState::ToOpen,
                OutState::NegotiatingStop(m) => t.state = OutState::ToStop(m),
                _ => {}
            }
        }
        peer.negotiated = true;
        Ok(answer)
    }

    pub fn accept_answer(&mut self, id: PeerId, sdp: &str) -> Result<(), CoreError> {
        let answer =
            SdpAnswer::from_sdp_string(sdp).map_err(|e| CoreError::BadSdp(e.to_string()))?;
        let peer = self.peer(id)?;
        let pending = peer.pending.take().ok_or(CoreError::NoPendingOffer)?;
        peer.rtc.sdp_api().accept_answer(pending, answer)?;
        for t in &mut peer.tracks_out {
            if let OutState::Negotiating(m) = t.state {
                t.state = OutState::Open(m);
            }
        }
        peer.tracks_out
            .retain(|t| !matches!(t.state, OutState::NegotiatingStop(_)));
        Ok(())
    }

    /// Which publisher and track an outgoing mid of `id` carries.
    pub fn outgoing(&self, id: PeerId) -> Vec<(Mid, PeerId, Mid, MediaKind)> {
        let Some(peer) = self.peers.iter().find(|p| p.id == id) else {
            return Vec::new();
        };
        peer.tracks_out
            .iter()
            .filter_map(|t| {
                let tin = t.track_in.upgrade()?;
                Some((t.mid()?, tin.origin, tin.mid, tin.kind))
            })
            .collect()
    }

    /// The codec of a published track, once a frame of it arrived.
    pub fn codec(&self, origin: PeerId, mid: Mid) -> Option<Codec> {
        self.peers
            .iter()
            .find(|p| p.id == origin)?
            .tracks_in
            .iter()
            .find(|t| t.id.mid == mid)?
            .codec
    }

    /// The size subscriber `id` renders its outgoing `mid` at; steers its simulcast layer.
    pub fn set_view(&mut self, id: PeerId, mid: Mid, size: Option<(u32, u32)>) {
        if let Ok(peer) = self.peer(id) {
            let created = peer.created;
            if let Some(t) = peer.tracks_out.iter_mut().find(|t| t.mid() == Some(mid)) {
                t.layer.set_view(size, created);
            }
        }
    }

    /// Takes the traffic counted since the last call.
    pub fn take_counters(&mut self, id: PeerId) -> PeerCounters {
        self.peer(id)
            .map(|p| {
                let c = p.counters;
                p.counters = PeerCounters {
                    rtt: c.rtt,
                    jitter: c.jitter,
                    loss: c.loss,
                    ..PeerCounters::default()
                };
                c
            })
            .unwrap_or_default()
    }

    pub fn take_events(&mut self) -> Vec<CoreEvent> {
        std::mem::take(&mut self.events)
    }

    /// The copies to send to the compositor. A copy already running (same track, same
    /// address) goes on untouched; a new one starts at the track's next keyframe.
    pub fn set_taps(&mut self, now: Instant, specs: Vec<TapSpec>) {
        self.taps.retain(|t| specs.contains(&t.spec));
        for spec in specs {
            if !self.taps.iter().any(|t| t.spec == spec) {
                self.taps.push(Tap::new(now, spec));
            }
        }
    }

    /// RTP packets sent to the compositor since the last call.
    pub fn take_tap_packets(&mut self) -> u64 {
        std::mem::take(&mut self.tap_packets)
    }

    /// Asks the publisher of a copied track for a keyframe on the layer the copy carries.
    pub fn tap_keyframe(&mut self, now: Instant, origin: PeerId, mid: Mid) {
        let Some(tap) = self.taps.iter().find(|t| t.matches(origin, mid)) else {
            return;
        };
        let rid = tap.layer();
        tracing::debug!(peer = origin, %mid, "the compositor asks for a keyframe");
        if let Some(p) = self.peers.iter_mut().find(|p| p.id == origin) {
            p.request_keyframe(now, mid, rid, KeyframeRequestKind::Pli);
        }
    }

    /// RTCP from a decoder we copy a track to: its keyframe requests go to the publisher.
    fn tap_feedback(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        let Some(tap) = self.taps.iter().find(|t| t.rtcp_dest() == source) else {
            return false;
        };
        if wants_keyframe(contents) {
            let (origin, mid) = (tap.spec.origin, tap.spec.mid);
            self.tap_keyframe(now, origin, mid);
        }
        true
    }

    /// A datagram on our socket. Returns false if no peer claims it.
    pub fn receive(&mut self, now: Instant, source: SocketAddr, contents: &[u8]) -> bool {
        if self.tap_feedback(now, source, contents) {
            return true;
        }
        let Ok(contents) = contents.try_into() else {
            return false;
        };
        let input = Input::Receive(
            now,
            Receive {
                proto: Protocol::Udp,
                source,
                destination: self.local,
                contents,
            },
        );
        let Some(peer) = self.peers.iter_mut().find(|p| p.rtc.accepts(&input)) else {
            return false;
        };
        peer.last_heard = now;
        peer.dirty = true;
        if let Err(e) = peer.rtc.handle_input(input) {
            tracing::info!(peer = peer.id, "dropping a peer after bad input: {e}");
            peer.rtc.disconnect();
        }
        true
    }

    /// Advances every peer to `now`, sends what they have to send and moves media between
    /// them. Returns when the next call is due.
    pub fn poll(&mut self, now: Instant, send: &mut dyn FnMut(SocketAddr, &[u8])) -> Instant {
        for p in &mut self.peers {
            if now.saturating_duration_since(p.last_heard) > PEER_TIMEOUT {
                tracing::info!(peer = p.id, "peer vanished");
                p.rtc.disconnect();
                p.dirty = true;
            }
            // A peer whose timers have not come due has nothing to do on a timeout; skipping it
            // keeps a packet for one peer from costing a timer pass over all of them.
            if p.rtc.is_alive()
                && now >= p.next_timeout
                && let Err(e) = p.rtc.handle_input(Input::Timeout(now))
            {
                tracing::info!(peer = p.id, "peer failed: {e}");
                p.rtc.disconnect();
            }
        }
        loop {
            let mut timeout = now + Duration::from_millis(100);
            for p in &mut self.peers {
                let t = if p.dirty || now >= p.next_timeout {
                    p.dirty = false;
                    p.drain(now, send, &mut self.queue, &mut self.events)
                } else {
                    p.next_timeout
                };
                timeout = timeout.min(t);
            }
            if self.queue.is_empty() {
                self.reap();
                return timeout;
            }
            while let Some(item) = self.queue.pop_front() {
                self.propagate(now, item, send);
            }
        }
    }

    fn reap(&mut self) {
        let dead: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|p| !p.rtc.is_alive())
            .map(|p| p.id)
            .collect();
        for id in dead {
            self.remove_peer(id);
        }
    }

    fn propagate(
        &mut self,
        now: Instant,
        item: Propagated,
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) {
        match item {
            Propagated::TrackOpen(origin, weak) => {
                for p in self.peers.iter_mut().filter(|p| p.id != origin) {
                    p.subscribe(weak.clone());
                }
            }
            Propagated::MediaData(origin, data) => {
                let mut wanted = Vec::new();
                for p in self.peers.iter_mut().filter(|p| p.id != origin) {
                    if let Some(rid) = p.forward(now, origin, &data) {
                        wanted.push(Some(rid));
                    }
                }
                for tap in self.taps.iter_mut().filter(|t| t.matches(origin, data.mid)) {
                    let before = tap.packets;
                    if let TapNeed::Keyframe(rid) = tap.frame(now, &data, send) {
                        wanted.push(rid);
                    }
                    self.tap_packets += tap.packets - before;
                }
                // Subscribers waiting for a keyframe on a layer ask its publisher for one.
                if let Some(publisher) = self.peers.iter_mut().find(|p| p.id == origin) {
                    for rid in wanted {
                        publisher.request_keyframe(now, data.mid, rid, KeyframeRequestKind::Pli);
                    }
                }
            }
            Propagated::KeyframeRequest {
                origin,
                mid_in,
                rid,
                kind,
            } => {
                if let Some(publisher) = self.peers.iter_mut().find(|p| p.id == origin) {
                    publisher.request_keyframe(now, mid_in, rid, kind);
                }
            }
        }
    }
}

impl Peer {
    fn subscribe(&mut self, track_in: Weak<TrackIn>) {
        self.dirty = true;
        self.tracks_out.push(TrackOut {
            track_in,
            state: OutState::ToOpen,
            layer: LayerPick::new(self.created, None),
        });
        self.retarget();
    }

    /// Polls str0m until it wants time to pass; returns when.
    fn drain(
        &mut self,
        now: Instant,
        send: &mut dyn FnMut(SocketAddr, &[u8]),
        queue: &mut VecDeque<Propagated>,
        events: &mut Vec<CoreEvent>,
    ) -> Instant {
        loop {
            if !self.rtc.is_alive() {
                return now;
            }
            self.negotiate_if_needed(events);
            let out = match self.rtc.poll_output() {
                Ok(o) => o,
                Err(e) => {
                    tracing::info!(peer = self.id, "peer failed: {e}");
                    self.rtc.disconnect();
                    return now;
                }
            };
            match out {
                Output::Timeout(t) => {
                    self.next_timeout = t;
                    return t;
                }
                Output::Transmit(t) => send(t.destination, &t.contents),
                Output::Event(e) => self.handle_event(now, e, queue, events),
            }
        }
    }

    fn handle_event(
        &mut self,
        now: Instant,
        e: Event,
        queue: &mut VecDeque<Propagated>,
        events: &mut Vec<CoreEvent>,
    ) {
        match e {
            Event::IceConnectionStateChange(IceConnectionState::Disconnected) => {
                self.rtc.disconnect();
            }
            Event::MediaAdded(m) if m.direction.is_receiving() => {
                if self.tracks_in.iter().any(|t| t.id.mid == m.mid) {
                    return;
                }
                let entry = TrackInEntry {
                    id: Arc::new(TrackIn {
                        origin: self.id,
                        mid: m.mid,
                        kind: m.kind,
                    }),
                    last_keyframe_request: None,
                    codec: None,
                };
                queue.push_back(Propagated::TrackOpen(self.id, Arc::downgrade(&entry.id)));
                events.push(CoreEvent::TrackOpen {
                    peer: self.id,
                    mid: m.mid,
                    kind: m.kind,
                });
                self.tracks_in.push(entry);
            }
            Event::MediaData(data) => {
                let Some(entry) = self.tracks_in.iter_mut().find(|t| t.id.mid == data.mid) else {
                    return;
                };
                entry.codec = Some(data.params.spec().codec);
                if entry.id.kind == MediaKind::Audio
                    && let Some(level) = data.ext_vals.audio_level
                {
                    events.push(CoreEvent::AudioLevel {
                        peer: self.id,
                        level: level.unsigned_abs(),
                    });
                }
                if !data.contiguous {
                    self.request_keyframe(now, data.mid, data.rid, KeyframeRequestKind::Pli);
                }
                queue.push_back(Propagated::MediaData(self.id, data));
            }
            Event::KeyframeRequest(req) => {
                let Some(t) = self.tracks_out.iter().find(|t| t.mid() == Some(req.mid)) else {
                    return;
                };
                let Some(tin) = t.track_in.upgrade() else {
                    return;
                };
                queue.push_back(Propagated::KeyframeRequest {
                    origin: tin.origin,
                    mid_in: tin.mid,
                    rid: t.layer.current,
                    kind: req.kind,
                });
            }
            Event::EgressBitrateEstimate(
                BweKind::Twcc { estimate: b, .. } | BweKind::Remb { estimate: b, .. },
            ) => {
                self.remb = true;
                self.bwe = Some(b);
                self.retarget();
            }
            Event::PeerStats(s) => {
                self.counters.rtt = s.rtt.or(self.counters.rtt);
                self.counters.loss = s.ingress_loss_fraction.or(self.counters.loss);
            }
            Event::MediaIngressStats(s) => {
                let kind = self.kind_in(s.mid);
                let [db, dp, _] = self.stats_delta(s.mid, s.rid, true, [s.bytes, s.packets, 0]);
                self.counters.received_bytes[kind_index(kind)] += db;
                self.counters.received_packets += dp;
                if let Some(loss) = s.loss.filter(|l| *l > 0.0 && *l < 1.0) {
                    let lost = f64::from(loss) * dp as f64 / (1.0 - f64::from(loss));
                    self.counters.lost_packets += lost.round() as u64;
                }
                let clock = if kind == MediaKind::Audio {
                    48_000.0
                } else {
                    90_000.0
                };
                self.counters.jitter = Some(Duration::from_secs_f64(f64::from(s.jitter) / clock));
            }
            Event::MediaEgressStats(s) => {
                let kind = self.kind_out(s.mid);
                let [db, dp, dn] =
                    self.stats_delta(s.mid, s.rid, false, [s.bytes, s.packets, s.nacks]);
                self.counters.sent_bytes[kind_index(kind)] += db;
                // RTP packets, not frames: a video frame is several packets once packetized.
                self.counters.forwarded_packets += dp;
                if s.rtt.is_some() {
                    self.counters.rtt = s.rtt;
                }
                // Receiver reports count what retransmission repaired as received; the
                // packets NACKed are the loss the path itself had.
                let nacked = (dp > 0).then(|| (dn as f64 / dp as f64).min(1.0) as f32);
                let loss = match (s.loss, nacked) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                };
                self.loss_based.sent(db, loss);
                if !self.remb
                    && let Some(estimate) = self.loss_based.update(now)
                {
                    self.bwe = estimate.map(Bitrate::bps);
                    self.retarget();
                }
            }
            _ => {}
        }
    }

    fn kind_in(&self, mid: Mid) -> MediaKind {
        self.tracks_in
            .iter()
            .find(|t| t.id.mid == mid)
            .map_or(MediaKind::Video, |t| t.id.kind)
    }

    fn kind_out(&self, mid: Mid) -> MediaKind {
        self.tracks_out
            .iter()
            .find(|t| t.mid() == Some(mid))
            .and_then(|t| t.track_in.upgrade())
            .map_or(MediaKind::Video, |t| t.kind)
    }

    /// What a stream's cumulative counters (bytes, packets, NACKs) grew by since last time.
    fn stats_delta(
        &mut self,
        mid: Mid,
        rid: Option<Rid>,
        ingress: bool,
        now: [u64; 3],
    ) -> [u64; 3] {
        match self
            .last_stats
            .iter_mut()
            .find(|s| s.0 == mid && s.1 == rid && s.2 == ingress)
        {
            Some(s) => {
                let d = std::array::from_fn(|i| now[i].saturating_sub(s.3[i]));
                s.3 = now;
                d
            }
            None => {
                self.last_stats.push((mid, rid, ingress, now));
                now
            }
        }
    }

    fn request_keyframe(
        &mut self,
        now: Instant,
        mid: Mid,
        rid: Option<Rid>,
        kind: KeyframeRequestKind,
    ) {
        let Some(entry) = self.tracks_in.iter_mut().find(|t| t.id.mid == mid) else {
            return;
        };
        if entry
            .last_keyframe_request
            .is_some_and(|t| now.saturating_duration_since(t) < KEYFRAME_THROTTLE)
        {
            return;
        }
        let Some(mut writer) = self.rtc.writer(mid) else {
            return;
        };
        if writer.request_keyframe(rid, kind).is_ok() {
            entry.last_keyframe_request = Some(now);
            self.counters.keyframe_requests += 1;
            self.dirty = true;
        }
    }

    /// Each outgoing video track's share of the estimated bandwidth.
    fn retarget(&mut self) {
        let video = self
            .tracks_out
            .iter()
            .filter(|t| {
                t.track_in
                    .upgrade()
                    .is_some_and(|i| i.kind == MediaKind::Video)
            })
            .count()
            .max(1) as u64;
        self.video_share = self.bwe.map(|b| b.as_u64() / video);
    }

    /// Sends one frame of `origin`'s track to this peer if it subscribes to it and the frame is
    /// on the layer it gets. Returns the layer it waits for a keyframe on, if any.
    fn forward(&mut self, now: Instant, origin: PeerId, data: &MediaData) -> Option<Rid> {
        let share = self.video_share;
        let t = self.tracks_out.iter_mut().find(|o| {
            o.track_in
                .upgrade()
                .is_some_and(|i| i.origin == origin && i.mid == data.mid)
        })?;
        let OutState::Open(mid) = t.state else {
            return None;
        };
        match t.layer.admit(now, data, share) {
            Admit::Send => {}
            Admit::Skip => return None,
            Admit::WaitKeyframe(rid) => return Some(rid),
        }
        self.dirty = true;
        let writer = self.rtc.writer(mid)?;
        let pt = writer.match_params(data.params)?;
        if let Err(e) = writer.write(pt, data.network_time, data.time, data.data.clone()) {
            tracing::info!(peer = self.id, "cannot forward: {e}");
            self.rtc.disconnect();
            return None;
        }
        None
    }

    fn negotiate_if_needed(&mut self, events: &mut Vec<CoreEvent>) {
        if !self.negotiated || self.pending.is_some() {
            return;
        }
        for t in &mut self.tracks_out {
            if let OutState::Open(m) = t.state
                && t.track_in.upgrade().is_none()
            {
                t.state = OutState::ToStop(m);
            }
        }
        self.tracks_out
            .retain(|t| !(t.state == OutState::ToOpen && t.track_in.upgrade().is_none()));
        let mut change = self.rtc.sdp_api();
        for t in &mut self.tracks_out {
            match t.state {
                OutState::ToOpen => {
                    if let Some(tin) = t.track_in.upgrade() {
                        let stream = format!("p{}", tin.origin);
                        let mid = change.add_media(
                            tin.kind,
                            Direction::SendOnly,
                            Some(stream),
                            None,
                            None,
                        );
                        t.state = OutState::Negotiating(mid);
                    }
                }
                OutState::ToStop(mid) => {
                    change.stop_media(mid);
                    t.state = OutState::NegotiatingStop(mid);
                }
                _ => {}
            }
        }
        if !change.has_changes() {
            return;
        }
        if let Some((offer, pending)) = change.apply() {
            self.pending = Some(pending);
            events.push(CoreEvent::Offer {
                peer: self.id,
                offer,
            });
        }
    }
}
