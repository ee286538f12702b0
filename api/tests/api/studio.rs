//! The studio end to end: `castyard up` runs a real SFU per broadcast, the API relays
//! signalling to it, and `castyard bot` guests exchange FFmpeg-encoded media through it.

use std::process::Command;

use serde_json::Value;

use crate::cli::{Up, http, wait_for_phase};
use crate::common::e2e;

fn media_worker() -> std::path::PathBuf {
    // Cargo builds every workspace binary into the same directory before tests run.
    std::path::Path::new(env!("CARGO_BIN_EXE_castyard")).with_file_name("castyard-media-worker")
}

/// Runs a browser script from frontend/e2e/ and returns the JSON line it ends with; it must exit 0.
fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// A host account and a broadcast whose SFU is up (phase Backstage).
pub(crate) fn backstage(up: &Up, email: &str) -> (String, String) {
    let (line, body) = http(
        up.port,
        "POST",
        "/api/auth/register",
        None,
        &format!(r#"{{"email":"{email}","password":"correct horse","displayName":"Host"}}"#),
    );
    assert!(line.contains("201"), "{line} {body}");
    let token = json(&body)["accessToken"].as_str().unwrap().to_owned();
    let (line, body) = http(
        up.port,
        "POST",
        "/api/broadcasts",
        Some(&token),
        r#"{"title":"Bots"}"#,
    );
    assert!(line.contains("201"), "{line} {body}");
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    wait_for_phase(up, &id, &token, "Backstage");
    (token, id)
}

fn bots(up: &Up, id: &str, token: &str, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["bot", "--url", &format!("http://127.0.0.1:{}", up.port)])
        .args(["--broadcast", id, "--token", token])
        .args(extra)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    (out.status.success(), format!("{stdout}{stderr}"))
}

fn summary(out: &str) -> String {
    out.lines()
        .rfind(|l| l.starts_with("bots: "))
        .unwrap_or_else(|| panic!("no summary in {out}"))
        .to_owned()
}

fn bytes(summary: &str) -> u64 {
    summary.rsplit(' ').next().unwrap().parse().unwrap()
}

#[test]
fn bots_join_through_the_api_and_receive_each_other() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&dir.path().join("data"), &media_worker());
    let (token, id) = backstage(&up, "host@example.com");

    let (ok, out) = bots(&up, &id, &token, &["--count", "3", "--duration", "6s"]);
    assert!(ok, "{out}");
    let s = summary(&out);
    assert!(
        s.starts_with("bots: 3, tracks received: 12, bytes received: "),
        "{out}"
    );
    assert!(bytes(&s) > 100_000, "{s}");

    // Subscribe-only bots with nobody publishing fail, and say why.
    let (ok, out) = bots(
        &up,
        &id,
        &token,
        &["--count", "1", "--duration", "2s", "--subscribe-only"],
    );
    assert!(!ok, "{out}");
    assert!(
        out.contains("nobody in the studio published anything"),
        "{out}"
    );

    // Somebody else's broadcast is not theirs to invite bots into.
    let (other, _) = backstage(&up, "other@example.com");
    let (ok, out) = bots(&up, &id, &other, &["--count", "1", "--duration", "1s"]);
    assert!(!ok, "{out}");
    assert!(out.contains("404") || out.contains("403"), "{out}");

    assert!(up.signal("-TERM").success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_studio_socket_admits_only_the_host_and_invited_guests() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&dir.path().join("data"), &media_worker());
    let (token, id) = tokio::task::block_in_place(|| backstage(&up, "host@example.com"));
    let (other, _) = tokio::task::block_in_place(|| backstage(&up, "other@example.com"));
    let url = |t: Option<&str>| {
        let q = t.map(|t| format!("?token={t}")).unwrap_or_default();
        format!("ws://127.0.0.1:{}/api/broadcasts/{id}/studio{q}", up.port)
    };
    let refused = |r: Result<_, tokio_tungstenite::tungstenite::Error>| match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        Ok(_) => panic!("admitted"),
        Err(e) => panic!("{e}"),
    };
    assert_eq!(
        refused(tokio_tungstenite::connect_async(url(None)).await),
        401
    );
    assert_eq!(
        refused(tokio_tungstenite::connect_async(url(Some("forged"))).await),
        401
    );
    assert_eq!(
        refused(tokio_tungstenite::connect_async(url(Some(&other))).await),
        403
    );
    // The host is admitted and the SFU greets them by their account.
    use futures::StreamExt;
    let (mut ws, _) = tokio_tungstenite::connect_async(url(Some(&token)))
        .await
        .unwrap();
    let hello = ws.next().await.unwrap().unwrap().into_text().unwrap();
    let hello = json(&hello);
    assert_eq!(hello["type"], "joined");
    assert_eq!(hello["role"], "host");
    // Bad input comes back as an error on the same socket, which stays open.
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"offer","sdp":"nonsense"}"#.into(),
    ))
    .await
    .unwrap();
    let reply = json(&ws.next().await.unwrap().unwrap().into_text().unwrap());
    assert_eq!(reply["code"], "bad_sdp", "{reply}");
    ws.send(tokio_tungstenite::tungstenite::Message::Text(
        r#"{"type":"ping"}"#.into(),
    ))
    .await
    .unwrap();
    let reply = json(&ws.next().await.unwrap().unwrap().into_text().unwrap());
    assert_eq!(reply["type"], "pong");
    assert!(tokio::task::block_in_place(|| up.signal("-TERM")).success());
}

