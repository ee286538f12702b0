//! Cluster mode's backend: server-side applies the Broadcast CR and its stream-key Secret, reads status back.

use std::collections::BTreeMap;

use anyhow::Context;
use castyard_crd::{Broadcast, BroadcastStatus};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Client, Resource};
use serde_json::json;

use super::{BroadcastBackend, DesiredBroadcast, keys_secret_name};

/// One field manager for everything the API writes, so its fields never fight the operator's.
pub const FIELD_MANAGER: &str = "castyard-api";

pub struct KubernetesBackend {
    broadcasts: Api<Broadcast>,
    secrets: Api<Secret>,
}

impl KubernetesBackend {
    pub fn new(client: Client, namespace: &str) -> Self {
        Self {
            broadcasts: Api::namespaced(client.clone(), namespace),
            secrets: Api::namespaced(client, namespace),
        }
    }

    fn labels(name: &str) -> serde_json::Value {
        json!({
            "app.kubernetes.io/name": "castyard",
            "app.kubernetes.io/managed-by": FIELD_MANAGER,
            "castyard.dev/broadcast": name,
        })
    }
}

#[async_trait::async_trait]
impl BroadcastBackend for KubernetesBackend {
    async fn apply(&self, desired: &DesiredBroadcast) -> anyhow::Result<()> {
        let pp = PatchParams::apply(FIELD_MANAGER).force();
        // The CR carries only secret references; the keys go into the Secret below.
        let cr = json!({
            "apiVersion": Broadcast::api_version(&()),
            "kind": Broadcast::kind(&()),
            "metadata": { "name": desired.name, "labels": Self::labels(&desired.name) },
            "spec": desired.spec,
        });
        let applied = self
            .broadcasts
            .patch(&desired.name, &pp, &Patch::Apply(&cr))
            .await
            .context("applying Broadcast")?;
        let uid = applied
            .metadata
            .uid
            .context("applied Broadcast has no uid")?;
        let data: BTreeMap<String, ByteString> = desired
            .stream_keys
            .iter()
            .map(|(k, v)| (k.clone(), ByteString(v.0.as_bytes().to_vec())))
            .collect();
        let secret_name = keys_secret_name(&desired.name);
        let owner = json!({
            "apiVersion": Broadcast::api_version(&()),
            "kind": Broadcast::kind(&()),
            "name": desired.name,
            "uid": uid,
            "controller": true,
            "blockOwnerDeletion": true,
        });
        // Owned by the Broadcast, so deleting the show garbage-collects its keys.
        let secret = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": secret_name,
                "labels": Self::labels(&desired.name),
                "ownerReferences": [owner],
            },
            "data": data,
        });
        self.secrets
            .patch(&secret_name, &pp, &Patch::Apply(&secret))
            .await
            .context("applying stream-key Secret")?;
        // The workers' control token, in a Secret of its own: the SFU mounts it but no keys.
        let control_name = castyard_proto::token::secret_name(&desired.name);
        let control = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": control_name,
                "labels": Self::labels(&desired.name),
                "ownerReferences": [owner],
            },
            "data": { castyard_proto::token::SECRET_KEY: ByteString(desired.control_token.expose().as_bytes().to_vec()) },
        });
        self.secrets
            .patch(&control_name, &pp, &Patch::Apply(&control))
            .await
            .context("applying control-token Secret")?;
        Ok(())
    }

    async fn delete(&self, name: &str) -> anyhow::Result<()> {
        match self
            .broadcasts
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).context("deleting Broadcast"),
        }
    }

    async fn status(&self, name: &str) -> anyhow::Result<Option<BroadcastStatus>> {
        let b = self
            .broadcasts
            .get_opt(name)
            .await
            .context("reading Broadcast status")?;
        Ok(b.and_then(|b| b.status))
    }
}
