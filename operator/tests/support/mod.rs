//! Runs the kmock Kubernetes emulator and `castyard-operator` processes for whole-binary tests.
#![allow(dead_code)] // each test binary and the benchmark use a different part of it

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The Python that has kmock: `CASTYARD_TEST_PYTHON`, else the venv scripts/test-deps.sh makes.
fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("CASTYARD_TEST_PYTHON") {
        return p.into();
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-venv/bin/python3");
    assert!(
        venv.exists(),
        "{} is missing: run scripts/test-deps.sh (it installs kmock there), \
         or set CASTYARD_TEST_PYTHON",
        venv.display()
    );
    venv
}

/// The control-token Secret the API writes beside each Broadcast, which the operator requires.
pub fn control_token_secret(broadcast: &str) -> k8s_openapi::api::core::v1::Secret {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": format!("{broadcast}-control"), "namespace": "default"},
        // `data`, as the API server stores it (an emulator need not turn stringData into it).
        "data": {"token": base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            format!("{broadcast}-token-0123456789abcdefghijklmnopqrstuvwxyz"),
        )},
    }))
    .expect("a Secret")
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// One emulated API server; it dies with this value (its stdin closes, then it is killed).
pub struct Emulator {
    child: Child,
    pub url: String,
    pub kubeconfig: PathBuf,
    _dir: tempfile::TempDir,
}

impl Emulator {
    pub fn start() -> Self {
        let script = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/emulator/k8s_emulator.py"
        );
        let mut child = Command::new(python())
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("starting the Kubernetes emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("reading the emulator's port");
        let port: u16 = line
            .trim()
            .strip_prefix("listening on ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the emulator did not start: {line:?}"));
        let url = format!("http://127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        let mut f = std::fs::File::create(&kubeconfig).expect("kubeconfig");
        write!(
            f,
            "apiVersion: v1\nkind: Config\n\
             clusters: [{{name: emu, cluster: {{server: \"{url}\"}}}}]\n\
             users: [{{name: emu, user: {{}}}}]\n\
             contexts: [{{name: emu, context: {{cluster: emu, user: emu, namespace: default}}}}]\n\
             current-context: emu\n"
        )
        .expect("writing kubeconfig");
        Emulator {
            child,
            url,
            kubeconfig,
            _dir: dir,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn client(&self) -> kube::Client {
        let config = kube::Config::new(self.url.parse().expect("emulator url"));
        kube::Client::try_from(config).expect("client")
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `castyard-operator` replica pointed at an emulator.
pub struct Operator {
    child: Child,
    pub identity: String,
    pub metrics_addr: SocketAddr,
}

impl Operator {
    pub fn start(emulator: &Emulator, identity: &str, extra: &[&str]) -> Self {
        let metrics_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_castyard-operator"))
            .env("KUBECONFIG", &emulator.kubeconfig)
            .env_remove("KUBERNETES_SERVICE_HOST")
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .args(["--namespace", "default", "--identity", identity])
            .arg("--metrics-addr")
            .arg(metrics_addr.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .spawn()
            .expect("starting castyard-operator");
        Operator {
            child,
            identity: identity.into(),
            metrics_addr,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process outright (SIGKILL), as a node failure would: no Lease release.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The sum of every sample of a metric family on /metrics, or None when unreachable.
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let body = http_get(self.metrics_addr, "/metrics").await?;
        Some(
            body.lines()
                .filter(|l| {
                    l.strip_prefix(name)
                        .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// User plus system CPU a process has used so far, from /proc/PID/stat (Linux).
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| f.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0 // USER_HZ is 100 on Linux
}

/// A plain HTTP/1.0 GET; the body, or None when the server is not answering.
pub async fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = String::new();
    stream.read_to_string(&mut buf).await.ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.1 200")
        .then(|| body.to_owned())
        .or_else(|| head.starts_with("HTTP/1.0 200").then(|| body.to_owned()))
}

/// Polls `check` until it yields a value. The deadline only turns a hang into a failure with a
/// name; it is not a performance bound.
pub async fn eventually<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
