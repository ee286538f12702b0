//! RTMP ingest with real FFmpeg standing in for OBS: HLS, the recording, refusals, and floods.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use castyard_api::ingest::Hooks;
use castyard_media_worker::ingest::{Ingest, IngestConfig};
use serde_json::{Value, json};

use crate::common::TestApp;

struct Rig {
    app: TestApp,
    host: String,
    id: String,
    rtmp: u16,
}

/// The scenarios whose SQL matters (keys, claims, recordings, state) run on both databases.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(false).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(true).await
            }
        })*
    };
}

on_both!(
    an_obs_publish_becomes_hls_a_live_stream_and_a_playable_recording,
    unknown_rotated_and_revoked_keys_and_a_second_publisher_are_refused,
    a_revoked_key_is_refused_and_keys_are_the_owners_alone,
    one_publisher_per_key_across_replicas_and_an_abandoned_claim_expires,
);

async fn rig_with(tune: impl FnOnce(&mut IngestConfig)) -> Rig {
    rig_on(false, tune).await
}

async fn rig_on(postgres: bool, tune: impl FnOnce(&mut IngestConfig)) -> Rig {
    rig_full(postgres, None, tune).await
}

/// `web`: the address the app will be served at, with the built frontend, for a browser.
async fn rig_full(
    postgres: bool,
    web: Option<String>,
    tune: impl FnOnce(&mut IngestConfig),
) -> Rig {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let rtmp = listener.local_addr().unwrap().port();
    let settings = |s: &mut castyard_api::Settings| {
        s.ingest_url = Some(format!("rtmp://127.0.0.1:{rtmp}/live"));
        if let Some(base) = web {
            s.public_url = base;
            let dist = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend/dist");
            s.web_dir = Some(dist);
        }
    };
    let app = if postgres {
        TestApp::postgres_with(settings).await
    } else {
        TestApp::sqlite_with(settings).await
    };
    let mut config = IngestConfig::new(&app.state.settings.data_dir);
    config.hls_segment_seconds = 1;
    config.thumbnail_seconds = 1;
    tune(&mut config);
    let ingest = Ingest::new(
        config,
        Arc::new(Hooks(app.state.clone())),
        app.state.metrics.ingest.clone(),
    );
    let _ = app.state.ingest.set(ingest.clone());
    tokio::spawn(ingest.serve(listener));
    let host = app.host("obs@example.com").await;
    let id = app
        .create_broadcast(
            &host,
            json!({"title": "OBS show", "ingest": {"rtmp": true}}),
        )
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    Rig {
        app,
        host,
        id,
        rtmp,
    }
}

