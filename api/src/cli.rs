//! The `castyard` command line: `up` (embedded), `api` (cluster), and the server start-up both share.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};

use crate::backend::BroadcastBackend;
use crate::backend::embedded::EmbeddedBackend;
use crate::backend::kubernetes::KubernetesBackend;
use crate::crypto::MasterKey;
use crate::db::Db;
use crate::realtime::Hub;
use crate::state::{AppState, Mode, Settings};
use castyard_operator::local::{LocalBackend, LocalConfig};

/// Castyard: a self-hosted live-streaming studio.
#[derive(Parser, Debug)]
#[command(name = "castyard", version, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run everything on this machine: API, studio, SQLite, media workers as child processes.
    Up(UpArgs),
    /// Run the cluster API (Postgres; broadcasts become Kubernetes custom resources).
    Api(ApiArgs),
    /// Synthetic guests: join a broadcast's studio, publish a test pattern and a tone, and
    /// exit 0 only if every bot received every other bot's audio and video.
    Bot(crate::bot::BotArgs),
    /// Print the OpenAPI document (api/openapi.json is this output).
    #[command(hide = true)]
    Openapi,
}

#[derive(clap::Args, Debug, Clone)]
pub struct CommonArgs {
    /// The URL browsers use to reach this server; invite and watch links are built on it.
    /// Defaults to http://<listen>.
    #[arg(long, env = "CASTYARD_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// The built frontend to serve at /.
    #[arg(long, env = "CASTYARD_WEB_DIR", default_value = "frontend/dist")]
    pub web_dir: PathBuf,
    /// npm's swagger-ui-dist, served at /api-docs.
    #[arg(
        long,
        env = "CASTYARD_SWAGGER_UI_DIR",
        default_value = "frontend/node_modules/swagger-ui-dist"
    )]
    pub swagger_ui_dir: PathBuf,
    /// Log as JSON lines (for log collectors) instead of text.
    #[arg(long, env = "CASTYARD_LOG_JSON")]
    pub log_json: bool,
    /// PEM certificates of CAs to trust for RTMPS destinations (the ingest's restream, the
    /// destination test and, embedded, the compositors), beside the built-in roots and the
    /// system's store (SSL_CERT_FILE / SSL_CERT_DIR are honoured too).
    #[arg(long, env = castyard_media_worker::tls::EXTRA_CA_ENV)]
    pub extra_ca_file: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct UpArgs {
    /// Address to serve the API and studio on.
    #[arg(long, env = "CASTYARD_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Where the database, the master key, recordings and uploads live.
    #[arg(long, env = "CASTYARD_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
    /// The media worker run per broadcast; by default the castyard-media-worker beside this
    /// binary, else the one on PATH.
    #[arg(long, env = "CASTYARD_MEDIA_WORKER")]
    pub media_worker: Option<PathBuf>,
    /// Where OBS and other RTMP publishers connect (rtmp://<host>:<port>/live/<stream key>).
    #[arg(long, env = "CASTYARD_RTMP_LISTEN", default_value = "127.0.0.1:1935")]
    pub rtmp_listen: SocketAddr,
    /// Run without the RTMP ingest.
    #[arg(long, env = "CASTYARD_NO_RTMP_INGEST")]
    pub no_rtmp_ingest: bool,
    /// The FFmpeg the compositors encode with; checked at start.
    #[arg(long, env = "CASTYARD_FFMPEG", default_value = "ffmpeg")]
    pub ffmpeg: PathBuf,
    /// The IP browsers send studio media (UDP) to. Defaults to this machine's address on its
    /// default route: browsers will not send WebRTC media to 127.0.0.1.
    #[arg(long, env = "CASTYARD_MEDIA_IP")]
    pub media_ip: Option<std::net::IpAddr>,
    #[command(flatten)]
    pub common: CommonArgs,
}

/// Runs the RTMP ingest on `listener` for this server's broadcasts.
fn start_ingest(
    state: &AppState,
    listener: tokio::net::TcpListener,
    data_dir: &std::path::Path,
    ffmpeg: &std::path::Path,
) {
    let config = castyard_media_worker::ingest::IngestConfig {
        ffmpeg: ffmpeg.to_owned(),
        ..castyard_media_worker::ingest::IngestConfig::new(data_dir)
    };
    let ingest = castyard_media_worker::ingest::Ingest::new(
        config,
        Arc::new(crate::ingest::Hooks(state.clone())),
        state.metrics.ingest.clone(),
    );
    let _ = state.ingest.set(ingest.clone());
    tracing::info!(
        url = state.settings.ingest_url.as_deref(),
        "RTMP ingest listening"
    );
    tokio::spawn(async move {
        if let Err(e) = ingest.serve(listener).await {
            tracing::error!(error = %e, "the RTMP ingest stopped");
        }
    });
}

/// Binds the RTMP ingest's port, naming the flags in the error.
async fn bind_rtmp(addr: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!("binding {addr} for the RTMP ingest (see --rtmp-listen, --no-rtmp-ingest)")
    })
}

