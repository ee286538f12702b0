//! The OpenAPI document as outsiders use it: a real validator reads the committed file, and
//! schemathesis calls every operation of the served one, signed in, on a real socket.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;

use serde_json::json;

use crate::common::TestApp;

/// A tool of the Python venv that scripts/test-deps.sh makes.
fn venv_tool(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/test-venv/bin")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: run `make test` (scripts/test-deps.sh installs it)",
        path.display()
    );
    path
}

#[test]
fn the_committed_openapi_document_is_valid_openapi_3_1() {
    let out = Command::new(venv_tool("openapi-spec-validator"))
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "api/openapi.json is not valid OpenAPI:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A logo upload of the host's, as the API answered it.
async fn upload(app: &TestApp, token: &str, name: &str) -> serde_json::Value {
    let (ct, body) = crate::files::multipart(name, "image/png", crate::files::PNG);
    app.raw(
        axum::http::Method::POST,
        "/api/upload?kind=logo",
        Some(token),
        &ct,
        body,
    )
    .await
    .json
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_server_error_and_no_answer_off_its_schema() {
    let app = TestApp::sqlite().await;
    let token = app.host("fuzz@castyard.test").await;
    // Real ids for the operations that take one, so the fuzzer reaches their logic instead of
    // a 404: a broadcast with a destination, an upload and a recording.
    let b = app
        .create_broadcast(
            &token,
            json!({"title": "Fuzzed", "destinations": [{"name": "yt", "kind": "youtube",
                   "url": "rtmp://127.0.0.1:1/live", "streamKey": "fuzz-key-0000111122"}]}),
        )
        .await;
    let logo = upload(&app, &token, "logo.png").await;
    let recording = crate::files::add_recording(&app, &token, &[0u8; 4096]).await;
    // What the deleting operations get: their own, so the rest keep theirs to the end.
    let doomed = app
        .create_broadcast(&token, json!({"title": "Deleted"}))
        .await;
    let doomed_upload = upload(&app, &token, "doomed.png").await;
    let doomed_recording = crate::files::add_recording(&app, &token, &[0u8; 4096]).await;
    let spare = app
        .create_broadcast(
            &token,
            json!({"title": "Loses its destination", "destinations": [{"name": "yt",
                   "kind": "youtube", "url": "rtmp://127.0.0.1:1/live",
                   "streamKey": "fuzz-key-3333444455"}]}),
        )
        .await;
    // Each block names its operations outright: which block applies where two could is not
    // something to rely on.
    let ids = |operations: &str, params: String| {
        format!(
            "[[operations]]\ninclude-operation-id-regex = '^({operations})$'\n\
             parameters = {{ {params} }}\n"
        )
    };
    let pair = |b: &serde_json::Value| {
        format!(
            "\"path.id\" = \"{}\", \"path.dest_id\" = \"{}\"",
            b["id"].as_str().unwrap(),
            b["destinations"][0]["id"].as_str().unwrap()
        )
    };
    let one = |id: &serde_json::Value| format!("\"path.id\" = \"{}\"", id.as_str().unwrap());
    let config = [
        ids(
            "get_broadcast|update|add_destination|test_destination|end|new_ingest_key|\
             revoke_ingest_key|invite|get_scene|post_scene|start|studio_socket",
            pair(&b),
        ),
        ids("remove_destination", pair(&spare)),
        ids("delete_broadcast", one(&doomed["id"])),
        ids("stream", one(&b["id"])),
        ids("get_file", one(&logo["id"])),
        ids("delete_upload", one(&doomed_upload["id"])),
        ids("get_recording|file", one(&json!(recording))),
        ids("delete_recording", one(&json!(doomed_recording))),
    ]
    .concat();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = app.router.clone();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });

    let report = tempfile::tempdir().unwrap();
    let config_file = report.path().join("schemathesis.toml");
    std::fs::write(&config_file, config).unwrap();
    let tool = venv_tool("schemathesis");
    let report_dir = report.path().to_owned();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(tool)
            .arg("--config-file")
            .arg(&config_file)
            .args(["run", &format!("http://{addr}/api/openapi.json")])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            // Bounded so the whole document takes well under a minute on two cores. One worker:
            // CPython 3.11's `ast.parse` is not thread-safe, and hypothesis parses lambdas from
            // two threads at once under load ("AST constructor recursion depth mismatch").
            .args(["--max-examples", "15", "--seed", "1", "--workers", "1"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--generation-database", "none", "--no-color"])
            .args(["--header", &format!("Authorization: Bearer {token}")])
            .arg("--report-dir")
            .arg(&report_dir)
            .env("SCHEMATHESIS_HOOKS", "")
            // Its caches go beside the report, not into the checkout.
            .current_dir(&report_dir)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis found failures ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // Every operation of the document was tested, none skipped for a schema error.
    let document: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json")).unwrap(),
    )
    .unwrap();
    let operations: usize = document["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    let line = |label: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(label).map(str::trim))
            .unwrap_or_else(|| panic!("no {label} in {stdout}"))
            .to_owned()
    };
    assert_eq!(
        line("Selected:"),
        format!("{operations}/{operations}"),
        "{stdout}"
    );
    assert_eq!(line("Tested:"), operations.to_string(), "{stdout}");
    // The ids given reached the operations. Only a delete (404 once its target is gone) and
    // the viewer sign-in (whose broadcast id is in a body the fuzzer makes up) may answer
    // nothing but 404.
    let starved: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.contains("Missing test data"))
        .take_while(|l| !l.contains("Schema validation mismatch") && !l.contains("SUMMARY"))
        .filter_map(|l| l.trim().strip_prefix("- "))
        .filter(|op| !op.starts_with("DELETE ") && *op != "POST /api/auth/viewer")
        .collect();
    assert_eq!(starved, Vec::<&str>::new(), "{stdout}");
}
