//! The SFU room in process and in virtual time: str0m peers stand in for browsers, packets
//! move between them through an in-memory network, and signalling goes through `Room`.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use castyard_media_worker::metrics::SfuMetrics;
use castyard_media_worker::sfu::room::{
    ConnId, ForwardRequest, JoinError, Room, StageTrack, TrackCodec,
};
use castyard_media_worker::sfu::signal::{Identity, Role, ServerMessage, Source, TrackInfo};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{
    Direction, Frequency, KeyframeRequestKind, MediaKind, MediaTime, Mid, Rid, Simulcast,
    SimulcastLayer,
};
use str0m::net::{Protocol, Receive};
use str0m::{Candidate, Event, IceConnectionState, Input, Output, Rtc};

const SFU: &str = "10.0.0.1:7882";

struct Client {
    name: String,
    addr: SocketAddr,
    rtc: Rtc,
    conn: ConnId,
    pending: Option<SdpPendingOffer>,
    connected: bool,
    /// Mids we publish, with their source and whether they are simulcast.
    publish: Vec<(Mid, Source, bool)>,
    /// Bytes and frames received per incoming mid; each frame's mark (its second byte).
    received: HashMap<Mid, (u64, u64, Vec<u8>)>,
    tracks: Vec<TrackInfo>,
    messages: Vec<ServerMessage>,
    keyframe_requests: Vec<(Mid, Option<Rid>)>,
    closed: bool,
    /// Audio level to send (RFC 6464: 0 loud, 127 silent).
    level: u8,
    frame: u64,
    next_frame: Option<Instant>,
}

struct World {
    now: Instant,
    sfu: SocketAddr,
    room: Room,
    clients: Vec<Client>,
    to_sfu: Vec<(SocketAddr, Vec<u8>)>,
    /// Clients whose network is cut: nothing in or out.
    cut: Vec<String>,
    /// Clients that lose every Nth datagram the SFU sends them.
    lossy: Vec<(String, u64)>,
    sent_to_lossy: u64,
    /// Datagrams to addresses that are no client's: the compositor's copies.
    elsewhere: Vec<(SocketAddr, Vec<u8>)>,
}

fn identity(name: &str, role: Role) -> Identity {
    Identity {
        participant: format!("id-{name}"),
        name: name.into(),
        role,
    }
}

impl World {
    fn new(max_participants: u32) -> Self {
        let now = Instant::now();
        let sfu: SocketAddr = SFU.parse().unwrap();
        let metrics = Arc::new(SfuMetrics::new("bc-1"));
        Self {
            now,
            sfu,
            room: Room::new(now, sfu, max_participants, metrics),
            clients: Vec::new(),
            to_sfu: Vec::new(),
            cut: Vec::new(),
            lossy: Vec::new(),
            sent_to_lossy: 0,
            elsewhere: Vec::new(),
        }
    }

    /// Ann the host and Bob a guest, both publishing a microphone and a camera.
    fn pair(max_participants: u32) -> Self {
        let mut w = Self::new(max_participants);
        let av = [Source::Microphone, Source::Camera];
        w.join("ann", Role::Host, &av, false);
        w.join("bob", Role::Guest, &av, false);
        w
    }

    fn client(&mut self, name: &str) -> &mut Client {
        self.clients.iter_mut().find(|c| c.name == name).unwrap()
    }

    /// Joins and publishes the given sources (simulcast video when `simulcast`).
    fn join(&mut self, name: &str, role: Role, sources: &[Source], simulcast: bool) {
        let conn = self.room.join(self.now, identity(name, role)).unwrap();
        let addr: SocketAddr = format!("10.0.1.{}:5000", self.clients.len() + 1)
            .parse()
            .unwrap();
        let mut rtc = Rtc::builder().build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut client = Client {
            name: name.into(),
            addr,
            rtc,
            conn,
            pending: None,
            connected: false,
            publish: Vec::new(),
            received: HashMap::new(),
            tracks: Vec::new(),
            messages: Vec::new(),
            keyframe_requests: Vec::new(),
            closed: false,
            level: 127,
            frame: 0,
            next_frame: None,
        };
        let text = client.offer(sources, simulcast);
        self.clients.push(client);
        self.room.message(conn, &text);
        self.run(Duration::from_millis(50));
    }

