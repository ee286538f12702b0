//! The SFU over real sockets: its control port, real UDP, and bots publishing FFmpeg-encoded
//! VP8 and Opus to each other.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use castyard_media_worker::bot::{self, BotConfig, BotReport, Synthetic};
use castyard_media_worker::control_auth::{Access, protect};
use castyard_media_worker::sfu::server::{Sfu, SfuOptions};
use castyard_media_worker::sfu::signal::Source;
use castyard_proto::ControlToken;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

/// This process's SFUs' control token (each test's SFU is its own broadcast; one token will do).
fn token() -> &'static ControlToken {
    static TOKEN: std::sync::OnceLock<ControlToken> = std::sync::OnceLock::new();
    TOKEN.get_or_init(ControlToken::generate)
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The signalling socket as the API opens it: with the control token.
async fn connect(
    url: &str,
    auth: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request()?;
    if let Some(a) = auth {
        req.headers_mut()
            .insert("authorization", a.parse().unwrap());
    }
    Ok(tokio_tungstenite::connect_async(req).await?.0)
}

async fn join(url: &str) -> Ws {
    connect(url, Some(&token().bearer())).await.unwrap()
}

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
    let app = protect(
        sfu.router(),
        Access {
            control: token().clone(),
            metrics: None,
        },
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (sfu, control)
}

async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    request(addr, "GET", path, Some(&token().bearer()), "").await
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: sfu\r\n{auth}Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
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
    // The bots' seconds count once all are connected: a slow join is not a missing track.
    let together = bot::Together::new(names.len(), Duration::from_secs(30));
    let runs = names.iter().enumerate().map(|(i, who)| {
        let cfg = BotConfig {
            url: url(control, who, if i == 0 { "host" } else { "guest" }),
            duration: Duration::from_secs(secs),
            bind_ip: "127.0.0.1".parse().unwrap(),
            control_token: Some(token().clone()),
            together: Some(together.clone()),
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
    // What the source made meanwhile: on two busy cores it makes fewer than 30 frames a
    // second, and a bot can only receive what was made.
    let made = Arc::new(AtomicU64::new(0));
    let counter = {
        let (made, mut frames) = (made.clone(), media.subscribe());
        tokio::spawn(async move {
            loop {
                match frames.recv().await {
                    Ok(f) if !f.audio => _ = made.fetch_add(1, Ordering::Relaxed),
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                    _ => {}
                }
            }
        })
    };
    let reports = bots(control, &names, 6, &media).await;
    counter.abort();
    let made = made.load(Ordering::Relaxed);
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
        // From each of two others, a quarter of the frames made while the bots ran (six
        // seconds once all had connected); half a second of video at least, however slowly a
        // loaded machine made it.
        let video: u64 = r
            .received
            .iter()
            .filter(|((_, s), _)| *s == Source::Camera)
            .map(|(_, v)| v.frames)
            .sum();
        assert!(
            made >= 15 && video > made / 2,
            "{video} video frames received of {made} made"
        );
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
    let mut host = join(&url(control, "h", "host")).await;
    let mut g1 = join(&url(control, "g1", "guest")).await;
    let mut g2 = join(&url(control, "g2", "guest")).await;
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
    let (token, token_file) = castyard_media_worker::testkit::control_token(dir.path());
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_castyard-media-worker"))
        .args(["sfu", "--config"])
        .arg(&config)
        .arg("--control-token-file")
        .arg(&token_file)
        .env("CASTYARD_ADVERTISE_IP", "127.0.0.1")
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{control}").parse().unwrap();
    let bearer = token.bearer();
    let first_message = |who: &'static str| {
        let bearer = bearer.clone();
        async move {
            loop {
                if let Ok(mut ws) = connect(&url(addr, who, "guest"), Some(&bearer)).await {
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

/// Only the API (holding the token) may tell the SFU who a participant is, read its stage or
/// ask for copies of anyone's media.
#[tokio::test]
async fn every_control_endpoint_refuses_a_missing_or_wrong_token_and_changes_nothing() {
    let (_sfu, control) = start(4).await;
    let mut host = join(&url(control, "h", "host")).await;
    assert!(
        host.next()
            .await
            .unwrap()
            .unwrap()
            .into_text()
            .unwrap()
            .contains("joined")
    );
    let before = (
        get(control, "/participants").await,
        get(control, "/stage").await,
    );
    let another_broadcast = ControlToken::generate();
    let refused = [
        None,
        Some(another_broadcast.bearer()),
        Some(format!("Basic {}", token().expose())),
        Some("Bearer ".to_owned()),
    ];
    let forwards =
        r#"[{"participant":"h","source":"camera","addr":"127.0.0.1:9","payloadType":96}]"#;
    for auth in &refused {
        for (method, path, body) in [
            ("GET", "/stage", ""),
            ("GET", "/participants", ""),
            ("PUT", "/forwards", forwards),
            ("GET", "/signal?participant=eve&name=Eve&role=host", ""),
            ("GET", "/nowhere", ""),
        ] {
            let (status, reply) = request(control, method, path, auth.as_deref(), body).await;
            assert_eq!(status, 401, "{method} {path} with {auth:?}: {reply}");
            assert!(reply.contains(r#""code":"unauthorized""#), "{reply}");
        }
        let err = connect(&url(control, "eve", "host"), auth.as_deref())
            .await
            .expect_err("no session without the token");
        assert!(err.to_string().contains("401"), "{err}");
    }
    let after = (
        get(control, "/participants").await,
        get(control, "/stage").await,
    );
    assert_eq!(before, after, "nobody joined, nothing changed");
    assert!(!after.0.1.contains("eve"));
    // The kubelet's probes carry no token.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            request(control, "GET", path, None, "").await.0,
            200,
            "{path}"
        );
    }
    // With the token, a forward is accepted (the happy path the compositor takes).
    let (status, reply) = request(
        control,
        "PUT",
        "/forwards",
        Some(&token().bearer()),
        forwards,
    )
    .await;
    assert_eq!(status, 200, "{reply}");
}
