//! The reconcile against a mock API server that asserts each call in order (tower-test, as
//! kube-rs/controller-rs's ApiServerVerifier does), so no cluster is needed.

use std::sync::Arc;

use castyard_crd::Broadcast;
use castyard_operator::config::{OperatorConfig, UdpStrategy};
use castyard_operator::controller::{Context, FINALIZER, reconcile};
use http_body_util::BodyExt;
use hyper::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
type Reply = tower_test::mock::SendResponse<Response<Body>>;

struct Verifier(Handle);

impl Verifier {
    /// The next call must be `method` on `path` (query aside); returns its body.
    async fn expect(&mut self, method: Method, path: &str) -> (Value, Reply) {
        let (req, send) = self
            .0
            .next_request()
            .await
            .unwrap_or_else(|| panic!("expected {method} {path}, got nothing"));
        assert_eq!(
            (req.method(), req.uri().path()),
            (&method, path),
            "unexpected call"
        );
        if method == Method::PATCH
            && req
                .uri()
                .query()
                .is_some_and(|q| q.contains("fieldManager=castyard-operator"))
        {
            assert!(
                req.uri().query().unwrap().contains("force=true"),
                "server-side apply forces ownership"
            );
        }
        let bytes = req.into_body().collect().await.unwrap().to_bytes();
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).unwrap()
        };
        (body, send)
    }

    async fn echo(&mut self, method: Method, path: &str) -> Value {
        let (body, send) = self.expect(method, path).await;
        ok(send, body.clone());
        body
    }

    /// A Service apply, answered as the API server does: the ports of a NodePort or
    /// LoadBalancer Service get node ports. Returns what was applied.
    async fn service(&mut self, path: &str) -> Value {
        let (body, send) = self.expect(Method::PATCH, path).await;
        let mut reply = body.clone();
        if matches!(
            body["spec"]["type"].as_str(),
            Some("NodePort" | "LoadBalancer")
        ) {
            for (i, port) in reply["spec"]["ports"]
                .as_array_mut()
                .unwrap()
                .iter_mut()
                .enumerate()
            {
                port["nodePort"] = json!(30000 + i);
            }
        }
        ok(send, reply);
        body
    }

    /// The Event for a phase change: reason, type and what it is about.
    async fn event(&mut self, reason: &str, type_: &str) {
        let ev = self
            .echo(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            )
            .await;
        assert_eq!(
            (ev["reason"].as_str(), ev["type"].as_str()),
            (Some(reason), Some(type_)),
            "{ev}"
        );
        assert_eq!(ev["regarding"]["kind"], "Broadcast");
        assert_eq!(ev["regarding"]["name"], "show");
        assert_eq!(ev["reportingController"], "castyard-operator");
    }

    async fn not_found(&mut self, method: Method, path: &str) {
        let (_, send) = self.expect(method, path).await;
        failure(send, 404, "NotFound", "not found");
    }
}

fn failure(send: Reply, code: u16, reason: &str, message: &str) {
    let status = json!({
        "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": message
    });
    send.send_response(
        Response::builder()
            .status(code)
            .body(Body::from(serde_json::to_vec(&status).unwrap()))
            .unwrap(),
    );
}

fn ok(send: Reply, body: Value) {
    send.send_response(
        Response::builder()
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn setup() -> (Arc<Context>, Verifier) {
    let (ctx, api) = setup_context();
    (Arc::new(ctx), api)
}

fn setup_context() -> (Context, Verifier) {
    setup_with(OperatorConfig::default())
}

fn setup_with(config: OperatorConfig) -> (Context, Verifier) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "default");
    (
        Context::new(client, config, Some("operator-0".into())),
        Verifier(handle),
    )
}

