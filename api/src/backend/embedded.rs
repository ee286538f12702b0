//! Embedded mode's backend: each broadcast's desired workloads, run as child processes by the
//! operator's local backend in this process.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use castyard_crd::{Broadcast, BroadcastStatus, DesiredWorkloads, workloads::workloads_for};
use castyard_operator::local::{Keys, LocalBackend};

use super::{BroadcastBackend, DesiredBroadcast, keys_secret_name};

#[derive(Default)]
pub struct EmbeddedBackend {
    desired: Mutex<HashMap<String, (DesiredBroadcast, DesiredWorkloads)>>,
    /// None only where a test exercises the API alone and wants no processes.
    workers: Option<Arc<LocalBackend>>,
}

impl EmbeddedBackend {
    /// Records what should run without running it: for tests of the API by itself.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs every broadcast's media workers as child processes (`castyard up`).
    pub fn with_workers(workers: Arc<LocalBackend>) -> Self {
        Self {
            desired: Mutex::default(),
            workers: Some(workers),
        }
    }

    /// Everything last handed over for `name` (tests check what the workers receive).
    pub fn desired(&self, name: &str) -> Option<DesiredBroadcast> {
        self.desired
            .lock()
            .expect("lock poisoned")
            .get(name)
            .map(|(d, _)| d.clone())
    }

    /// The workloads that should be running for `name`.
    pub fn workloads(&self, name: &str) -> Option<DesiredWorkloads> {
        self.desired
            .lock()
            .expect("lock poisoned")
            .get(name)
            .map(|(_, w)| w.clone())
    }
}

#[async_trait::async_trait]
impl BroadcastBackend for EmbeddedBackend {
    async fn apply(&self, desired: &DesiredBroadcast) -> anyhow::Result<()> {
        let w = workloads_for(&desired.name, &desired.spec);
        if let Some(workers) = &self.workers {
            // Laid out as the Secret the cluster backend writes: one Secret, a key per
            // destination name.
            let keys: Keys = BTreeMap::from([(
                keys_secret_name(&desired.name),
                desired
                    .stream_keys
                    .iter()
                    .map(|(k, v)| (k.clone(), v.0.clone()))
                    .collect(),
            )]);
            workers
                .apply(&desired.name, &w, &keys, &desired.control_token)
                .await?;
        }
        self.desired
            .lock()
            .expect("lock poisoned")
            .insert(desired.name.clone(), (desired.clone(), w));
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        if let Some(workers) = &self.workers {
            workers.remove(name).await;
        }
        self.desired.lock().expect("lock poisoned").remove(name);
        Ok(())
    }

    /// Computed from the worker processes the way the operator computes it from pods.
    async fn status(&self, name: &str) -> anyhow::Result<Option<BroadcastStatus>> {
        let Some(workers) = &self.workers else {
            return Ok(None);
        };
        let spec = match self.desired.lock().expect("lock poisoned").get(name) {
            Some((d, _)) => d.spec.clone(),
            None => return Ok(None),
        };
        let b = Broadcast::new(name, spec);
        Ok(Some(workers.status(&b).await))
    }
}