/// rtmp://<public host>:<bound port>/live: what OBS is told to use.
fn ingest_url(public_url: &str, bound: SocketAddr) -> String {
    let host = url::Url::parse(public_url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| bound.ip().to_string());
    format!(
        "rtmp://{host}:{}/{}",
        bound.port(),
        castyard_media_worker::ingest::APP
    )
}

/// This machine's address towards the rest of the network: the source a packet to a public
/// address would leave from (connecting a UDP socket sends nothing). Loopback if there is no
/// route, which still serves bots and browsers allowed to use loopback.
fn default_route_ip() -> std::net::IpAddr {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("192.0.2.1:9")?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]))
}

fn media_worker(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|exe| Some(exe.parent()?.join("castyard-media-worker")))
            .filter(|p| p.exists())
            .unwrap_or_else(|| "castyard-media-worker".into())
    })
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum BackendKind {
    /// Broadcast custom resources and Secrets in the cluster.
    Kubernetes,
    /// Workers as child processes of this server (single replica only).
    Embedded,
}

#[derive(clap::Args, Debug)]
pub struct ApiArgs {
    #[arg(long, env = "CASTYARD_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    /// postgres://user:password@host/db
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    /// Base64 of 32 random bytes (`openssl rand -base64 32`); encrypts stream keys and signs tokens.
    #[arg(long, env = "CASTYARD_ENCRYPTION_KEY", hide_env_values = true)]
    pub encryption_key: String,
    /// Namespace the Broadcasts and their Secrets are written to.
    #[arg(long, env = "CASTYARD_NAMESPACE", default_value = "default")]
    pub namespace: String,
    #[arg(
        long,
        env = "CASTYARD_BACKEND",
        value_enum,
        default_value = "kubernetes"
    )]
    pub backend: BackendKind,
    /// Where recordings and uploads live (a shared volume in the cluster).
    #[arg(long, env = "CASTYARD_DATA_DIR", default_value = "/var/lib/castyard")]
    pub data_dir: PathBuf,
    /// Run the RTMP ingest (OBS) on this address; off when unset.
    #[arg(long, env = "CASTYARD_RTMP_LISTEN")]
    pub rtmp_listen: Option<SocketAddr>,
    /// The ingest URL OBS is given (rtmp://ingest.example.com:1935/live), when the listen
    /// address is not what publishers reach (a LoadBalancer in front). Default: the public
    /// URL's host with the listen port.
    #[arg(long, env = "CASTYARD_RTMP_URL")]
    pub rtmp_url: Option<String>,
    #[command(flatten)]
    pub common: CommonArgs,
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Up(args) => up(args).await,
        Command::Api(args) => cluster_api(args).await,
        Command::Bot(args) => {
            init_tracing(false);
            if crate::bot::run(args).await? {
                Ok(())
            } else {
                // The summary line already said what was missing.
                std::process::exit(1)
            }
        }
        Command::Openapi => {
            print!("{}", crate::openapi_json(&doc_state().await?));
            Ok(())
        }
    }
}

