//! One source's plain RTP decoded: video by FFmpeg (through ffmpeg-sidecar) to I420 at its tile's
//! size, only the newest picture kept; Opus in-process to 48 kHz stereo PCM in a short buffer.

use std::collections::VecDeque;
use std::io::{BufRead as _, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use ffmpeg_sidecar::child::FfmpegChild;
use ffmpeg_sidecar::command::FfmpegCommand;

use super::canvas::Frame;
use super::paint::Feed;

pub const SAMPLE_RATE: usize = 48_000;
pub const CHANNELS: usize = 2;
/// Audio beyond this is an input running ahead of the show: the oldest is dropped, so no input
/// ever drifts out of sync by more than this.
const MAX_BUFFERED: usize = SAMPLE_RATE * CHANNELS / 5;
/// A picture older than this means the input is lost: its tile shows a placeholder.
pub const STALE: Duration = Duration::from_millis(1500);
/// A tile must keep a new size this long before its decoder is replaced: a burst of joins or
/// layouts clicked through starts one decoder (FFmpeg's start and probe cost more CPU than a
/// second of scaling), not one per step.
const SETTLE: Duration = Duration::from_secs(1);

pub use castyard_proto::status::{InputPorts, InputRequest, InputStatus, VideoCodec};

/// The newest decoded picture, and which decoder made it.
struct Shown {
    seq: u64,
    at: Instant,
    frame: Arc<Frame>,
    decoder: u64,
}

type Picture = Arc<Mutex<Option<Shown>>>;

pub struct Input {
    pub request: InputRequest,
    pub ports: InputPorts,
    picture: Picture,
    video: Option<Video>,
    audio: Arc<Mutex<VecDeque<i16>>>,
    audio_samples: Arc<AtomicU64>,
    keyframe_wanted: Arc<AtomicBool>,
    keyframe_requests: AtomicU64,
    stop: Arc<AtomicBool>,
}

/// One video decoder process (restarted by its supervisor while it lives) at one picture size.
struct Decoder {
    id: u64,
    size: (u32, u32),
    /// Its own loopback RTP port, where the relay copies the source's packets.
    port: u16,
    sdp: PathBuf,
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<FfmpegChild>>>,
}

impl Decoder {
    fn retire(&self, targets: &RwLock<Vec<u16>>) {
        targets
            .write()
            .expect("poisoned")
            .retain(|p| *p != self.port);
        self.stop.store(true, Ordering::SeqCst);
        for c in self.children.lock().expect("poisoned").iter_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_file(&self.sdp);
    }
}

/// A source's video. Its public ports belong to us, not to FFmpeg, and every packet is copied
/// to each decoder: so a decoder for a new tile size starts beside the old one, and the old one
/// stops only once the new one has decoded a picture (the tile never blanks).
struct Video {
    ffmpeg: PathBuf,
    dir: PathBuf,
    key: String,
    safe: String,
    codec: VideoCodec,
    payload_type: u8,
    /// The decoders' ports, for the relay.
    targets: Arc<RwLock<Vec<u16>>>,
    /// Oldest first: the one showing, then at most one waiting for its first picture.
    decoders: Arc<Mutex<Vec<Decoder>>>,
    next_id: AtomicU64,
    /// A size asked for but not yet started, and since when.
    settling: Mutex<Option<((u32, u32), Instant)>>,
    resizes: AtomicU64,
}

/// An even UDP port and its odd neighbour (RTCP), as RTP/AVP expects, bound.
fn rtp_pair(ip: IpAddr) -> anyhow::Result<(UdpSocket, UdpSocket)> {
    for _ in 0..64 {
        let a = UdpSocket::bind((ip, 0))?;
        let p = a.local_addr()?.port();
        if p % 2 == 0
            && p < u16::MAX
            && let Ok(b) = UdpSocket::bind((ip, p + 1))
        {
            return Ok((a, b));
        }
    }
    anyhow::bail!("no free pair of UDP ports")
}

/// A free pair for FFmpeg to bind (it binds the port its SDP names).
fn rtp_port() -> anyhow::Result<u16> {
    Ok(rtp_pair(Ipv4Addr::LOCALHOST.into())?.0.local_addr()?.port())
}

/// Copies what arrives on `public` to the same port offset above each decoder's port, until
/// `stop`; what FFmpeg sends back (receiver reports) is not needed and not read.
fn relay(public: UdpSocket, offset: u16, targets: Arc<RwLock<Vec<u16>>>, stop: Arc<AtomicBool>) {
    let out = match UdpSocket::bind(("127.0.0.1", 0)) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot open the decoder relay's socket");
            return;
        }
    };
    // The timeout is how a removed input's relay notices that it should stop.
    let _ = public.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 65_536];
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = public.recv(&mut buf) else {
            continue;
        };
        for port in targets.read().expect("poisoned").iter() {
            let _ = out.send_to(&buf[..n], ("127.0.0.1", port + offset));
        }
    }
}

