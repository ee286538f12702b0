//! The one client for worker control ports (the API, the operator and the compositor's SFU
//! link use it): typed calls, the broadcast's control token on every request, a time limit.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::ErrorBody;
use crate::scene::{Command, Scene};
use crate::signal::{Identity, ParticipantInfo};
use crate::stage::{ForwardRequest, ForwardState, StageEntry};
use crate::status::{CompositorStatus, InputKind, InputPorts, InputRequest};
use crate::token::ControlToken;

/// Worker endpoints are small and local; a slow one must not hold up a reconcile or a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// The largest reply read from a worker: a status with every input is a few KB.
const MAX_REPLY: usize = 1 << 20;

/// Why a call failed, by whose fault: the worker is not there, it said no, or it said
/// something we do not understand.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("cannot reach the worker at {addr}: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("the worker at {addr} did not answer in {timeout:?}")]
    Timeout { addr: String, timeout: Duration },
    #[error("the worker answered {status}: {}", body.error.message)]
    Refused { status: StatusCode, body: ErrorBody },
    #[error("the worker's reply is not what was expected: {0}")]
    BadReply(String),
}

impl CallError {
    /// The worker refused the request itself (4xx): the caller's input, not an outage. A
    /// refused credential (401, 403) is the caller's configuration, not its input.
    pub fn refused_input(&self) -> Option<&ErrorBody> {
        match self {
            Self::Refused { status, body }
                if status.is_client_error()
                    && !matches!(*status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) =>
            {
                Some(body)
            }
            _ => None,
        }
    }
}

/// Calls one broadcast's workers with its token. Cheap to clone; keeps connections.
#[derive(Clone)]
pub struct WorkerClient {
    http: Client<HttpConnector, Full<Bytes>>,
    token: ControlToken,
    timeout: Duration,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerClient")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WorkerClient {
    pub fn new(token: ControlToken) -> Self {
        Self {
            http: Client::builder(TokioExecutor::new()).build_http(),
            token,
            timeout: DEFAULT_TIMEOUT,
        }
    }

    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn token(&self) -> &ControlToken {
        &self.token
    }

    async fn send(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), CallError> {
        let req = http::Request::builder()
            .method(method)
            .uri(format!("http://{addr}{path}"))
            .header(http::header::AUTHORIZATION, self.token.bearer())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.unwrap_or_default())))
            .map_err(|e| CallError::Unreachable {
                addr: addr.into(),
                reason: format!("not an address: {e}"),
            })?;
        let fetch = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| CallError::Unreachable {
                    addr: addr.into(),
                    reason: e.to_string(),
                })?;
            let status = resp.status();
            let limited = http_body_util::Limited::new(resp.into_body(), MAX_REPLY);
            let bytes = limited
                .collect()
                .await
                .map_err(|e| CallError::BadReply(e.to_string()))?
                .to_bytes();
            Ok((status, bytes))
        };
        tokio::time::timeout(self.timeout, fetch)
            .await
            .map_err(|_| CallError::Timeout {
                addr: addr.into(),
                timeout: self.timeout,
            })?
    }

    async fn call<T: DeserializeOwned>(
        &self,
        addr: &str,
        method: Method,
        path: &str,
        body: Option<&impl Serialize>,
    ) -> Result<T, CallError> {
        let body = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| CallError::BadReply(e.to_string()))?;
        let (status, bytes) = self.send(addr, method, path, body).await?;
        if !status.is_success() {
            let body = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
                ErrorBody::new(
                    "unknown",
                    String::from_utf8_lossy(&bytes)
                        .chars()
                        .take(200)
                        .collect::<String>(),
                )
            });
            return Err(CallError::Refused { status, body });
        }
        serde_json::from_slice(&bytes).map_err(|e| CallError::BadReply(e.to_string()))
    }

    /// The readiness probe: `/readyz` answers 200.
    pub async fn ready(&self, addr: &str) -> bool {
        matches!(
            self.send(addr, Method::GET, "/readyz", None).await,
            Ok((StatusCode::OK, _))
        )
    }

    pub async fn compositor_status(&self, addr: &str) -> Result<CompositorStatus, CallError> {
        self.call(addr, Method::GET, "/status", None::<&()>).await
    }

    pub async fn scene(&self, addr: &str) -> Result<Scene, CallError> {
        self.call(addr, Method::GET, "/scene", None::<&()>).await
    }

    /// Applies one scene command; the scene after it.
    pub async fn apply_scene(&self, addr: &str, cmd: &Command) -> Result<Scene, CallError> {
        self.call(addr, Method::POST, "/scene", Some(cmd)).await
    }

    pub async fn put_input(
        &self,
        addr: &str,
        participant: &str,
        kind: InputKind,
        req: &InputRequest,
    ) -> Result<InputPorts, CallError> {
        let path = format!("/inputs/{participant}/{}", kind.as_str());
        self.call(addr, Method::PUT, &path, Some(req)).await
    }

    pub async fn stage(&self, addr: &str) -> Result<Vec<StageEntry>, CallError> {
        self.call(addr, Method::GET, "/stage", None::<&()>).await
    }

    pub async fn participants(&self, addr: &str) -> Result<Vec<ParticipantInfo>, CallError> {
        self.call(addr, Method::GET, "/participants", None::<&()>)
            .await
    }

    /// The whole set of wanted copies (a lease, renewed by calling again).
    pub async fn put_forwards(
        &self,
        addr: &str,
        forwards: &[ForwardRequest],
    ) -> Result<Vec<ForwardState>, CallError> {
        self.call(addr, Method::PUT, "/forwards", Some(&forwards))
            .await
    }
}

