//! The reconcile for one Broadcast: finalizer, then validate -> build -> apply -> status.
//! Only apply and status touch the API; build and status computation are pure.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use castyard_crd::validate::validate_spec;
use castyard_crd::{Broadcast, BroadcastStatus, DesiredState, Phase};
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, DeleteParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event as KubeEvent, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event, finalizer};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use castyard_proto::{ControlToken, WorkerClient};

use crate::advertise::{Advertise, advertise_on, resolve, sfu_advertise};
use crate::build::{MANAGER, Role, build, child_name};
use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use crate::status::{DESTINATIONS_HEALTHY, Observed, PodObservation, compute};
use crate::{Error, Result};

/// Held only for cleanup outside Kubernetes (the API's rows, recordings); children go by
/// owner reference.
pub const FINALIZER: &str = "castyard.dev/cleanup";

pub struct Context {
    pub client: Client,
    pub config: OperatorConfig,
    pub metrics: Arc<Metrics>,
    pub recorder: Recorder,
    pub cache: Option<ChildCache>,
    /// A worker's control address from its Service name, namespace and port: the Service's
    /// cluster DNS name (tests point it at a local server).
    pub worker_addr: WorkerAddr,
}

pub type WorkerAddr = Arc<dyn Fn(&str, &str, u16) -> String + Send + Sync>;

/// The operator's watch caches of its own children. With them a reconcile learns which
/// children exist, and how the pods are doing, without a GET or a blind DELETE per child;
/// without them (the mock-API tests) every question goes to the API.
pub struct ChildCache {
    pub pods: Store<Pod>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
}

impl ChildCache {
    async fn ready(&self) {
        // An error means the writer is gone, i.e. the operator is shutting down; the reconcile
        // then fails on its own API calls.
        let _ = tokio::join!(
            self.pods.wait_until_ready(),
            self.services.wait_until_ready(),
            self.config_maps.wait_until_ready()
        );
    }
}

impl Context {
    /// `identity` names this replica in the Events it writes (the pod name in a cluster).
    pub fn new(client: Client, config: OperatorConfig, identity: Option<String>) -> Self {
        let reporter = Reporter {
            controller: MANAGER.into(),
            instance: identity,
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            config,
            metrics: Arc::default(),
            cache: None,
            worker_addr: Arc::new(|service, ns, port| format!("{service}.{ns}.svc:{port}")),
        }
    }

    pub fn with_cache(mut self, cache: ChildCache) -> Self {
        self.cache = Some(cache);
        self
    }
}

#[tracing::instrument(skip(b, ctx), fields(broadcast = %b.name_any()))]
pub async fn reconcile(b: Arc<Broadcast>, ctx: Arc<Context>) -> Result<Action> {
    let started = std::time::Instant::now();
    ctx.metrics.reconciles.inc();
    let ns = b
        .namespace()
        .ok_or(Error::MissingObjectKey(".metadata.namespace"))?;
    let name = b.name_any();
    let api: Api<Broadcast> = Api::namespaced(ctx.client.clone(), &ns);
    let result = finalizer(&api, FINALIZER, b, |event| async {
        match event {
            Event::Apply(b) => apply(&b, &ctx, &api, &ns).await,
            // Nothing outside Kubernetes to tell yet; the pods go with their owner.
            Event::Cleanup(_) => {
                ctx.metrics.set_phase(&ns, &name, None);
                Ok(Action::await_change())
            }
        }
    })
    .await
    .map_err(|e| Error::Finalizer(Box::new(e)));
    ctx.metrics
        .duration
        .observe(started.elapsed().as_secs_f64());
    result
}

/// Transient errors retry with a short delay; invalid objects wait for a change.
pub fn error_policy(_b: Arc<Broadcast>, err: &Error, ctx: Arc<Context>) -> Action {
    tracing::warn!(error = %err, "reconcile failed");
    ctx.metrics.failure(err.metric_label());
    match err {
        Error::Invalid(_) | Error::MissingObjectKey(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(5)),
    }
}

fn now() -> Time {
    Time(k8s_openapi::jiff::Timestamp::now())
}

