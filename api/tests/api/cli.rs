//! The `castyard` binary itself: `up` starts, prints its URL, serves, and shuts down on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `castyard up` on a free port and waits for the line that says it is serving.
pub(crate) fn spawn_up(
    data: &std::path::Path,
    configure: impl FnOnce(&mut Command),
) -> (std::process::Child, u16) {
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_castyard"));
    cmd.args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(data)
        // Tests run side by side: each ingest on a port of its own (a flag overrides it).
        .env("CASTYARD_RTMP_LISTEN", "127.0.0.1:0")
        .stdout(Stdio::piped());
    configure(&mut cmd);
    let mut child = cmd.spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(
        first.trim(),
        format!("Castyard is running at http://127.0.0.1:{port}")
    );
    (child, port)
}

#[test]
fn up_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let (mut child, port) = spawn_up(&dir.path().join("data"), |c| {
        c.env("RUST_LOG", "info").stderr(Stdio::piped());
    });

    let data = dir.path().join("data");
    assert!(
        data.join("castyard.db").exists(),
        "SQLite lives in the data directory"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the generated key is private");
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"mode\":\"embedded\""), "{resp}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "castyard did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("shut down cleanly"), "{err}");
}

#[test]
fn help_documents_every_flag_and_bad_flags_fail() {
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["up", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--public-url",
        "--media-ip",
        "CASTYARD_LISTEN",
        "CASTYARD_DATA_DIR",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from `castyard up --help`"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["api", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--database-url",
        "DATABASE_URL",
        "--encryption-key",
        "--namespace",
        "--backend",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from `castyard api --help`"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["up", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args([
            "api",
            "--database-url",
            "mysql://x",
            "--encryption-key",
            "c2hvcnQ=",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("32 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A blocking HTTP/1.1 request to `castyard up`; the status line and the body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap();
    (head.lines().next().unwrap().to_owned(), body.to_owned())
}

pub(crate) struct Up {
    pub(crate) child: std::process::Child,
    pub(crate) port: u16,
}

impl Up {
    pub(crate) fn start(data: &std::path::Path, worker: &std::path::Path) -> Self {
        let (child, port) = spawn_up(data, |c| {
            c.arg("--media-worker").arg(worker);
        });
        Up { child, port }
    }

    pub(crate) fn signal(&mut self, sig: &str) -> std::process::ExitStatus {
        Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        self.child.wait().unwrap()
    }
}

/// A test that fails part-way still stops its server; the kernel then stops the server's
/// workers (their parent-death signal), so no compositor outlives the test.
impl Drop for Up {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits (30 s at most) until the broadcast reports `phase`.
pub(crate) fn wait_for_phase(up: &Up, id: &str, token: &str, phase: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(
            up.port,
            "GET",
            &format!("/api/broadcasts/{id}"),
            Some(token),
            "",
        );
        let b = serde_json::from_str::<serde_json::Value>(&body).unwrap();
        if b["phase"] == phase {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waiting for {phase}: {b}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fake worker's JSON lines (see operator/tests/fixtures/fake_worker.py).
fn worker_log(data: &std::path::Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(data.join("log.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn wait_for_starts(data: &std::path::Path, n: usize) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let started: Vec<_> = worker_log(data)
            .into_iter()
            .filter(|l| l["event"] == "started")
            .collect();
        if started.len() >= n {
            return started;
        }
        assert!(std::time::Instant::now() < deadline, "{started:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn alive(pid: u64) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, r)| !r.starts_with('Z')))
        .unwrap_or(false)
}

fn gone_soon(pid: u64) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    true
}

#[test]
fn up_runs_each_broadcasts_workers_and_never_leaves_one_behind() {
    let dir = tempfile::tempdir().unwrap();
    // Its log lands in <data>/log.jsonl, three levels above each worker's config.
    let worker = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../operator/tests/fixtures/fake_worker.py");
    let data = dir.path().join("data");
    let mut up = Up::start(&data, &worker);

    let (line, body) = http(
        up.port,
        "POST",
        "/api/auth/register",
        None,
        r#"{"email":"host@example.com","password":"correct horse","displayName":"Host"}"#,
    );
    assert!(
        line.contains("201") || line.contains("200"),
        "{line} {body}"
    );
    let token = serde_json::from_str::<serde_json::Value>(&body).unwrap()["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (line, body) = http(
        up.port,
        "POST",
        "/api/broadcasts",
        Some(&token),
        r#"{"title":"Worker show"}"#,
    );
    assert!(line.contains("201"), "{line} {body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    let name = created["name"].as_str().unwrap().to_owned();

    // Backstage: one SFU process, named after the broadcast, ready behind its /readyz.
    let first = wait_for_starts(&data, 1);
    assert_eq!(first[0]["role"], "sfu");
    assert_eq!(first[0]["config"]["broadcast"], name);
    wait_for_phase(&up, &id, &token, "Backstage");

    // SIGTERM: castyard stops its workers before it exits.
    assert!(up.signal("-TERM").success());
    assert!(
        !alive(first[0]["pid"].as_u64().unwrap()),
        "the SFU outlived castyard"
    );

    // Started again, it restarts the workers of broadcasts still in progress.
    let mut up = Up::start(&data, &worker);
    let again = wait_for_starts(&data, 2);
    let pid = again[1]["pid"].as_u64().unwrap();
    assert!(alive(pid));

    // Even when castyard is killed outright, its workers die with it.
    up.signal("-KILL");
    assert!(gone_soon(pid), "worker {pid} orphaned by a killed castyard");
}

/// The ingest inside the real `castyard up`: OBS (ffmpeg) publishes, HTTP-FLV serves it, and a
/// SIGTERM mid-publish still leaves the recording listed and the broadcast ended.
#[test]
fn up_runs_the_rtmp_ingest_and_finishes_it_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let rtmp = free_port();
    let (child, port) = spawn_up(&data, |c| {
        c.args(["--rtmp-listen", &format!("127.0.0.1:{rtmp}")]);
    });
    let mut up = Up { child, port };
    let json = |s: &str| serde_json::from_str::<serde_json::Value>(s).unwrap();
    let (_, body) = http(
        port,
        "POST",
        "/api/auth/register",
        None,
        r#"{"email":"obs@example.com","password":"correct horse","displayName":"OBS"}"#,
    );
    let token = json(&body)["accessToken"].as_str().unwrap().to_owned();
    let (_, body) = http(
        port,
        "POST",
        "/api/broadcasts",
        Some(&token),
        r#"{"title":"OBS","ingest":{"rtmp":true}}"#,
    );
    let id = json(&body)["id"].as_str().unwrap().to_owned();
    let (line, body) = http(
        port,
        "POST",
        &format!("/api/broadcasts/{id}/ingest-key"),
        Some(&token),
        "{}",
    );
    assert!(line.contains("201"), "{line} {body}");
    let key = json(&body);
    assert_eq!(key["serverUrl"], format!("rtmp://127.0.0.1:{rtmp}/live"));

    let mut publisher = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin", "-re"])
        .args(["-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30"])
        .args(["-f", "lavfi", "-i", "sine", "-t", "30"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "30",
            "-pix_fmt",
            "yuv420p",
        ])
        .args(["-c:a", "aac", "-f", "flv", key["url"].as_str().unwrap()])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http(
            port,
            "GET",
            &format!("/api/broadcasts/{id}"),
            Some(&token),
            "",
        );
        if json(&body)["state"] == "Live" {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never live: {body}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // HTTP-FLV answers with an FLV stream while live.
    let flv = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name",
            "-of",
            "csv=p=0",
        ])
        .arg(format!("http://127.0.0.1:{port}/live/{id}.flv"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&flv.stdout).contains("h264"),
        "{}",
        String::from_utf8_lossy(&flv.stderr)
    );
    std::thread::sleep(Duration::from_secs(1));

    assert!(up.signal("-TERM").success(), "castyard exits cleanly");
    let _ = publisher.wait();
    // Restarted, it lists what the shutdown finalized.
    let (child, port) = spawn_up(&data, |c| {
        c.arg("--no-rtmp-ingest");
    });
    let mut up = Up { child, port };
    let (_, body) = http(
        port,
        "GET",
        &format!("/api/broadcasts/{id}"),
        Some(&token),
        "",
    );
    assert_eq!(json(&body)["state"], "Ended", "{body}");
    let (_, body) = http(port, "GET", "/api/recordings", Some(&token), "");
    let recs = json(&body);
    assert_eq!(recs.as_array().unwrap().len(), 1, "{body}");
    assert!(recs[0]["durationMs"].as_i64().unwrap() >= 1_000, "{body}");
    assert!(up.signal("-TERM").success());
}
