//! Every output of the show, each on its own: a task per RTMP destination (rtmp_out), the HLS
//! remux and the recording remux. A failing output is retried alone; the others never notice.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use castyard_crd::{DestinationState, DestinationStatus};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::flv::Channel;
use crate::metrics::CompositorMetrics;
use crate::remux::{self, Remux};
use crate::rtmp_out::{self, Target};

struct Running {
    url: String,
    key: String,
    task: JoinHandle<()>,
}

pub struct Outputs {
    channel: Weak<Channel>,
    metrics: Arc<CompositorMetrics>,
    running: Mutex<HashMap<String, Running>>,
    status: Arc<Mutex<BTreeMap<String, DestinationStatus>>>,
    rates: JoinHandle<()>,
}

impl Outputs {
    pub fn new(channel: &Arc<Channel>, metrics: Arc<CompositorMetrics>) -> Self {
        let status: Arc<Mutex<BTreeMap<String, DestinationStatus>>> = Arc::default();
        let rates = tokio::spawn(bitrates(status.clone(), metrics.clone()));
        Self {
            channel: Arc::downgrade(channel),
            metrics,
            running: Mutex::default(),
            status,
            rates,
        }
    }

    /// Makes the running destinations match `targets` (a destination whose key could not be
    /// read comes as an error): new ones start, removed ones stop, changed ones restart, and
    /// every other one is left alone.
    pub fn set_destinations(&self, targets: Vec<Result<Target, (String, String)>>) {
        let mut running = self.running.lock().expect("poisoned");
        let mut status = self.status.lock().expect("poisoned");
        let wanted: Vec<String> = targets
            .iter()
            .map(|t| match t {
                Ok(t) => t.name.clone(),
                Err((name, _)) => name.clone(),
            })
            .collect();
        running.retain(|name, r| {
            let keep = wanted.contains(name);
            if !keep {
                r.task.abort();
            }
            keep
        });
        status.retain(|name, _| {
            let keep = wanted.contains(name);
            if !keep {
                self.metrics.forget_destination(name);
            }
            keep
        });
        for t in targets {
            let target = match t {
                Ok(t) => t,
                Err((name, error)) => {
                    if let Some(r) = running.remove(&name) {
                        r.task.abort();
                    }
                    self.metrics
                        .set_destination_state(&name, DestinationState::Failed.into());
                    status.insert(
                        name.clone(),
                        DestinationStatus {
                            name,
                            state: DestinationState::Failed,
                            last_error: Some(error),
                            error_kind: None,
                            retries: 0,
                            bitrate_kbps: 0,
                        },
                    );
                    continue;
                }
            };
            if running
                .get(&target.name)
                .is_some_and(|r| r.url == target.url && r.key == target.stream_key)
            {
                continue;
            }
            if let Some(old) = running.remove(&target.name) {
                old.task.abort();
            }
            status.insert(
                target.name.clone(),
                DestinationStatus {
                    name: target.name.clone(),
                    state: DestinationState::Connecting,
                    last_error: None,
                    error_kind: None,
                    retries: 0,
                    bitrate_kbps: 0,
                },
            );
            let report = self.reporter();
            let sent = self
                .metrics
                .destination_sent_bytes
                .get_or_create(&crate::metrics::DestinationLabels {
                    destination: target.name.clone(),
                })
                .clone();
            let name = target.name.clone();
            let (url, key) = (target.url.clone(), target.stream_key.clone());
            let task = tokio::spawn(rtmp_out::run(target, self.channel.clone(), report, sent));
            running.insert(name, Running { url, key, task });
        }
    }

    fn reporter(&self) -> rtmp_out::Report {
        let status = self.status.clone();
        let metrics = self.metrics.clone();
        Arc::new(move |name: &str, state, error| {
            let state = match state {
                rtmp_out::State::Connecting => DestinationState::Connecting,
                rtmp_out::State::Live => DestinationState::Live,
                rtmp_out::State::Retrying => DestinationState::Retrying,
            };
            let mut all = status.lock().expect("poisoned");
            // A report from a destination removed meanwhile is ignored.
            let Some(s) = all.get_mut(name) else { return };
            metrics.set_destination_state(name, state.into());
            if state == DestinationState::Retrying {
                s.retries += 1;
                metrics
                    .destination_retries
                    .get_or_create(&crate::metrics::DestinationLabels {
                        destination: name.to_owned(),
                    })
                    .inc();
            }
            s.state = state;
            if let Some(f) = error {
                s.last_error = Some(f.message.clone());
                s.error_kind = Some(f.kind);
                metrics
                    .destination_failures
                    .get_or_create(&crate::metrics::DestinationKindLabels {
                        destination: name.to_owned(),
                        kind: f.kind.label().to_owned(),
                    })
                    .inc();
            }
        })
    }

    pub fn status(&self) -> Vec<DestinationStatus> {
        self.status
            .lock()
            .expect("poisoned")
            .values()
            .cloned()
            .collect()
    }

    /// Waits (up to `within`) for every destination to send what the show produced and stop.
    pub async fn finish(&self, within: Duration) {
        let tasks: Vec<JoinHandle<()>> = self
            .running
            .lock()
            .expect("poisoned")
            .drain()
            .map(|(_, r)| r.task)
            .collect();
        for t in tasks {
            let abort = t.abort_handle();
            if tokio::time::timeout(within, t).await.is_err() {
                abort.abort();
            }
        }
        self.rates.abort();
    }
}

