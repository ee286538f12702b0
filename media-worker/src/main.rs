//! `castyard-media-worker sfu|compositor`: one binary, two roles (each lands with its issue).
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use castyard_crd::{CompositorConfig, SfuConfig};
use castyard_media_worker::compositor::server::{Compositor, Options as CompositorOptions};
use castyard_media_worker::control_auth::{Access, protect};
use castyard_media_worker::sfu::server::{Sfu, SfuOptions};
use castyard_proto::termination::{Termination, reason};
use castyard_proto::{ControlToken, WorkerClient};
use clap::{Args, Parser, Subcommand};

/// Castyard's per-broadcast media worker.
#[derive(Parser, Debug)]
#[command(name = "castyard-media-worker", version)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// WebRTC SFU: one UDP port for all peers, forwards on-stage tracks to the compositor.
    Sfu(SfuArgs),
    /// Compositor: mixes on-stage tracks into one show, encodes once, fans out to every output.
    Compositor(CompositorArgs),
}

/// What the operator (a pod) and the local backend (a child process) both pass.
#[derive(Args, Debug)]
struct Common {
    /// The worker's JSON config; rewritten in place when the broadcast changes.
    #[arg(long)]
    config: PathBuf,
    /// Stream keys as files, `<secret>/<key>`, as Kubernetes mounts Secrets.
    #[arg(long, default_value = "/var/run/secrets/castyard")]
    keys_dir: PathBuf,
    /// The broadcast's control token (a mounted Secret, or a 0600 file embedded): every control
    /// request but the health probes must present it. The worker does not start without it.
    #[arg(long, env = "CASTYARD_CONTROL_TOKEN_FILE", default_value = castyard_proto::token::DEFAULT_FILE)]
    control_token_file: PathBuf,
    /// When set, /metrics requires this token (or the control token); otherwise it is open to
    /// whoever can reach the control port.
    #[arg(long, env = "CASTYARD_METRICS_TOKEN_FILE")]
    metrics_token_file: Option<PathBuf>,
    /// The address the control port binds: the pod's IP in a cluster (CASTYARD_POD_IP),
    /// loopback otherwise. Only the SFU's UDP media socket binds every interface.
    #[arg(long, env = "CASTYARD_CONTROL_BIND")]
    control_bind: Option<IpAddr>,
    #[arg(long, env = "CASTYARD_POD_IP", hide = true)]
    pod_ip: Option<IpAddr>,
    /// Where to leave why the worker stopped, as one JSON line (`{"reason","message"}`): the
    /// pod's terminationMessagePath in a cluster, a file the local backend reads embedded.
    #[arg(long, env = "CASTYARD_TERMINATION_LOG")]
    termination_log: Option<PathBuf>,
}

impl Common {
    fn access(&self) -> anyhow::Result<Access> {
        let control = ControlToken::from_file(&self.control_token_file)
            .map_err(fatal(reason::CONTROL_TOKEN_MISSING))?;
        let metrics = self
            .metrics_token_file
            .as_deref()
            .map(ControlToken::from_file)
            .transpose()
            .map_err(fatal(reason::CONTROL_TOKEN_MISSING))?;
        Ok(Access { control, metrics })
    }

    fn bind_ip(&self) -> IpAddr {
        self.control_bind
            .or(self.pod_ip)
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }
}

