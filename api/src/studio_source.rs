//! An OBS ingest as a studio participant: while a broadcast's show is the studio (its RTMP
//! ingest is not the show), a publish with its key joins the studio like a guest, so the host
//! sees it backstage and can put it on stage.

use std::net::IpAddr;
use std::time::Duration;

use std::io::Write as _;
use std::sync::Arc;

use castyard_media_worker::bot::{self, BotConfig, Synthetic};
use castyard_media_worker::flv;
use castyard_media_worker::ingest::{Grant, Ingest};
use castyard_proto::signal::{Identity, Role};
use sqlx::Row;

use crate::state::AppState;

/// The name the source has in the studio and on its name tag.
pub const NAME: &str = "OBS";

/// How long a feed without audio so far is watched for it before it is taken as silent: OBS
/// sends its audio header with the first frames, well within this.
const AUDIO_WAIT: Duration = Duration::from_secs(2);

/// The participant id the SFU knows the source by: one per broadcast, so a republish replaces
/// the previous one instead of adding a second.
pub fn participant(broadcast_id: &str) -> String {
    format!("ingest-{broadcast_id}")
}

/// Joins the publish to its broadcast's studio until the publish ends, rejoining if the SFU
/// restarts or is not up yet.
pub fn spawn(state: AppState, ingest: Arc<Ingest>, grant: Grant) {
    // Where the SFU sends the studio's media back: this pod in a cluster, else loopback (the
    // embedded SFU runs beside us).
    let bind_ip = std::env::var("CASTYARD_POD_IP")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    tokio::spawn(async move {
        // A studio that is full or not up yet is asked again, less and less often.
        let mut wait = Duration::from_secs(1);
        loop {
            if !ingest.is_source_live(&grant.broadcast_id) || ended(&state, &grant).await {
                return;
            }
            match join_once(&state, &ingest, &grant, bind_ip).await {
                Ok(()) => wait = Duration::from_secs(1),
                Err(e) => {
                    tracing::info!(broadcast = %grant.broadcast_id, error = %format!("{e:#}"), "the OBS source is not in the studio yet");
                    wait = (wait * 2).min(Duration::from_secs(10));
                }
            }
            tokio::time::sleep(wait).await;
        }
    });
}

/// A broadcast that ended has no studio to go back to, whatever OBS still sends.
async fn ended(state: &AppState, grant: &Grant) -> bool {
    let row = sqlx::query("SELECT ended_at FROM broadcasts WHERE id = $1")
        .bind(&grant.broadcast_id)
        .fetch_optional(&state.db.pool)
        .await;
    match row {
        Ok(Some(r)) => r
            .try_get::<Option<i64>, _>("ended_at")
            .ok()
            .flatten()
            .is_some(),
        // Gone: nothing to join. A database hiccup: try again later.
        Ok(None) => true,
        Err(_) => false,
    }
}

async fn join_once(
    state: &AppState,
    ingest: &Ingest,
    grant: &Grant,
    bind_ip: IpAddr,
) -> anyhow::Result<()> {
    let status = state.backend.status(&grant.name).await?.unwrap_or_default();
    let sfu = status
        .endpoints
        .and_then(|e| e.signalling)
        .ok_or_else(|| anyhow::anyhow!("the studio's SFU is not running"))?;
    let (mut first, mut rx) = ingest
        .tap_source(&grant.broadcast_id)
        .ok_or_else(|| anyhow::anyhow!("the publish ended"))?;
    // Whether the feed has audio shows in its first tags; a publish that just began may not
    // have sent its audio header yet, so a short wait decides.
    let look = tokio::time::Instant::now() + AUDIO_WAIT;
    while !first.iter().any(|t| t.kind == flv::AUDIO) {
        match tokio::time::timeout_at(look, rx.recv()).await {
            Ok(Ok(t)) => first.push(t),
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => {}
            Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                anyhow::bail!("the publish ended")
            }
            Err(_) => break,
        }
    }
    let has_audio = first.iter().any(|t| t.kind == flv::AUDIO);
    // FFmpeg turns the OBS feed (H.264 with B-frames, AAC: not what browsers take over WebRTC)
    // into the VP8 and Opus every participant sends.
    let (media, mut stdin) = Synthetic::transcode(ingest.ffmpeg(), has_audio)?;
    // FFmpeg's stdin is a blocking pipe: the tags are written from a thread of their own, which
    // ends with the publish or when FFmpeg goes (a write fails).
    let feed = tokio::task::spawn_blocking(move || {
        // The header says which streams follow: FFmpeg waits for an announced one.
        let mut header = flv::HEADER;
        if !has_audio {
            header[4] = 1;
        }
        stdin.write_all(&header)?;
        for t in first {
            stdin.write_all(&t.encode())?;
        }
        loop {
            match rx.blocking_recv() {
                Ok(t) => stdin.write_all(&t.encode())?,
                // Fell behind: the decoder skips ahead; the studio sees a short glitch.
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
        }
        std::io::Result::Ok(())
    });
    let who = Identity {
        participant: participant(&grant.broadcast_id),
        name: NAME.into(),
        role: Role::Guest,
    };
    let url = castyard_proto::client::signal_url(&sfu, &who)?;
    let client = crate::control::client(state, &grant.broadcast_id).await?;
    let cfg = BotConfig {
        url: url.into(),
        // Until the publish ends (the feed above returns) or the SFU drops it.
        duration: Duration::from_secs(365 * 24 * 3600),
        bind_ip,
        control_token: Some(client.token().clone()),
        together: None,
    };
    tracing::info!(broadcast = %grant.broadcast_id, "the OBS source joins the studio");
    tokio::select! {
        r = feed => {
            if let Ok(Err(e)) = r {
                tracing::info!(broadcast = %grant.broadcast_id, error = %e, "the OBS source's encoder stopped");
            }
        }
        report = bot::run(cfg, Some(media.subscribe())) => {
            if let Some(e) = report.error {
                anyhow::bail!("{e}");
            }
        }
    }
    Ok(())
}
