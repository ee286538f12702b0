//! The pure build step: a Broadcast and the operator's config in, the child objects out
//! (a ConfigMap, Pod and Service per media worker), owned by the Broadcast and labelled.
//!
//! Worker config and stream keys reach the pods as mounted volumes, never as env or args:
//! the kubelet refreshes mounted ConfigMaps and Secrets in place, so a destination added
//! while live changes files, not the pod spec, and nothing restarts.

use std::collections::{BTreeMap, BTreeSet};

use castyard_crd::workloads::{CompositorConfig, SfuConfig, desired_workloads};
use castyard_crd::{Broadcast, DesiredWorkloads};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource,
    EnvVar, EnvVarSource, HTTPGetAction, KeyToPath, ObjectFieldSelector,
    PersistentVolumeClaimVolumeSource, Pod, PodSecurityContext, PodSpec, Probe,
    ResourceRequirements, SecretVolumeSource, SecurityContext, Service, ServicePort, ServiceSpec,
    Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::Resource;
use serde::Serialize;

use crate::config::{OperatorConfig, UdpStrategy};
use crate::{Error, Result};

pub const MANAGER: &str = "castyard-operator";
pub const CONFIG_DIR: &str = "/etc/castyard";
pub const CONFIG_FILE: &str = "worker.json";
const CONTROL_VOLUME: &str = "control-token";
const METRICS_VOLUME: &str = "metrics-token";
const METRICS_DIR: &str = "/var/run/secrets/castyard-metrics";
/// Where a compositor finds the extra CAs (`--extra-ca-config-map`), and their key.
const EXTRA_CA_VOLUME: &str = "extra-ca";
const EXTRA_CA_DIR: &str = "/etc/castyard/extra-ca";
pub const EXTRA_CA_KEY: &str = "ca.crt";
/// Each referenced Secret is mounted at `KEYS_DIR/<secret name>/<key>`.
pub const KEYS_DIR: &str = "/var/run/secrets/castyard";
/// The compositor's scene, HLS and recording; the root filesystem is read-only.
pub const DATA_DIR: &str = "/var/lib/castyard";
/// The group of the media-worker image's user (docker/castyard-media-worker.Dockerfile).
const WORKER_GID: i64 = 65532;
/// Where a compositor mounts the API's shared volume (OperatorConfig::media_claim).
pub const SHARED_DIR: &str = "/var/lib/castyard-shared";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Sfu,
    Compositor,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Sfu => "sfu",
            Role::Compositor => "compositor",
        }
    }
}

/// Everything one Broadcast should own right now.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Children {
    pub config_maps: Vec<ConfigMap>,
    pub pods: Vec<Pod>,
    pub services: Vec<Service>,
}

pub fn child_name(broadcast: &str, role: Role) -> String {
    format!("{broadcast}-{}", role.as_str())
}

pub fn labels(broadcast: &str, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        (
            "app.kubernetes.io/name".into(),
            "castyard-media-worker".into(),
        ),
        ("app.kubernetes.io/instance".into(), broadcast.into()),
        ("app.kubernetes.io/component".into(), role.as_str().into()),
        ("app.kubernetes.io/part-of".into(), "castyard".into()),
        ("app.kubernetes.io/managed-by".into(), MANAGER.into()),
        ("castyard.dev/broadcast".into(), broadcast.into()),
    ])
}

/// The pod selector: stable labels only, so a label added later never orphans a pod.
fn selector(broadcast: &str, role: Role) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/instance".into(), broadcast.into()),
        ("app.kubernetes.io/component".into(), role.as_str().into()),
    ])
}

