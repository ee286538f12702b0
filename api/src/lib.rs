//! Castyard's API: REST + WebSocket over axum, SQLite or Postgres, and the embedded server.
#![forbid(unsafe_code)]

pub mod auth;
pub mod backend;
pub mod bot;
pub mod broadcasts;
pub mod cache;
pub mod cli;
pub mod control;
pub mod crypto;
pub mod db;
pub mod error;
pub mod ingest;
pub mod library;
pub mod metrics;
pub mod ratelimit;
pub mod realtime;
pub mod routes;
pub mod rtmp_probe;
pub mod settings;
pub mod state;
pub mod studio_source;
pub mod tokens;
pub mod web;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use utoipa::OpenApi;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use state::{AppState, Mode, Settings};

#[derive(OpenApi)]
#[openapi(
    info(title = "Castyard API", description = "Live-streaming studio: broadcasts, destinations, recordings, realtime chat."),
    modifiers(&BearerAuth),
    // What the studio's WebSocket carries and the scene it edits: not any operation's body,
    // listed so the frontend's generated types include them.
    components(schemas(
        castyard_proto::signal::ClientMessage,
        castyard_proto::signal::ServerMessage,
        castyard_proto::scene::Scene,
        castyard_proto::scene::Command,
    )),
    tags(
        (name = "auth", description = "Accounts, sessions, guest invites"),
        (name = "broadcasts", description = "A host's shows"),
        (name = "destinations", description = "Where a show is sent (RTMP/RTMPS)"),
        (name = "recordings", description = "The VOD library"),
        (name = "uploads", description = "Brand images"),
        (name = "streams", description = "What is live now (public)"),
        (name = "status", description = "Server status"),
        (name = "realtime", description = "The WebSocket"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

fn api(state: &AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi()).nest(
        "/api",
        OpenApiRouter::new()
            .nest("/auth", routes::auth::router(state.clone()))
            .nest("/broadcasts", routes::broadcasts::router())
            .nest("/recordings", routes::recordings::router())
            .nest("/upload", routes::uploads::router(state))
            .nest("/status", routes::status::router())
            .nest("/streams", routes::status::streams_router())
            .routes(routes!(routes::ws::upgrade)),
    )
}

/// The OpenAPI document, exactly as served at /api/openapi.json and committed in api/openapi.json.
pub fn openapi_json(state: &AppState) -> String {
    let (_, doc) = api(state).split_for_parts();
    doc.to_pretty_json()
        .expect("the OpenAPI document serialises")
}

/// The whole HTTP surface: API, realtime, docs, metrics, health, and the built frontend.
pub fn app(state: AppState) -> Router {
    let (api_router, doc) = api(&state).split_for_parts();
    let doc = std::sync::Arc::new(
        doc.to_pretty_json()
            .expect("the OpenAPI document serialises"),
    );
    api_router
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let doc = doc.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        doc.as_ref().clone(),
                    )
                }
            }),
        )
        .merge(web::router(&state))
        .method_not_allowed_fallback(|| async { error::Error::MethodNotAllowed })
        .layer(DefaultBodyLimit::max(state.settings.json_limit))
        .layer(middleware::from_fn_with_state(state.clone(), web::track))
        .with_state(state)
}
