//! What the API answers about broadcasts: the JSON shapes, rendered from stored rows and the
//! reconciler's status, and the per-owner read cache of them.

use castyard_crd::{
    DesiredState, DestinationKind, DestinationStatus, Endpoints, HlsSpec, IngestSpec, Layout,
    OutputSpec, Phase,
};
use serde::Serialize;
use utoipa::ToSchema;

use super::store::{self, Stored, StoredDestination};
use crate::cache::OwnerCache;
use crate::db::rfc3339;
use crate::error::Result;

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestKeyView {
    /// Shown this once: only its hash is stored. Paste it into OBS as the stream key.
    pub stream_key: String,
    /// OBS's "Server": rtmp://host:port/live.
    pub server_url: String,
    /// Server and key together, for ffmpeg and other tools.
    pub url: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    pub id: String,
    pub name: String,
    pub kind: DestinationKind,
    pub url: String,
    pub enabled: bool,
    /// Masked, e.g. "••••1234"; the key itself is never sent back.
    pub stream_key: String,
    pub created_at: String,
}

/// One condition of the Broadcast's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Machine-readable: Ready, Creating, EncoderUnavailable, DestinationsFailing, …
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastView {
    pub id: String,
    /// The object name in Kubernetes (and of the embedded workers).
    pub name: String,
    pub title: String,
    pub description: String,
    /// What the host asked for.
    pub state: DesiredState,
    /// What the reconciler observed; absent until it reports.
    pub phase: Option<Phase>,
    /// What is wrong, when something is (`EncoderUnavailable: ffmpeg not found …`): what the
    /// studio shows in its banner.
    pub message: Option<String>,
    /// The reconciler's conditions (SfuReady, CompositorReady, DestinationsHealthy), as the
    /// Broadcast's status has them.
    pub conditions: Vec<ConditionView>,
    pub recording: bool,
    pub output: OutputSpec,
    pub layout: Layout,
    pub hls: HlsSpec,
    pub ingest: IngestSpec,
    pub max_guests: u8,
    pub scheduled_start: Option<String>,
    pub destinations: Vec<DestinationView>,
    /// Per-destination health as last reported (live, retrying, failed, bitrate).
    pub destination_status: Vec<DestinationStatus>,
    pub endpoints: Option<Endpoints>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub watch_url: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    pub token: String,
    /// Open this in a browser to join the studio as a guest.
    pub url: String,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationTestResult {
    pub ok: bool,
    /// Time to complete the RTMP handshake.
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// What kind of failure `error` is: the same a live show would report (Tls with the reason
    /// for an untrusted, mismatched or expired certificate).
    pub error_kind: Option<castyard_crd::DestinationErrorKind>,
}

pub fn render(
    public_url: &str,
    b: Stored,
    dests: Vec<StoredDestination>,
    status: castyard_crd::BroadcastStatus,
) -> BroadcastView {
    let s = b.spec;
    BroadcastView {
        watch_url: format!("{public_url}/watch/{}", b.id),
        id: b.id,
        name: b.name,
        title: s.title,
        description: s.description,
        state: s.state,
        phase: status.phase,
        message: status.message,
        conditions: status
            .conditions
            .into_iter()
            .map(|c| ConditionView {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_transition_time: c.last_transition_time.0.to_string(),
            })
            .collect(),
        recording: s.recording,
        output: s.output,
        layout: s.layout,
        hls: s.hls,
        ingest: s.ingest,
        max_guests: s.max_guests,
        scheduled_start: s.scheduled_start,
        destinations: dests
            .into_iter()
            .map(|d| DestinationView {
                id: d.id,
                name: d.dest.name,
                kind: d.dest.kind,
                url: d.dest.url,
                enabled: d.dest.enabled,
                stream_key: format!("••••{}", d.last4),
                created_at: rfc3339(d.created_at),
            })
            .collect(),
        destination_status: status.destinations,
        endpoints: status.endpoints,
        started_at: b.started_at.map(rfc3339),
        ended_at: b.ended_at.map(rfc3339),
        created_at: rfc3339(b.created_at),
        updated_at: rfc3339(b.updated_at),
    }
}

/// All of one host's broadcasts with their destinations, newest first: what the read cache holds.
pub struct OwnerBroadcasts {
    pub items: Vec<(Stored, Vec<StoredDestination>)>,
    /// Each item as the list endpoint renders it (no status), so a page is a concatenation.
    pub list_json: Vec<String>,
    pub by_id: std::collections::HashMap<String, usize>,
}

/// The owner's broadcasts from the read cache (present on SQLite only), loading them on a miss.
pub async fn cached(
    cache: &OwnerCache<OwnerBroadcasts>,
    pool: &sqlx::AnyPool,
    public_url: &str,
    owner: &str,
) -> Result<std::sync::Arc<OwnerBroadcasts>> {
    match cache.get(owner) {
        Ok(hit) => Ok(hit),
        Err(ticket) => {
            let mut conn = pool.acquire().await?;
            let items = store::load_owner(&mut conn, owner, None).await?;
            let list_json = items
                .iter()
                .map(|(b, d)| {
                    serde_json::to_string(&render(
                        public_url,
                        b.clone(),
                        d.clone(),
                        Default::default(),
                    ))
                })
                .collect::<Result<_, _>>()
                .map_err(anyhow::Error::from)?;
            let by_id = items
                .iter()
                .enumerate()
                .map(|(i, (b, _))| (b.id.clone(), i))
                .collect();
            let all = OwnerBroadcasts {
                items,
                list_json,
                by_id,
            };
            Ok(cache.fill(owner, ticket, all))
        }
    }
}
