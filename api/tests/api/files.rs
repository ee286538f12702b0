//! /api/recordings (Range, signed file URLs, deletion) and /api/upload (sniffing, limits, names).

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};

use crate::common::{TestApp, both};
use serde_json::json;

both!(
    recordings_library,
    interrupted_recordings_of_ended_broadcasts_reach_the_library,
    uploads_are_sniffed_and_contained,
    brand_pictures_are_the_hosts_own_png_or_jpeg_uploads
);

pub(crate) async fn add_recording(app: &TestApp, owner_token: &str, bytes: &[u8]) -> String {
    let owner = app.get("/api/auth/me", Some(owner_token)).await.json["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = uuid::Uuid::new_v4().to_string();
    let rel = format!("recordings/{id}.mp4");
    std::fs::create_dir_all(app.state.settings.recordings_dir()).unwrap();
    std::fs::write(app.state.settings.data_dir.join(&rel), bytes).unwrap();
    // Recordings are registered by the media workers; here the row is written as they will write it.
    sqlx::query("INSERT INTO recordings (id, owner_id, title, path, content_type, size_bytes, duration_ms, created_at) VALUES ($1, $2, $3, $4, 'video/mp4', $5, 61000, $6)")
        .bind(&id)
        .bind(&owner)
        .bind("Episode 1")
        .bind(&rel)
        .bind(bytes.len() as i64)
        .bind(castyard_api::db::now_ms())
        .execute(&app.state.db.pool)
        .await
        .unwrap();
    id
}

async fn recordings_library(app: TestApp) {
    let host = app.host("host@example.com").await;
    let other = app.host("other@example.com").await;
    let content: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
    let id = add_recording(&app, &host, &content).await;

    let list = app.get("/api/recordings", Some(&host)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json.as_array().unwrap().len(), 1);
    let rec = &list.json[0];
    assert_eq!(rec["durationMs"], 61000);
    assert_eq!(rec["sizeBytes"], 10_000);
    assert!(
        app.get("/api/recordings", Some(&other))
            .await
            .json
            .as_array()
            .unwrap()
            .is_empty()
    );
    app.get(&format!("/api/recordings/{id}"), Some(&other))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(
        app.get(&format!("/api/recordings/{id}"), Some(&host))
            .await
            .json["title"],
        "Episode 1"
    );

    let file_url = rec["fileUrl"].as_str().unwrap().to_owned();
    let whole = app.get(&file_url, None).await;
    assert_eq!(whole.status, StatusCode::OK);
    assert_eq!(whole.bytes, content);
    assert_eq!(whole.headers[header::CONTENT_TYPE], "video/mp4");
    assert_eq!(whole.headers[header::ACCEPT_RANGES], "bytes");

    let ranged = app
        .send(
            Request::get(&file_url)
                .header(header::RANGE, "bytes=100-199")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(ranged.status, StatusCode::PARTIAL_CONTENT);
    assert_eq!(ranged.bytes, content[100..200]);
    assert_eq!(ranged.headers[header::CONTENT_RANGE], "bytes 100-199/10000");
    let tail = app
        .send(
            Request::get(&file_url)
                .header(header::RANGE, "bytes=-10")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(tail.bytes, content[9990..]);
    let beyond = app
        .send(
            Request::get(&file_url)
                .header(header::RANGE, "bytes=20000-30000")
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(beyond.status, StatusCode::RANGE_NOT_SATISFIABLE);

    // The owner may also fetch with a Bearer token; nobody else, and no forged file token.
    assert_eq!(
        app.get(&format!("/api/recordings/{id}/file"), Some(&host))
            .await
            .status,
        StatusCode::OK
    );
    app.get(&format!("/api/recordings/{id}/file"), Some(&other))
        .await
        .error(StatusCode::NOT_FOUND);
    app.get(&format!("/api/recordings/{id}/file"), None)
        .await
        .error(StatusCode::UNAUTHORIZED);
    app.get(&format!("/api/recordings/{id}/file?token=forged"), None)
        .await
        .error(StatusCode::UNAUTHORIZED);
    let second = add_recording(&app, &host, b"other").await;
    let wrong = file_url.replace(&id, &second);
    app.get(&wrong, None).await.error(StatusCode::NOT_FOUND);

    app.call(
        Method::DELETE,
        &format!("/api/recordings/{id}"),
        Some(&other),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND);
    let path = app
        .state
        .settings
        .data_dir
        .join(format!("recordings/{id}.mp4"));
    assert!(path.exists());
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/recordings/{id}"),
            Some(&host),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert!(!path.exists(), "deleting a recording removes its file");
    app.get(&file_url, None).await.error(StatusCode::NOT_FOUND);
    app.get("/api/recordings/not-a-uuid", Some(&host))
        .await
        .error(StatusCode::NOT_FOUND);
}

pub(crate) fn multipart(filename: &str, content_type: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "castyard-test-boundary";
    let mut body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{filename}\"\r\nContent-Type: {content_type}\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The smallest valid PNG: 1x1, one transparent pixel.
pub(crate) const PNG: &[u8] = &[
    0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00, 0x00, 0x1F, 0x15, 0xC4,
    0x89, 0x00, 0x00, 0x00, 0x0D, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9C, 0x63, 0x00, 0x01, 0x00, 0x00,
    0x05, 0x00, 0x01, 0x0D, 0x0A, 0x2D, 0xB4, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4E, 0x44, 0xAE,
    0x42, 0x60, 0x82,
];

async fn uploads_are_sniffed_and_contained(app: TestApp) {
    let host = app.host("host@example.com").await;
    // The client says SVG and names a path outside; the bytes say PNG and the name is only a label.
    let (ct, body) = multipart("../../../etc/passwd.png", "image/svg+xml", PNG);
    let up = app
        .raw(
            Method::POST,
            "/api/upload?kind=logo",
            Some(&host),
            &ct,
            body,
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text());
    assert_eq!(up.json["contentType"], "image/png");
    assert_eq!(up.json["kind"], "logo");
    assert_eq!(up.json["originalName"], "passwd.png");
    let id = up.json["id"].as_str().unwrap();
    let stored = app.state.settings.uploads_dir().join(format!("{id}.png"));
    assert!(stored.exists(), "stored under the uploads folder by id");
    assert!(!app.state.settings.data_dir.join("etc").exists());

    let got = app.get(up.json["url"].as_str().unwrap(), None).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.bytes, PNG);
    assert_eq!(got.headers[header::CONTENT_TYPE], "image/png");
    assert_eq!(got.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
    assert_eq!(
        app.get("/api/upload", Some(&host))
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        1
    );

    let before = app.snapshot().await;
    let files_before = std::fs::read_dir(app.state.settings.uploads_dir())
        .unwrap()
        .count();
    let svg = b"<svg xmlns=\"http://www.w3.org/2000/svg\"><script>alert(1)</script></svg>";
    let cases = [
        (
            "kind=logo",
            multipart("logo.png", "image/png", b"this is text, not an image"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "kind=logo",
            multipart("logo.svg", "image/svg+xml", svg),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "kind=logo",
            multipart("empty.png", "image/png", b""),
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "kind=logo",
            multipart(
                "big.png",
                "image/png",
                &[PNG, &vec![0u8; 300 * 1024]].concat(),
            ),
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "kind=wallpaper",
            multipart("logo.png", "image/png", PNG),
            StatusCode::BAD_REQUEST,
        ),
        (
            "",
            multipart("logo.png", "image/png", PNG),
            StatusCode::BAD_REQUEST,
        ),
    ];
    for (q, (ct, body), status) in cases {
        let r = app
            .raw(
                Method::POST,
                &format!("/api/upload?{q}"),
                Some(&host),
                &ct,
                body,
            )
            .await;
        r.error(status);
    }
    let no_file = app
        .raw(
            Method::POST,
            "/api/upload?kind=logo",
            Some(&host),
            "multipart/form-data; boundary=x",
            "--x--\r\n",
        )
        .await;
    assert!(no_file.status.is_client_error());
    app.raw(
        Method::POST,
        "/api/upload?kind=logo",
        None,
        &multipart("a.png", "image/png", PNG).0,
        multipart("a.png", "image/png", PNG).1,
    )
    .await
    .error(StatusCode::UNAUTHORIZED);
    assert_eq!(app.snapshot().await, before);
    assert_eq!(
        std::fs::read_dir(app.state.settings.uploads_dir())
            .unwrap()
            .count(),
        files_before
    );

    for path in [
        "/api/upload/..%2F..%2Fcastyard.db",
        "/api/upload/../../test.db",
        "/api/upload/not-a-uuid",
    ] {
        let r = app.get(path, None).await;
        assert!(r.status == StatusCode::NOT_FOUND, "{path}: {}", r.status);
    }
    let other = app.host("other@example.com").await;
    app.call(
        Method::DELETE,
        &format!("/api/upload/{id}"),
        Some(&other),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND);
    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/upload/{id}"),
            Some(&host),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert!(!stored.exists());
}

async fn upload(app: &TestApp, token: &str, kind: &str, name: &str, bytes: &[u8]) -> String {
    let (ct, body) = multipart(name, "application/octet-stream", bytes);
    let up = app
        .raw(
            Method::POST,
            &format!("/api/upload?kind={kind}"),
            Some(token),
            &ct,
            body,
        )
        .await;
    assert_eq!(up.status, StatusCode::CREATED, "{}", up.text());
    up.json["id"].as_str().unwrap().to_owned()
}

async fn brand_pictures_are_the_hosts_own_png_or_jpeg_uploads(app: TestApp) {
    let host = app.host("host@example.com").await;
    let other = app.host("other@example.com").await;
    let b = app
        .post(
            "/api/broadcasts",
            Some(&host),
            json!({"title": "Brand show"}),
        )
        .await;
    let scene = format!("/api/broadcasts/{}/scene", b.json["id"].as_str().unwrap());
    let logo = upload(&app, &host, "logo", "logo.png", PNG).await;
    let theirs = upload(&app, &other, "logo", "logo.png", PNG).await;
    // WebP is a fine upload for the web pages, but the show draws PNG and JPEG only.
    let webp = [b"RIFF\x1a\x00\x00\x00WEBPVP8 ".as_slice(), &[0u8; 32]].concat();
    let webp = upload(&app, &host, "logo", "logo.webp", &webp).await;
    let brand = |field: &str, id: &str| json!({"type": "set-brand", "brand": {field: id}});
    for (cmd, why) in [
        (brand("logo", &theirs), "is not one of your logo uploads"),
        (
            brand("background", &logo),
            "is not one of your background uploads",
        ),
        (brand("logo", &webp), "draws PNG and JPEG"),
    ] {
        let r = app.post(&scene, Some(&host), cmd.clone()).await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{cmd}: {}",
            r.text()
        );
        assert!(r.text().contains(why), "{cmd}: {}", r.text());
    }
    // The host's own PNG passes the checks; with no show running, that is the only answer.
    let r = app.post(&scene, Some(&host), brand("logo", &logo)).await;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.text());
}

/// A fragmented MP4 of `seconds` of test pattern, as a compositor records one.
fn fmp4(path: &std::path::Path, seconds: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let ok = std::process::Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-f",
            "lavfi",
        ])
        .args([
            "-i",
            &format!("testsrc2=size=320x180:rate=30:duration={seconds}"),
        ])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-movflags", "frag_keyframe+empty_moov+default_base_moof"])
        .arg(path)
        .status()
        .unwrap()
        .success();
    assert!(ok);
}

/// A compositor SIGKILLed mid-show leaves a recording with no manifest; if the broadcast then
/// ends, no compositor starts on that data to adopt it, so the API does, once the broadcast has
/// been over long enough that no compositor can still be finishing it.
async fn interrupted_recordings_of_ended_broadcasts_reach_the_library(app: TestApp) {
    use std::collections::HashSet;
    let host = app.host("host@example.com").await;
    let mut ids = Vec::new();
    for title in ["Long over", "Just ended"] {
        let id = app.create_broadcast(&host, json!({"title": title})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let r = app
            .post(&format!("/api/broadcasts/{id}/end"), Some(&host), json!({}))
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.json);
        ids.push(id);
    }
    let long_ago = castyard_api::db::now_ms() - 10 * 60_000;
    sqlx::query("UPDATE broadcasts SET ended_at = $1 WHERE id = $2")
        .bind(long_ago)
        .bind(&ids[0])
        .execute(&app.state.db.writer)
        .await
        .unwrap();
    let media = app.state.settings.media_dir();
    let dir = |id: &str| media.join(format!("bc-{id}")).join("recordings");
    fmp4(&dir(&ids[0]).join(format!("bc-{}.mp4", ids[0])), 2);
    std::fs::write(dir(&ids[0]).join("torn.mp4"), b"not a video at all").unwrap();
    fmp4(&dir(&ids[1]).join(format!("bc-{}.mp4", ids[1])), 2);

    let mut tried = HashSet::new();
    let adopted = castyard_api::library::adopt_orphans(&app.state, &mut tried).await;
    assert_eq!(
        adopted, 1,
        "only the playable file of the broadcast long over"
    );
    assert_eq!(castyard_api::library::collect(&app.state).await, 1);
    let list = app.get("/api/recordings", Some(&host)).await.json;
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["title"], "Long over");
    let ms = list[0]["durationMs"].as_i64().unwrap();
    assert!((1700..=2300).contains(&ms), "{ms} ms");
    // Nothing is probed twice, and the broadcast that just ended is left to its compositor.
    assert_eq!(
        castyard_api::library::adopt_orphans(&app.state, &mut tried).await,
        0
    );
    let just_ended: Vec<_> = std::fs::read_dir(dir(&ids[1]))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(just_ended.len(), 1, "{just_ended:?}");
}