/// The SDP FFmpeg reads to decode a video stream arriving at `port`.
fn video_sdp(port: u16, pt: u8, codec: VideoCodec) -> String {
    let (rtpmap, fmtp) = match codec {
        VideoCodec::Vp8 => ("VP8/90000", String::new()),
        VideoCodec::H264 => (
            "H264/90000",
            format!("a=fmtp:{pt} packetization-mode=1\r\n"),
        ),
    };
    // The rtcp-fb line declares what we would answer; FFmpeg sends no feedback for an SDP input,
    // so the input asks the SFU for keyframes itself (see `DAMAGE`).
    format!(
        "v=0\r\no=- 0 0 IN IP4 127.0.0.1\r\ns=castyard\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
         m=video {port} RTP/AVP {pt}\r\na=rtpmap:{pt} {rtpmap}\r\n{fmtp}a=rtcp-fb:{pt} nack pli\r\n"
    )
}

impl Input {
    /// Starts the decoders; `dir` holds their SDP files, `size` is the decoded picture size
    /// (letterboxed, so any camera shape fits).
    pub fn start(
        ffmpeg: &Path,
        dir: &Path,
        key: &str,
        request: InputRequest,
        size: (u32, u32),
        bind: IpAddr,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let stop = Arc::new(AtomicBool::new(false));
        let picture: Picture = Arc::default();
        let audio: Arc<Mutex<VecDeque<i16>>> = Arc::default();
        let audio_samples: Arc<AtomicU64> = Arc::default();
        let keyframe_wanted: Arc<AtomicBool> = Arc::default();
        let safe: String = key
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let mut ports = InputPorts {
            video_port: None,
            audio_port: None,
        };
        let mut video = None;
        if let Some(codec) = request.video {
            let (rtp, rtcp) = rtp_pair(bind)?;
            ports.video_port = Some(rtp.local_addr()?.port());
            let v = Video {
                ffmpeg: ffmpeg.into(),
                dir: dir.into(),
                key: key.into(),
                safe: safe.clone(),
                codec,
                payload_type: request.video_payload_type,
                targets: Arc::default(),
                decoders: Arc::default(),
                next_id: AtomicU64::new(1),
                settling: Mutex::new(None),
                resizes: AtomicU64::new(0),
            };
            for (socket, offset) in [(rtp, 0), (rtcp, 1)] {
                let (targets, stop) = (v.targets.clone(), stop.clone());
                std::thread::Builder::new()
                    .name("rtp-relay".into())
                    .spawn(move || relay(socket, offset, targets, stop))?;
            }
            v.start_decoder(size, &picture, &keyframe_wanted)?;
            video = Some(v);
        }
        if request.audio {
            let (rtp, rtcp) = rtp_pair(bind)?;
            ports.audio_port = Some(rtp.local_addr()?.port());
            let (audio, counted, stop) = (audio.clone(), audio_samples.clone(), stop.clone());
            let (pt, key) = (request.audio_payload_type, key.to_owned());
            std::thread::Builder::new()
                .name("opus-decode".into())
                .spawn(move || {
                    // Sender reports are not needed here; the socket is held so that the SFU's
                    // are not answered with "port unreachable".
                    let _rtcp = rtcp;
                    receive_opus(&rtp, pt, &audio, &counted, &stop, &key);
                })?;
        }
        Ok(Self {
            request,
            ports,
            picture,
            video,
            audio,
            audio_samples,
            keyframe_wanted,
            keyframe_requests: AtomicU64::new(0),
            stop,
        })
    }

