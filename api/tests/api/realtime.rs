//! The realtime socket: chat channels, viewer counts, events, bad messages; fan-out across
//! replicas through Postgres; and one real WebSocket over TCP.

use std::time::Duration;

use castyard_api::auth::user_from_token;
use castyard_api::routes::ws::session;
use futures::channel::mpsc;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};

use crate::common::TestApp;

/// A client on the other end of a session, driven through channels.
struct Client {
    tx: mpsc::UnboundedSender<Result<String, axum::Error>>,
    rx: mpsc::UnboundedReceiver<String>,
}

impl Client {
    fn connect(app: &TestApp, token: Option<&str>) -> Self {
        let user = token.map(|t| user_from_token(&app.state, t).unwrap());
        let (tx, incoming) = mpsc::unbounded();
        let (outgoing, rx) = mpsc::unbounded();
        tokio::spawn(session(app.state.clone(), user, incoming, outgoing));
        Self { tx, rx }
    }

    fn send(&self, v: Value) {
        self.tx.unbounded_send(Ok(v.to_string())).unwrap();
    }

    fn send_raw(&self, s: &str) {
        self.tx.unbounded_send(Ok(s.to_owned())).unwrap();
    }

    async fn recv(&mut self) -> Value {
        let s = tokio::time::timeout(Duration::from_secs(5), self.rx.next())
            .await
            .expect("a message within 5 s")
            .expect("session open");
        serde_json::from_str(&s).unwrap()
    }

    /// The next message of `kind`, skipping others (viewer counts arrive whenever people come and go).
    async fn next_of(&mut self, kind: &str) -> Value {
        loop {
            let m = self.recv().await;
            if m["type"] == kind {
                return m;
            }
        }
    }

    /// The next chat message with this text (a sender also receives its own messages).
    async fn chat_text(&mut self, text: &str) -> Value {
        loop {
            let m = self.next_of("chat").await;
            if m["message"]["text"] == text {
                return m;
            }
        }
    }

    /// The next message whose type is one of `kinds`. One broadcast's events reach a
    /// connection in order, so "the next chat is the later marker" proves an earlier one
    /// was never delivered, without waiting on a clock.
    async fn next_of_any(&mut self, kinds: &[&str]) -> Value {
        loop {
            let m = self.recv().await;
            if kinds.iter().any(|k| m["type"] == *k) {
                return m;
            }
        }
    }
}