async fn apply(b: &Broadcast, ctx: &Context, api: &Api<Broadcast>, ns: &str) -> Result<Action> {
    let client = &ctx.client;
    // validate: what the schema cannot know, such as whether the referenced Secrets exist.
    let token = match validate(b, &Api::<Secret>::namespaced(client.clone(), ns)).await? {
        Ok(token) => token,
        Err(problem) => {
            let status = invalid_status(b, &problem);
            if b.status.as_ref() != Some(&status) {
                patch_status(api, b, &status).await?;
            }
            ctx.metrics.set_phase(ns, &b.name_any(), status.phase);
            announce(ctx, b, &status, "InvalidSpec", &problem).await;
            // Secrets made by the API are owned by the Broadcast and wake it; others are polled.
            return Ok(Action::requeue(Duration::from_secs(60)));
        }
    };
    let children = build(b, &ctx.config)?;
    let pp = PatchParams::apply(MANAGER).force();
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), ns);
    let services = Api::<Service>::namespaced(client.clone(), ns);
    let pods = Api::<Pod>::namespaced(client.clone(), ns);
    for cm in &children.config_maps {
        apply_one(&config_maps, cm, &pp).await?;
    }
    let name = b.name_any();
    let sfu_child = child_name(&name, Role::Sfu);
    // The SFU's Service goes first: its reply carries what the SFU must advertise.
    let mut advertised = None;
    for svc in &children.services {
        let svc = apply_one(&services, svc, &pp).await?;
        if svc.name_any() == sfu_child
            && let Some(port) = children
                .pods
                .iter()
                .find(|p| p.name_any() == sfu_child)
                .and_then(media_port)
        {
            advertised = Some(resolve(sfu_advertise(&ctx.config, port, &svc)).await);
        }
    }
    // The apply response is the freshest view of a wanted pod; no GET after it.
    let mut applied = BTreeMap::new();
    // Wanted pods not applied this time: their ConfigMap and Service stay.
    let mut held = BTreeSet::new();
    let mut waiting = None;
    let mut replaced = false;
    for pod in &children.pods {
        let mut pod = pod.clone();
        let child = pod.name_any();
        if child == sfu_child {
            match &advertised {
                Some(Advertise::At { ip, port }) => advertise_on(&mut pod, *ip, *port),
                Some(Advertise::Waiting(why)) => {
                    waiting = Some(why.clone());
                    held.insert(child);
                    continue;
                }
                Some(Advertise::Resolve { .. }) | None => {}
            }
        }
        match apply_one(&pods, &pod, &pp).await {
            Ok(pod) => {
                applied.insert(child, pod);
            }
            // A pod's spec is fixed for its life: one built differently now (an SFU whose
            // advertised address moved, an operator upgrade) is replaced, not left to fail
            // every reconcile.
            Err(Error::Kube(kube::Error::Api(e))) if e.code == 422 => {
                match pods.delete(&child, &DeleteParams::default()).await {
                    Ok(_) => {}
                    // Nothing to replace: the pod as built is invalid, which is ours to fix,
                    // not to retry by deleting.
                    Err(kube::Error::Api(gone)) if gone.code == 404 => {
                        return Err(Error::Kube(kube::Error::Api(e)));
                    }
                    Err(other) => return Err(other.into()),
                }
                tracing::info!(pod = %child, reason = %e.message, "replacing a pod whose spec changed");
                let note = format!("pod {child} is recreated: its spec changed ({})", e.message);
                publish_event(ctx, b, EventType::Normal, "PodReplaced", &note).await;
                held.insert(child);
                replaced = true;
            }
            Err(e) => return Err(e),
        }
    }
    let mut observed = Observed {
        sfu_waiting: waiting,
        ..Observed::default()
    };
    for role in [Role::Sfu, Role::Compositor] {
        let child = child_name(&name, role);
        let seen = match applied.get(&child) {
            Some(pod) => Some(PodObservation::from_pod(pod)),
            None if held.contains(&child) => pods
                .get_opt(&child)
                .await?
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| PodObservation::from_pod(&p)),
            None => prune(ctx, ns, &child, &pods, &services, &config_maps).await?,
        };
        match role {
            Role::Sfu => observed.sfu = seen,
            Role::Compositor => observed.compositor = seen,
        }
    }
    // While the compositor runs, its report on each destination goes into the status (the
    // API's destination health and `kubectl get` read it there); the last report stays when
    // it cannot be read this time.
    let mut reported = None;
    if let Some(token) = token
        && observed.compositor.as_ref().is_some_and(|p| p.ready)
    {
        let addr = (ctx.worker_addr)(
            &child_name(&name, Role::Compositor),
            ns,
            castyard_crd::workloads::COMPOSITOR_CONTROL_PORT,
        );
        let client = WorkerClient::new(token).with_timeout(Duration::from_secs(1));
        match client.compositor_status(&addr).await {
            Ok(report) => {
                let mut with = b.clone();
                with.status
                    .get_or_insert_with(Default::default)
                    .destinations = report.destinations;
                reported = Some(with);
            }
            Err(e) => {
                tracing::debug!(%addr, error = %e, "no destination report from the compositor")
            }
        }
    }
    let mut status = compute(reported.as_ref().unwrap_or(b), &observed, &now());
    // Where browsers send media, once the SFU's node (or balancer) is known: what a firewall
    // must let through, in `kubectl describe`.
    let media_udp = match &advertised {
        Some(Advertise::At { ip: Some(ip), port }) => Some(SocketAddr::new(*ip, *port)),
        Some(Advertise::At { ip: None, port }) => applied
            .get(&sfu_child)
            .and_then(|p| p.status.as_ref()?.host_ip.as_deref()?.parse().ok())
            .map(|ip| SocketAddr::new(ip, *port)),
        _ => None,
    };
    // The API relays studio signalling to the SFU's Service, which has the SFU pod's name.
    status.endpoints = observed.sfu.is_some().then(|| castyard_crd::Endpoints {
        signalling: Some(format!(
            "{}.{ns}.svc:{}",
            child_name(&name, Role::Sfu),
            castyard_crd::workloads::SFU_SIGNALLING_PORT
        )),
        media_udp: media_udp.map(|a| a.to_string()),
        ..status.endpoints.clone().unwrap_or_default()
    });
    // The API relays live scene changes to the compositor's Service.
    if observed.compositor.is_some() {
        status
            .endpoints
            .get_or_insert_with(Default::default)
            .control = Some(format!(
            "{}.{ns}.svc:{}",
            child_name(&name, Role::Compositor),
            castyard_crd::workloads::COMPOSITOR_CONTROL_PORT
        ));
    }
    let settled = matches!(
        status.phase,
        Some(Phase::Backstage | Phase::Live | Phase::Ended)
    );
    // An unchanged status is not written: the write would wake this Broadcast again for
    // nothing.
    if b.status.as_ref() != Some(&status) {
        patch_status(api, b, &status).await?;
    }
    ctx.metrics.set_phase(ns, &name, status.phase);
    if let Some(phase) = status.phase {
        let note = format!("phase is now {phase:?}");
        announce(ctx, b, &status, &format!("{phase:?}"), &note).await;
    }
    // Pod changes wake the controller through the owns() watches; this is a safety net. A
    // live show with destinations is looked at often: their health changes without any
    // Kubernetes object changing.
    let reporting = b.spec.state == DesiredState::Live && !b.spec.destinations.is_empty();
    Ok(Action::requeue(Duration::from_secs(if replaced {
        2
    } else if settled && !reporting {
        300
    } else {
        10
    })))
}