    /// Whether the video decoder needed a keyframe since the last call (it started, or lost
    /// packets): the SFU is asked for one on its behalf.
    pub fn take_keyframe_wanted(&self) -> bool {
        let wanted = self.keyframe_wanted.swap(false, Ordering::SeqCst);
        if wanted {
            self.keyframe_requests.fetch_add(1, Ordering::Relaxed);
        }
        wanted
    }

    pub fn status(&self) -> InputStatus {
        let picture = self.picture.lock().expect("poisoned");
        InputStatus {
            video_frames: picture.as_ref().map_or(0, |p| p.seq),
            audio_samples: self.audio_samples.load(Ordering::Relaxed),
            keyframe_requests: self.keyframe_requests.load(Ordering::Relaxed),
            live: picture.as_ref().is_some_and(|p| p.at.elapsed() < STALE),
            decode_size: picture.as_ref().map(|p| [p.frame.width, p.frame.height]),
            decoders: self
                .video
                .as_ref()
                .map_or(0, |v| v.decoders.lock().expect("poisoned").len()),
            resizes: self
                .video
                .as_ref()
                .map_or(0, |v| v.resizes.load(Ordering::Relaxed)),
        }
    }

    pub fn feed(&self) -> Feed {
        match &*self.picture.lock().expect("poisoned") {
            Some(p) if p.at.elapsed() < STALE => Feed::Live {
                seq: p.seq,
                frame: p.frame.clone(),
            },
            _ => Feed::Waiting,
        }
    }

    /// Called every frame with the size the source's tile shows it at: once the size has held
    /// for [`SETTLE`], a decoder for it replaces the current one, so pictures arrive ready to
    /// copy instead of being scaled every frame.
    pub fn want_size(&self, size: (u32, u32)) {
        let Some(v) = &self.video else { return };
        let newest = v.decoders.lock().expect("poisoned").last().map(|d| d.size);
        let mut settling = v.settling.lock().expect("poisoned");
        if newest == Some(size) {
            *settling = None;
            return;
        }
        match *settling {
            Some((want, since)) if want == size => {
                if since.elapsed() < SETTLE {
                    return;
                }
            }
            _ => {
                *settling = Some((size, Instant::now()));
                return;
            }
        }
        *settling = None;
        drop(settling);
        let showing = self
            .picture
            .lock()
            .expect("poisoned")
            .as_ref()
            .map(|p| p.decoder);
        if let Err(e) = v.resize(size, showing, &self.picture, &self.keyframe_wanted) {
            tracing::warn!(input = %v.key, error = %format!("{e:#}"), "cannot start a decoder at the tile's size; its pictures are scaled");
        }
    }

    /// Takes up to `out.len()` interleaved samples, adding them into `out` at `gain`; an input
    /// with too little audio contributes what it has (the rest is silence).
    pub fn mix_into(&self, out: &mut [f32], gain: f32) {
        let mut q = self.audio.lock().expect("poisoned");
        let n = out.len().min(q.len()) & !1;
        for (o, s) in out.iter_mut().zip(q.drain(..n)) {
            *o += f32::from(s) * gain;
        }
    }

    /// Drops buffered audio (a muted or off-stage input must not play its backlog later).
    pub fn discard_audio(&self, keep: usize) {
        let mut q = self.audio.lock().expect("poisoned");
        let n = q.len().saturating_sub(keep) & !1;
        q.drain(..n);
    }
}

impl Drop for Input {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(v) = &self.video {
            for d in v.decoders.lock().expect("poisoned").drain(..) {
                d.retire(&v.targets);
            }
        }
    }
}

