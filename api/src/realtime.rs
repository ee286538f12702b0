//! Fan-out of realtime events (chat, viewer counts, broadcast events) to every API replica's
//! WebSocket clients: in-process when embedded, Postgres LISTEN/NOTIFY in the cluster.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

const CHANNEL: &str = "castyard_events";
/// Events a slow client may fall behind by before it is told it missed some.
const BUFFER: usize = 256;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChatChannel {
    /// Host and guests only, in the studio.
    Studio,
    /// Everyone on the watch page.
    Public,
}

impl ChatChannel {
    pub fn as_str(self) -> &'static str {
        match self {
            ChatChannel::Studio => "studio",
            ChatChannel::Public => "public",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatMessage {
    pub id: String,
    pub broadcast_id: String,
    pub channel: ChatChannel,
    pub user_id: String,
    pub display_name: String,
    /// Plain text; clients must render it as text, never as HTML.
    pub text: String,
    pub created_at: String,
}

/// What happens to a broadcast, as clients see it.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum BroadcastEvent {
    Started,
    Ended,
    Updated,
    #[serde(rename_all = "camelCase")]
    Destination {
        name: String,
        state: castyard_crd::DestinationState,
        #[serde(skip_serializing_if = "Option::is_none")]
        last_error: Option<String>,
        /// What kind of failure `lastError` is (Tls, Unreachable, …).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        error_kind: Option<castyard_crd::DestinationErrorKind>,
    },
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum Event {
    #[serde(rename_all = "camelCase")]
    Chat {
        broadcast_id: String,
        message: ChatMessage,
    },
    #[serde(rename_all = "camelCase")]
    Viewers { broadcast_id: String, count: u64 },
    #[serde(rename_all = "camelCase")]
    Broadcast {
        broadcast_id: String,
        event: BroadcastEvent,
    },
}

impl Event {
    pub fn broadcast_id(&self) -> &str {
        match self {
            Event::Chat { broadcast_id, .. }
            | Event::Viewers { broadcast_id, .. }
            | Event::Broadcast { broadcast_id, .. } => broadcast_id,
        }
    }
}

/// What replicas tell each other.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "camelCase")]
enum Wire {
    Event {
        event: Event,
    },
    /// One replica's own viewer count for a broadcast; totals are summed from these.
    Viewers {
        replica: String,
        broadcast_id: String,
        count: u64,
    },
}

enum Fanout {
    InProcess,
    Postgres(sqlx::AnyPool),
}

pub struct Hub {
    replica: String,
    fanout: Fanout,
    topics: Mutex<HashMap<String, broadcast::Sender<Arc<Event>>>>,
    local_viewers: Mutex<HashMap<String, u64>>,
    replica_viewers: Mutex<HashMap<String, HashMap<String, u64>>>,
}

impl Hub {
    pub fn in_process(replica: &str) -> Arc<Self> {
        Arc::new(Self::new(replica, Fanout::InProcess))
    }

    /// Fans out through Postgres: NOTIFY on publish, and a LISTEN task that delivers every
    /// replica's events (our own included) to this replica's clients.
    pub async fn postgres(
        replica: &str,
        url: &str,
        pool: sqlx::AnyPool,
    ) -> anyhow::Result<Arc<Self>> {
        let hub = Arc::new(Self::new(replica, Fanout::Postgres(pool)));
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(CHANNEL).await?;
        let weak = Arc::downgrade(&hub);
        tokio::spawn(async move {
            loop {
                // recv() reconnects by itself after a dropped connection.
                let note = match listener.recv().await {
                    Ok(n) => n,
                    Err(e) => {
                        tracing::warn!(error = %e, "realtime listener error");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                        continue;
                    }
                };
                let Some(hub) = weak.upgrade() else { break };
                match serde_json::from_str::<Wire>(note.payload()) {
                    Ok(w) => hub.receive(w),
                    Err(e) => {
                        tracing::warn!(error = %e, "ignoring malformed realtime notification")
                    }
                }
            }
        });
        Ok(hub)
    }

    fn new(replica: &str, fanout: Fanout) -> Self {
        Self {
            replica: replica.to_owned(),
            fanout,
            topics: Mutex::default(),
            local_viewers: Mutex::default(),
            replica_viewers: Mutex::default(),
        }
    }

    pub fn subscribe(&self, broadcast_id: &str) -> broadcast::Receiver<Arc<Event>> {
        let mut topics = self.topics.lock().expect("lock poisoned");
        topics
            .entry(broadcast_id.to_owned())
            .or_insert_with(|| broadcast::channel(BUFFER).0)
            .subscribe()
    }

    pub async fn publish(&self, event: Event) {
        self.send(Wire::Event { event }).await;
    }

    async fn send(&self, wire: Wire) {
        match &self.fanout {
            Fanout::InProcess => self.receive(wire),
            Fanout::Postgres(pool) => {
                let payload = serde_json::to_string(&wire).expect("events serialise");
                if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(payload)
                    .execute(pool)
                    .await
                {
                    tracing::warn!(error = %e, "realtime publish failed");
                }
            }
        }
    }

    fn receive(&self, wire: Wire) {
        match wire {
            Wire::Event { event } => self.deliver(event),
            Wire::Viewers {
                replica,
                broadcast_id,
                count,
            } => {
                let total = {
                    let mut all = self.replica_viewers.lock().expect("lock poisoned");
                    let per = all.entry(broadcast_id.clone()).or_default();
                    if count == 0 {
                        per.remove(&replica);
                    } else {
                        per.insert(replica, count);
                    }
                    per.values().sum()
                };
                self.deliver(Event::Viewers {
                    broadcast_id,
                    count: total,
                });
            }
        }
    }

    fn deliver(&self, event: Event) {
        let mut topics = self.topics.lock().expect("lock poisoned");
        let id = event.broadcast_id().to_owned();
        // A send error means nobody listens on this replica any more.
        if let Some(tx) = topics.get(&id)
            && tx.send(Arc::new(event)).is_err()
        {
            topics.remove(&id);
        }
    }

    /// Viewers watching `broadcast_id` on every replica, as last reported.
    pub fn viewers(&self, broadcast_id: &str) -> u64 {
        self.replica_viewers
            .lock()
            .expect("lock poisoned")
            .get(broadcast_id)
            .map(|m| m.values().sum())
            .unwrap_or(0)
    }

    /// Viewers connected to this replica, by broadcast id.
    pub fn local_viewer_counts(&self) -> Vec<(String, u64)> {
        let local = self.local_viewers.lock().expect("lock poisoned");
        local.iter().map(|(b, c)| (b.clone(), *c)).collect()
    }

    pub async fn viewer_joined(&self, broadcast_id: &str) {
        self.viewer_delta(broadcast_id, 1).await;
    }

    pub async fn viewer_left(&self, broadcast_id: &str) {
        self.viewer_delta(broadcast_id, -1).await;
    }

    async fn viewer_delta(&self, broadcast_id: &str, delta: i64) {
        let count = {
            let mut local = self.local_viewers.lock().expect("lock poisoned");
            let c = local.entry(broadcast_id.to_owned()).or_default();
            *c = c.saturating_add_signed(delta);
            let c = *c;
            if c == 0 {
                local.remove(broadcast_id);
            }
            c
        };
        self.send(Wire::Viewers {
            replica: self.replica.clone(),
            broadcast_id: broadcast_id.to_owned(),
            count,
        })
        .await;
    }
}
