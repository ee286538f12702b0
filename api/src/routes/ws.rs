//! /api/ws: the realtime socket for the studio and watch pages (chat, viewer counts, events).
//! The session is generic over any text Sink + Stream, so tests drive it with channels.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use sqlx::Row;
use tokio_stream::StreamMap;
use tokio_stream::wrappers::BroadcastStream;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;

use crate::auth::{AuthUser, Role, user_from_token};
use crate::db::{new_id, now_ms, rfc3339};
use crate::error::{Error, QueryParams, Result};
use crate::metrics::ChannelLabels;
use crate::realtime::{ChatChannel, ChatMessage, Event};
use crate::state::AppState;

const HISTORY: i64 = 50;

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WsQuery {
    /// An access token; browsers cannot set headers on WebSocket requests. Optional for
    /// read-only viewers of a public channel.
    pub token: Option<String>,
}

/// Upgrade to the realtime WebSocket (JSON text frames; see the Client/Server message docs).
#[utoipa::path(get, path = "/ws", operation_id = "realtime_socket", tag = "realtime", params(WsQuery),
    responses((status = 101, description = "switching to the WebSocket protocol"), (status = 401, body = crate::error::ErrorBody)))]
pub async fn upgrade(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<WsQuery>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Result<Response> {
    let ws = ws?;
    let user = q
        .token
        .as_deref()
        .map(|t| user_from_token(&state, t))
        .transpose()?;
    let max = state.settings.ws_max_message;
    Ok(ws
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| serve_socket(state, user, socket)))
}

async fn serve_socket(state: AppState, user: Option<AuthUser>, socket: WebSocket) {
    let (sink, stream) = socket.split();
    let sink =
        sink.with(|text: String| async move { Ok::<_, axum::Error>(Message::Text(text.into())) });
    let stream = stream.filter_map(|m| async move {
        match m {
            Ok(Message::Text(t)) => Some(Ok(t.to_string())),
            Ok(Message::Binary(_)) => Some(Ok(String::new())),
            Ok(Message::Close(_)) => None,
            // Ping and pong frames are answered by axum itself.
            Ok(_) => None,
            Err(e) => Some(Err(e)),
        }
    });
    state.metrics.ws_connections.inc();
    session(state.clone(), user, Box::pin(stream), Box::pin(sink)).await;
    state.metrics.ws_connections.dec();
}

/// What a client sends.
#[derive(Deserialize, Debug)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMessage {
    #[serde(rename_all = "camelCase")]
    Join {
        broadcast_id: String,
        channel: ChatChannel,
    },
    #[serde(rename_all = "camelCase")]
    Leave {
        broadcast_id: String,
        channel: ChatChannel,
    },
    #[serde(rename_all = "camelCase")]
    Chat {
        broadcast_id: String,
        channel: ChatChannel,
        text: String,
    },
    Ping,
}

/// What the server sends.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage<'a> {
    #[serde(rename_all = "camelCase")]
    Joined {
        broadcast_id: &'a str,
        channel: ChatChannel,
        history: Vec<ChatMessage>,
        viewers: u64,
    },
    #[serde(rename_all = "camelCase")]
    Left {
        broadcast_id: &'a str,
        channel: ChatChannel,
    },
    Pong,
    /// The client fell behind and missed events; it should refetch state.
    #[serde(rename_all = "camelCase")]
    Lagged {
        broadcast_id: &'a str,
        missed: u64,
    },
    Error {
        code: &'a str,
        message: String,
    },
    /// Hub events (chat, viewers, broadcast) carry their own `type`.
    #[serde(untagged)]
    Event(&'a Event),
}

fn encode(m: &ServerMessage<'_>) -> String {
    serde_json::to_string(m).expect("server messages serialise")
}