/// The SFU container's media port, as the pod was built.
fn media_port(pod: &Pod) -> Option<u16> {
    pod.spec
        .as_ref()?
        .containers
        .first()?
        .ports
        .as_ref()?
        .iter()
        .find(|p| p.name.as_deref() == Some("media"))
        .and_then(|p| u16::try_from(p.container_port).ok())
}

/// A Kubernetes Event when the phase changes (so `kubectl describe` tells the story without
/// an Event per periodic reconcile). Events are best-effort: failing to write one is logged.
async fn announce(
    ctx: &Context,
    b: &Broadcast,
    status: &BroadcastStatus,
    reason: &str,
    note: &str,
) {
    let before = b.status.as_ref().and_then(|s| s.phase);
    if before == status.phase {
        return;
    }
    // A failure is told by its cause: `EncoderUnavailable: ffmpeg not found…`, not "Failed".
    if status.phase == Some(Phase::Failed) {
        let (reason, note) = status
            .message
            .as_deref()
            .and_then(|m| m.split_once(": "))
            .unwrap_or((reason, note));
        publish_event(ctx, b, EventType::Warning, reason, note).await;
    } else {
        publish_event(ctx, b, EventType::Normal, reason, note).await;
    }
}

/// Events are best-effort: failing to write one is logged.
async fn publish_event(ctx: &Context, b: &Broadcast, type_: EventType, reason: &str, note: &str) {
    let event = KubeEvent {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1024).collect()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &b.object_ref(&())).await {
        tracing::warn!(error = %e, "could not record an Event");
    }
}

/// Ok(Err(problem)) for an invalid object, Err for a failed API call; Ok(Ok(token)) carries
/// the broadcast's control token, which its workers require (None once ended: no workers).
async fn validate(
    b: &Broadcast,
    secrets: &Api<Secret>,
) -> Result<std::result::Result<Option<ControlToken>, String>> {
    if let Err(e) = validate_spec(&b.spec) {
        return Ok(Err(e));
    }
    if b.spec.state == DesiredState::Ended {
        return Ok(Ok(None));
    }
    let names: BTreeSet<&str> = b
        .spec
        .destinations
        .iter()
        .map(|d| d.stream_key_secret_ref.name.as_str())
        .collect();
    for name in names {
        if secrets.get_metadata_opt(name).await?.is_none() {
            return Ok(Err(format!(
                "Secret {name:?} named by a destination's streamKeySecretRef does not exist"
            )));
        }
    }
    control_token(b, secrets).await
}

