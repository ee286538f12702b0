//! /api/broadcasts: a host's shows and their destinations. Each handler parses the request,
//! calls the broadcasts service and answers; the rules and the SQL live in `crate::broadcasts`.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use castyard_crd::DesiredState;
use serde::Deserialize;
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::AuthUser;
use crate::broadcasts::service::{self, CreateBroadcast, NewDestination, UpdateBroadcast};
use crate::broadcasts::view::{
    BroadcastView, DestinationTestResult, DestinationView, IngestKeyView, InviteView,
};
use crate::error::{ErrorBody, JsonBody, PathParams, QueryParams, Result};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, remove))
        .routes(routes!(start))
        .routes(routes!(end))
        .routes(routes!(invite))
        .routes(routes!(add_destination))
        .routes(routes!(remove_destination))
        .routes(routes!(test_destination))
        .routes(routes!(new_ingest_key, revoke_ingest_key))
        .routes(routes!(crate::routes::studio::upgrade))
        .routes(routes!(
            crate::routes::scene::get_scene,
            crate::routes::scene::post_scene
        ))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// 1 to 100, default 50.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// The signed-in host's broadcasts, newest first.
#[utoipa::path(get, path = "/", operation_id = "list_broadcasts", tag = "broadcasts", security(("bearer" = [])), params(Page),
    responses((status = 200, body = Vec<BroadcastView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(page): QueryParams<Page>,
) -> Result<Response> {
    let (limit, offset) = (page.limit.unwrap_or(50), page.offset.unwrap_or(0));
    let body = service::list(&state, &user, limit, offset).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// Create a broadcast (Backstage) with its destinations.
#[utoipa::path(post, path = "/", tag = "broadcasts", security(("bearer" = [])), request_body = CreateBroadcast,
    responses((status = 201, body = BroadcastView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 502, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<CreateBroadcast>,
) -> Result<(StatusCode, Json<BroadcastView>)> {
    let v = service::create(&state, &user, req).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// One broadcast, with the reconciler's latest status.
#[utoipa::path(get, path = "/{id}", operation_id = "get_broadcast", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<BroadcastView>> {
    service::get(&state, &user, &id).await.map(Json)
}

/// Change a broadcast's settings; not allowed once it has ended.
#[utoipa::path(patch, path = "/{id}", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])), request_body = UpdateBroadcast,
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(req): JsonBody<UpdateBroadcast>,
) -> Result<Json<BroadcastView>> {
    service::update(&state, &user, &id, req).await.map(Json)
}

/// Delete a broadcast, its workers and its destinations. Recordings are kept.
#[utoipa::path(delete, path = "/{id}", operation_id = "delete_broadcast", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode> {
    service::remove(&state, &user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Go live: the compositor starts and sends to every enabled destination.
#[utoipa::path(post, path = "/{id}/start", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the broadcast has ended, or this server cannot go live (its FFmpeg is missing or unable: the message says how to fix it)")))]
async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<BroadcastView>> {
    service::transition(&state, &user, &id, DesiredState::Live)
        .await
        .map(Json)
}

/// End the show: outputs are finalized and the workers stop. Final.
#[utoipa::path(post, path = "/{id}/end", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody)))]
async fn end(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<BroadcastView>> {
    service::transition(&state, &user, &id, DesiredState::Ended)
        .await
        .map(Json)
}

/// A signed, expiring link that lets a guest join this broadcast's studio.
#[utoipa::path(post, path = "/{id}/invites", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 201, body = InviteView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn invite(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<InviteView>)> {
    let v = service::invite(&state, &user, &id).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Add a destination; while live it starts receiving the show at once.
#[utoipa::path(post, path = "/{id}/destinations", params(crate::routes::IdPath), tag = "destinations", security(("bearer" = [])), request_body = NewDestination,
    responses((status = 201, body = DestinationView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn add_destination(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(req): JsonBody<NewDestination>,
) -> Result<(StatusCode, Json<DestinationView>)> {
    let d = service::add_destination(&state, &user, &id, req).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// Remove a destination; the others are not touched.
#[utoipa::path(delete, path = "/{id}/destinations/{dest_id}", params(crate::routes::DestinationPath), tag = "destinations", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_destination(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams((id, dest_id)): PathParams<(String, String)>,
) -> Result<StatusCode> {
    service::remove_destination(&state, &user, &id, &dest_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Check that the destination's server answers an RTMP handshake (the key is not sent).
#[utoipa::path(post, path = "/{id}/destinations/{dest_id}/test", params(crate::routes::DestinationPath), tag = "destinations", security(("bearer" = [])),
    responses((status = 200, body = DestinationTestResult), (status = 404, body = ErrorBody)))]
async fn test_destination(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams((id, dest_id)): PathParams<(String, String)>,
) -> Result<Json<DestinationTestResult>> {
    service::test_destination(&state, &user, &id, &dest_id)
        .await
        .map(Json)
}

/// Generate the broadcast's RTMP ingest key (OBS), replacing any previous one: the old key is
/// refused from now on, though a publish already running goes on.
#[utoipa::path(post, path = "/{id}/ingest-key", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 201, body = IngestKeyView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the broadcast has ended, or this server has no RTMP ingest")))]
async fn new_ingest_key(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<IngestKeyView>)> {
    let v = service::new_ingest_key(&state, &user, &id).await?;
    Ok((StatusCode::CREATED, Json(v)))
}

/// Revoke the broadcast's RTMP ingest key: publishing with it is refused from now on.
#[utoipa::path(delete, path = "/{id}/ingest-key", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_ingest_key(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode> {
    service::revoke_ingest_key(&state, &user, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}
