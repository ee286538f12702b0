//! Everything a request handler may reach, built once at start-up and shared.

use std::sync::Arc;
use std::time::Instant;

use crate::backend::BroadcastBackend;
use crate::broadcasts::view::OwnerBroadcasts;
use crate::cache::OwnerCache;
use crate::crypto::{MasterKey, StreamKeyCipher};
use crate::db::Db;
use crate::metrics::Metrics;
use crate::ratelimit::Limiters;
use crate::realtime::Hub;
pub use crate::settings::{Mode, Settings};
use crate::tokens::Jwt;

pub struct Shared {
    pub db: Db,
    pub settings: Settings,
    pub jwt: Jwt,
    pub keys: StreamKeyCipher,
    pub hub: std::sync::Arc<Hub>,
    pub backend: Arc<dyn BroadcastBackend>,
    pub metrics: Metrics,
    pub limits: Limiters,
    pub started: Instant,
    /// Set only on SQLite, where this process is the only writer; see `cache`.
    pub broadcasts: Option<OwnerCache<OwnerBroadcasts>>,
    /// The RTMP ingest when this process runs it (set once, after the state exists, because
    /// the ingest's hooks hold the state).
    pub ingest: std::sync::OnceLock<Arc<castyard_media_worker::ingest::Ingest>>,
}

#[derive(Clone)]
pub struct AppState(pub Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

impl AppState {
    pub fn new(
        db: Db,
        settings: Settings,
        master: &MasterKey,
        hub: std::sync::Arc<Hub>,
        backend: Arc<dyn BroadcastBackend>,
    ) -> Self {
        let limits = Limiters::new(&settings);
        let broadcasts = (db.kind == crate::db::Kind::Sqlite).then(OwnerCache::default);
        Self(Arc::new(Shared {
            jwt: Jwt::new(&master.jwt_secret()),
            keys: master.stream_key_cipher(),
            db,
            hub,
            backend,
            metrics: Metrics::new(),
            limits,
            settings,
            started: Instant::now(),
            broadcasts,
            ingest: std::sync::OnceLock::new(),
        }))
    }
}
