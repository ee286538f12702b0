//! The compositor's side of the SFU: it reads who is on stage, runs a decoder per on-stage
//! source, asks the SFU for plain RTP copies of those tracks, and turns stage changes (joins,
//! leaves, mutes, cameras, screen shares, the active speaker) into scene commands.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::Duration;

use castyard_proto::WorkerClient;

use super::input::{InputPorts, InputRequest, VideoCodec};
use super::scene::{Command, MAX_NAME_CHARS, Scene};
use super::server::Compositor;
use castyard_proto::signal::Source;
use castyard_proto::stage::{ForwardRequest, StageEntry, TrackCodec};

/// How often the stage is read and the copies renewed: a guest put on stage appears within it.
const EVERY: Duration = Duration::from_millis(500);

/// The decoders one input key needs, from what its participant publishes.
fn wanted_inputs(stage: &[StageEntry]) -> BTreeMap<String, InputRequest> {
    let codec = |e: &StageEntry, source: Source| {
        e.tracks
            .iter()
            .find(|t| t.source == source)
            .map(|t| t.codec)
    };
    let video = |c: Option<TrackCodec>| match c {
        Some(TrackCodec::Vp8) => Some(VideoCodec::Vp8),
        Some(TrackCodec::H264) => Some(VideoCodec::H264),
        _ => None,
    };
    let mut out = BTreeMap::new();
    for e in stage {
        let camera = video(codec(e, Source::Camera));
        let mic = codec(e, Source::Microphone) == Some(TrackCodec::Opus);
        if camera.is_some() || mic {
            out.insert(e.participant.clone(), request(camera, mic));
        }
        if let Some(screen) = video(codec(e, Source::Screen)) {
            let audio = codec(e, Source::ScreenAudio) == Some(TrackCodec::Opus);
            out.insert(
                format!("{}/screen", e.participant),
                request(Some(screen), audio),
            );
        }
    }
    out
}

fn request(video: Option<VideoCodec>, audio: bool) -> InputRequest {
    InputRequest {
        video,
        video_payload_type: 96,
        audio,
        audio_payload_type: 111,
    }
}

/// What to ask the SFU for, given the decoders running and where they listen; `keyframe`
/// says which inputs' video decoders need a keyframe now.
fn forwards(
    host: IpAddr,
    inputs: &BTreeMap<String, (InputRequest, InputPorts)>,
    keyframe: &dyn Fn(&str) -> bool,
) -> Vec<ForwardRequest> {
    let mut out = Vec::new();
    for (key, (req, ports)) in inputs {
        let (participant, video, audio) = match key.strip_suffix("/screen") {
            Some(p) => (p, Source::Screen, Source::ScreenAudio),
            None => (key.as_str(), Source::Camera, Source::Microphone),
        };
        if let Some(port) = ports.video_port {
            out.push(ForwardRequest {
                participant: participant.to_owned(),
                source: video,
                addr: SocketAddr::new(host, port),
                payload_type: req.video_payload_type,
                keyframe: keyframe(key),
            });
        }
        if let Some(port) = ports.audio_port {
            out.push(ForwardRequest {
                participant: participant.to_owned(),
                source: audio,
                addr: SocketAddr::new(host, port),
                payload_type: req.audio_payload_type,
                keyframe: false,
            });
        }
    }
    out
}

/// A scene's name tag: what the scene accepts of a display name the SFU took.
fn tag(name: &str) -> String {
    let clean: String = name
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    if clean.trim().is_empty() {
        "Guest".into()
    } else {
        clean
    }
}

