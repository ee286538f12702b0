//! Registers the compositor's finished recordings in the library from the manifests it leaves
//! under the media directory (embedded: its child processes' data; cluster: a shared volume).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use castyard_media_worker::compositor::outputs::{Library, adopt};
use castyard_media_worker::compositor::recording::{orphans, pending};
use castyard_proto::manifest::Manifest;
use sha2::Digest as _;
use sqlx::Row;

use crate::db::now_ms;
use crate::ingest::relative;
use crate::state::AppState;

/// How often the media directory is scanned; a recording appears this long after it is final.
const EVERY: Duration = Duration::from_secs(2);

/// Orphaned recordings are looked for every this many scans (once a minute).
const ORPHAN_SCANS: u32 = 30;
/// A broadcast ended this long ago has no compositor left to finalize what a killed one was
/// recording: its process or pod is gone, and its 60 s of SIGTERM grace are over.
const ORPHAN_AFTER_MS: i64 = 120_000;

/// Scans for new manifests now and then every few seconds, for as long as the server runs.
pub fn spawn(state: AppState) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        let mut tried = HashSet::new();
        for scan in 0u32.. {
            tick.tick().await;
            if scan % ORPHAN_SCANS == 0 {
                adopt_orphans(&state, &mut tried).await;
            }
            collect(&state).await;
        }
    })
}

/// Recordings a killed compositor left without a manifest, in broadcasts that have ended since
/// (so no compositor will start on that data and adopt them): each gets what a compositor
/// would have written, a poster and a manifest, for `collect` to register. `tried` keeps a file
/// that cannot be read from being probed again. Returns how many were adopted.
pub async fn adopt_orphans(state: &AppState, tried: &mut HashSet<PathBuf>) -> usize {
    let root = state.settings.media_dir();
    let dirs: Vec<(String, PathBuf)> = tokio::task::spawn_blocking(move || {
        let Ok(entries) = std::fs::read_dir(&root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| Some((e.file_name().to_str()?.to_owned(), e.path())))
            .filter(|(_, dir)| !orphans(&dir.join("recordings")).is_empty())
            .collect()
    })
    .await
    .unwrap_or_default();
    let ffmpeg = state
        .ingest
        .get()
        .map_or_else(|| PathBuf::from("ffmpeg"), |i| i.ffmpeg().to_owned());
    let mut adopted = 0;
    for (name, dir) in dirs {
        let Some(id) = name
            .strip_prefix("bc-")
            .and_then(|id| crate::error::parse_id(id, "broadcast").ok())
        else {
            continue;
        };
        let ended = sqlx::query("SELECT ended_at FROM broadcasts WHERE id = $1")
            .bind(&id)
            .fetch_optional(&state.db.pool)
            .await
            .ok()
            .flatten()
            .and_then(|r| r.try_get::<Option<i64>, _>("ended_at").ok().flatten());
        let long_over = ended.is_some_and(|at| at < now_ms() - ORPHAN_AFTER_MS);
        if !long_over {
            continue;
        }
        let library = Library {
            broadcast: name.clone(),
        };
        for file in orphans(&dir.join("recordings")) {
            if !tried.insert(file.clone()) {
                continue;
            }
            match adopt(&ffmpeg, &library, &file).await {
                Ok(()) => {
                    adopted += 1;
                    tracing::info!(recording = %file.display(), "an interrupted recording of an ended broadcast was finalized");
                }
                Err(e) => {
                    tracing::warn!(recording = %file.display(), error = %format!("{e:#}"), "cannot finalize an interrupted recording");
                }
            }
        }
    }
    adopted
}

/// Registers every pending manifest; returns how many recordings were added. A bad manifest is
/// logged and set aside, never retried forever and never registered.
pub async fn collect(state: &AppState) -> usize {
    let root = state.settings.media_dir();
    let found = tokio::task::spawn_blocking(move || pending(&root))
        .await
        .unwrap_or_default();
    let mut added = 0;
    for path in found {
        match register(state, &path).await {
            Ok(n) => {
                added += n;
                if let Err(e) = Manifest::mark_registered(&path) {
                    tracing::warn!(manifest = %path.display(), error = %e, "cannot mark the manifest registered");
                }
            }
            Err(Failure::Invalid(e)) => {
                tracing::warn!(manifest = %path.display(), error = %e, "ignoring an invalid recording manifest");
                let _ = Manifest::mark_registered(&path);
            }
            // The database is down or busy: the manifest stays and is tried on the next scan.
            Err(Failure::Retry(e)) => {
                tracing::warn!(manifest = %path.display(), error = %e, "cannot register the recording yet");
            }
        }
    }
    added
}

