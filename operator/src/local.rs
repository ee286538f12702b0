//! The local backend (embedded mode): the reconcile's steps driving `castyard-media-worker` child
//! processes instead of pods, with the same arguments, env, config file and key files.
//!
//! A pod gets its config at /etc/castyard/worker.json and each stream key at
//! /var/run/secrets/castyard/<secret>/<key>; a local worker gets the same files under
//! `<root>/<broadcast>/`. Config changes rewrite files in place, as the kubelet refreshes
//! mounted ConfigMaps, so a destination added while live restarts nothing. Ports differ: pods
//! each have their own network namespace, local workers share the host's, so each gets free
//! ports and the config says which.

use std::collections::{BTreeMap, HashMap};
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use castyard_crd::workloads::{CompositorConfig, SfuConfig};
use castyard_crd::{Broadcast, BroadcastStatus, DesiredWorkloads};
use castyard_proto::termination::Termination;
use castyard_proto::{ControlToken, WorkerClient};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::build::{CONFIG_FILE, Role};

/// Each broadcast's control token, as the pod's mounted Secret: `<root>/<broadcast>/control/token`.
const CONTROL_DIR: &str = "control";
use crate::status::{Observed, PodObservation, compute};

/// Stream keys for one broadcast: Secret name -> key name -> value.
pub type Keys = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Clone, Debug)]
pub struct LocalConfig {
    /// The `castyard-media-worker` binary.
    pub program: PathBuf,
    /// Each broadcast's config and key files go under `<root>/<broadcast>/`.
    pub root: PathBuf,
    /// Each compositor's scene, HLS and recordings go under `<media_root>/<broadcast>/`, which
    /// outlives the broadcast's workers (unlike `root`).
    pub media_root: PathBuf,
    /// Brand pictures (the API's uploads, `<id>.<ext>`), which compositors draw from.
    pub assets_dir: Option<PathBuf>,
    /// What workers advertise as their pod and node IP.
    pub advertise_ip: String,
    /// The FFmpeg compositors encode with (CASTYARD_FFMPEG), when not the one on PATH.
    pub ffmpeg: Option<PathBuf>,
    /// Extra CAs compositors trust for RTMPS destinations (`--extra-ca-file`).
    pub extra_ca_file: Option<PathBuf>,
    /// How the workers' output reaches ours: text lines prefixed `<role> <broadcast>`, or one
    /// JSON object a line with `role` and `broadcast` fields.
    pub log_json: bool,
    /// The IP the SFU tells browsers to send media to (CASTYARD_ADVERTISE_IP), when it is not
    /// `advertise_ip`: browsers will not send WebRTC media to a loopback address.
    pub media_ip: Option<String>,
    /// SIGTERM to SIGKILL: the compositor finalizes its outputs in this time, as a pod does
    /// within its termination grace period.
    pub stop_grace: Duration,
    /// Restart backoff after a crash: doubling from `backoff_min` to `backoff_max`, reset
    /// once a run lasted `healthy_after`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    pub healthy_after: Duration,
}

impl LocalConfig {
    pub fn new(program: PathBuf, root: PathBuf) -> Self {
        Self {
            program,
            media_root: root.with_file_name("media"),
            assets_dir: None,
            root,
            advertise_ip: "127.0.0.1".into(),
            ffmpeg: None,
            extra_ca_file: None,
            log_json: false,
            media_ip: None,
            stop_grace: Duration::from_secs(60),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(60),
            healthy_after: Duration::from_secs(60),
        }
    }
}

/// What the supervisor knows of one worker, for status and tests.
#[derive(Clone, Debug, Default)]
pub struct WorkerState {
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    /// Exited, and waiting out the backoff before the next start.
    pub backing_off: bool,
    /// Why the last run stopped, in the worker's own words (its termination log).
    pub last_termination: Option<Termination>,
}

struct Worker {
    control_port: u16,
    /// Holds the broadcast's control token, which the worker's control port requires.
    client: WorkerClient,
    ports: Vec<u16>,
    state: Arc<Mutex<WorkerState>>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

pub struct LocalBackend {
    cfg: LocalConfig,
    workers: tokio::sync::Mutex<HashMap<(String, &'static str), Worker>>,
}

impl LocalBackend {
    pub fn new(cfg: LocalConfig) -> Self {
        Self {
            cfg,
            workers: tokio::sync::Mutex::default(),
        }
    }

    fn dir(&self, broadcast: &str) -> PathBuf {
        self.cfg.root.join(broadcast)
    }

