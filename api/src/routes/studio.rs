//! /api/broadcasts/{id}/studio: the studio's signalling WebSocket. The API decides who the
//! user is and whether they are the host or an invited guest, then relays the session to the
//! broadcast's SFU with the broadcast's control token, without which the SFU takes no identity.

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use castyard_proto::client::signal_url;
use castyard_proto::signal::{Identity, Role as SignalRole};
use futures::{SinkExt, StreamExt};
use sqlx::Row;
use tokio_tungstenite::tungstenite::Message as UpstreamMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;

use crate::auth::{Role, user_from_token};
use crate::error::{Error, PathParams, QueryParams, Result};
use crate::routes::ws::WsQuery;
use crate::state::AppState;

/// The SFU answers messages over its limit with an error; frames far beyond it end the
/// session here, as they would at the SFU.
const MAX_FRAME: usize = castyard_proto::signal::MAX_MESSAGE * 2;

type Upstream =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Join the broadcast's studio: JSON signalling (offer, answer, mute, stage, leave; see the
/// SFU's protocol) relayed to its SFU. For its host and invited guests only.
#[utoipa::path(get, path = "/{id}/studio", operation_id = "studio_socket", tag = "realtime", params(("id" = String, Path), WsQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"),
              (status = 401, body = crate::error::ErrorBody), (status = 403, body = crate::error::ErrorBody),
              (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody, description = "the studio is not open (ended, or its SFU is not running yet)"),
              (status = 502, body = crate::error::ErrorBody, description = "the SFU did not answer")))]
pub async fn upgrade(
    State(state): State<AppState>,
    PathParams(id): PathParams<String>,
    QueryParams(q): QueryParams<WsQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response> {
    let ws = ws?;
    let token = q
        .token
        .as_deref()
        .ok_or(Error::Unauthorized("a token is required"))?;
    let user = user_from_token(&state, token)?;
    let row = sqlx::query("SELECT owner_id, name, ended_at FROM broadcasts WHERE id = $1")
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or(Error::NotFound("broadcast"))?;
    let owner: String = row.try_get("owner_id")?;
    let role = match user.role {
        Role::Host if user.id == owner => SignalRole::Host,
        Role::Guest if user.broadcast_id.as_deref() == Some(id.as_str()) => SignalRole::Guest,
        _ => {
            return Err(Error::Forbidden(
                "the studio is for the broadcast's host and invited guests",
            ));
        }
    };
    if row.try_get::<Option<i64>, _>("ended_at")?.is_some() {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    let name: String = row.try_get("name")?;
    let status = state
        .backend
        .status(&name)
        .await
        .map_err(Error::Backend)?
        .unwrap_or_default();
    let sfu = status
        .endpoints
        .and_then(|e| e.signalling)
        .ok_or_else(|| Error::Conflict("the studio is starting; try again in a moment".into()))?;
    let who = Identity {
        participant: user.id.clone(),
        name: user.name.clone(),
        role,
    };
    let url = signal_url(&sfu, &who)
        .map_err(|e| Error::Internal(anyhow::anyhow!("bad SFU address {sfu}: {e}")))?;
    // Only the token's holder may tell the SFU who a participant is.
    let token = crate::control::client(&state, &id).await?.token().clone();
    let mut req = url
        .as_str()
        .into_client_request()
        .map_err(|e| Error::Internal(e.into()))?;
    req.headers_mut().insert(
        axum::http::header::AUTHORIZATION,
        token
            .bearer()
            .parse()
            .map_err(|e: axum::http::header::InvalidHeaderValue| Error::Internal(e.into()))?,
    );
    // Connecting before the upgrade turns an unreachable SFU into an HTTP error, not a socket
    // that opens and dies.
    let (upstream, _) = tokio_tungstenite::connect_async(req)
        .await
        .map_err(|e| Error::Backend(anyhow::anyhow!("the studio's SFU at {sfu}: {e}")))?;
    Ok(ws
        .max_message_size(MAX_FRAME)
        .max_frame_size(MAX_FRAME)
        .on_upgrade(move |socket| relay(state, socket, upstream)))
}

async fn relay(state: AppState, browser: WebSocket, upstream: Upstream) {
    state.metrics.ws_connections.inc();
    let (mut to_browser, mut from_browser) = browser.split();
    let (mut to_sfu, mut from_sfu) = upstream.split();
    loop {
        tokio::select! {
            m = from_browser.next() => match m {
                Some(Ok(Message::Text(t))) => {
                    if to_sfu.send(UpstreamMessage::Text(t.as_str().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    // The protocol is JSON text; the SFU answers anything else with an error.
                    if to_sfu.send(UpstreamMessage::Text("binary frame".into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            m = from_sfu.next() => match m {
                Some(Ok(UpstreamMessage::Text(t))) => {
                    if to_browser.send(Message::Text(t.as_str().into())).await.is_err() {
                        break;
                    }
                }
                Some(Ok(UpstreamMessage::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
        }
    }
    let _ = to_sfu.close().await;
    let _ = to_browser.close().await;
    state.metrics.ws_connections.dec();
}
