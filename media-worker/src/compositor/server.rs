//! The running compositor: inputs, the frame loop (paint, mix, encode on a paced clock), the
//! outputs, and the control port that changes the scene and registers inputs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Json, Router};
use castyard_crd::CompositorConfig;

use super::canvas::{Font, Frame, Scaler};
use super::encode::{Clock, Encoder, Settings};
use super::input::{CHANNELS, Input, InputPorts, InputRequest, SAMPLE_RATE};
use super::mix::Limiter;
use super::outputs::{Library, Outputs, RemuxHandle, spawn_remux};
use super::paint::{Feed, Painter};
use super::scene::{Command, Scene, SceneExt as _};
use crate::flv::Channel;
use crate::metrics::CompositorMetrics;
use crate::remux::{self, Finished};
use crate::rtmp_out::Target;

/// Sources not on stage are decoded at most at this size until their tile's size is known.
const MAX_DECODE: (u32, u32) = (1280, 720);

#[derive(Clone, Debug)]
pub struct Options {
    pub config: CompositorConfig,
    /// Stream keys as files, `<secret>/<key>`.
    pub keys_dir: PathBuf,
    /// The scene, HLS (`hls/<broadcast>/`) and recordings (`recordings/`) go here.
    pub data_dir: PathBuf,
    /// Brand pictures by upload id.
    pub assets_dir: PathBuf,
    pub ffmpeg: PathBuf,
    pub font: PathBuf,
    pub preset: String,
    /// Where the SFU's RTP copies arrive: the control port's address (loopback embedded, the
    /// pod's IP in a cluster), never every interface.
    pub rtp_ip: std::net::IpAddr,
}

#[derive(Clone)]
pub struct Compositor {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    scene: RwLock<Arc<Scene>>,
    scene_path: PathBuf,
    /// Keyed by tile id: the participant id for a camera, `<id>/screen` for a screen share.
    inputs: Mutex<HashMap<String, Arc<Input>>>,
    channel: Mutex<Option<Arc<Channel>>>,
    outputs: Outputs,
    metrics: Arc<CompositorMetrics>,
    clock: Arc<Clock>,
    stop: AtomicBool,
    encoder_restarts: AtomicU64,
    frame_loop: Mutex<Option<std::thread::JoinHandle<()>>>,
    recording: Mutex<Option<RemuxHandle>>,
    hls: Mutex<Option<RemuxHandle>>,
    spec_layout: Mutex<castyard_crd::Layout>,
}

/// What `/status` answers: the wire type, so the operator and the API read exactly this.
pub use castyard_proto::status::CompositorStatus as Status;

fn path(slot: &Mutex<Option<RemuxHandle>>) -> Option<PathBuf> {
    slot.lock()
        .expect("poisoned")
        .as_ref()
        .map(|h| h.path.clone())
}

/// HLS for the watch page, in `hls/<broadcast>/` (a previous run's segments are dropped).
fn start_hls(opts: &Options, channel: &Arc<Channel>, low_latency: bool) -> RemuxHandle {
    let dir = opts.data_dir.join("hls").join(&opts.config.broadcast);
    let _ = std::fs::remove_dir_all(&dir);
    spawn_remux(
        opts.ffmpeg.clone(),
        Arc::downgrade(channel),
        remux::Outputs {
            hls: Some(remux::Hls {
                dir,
                // Segments are GOPs (a keyframe every 2 s); low latency comes from the parts.
                segment_seconds: 2,
                low_latency,
            }),
            mp4: None,
        },
        "hls",
        None,
    )
}

