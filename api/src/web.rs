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
        .route("/metrics", get(metrics))
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
/// remuxer writes are served, so nothing else under the data directory is reachable. Low-latency
/// playlists support blocking reload (`_HLS_msn`, `_HLS_part`) and a request for the part the
/// preload hint names is held until it is written.
async fn hls(
    State(state): State<AppState>,
    crate::error::PathParams((id, file)): crate::error::PathParams<(String, String)>,
    req: axum::extract::Request,
) -> Result<Response, Error> {
    use castyard_media_worker::llhls;
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
    } else if llhls::is_file(&file) {
        ("video/mp4", "public, max-age=3600")
    } else {
        return Err(Error::NotFound("HLS file"));
    };
    let path = match state.settings.hls_file(&id, &file) {
        Some(path) => path,
        // Not written yet: only the part a low-latency playlist hints at is waited for.
        None => {
            let playlist = state
                .settings
                .hls_file(&id, "index.m3u8")
                .ok_or(Error::NotFound("HLS file"))?;
            let path = playlist
                .parent()
                .expect("a playlist has a directory")
                .join(&file);
            match llhls::part_number(&file) {
                Some(n) if wait_for_part(&playlist, &path, n).await => path,
                _ => return Err(Error::NotFound("HLS file")),
            }
        }
    };
    if file == "index.m3u8"
        && let Some((msn, part)) = blocking_reload(req.uri().query())?
        && !wait_for(&path, msn, part).await?
    {
        return Ok((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CACHE_CONTROL, "no-cache")],
            "the requested part did not come in time",
        )
            .into_response());
    }
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

/// How long a blocking playlist request or a hinted part is held: three target durations.
const HOLD: std::time::Duration = std::time::Duration::from_secs(6);
const POLL: std::time::Duration = std::time::Duration::from_millis(25);

/// `_HLS_msn` and `_HLS_part` of a playlist request, if it asks to block.
fn blocking_reload(query: Option<&str>) -> Result<Option<(u64, Option<u64>)>, Error> {
    let (mut msn, mut part) = (None, None);
    for pair in query.unwrap_or("").split('&') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let slot = match key {
            "_HLS_msn" => &mut msn,
            "_HLS_part" => &mut part,
            _ => continue,
        };
        let n = value
            .parse::<u64>()
            .map_err(|_| Error::BadRequest(format!("{key} must be a whole number")))?;
        *slot = Some(n);
    }
    match (msn, part) {
        (None, Some(_)) => Err(Error::BadRequest("_HLS_part needs _HLS_msn".into())),
        (None, None) => Ok(None),
        (Some(m), p) => Ok(Some((m, p))),
    }
}

/// Waits until the playlist holds segment `msn` (or its part `part`); false when it did not
/// come within [`HOLD`]. Asking for more than two segments ahead is refused (RFC 8216bis §6.2.5.2).
async fn wait_for(playlist: &std::path::Path, msn: u64, part: Option<u64>) -> Result<bool, Error> {
    use castyard_media_worker::llhls::Progress;
    let deadline = tokio::time::Instant::now() + HOLD;
    loop {
        let text = tokio::fs::read_to_string(playlist)
            .await
            .unwrap_or_default();
        if let Some(p) = Progress::of(&text) {
            if p.has(msn, part) {
                return Ok(true);
            }
            if msn > p.next_msn + 2 {
                return Err(Error::BadRequest(format!(
                    "_HLS_msn {msn} is too far ahead of the playlist ({})",
                    p.next_msn
                )));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Holds a request for part `n` when it is the one the playlist's preload hint names.
async fn wait_for_part(playlist: &std::path::Path, path: &std::path::Path, n: u64) -> bool {
    let text = tokio::fs::read_to_string(playlist)
        .await
        .unwrap_or_default();
    let hinted = text
        .lines()
        .filter_map(|l| l.strip_prefix("#EXT-X-PRELOAD-HINT:"))
        .filter_map(|a| a.split('"').nth(1))
        .filter_map(castyard_media_worker::llhls::part_number)
        .any(|h| h == n);
    if !hinted {
        return false;
    }
    let deadline = tokio::time::Instant::now() + HOLD;
    while tokio::time::Instant::now() < deadline {
        if path.exists() {
            return true;
        }
        tokio::time::sleep(POLL).await;
    }
    false
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

/// Logs and counts every request under its route template.
pub async fn track(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let start = std::time::Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!("request", %method, %route);
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    // The route template only: raw URIs can carry tokens (`?token=` on file and socket URLs).
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "request"
        )
    });
    state
        .metrics
        .duration
        .get_or_create(&crate::metrics::RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&crate::metrics::RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

/// /metrics, in the OpenMetrics text format.
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // Read at scrape time, so a broadcast nobody watches any more drops out of the family.
    state.metrics.viewers.clear();
    for (id, count) in state.hub.local_viewer_counts() {
        state
            .metrics
            .viewers
            .get_or_create(&crate::metrics::BroadcastLabels {
                broadcast: crate::broadcasts::resource_name(&id),
            })
            .set(count as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