    /// Moves virtual time on in 5 ms steps, moving packets and messages.
    fn run(&mut self, d: Duration) {
        let end = self.now + d;
        while self.now < end {
            self.now += Duration::from_millis(5);
            self.step();
        }
    }

    fn step(&mut self) {
        let now = self.now;
        for (src, data) in std::mem::take(&mut self.to_sfu) {
            self.room.receive(now, src, &data);
        }
        let mut out: Vec<(SocketAddr, Vec<u8>)> = Vec::new();
        self.room
            .poll(now, &mut |dst, b| out.push((dst, b.to_vec())));
        for (dst, data) in out {
            let Some(c) = self.clients.iter_mut().find(|c| c.addr == dst) else {
                self.elsewhere.push((dst, data));
                continue;
            };
            if self.cut.contains(&c.name) {
                continue;
            }
            if let Some((_, every)) = self.lossy.iter().find(|(n, _)| *n == c.name) {
                self.sent_to_lossy += 1;
                if self.sent_to_lossy.is_multiple_of(*every) {
                    continue;
                }
            }
            let input = Input::Receive(
                now,
                Receive {
                    proto: Protocol::Udp,
                    source: self.sfu,
                    destination: dst,
                    contents: data.as_slice().try_into().unwrap(),
                },
            );
            c.rtc.handle_input(input).unwrap();
        }
        let (messages, closed) = self.room.drain();
        for (conn, msg) in messages {
            let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn) else {
                continue;
            };
            if let Some(reply) = c.on_message(&msg) {
                self.room.message(conn, &reply);
            }
            c.messages.push(msg);
        }
        for conn in closed {
            if let Some(c) = self.clients.iter_mut().find(|c| c.conn == conn) {
                c.closed = true;
            }
        }
        for c in &mut self.clients {
            if self.cut.contains(&c.name) || c.closed {
                continue;
            }
            c.tick(now);
            c.rtc.handle_input(Input::Timeout(now)).unwrap();
            loop {
                match c.rtc.poll_output().unwrap() {
                    Output::Timeout(_) => break,
                    Output::Transmit(t) => self.to_sfu.push((c.addr, t.contents.to_vec())),
                    Output::Event(e) => c.on_event(e),
                }
            }
        }
    }

    /// What `pick` finds in the messages `name` received, oldest first.
    fn received<T>(&self, name: &str, pick: impl Fn(&ServerMessage) -> Option<T>) -> Vec<T> {
        let c = self.clients.iter().find(|c| c.name == name).unwrap();
        c.messages.iter().filter_map(pick).collect()
    }

    fn speaker_changes(&self, name: &str) -> Vec<Option<String>> {
        self.received(name, |m| match m {
            ServerMessage::ActiveSpeaker { participant } => Some(participant.clone()),
            _ => None,
        })
    }
}

impl Client {
    fn offer(&mut self, sources: &[Source], simulcast: bool) -> String {
        let mut api = self.rtc.sdp_api();
        let mut added = Vec::new();
        for s in sources {
            let kind = match s {
                Source::Microphone | Source::ScreenAudio => MediaKind::Audio,
                Source::Camera | Source::Screen => MediaKind::Video,
            };
            let sc = (simulcast && *s == Source::Camera).then(|| {
                let mut sc = Simulcast::new();
                for rid in ["q", "h", "f"] {
                    sc.add_send_layer(SimulcastLayer::new(rid));
                }
                sc
            });
            let mid = api.add_media(kind, Direction::SendOnly, Some(self.name.clone()), None, sc);
            added.push((mid, *s, simulcast && *s == Source::Camera));
        }
        if sources.is_empty() {
            // A subscriber that publishes nothing still needs a transport: a data channel
            // gives its offer one m-line.
            api.add_channel("castyard".into());
        }
        let (offer, pending) = api.apply().unwrap();
        self.pending = Some(pending);
        let sources: BTreeMap<String, Source> =
            added.iter().map(|(m, s, _)| (m.to_string(), *s)).collect();
        self.publish.extend(added);
        serde_json::json!({"type": "offer", "sdp": offer.to_sdp_string(), "sources": sources})
            .to_string()
    }

