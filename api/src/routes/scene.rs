//! /api/broadcasts/{id}/scene: the host's live scene changes (banners, ticker, slates, layout,
//! brand colour), checked here and relayed to the broadcast's compositor, which applies them on
//! its next frame and keeps them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use castyard_proto::scene::{Brand, Command, Scene};
use castyard_proto::{CallError, WorkerClient};

use crate::auth::AuthUser;
use crate::broadcasts::service::owned;
use crate::error::{Error, PathParams, Result};
use crate::state::AppState;

/// Commands a host sends. Who is on stage, speaking, muted or sharing comes from the studio (the
/// SFU), not from here.
fn allowed(cmd: &Command) -> bool {
    matches!(
        cmd,
        Command::SetLayout { .. }
            | Command::Pin { .. }
            | Command::ShowBanner { .. }
            | Command::HideBanner
            | Command::Ticker { .. }
            | Command::ShowSlate { .. }
            | Command::HideSlate
            | Command::SetBrand { .. }
            | Command::Gain { .. }
    )
}

/// The host names brand pictures by upload id; the compositor draws files. Each must be one of
/// the host's own uploads of that kind, and becomes its file name (`<id>.<ext>`) in the
/// compositor's assets folder, which is the uploads folder.
async fn brand_files(state: &AppState, user: &AuthUser, mut brand: Brand) -> Result<Brand> {
    for (kind, slot) in [
        ("logo", &mut brand.logo),
        ("background", &mut brand.background),
        ("overlay", &mut brand.overlay),
    ] {
        // The scene names the file (`<id>.<ext>`), so a brand read back and sent again works.
        let Some(id) = slot.as_deref().and_then(|s| s.split('.').next()) else {
            continue;
        };
        let row: Option<(String, String)> = sqlx::query_as(
            "SELECT path, content_type FROM uploads WHERE id = $1 AND owner_id = $2 AND kind = $3",
        )
        .bind(id)
        .bind(&user.id)
        .bind(kind)
        .fetch_optional(&state.db.pool)
        .await?;
        let Some((path, content_type)) = row else {
            return Err(Error::validation(format!(
                "{kind} {id:?} is not one of your {kind} uploads"
            )));
        };
        if !matches!(content_type.as_str(), "image/png" | "image/jpeg") {
            return Err(Error::validation(format!(
                "the show draws PNG and JPEG pictures; this {kind} is {content_type}"
            )));
        }
        let file = path.rsplit('/').next().unwrap_or(&path);
        *slot = Some(file.to_owned());
    }
    Ok(brand)
}

/// The compositor's control address and a client holding the broadcast's token, or 409 when
/// the show is not running.
async fn control(state: &AppState, user: &AuthUser, id: &str) -> Result<(String, WorkerClient)> {
    let mut conn = state.db.pool.acquire().await?;
    let b = owned(&mut conn, user, id).await?;
    drop(conn);
    let addr = state
        .backend
        .status(&b.name)
        .await
        .map_err(Error::Backend)?
        .and_then(|s| s.endpoints)
        .and_then(|e| e.control)
        .ok_or_else(|| {
            Error::Conflict(
                "the show is not running: scene changes apply while live or recording".into(),
            )
        })?;
    Ok((addr, crate::control::client(state, id).await?))
}

/// The compositor's own refusals (an unknown participant, a bad colour) are the host's to fix;
/// anything else is the backend's.
fn relayed(e: CallError) -> Error {
    match e.refused_input() {
        Some(body) => Error::validation(body.error.message.clone()),
        None => Error::Backend(anyhow::anyhow!("the compositor: {e}")),
    }
}

/// The live scene: layout, who is on stage, banner, ticker, slate, brand.
#[utoipa::path(get, path = "/{id}/scene", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = castyard_proto::scene::Scene, description = "the compositor's scene"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the show is not running"),
              (status = 502, body = crate::error::ErrorBody)))]
pub async fn get_scene(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Scene>> {
    let (addr, client) = control(&state, &user, &id).await?;
    client.scene(&addr).await.map(Json).map_err(relayed)
}

/// Change the live scene: `{"type":"show-banner","banner":{"text":"…","style":"banner"}}`,
/// `hide-banner`, `ticker` (`text`, or null to stop), `show-slate` / `hide-slate`,
/// `set-layout`, `pin`, `set-brand` (`color`, and `logo`, `background`, `overlay` as ids of the
/// host's uploads of that kind), `gain`. The next frame shows it.
#[utoipa::path(post, path = "/{id}/scene", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    request_body(content = castyard_proto::scene::Command, description = "one scene command"),
    responses((status = 200, body = castyard_proto::scene::Scene, description = "the scene after the change"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the show is not running"),
              (status = 422, body = crate::error::ErrorBody, description = "not a command a host may send, or the compositor refused it"),
              (status = 502, body = crate::error::ErrorBody)))]
pub async fn post_scene(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    body: Bytes,
) -> Result<Json<Scene>> {
    let cmd: Command = serde_json::from_slice(&body)
        .map_err(|e| Error::validation(format!("not a scene command: {e}")))?;
    if !allowed(&cmd) {
        return Err(Error::validation(
            "who is on stage, speaking, muted or sharing is set from the studio, not here",
        ));
    }
    // Bad input is refused whether or not the show runs.
    let cmd = match cmd {
        Command::SetBrand { brand } => Command::SetBrand {
            brand: brand_files(&state, &user, brand).await?,
        },
        other => other,
    };
    let (addr, client) = control(&state, &user, &id).await?;
    client
        .apply_scene(&addr, &cmd)
        .await
        .map(Json)
        .map_err(relayed)
}
