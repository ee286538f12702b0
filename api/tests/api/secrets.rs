//! Stream keys and control tokens: encrypted at rest, masked in replies, absent from logs; and the destination
//! test against a real RTMP server (nginx with the RTMP module).

use std::io::Write;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use axum::http::{Method, StatusCode};
use serde_json::json;
use sqlx::Row;

use crate::common::TestApp;

const KEY: &str = "sk-SUPERSECRET-7c1e-9876";
const KEY2: &str = "sk-ALSOSECRET-55aa-4321";

/// Collects everything the app logs, at every level.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn a_stream_key_never_leaves_in_a_reply_or_a_log() {
    let logs = Captured::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let app = TestApp::sqlite().await;
    let host = app.host("host@example.com").await;
    let mut replies = vec![];
    let b = app.post("/api/broadcasts", Some(&host), json!({"title": "Secret show", "destinations": [{"name": "yt", "kind": "youtube", "url": "rtmp://a.rtmp.youtube.com/live2", "streamKey": KEY}]})).await;
    assert_eq!(b.status, StatusCode::CREATED);
    let id = b.json["id"].as_str().unwrap().to_owned();
    replies.push(b.text());
    let added = app.post(&format!("/api/broadcasts/{id}/destinations"), Some(&host), json!({"name": "tw", "kind": "twitch", "url": "rtmp://live.twitch.tv/app", "streamKey": KEY2})).await;
    replies.push(added.text());
    // A refused request that carried a key must not echo it either.
    let refused = app.post(&format!("/api/broadcasts/{id}/destinations"), Some(&host), json!({"name": "tw", "kind": "twitch", "url": "rtmp://live.twitch.tv/app", "streamKey": KEY})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    replies.push(refused.text());
    let bad = app
        .post(
            &format!("/api/broadcasts/{id}/destinations"),
            Some(&host),
            json!({"name": "x", "kind": "custom", "url": "http://nope", "streamKey": KEY}),
        )
        .await;
    replies.push(bad.text());
    replies.push(
        app.get(&format!("/api/broadcasts/{id}"), Some(&host))
            .await
            .text(),
    );
    replies.push(app.get("/api/broadcasts", Some(&host)).await.text());
    replies.push(
        app.call(
            Method::PATCH,
            &format!("/api/broadcasts/{id}"),
            Some(&host),
            Some(json!({"title": "t2"})),
        )
        .await
        .text(),
    );
    replies.push(
        app.post(
            &format!("/api/broadcasts/{id}/start"),
            Some(&host),
            json!({}),
        )
        .await
        .text(),
    );
    replies.push(app.get("/api/streams", None).await.text());
    replies.push(app.get("/metrics", None).await.text());
    // Tokens travel in query strings for sockets and file URLs; even a miss must not log one.
    replies.push(
        app.get(&format!("/api/nope?token={KEY}"), None)
            .await
            .text(),
    );

    // The workers' control token: the backend got one, and it goes nowhere else.
    let control = app
        .embedded
        .desired(&format!("bc-{id}"))
        .expect("handed to the backend")
        .control_token;
    let control = control.expose().to_owned();
    assert!(control.len() >= 43, "256 bits or more");
    for r in &replies {
        for k in [KEY, KEY2, "SUPERSECRET", "ALSOSECRET", &control] {
            assert!(
                !r.contains(k),
                "a reply contains a stream key or token: {r}"
            );
        }
    }
    assert!(replies[1].contains("••••4321"));

    let logged = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(
        !logged.is_empty(),
        "the capture saw nothing, so it proves nothing"
    );
    for k in [KEY, KEY2, "SUPERSECRET", "ALSOSECRET", &control] {
        assert!(
            !logged.contains(k),
            "a log line contains a stream key or token"
        );
    }
    let sealed: String = sqlx::query("SELECT control_token FROM broadcasts WHERE id = $1")
        .bind(&id)
        .fetch_one(&app.state.db.pool)
        .await
        .unwrap()
        .try_get("control_token")
        .unwrap();
    assert!(
        !sealed.contains(&control),
        "the control token is stored sealed"
    );

    // At rest the key is ciphertext; the backend, and only the backend, receives it in clear.
    let rows = sqlx::query("SELECT key_ciphertext, key_last4 FROM destinations")
        .fetch_all(&app.state.db.pool)
        .await
        .unwrap();
    for row in rows {
        let sealed: String = row.try_get("key_ciphertext").unwrap();
        assert!(!sealed.contains("SECRET"), "stored in clear");
    }
    let name = format!("bc-{id}");
    let w = app.embedded.workloads(&name).unwrap();
    let c = w.compositor.unwrap();
    let spec_json = serde_json::to_string(&c).unwrap();
    assert!(
        !spec_json.contains("SECRET"),
        "the workload spec holds only secret references"
    );
    // Destinations created in the same instant sort by name, so look "yt" up by name.
    let yt = c.destinations.iter().find(|d| d.name == "yt").expect("yt");
    assert_eq!(yt.stream_key_secret_ref.key, "yt");
}

