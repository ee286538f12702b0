//! The show's one encoder: FFmpeg (x264 + AAC, through ffmpeg-sidecar) reading composed frames
//! on stdin and the mixed audio over a loopback socket, writing FLV whose tags feed every output.

use std::io::{BufRead as _, BufReader, Write as _};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;

use crate::flv::{self, Channel};

#[derive(Clone, Debug)]
pub struct Settings {
    pub ffmpeg: PathBuf,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_kbps: u32,
    pub audio_kbps: u32,
    /// x264's speed/quality preset.
    pub preset: String,
}

/// The show's clock across encoder restarts: a new encoder's timestamps continue after the
/// last one's, so no output ever sees time run backwards.
#[derive(Debug, Default)]
pub struct Clock {
    offset: AtomicU32,
    last: AtomicU32,
}

impl Clock {
    /// The last media time sent to the outputs, in milliseconds.
    pub fn last_ms(&self) -> u32 {
        self.last.load(Ordering::Relaxed)
    }

    /// After an encoder ends (finished or crashed): its successor starts a frame later.
    pub fn resume(&self) {
        self.offset.store(self.last_ms() + 40, Ordering::Relaxed);
    }
}

/// An encoder that takes no frame for this long is stuck, and is replaced.
const STALL: Duration = Duration::from_secs(5);
/// Audio sent ahead of the first frame. FFmpeg reads PCM in 1024-sample packets and will not
/// take the next video frame until it has audio up to that frame's time; without a lead the
/// two pipes can wait on each other. Two frames (67 ms at 30 fps) of lead is well inside
/// lip-sync tolerance for late audio.
const AUDIO_LEAD_FRAMES: usize = 2;

pub struct Encoder {
    video: Option<SyncSender<Vec<u8>>>,
    audio: Option<SyncSender<Vec<u8>>>,
    pool: Mutex<Receiver<Vec<u8>>>,
    child: FfmpegChild,
    reader: Option<JoinHandle<()>>,
    pub pid: u32,
}

impl Encoder {
    pub fn start(s: &Settings, channel: Arc<Channel>, clock: Arc<Clock>) -> anyhow::Result<Self> {
        let audio_in = TcpListener::bind(("127.0.0.1", 0)).context("binding the audio socket")?;
        let audio_port = audio_in.local_addr()?.port();
        let gop = (s.fps * 2).to_string();
        let mut cmd = FfmpegCommand::new_with_path(&s.ffmpeg);
        cmd.hide_banner()
            .args(["-loglevel", "error", "-nostats"])
            // Raw inputs need no probing; probing one would stall the other (FFmpeg opens
            // them in turn), and the compositor would wait on a pipe nobody reads.
            .args(["-probesize", "32", "-analyzeduration", "0"])
            .args(["-f", "rawvideo", "-pix_fmt", "yuv420p"])
            .args(["-video_size", &format!("{}x{}", s.width, s.height)])
            .args(["-framerate", &s.fps.to_string(), "-i", "pipe:0"])
            .args(["-probesize", "32", "-analyzeduration", "0"])
            .args(["-f", "s16le", "-ar", "48000", "-ac", "2"])
            .args(["-i", &format!("tcp://127.0.0.1:{audio_port}")])
            .args(["-map", "0:v", "-map", "1:a"])
            .args([
                "-c:v",
                "libx264",
                "-preset",
                &s.preset,
                "-profile:v",
                "high",
            ])
            .args(["-pix_fmt", "yuv420p", "-b:v", &format!("{}k", s.video_kbps)])
            .args(["-maxrate", &format!("{}k", s.video_kbps)])
            .args(["-bufsize", &format!("{}k", s.video_kbps * 2)])
            // A keyframe every two seconds, as YouTube, Facebook and Twitch ask for.
            .args(["-g", &gop, "-keyint_min", &gop, "-sc_threshold", "0"])
            .args(["-c:a", "aac", "-b:a", &format!("{}k", s.audio_kbps)])
            .args(["-f", "flv", "-flvflags", "no_duration_filesize", "pipe:1"]);
        let mut child = cmd.spawn().context("starting the encoder (ffmpeg)")?;
        let pid = child.as_inner().id();
        let mut stdin = child.take_stdin().context("encoder stdin")?;
        super::input::widen_pipe(&stdin);
        let stdout = child.take_stdout().context("encoder stdout")?;
        if let Some(err) = child.take_stderr() {
            std::thread::spawn(move || {
                for line in BufReader::new(err).lines().map_while(Result::ok) {
                    tracing::warn!("encoder: {line}");
                }
            });
        }
        // Two frames in flight: enough to keep composing and encoding in parallel.
        let (video, frames) = sync_channel::<Vec<u8>>(2);
        let (give_back, pool) = sync_channel::<Vec<u8>>(4);
        std::thread::spawn(move || {
            for buf in frames {
                if stdin.write_all(&buf).is_err() {
                    return;
                }
                let _ = give_back.try_send(buf);
            }
        });
        // Deep enough to cover FFmpeg reading video while it opens the audio input.
        let (audio, chunks) = sync_channel::<Vec<u8>>(64);
        let lead = 48_000 * 2 * 2 * AUDIO_LEAD_FRAMES / s.fps.max(1) as usize;
        let _ = audio.try_send(vec![0; lead & !3]);
        std::thread::spawn(move || {
            let Some(mut sock) = accept(&audio_in, Duration::from_secs(10)) else {
                tracing::error!("the encoder never opened its audio input");
                return;
            };
            for chunk in chunks {
                if sock.write_all(&chunk).is_err() {
                    return;
                }
            }
        });
        let reader = std::thread::spawn(move || {
            let offset = clock.offset.load(Ordering::Relaxed);
            let result = flv::read_tags(stdout, |mut tag| {
                tag.timestamp_ms = tag.timestamp_ms.wrapping_add(offset);
                clock.last.fetch_max(tag.timestamp_ms, Ordering::Relaxed);
                channel.push(tag);
            });
            if let Err(e) = result {
                tracing::warn!(error = %e, "reading the encoder's output failed");
            }
        });
        Ok(Self {
            video: Some(video),
            audio: Some(audio),
            pool: Mutex::new(pool),
            child,
            reader: Some(reader),
            pid,
        })
    }

