//! The Kubernetes backend against a mock API server that checks each call (tower-test), as
//! kube-rs/controller-rs does: the CR carries no key nor token, the Secrets do, owned by the CR.

use std::collections::BTreeMap;

use base64::Engine;
use castyard_api::backend::kubernetes::KubernetesBackend;
use castyard_api::backend::{BroadcastBackend, DesiredBroadcast, StreamKey};
use castyard_crd::Broadcast;
use castyard_proto::ControlToken;
use http_body_util::BodyExt;
use hyper::{Method, Request, Response};
use kube::client::Body;
use serde_json::{Value, json};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn backend() -> (KubernetesBackend, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = kube::Client::new(svc, "shows");
    (KubernetesBackend::new(client, "shows"), handle)
}

async fn next_call(
    handle: &mut Handle,
) -> (
    Method,
    String,
    Value,
    tower_test::mock::SendResponse<Response<Body>>,
) {
    let (req, send) = handle
        .next_request()
        .await
        .expect("a call to the API server");
    let method = req.method().clone();
    let uri = req.uri().to_string();
    if method == Method::PATCH {
        assert_eq!(
            req.headers()["content-type"],
            "application/apply-patch+yaml",
            "server-side apply"
        );
    }
    let bytes = req.into_body().collect().await.unwrap().to_bytes();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    (method, uri, body, send)
}

fn respond(send: tower_test::mock::SendResponse<Response<Body>>, status: u16, body: Value) {
    send.send_response(
        Response::builder()
            .status(status)
            .body(Body::from(serde_json::to_vec(&body).unwrap()))
            .unwrap(),
    );
}

fn desired() -> DesiredBroadcast {
    let b = Broadcast::test()
        .named("bc-1")
        .live()
        .with_destination("yt", "rtmp://a.rtmp.youtube.com/live2");
    let mut spec = b.spec;
    spec.destinations[0].stream_key_secret_ref.name = "bc-1-stream-keys".into();
    DesiredBroadcast {
        name: "bc-1".into(),
        spec,
        stream_keys: BTreeMap::from([("yt".into(), StreamKey("yt-secret-key-0001".into()))]),
        control_token: token(),
    }
}

fn token() -> ControlToken {
    ControlToken::parse("control-token-of-bc-1-0123456789abcdefghijklmnop").unwrap()
}

#[tokio::test]
async fn apply_writes_the_cr_then_its_owned_secret() {
    let (backend, mut handle) = backend();
    let verifier = tokio::spawn(async move {
        let (m, uri, body, send) = next_call(&mut handle).await;
        assert_eq!(m, Method::PATCH);
        assert!(
            uri.starts_with("/apis/castyard.dev/v1alpha1/namespaces/shows/broadcasts/bc-1?"),
            "{uri}"
        );
        assert!(
            uri.contains("fieldManager=castyard-api") && uri.contains("force=true"),
            "{uri}"
        );
        assert_eq!(body["kind"], "Broadcast");
        assert_eq!(body["spec"]["state"], "Live");
        assert_eq!(
            body["spec"]["destinations"][0]["streamKeySecretRef"],
            json!({"name": "bc-1-stream-keys", "key": "yt"})
        );
        assert_eq!(body["metadata"]["labels"]["castyard.dev/broadcast"], "bc-1");
        assert!(
            !body.to_string().contains("yt-secret-key"),
            "a stream key in the CR"
        );
        assert!(
            !body.to_string().contains(token().expose()),
            "the control token in the CR"
        );
        let mut applied = body.clone();
        applied["metadata"]["uid"] = json!("uid-123");
        applied["metadata"]["namespace"] = json!("shows");
        respond(send, 200, applied);

        let (m, uri, body, send) = next_call(&mut handle).await;
        assert_eq!(m, Method::PATCH);
        assert!(
            uri.starts_with("/api/v1/namespaces/shows/secrets/bc-1-stream-keys?"),
            "{uri}"
        );
        assert!(uri.contains("fieldManager=castyard-api"), "{uri}");
        let key = base64::engine::general_purpose::STANDARD.encode("yt-secret-key-0001");
        assert_eq!(body["data"]["yt"], key);
        assert_eq!(body["type"], "Opaque");
        let owner = &body["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Broadcast");
        assert_eq!(owner["uid"], "uid-123");
        assert_eq!(owner["controller"], true);
        assert!(!body.to_string().contains(token().expose()));
        respond(send, 200, body);

        // The workers' token in a Secret of its own (the SFU mounts it, and no stream key).
        let (m, uri, body, send) = next_call(&mut handle).await;
        assert_eq!(m, Method::PATCH);
        assert!(
            uri.starts_with("/api/v1/namespaces/shows/secrets/bc-1-control?"),
            "{uri}"
        );
        let sealed = base64::engine::general_purpose::STANDARD.encode(token().expose());
        assert_eq!(body["data"], json!({"token": sealed}));
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "uid-123");
        respond(send, 200, body);
    });
    backend.apply(&desired()).await.unwrap();
    verifier.await.unwrap();
}

#[tokio::test]
async fn a_refused_apply_is_an_error() {
    let (backend, mut handle) = backend();
    let verifier = tokio::spawn(async move {
        let (_, _, _, send) = next_call(&mut handle).await;
        respond(
            send,
            422,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": "spec.destinations[0].url: Invalid value", "reason": "Invalid", "code": 422}),
        );
    });
    let err = backend.apply(&desired()).await.unwrap_err();
    assert!(format!("{err:#}").contains("Invalid value"), "{err:#}");
    verifier.await.unwrap();
}

#[tokio::test]
async fn status_is_read_back_and_delete_tolerates_absence() {
    let (backend, mut handle) = backend();
    let verifier = tokio::spawn(async move {
        let (m, uri, _, send) = next_call(&mut handle).await;
        assert_eq!(
            (m, uri.as_str()),
            (
                Method::GET,
                "/apis/castyard.dev/v1alpha1/namespaces/shows/broadcasts/bc-1"
            )
        );
        let mut b = serde_json::to_value(Broadcast::test().named("bc-1")).unwrap();
        b["status"] = json!({"phase": "Live", "liveDestinations": 1, "destinations": [{"name": "yt", "state": "Live", "retries": 0, "bitrateKbps": 4500}]});
        respond(send, 200, b);

        let (m, uri, _, send) = next_call(&mut handle).await;
        assert_eq!(m, Method::GET);
        assert!(uri.ends_with("/broadcasts/gone"));
        respond(
            send,
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        );

        let (m, uri, _, send) = next_call(&mut handle).await;
        assert_eq!(m, Method::DELETE);
        assert!(
            uri.starts_with("/apis/castyard.dev/v1alpha1/namespaces/shows/broadcasts/bc-1"),
            "{uri}"
        );
        respond(
            send,
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404, "message": "not found"}),
        );
    });
    let status = backend.status("bc-1").await.unwrap().expect("a status");
    assert_eq!(status.phase, Some(castyard_crd::Phase::Live));
    assert_eq!(status.destinations[0].bitrate_kbps, 4500);
    assert!(backend.status("gone").await.unwrap().is_none());
    backend
        .delete("bc-1")
        .await
        .expect("deleting what is already gone succeeds");
    verifier.await.unwrap();
}