async fn show(app: &TestApp) -> (String, String, String, String) {
    let host = app.host("host@example.com").await;
    let b = app
        .create_broadcast(&host, json!({"title": "Live chat"}))
        .await;
    let id = b["id"].as_str().unwrap().to_owned();
    let inv = app
        .post(
            &format!("/api/broadcasts/{id}/invites"),
            Some(&host),
            json!({}),
        )
        .await
        .json;
    let guest = app
        .post(
            "/api/auth/invite/accept",
            None,
            json!({"token": inv["token"], "displayName": "Gail"}),
        )
        .await
        .json["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let viewer = app
        .post(
            "/api/auth/viewer",
            None,
            json!({"broadcastId": id, "displayName": "Vic"}),
        )
        .await
        .json["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    (id, host, guest, viewer)
}

#[tokio::test]
async fn studio_and_public_chat_stay_apart() {
    let app = TestApp::sqlite().await;
    let (id, host, guest, viewer) = show(&app).await;
    let mut h = Client::connect(&app, Some(&host));
    let mut g = Client::connect(&app, Some(&guest));
    let mut v = Client::connect(&app, Some(&viewer));
    let mut anon = Client::connect(&app, None);

    h.send(json!({"type": "join", "broadcastId": id, "channel": "studio"}));
    assert_eq!(h.next_of("joined").await["channel"], "studio");
    g.send(json!({"type": "join", "broadcastId": id, "channel": "studio"}));
    g.next_of("joined").await;
    v.send(json!({"type": "join", "broadcastId": id, "channel": "studio"}));
    assert_eq!(
        v.next_of("error").await["code"],
        "forbidden",
        "viewers never see the studio"
    );
    v.send(json!({"type": "join", "broadcastId": id, "channel": "public"}));
    v.next_of("joined").await;
    anon.send(json!({"type": "join", "broadcastId": id, "channel": "public"}));
    anon.next_of("joined").await;
    assert!(h.next_of("viewers").await["count"].as_u64().unwrap() >= 1);

    g.send(json!({"type": "chat", "broadcastId": id, "channel": "studio", "text": "  <b>ready?</b>  "}));
    let m = h.next_of("chat").await;
    assert_eq!(
        m["message"]["text"], "<b>ready?</b>",
        "stored and sent as text, trimmed, never interpreted"
    );
    assert_eq!(m["message"]["displayName"], "Gail");
    assert_eq!(m["message"]["channel"], "studio");

    // The studio message never reaches public-only connections: their next chat is this one.
    v.send(json!({"type": "chat", "broadcastId": id, "channel": "public", "text": "hello from the audience"}));
    for c in [&mut v, &mut anon] {
        assert_eq!(
            c.next_of("chat").await["message"]["text"],
            "hello from the audience"
        );
    }

    anon.send(json!({"type": "chat", "broadcastId": id, "channel": "public", "text": "anonymous"}));
    assert_eq!(anon.next_of("error").await["code"], "unauthorized");

    // History comes with a join, oldest first.
    let mut late = Client::connect(&app, Some(&viewer));
    late.send(json!({"type": "join", "broadcastId": id, "channel": "public"}));
    let joined = late.next_of("joined").await;
    assert_eq!(joined["history"][0]["text"], "hello from the audience");
    assert_eq!(joined["viewers"], 3);
    // The host and guests reading the audience chat from the studio are not its audience.
    for c in [&mut h, &mut g] {
        c.send(json!({"type": "join", "broadcastId": id, "channel": "public"}));
        assert_eq!(c.next_of("joined").await["viewers"], 3);
    }
    // The same count on /metrics, under the Broadcast resource's name the workers use.
    let series = format!(r#"castyard_api_viewers{{broadcast="bc-{id}"}} 3"#);
    let metrics = app.get("/metrics", None).await.text();
    assert!(metrics.contains(&series), "{metrics}");

    // Broadcast events reach everyone watching the broadcast.
    app.post(
        &format!("/api/broadcasts/{id}/start"),
        Some(&host),
        json!({}),
    )
    .await;
    let ev = anon.next_of("broadcast").await;
    assert_eq!(ev["event"]["kind"], "started");
    // The host joined only the studio channel: the public message never reached it, so the
    // next chat-or-event it sees is this event.
    let next = h.next_of_any(&["chat", "broadcast"]).await;
    assert_eq!(next["type"], "broadcast", "{next}");
    assert_eq!(next["event"]["kind"], "started");

    // Leaving lowers the count everyone sees.
    drop(late);
    drop(anon);
    let mut count = u64::MAX;
    while count != 1 {
        count = v.next_of("viewers").await["count"].as_u64().unwrap();
    }
    let series = format!(r#"castyard_api_viewers{{broadcast="bc-{id}"}} 1"#);
    let metrics = app.get("/metrics", None).await.text();
    assert!(metrics.contains(&series), "{metrics}");
}

#[tokio::test]
async fn bad_messages_get_errors_and_the_session_lives_on() {
    let app = TestApp::sqlite_with(|s| {
        s.chat_burst = 3;
        s.chat_refill = Duration::from_secs(60);
    })
    .await;
    let (id, host, _, _) = show(&app).await;
    let mut h = Client::connect(&app, Some(&host));
    for bad in [
        "not json",
        "{\"type\": \"launch-missiles\"}",
        "{\"type\": \"join\"}",
        "{\"type\": \"join\", \"broadcastId\": 5, \"channel\": \"public\"}",
        "",
    ] {
        h.send_raw(bad);
        assert_eq!(h.next_of("error").await["code"], "bad_message", "{bad}");
    }
    h.send_raw(&"x".repeat(20_000));
    assert_eq!(h.next_of("error").await["code"], "too_large");
    h.send(json!({"type": "join", "broadcastId": "00000000-0000-4000-8000-000000000000", "channel": "public"}));
    assert_eq!(h.next_of("error").await["code"], "not_found");
    h.send(
        json!({"type": "chat", "broadcastId": id, "channel": "studio", "text": "before joining"}),
    );
    assert_eq!(h.next_of("error").await["code"], "forbidden");
    h.send(json!({"type": "join", "broadcastId": id, "channel": "studio"}));
    h.next_of("joined").await;
    for text in [
        String::new(),
        "   ".into(),
        "x".repeat(501),
        "bell\u{7}".into(),
    ] {
        h.send(json!({"type": "chat", "broadcastId": id, "channel": "studio", "text": text}));
        assert_eq!(h.next_of("error").await["code"], "validation_failed");
    }
    for i in 0..3 {
        h.send(json!({"type": "chat", "broadcastId": id, "channel": "studio", "text": format!("msg {i}")}));
        h.next_of("chat").await;
    }
    h.send(json!({"type": "chat", "broadcastId": id, "channel": "studio", "text": "one too many"}));
    assert_eq!(h.next_of("error").await["code"], "rate_limited");
    h.send(json!({"type": "ping"}));
    h.next_of("pong").await;
    assert_eq!(
        app.count("chat_messages").await,
        3,
        "refused messages are not stored"
    );
}

#[tokio::test]
async fn postgres_fans_out_across_replicas() {
    use castyard_api::crypto::MasterKey;
    use castyard_api::db::Db;
    use castyard_api::realtime::Hub;
    use std::sync::Arc;

    let url = crate::common::fresh_postgres_url().await;
    let master = MasterKey::generate();
    let mut replicas = vec![];
    let dir = tempfile::tempdir().unwrap();
    for _ in 0..2 {
        let db = Db::connect(&url).await.unwrap();
        db.migrate().await.unwrap();
        let s = crate::common::test_settings(dir.path());
        let hub = Hub::postgres(&s.replica_id, &url, db.pool.clone())
            .await
            .unwrap();
        let backend = Arc::new(castyard_api::backend::embedded::EmbeddedBackend::new());
        let state = castyard_api::AppState::new(db, s, &master, hub, backend);
        replicas.push(TestApp {
            router: castyard_api::app(state.clone()),
            state,
            embedded: Arc::new(Default::default()),
            _dir: tempfile::tempdir().unwrap(),
        });
    }
    let (a, b) = (&replicas[0], &replicas[1]);
    let (id, host, _, viewer) = show(a).await;
    // A second viewer (the host reading the chat is studio, not audience, so not counted).
    let viewer_a = a
        .post(
            "/api/auth/viewer",
            None,
            json!({"broadcastId": id, "displayName": "Val"}),
        )
        .await
        .json["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut on_a = Client::connect(a, Some(&viewer_a));
    let mut on_b = Client::connect(b, Some(&viewer));
    let mut anon_b = Client::connect(b, None);
    on_a.send(json!({"type": "join", "broadcastId": id, "channel": "public"}));
    on_a.next_of("joined").await;
    on_b.send(json!({"type": "join", "broadcastId": id, "channel": "public"}));
    on_b.next_of("joined").await;
    anon_b.send(json!({"type": "join", "broadcastId": id, "channel": "public"}));
    anon_b.next_of("joined").await;

    on_b.send(
        json!({"type": "chat", "broadcastId": id, "channel": "public", "text": "from replica b"}),
    );
    on_a.chat_text("from replica b").await;
    on_a.send(
        json!({"type": "chat", "broadcastId": id, "channel": "public", "text": "from replica a"}),
    );
    on_b.chat_text("from replica a").await;
    // Viewer counts are summed over replicas: one on a, two on b.
    let summed = async {
        while a.state.hub.viewers(&id) != 3 || b.state.hub.viewers(&id) != 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), summed)
        .await
        .expect("both replicas count 3 viewers");
    a.post(
        &format!("/api/broadcasts/{id}/start"),
        Some(&host),
        json!({}),
    )
    .await;
    assert_eq!(on_b.next_of("broadcast").await["event"]["kind"], "started");
}

#[tokio::test]
async fn a_real_websocket_over_tcp() {
    let app = TestApp::sqlite().await;
    let (id, host, _, _) = show(&app).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });

    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/api/ws?token={host}"))
        .await
        .unwrap();
    use tokio_tungstenite::tungstenite::Message;
    ws.send(Message::text(
        json!({"type": "join", "broadcastId": id, "channel": "studio"}).to_string(),
    ))
    .await
    .unwrap();
    ws.send(Message::text(
        json!({"type": "chat", "broadcastId": id, "channel": "studio", "text": "over the wire"})
            .to_string(),
    ))
    .await
    .unwrap();
    let mut got_chat = false;
    while let Some(Ok(msg)) = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .unwrap()
    {
        let v: Value = serde_json::from_str(msg.to_text().unwrap()).unwrap();
        if v["type"] == "chat" {
            assert_eq!(v["message"]["text"], "over the wire");
            got_chat = true;
            break;
        }
    }
    assert!(got_chat);
    // Frames beyond the size limit close the connection instead of being buffered.
    ws.send(Message::text("x".repeat(64 * 1024))).await.unwrap();
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return true,
                _ => {}
            }
        }
    })
    .await
    .unwrap();
    assert!(closed);
    let bad = tokio_tungstenite::connect_async(format!("ws://{addr}/api/ws?token=forged")).await;
    assert!(bad.is_err(), "a forged token is refused before the upgrade");
}