/// Builds the children for the Broadcast's current spec; an Ended one owns none.
pub fn build(b: &Broadcast, cfg: &OperatorConfig) -> Result<Children> {
    let name = b
        .metadata
        .name
        .as_deref()
        .ok_or(Error::MissingObjectKey(".metadata.name"))?;
    let owner = b
        .controller_owner_ref(&())
        .ok_or(Error::MissingObjectKey(".metadata.uid"))?;
    let ns = b.metadata.namespace.clone();
    let DesiredWorkloads { sfu, compositor } = desired_workloads(b);
    let resources = b.spec.worker_resources.clone().unwrap_or_default();
    let mut out = Children::default();

    if let Some(mut sfu) = sfu {
        if let UdpStrategy::HostNetwork {
            first_port,
            last_port,
        } = cfg.udp
        {
            sfu.media_port = host_port(name, first_port, last_port)?;
        }
        let meta = meta(name, Role::Sfu, &ns, &owner);
        out.config_maps.push(config_map(meta.clone(), &sfu)?);
        out.pods.push(sfu_pod(
            meta.clone(),
            name,
            &sfu,
            cfg,
            resources.sfu.or(cfg.sfu_resources.clone()),
        ));
        out.services.push(sfu_service(meta, &sfu, cfg));
    }
    if let Some(comp) = compositor {
        let meta = meta(name, Role::Compositor, &ns, &owner);
        // Every Secret any destination names, enabled or not, so toggling a destination never
        // changes the pod's volumes (which would mean recreating it).
        let secrets: BTreeSet<&str> = b
            .spec
            .destinations
            .iter()
            .map(|d| d.stream_key_secret_ref.name.as_str())
            .collect();
        out.config_maps.push(config_map(meta.clone(), &comp)?);
        out.pods.push(compositor_pod(
            meta.clone(),
            name,
            &comp,
            &secrets,
            cfg,
            resources.compositor.or(cfg.compositor_resources.clone()),
        ));
        out.services.push(compositor_service(meta, &comp));
    }
    Ok(out)
}

fn meta(broadcast: &str, role: Role, ns: &Option<String>, owner: &OwnerReference) -> ObjectMeta {
    ObjectMeta {
        name: Some(child_name(broadcast, role)),
        namespace: ns.clone(),
        labels: Some(labels(broadcast, role)),
        owner_references: Some(vec![owner.clone()]),
        ..ObjectMeta::default()
    }
}

/// A stable pick from the range (FNV-1a of the name), so reconciles agree with each other.
fn host_port(name: &str, first: u16, last: u16) -> Result<u16> {
    if first == 0 || last < first {
        return Err(Error::Invalid(format!(
            "host port range {first}-{last} is empty"
        )));
    }
    let hash = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let span = u64::from(last - first) + 1;
    Ok(first + (hash % span) as u16)
}

fn config_map(meta: ObjectMeta, config: &impl Serialize) -> Result<ConfigMap> {
    Ok(ConfigMap {
        metadata: meta,
        data: Some(BTreeMap::from([(
            CONFIG_FILE.to_owned(),
            serde_json::to_string_pretty(config)?,
        )])),
        ..ConfigMap::default()
    })
}

pub(crate) fn field_env(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: path.into(),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn probe(path: &str, port: u16) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::Int(i32::from(port)),
            ..Default::default()
        }),
        period_seconds: Some(5),
        failure_threshold: Some(3),
        ..Default::default()
    }
}

fn port(name: &str, port: u16, protocol: &str) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: i32::from(port),
        protocol: Some(protocol.into()),
        ..Default::default()
    }
}

fn container(
    role: Role,
    cfg: &OperatorConfig,
    control_port: u16,
    resources: Option<ResourceRequirements>,
) -> Container {
    let mut c = base_container(role, cfg, control_port, resources);
    if cfg.worker_metrics_secret.is_some() {
        c.args.get_or_insert_with(Vec::new).extend([
            "--metrics-token-file".into(),
            format!("{METRICS_DIR}/{}", castyard_proto::token::SECRET_KEY),
        ]);
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: METRICS_VOLUME.into(),
                mount_path: METRICS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
    }
    c
}

