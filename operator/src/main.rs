//! `castyard-operator`: parses flags, connects to the cluster, and runs the Broadcast controller.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context as _;
use castyard_crd::Broadcast;
use castyard_operator::config::{MediaClaim, OperatorConfig, UdpStrategy};
use castyard_operator::controller::{ChildCache, Context, error_policy, reconcile};
use clap::{Parser, ValueEnum};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, ResourceRequirements, Secret, Service};
use kube::api::PartialObjectMeta;
use kube::runtime::{Controller, WatchStreamExt, controller, reflector, watcher};
use kube::{Api, Client, ResourceExt};

/// Reconciles castyard.dev Broadcasts into per-broadcast SFU and compositor pods.
#[derive(Parser, Debug)]
#[command(name = "castyard-operator", version)]
struct Cli {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "CASTYARD_NAMESPACE")]
    namespace: Option<String>,
    /// The media-worker image the SFU and compositor pods run.
    #[arg(
        long,
        env = "CASTYARD_WORKER_IMAGE",
        default_value = "ghcr.io/castyard/castyard-media-worker:latest"
    )]
    image: String,
    #[arg(long, env = "CASTYARD_WORKER_IMAGE_PULL_POLICY")]
    image_pull_policy: Option<String>,
    /// How browsers reach each SFU's media UDP port.
    #[arg(
        long,
        env = "CASTYARD_UDP_STRATEGY",
        value_enum,
        default_value = "node-port"
    )]
    udp_strategy: Udp,
    /// The IP every SFU tells browsers to send media to, instead of its node's (node-port,
    /// host-network) or its load balancer's: a public address in front of the nodes.
    #[arg(long, env = "CASTYARD_SFU_ADVERTISE_IP")]
    sfu_advertise_ip: Option<String>,
    /// With host-network: the node ports SFUs may take, as FIRST-LAST.
    #[arg(long, env = "CASTYARD_HOST_PORT_RANGE", default_value = "40000-40999")]
    host_port_range: String,
    /// Node labels media pods must match, as key=value (repeatable).
    #[arg(
        long = "node-selector",
        env = "CASTYARD_NODE_SELECTOR",
        value_delimiter = ','
    )]
    node_selector: Vec<String>,
    /// Tolerations for media pods, as a JSON array of Kubernetes Toleration objects.
    #[arg(long, env = "CASTYARD_TOLERATIONS")]
    tolerations: Option<String>,
    /// SFU pods' resources when a Broadcast's spec.workerResources leaves them unset, as a JSON
    /// Kubernetes ResourceRequirements object.
    #[arg(long, env = "CASTYARD_SFU_RESOURCES")]
    sfu_resources: Option<String>,
    /// Compositor pods' resources, as --sfu-resources.
    #[arg(long, env = "CASTYARD_COMPOSITOR_RESOURCES")]
    compositor_resources: Option<String>,
    /// Namespace of the leader-election Lease (the operator's own). Set it whenever more than
    /// one replica runs: only the Lease holder reconciles.
    #[arg(long, env = "CASTYARD_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's name in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Seconds a leader holds the Lease without renewing it; a standby takes over after that.
    #[arg(long, env = "CASTYARD_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..=300))]
    lease_duration: u64,
    /// Broadcasts reconciled at once. Each in-flight reconcile holds API connections and
    /// buffers, so this bounds the operator's memory as well as its load on the API server.
    #[arg(long, env = "CASTYARD_CONCURRENCY", default_value_t = 16, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// The API's ReadWriteMany PersistentVolumeClaim (chart: api.persistence.existingClaim):
    /// compositors of Broadcasts in its namespace keep recordings and HLS on it, under
    /// `media/<broadcast>/`, and read brand pictures from its `uploads/`.
    #[arg(long, env = "CASTYARD_MEDIA_CLAIM")]
    media_claim: Option<String>,
    /// The namespace of --media-claim (the release's).
    #[arg(long, env = "CASTYARD_MEDIA_CLAIM_NAMESPACE", requires = "media_claim")]
    media_claim_namespace: Option<String>,
    /// A Secret in each broadcast's namespace whose `token` the workers' /metrics then requires
    /// (chart: metrics.podMonitor.tokenSecret, which the PodMonitor presents).
    #[arg(long, env = "CASTYARD_WORKER_METRICS_SECRET")]
    worker_metrics_secret: Option<String>,
    /// A ConfigMap in each broadcast's namespace whose `ca.crt` (PEM) compositors trust for
    /// RTMPS destinations (chart: tls.extraCaConfigMap).
    #[arg(long, env = "CASTYARD_EXTRA_CA_CONFIG_MAP")]
    extra_ca_config_map: Option<String>,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, env = "CASTYARD_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Udp {
    HostNetwork,
    NodePort,
    LoadBalancer,
}