/// Each destination's bitrate over the last two seconds, from the bytes it sent.
async fn bitrates(
    status: Arc<Mutex<BTreeMap<String, DestinationStatus>>>,
    metrics: Arc<CompositorMetrics>,
) {
    let mut before: HashMap<String, u64> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tick.tick().await;
        let mut all = status.lock().expect("poisoned");
        for (name, s) in all.iter_mut() {
            let sent = metrics
                .destination_sent_bytes
                .get_or_create(&crate::metrics::DestinationLabels {
                    destination: name.clone(),
                })
                .get();
            let prev = before.insert(name.clone(), sent).unwrap_or(sent);
            s.bitrate_kbps =
                u32::try_from(sent.saturating_sub(prev) * 8 / 2000).unwrap_or(u32::MAX);
        }
    }
}

/// A remux's files, each with what it holds, once it ends.
pub type RemuxTask = JoinHandle<Vec<(Option<PathBuf>, remux::Finished)>>;

/// A running HLS or recording remux. It ends when the show does, or alone when stopped (the
/// spec turned it off while live).
pub struct RemuxHandle {
    /// The recording's file, or the HLS folder.
    pub path: PathBuf,
    stop: watch::Sender<bool>,
    pub task: RemuxTask,
}

impl RemuxHandle {
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

/// For a recording: the broadcast whose library it goes to. Each finished part gets a poster
/// and a manifest as soon as it is final, so a part cut by an FFmpeg failure is listed too.
#[derive(Clone, Debug)]
pub struct Library {
    pub broadcast: String,
}

/// Runs one remux (HLS or the recording) from the show's channel until the show ends or it is
/// stopped, restarting it alone if FFmpeg fails; a restarted recording continues in a new part
/// file.
pub fn spawn_remux(
    ffmpeg: PathBuf,
    channel: Weak<Channel>,
    outputs: remux::Outputs,
    what: &'static str,
    library: Option<Library>,
) -> RemuxHandle {
    let path = outputs
        .mp4
        .clone()
        .or_else(|| outputs.hls.as_ref().map(|h| h.dir.clone()))
        .unwrap_or_default();
    let (stop, mut stopped) = watch::channel(false);
    let task = tokio::spawn(async move {
        let mut done = Vec::new();
        for part in 0u32.. {
            let Some((first, mut rx)) = channel.upgrade().map(|c| c.subscribe()) else {
                break;
            };
            let mut outs = outputs.clone();
            if part > 0
                && let Some(p) = &outs.mp4
            {
                outs.mp4 = Some(p.with_extension(format!("part{part}.mp4")));
            }
            let mut remux = match Remux::start(&ffmpeg, &outs).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(output = what, error = %e, "cannot start; retrying");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            };
            let mut ended = false;
            let mut failed = None;
            for t in first {
                if let Err(e) = remux.tag(&t).await {
                    failed = Some(e);
                    break;
                }
            }
            while failed.is_none() {
                let next = tokio::select! {
                    r = rx.recv() => r,
                    // A dropped sender is a stop too.
                    _ = stopped.wait_for(|s| *s) => Err(RecvError::Closed),
                };
                match next {
                    Ok(t) => {
                        if let Err(e) = remux.tag(&t).await {
                            failed = Some(e);
                        }
                    }
                    Err(RecvError::Lagged(n)) => {
                        failed = Some(anyhow::anyhow!("fell {n} tags behind"));
                    }
                    Err(RecvError::Closed) => {
                        ended = true;
                        break;
                    }
                }
            }
            if let Ok(f) = remux.finish().await {
                if let (Some(lib), Some(p)) = (&library, &outs.mp4)
                    && f.size_bytes > 0
                    && let Err(e) = register(&ffmpeg, lib, p, f, part).await
                {
                    tracing::warn!(recording = %p.display(), error = %e, "cannot write the recording's manifest");
                }
                done.push((outs.mp4.clone(), f));
            }
            if ended {
                break;
            }
            if let Some(e) = failed {
                tracing::warn!(output = what, error = %e, "output failed; restarting it");
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        done
    });
    RemuxHandle { path, stop, task }
}

/// Registers a recording a killed compositor left unfinished: FFmpeg wrote it as fragmented
/// MP4, so it plays up to the kill; its length comes from ffprobe (beside `ffmpeg`).
pub async fn adopt(
    ffmpeg: &std::path::Path,
    lib: &Library,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let ffprobe = match ffmpeg.file_name().and_then(|n| n.to_str()) {
        Some(n) if n.contains("ffmpeg") => ffmpeg.with_file_name(n.replace("ffmpeg", "ffprobe")),
        _ => std::path::PathBuf::from("ffprobe"),
    };
    let out = tokio::process::Command::new(&ffprobe)
        .args([
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "csv=p=0",
        ])
        .arg(path)
        .stdin(std::process::Stdio::null())
        .output()
        .await?;
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            anyhow::anyhow!(
                "{} is not a readable recording: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )
        })?;
    let size_bytes = tokio::fs::metadata(path).await?.len();
    anyhow::ensure!(secs > 0.0 && size_bytes > 0, "{} is empty", path.display());
    let done = remux::Finished {
        duration_ms: (secs * 1000.0) as u64,
        size_bytes,
    };
    register(ffmpeg, lib, path, done, super::recording::part_of(path)).await
}

/// A poster, then the manifest that tells the library the recording is final.
async fn register(
    ffmpeg: &std::path::Path,
    lib: &Library,
    path: &std::path::Path,
    done: remux::Finished,
    part: u32,
) -> anyhow::Result<()> {
    let poster = remux::poster(ffmpeg, path, done.duration_ms).await;
    let finished_at_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let m = super::recording::Manifest::new(
        &lib.broadcast,
        path,
        poster.as_deref(),
        done.duration_ms,
        done.size_bytes,
        part,
        finished_at_ms,
    )?;
    let dir = path
        .parent()
        .ok_or_else(|| anyhow::anyhow!("a recording lives in a directory"))?;
    m.write(dir)?;
    Ok(())
}
