//! The seam between user actions and running media: a Broadcast spec plus its stream keys goes
//! to Kubernetes (a CR and a Secret) or, embedded, to the in-process local backend.

use std::collections::BTreeMap;

use castyard_crd::{BroadcastSpec, BroadcastStatus};

pub mod embedded;
pub mod kubernetes;

/// A stream key in memory: redacted from Debug so it cannot reach a log line by accident.
#[derive(Clone)]
pub struct StreamKey(pub String);

impl std::fmt::Debug for StreamKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StreamKey(••••)")
    }
}

/// Everything a backend needs to make one broadcast real.
#[derive(Clone, Debug)]
pub struct DesiredBroadcast {
    /// The DNS-safe object name (`bc-<uuid>`); pods and processes are named after it.
    pub name: String,
    pub spec: BroadcastSpec,
    /// Stream keys by the key name each destination's `streamKeySecretRef` points at.
    pub stream_keys: BTreeMap<String, StreamKey>,
    /// What the broadcast's workers require on their control ports.
    pub control_token: castyard_proto::ControlToken,
}

/// Name of the Secret holding a broadcast's stream keys; destinations reference it.
pub fn keys_secret_name(broadcast: &str) -> String {
    format!("{broadcast}-stream-keys")
}

#[async_trait::async_trait]
pub trait BroadcastBackend: Send + Sync {
    /// Makes the world match `desired` (idempotent; called after every change).
    async fn apply(&self, desired: &DesiredBroadcast) -> anyhow::Result<()>;
    /// Removes the broadcast and everything it owns.
    async fn delete(&self, name: &str) -> anyhow::Result<()>;
    /// What the reconciler last reported, if anything yet.
    async fn status(&self, name: &str) -> anyhow::Result<Option<BroadcastStatus>>;
}
