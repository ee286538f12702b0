//! Media for bots: FFmpeg (through ffmpeg-sidecar) paints a moving test pattern with a label
//! and plays a tone, or re-encodes an OBS feed, to VP8 and Opus in real time; frames go to
//! every bot.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, Mutex};

use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;
use tokio::sync::broadcast;

/// One encoded frame, timestamped in its RTP clock (90 kHz video, 48 kHz audio).
#[derive(Clone, Debug)]
pub struct Frame {
    pub audio: bool,
    pub rtp_time: u64,
    pub data: Arc<[u8]>,
}

/// The encoders, running until dropped; subscribe for their frames.
pub struct Synthetic {
    frames: broadcast::Sender<Frame>,
    children: Mutex<Vec<FfmpegChild>>,
}

/// VP8 for a live call (a keyframe every 2 s, no alt-ref frames, which add delay) in IVF, as
/// `read_ivf` takes it.
const VP8_IVF: [&str; 12] = [
    "-c:v",
    "libvpx",
    "-deadline",
    "realtime",
    "-cpu-used",
    "8",
    "-g",
    "60",
    "-auto-alt-ref",
    "0",
    "-f",
    "ivf",
];

/// Opus in 20 ms frames, in Ogg pages flushed every frame rather than every second (the
/// muxer's default), as `read_ogg_opus` takes them.
const OPUS_OGG: [&str; 10] = [
    "-c:a",
    "libopus",
    "-frame_duration",
    "20",
    "-application",
    "lowdelay",
    "-page_duration",
    "20000",
    "-f",
    "ogg",
];

const FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

impl Synthetic {
    /// Starts encoding at once; `label` is drawn on the picture when a font is installed.
    pub fn start(ffmpeg: &Path, label: &str) -> std::io::Result<Arc<Self>> {
        let (frames, _) = broadcast::channel(256);
        let safe: String = label
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .collect();
        let mut video_filter = "testsrc2=size=640x360:rate=30".to_owned();
        if Path::new(FONT).exists() {
            video_filter.push_str(&format!(
                ",drawtext=fontfile={FONT}:text='{safe}':fontsize=40:fontcolor=white:box=1:boxcolor=black@0.5:x=24:y=24"
            ));
        }
        let mut video = FfmpegCommand::new_with_path(ffmpeg);
        video
            .hide_banner()
            .args([
                "-loglevel",
                "error",
                "-re",
                "-f",
                "lavfi",
                "-i",
                &video_filter,
            ])
            .args(["-b:v", "400k"])
            .args(VP8_IVF)
            .arg("pipe:1");
        let mut audio = FfmpegCommand::new_with_path(ffmpeg);
        audio
            .hide_banner()
            .args(["-loglevel", "error", "-re", "-f", "lavfi"])
            .args(["-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-b:a", "32k"])
            .args(OPUS_OGG)
            .arg("pipe:1");
        let mut v = video.spawn()?;
        let mut a = audio.spawn()?;
        let (vout, aout) = (v.take_stdout(), a.take_stdout());
        let tx = frames.clone();
        if let Some(out) = vout {
            std::thread::spawn(move || read_ivf(out, &tx));
        }
        let tx = frames.clone();
        if let Some(out) = aout {
            std::thread::spawn(move || read_ogg_opus(out, &tx));
        }
        Ok(Arc::new(Self {
            frames,
            children: Mutex::new(vec![v, a]),
        }))
    }