/// One connection's life: read client messages and forward hub events until either side ends.
pub async fn session<St, Si>(
    state: AppState,
    user: Option<AuthUser>,
    mut incoming: St,
    mut outgoing: Si,
) where
    St: Stream<Item = Result<String, axum::Error>> + Unpin,
    Si: Sink<String> + Unpin,
{
    let mut conn = Conn {
        state: &state,
        user: user.as_ref(),
        joined: HashMap::new(),
        counted: HashSet::new(),
        events: StreamMap::new(),
    };
    loop {
        let reply = tokio::select! {
            msg = incoming.next() => match msg {
                Some(Ok(text)) => conn.handle(&text).await,
                Some(Err(_)) | None => break,
            },
            Some((bid, ev)) = conn.events.next(), if !conn.events.is_empty() => conn.forward(&bid, ev),
        };
        for out in reply {
            if outgoing.send(out).await.is_err() {
                break;
            }
        }
    }
    conn.leave_all().await;
}

struct Conn<'a> {
    state: &'a AppState,
    user: Option<&'a AuthUser>,
    joined: HashMap<String, HashSet<ChatChannel>>,
    /// Broadcasts whose viewer count this connection is in: the host and guests reading the
    /// public chat from the studio are not an audience.
    counted: HashSet<String>,
    events: StreamMap<String, BroadcastStream<Arc<Event>>>,
}