    /// Makes `broadcast`'s processes match `desired`: starts what is missing, rewrites changed
    /// config in place, stops the roles no longer wanted. Idempotent. `token` is the
    /// broadcast's control token: written to a 0600 file the workers read at start, so a new
    /// token reaches a worker when it (re)starts.
    pub async fn apply(
        &self,
        broadcast: &str,
        desired: &DesiredWorkloads,
        keys: &Keys,
        token: &ControlToken,
    ) -> anyhow::Result<()> {
        anyhow::ensure!(
            !broadcast.is_empty()
                && broadcast
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-'),
            "a broadcast name must be a DNS label, not {broadcast:?}"
        );
        let mut workers = self.workers.lock().await;
        let dir = self.dir(broadcast);
        let sfu_key = (broadcast.to_owned(), Role::Sfu.as_str());
        let comp_key = (broadcast.to_owned(), Role::Compositor.as_str());
        if desired.sfu.is_some() || desired.compositor.is_some() {
            write_secret(
                &dir.join(CONTROL_DIR),
                castyard_proto::token::SECRET_KEY,
                token.expose(),
            )?;
        }

        match &desired.sfu {
            Some(sfu) => {
                let ports = match workers.get(&sfu_key) {
                    Some(w) => w.ports.clone(),
                    None => vec![free_port()?, free_port()?],
                };
                let config = SfuConfig {
                    signalling_port: ports[0],
                    media_port: ports[1],
                    ..sfu.clone()
                };
                let path = write_config(&dir.join(Role::Sfu.as_str()), &config)?;
                if let std::collections::hash_map::Entry::Vacant(slot) =
                    workers.entry(sfu_key.clone())
                {
                    slot.insert(self.start(Role::Sfu, &path, &dir, token, ports));
                }
            }
            None => self.stop(&mut workers, &sfu_key).await,
        }
        // Control ports listen on loopback only.
        let sfu_addr = workers
            .get(&sfu_key)
            .map(|w| format!("127.0.0.1:{}", w.control_port));
        match &desired.compositor {
            Some(comp) => {
                // Only the compositor mounts keys in a pod, so only it gets key files here.
                write_keys(&dir.join("keys"), keys)?;
                let ports = match workers.get(&comp_key) {
                    Some(w) => w.ports.clone(),
                    None => vec![free_port()?],
                };
                let config = CompositorConfig {
                    control_port: ports[0],
                    sfu: sfu_addr,
                    ..comp.clone()
                };
                let path = write_config(&dir.join(Role::Compositor.as_str()), &config)?;
                if let std::collections::hash_map::Entry::Vacant(slot) = workers.entry(comp_key) {
                    slot.insert(self.start(Role::Compositor, &path, &dir, token, ports));
                }
            }
            None => {
                self.stop(&mut workers, &comp_key).await;
                let _ = std::fs::remove_dir_all(dir.join("keys"));
            }
        }
        if desired.sfu.is_none() && desired.compositor.is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        Ok(())
    }

    /// Stops every process of `broadcast` and removes its files.
    pub async fn remove(&self, broadcast: &str) {
        let _ = self
            .apply(
                broadcast,
                &DesiredWorkloads::none(),
                &Keys::new(),
                &ControlToken::generate(),
            )
            .await;
    }

    /// Stops every worker (SIGTERM, then SIGKILL after the grace period), all at once.
    pub async fn shutdown(&self) {
        let mut workers = self.workers.lock().await;
        let all: Vec<Worker> = workers.drain().map(|(_, w)| w).collect();
        futures::future::join_all(all.into_iter().map(|w| async move {
            let _ = w.stop.send(true);
            let _ = w.task.await;
        }))
        .await;
    }

    pub async fn worker(&self, broadcast: &str, role: Role) -> Option<WorkerState> {
        let workers = self.workers.lock().await;
        let w = workers.get(&(broadcast.to_owned(), role.as_str()))?;
        Some(w.state.lock().expect("lock poisoned").clone())
    }