/// The commands that make the scene's people match the SFU's stage; nothing when they do.
/// Scene-only state (layout, banners, gains, pins) is the host's and is left alone.
pub fn scene_commands(scene: &Scene, stage: &[StageEntry]) -> Vec<Command> {
    let mut out = Vec::new();
    for e in stage {
        let id = &e.participant;
        let p = scene.participants.get(id);
        if p.is_none() {
            out.push(Command::Join {
                id: id.clone(),
                name: tag(&e.name),
            });
        }
        if !p.is_some_and(|p| p.on_stage) {
            out.push(Command::AddToStage { id: id.clone() });
        }
        let camera = e.publishing.contains(&Source::Camera) && !e.muted.contains(&Source::Camera);
        if p.is_none_or(|p| p.video != camera) {
            out.push(Command::Camera {
                id: id.clone(),
                on: camera,
                aspect: None,
            });
        }
        let muted =
            !e.publishing.contains(&Source::Microphone) || e.muted.contains(&Source::Microphone);
        if p.is_none_or(|p| p.muted != muted) {
            out.push(Command::Mute {
                id: id.clone(),
                muted,
            });
        }
        let sharing = e.publishing.contains(&Source::Screen);
        if p.is_none_or(|p| p.screen.is_some() != sharing) {
            out.push(Command::ScreenShare {
                id: id.clone(),
                aspect: sharing.then_some(16.0 / 9.0),
            });
        }
    }
    for id in &scene.stage {
        if !stage.iter().any(|e| &e.participant == id) {
            out.push(Command::RemoveFromStage { id: id.clone() });
        }
    }
    let speaker = stage
        .iter()
        .find(|e| e.speaking)
        .map(|e| e.participant.clone());
    if scene.active_speaker != speaker {
        out.push(Command::ActiveSpeaker { id: speaker });
    }
    out
}

/// The address the SFU can reach us at: the pod's IP in a cluster, else the source address
/// the kernel would use towards the SFU (no packet is sent to find it).
fn own_address(sfu: &str) -> Option<IpAddr> {
    if let Some(ip) = std::env::var("CASTYARD_POD_IP")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Some(ip);
    }
    let target = sfu.to_socket_addrs().ok()?.next()?;
    let probe = UdpSocket::bind((
        if target.is_ipv4() {
            IpAddr::from([0, 0, 0, 0])
        } else {
            IpAddr::from([0u16; 8])
        },
        0,
    ))
    .ok()?;
    probe.connect(target).ok()?;
    Some(probe.local_addr().ok()?.ip())
}

