//! /api/recordings: the host's VOD library; files are served with HTTP Range for seeking.

use std::path::{Component, Path, PathBuf};

use axum::Json;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tower::ServiceExt;
use tower_http::services::ServeFile;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{AuthUser, MaybeUser, TokenKind, claims};
use crate::db::rfc3339;
use crate::error::{Error, ErrorBody, PathParams, QueryParams, Result, parse_id};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list))
        .routes(routes!(get_one, remove))
        .routes(routes!(file))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingView {
    pub id: String,
    pub broadcast_id: Option<String>,
    pub title: String,
    pub content_type: String,
    pub size_bytes: i64,
    pub duration_ms: i64,
    pub created_at: String,
    /// A signed URL for `<video src>` (which cannot send a Bearer header); expires in an hour.
    pub file_url: String,
    pub poster_url: Option<String>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct FileQuery {
    /// The signed token from `fileUrl`; alternatively send a Bearer token.
    pub token: Option<String>,
}

const COLUMNS: &str =
    "id, broadcast_id, title, path, poster_path, content_type, size_bytes, duration_ms, created_at";

fn to_view(state: &AppState, r: &sqlx::any::AnyRow) -> Result<RecordingView> {
    let id: String = r.try_get("id")?;
    let token = state
        .jwt
        .issue(&claims(&id, TokenKind::File, state.settings.file_url_ttl));
    Ok(RecordingView {
        file_url: format!("/api/recordings/{id}/file?token={token}"),
        poster_url: r
            .try_get::<Option<String>, _>("poster_path")?
            .map(|_| format!("/api/recordings/{id}/file?token={token}&poster=1")),
        broadcast_id: r.try_get("broadcast_id")?,
        title: r.try_get("title")?,
        content_type: r.try_get("content_type")?,
        size_bytes: r.try_get("size_bytes")?,
        duration_ms: r.try_get("duration_ms")?,
        created_at: rfc3339(r.try_get("created_at")?),
        id,
    })
}

/// Paths in the table are relative to the data directory; refuse anything that could leave it.
pub fn inside(root: &Path, rel: &str) -> Result<PathBuf> {
    let p = Path::new(rel);
    if rel.is_empty() || !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(Error::Internal(anyhow::anyhow!(
            "stored path {rel:?} escapes the data directory"
        )));
    }
    Ok(root.join(p))
}

async fn load_owned(state: &AppState, user: &AuthUser, id: &str) -> Result<sqlx::any::AnyRow> {
    user.require_host()?;
    let id = parse_id(id, "recording")?;
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM recordings WHERE id = $1 AND owner_id = $2"
    ))
    .bind(&id)
    .bind(&user.id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or(Error::NotFound("recording"))
}

/// The signed-in host's recordings, newest first.
#[utoipa::path(get, path = "/", operation_id = "list_recordings", tag = "recordings", security(("bearer" = [])),
    responses((status = 200, body = Vec<RecordingView>), (status = 401, body = ErrorBody)))]
async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<RecordingView>>> {
    user.require_host()?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM recordings WHERE owner_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(&user.id)
    .fetch_all(&state.db.pool)
    .await?;
    rows.iter()
        .map(|r| to_view(&state, r))
        .collect::<Result<_>>()
        .map(Json)
}

#[utoipa::path(get, path = "/{id}", operation_id = "get_recording", params(crate::routes::IdPath), tag = "recordings", security(("bearer" = [])),
    responses((status = 200, body = RecordingView), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<RecordingView>> {
    let row = load_owned(&state, &user, &id).await?;
    to_view(&state, &row).map(Json)
}

/// Delete a recording and its file.
#[utoipa::path(delete, path = "/{id}", operation_id = "delete_recording", params(crate::routes::IdPath), tag = "recordings", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode> {
    let row = load_owned(&state, &user, &id).await?;
    let id: String = row.try_get("id")?;
    let mut files = vec![row.try_get::<String, _>("path")?];
    files.extend(row.try_get::<Option<String>, _>("poster_path")?);
    sqlx::query("DELETE FROM recordings WHERE id = $1")
        .bind(&id)
        .execute(&state.db.writer)
        .await?;
    for rel in files {
        let path = inside(&state.settings.data_dir, &rel)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(error = %e, path = %path.display(), "could not delete recording file")
            }
        }
    }
    Ok(StatusCode::NO_CONTENT)
}

/// The media file (or its poster with `poster=1`); honours Range, so players can seek.
#[utoipa::path(get, path = "/{id}/file", tag = "recordings", params(crate::routes::IdPath, FileQuery),
    responses((status = 200, description = "the whole file"), (status = 206, description = "the requested range"),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 416, description = "range not satisfiable")))]
async fn file(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<std::collections::HashMap<String, String>>,
    MaybeUser(user): MaybeUser,
    req: Request,
) -> Result<Response> {
    let id = parse_id(&id, "recording")?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, owner_id FROM recordings WHERE id = $1"
    ))
    .bind(&id)
    .fetch_optional(&state.db.pool)
    .await?
    .ok_or(Error::NotFound("recording"))?;
    let owner: String = row.try_get("owner_id")?;
    let allowed = match (q.get("token"), user) {
        (Some(t), _) => state.jwt.verify(t, TokenKind::File)?.sub == id,
        (None, Some(u)) => u.id == owner,
        (None, None) => return Err(Error::Unauthorized("a token is required")),
    };
    if !allowed {
        return Err(Error::NotFound("recording"));
    }
    let (rel, content_type) = if q.get("poster").is_some_and(|v| v == "1") {
        let poster: Option<String> = row.try_get("poster_path")?;
        (
            poster.ok_or(Error::NotFound("poster"))?,
            "image/jpeg".to_owned(),
        )
    } else {
        (row.try_get("path")?, row.try_get("content_type")?)
    };
    let path = inside(&state.settings.data_dir, &rel)?;
    if !tokio::fs::try_exists(&path).await.unwrap_or(false) {
        return Err(Error::NotFound("recording file"));
    }
    let mime = content_type
        .parse()
        .map_err(|_| anyhow::anyhow!("stored content type is invalid"))?;
    let resp = ServeFile::new_with_mime(path, &mime)
        .oneshot(req)
        .await
        .map_err(|e| Error::Internal(e.into()))?;
    Ok(resp.into_response())
}
