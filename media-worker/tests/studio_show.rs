//! The studio reaching the show: an SFU and a compositor as their own processes, as the
//! operator runs them, bots publishing FFmpeg-encoded VP8 and Opus, and a host moving them on
//! and off stage. The compositor must decode exactly the people on stage and lay them out.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use castyard_media_worker::bot::{self, BotConfig, Synthetic};
use castyard_media_worker::testkit::free_port;
use castyard_proto::ControlToken;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The broadcast's control token (one show in this test, so one token).
fn token() -> &'static ControlToken {
    static TOKEN: std::sync::OnceLock<ControlToken> = std::sync::OnceLock::new();
    TOKEN.get_or_init(ControlToken::generate)
}

fn worker(role: &str, dir: &Path, config: &Value) -> Proc {
    let path = dir.join(format!("{role}.json"));
    std::fs::write(&path, config.to_string()).unwrap();
    std::fs::write(dir.join("control-token"), token().expose()).unwrap();
    Proc(
        Command::new(env!("CARGO_BIN_EXE_castyard-media-worker"))
            .arg(role)
            .arg("--config")
            .arg(&path)
            .arg("--control-token-file")
            .arg(dir.join("control-token"))
            .arg("--keys-dir")
            .arg(dir.join("keys"))
            .args(if role == "compositor" {
                vec!["--data-dir".into(), dir.join("data")]
            } else {
                vec![]
            })
            .env("CASTYARD_ADVERTISE_IP", "127.0.0.1")
            .stdin(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The body of a GET, as JSON when it is JSON, else as a string (Null when unreachable).
async fn get_text(port: u16, path: &str) -> Value {
    let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return Value::Null;
    };
    let req = format!(
        "GET {path} HTTP/1.0\r\nHost: w\r\nAuthorization: {}\r\n\r\n",
        token().bearer()
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return Value::Null;
    }
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.into()))
}

async fn get(port: u16, path: &str) -> Value {
    match get_text(port, path).await {
        Value::String(_) => Value::Null,
        v => v,
    }
}