    fn on_message(&mut self, msg: &ServerMessage) -> Option<String> {
        match msg {
            ServerMessage::Answer { sdp, tracks } => {
                let answer = SdpAnswer::from_sdp_string(sdp).unwrap();
                let pending = self.pending.take().expect("an offer of ours is pending");
                self.rtc.sdp_api().accept_answer(pending, answer).unwrap();
                self.tracks = tracks.clone();
                None
            }
            ServerMessage::Offer { sdp, tracks } => {
                let offer = SdpOffer::from_sdp_string(sdp).unwrap();
                let answer = self.rtc.sdp_api().accept_offer(offer).unwrap();
                self.tracks = tracks.clone();
                Some(
                    serde_json::json!({"type": "answer", "sdp": answer.to_sdp_string()})
                        .to_string(),
                )
            }
            _ => None,
        }
    }

    fn on_event(&mut self, e: Event) {
        match e {
            Event::IceConnectionStateChange(IceConnectionState::Connected) => {}
            Event::Connected => self.connected = true,
            Event::MediaData(d) => {
                let entry = self.received.entry(d.mid).or_default();
                entry.0 += d.data.len() as u64;
                entry.1 += 1;
                entry.2.push(d.data[1]);
            }
            Event::KeyframeRequest(r) => self.keyframe_requests.push((r.mid, r.rid)),
            _ => {}
        }
    }

    /// Publishes a frame on every track every 20 ms: audio at `level`, VP8 with a keyframe
    /// every 10th frame. A simulcast frame goes out on each layer, its payload marked
    /// with the layer's initial.
    fn tick(&mut self, now: Instant) {
        if !self.connected || self.next_frame.is_some_and(|t| now < t) {
            return;
        }
        self.next_frame = Some(now + Duration::from_millis(20));
        self.frame += 1;
        let keyframe = self.frame % 10 == 1;
        for (mid, source, simulcast) in self.publish.clone() {
            let Some(writer) = self.rtc.writer(mid) else {
                continue;
            };
            let audio = matches!(source, Source::Microphone | Source::ScreenAudio);
            let codec = if audio { Codec::Opus } else { Codec::Vp8 };
            let Some(pt) = writer
                .payload_params()
                .find(|p| p.spec().codec == codec)
                .map(|p| p.pt())
            else {
                continue;
            };
            let clock = if audio {
                Frequency::FORTY_EIGHT_KHZ
            } else {
                Frequency::NINETY_KHZ
            };
            let time = MediaTime::from_millis(self.frame * 20).rebase(clock);
            if audio {
                let w = writer.audio_level(-(self.level as i8), self.level < 60);
                w.write(pt, now, time, vec![0xfc; 60]).unwrap();
            } else if simulcast {
                for rid in ["q", "h", "f"] {
                    let w = self.rtc.writer(mid).unwrap().rid(rid.into());
                    w.write(pt, now, time, vp8_frame(keyframe, rid.as_bytes()[0]))
                        .unwrap();
                }
            } else {
                writer
                    .write(pt, now, time, vp8_frame(keyframe, b'x'))
                    .unwrap();
            }
        }
    }

    /// Frames received on the mid carrying `participant`'s `source`.
    fn frames_from(&self, participant: &str, source: Source) -> u64 {
        self.tracks
            .iter()
            .filter(|t| t.participant == format!("id-{participant}") && t.source == source)
            .filter_map(|t| self.received.get(&Mid::from(t.mid.as_str())))
            .map(|r| r.1)
            .sum()
    }

    fn layers_from(&self, participant: &str) -> Vec<u8> {
        self.tracks
            .iter()
            .filter(|t| t.participant == format!("id-{participant}") && t.source == Source::Camera)
            .filter_map(|t| self.received.get(&Mid::from(t.mid.as_str())))
            .flat_map(|r| r.2.iter().skip(r.2.len().saturating_sub(5)).copied())
            .collect()
    }
}

