//! /api/auth: sign-up, sign-in, refresh rotation, logout, invites, bad tokens, rate limits.

use axum::http::{Method, StatusCode, header};
use castyard_api::auth::{TokenKind, claims};
use serde_json::json;

use crate::common::{TestApp, both};

both!(
    register_login_refresh_logout,
    bad_registration_changes_nothing,
    bad_tokens_are_refused,
    invites_make_scoped_guests
);

fn refresh_cookie(r: &crate::common::Reply) -> String {
    let set = r
        .headers
        .get(header::SET_COOKIE)
        .expect("a refresh cookie")
        .to_str()
        .unwrap()
        .to_owned();
    assert!(set.contains("HttpOnly"), "{set}");
    assert!(set.contains("SameSite=Strict"), "{set}");
    assert!(set.contains("Path=/api/auth"), "{set}");
    set.split(';').next().unwrap().to_owned()
}

async fn refresh_with(app: &TestApp, cookie: &str) -> crate::common::Reply {
    let req = axum::http::Request::post("/api/auth/refresh")
        .header(header::COOKIE, cookie)
        .body(axum::body::Body::empty())
        .unwrap();
    app.send(req).await
}

async fn register_login_refresh_logout(app: TestApp) {
    let r = app.post("/api/auth/register", None, json!({"email": "Ann@Example.com", "password": "correct horse battery", "displayName": "  Ann  "})).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
    assert_eq!(r.json["user"]["email"], "ann@example.com");
    assert_eq!(r.json["user"]["displayName"], "Ann");
    assert_eq!(r.json["user"]["role"], "host");
    assert_eq!(r.json["tokenType"], "Bearer");
    refresh_cookie(&r);
    let token = r.json["accessToken"].as_str().unwrap().to_owned();

    let me = app.get("/api/auth/me", Some(&token)).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.json["email"], "ann@example.com");

    let dup = app.post("/api/auth/register", None, json!({"email": "ann@example.com", "password": "another password", "displayName": "Imposter"})).await;
    assert_eq!(dup.error(StatusCode::CONFLICT), "conflict");

    let bad = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "ann@example.com", "password": "wrong password"}),
        )
        .await;
    assert_eq!(bad.error(StatusCode::UNAUTHORIZED), "unauthorized");
    let unknown = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "nobody@example.com", "password": "wrong password"}),
        )
        .await;
    assert_eq!(
        unknown.json["error"]["message"], bad.json["error"]["message"],
        "unknown accounts look like bad passwords"
    );

    let login = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "ANN@example.com", "password": "correct horse battery"}),
        )
        .await;
    assert_eq!(login.status, StatusCode::OK, "{}", login.json);
    let cookie = refresh_cookie(&login);

    let refreshed = refresh_with(&app, &cookie).await;
    assert_eq!(refreshed.status, StatusCode::OK, "{}", refreshed.json);
    let rotated = refresh_cookie(&refreshed);
    assert_ne!(rotated, cookie);
    let new_token = refreshed.json["accessToken"].as_str().unwrap();
    assert_eq!(
        app.get("/api/auth/me", Some(new_token)).await.status,
        StatusCode::OK
    );
    // A spent refresh token is refused: rotation means a stolen cookie works once at most.
    assert_eq!(
        refresh_with(&app, &cookie)
            .await
            .error(StatusCode::UNAUTHORIZED),
        "unauthorized"
    );

    let req = axum::http::Request::post("/api/auth/logout")
        .header(header::COOKIE, &rotated)
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(app.send(req).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        refresh_with(&app, &rotated).await.status,
        StatusCode::UNAUTHORIZED
    );
    // No cookie at all is a signed-out visitor: an ordinary answer, no session, no cookie.
    let none = app.post("/api/auth/refresh", None, json!({})).await;
    assert_eq!(none.status, StatusCode::NO_CONTENT);
    assert!(none.headers.get(header::SET_COOKIE).is_none());
}