/// A new recording file, named by when it starts, registered in the library when final.
fn start_recording(opts: &Options, channel: &Arc<Channel>) -> RemuxHandle {
    let broadcast = &opts.config.broadcast;
    let path = opts
        .data_dir
        .join("recordings")
        .join(format!("{broadcast}-{}.mp4", now_ms() / 1000));
    spawn_remux(
        opts.ffmpeg.clone(),
        Arc::downgrade(channel),
        remux::Outputs {
            hls: None,
            mp4: Some(path),
        },
        "recording",
        Some(Library {
            broadcast: broadcast.clone(),
        }),
    )
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Reads each destination's key from its mounted secret; a missing key fails that destination
/// alone, and the message never contains the key.
pub fn targets(
    config: &CompositorConfig,
    keys_dir: &std::path::Path,
) -> Vec<Result<Target, (String, String)>> {
    config
        .destinations
        .iter()
        .filter(|d| d.enabled)
        .map(|d| {
            let r = &d.stream_key_secret_ref;
            let path = keys_dir.join(&r.name).join(&r.key);
            match std::fs::read_to_string(&path) {
                Ok(k) if !k.trim().is_empty() => Ok(Target {
                    name: d.name.clone(),
                    url: d.url.clone(),
                    stream_key: k.trim().to_owned(),
                }),
                _ => Err((
                    d.name.clone(),
                    format!("stream key {}/{} is not available", r.name, r.key),
                )),
            }
        })
        .collect()
}

impl Compositor {
    /// Starts the encoder, the outputs and the frame loop; call inside a Tokio runtime.
    pub fn start(opts: Options) -> anyhow::Result<Self> {
        let c = &opts.config;
        anyhow::ensure!(
            (16..=3840).contains(&c.width) && (16..=2160).contains(&c.height),
            "output size {}x{} is out of range",
            c.width,
            c.height
        );
        anyhow::ensure!((1..=60).contains(&c.fps), "fps {} is out of range", c.fps);
        let font = Font::from_bytes(
            std::fs::read(&opts.font)
                .with_context(|| format!("cannot read the font {}", opts.font.display()))?,
        )?;
        std::fs::create_dir_all(&opts.data_dir)
            .with_context(|| format!("cannot create {}", opts.data_dir.display()))?;
        let scene_path = opts.data_dir.join("scene.json");
        let mut scene = Scene::load(&scene_path).context("the saved scene is unreadable")?;
        if scene.version == 0 {
            scene.layout = c.layout;
        }
        let metrics = Arc::new(CompositorMetrics::new(&c.broadcast));
        metrics.target_fps.set(i64::from(c.fps));
        let channel = Arc::new(Channel::default());
        let outputs = Outputs::new(&channel, metrics.clone());
        outputs.set_destinations(targets(c, &opts.keys_dir));
        let hls = c
            .hls
            .enabled
            .then(|| start_hls(&opts, &channel, c.hls.low_latency));
        // What a killed predecessor was recording is final now: it goes to the library too.
        let library = super::outputs::Library {
            broadcast: c.broadcast.clone(),
        };
        for orphan in super::recording::orphans(&opts.data_dir.join("recordings")) {
            let (ffmpeg, lib) = (opts.ffmpeg.clone(), library.clone());
            tokio::spawn(async move {
                match super::outputs::adopt(&ffmpeg, &lib, &orphan).await {
                    Ok(()) => {
                        tracing::info!(recording = %orphan.display(), "an interrupted recording was finalized")
                    }
                    Err(e) => {
                        tracing::warn!(recording = %orphan.display(), error = %format!("{e:#}"), "cannot finalize an interrupted recording")
                    }
                }
            });
        }
        let recording = c.recording.then(|| start_recording(&opts, &channel));
        let settings = Settings {
            ffmpeg: opts.ffmpeg.clone(),
            width: c.width & !1,
            height: c.height & !1,
            fps: c.fps,
            video_kbps: c.video_bitrate_kbps,
            audio_kbps: c.audio_bitrate_kbps,
            preset: opts.preset.clone(),
        };
        let painter = Painter::new(
            settings.width,
            settings.height,
            settings.fps,
            font,
            opts.assets_dir.clone(),
        );
        let inner = Arc::new(Inner {
            scene: RwLock::new(Arc::new(scene)),
            scene_path,
            inputs: Mutex::default(),
            channel: Mutex::new(Some(channel.clone())),
            outputs,
            metrics,
            clock: Arc::default(),
            stop: AtomicBool::new(false),
            encoder_restarts: AtomicU64::new(0),
            frame_loop: Mutex::new(None),
            recording: Mutex::new(recording),
            hls: Mutex::new(hls),
            spec_layout: Mutex::new(c.layout),
            opts,
        });
        let encoder = Encoder::start(&settings, channel.clone(), inner.clock.clone())?;
        let weak = Arc::downgrade(&inner);
        let handle = std::thread::Builder::new()
            .name("compose".into())
            .spawn(move || frame_loop(weak, settings, painter, encoder, channel))?;
        *inner.frame_loop.lock().expect("poisoned") = Some(handle);
        Ok(Self { inner })
    }

    pub fn scene(&self) -> Arc<Scene> {
        self.inner.scene.read().expect("poisoned").clone()
    }

    /// Applies a scene command, saves the scene and returns it; the next frame shows it.
    pub fn apply(&self, cmd: Command) -> Result<Arc<Scene>, super::scene::SceneError> {
        let mut guard = self.inner.scene.write().expect("poisoned");
        let mut next = (**guard).clone();
        next.apply(cmd)?;
        if let Err(e) = next.save(&self.inner.scene_path) {
            tracing::error!(error = %e, "cannot save the scene; it is applied but not persisted");
        }
        *guard = Arc::new(next);
        Ok(guard.clone())
    }

    /// Starts (or replaces) the decoders of one source.
    pub fn add_input(&self, key: &str, req: InputRequest) -> anyhow::Result<InputPorts> {
        let c = &self.inner.opts.config;
        // Decoded at its tile's size when it is on stage, so that no picture needs scaling.
        let scene = self.scene();
        let size = super::layout::place(
            c.width & !1,
            c.height & !1,
            scene.layout,
            &scene.tiles(),
            scene.featured(),
        )
        .into_iter()
        .find(|p| p.id == key)
        .map_or(
            (
                c.width.min(MAX_DECODE.0) & !1,
                c.height.min(MAX_DECODE.1) & !1,
            ),
            |p| Scaler::even(p.video.w, p.video.h),
        );
        let dir = self.inner.opts.data_dir.join("inputs");
        // The old decoders go first, so that their ports are free for anyone.
        self.inner.inputs.lock().expect("poisoned").remove(key);
        let input = Input::start(
            &self.inner.opts.ffmpeg,
            &dir,
            key,
            req,
            size,
            self.inner.opts.rtp_ip,
        )?;
        let ports = input.ports;
        self.inner
            .inputs
            .lock()
            .expect("poisoned")
            .insert(key.to_owned(), Arc::new(input));
        Ok(ports)
    }

    /// Whether the input's video decoder wants a keyframe (see [`Input::take_keyframe_wanted`]).
    pub fn take_keyframe_wanted(&self, key: &str) -> bool {
        let input = self
            .inner
            .inputs
            .lock()
            .expect("poisoned")
            .get(key)
            .cloned();
        input.is_some_and(|i| i.take_keyframe_wanted())
    }

    pub fn remove_input(&self, key: &str) -> bool {
        self.inner
            .inputs
            .lock()
            .expect("poisoned")
            .remove(key)
            .is_some()
    }

    /// Follows a changed config: destinations added, removed or changed, alone.
    /// Applies a changed spec while live: destinations, and HLS and the recording turned on or
    /// off, each touching only itself.
    pub fn set_config(&self, config: &CompositorConfig) {
        let inner = &self.inner;
        // The spec's layout is the host's choice from the broadcast settings; a change there
        // applies like a scene command (a layout set on the control port stays until then).
        let changed = {
            let mut last = inner.spec_layout.lock().expect("poisoned");
            let changed = *last != config.layout;
            *last = config.layout;
            changed
        };
        if changed
            && let Err(e) = self.apply(Command::SetLayout {
                layout: config.layout,
            })
        {
            tracing::warn!(error = %e, "cannot apply the spec's layout");
        }
        inner
            .outputs
            .set_destinations(targets(config, &inner.opts.keys_dir));
        let Some(channel) = inner.channel.lock().expect("poisoned").clone() else {
            return;
        };
        let mut hls = inner.hls.lock().expect("poisoned");
        match (config.hls.enabled, hls.is_some()) {
            (true, false) => *hls = Some(start_hls(&inner.opts, &channel, config.hls.low_latency)),
            (false, true) => {
                if let Some(h) = hls.take() {
                    h.stop();
                }
            }
            _ => {}
        }
        let mut rec = inner.recording.lock().expect("poisoned");
        match (config.recording, rec.is_some()) {
            (true, false) => *rec = Some(start_recording(&inner.opts, &channel)),
            (false, true) => {
                // It finalizes and goes to the library on its own.
                if let Some(r) = rec.take() {
                    r.stop();
                }
            }
            _ => {}
        }
    }

    pub fn status(&self) -> Status {
        Status {
            destinations: self.inner.outputs.status(),
            frames: self.inner.metrics.frames.get(),
            media_ms: self.inner.clock.last_ms(),
            encoder_restarts: self.inner.encoder_restarts.load(Ordering::Relaxed),
            recording: path(&self.inner.recording),
            hls: path(&self.inner.hls),
            inputs: self
                .inner
                .inputs
                .lock()
                .expect("poisoned")
                .iter()
                .map(|(k, i)| (k.clone(), i.status()))
                .collect(),
        }
    }

    /// Ends the show: the encoder flushes, then every output sends or writes what it has and
    /// the recording is finalized. Returns the recording's parts.
    pub async fn shutdown(&self) -> Vec<(Option<PathBuf>, Finished)> {
        self.inner.stop.store(true, Ordering::SeqCst);
        let handle = self.inner.frame_loop.lock().expect("poisoned").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
        self.inner.inputs.lock().expect("poisoned").clear();
        // The last strong reference: outputs see the channel close once they have sent it all.
        self.inner.channel.lock().expect("poisoned").take();
        self.inner.outputs.finish(Duration::from_secs(10)).await;
        let tasks: Vec<_> = [&self.inner.hls, &self.inner.recording]
            .into_iter()
            .filter_map(|m| m.lock().expect("poisoned").take())
            .collect();
        let mut out = Vec::new();
        for h in tasks {
            if let Ok(parts) = h.task.await {
                out.extend(parts.into_iter().filter(|(p, _)| p.is_some()));
            }
        }
        out
    }

    pub fn router(&self) -> Router {
        Router::new()
            .route("/scene", get(get_scene).post(post_scene))
            .route("/inputs/{id}/{kind}", put(put_input).delete(delete_input))
            .route(
                "/status",
                get(|State(c): State<Compositor>| async move { Json(c.status()) }),
            )
            .route(
                "/metrics",
                get(|State(c): State<Compositor>| async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        c.inner.metrics.encode(),
                    )
                }),
            )
            .route("/healthz", get(|| async { "ok" }))
            .route(
                "/readyz",
                get(|State(c): State<Compositor>| async move {
                    if c.inner.clock.last_ms() > 0 {
                        (StatusCode::OK, "ready")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "encoder starting")
                    }
                }),
            )
            .with_state(self.clone())
    }
}

fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (status, Json(castyard_proto::ErrorBody::new(code, message))).into_response()
}

async fn get_scene(State(c): State<Compositor>) -> Json<Scene> {
    Json(c.scene().as_ref().clone())
}

async fn post_scene(State(c): State<Compositor>, body: axum::body::Bytes) -> Response {
    let cmd: Command = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_command", e),
    };
    match c.apply(cmd) {
        Ok(scene) => Json(scene.as_ref().clone()).into_response(),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, "refused", e),
    }
}

fn input_key(id: &str, kind: &str) -> Result<String, Box<Response>> {
    let ok = (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'));
    if !ok {
        return Err(Box::new(error(
            StatusCode::BAD_REQUEST,
            "bad_id",
            "participant ids are 1-64 letters, digits, '-' or '_'",
        )));
    }
    match kind {
        "camera" => Ok(id.to_owned()),
        "screen" => Ok(format!("{id}/screen")),
        _ => Err(Box::new(error(
            StatusCode::NOT_FOUND,
            "not_found",
            "an input is a camera or a screen",
        ))),
    }
}

async fn put_input(
    State(c): State<Compositor>,
    Path((id, kind)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    let key = match input_key(&id, &kind) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    let req: InputRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_input", e),
    };
    if req.video.is_none() && !req.audio {
        return error(
            StatusCode::BAD_REQUEST,
            "bad_input",
            "an input has video, audio or both",
        );
    }
    match tokio::task::spawn_blocking(move || c.add_input(&key, req)).await {
        Ok(Ok(ports)) => Json(ports).into_response(),
        Ok(Err(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!("{e:#}"),
        ),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e),
    }
}

async fn delete_input(
    State(c): State<Compositor>,
    Path((id, kind)): Path<(String, String)>,
) -> Response {
    let key = match input_key(&id, &kind) {
        Ok(k) => k,
        Err(r) => return *r,
    };
    match tokio::task::spawn_blocking(move || c.remove_input(&key)).await {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        _ => error(StatusCode::NOT_FOUND, "not_found", "no such input"),
    }
}

/// The paced loop: one frame and its audio every 1/fps of wall time, forever, into the one
/// encoder. Painting runs here while FFmpeg encodes the previous frame and the decoders decode
/// the next ones, so the three stages overlap.
fn frame_loop(
    inner: std::sync::Weak<Inner>,
    settings: Settings,
    mut painter: Painter,
    mut encoder: Encoder,
    channel: Arc<Channel>,
) {
    let fps = u64::from(settings.fps);
    let period = Duration::from_nanos(1_000_000_000 / fps);
    let bytes = Frame::bytes(settings.width, settings.height);
    let mut limiter = Limiter::default();
    let mut mix = Vec::new();
    let mut start = Instant::now();
    let mut speed_at = (Instant::now(), 0u32);
    let mut n: u64 = 0;
    loop {
        let Some(inner) = inner.upgrade() else { break };
        if inner.stop.load(Ordering::SeqCst) {
            break;
        }
        let due = start + period * (n as u32);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else if now - due > Duration::from_secs(1) {
            // Far behind (the machine stalled): catch up by starting the schedule again, and
            // say how many frames the show lost.
            let behind = ((now - due).as_nanos() / period.as_nanos()) as u64;
            inner.metrics.dropped_frames.inc_by(behind);
            start = now - period * (n as u32);
        }
        let scene = inner.scene.read().expect("poisoned").clone();
        let inputs: HashMap<String, Arc<Input>> = inner.inputs.lock().expect("poisoned").clone();
        let feeds = |id: &str| inputs.get(id).map_or(Feed::Waiting, |i| i.feed());
        let mut frame = Frame {
            width: settings.width,
            height: settings.height,
            data: encoder.buffer(bytes),
        };
        painter.paint(&scene, &feeds, n, now_ms(), &mut frame);
        for (id, size) in painter.tile_sizes() {
            if let Some(input) = inputs.get(id) {
                input.want_size(*size);
            }
        }
        // Exactly 48000 samples per second whatever the frame rate: frame n gets its share.
        let samples = ((n + 1) * SAMPLE_RATE as u64 / fps - n * SAMPLE_RATE as u64 / fps) as usize;
        mix.clear();
        mix.resize(samples * CHANNELS, 0.0f32);
        for (key, input) in &inputs {
            if key.contains('/') {
                continue;
            }
            match scene.participants.get(key) {
                Some(p) if p.on_stage && !p.muted => input.mix_into(&mut mix, p.gain),
                // Off stage or muted: its backlog must not play later.
                _ => input.discard_audio(0),
            }
        }
        let mut pcm = Vec::new();
        limiter.apply(&mix, &mut pcm);
        if encoder.send(frame.data, pcm).is_err() || !encoder.running() {
            tracing::error!("the encoder stopped; starting a new one");
            inner.encoder_restarts.fetch_add(1, Ordering::Relaxed);
            drop(encoder);
            inner.clock.resume();
            loop {
                std::thread::sleep(Duration::from_secs(1));
                match Encoder::start(&settings, channel.clone(), inner.clock.clone()) {
                    Ok(e) => {
                        encoder = e;
                        break;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot start the encoder"),
                }
                if inner.stop.load(Ordering::SeqCst) {
                    return;
                }
            }
        }
        inner.metrics.frames.inc();
        n += 1;
        if speed_at.0.elapsed() >= Duration::from_secs(2) {
            let media = inner.clock.last_ms();
            let ratio = f64::from(media.saturating_sub(speed_at.1))
                / speed_at.0.elapsed().as_millis() as f64;
            inner.metrics.encoder_speed.set(ratio);
            speed_at = (Instant::now(), media);
        }
    }
    if let Some(inner) = inner.upgrade() {
        encoder.finish(&inner.clock);
    }
}