#[derive(Args, Debug)]
struct CompositorArgs {
    #[command(flatten)]
    common: Common,
    /// The scene, HLS (`hls/<broadcast>/`) and recordings (`recordings/`).
    #[arg(long, env = "CASTYARD_DATA_DIR", default_value = "/var/lib/castyard")]
    data_dir: PathBuf,
    /// Brand pictures by upload id; defaults to `<data-dir>/assets`.
    #[arg(long, env = "CASTYARD_ASSETS_DIR")]
    assets_dir: Option<PathBuf>,
    #[arg(long, env = "CASTYARD_FFMPEG", default_value = "ffmpeg")]
    ffmpeg: PathBuf,
    /// The TrueType font for names, banners and the ticker.
    #[arg(long, env = "CASTYARD_FONT", default_value = castyard_media_worker::compositor::DEFAULT_FONT)]
    font: PathBuf,
    /// x264's preset: faster ones cost less CPU and give a softer picture.
    #[arg(long, env = "CASTYARD_X264_PRESET", default_value = "veryfast")]
    preset: String,
    /// PEM certificates of CAs to trust for RTMPS destinations, beside the built-in roots and
    /// the system's store (SSL_CERT_FILE / SSL_CERT_DIR are honoured too).
    #[arg(long, env = castyard_media_worker::tls::EXTRA_CA_ENV)]
    extra_ca_file: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct SfuArgs {
    #[command(flatten)]
    common: Common,
    /// The IP browsers send media to. Defaults to the pod's IP (CASTYARD_POD_IP), which is
    /// right for host networking and the embedded mode; behind NAT or a LoadBalancer set it.
    #[arg(long, env = "CASTYARD_ADVERTISE_IP")]
    advertise_ip: Option<IpAddr>,
    /// The UDP port browsers send media to, when it differs from the media port (NodePort).
    #[arg(long, env = "CASTYARD_ADVERTISE_PORT")]
    advertise_port: Option<u16>,
}

/// Text for people, colored only on a terminal; JSON lines (CASTYARD_LOG_JSON, which
/// `castyard up --log-json` sets) for collectors.
fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,str0m=warn,dimpl=warn"));
    let json = std::env::var("CASTYARD_LOG_JSON").is_ok_and(|v| v == "true" || v == "1");
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    let _ = if json {
        b.json().try_init()
    } else {
        b.try_init()
    };
}

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logs();
    let (result, termination_log) = match cli.role {
        Role::Sfu(args) => {
            let log = args.common.termination_log.clone();
            (run_sfu(args), log)
        }
        Role::Compositor(args) => {
            let log = args.common.termination_log.clone();
            (run_compositor(args), log)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("castyard-media-worker: {e:#}");
            let why = e
                .chain()
                .find_map(|c| c.downcast_ref::<Termination>())
                .cloned()
                .unwrap_or_else(|| Termination::new(reason::WORKER_ERROR, format!("{e:#}")));
            if let Some(path) = termination_log
                && let Err(w) = why.write(&path)
            {
                eprintln!(
                    "castyard-media-worker: cannot write {}: {w}",
                    path.display()
                );
            }
            std::process::ExitCode::from(2)
        }
    }
}

/// Tags an error with the reason its supervisor reports (see `castyard_proto::termination`).
fn fatal<E: Into<anyhow::Error>>(reason: &'static str) -> impl FnOnce(E) -> anyhow::Error {
    move |e| {
        let e = e.into();
        anyhow::Error::new(Termination::new(reason, format!("{e:#}")))
    }
}

fn read_config<T: serde::de::DeserializeOwned>(path: &PathBuf) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {}", path.display()))
        .map_err(fatal(reason::CONFIG_INVALID))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid config", path.display()))
        .map_err(fatal(reason::CONFIG_INVALID))
}

fn run_sfu(args: SfuArgs) -> anyhow::Result<()> {
    let config: SfuConfig = read_config(&args.common.config)?;
    let access = args.common.access()?;
    let ip = args
        .advertise_ip
        .or(args.common.pod_ip)
        .unwrap_or(IpAddr::from([127, 0, 0, 1]));
    let opts = SfuOptions {
        broadcast: config.broadcast.clone(),
        max_participants: config.max_participants,
        media: SocketAddr::from(([0, 0, 0, 0], config.media_port)),
        advertised: SocketAddr::new(ip, args.advertise_port.unwrap_or(config.media_port)),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let sfu = Sfu::start(opts)
            .context("cannot bind the media port")
            .map_err(fatal(reason::PORT_UNAVAILABLE))?;
        let control = SocketAddr::new(args.common.bind_ip(), config.signalling_port);
        let listener = tokio::net::TcpListener::bind(control)
            .await
            .with_context(|| format!("cannot bind the signalling port {control}"))
            .map_err(fatal(reason::PORT_UNAVAILABLE))?;
        tracing::info!(%control, broadcast = %config.broadcast, "SFU ready");
        tokio::spawn(follow_config(
            args.common.config.clone(),
            config.max_participants,
            sfu.clone(),
        ));
        let app = protect(sfu.router(), access);
        let stop = sfu.clone();
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                terminated().await;
                tracing::info!("stopping: telling participants goodbye");
                stop.shutdown();
            })
            .await?;
        Ok(())
    })
}