async fn bad_registration_changes_nothing(app: TestApp) {
    let before = app.snapshot().await;
    let cases: Vec<(&str, &str, StatusCode)> = vec![
        ("application/json", "{\"email\": ", StatusCode::BAD_REQUEST),
        (
            "application/json",
            "[1, 2, 3]",
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email": "a@b.co", "password": "long enough pw"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email": 5, "password": "long enough pw", "displayName": "A"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email": "a@b.co", "password": "long enough pw", "displayName": "A", "role": "admin"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email": "not-an-email", "password": "long enough pw", "displayName": "A"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email": "a@b.co", "password": "short", "displayName": "A"}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "application/json",
            r#"{"email": "a@b.co", "password": "long enough pw", "displayName": "   "}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            "text/plain",
            r#"{"email": "a@b.co", "password": "long enough pw", "displayName": "A"}"#,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
    ];
    for (ct, body, status) in cases {
        let r = app
            .raw(
                Method::POST,
                "/api/auth/register",
                None,
                ct,
                body.to_owned(),
            )
            .await;
        r.error(status);
    }
    let huge = format!(
        r#"{{"email": "a@b.co", "password": "long enough pw", "displayName": "{}"}}"#,
        "x".repeat(64 * 1024)
    );
    assert_eq!(
        app.raw(
            Method::POST,
            "/api/auth/register",
            None,
            "application/json",
            huge
        )
        .await
        .error(StatusCode::PAYLOAD_TOO_LARGE),
        "payload_too_large"
    );
    assert_eq!(app.snapshot().await, before);
}

async fn bad_tokens_are_refused(app: TestApp) {
    let token = app.host("host@example.com").await;
    let me = app.get("/api/auth/me", Some(&token)).await.json;
    let id = me["id"].as_str().unwrap();

    let mut expired = claims(id, TokenKind::Access, std::time::Duration::ZERO);
    expired.exp -= 3600;
    expired.role = Some(castyard_api::auth::Role::Host);
    let expired = app.state.jwt.issue(&expired);
    let forged = {
        let other = castyard_api::auth::Jwt::new(b"someone else's secret, not ours!");
        let mut c = claims(id, TokenKind::Access, std::time::Duration::from_secs(600));
        c.role = Some(castyard_api::auth::Role::Host);
        other.issue(&c)
    };
    let wrong_kind = app.state.jwt.issue(&claims(
        id,
        TokenKind::Invite,
        std::time::Duration::from_secs(600),
    ));
    // Flip the payload to claim another user while keeping the signature: must fail.
    let tampered = {
        let parts: Vec<&str> = token.split('.').collect();
        format!("{}.{}x.{}", parts[0], parts[1], parts[2])
    };
    for bad in [
        expired.as_str(),
        forged.as_str(),
        wrong_kind.as_str(),
        tampered.as_str(),
        "garbage",
        "",
    ] {
        for path in [
            "/api/auth/me",
            "/api/broadcasts",
            "/api/recordings",
            "/api/upload",
        ] {
            let r = app.get(path, Some(bad)).await;
            assert_eq!(
                r.error(StatusCode::UNAUTHORIZED),
                "unauthorized",
                "{path} with {bad:?}"
            );
        }
    }
    let r = app.get("/api/broadcasts", None).await;
    assert_eq!(r.error(StatusCode::UNAUTHORIZED), "unauthorized");
    let r = app.get("/api/auth/me", Some(&expired)).await;
    assert!(
        r.json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}

async fn invites_make_scoped_guests(app: TestApp) {
    let host = app.host("host@example.com").await;
    let b = app
        .create_broadcast(&host, json!({"title": "Interview"}))
        .await;
    let id = b["id"].as_str().unwrap();
    let inv = app
        .post(
            &format!("/api/broadcasts/{id}/invites"),
            Some(&host),
            json!({}),
        )
        .await;
    assert_eq!(inv.status, StatusCode::CREATED, "{}", inv.json);
    let invite = inv.json["token"].as_str().unwrap();
    assert!(
        inv.json["url"]
            .as_str()
            .unwrap()
            .starts_with("http://castyard.test/join/")
    );

    let guest = app
        .post(
            "/api/auth/invite/accept",
            None,
            json!({"token": invite, "displayName": "Guest One"}),
        )
        .await;
    assert_eq!(guest.status, StatusCode::OK, "{}", guest.json);
    assert_eq!(guest.json["user"]["role"], "guest");
    assert_eq!(guest.json["user"]["broadcastId"], id);
    let gtoken = guest.json["accessToken"].as_str().unwrap();
    // A guest cannot act as a host.
    assert_eq!(
        app.post("/api/broadcasts", Some(gtoken), json!({"title": "Mine"}))
            .await
            .error(StatusCode::FORBIDDEN),
        "forbidden"
    );
    assert_eq!(
        app.post(
            &format!("/api/broadcasts/{id}/start"),
            Some(gtoken),
            json!({})
        )
        .await
        .status,
        StatusCode::FORBIDDEN
    );

    // Expired and forged invites, and access tokens posing as invites, are refused.
    let mut old = claims("x", TokenKind::Invite, std::time::Duration::ZERO);
    old.exp -= 3600;
    old.bid = Some(id.to_owned());
    let access = app.host("other@example.com").await;
    for bad in [app.state.jwt.issue(&old), format!("{invite}x"), access] {
        let r = app
            .post(
                "/api/auth/invite/accept",
                None,
                json!({"token": bad, "displayName": "Sneaky"}),
            )
            .await;
        r.error(StatusCode::UNAUTHORIZED);
    }
    // Once the broadcast ends, its invites stop working.
    assert_eq!(
        app.post(&format!("/api/broadcasts/{id}/end"), Some(&host), json!({}))
            .await
            .status,
        StatusCode::OK
    );
    let late = app
        .post(
            "/api/auth/invite/accept",
            None,
            json!({"token": invite, "displayName": "Late"}),
        )
        .await;
    late.error(StatusCode::CONFLICT);
}

#[tokio::test]
async fn auth_endpoints_are_rate_limited() {
    let app = TestApp::sqlite_with(|s| {
        s.auth_burst = 3;
        s.auth_refill = std::time::Duration::from_secs(60);
    })
    .await;
    for _ in 0..3 {
        let r = app
            .post(
                "/api/auth/login",
                None,
                json!({"email": "x@example.com", "password": "whatever pw"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    }
    let r = app
        .post(
            "/api/auth/login",
            None,
            json!({"email": "x@example.com", "password": "whatever pw"}),
        )
        .await;
    assert_eq!(r.error(StatusCode::TOO_MANY_REQUESTS), "rate_limited");
    let retry: u64 = r.headers[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=61).contains(&retry), "{retry}");
    // Reading who you are is not limited.
    let token = {
        let mut c = claims("u", TokenKind::Access, std::time::Duration::from_secs(60));
        c.role = Some(castyard_api::auth::Role::Host);
        app.state.jwt.issue(&c)
    };
    assert_ne!(
        app.get("/api/auth/me", Some(&token)).await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
}
