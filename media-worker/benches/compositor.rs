//! Compositor cost: four 720p30 VP8+Opus guests in a grid with a banner and a logo, encoded once
//! to three outputs (two RTMP destinations and the recording), for 30 s paced like a live show;
//! beside one plain FFmpeg filter graph (xstack + overlay + tee) doing the same in the same run.
//! Prints CPU-seconds per media-second for both, at 720p30 and 1080p30: the compositor's are
//! its own process and its FFmpeg children, not the FFmpeg processes playing the SFU.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use castyard_media_worker::testkit::{RtmpServer, free_port};
use serde_json::{Value, json};

const GUESTS: usize = 4;
const SECONDS: u64 = 30;
const FONT: &str = castyard_media_worker::compositor::DEFAULT_FONT;

/// CPU of this process's waited-for children (and theirs), in seconds.
fn children_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let f: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    // cutime and cstime are fields 16 and 17 of stat, 13 and 14 after the command name.
    (f[13].parse::<u64>().unwrap() + f[14].parse::<u64>().unwrap()) as f64 / 100.0
}

fn run(cmd: &mut Command) {
    let out = cmd.stdin(Stdio::null()).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The guests' media: a moving 720p test pattern and a tone, as a browser would send them.
fn inputs(dir: &Path) {
    for i in 0..GUESTS {
        run(Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
            .arg(format!("testsrc2=size=1280x720:rate=30:duration={SECONDS}"))
            .args(["-f", "lavfi", "-i"])
            .arg(format!(
                "sine=frequency={}:sample_rate=48000:duration={SECONDS}",
                300 + 100 * i
            ))
            .args(["-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8"])
            .args([
                "-b:v", "1500k", "-g", "60", "-c:a", "libopus", "-b:a", "48k",
            ])
            .arg(dir.join(format!("guest{i}.webm"))));
    }
    run(Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-f", "lavfi", "-i"])
        .arg("color=c=0xe0a020:size=200x100,format=rgba")
        .args(["-frames:v", "1"])
        .arg(dir.join("logo.png")));
}

/// The benchmark's compositors' control token.
fn token() -> &'static castyard_proto::ControlToken {
    static TOKEN: std::sync::OnceLock<castyard_proto::ControlToken> = std::sync::OnceLock::new();
    TOKEN.get_or_init(castyard_proto::ControlToken::generate)
}

fn http(port: u16, method: &str, path: &str, body: &Value) -> Option<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    let body = body.to_string();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        token().bearer(),
        body.len()
    )
    .ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    (out.get(9..12) == Some("200"))
        .then(|| serde_json::from_str(out.split_once("\r\n\r\n")?.1).ok())
        .flatten()
}