    /// Re-encodes an FLV stream written to the returned stdin (an OBS ingest: H.264 and AAC)
    /// into VP8 and Opus frames, at most 720p. FFmpeg writes the video to its stdout and the
    /// audio to a loopback TCP connection, so one decoder serves both. A stream without audio
    /// (OBS with no audio source) sends silence: the studio still gets a microphone track, and
    /// FFmpeg would refuse an output mapped from nothing.
    pub fn transcode(
        ffmpeg: &Path,
        has_audio: bool,
    ) -> std::io::Result<(Arc<Self>, std::process::ChildStdin)> {
        let (frames, _) = broadcast::channel(256);
        let audio = std::net::TcpListener::bind(("127.0.0.1", 0))?;
        let port = audio.local_addr()?.port();
        let mut cmd = FfmpegCommand::new_with_path(ffmpeg);
        cmd.hide_banner().args(["-loglevel", "error"]);
        if has_audio {
            cmd.args(["-fflags", "nobuffer"]);
        }
        cmd.args(["-f", "flv", "-i", "pipe:0"]);
        if !has_audio {
            // Paced like the feed. (With `nobuffer` on the feed, FFmpeg 5.1 never reads its
            // video beside a generated input: it is left off here.)
            cmd.args(["-re", "-f", "lavfi", "-i", "anullsrc=r=48000:cl=stereo"]);
        }
        cmd.args(["-map", "0:v:0", "-vf"])
            .arg("scale=w=1280:h=720:force_original_aspect_ratio=decrease:force_divisible_by=2")
            .args(["-b:v", "1500k"])
            .args(VP8_IVF)
            .arg("pipe:1")
            .args(["-map", if has_audio { "0:a:0" } else { "1:a:0" }])
            .args(["-ar", "48000", "-ac", "2"])
            .args(["-b:a", "64k"])
            .args(OPUS_OGG)
            .arg(format!("tcp://127.0.0.1:{port}"));
        let mut child = cmd.spawn()?;
        let stdin = child
            .take_stdin()
            .ok_or_else(|| std::io::Error::other("FFmpeg has no stdin"))?;
        if let Some(out) = child.take_stdout() {
            let tx = frames.clone();
            std::thread::spawn(move || read_ivf(out, &tx));
        }
        let tx = frames.clone();
        std::thread::spawn(move || {
            // FFmpeg connects once its output starts; nothing else knows the port.
            if let Ok((conn, _)) = audio.accept() {
                read_ogg_opus(conn, &tx);
            }
        });
        Ok((
            Arc::new(Self {
                frames,
                children: Mutex::new(vec![child]),
            }),
            stdin,
        ))
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Frame> {
        self.frames.subscribe()
    }
}

impl Drop for Synthetic {
    fn drop(&mut self) {
        for c in self.children.lock().expect("poisoned").iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// IVF: a 32-byte file header (with the timebase), then per frame 4 bytes of size, 8 of pts.
fn read_ivf(mut r: impl Read, tx: &broadcast::Sender<Frame>) {
    let mut header = [0u8; 32];
    if r.read_exact(&mut header).is_err() || &header[0..4] != b"DKIF" {
        return;
    }
    let rate = u64::from(u32::from_le_bytes(
        header[16..20].try_into().expect("4 bytes"),
    ));
    let scale = u64::from(u32::from_le_bytes(
        header[20..24].try_into().expect("4 bytes"),
    ));
    if rate == 0 {
        return;
    }
    loop {
        let mut fh = [0u8; 12];
        if r.read_exact(&mut fh).is_err() {
            return;
        }
        let size = u32::from_le_bytes(fh[0..4].try_into().expect("4 bytes")) as usize;
        let pts = u64::from_le_bytes(fh[4..12].try_into().expect("8 bytes"));
        let mut data = vec![0u8; size];
        if r.read_exact(&mut data).is_err() {
            return;
        }
        let _ = tx.send(Frame {
            audio: false,
            rtp_time: pts * scale * 90_000 / rate,
            data: data.into(),
        });
    }
}

fn read_ogg_opus(r: impl Read, tx: &broadcast::Sender<Frame>) {
    let mut reader = ogg::PacketReader::new(std::io::BufReader::new(ReadOnly(r)));
    let mut samples = 0u64;
    while let Ok(Some(p)) = reader.read_packet() {
        // The first two packets are the OpusHead and OpusTags headers.
        if p.data.starts_with(b"OpusHead") || p.data.starts_with(b"OpusTags") {
            continue;
        }
        let _ = tx.send(Frame {
            audio: true,
            rtp_time: samples,
            data: p.data.into(),
        });
        samples += 960;
    }
}

/// The ogg reader wants `Seek`, which a pipe is not; it only seeks when asked to.
struct ReadOnly<R>(R);

impl<R: Read> Read for ReadOnly<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.read(buf)
    }
}

impl<R> std::io::Seek for ReadOnly<R> {
    fn seek(&mut self, _: std::io::SeekFrom) -> std::io::Result<u64> {
        Err(std::io::Error::other("a pipe cannot seek"))
    }
}
