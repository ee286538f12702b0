//! The guard on both roles' control ports: every request but the health probes must carry the
//! broadcast's control token; `/metrics` is open unless a metrics token is configured.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use castyard_proto::{AuthError, ControlToken, ErrorBody};

/// Who may call a control port.
#[derive(Clone, Debug)]
pub struct Access {
    pub control: ControlToken,
    /// When set, `/metrics` needs this token (or the control token); otherwise it is open, and
    /// the port's binding (loopback) or the chart's NetworkPolicy decides who scrapes it.
    pub metrics: Option<ControlToken>,
}

/// Health probes come from the kubelet, which holds no token, and say nothing secret.
fn open(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz")
}

/// Wraps every route of `router` (and its 404s) in the check.
pub fn protect(router: Router, access: Access) -> Router {
    router.layer(axum::middleware::from_fn_with_state(
        Arc::new(access),
        require,
    ))
}

async fn require(State(access): State<Arc<Access>>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if open(path) {
        return next.run(req).await;
    }
    let verdict = if path == "/metrics" {
        match &access.metrics {
            None => Ok(()),
            Some(m) => m
                .check(req.headers())
                .or_else(|_| access.control.check(req.headers())),
        }
    } else {
        access.control.check(req.headers())
    };
    match verdict {
        Ok(()) => next.run(req).await,
        Err(e) => {
            // The path and why, never what was presented.
            tracing::warn!(path, reason = %e, "control request refused");
            unauthorized(&e)
        }
    }
}

fn unauthorized(e: &AuthError) -> Response {
    let mut resp = (
        StatusCode::UNAUTHORIZED,
        Json(ErrorBody::new("unauthorized", e)),
    )
        .into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"castyard-worker\""),
    );
    resp
}