fn init_tracing(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
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

fn settings(mode: Mode, data_dir: PathBuf, listen: SocketAddr, common: &CommonArgs) -> Settings {
    let public_url = common
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{listen}"))
        .trim_end_matches('/')
        .to_owned();
    let mut s = Settings::new(mode, data_dir, public_url);
    s.web_dir = Some(common.web_dir.clone());
    s.swagger_dir = Some(common.swagger_ui_dir.clone());
    s
}

async fn up(args: UpArgs) -> anyhow::Result<()> {
    init_tracing(args.common.log_json);
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let data_dir = args.data_dir.canonicalize()?;
    let master = MasterKey::load_or_create(&data_dir.join("master.key"))?;
    let db_path = data_dir.join("castyard.db");
    let db = Db::connect(&format!("sqlite://{}?mode=rwc", db_path.display())).await?;
    db.migrate().await.context("migrating the database")?;
    let mut local = LocalConfig::new(media_worker(args.media_worker), data_dir.join("workers"));
    let media_ip = args.media_ip.unwrap_or_else(default_route_ip);
    tracing::info!(%media_ip, "studio media (WebRTC over UDP) goes to this address");
    local.media_ip = Some(media_ip.to_string());
    // Brand pictures the host uploads are drawn by the compositors straight from the uploads.
    local.assets_dir = Some(data_dir.join("uploads"));
    castyard_media_worker::tls::init(args.common.extra_ca_file.clone())
        .map_err(|e| anyhow::anyhow!("--extra-ca-file: {e}"))?;
    local.extra_ca_file = args.common.extra_ca_file.clone();
    local.ffmpeg = Some(args.ffmpeg.clone());
    local.log_json = args.common.log_json;
    let workers = Arc::new(LocalBackend::new(local));
    let mut s = settings(Mode::Embedded, data_dir.clone(), args.listen, &args.common);
    // Without a working FFmpeg the studio still works; going live is refused with this line.
    let ffmpeg = args.ffmpeg.clone();
    match tokio::task::spawn_blocking(move || castyard_media_worker::preflight::check(&ffmpeg))
        .await?
    {
        Ok(found) => tracing::info!(version = %found.version, "FFmpeg can encode the show"),
        Err(why) => {
            tracing::warn!("{why} (the studio works; going live is refused until this is fixed)");
            s.cannot_go_live = Some(why);
        }
    }
    let rtmp = if args.no_rtmp_ingest {
        None
    } else {
        let l = bind_rtmp(args.rtmp_listen).await?;
        s.ingest_url = Some(ingest_url(&s.public_url, l.local_addr()?));
        Some(l)
    };
    let hub = Hub::in_process(&s.replica_id);
    let backend = Arc::new(EmbeddedBackend::with_workers(workers.clone()));
    let state = AppState::new(db, s, &master, hub, backend);
    if let Some(listener) = rtmp {
        start_ingest(&state, listener, &data_dir, &args.ffmpeg);
    }
    // Workers died with the last run (their parent-death signal): start what should run.
    let resumed = crate::broadcasts::service::resync(&state)
        .await
        .context("restarting the workers of broadcasts in progress")?;
    if resumed > 0 {
        tracing::info!(broadcasts = resumed, "media workers restarted");
    }
    let ingest = state.ingest.get().cloned();
    let library = crate::library::spawn(state.clone());
    let served = serve(state.clone(), args.listen).await;
    // Live ingests end as if their publishers had stopped: recordings finalized and listed.
    if let Some(ingest) = ingest {
        ingest.shutdown().await;
    }
    // Every worker stops before we exit (the compositor finalizes its outputs), and what they
    // finalized is in the library before we go.
    workers.shutdown().await;
    library.abort();
    crate::library::collect(&state).await;
    served
}

async fn cluster_api(args: ApiArgs) -> anyhow::Result<()> {
    init_tracing(args.common.log_json);
    castyard_media_worker::tls::init(args.common.extra_ca_file.clone())
        .map_err(|e| anyhow::anyhow!("--extra-ca-file: {e}"))?;
    let master = MasterKey::from_base64(&args.encryption_key)?;
    let db = Db::connect(&args.database_url)
        .await
        .context("connecting to the database")?;
    db.migrate().await.context("migrating the database")?;
    let mut s = settings(
        Mode::Kubernetes,
        args.data_dir.clone(),
        args.listen,
        &args.common,
    );
    let rtmp = match args.rtmp_listen {
        Some(addr) => {
            let l = bind_rtmp(addr).await?;
            s.ingest_url = Some(match &args.rtmp_url {
                Some(u) => {
                    let ep = castyard_media_worker::rtmp_out::Endpoint::parse(u)
                        .context("--rtmp-url must be rtmp://host[:port]/app")?;
                    anyhow::ensure!(
                        !ep.tls,
                        "--rtmp-url: the ingest serves rtmp://, not rtmps://"
                    );
                    u.trim_end_matches('/').to_owned()
                }
                None => ingest_url(&s.public_url, l.local_addr()?),
            });
            Some(l)
        }
        None => None,
    };
    let hub = match db.kind {
        crate::db::Kind::Postgres => {
            Hub::postgres(&s.replica_id, &args.database_url, db.pool.clone()).await?
        }
        crate::db::Kind::Sqlite => Hub::in_process(&s.replica_id),
    };
    let backend: Arc<dyn BroadcastBackend> = match args.backend {
        BackendKind::Kubernetes => {
            let client = kube::Client::try_default()
                .await
                .context("reading the Kubernetes config")?;
            Arc::new(KubernetesBackend::new(client, &args.namespace))
        }
        BackendKind::Embedded => Arc::new(EmbeddedBackend::new()),
    };
    let state = AppState::new(db, s, &master, hub, backend);
    if let Some(listener) = rtmp {
        start_ingest(&state, listener, &args.data_dir, Path::new("ffmpeg"));
    }
    let ingest = state.ingest.get().cloned();
    // Compositor pods write recordings to the media volume when the chart shares one.
    let library = crate::library::spawn(state.clone());
    let served = serve(state, args.listen).await;
    library.abort();
    if let Some(ingest) = ingest {
        ingest.shutdown().await;
    }
    served
}

/// A throwaway state, enough to build the router and its OpenAPI document.
pub async fn doc_state() -> anyhow::Result<AppState> {
    let db = Db::connect("sqlite::memory:").await?;
    let s = Settings::new(
        Mode::Embedded,
        std::env::temp_dir(),
        "http://localhost".into(),
    );
    let hub = Hub::in_process(&s.replica_id);
    Ok(AppState::new(
        db,
        s,
        &MasterKey::generate(),
        hub,
        Arc::new(EmbeddedBackend::new()),
    ))
}

async fn serve(state: AppState, listen: SocketAddr) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let url = state.settings.public_url.clone();
    let app = crate::app(state);
    tracing::info!(%listen, "listening");
    println!("Castyard is running at {url}");
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await?;
    tracing::info!("shut down cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received, draining connections");
}
