//! CPU of the RTMP ingest (the `castyard up` binary: RTMP server plus its `ffmpeg -c copy`
//! remuxer) per stream of 30 s 1080p30 6 Mbps, beside plain `ffmpeg -listen 1 … -c copy` doing
//! the same remux (HLS + fragmented MP4) in the same run; then 20 ingests at once. `make bench`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const SECONDS: u32 = 30;
const CONCURRENT: usize = 20;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// 30 s of 1080p30 H.264 at 6 Mbps with AAC, made once and kept under target/.
fn input() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/bench/ingest-1080p30-6m.flv");
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        eprintln!(
            "encoding the 1080p30 input once (kept at {})",
            path.display()
        );
        let tmp = path.with_extension("tmp.flv");
        let ok = Command::new("ffmpeg")
            .args(["-hide_banner", "-loglevel", "error", "-y"])
            .args(["-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30"])
            .args(["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000"])
            .args(["-t", &SECONDS.to_string()])
            .args(["-c:v", "libx264", "-preset", "ultrafast", "-g", "60"])
            .args(["-b:v", "6M", "-maxrate", "6M", "-bufsize", "12M"])
            .args([
                "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "128k", "-f", "flv",
            ])
            .arg(&tmp)
            .status()
            .unwrap()
            .success();
        assert!(ok, "encoding the benchmark input");
        std::fs::rename(&tmp, &path).unwrap();
    }
    path
}