    /// The status the operator would write, from the processes instead of pods: a worker is
    /// ready when its /readyz answers 200, as the pod's readiness probe asks.
    pub async fn status(&self, b: &Broadcast) -> BroadcastStatus {
        let name = b.metadata.name.clone().unwrap_or_default();
        let mut observed = Observed::default();
        for role in [Role::Sfu, Role::Compositor] {
            let probe = {
                let workers = self.workers.lock().await;
                workers.get(&(name.clone(), role.as_str())).map(|w| {
                    (
                        w.control_port,
                        w.client.clone(),
                        w.state.lock().expect("poisoned").clone(),
                    )
                })
            };
            let seen = match probe {
                None => None,
                Some((port, client, state)) => Some(PodObservation {
                    ready: state.pid.is_some() && client.ready(&local(port)).await,
                    failed: state.backing_off,
                    reason: state
                        .backing_off
                        .then(|| state.last_termination.as_ref().map(|t| t.reason.clone()))
                        .flatten(),
                    message: state.backing_off.then(|| {
                        let exit = state.last_exit.clone().unwrap_or_default();
                        let why = match &state.last_termination {
                            Some(t) => format!("{} ({exit})", t.message),
                            None => exit,
                        };
                        format!(
                            "{why}; restarted {} times, backing off before the next try",
                            state.restarts
                        )
                    }),
                }),
            };
            match role {
                Role::Sfu => observed.sfu = seen,
                Role::Compositor => observed.compositor = seen,
            }
        }
        // The compositor's destination reports take the place of the previous ones, as the
        // operator's status carries worker reports over.
        let compositor = {
            let workers = self.workers.lock().await;
            workers
                .get(&(name.clone(), Role::Compositor.as_str()))
                .map(|w| (w.control_port, w.client.clone()))
        };
        let compositor_port = compositor.as_ref().map(|(port, _)| *port);
        let mut b = b.clone();
        if let Some((port, client)) = compositor
            && let Ok(report) = client.compositor_status(&local(port)).await
        {
            b.status.get_or_insert_with(Default::default).destinations = report.destinations;
        }
        let mut status = compute(&b, &observed, &Time(k8s_openapi::jiff::Timestamp::now()));
        let workers = self.workers.lock().await;
        status.endpoints = workers.get(&(name, Role::Sfu.as_str())).map(|w| {
            let ip = &self.cfg.advertise_ip;
            castyard_crd::Endpoints {
                signalling: Some(local(w.ports[0])),
                media_udp: Some(format!("{ip}:{}", w.ports[1])),
                ..status.endpoints.clone().unwrap_or_default()
            }
        });
        if let Some(port) = compositor_port {
            status
                .endpoints
                .get_or_insert_with(Default::default)
                .control = Some(format!("127.0.0.1:{port}"));
        }
        status
    }

    fn start(
        &self,
        role: Role,
        config: &Path,
        dir: &Path,
        token: &ControlToken,
        ports: Vec<u16>,
    ) -> Worker {
        let state = Arc::new(Mutex::new(WorkerState::default()));
        let (stop, stopped) = watch::channel(false);
        let mut args = vec![
            role.as_str().into(),
            "--config".into(),
            config.display().to_string(),
            "--keys-dir".into(),
            dir.join("keys").display().to_string(),
            "--control-token-file".into(),
            dir.join(CONTROL_DIR)
                .join(castyard_proto::token::SECRET_KEY)
                .display()
                .to_string(),
            // Only the API and the other worker, both on this machine, call a control port.
            "--control-bind".into(),
            "127.0.0.1".into(),
            "--termination-log".into(),
            termination_log(dir, role).display().to_string(),
        ];
        if role == Role::Compositor {
            let broadcast = dir.file_name().unwrap_or_default();
            args.push("--data-dir".into());
            args.push(self.cfg.media_root.join(broadcast).display().to_string());
            if let Some(assets) = &self.cfg.assets_dir {
                args.push("--assets-dir".into());
                args.push(assets.display().to_string());
            }
            if let Some(ca) = &self.cfg.extra_ca_file {
                args.push("--extra-ca-file".into());
                args.push(ca.display().to_string());
            }
        }
        let launch = Launch {
            program: self.cfg.program.clone(),
            termination_log: termination_log(dir, role),
            speaker: Speaker {
                role: role.as_str(),
                broadcast: dir
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                json: self.cfg.log_json,
            },
            args,
            ffmpeg: self.cfg.ffmpeg.clone(),
            ip: self.cfg.advertise_ip.clone(),
            media_ip: self.cfg.media_ip.clone(),
        };
        let task = tokio::spawn(supervise(launch, self.cfg.clone(), state.clone(), stopped));
        Worker {
            control_port: ports[0],
            client: WorkerClient::new(token.clone()).with_timeout(Duration::from_secs(1)),
            ports,
            state,
            stop,
            task,
        }
    }

