//! The Broadcast operator: reconciles Broadcasts into media pods, or child processes locally.
// Only the local backend's process handling (prctl, kill) opts back in, with SAFETY notes.
#![deny(unsafe_code)]

pub mod advertise;
pub mod build;
pub mod config;
pub mod controller;
pub mod local;
pub mod metrics;
pub mod status;

/// One variant per reconcile step; `metric_label` becomes `failures{error=...}`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The object lacks something the API server always sets (uid, name, namespace).
    #[error("Broadcast is missing {0}")]
    MissingObjectKey(&'static str),
    #[error("invalid Broadcast: {0}")]
    Invalid(String),
    #[error("serialising worker config: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A call to the Kubernetes API failed; transient, so the reconcile is retried with backoff.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Invalid(_) => "invalid",
            Error::Serialize(_) => "serialize",
            Error::Kube(_) => "kube",
            Error::Finalizer(_) => "finalizer",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