fn config(cli: &Cli) -> anyhow::Result<OperatorConfig> {
    let udp = match cli.udp_strategy {
        Udp::NodePort => UdpStrategy::NodePort,
        Udp::LoadBalancer => UdpStrategy::LoadBalancer,
        Udp::HostNetwork => {
            let (a, b) = cli
                .host_port_range
                .split_once('-')
                .context("--host-port-range must be FIRST-LAST")?;
            let (first_port, last_port) = (a.trim().parse()?, b.trim().parse()?);
            anyhow::ensure!(
                first_port > 0 && first_port <= last_port,
                "--host-port-range is empty"
            );
            UdpStrategy::HostNetwork {
                first_port,
                last_port,
            }
        }
    };
    let node_selector = cli
        .node_selector
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .context("--node-selector takes key=value")
        })
        .collect::<anyhow::Result<BTreeMap<_, _>>>()?;
    let tolerations = match &cli.tolerations {
        Some(json) => serde_json::from_str(json)
            .context("--tolerations must be a JSON array of Tolerations")?,
        None => Vec::new(),
    };
    let resources = |flag: &str, json: &Option<String>| {
        json.as_deref()
            .map(serde_json::from_str::<ResourceRequirements>)
            .transpose()
            .with_context(|| format!("{flag} must be a JSON ResourceRequirements object"))
    };
    // The chart passes an empty value for "not set".
    let sfu_advertise_ip = match cli.sfu_advertise_ip.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(ip) => Some(ip.parse().with_context(|| {
            format!("--sfu-advertise-ip {ip:?} is not an IP address (ICE candidates take IPs)")
        })?),
    };
    Ok(OperatorConfig {
        image: cli.image.clone(),
        sfu_advertise_ip,
        image_pull_policy: cli.image_pull_policy.clone(),
        udp,
        node_selector,
        tolerations,
        sfu_resources: resources("--sfu-resources", &cli.sfu_resources)?,
        compositor_resources: resources("--compositor-resources", &cli.compositor_resources)?,
        media_claim: match (&cli.media_claim, &cli.media_claim_namespace) {
            (Some(name), Some(ns)) if !name.is_empty() => Some(MediaClaim {
                namespace: ns.clone(),
                name: name.clone(),
            }),
            (Some(name), None) if !name.is_empty() => {
                anyhow::bail!("--media-claim needs --media-claim-namespace")
            }
            _ => None,
        },
        worker_metrics_secret: cli
            .worker_metrics_secret
            .clone()
            .filter(|s| !s.trim().is_empty()),
        extra_ca_config_map: cli
            .extra_ca_config_map
            .clone()
            .filter(|s| !s.trim().is_empty()),
    })
}

