//! /api/auth: accounts, sessions (access token + refresh cookie), guest invites and viewer identities.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::{Json, extract::State};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use governor::clock::Clock as _;
use serde::{Deserialize, Serialize};
use sqlx::Row;
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{AuthUser, Role, TokenKind, claims};
use crate::crypto;
use crate::db::{new_id, now_ms, rfc3339};
use crate::error::{Error, ErrorBody, JsonBody, Result};
use crate::state::AppState;

pub const REFRESH_COOKIE: &str = "castyard_refresh";

pub fn router(state: AppState) -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register))
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
        .routes(routes!(accept_invite))
        .routes(routes!(viewer))
        .route_layer(middleware::from_fn_with_state(state, limit_auth))
        // `me` is read on every page load; it is not a credential-guessing target.
        .routes(routes!(me))
}

/// The peer address from the socket; without one (in-process tests) all share one bucket.
/// Forwarded-for headers are not trusted: any client could set them.
fn client_ip(req: &axum::extract::Request) -> IpAddr {
    req.extensions()
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

/// Per client address: a burst of attempts, then one per refill period (429 with Retry-After).
async fn limit_auth(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Result<Response, Error> {
    let ip = client_ip(&req);
    if let Err(nu) = state.limits.auth.check_key(&ip) {
        let wait = nu.wait_time_from(governor::clock::DefaultClock::default().now());
        state.metrics.rate_limited.inc();
        return Err(Error::TooManyRequests(wait.as_secs() + 1));
    }
    Ok(next.run(req).await)
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RegisterRequest {
    pub email: String,
    /// 8 to 128 characters.
    pub password: String,
    pub display_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    pub email: String,
    pub password: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceptInviteRequest {
    /// The token from the invite link.
    pub token: String,
    pub display_name: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ViewerRequest {
    pub broadcast_id: String,
    pub display_name: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    pub id: String,
    pub email: Option<String>,
    pub display_name: String,
    pub role: Role,
    /// For guests and viewers: the one broadcast this identity belongs to.
    pub broadcast_id: Option<String>,
    pub created_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuthResponse {
    pub access_token: String,
    /// Always "Bearer".
    pub token_type: String,
    /// Seconds until the access token expires; refresh before then.
    pub expires_in: u64,
    pub user: UserView,
}

fn valid_email(e: &str) -> bool {
    let Some((local, domain)) = e.split_once('@') else {
        return false;
    };
    e.len() <= 254
        && !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains('@')
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
}

pub fn valid_display_name(name: &str) -> Result<String> {
    let name = name.trim();
    let n = name.chars().count();
    if n == 0 || n > 80 || name.chars().any(char::is_control) {
        return Err(Error::validation(
            "displayName must be 1 to 80 printable characters",
        ));
    }
    Ok(name.to_owned())
}

fn user_row(row: &sqlx::any::AnyRow) -> Result<UserView> {
    Ok(UserView {
        id: row.try_get("id")?,
        email: row.try_get("email")?,
        display_name: row.try_get("display_name")?,
        role: Role::parse(&row.try_get::<String, _>("role")?)
            .ok_or_else(|| anyhow::anyhow!("unknown role in users table"))?,
        broadcast_id: row.try_get("broadcast_id")?,
        created_at: rfc3339(row.try_get("created_at")?),
    })
}

fn access_token(state: &AppState, user: &UserView) -> String {
    let mut c = claims(&user.id, TokenKind::Access, state.settings.access_ttl);
    c.role = Some(user.role);
    c.name = Some(user.display_name.clone());
    c.bid = user.broadcast_id.clone();
    state.jwt.issue(&c)
}

/// Starts a session: a fresh access token in the body, a fresh refresh token in the cookie.
async fn session(
    state: &AppState,
    jar: CookieJar,
    user: UserView,
) -> Result<(CookieJar, Json<AuthResponse>)> {
    let (token, hash) = crypto::new_token();
    let now = now_ms();
    sqlx::query("INSERT INTO sessions (id, user_id, token_hash, expires_at, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(new_id())
        .bind(&user.id)
        .bind(&hash)
        .bind(now + state.settings.refresh_ttl.as_millis() as i64)
        .bind(now)
        .execute(&state.db.writer)
        .await?;
    let cookie = Cookie::build((REFRESH_COOKIE, token))
        .http_only(true)
        .secure(state.settings.secure_cookies)
        .same_site(SameSite::Strict)
        .path("/api/auth")
        .max_age(time::Duration::seconds(
            state.settings.refresh_ttl.as_secs() as i64,
        ))
        .build();
    let body = AuthResponse {
        access_token: access_token(state, &user),
        token_type: "Bearer".into(),
        expires_in: state.settings.access_ttl.as_secs(),
        user,
    };
    Ok((jar.add(cookie), Json(body)))
}

const USER_COLUMNS: &str = "id, email, display_name, role, broadcast_id, created_at";

async fn load_user(state: &AppState, id: &str) -> Result<UserView> {
    let row = sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1"))
        .bind(id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or(Error::Unauthorized("account no longer exists"))?;
    user_row(&row)
}

/// Create a host account and sign in.
#[utoipa::path(post, path = "/register", tag = "auth", request_body = RegisterRequest,
    responses((status = 201, body = AuthResponse), (status = 409, body = ErrorBody, description = "email taken"),
              (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn register(
    State(state): State<AppState>,
    jar: CookieJar,
    JsonBody(req): JsonBody<RegisterRequest>,
) -> Result<impl IntoResponse> {
    let email = req.email.trim().to_lowercase();
    if !valid_email(&email) {
        return Err(Error::validation("email is not a valid address"));
    }
    let pw_len = req.password.chars().count();
    if !(8..=128).contains(&pw_len) {
        return Err(Error::validation("password must be 8 to 128 characters"));
    }
    let name = valid_display_name(&req.display_name)?;
    let password = req.password;
    let hash = tokio::task::spawn_blocking(move || crypto::hash_password(&password))
        .await
        .map_err(anyhow::Error::from)??;
    let id = new_id();
    let result = sqlx::query("INSERT INTO users (id, email, display_name, password_hash, role, created_at) VALUES ($1, $2, $3, $4, 'host', $5)")
        .bind(&id)
        .bind(&email)
        .bind(&name)
        .bind(&hash)
        .bind(now_ms())
        .execute(&state.db.writer)
        .await;
    match result {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            return Err(Error::Conflict(
                "an account with that email already exists".into(),
            ));
        }
        other => {
            other?;
        }
    }
    let user = load_user(&state, &id).await?;
    let (jar, body) = session(&state, jar, user).await?;
    Ok((StatusCode::CREATED, jar, body))
}

/// Sign in with email and password.
#[utoipa::path(post, path = "/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(state): State<AppState>,
    jar: CookieJar,
    JsonBody(req): JsonBody<LoginRequest>,
) -> Result<impl IntoResponse> {
    let email = req.email.trim().to_lowercase();
    let row = sqlx::query(&format!(
        "SELECT {USER_COLUMNS}, password_hash FROM users WHERE email = $1"
    ))
    .bind(&email)
    .fetch_optional(&state.db.pool)
    .await?;
    // Verify against a dummy hash when the account is unknown, so timing does not reveal which emails exist.
    let stored: Option<String> = row
        .as_ref()
        .map(|r| r.try_get("password_hash"))
        .transpose()?
        .flatten();
    let hash = stored.unwrap_or_else(|| DUMMY_HASH.clone());
    let password = req.password;
    let ok = tokio::task::spawn_blocking(move || crypto::verify_password(&password, &hash))
        .await
        .map_err(anyhow::Error::from)?;
    match row {
        Some(row) if ok => session(&state, jar, user_row(&row)?).await,
        _ => Err(Error::Unauthorized("email or password is incorrect")),
    }
}

/// A real hash with our parameters, so verifying against it costs what a real check costs.
static DUMMY_HASH: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    crypto::hash_password("castyard-dummy-password").expect("hashing works")
});

/// Trade the refresh cookie for a new access token (and a rotated cookie).
/// Without a cookie the visitor is simply signed out: an ordinary answer (204), not an error
/// in every signed-out browser's console. A cookie that no longer works is refused (401).
#[utoipa::path(post, path = "/refresh", tag = "auth",
    responses((status = 200, body = AuthResponse), (status = 204, description = "no session: the visitor is signed out"),
              (status = 401, body = ErrorBody)))]
async fn refresh(State(state): State<AppState>, jar: CookieJar) -> Result<Response> {
    let Some(token) = jar.get(REFRESH_COOKIE).map(|c| c.value().to_owned()) else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let hash = crypto::token_hash(&token);
    // Rotation: the old refresh token is spent whether or not it was still valid.
    let row =
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id, expires_at")
            .bind(&hash)
            .fetch_optional(&state.db.writer)
            .await?
            .ok_or(Error::Unauthorized("session has ended"))?;
    let expires: i64 = row.try_get("expires_at")?;
    if expires < now_ms() {
        return Err(Error::Unauthorized("session has expired"));
    }
    let user = load_user(&state, &row.try_get::<String, _>("user_id")?).await?;
    Ok(session(&state, jar, user).await?.into_response())
}

/// End the session behind the refresh cookie.
#[utoipa::path(post, path = "/logout", tag = "auth", responses((status = 204)))]
async fn logout(State(state): State<AppState>, jar: CookieJar) -> Result<impl IntoResponse> {
    if let Some(c) = jar.get(REFRESH_COOKIE) {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(crypto::token_hash(c.value()))
            .execute(&state.db.writer)
            .await?;
    }
    let gone = Cookie::build((REFRESH_COOKIE, ""))
        .path("/api/auth")
        .build();
    Ok((StatusCode::NO_CONTENT, jar.remove(gone)))
}

/// The signed-in identity.
#[utoipa::path(get, path = "/me", tag = "auth", security(("bearer" = [])),
    responses((status = 200, body = UserView), (status = 401, body = ErrorBody)))]
async fn me(State(state): State<AppState>, user: AuthUser) -> Result<Json<UserView>> {
    Ok(Json(load_user(&state, &user.id).await?))
}

async fn broadcast_accepts_people(state: &AppState, broadcast_id: &str) -> Result<()> {
    let row = sqlx::query("SELECT state FROM broadcasts WHERE id = $1")
        .bind(broadcast_id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or(Error::NotFound("broadcast"))?;
    if row.try_get::<String, _>("state")? == "Ended" {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    Ok(())
}

async fn scoped_identity(
    state: &AppState,
    jar: CookieJar,
    role: Role,
    broadcast_id: &str,
    name: String,
) -> Result<(CookieJar, Json<AuthResponse>)> {
    let id = new_id();
    sqlx::query("INSERT INTO users (id, display_name, role, broadcast_id, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&id)
        .bind(&name)
        .bind(role.as_str())
        .bind(broadcast_id)
        .bind(now_ms())
        .execute(&state.db.writer)
        .await?;
    let user = load_user(state, &id).await?;
    session(state, jar, user).await
}

/// Join a broadcast's studio as a guest, from a host's invite link.
#[utoipa::path(post, path = "/invite/accept", tag = "auth", request_body = AcceptInviteRequest,
    responses((status = 200, body = AuthResponse), (status = 401, body = ErrorBody, description = "invite expired or forged"),
              (status = 409, body = ErrorBody)))]
async fn accept_invite(
    State(state): State<AppState>,
    jar: CookieJar,
    JsonBody(req): JsonBody<AcceptInviteRequest>,
) -> Result<impl IntoResponse> {
    let invite = state.jwt.verify(&req.token, TokenKind::Invite)?;
    let broadcast_id = invite.bid.ok_or(Error::Unauthorized("token is invalid"))?;
    let name = valid_display_name(&req.display_name)?;
    broadcast_accepts_people(&state, &broadcast_id).await?;
    scoped_identity(&state, jar, Role::Guest, &broadcast_id, name).await
}

/// A named viewer identity for one broadcast's public chat.
#[utoipa::path(post, path = "/viewer", tag = "auth", request_body = ViewerRequest,
    responses((status = 200, body = AuthResponse), (status = 404, body = ErrorBody)))]
async fn viewer(
    State(state): State<AppState>,
    jar: CookieJar,
    JsonBody(req): JsonBody<ViewerRequest>,
) -> Result<impl IntoResponse> {
    let name = valid_display_name(&req.display_name)?;
    broadcast_accepts_people(&state, &req.broadcast_id).await?;
    scoped_identity(&state, jar, Role::Viewer, &req.broadcast_id, name).await
}
