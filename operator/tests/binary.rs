//! The whole `castyard-operator` binary against kmock's HTTP Kubernetes API emulator: watches,
//! server-side apply, the status subresource, finalizers and leader election, end to end.

mod support;

use castyard_crd::{Broadcast, Phase};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod, Secret, Service};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde_json::json;
use support::{Emulator, Operator, eventually};

fn stream_keys(name: &str, keys: &[&str]) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name,
            "namespace": "default",
            "labels": {"app.kubernetes.io/managed-by": "castyard-api"},
        },
        "stringData": keys.iter().map(|k| (k.to_string(), json!("sk-test"))).collect::<serde_json::Map<_, _>>(),
    }))
    .unwrap()
}

async fn get_opt<K>(api: &Api<K>, name: &str) -> Option<K>
where
    K: Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.get_opt(name).await.expect("emulator reachable")
}

/// Marks a pod Running and Ready through the status subresource, as the kubelet would.
async fn kubelet_ready(pods: &Api<Pod>, name: &str) {
    let status = json!({"status": {
        "phase": "Running",
        "podIP": "10.0.0.7",
        "hostIP": "192.0.2.10",
        "conditions": [{"type": "Ready", "status": "True"}],
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("kubelet status patch");
}

async fn phase(api: &Api<Broadcast>, name: &str) -> Option<Phase> {
    get_opt(api, name).await?.status?.phase
}

fn owned_by(obj: &impl Resource, b: &Broadcast) -> bool {
    obj.owner_references().iter().any(|o| {
        o.kind == "Broadcast"
            && o.name == b.name_any()
            && Some(&o.uid) == b.meta().uid.as_ref()
            && o.controller == Some(true)
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broadcast_from_backstage_to_deleted() {
    let emulator = Emulator::start();
    let client = emulator.client();
    let broadcasts: Api<Broadcast> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();

    // A broadcast whose Secret does not exist sits beside the good one and must not stall it.
    let mut broken = Broadcast::test()
        .named("broken")
        .with_destination("yt", "rtmp://a.example/live");
    broken.spec.destinations[0].stream_key_secret_ref.name = "nowhere-keys".into();
    broken.metadata.uid = None;
    broadcasts.create(&pp, &broken).await.unwrap();
    secrets
        .create(&pp, &stream_keys("show-stream-keys", &["yt", "tw"]))
        .await
        .unwrap();
    secrets
        .create(&pp, &support::control_token_secret("show"))
        .await
        .unwrap();
    let mut show = Broadcast::test().with_destination("yt", "rtmp://a.example/live");
    show.metadata.uid = None;
    let show = broadcasts.create(&pp, &show).await.unwrap();

    let _operator = Operator::start(&emulator, "solo", &[]);

    // Backstage: the SFU's Pod, Service and ConfigMap, each owned by the Broadcast.
    let sfu = eventually("the SFU pod", || get_opt(&pods, "show-sfu")).await;
    assert!(owned_by(&sfu, &show), "{:?}", sfu.owner_references());
    let svc = eventually("the SFU service", || get_opt(&services, "show-sfu")).await;
    assert!(owned_by(&svc, &show));
    let cm = eventually("the SFU config", || get_opt(&configmaps, "show-sfu")).await;
    assert!(owned_by(&cm, &show));
    assert!(get_opt(&pods, "show-compositor").await.is_none());
    assert_eq!(
        sfu.labels()
            .get("app.kubernetes.io/managed-by")
            .map(String::as_str),
        Some("castyard-operator")
    );

    // Browsers reach the SFU through its NodePort: the node's IP and the allocated port.
    let node_port = svc
        .spec
        .as_ref()
        .unwrap()
        .ports
        .as_ref()
        .unwrap()
        .iter()
        .find(|p| p.name.as_deref() == Some("media"))
        .and_then(|p| p.node_port)
        .expect("the media port has a nodePort");
    let env = sfu.spec.as_ref().unwrap().containers[0]
        .env
        .clone()
        .unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).cloned().unwrap();
    assert_eq!(
        value("CASTYARD_ADVERTISE_PORT").value,
        Some(node_port.to_string())
    );
    assert_eq!(
        value("CASTYARD_ADVERTISE_IP")
            .value_from
            .unwrap()
            .field_ref
            .unwrap()
            .field_path,
        "status.hostIP"
    );

    kubelet_ready(&pods, "show-sfu").await;
    eventually("phase Backstage", || async {
        (phase(&broadcasts, "show").await? == Phase::Backstage).then_some(())
    })
    .await;
    let media = eventually("the media endpoint", || async {
        get_opt(&broadcasts, "show")
            .await?
            .status?
            .endpoints?
            .media_udp
    })
    .await;
    assert_eq!(media, format!("192.0.2.10:{node_port}"));

    let broken_status = eventually("the broken broadcast to fail", || async {
        let s = get_opt(&broadcasts, "broken").await?.status?;
        (s.phase == Some(Phase::Failed)).then_some(s)
    })
    .await;
    let cond = broken_status
        .conditions
        .iter()
        .find(|c| c.type_ == "DestinationsHealthy")
        .expect("DestinationsHealthy");
    assert_eq!(
        (cond.status.as_str(), cond.reason.as_str()),
        ("False", "InvalidSpec")
    );
    assert!(cond.message.contains("nowhere-keys"), "{}", cond.message);
    assert!(
        get_opt(&pods, "broken-sfu").await.is_none(),
        "invalid specs create nothing"
    );

    // Live: the compositor joins, and the SFU pod is left alone.
    let sfu_before = get_opt(&pods, "show-sfu").await.unwrap();
    broadcasts
        .patch(
            "show",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"state": "Live"}})),
        )
        .await
        .unwrap();
    let compositor = eventually("the compositor pod", || get_opt(&pods, "show-compositor")).await;
    assert!(owned_by(&compositor, &show));
    assert!(owned_by(
        &eventually("the compositor service", || get_opt(
            &services,
            "show-compositor"
        ))
        .await,
        &show
    ));
    let pod_json = serde_json::to_string(&compositor.spec).unwrap();
    assert!(
        !pod_json.contains("sk-test"),
        "no stream key in the pod spec"
    );
    kubelet_ready(&pods, "show-compositor").await;
    eventually("phase Live", || async {
        (phase(&broadcasts, "show").await? == Phase::Live).then_some(())
    })
    .await;

    // A destination added while live reaches the compositor's config; no pod restarts.
    broadcasts
        .patch(
            "show",
            &PatchParams::default(),
            &Patch::Json::<()>(
                serde_json::from_value(
                    json!([{"op": "add", "path": "/spec/destinations/-", "value": {
                        "name": "tw", "kind": "twitch", "url": "rtmp://b.example/app",
                        "streamKeySecretRef": {"name": "show-stream-keys", "key": "tw"},
                    }}]),
                )
                .unwrap(),
            ),
        )
        .await
        .unwrap();
    eventually("the new destination in the compositor config", || async {
        let cm = get_opt(&configmaps, "show-compositor").await?;
        cm.data?
            .values()
            .any(|v| v.contains("rtmp://b.example/app"))
            .then_some(())
    })
    .await;
    let sfu_after = get_opt(&pods, "show-sfu").await.unwrap();
    assert_eq!(sfu_after.uid(), sfu_before.uid());
    assert_eq!(
        sfu_after.spec, sfu_before.spec,
        "the SFU pod spec never changed"
    );
    let compositor_after = get_opt(&pods, "show-compositor").await.unwrap();
    assert_eq!(compositor_after.uid(), compositor.uid());
    assert_eq!(compositor_after.spec, compositor.spec);

    // A child deleted by someone else comes back.
    pods.delete("show-compositor", &DeleteParams::default())
        .await
        .unwrap();
    let recreated = eventually("the compositor pod to come back", || async {
        get_opt(&pods, "show-compositor")
            .await
            .filter(|p| p.uid() != compositor.uid())
    })
    .await;
    assert!(owned_by(&recreated, &show));

    // Ended: the media pods go; the Broadcast stays, Ended.
    broadcasts
        .patch(
            "show",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"state": "Ended"}})),
        )
        .await
        .unwrap();
    eventually("the media pods to go", || async {
        let names: Vec<String> = pods
            .list(&ListParams::default())
            .await
            .ok()?
            .iter()
            .map(|p| p.name_any())
            .collect();
        names.is_empty().then_some(())
    })
    .await;
    eventually("phase Ended", || async {
        (phase(&broadcasts, "show").await? == Phase::Ended).then_some(())
    })
    .await;

    // Deleting it releases the finalizer, and the object goes.
    let before_delete = get_opt(&broadcasts, "show").await.unwrap();
    assert!(
        before_delete
            .finalizers()
            .contains(&"castyard.dev/cleanup".to_string())
    );
    broadcasts
        .delete("show", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the finalizer to be released", || async {
        get_opt(&broadcasts, "show").await.is_none().then_some(())
    })
    .await;

    // Each transition was reported as a Kubernetes Event, and the failure as a Warning.
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let all = events.list(&ListParams::default()).await.unwrap();
    let about = |name: &str| -> Vec<(String, String)> {
        all.iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|e| {
                (
                    e.reason.clone().unwrap_or_default(),
                    e.type_.clone().unwrap_or_default(),
                )
            })
            .collect()
    };
    let show_events = about("show");
    for reason in ["Backstage", "Live", "Ended"] {
        assert!(
            show_events
                .iter()
                .any(|(r, t)| r == reason && t == "Normal"),
            "{reason} in {show_events:?}"
        );
    }
    assert!(
        about("broken").iter().any(|(_, t)| t == "Warning"),
        "{:?}",
        about("broken")
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn only_the_lease_holder_reconciles_and_a_standby_takes_over() {
    let emulator = Emulator::start();
    let client = emulator.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let broadcasts: Api<Broadcast> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let election = ["--lease-namespace", "default", "--lease-duration", "3"];

    let mut replicas = [
        Operator::start(&emulator, "replica-a", &election),
        Operator::start(&emulator, "replica-b", &election),
    ];
    let holder = eventually("a Lease holder", || async {
        get_opt(&leases, "castyard-operator")
            .await?
            .spec?
            .holder_identity
    })
    .await;
    let (leader, standby) = if holder == "replica-a" {
        (0, 1)
    } else {
        (1, 0)
    };

    let mut show = Broadcast::test();
    show.metadata.uid = None;
    Api::<Secret>::namespaced(client.clone(), "default")
        .create(
            &PostParams::default(),
            &support::control_token_secret("show"),
        )
        .await
        .unwrap();
    broadcasts
        .create(&PostParams::default(), &show)
        .await
        .unwrap();
    let first = eventually("the SFU pod", || get_opt(&pods, "show-sfu")).await;
    let counted = eventually("the leader's reconciles", || async {
        replicas[leader]
            .metric("castyard_operator_reconciles_total")
            .await
            .filter(|n| *n > 0.0)
    })
    .await;
    assert!(counted >= 1.0);
    assert_eq!(
        replicas[standby]
            .metric("castyard_operator_reconciles_total")
            .await,
        Some(0.0),
        "the standby must not reconcile while the leader holds the Lease"
    );
    assert_eq!(
        get_opt(&leases, "castyard-operator")
            .await
            .and_then(|l| l.spec?.holder_identity),
        Some(replicas[leader].identity.clone()),
        "the Lease never changed hands while the leader lived"
    );

    // The leader dies without releasing the Lease; after it expires the standby leads.
    replicas[leader].kill();
    let standby_id = replicas[standby].identity.clone();
    eventually("the standby to take the Lease", || async {
        let id = get_opt(&leases, "castyard-operator")
            .await?
            .spec?
            .holder_identity?;
        (id == standby_id).then_some(())
    })
    .await;
    pods.delete("show-sfu", &DeleteParams::default())
        .await
        .unwrap();
    eventually("the new leader to recreate the SFU pod", || async {
        get_opt(&pods, "show-sfu")
            .await
            .filter(|p| p.uid() != first.uid())
    })
    .await;
    assert!(
        replicas[standby]
            .metric("castyard_operator_reconciles_total")
            .await
            .unwrap_or(0.0)
            >= 1.0
    );
}
