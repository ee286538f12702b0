//! /api/broadcasts and destinations: the lifecycle, what reaches the backend, and bad input.

use std::sync::Arc;

use axum::http::{Method, StatusCode};
use castyard_api::backend::{BroadcastBackend, DesiredBroadcast};
use castyard_crd::BroadcastStatus;
use serde_json::{Value, json};

use crate::common::{TestApp, both};

both!(
    lifecycle,
    bad_specs_change_nothing,
    other_users_broadcasts_are_invisible,
    sql_metacharacters_are_plain_text,
    destinations_add_remove
);

fn dest(name: &str, key: &str) -> Value {
    json!({"name": name, "kind": "youtube", "url": "rtmp://a.rtmp.youtube.com/live2", "streamKey": key})
}

async fn lifecycle(app: TestApp) {
    let host = app.host("host@example.com").await;
    let b = app
        .create_broadcast(&host, json!({
            "title": "Launch", "description": "Big day", "recording": true, "layout": "spotlight",
            "output": {"resolution": "1080p", "fps": 30}, "maxGuests": 4, "scheduledStart": "2026-12-01T17:00:00Z",
            "destinations": [dest("yt", "yt-key-000011112222"), {"name": "fb", "kind": "facebook", "url": "rtmps://live-api-s.facebook.com:443/rtmp/", "streamKey": "fb-key-333344445555", "enabled": false}]
        }))
        .await;
    let id = b["id"].as_str().unwrap().to_owned();
    assert_eq!(b["state"], "Backstage");
    assert_eq!(b["layout"], "spotlight");
    assert_eq!(b["output"]["resolution"], "1080p");
    assert_eq!(
        b["output"]["videoBitrateKbps"], 4500,
        "defaults fill the rest"
    );
    assert_eq!(b["maxGuests"], 4);
    let by_name = |n: &str| {
        b["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == n)
            .unwrap()
            .clone()
    };
    assert_eq!(by_name("yt")["streamKey"], "••••2222");
    assert_eq!(by_name("fb")["enabled"], false);
    assert_eq!(b["watchUrl"], format!("http://castyard.test/watch/{id}"));
    let name = b["name"].as_str().unwrap().to_owned();

    // The backend got the spec: destinations reference the keys Secret, the keys travel beside it.
    let w = app
        .embedded
        .workloads(&name)
        .expect("backend received the broadcast");
    assert!(w.sfu.is_some());
    let c = w.compositor.expect("recording needs a compositor");
    assert!(c.destinations.is_empty(), "backstage sends nowhere");

    let list = app.get("/api/broadcasts", Some(&host)).await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(list.json.as_array().unwrap().len(), 1);
    assert_eq!(
        app.get("/api/broadcasts?limit=0", Some(&host))
            .await
            .error(StatusCode::BAD_REQUEST),
        "bad_request"
    );
    assert_eq!(
        app.get("/api/broadcasts?limit=abc", Some(&host))
            .await
            .error(StatusCode::BAD_REQUEST),
        "bad_request"
    );

    let got = app.get(&format!("/api/broadcasts/{id}"), Some(&host)).await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json["title"], "Launch");
    assert!(got.json["phase"].is_null(), "nothing has observed it yet");

    let patched = app
        .call(
            Method::PATCH,
            &format!("/api/broadcasts/{id}"),
            Some(&host),
            Some(json!({"title": "Launch day", "layout": "grid"})),
        )
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.json);
    assert_eq!(patched.json["title"], "Launch day");
    assert_eq!(patched.json["layout"], "grid");
    assert_eq!(
        patched.json["description"], "Big day",
        "fields left out are kept"
    );

    let live = app
        .post(
            &format!("/api/broadcasts/{id}/start"),
            Some(&host),
            json!({}),
        )
        .await;
    assert_eq!(live.status, StatusCode::OK, "{}", live.json);
    assert_eq!(live.json["state"], "Live");
    assert!(live.json["startedAt"].is_string());
    let c = app.embedded.workloads(&name).unwrap().compositor.unwrap();
    let names: Vec<_> = c.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["yt"], "only enabled destinations go out");
    assert_eq!(
        c.destinations[0].stream_key_secret_ref.name,
        format!("{name}-stream-keys")
    );
    // Starting twice is harmless.
    assert_eq!(
        app.post(
            &format!("/api/broadcasts/{id}/start"),
            Some(&host),
            json!({})
        )
        .await
        .status,
        StatusCode::OK
    );

    let streams = app.get("/api/streams", None).await;
    assert_eq!(streams.json.as_array().unwrap().len(), 1);
    assert_eq!(streams.json[0]["title"], "Launch day");
    assert_eq!(streams.json[0]["hostName"], "Host");

    let ended = app
        .post(&format!("/api/broadcasts/{id}/end"), Some(&host), json!({}))
        .await;
    assert_eq!(ended.json["state"], "Ended");
    assert!(ended.json["endedAt"].is_string());
    let w = app.embedded.workloads(&name).unwrap();
    assert!(
        w.sfu.is_none() && w.compositor.is_none(),
        "an ended broadcast runs nothing"
    );
    assert_eq!(
        app.get("/api/streams", None)
            .await
            .json
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        app.get(&format!("/api/streams/{id}"), None).await.json["state"],
        "Ended"
    );

    let before = app.snapshot().await;
    assert_eq!(
        app.post(
            &format!("/api/broadcasts/{id}/start"),
            Some(&host),
            json!({})
        )
        .await
        .error(StatusCode::CONFLICT),
        "conflict"
    );
    app.call(
        Method::PATCH,
        &format!("/api/broadcasts/{id}"),
        Some(&host),
        Some(json!({"title": "again"})),
    )
    .await
    .error(StatusCode::CONFLICT);
    app.post(
        &format!("/api/broadcasts/{id}/destinations"),
        Some(&host),
        dest("tw", "twitch-key-123456789"),
    )
    .await
    .error(StatusCode::CONFLICT);
    assert_eq!(app.snapshot().await, before);

    assert_eq!(
        app.call(
            Method::DELETE,
            &format!("/api/broadcasts/{id}"),
            Some(&host),
            None
        )
        .await
        .status,
        StatusCode::NO_CONTENT
    );
    assert!(app.embedded.workloads(&name).is_none());
    app.get(&format!("/api/broadcasts/{id}"), Some(&host))
        .await
        .error(StatusCode::NOT_FOUND);
    assert_eq!(app.count("destinations").await, 0);
}