/// The value of an env var of a pod's first container, or its fieldRef path.
fn env(pod: &Value, name: &str) -> String {
    let var = pod["spec"]["containers"][0]["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("no {name} in {pod}"));
    var["value"]
        .as_str()
        .or(var["valueFrom"]["fieldRef"]["fieldPath"].as_str())
        .unwrap()
        .to_owned()
}

/// The compositor is not wanted: its children are deleted (none exist) and looked for.
async fn no_compositor(api: &mut Verifier) {
    for kind in ["pods", "services", "configmaps"] {
        api.not_found(Method::DELETE, &format!("{NS}/{kind}/show-compositor"))
            .await;
    }
    api.not_found(Method::GET, &format!("{NS}/pods/show-compositor"))
        .await;
}

/// A compositor's control port on loopback answering `/status` with `report`; returns its
/// address and the request lines it received.
async fn fake_compositor(report: Value) -> (String, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let mut buf = vec![0u8; 2048];
            let n = s.read(&mut buf).await.unwrap_or(0);
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            log.lock()
                .unwrap()
                .push(head.lines().next().unwrap_or("").to_owned());
            // A real compositor answers only the bearer of its broadcast's token.
            let authorized = head
                .lines()
                .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {TOKEN}")));
            let (status, body) = if authorized {
                ("200 OK", report.to_string())
            } else {
                ("401 Unauthorized", "{}".to_owned())
            };
            let reply = format!(
                "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });
    (addr, seen)
}

/// A live show with one destination, past its finalizer.
fn live_show() -> Arc<Broadcast> {
    finalized(
        Broadcast::test()
            .live()
            .with_destination("yt", "rtmp://a.rtmp.youtube.com/live2"),
    )
}

fn finalized(mut b: Broadcast) -> Arc<Broadcast> {
    b.metadata.finalizers = Some(vec![FINALIZER.into()]);
    Arc::new(b)
}

fn ready_pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default"},
           "status": {"phase": "Running", "hostIP": "192.0.2.10",
                      "conditions": [{"type": "Ready", "status": "True"}]}})
}

/// The control token the API put in the broadcast's Secret.
const TOKEN: &str = "test-control-token-0123456789abcdefghijklmnopqrstuvwxyz";

/// The broadcast's control-token Secret is read (validate, and the token for /status).
async fn control_secret(api: &mut Verifier) {
    use base64::Engine as _;
    let (_, send) = api
        .expect(Method::GET, &format!("{NS}/secrets/show-control"))
        .await;
    let token = base64::engine::general_purpose::STANDARD.encode(TOKEN);
    ok(
        send,
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "show-control"},
               "data": {"token": token}}),
    );
}

/// A live broadcast's first calls: its key and control Secrets are checked, then both workers'
/// ConfigMaps and Services are applied. Returns what was applied.
async fn live_config_and_services(api: &mut Verifier) -> Vec<Value> {
    let (_, send) = api
        .expect(Method::GET, &format!("{NS}/secrets/show-stream-keys"))
        .await;
    ok(
        send,
        json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "show-stream-keys"}}),
    );
    control_secret(api).await;
    let mut applied = vec![];
    for path in ["configmaps/show-sfu", "configmaps/show-compositor"] {
        applied.push(api.echo(Method::PATCH, &format!("{NS}/{path}")).await);
    }
    for path in ["services/show-sfu", "services/show-compositor"] {
        applied.push(api.service(&format!("{NS}/{path}")).await);
    }
    applied
}

const BC: &str = "/apis/castyard.dev/v1alpha1/namespaces/default/broadcasts/show";
const NS: &str = "/api/v1/namespaces/default";

#[tokio::test]
async fn a_new_broadcast_first_gets_the_finalizer() {
    let (ctx, mut api) = setup();
    let b = Arc::new(Broadcast::test());
    let server = tokio::spawn(async move {
        let (patch, send) = api.expect(Method::PATCH, BC).await;
        let ops = patch.as_array().expect("a JSON patch");
        assert!(
            ops.iter()
                .any(|op| op["op"] == "add" && op["value"] == json!([FINALIZER])),
            "{patch}"
        );
        let mut obj = serde_json::to_value(Broadcast::test()).unwrap();
        obj["metadata"]["finalizers"] = json!([FINALIZER]);
        ok(send, obj);
    });
    reconcile(b, ctx).await.expect("reconcile");
    server.await.unwrap();
}