    async fn stop(
        &self,
        workers: &mut HashMap<(String, &'static str), Worker>,
        key: &(String, &'static str),
    ) {
        if let Some(w) = workers.remove(key) {
            let _ = w.stop.send(true);
            let _ = w.task.await;
            let _ = std::fs::remove_dir_all(self.dir(&key.0).join(key.1));
        }
    }
}

/// Beside the role's config: gone with it when the role stops.
fn termination_log(dir: &Path, role: Role) -> PathBuf {
    dir.join(role.as_str()).join("termination-log")
}

/// Who a line of worker output came from, and how to pass it on.
#[derive(Clone)]
struct Speaker {
    role: &'static str,
    broadcast: String,
    json: bool,
}

impl Speaker {
    /// One line as it goes to our stderr. Escape codes are dropped unless a terminal reads
    /// us: a log file or collector would keep them as noise.
    fn render(&self, line: &str, terminal: bool) -> String {
        if self.json {
            let mut object = match serde_json::from_str::<serde_json::Value>(line) {
                Ok(serde_json::Value::Object(o)) => o,
                // A line that is not tracing's JSON (a panic, a plain eprintln) is wrapped in
                // the same shape.
                _ => {
                    let text = strip_ansi_escapes::strip_str(line);
                    let mut o = serde_json::Map::new();
                    o.insert(
                        "timestamp".into(),
                        k8s_openapi::jiff::Timestamp::now().to_string().into(),
                    );
                    o.insert("level".into(), "INFO".into());
                    o.insert("fields".into(), serde_json::json!({ "message": text }));
                    o
                }
            };
            object.insert("role".into(), self.role.into());
            object.insert("broadcast".into(), self.broadcast.clone().into());
            serde_json::Value::Object(object).to_string()
        } else if terminal {
            format!("{} {} {line}", self.role, self.broadcast)
        } else {
            let line = strip_ansi_escapes::strip_str(line);
            format!("{} {} {line}", self.role, self.broadcast)
        }
    }

    /// Copies `from` to our stderr a whole line at a time, so two workers never interleave
    /// within a line.
    fn forward(self, from: impl tokio::io::AsyncRead + Unpin + Send + 'static) {
        use std::io::IsTerminal as _;
        use tokio::io::AsyncBufReadExt as _;
        tokio::spawn(async move {
            let terminal = std::io::stderr().is_terminal();
            let mut reader = tokio::io::BufReader::new(from);
            let mut buf = Vec::new();
            while matches!(reader.read_until(b'\n', &mut buf).await, Ok(n) if n > 0) {
                let line = String::from_utf8_lossy(&buf);
                let out = self.render(line.trim_end_matches(['\r', '\n']), terminal);
                let _ = writeln!(std::io::stderr().lock(), "{out}");
                buf.clear();
            }
        });
    }
}

struct Launch {
    program: PathBuf,
    termination_log: PathBuf,
    speaker: Speaker,
    args: Vec<String>,
    ffmpeg: Option<PathBuf>,
    ip: String,
    media_ip: Option<String>,
}

impl Launch {
    fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.program);
        cmd.args(&self.args)
            // The env a pod's container gets from the downward API.
            .env("CASTYARD_POD_IP", &self.ip)
            .env("CASTYARD_NODE_IP", &self.ip)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            // Its own process group: a terminal's Ctrl-C reaches castyard, which stops the
            // workers in order (the compositor finalizes its outputs) instead of all at once.
            .process_group(0);
        if let Some(ffmpeg) = &self.ffmpeg {
            cmd.env("CASTYARD_FFMPEG", ffmpeg);
        }
        if self.speaker.json {
            cmd.env("CASTYARD_LOG_JSON", "true");
        }
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        if let Some(ip) = &self.media_ip {
            cmd.env("CASTYARD_ADVERTISE_IP", ip);
        }
        #[allow(unsafe_code)]
        // SAFETY: prctl and getppid are async-signal-safe; nothing else runs between fork and
        // exec. If castyard dies without stopping its workers (SIGKILL, a crash), the kernel
        // kills them too, so no worker is ever orphaned.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() == 1 {
                    return Err(std::io::Error::other("the parent is already gone"));
                }
                Ok(())
            });
        }
        cmd
    }
}

