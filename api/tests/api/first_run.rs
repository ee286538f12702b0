//! The first hour on a fresh machine: `castyard up` without FFmpeg still serves the studio and
//! refuses to go live with the fix named; a worker that cannot start says why in the API reply;
//! workers' output arrives prefixed with who spoke, without escape codes, or as JSON lines.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};

use crate::cli::{Up, http, spawn_up};

fn media_worker() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_BIN_EXE_castyard")).with_file_name("castyard-media-worker")
}

/// `castyard up` with the real media worker, its stderr collected line by line.
fn up_collecting(
    data: &std::path::Path,
    configure: impl FnOnce(&mut std::process::Command),
) -> (Up, Arc<Mutex<Vec<String>>>) {
    let (mut child, port) = spawn_up(data, |c| {
        c.arg("--media-worker")
            .arg(media_worker())
            .arg("--web-dir")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../frontend/dist"))
            .env_remove("CASTYARD_FFMPEG")
            .env_remove("CASTYARD_LOG_JSON")
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped());
        configure(c);
    });
    let lines = Arc::new(Mutex::new(Vec::new()));
    let stderr = child.stderr.take().unwrap();
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (Up { child, port }, lines)
}

/// Waits (20 s at most) for a line `ok` accepts.
fn wait_for_line(lines: &Mutex<Vec<String>>, ok: impl Fn(&str) -> bool) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(l) = lines.lock().unwrap().iter().find(|l| ok(l)) {
            return l.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no such line in {:#?}",
            lines.lock().unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A host and a broadcast whose SFU is up: (token, id, object name).
fn backstage(up: &Up) -> (String, String, String) {
    let (token, id) = crate::studio::backstage(up, "host@example.com");
    let (_, body) = http(
        up.port,
        "GET",
        &format!("/api/broadcasts/{id}"),
        Some(&token),
        "",
    );
    let name = serde_json::from_str::<Value>(&body).unwrap()["name"]
        .as_str()
        .unwrap()
        .to_owned();
    (token, id, name)
}

#[test]
fn without_ffmpeg_the_studio_works_and_going_live_names_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    // A PATH with nothing on it: no FFmpeg anywhere castyard would look.
    let empty = dir.path().join("empty-path");
    std::fs::create_dir(&empty).unwrap();
    let data = dir.path().join("data");
    let (up, lines) = up_collecting(&data, |c| {
        c.env("PATH", &empty);
    });
    let fix = "ffmpeg not found on PATH: apt-get install ffmpeg, or set CASTYARD_FFMPEG";
    wait_for_line(&lines, |l| l.contains(fix));

    // The studio is served, and a show can be prepared backstage.
    let (line, body) = http(up.port, "GET", "/", None, "");
    assert!(line.contains("200") && body.contains("<html"), "{line}");
    let (token, id, name) = backstage(&up);

    // Going live is refused with the same line, and nothing starts.
    let (line, body) = http(
        up.port,
        "POST",
        &format!("/api/broadcasts/{id}/start"),
        Some(&token),
        "",
    );
    assert!(line.contains("409"), "{line} {body}");
    let err: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(err["error"]["code"], "conflict");
    assert_eq!(
        err["error"]["message"],
        format!("this server cannot go live: {fix}")
    );
    std::thread::sleep(Duration::from_secs(2));
    let (_, body) = http(
        up.port,
        "GET",
        &format!("/api/broadcasts/{id}"),
        Some(&token),
        "",
    );
    let b: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (b["state"].as_str(), b["phase"].as_str()),
        (Some("Backstage"), Some("Backstage"))
    );
    assert!(
        !data.join("workers").join(&name).join("compositor").exists(),
        "no compositor was started"
    );
    let all = lines.lock().unwrap().clone();
    assert!(
        !all.iter().any(|l| l.contains("restarting after backoff")),
        "nothing loops: {all:#?}"
    );
    // The SFU's own lines arrive prefixed with who spoke, and no escape code reaches a
    // stderr that is not a terminal.
    let ready = wait_for_line(&lines, |l| l.contains("SFU ready"));
    assert!(ready.starts_with(&format!("sfu {name} ")), "{ready}");
    assert!(
        !all.iter().any(|l| l.contains('\u{1b}')),
        "escape codes in {all:#?}"
    );
}

#[test]
fn with_log_json_every_worker_line_is_json_naming_its_role_and_broadcast() {
    let dir = tempfile::tempdir().unwrap();
    let (up, lines) = up_collecting(&dir.path().join("data"), |c| {
        c.arg("--log-json");
    });
    let (_, _, name) = backstage(&up);
    let ready = wait_for_line(&lines, |l| l.contains("SFU ready"));
    let v: Value = serde_json::from_str(&ready).unwrap_or_else(|e| panic!("{e}: {ready}"));
    assert_eq!(v["role"], "sfu");
    assert_eq!(v["broadcast"], json!(name));
    assert_eq!(v["fields"]["message"], "SFU ready");
    for l in lines.lock().unwrap().iter() {
        let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
        assert!(v.is_object(), "{l}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compositor_that_cannot_start_says_why_in_the_api_reply() {
    use castyard_api::backend::embedded::EmbeddedBackend;
    use castyard_operator::local::{LocalBackend, LocalConfig};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    // An FFmpeg that is there but fails whatever it is asked.
    let ffmpeg = dir.path().join("ffmpeg");
    std::fs::write(
        &ffmpeg,
        "#!/bin/sh\necho 'cannot load libavcodec' >&2\nexit 1\n",
    )
    .unwrap();
    std::fs::set_permissions(&ffmpeg, std::fs::Permissions::from_mode(0o755)).unwrap();
    let mut local = LocalConfig::new(media_worker(), dir.path().join("workers"));
    local.ffmpeg = Some(ffmpeg);
    let workers = Arc::new(LocalBackend::new(local));
    let app = crate::common::TestApp::with_backend(Arc::new(EmbeddedBackend::with_workers(
        workers.clone(),
    )))
    .await;
    let token = app.host("host@example.com").await;
    let b = app
        .create_broadcast(&token, json!({"title": "Doomed"}))
        .await;
    let id = b["id"].as_str().unwrap();
    let started = app
        .post(
            &format!("/api/broadcasts/{id}/start"),
            Some(&token),
            json!({}),
        )
        .await;
    assert_eq!(
        started.status,
        axum::http::StatusCode::OK,
        "{}",
        started.json
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let b = loop {
        let b = app
            .get(&format!("/api/broadcasts/{id}"), Some(&token))
            .await
            .json;
        // The SFU, which is fine, may still be starting when the compositor has failed.
        let sfu_ready = b["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "SfuReady" && c["status"] == "True");
        if b["phase"] == "Failed" && sfu_ready {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "never Failed: {b}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let cond = b["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "CompositorReady")
        .cloned()
        .unwrap();
    assert_eq!(cond["status"], "False", "{b}");
    assert_eq!(cond["reason"], "EncoderUnavailable", "{b}");
    let message = cond["message"].as_str().unwrap();
    assert!(
        message.contains("-version failed") && message.contains("cannot load libavcodec"),
        "{message}"
    );
    assert!(message.contains("backing off"), "{message}");
    assert_eq!(b["message"], format!("EncoderUnavailable: {message}"));
    workers.shutdown().await;
}