#[tokio::test]
async fn backstage_applies_the_sfu_prunes_the_rest_and_reports_backstage() {
    let (ctx, mut api) = setup();
    let b = finalized(Broadcast::test());
    let server = tokio::spawn(async move {
        control_secret(&mut api).await;
        let cm = api
            .echo(Method::PATCH, &format!("{NS}/configmaps/show-sfu"))
            .await;
        assert!(
            cm["data"]["worker.json"]
                .as_str()
                .unwrap()
                .contains("maxParticipants")
        );
        let svc = api.service(&format!("{NS}/services/show-sfu")).await;
        assert_eq!(svc["metadata"]["ownerReferences"][0]["kind"], "Broadcast");
        // The apply's response tells how the pod is doing: no GET after it.
        let (pod, send) = api
            .expect(Method::PATCH, &format!("{NS}/pods/show-sfu"))
            .await;
        assert_eq!(pod["spec"]["containers"][0]["args"][0], "sfu");
        // Browsers reach it on its node's IP and the media port's allocated nodePort (the
        // second port of the reply above).
        assert_eq!(env(&pod, "CASTYARD_ADVERTISE_IP"), "status.hostIP");
        assert_eq!(env(&pod, "CASTYARD_ADVERTISE_PORT"), "30001");
        ok(send, ready_pod("show-sfu"));
        no_compositor(&mut api).await;
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Backstage", "{status}");
        assert_eq!(
            status["status"]["endpoints"]["mediaUdp"], "192.0.2.10:30001",
            "{status}"
        );
        let conds = status["status"]["conditions"].as_array().unwrap();
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == "SfuReady" && c["status"] == "True")
        );
        assert!(
            conds
                .iter()
                .any(|c| c["type"] == "CompositorReady" && c["reason"] == "NotRequired")
        );
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Backstage", "Normal").await;
    });
    reconcile(b, ctx.clone()).await.expect("reconcile");
    server.await.unwrap();
    let text = ctx.metrics.encode();
    assert!(
        text.contains("castyard_operator_reconciles_total 1"),
        "{text}"
    );
    assert!(
        text.contains(r#"castyard_operator_broadcasts{phase="Backstage"} 1"#),
        "{text}"
    );
    assert!(
        text.contains("castyard_operator_reconcile_duration_seconds_count 1"),
        "{text}"
    );
}

