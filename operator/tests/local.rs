//! The local backend with real child processes: start with the pod's arguments, restart after a
//! kill, reload config in place, stop on Ended and on shutdown, and leave no process behind.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use castyard_crd::workloads::desired_workloads;
use castyard_crd::{Broadcast, DesiredWorkloads, Phase};
use castyard_operator::build::Role;
use castyard_operator::local::{Keys, LocalBackend, LocalConfig};
use castyard_proto::ControlToken;
use serde_json::Value;

fn config(dir: &Path, program: PathBuf) -> LocalConfig {
    LocalConfig {
        stop_grace: Duration::from_secs(5),
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(1),
        ..LocalConfig::new(program, dir.join("workers"))
    }
}

fn fake_worker() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fake_worker.py")
}

fn log(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// Waits for the log's `nth` line (1-based) matching `event` and `role`.
async fn logged(dir: &Path, event: &str, role: &str, nth: usize) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hits: Vec<Value> = log(dir)
            .into_iter()
            .filter(|l| l["event"] == event && l["role"] == role)
            .collect();
        if let Some(hit) = hits.get(nth - 1) {
            return hit.clone();
        }
        assert!(
            Instant::now() < deadline,
            "no {event} #{nth} for {role}: {hits:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A live process (a zombie is dead: it only waits to be reaped).
fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

/// Every live process whose command line mentions `marker` (our temp dir).
fn processes_mentioning(marker: &str) -> Vec<u64> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u64>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(marker))
                .unwrap_or(false)
        })
        .filter(|pid| alive(*pid))
        .collect()
}

async fn phase(backend: &LocalBackend, b: &Broadcast, want: Phase) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = backend.status(b).await;
        if status.phase == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "phase {want:?} never came: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn keys() -> Keys {
    Keys::from([(
        "show-stream-keys".into(),
        [
            ("yt".to_string(), "sk-live-secret".to_string()),
            ("tw".into(), "sk-tw".into()),
        ]
        .into(),
    )])
}