/// Runs one worker until told to stop, restarting it with backoff whenever it exits.
async fn supervise(
    launch: Launch,
    cfg: LocalConfig,
    state: Arc<Mutex<WorkerState>>,
    mut stop: watch::Receiver<bool>,
) {
    let backoff = || {
        ExponentialBuilder::default()
            .with_min_delay(cfg.backoff_min)
            .with_max_delay(cfg.backoff_max)
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    loop {
        if *stop.borrow() {
            return;
        }
        let started = Instant::now();
        // A message left by an earlier run must not explain this one.
        let _ = std::fs::remove_file(&launch.termination_log);
        let exit = match launch.command().spawn() {
            Ok(mut child) => {
                let pid = child.id();
                if let Some(out) = child.stdout.take() {
                    launch.speaker.clone().forward(out);
                }
                if let Some(err) = child.stderr.take() {
                    launch.speaker.clone().forward(err);
                }
                set(&state, |s| {
                    s.pid = pid;
                    s.backing_off = false;
                });
                tracing::info!(program = %launch.program.display(), args = ?launch.args, pid, "worker started");
                tokio::select! {
                    status = child.wait() => describe(status),
                    _ = stop.changed() => {
                        terminate(&mut child, cfg.stop_grace).await;
                        set(&state, |s| s.pid = None);
                        return;
                    }
                }
            }
            Err(e) => format!("could not start {}: {e}", launch.program.display()),
        };
        if started.elapsed() >= cfg.healthy_after {
            delays = backoff();
        }
        let delay = delays.next().unwrap_or(cfg.backoff_max);
        let why = Termination::take(&launch.termination_log);
        let reason = why.as_ref().map(|t| t.reason.as_str());
        tracing::warn!(args = ?launch.args, %exit, reason, ?delay, "worker exited; restarting after backoff");
        set(&state, |s| {
            s.pid = None;
            s.restarts += 1;
            s.last_exit = Some(exit.clone());
            s.last_termination = why;
            s.backing_off = true;
        });
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.changed() => return,
        }
    }
}

fn set(state: &Mutex<WorkerState>, f: impl FnOnce(&mut WorkerState)) {
    f(&mut state.lock().expect("lock poisoned"));
}

fn describe(status: std::io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), std::os::unix::process::ExitStatusExt::signal(&s)) {
            (Some(code), _) => format!("exited with status {code}"),
            (None, Some(sig)) => format!("killed by signal {sig}"),
            _ => "exited".into(),
        },
        Err(e) => format!("lost track of the process: {e}"),
    }
}

/// SIGTERM, then SIGKILL if it is still running after `grace`.
async fn terminate(child: &mut tokio::process::Child, grace: Duration) {
    if let Some(pid) = child.id() {
        #[allow(unsafe_code)]
        // SAFETY: kill(2) on our own child's pid, which cannot be reused before we reap it.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// A port free for both TCP and UDP on every interface right now.
fn free_port() -> anyhow::Result<u16> {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("0.0.0.0:0")?;
        let port = tcp.local_addr()?.port();
        if std::net::UdpSocket::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port for a media worker")
}

/// Writes `dir/worker.json` if its content changed; the rename makes the change atomic, so a
/// worker watching the file never reads half of it.
fn write_config(dir: &Path, config: &impl serde::Serialize) -> anyhow::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let path = dir.join(CONFIG_FILE);
    let body = serde_json::to_vec_pretty(config)?;
    if std::fs::read(&path).ok().as_deref() != Some(&body[..]) {
        let tmp = dir.join(format!(".{CONFIG_FILE}.tmp"));
        std::fs::write(&tmp, &body)?;
        std::fs::rename(&tmp, &path)?;
    }
    Ok(path)
}

/// One secret file, `dir/name`, readable by the owner only and replaced atomically, so a
/// reader never finds it missing or half-written.
fn write_secret(dir: &Path, name: &str, value: &str) -> anyhow::Result<PathBuf> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let tmp = dir.join(format!(".{name}.tmp"));
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(value.as_bytes())?;
    let path = dir.join(name);
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Key files laid out as the pod's Secret mounts (`<secret>/<key>`), readable by the owner
/// only. Each is replaced atomically and keys no longer referenced are removed, so a reader
/// never finds a key missing or half-written.
fn write_keys(root: &Path, keys: &Keys) -> anyhow::Result<()> {
    let mut wanted = std::collections::BTreeSet::new();
    for (secret, entries) in keys {
        for (key, value) in entries {
            anyhow::ensure!(
                !key.contains('/') && !secret.contains('/') && !key.starts_with('.'),
                "stream key names cannot contain '/' or start with '.'"
            );
            wanted.insert(write_secret(&root.join(secret), key, value)?);
        }
    }
    for secret in std::fs::read_dir(root).into_iter().flatten().flatten() {
        for file in std::fs::read_dir(secret.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if !wanted.contains(&file.path()) {
                let _ = std::fs::remove_file(file.path());
            }
        }
    }
    Ok(())
}

/// A control port on this machine: workers bind loopback only.
fn local(port: u16) -> String {
    format!("127.0.0.1:{port}")
}