async fn bad_specs_change_nothing(app: TestApp) {
    let host = app.host("host@example.com").await;
    let b = app
        .create_broadcast(
            &host,
            json!({"title": "Existing", "destinations": [dest("yt", "key-0000000001")]}),
        )
        .await;
    let id = b["id"].as_str().unwrap();
    let before = app.snapshot().await;
    let eleven: Vec<Value> = (0..11)
        .map(|i| dest(&format!("d{i}"), "key-0000000001"))
        .collect();
    let bad_creates = [
        json!({}),
        json!({"title": ""}),
        json!({"title": "   "}),
        json!({"title": "x".repeat(201)}),
        json!({"title": 42}),
        json!({"title": "ok", "output": {"fps": 0}}),
        json!({"title": "ok", "output": {"videoBitrateKbps": 999999}}),
        json!({"title": "ok", "output": {"resolution": "4k"}}),
        json!({"title": "ok", "maxGuests": 11}),
        json!({"title": "ok", "maxGuests": 0}),
        json!({"title": "ok", "maxGuests": -1}),
        json!({"title": "ok", "layout": "mosaic"}),
        json!({"title": "ok", "scheduledStart": "tomorrow"}),
        json!({"title": "ok", "state": "Live"}),
        json!({"title": "ok", "destinations": [{"name": "web", "kind": "custom", "url": "http://example.com/live", "streamKey": "k-123456789"}]}),
        json!({"title": "ok", "destinations": [{"name": "web", "kind": "custom", "url": "file:///etc/passwd", "streamKey": "k-123456789"}]}),
        json!({"title": "ok", "destinations": [dest("yt", "k-123456789"), dest("yt", "k-987654321")]}),
        json!({"title": "ok", "destinations": [dest("Bad Name", "k-123456789")]}),
        json!({"title": "ok", "destinations": [dest("yt", "")]}),
        json!({"title": "ok", "destinations": [dest("yt", "has spaces in it")]}),
        json!({"title": "ok", "destinations": [{"name": "tt", "kind": "tiktok", "url": "rtmp://x/live", "streamKey": "k-123456789"}]}),
        json!({"title": "ok", "destinations": eleven}),
    ];
    for body in bad_creates {
        let r = app.post("/api/broadcasts", Some(&host), body.clone()).await;
        assert!(
            r.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body} gave {} {}",
            r.status,
            r.text()
        );
        r.error(StatusCode::UNPROCESSABLE_ENTITY);
    }
    let r = app
        .raw(
            Method::POST,
            "/api/broadcasts",
            Some(&host),
            "application/json",
            "{\"title\": \"unterminated",
        )
        .await;
    r.error(StatusCode::BAD_REQUEST);
    let huge = json!({"title": "ok", "description": "x".repeat(20 * 1024)});
    app.post("/api/broadcasts", Some(&host), huge)
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE);

    for body in [
        json!({"output": {"fps": 200}}),
        json!({"title": ""}),
        json!({"name": "bc-renamed"}),
        json!({"maxGuests": "ten"}),
    ] {
        let r = app
            .call(
                Method::PATCH,
                &format!("/api/broadcasts/{id}"),
                Some(&host),
                Some(body.clone()),
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {}",
            r.text()
        );
    }
    for body in [
        dest("yt", "key-dup-0000001"),
        json!({"name": "x", "kind": "custom", "url": "rtmp://", "streamKey": "k-123456789"}),
        json!({"name": "x"}),
    ] {
        let r = app
            .post(
                &format!("/api/broadcasts/{id}/destinations"),
                Some(&host),
                body.clone(),
            )
            .await;
        assert!(r.status.is_client_error(), "{body}: {}", r.text());
        r.error(r.status);
    }
    assert_eq!(app.snapshot().await, before);
    let still = app
        .get(&format!("/api/broadcasts/{id}"), Some(&host))
        .await
        .json;
    assert_eq!(still["title"], "Existing");
    assert_eq!(still["destinations"].as_array().unwrap().len(), 1);
}