/// The broadcast's control token from its Secret, which the API writes with the Broadcast; a
/// Broadcast applied by hand needs one made by hand, and the message says how.
async fn control_token(
    b: &Broadcast,
    secrets: &Api<Secret>,
) -> Result<std::result::Result<Option<ControlToken>, String>> {
    let name = castyard_proto::token::secret_name(&b.name_any());
    let key = castyard_proto::token::SECRET_KEY;
    let how = format!(
        "create it with: kubectl create secret generic {name} --from-literal={key}=$(openssl rand -base64 32)"
    );
    let Some(secret) = secrets.get_opt(&name).await? else {
        return Ok(Err(format!(
            "Secret {name:?} (the workers' control token) does not exist; {how}"
        )));
    };
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .and_then(|v| std::str::from_utf8(&v.0).ok());
    match text.map(ControlToken::parse) {
        Some(Ok(token)) => Ok(Ok(Some(token))),
        _ => Ok(Err(format!(
            "Secret {name:?} has no valid {key:?} (at least {} characters of base64); {how}",
            castyard_proto::token::MIN_CHARS
        ))),
    }
}

fn invalid_status(b: &Broadcast, problem: &str) -> BroadcastStatus {
    let mut status = b.status.clone().unwrap_or_default();
    status.phase = Some(Phase::Failed);
    status.observed_generation = b.metadata.generation;
    let mut condition = Condition {
        type_: DESTINATIONS_HEALTHY.into(),
        status: "False".into(),
        reason: "InvalidSpec".into(),
        message: problem.into(),
        observed_generation: b.metadata.generation,
        last_transition_time: now(),
    };
    match status
        .conditions
        .iter_mut()
        .find(|c| c.type_ == DESTINATIONS_HEALTHY)
    {
        Some(c) => {
            // The same problem keeps its time, so the periodic re-check writes nothing.
            if c.status == condition.status && c.reason == condition.reason {
                condition.last_transition_time = c.last_transition_time.clone();
            }
            *c = condition;
        }
        None => status.conditions.push(condition),
    }
    status.message = Some(format!("InvalidSpec: {problem}"));
    status
}

async fn apply_one<K>(api: &Api<K>, obj: &K, pp: &PatchParams) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = obj
        .meta()
        .name
        .clone()
        .ok_or(Error::MissingObjectKey("child name"))?;
    Ok(api.patch(&name, pp, &Patch::Apply(obj)).await?)
}

/// Deletes the children of a role no longer wanted. The pod is still observed while it
/// terminates (its outputs are being finalized), which is what makes the phase Ending.
async fn prune(
    ctx: &Context,
    ns: &str,
    child: &str,
    pods: &Api<Pod>,
    services: &Api<Service>,
    config_maps: &Api<ConfigMap>,
) -> Result<Option<PodObservation>> {
    let Some(cache) = &ctx.cache else {
        delete_if_present(pods, child).await?;
        delete_if_present(services, child).await?;
        delete_if_present(config_maps, child).await?;
        return Ok(pods
            .get_opt(child)
            .await?
            .map(|p| PodObservation::from_pod(&p)));
    };
    cache.ready().await;
    let pod = cache.pods.get(&ObjectRef::new(child).within(ns));
    if pod
        .as_ref()
        .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
    {
        delete_if_present(pods, child).await?;
    }
    if cache
        .services
        .get(&ObjectRef::new(child).within(ns))
        .is_some()
    {
        delete_if_present(services, child).await?;
    }
    if cache
        .config_maps
        .get(&ObjectRef::new(child).within(ns))
        .is_some()
    {
        delete_if_present(config_maps, child).await?;
    }
    Ok(pod.map(|p| PodObservation::from_pod(&p)))
}

async fn delete_if_present<K>(api: &Api<K>, name: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.delete(name, &DeleteParams::default()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

async fn patch_status(api: &Api<Broadcast>, b: &Broadcast, status: &BroadcastStatus) -> Result<()> {
    let body = json!({
        "apiVersion": Broadcast::api_version(&()),
        "kind": Broadcast::kind(&()),
        "status": status,
    });
    api.patch_status(
        &b.name_any(),
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await?;
    Ok(())
}
