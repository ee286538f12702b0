//! /api/status (the server) and /api/streams (what is live now, for the home and watch pages).

use axum::Json;
use axum::extract::State;
use castyard_crd::DesiredState;
use serde::Serialize;
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::db::rfc3339;
use crate::error::{Error, ErrorBody, PathParams, Result, parse_id};
use crate::state::{AppState, Mode};

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(status))
}

pub fn streams_router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(streams))
        .routes(routes!(stream))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    pub version: String,
    pub mode: Mode,
    pub uptime_seconds: u64,
    pub database: bool,
    pub broadcasts: BroadcastCounts,
}

#[derive(Serialize, ToSchema, Default)]
pub struct BroadcastCounts {
    pub backstage: i64,
    pub live: i64,
    pub ended: i64,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StreamView {
    pub id: String,
    pub title: String,
    pub description: String,
    pub host_name: String,
    pub state: DesiredState,
    pub viewers: u64,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    /// A still of the live show; absent until the media workers produce one.
    pub thumbnail_url: Option<String>,
    /// The HLS playlist; absent until an RTMP ingest (or the compositor) publishes one.
    pub hls_url: Option<String>,
    /// Low-latency HTTP-FLV of a live RTMP ingest (flv.js, mpegts.js, ffplay); absent for a
    /// studio show and when no publisher is live.
    pub flv_url: Option<String>,
    /// The show's HLS is low-latency (parts and blocking reload): players should follow closely.
    pub low_latency: bool,
    pub watch_url: String,
}

/// Server health and counts.
#[utoipa::path(get, path = "/", tag = "status", responses((status = 200, body = StatusView)))]
async fn status(State(state): State<AppState>) -> Result<Json<StatusView>> {
    let rows = sqlx::query("SELECT state, COUNT(*) AS n FROM broadcasts GROUP BY state")
        .fetch_all(&state.db.pool)
        .await;
    let database = rows.is_ok();
    let mut counts = BroadcastCounts::default();
    for r in rows.unwrap_or_default() {
        let n: i64 = r.try_get("n")?;
        match r.try_get::<String, _>("state")?.as_str() {
            "Backstage" => counts.backstage = n,
            "Live" => counts.live = n,
            _ => counts.ended = n,
        }
    }
    Ok(Json(StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        mode: state.settings.mode,
        uptime_seconds: state.started.elapsed().as_secs(),
        database,
        broadcasts: counts,
    }))
}

const COLUMNS: &str = "b.id, b.title, b.spec, b.state, b.started_at, b.ended_at, u.display_name";

fn to_view(state: &AppState, r: &sqlx::any::AnyRow) -> Result<StreamView> {
    let id: String = r.try_get("id")?;
    let spec: castyard_crd::BroadcastSpec =
        serde_json::from_str(&r.try_get::<String, _>("spec")?).map_err(anyhow::Error::from)?;
    Ok(StreamView {
        viewers: state.hub.viewers(&id),
        watch_url: format!("{}/watch/{id}", state.settings.public_url),
        title: r.try_get("title")?,
        description: spec.description,
        host_name: r.try_get("display_name")?,
        state: spec.state,
        started_at: r.try_get::<Option<i64>, _>("started_at")?.map(rfc3339),
        ended_at: r.try_get::<Option<i64>, _>("ended_at")?.map(rfc3339),
        thumbnail_url: (spec.state == DesiredState::Live
            && state.settings.hls_file(&id, "thumb.jpg").is_some())
        .then(|| format!("{}/hls/{id}/thumb.jpg", state.settings.public_url)),
        hls_url: state
            .settings
            .hls_file(&id, "index.m3u8")
            .is_some()
            .then(|| format!("{}/hls/{id}/index.m3u8", state.settings.public_url)),
        flv_url: state
            .ingest
            .get()
            .is_some_and(|i| i.is_live(&id))
            .then(|| format!("{}/live/{id}.flv", state.settings.public_url)),
        low_latency: spec.hls.enabled && spec.hls.low_latency,
        id,
    })
}

/// Broadcasts live now, most recently started first.
#[utoipa::path(get, path = "/", tag = "streams", responses((status = 200, body = Vec<StreamView>)))]
async fn streams(State(state): State<AppState>) -> Result<Json<Vec<StreamView>>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM broadcasts b JOIN users u ON u.id = b.owner_id \
         WHERE b.state = 'Live' ORDER BY b.started_at DESC, b.id LIMIT 100"
    ))
    .fetch_all(&state.db.pool)
    .await?;
    rows.iter()
        .map(|r| to_view(&state, r))
        .collect::<Result<_>>()
        .map(Json)
}

/// One broadcast's public face, for its watch page (live, upcoming or ended).
#[utoipa::path(get, path = "/{id}", params(crate::routes::IdPath), tag = "streams",
    responses((status = 200, body = StreamView), (status = 404, body = ErrorBody)))]
async fn stream(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Json<StreamView>> {
    let id = parse_id(&id, "stream")?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM broadcasts b JOIN users u ON u.id = b.owner_id WHERE b.id = $1"
    ))
    .bind(&id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or(Error::NotFound("stream"))?;
    to_view(&state, &row).map(Json)
}
