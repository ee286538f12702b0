//! The server's tunables: production defaults that the command line sets and tests shorten,
//! and where its files live.

use std::path::PathBuf;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Embedded,
    Kubernetes,
}

/// Tunables with production defaults; tests shorten or loosen them.
#[derive(Clone, Debug)]
pub struct Settings {
    pub mode: Mode,
    /// The address browsers reach us at; invite links are built on it.
    pub public_url: String,
    pub data_dir: PathBuf,
    /// The built frontend (frontend/dist); served at / when present.
    pub web_dir: Option<PathBuf>,
    /// npm's swagger-ui-dist, served at /api-docs.
    pub swagger_dir: Option<PathBuf>,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
    pub invite_ttl: Duration,
    pub file_url_ttl: Duration,
    /// Marks the refresh cookie Secure; on when the public URL is https.
    pub secure_cookies: bool,
    pub json_limit: usize,
    pub upload_limit: usize,
    /// Auth attempts per client address: burst, then one per `auth_refill`.
    pub auth_burst: u32,
    pub auth_refill: Duration,
    pub chat_max_chars: usize,
    pub chat_burst: u32,
    pub chat_refill: Duration,
    pub ws_max_message: usize,
    pub rtmp_probe_timeout: Duration,
    /// rtmp://host:port/live when this process runs the RTMP ingest.
    pub ingest_url: Option<String>,
    /// Names this process in cross-replica messages (viewer counts).
    pub replica_id: String,
    /// Why this server cannot go live (its FFmpeg preflight failed), told to whoever tries.
    pub cannot_go_live: Option<String>,
}

impl Settings {
    pub fn new(mode: Mode, data_dir: PathBuf, public_url: String) -> Self {
        Self {
            mode,
            secure_cookies: public_url.starts_with("https://"),
            public_url,
            data_dir,
            web_dir: None,
            swagger_dir: None,
            access_ttl: Duration::from_secs(15 * 60),
            refresh_ttl: Duration::from_secs(30 * 24 * 3600),
            invite_ttl: Duration::from_secs(24 * 3600),
            file_url_ttl: Duration::from_secs(3600),
            json_limit: 64 * 1024,
            upload_limit: 5 * 1024 * 1024,
            auth_burst: 20,
            auth_refill: Duration::from_secs(3),
            chat_max_chars: 500,
            chat_burst: 5,
            chat_refill: Duration::from_secs(1),
            ws_max_message: 8 * 1024,
            rtmp_probe_timeout: Duration::from_secs(10),
            ingest_url: None,
            replica_id: crate::db::new_id(),
            cannot_go_live: None,
        }
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.data_dir.join("recordings")
    }

    pub fn hls_dir(&self) -> PathBuf {
        self.data_dir.join("hls")
    }

    /// Each broadcast's compositor writes its scene, HLS and recordings under
    /// `media/<resource name>/`.
    pub fn media_dir(&self) -> PathBuf {
        self.data_dir.join("media")
    }

    /// A stream's HLS file: an ingest's (`hls/<id>/`) or the composed show's
    /// (`media/bc-<id>/hls/bc-<id>/`). `id` must already be a parsed id and `file` a plain name.
    pub fn hls_file(&self, id: &str, file: &str) -> Option<PathBuf> {
        [self.hls_dir().join(id), {
            let name = crate::broadcasts::resource_name(id);
            self.media_dir().join(&name).join("hls").join(name)
        }]
        .into_iter()
        .map(|d| d.join(file))
        .find(|p| p.exists())
    }

    pub fn uploads_dir(&self) -> PathBuf {
        self.data_dir.join("uploads")
    }
}
