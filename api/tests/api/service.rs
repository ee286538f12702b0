//! The service around the API: health, readiness, metrics, status, the OpenAPI document and its
//! drift check, Swagger UI, the frontend fallback, and unknown routes.

use axum::http::StatusCode;
use serde_json::json;

use crate::common::TestApp;

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = TestApp::sqlite().await;
    assert_eq!(app.get("/healthz", None).await.status, StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status, StatusCode::OK);
    let host = app.host("host@example.com").await;
    app.get(
        "/api/broadcasts/00000000-0000-4000-8000-000000000000",
        Some(&host),
    )
    .await;
    let m = app.get("/metrics", None).await;
    assert_eq!(m.status, StatusCode::OK);
    let text = m.text();
    assert!(text.contains(r#"castyard_api_http_requests_total{method="POST",route="/api/auth/register",status="201"} 1"#), "{text}");
    // Routes are labelled by template, so ids do not explode the label set.
    assert!(
        text.contains(r#"route="/api/broadcasts/{id}",status="404""#),
        "{text}"
    );
    assert!(text.contains("castyard_api_http_request_duration_seconds_bucket"));
    assert!(text.contains("castyard_api_websocket_connections"));
    assert!(text.trim_end().ends_with("# EOF"));

    app.state.db.pool.close().await;
    assert_eq!(
        app.get("/readyz", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(
        app.get("/healthz", None).await.status,
        StatusCode::OK,
        "liveness does not depend on the database"
    );
}

#[tokio::test]
async fn status_counts_broadcasts() {
    let app = TestApp::sqlite().await;
    let host = app.host("host@example.com").await;
    for t in ["a", "b"] {
        app.create_broadcast(&host, json!({"title": t})).await;
    }
    let b = app.create_broadcast(&host, json!({"title": "c"})).await;
    app.post(
        &format!("/api/broadcasts/{}/start", b["id"].as_str().unwrap()),
        Some(&host),
        json!({}),
    )
    .await;
    let s = app.get("/api/status", None).await;
    assert_eq!(s.status, StatusCode::OK);
    assert_eq!(s.json["mode"], "embedded");
    assert_eq!(s.json["database"], true);
    assert_eq!(
        s.json["broadcasts"],
        json!({"backstage": 2, "live": 1, "ended": 0})
    );
}

#[tokio::test]
async fn every_api_error_has_one_shape() {
    let app = TestApp::sqlite().await;
    for path in ["/api/nope", "/api/broadcasts/x/y/z/w"] {
        assert_eq!(
            app.get(path, None).await.error(StatusCode::NOT_FOUND),
            "not_found"
        );
    }
    let r = app
        .call(
            axum::http::Method::PUT,
            "/api/broadcasts",
            None,
            Some(json!({})),
        )
        .await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
}

#[tokio::test]
async fn openapi_is_served_and_committed() {
    let app = TestApp::sqlite().await;
    let served = app.get("/api/openapi.json", None).await;
    assert_eq!(served.status, StatusCode::OK);
    let doc = &served.json;
    for path in [
        "/api/auth/register",
        "/api/broadcasts",
        "/api/broadcasts/{id}/start",
        "/api/broadcasts/{id}/destinations/{dest_id}/test",
        "/api/recordings/{id}/file",
        "/api/upload",
        "/api/ws",
        "/api/streams",
        "/api/status",
    ] {
        assert!(
            doc["paths"].get(path).is_some(),
            "{path} missing from OpenAPI"
        );
    }
    assert!(doc["components"]["schemas"]["BroadcastView"].is_object());
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    // Generators (the frontend's API types) need a document that holds together: every
    // reference resolves and every path parameter is in its path.
    let text = doc.to_string();
    for r in text.split("\"#/components/schemas/").skip(1) {
        let name = &r[..r.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"].get(name).is_some(),
            "{name} is referenced but not defined"
        );
    }
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for (method, op) in ops.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let in_path = path.contains(&format!("{{{name}}}"));
                assert_eq!(
                    p["in"] == "path",
                    in_path,
                    "{method} {path}: parameter {name} is in {}",
                    p["in"]
                );
            }
        }
    }

    let generated = castyard_api::openapi_json(&castyard_api::cli::doc_state().await.unwrap());
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .expect("api/openapi.json exists");
    assert!(
        committed == generated,
        "api/openapi.json is stale: run `make openapi` and commit the result"
    );
}

#[tokio::test]
async fn swagger_ui_and_frontend_are_served_from_their_folders() {
    let assets = tempfile::tempdir().unwrap();
    std::fs::write(
        assets.path().join("swagger-ui-bundle.js"),
        "window.SwaggerUIBundle = function () {};",
    )
    .unwrap();
    std::fs::write(assets.path().join("swagger-ui.css"), "body {}").unwrap();
    let web = tempfile::tempdir().unwrap();
    std::fs::write(
        web.path().join("index.html"),
        "<!doctype html><div id=root></div>",
    )
    .unwrap();
    std::fs::write(web.path().join("app.js"), "console.log(1)").unwrap();
    let (a, w) = (assets.path().to_path_buf(), web.path().to_path_buf());
    let app = TestApp::sqlite_with(move |s| {
        s.swagger_dir = Some(a);
        s.web_dir = Some(w);
    })
    .await;
    let page = app.get("/api-docs", None).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.text().contains("/api/openapi.json"));
    assert_eq!(
        app.get("/api-docs/assets/swagger-ui-bundle.js", None)
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(app.get("/app.js", None).await.text(), "console.log(1)");
    // Client-side routes load the app shell.
    assert!(
        app.get("/studio/123", None)
            .await
            .text()
            .contains("id=root")
    );
    assert_eq!(
        app.get("/api/nope", None).await.status,
        StatusCode::NOT_FOUND,
        "API misses are not the app shell"
    );

    let bare = TestApp::sqlite().await;
    assert_eq!(
        bare.get("/api-docs", None).await.status,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert!(
        bare.get("/", None)
            .await
            .text()
            .contains("Castyard is running")
    );
}

#[tokio::test]
async fn an_unreachable_database_is_retried_then_named_in_the_error() {
    use std::str::FromStr;
    sqlx::any::install_default_drivers();
    // Two short attempts with the 1 s backoff between them.
    let options =
        sqlx::any::AnyConnectOptions::from_str("postgres://nobody@127.0.0.1:1/none").unwrap();
    let err =
        castyard_api::db::connect_postgres(&options, 2, std::time::Duration::from_millis(500))
            .await
            .unwrap_err()
            .to_string();
    assert!(err.contains("unreachable after 2 attempts"), "{err}");
}
