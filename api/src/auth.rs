//! Who is calling: the identity in a Bearer access token, and the extractors that require one.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;

use crate::error::Error;
use crate::state::AppState;
pub use crate::tokens::{Claims, Jwt, Role, TokenKind, claims};

/// The caller, from a valid Bearer access token.
#[derive(Clone, Debug)]
pub struct AuthUser {
    pub id: String,
    pub role: Role,
    pub name: String,
    pub broadcast_id: Option<String>,
}

impl AuthUser {
    pub fn require_host(&self) -> Result<(), Error> {
        if self.role == Role::Host {
            Ok(())
        } else {
            Err(Error::Forbidden("only hosts may do this"))
        }
    }
}

pub fn user_from_token(state: &AppState, token: &str) -> Result<AuthUser, Error> {
    let c = state.jwt.verify(token, TokenKind::Access)?;
    Ok(AuthUser {
        id: c.sub,
        role: c.role.ok_or(Error::Unauthorized("token is invalid"))?,
        name: c.name.unwrap_or_default(),
        broadcast_id: c.bid,
    })
}

fn bearer(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::trim)
}

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = bearer(parts).ok_or(Error::Unauthorized("missing Bearer token"))?;
        user_from_token(state, token)
    }
}

/// The caller if a token was sent; a sent but bad token is still an error, not anonymity.
pub struct MaybeUser(pub Option<AuthUser>);

impl FromRequestParts<AppState> for MaybeUser {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        match bearer(parts) {
            None => Ok(MaybeUser(None)),
            Some(t) => user_from_token(state, t).map(|u| MaybeUser(Some(u))),
        }
    }
}
