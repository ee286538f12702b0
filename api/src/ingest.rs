//! The API's side of the RTMP ingest: stream keys checked against the database, and a
//! publish's start and end turned into broadcast state and a recordings row.

use std::path::Path;

use castyard_crd::DesiredState;
use castyard_media_worker::ingest::{Authorization, Grant, IngestHooks, Recording};
use castyard_media_worker::rtmp_out;
use sqlx::Row;

use crate::broadcasts::service::{ingest_transition, restream_targets};
use crate::db::{new_id, now_ms};
use crate::realtime::{BroadcastEvent, Event};
use crate::state::AppState;

pub struct Hooks(pub AppState);

/// A claim not renewed for this long is abandoned: three missed heartbeats (10 s apart).
const CLAIM_TTL_MS: i64 = 30_000;

/// A path under the data directory as the recordings table stores it (relative).
pub(crate) fn relative(data_dir: &Path, path: &Path) -> anyhow::Result<String> {
    let rel = path.strip_prefix(data_dir)?;
    rel.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("recording path is not UTF-8"))
}

#[async_trait::async_trait]
impl IngestHooks for Hooks {
    async fn authorize(&self, stream_key: &str) -> anyhow::Result<Authorization> {
        let hash = crate::crypto::token_hash(stream_key);
        let row =
            sqlx::query("SELECT id, name, state, spec FROM broadcasts WHERE ingest_key_hash = $1")
                .bind(&hash)
                .fetch_optional(&self.0.db.pool)
                .await?;
        let Some(row) = row else {
            return Ok(Authorization::Unknown);
        };
        if row.try_get::<String, _>("state")? == "Ended" {
            return Ok(Authorization::Unknown);
        }
        let broadcast_id: String = row.try_get("id")?;
        let recording_id = new_id();
        // One publisher per broadcast across every replica: the claim is taken in one
        // statement, and only when free or abandoned.
        let now = now_ms();
        let claimed = sqlx::query(
            "UPDATE broadcasts SET ingest_claim = $1, ingest_claimed_at = $2 \
             WHERE id = $3 AND (ingest_claim IS NULL OR ingest_claimed_at < $4)",
        )
        .bind(&recording_id)
        .bind(now)
        .bind(&broadcast_id)
        .bind(now - CLAIM_TTL_MS)
        .execute(&self.0.db.writer)
        .await?
        .rows_affected();
        if claimed == 0 {
            return Ok(Authorization::Busy);
        }
        let spec: castyard_crd::BroadcastSpec =
            serde_json::from_str(&row.try_get::<String, _>("spec")?)?;
        // Unless the OBS feed is the show, the studio is, and the feed joins it as a source.
        let studio_source = !spec.ingest.rtmp;
        let destinations = if studio_source {
            Vec::new()
        } else {
            restream_targets(&self.0, &broadcast_id).await?
        };
        Ok(Authorization::Granted(Grant {
            name: row.try_get("name")?,
            broadcast_id,
            recording_id,
            destinations,
            studio_source,
        }))
    }

    async fn heartbeat(&self, grant: &Grant) {
        let renewed = sqlx::query(
            "UPDATE broadcasts SET ingest_claimed_at = $1 WHERE id = $2 AND ingest_claim = $3",
        )
        .bind(now_ms())
        .bind(&grant.broadcast_id)
        .bind(&grant.recording_id)
        .execute(&self.0.db.writer)
        .await;
        if let Err(e) = renewed {
            tracing::warn!(broadcast = %grant.broadcast_id, error = %e, "could not renew the ingest claim");
        }
    }

    async fn started(&self, grant: &Grant) {
        if grant.studio_source {
            if let Some(ingest) = self.0.ingest.get() {
                crate::studio_source::spawn(self.0.clone(), ingest.clone(), grant.clone());
            }
            return;
        }
        if let Err(e) = ingest_transition(&self.0, &grant.broadcast_id, DesiredState::Live).await {
            tracing::warn!(broadcast = %grant.broadcast_id, error = %e, "could not mark the broadcast live");
        }
    }

    async fn destination(
        &self,
        grant: &Grant,
        name: &str,
        state: rtmp_out::State,
        error: Option<rtmp_out::Failure>,
    ) {
        let state = match state {
            rtmp_out::State::Connecting => castyard_crd::DestinationState::Connecting,
            rtmp_out::State::Live => castyard_crd::DestinationState::Live,
            rtmp_out::State::Retrying => castyard_crd::DestinationState::Retrying,
        };
        self.0
            .hub
            .publish(Event::Broadcast {
                broadcast_id: grant.broadcast_id.clone(),
                event: BroadcastEvent::Destination {
                    name: name.to_owned(),
                    state,
                    error_kind: error.as_ref().map(|f| f.kind),
                    last_error: error.map(|f| f.message),
                },
            })
            .await;
    }

    async fn ended(&self, grant: &Grant, recording: Recording) {
        let released = sqlx::query(
            "UPDATE broadcasts SET ingest_claim = NULL, ingest_claimed_at = NULL \
             WHERE id = $1 AND ingest_claim = $2",
        )
        .bind(&grant.broadcast_id)
        .bind(&grant.recording_id)
        .execute(&self.0.db.writer)
        .await;
        if let Err(e) = released {
            tracing::warn!(broadcast = %grant.broadcast_id, error = %e, "could not release the ingest claim");
        }
        if let Err(e) = self.record(grant, &recording).await {
            tracing::warn!(broadcast = %grant.broadcast_id, error = %e, "could not register the recording");
        }
        // A source leaving the studio does not end the show.
        if grant.studio_source {
            return;
        }
        if let Err(e) = ingest_transition(&self.0, &grant.broadcast_id, DesiredState::Ended).await {
            tracing::warn!(broadcast = %grant.broadcast_id, error = %e, "could not end the broadcast");
        }
    }
}

impl Hooks {
    async fn record(&self, grant: &Grant, r: &Recording) -> anyhow::Result<()> {
        if r.size_bytes == 0 {
            return Ok(());
        }
        let data = &self.0.settings.data_dir;
        let b = sqlx::query("SELECT owner_id, title FROM broadcasts WHERE id = $1")
            .bind(&grant.broadcast_id)
            .fetch_one(&self.0.db.pool)
            .await?;
        let poster = r.poster.as_deref().map(|p| relative(data, p)).transpose()?;
        sqlx::query(
            "INSERT INTO recordings (id, owner_id, broadcast_id, title, path, poster_path, \
             content_type, size_bytes, duration_ms, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 'video/mp4', $7, $8, $9)",
        )
        .bind(&grant.recording_id)
        .bind(b.try_get::<String, _>("owner_id")?)
        .bind(&grant.broadcast_id)
        .bind({
            let title: String = b.try_get("title")?;
            // The show has its own recording; this one is the raw feed.
            if grant.studio_source {
                format!("{title} ({} source)", crate::studio_source::NAME)
            } else {
                title
            }
        })
        .bind(relative(data, &r.path)?)
        .bind(poster)
        .bind(i64::try_from(r.size_bytes)?)
        .bind(i64::try_from(r.duration_ms)?)
        .bind(now_ms())
        .execute(&self.0.db.writer)
        .await?;
        Ok(())
    }
}