fn base_container(
    role: Role,
    cfg: &OperatorConfig,
    control_port: u16,
    resources: Option<ResourceRequirements>,
) -> Container {
    Container {
        name: role.as_str().into(),
        image: Some(cfg.image.clone()),
        image_pull_policy: cfg.image_pull_policy.clone(),
        // The local backend runs the same arguments with its own paths.
        args: Some(vec![
            role.as_str().into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_FILE}"),
            "--keys-dir".into(),
            KEYS_DIR.into(),
            // A path, never the token: args, env and the CR are readable by more than the pod.
            "--control-token-file".into(),
            castyard_proto::token::DEFAULT_FILE.into(),
            // Why it stopped, for the pod's status and from there the Broadcast's conditions;
            // a panic or an OOM kill leaves its log tail there instead.
            "--termination-log".into(),
            castyard_proto::termination::KUBERNETES_PATH.into(),
        ]),
        termination_message_path: Some(castyard_proto::termination::KUBERNETES_PATH.into()),
        termination_message_policy: Some("FallbackToLogsOnError".into()),
        env: Some(vec![
            field_env("CASTYARD_POD_IP", "status.podIP"),
            field_env("CASTYARD_NODE_IP", "status.hostIP"),
        ]),
        readiness_probe: Some(probe("/readyz", control_port)),
        liveness_probe: Some(probe("/healthz", control_port)),
        resources,
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: CONTROL_VOLUME.into(),
                mount_path: castyard_proto::token::MOUNT_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
        ]),
        security_context: Some(SecurityContext {
            run_as_non_root: Some(true),
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".into()]),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A Secret's `token` alone, readable by the worker only.
fn token_volume(volume: &str, secret: &str) -> Volume {
    let key = castyard_proto::token::SECRET_KEY;
    Volume {
        name: volume.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(vec![KeyToPath {
                key: key.into(),
                path: key.into(),
                mode: None,
            }]),
            default_mode: Some(0o400),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn pod_spec(
    name: &str,
    broadcast: &str,
    c: Container,
    cfg: &OperatorConfig,
    extra_volumes: Vec<Volume>,
) -> PodSpec {
    let metrics = cfg
        .worker_metrics_secret
        .as_ref()
        .map(|secret| token_volume(METRICS_VOLUME, secret));
    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        },
        // The broadcast's control token, which every control request must carry.
        token_volume(
            CONTROL_VOLUME,
            &castyard_proto::token::secret_name(broadcast),
        ),
    ];
    volumes.extend(metrics);
    volumes.extend(extra_volumes);
    PodSpec {
        containers: vec![c],
        volumes: Some(volumes),
        restart_policy: Some("Always".into()),
        node_selector: (!cfg.node_selector.is_empty()).then(|| cfg.node_selector.clone()),
        tolerations: (!cfg.tolerations.is_empty()).then(|| cfg.tolerations.clone()),
        // Workers never talk to the Kubernetes API.
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        ..Default::default()
    }
}

fn sfu_pod(
    meta: ObjectMeta,
    broadcast: &str,
    sfu: &SfuConfig,
    cfg: &OperatorConfig,
    resources: Option<ResourceRequirements>,
) -> Pod {
    let name = meta.name.clone().unwrap_or_default();
    let mut c = container(Role::Sfu, cfg, sfu.signalling_port, resources);
    let mut media = port("media", sfu.media_port, "UDP");
    let host_network = matches!(cfg.udp, UdpStrategy::HostNetwork { .. });
    if host_network {
        media.host_port = Some(i32::from(sfu.media_port));
    }
    c.ports = Some(vec![port("signalling", sfu.signalling_port, "TCP"), media]);
    let mut spec = pod_spec(&name, broadcast, c, cfg, vec![]);
    if host_network {
        spec.host_network = Some(true);
        spec.dns_policy = Some("ClusterFirstWithHostNet".into());
    }
    Pod {
        metadata: meta,
        spec: Some(spec),
        ..Default::default()
    }
}

fn compositor_pod(
    meta: ObjectMeta,
    broadcast: &str,
    comp: &CompositorConfig,
    secrets: &BTreeSet<&str>,
    cfg: &OperatorConfig,
    resources: Option<ResourceRequirements>,
) -> Pod {
    let name = meta.name.clone().unwrap_or_default();
    let mut c = container(Role::Compositor, cfg, comp.control_port, resources);
    c.ports = Some(vec![port("control", comp.control_port, "TCP")]);
    let shared = cfg
        .media_claim
        .as_ref()
        .filter(|claim| meta.namespace.as_deref() == Some(claim.namespace.as_str()));
    let mut volumes = vec![Volume {
        name: "data".into(),
        empty_dir: shared.is_none().then(EmptyDirVolumeSource::default),
        persistent_volume_claim: shared.map(|claim| PersistentVolumeClaimVolumeSource {
            claim_name: claim.name.clone(),
            read_only: None,
        }),
        ..Default::default()
    }];
    let mounts = c.volume_mounts.get_or_insert_with(Vec::new);
    if shared.is_some() {
        // The API's own layout (its data dir is this volume's root): the compositor's data under
        // media/<broadcast>/, where the API serves HLS and registers recordings from, and the
        // brand pictures hosts upload. The whole volume is mounted rather than subPaths, which
        // kubelet would create root-owned and unwritable for this non-root worker.
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: SHARED_DIR.into(),
            ..Default::default()
        });
        c.args.get_or_insert_with(Vec::new).extend([
            "--data-dir".into(),
            format!("{SHARED_DIR}/media/{broadcast}"),
            "--assets-dir".into(),
            format!("{SHARED_DIR}/uploads"),
        ]);
    } else {
        mounts.push(VolumeMount {
            name: "data".into(),
            mount_path: DATA_DIR.into(),
            ..Default::default()
        });
    }
    // Extra CAs for RTMPS destinations behind a private CA or a TLS-inspecting proxy.
    if let Some(map) = &cfg.extra_ca_config_map {
        volumes.push(Volume {
            name: EXTRA_CA_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: map.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: EXTRA_CA_VOLUME.into(),
                mount_path: EXTRA_CA_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        c.args.get_or_insert_with(Vec::new).extend([
            "--extra-ca-file".into(),
            format!("{EXTRA_CA_DIR}/{EXTRA_CA_KEY}"),
        ]);
    }
    for (i, secret) in secrets.iter().enumerate() {
        let vol = format!("stream-keys-{i}");
        volumes.push(Volume {
            name: vol.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some((*secret).to_owned()),
                default_mode: Some(0o400),
                ..Default::default()
            }),
            ..Default::default()
        });
        c.volume_mounts
            .get_or_insert_with(Vec::new)
            .push(VolumeMount {
                name: vol,
                mount_path: format!("{KEYS_DIR}/{secret}"),
                read_only: Some(true),
                ..Default::default()
            });
    }
    let mut spec = pod_spec(&name, broadcast, c, cfg, volumes);
    if shared.is_some() {
        // The worker image's user, as the API pods' fsGroup: files both write stay shared.
        spec.security_context = Some(PodSecurityContext {
            fs_group: Some(WORKER_GID),
            fs_group_change_policy: Some("OnRootMismatch".into()),
            ..Default::default()
        });
    }
    // Time to flush and finalize every output (recording, HLS) after SIGTERM.
    spec.termination_grace_period_seconds = Some(60);
    Pod {
        metadata: meta,
        spec: Some(spec),
        ..Default::default()
    }
}

