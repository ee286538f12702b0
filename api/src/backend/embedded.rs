//! Embedded mode's backend: keeps each broadcast's desired workloads in process for the local
//! (child-process) reconciler, which is the operator issue's; until then it records only.

use std::collections::HashMap;
use std::sync::Mutex;

use castyard_crd::{BroadcastStatus, DesiredWorkloads, workloads::workloads_for};

use super::{BroadcastBackend, DesiredBroadcast};

#[derive(Default)]
pub struct EmbeddedBackend {
    desired: Mutex<HashMap<String, (DesiredBroadcast, DesiredWorkloads)>>,
}

impl EmbeddedBackend {
    pub fn new() -> Self {
        Self::default()
    }

    /// The workloads the local reconciler should be running for `name`.
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
        self.desired
            .lock()
            .expect("lock poisoned")
            .insert(desired.name.clone(), (desired.clone(), w));
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        self.desired.lock().expect("lock poisoned").remove(name);
        Ok(())
    }

    /// No reconciler observes anything yet, so there is no observed status to report.
    async fn status(&self, _name: &str) -> anyhow::Result<Option<BroadcastStatus>> {
        Ok(None)
    }
}