#[tokio::test]
async fn a_missing_secret_fails_clearly_and_creates_nothing() {
    let (ctx, mut api) = setup();
    let b = live_show();
    let server = tokio::spawn(async move {
        api.not_found(Method::GET, &format!("{NS}/secrets/show-stream-keys"))
            .await;
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Failed");
        let c = status["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "DestinationsHealthy")
            .unwrap()
            .clone();
        assert_eq!(c["reason"], "InvalidSpec");
        assert!(
            c["message"].as_str().unwrap().contains("show-stream-keys"),
            "{c}"
        );
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("InvalidSpec", "Warning").await;
        // Nothing else is called: no pod is built around a key that does not exist.
        let next =
            tokio::time::timeout(std::time::Duration::from_millis(200), api.0.next_request()).await;
        assert!(
            !matches!(next, Ok(Some(_))),
            "an unexpected call after the status"
        );
    });
    reconcile(b, ctx)
        .await
        .expect("an invalid spec is reported, not an error");
    server.await.unwrap();
}

#[tokio::test]
async fn live_applies_both_workers_without_a_key_in_any_object() {
    let (ctx, mut api) = setup();
    let b = live_show();
    let server = tokio::spawn(async move {
        let applied = live_config_and_services(&mut api).await;
        let (sfu, send) = api
            .expect(Method::PATCH, &format!("{NS}/pods/show-sfu"))
            .await;
        ok(send, ready_pod("show-sfu"));
        let (compositor, send) = api
            .expect(Method::PATCH, &format!("{NS}/pods/show-compositor"))
            .await;
        assert!(
            compositor["spec"]["volumes"]
                .to_string()
                .contains("show-stream-keys")
        );
        // Both workers read the control token from the mounted Secret; no spec carries it.
        for pod in [&sfu, &compositor] {
            let volume = pod["spec"]["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["secret"]["secretName"] == "show-control")
                .unwrap_or_else(|| panic!("no control-token volume in {pod}"));
            let c = &pod["spec"]["containers"][0];
            let mount = c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|m| m["name"] == volume["name"])
                .unwrap();
            assert_eq!(mount["mountPath"], "/var/run/secrets/castyard-control");
            assert_eq!(mount["readOnly"], true);
            let args = c["args"].to_string();
            assert!(
                args.contains("--control-token-file")
                    && args.contains("/var/run/secrets/castyard-control/token"),
                "{args}"
            );
            assert!(!pod.to_string().contains(TOKEN), "no token in {pod}");
        }
        ok(
            send,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "show-compositor"}, "status": {"phase": "Pending"}}),
        );
        for obj in &applied {
            assert!(!obj.to_string().contains("sk-"), "no key in {obj}");
            assert!(!obj.to_string().contains(TOKEN), "no token in {obj}");
        }
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Starting");
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Starting", "Normal").await;
    });
    reconcile(b, ctx).await.expect("reconcile");
    server.await.unwrap();
}

#[tokio::test]
async fn ended_removes_every_child_and_reports_ending() {
    let (ctx, mut api) = setup();
    let b = finalized(
        Broadcast::test()
            .live()
            .with_destination("yt", "rtmp://a/live")
            .ended(),
    );
    let server = tokio::spawn(async move {
        for role in ["sfu", "compositor"] {
            for kind in ["pods", "services", "configmaps"] {
                let (_, send) = api
                    .expect(Method::DELETE, &format!("{NS}/{kind}/show-{role}"))
                    .await;
                ok(
                    send,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success", "code": 200}),
                );
            }
            // The pod is still terminating: its outputs are being finalized.
            let (_, send) = api
                .expect(Method::GET, &format!("{NS}/pods/show-{role}"))
                .await;
            ok(send, ready_pod(&format!("show-{role}")));
        }
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Ending");
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Ending", "Normal").await;
    });
    reconcile(b, ctx).await.expect("reconcile");
    server.await.unwrap();
}

#[tokio::test]
async fn a_settled_broadcast_writes_no_status_and_no_event() {
    // First pass: capture the status the operator writes for a ready Backstage SFU.
    async fn backstage_pass(api: &mut Verifier) {
        control_secret(api).await;
        api.echo(Method::PATCH, &format!("{NS}/configmaps/show-sfu"))
            .await;
        api.service(&format!("{NS}/services/show-sfu")).await;
        let (_, send) = api
            .expect(Method::PATCH, &format!("{NS}/pods/show-sfu"))
            .await;
        ok(send, ready_pod("show-sfu"));
        no_compositor(api).await;
    }
    let (ctx, mut api) = setup();
    let server = tokio::spawn(async move {
        backstage_pass(&mut api).await;
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Backstage", "Normal").await;
        (status, api)
    });
    reconcile(finalized(Broadcast::test()), ctx).await.unwrap();
    let (status, api) = server.await.unwrap();

    // Second pass with that status in place: the same applies, then nothing else.
    let mut settled = Broadcast::test();
    settled.status = Some(serde_json::from_value(status["status"].clone()).unwrap());
    drop(api);
    let (ctx, mut api) = setup();
    let server = tokio::spawn(async move {
        backstage_pass(&mut api).await;
        api
    });
    reconcile(finalized(settled), ctx.clone()).await.unwrap();
    let mut api = server.await.unwrap();
    drop(ctx);
    assert!(
        api.0.next_request().await.is_none(),
        "no status write and no Event once nothing changed"
    );
}