impl Rig {
    /// A custom destination of the broadcast, with its key.
    async fn add_destination(&self, name: &str, url: &str, key: &str) {
        let r = self
            .app
            .post(
                &format!("/api/broadcasts/{}/destinations", self.id),
                Some(&self.host),
                json!({"name": name, "kind": "custom", "url": url, "streamKey": key}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    }

    /// Every destination event of the broadcast from now on.
    fn destinations(&self) -> Destinations {
        Destinations {
            rx: self.app.state.hub.subscribe(&self.id),
            last: Default::default(),
            kinds: Default::default(),
        }
    }

    async fn new_key(&self) -> Value {
        let r = self
            .app
            .post(
                &format!("/api/broadcasts/{}/ingest-key", self.id),
                Some(&self.host),
                json!({}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json
    }

    async fn state(&self) -> String {
        let r = self
            .app
            .get(&format!("/api/broadcasts/{}", self.id), Some(&self.host))
            .await;
        r.json["state"].as_str().unwrap().to_owned()
    }

    async fn wait_state(&self, want: &str) {
        for _ in 0..600 {
            if self.state().await == want {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("broadcast never became {want}");
    }

    async fn recordings(&self) -> Vec<Value> {
        let r = self.app.get("/api/recordings", Some(&self.host)).await;
        r.json.as_array().unwrap().clone()
    }
}

/// FFmpeg publishing a test pattern and a tone, H.264 + AAC, as OBS would.
pub(crate) fn publish(url: &str, seconds: u32, realtime: bool) -> Child {
    publish_with(url, seconds, realtime, true)
}

/// As `publish`, with or without the audio track (OBS with no audio source sends none).
pub(crate) fn publish_with(url: &str, seconds: u32, realtime: bool, audio: bool) -> Child {
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-hide_banner", "-loglevel", "error", "-nostdin"]);
    if realtime {
        cmd.arg("-re");
    }
    cmd.args(["-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30"]);
    if audio {
        cmd.args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-c:a", "aac", "-b:a", "64k"]);
    } else {
        cmd.arg("-an");
    }
    cmd.args(["-t", &seconds.to_string()])
        .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "30"])
        .args(["-pix_fmt", "yuv420p"])
        .args(["-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd.spawn().unwrap()
}

fn ffprobe(path: &std::path::Path, entries: &str) -> String {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-show_entries", entries, "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ffprobe {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

async fn exited(mut child: Child) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        let status = child.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).unwrap();
        std::process::Output {
            status,
            stdout: vec![],
            stderr: stderr.into_bytes(),
        }
    })
    .await
    .unwrap()
}

async fn an_obs_publish_becomes_hls_a_live_stream_and_a_playable_recording(pg: bool) {
    let rig = rig_on(pg, |_| {}).await;
    let key = rig.new_key().await;
    assert_eq!(
        key["serverUrl"],
        format!("rtmp://127.0.0.1:{}/live", rig.rtmp)
    );
    let publisher = publish(key["url"].as_str().unwrap(), 4, true);

    rig.wait_state("Live").await;
    // The ingest is the show: no compositor is started for it.
    let name = format!("bc-{}", rig.id);
    let w = rig.app.embedded.workloads(&name).unwrap();
    assert!(w.sfu.is_some() && w.compositor.is_none(), "{w:?}");
    // Live now: listed with its HLS playlist and a thumbnail once they are out.
    let mut hls_url = Value::Null;
    let mut thumb = Value::Null;
    for _ in 0..200 {
        let streams = rig.app.get("/api/streams", None).await.json;
        let mine = streams
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == rig.id.as_str())
            .cloned()
            .expect("the live ingest is listed");
        if !mine["hlsUrl"].is_null() && !mine["thumbnailUrl"].is_null() {
            hls_url = mine["hlsUrl"].clone();
            thumb = mine["thumbnailUrl"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        hls_url,
        format!("http://castyard.test/hls/{}/index.m3u8", rig.id)
    );
    assert_eq!(
        thumb,
        format!("http://castyard.test/hls/{}/thumb.jpg", rig.id)
    );
    let still = rig
        .app
        .get(&format!("/hls/{}/thumb.jpg", rig.id), None)
        .await;
    assert_eq!(still.status, StatusCode::OK);
    assert_eq!(still.headers["content-type"], "image/jpeg");
    let jpeg = ffprobe(
        &rig.app
            .state
            .settings
            .hls_dir()
            .join(&rig.id)
            .join("thumb.jpg"),
        "stream=codec_name,width,height",
    );
    assert_eq!(jpeg.trim(), "mjpeg,480,270");
    let playlist = rig
        .app
        .get(&format!("/hls/{}/index.m3u8", rig.id), None)
        .await;
    assert_eq!(playlist.status, StatusCode::OK);
    assert_eq!(
        playlist.headers["content-type"],
        "application/vnd.apple.mpegurl"
    );
    assert!(playlist.text().contains("#EXTM3U"), "{}", playlist.text());
    let segment = playlist
        .text()
        .lines()
        .find(|l| l.ends_with(".ts"))
        .expect("a segment")
        .to_owned();
    let seg = rig
        .app
        .get(&format!("/hls/{}/{segment}", rig.id), None)
        .await;
    assert_eq!(seg.status, StatusCode::OK);
    assert_eq!(seg.headers["content-type"], "video/mp2t");
    // Passed through, not re-encoded: the publisher's codecs and size.
    let hls_dir = rig.app.state.settings.hls_dir().join(&rig.id);
    let streams = ffprobe(
        &hls_dir.join("index.m3u8"),
        "stream=codec_name,width,height",
    );
    assert!(streams.contains("h264,640,360"), "{streams}");
    assert!(streams.contains("aac"), "{streams}");
    // Only the remuxer's own file names are served.
    for bad in ["..%2Fcastyard.db", "master.key", "seg.ts", "segx1.ts"] {
        let r = rig.app.get(&format!("/hls/{}/{bad}", rig.id), None).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{bad}");
    }

    let out = exited(publisher).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    rig.wait_state("Ended").await;
    // Ended: the broadcast's workers are told to stop.
    let w = rig.app.embedded.workloads(&name).unwrap();
    assert!(w.sfu.is_none() && w.compositor.is_none(), "{w:?}");
    let recs = rig.recordings().await;
    assert_eq!(recs.len(), 1, "{recs:?}");
    let rec = &recs[0];
    assert_eq!(rec["broadcastId"], rig.id.as_str());
    assert_eq!(rec["title"], "OBS show");
    assert_eq!(rec["contentType"], "video/mp4");
    let ms = rec["durationMs"].as_i64().unwrap();
    assert!((3_500..=4_500).contains(&ms), "duration {ms} ms for 4 s");
    assert!(rec["sizeBytes"].as_i64().unwrap() > 10_000);
    assert!(rec["posterUrl"].is_string(), "{rec}");
    let file = rig
        .app
        .state
        .settings
        .recordings_dir()
        .join(format!("{}.mp4", rec["id"].as_str().unwrap()));
    let probed = ffprobe(&file, "format=duration");
    let secs: f64 = probed.trim().parse().unwrap();
    assert!((3.5..=4.6).contains(&secs), "recording lasts {secs} s");
    // Seekable: a Range request gets part of the file.
    let r = rig
        .app
        .send(
            axum::http::Request::get(rec["fileUrl"].as_str().unwrap())
                .header("range", "bytes=0-99")
                .body(axum::body::Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::PARTIAL_CONTENT);
    // No longer live.
    let streams = rig.app.get("/api/streams", None).await.json;
    assert!(
        !streams
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["id"] == rig.id.as_str())
    );
}

#[tokio::test]
async fn http_flv_plays_the_live_ingest_from_a_keyframe_and_ends_with_it() {
    let rig = rig_with(|_| {}).await;
    let path = format!("/live/{}.flv", rig.id);
    assert_eq!(rig.app.get(&path, None).await.status, StatusCode::NOT_FOUND);
    let key = rig.new_key().await;
    let publisher = publish(key["url"].as_str().unwrap(), 4, true);
    rig.wait_state("Live").await;
    // A real HTTP server, so that ffprobe can play it.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let router = castyard_api::app(rig.app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let url = format!("http://127.0.0.1:{port}{path}");
    let probed = tokio::task::spawn_blocking(move || {
        Command::new("ffprobe")
            .args([
                "-v",
                "error",
                "-show_entries",
                "stream=codec_name,width,height",
            ])
            .args(["-of", "csv=p=0", &url])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let streams = String::from_utf8_lossy(&probed.stdout);
    assert!(
        streams.contains("h264,640,360"),
        "{streams} {}",
        String::from_utf8_lossy(&probed.stderr)
    );
    assert!(streams.contains("aac"), "{streams}");
    // A viewer joining mid-stream gets a whole stream that ends when the publish does.
    let viewer = tokio::spawn({
        let router = castyard_api::app(rig.app.state.clone());
        let path = path.clone();
        async move {
            use tower::ServiceExt;
            let resp = router
                .oneshot(
                    axum::http::Request::get(&path)
                        .body(axum::body::Body::empty())
                        .unwrap(),
                )
                .await
                .unwrap();
            assert_eq!(resp.headers()["content-type"], "video/x-flv");
            http_body_util::BodyExt::collect(resp.into_body())
                .await
                .unwrap()
                .to_bytes()
        }
    });
    // Counted while it watches.
    let series = format!(
        r#"castyard_api_ingest_flv_viewers{{broadcast="bc-{}"}} 1"#,
        rig.id
    );
    for _ in 0..100 {
        if rig.app.get("/metrics", None).await.text().contains(&series) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(rig.app.get("/metrics", None).await.text().contains(&series));
    assert!(exited(publisher).await.status.success());
    let body = tokio::time::timeout(Duration::from_secs(20), viewer)
        .await
        .expect("the FLV stream ends with the publish")
        .unwrap();
    assert_eq!(&body[..3], b"FLV");
    assert!(body.len() > 20_000, "{} bytes", body.len());
    let dump = std::env::temp_dir().join(format!("castyard-flv-{}.flv", rig.id));
    std::fs::write(&dump, &body).unwrap();
    let streams = ffprobe(&dump, "stream=codec_name");
    std::fs::remove_file(&dump).unwrap();
    assert!(
        streams.contains("h264") && streams.contains("aac"),
        "{streams}"
    );
    rig.wait_state("Ended").await;
    assert_eq!(rig.app.get(&path, None).await.status, StatusCode::NOT_FOUND);
}

/// Destination states as the broadcast's realtime events report them.
struct Destinations {
    rx: tokio::sync::broadcast::Receiver<Arc<castyard_api::realtime::Event>>,
    last: std::collections::HashMap<String, (String, Option<String>)>,
    /// The kind of each destination's last failure, as the event named it.
    kinds: std::collections::HashMap<String, String>,
}

impl Destinations {
    /// Returns once `name` is in `state` (now or later), with the error it reported.
    async fn until(&mut self, name: &str, state: &str) -> Option<String> {
        loop {
            if let Some((s, err)) = self.last.get(name)
                && s == state
            {
                return err.clone();
            }
            let ev = tokio::time::timeout(Duration::from_secs(20), self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{name} not {state} within 20 s: {:?}", self.last))
                .unwrap();
            let v = serde_json::to_value(&*ev).unwrap();
            if v["event"]["kind"] == "destination" {
                if let Some(kind) = v["event"]["errorKind"].as_str() {
                    self.kinds
                        .insert(v["event"]["name"].as_str().unwrap().to_owned(), kind.into());
                }
                self.last.insert(
                    v["event"]["name"].as_str().unwrap().to_owned(),
                    (
                        v["event"]["state"].as_str().unwrap().to_owned(),
                        v["event"]["lastError"].as_str().map(str::to_owned),
                    ),
                );
            }
        }
    }
}

#[tokio::test]
async fn the_ingest_is_restreamed_to_each_destination_and_a_dead_one_recovers_alone() {
    use crate::secrets::RtmpServer;
    let rig = rig_with(|_| {}).await;
    let rec_a = tempfile::tempdir().unwrap();
    let rec_b = tempfile::tempdir().unwrap();
    let a = RtmpServer::start_with(None, Some(rec_a.path()));
    let b = RtmpServer::start_with(None, Some(rec_b.path()));
    let b_port = b.port;
    for (name, port, key) in [("a", a.port, "key-a-0001"), ("b", b.port, "key-b-0002")] {
        rig.add_destination(name, &format!("rtmp://127.0.0.1:{port}/live"), key)
            .await;
    }
    let mut events = rig.destinations();
    let key = rig.new_key().await;
    let publisher = publish(key["url"].as_str().unwrap(), 10, true);
    events.until("a", "Live").await;
    events.until("b", "Live").await;

    // b's server dies: b retries, reporting why; a, HLS and the recording carry on.
    drop(b);
    let why = events.until("b", "Retrying").await;
    assert!(
        why.is_some_and(|e| !e.contains("key-b")),
        "errors never carry the key"
    );
    let b = RtmpServer::start_with(Some(b_port), Some(rec_b.path()));
    // Back within the backoff's 5 s ceiling.
    let back = tokio::time::Instant::now();
    events.until("b", "Live").await;
    assert!(back.elapsed() < Duration::from_secs(10));
    // The same story on /metrics, labelled with the Broadcast resource's name.
    let metrics = rig.app.get("/metrics", None).await.text();
    let name = format!("bc-{}", rig.id);
    for series in [
        format!(r#"castyard_api_ingest_publishing{{broadcast="{name}"}} 1"#),
        format!(
            r#"castyard_api_ingest_destination_state{{broadcast="{name}",destination="b",state="live"}} 1"#
        ),
        format!(
            r#"castyard_api_ingest_destination_state{{broadcast="{name}",destination="b",state="retrying"}} 0"#
        ),
        format!(
            r#"castyard_api_ingest_destination_retries_total{{broadcast="{name}",destination="b"}} "#
        ),
        format!(
            r#"castyard_api_ingest_destination_sent_bytes_total{{broadcast="{name}",destination="a"}} "#
        ),
        format!(r#"castyard_api_ingest_received_bytes_total{{broadcast="{name}"}} "#),
    ] {
        assert!(metrics.contains(&series), "{series} in {metrics}");
    }
    assert!(
        !metrics.contains(&format!(
            r#"castyard_api_ingest_destination_retries_total{{broadcast="{name}",destination="a"}}"#
        )),
        "a never retried"
    );

    assert!(exited(publisher).await.status.success());
    rig.wait_state("Ended").await;
    assert_eq!(rig.recordings().await.len(), 1);
    let metrics = rig.app.get("/metrics", None).await.text();
    assert!(
        !metrics.contains(&name),
        "an ended ingest's series are dropped"
    );
    // nginx finalizes its recording when the publisher goes.
    let a_file = rec_a.path().join("key-a-0001.flv");
    let mut secs = 0.0;
    for _ in 0..100 {
        if let Ok(d) = std::fs::metadata(&a_file).map(|_| ffprobe(&a_file, "format=duration")) {
            secs = d.trim().parse().unwrap_or(0.0);
            if secs > 8.5 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        (8.5..=11.0).contains(&secs),
        "destination a got {secs} s of 10"
    );
    let codecs = ffprobe(&a_file, "stream=codec_name,width,height");
    assert!(
        codecs.contains("h264,640,360") && codecs.contains("aac"),
        "{codecs}"
    );
    // b's second session starts at a keyframe and decodes.
    let b_file = rec_b.path().join("key-b-0002.flv");
    let codecs = ffprobe(&b_file, "stream=codec_name");
    assert!(codecs.contains("h264"), "{codecs}");
    drop((a, b));
}

/// The ingest's restream speaks RTMPS: to a server whose CA the process trusts (its extra CA
/// file) the show goes out; one signed by a stranger fails as Tls, saying why, and touches
/// nothing else.
#[tokio::test]
async fn the_ingest_restreams_over_rtmps_and_an_untrusted_destination_says_why() {
    use castyard_media_worker::testkit::{RtmpServer, TestCa, TlsRelay};
    let ca = TestCa::new();
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_file = ca_dir.path().join("extra-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    castyard_media_worker::tls::init(Some(ca_file)).unwrap();
    let rig = rig_with(|_| {}).await;
    let rec = tempfile::tempdir().unwrap();
    let nginx = RtmpServer::start_with(None, Some(rec.path()));
    let (cert, key) = ca.server(&["127.0.0.1"], false);
    let good = TlsRelay::start(nginx.port, &cert, &key);
    let (cert, key) = TestCa::new().server(&["127.0.0.1"], false);
    let untrusted = TlsRelay::start(nginx.port, &cert, &key);
    for (name, port, key) in [
        ("good", good.port, "key-good-0001"),
        ("untrusted", untrusted.port, "key-untrusted-0002"),
    ] {
        rig.add_destination(name, &format!("rtmps://127.0.0.1:{port}/live"), key)
            .await;
    }
    let mut events = rig.destinations();
    let key = rig.new_key().await;
    let publisher = publish(key["url"].as_str().unwrap(), 6, true);
    events.until("good", "Live").await;
    let why = events
        .until("untrusted", "Retrying")
        .await
        .unwrap_or_default();
    assert!(why.starts_with("TLS: unknown issuer"), "{why}");
    assert!(!why.contains("key-untrusted"), "errors never carry the key");
    assert_eq!(
        events.kinds.get("untrusted").map(String::as_str),
        Some("Tls")
    );
    let metrics = rig.app.get("/metrics", None).await.text();
    let series = format!(
        r#"castyard_api_ingest_destination_failures_total{{broadcast="bc-{}",destination="untrusted",kind="tls"}}"#,
        rig.id
    );
    assert!(metrics.contains(&series), "{series} in {metrics}");
    assert_eq!(events.last["good"].0, "Live", "the good one never noticed");

    assert!(exited(publisher).await.status.success());
    rig.wait_state("Ended").await;
    assert_eq!(rig.recordings().await.len(), 1, "the recording goes on");
    // nginx finalizes its recording when the publisher goes.
    let good_file = rec.path().join("key-good-0001.flv");
    let mut codecs = String::new();
    for _ in 0..100 {
        if good_file.exists() {
            codecs = ffprobe(&good_file, "stream=codec_name");
            if codecs.contains("h264") && codecs.contains("aac") {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        codecs.contains("h264") && codecs.contains("aac"),
        "{codecs}"
    );
    drop((good, untrusted, nginx));
}

async fn unknown_rotated_and_revoked_keys_and_a_second_publisher_are_refused(pg: bool) {
    let rig = rig_on(pg, |_| {}).await;
    let before = rig.app.snapshot().await;
    let wrong = format!("rtmp://127.0.0.1:{}/live/not-a-key", rig.rtmp);
    let out = exited(publish(&wrong, 1, false)).await;
    assert!(!out.status.success(), "an unknown key is refused");
    assert_eq!(rig.app.snapshot().await, before, "and changes nothing");
    assert_eq!(rig.state().await, "Backstage");
    assert!(!rig.app.state.settings.hls_dir().join(&rig.id).exists());

    let old = rig.new_key().await;
    let key = rig.new_key().await;
    assert_ne!(old["streamKey"], key["streamKey"]);
    let out = exited(publish(old["url"].as_str().unwrap(), 1, false)).await;
    assert!(!out.status.success(), "a rotated-out key is refused");

    let first = publish(key["url"].as_str().unwrap(), 3, true);
    rig.wait_state("Live").await;
    let second = exited(publish(key["url"].as_str().unwrap(), 1, false)).await;
    assert!(!second.status.success(), "a second publisher is refused");
    let out = exited(first).await;
    assert!(
        out.status.success(),
        "the first publisher was undisturbed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rig.wait_state("Ended").await;
    assert_eq!(rig.recordings().await.len(), 1);

    // An ended broadcast takes no new key, and its key no longer publishes.
    let r = rig
        .app
        .post(
            &format!("/api/broadcasts/{}/ingest-key", rig.id),
            Some(&rig.host),
            json!({}),
        )
        .await;
    r.error(StatusCode::CONFLICT);
    let out = exited(publish(key["url"].as_str().unwrap(), 1, false)).await;
    assert!(!out.status.success());
    assert_eq!(rig.recordings().await.len(), 1);
}

async fn a_revoked_key_is_refused_and_keys_are_the_owners_alone(pg: bool) {
    let rig = rig_on(pg, |_| {}).await;
    let key = rig.new_key().await;
    let r = rig
        .app
        .call(
            Method::DELETE,
            &format!("/api/broadcasts/{}/ingest-key", rig.id),
            Some(&rig.host),
            None,
        )
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let out = exited(publish(key["url"].as_str().unwrap(), 1, false)).await;
    assert!(!out.status.success());
    assert_eq!(rig.state().await, "Backstage");

    let other = rig.app.host("other@example.com").await;
    let before = rig.app.snapshot().await;
    for method in [Method::POST, Method::DELETE] {
        let r = rig
            .app
            .call(
                method,
                &format!("/api/broadcasts/{}/ingest-key", rig.id),
                Some(&other),
                Some(json!({})),
            )
            .await;
        r.error(StatusCode::NOT_FOUND);
    }
    assert_eq!(rig.app.snapshot().await, before);
}

#[tokio::test]
async fn a_server_without_the_ingest_hands_out_no_key() {
    let app = TestApp::sqlite().await;
    let host = app.host("h@example.com").await;
    let id = app.create_broadcast(&host, json!({"title": "t"})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = app
        .post(
            &format!("/api/broadcasts/{id}/ingest-key"),
            Some(&host),
            json!({}),
        )
        .await;
    assert_eq!(r.error(StatusCode::CONFLICT), "conflict");
    assert!(r.text().contains("RTMP ingest"), "{}", r.text());
}

#[tokio::test]
async fn a_publisher_killed_mid_stream_leaves_a_finalized_playable_recording() {
    let rig = rig_with(|_| {}).await;
    let key = rig.new_key().await;
    let mut publisher = publish(key["url"].as_str().unwrap(), 30, true);
    rig.wait_state("Live").await;
    let hls = rig.app.state.settings.hls_dir().join(&rig.id);
    // A few seconds in: at least two segments out.
    for _ in 0..200 {
        let segs = std::fs::read_dir(&hls)
            .map(|d| {
                d.filter(|e| {
                    e.as_ref()
                        .unwrap()
                        .path()
                        .extension()
                        .is_some_and(|x| x == "ts")
                })
                .count()
            })
            .unwrap_or(0);
        if segs >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publisher.kill().unwrap();
    publisher.wait().unwrap();

    rig.wait_state("Ended").await;
    let recs = rig.recordings().await;
    assert_eq!(recs.len(), 1);
    let file = rig
        .app
        .state
        .settings
        .recordings_dir()
        .join(format!("{}.mp4", recs[0]["id"].as_str().unwrap()));
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args(["-show_entries", "stream=nb_read_frames", "-of", "csv=p=0"])
        .arg(&file)
        .output()
        .unwrap();
    let decoded: u64 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    assert!(decoded >= 30, "only {decoded} frames decode");
    // The playlist says the stream ended.
    let playlist = std::fs::read_to_string(hls.join("index.m3u8")).unwrap();
    assert!(playlist.contains("#EXT-X-ENDLIST"), "{playlist}");
}

async fn one_publisher_per_key_across_replicas_and_an_abandoned_claim_expires(pg: bool) {
    let rig = rig_on(pg, |_| {}).await;
    // A second replica: its own ingest and port, the same database.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_port = listener.local_addr().unwrap().port();
    let other = Ingest::new(
        IngestConfig::new(&rig.app.state.settings.data_dir),
        Arc::new(Hooks(rig.app.state.clone())),
        rig.app.state.metrics.ingest.clone(),
    );
    tokio::spawn(other.serve(listener));
    let key = rig.new_key().await;
    let stream_key = key["streamKey"].as_str().unwrap();
    let first = publish(key["url"].as_str().unwrap(), 3, true);
    rig.wait_state("Live").await;
    let elsewhere = format!("rtmp://127.0.0.1:{other_port}/live/{stream_key}");
    let out = exited(publish(&elsewhere, 1, false)).await;
    assert!(
        !out.status.success(),
        "the other replica refuses the key while it is live"
    );
    assert!(exited(first).await.status.success());
    rig.wait_state("Ended").await;

    // A replica that died mid-publish leaves its claim; after 30 s unrenewed it is free.
    let rig = rig_on(pg, |_| {}).await;
    let key = rig.new_key().await;
    let stale = castyard_api::db::now_ms() - 31_000;
    sqlx::query(
        "UPDATE broadcasts SET ingest_claim = 'dead-replica', ingest_claimed_at = $1 WHERE id = $2",
    )
    .bind(stale)
    .bind(&rig.id)
    .execute(&rig.app.state.db.writer)
    .await
    .unwrap();
    assert!(
        exited(publish(key["url"].as_str().unwrap(), 1, false))
            .await
            .status
            .success()
    );
    rig.wait_state("Ended").await;
    // A fresh claim is honoured.
    let rig = rig_on(pg, |_| {}).await;
    let key = rig.new_key().await;
    sqlx::query("UPDATE broadcasts SET ingest_claim = 'live-elsewhere', ingest_claimed_at = $1 WHERE id = $2")
        .bind(castyard_api::db::now_ms())
        .bind(&rig.id)
        .execute(&rig.app.state.db.writer)
        .await
        .unwrap();
    assert!(
        !exited(publish(key["url"].as_str().unwrap(), 1, false))
            .await
            .status
            .success()
    );
    assert_eq!(rig.state().await, "Backstage");
}

#[tokio::test]
async fn shutdown_ends_live_ingests_with_their_recordings_registered() {
    let rig = rig_with(|_| {}).await;
    let key = rig.new_key().await;
    let publisher = publish(key["url"].as_str().unwrap(), 30, true);
    rig.wait_state("Live").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ingest = rig.app.state.ingest.get().unwrap().clone();
    tokio::time::timeout(Duration::from_secs(20), ingest.shutdown())
        .await
        .expect("shutdown finishes the publish");
    // Done when shutdown returns: nothing left to wait for.
    assert_eq!(rig.state().await, "Ended");
    let recs = rig.recordings().await;
    assert_eq!(recs.len(), 1);
    assert!(
        recs[0]["durationMs"].as_i64().unwrap() >= 1_500,
        "{}",
        recs[0]
    );
    // The publisher is disconnected, and a new one is refused.
    let out = exited(publisher).await;
    assert!(!out.status.success());
    let out = exited(publish(key["url"].as_str().unwrap(), 1, false)).await;
    assert!(!out.status.success());
}

#[tokio::test]
async fn garbage_and_handshake_floods_do_not_keep_a_publisher_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rig = rig_with(|c| {
        c.max_connections = 4;
        c.handshake_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = format!("127.0.0.1:{}", rig.rtmp);
    // Garbage instead of a handshake: the connection is closed.
    let mut g = tokio::net::TcpStream::connect(&addr).await.unwrap();
    g.write_all(&[0xff; 4096]).await.unwrap();
    let mut buf = [0u8; 1];
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match g.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a garbage connection is closed");
    // More silent connections than slots: each is dropped at the handshake timeout.
    let mut flood = vec![];
    for _ in 0..12 {
        flood.push(tokio::net::TcpStream::connect(&addr).await.unwrap());
    }
    let key = rig.new_key().await;
    let out = exited(publish(key["url"].as_str().unwrap(), 1, false)).await;
    assert!(
        out.status.success(),
        "the publisher got in after the flood: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rig.wait_state("Ended").await;
    assert_eq!(rig.recordings().await.len(), 1);
    drop(flood);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_page_plays_a_live_ingest_over_http_flv() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let rig = rig_full(false, Some(base.clone()), |_| {}).await;
    let key = rig.new_key().await;
    let mut publisher = publish(key["url"].as_str().unwrap(), 40, true);
    rig.wait_state("Live").await;
    let stream = rig.app.get(&format!("/api/streams/{}", rig.id), None).await;
    let flv = stream.json["flvUrl"].as_str().unwrap().to_owned();
    assert!(
        flv.ends_with(&format!("/live/{}.flv", rig.id)),
        "{}",
        stream.json
    );
    let router = castyard_api::app(rig.app.state.clone());
    tokio::spawn(async move { axum::serve(listener, router).await });
    let id = rig.id.clone();
    let seen =
        tokio::task::spawn_blocking(move || crate::common::e2e("ingest-watch.mjs", &[&base, &id]))
            .await
            .unwrap();
    assert_eq!(seen["player"], "flv", "{seen}");
    assert_eq!(seen["size"], json!([640, 360]), "{seen}");
    assert!(seen["time"].as_f64().unwrap() > 0.5, "{seen}");
    assert_eq!(seen["flv"][0], format!("/live/{}.flv", rig.id), "{seen}");
    let _ = publisher.kill();
    let _ = exited(publisher).await;
    // No publisher, no FLV address.
    rig.wait_state("Ended").await;
    let stream = rig.app.get(&format!("/api/streams/{}", rig.id), None).await;
    assert!(stream.json["flvUrl"].is_null(), "{}", stream.json);
}

/// A low-latency playlist as the packager writes it: `segments` complete, then `parts` of the
/// next one and the hint for the part after.
fn ll_playlist(segments: u64, parts: u64) -> String {
    let mut s = String::from(
        "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n\
         #EXT-X-MAP:URI=\"init0.mp4\"\n",
    );
    for m in 0..segments {
        s.push_str(&format!("#EXTINF:2.0,\ns{m}.m4s\n"));
    }
    let first = segments * 6;
    for p in first..first + parts {
        s.push_str(&format!("#EXT-X-PART:DURATION=0.33,URI=\"p{p}.m4s\"\n"));
    }
    s.push_str(&format!(
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p{}.m4s\"\n",
        first + parts
    ));
    s
}

#[tokio::test]
async fn low_latency_playlists_block_until_the_part_asked_for_and_the_hinted_part_is_held() {
    let app = TestApp::sqlite().await;
    let id = uuid::Uuid::new_v4().to_string();
    let dir = app.state.settings.hls_dir().join(&id);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("index.m3u8"), ll_playlist(2, 1)).unwrap();
    std::fs::write(dir.join("init0.mp4"), b"init").unwrap();
    let url = |q: &str| format!("/hls/{id}/index.m3u8{q}");

    // What the playlist already holds comes at once.
    let r = app.get(&url("?_HLS_msn=1"), None).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), ll_playlist(2, 1));
    let r = app.get(&url("?_HLS_msn=2&_HLS_part=0"), None).await;
    assert_eq!(r.text(), ll_playlist(2, 1));

    // The next part is waited for: the answer is the playlist that has it.
    let next = url("?_HLS_msn=2&_HLS_part=1");
    let (r, ()) = tokio::join!(app.get(&next, None), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(dir.join("index.m3u8"), ll_playlist(2, 2)).unwrap();
    });
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.text(), ll_playlist(2, 2));

    // The hinted part is held until it is written; a part nobody hinted is simply not there.
    let hinted = format!("/hls/{id}/p14.m4s");
    let (r, ()) = tokio::join!(app.get(&hinted, None), async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        std::fs::write(dir.join("p14.m4s"), b"fourteen").unwrap();
    });
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "video/mp4");
    assert_eq!(r.text(), "fourteen");
    let r = app.get(&format!("/hls/{id}/p40.m4s"), None).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = app.get(&format!("/hls/{id}/init0.mp4"), None).await;
    assert_eq!(
        (r.status, r.headers["content-type"].to_str().unwrap()),
        (StatusCode::OK, "video/mp4")
    );

    // A part that does not come within three target durations: the player is told to retry.
    let r = app.get(&url("?_HLS_msn=3&_HLS_part=0"), None).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);

    // Bad requests are refused and change nothing.
    for q in [
        "?_HLS_msn=9",
        "?_HLS_msn=x",
        "?_HLS_msn=-1",
        "?_HLS_part=1",
        "?_HLS_msn=2&_HLS_part=z",
    ] {
        let r = app.get(&url(q), None).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{q}: {}", r.text());
    }
    assert_eq!(
        std::fs::read_to_string(dir.join("index.m3u8")).unwrap(),
        ll_playlist(2, 2)
    );
}