enum Failure {
    Invalid(anyhow::Error),
    Retry(anyhow::Error),
}

/// The same recording gets the same id, so two API replicas scanning one volume register it
/// once (the insert does nothing on a conflict).
fn recording_id(relative: &str) -> String {
    let h = sha2::Sha256::digest(relative.as_bytes());
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    uuid::Builder::from_random_bytes(b).into_uuid().to_string()
}

async fn register(state: &AppState, manifest: &Path) -> Result<usize, Failure> {
    let m = Manifest::read(manifest).map_err(|e| Failure::Invalid(e.into()))?;
    let dir = manifest
        .parent()
        .ok_or_else(|| Failure::Invalid(anyhow::anyhow!("no directory")))?;
    // The manifest must sit under its own broadcast's directory.
    let expected = state
        .settings
        .media_dir()
        .join(&m.broadcast)
        .join("recordings");
    if dir != expected {
        return Err(Failure::Invalid(anyhow::anyhow!(
            "manifest for broadcast {} is outside its directory",
            m.broadcast
        )));
    }
    let id = m
        .broadcast
        .strip_prefix("bc-")
        .and_then(|id| crate::error::parse_id(id, "broadcast").ok())
        .ok_or_else(|| Failure::Invalid(anyhow::anyhow!("{} is not a broadcast", m.broadcast)))?;
    let data = &state.settings.data_dir;
    let file = dir.join(&m.file);
    if !file.is_file() {
        return Err(Failure::Invalid(anyhow::anyhow!("{} is missing", m.file)));
    }
    let path = relative(data, &file).map_err(Failure::Invalid)?;
    let poster = m
        .poster
        .as_ref()
        .map(|p| dir.join(p))
        .filter(|p| p.is_file())
        .map(|p| relative(data, &p))
        .transpose()
        .map_err(Failure::Invalid)?;
    let b = sqlx::query("SELECT owner_id, title FROM broadcasts WHERE id = $1")
        .bind(&id)
        .fetch_optional(&state.db.pool)
        .await
        .map_err(|e| Failure::Retry(e.into()))?
        .ok_or_else(|| Failure::Invalid(anyhow::anyhow!("broadcast {} is gone", m.broadcast)))?;
    let get = |c: &str| {
        b.try_get::<String, _>(c)
            .map_err(|e| Failure::Retry(e.into()))
    };
    let mut title = get("title")?;
    if m.part > 0 {
        title = format!("{title} (part {})", m.part + 1);
    }
    let done = sqlx::query(
        "INSERT INTO recordings (id, owner_id, broadcast_id, title, path, poster_path, \
         content_type, size_bytes, duration_ms, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'video/mp4', $7, $8, $9) ON CONFLICT (id) DO NOTHING",
    )
    .bind(recording_id(&path))
    .bind(get("owner_id")?)
    .bind(&id)
    .bind(title)
    .bind(&path)
    .bind(poster)
    .bind(i64::try_from(m.size_bytes).unwrap_or(i64::MAX))
    .bind(i64::try_from(m.duration_ms).unwrap_or(i64::MAX))
    .bind(if m.finished_at_ms > 0 {
        m.finished_at_ms
    } else {
        now_ms()
    })
    .execute(&state.db.writer)
    .await
    .map_err(|e| Failure::Retry(e.into()))?;
    tracing::info!(broadcast = %id, recording = %path, "recording added to the library");
    Ok(done.rows_affected() as usize)
}

#[cfg(test)]
mod tests {
    use super::recording_id;

    #[test]
    fn ids_are_stable_per_path_and_parse_as_ids() {
        let a = recording_id("media/x/recordings/a.mp4");
        assert_eq!(a, recording_id("media/x/recordings/a.mp4"));
        assert_ne!(a, recording_id("media/x/recordings/b.mp4"));
        assert!(crate::error::parse_id(&a, "recording").is_ok());
    }
}