pub use castyard_media_worker::testkit::RtmpServer;

/// The API's test of the destination of broadcast `b` named `name`.
async fn test_destination(
    app: &TestApp,
    host: &str,
    b: &serde_json::Value,
    name: &str,
) -> crate::common::Reply {
    let dest = b["destinations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap()["id"]
        .as_str()
        .unwrap();
    app.post(
        &format!(
            "/api/broadcasts/{}/destinations/{dest}/test",
            b["id"].as_str().unwrap()
        ),
        Some(host),
        json!({}),
    )
    .await
}

#[tokio::test]
async fn destination_test_does_an_rtmp_handshake() {
    let rtmp = RtmpServer::start();
    let app =
        TestApp::sqlite_with(|s| s.rtmp_probe_timeout = std::time::Duration::from_secs(3)).await;
    let host = app.host("host@example.com").await;
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // An HTTP server is not an RTMP server: answer with HTTP and see the probe say so.
    let http = TcpListener::bind("127.0.0.1:0").unwrap();
    let http_port = http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = http.accept() {
            let _ = s.write_all(&[b'H'; 4096]);
            std::thread::sleep(std::time::Duration::from_secs(1));
        }
    });
    let b = app
        .create_broadcast(&host, json!({"title": "Probe", "destinations": [
            {"name": "local", "kind": "custom", "url": format!("rtmp://127.0.0.1:{}/live", rtmp.port), "streamKey": "local-key-123456"},
            {"name": "closed", "kind": "custom", "url": format!("rtmp://127.0.0.1:{closed}/live"), "streamKey": "local-key-123456"},
            {"name": "http", "kind": "custom", "url": format!("rtmp://127.0.0.1:{http_port}/live"), "streamKey": "local-key-123456"},
        ]}))
        .await;
    let test = |name: &'static str| test_destination(&app, &host, &b, name);
    let ok = test("local").await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json["ok"], true, "{}", ok.json);
    assert!(ok.json["latencyMs"].is_u64());
    let refused = test("closed").await;
    assert_eq!(refused.json["ok"], false);
    assert!(
        refused.json["error"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{}",
        refused.json
    );
    assert_eq!(refused.json["errorKind"], "Unreachable");
    let not_rtmp = test("http").await;
    assert_eq!(not_rtmp.json["ok"], false, "{}", not_rtmp.json);
    assert_eq!(not_rtmp.json["errorKind"], "Protocol");
}

/// The destination test over TLS says what a live show would say: trusted through the
/// server's extra CA file it passes; an untrusted issuer, a wrong name and an expired
/// certificate each fail as Tls with the reason.
#[tokio::test]
async fn destination_test_over_rtmps_names_each_tls_failure() {
    use castyard_media_worker::testkit::{TestCa, TlsRelay};
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = dir.path().join("extra-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    // As `castyard up --extra-ca-file` does at start (each test is a process of its own).
    castyard_media_worker::tls::init(Some(ca_file)).unwrap();
    let rtmp = RtmpServer::start();
    let relay = |names: &[&str], expired: bool, by: &TestCa| {
        let (cert, key) = by.server(names, expired);
        TlsRelay::start(rtmp.port, &cert, &key)
    };
    let stranger = TestCa::new();
    let relays = [
        ("good", relay(&["127.0.0.1"], false, &ca)),
        ("untrusted", relay(&["127.0.0.1"], false, &stranger)),
        ("misnamed", relay(&["rtmp.example.com"], false, &ca)),
        ("expired", relay(&["127.0.0.1"], true, &ca)),
    ];
    let app =
        TestApp::sqlite_with(|s| s.rtmp_probe_timeout = std::time::Duration::from_secs(3)).await;
    let host = app.host("host@example.com").await;
    let destinations: Vec<_> = relays
        .iter()
        .map(|(name, r)| {
            json!({"name": name, "kind": "custom",
            "url": format!("rtmps://127.0.0.1:{}/live", r.port), "streamKey": "tls-key-1234567"})
        })
        .collect();
    let b = app
        .create_broadcast(&host, json!({"title": "TLS", "destinations": destinations}))
        .await;
    for (name, reason) in [
        ("good", ""),
        ("untrusted", "unknown issuer"),
        ("misnamed", "name mismatch"),
        ("expired", "expired"),
    ] {
        let r = test_destination(&app, &host, &b, name).await;
        assert_eq!(r.status, StatusCode::OK);
        if reason.is_empty() {
            assert_eq!(r.json["ok"], true, "{}", r.json);
            continue;
        }
        assert_eq!(r.json["ok"], false, "{name}: {}", r.json);
        assert_eq!(r.json["errorKind"], "Tls", "{name}: {}", r.json);
        let error = r.json["error"].as_str().unwrap();
        assert!(
            error.starts_with(&format!("TLS: {reason}")),
            "{name}: {error}"
        );
        assert!(!error.contains("tls-key"), "no key in {error}");
    }
}
