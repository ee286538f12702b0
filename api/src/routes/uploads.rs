//! /api/upload: brand images (logos, backgrounds, overlays). The type is sniffed from the bytes
//! and the client's file name is never used as a path.

use axum::Json;
use axum::extract::{DefaultBodyLimit, Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::AuthUser;
use crate::db::{new_id, now_ms, rfc3339};
use crate::error::{Error, ErrorBody, PathParams, QueryParams, Result, parse_id};
use crate::routes::recordings::inside;
use crate::state::AppState;

pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    // Room for the multipart framing around the largest image allowed.
    let limit = state.settings.upload_limit + 64 * 1024;
    OpenApiRouter::new()
        .routes(routes!(list, upload))
        .layer(DefaultBodyLimit::max(limit))
        .routes(routes!(get_file, remove))
}

#[derive(Clone, Copy, Debug, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum UploadKind {
    Logo,
    Background,
    Overlay,
}

impl UploadKind {
    fn as_str(self) -> &'static str {
        match self {
            UploadKind::Logo => "logo",
            UploadKind::Background => "background",
            UploadKind::Overlay => "overlay",
        }
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct UploadQuery {
    #[param(inline)]
    pub kind: UploadKind,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UploadView {
    pub id: String,
    pub kind: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// The client's file name, kept for display only.
    pub original_name: String,
    pub url: String,
    pub created_at: String,
}

/// Accepted image types, decided from the bytes; SVG is refused because it can carry script.
const ALLOWED: &[(&str, &str)] = &[
    ("image/png", "png"),
    ("image/jpeg", "jpg"),
    ("image/webp", "webp"),
    ("image/gif", "gif"),
];

fn display_name(raw: Option<&str>) -> String {
    let base = raw.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let clean: String = base
        .chars()
        .filter(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' '))
        .take(100)
        .collect();
    if clean.trim_matches('.').is_empty() {
        "upload".into()
    } else {
        clean
    }
}

fn to_view(r: &sqlx::any::AnyRow) -> Result<UploadView> {
    let id: String = r.try_get("id")?;
    Ok(UploadView {
        url: format!("/api/upload/{id}"),
        kind: r.try_get("kind")?,
        content_type: r.try_get("content_type")?,
        size_bytes: r.try_get("size_bytes")?,
        original_name: r.try_get("original_name")?,
        created_at: rfc3339(r.try_get("created_at")?),
        id,
    })
}

const COLUMNS: &str = "id, kind, content_type, size_bytes, path, original_name, created_at";

/// Upload an image as multipart/form-data, field `file`.
#[utoipa::path(post, path = "/", tag = "uploads", security(("bearer" = [])), params(UploadQuery),
    request_body(content_type = "multipart/form-data", description = "one part named `file`"),
    responses((status = 201, body = UploadView), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn upload(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<UploadQuery>,
    form: Result<Multipart, axum::extract::multipart::MultipartRejection>,
) -> Result<(StatusCode, Json<UploadView>)> {
    let mut form = form?;
    user.require_host()?;
    let multipart_err = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Error::PayloadTooLarge
        } else {
            Error::BadRequest(e.body_text())
        }
    };
    let mut found = None;
    while let Some(field) = form.next_field().await.map_err(multipart_err)? {
        if field.name() == Some("file") {
            let name = display_name(field.file_name());
            let bytes = field.bytes().await.map_err(multipart_err)?;
            found = Some((name, bytes));
            break;
        }
    }
    let (original_name, bytes) =
        found.ok_or_else(|| Error::validation("a part named `file` is required"))?;
    if bytes.is_empty() {
        return Err(Error::validation("the file is empty"));
    }
    if bytes.len() > state.settings.upload_limit {
        return Err(Error::PayloadTooLarge);
    }
    let sniffed = infer::get(&bytes).map(|t| t.mime_type());
    let (content_type, ext) = ALLOWED
        .iter()
        .find(|(m, _)| Some(*m) == sniffed)
        .copied()
        .ok_or_else(|| {
            Error::UnsupportedMediaType("only PNG, JPEG, WebP and GIF images are accepted".into())
        })?;
    let id = new_id();
    let rel = format!("uploads/{id}.{ext}");
    let dir = state.settings.uploads_dir();
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(anyhow::Error::from)?;
    let path = inside(&state.settings.data_dir, &rel)?;
    tokio::fs::write(&path, &bytes)
        .await
        .map_err(anyhow::Error::from)?;
    let inserted = sqlx::query(
        "INSERT INTO uploads (id, owner_id, kind, content_type, size_bytes, path, original_name, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&id)
    .bind(&user.id)
    .bind(q.kind.as_str())
    .bind(content_type)
    .bind(bytes.len() as i64)
    .bind(&rel)
    .bind(&original_name)
    .bind(now_ms())
    .execute(&state.db.writer)
    .await;
    if let Err(e) = inserted {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e.into());
    }
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"))
        .bind(&id)
        .fetch_one(&state.db.pool)
        .await?;
    Ok((StatusCode::CREATED, Json(to_view(&row)?)))
}

/// The signed-in host's uploads.
#[utoipa::path(get, path = "/", operation_id = "list_uploads", tag = "uploads", security(("bearer" = [])),
    responses((status = 200, body = Vec<UploadView>)))]
async fn list(State(state): State<AppState>, user: AuthUser) -> Result<Json<Vec<UploadView>>> {
    user.require_host()?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM uploads WHERE owner_id = $1 ORDER BY created_at DESC, id"
    ))
    .bind(&user.id)
    .fetch_all(&state.db.pool)
    .await?;
    rows.iter().map(to_view).collect::<Result<_>>().map(Json)
}

/// The image itself; public, since ids are unguessable and the compositor and watch page load them.
#[utoipa::path(get, path = "/{id}", params(crate::routes::IdPath), tag = "uploads",
    responses((status = 200, description = "the image"), (status = 404, body = ErrorBody)))]
async fn get_file(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
) -> Result<Response> {
    let id = parse_id(&id, "upload")?;
    let row = sqlx::query(&format!("SELECT {COLUMNS} FROM uploads WHERE id = $1"))
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or(Error::NotFound("upload"))?;
    let path = inside(&state.settings.data_dir, &row.try_get::<String, _>("path")?)?;
    let bytes = tokio::fs::read(&path)
        .await
        .map_err(|_| Error::NotFound("upload"))?;
    let ct: String = row.try_get("content_type")?;
    Ok((
        [
            (header::CONTENT_TYPE, ct),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".into()),
            (
                header::CACHE_CONTROL,
                "public, max-age=31536000, immutable".into(),
            ),
        ],
        bytes,
    )
        .into_response())
}

#[utoipa::path(delete, path = "/{id}", operation_id = "delete_upload", params(crate::routes::IdPath), tag = "uploads", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode> {
    user.require_host()?;
    let id = parse_id(&id, "upload")?;
    let row = sqlx::query("DELETE FROM uploads WHERE id = $1 AND owner_id = $2 RETURNING path")
        .bind(&id)
        .bind(&user.id)
        .fetch_optional(&state.db.writer)
        .await?
        .ok_or(Error::NotFound("upload"))?;
    let path = inside(&state.settings.data_dir, &row.try_get::<String, _>("path")?)?;
    let _ = tokio::fs::remove_file(path).await;
    Ok(StatusCode::NO_CONTENT)
}