/// Opus from browsers needs no FFmpeg: each RTP packet is decoded here (opus-rs, a Rust port
/// of libopus) into the input's buffer, lost ones rebuilt from the next packet's in-band FEC or
/// concealed, until `stop`.
fn receive_opus(
    socket: &UdpSocket,
    payload_type: u8,
    audio: &Mutex<VecDeque<i16>>,
    counted: &AtomicU64,
    stop: &AtomicBool,
    key: &str,
) {
    use webrtc_util::marshal::Unmarshal as _;
    /// At most this many lost packets are filled in; a longer gap is silence, not a guess.
    const CONCEAL: u16 = 5;
    /// 120 ms, Opus's longest packet.
    const LONGEST: usize = SAMPLE_RATE * 120 / 1000;
    let new_decoder = || opus_rs::OpusDecoder::new(SAMPLE_RATE as i32, CHANNELS);
    let mut decoder = match new_decoder() {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(input = %key, error = %e, "cannot create an Opus decoder");
            return;
        }
    };
    let _ = socket.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = vec![0u8; 65_536];
    let mut pcm = vec![0f32; LONGEST * CHANNELS];
    let mut sender: Option<(u32, u16)> = None;
    // Concealment fills one packet's length: the last one's (20 ms until one is seen).
    let mut last = SAMPLE_RATE / 50;
    let push = |pcm: &[f32]| {
        counted.fetch_add(pcm.len() as u64, Ordering::Relaxed);
        let mut q = audio.lock().expect("poisoned");
        q.extend(
            pcm.iter()
                .map(|&x| (x * 32767.0).clamp(-32768.0, 32767.0) as i16),
        );
        if q.len() > MAX_BUFFERED {
            // Down to half the bound, keeping stereo pairs aligned.
            let excess = (q.len() - MAX_BUFFERED / 2) & !1;
            q.drain(..excess);
        }
    };
    while !stop.load(Ordering::Relaxed) {
        let Ok(n) = socket.recv(&mut buf) else {
            continue;
        };
        let Ok(packet) = rtp::packet::Packet::unmarshal(&mut &buf[..n]) else {
            tracing::debug!(input = %key, "not an RTP packet; ignored");
            continue;
        };
        let h = &packet.header;
        if h.payload_type != payload_type {
            continue;
        }
        let data = &packet.payload[..];
        // The decoder is a port of C and decodes what strangers send: a panic in it costs this
        // packet and a fresh decoder, never the input's sound for the rest of the show.
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let mut out = Vec::new();
            let lost = match sender {
                // A new sender (the SFU switched source or restarted) starts a new stream.
                Some((ssrc, _)) if ssrc != h.ssrc => {
                    decoder = new_decoder().expect("it was created before");
                    0
                }
                Some((_, next)) => {
                    let ahead = h.sequence_number.wrapping_sub(next);
                    if ahead >= 0x8000 {
                        // Late or repeated: its time was already played or filled in.
                        return None;
                    }
                    ahead.min(CONCEAL)
                }
                None => 0,
            };
            for i in 0..lost {
                // The frame just before this packet may be in its FEC; older ones are guessed.
                let r = if i + 1 == lost {
                    decoder.decode_fec(data, last, &mut pcm)
                } else {
                    decoder.decode(&[], last, &mut pcm)
                };
                if let Ok(samples) = r {
                    out.extend_from_slice(&pcm[..samples * CHANNELS]);
                }
            }
            match decoder.decode(data, LONGEST, &mut pcm) {
                Ok(samples) => {
                    last = samples;
                    out.extend_from_slice(&pcm[..samples * CHANNELS]);
                }
                Err(e) => tracing::debug!(input = %key, error = %e, "an undecodable Opus packet"),
            }
            Some(out)
        }));
        match decoded {
            Ok(Some(out)) => {
                sender = Some((h.ssrc, h.sequence_number.wrapping_add(1)));
                push(&out);
            }
            Ok(None) => {}
            Err(_) => {
                tracing::warn!(input = %key, "the Opus decoder failed on a packet; starting afresh");
                match new_decoder() {
                    Ok(d) => decoder = d,
                    Err(_) => return,
                }
                sender = None;
            }
        }
    }
}

impl Video {
    /// Starts a decoder at `size` unless the one showing (`showing`) already has it; a decoder
    /// still waiting for its first picture is dropped first, so there are never more than two.
    fn resize(
        &self,
        size: (u32, u32),
        showing: Option<u64>,
        picture: &Picture,
        keyframe: &Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        {
            let mut all = self.decoders.lock().expect("poisoned");
            // Nothing shown yet from these: replacing them costs no picture.
            let waiting = |d: &Decoder| showing.is_none_or(|s| d.id > s);
            for d in all.iter().filter(|d| waiting(d)) {
                d.retire(&self.targets);
            }
            all.retain(|d| !waiting(d));
            if all.last().is_some_and(|d| d.size == size) {
                return Ok(());
            }
        }
        self.resizes.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(input = %self.key, ?size, "decoding at the tile's new size");
        self.start_decoder(size, picture, keyframe)
    }

