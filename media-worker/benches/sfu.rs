//! SFU forwarding cost and delay: publishers and subscribers (bots on str0m, in this process)
//! around a real `castyard-media-worker sfu` process, beside a bare UDP relay fanning out the
//! same packet rate in the same run. Prints packets per CPU-second and the median delay.

use std::io::{Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use castyard_media_worker::bot::{self, BotConfig, Frame};
use tokio::sync::broadcast;

const PUBLISHERS: usize = 4;
const SUBSCRIBERS: usize = 10;
const SECONDS: u64 = 20;
/// A 1.5 Mbit/s camera at 30 fps: about 6 KB a frame, five or six RTP packets.
const VIDEO_FRAME: usize = 6_000;
const AUDIO_FRAME: usize = 80;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: sfu\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    // hyper answers an HTTP/1.0 request in kind.
    (out.get(9..12) == Some("200"))
        .then(|| out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()))
        .flatten()
}

fn forwarded(port: u16) -> f64 {
    get(port, "/metrics")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("castyard_sfu_forwarded_packets_total"))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// utime + stime of a process or thread, in seconds (clock ticks are 100 Hz on Linux).
fn cpu_seconds(stat_path: &str) -> f64 {
    let (user, system) = cpu_split(stat_path);
    user + system
}

fn cpu_split(stat_path: &str) -> (f64, f64) {
    let stat = std::fs::read_to_string(stat_path).unwrap();
    let after = stat.rsplit_once(") ").unwrap().1;
    let f: Vec<&str> = after.split(' ').collect();
    let ticks = |i: usize| f[i].parse::<u64>().unwrap() as f64 / 100.0;
    (ticks(11), ticks(12))
}

fn median(v: &mut [u64]) -> (f64, f64) {
    v.sort_unstable();
    if v.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let at = |q: f64| v[((v.len() - 1) as f64 * q) as usize] as f64 / 1000.0;
    (at(0.5), at(0.95))
}

/// Publishes stamped frames in real time to every publishing bot.
async fn generate(tx: broadcast::Sender<Frame>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let (mut audio_n, mut video_n) = (0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        tick.tick().await;
        let ms = start.elapsed().as_millis() as u64;
        while audio_n * 20 <= ms {
            let _ = tx.send(Frame {
                audio: true,
                rtp_time: audio_n * 960,
                data: bot::stamp(AUDIO_FRAME).into(),
            });
            audio_n += 1;
        }
        while video_n * 1000 / 30 <= ms {
            let _ = tx.send(Frame {
                audio: false,
                rtp_time: video_n * 3000,
                data: bot::stamp(VIDEO_FRAME).into(),
            });
            video_n += 1;
        }
    }
}

struct SfuRun {
    packets: f64,
    cpu: f64,
    latencies: Vec<u64>,
    packet_rate_in: f64,
}

async fn run_sfu() -> SfuRun {
    let dir = tempfile::tempdir().unwrap();
    let (control, media) = (free_port(), free_port());
    let config = dir.path().join("sfu.json");
    std::fs::write(
        &config,
        serde_json::json!({
            "broadcast": "bench",
            "maxParticipants": PUBLISHERS + SUBSCRIBERS + 1,
            "signallingPort": control,
            "mediaPort": media,
        })
        .to_string(),
    )
    .unwrap();
    let (token, token_file) = castyard_media_worker::testkit::control_token(dir.path());
    let mut child = Command::new(env!("CARGO_BIN_EXE_castyard-media-worker"))
        .args(["sfu", "--config"])
        .arg(&config)
        .arg("--control-token-file")
        .arg(&token_file)
        .env("CASTYARD_ADVERTISE_IP", "127.0.0.1")
        .env("RUST_LOG", "warn")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    while get(control, "/readyz").is_none() {
        std::thread::sleep(Duration::from_millis(20));
    }
    let (tx, _) = broadcast::channel(1024);
    let stop = Arc::new(AtomicBool::new(false));
    let gen_task = tokio::spawn(generate(tx.clone(), stop.clone()));
    // Joining (ICE, DTLS) and the first bandwidth estimates take a few seconds: measure after.
    let warmup = Duration::from_secs(4);
    let mut runs = Vec::new();
    for i in 0..PUBLISHERS + SUBSCRIBERS {
        let publish = i < PUBLISHERS;
        let role = if i == 0 { "host" } else { "guest" };
        let cfg = BotConfig {
            url: format!("ws://127.0.0.1:{control}/signal?participant=b{i}&name=b{i}&role={role}"),
            duration: warmup + Duration::from_secs(SECONDS) + Duration::from_secs(3),
            bind_ip: "127.0.0.1".parse().unwrap(),
            control_token: Some(token.clone()),
            together: None,
        };
        runs.push(tokio::spawn(bot::run(cfg, publish.then(|| tx.subscribe()))));
    }
    tokio::time::sleep(warmup).await;
    let stat = format!("/proc/{}/stat", child.id());
    let (cpu0, fwd0, split0) = (cpu_seconds(&stat), forwarded(control), cpu_split(&stat));
    tokio::time::sleep(Duration::from_secs(SECONDS)).await;
    // The counter follows str0m's stats, once a second: let the last one land.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (cpu1, fwd1, split1) = (cpu_seconds(&stat), forwarded(control), cpu_split(&stat));
    println!(
        "sfu process: {:.2} s user, {:.2} s system",
        split1.0 - split0.0,
        split1.1 - split0.1
    );
    stop.store(true, Ordering::Relaxed);
    let mut latencies = Vec::new();
    for r in runs {
        let report = r.await.unwrap();
        assert_eq!(report.error, None, "{}", report.participant);
        latencies.extend(report.latencies_us);
    }
    let _ = gen_task.await;
    let _ = child.kill();
    let _ = child.wait();
    let packets = fwd1 - fwd0;
    SfuRun {
        packets,
        cpu: cpu1 - cpu0,
        latencies,
        packet_rate_in: packets / (SECONDS as f64 + 1.1) / (PUBLISHERS + SUBSCRIBERS - 1) as f64,
    }
}