async fn other_users_broadcasts_are_invisible(app: TestApp) {
    let alice = app.host("alice@example.com").await;
    let mallory = app.host("mallory@example.com").await;
    let b = app
        .create_broadcast(
            &alice,
            json!({"title": "Alice's show", "destinations": [dest("yt", "alice-key-12345678")]}),
        )
        .await;
    let id = b["id"].as_str().unwrap();
    let dest_id = b["destinations"][0]["id"].as_str().unwrap();
    let before = app.snapshot().await;
    let attempts = [
        (Method::GET, format!("/api/broadcasts/{id}"), None),
        (
            Method::PATCH,
            format!("/api/broadcasts/{id}"),
            Some(json!({"title": "pwned"})),
        ),
        (Method::DELETE, format!("/api/broadcasts/{id}"), None),
        (
            Method::POST,
            format!("/api/broadcasts/{id}/start"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/broadcasts/{id}/end"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/broadcasts/{id}/invites"),
            Some(json!({})),
        ),
        (
            Method::POST,
            format!("/api/broadcasts/{id}/destinations"),
            Some(dest("evil", "mallory-key-1234")),
        ),
        (
            Method::DELETE,
            format!("/api/broadcasts/{id}/destinations/{dest_id}"),
            None,
        ),
        (
            Method::POST,
            format!("/api/broadcasts/{id}/destinations/{dest_id}/test"),
            Some(json!({})),
        ),
    ];
    for (m, path, body) in attempts {
        let r = app.call(m.clone(), &path, Some(&mallory), body).await;
        assert_eq!(r.error(StatusCode::NOT_FOUND), "not_found", "{m} {path}");
    }
    assert!(
        app.get("/api/broadcasts", Some(&mallory))
            .await
            .json
            .as_array()
            .unwrap()
            .is_empty()
    );
    // Unknown and malformed ids are simply not found.
    for path in [
        "/api/broadcasts/00000000-0000-4000-8000-000000000000",
        "/api/broadcasts/not-a-uuid",
        "/api/broadcasts/..%2F..%2Fetc",
        &format!("/api/broadcasts/{id}/destinations/nope"),
    ] {
        app.call(Method::DELETE, path, Some(&alice), None)
            .await
            .error(StatusCode::NOT_FOUND);
    }
    assert_eq!(app.snapshot().await, before);
    assert_eq!(
        app.get(&format!("/api/broadcasts/{id}"), Some(&alice))
            .await
            .json["title"],
        "Alice's show"
    );
}