    fn start_decoder(
        &self,
        size: (u32, u32),
        picture: &Picture,
        keyframe: &Arc<AtomicBool>,
    ) -> anyhow::Result<()> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let port = rtp_port()?;
        let text = video_sdp(port, self.payload_type, self.codec);
        let path = self.dir.join(format!("{}-video-{id}.sdp", self.safe));
        std::fs::write(&path, text)?;
        let (w, h) = size;
        let filter = format!(
            "scale={w}:{h}:force_original_aspect_ratio=decrease:force_divisible_by=2:flags=bilinear,\
             pad={w}:{h}:(ow-iw)/2:(oh-ih)/2,format=yuv420p"
        );
        let args = [
            "-map",
            "0:v:0",
            "-vf",
            &filter,
            "-fps_mode",
            "passthrough",
            "-f",
            "rawvideo",
            "pipe:1",
        ]
        .map(String::from)
        .to_vec();
        let (picture, decoders, targets) =
            (picture.clone(), self.decoders.clone(), self.targets.clone());
        let sink = move |r: &mut dyn Read| -> std::io::Result<()> {
            let bytes = Frame::bytes(w, h);
            // The picture this one replaces is nobody's once painted: its memory is reused
            // rather than a new one zeroed (and its pages faulted in) every frame.
            let mut spare: Option<Vec<u8>> = None;
            loop {
                let mut buf = spare
                    .take()
                    .filter(|b| b.len() == bytes)
                    .unwrap_or_else(|| vec![0u8; bytes]);
                r.read_exact(&mut buf)?;
                let frame = Frame::from_bytes(w, h, buf).expect("the size matches");
                let (first, replaced) = {
                    let mut shown = picture.lock().expect("poisoned");
                    let (seq, before) = shown.as_ref().map_or((0, 0), |s| (s.seq, s.decoder));
                    if before > id {
                        // A newer decoder took over; this one is being stopped.
                        return Ok(());
                    }
                    let replaced = shown.replace(Shown {
                        seq: seq + 1,
                        at: Instant::now(),
                        frame: Arc::new(frame),
                        decoder: id,
                    });
                    (before < id, replaced)
                };
                spare = replaced
                    .and_then(|s| Arc::try_unwrap(s.frame).ok())
                    .map(|f| f.data);
                if first {
                    // The tile shows this decoder's pictures now: older ones stop.
                    let mut all = decoders.lock().expect("poisoned");
                    for d in all.iter().filter(|d| d.id < id) {
                        d.retire(&targets);
                    }
                    all.retain(|d| d.id >= id);
                }
            }
        };
        let stop = Arc::new(AtomicBool::new(false));
        let children = Arc::new(Mutex::new(Vec::new()));
        self.decoders.lock().expect("poisoned").push(Decoder {
            id,
            size,
            port,
            sdp: path.clone(),
            stop: stop.clone(),
            children: children.clone(),
        });
        self.targets.write().expect("poisoned").push(port);
        supervise(
            &self.ffmpeg,
            &path,
            args,
            Box::new(sink),
            Shared {
                stop,
                children,
                keyframe: keyframe.clone(),
            },
            &self.key,
        );
        Ok(())
    }
}

type Sink = Box<dyn FnMut(&mut dyn Read) -> std::io::Result<()> + Send>;

/// Pipes hold 64 KiB by default, so a raw picture crosses one in many writes and reads, each
/// waking the other side. Widened to the most an unprivileged process may have (1 MiB), a
/// tile's picture crosses in one; failing that, the default does.
pub fn widen_pipe(pipe: &impl std::os::fd::AsFd) {
    if let Err(e) = rustix::pipe::fcntl_setpipe_size(pipe, 1 << 20) {
        tracing::debug!(error = %e, "cannot widen a pipe; it keeps its default size");
    }
}

