//! How the operator shapes media-worker pods: image, placement, and the UDP strategy.

use std::collections::BTreeMap;
use std::net::IpAddr;

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};

/// How browsers reach an SFU's single media UDP port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UdpStrategy {
    /// The SFU pod uses the node's network; its media port is picked from this range by
    /// broadcast name, and the scheduler keeps two SFUs with one port off the same node.
    HostNetwork { first_port: u16, last_port: u16 },
    /// A NodePort Service per SFU.
    NodePort,
    /// A LoadBalancer Service per SFU (mixed TCP/UDP; Kubernetes 1.26+).
    LoadBalancer,
}

#[derive(Clone, Debug)]
pub struct OperatorConfig {
    pub image: String,
    pub image_pull_policy: Option<String>,
    pub udp: UdpStrategy,
    /// Advertised by every SFU in place of its node's or load balancer's address.
    pub sfu_advertise_ip: Option<IpAddr>,
    pub node_selector: BTreeMap<String, String>,
    pub tolerations: Vec<Toleration>,
    /// Used when a Broadcast's spec.workerResources leaves a role unset.
    pub sfu_resources: Option<ResourceRequirements>,
    pub compositor_resources: Option<ResourceRequirements>,
    /// The API's ReadWriteMany volume, which compositors in its namespace write their
    /// recordings and HLS into and read brand pictures from, as `castyard up` shares a disk.
    pub media_claim: Option<MediaClaim>,
    /// A Secret (key `token`) whose token every worker's /metrics then requires; without it
    /// /metrics is open to whoever the NetworkPolicy admits.
    pub worker_metrics_secret: Option<String>,
    /// A ConfigMap in each broadcast's namespace whose `ca.crt` (PEM) compositors trust for
    /// RTMPS destinations, beside the built-in roots and the image's system store.
    pub extra_ca_config_map: Option<String>,
}

/// A PersistentVolumeClaim shared by the API and the compositors of one namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaClaim {
    pub namespace: String,
    pub name: String,
}

impl Default for OperatorConfig {
    fn default() -> Self {
        Self {
            image: "ghcr.io/castyard/castyard-media-worker:latest".into(),
            image_pull_policy: None,
            udp: UdpStrategy::NodePort,
            sfu_advertise_ip: None,
            node_selector: BTreeMap::new(),
            tolerations: Vec::new(),
            sfu_resources: None,
            compositor_resources: None,
            media_claim: None,
            worker_metrics_secret: None,
            extra_ca_config_map: None,
        }
    }
}