    /// A frame buffer to paint into: a used one when there is one, so frames cost no
    /// allocation.
    pub fn buffer(&self, bytes: usize) -> Vec<u8> {
        match self.pool.lock().expect("poisoned").try_recv() {
            Ok(b) if b.len() == bytes => b,
            _ => vec![0; bytes],
        }
    }

    /// Queues one frame and its audio; waits while the encoder is two frames behind, and fails
    /// when it has stopped or has taken nothing for `STALL`.
    pub fn send(&self, frame: Vec<u8>, audio: Vec<u8>) -> anyhow::Result<()> {
        let gone = || anyhow::anyhow!("the encoder stopped");
        let (Some(v), Some(a)) = (&self.video, &self.audio) else {
            return Err(gone());
        };
        a.try_send(audio)
            .map_err(|_| anyhow::anyhow!("the encoder is not reading audio"))?;
        let since = Instant::now();
        let mut frame = frame;
        loop {
            match v.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Disconnected(_)) => return Err(gone()),
                Err(TrySendError::Full(f)) if since.elapsed() < STALL => {
                    frame = f;
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(TrySendError::Full(_)) => anyhow::bail!("the encoder stalled"),
            }
        }
    }

    /// Ends the input and waits for FFmpeg to flush its last frames to every output.
    pub fn finish(mut self, clock: &Clock) {
        self.video.take();
        self.audio.take();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match self.child.as_inner_mut().try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    tracing::warn!("the encoder did not finish in time; killing it");
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
        clock.resume();
    }

    pub fn running(&mut self) -> bool {
        matches!(self.child.as_inner_mut().try_wait(), Ok(None))
    }
}

impl Drop for Encoder {
    fn drop(&mut self) {
        if self.video.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn accept(listener: &TcpListener, within: Duration) -> Option<std::net::TcpStream> {
    listener.set_nonblocking(true).ok()?;
    let until = Instant::now() + within;
    while Instant::now() < until {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).ok()?;
                return Some(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => return None,
        }
    }
    None
}
