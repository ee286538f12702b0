//! The API's one error type: every failure becomes `{"error": {"code", "message"}}` with its status.

use axum::Json;
use axum::extract::multipart::MultipartRejection;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{FromRequest, FromRequestParts};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// 400: the request is not well-formed (bad JSON, bad id, bad query).
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or credentials that are expired, forged or revoked.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 403: authenticated, but this role may not do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404: no such thing, or it belongs to someone else (we do not say which).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// 405: the route exists, but not with this method.
    #[error("method not allowed on this route")]
    MethodNotAllowed,
    /// 409: the request conflicts with current state (duplicate name, ended broadcast).
    #[error("{0}")]
    Conflict(String),
    /// 413: the body exceeds the route's limit.
    #[error("request body is too large")]
    PayloadTooLarge,
    /// 415: the body is not of a type this route accepts.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// 422: well-formed, but a field's value is not allowed.
    #[error("{0}")]
    Validation(String),
    /// 429: slow down; the header says when to retry.
    #[error("too many requests, retry in {0} s")]
    TooManyRequests(u64),
    /// 502: the orchestration backend (Kubernetes) refused or failed.
    #[error("the broadcast backend is unavailable")]
    Backend(#[source] anyhow::Error),
    /// 500: our fault; logged once with details, sent without them.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Error::Conflict(_) => StatusCode::CONFLICT,
            Error::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Error::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Error::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Error::Backend(_) => StatusCode::BAD_GATEWAY,
            Error::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Error::BadRequest(_) => "bad_request",
            Error::Unauthorized(_) => "unauthorized",
            Error::Forbidden(_) => "forbidden",
            Error::NotFound(_) => "not_found",
            Error::MethodNotAllowed => "method_not_allowed",
            Error::Conflict(_) => "conflict",
            Error::PayloadTooLarge => "payload_too_large",
            Error::UnsupportedMediaType(_) => "unsupported_media_type",
            Error::Validation(_) => "validation_failed",
            Error::TooManyRequests(_) => "rate_limited",
            Error::Backend(_) => "backend_unavailable",
            Error::Internal(_) => "internal",
        }
    }

    pub fn validation(msg: impl Into<String>) -> Self {
        Error::Validation(msg.into())
    }
}

/// The body of every error reply: the same one the media workers answer with.
pub use castyard_proto::error::{ErrorBody, ErrorDetail};

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        match &self {
            Error::Internal(e) => tracing::error!(error = ?e, "internal error"),
            Error::Backend(e) => tracing::error!(error = ?e, "backend error"),
            _ => {}
        }
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code().into(),
                message: self.to_string(),
            },
        };
        let mut resp = (self.status(), Json(body)).into_response();
        if let Error::TooManyRequests(secs) = self {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                Error::Conflict("a resource with that name already exists".into())
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                Error::Validation("a referenced resource does not exist".into())
            }
            sqlx::Error::Database(db) if db.is_check_violation() => {
                Error::Validation("a field has a value that is not allowed".into())
            }
            _ => Error::Internal(e.into()),
        }
    }
}

impl From<anyhow::Error> for Error {
    fn from(e: anyhow::Error) -> Self {
        Error::Internal(e)
    }
}

impl From<JsonRejection> for Error {
    fn from(r: JsonRejection) -> Self {
        match r {
            JsonRejection::JsonDataError(e) => Error::Validation(e.body_text()),
            JsonRejection::JsonSyntaxError(e) => Error::BadRequest(e.body_text()),
            JsonRejection::MissingJsonContentType(_) => {
                Error::UnsupportedMediaType("expected `Content-Type: application/json`".into())
            }
            r if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Error::PayloadTooLarge,
            r => Error::BadRequest(r.body_text()),
        }
    }
}

impl From<MultipartRejection> for Error {
    fn from(r: MultipartRejection) -> Self {
        Error::UnsupportedMediaType(format!("expected multipart/form-data: {}", r.body_text()))
    }
}

impl From<WebSocketUpgradeRejection> for Error {
    fn from(r: WebSocketUpgradeRejection) -> Self {
        Error::BadRequest(format!(
            "a WebSocket upgrade is required: {}",
            r.body_text()
        ))
    }
}

impl From<PathRejection> for Error {
    fn from(r: PathRejection) -> Self {
        Error::BadRequest(format!("invalid path: {}", r.body_text()))
    }
}

impl From<QueryRejection> for Error {
    fn from(r: QueryRejection) -> Self {
        Error::BadRequest(format!("invalid query: {}", r.body_text()))
    }
}

/// Ids are UUIDs; anything else cannot name a `what`, so it is simply not found (and never
/// reaches SQL or the file system).
pub fn parse_id(id: &str, what: &'static str) -> Result<String> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| Error::NotFound(what))
}

/// `axum::Json` whose rejections speak our error shape.
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(Error))]
pub struct JsonBody<T>(pub T);

/// `axum::extract::Path` whose rejections speak our error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(Error))]
pub struct PathParams<T>(pub T);

/// `axum::extract::Query` whose rejections speak our error shape.
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(Error))]
pub struct QueryParams<T>(pub T);
