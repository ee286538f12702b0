//! Everything outside /api's JSON: health probes, /metrics, Swagger UI, and the built frontend.

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, Uri, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use tower_http::services::{ServeDir, ServeFile};

use crate::error::Error;
use crate::state::AppState;

pub fn router(state: &AppState) -> Router<AppState> {
    let mut r = Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(crate::metrics::serve))
        .route("/hls/{id}/{file}", get(hls))
        .route("/live/{file}", get(http_flv))
        .route("/api-docs", get(swagger_index))
        .route("/api-docs/", get(swagger_index))
        .route(
            "/api/{*rest}",
            get(api_not_found)
                .post(api_not_found)
                .put(api_not_found)
                .patch(api_not_found)
                .delete(api_not_found),
        );
    if let Some(dir) = state
        .settings
        .swagger_dir
        .clone()
        .filter(|d| d.join("swagger-ui-bundle.js").exists())
    {
        r = r.nest_service("/api-docs/assets", ServeDir::new(dir));
    }
    match state
        .settings
        .web_dir
        .clone()
        .filter(|d| d.join("index.html").exists())
    {
        // Client-side routes (/studio/..., /watch/...) all load index.html.
        Some(dir) => {
            r.fallback_service(ServeDir::new(&dir).fallback(ServeFile::new(dir.join("index.html"))))
        }
        None => r.route("/", get(no_frontend)),
    }
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.db.ping().await {
        "ready".into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "database unavailable").into_response()
    }
}

async fn api_not_found(uri: Uri) -> Error {
    // The path only: a query string may carry a token.
    tracing::debug!(path = uri.path(), "no such API route");
    Error::NotFound("API route")
}

async fn swagger_index(State(state): State<AppState>) -> Response {
    if !state
        .settings
        .swagger_dir
        .as_ref()
        .is_some_and(|d| d.join("swagger-ui-bundle.js").exists())
    {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Html("<!doctype html><title>Castyard API</title><p>Swagger UI is not installed (npm's swagger-ui-dist; <code>make up</code> installs it). \
                  The document itself is at <a href=\"/api/openapi.json\">/api/openapi.json</a>.</p>"),
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        r##"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Castyard API</title>
<link rel="stylesheet" href="/api-docs/assets/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="/api-docs/assets/swagger-ui-bundle.js"></script>
<script>window.ui = SwaggerUIBundle({ url: "/api/openapi.json", dom_id: "#swagger-ui" });</script>
</body></html>"##,
    )
        .into_response()
}

async fn no_frontend() -> Html<&'static str> {
    Html(
        "<!doctype html><title>Castyard</title><h1>Castyard is running</h1>\
         <p>The web studio is not built in this installation. The API is at \
         <a href=\"/api-docs\">/api-docs</a> and <a href=\"/api/status\">/api/status</a>.</p>",
    )
}

/// A live ingest's or composed show's HLS playlist, segments and thumbnail, public like the watch page. Only the names the
/// remuxer writes are served, so nothing else under the data directory is reachable.
async fn hls(
    State(state): State<AppState>,
    crate::error::PathParams((id, file)): crate::error::PathParams<(String, String)>,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    use tower::ServiceExt;
    let id = crate::error::parse_id(&id, "stream")?;
    let (mime, cache) = if file == "index.m3u8" {
        // Players poll the playlist: never serve a stale one.
        ("application/vnd.apple.mpegurl", "no-cache")
    } else if file == "thumb.jpg" {
        ("image/jpeg", "no-cache")
    } else if file
        .strip_prefix("seg")
        .and_then(|f| f.strip_suffix(".ts"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    {
        ("video/mp2t", "public, max-age=3600")
    } else {
        return Err(Error::NotFound("HLS file"));
    };
    let path = state
        .settings
        .hls_file(&id, &file)
        .ok_or(Error::NotFound("HLS file"))?;
    let mime = mime.parse().expect("a valid MIME type");
    let mut resp = tower_http::services::ServeFile::new_with_mime(path, &mime)
        .oneshot(req)
        .await
        .map_err(|e| Error::Internal(e.into()))?
        .into_response();
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static(cache),
    );
    Ok(resp)
}

/// Low-latency HTTP-FLV of a live RTMP ingest (`/live/<id>.flv`, for flv.js or ffplay): the
/// codec headers and the current GOP, then the live tags. A viewer that falls behind is cut
/// off rather than slowing anyone.
async fn http_flv(
    State(state): State<AppState>,
    crate::error::PathParams(file): crate::error::PathParams<String>,
) -> Result<Response, Error> {
    use castyard_media_worker::flv;
    use futures::StreamExt;
    let id = file
        .strip_suffix(".flv")
        .ok_or(Error::NotFound("live stream"))?;
    let id = crate::error::parse_id(id, "stream")?;
    let viewer = state
        .ingest
        .get()
        .and_then(|i| i.watch(&id))
        .ok_or(Error::NotFound("live stream"))?;
    let castyard_media_worker::ingest::FlvViewer { first, rx, counted } = viewer;
    let head = std::iter::once(bytes::Bytes::from_static(&flv::HEADER))
        .chain(first.into_iter().map(|t| t.encode()))
        .map(Ok::<_, std::io::Error>);
    // The viewer stays counted for as long as its body streams.
    let live = tokio_stream::wrappers::BroadcastStream::new(rx)
        .take_while(|r| std::future::ready(r.is_ok()))
        .filter_map(move |r| {
            let _counted = &counted;
            std::future::ready(r.ok().map(|t| Ok(t.encode())))
        });
    let body = axum::body::Body::from_stream(futures::stream::iter(head).chain(live));
    Ok((
        [
            (header::CONTENT_TYPE, "video/x-flv"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response())
}