async fn sql_metacharacters_are_plain_text(app: TestApp) {
    let nasty = "Robert'); DROP TABLE broadcasts; -- \" \\ % _ $1 ?";
    let r = app.post("/api/auth/register", None, json!({"email": "o'brien+x@example.com", "password": "p'; DROP TABLE users; --", "displayName": nasty})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    let host = r.json["accessToken"].as_str().unwrap();
    assert_eq!(r.json["user"]["displayName"], nasty);
    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "o'brien+x@example.com", "password": "p'; DROP TABLE users; --"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK);
    let bad_login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "' OR '1'='1", "password": "' OR '1'='1"}),
        )
        .await;
    bad_login.error(StatusCode::UNAUTHORIZED);

    let b = app
        .create_broadcast(host, json!({"title": nasty, "description": nasty, "destinations": [{"name": "x", "kind": "custom", "url": "rtmp://example.com/live'--", "streamKey": "key';DROP-TABLE"}]}))
        .await;
    assert_eq!(b["title"], nasty);
    assert_eq!(b["description"], nasty);
    assert_eq!(b["destinations"][0]["url"], "rtmp://example.com/live'--");
    let id = b["id"].as_str().unwrap();
    let p = app
        .call(
            Method::PATCH,
            &format!("/api/broadcasts/{id}"),
            Some(host),
            Some(json!({"title": "' OR 1=1 --"})),
        )
        .await;
    assert_eq!(p.json["title"], "' OR 1=1 --");
    let list = app
        .get("/api/broadcasts?limit=10&offset=0", Some(host))
        .await;
    assert_eq!(
        list.json.as_array().unwrap().len(),
        1,
        "no row leaked or vanished"
    );
    assert_eq!(app.count("broadcasts").await, 1);
    assert_eq!(app.count("users").await, 1);
}

async fn destinations_add_remove(app: TestApp) {
    let host = app.host("host@example.com").await;
    let b = app.create_broadcast(&host, json!({"title": "Show"})).await;
    let id = b["id"].as_str().unwrap();
    let name = b["name"].as_str().unwrap();
    app.post(
        &format!("/api/broadcasts/{id}/start"),
        Some(&host),
        json!({}),
    )
    .await;

    let added = app
        .post(
            &format!("/api/broadcasts/{id}/destinations"),
            Some(&host),
            dest("yt", "live-key-abcdefgh9876"),
        )
        .await;
    assert_eq!(added.status, StatusCode::CREATED, "{}", added.json);
    assert_eq!(added.json["streamKey"], "••••9876");
    assert_eq!(added.json["name"], "yt");
    // Added while live: it reaches the compositor's configuration at once.
    let c = app.embedded.workloads(name).unwrap().compositor.unwrap();
    assert_eq!(c.destinations.len(), 1);
    let dup = app
        .post(
            &format!("/api/broadcasts/{id}/destinations"),
            Some(&host),
            dest("yt", "other-key-12345678"),
        )
        .await;
    assert_eq!(dup.error(StatusCode::CONFLICT), "conflict");
    let twitch = app.post(&format!("/api/broadcasts/{id}/destinations"), Some(&host), json!({"name": "twitch", "kind": "twitch", "url": "rtmp://live.twitch.tv/app", "streamKey": "live_123_abcdefgh"})).await;
    assert_eq!(twitch.status, StatusCode::CREATED);

    let dest_id = added.json["id"].as_str().unwrap();
    let del = app
        .call(
            Method::DELETE,
            &format!("/api/broadcasts/{id}/destinations/{dest_id}"),
            Some(&host),
            None,
        )
        .await;
    assert_eq!(del.status, StatusCode::NO_CONTENT);
    let c = app.embedded.workloads(name).unwrap().compositor.unwrap();
    let names: Vec<_> = c.destinations.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(names, ["twitch"], "removing one leaves the other");
    app.call(
        Method::DELETE,
        &format!("/api/broadcasts/{id}/destinations/{dest_id}"),
        Some(&host),
        None,
    )
    .await
    .error(StatusCode::NOT_FOUND);
}

/// A backend that refuses everything, as an unreachable Kubernetes API would.
struct RefusingBackend;

#[async_trait::async_trait]
impl BroadcastBackend for RefusingBackend {
    async fn apply(&self, _: &DesiredBroadcast) -> anyhow::Result<()> {
        anyhow::bail!("connection refused")
    }
    async fn delete(&self, _: &str) -> anyhow::Result<()> {
        anyhow::bail!("connection refused")
    }
    async fn status(&self, _: &str) -> anyhow::Result<Option<BroadcastStatus>> {
        anyhow::bail!("connection refused")
    }
}

#[tokio::test]
async fn a_refusing_backend_leaves_the_database_unchanged() {
    let app = TestApp::with_backend(Arc::new(RefusingBackend)).await;
    let host = app.host("host@example.com").await;
    let before = app.snapshot().await;
    let r = app
        .post(
            "/api/broadcasts",
            Some(&host),
            json!({"title": "Doomed", "destinations": [dest("yt", "key-123456789")]}),
        )
        .await;
    assert_eq!(r.error(StatusCode::BAD_GATEWAY), "backend_unavailable");
    assert!(
        !r.text().contains("connection refused"),
        "backend details are logged, not sent"
    );
    assert_eq!(app.snapshot().await, before);
}