#[tokio::test]
async fn a_running_compositor_reports_each_destination_into_the_status() {
    let (mut ctx, mut api) = setup_context();
    let (addr, seen) = fake_compositor(json!({
        "destinations": [
            {"name": "yt", "state": "Live", "retries": 0, "bitrateKbps": 2900},
            {"name": "fb", "state": "Retrying", "lastError": "connection refused", "retries": 3, "bitrateKbps": 0}
        ],
        "frames": 900, "mediaMs": 30000, "encoderRestarts": 0, "inputs": {}
    }))
    .await;
    let asked = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = asked.clone();
    ctx.worker_addr = Arc::new(move |service, ns, port| {
        log.lock().unwrap().push(format!("{service}.{ns}:{port}"));
        addr.clone()
    });
    let b = finalized(
        Broadcast::test()
            .live()
            .with_destination("yt", "rtmp://a.rtmp.youtube.com/live2")
            .with_destination("fb", "rtmps://live-api-s.facebook.com:443/rtmp"),
    );
    let server = tokio::spawn(async move {
        live_config_and_services(&mut api).await;
        for pod in ["show-sfu", "show-compositor"] {
            let (_, send) = api.expect(Method::PATCH, &format!("{NS}/pods/{pod}")).await;
            ok(send, ready_pod(pod));
        }
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        let s = &status["status"];
        assert_eq!(s["phase"], "Live", "{s}");
        assert_eq!(s["destinations"][0]["name"], "yt");
        assert_eq!(s["destinations"][0]["state"], "Live");
        assert_eq!(s["destinations"][0]["bitrateKbps"], 2900);
        assert_eq!(s["destinations"][1]["state"], "Retrying");
        assert_eq!(s["destinations"][1]["lastError"], "connection refused");
        assert_eq!(s["liveDestinations"], 1);
        let healthy = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "DestinationsHealthy")
            .unwrap();
        assert_eq!(healthy["status"], "False");
        assert!(
            healthy["message"].as_str().unwrap().contains("fb"),
            "{healthy}"
        );
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Live", "Normal").await;
    });
    let action = reconcile(b, Arc::new(ctx)).await.expect("reconcile");
    server.await.unwrap();
    assert_eq!(*asked.lock().unwrap(), ["show-compositor.default:7890"]);
    // One call, which carried the token (the fake answers 401 otherwise, and the report above
    // would be missing).
    assert_eq!(*seen.lock().unwrap(), ["GET /status HTTP/1.1"]);
    // Destination health changes with no object changing: a live show is looked at often.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(10))
    );
}