/// Polls `what` until `ok` holds, failing with the last value after `within`.
async fn until(port: u16, what: &str, within: Duration, ok: impl Fn(&Value) -> bool) -> Value {
    let end = Instant::now() + within;
    loop {
        let v = get(port, what).await;
        if ok(&v) {
            return v;
        }
        assert!(Instant::now() < end, "{what} never as expected: {v}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn stage_of(scene: &Value) -> Vec<String> {
    scene["stage"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

type Tab =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// The host: a studio tab that publishes nothing and moves people on and off stage.
async fn host_tab(signal: u16) -> Tab {
    let mut req = format!("ws://127.0.0.1:{signal}/signal?participant=host&name=Host&role=host")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("authorization", token().bearer().parse().unwrap());
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compositor_decodes_and_lays_out_exactly_who_is_on_stage() {
    let dir = tempfile::tempdir().unwrap();
    let (signal, media, control) = (free_port(), free_port(), free_port());
    let _sfu = worker(
        "sfu",
        dir.path(),
        &json!({"broadcast": "show", "maxParticipants": 11, "signallingPort": signal,
                "mediaPort": media}),
    );
    let _compositor = worker(
        "compositor",
        dir.path(),
        &json!({
            "broadcast": "show", "width": 640, "height": 360, "fps": 30,
            "videoBitrateKbps": 800, "audioBitrateKbps": 96, "layout": "grid",
            "destinations": [], "hls": {"enabled": false, "lowLatency": false},
            "recording": false, "ingest": {"rtmp": false},
            "sfu": format!("127.0.0.1:{signal}"), "controlPort": control,
        }),
    );
    until(control, "/readyz", Duration::from_secs(20), |_| true).await;
    until(
        signal,
        "/participants",
        Duration::from_secs(20),
        Value::is_array,
    )
    .await;

    let mut host = host_tab(signal).await;
    let media_source = Synthetic::start(Path::new("ffmpeg"), "castyard bot").unwrap();
    let bots: Vec<_> = ["b1", "b2"]
        .into_iter()
        .map(|who| {
            let cfg = BotConfig {
                url: format!(
                    "ws://127.0.0.1:{signal}/signal?participant={who}&name=Guest%20{who}&role=guest"
                ),
                duration: Duration::from_secs(90),
                bind_ip: "127.0.0.1".parse().unwrap(),
                control_token: Some(token().clone()),
                together: None,
            };
            tokio::spawn(bot::run(cfg, Some(media_source.subscribe())))
        })
        .collect();
    until(signal, "/participants", Duration::from_secs(15), |p| {
        p.as_array().is_some_and(|a| a.len() == 3)
    })
    .await;
    // Backstage, nobody is decoded.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let status = get(control, "/status").await;
    assert_eq!(status["inputs"], json!({}), "nothing decoded backstage");

    for who in ["b1", "b2"] {
        let msg = json!({"type": "stage", "participant": who, "onStage": true});
        host.send(Message::Text(msg.to_string().into()))
            .await
            .unwrap();
    }
    let scene = until(control, "/scene", Duration::from_secs(10), |s| {
        stage_of(s) == ["b1", "b2"] && s["participants"]["b2"]["video"] == true
    })
    .await;
    assert_eq!(scene["participants"]["b1"]["name"], "Guest b1");
    assert_eq!(scene["participants"]["b1"]["muted"], false);
    // Both are decoded: pictures (the first needed a keyframe from the publisher) and sound.
    // The deadlines are generous: under the full suite two cores also run a browser and
    // other encoders, and a decoder's start then takes seconds.
    let status = until(control, "/status", Duration::from_secs(30), |s| {
        ["b1", "b2"].iter().all(|who| {
            let i = &s["inputs"][who];
            i["videoFrames"].as_u64().unwrap_or(0) > 60
                && i["audioSamples"].as_u64().unwrap_or(0) > 48_000
                && i["live"] == true
        })
    })
    .await;
    assert_eq!(status["encoderRestarts"], 0);

    // A decoder that dies is restarted mid-stream: it asks for a keyframe, which the SFU
    // passes to the publisher, and the picture comes back.
    let asked = status["inputs"]["b1"]["keyframeRequests"].as_u64().unwrap();
    let requests = |m: &Value| {
        m.as_str()
            .unwrap_or("")
            .lines()
            .find(|l| l.starts_with("castyard_sfu_keyframe_requests_total"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let sent = requests(&get_text(signal, "/metrics").await);
    // Its SDP file (one per decoder size) names it on the command line.
    let sdp = dir.path().join("data/inputs/b1-video-");
    let killed = Command::new("pkill")
        .args(["-KILL", "-f", &sdp.to_string_lossy()])
        .status()
        .unwrap();
    assert!(killed.success(), "the decoder of {} runs", sdp.display());
    let frames = status["inputs"]["b1"]["videoFrames"].as_u64().unwrap();
    until(control, "/status", Duration::from_secs(30), |s| {
        s["inputs"]["b1"]["videoFrames"].as_u64().unwrap_or(0) > frames + 30
            && s["inputs"]["b1"]["live"] == true
            && s["inputs"]["b1"]["keyframeRequests"].as_u64().unwrap_or(0) > asked
    })
    .await;
    // The SFU counts its requests every 2 s.
    let end = Instant::now() + Duration::from_secs(5);
    while requests(&get_text(signal, "/metrics").await) <= sent {
        assert!(Instant::now() < end, "the SFU never asked the publisher");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Off stage: out of the scene's stage and no longer decoded; the other goes on. The first
    // tab never opened a media connection, which the SFU ends after 15 s of silence: on a
    // loaded machine the steps above can take longer, so the host opens the studio again.
    let _ = host.close(None).await;
    let mut host = host_tab(signal).await;
    let msg = json!({"type": "stage", "participant": "b2", "onStage": false});
    host.send(Message::Text(msg.to_string().into()))
        .await
        .unwrap();
    until(control, "/scene", Duration::from_secs(5), |s| {
        stage_of(s) == ["b1"]
    })
    .await;
    let status = until(control, "/status", Duration::from_secs(5), |s| {
        s["inputs"].get("b2").is_none()
    })
    .await;
    let frames = status["inputs"]["b1"]["videoFrames"].as_u64().unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let later = get(control, "/status").await["inputs"]["b1"]["videoFrames"]
        .as_u64()
        .unwrap();
    assert!(later > frames + 10, "b1 still flows: {frames} -> {later}");
    assert_eq!(get(control, "/status").await["encoderRestarts"], 0);

    let _ = host.close(None).await;
    while host.next().await.is_some() {}
    for b in bots {
        b.abort();
    }
}