/// What a decoder's supervisor shares with its input.
struct Shared {
    stop: Arc<AtomicBool>,
    children: Arc<Mutex<Vec<FfmpegChild>>>,
    /// Raised when the decoder needs a keyframe.
    keyframe: Arc<AtomicBool>,
}

/// FFmpeg's words for a picture it could not (fully) decode; it does not send RTCP feedback
/// for an SDP input, so its log is how we learn that it needs a keyframe.
const DAMAGE: [&str; 5] = [
    "missed",
    "dropping frame",
    "Error while decoding",
    "Invalid data",
    "corrupt",
];

/// Runs one decoder, restarting it (after half a second, longer the more it fails) whenever it
/// exits, until stopped.
fn supervise(
    ffmpeg: &Path,
    sdp: &Path,
    args: Vec<String>,
    mut sink: Sink,
    shared: Shared,
    key: &str,
) {
    let Shared {
        stop,
        children,
        keyframe,
    } = shared;
    let ffmpeg: PathBuf = ffmpeg.into();
    let sdp: PathBuf = sdp.into();
    let key = key.to_owned();
    std::thread::spawn(move || {
        let mut delay = Duration::from_millis(500);
        while !stop.load(Ordering::SeqCst) {
            let began = Instant::now();
            let mut cmd = FfmpegCommand::new_with_path(&ffmpeg);
            cmd.hide_banner()
                .args(["-loglevel", "warning", "-nostats"])
                .args(["-protocol_whitelist", "file,udp,rtp"])
                // The relay feeds decoders over loopback: their sockets face nothing else.
                .args(["-localaddr", "127.0.0.1"])
                .args(["-fflags", "nobuffer", "-flags", "low_delay"])
                .args(["-analyzeduration", "1000000", "-probesize", "1000000"])
                .args(["-threads", "1"])
                .arg("-i")
                .arg(sdp.to_string_lossy().as_ref())
                .args(&args);
            let mut child = match cmd.spawn() {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(input = %key, error = %e, "cannot start a decoder");
                    return;
                }
            };
            let stdout = child.take_stdout();
            if let Some(out) = &stdout {
                widen_pipe(out);
            }
            // A decoder starting mid-stream can only begin at a keyframe.
            keyframe.store(true, Ordering::SeqCst);
            if let Some(err) = child.take_stderr() {
                let key = key.clone();
                let keyframe = keyframe.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(err).lines().map_while(Result::ok) {
                        tracing::debug!(input = %key, "decoder: {line}");
                        if DAMAGE.iter().any(|d| line.contains(d)) {
                            keyframe.store(true, Ordering::SeqCst);
                        }
                    }
                });
            }
            {
                let mut all = children.lock().expect("poisoned");
                all.retain_mut(|c| !matches!(c.as_inner_mut().try_wait(), Ok(Some(_))));
                all.push(child);
                if stop.load(Ordering::SeqCst) {
                    // Stopped while this one started: it must not outlive its input.
                    for c in all.iter_mut() {
                        let _ = c.kill();
                        let _ = c.wait();
                    }
                    break;
                }
            }
            if let Some(mut out) = stdout {
                let _ = sink(&mut out);
            }
            if !stop.load(Ordering::SeqCst) {
                // A sender that said goodbye (RTCP BYE) ends FFmpeg's input; the source may come
                // back, so the decoder is restarted, less often the more it fails.
                if began.elapsed() > Duration::from_secs(10) {
                    delay = Duration::from_millis(500);
                }
                tracing::debug!(input = %key, ?delay, "decoder stopped; restarting it");
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_defaults_and_refuse_unknown_fields() {
        let r: InputRequest = serde_json::from_str(r#"{"video":"vp8","audio":true}"#).unwrap();
        assert_eq!(r.video_payload_type, 96);
        assert_eq!(r.audio_payload_type, 111);
        assert!(serde_json::from_str::<InputRequest>(r#"{"video":"av1"}"#).is_err());
        assert!(serde_json::from_str::<InputRequest>(r#"{"vidoe":"vp8"}"#).is_err());
    }

    /// One second of a 440 Hz tone as Opus packets of 20 ms (libopus, through FFmpeg).
    fn opus_packets() -> Vec<Vec<u8>> {
        let out = std::process::Command::new("ffmpeg")
            .args([
                "-v",
                "error",
                "-f",
                "lavfi",
                "-i",
                "sine=frequency=440:duration=1",
            ])
            .args([
                "-ac",
                "2",
                "-ar",
                "48000",
                "-c:a",
                "libopus",
                "-frame_duration",
                "20",
            ])
            .args(["-f", "ogg", "pipe:1"])
            .output()
            .unwrap();
        let mut reader = ogg::PacketReader::new(std::io::Cursor::new(out.stdout));
        let mut packets = Vec::new();
        while let Ok(Some(p)) = reader.read_packet() {
            if !p.data.starts_with(b"OpusHead") && !p.data.starts_with(b"OpusTags") {
                packets.push(p.data);
            }
        }
        packets
    }

    #[test]
    fn opus_over_rtp_is_decoded_with_losses_concealed_and_late_packets_dropped() {
        use webrtc_util::marshal::Marshal as _;
        let packets = opus_packets();
        assert!(packets.len() >= 50, "{}", packets.len());
        let (socket, _rtcp) = rtp_pair(Ipv4Addr::LOCALHOST.into()).unwrap();
        let port = socket.local_addr().unwrap().port();
        let audio = Mutex::new(VecDeque::new());
        let (counted, stop) = (AtomicU64::new(0), AtomicBool::new(false));
        std::thread::scope(|s| {
            s.spawn(|| receive_opus(&socket, 111, &audio, &counted, &stop, "t"));
            let out = UdpSocket::bind("127.0.0.1:0").unwrap();
            let send = |seq: u16, pt: u8, payload: &[u8]| {
                let p = rtp::packet::Packet {
                    header: rtp::header::Header {
                        version: 2,
                        payload_type: pt,
                        sequence_number: seq,
                        timestamp: u32::from(seq) * 960,
                        ssrc: 7,
                        ..Default::default()
                    },
                    payload: bytes::Bytes::copy_from_slice(payload),
                };
                out.send_to(&p.marshal().unwrap(), ("127.0.0.1", port))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(2));
            };
            for (i, data) in packets.iter().enumerate() {
                let seq = 65_530u16.wrapping_add(i as u16);
                match i {
                    // Lost: concealed when the next one arrives.
                    20 => continue,
                    // Repeated, and one arriving after its successor: both dropped.
                    30 => {
                        send(seq, 111, data);
                        send(seq, 111, data);
                    }
                    40 => {
                        send(seq.wrapping_add(1), 111, &packets[41]);
                        send(seq, 111, data);
                    }
                    41 => {}
                    _ => send(seq, 111, data),
                }
                // Another payload type and garbage change nothing.
                if i == 10 {
                    send(seq, 96, b"not opus");
                    out.send_to(b"\x01", ("127.0.0.1", port)).unwrap();
                }
            }
            std::thread::sleep(Duration::from_millis(300));
            stop.store(true, Ordering::Relaxed);
        });
        // Every packet's 20 ms of stereo once: decoded, or concealed for the lost one and for
        // the one that came after its successor.
        assert_eq!(
            counted.load(Ordering::Relaxed),
            packets.len() as u64 * 960 * 2
        );
        // The buffer keeps the newest 100-200 ms (nobody mixed it here), and it is the tone, not
        // silence: a sine at -20 dBFS or so has an RMS in the thousands.
        let pcm: Vec<i16> = audio.lock().unwrap().iter().copied().collect();
        assert!(pcm.len() >= MAX_BUFFERED / 2 && pcm.len() <= MAX_BUFFERED);
        let rms =
            (pcm.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / pcm.len() as f64).sqrt();
        assert!(rms > 1000.0, "rms {rms}");
    }

    #[test]
    fn sdp_names_the_codec_and_asks_for_keyframes() {
        let s = video_sdp(5004, 96, VideoCodec::Vp8);
        assert!(s.contains("m=video 5004 RTP/AVP 96\r\na=rtpmap:96 VP8/90000\r\n"));
        assert!(s.contains("a=rtcp-fb:96 nack pli\r\n") && !s.contains("fmtp"));
        let s = video_sdp(5004, 102, VideoCodec::H264);
        assert!(s.contains("a=rtpmap:102 H264/90000\r\na=fmtp:102 packetization-mode=1\r\n"));
    }
}