#[tokio::test(flavor = "multi_thread")]
async fn workers_start_restart_reload_and_stop_leaving_nothing_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let root = dir.join("workers");
    let backend = LocalBackend::new(config(dir, fake_worker()));
    let token = ControlToken::generate();

    // Bad input changes nothing.
    let err = backend
        .apply("../escape", &DesiredWorkloads::none(), &keys(), &token)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("DNS label"), "{err}");
    assert!(!root.exists());

    // Backstage: one SFU, started with the pod's arguments and env.
    let b = Broadcast::test().with_destination("yt", "rtmp://a.example/live");
    backend
        .apply("show", &desired_workloads(&b), &keys(), &token)
        .await
        .unwrap();
    let sfu = logged(dir, "started", "sfu", 1).await;
    let sfu_config = root.join("show/sfu/worker.json");
    assert_eq!(
        sfu["argv"],
        serde_json::json!([
            "sfu",
            "--config",
            sfu_config.display().to_string(),
            "--keys-dir",
            root.join("show/keys").display().to_string(),
            "--control-token-file",
            root.join("show/control/token").display().to_string(),
            "--control-bind",
            "127.0.0.1",
            "--termination-log",
            root.join("show/sfu/termination-log").display().to_string(),
        ])
    );
    // The token reaches the worker as an owner-only file: never its arguments or environment.
    assert_eq!(sfu["token_mode"], "0o600");
    assert_eq!(sfu["token_chars"], 43);
    assert_eq!(sfu["token_in_env"], false);
    assert!(!sfu["argv"].to_string().contains(token.expose()));
    assert_eq!(sfu["pod_ip"], "127.0.0.1");
    assert_eq!(sfu["config"]["maxParticipants"], 11);
    assert_eq!(sfu["keys"], serde_json::json!([]), "the SFU gets no keys");
    assert!(!root.join("show/keys").exists());
    phase(&backend, &b, Phase::Backstage).await;

    // Live: the compositor, with key files only it can read, and never a key on its command line.
    let live = b.clone().live();
    backend
        .apply("show", &desired_workloads(&live), &keys(), &token)
        .await
        .unwrap();
    let comp = logged(dir, "started", "compositor", 1).await;
    assert_eq!(
        comp["keys"],
        serde_json::json!(["show-stream-keys/tw", "show-stream-keys/yt"])
    );
    assert!(
        !comp["argv"].to_string().contains("sk-"),
        "{}",
        comp["argv"]
    );
    let key = root.join("show/keys/show-stream-keys/yt");
    assert_eq!(std::fs::read_to_string(&key).unwrap(), "sk-live-secret");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        comp["config"]["sfu"],
        format!("127.0.0.1:{}", sfu["config"]["signallingPort"])
    );
    phase(&backend, &live, Phase::Live).await;
    // The compositor's report is read with the token (the fake answers nobody else).
    let deadline = Instant::now() + Duration::from_secs(10);
    while backend.status(&live).await.destinations.is_empty() {
        assert!(Instant::now() < deadline, "no destination report read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        backend.status(&live).await.destinations[0].bitrate_kbps,
        1234
    );

    // A killed worker is restarted, and counted.
    let killed = comp["pid"].as_u64().unwrap();
    std::process::Command::new("kill")
        .args(["-9", &killed.to_string()])
        .status()
        .unwrap();
    let again = logged(dir, "started", "compositor", 2).await;
    assert_ne!(again["pid"], comp["pid"]);
    let state = backend.worker("show", Role::Compositor).await.unwrap();
    assert_eq!(state.restarts, 1);
    assert!(state.last_exit.unwrap().contains("signal 9"));

    // A destination added while live rewrites the compositor's config; nothing restarts.
    let more = live.clone().with_destination("tw", "rtmp://b.example/app");
    backend
        .apply("show", &desired_workloads(&more), &keys(), &token)
        .await
        .unwrap();
    let reload = logged(dir, "reloaded", "compositor", 1).await;
    assert_eq!(reload["pid"], again["pid"]);
    assert_eq!(
        reload["config"]["destinations"].as_array().unwrap().len(),
        2
    );
    let sfu_pid = sfu["pid"].as_u64().unwrap();
    assert!(alive(sfu_pid), "the SFU kept running");
    assert_eq!(
        log(dir)
            .iter()
            .filter(|l| l["event"] == "started" && l["role"] == "sfu")
            .count(),
        1
    );

    // Ended: every process stops and the files (keys included) go.
    let ended = more.clone().ended();
    backend
        .apply("show", &desired_workloads(&ended), &keys(), &token)
        .await
        .unwrap();
    assert!(!alive(sfu_pid) && !alive(again["pid"].as_u64().unwrap()));
    assert!(!root.join("show").exists(), "no key file left behind");

    // Shutdown stops everything still running.
    backend
        .apply("other", &desired_workloads(&live), &keys(), &token)
        .await
        .unwrap();
    logged(dir, "started", "compositor", 3).await;
    backend.shutdown().await;
    let marker = root.display().to_string();
    assert_eq!(processes_mentioning(&marker), Vec::<u64>::new());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_that_keeps_crashing_makes_the_broadcast_failed() {
    let tmp = tempfile::tempdir().unwrap();
    let backend = LocalBackend::new(config(tmp.path(), "/bin/false".into()));
    let b = Broadcast::test();
    backend
        .apply(
            "show",
            &desired_workloads(&b),
            &Keys::new(),
            &ControlToken::generate(),
        )
        .await
        .unwrap();
    phase(&backend, &b, Phase::Failed).await;
    let status = backend.status(&b).await;
    let sfu = status
        .conditions
        .iter()
        .find(|c| c.type_ == "SfuReady")
        .unwrap();
    // /bin/false leaves no termination log: the exit itself is the reason given.
    assert_eq!(sfu.reason, "Failed");
    assert!(
        sfu.message.starts_with("exited with status 1; restarted")
            && sfu.message.ends_with("backing off before the next try"),
        "{}",
        sfu.message
    );
    assert_eq!(status.message, Some(format!("Failed: {}", sfu.message)));
    let restarts = backend.worker("show", Role::Sfu).await.unwrap().restarts;
    assert!(restarts >= 1);
    backend.remove("show").await;
    assert!(backend.worker("show", Role::Sfu).await.is_none());
}