/// Waits until this replica holds the `castyard-operator` Lease; the receiver turns false if it
/// is lost.
async fn lead(
    client: &Client,
    ns: &str,
    identity: Option<String>,
    duration: u64,
) -> anyhow::Result<tokio::sync::watch::Receiver<bool>> {
    // Each replica keeps the library's own field manager (one per identity): taking an orphaned
    // Lease is a server-side apply without force, and only a conflict between two different
    // managers stops two replicas from both taking it.
    let mut builder =
        kube_lease_manager::LeaseManagerBuilder::new(client.clone(), "castyard-operator")
            .with_namespace(ns)
            .with_duration(duration)
            .with_grace((duration / 3).max(1));
    if let Some(id) = identity {
        builder = builder.with_identity(id);
    }
    let manager = builder
        .build()
        .await
        .context("preparing the leader Lease")?;
    let (mut rx, _task) = manager.watch().await;
    tracing::info!(namespace = ns, "waiting to become the leader");
    while !*rx.borrow_and_update() {
        rx.changed().await.context("leader election stopped")?;
    }
    tracing::info!("leading; starting the controller");
    Ok(rx)
}

fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = config(&cli)?;
    let client = Client::try_default()
        .await
        .context("reading the Kubernetes config (in-cluster or KUBECONFIG)")?;
    // Children are watched by our label only, so the operator never lists unrelated objects.
    // Pods are kept without their spec (status is what the reconcile reads); Services and
    // ConfigMaps only as metadata: which exist is all it asks of them.
    let ours = watcher::Config::default().labels("app.kubernetes.io/managed-by=castyard-operator");
    let keys = watcher::Config::default().labels("app.kubernetes.io/managed-by=castyard-api");
    let (pods, pods_writer) = reflector::store();
    let pod_events = reflector(
        pods_writer,
        watcher(scoped::<Pod>(&client, &cli.namespace), ours.clone()).modify(|p| {
            p.managed_fields_mut().clear();
            p.spec = None;
        }),
    )
    .default_backoff()
    .touched_objects();
    let (services, services_writer) = reflector::store();
    let service_events = reflector(
        services_writer,
        watcher(
            scoped::<PartialObjectMeta<Service>>(&client, &cli.namespace),
            ours.clone(),
        )
        .modify(|s| s.managed_fields_mut().clear()),
    )
    .default_backoff()
    .touched_objects();
    let (config_maps, config_maps_writer) = reflector::store();
    let config_map_events = reflector(
        config_maps_writer,
        watcher(
            scoped::<PartialObjectMeta<ConfigMap>>(&client, &cli.namespace),
            ours,
        )
        .modify(|c| c.managed_fields_mut().clear()),
    )
    .default_backoff()
    .touched_objects();
    let cache = ChildCache {
        pods,
        services,
        config_maps,
    };
    let ctx =
        Arc::new(Context::new(client.clone(), config, cli.identity.clone()).with_cache(cache));
    let listener = tokio::net::TcpListener::bind(cli.metrics_addr)
        .await
        .with_context(|| format!("binding {}", cli.metrics_addr))?;
    let server = castyard_operator::metrics::router(ctx.metrics.clone());
    tokio::spawn(async move { axum::serve(listener, server).await });
    let mut leadership = match &cli.lease_namespace {
        Some(ns) => Some(lead(&client, ns, cli.identity.clone(), cli.lease_duration).await?),
        None => None,
    };
    let controller = Controller::new(
        scoped::<Broadcast>(&client, &cli.namespace),
        watcher::Config::default(),
    )
    .with_config(controller::Config::default().concurrency(cli.concurrency))
    .owns_stream(pod_events)
    .owns_stream(service_events)
    .owns_stream(config_map_events)
    .owns(scoped::<Secret>(&client, &cli.namespace), keys)
    .shutdown_on_signal()
    .run(reconcile, error_policy, ctx)
    .for_each(|res| async move {
        match res {
            Ok((obj, _)) => tracing::debug!(broadcast = %obj.name, "reconciled"),
            Err(e) => tracing::warn!(error = %e, "reconcile error"),
        }
    });
    let lost = async {
        match leadership.as_mut() {
            Some(rx) => while rx.changed().await.is_ok() && *rx.borrow() {},
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = controller => {}
        _ = lost => {
            // Another replica may already hold the Lease: stop at once, and let the pod restart
            // and rejoin the election rather than reconcile beside a new leader.
            tracing::error!("lost the leader Lease; exiting");
            std::process::exit(1);
        }
    }
    tracing::info!("controller stopped");
    Ok(())
}
