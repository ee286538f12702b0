//! Signed tokens: the JWT access, invite and file tokens, their claims and the roles they carry.

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::error::Error;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// A registered account: creates and runs broadcasts.
    Host,
    /// Joined one broadcast's studio through an invite.
    Guest,
    /// Watches and chats on one broadcast's public page.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Guest => "guest",
            Role::Viewer => "viewer",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "host" => Some(Role::Host),
            "guest" => Some(Role::Guest),
            "viewer" => Some(Role::Viewer),
            _ => None,
        }
    }
}

/// What a token is for; a token of one kind is never accepted as another.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenKind {
    Access,
    Invite,
    File,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub typ: TokenKind,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The broadcast a guest or viewer identity (or an invite) is scoped to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bid: Option<String>,
}

pub struct Jwt {
    enc: EncodingKey,
    dec: DecodingKey,
    validation: Validation,
}

impl Jwt {
    pub fn new(secret: &[u8]) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 5;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            enc: EncodingKey::from_secret(secret),
            dec: DecodingKey::from_secret(secret),
            validation,
        }
    }

    pub fn issue(&self, claims: &Claims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.enc)
            .expect("HS256 signing of serialisable claims cannot fail")
    }

    pub fn verify(&self, token: &str, kind: TokenKind) -> Result<Claims, Error> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.dec, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => {
                    Error::Unauthorized("token has expired")
                }
                _ => Error::Unauthorized("token is invalid"),
            },
        )?;
        if data.claims.typ != kind {
            return Err(Error::Unauthorized("token is of the wrong kind"));
        }
        Ok(data.claims)
    }
}

pub fn claims(sub: &str, typ: TokenKind, ttl: std::time::Duration) -> Claims {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    Claims {
        sub: sub.to_owned(),
        typ,
        iat: now,
        exp: now + ttl.as_secs() as i64,
        role: None,
        name: None,
        bid: None,
    }
}