/// Follows the SFU at `sfu` (host:port of its control port) until the task is aborted; `client`
/// holds the broadcast's control token.
pub async fn follow(compositor: Compositor, sfu: String, client: WorkerClient) {
    let mut inputs: BTreeMap<String, (InputRequest, InputPorts)> = BTreeMap::new();
    let mut failing = false;
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let stage: Vec<StageEntry> = match client.stage(&sfu).await {
            Ok(s) => s,
            Err(e) => {
                // The SFU may start after us or restart: the last pictures turn into
                // placeholders on their own, and everything is picked up again when it answers.
                if !failing {
                    tracing::warn!(%sfu, error = %e, "cannot read the SFU's stage");
                }
                failing = true;
                continue;
            }
        };
        if failing {
            tracing::info!(%sfu, "following the SFU's stage");
            failing = false;
        }
        let wanted = wanted_inputs(&stage);
        inputs.retain(|key, (req, _)| {
            let keep = wanted.get(key) == Some(req);
            if !keep {
                compositor.remove_input(key);
            }
            keep
        });
        for (key, req) in wanted {
            if inputs.contains_key(&key) {
                continue;
            }
            let c = compositor.clone();
            let (k, r) = (key.clone(), req.clone());
            match tokio::task::spawn_blocking(move || c.add_input(&k, r)).await {
                Ok(Ok(ports)) => {
                    tracing::info!(input = %key, "decoding an on-stage source");
                    inputs.insert(key, (req, ports));
                }
                Ok(Err(e)) => {
                    tracing::error!(input = %key, error = %format!("{e:#}"), "cannot start a decoder")
                }
                Err(e) => tracing::error!(input = %key, error = %e, "cannot start a decoder"),
            }
        }
        if let Some(host) = own_address(&sfu) {
            let wants = |key: &str| compositor.take_keyframe_wanted(key);
            let wanted = forwards(host, &inputs, &wants);
            if let Err(e) = client.put_forwards(&sfu, &wanted).await {
                tracing::warn!(%sfu, error = %e, "the SFU refused our forwards");
            }
        }
        for cmd in scene_commands(&compositor.scene(), &stage) {
            if let Err(e) = compositor.apply(cmd.clone()) {
                tracing::warn!(?cmd, error = %e, "cannot follow the stage");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use castyard_proto::stage::StageTrack;

    fn entry(id: &str, publishing: &[Source], tracks: &[(Source, TrackCodec)]) -> StageEntry {
        StageEntry {
            participant: id.into(),
            name: format!("Name {id}"),
            publishing: publishing.to_vec(),
            muted: Vec::new(),
            speaking: false,
            tracks: tracks
                .iter()
                .map(|&(source, codec)| StageTrack { source, codec })
                .collect(),
        }
    }

    fn apply_all(scene: &mut Scene, stage: &[StageEntry]) {
        for c in scene_commands(scene, stage) {
            scene.apply(c).expect("every generated command applies");
        }
        assert!(
            scene_commands(scene, stage).is_empty(),
            "a second pass finds nothing to do"
        );
    }

    #[test]
    fn inputs_follow_what_is_published_and_decodable() {
        let stage = vec![
            entry(
                "a",
                &[Source::Camera, Source::Microphone, Source::Screen],
                &[
                    (Source::Camera, TrackCodec::Vp8),
                    (Source::Microphone, TrackCodec::Opus),
                    (Source::Screen, TrackCodec::H264),
                ],
            ),
            // Published, but no frame yet: nothing to decode.
            entry("b", &[Source::Camera], &[]),
            entry(
                "c",
                &[Source::Microphone],
                &[(Source::Microphone, TrackCodec::Opus)],
            ),
        ];
        let w = wanted_inputs(&stage);
        assert_eq!(w.keys().collect::<Vec<_>>(), ["a", "a/screen", "c"]);
        assert_eq!(w["a"], request(Some(VideoCodec::Vp8), true));
        assert_eq!(w["a/screen"], request(Some(VideoCodec::H264), false));
        assert_eq!(w["c"], request(None, true));

        let ports = |v: Option<u16>, a: Option<u16>| InputPorts {
            video_port: v,
            audio_port: a,
        };
        let running = BTreeMap::from([
            (
                "a".to_string(),
                (w["a"].clone(), ports(Some(5000), Some(5002))),
            ),
            (
                "a/screen".to_string(),
                (w["a/screen"].clone(), ports(Some(5004), None)),
            ),
        ]);
        let host = IpAddr::from([10, 0, 0, 7]);
        let f = forwards(host, &running, &|key| key == "a/screen");
        let got: Vec<(&str, Source, u16, u8)> = f
            .iter()
            .map(|f| {
                (
                    f.participant.as_str(),
                    f.source,
                    f.addr.port(),
                    f.payload_type,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", Source::Camera, 5000, 96),
                ("a", Source::Microphone, 5002, 111),
                ("a", Source::Screen, 5004, 96),
            ]
        );
        assert!(f.iter().all(|f| f.addr.ip() == host));
        let keyframes: Vec<bool> = f.iter().map(|f| f.keyframe).collect();
        assert_eq!(
            keyframes,
            [false, false, true],
            "only the screen's video asks"
        );
    }

    #[test]
    fn the_scene_follows_joins_mutes_shares_speakers_and_leaves() {
        let mut scene = Scene::default();
        let mut a = entry("a", &[Source::Camera, Source::Microphone], &[]);
        let b = entry("b", &[Source::Microphone], &[]);
        apply_all(&mut scene, &[a.clone(), b.clone()]);
        assert_eq!(scene.stage, ["a", "b"]);
        assert!(scene.participants["a"].video && !scene.participants["a"].muted);
        // No camera: an avatar tile with the name.
        assert!(!scene.participants["b"].video);
        assert_eq!(scene.participants["b"].name, "Name b");

        a.muted = vec![Source::Microphone, Source::Camera];
        a.publishing.push(Source::Screen);
        a.speaking = true;
        apply_all(&mut scene, &[a.clone(), b.clone()]);
        let pa = &scene.participants["a"];
        assert!(pa.muted && !pa.video && pa.screen.is_some());
        assert_eq!(scene.active_speaker.as_deref(), Some("a"));

        // a leaves the stage: off stage, still known (a guest coming back keeps their gain).
        apply_all(&mut scene, std::slice::from_ref(&b));
        assert_eq!(scene.stage, ["b"]);
        assert!(!scene.participants["a"].on_stage);
        assert_eq!(scene.active_speaker, None);
    }

    #[test]
    fn names_the_scene_would_refuse_are_made_acceptable() {
        let mut scene = Scene::default();
        let mut e = entry("x", &[], &[]);
        e.name = format!("{}\u{7}", "n".repeat(100));
        apply_all(&mut scene, std::slice::from_ref(&e));
        assert_eq!(scene.participants["x"].name.chars().count(), MAX_NAME_CHARS);
        e.participant = "y".into();
        e.name = "\u{1}\u{2}".into();
        apply_all(&mut scene, &[e]);
        assert_eq!(scene.participants["y"].name, "Guest");
    }
}