struct RelayRun {
    packets: u64,
    cpu: f64,
    latencies: Vec<u64>,
}

/// The floor: one thread reading datagrams and sending each to every receiver, nothing else.
fn run_relay(packets_in: u64, fanout: usize) -> RelayRun {
    let relay = UdpSocket::bind("127.0.0.1:0").unwrap();
    let relay_addr = relay.local_addr().unwrap();
    let receivers: Vec<UdpSocket> = (0..fanout)
        .map(|_| UdpSocket::bind("127.0.0.1:0").unwrap())
        .collect();
    let sinks: Vec<SocketAddr> = receivers.iter().map(|r| r.local_addr().unwrap()).collect();
    let done = Arc::new(AtomicBool::new(false));
    let relay_thread = {
        let done = done.clone();
        std::thread::Builder::new()
            .name("bench-relay".into())
            .spawn(move || {
                relay
                    .set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                let mut n = 0u64;
                while !done.load(Ordering::Relaxed) {
                    if let Ok((len, _)) = relay.recv_from(&mut buf) {
                        for s in &sinks {
                            let _ = relay.send_to(&buf[..len], s);
                            n += 1;
                        }
                    }
                }
                n
            })
            .unwrap()
    };
    // A new thread names itself once it runs: look until it has.
    let tid = (0..100)
        .find_map(|_| {
            let found = std::fs::read_dir("/proc/self/task")
                .unwrap()
                .filter_map(|e| e.ok())
                .find(|e| {
                    std::fs::read_to_string(e.path().join("comm"))
                        .is_ok_and(|c| c.trim() == "bench-relay")
                })
                .map(|e| e.file_name().to_string_lossy().into_owned());
            if found.is_none() {
                std::thread::sleep(Duration::from_millis(10));
            }
            found
        })
        .expect("the relay thread is listed");
    let stat = format!("/proc/self/task/{tid}/stat");
    let readers: Vec<_> = receivers
        .into_iter()
        .map(|r| {
            let done = done.clone();
            std::thread::spawn(move || {
                r.set_read_timeout(Some(Duration::from_millis(100)))
                    .unwrap();
                let mut buf = [0u8; 2048];
                let mut lat = Vec::new();
                while !done.load(Ordering::Relaxed) {
                    if let Ok((len, _)) = r.recv_from(&mut buf)
                        && let Some(delay) = bot::delay_us(&buf[..len])
                    {
                        lat.push(delay);
                    }
                }
                lat
            })
        })
        .collect();
    // The same packets per second in, 1,200-byte datagrams, paced every millisecond.
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let cpu0 = cpu_seconds(&stat);
    let start = Instant::now();
    let per_ms = packets_in as f64 / (SECONDS as f64 * 1000.0);
    let mut sent = 0u64;
    while sent < packets_in {
        let due = (start.elapsed().as_secs_f64() * 1000.0 * per_ms) as u64;
        while sent < due.min(packets_in) {
            let _ = sender.send_to(&bot::stamp(1200), relay_addr);
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(200));
    let cpu = cpu_seconds(&stat) - cpu0;
    done.store(true, Ordering::Relaxed);
    let packets = relay_thread.join().unwrap();
    let latencies = readers
        .into_iter()
        .flat_map(|r| r.join().unwrap())
        .collect();
    RelayRun {
        packets,
        cpu,
        latencies,
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!(
        "sfu: {PUBLISHERS} publishers (Opus 50/s + VP8 30 fps, {VIDEO_FRAME} B frames), \
         {SUBSCRIBERS} subscribe-only, {SECONDS} s measured"
    );
    let mut sfu = rt.block_on(run_sfu());
    let fanout = PUBLISHERS + SUBSCRIBERS - 1;
    let packets_in = (sfu.packet_rate_in * SECONDS as f64) as u64;
    let mut relay = run_relay(packets_in, fanout);
    let sfu_rate = sfu.packets / sfu.cpu.max(0.01);
    let relay_rate = relay.packets as f64 / relay.cpu.max(0.01);
    let (sfu_med, sfu_p95) = median(&mut sfu.latencies);
    let (relay_med, relay_p95) = median(&mut relay.latencies);
    println!(
        "sfu:   {:>9.0} packets forwarded in {:.2} SFU CPU-s = {:>9.0} packets per CPU-second (target >= 75,000)",
        sfu.packets, sfu.cpu, sfu_rate
    );
    println!(
        "relay: {:>9} packets forwarded in {:.2} relay CPU-s = {:>9.0} packets per CPU-second (bare UDP, same rate in, fan-out {fanout})",
        relay.packets, relay.cpu, relay_rate
    );
    println!(
        "ratio: the SFU forwards at {:.2}x the bare relay's packets per CPU-second",
        sfu_rate / relay_rate
    );
    println!(
        "delay publisher -> subscriber: sfu median {sfu_med:.2} ms (p95 {sfu_p95:.2}), \
         relay median {relay_med:.2} ms (p95 {relay_p95:.2}); added by the SFU path: {:.2} ms (target < 5 ms)",
        sfu_med - relay_med
    );
}