/// A publisher that paces the file in real time and copies it: what OBS sends, at no encode cost.
fn publish(input: &Path, url: &str) -> Child {
    Command::new("ffmpeg")
        .args([
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-re",
            "-i",
        ])
        .arg(input)
        .args(["-c", "copy", "-f", "flv", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .unwrap()
}

/// utime + stime + cutime + cstime of a process, in seconds: itself and its waited-for children.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    // After the command: state is field 3; utime..cstime are fields 14..17.
    let ticks: f64 = fields[11..15]
        .iter()
        .map(|f| f.parse::<f64>().unwrap())
        .sum();
    ticks / 100.0
}

fn http(port: u16, method: &str, path: &str, token: Option<&str>, body: Option<Value>) -> Value {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let (_, body) = out.split_once("\r\n\r\n").unwrap();
    serde_json::from_str(body).unwrap_or(Value::Null)
}

struct Castyard {
    child: Child,
    port: u16,
    rtmp: u16,
    token: String,
    _data: tempfile::TempDir,
}

impl Castyard {
    fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let (port, rtmp) = (free_port(), free_port());
        let mut child = Command::new(env!("CARGO_BIN_EXE_castyard"))
            .args(["up", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--rtmp-listen", &format!("127.0.0.1:{rtmp}"), "--data-dir"])
            .arg(data.path())
            .env("RUST_LOG", "error")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = [0u8; 1];
        let stdout = child.stdout.as_mut().unwrap();
        while stdout.read(&mut line).unwrap() == 1 && line[0] != b'\n' {}
        let token = http(
            port,
            "POST",
            "/api/auth/register",
            None,
            Some(json!({"email": "bench@example.com", "password": "correct horse battery", "displayName": "Bench"})),
        )["accessToken"]
            .as_str()
            .unwrap()
            .to_owned();
        Castyard {
            child,
            port,
            rtmp,
            token,
            _data: data,
        }
    }

    /// A new broadcast's ingest URL.
    fn ingest_url(&self, title: &str) -> String {
        let b = http(
            self.port,
            "POST",
            "/api/broadcasts",
            Some(&self.token),
            // The OBS feed is the show (not a studio source).
            Some(json!({"title": title, "ingest": {"rtmp": true}})),
        );
        let id = b["id"].as_str().unwrap();
        let k = http(
            self.port,
            "POST",
            &format!("/api/broadcasts/{id}/ingest-key"),
            Some(&self.token),
            Some(json!({})),
        );
        assert!(k["url"].as_str().unwrap().contains(&self.rtmp.to_string()));
        k["url"].as_str().unwrap().to_owned()
    }

    /// Waits until `n` recordings are registered; returns their durations in seconds.
    fn recordings(&self, n: usize) -> Vec<f64> {
        for _ in 0..600 {
            let r = http(self.port, "GET", "/api/recordings", Some(&self.token), None);
            let list = r.as_array().cloned().unwrap_or_default();
            if list.len() >= n {
                return list
                    .iter()
                    .map(|r| r["durationMs"].as_f64().unwrap() / 1000.0)
                    .collect();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("{n} recordings never appeared");
    }

    /// Runs `n` publishes at once; returns (CPU seconds castyard spent, wall time, durations).
    fn ingest(&self, input: &Path, n: usize, already: usize) -> (f64, Duration, Vec<f64>) {
        let urls: Vec<String> = (0..n)
            .map(|i| self.ingest_url(&format!("show {i}")))
            .collect();
        let pid = self.child.id();
        let cpu0 = cpu_seconds(pid);
        let t0 = Instant::now();
        let publishers: Vec<Child> = urls.iter().map(|u| publish(input, u)).collect();
        for mut p in publishers {
            assert!(p.wait().unwrap().success(), "a publisher failed");
        }
        let wall = t0.elapsed();
        let durations = self.recordings(already + n);
        (cpu_seconds(pid) - cpu0, wall, durations[..n].to_vec())
    }
}

impl Drop for Castyard {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
    }
}

/// Plain FFmpeg as the RTMP server, remuxing to the same HLS + fragmented MP4; its CPU comes
/// from bash's `times` (children's user and system time).
fn reference(input: &Path) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let d = dir.path().display();
    let script = format!(
        "ffmpeg -hide_banner -loglevel error -nostdin -listen 1 -f flv \
         -i rtmp://127.0.0.1:{port}/live/key \
         -map 0:v? -map 0:a? -c copy -f hls -hls_time 2 -hls_list_size 10 \
         -hls_flags delete_segments+independent_segments+temp_file \
         -hls_segment_filename {d}/seg%05d.ts {d}/index.m3u8 \
         -map 0:v? -map 0:a? -c copy -f mp4 -movflags +frag_keyframe+empty_moov+default_base_moof \
         {d}/rec.mp4; times"
    );
    let server = Command::new("bash")
        .args(["-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // ffmpeg -listen takes a moment to bind.
    let url = format!("rtmp://127.0.0.1:{port}/live/key");
    let deadline = Instant::now() + Duration::from_secs(10);
    // Not by connecting: `-listen 1` serves exactly one connection.
    while !listening(port) {
        assert!(Instant::now() < deadline, "reference ffmpeg never listened");
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut p = publish(input, &url);
    assert!(p.wait().unwrap().success());
    let out = server.wait_with_output().unwrap();
    let times = String::from_utf8_lossy(&out.stdout);
    // Second line: children's user and system time, as `0m1.234s 0m0.567s`.
    let children = times.lines().nth(1).expect("bash times output");
    children
        .split_whitespace()
        .map(|t| {
            let (m, s) = t.trim_end_matches('s').split_once('m').unwrap();
            m.parse::<f64>().unwrap() * 60.0 + s.parse::<f64>().unwrap()
        })
        .sum()
}

/// Whether something listens on this loopback TCP port (from /proc/net/tcp, state 0A).
fn listening(port: u16) -> bool {
    let want = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", &f[1][f[1].len() - 5..]) == want && f[3] == "0A"
        })
}

fn main() {
    let input = input();
    println!("RTMP ingest to HLS + recording, {SECONDS} s of 1080p30 at 6 Mbps per stream");
    let reference_cpu = reference(&input);
    let castyard = Castyard::start();
    let (one_cpu, _, one) = castyard.ingest(&input, 1, 0);
    println!(
        "  ffmpeg -listen -c copy (reference): {reference_cpu:.2} CPU-s per stream \
         ({:.2}% of a core)",
        100.0 * reference_cpu / f64::from(SECONDS)
    );
    println!(
        "  castyard ingest, one stream:        {one_cpu:.2} CPU-s per stream \
         ({:.2}% of a core), recording {:.1} s; ratio {:.2}x (target <= 1.5x)",
        100.0 * one_cpu / f64::from(SECONDS),
        one[0],
        one_cpu / reference_cpu
    );
    let (cpu, wall, durations) = castyard.ingest(&input, CONCURRENT, 1);
    let per = cpu / CONCURRENT as f64;
    let (min, max) = durations
        .iter()
        .fold((f64::MAX, 0.0f64), |(a, b), d| (a.min(*d), b.max(*d)));
    println!(
        "  castyard ingest, {CONCURRENT} at once:       {per:.2} CPU-s per stream, {:.2} cores in all \
         over {:.1} s wall; recordings {min:.1}-{max:.1} s; ratio {:.2}x",
        cpu / wall.as_secs_f64(),
        wall.as_secs_f64(),
        per / reference_cpu
    );
    let kept_up = wall.as_secs_f64() < f64::from(SECONDS) * 1.1 && min > f64::from(SECONDS) * 0.9;
    println!(
        "  {CONCURRENT} concurrent 1080p ingests in real time: {}",
        if kept_up { "yes" } else { "NO" }
    );
}