#[tokio::test]
async fn a_load_balancer_without_an_address_holds_the_sfu_pod_and_says_why() {
    let config = OperatorConfig {
        udp: UdpStrategy::LoadBalancer,
        ..OperatorConfig::default()
    };
    let (ctx, mut api) = setup_with(config.clone());
    let server = tokio::spawn(async move {
        control_secret(&mut api).await;
        api.echo(Method::PATCH, &format!("{NS}/configmaps/show-sfu"))
            .await;
        let svc = api.service(&format!("{NS}/services/show-sfu")).await;
        assert_eq!(svc["spec"]["type"], "LoadBalancer");
        // No pod apply: an SFU built now would advertise an address nobody can reach. The
        // pod, if one exists, is looked at and left alone.
        api.not_found(Method::GET, &format!("{NS}/pods/show-sfu"))
            .await;
        no_compositor(&mut api).await;
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Pending", "{status}");
        let sfu = status["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "SfuReady")
            .unwrap()
            .clone();
        assert_eq!(sfu["reason"], "WaitingForAddress", "{sfu}");
        assert!(
            sfu["message"]
                .as_str()
                .unwrap()
                .contains("LoadBalancer Service show-sfu has no address yet"),
            "{sfu}"
        );
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Pending", "Normal").await;
    });
    reconcile(finalized(Broadcast::test()), Arc::new(ctx))
        .await
        .expect("reconcile");
    server.await.unwrap();

    // Once the balancer reports its address, the pod is built to advertise it.
    let (ctx, mut api) = setup_with(config);
    let server = tokio::spawn(async move {
        control_secret(&mut api).await;
        api.echo(Method::PATCH, &format!("{NS}/configmaps/show-sfu"))
            .await;
        let (mut svc, send) = api
            .expect(Method::PATCH, &format!("{NS}/services/show-sfu"))
            .await;
        svc["status"] = json!({"loadBalancer": {"ingress": [{"ip": "198.51.100.4"}]}});
        ok(send, svc);
        let (pod, send) = api
            .expect(Method::PATCH, &format!("{NS}/pods/show-sfu"))
            .await;
        assert_eq!(env(&pod, "CASTYARD_ADVERTISE_IP"), "198.51.100.4");
        let media = pod["spec"]["containers"][0]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == "media")
            .unwrap()["containerPort"]
            .to_string();
        assert_eq!(env(&pod, "CASTYARD_ADVERTISE_PORT"), media);
        ok(send, ready_pod("show-sfu"));
        no_compositor(&mut api).await;
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Backstage", "{status}");
        assert_eq!(
            status["status"]["endpoints"]["mediaUdp"],
            format!("198.51.100.4:{media}")
        );
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Backstage", "Normal").await;
    });
    reconcile(finalized(Broadcast::test()), Arc::new(ctx))
        .await
        .expect("reconcile");
    server.await.unwrap();
}

/// A backstage SFU's ConfigMap and Service apply; its pod's apply is refused as invalid.
async fn sfu_pod_refused(api: &mut Verifier, message: &str) {
    control_secret(api).await;
    api.echo(Method::PATCH, &format!("{NS}/configmaps/show-sfu"))
        .await;
    api.service(&format!("{NS}/services/show-sfu")).await;
    let (_, send) = api
        .expect(Method::PATCH, &format!("{NS}/pods/show-sfu"))
        .await;
    failure(send, 422, "Invalid", message);
}

#[tokio::test]
async fn a_pod_whose_spec_can_no_longer_be_applied_is_replaced() {
    let (ctx, mut api) = setup_context();
    let server = tokio::spawn(async move {
        sfu_pod_refused(
            &mut api,
            "Pod \"show-sfu\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`",
        )
        .await;
        // Deleted (with an Event saying why), and seen terminating; its ConfigMap and
        // Service stay.
        let (_, send) = api
            .expect(Method::DELETE, &format!("{NS}/pods/show-sfu"))
            .await;
        ok(send, ready_pod("show-sfu"));
        api.event("PodReplaced", "Normal").await;
        let (_, send) = api
            .expect(Method::GET, &format!("{NS}/pods/show-sfu"))
            .await;
        let mut going = ready_pod("show-sfu");
        going["metadata"]["deletionTimestamp"] = json!("2026-11-27T10:00:00Z");
        ok(send, going);
        no_compositor(&mut api).await;
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Pending", "{status}");
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("Pending", "Normal").await;
    });
    let action = reconcile(finalized(Broadcast::test()), Arc::new(ctx))
        .await
        .expect("a replaced pod is not a failed reconcile");
    server.await.unwrap();
    // Soon again, to build the new pod.
    assert_eq!(
        action,
        kube::runtime::controller::Action::requeue(std::time::Duration::from_secs(2))
    );
}