fn compositor(dir: &Path, width: u32, height: u32, kbps: u32) -> (f64, f64, Value) {
    let a = RtmpServer::start();
    let b = RtmpServer::start();
    let port = free_port();
    let data = dir.join(format!("data-{height}"));
    std::fs::create_dir_all(data.join("assets")).unwrap();
    std::fs::copy(dir.join("logo.png"), data.join("assets/logo.png")).unwrap();
    std::fs::create_dir_all(dir.join("keys/keys")).unwrap();
    std::fs::write(dir.join("keys/keys/a"), "bench-a").unwrap();
    std::fs::write(dir.join("keys/keys/b"), "bench-b").unwrap();
    let dest = |name: &str, port: u16| {
        json!({"name": name, "kind": "custom", "url": format!("rtmp://127.0.0.1:{port}/live"),
               "streamKeySecretRef": {"name": "keys", "key": name}})
    };
    let config = json!({
        "broadcast": "bench", "width": width, "height": height, "fps": 30,
        "videoBitrateKbps": kbps, "audioBitrateKbps": 128, "layout": "grid",
        "destinations": [dest("a", a.port), dest("b", b.port)],
        "hls": {"enabled": false, "lowLatency": false}, "recording": true,
        "ingest": {"rtmp": false}, "sfu": null, "controlPort": port,
    });
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("control-token"), token().expose()).unwrap();
    let before = children_cpu();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_castyard-media-worker"))
        .arg("compositor")
        .arg("--config")
        .arg(dir.join("config.json"))
        .arg("--keys-dir")
        .arg(dir.join("keys"))
        .arg("--control-token-file")
        .arg(dir.join("control-token"))
        .arg("--data-dir")
        .arg(&data)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(20);
    while http(port, "GET", "/status", &Value::Null).is_none() {
        assert!(Instant::now() < until, "the compositor did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let scene = |cmd: Value| http(port, "POST", "/scene", &cmd).expect("command applied");
    scene(json!({"type": "set-brand", "brand": {"color": "#2040c0", "logo": "logo.png"}}));
    scene(
        json!({"type": "show-banner", "banner": {"text": "Live from Castyard", "style": "banner"}}),
    );
    let mut senders: Vec<Child> = Vec::new();
    for i in 0..GUESTS {
        let id = format!("g{i}");
        scene(json!({"type": "join", "id": id, "name": format!("Guest {i}")}));
        scene(json!({"type": "camera", "id": id, "on": true}));
        scene(json!({"type": "add-to-stage", "id": id}));
        let ports = http(
            port,
            "PUT",
            &format!("/inputs/{id}/camera"),
            &json!({"video": "vp8", "audio": true}),
        )
        .expect("input registered");
        // The SFU's part: not the compositor's CPU, measured apart (see below).
        senders.push(
            Command::new("ffmpeg")
                .args(["-v", "error", "-re", "-i"])
                .arg(dir.join(format!("guest{i}.webm")))
                .args([
                    "-map",
                    "0:v",
                    "-c",
                    "copy",
                    "-payload_type",
                    "96",
                    "-f",
                    "rtp",
                ])
                .arg(format!("rtp://127.0.0.1:{}", ports["videoPort"]))
                .args([
                    "-map",
                    "0:a",
                    "-c",
                    "copy",
                    "-payload_type",
                    "111",
                    "-f",
                    "rtp",
                ])
                .arg(format!("rtp://127.0.0.1:{}", ports["audioPort"]))
                .stdin(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let frames_at_start = http(port, "GET", "/status", &Value::Null).unwrap()["frames"]
        .as_u64()
        .unwrap();
    // The senders are reaped first, so their CPU is told apart from the compositor's (which
    // counts once the worker, which reaps its FFmpeg children, is reaped).
    let senders_before = children_cpu();
    for s in &mut senders {
        s.wait().unwrap();
    }
    let senders_cpu = children_cpu() - senders_before;
    let status = http(port, "GET", "/status", &Value::Null).unwrap();
    let metrics = Command::new("curl")
        .args(["-s", &format!("http://127.0.0.1:{port}/metrics")])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    worker.wait().unwrap();
    let cpu = children_cpu() - before - senders_cpu;
    let frames = status["frames"].as_u64().unwrap();
    let media = frames as f64 / 30.0;
    let dropped = metrics
        .lines()
        .find(|l| l.starts_with("castyard_compositor_dropped_frames_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .unwrap_or(-1.0);
    drop((a, b));
    (
        cpu / media,
        media,
        json!({"framesWhileGuestsSent": frames - frames_at_start, "dropped": dropped,
               "rtpSendersCpuPerMediaS": (senders_cpu / media * 1000.0).round() / 1000.0,
               "destinations": status["destinations"]}),
    )
}

fn reference(dir: &Path, width: u32, height: u32, kbps: u32) -> f64 {
    let (w, h) = (width / 2, height / 2);
    let mut cmd = Command::new("ffmpeg");
    cmd.args(["-v", "error", "-y"]);
    for i in 0..GUESTS {
        cmd.arg("-re")
            .arg("-i")
            .arg(dir.join(format!("guest{i}.webm")));
    }
    cmd.args(["-loop", "1", "-i"]).arg(dir.join("logo.png"));
    let scaled: String = (0..GUESTS)
        .map(|i| format!("[{i}:v]scale={w}:{h}[v{i}];"))
        .collect();
    let graph = format!(
        "{scaled}[v0][v1][v2][v3]xstack=inputs=4:layout=0_0|w0_0|0_h0|w0_h0[g];\
         [g]drawbox=x=20:y=ih-{bh}:w=iw-40:h={bh2}:color=0x2040c0:t=fill,\
         drawtext=fontfile={FONT}:text='Live from Castyard':fontcolor=white:fontsize={fs}:x=40:y=h-{ty}[b];\
         [b][4:v]overlay=W-w-20:20:shortest=1[v];\
         [0:a][1:a][2:a][3:a]amix=inputs=4,alimiter[a]",
        bh = height / 8,
        bh2 = height / 12,
        fs = height / 24,
        ty = height / 9,
    );
    let out = |name: &str| dir.join(name).display().to_string();
    cmd.args(["-filter_complex", &graph, "-map", "[v]", "-map", "[a]"])
        .args([
            "-c:v",
            "libx264",
            "-preset",
            "veryfast",
            "-profile:v",
            "high",
        ])
        .args(["-b:v", &format!("{kbps}k"), "-maxrate", &format!("{kbps}k")])
        .args([
            "-bufsize",
            &format!("{}k", kbps * 2),
            "-g",
            "60",
            "-r",
            "30",
        ])
        .args([
            "-c:a",
            "aac",
            "-b:a",
            "128k",
            "-t",
            &SECONDS.to_string(),
            "-f",
            "tee",
        ])
        .arg(format!(
            "[f=flv]{}|[f=flv]{}|[f=mp4:movflags=+frag_keyframe+empty_moov]{}",
            out("ref-a.flv"),
            out("ref-b.flv"),
            out("ref.mp4")
        ));
    let before = children_cpu();
    run(&mut cmd);
    (children_cpu() - before) / SECONDS as f64
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    inputs(dir.path());
    println!(
        "compositor: {GUESTS} guests (720p30 VP8 + Opus) in a grid, banner and logo, 3 outputs, {SECONDS} s live"
    );
    for (w, h, kbps) in [(1280, 720, 3000), (1920, 1080, 6000)] {
        let ours = compositor(dir.path(), w, h, kbps);
        let plain = reference(dir.path(), w, h, kbps);
        println!(
            "{h}p30: castyard {:.2} CPU-s per media-s ({:.1} media s, {}), plain ffmpeg {:.2}: ratio {:.2}x (target <= 1.0x); \
             load on 2 cores {:.0}% (target <= 80%)",
            ours.0,
            ours.1,
            ours.2,
            plain,
            ours.0 / plain,
            ours.0 / 2.0 * 100.0
        );
    }
}
