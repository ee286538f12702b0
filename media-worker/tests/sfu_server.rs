//! The SFU over real sockets: its control port, real UDP, and bots publishing FFmpeg-encoded
//! VP8 and Opus to each other.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use castyard_media_worker::bot::{self, BotConfig, BotReport, Synthetic};
use castyard_media_worker::sfu::server::{Sfu, SfuOptions};
use castyard_media_worker::sfu::signal::Source;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(max_participants: u32) -> (Sfu, SocketAddr) {
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    // Bound to every interface, as in a pod, while browsers are told one address.
    let sfu = Sfu::start(SfuOptions {
        broadcast: "bc-test".into(),
        max_participants,
        media: "0.0.0.0:0".parse().unwrap(),
        advertised: any,
    })
    .unwrap();
    let listener = tokio::net::TcpListener::bind(any).await.unwrap();
    let control = listener.local_addr().unwrap();
    let app = sfu.router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (sfu, control)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: sfu\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    (status, body.unwrap_or_default())
}

fn url(control: SocketAddr, who: &str, role: &str) -> String {
    format!("ws://{control}/signal?participant={who}&name=Bot%20{who}&role={role}")
}

async fn bots(control: SocketAddr, names: &[&str], secs: u64, media: &Synthetic) -> Vec<BotReport> {
    let runs = names.iter().enumerate().map(|(i, who)| {
        let cfg = BotConfig {
            url: url(control, who, if i == 0 { "host" } else { "guest" }),
            duration: Duration::from_secs(secs),
            bind_ip: "127.0.0.1".parse().unwrap(),
        };
        bot::run(cfg, Some(media.subscribe()))
    });
    futures::future::join_all(runs).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_bots_receive_each_others_audio_and_video_over_udp() {
    let (_sfu, control) = start(11).await;
    let media = Synthetic::start(Path::new("ffmpeg"), "castyard bot").unwrap();
    let names = ["b0", "b1", "b2"];
    let reports = bots(control, &names, 6, &media).await;
    for r in &reports {
        assert_eq!(r.error, None, "{}", r.participant);
        for other in names.iter().filter(|n| **n != r.participant) {
            for source in [Source::Microphone, Source::Camera] {
                assert!(
                    r.has(other, source),
                    "{} got nothing of {other}'s {source:?}: {:?}",
                    r.participant,
                    r.received
                );
            }
        }
        assert_eq!(r.tracks(), 4);
        // Five seconds of 30 fps video and 50 fps audio from each of two others, with room
        // for ICE and DTLS at the start.
        let video: u64 = r
            .received
            .iter()
            .filter(|((_, s), _)| *s == Source::Camera)
            .map(|(_, v)| v.frames)
            .sum();
        assert!(video > 2 * 60, "{} video frames", video);
        assert!(r.bytes() > 50_000, "{} bytes", r.bytes());
    }
    let (status, metrics) = get(control, "/metrics").await;
    assert_eq!(status, 200);
    let forwarded: f64 = metrics
        .lines()
        .find(|l| l.starts_with("castyard_sfu_forwarded_packets_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(forwarded > 500.0, "{forwarded}");
    // Everyone left: nobody is counted any more.
    let (_, participants) = get(control, "/participants").await;
    assert_eq!(participants, "[]");
    assert_eq!(get(control, "/healthz").await.0, 200);
}

#[tokio::test]
async fn the_control_port_refuses_bad_joins_cleanly() {
    let (_sfu, control) = start(2).await;
    // Without an identity there is no session.
    let (status, body) = get(control, "/signal").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("participant"), "{body}");
    // One host and one guest fit; the second guest is told why it cannot join.
    let (mut host, _) = tokio_tungstenite::connect_async(url(control, "h", "host"))
        .await
        .unwrap();
    let (mut g1, _) = tokio_tungstenite::connect_async(url(control, "g1", "guest"))
        .await
        .unwrap();
    let (mut g2, _) = tokio_tungstenite::connect_async(url(control, "g2", "guest"))
        .await
        .unwrap();
    let first = |m: Option<Result<tokio_tungstenite::tungstenite::Message, _>>| {
        m.unwrap().unwrap().into_text().unwrap().to_string()
    };
    assert!(first(host.next().await).contains(r#""type":"joined""#));
    assert!(first(g1.next().await).contains(r#""type":"joined""#));
    let refusal = first(g2.next().await);
    assert!(refusal.contains(r#""code":"full""#), "{refusal}");
    // The refused guest is hung up on; the others stay.
    let end = g2.next().await;
    assert!(
        matches!(
            end,
            None | Some(Ok(tokio_tungstenite::tungstenite::Message::Close(_)))
        ),
        "{end:?}"
    );
    let (_, participants) = get(control, "/participants").await;
    assert!(participants.contains(r#""id":"h""#) && participants.contains(r#""id":"g1""#));
    assert!(!participants.contains("g2"));
}

/// The worker binary follows its config file: a raised guest limit admits the next guest
/// without a restart.
#[tokio::test]
async fn the_worker_follows_a_raised_guest_limit_in_its_config() {
    let dir = tempfile::tempdir().unwrap();
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (control, media) = (free(), free());
    let config = dir.path().join("sfu.json");
    let write = |max: u32| {
        let c = serde_json::json!({"broadcast": "bc-cfg", "maxParticipants": max,
            "signallingPort": control, "mediaPort": media});
        std::fs::write(&config, c.to_string()).unwrap();
    };
    write(1);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_castyard-media-worker"))
        .args(["sfu", "--config"])
        .arg(&config)
        .env("CASTYARD_ADVERTISE_IP", "127.0.0.1")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{control}").parse().unwrap();
    let first_message = |who: &'static str| async move {
        loop {
            if let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url(addr, who, "guest")).await
            {
                return ws
                    .next()
                    .await
                    .unwrap()
                    .unwrap()
                    .into_text()
                    .unwrap()
                    .to_string();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    assert!(first_message("g1").await.contains(r#""code":"full""#));
    write(2);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let m = first_message("g2").await;
        if m.contains(r#""type":"joined""#) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{m}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    child.kill().await.unwrap();
}