fn run_compositor(args: CompositorArgs) -> anyhow::Result<()> {
    let config: CompositorConfig = read_config(&args.common.config)?;
    let access = args.common.access()?;
    // Checked before anything starts: a missing encoder is one clear line, not a show that
    // restarts its encoder forever.
    castyard_media_worker::tls::init(args.extra_ca_file.clone())
        .map_err(|e| Termination::new(reason::CONFIG_INVALID, e))?;
    let ffmpeg = castyard_media_worker::preflight::check(&args.ffmpeg)
        .map_err(|e| Termination::new(reason::ENCODER_UNAVAILABLE, e))?;
    tracing::info!(version = %ffmpeg.version, "FFmpeg can encode the show");
    let bind = args.common.bind_ip();
    let opts = CompositorOptions {
        config: config.clone(),
        keys_dir: args.common.keys_dir.clone(),
        assets_dir: args
            .assets_dir
            .clone()
            .unwrap_or_else(|| args.data_dir.join("assets")),
        data_dir: args.data_dir,
        ffmpeg: args.ffmpeg,
        font: args.font,
        preset: args.preset,
        rtp_ip: bind,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let control = SocketAddr::new(bind, config.control_port);
        let listener = tokio::net::TcpListener::bind(control)
            .await
            .with_context(|| format!("cannot bind the control port {control}"))
            .map_err(fatal(reason::PORT_UNAVAILABLE))?;
        let compositor = Compositor::start(opts)?;
        tracing::info!(%control, broadcast = %config.broadcast, "compositor ready");
        let follow = {
            let c = compositor.clone();
            let path = args.common.config.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
                loop {
                    tick.tick().await;
                    // Keys are re-read too: a rotated key restarts that destination alone, and
                    // an unchanged destination is left as it is.
                    if let Ok(next) = read_config::<CompositorConfig>(&path) {
                        c.set_config(&next);
                    }
                }
            })
        };
        // In the studio, the people on stage come from the SFU; without one (an ingest show or
        // a test), inputs arrive on the control port.
        // The SFU is the same broadcast's: the same token opens its control port.
        let sfu_client = WorkerClient::new(access.control.clone());
        let link = config.sfu.clone().map(|sfu| {
            tokio::spawn(castyard_media_worker::compositor::link::follow(
                compositor.clone(),
                sfu,
                sfu_client,
            ))
        });
        let stop = compositor.clone();
        axum::serve(listener, protect(compositor.router(), access))
            .with_graceful_shutdown(async move {
                terminated().await;
            })
            .await?;
        follow.abort();
        if let Some(l) = link {
            l.abort();
        }
        tracing::info!("ending the show: flushing every output");
        let parts = stop.shutdown().await;
        for (path, done) in parts {
            if let Some(p) = path {
                tracing::info!(recording = %p.display(), duration_ms = done.duration_ms, size_bytes = done.size_bytes, "recording finalized");
            }
        }
        Ok(())
    })
}

/// The operator and the local backend rewrite the config in place when the spec changes (a
/// mounted ConfigMap changes within a minute); the guest limit follows it without a restart.
async fn follow_config(path: PathBuf, mut max: u32, sfu: Sfu) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        tick.tick().await;
        // A half-written file fails to parse and is read again on the next tick.
        if let Ok(c) = read_config::<SfuConfig>(&path)
            && c.max_participants != max
        {
            tracing::info!(
                from = max,
                to = c.max_participants,
                "participant limit changed"
            );
            max = c.max_participants;
            sfu.set_max_participants(max);
        }
    }
}

async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("a SIGTERM handler installs");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
