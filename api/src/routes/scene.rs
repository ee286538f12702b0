//! /api/broadcasts/{id}/scene: the host's live scene changes (banners, ticker, slates, layout,
//! brand colour), checked here and relayed to the broadcast's compositor, which applies them on
//! its next frame and keeps them.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

use crate::auth::AuthUser;
use crate::error::{Error, PathParams, Result};
use crate::routes::broadcasts::load_owned;
use crate::state::AppState;
use castyard_media_worker::compositor::scene::{Brand, Command};

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

/// The compositor's control address, or 409 when the show is not running.
async fn control(state: &AppState, user: &AuthUser, id: &str) -> Result<String> {
    let mut conn = state.db.pool.acquire().await?;
    let b = load_owned(&mut conn, user, id).await?;
    drop(conn);
    state
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
        })
}

async fn relay(addr: &str, method: &str, body: Option<Bytes>) -> Result<(u16, Value)> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(format!("http://{addr}/scene"))
        .header("content-type", "application/json")
        .body(Full::new(body.unwrap_or_default()))
        .map_err(|e| Error::Internal(e.into()))?;
    let call = async {
        let resp = client.request(req).await?;
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await?.to_bytes();
        anyhow::Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), call)
        .await
        .map_err(|_| Error::Backend(anyhow::anyhow!("the compositor did not answer in 5 s")))?
        .map_err(|e| Error::Backend(anyhow::anyhow!("the compositor: {e}")))
}

/// The live scene: layout, who is on stage, banner, ticker, slate, brand.
#[utoipa::path(get, path = "/{id}/scene", tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = Object, description = "the compositor's scene"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the show is not running"),
              (status = 502, body = crate::error::ErrorBody)))]
pub async fn get_scene(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<Value>> {
    let addr = control(&state, &user, &id).await?;
    match relay(&addr, "GET", None).await? {
        (200, scene) => Ok(Json(scene)),
        (code, body) => Err(Error::Backend(anyhow::anyhow!(
            "the compositor answered {code}: {body}"
        ))),
    }
}

/// Change the live scene: `{"type":"show-banner","banner":{"text":"…","style":"banner"}}`,
/// `hide-banner`, `ticker` (`text`, or null to stop), `show-slate` / `hide-slate`,
/// `set-layout`, `pin`, `set-brand` (`color`, and `logo`, `background`, `overlay` as ids of the
/// host's uploads of that kind), `gain`. The next frame shows it.
#[utoipa::path(post, path = "/{id}/scene", tag = "broadcasts", security(("bearer" = [])),
    request_body(content = Object, description = "one scene command"),
    responses((status = 200, body = Object, description = "the scene after the change"),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the show is not running"),
              (status = 422, body = crate::error::ErrorBody, description = "not a command a host may send, or the compositor refused it"),
              (status = 502, body = crate::error::ErrorBody)))]
pub async fn post_scene(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    body: Bytes,
) -> Result<Json<Value>> {
    let cmd: Command = serde_json::from_slice(&body)
        .map_err(|e| Error::validation(format!("not a scene command: {e}")))?;
    if !allowed(&cmd) {
        return Err(Error::validation(
            "who is on stage, speaking, muted or sharing is set from the studio, not here",
        ));
    }
    // Bad input is refused whether or not the show runs.
    let body = match cmd {
        Command::SetBrand { brand } => {
            let brand = brand_files(&state, &user, brand).await?;
            Bytes::from(
                serde_json::to_vec(&Command::SetBrand { brand })
                    .map_err(|e| Error::Internal(e.into()))?,
            )
        }
        _ => body,
    };
    let addr = control(&state, &user, &id).await?;
    match relay(&addr, "POST", Some(body)).await? {
        (200, scene) => Ok(Json(scene)),
        // The compositor's own refusals (an unknown participant, a bad colour) are the host's.
        (400..=499, err) => Err(Error::validation(
            err["message"]
                .as_str()
                .unwrap_or("the compositor refused the change")
                .to_owned(),
        )),
        (code, body) => Err(Error::Backend(anyhow::anyhow!(
            "the compositor answered {code}: {body}"
        ))),
    }
}