/// A VP8 frame whose first byte says key or delta (bit 0 clear on keyframes) and whose second
/// byte marks where it came from.
fn vp8_frame(keyframe: bool, mark: u8) -> Vec<u8> {
    let mut f = vec![if keyframe { 0x10 } else { 0x11 }, mark];
    // Simulcast layers as a browser sends them, each three times the one below (and each
    // frame one RTP packet).
    let size = match mark {
        b'q' => 100,
        b'h' => 300,
        b'f' => 900,
        _ => 400,
    };
    f.resize(size, 0xaa);
    f
}

#[test]
fn media_flows_between_peers_and_renegotiation_adds_a_screen_share() {
    let mut w = World::pair(11);
    w.run(Duration::from_secs(3));
    for (me, them) in [("ann", "bob"), ("bob", "ann")] {
        let c = w.client(me);
        assert!(
            c.frames_from(them, Source::Microphone) > 20,
            "{me} hears {them}"
        );
        assert!(c.frames_from(them, Source::Camera) > 20, "{me} sees {them}");
    }
    // Stats reach /metrics and the host, and only the host.
    let metrics = w.room.metrics().encode();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
    };
    assert!(
        value(
            r#"castyard_sfu_received_bytes_total{broadcast="bc-1",participant="id-bob",kind="video"}"#
        ) > 10_000.0
    );
    assert!(
        value(
            r#"castyard_sfu_sent_bytes_total{broadcast="bc-1",participant="id-ann",kind="audio"}"#
        ) > 1_000.0
    );
    assert!(value(r#"castyard_sfu_forwarded_packets_total{broadcast="bc-1"}"#) > 100.0);
    assert!(value(r#"castyard_sfu_rtt_seconds{broadcast="bc-1",participant="id-bob"}"#) >= 0.0);
    let stats = |name: &str| {
        w.received(name, |m| match m {
            ServerMessage::Stats { participants } => Some(participants.clone()),
            _ => None,
        })
        .pop()
    };
    let host_view = stats("ann").expect("the host gets stats");
    assert!(
        host_view
            .iter()
            .any(|p| p.participant == "id-bob" && p.bitrate_in_bps > 50_000)
    );
    assert!(stats("bob").is_none(), "guests do not");
    // Bob shares his screen: a new offer from him, a new offer to Ann.
    let text = w.client("bob").offer(&[Source::Screen], false);
    let conn = w.client("bob").conn;
    w.room.message(conn, &text);
    w.run(Duration::from_secs(2));
    let ann = w.client("ann");
    assert!(
        ann.frames_from("bob", Source::Screen) > 10,
        "the screen share arrives"
    );
    assert!(
        ann.frames_from("bob", Source::Camera) > 40,
        "the camera goes on"
    );
    let bob_info = w
        .room
        .participants()
        .into_iter()
        .find(|p| p.name == "bob")
        .unwrap();
    assert_eq!(
        bob_info.publishing,
        vec![Source::Camera, Source::Microphone, Source::Screen]
    );
}

#[test]
fn a_vanished_peer_is_removed_and_its_tracks_stopped_for_the_others() {
    let mut w = World::pair(11);
    w.run(Duration::from_secs(1));
    assert_eq!(w.client("ann").tracks.len(), 2);
    w.cut.push("bob".into());
    w.run(Duration::from_secs(20));
    assert_eq!(w.room.participants().len(), 1, "bob is gone");
    let ann = w.client("ann");
    assert!(ann.messages.iter().any(
        |m| matches!(m, ServerMessage::ParticipantLeft { participant } if participant == "id-bob")
    ));
    // The SFU renegotiated Bob's tracks away; Ann answered and still works.
    assert!(ann.tracks.is_empty(), "{:?}", ann.tracks);
    assert!(!ann.closed);
    let metrics = w.room.metrics().encode();
    assert!(
        metrics.contains(r#"castyard_sfu_participants{broadcast="bc-1",role="guest"} 0"#),
        "{metrics}"
    );
}

#[test]
fn keyframe_requests_reach_only_the_publisher() {
    let mut w = World::new(11);
    w.join("ann", Role::Host, &[Source::Camera], false);
    w.join("bob", Role::Guest, &[Source::Camera], false);
    w.join("cat", Role::Guest, &[], false);
    w.run(Duration::from_secs(2));
    let before_ann = w.client("ann").keyframe_requests.len();
    let before_bob = w.client("bob").keyframe_requests.len();
    // Cat asks for a keyframe of Ann's camera.
    let cat = w.client("cat");
    let mid = cat
        .tracks
        .iter()
        .find(|t| t.participant == "id-ann")
        .map(|t| Mid::from(t.mid.as_str()))
        .unwrap();
    cat.rtc
        .writer(mid)
        .unwrap()
        .request_keyframe(None, KeyframeRequestKind::Pli)
        .unwrap();
    w.run(Duration::from_millis(500));
    assert!(
        w.client("ann").keyframe_requests.len() > before_ann,
        "Ann is asked"
    );
    assert_eq!(
        w.client("bob").keyframe_requests.len(),
        before_bob,
        "Bob is not"
    );
}

#[test]
fn a_small_tile_gets_the_small_simulcast_layer() {
    let mut w = World::new(11);
    w.join("ann", Role::Host, &[Source::Camera], true);
    w.join("bob", Role::Guest, &[], false);
    w.run(Duration::from_secs(2));
    let before = w.client("bob").layers_from("ann");
    assert_eq!(before.len(), 5, "bob receives ann");
    assert!(
        before.iter().all(|l| *l == before[0]) && before[0] != b'q',
        "one layer, chosen from the bandwidth estimate: {before:?}"
    );
    let bob = w.client("bob");
    let mid = bob.tracks[0].mid.clone();
    let conn = bob.conn;
    w.room.message(
        conn,
        &format!(r#"{{"type":"view","mid":"{mid}","width":320,"height":180}}"#),
    );
    w.run(Duration::from_secs(2));
    let bob = w.client("bob");
    let frames = bob.received.values().map(|r| r.1).sum::<u64>();
    assert!(frames > 50, "{frames} frames");
    assert_eq!(
        bob.layers_from("ann"),
        b"qqqqq",
        "switched to the quarter layer"
    );
}

#[test]
fn a_lossy_subscriber_steps_down_to_a_smaller_layer() {
    let mut w = World::new(11);
    w.join("ann", Role::Host, &[Source::Camera], true);
    w.join("bob", Role::Guest, &[], false);
    w.run(Duration::from_secs(3));
    let before = w.client("bob").layers_from("ann");
    assert_eq!(before, b"fffff", "nothing known: the full layer");
    // A quarter of what reaches Bob is lost (his NACKs say so; his receiver reports show
    // what retransmission could not repair), and his estimate falls below the full layer.
    w.lossy.push(("bob".into(), 4));
    w.run(Duration::from_secs(6));
    let after = w.client("bob").layers_from("ann");
    assert_eq!(after.len(), 5, "bob still receives ann");
    assert!(after.iter().all(|l| *l != b'f'), "{after:?}");
}

#[test]
fn the_loudest_voice_is_the_active_speaker() {
    let mut w = World::new(11);
    w.join("ann", Role::Host, &[Source::Microphone], false);
    w.join("bob", Role::Guest, &[Source::Microphone], false);
    w.run(Duration::from_secs(1));
    w.client("bob").level = 25;
    w.run(Duration::from_secs(2));
    assert_eq!(
        w.speaker_changes("ann").last(),
        Some(&Some("id-bob".into()))
    );
    assert_eq!(w.room.stage().len(), 0);
    // Muted participants never speak, whatever their levels say.
    let conn = w.client("bob").conn;
    w.room.message(
        conn,
        r#"{"type":"mute","source":"microphone","muted":true}"#,
    );
    w.run(Duration::from_secs(2));
    assert_eq!(w.speaker_changes("ann").last(), Some(&None));
}

#[test]
fn the_host_moves_guests_on_and_off_stage_and_guests_cannot() {
    let mut w = World::new(11);
    w.join("ann", Role::Host, &[Source::Camera], false);
    w.join("bob", Role::Guest, &[Source::Camera], false);
    let (ann, bob) = (w.client("ann").conn, w.client("bob").conn);
    w.room.message(
        bob,
        r#"{"type":"stage","participant":"id-bob","onStage":true}"#,
    );
    w.run(Duration::from_millis(20));
    assert!(matches!(
        w.client("bob").messages.last(),
        Some(ServerMessage::Error { code, .. }) if code == "forbidden"
    ));
    assert!(w.room.stage().is_empty());
    w.room.message(
        ann,
        r#"{"type":"stage","participant":"id-bob","onStage":true}"#,
    );
    w.room.message(
        ann,
        r#"{"type":"stage","participant":"id-ann","onStage":true}"#,
    );
    w.room.message(
        ann,
        r#"{"type":"stage","participant":"id-zed","onStage":true}"#,
    );
    w.run(Duration::from_millis(20));
    let stage: Vec<String> = w.room.stage().into_iter().map(|s| s.name).collect();
    assert_eq!(stage, ["bob", "ann"]);
    assert!(
        w.client("bob")
            .messages
            .iter()
            .any(|m| matches!(m, ServerMessage::Participant(p) if p.id == "id-bob" && p.on_stage))
    );
    assert!(matches!(
        w.client("ann").messages.last(),
        Some(ServerMessage::Error { code, .. }) if code == "not_found"
    ));
    w.room.message(
        ann,
        r#"{"type":"stage","participant":"id-bob","onStage":false}"#,
    );
    let stage: Vec<String> = w.room.stage().into_iter().map(|s| s.name).collect();
    assert_eq!(stage, ["ann"]);
}

#[test]
fn bad_input_is_refused_and_nobody_else_notices() {
    let mut w = World::pair(3);
    w.run(Duration::from_secs(1));
    let bob = w.client("bob").conn;
    let big = format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(70_000));
    for (text, code) in [
        (
            r#"{"type":"offer","sdp":"v=0\r\nthis is not sdp"}"#,
            "bad_sdp",
        ),
        (r#"{"type":"selfDestruct"}"#, "bad_message"),
        ("{", "bad_message"),
        (big.as_str(), "too_large"),
        (r#"{"type":"answer","sdp":"v=0"}"#, "bad_sdp"),
    ] {
        w.room.message(bob, text);
        w.run(Duration::from_millis(10));
        match w.client("bob").messages.last() {
            Some(ServerMessage::Error { code: c, .. }) => assert_eq!(c, code, "{text:.40}"),
            other => panic!("{text:.40}: {other:?}"),
        }
    }
    // Guests beyond the limit (3 participants: the host and 2 guests) are refused.
    w.join("cat", Role::Guest, &[], false);
    assert_eq!(
        w.room.join(w.now, identity("dan", Role::Guest)),
        Err(JoinError::Full(2))
    );
    // The host raises the limit while live: the next guest gets in.
    w.room.set_max_participants(4);
    w.join("dan", Role::Guest, &[], false);
    assert_eq!(w.room.participants().len(), 4);
    // A flood of joins is cut off without creating peers.
    let refused = (0..100)
        .filter(|i| {
            w.room
                .join(w.now, identity(&format!("x{i}"), Role::Guest))
                .is_err()
        })
        .count();
    assert_eq!(refused, 100);
    let mut flood = World::new(200);
    let accepted = (0..100)
        .filter(|i| {
            flood
                .room
                .join(flood.now, identity(&format!("x{i}"), Role::Guest))
                .is_ok()
        })
        .count();
    assert_eq!(accepted, 20, "a burst of 20, then refusals");
    assert_eq!(
        flood.room.join(flood.now, identity("late", Role::Guest)),
        Err(JoinError::Flood)
    );
    // Media between Ann and Bob never stopped.
    let before = w.client("ann").frames_from("bob", Source::Camera);
    w.run(Duration::from_secs(1));
    assert!(w.client("ann").frames_from("bob", Source::Camera) > before + 20);
    assert!(!w.client("bob").closed);
}

#[test]
fn a_second_connection_of_the_same_participant_replaces_the_first() {
    let mut w = World::new(11);
    w.join("ann", Role::Host, &[Source::Camera], false);
    let first = w.client("ann").conn;
    let second = w.room.join(w.now, identity("ann", Role::Host)).unwrap();
    w.run(Duration::from_millis(20));
    assert_ne!(first, second);
    assert!(w.client("ann").closed);
    assert!(matches!(
        w.client("ann").messages.last(),
        Some(ServerMessage::Bye { reason }) if reason.contains("replaced")
    ));
    assert_eq!(w.room.participants().len(), 1);
}

/// The RTP packets sent to `addr`: (marker, payload type, sequence number, timestamp, SSRC,
/// payload).
fn rtp_to(w: &World, addr: &str) -> Vec<(bool, u8, u16, u32, u32, Vec<u8>)> {
    let addr: SocketAddr = addr.parse().unwrap();
    w.elsewhere
        .iter()
        .filter(|(d, _)| *d == addr)
        .map(|(_, b)| {
            assert_eq!(b[0], 0x80, "RTP version 2, no padding, extension or CSRCs");
            (
                b[1] & 0x80 != 0,
                b[1] & 0x7f,
                u16::from_be_bytes([b[2], b[3]]),
                u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
                u32::from_be_bytes([b[8], b[9], b[10], b[11]]),
                b[12..].to_vec(),
            )
        })
        .collect()
}

fn forward(participant: &str, source: Source, addr: &str, payload_type: u8) -> ForwardRequest {
    ForwardRequest {
        participant: format!("id-{participant}"),
        source,
        addr: addr.parse().unwrap(),
        payload_type,
        keyframe: false,
    }
}

#[test]
fn on_stage_tracks_are_copied_to_the_compositor_as_plain_rtp() {
    let mut w = World::new(11);
    w.join("ann", Role::Host, &[Source::Camera], true);
    w.join(
        "bob",
        Role::Guest,
        &[Source::Microphone, Source::Camera],
        false,
    );
    w.run(Duration::from_secs(1));
    let host = w.client("ann").conn;
    w.room.message(
        host,
        r#"{"type":"stage","participant":"id-bob","onStage":true}"#,
    );
    w.run(Duration::from_millis(20));
    let stage = w.room.stage();
    assert_eq!(stage.len(), 1);
    let mut tracks = stage[0].tracks.clone();
    tracks.sort_by_key(|t| t.source);
    assert_eq!(
        tracks,
        [
            StageTrack {
                source: Source::Camera,
                codec: TrackCodec::Vp8
            },
            StageTrack {
                source: Source::Microphone,
                codec: TrackCodec::Opus
            }
        ],
        "the stage says what to decode"
    );

    let wanted = vec![
        forward("bob", Source::Camera, "10.0.9.1:5000", 96),
        forward("bob", Source::Microphone, "10.0.9.1:5002", 111),
        forward("ann", Source::Camera, "10.0.9.1:5010", 100),
    ];
    let states = w.room.set_forwards(w.now, wanted.clone()).unwrap();
    let active: Vec<bool> = states.iter().map(|s| s.active).collect();
    assert_eq!(active, [true, true, false], "Ann is not on stage");
    w.run(Duration::from_secs(1));

    let video = rtp_to(&w, "10.0.9.1:5000");
    assert!(video.len() > 30, "{} video packets", video.len());
    let (_, pt, _, _, ssrc, first) = &video[0];
    assert_eq!(*pt, 96);
    // RFC 7741: a one-byte descriptor with S set, then a VP8 keyframe (bit 0 clear): the
    // decoder starts on a picture it can decode.
    assert_eq!(first[0] & 0x10, 0x10);
    assert_eq!(first[1] & 1, 0, "the copy starts at a keyframe");
    for pair in video.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        assert_eq!(b.2, a.2.wrapping_add(1), "sequence numbers without gaps");
        assert_eq!(b.4, *ssrc, "one SSRC");
        assert_eq!(b.3.wrapping_sub(a.3), 1800, "20 ms apart at 90 kHz");
    }
    assert!(video.iter().all(|p| p.0), "each one-packet frame is marked");
    let audio = rtp_to(&w, "10.0.9.1:5002");
    assert!(audio.len() > 30, "{} audio packets", audio.len());
    assert!(audio.iter().all(|p| p.1 == 111 && p.5 == [0xfc; 60]));
    assert!(
        rtp_to(&w, "10.0.9.1:5010").is_empty(),
        "off stage, not sent"
    );
    assert!(
        w.elsewhere
            .iter()
            .any(|(d, b)| d.port() == 5001 && b[1] == 200),
        "sender reports tell the decoder where to send its RTCP"
    );

    // The decoder asks for a keyframe (RTCP PLI from its RTCP port): Bob is asked.
    let before = w.client("bob").keyframe_requests.len();
    let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
    assert!(
        w.room
            .receive(w.now, "10.0.9.1:5001".parse().unwrap(), &pli)
    );
    w.run(Duration::from_millis(100));
    assert!(w.client("bob").keyframe_requests.len() > before);
    // So does a renewal that says the decoder needs one (FFmpeg sends no RTCP feedback).
    w.run(Duration::from_secs(1));
    let before = w.client("bob").keyframe_requests.len();
    let mut renewal = wanted.clone();
    renewal[0].keyframe = true;
    w.room.set_forwards(w.now, renewal).unwrap();
    w.run(Duration::from_millis(100));
    assert!(w.client("bob").keyframe_requests.len() > before);

    // Ann on stage: one simulcast layer reaches the compositor, the one a 720p canvas needs.
    w.room.message(
        host,
        r#"{"type":"stage","participant":"id-ann","onStage":true}"#,
    );
    w.run(Duration::from_secs(1));
    let ann = rtp_to(&w, "10.0.9.1:5010");
    assert!(ann.len() > 20, "{} packets of Ann", ann.len());
    assert!(ann.iter().all(|p| p.1 == 100));
    // The first layer heard starts the copy; within one re-choice it is the full layer, and
    // only one layer is ever sent at a time.
    let mut layers: Vec<u8> = ann.iter().map(|p| p.5[2]).collect();
    assert!(
        layers[ann.len() - 10..].iter().all(|l| *l == b'f'),
        "{layers:?}"
    );
    layers.dedup();
    assert!(layers.len() <= 2, "one switch at most: {layers:?}");

    // Bob leaves the stage: his copies stop.
    w.room.message(
        host,
        r#"{"type":"stage","participant":"id-bob","onStage":false}"#,
    );
    w.run(Duration::from_millis(300));
    let sent = rtp_to(&w, "10.0.9.1:5000").len();
    w.run(Duration::from_secs(1));
    assert_eq!(rtp_to(&w, "10.0.9.1:5000").len(), sent);

    // Nobody renews the forwards (the compositor is gone): after the lease, nothing is sent.
    w.run(Duration::from_secs(11));
    let sent = rtp_to(&w, "10.0.9.1:5010").len();
    w.run(Duration::from_secs(1));
    assert_eq!(rtp_to(&w, "10.0.9.1:5010").len(), sent);

    // Bad requests change nothing.
    w.room.set_forwards(w.now, wanted.clone()).unwrap();
    let bad_pt = vec![forward("bob", Source::Camera, "10.0.9.1:5000", 8)];
    assert!(w.room.set_forwards(w.now, bad_pt).is_err());
    let too_many = vec![wanted[0].clone(); 100];
    assert!(w.room.set_forwards(w.now, too_many).is_err());
    let before = rtp_to(&w, "10.0.9.1:5010").len();
    w.run(Duration::from_millis(500));
    assert!(
        rtp_to(&w, "10.0.9.1:5010").len() > before,
        "the good set still holds"
    );
}