#[test]
fn ten_bots_all_receive_all_ninety_video_and_ninety_audio_tracks() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&dir.path().join("data"), &media_worker());
    let (token, id) = backstage(&up, "host@example.com");
    let (ok, out) = bots(&up, &id, &token, &["--count", "10", "--duration", "10s"]);
    assert!(ok, "{out}");
    // Each of 10 bots receives the microphone and camera of the 9 others.
    assert!(
        summary(&out).starts_with("bots: 10, tracks received: 180, "),
        "{out}"
    );
    assert!(up.signal("-TERM").success());
}

/// A guest's access token: the host invites, the guest accepts under `name`.
fn guest(up: &Up, id: &str, host: &str, name: &str) -> String {
    let (line, body) = http(
        up.port,
        "POST",
        &format!("/api/broadcasts/{id}/invites"),
        Some(host),
        "{}",
    );
    assert!(line.contains("201"), "{line} {body}");
    let invite = json(&body)["token"].as_str().unwrap().to_owned();
    let (line, body) = http(
        up.port,
        "POST",
        "/api/auth/invite/accept",
        None,
        &format!(r#"{{"token":"{invite}","displayName":"{name}"}}"#),
    );
    assert!(line.contains("200"), "{line} {body}");
    json(&body)["accessToken"].as_str().unwrap().to_owned()
}

#[test]
fn two_browser_guests_see_and_hear_each_other_share_a_screen_and_leave() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&dir.path().join("data"), &media_worker());
    let (host, id) = backstage(&up, "host@example.com");
    let (a, b) = (guest(&up, &id, &host, "Ann"), guest(&up, &id, &host, "Bob"));
    let seen = e2e(
        "sfu-two-guests.mjs",
        &[&format!("http://127.0.0.1:{}", up.port), &id, &a, &b],
    );
    assert_eq!(
        seen["audioAndVideo"],
        serde_json::json!(["camera", "microphone"])
    );
    assert_eq!(
        seen["screenShare"],
        serde_json::json!(["camera", "microphone", "screen"])
    );
    assert_eq!(seen["afterLeave"], serde_json::json!([]));
    assert!(up.signal("-TERM").success());
}

