//! The per-broadcast control token: made once, handed to the workers as a file, presented as
//! `Authorization: Bearer …` and compared in constant time.

use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore as _;
use subtle::ConstantTimeEq as _;

/// 32 random bytes: 256 bits, as base64url without padding.
const TOKEN_BYTES: usize = 32;
/// The shortest token accepted: 256 bits in base64 (43 characters), whoever made it.
pub const MIN_CHARS: usize = 43;
const MAX_CHARS: usize = 512;

/// The Secret (cluster) that holds a broadcast's token, under [`SECRET_KEY`].
pub fn secret_name(broadcast: &str) -> String {
    format!("{broadcast}-control")
}
pub const SECRET_KEY: &str = "token";
/// Where a worker pod finds the token: the Secret mounted read-only.
pub const MOUNT_DIR: &str = "/var/run/secrets/castyard-control";
pub const DEFAULT_FILE: &str = "/var/run/secrets/castyard-control/token";

/// A control token. Never Serialize and redacted in Debug, so it reaches no log or reply by
/// accident; [`ControlToken::expose`] is the one way to its text.
#[derive(Clone, PartialEq, Eq)]
pub struct ControlToken(Arc<str>);

impl std::fmt::Debug for ControlToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ControlToken(••••)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error(
        "a control token is {MIN_CHARS}-{MAX_CHARS} printable ASCII characters without spaces (256 bits or more)"
    )]
    Malformed,
    #[error("cannot read the control token file {path}: {source}")]
    Unreadable {
        path: String,
        source: std::io::Error,
    },
}

/// Why a request's credential was refused (all answer 401, the words differ for the logs).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this endpoint needs the broadcast's control token (Authorization: Bearer …)")]
    Missing,
    #[error("the Authorization header is not a Bearer token")]
    NotBearer,
    #[error("the control token is not this broadcast's")]
    Wrong,
}

impl ControlToken {
    pub fn generate() -> Self {
        let mut bytes = [0u8; TOKEN_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        Self(URL_SAFE_NO_PAD.encode(bytes).into())
    }

    /// A token made elsewhere (`openssl rand -base64 32`, a Secret written by hand); the
    /// surrounding whitespace a file or `echo` adds is dropped.
    pub fn parse(text: &str) -> Result<Self, TokenError> {
        let t = text.trim();
        let ok =
            (MIN_CHARS..=MAX_CHARS).contains(&t.len()) && t.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(t.into()))
        } else {
            Err(TokenError::Malformed)
        }
    }

    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let text = std::fs::read_to_string(path).map_err(|source| TokenError::Unreadable {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text)
    }

    /// The token's text, for writing it to its file or Secret: nowhere else.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The `Authorization` header value that carries it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }

    /// Constant time in the token's content: a caller learns nothing from how long a wrong
    /// guess took but its length, which is not secret.
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// Checks a request's `Authorization` header.
    pub fn check(&self, headers: &http::HeaderMap) -> Result<(), AuthError> {
        let value = headers
            .get(http::header::AUTHORIZATION)
            .ok_or(AuthError::Missing)?;
        let text = value.to_str().map_err(|_| AuthError::NotBearer)?;
        let (scheme, token) = text.split_once(' ').ok_or(AuthError::NotBearer)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthError::NotBearer);
        }
        if self.matches(token.trim()) {
            Ok(())
        } else {
            Err(AuthError::Wrong)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(value: &str) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        h.insert(http::header::AUTHORIZATION, value.parse().unwrap());
        h
    }

    #[test]
    fn generated_tokens_are_256_bits_and_differ() {
        let (a, b) = (ControlToken::generate(), ControlToken::generate());
        assert_ne!(a, b);
        assert_eq!(a.expose().len(), MIN_CHARS);
        assert!(ControlToken::parse(a.expose()).is_ok());
    }

    #[test]
    fn only_the_same_token_passes() {
        let t = ControlToken::generate();
        assert_eq!(t.check(&headers(&t.bearer())), Ok(()));
        assert_eq!(t.check(&headers(&format!("bearer {}", t.expose()))), Ok(()));
        let other = ControlToken::generate();
        assert_eq!(t.check(&headers(&other.bearer())), Err(AuthError::Wrong));
        assert_eq!(
            t.check(&headers(&format!("Bearer {}", &t.expose()[1..]))),
            Err(AuthError::Wrong)
        );
        assert_eq!(
            t.check(&headers(&format!("Basic {}", t.expose()))),
            Err(AuthError::NotBearer)
        );
        assert_eq!(t.check(&headers("Bearer")), Err(AuthError::NotBearer));
        assert_eq!(t.check(&http::HeaderMap::new()), Err(AuthError::Missing));
    }

    #[test]
    fn short_or_spaced_tokens_are_refused_and_never_printed() {
        assert!(ControlToken::parse("short").is_err());
        assert!(ControlToken::parse(&format!("{} x", "a".repeat(50))).is_err());
        let t = ControlToken::parse(&format!("  {}\n", "k".repeat(44))).unwrap();
        assert_eq!(t.expose(), "k".repeat(44));
        assert!(!format!("{t:?}").contains("kkkk"));
    }

    #[test]
    fn a_token_file_is_read_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("token");
        let t = ControlToken::generate();
        std::fs::write(&path, format!("{}\n", t.expose())).unwrap();
        assert_eq!(ControlToken::from_file(&path).unwrap(), t);
        let err = ControlToken::from_file(&dir.path().join("none")).unwrap_err();
        assert!(err.to_string().contains("cannot read"), "{err}");
    }
}