impl Conn<'_> {
    async fn handle(&mut self, text: &str) -> Vec<String> {
        if text.len() > self.state.settings.ws_max_message {
            return vec![err("too_large", "message is too large".into())];
        }
        let msg = match serde_json::from_str::<ClientMessage>(text) {
            Ok(m) => m,
            Err(e) => return vec![err("bad_message", format!("unrecognised message: {e}"))],
        };
        let result = match msg {
            ClientMessage::Ping => Ok(vec![encode(&ServerMessage::Pong)]),
            ClientMessage::Join {
                broadcast_id,
                channel,
            } => self.join(broadcast_id, channel).await,
            ClientMessage::Leave {
                broadcast_id,
                channel,
            } => Ok(self.leave(&broadcast_id, channel).await),
            ClientMessage::Chat {
                broadcast_id,
                channel,
                text,
            } => self.chat(&broadcast_id, channel, text).await,
        };
        result.unwrap_or_else(|e| vec![err(e.code(), e.to_string())])
    }

    async fn join(&mut self, broadcast_id: String, channel: ChatChannel) -> Result<Vec<String>> {
        let owner: String = sqlx::query("SELECT owner_id FROM broadcasts WHERE id = $1")
            .bind(&broadcast_id)
            .fetch_optional(&self.state.db.pool)
            .await?
            .ok_or(Error::NotFound("broadcast"))?
            .try_get("owner_id")?;
        let in_studio = self.user.is_some_and(|u| match u.role {
            Role::Host => u.id == owner,
            Role::Guest => u.broadcast_id.as_deref() == Some(broadcast_id.as_str()),
            Role::Viewer => false,
        });
        if channel == ChatChannel::Studio && !in_studio {
            return Err(Error::Forbidden(
                "the studio channel is for the host and invited guests",
            ));
        }
        let channels = self.joined.entry(broadcast_id.clone()).or_default();
        if !channels.insert(channel) {
            return Ok(vec![]);
        }
        if !self.events.contains_key(&broadcast_id) {
            let rx = self.state.hub.subscribe(&broadcast_id);
            self.events
                .insert(broadcast_id.clone(), BroadcastStream::new(rx));
        }
        if channel == ChatChannel::Public && !in_studio {
            self.counted.insert(broadcast_id.clone());
            self.state.hub.viewer_joined(&broadcast_id).await;
        }
        let history = history(self.state, &broadcast_id, channel).await?;
        let viewers = self.state.hub.viewers(&broadcast_id);
        Ok(vec![encode(&ServerMessage::Joined {
            broadcast_id: &broadcast_id,
            channel,
            history,
            viewers,
        })])
    }

    async fn leave(&mut self, broadcast_id: &str, channel: ChatChannel) -> Vec<String> {
        let Some(channels) = self.joined.get_mut(broadcast_id) else {
            return vec![];
        };
        if !channels.remove(&channel) {
            return vec![];
        }
        if channels.is_empty() {
            self.joined.remove(broadcast_id);
            self.events.remove(broadcast_id);
        }
        if channel == ChatChannel::Public && self.counted.remove(broadcast_id) {
            self.state.hub.viewer_left(broadcast_id).await;
        }
        vec![encode(&ServerMessage::Left {
            broadcast_id,
            channel,
        })]
    }

    async fn leave_all(&mut self) {
        for (bid, channels) in std::mem::take(&mut self.joined) {
            if channels.contains(&ChatChannel::Public) && self.counted.remove(&bid) {
                self.state.hub.viewer_left(&bid).await;
            }
        }
    }

    async fn chat(
        &mut self,
        broadcast_id: &str,
        channel: ChatChannel,
        text: String,
    ) -> Result<Vec<String>> {
        let user = self.user.ok_or(Error::Unauthorized("sign in to chat"))?;
        if !self
            .joined
            .get(broadcast_id)
            .is_some_and(|c| c.contains(&channel))
        {
            return Err(Error::Forbidden("join the channel before chatting in it"));
        }
        let settings = &self.state.settings;
        let text = text.trim().to_owned();
        let len = text.chars().count();
        if len == 0 || len > settings.chat_max_chars {
            return Err(Error::validation(format!(
                "a message must be 1 to {} characters",
                settings.chat_max_chars
            )));
        }
        if text.chars().any(|c| c.is_control() && c != '\n') {
            return Err(Error::validation(
                "a message must not contain control characters",
            ));
        }
        if let Some(wait) = self.state.limits.chat_wait(&user.id) {
            self.state.metrics.rate_limited.inc();
            return Err(Error::TooManyRequests(wait));
        }
        let msg = ChatMessage {
            id: new_id(),
            broadcast_id: broadcast_id.to_owned(),
            channel,
            user_id: user.id.clone(),
            display_name: user.name.clone(),
            text,
            created_at: String::new(),
        };
        let now = now_ms();
        sqlx::query("INSERT INTO chat_messages (id, broadcast_id, channel, user_id, display_name, body, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)")
            .bind(&msg.id)
            .bind(&msg.broadcast_id)
            .bind(channel.as_str())
            .bind(&msg.user_id)
            .bind(&msg.display_name)
            .bind(&msg.text)
            .bind(now)
            .execute(&self.state.db.writer)
            .await?;
        self.state
            .metrics
            .chat_messages
            .get_or_create(&ChannelLabels {
                channel: channel.as_str().into(),
            })
            .inc();
        let message = ChatMessage {
            created_at: rfc3339(now),
            ..msg
        };
        self.state
            .hub
            .publish(Event::Chat {
                broadcast_id: broadcast_id.to_owned(),
                message,
            })
            .await;
        Ok(vec![])
    }

    fn forward(
        &self,
        broadcast_id: &str,
        ev: Result<Arc<Event>, BroadcastStreamRecvError>,
    ) -> Vec<String> {
        match ev {
            Ok(ev) => {
                // Studio chat never reaches a connection that joined only the public channel.
                if let Event::Chat { message, .. } = ev.as_ref()
                    && !self
                        .joined
                        .get(broadcast_id)
                        .is_some_and(|c| c.contains(&message.channel))
                {
                    return vec![];
                }
                vec![encode(&ServerMessage::Event(&ev))]
            }
            Err(BroadcastStreamRecvError::Lagged(n)) => vec![encode(&ServerMessage::Lagged {
                broadcast_id,
                missed: n,
            })],
        }
    }
}

fn err(code: &str, message: String) -> String {
    encode(&ServerMessage::Error { code, message })
}

async fn history(
    state: &AppState,
    broadcast_id: &str,
    channel: ChatChannel,
) -> Result<Vec<ChatMessage>> {
    let rows = sqlx::query(
        "SELECT id, user_id, display_name, body, created_at FROM chat_messages \
         WHERE broadcast_id = $1 AND channel = $2 ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(broadcast_id)
    .bind(channel.as_str())
    .bind(HISTORY)
    .fetch_all(&state.db.pool)
    .await?;
    let mut out = rows
        .iter()
        .map(|r| {
            Ok(ChatMessage {
                id: r.try_get("id")?,
                broadcast_id: broadcast_id.to_owned(),
                channel,
                user_id: r.try_get("user_id")?,
                display_name: r.try_get("display_name")?,
                text: r.try_get("body")?,
                created_at: rfc3339(r.try_get("created_at")?),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    out.reverse();
    Ok(out)
}
