//! One `ffmpeg -c copy` fed FLV on stdin, writing HLS, a fragmented-MP4 recording, or both:
//! no re-encoding, so the cost is the copy.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};

use crate::flv::{self, Tag};

#[derive(Clone, Debug)]
pub struct Hls {
    /// `index.m3u8` and its segments go here.
    pub dir: PathBuf,
    pub segment_seconds: u32,
    /// Low-latency HLS: fMP4 parts of a third of a second, packaged by [`crate::llhls`].
    pub low_latency: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Outputs {
    pub hls: Option<Hls>,
    pub mp4: Option<PathBuf>,
}

/// What a finished remux wrote.
#[derive(Clone, Copy, Debug)]
pub struct Finished {
    pub duration_ms: u64,
    pub size_bytes: u64,
}

pub struct Remux {
    child: Child,
    stdin: Option<ChildStdin>,
    mp4: Option<PathBuf>,
    first_ms: Option<u32>,
    last_ms: u32,
    stderr: tokio::task::JoinHandle<String>,
    /// Low-latency HLS: reads FFmpeg's output until it ends.
    packager: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Remux {
    pub async fn start(ffmpeg: &Path, outputs: &Outputs) -> anyhow::Result<Self> {
        anyhow::ensure!(
            outputs.hls.is_some() || outputs.mp4.is_some(),
            "a remux needs an output"
        );
        let mut cmd = Command::new(ffmpeg);
        cmd.args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-f",
            "flv",
            "-i",
            "pipe:0",
        ]);
        let mut packager = None;
        if let Some(hls) = &outputs.hls {
            tokio::fs::create_dir_all(&hls.dir).await?;
            cmd.args(["-map", "0:v?", "-map", "0:a?", "-c", "copy"]);
            if hls.low_latency {
                // One fragment per part, and one at every keyframe so segments can start there.
                cmd.args(["-f", "mp4", "-movflags"])
                    .arg("+frag_keyframe+empty_moov+default_base_moof")
                    .args(["-frag_duration", &crate::llhls::PART_MICROS.to_string()])
                    .arg("pipe:1");
                packager = Some(crate::llhls::Packager::new(&hls.dir, hls.segment_seconds));
            } else {
                cmd.args(["-f", "hls"])
                    .args(["-hls_time", &hls.segment_seconds.max(1).to_string()])
                    .args(["-hls_list_size", "10"])
                    .args([
                        "-hls_flags",
                        "delete_segments+independent_segments+temp_file",
                    ])
                    .arg("-hls_segment_filename")
                    .arg(hls.dir.join("seg%05d.ts"))
                    .arg(hls.dir.join("index.m3u8"));
            }
        }
        if let Some(mp4) = &outputs.mp4 {
            if let Some(dir) = mp4.parent() {
                tokio::fs::create_dir_all(dir).await?;
            }
            // Fragmented: a killed process still leaves a playable file up to the last fragment.
            cmd.args(["-map", "0:v?", "-map", "0:a?", "-c", "copy", "-f", "mp4"])
                .args(["-movflags", "+frag_keyframe+empty_moov+default_base_moof"])
                .arg(mp4);
        }
        cmd.stdin(Stdio::piped())
            .stdout(if packager.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .with_context(|| format!("starting {}", ffmpeg.display()))?;
        let stdin = child.stdin.take();
        let packager = match (packager, child.stdout.take()) {
            (Some(p), Some(out)) => Some(tokio::spawn(p.run(out))),
            _ => None,
        };
        let mut err = child.stderr.take().expect("stderr is piped");
        let stderr = tokio::spawn(async move {
            let mut s = String::new();
            let _ = err.read_to_string(&mut s).await;
            s
        });
        let mut this = Self {
            child,
            stdin,
            mp4: outputs.mp4.clone(),
            first_ms: None,
            last_ms: 0,
            stderr,
            packager,
        };
        this.write(&flv::HEADER).await?;
        Ok(this)
    }

    async fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("remuxer input closed")?;
        stdin
            .write_all(bytes)
            .await
            .context("the remuxer (ffmpeg) stopped taking input")
    }

    /// RTMP audio/video message bodies are FLV tag bodies already.
    pub async fn tag(&mut self, tag: &Tag) -> anyhow::Result<()> {
        anyhow::ensure!(tag.data.len() < 1 << 24, "RTMP message too large");
        let ts = tag.timestamp_ms;
        // Sequence headers come at time 0; the stream's span is measured from media after them.
        if ts > 0 || self.first_ms.is_some() {
            self.first_ms.get_or_insert(ts);
            self.last_ms = self.last_ms.max(ts);
        }
        self.write(&tag.encode()).await
    }

    pub async fn finish(mut self) -> anyhow::Result<Finished> {
        // EOF on stdin: ffmpeg writes the last segment, ENDLIST and the last fragment.
        drop(self.stdin.take());
        let status = match tokio::time::timeout(Duration::from_secs(15), self.child.wait()).await {
            Ok(s) => s?,
            Err(_) => {
                self.child.kill().await.ok();
                self.child.wait().await?
            }
        };
        if !status.success() {
            let err = (&mut self.stderr).await.unwrap_or_default();
            tracing::warn!(%status, stderr = %err.trim(), "remuxer exited with an error");
        }
        if let Some(p) = self.packager.take() {
            match p.await {
                Ok(Err(e)) => {
                    tracing::warn!(error = %format!("{e:#}"), "low-latency HLS packaging failed")
                }
                Err(e) => tracing::warn!(error = %e, "low-latency HLS packaging failed"),
                Ok(Ok(())) => {}
            }
        }
        let size_bytes = match &self.mp4 {
            Some(p) => tokio::fs::metadata(p).await.map(|m| m.len()).unwrap_or(0),
            None => 0,
        };
        Ok(Finished {
            duration_ms: u64::from(self.last_ms - self.first_ms.unwrap_or(self.last_ms)),
            size_bytes,
        })
    }
}

/// A still from the middle of the first seconds, for the library; None when there is no video.
pub async fn poster(ffmpeg: &Path, recording: &Path, duration_ms: u64) -> Option<PathBuf> {
    let out = recording.with_extension("jpg");
    let at = (duration_ms / 2).min(2_000) as f64 / 1000.0;
    let status = Command::new(ffmpeg)
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-y",
            "-ss",
            &format!("{at:.3}"),
            "-i",
        ])
        .arg(recording)
        .args(["-frames:v", "1", "-vf", "scale=640:-2"])
        .arg(&out)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .await
        .ok()?;
    (status.success() && out.exists()).then_some(out)
}