fn service_port(name: &str, port: u16, protocol: &str) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port: i32::from(port),
        protocol: Some(protocol.into()),
        target_port: Some(IntOrString::Int(i32::from(port))),
        ..Default::default()
    }
}

fn sfu_service(meta: ObjectMeta, sfu: &SfuConfig, cfg: &OperatorConfig) -> Service {
    let mut ports = vec![service_port("signalling", sfu.signalling_port, "TCP")];
    let kind = match cfg.udp {
        // On the host network browsers reach the node's address directly; the Service only
        // carries signalling inside the cluster.
        UdpStrategy::HostNetwork { .. } => "ClusterIP",
        UdpStrategy::NodePort => "NodePort",
        UdpStrategy::LoadBalancer => "LoadBalancer",
    };
    if kind != "ClusterIP" {
        ports.push(service_port("media", sfu.media_port, "UDP"));
    }
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some(kind.into()),
            selector: Some(selector(&sfu.broadcast, Role::Sfu)),
            ports: Some(ports),
            // Media must come back to the pod it started on, with the client's own address.
            external_traffic_policy: (kind != "ClusterIP").then(|| "Local".into()),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn compositor_service(meta: ObjectMeta, comp: &CompositorConfig) -> Service {
    Service {
        metadata: meta,
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".into()),
            selector: Some(selector(&comp.broadcast, Role::Compositor)),
            ports: Some(vec![service_port("control", comp.control_port, "TCP")]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::MediaClaim;

    fn names(c: &Children) -> Vec<String> {
        c.pods
            .iter()
            .map(|p| p.metadata.name.clone().unwrap())
            .collect()
    }

    fn owned_and_labelled(meta: &ObjectMeta) {
        let owner = &meta.owner_references.as_ref().unwrap()[0];
        assert_eq!(owner.kind, "Broadcast");
        assert_eq!(owner.name, "show");
        assert_eq!(owner.controller, Some(true));
        assert_eq!(meta.namespace.as_deref(), Some("default"));
        let l = meta.labels.as_ref().unwrap();
        assert_eq!(l["app.kubernetes.io/managed-by"], MANAGER);
        assert_eq!(l["app.kubernetes.io/instance"], "show");
    }

    #[test]
    fn backstage_is_one_sfu() {
        let c = build(&Broadcast::test(), &OperatorConfig::default()).unwrap();
        assert_eq!(names(&c), ["show-sfu"]);
        assert_eq!((c.config_maps.len(), c.services.len()), (1, 1));
        for meta in c
            .pods
            .iter()
            .map(|p| &p.metadata)
            .chain(c.services.iter().map(|s| &s.metadata))
            .chain(c.config_maps.iter().map(|m| &m.metadata))
        {
            owned_and_labelled(meta);
        }
        let spec = c.pods[0].spec.as_ref().unwrap();
        let container = &spec.containers[0];
        assert_eq!(container.args.as_ref().unwrap()[0], "sfu");
        assert_eq!(spec.automount_service_account_token, Some(false));
        let sc = container.security_context.as_ref().unwrap();
        assert_eq!(
            (sc.run_as_non_root, sc.allow_privilege_escalation),
            (Some(true), Some(false))
        );
        let config: SfuConfig =
            serde_json::from_str(&c.config_maps[0].data.as_ref().unwrap()[CONFIG_FILE]).unwrap();
        assert_eq!(config.max_participants, 11);
        let svc = c.services[0].spec.as_ref().unwrap();
        assert_eq!(svc.type_.as_deref(), Some("NodePort"));
        let pod_labels = c.pods[0].metadata.labels.as_ref().unwrap();
        for (k, v) in svc.selector.as_ref().unwrap() {
            assert_eq!(pod_labels.get(k), Some(v), "the Service selects its pod");
        }
        let protos: Vec<_> = svc
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .map(|p| p.protocol.clone().unwrap())
            .collect();
        assert_eq!(protos, ["TCP", "UDP"]);
    }

    #[test]
    fn an_extra_ca_config_map_reaches_the_compositor_alone() {
        let b = Broadcast::test().live();
        let cfg = OperatorConfig {
            extra_ca_config_map: Some("corporate-ca".into()),
            ..OperatorConfig::default()
        };
        let c = build(&b, &cfg).unwrap();
        let (sfu, compositor) = (&c.pods[0], &c.pods[1]);
        let spec = compositor.spec.as_ref().unwrap();
        let volume = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == EXTRA_CA_VOLUME)
            .unwrap();
        assert_eq!(volume.config_map.as_ref().unwrap().name, "corporate-ca");
        let container = &spec.containers[0];
        let args = container.args.as_ref().unwrap().join(" ");
        assert!(
            args.contains("--extra-ca-file /etc/castyard/extra-ca/ca.crt"),
            "{args}"
        );
        assert!(container.volume_mounts.as_ref().unwrap().iter().any(|m| {
            m.name == EXTRA_CA_VOLUME && m.mount_path == EXTRA_CA_DIR && m.read_only == Some(true)
        }));
        // The SFU sends nowhere over TLS.
        let sfu = serde_json::to_string(sfu).unwrap();
        assert!(!sfu.contains("extra-ca"), "{sfu}");
    }

    #[test]
    fn a_metrics_token_secret_is_mounted_in_every_worker_and_required_by_flag() {
        let b = Broadcast::test().live();
        let plain = build(&b, &OperatorConfig::default()).unwrap();
        for pod in &plain.pods {
            let c = &pod.spec.as_ref().unwrap().containers[0];
            assert!(
                !c.args
                    .as_ref()
                    .unwrap()
                    .contains(&"--metrics-token-file".into())
            );
        }
        let cfg = OperatorConfig {
            worker_metrics_secret: Some("worker-metrics".into()),
            ..OperatorConfig::default()
        };
        let c = build(&b, &cfg).unwrap();
        assert_eq!(c.pods.len(), 2);
        for pod in &c.pods {
            let spec = pod.spec.as_ref().unwrap();
            let volume = spec
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == METRICS_VOLUME)
                .unwrap();
            let secret = volume.secret.as_ref().unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("worker-metrics"));
            let container = &spec.containers[0];
            let args = container.args.as_ref().unwrap();
            let at = args
                .iter()
                .position(|a| a == "--metrics-token-file")
                .unwrap();
            assert_eq!(args[at + 1], "/var/run/secrets/castyard-metrics/token");
            assert!(
                container
                    .volume_mounts
                    .as_ref()
                    .unwrap()
                    .iter()
                    .any(|m| m.name == METRICS_VOLUME && m.mount_path == METRICS_DIR)
            );
        }
    }

    #[test]
    fn live_adds_a_compositor_that_mounts_keys_and_holds_none() {
        let b = Broadcast::test()
            .live()
            .with_destination("yt", "rtmp://a.rtmp.youtube.com/live2");
        let c = build(&b, &OperatorConfig::default()).unwrap();
        assert_eq!(names(&c), ["show-sfu", "show-compositor"]);
        let pod = &c.pods[1];
        let selector = c.services[1]
            .spec
            .as_ref()
            .unwrap()
            .selector
            .as_ref()
            .unwrap();
        assert_eq!(selector["app.kubernetes.io/component"], "compositor");
        assert_eq!(selector["app.kubernetes.io/instance"], "show");
        let spec = pod.spec.as_ref().unwrap();
        let container = &spec.containers[0];
        assert!(
            container
                .env
                .as_ref()
                .unwrap()
                .iter()
                .all(|e| e.value.is_none()),
            "no literal env values"
        );
        let secret = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .filter(|v| v.name.starts_with("stream-keys-"))
            .find_map(|v| v.secret.as_ref())
            .expect("keys volume");
        assert_eq!(secret.secret_name.as_deref(), Some("show-stream-keys"));
        let mounts: Vec<_> = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .map(|m| m.mount_path.as_str())
            .collect();
        assert!(
            mounts.contains(&"/var/run/secrets/castyard/show-stream-keys"),
            "{mounts:?}"
        );
        // The root filesystem is read-only: the scene, HLS and recording need a volume.
        assert!(mounts.contains(&DATA_DIR), "{mounts:?}");
        assert_eq!(spec.termination_grace_period_seconds, Some(60));
        let config: CompositorConfig =
            serde_json::from_str(&c.config_maps[1].data.as_ref().unwrap()[CONFIG_FILE]).unwrap();
        assert_eq!(config.destinations[0].stream_key_secret_ref.key, "yt");
    }

    #[test]
    fn a_destination_added_while_live_changes_config_not_pods() {
        let cfg = OperatorConfig::default();
        let before = build(
            &Broadcast::test()
                .live()
                .with_destination("yt", "rtmp://a/live"),
            &cfg,
        )
        .unwrap();
        let after = build(
            &Broadcast::test()
                .live()
                .with_destination("yt", "rtmp://a/live")
                .with_destination("tw", "rtmp://b/app"),
            &cfg,
        )
        .unwrap();
        assert_eq!(
            before.pods, after.pods,
            "pod specs are identical, so server-side apply restarts nothing"
        );
        assert_ne!(before.config_maps[1], after.config_maps[1]);
        assert_eq!(
            before.config_maps[0], after.config_maps[0],
            "the SFU's config is untouched"
        );
        let disabled = build(
            &Broadcast::test()
                .live()
                .with_destination("yt", "rtmp://a/live")
                .with_disabled_destination("tw", "rtmp://b/app"),
            &cfg,
        )
        .unwrap();
        assert_eq!(
            disabled.pods, after.pods,
            "enabling or disabling never changes volumes"
        );
    }

    fn pod_spec_of<'a>(c: &'a Children, name: &str) -> &'a PodSpec {
        let pod = c
            .pods
            .iter()
            .find(|p| p.metadata.name.as_deref() == Some(name));
        pod.and_then(|p| p.spec.as_ref()).expect(name)
    }

    #[test]
    fn compositors_in_the_api_namespace_share_its_volume() {
        let claim = MediaClaim {
            namespace: "default".into(),
            name: "castyard-media".into(),
        };
        let cfg = OperatorConfig {
            media_claim: Some(claim),
            ..Default::default()
        };
        let b = Broadcast::test().live().recording();
        assert_eq!(b.metadata.namespace.as_deref(), Some("default"));
        let c = build(&b, &cfg).unwrap();
        let spec = pod_spec_of(&c, "show-compositor");
        let data = spec
            .volumes
            .as_ref()
            .unwrap()
            .iter()
            .find(|v| v.name == "data")
            .unwrap();
        assert_eq!(
            data.persistent_volume_claim.as_ref().unwrap().claim_name,
            "castyard-media"
        );
        assert!(data.empty_dir.is_none());
        let container = &spec.containers[0];
        let args = container.args.as_ref().unwrap().join(" ");
        assert!(
            args.ends_with("--data-dir /var/lib/castyard-shared/media/show --assets-dir /var/lib/castyard-shared/uploads"),
            "{args}"
        );
        let mount = container
            .volume_mounts
            .as_ref()
            .unwrap()
            .iter()
            .find(|m| m.name == "data")
            .unwrap();
        assert_eq!(mount.mount_path, SHARED_DIR);
        assert!(mount.sub_path.is_none());
        assert_eq!(
            spec.security_context.as_ref().unwrap().fs_group,
            Some(65532)
        );
        // The SFU keeps nothing on disk.
        assert!(
            pod_spec_of(&c, "show-sfu")
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .all(|v| v.persistent_volume_claim.is_none())
        );

        // A claim cannot be mounted across namespaces: elsewhere the compositor keeps an emptyDir.
        let elsewhere = build(
            &Broadcast::test().live().recording().in_namespace("team-b"),
            &cfg,
        )
        .unwrap();
        let spec = pod_spec_of(&elsewhere, "show-compositor");
        assert!(
            spec.volumes
                .as_ref()
                .unwrap()
                .iter()
                .any(|v| v.name == "data" && v.empty_dir.is_some())
        );
        assert!(
            !spec.containers[0]
                .args
                .as_ref()
                .unwrap()
                .contains(&"--data-dir".to_string())
        );
        assert!(spec.security_context.is_none());
    }

    #[test]
    fn ended_owns_nothing() {
        let c = build(
            &Broadcast::test().live().recording().ended(),
            &OperatorConfig::default(),
        )
        .unwrap();
        assert_eq!(c, Children::default());
    }

    #[test]
    fn host_network_picks_a_stable_port_in_range() {
        let cfg = OperatorConfig {
            udp: UdpStrategy::HostNetwork {
                first_port: 40000,
                last_port: 40099,
            },
            ..Default::default()
        };
        let a = build(&Broadcast::test(), &cfg).unwrap();
        let b = build(&Broadcast::test(), &cfg).unwrap();
        assert_eq!(a, b);
        let spec = a.pods[0].spec.as_ref().unwrap();
        assert_eq!(spec.host_network, Some(true));
        let media = spec.containers[0]
            .ports
            .as_ref()
            .unwrap()
            .iter()
            .find(|p| p.protocol.as_deref() == Some("UDP"))
            .unwrap();
        assert!((40000..=40099).contains(&media.container_port));
        assert_eq!(media.host_port, Some(media.container_port));
        let config: SfuConfig =
            serde_json::from_str(&a.config_maps[0].data.as_ref().unwrap()[CONFIG_FILE]).unwrap();
        assert_eq!(
            i32::from(config.media_port),
            media.container_port,
            "the SFU is told the port it got"
        );
        assert_eq!(
            a.services[0].spec.as_ref().unwrap().type_.as_deref(),
            Some("ClusterIP")
        );
        let other = build(&Broadcast::test().named("another-show"), &cfg).unwrap();
        assert_ne!(other.pods[0].spec, a.pods[0].spec);
        let empty = OperatorConfig {
            udp: UdpStrategy::HostNetwork {
                first_port: 5,
                last_port: 4,
            },
            ..Default::default()
        };
        assert!(matches!(
            build(&Broadcast::test(), &empty),
            Err(Error::Invalid(_))
        ));
    }

    #[test]
    fn placement_and_resources_come_from_config_unless_the_spec_says() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let req = |cpu: &str| ResourceRequirements {
            requests: Some(BTreeMap::from([("cpu".into(), Quantity(cpu.into()))])),
            ..Default::default()
        };
        let cfg = OperatorConfig {
            udp: UdpStrategy::LoadBalancer,
            node_selector: BTreeMap::from([("castyard.dev/media".into(), "true".into())]),
            sfu_resources: Some(req("500m")),
            compositor_resources: Some(req("2")),
            ..Default::default()
        };
        let mut b = Broadcast::test().live();
        b.spec.worker_resources = Some(castyard_crd::WorkerResources {
            sfu: None,
            compositor: Some(req("3")),
        });
        let c = build(&b, &cfg).unwrap();
        let cpu = |p: &Pod| {
            p.spec.as_ref().unwrap().containers[0]
                .resources
                .as_ref()
                .unwrap()
                .requests
                .as_ref()
                .unwrap()["cpu"]
                .0
                .clone()
        };
        assert_eq!(cpu(&c.pods[0]), "500m");
        assert_eq!(cpu(&c.pods[1]), "3", "the Broadcast's own request wins");
        assert_eq!(
            c.pods[0]
                .spec
                .as_ref()
                .unwrap()
                .node_selector
                .as_ref()
                .unwrap()["castyard.dev/media"],
            "true"
        );
        assert_eq!(
            c.services[0].spec.as_ref().unwrap().type_.as_deref(),
            Some("LoadBalancer")
        );
    }

    #[test]
    fn an_object_without_uid_is_refused() {
        let mut b = Broadcast::test();
        b.metadata.uid = None;
        assert!(matches!(
            build(&b, &OperatorConfig::default()),
            Err(Error::MissingObjectKey(_))
        ));
    }
}