#[test]
fn going_live_composes_the_show_and_reports_each_destination() {
    use castyard_media_worker::testkit::RtmpServer;
    let data = tempfile::tempdir().unwrap();
    let mut up = Up::start(data.path(), &media_worker());
    let (token, id) = backstage(&up, "live@example.com");
    let rtmp = RtmpServer::start();
    let (line, body) = http(
        up.port,
        "POST",
        &format!("/api/broadcasts/{id}/destinations"),
        Some(&token),
        &format!(
            r#"{{"name":"local","kind":"custom","url":"rtmp://127.0.0.1:{}/live","streamKey":"live-key-1"}}"#,
            rtmp.port
        ),
    );
    assert!(line.contains("201"), "{line} {body}");
    // No compositor runs backstage without a recording: scene changes say so.
    let banner =
        r#"{"type":"show-banner","banner":{"text":"Welcome to the show","style":"lower-third"}}"#;
    let (line, body) = http(
        up.port,
        "POST",
        &format!("/api/broadcasts/{id}/scene"),
        Some(&token),
        banner,
    );
    assert!(line.contains("409"), "{line} {body}");
    let (line, body) = http(
        up.port,
        "PATCH",
        &format!("/api/broadcasts/{id}"),
        Some(&token),
        r#"{"recording":true}"#,
    );
    assert!(line.contains("200"), "{line} {body}");
    let (line, body) = http(
        up.port,
        "POST",
        &format!("/api/broadcasts/{id}/start"),
        Some(&token),
        "",
    );
    assert!(line.contains(" 20"), "{line} {body}");
    // The compositor's own report reaches the broadcast's status.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(40);
    loop {
        let (_, body) = http(
            up.port,
            "GET",
            &format!("/api/broadcasts/{id}"),
            Some(&token),
            "",
        );
        let b = json(&body);
        let d = &b["destinationStatus"][0];
        if d["state"] == "Live" && b["phase"] == "Live" {
            assert_eq!(d["name"], "local");
            assert!(!body.contains("live-key-1"), "never the key: {body}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never live: {b}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    // With the show live, only the API, the RTMP ingest (both on loopback in this test) and
    // the SFU's media socket listen; every worker control port and RTP input is loopback.
    let (_, body) = http(
        up.port,
        "GET",
        &format!("/api/broadcasts/{id}"),
        Some(&token),
        "",
    );
    let media: std::net::SocketAddr = json(&body)["endpoints"]["mediaUdp"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let sockets = crate::sockets::listening(up.child.id());
    assert!(
        sockets
            .iter()
            .any(|l| l.proto == "tcp" && l.addr.port() == up.port),
        "{sockets:#?}"
    );
    let exposed: Vec<_> = sockets
        .iter()
        .filter(|l| !l.addr.ip().is_loopback())
        .filter(|l| !(l.proto == "udp" && l.addr.port() == media.port()))
        .collect();
    assert!(
        exposed.is_empty(),
        "listening beyond loopback: {exposed:#?}"
    );
    assert!(
        sockets.len() >= 4,
        "the API, the SFU's control and media, the compositor's control: {sockets:#?}"
    );
    // The host's scene changes reach the compositor through the API; bad ones change nothing.
    let scene_url = format!("/api/broadcasts/{id}/scene");
    let (line, body) = http(up.port, "POST", &scene_url, Some(&token), banner);
    assert!(line.contains("200"), "{line} {body}");
    assert_eq!(
        json(&body)["banner"]["text"],
        "Welcome to the show",
        "{body}"
    );
    for (bad, why) in [
        (r#"{"type":"explode"}"#, "not a scene command"),
        (
            r#"{"type":"join","id":"x","name":"X"}"#,
            "set from the studio",
        ),
        (r#"{"type":"set-brand","brand":{"color":"red; drop"}}"#, ""),
        // Brand pictures are the host's own uploads, named by id: nothing else reaches a path.
        (
            r#"{"type":"set-brand","brand":{"logo":"0b7e4f2a-0000-4000-8000-000000000000"}}"#,
            "is not one of your logo uploads",
        ),
        (
            r#"{"type":"set-brand","brand":{"overlay":"../../master.key"}}"#,
            "is not one of your overlay uploads",
        ),
        ("not json", "not a scene command"),
    ] {
        let (line, body) = http(up.port, "POST", &scene_url, Some(&token), bad);
        assert!(line.contains("422"), "{bad}: {line} {body}");
        assert!(body.contains(why), "{bad}: {body}");
    }
    let (line, body) = http(up.port, "GET", &scene_url, Some(&token), "");
    assert!(line.contains("200"), "{line} {body}");
    assert_eq!(
        json(&body)["banner"]["text"],
        "Welcome to the show",
        "{body}"
    );
    assert!(json(&body)["brand"]["color"] != "red; drop", "{body}");
    let (line, _) = http(up.port, "POST", &scene_url, None, banner);
    assert!(line.contains("401"), "{line}");
    // The watch page's HLS is the composed show, served by the API from the compositor's folder.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let hls = loop {
        let (_, body) = http(up.port, "GET", &format!("/api/streams/{id}"), None, "");
        if let Some(u) = json(&body)["hlsUrl"].as_str() {
            break u.to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no HLS: {body} {}",
            String::from_utf8_lossy(
                &Command::new("find")
                    .arg(data.path())
                    .output()
                    .unwrap()
                    .stdout
            )
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert!(hls.ends_with(&format!("/hls/{id}/index.m3u8")), "{hls}");
    assert_eq!(
        probe_codecs(&format!("http://127.0.0.1:{}/hls/{id}/index.m3u8", up.port)),
        "h264,aac"
    );
    let (line, body) = http(
        up.port,
        "POST",
        &format!("/api/broadcasts/{id}/end"),
        Some(&token),
        "",
    );
    assert!(line.contains(" 20"), "{line} {body}");
    wait_for_phase(&up, &id, &token, "Ended");
    // Ending stops the compositor, which finalizes its recording first (its process is gone
    // once the broadcast's worker folder is).
    let workers = data.path().join("workers");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while std::fs::read_dir(&workers).map_or(0, |d| d.count()) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "workers never stopped"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let recordings: Vec<_> = std::fs::read_dir(data.path().join("media"))
        .unwrap()
        .flatten()
        .flat_map(|d| {
            std::fs::read_dir(d.path().join("recordings"))
                .into_iter()
                .flatten()
        })
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "mp4"))
        .collect();
    assert_eq!(recordings.len(), 1, "{recordings:?}");
    assert_eq!(probe_codecs(recordings[0].to_str().unwrap()), "h264,aac");
    // The library lists it, with its length and poster, and plays it over HTTP.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    let rec = loop {
        let (_, body) = http(up.port, "GET", "/api/recordings", Some(&token), "");
        let list = json(&body);
        if let Some(r) = list.as_array().and_then(|l| l.first()) {
            break r.clone();
        }
        assert!(std::time::Instant::now() < deadline, "never listed: {body}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    assert_eq!(rec["broadcastId"], id.as_str());
    assert!(rec["durationMs"].as_i64().unwrap() > 1000, "{rec}");
    assert!(rec["sizeBytes"].as_i64().unwrap() > 1000, "{rec}");
    assert!(rec["posterUrl"].is_string(), "{rec}");
    let url = format!(
        "http://127.0.0.1:{}{}",
        up.port,
        rec["fileUrl"].as_str().unwrap()
    );
    assert_eq!(probe_codecs(&url), "h264,aac");
    assert!(up.signal("-TERM").success());
}

/// The codecs ffprobe finds in a file or URL, each once, in stream order ("h264,aac"); an
/// HLS playlist lists its streams once per program.
fn probe_codecs(input: &str) -> String {
    let probe = Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
            input,
        ])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&probe.stdout);
    let mut codecs: Vec<&str> = Vec::new();
    for c in out.split_whitespace() {
        if !codecs.contains(&c) {
            codecs.push(c);
        }
    }
    codecs.join(",")
}

/// The web studio through a real browser: frontend/e2e/studio-journey.mjs against
/// `castyard up` serving the built frontend (scripts/test-deps.sh builds it), with a local
/// nginx-rtmp destination. Screenshots go to test-output/e2e/ (not committed), or to
/// CASTYARD_SCREENSHOTS (`docs/img` refreshes the README's pictures).
#[test]
fn the_web_studio_takes_a_host_from_sign_up_to_a_recording_with_a_guest_and_a_viewer() {
    use castyard_media_worker::testkit::RtmpServer;
    let frontend = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend");
    let dist = frontend.join("dist");
    assert!(
        dist.join("index.html").exists(),
        "the frontend is not built: run `make test` (or `make web`)"
    );
    let rtmp = RtmpServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (child, port) = crate::cli::spawn_up(&dir.path().join("data"), |c| {
        c.arg("--media-worker")
            .arg(media_worker())
            .env("CASTYARD_WEB_DIR", &dist);
    });
    let mut up = Up { child, port };
    let shots = std::env::var_os("CASTYARD_SCREENSHOTS").map_or_else(
        || frontend.join("../test-output/e2e"),
        |d| frontend.join("..").join(d),
    );
    let seen = e2e(
        "studio-journey.mjs",
        &[
            &format!("http://127.0.0.1:{port}"),
            &rtmp.port.to_string(),
            shots.to_str().unwrap(),
        ],
    );
    assert_eq!(seen["ok"], true, "{seen}");
    // Every page was visited signed out with no console error (the script fails otherwise).
    assert_eq!(seen["signedOutPages"], 10, "{seen}");
    assert!(seen["watchTime"].as_f64().unwrap() > 0.5, "{seen}");
    assert!(seen["recordingTime"].as_f64().unwrap() > 0.5, "{seen}");
    // The guest the host put on stage is in the composed show, under the layout chosen.
    assert_eq!(
        seen["scene"]["stage"],
        serde_json::json!(["Gina Guest"]),
        "{seen}"
    );
    assert_eq!(seen["scene"]["layout"], "spotlight", "{seen}");
    // The guest's background effect (segmentation in their browser) reaches the host: blurred
    // takes at least a third of the picture's edge energy away, and a magenta picture replaces
    // the empty room.
    let blur = &seen["blur"];
    assert!(
        blur["blurred"].as_f64().unwrap() < blur["sharp"].as_f64().unwrap() * 2.0 / 3.0,
        "{seen}"
    );
    // ...and is still the camera's picture (green), not a black frame.
    assert!(blur["green"].as_f64().unwrap() > 60.0, "{seen}");
    let rgb = |k: &str| -> Vec<u64> {
        seen[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .collect()
    };
    // The camera goes out as three simulcast layers, and the host, whose tile of the guest is
    // small, is forwarded a small one (the SFU follows the size each tile reports).
    let layers = seen["layers"].as_array().unwrap();
    let rids: Vec<&str> = layers.iter().map(|l| l["rid"].as_str().unwrap()).collect();
    assert_eq!(rids, ["f", "h", "q"], "{seen}");
    // Chrome pauses its top layers when the machine or the link is short (here, under the whole
    // suite, sometimes the 720p one): at least the two smaller ones run.
    let sending = layers
        .iter()
        .filter(|l| l["frames"].as_u64().unwrap() > 0)
        .count();
    assert!(
        sending >= 2 && layers[2]["frames"].as_u64().unwrap() > 0,
        "{seen}"
    );
    // Shown 72 px high, the guest comes as the 180p layer (or smaller, should Chrome scale its
    // layers down); without the tile's size the SFU would forward the biggest one it can.
    let received = seen["hostTile"]["received"].as_u64().unwrap();
    assert!(received > 0 && received <= 180, "{seen}");
    let m = rgb("pictureAtHost");
    assert!(m[0] > 150 && m[2] > 150 && m[1] < 100, "{seen}");
    let g = rgb("cameraAtHost");
    assert!(g[1] > 60 && g[1] > g[0] && g[1] > g[2], "{seen}");
    // The logo uploaded in the studio is drawn by the compositor from the uploads folder.
    let logo = seen["scene"]["logo"].as_str().unwrap();
    assert!(logo.ends_with(".png"), "{seen}");
    let uploads = dir.path().join("data").join("uploads");
    assert!(uploads.join(logo).exists(), "{seen}");
    assert!(
        !seen["maskedKey"]
            .as_str()
            .unwrap()
            .contains("journey-key-1")
    );
    // The broadcast asked for a low-latency watch page: hls.js fetched parts and blocked on
    // the playlist, as LL-HLS players do.
    let hls = &seen["hlsRequests"];
    assert!(
        hls["parts"].as_u64().unwrap() > 0 && hls["blocking"].as_u64().unwrap() > 0,
        "{seen}"
    );
    for shot in ["studio.png", "watch.png", "library.png"] {
        assert!(shots.join(shot).exists(), "{shot}");
    }
    assert!(up.signal("-TERM").success());
}

/// The broadcast's RTMP ingest URL with its stream key, as OBS is given it.
fn ingest_url(up: &Up, token: &str, id: &str) -> String {
    let (line, body) = http(
        up.port,
        "POST",
        &format!("/api/broadcasts/{id}/ingest-key"),
        Some(token),
        "",
    );
    assert!(
        line.contains("201") || line.contains("200"),
        "{line} {body}"
    );
    let key = json(&body);
    format!(
        "{}/{}",
        key["serverUrl"].as_str().unwrap(),
        key["streamKey"].as_str().unwrap()
    )
}

/// While the studio is the show, an OBS publish with the broadcast's key joins the studio as a
/// participant ("OBS") that everyone receives, the host can stage it, and it neither makes the
/// broadcast live nor replaces the show on the watch page; its end leaves the show as it was.
#[test]
fn an_obs_publish_joins_the_studio_as_a_source_and_leaves_the_show_alone() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&dir.path().join("data"), &media_worker());
    let (token, id) = backstage(&up, "host@example.com");
    let url = ingest_url(&up, &token, &id);
    let mut obs = crate::ingest::publish(&url, 60, true);

    // A subscribe-only bot (the host's invite) receives the source's video and audio: the bot
    // fails unless it got media from everyone who published.
    let (ok, out) = bots(
        &up,
        &id,
        &token,
        &["--count", "1", "--duration", "10s", "--subscribe-only"],
    );
    assert!(ok, "{out}");
    let s = summary(&out);
    assert!(s.starts_with("bots: 1, tracks received: 2, "), "{out}");
    assert!(bytes(&s) > 50_000, "{s}");

    // The host sees it in the studio as "OBS" and puts it on stage like any guest.
    let source = format!("ingest-{id}");
    let staged = tokio::runtime::Runtime::new().unwrap().block_on(async {
        use futures::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let url = format!(
            "ws://127.0.0.1:{}/api/broadcasts/{id}/studio?token={token}",
            up.port
        );
        let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
        let watch = async {
            while let Some(Ok(Message::Text(t))) = ws.next().await {
                let m = json(&t);
                if m["type"] == "joined" {
                    let listed = m["participants"].as_array().unwrap().iter().any(|p| {
                        p["id"] == source.as_str() && p["name"] == "OBS" && p["role"] == "guest"
                    });
                    assert!(listed, "{m}");
                    let stage = serde_json::json!({"type": "stage", "participant": source, "onStage": true});
                    ws.send(Message::Text(stage.to_string().into())).await.unwrap();
                } else if m["type"] == "participant" && m["id"] == source.as_str() && m["onStage"] == true {
                    return m;
                }
            }
            panic!("the studio socket closed");
        };
        tokio::time::timeout(std::time::Duration::from_secs(20), watch)
            .await
            .expect("the OBS source was never put on stage")
    });
    let publishing = staged["publishing"].to_string();
    assert!(
        publishing.contains("camera") && publishing.contains("microphone"),
        "{staged}"
    );

    // Not the show: the broadcast stays backstage, and viewers get no raw feed.
    let get = |path: &str| http(up.port, "GET", path, Some(&token), "");
    let (_, b) = get(&format!("/api/broadcasts/{id}"));
    assert_eq!(json(&b)["state"], "Backstage", "{b}");
    let (_, st) = get(&format!("/api/streams/{id}"));
    assert!(json(&st)["flvUrl"].is_null(), "{st}");
    let (line, _) = get(&format!("/live/{id}.flv"));
    assert!(line.contains("404"), "{line}");

    // The publisher goes: the show is untouched, and the raw feed is in the library as the
    // source's own recording.
    obs.kill().unwrap();
    let _ = obs.wait();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let title = loop {
        let (_, r) = get("/api/recordings");
        let list = json(&r);
        if let Some(t) = list
            .as_array()
            .and_then(|l| l.first())
            .map(|r| r["title"].clone())
        {
            break t;
        }
        assert!(std::time::Instant::now() < deadline, "no recording: {r}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    };
    assert_eq!(title, "Bots (OBS source)");
    let (_, b) = get(&format!("/api/broadcasts/{id}"));
    assert_eq!(json(&b)["state"], "Backstage", "{b}");
    assert!(up.signal("-TERM").success());
}

/// OBS with no audio source publishes video alone: the source still joins, with a silent
/// microphone, instead of failing (FFmpeg refuses an output mapped from a missing stream).
#[test]
fn an_obs_publish_without_audio_joins_with_a_silent_microphone() {
    let dir = tempfile::tempdir().unwrap();
    let mut up = Up::start(&dir.path().join("data"), &media_worker());
    let (token, id) = backstage(&up, "host@example.com");
    let url = ingest_url(&up, &token, &id);
    let mut obs = crate::ingest::publish_with(&url, 60, true, false);
    let (ok, out) = bots(
        &up,
        &id,
        &token,
        &["--count", "1", "--duration", "8s", "--subscribe-only"],
    );
    assert!(ok, "{out}");
    let s = summary(&out);
    assert!(s.starts_with("bots: 1, tracks received: 2, "), "{out}");
    obs.kill().unwrap();
    let _ = obs.wait();
    assert!(up.signal("-TERM").success());
}