#[tokio::test]
async fn a_pod_refused_at_creation_is_an_error_not_a_replacement() {
    let (ctx, mut api) = setup_context();
    let server = tokio::spawn(async move {
        sfu_pod_refused(&mut api, "Pod \"show-sfu\" is invalid").await;
        api.not_found(Method::DELETE, &format!("{NS}/pods/show-sfu"))
            .await;
    });
    let err = reconcile(finalized(Broadcast::test()), Arc::new(ctx))
        .await
        .expect_err("an invalid pod is reported");
    assert!(err.to_string().contains("is invalid"), "{err}");
    server.await.unwrap();
}

#[tokio::test]
async fn a_broadcast_without_its_control_token_waits_and_says_how_to_make_one() {
    let (ctx, mut api) = setup();
    let server = tokio::spawn(async move {
        api.not_found(Method::GET, &format!("{NS}/secrets/show-control"))
            .await;
        // Nothing is built: a worker without its token would refuse to start.
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        assert_eq!(status["status"]["phase"], "Failed");
        let message = status["status"]["conditions"].to_string();
        assert!(
            message.contains("show-control") && message.contains("kubectl create secret"),
            "{message}"
        );
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        api.event("InvalidSpec", "Warning").await;
    });
    reconcile(finalized(Broadcast::test()), ctx)
        .await
        .expect("an invalid broadcast is a status, not an error");
    server.await.unwrap();
}

#[tokio::test]
async fn a_compositor_that_cannot_encode_says_why_in_the_status_and_a_warning_event() {
    let (ctx, mut api) = setup();
    let b = live_show();
    let server = tokio::spawn(async move {
        live_config_and_services(&mut api).await;
        let (_, send) = api
            .expect(Method::PATCH, &format!("{NS}/pods/show-sfu"))
            .await;
        ok(send, ready_pod("show-sfu"));
        let (compositor, send) = api
            .expect(Method::PATCH, &format!("{NS}/pods/show-compositor"))
            .await;
        // The worker leaves why it stopped where the kubelet copies it into the pod status.
        let c = &compositor["spec"]["containers"][0];
        assert_eq!(c["terminationMessagePath"], "/dev/termination-log");
        assert_eq!(c["terminationMessagePolicy"], "FallbackToLogsOnError");
        assert!(
            c["args"]
                .to_string()
                .contains(r#""--termination-log","/dev/termination-log""#)
        );
        // What the kubelet reports for a compositor whose FFmpeg is missing.
        let said = r#"{"reason":"EncoderUnavailable","message":"ffmpeg not found on PATH: apt-get install ffmpeg, or set CASTYARD_FFMPEG"}"#;
        ok(
            send,
            json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "show-compositor"},
                   "status": {"phase": "Running", "containerStatuses": [{
                       "name": "compositor", "ready": false, "restartCount": 4, "image": "castyard", "imageID": "",
                       "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 1m20s restarting failed container"}},
                       "lastState": {"terminated": {"exitCode": 2, "reason": "Error", "message": said}}}]}}),
        );
        let (status, send) = api.expect(Method::PATCH, &format!("{BC}/status")).await;
        let s = &status["status"];
        assert_eq!(s["phase"], "Failed", "{status}");
        let cond = s["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "CompositorReady")
            .unwrap();
        assert_eq!(cond["status"], "False");
        assert_eq!(cond["reason"], "EncoderUnavailable");
        let message = cond["message"].as_str().unwrap();
        assert!(
            message.starts_with("ffmpeg not found on PATH: apt-get install ffmpeg")
                && message.contains("back-off 1m20s"),
            "{message}"
        );
        assert_eq!(s["message"], format!("EncoderUnavailable: {message}"));
        ok(send, serde_json::to_value(Broadcast::test()).unwrap());
        // The Warning Event names the cause, not just "Failed".
        let ev = api
            .echo(
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/default/events",
            )
            .await;
        assert_eq!(
            (ev["type"].as_str(), ev["reason"].as_str()),
            (Some("Warning"), Some("EncoderUnavailable"))
        );
        assert_eq!(ev["note"], message);
    });
    reconcile(b, ctx).await.expect("reconcile");
    server.await.unwrap();
}