/// The SFU's signalling WebSocket for one participant, whose identity the SFU takes as given:
/// the caller has authenticated the user, and proves it may say so with the control token
/// (send [`ControlToken::bearer`] as the upgrade request's `Authorization`).
pub fn signal_url(sfu: &str, who: &Identity) -> Result<url::Url, url::ParseError> {
    let mut url = url::Url::parse(&format!("ws://{sfu}/signal"))?;
    url.query_pairs_mut()
        .append_pair("participant", &who.participant)
        .append_pair("name", &who.name)
        .append_pair("role", who.role.as_str());
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signal::Role;

    #[test]
    fn the_signal_url_escapes_what_the_user_typed() {
        let url = signal_url(
            "127.0.0.1:7880",
            &Identity {
                participant: "p1".into(),
                name: "A & B?".into(),
                role: Role::Guest,
            },
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "ws://127.0.0.1:7880/signal?participant=p1&name=A+%26+B%3F&role=guest"
        );
    }

    /// A worker that checks the token, answers JSON, and refuses with the one error body.
    async fn worker(token: ControlToken) -> String {
        use axum::http::HeaderMap;
        let app = axum::Router::new().route(
            "/stage",
            axum::routing::get(move |h: HeaderMap| {
                let token = token.clone();
                async move {
                    match token.check(&h) {
                        Ok(()) => (StatusCode::OK, axum::Json(serde_json::json!([]))),
                        Err(e) => (
                            StatusCode::UNAUTHORIZED,
                            axum::Json(
                                serde_json::to_value(ErrorBody::new("unauthorized", e)).unwrap(),
                            ),
                        ),
                    }
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await.unwrap() });
        addr
    }

    #[tokio::test]
    async fn calls_carry_the_token_and_refusals_are_typed() {
        let token = ControlToken::generate();
        let addr = worker(token.clone()).await;
        let ok = WorkerClient::new(token).stage(&addr).await.unwrap();
        assert!(ok.is_empty());
        let err = WorkerClient::new(ControlToken::generate())
            .stage(&addr)
            .await
            .unwrap_err();
        match &err {
            CallError::Refused { status, body } => {
                assert_eq!(*status, StatusCode::UNAUTHORIZED);
                assert_eq!(body.error.code, "unauthorized");
            }
            other => panic!("{other:?}"),
        }
        assert!(
            err.refused_input().is_none(),
            "a refused token is not the user's input"
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_and_a_silent_one_times_out() {
        let closed = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let c = WorkerClient::new(ControlToken::generate());
        assert!(matches!(
            c.stage(&closed).await,
            Err(CallError::Unreachable { .. })
        ));
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap().to_string();
        let c = c.with_timeout(Duration::from_millis(200));
        assert!(matches!(
            c.stage(&addr).await,
            Err(CallError::Timeout { .. })
        ));
        drop(silent);
    }
}
