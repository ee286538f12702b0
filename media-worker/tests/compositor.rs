//! The compositor as its own process, as the operator runs it: synthetic RTP in (FFmpeg test
//! sources), real nginx-rtmp destinations out, read back with ffprobe.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use castyard_media_worker::testkit::{RtmpServer, TestCa, TlsRelay, control_token, free_port};
use castyard_proto::ControlToken;
use serde_json::{Value, json};

struct Worker {
    child: Child,
    port: u16,
    token: ControlToken,
    dir: Option<tempfile::TempDir>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A test that failed first asks for the graceful end, which stops the decoders too;
        // a kill alone would leave them running.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Worker {
    /// What destination `name` has sent so far, from the metrics.
    fn sent_bytes(&self, name: &str) -> u64 {
        let metrics = self.http("GET", "/metrics", None).1;
        let series = format!(
            "castyard_compositor_destination_sent_bytes_total{{broadcast=\"show\",destination=\"{name}\"}} "
        );
        metrics
            .as_str()
            .unwrap_or("")
            .lines()
            .find_map(|l| l.strip_prefix(&series)?.parse().ok())
            .unwrap_or(0)
    }
}

fn config(port: u16, destinations: Value) -> Value {
    json!({
        "broadcast": "show", "width": 640, "height": 360, "fps": 30,
        "videoBitrateKbps": 800, "audioBitrateKbps": 96, "layout": "grid",
        "destinations": destinations, "hls": {"enabled": true, "lowLatency": false},
        "recording": true, "ingest": {"rtmp": false}, "sfu": null, "controlPort": port,
    })
}

fn destination(name: &str, port: u16) -> Value {
    json!({"name": name, "kind": "custom", "url": format!("rtmp://127.0.0.1:{port}/live"),
           "streamKeySecretRef": {"name": "keys", "key": name}, "enabled": true})
}

impl Worker {
    fn start(dir: tempfile::TempDir, config: &Value) -> Self {
        Self::start_with(dir, config, |_| {})
    }

    /// With extra arguments or environment.
    fn start_with(
        dir: tempfile::TempDir,
        config: &Value,
        configure: impl FnOnce(&mut Command),
    ) -> Self {
        let port = config["controlPort"].as_u64().unwrap() as u16;
        std::fs::write(dir.path().join("config.json"), config.to_string()).unwrap();
        let (token, token_file) = control_token(dir.path());
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_castyard-media-worker"));
        cmd.arg("compositor")
            .arg("--config")
            .arg(dir.path().join("config.json"))
            .arg("--control-token-file")
            .arg(token_file)
            .arg("--keys-dir")
            .arg(dir.path().join("keys"))
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .stdin(Stdio::null());
        // After the role: its flags follow the subcommand.
        configure(&mut cmd);
        let child = cmd.spawn().unwrap();
        let w = Self {
            child,
            port,
            token,
            dir: Some(dir),
        };
        let until = Instant::now() + Duration::from_secs(20);
        while w.http("GET", "/readyz", None).0 != 200 {
            assert!(Instant::now() < until, "the compositor never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        w
    }

    fn http(&self, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
        self.http_as(Some(&self.token.bearer()), method, path, body)
    }

    /// A request with the given Authorization header (none when None).
    fn http_as(
        &self,
        auth: Option<&str>,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> (u16, Value) {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return (0, Value::Null);
        };
        let body = body.map(Value::to_string).unwrap_or_default();
        let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
        write!(
            s,
            "{method} {path} HTTP/1.0\r\nHost: c\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        if out.len() < 12 {
            return (0, Value::Null);
        }
        let status = out[9..12].parse().unwrap();
        let body = out.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        (
            status,
            serde_json::from_str(body).unwrap_or(Value::String(body.into())),
        )
    }

    fn scene(&self, cmd: Value) -> Value {
        let (status, body) = self.http("POST", "/scene", Some(&cmd));
        assert_eq!(status, 200, "{cmd} -> {body}");
        body
    }

    /// Registers a camera and starts FFmpeg sending it a VP8 test pattern and an Opus tone.
    fn camera(&self, id: &str, secs: u32) -> Vec<Child> {
        let (status, ports) = self.http(
            "PUT",
            &format!("/inputs/{id}/camera"),
            Some(&json!({"video": "vp8", "audio": true, "audioPayloadType": 97})),
        );
        assert_eq!(status, 200, "{ports}");
        let send = |args: &[&str], port: &Value| {
            Command::new("ffmpeg")
                .args(["-hide_banner", "-loglevel", "error", "-re", "-f", "lavfi"])
                .args(args)
                .args(["-t", &secs.to_string(), "-f", "rtp"])
                .arg(format!("rtp://127.0.0.1:{port}"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        };
        vec![
            send(
                &[
                    "-i",
                    "testsrc2=size=640x360:rate=30",
                    "-c:v",
                    "libvpx",
                    "-deadline",
                    "realtime",
                    "-cpu-used",
                    "8",
                    "-b:v",
                    "500k",
                    "-g",
                    "30",
                    "-payload_type",
                    "96",
                ],
                &ports["videoPort"],
            ),
            send(
                &[
                    "-i",
                    "sine=frequency=440:sample_rate=48000",
                    "-c:a",
                    "libopus",
                    "-payload_type",
                    "97",
                ],
                &ports["audioPort"],
            ),
        ]
    }

    fn status(&self) -> Value {
        self.http("GET", "/status", None).1
    }

    /// The show made so far, by the compositor's own media clock.
    fn media_secs(&self) -> f64 {
        self.status()["mediaMs"].as_f64().unwrap_or(0.0) / 1000.0
    }

    fn destination(&self, name: &str) -> Value {
        self.status()["destinations"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    }

    fn wait_destination(&self, name: &str, state: &str, within: Duration) -> Value {
        let until = Instant::now() + within;
        loop {
            let d = self.destination(name);
            if d["state"] == state {
                return d;
            }
            assert!(Instant::now() < until, "{name} never {state}: {d}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn terminate(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        let status = self.child.wait().unwrap();
        (status, self.dir.take().unwrap())
    }

    fn recording(&self) -> PathBuf {
        PathBuf::from(self.status()["recording"].as_str().unwrap())
    }
}

fn ffprobe(path: &Path, entries: &str) -> Value {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json", "-show_entries", entries])
        .arg(path)
        .output()
        .unwrap();
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// The video packet times of a file, in seconds.
fn video_times(path: &Path) -> Vec<f64> {
    let out = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries"])
        .args(["packet=pts_time", "-of", "csv=p=0"])
        .arg(path)
        .output()
        .unwrap();
    let mut t: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    t.sort_by(f64::total_cmp);
    t
}

/// `media` is how much show the compositor made while the output ran (its own media clock,
/// not the wall's: on a loaded machine it may fall behind real time, which is the benchmark's
/// business, not this test's). A destination's file may also begin up to one GOP (2 s)
/// earlier, since its buffer starts at the last keyframe, and any file may hold the moment
/// between the last status read and SIGTERM.
fn assert_show(path: &Path, media: f64, gop_lead: bool, what: &str) {
    let v = ffprobe(
        path,
        "stream=codec_name,width,height,r_frame_rate:format=duration",
    );
    let streams = v["streams"]
        .as_array()
        .unwrap_or_else(|| panic!("{what}: {v}"));
    let video = streams.iter().find(|s| s["codec_name"] == "h264");
    let video = video.unwrap_or_else(|| panic!("{what} has H.264: {v}"));
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(640), Some(360))
    );
    assert_eq!(video["r_frame_rate"], "30/1", "{what}");
    assert!(
        streams.iter().any(|s| s["codec_name"] == "aac"),
        "{what} has AAC: {v}"
    );
    let secs: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    let lead = if gop_lead { 2.0 } else { 0.0 };
    assert!(
        secs >= media * 0.9 && secs <= media * 1.1 + lead + 1.0,
        "{what}: {secs} s in the file of {media} s the compositor made"
    );
}

#[test]
fn a_show_goes_to_two_destinations_and_one_dying_touches_nothing_else() {
    let rec_a = tempfile::tempdir().unwrap();
    let rec_b = tempfile::tempdir().unwrap();
    let a = RtmpServer::start_with(None, Some(rec_a.path()));
    let b = RtmpServer::start_with(None, Some(rec_b.path()));
    let b_port = b.port;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("keys/keys")).unwrap();
    std::fs::write(dir.path().join("keys/keys/a"), "secret-key-a\n").unwrap();
    std::fs::write(dir.path().join("keys/keys/b"), "secret-key-b\n").unwrap();
    let cfg = config(
        free_port(),
        json!([destination("a", a.port), destination("b", b.port)]),
    );
    // The recording starts with the compositor's media clock; a destination when it connects.
    let w = Worker::start(dir, &cfg);
    w.wait_destination("a", "Live", Duration::from_secs(10));
    let a_started = w.media_secs();
    w.wait_destination("b", "Live", Duration::from_secs(10));
    let encoder = w.status()["encoderRestarts"].clone();

    // Two guests on stage with a banner; their media arrives while the show runs.
    let mut senders = Vec::new();
    for (id, name) in [("ann", "Ann Lee"), ("bo", "Bo")] {
        w.scene(json!({"type": "join", "id": id, "name": name}));
        w.scene(json!({"type": "camera", "id": id, "on": true}));
        w.scene(json!({"type": "add-to-stage", "id": id}));
        senders.extend(w.camera(id, 30));
    }
    w.scene(
        json!({"type": "show-banner", "banner": {"text": "Live from Castyard", "style": "banner"}}),
    );
    std::thread::sleep(Duration::from_secs(2));

    // b's server dies: b retries and says why (never with the key); a and the recording go on.
    drop(b);
    let d = w.wait_destination("b", "Retrying", Duration::from_secs(10));
    let error = d["lastError"].as_str().unwrap_or_default();
    assert!(!error.is_empty() && !error.contains("secret-key"), "{d}");
    assert_eq!(w.destination("a")["state"], "Live");

    // Scene changes while live: layouts, a join, a leave, a ticker.
    w.scene(json!({"type": "set-layout", "layout": "spotlight"}));
    w.scene(json!({"type": "join", "id": "cy", "name": "Cy"}));
    w.scene(json!({"type": "add-to-stage", "id": "cy"}));
    w.scene(json!({"type": "ticker", "text": "Questions? Ask in the chat"}));
    std::thread::sleep(Duration::from_secs(1));
    w.scene(json!({"type": "set-layout", "layout": "sidebar"}));
    w.scene(json!({"type": "leave", "id": "bo"}));

    // b comes back on the same port and is live again within 10 s.
    let b = RtmpServer::start_with(Some(b_port), Some(rec_b.path()));
    w.wait_destination("b", "Live", Duration::from_secs(10));
    let d = w.destination("b");
    assert!(d["retries"].as_u64().unwrap() >= 1, "{d}");
    // a kept sending all along: the bytes it sent over 3 s of show (of media, not of wall
    // time, which a machine busy with other tests can stretch).
    let sent = w.sent_bytes("a");
    let from = w.media_secs();
    let until = Instant::now() + Duration::from_secs(30);
    while w.media_secs() < from + 3.0 {
        assert!(Instant::now() < until, "the show stopped: {}", w.status());
        std::thread::sleep(Duration::from_millis(200));
    }
    let more = w.sent_bytes("a") - sent;
    assert!(
        more > 3 * 100_000 / 8,
        "{more} bytes in 3 s of show: {}",
        w.status()
    );
    let metrics = w.http("GET", "/metrics", None).1;
    let metrics = metrics.as_str().unwrap();
    for series in [
        r#"castyard_compositor_destination_state{broadcast="show",destination="b",state="live"} 1"#,
        r#"castyard_compositor_destination_retries_total{broadcast="show",destination="b"}"#,
        r#"castyard_compositor_destination_sent_bytes_total{broadcast="show",destination="a"}"#,
    ] {
        assert!(metrics.contains(series), "{series} in {metrics}");
    }
    assert_eq!(
        w.status()["encoderRestarts"],
        encoder,
        "the encoder never restarted"
    );

    let recording = w.recording();
    // The show ends at SIGTERM; finalizing (and the recording's poster) comes after.
    let made = w.media_secs();
    let (status, _dir) = w.terminate();
    assert!(status.success(), "{status}");
    for mut s in senders {
        let _ = s.kill();
        let _ = s.wait();
    }
    drop((a, b));

    // Destination a saw the whole show: the right format, and time that never jumps.
    let a_file = rec_a.path().join("secret-key-a.flv");
    assert_show(&a_file, made - a_started, true, "destination a");
    let times = video_times(&a_file);
    let gaps = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    assert!(gaps < 0.2, "a gap of {gaps} s in destination a's video");
    // The recording was finalized on SIGTERM and holds the show too.
    assert_show(&recording, made, false, "the recording");
    // b has its part of the show, from before it died and after it came back.
    assert!(rec_b.path().join("secret-key-b.flv").exists());
}

#[test]
fn bad_commands_change_nothing_and_a_killed_compositor_leaves_a_playable_recording() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(free_port(), json!([]));
    let mut w = Worker::start(dir, &cfg);
    w.scene(json!({"type": "join", "id": "ann", "name": "Ann"}));
    w.scene(json!({"type": "add-to-stage", "id": "ann"}));
    let scene = w.http("GET", "/scene", None).1;
    for (method, path, body, status) in [
        ("POST", "/scene", json!({"type": "explode"}), 400),
        (
            "POST",
            "/scene",
            json!({"type": "add-to-stage", "id": "nobody"}),
            422,
        ),
        (
            "POST",
            "/scene",
            json!({"type": "gain", "id": "ann", "gain": 9}),
            422,
        ),
        (
            "POST",
            "/scene",
            json!({"type": "set-brand", "brand": {"logo": "../../etc/passwd"}}),
            422,
        ),
        ("PUT", "/inputs/ann/microwave", json!({"video": "vp8"}), 404),
        ("PUT", "/inputs/a%2Fb/camera", json!({"video": "vp8"}), 400),
        ("PUT", "/inputs/ann/camera", json!({"video": "av1"}), 400),
        ("PUT", "/inputs/ann/camera", json!({}), 400),
        ("DELETE", "/inputs/ann/camera", Value::Null, 404),
    ] {
        let (got, body) = w.http(method, path, Some(&body));
        assert_eq!(got, status, "{method} {path}: {body}");
        assert!(
            body["error"]["message"].is_string(),
            "a clear error: {body}"
        );
    }
    assert_eq!(w.http("GET", "/scene", None).1, scene, "nothing changed");

    // Every control endpoint wants this broadcast's token; without it nothing changes.
    let status = w.http("GET", "/status", None).1;
    let other = ControlToken::generate();
    let refused = [
        None,
        Some(other.bearer()),
        Some(format!("Basic {}", w.token.expose())),
        Some(format!("Bearer {}x", w.token.expose())),
    ];
    for (method, path, body) in [
        ("GET", "/scene", Value::Null),
        (
            "POST",
            "/scene",
            json!({"type": "show-banner", "banner": {"text": "pwned", "style": "banner"}}),
        ),
        ("POST", "/scene", json!({"type": "leave", "id": "ann"})),
        (
            "PUT",
            "/inputs/eve/camera",
            json!({"video": "vp8", "audio": true}),
        ),
        ("DELETE", "/inputs/ann/camera", Value::Null),
        ("GET", "/status", Value::Null),
        ("GET", "/nowhere", Value::Null),
    ] {
        for auth in &refused {
            let (got, reply) = w.http_as(auth.as_deref(), method, path, Some(&body));
            assert_eq!(got, 401, "{method} {path} with {auth:?}: {reply}");
            assert_eq!(reply["error"]["code"], "unauthorized", "{reply}");
        }
    }
    assert_eq!(
        w.http("GET", "/scene", None).1,
        scene,
        "no refused call changed the scene"
    );
    assert_eq!(
        w.http("GET", "/status", None).1["inputs"],
        status["inputs"],
        "no refused call added an input"
    );
    // The kubelet's probes carry no token; /metrics is open unless a metrics token is set.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(w.http_as(None, "GET", path, None).0, 200, "{path}");
    }

    let senders = w.camera("ann", 20);
    std::thread::sleep(Duration::from_secs(5));
    let recording = w.recording();
    w.child.kill().unwrap();
    w.child.wait().unwrap();
    for mut s in senders {
        let _ = s.kill();
        let _ = s.wait();
    }

    // Fragmented MP4: everything up to the kill decodes.
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&recording)
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{out:?}");
    let secs: f64 = ffprobe(&recording, "format=duration")["format"]["duration"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(secs > 3.0, "{secs} s recorded before the kill");

    // A new compositor on the same data comes back to the same scene, and finalizes the
    // interrupted recording for the library: its manifest, with the length and a poster.
    let w2 = Worker::start(w.dir.take().unwrap(), &cfg);
    assert_eq!(w2.http("GET", "/scene", None).1, scene);
    let manifest = PathBuf::from(format!("{}.json", recording.display()));
    let until = Instant::now() + Duration::from_secs(20);
    while !manifest.exists() {
        assert!(
            Instant::now() < until,
            "no manifest for {}",
            recording.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    let ms = m["durationMs"].as_f64().unwrap();
    assert!((ms / 1000.0 - secs).abs() < 0.5, "{m} vs {secs} s");
    assert_eq!(m["part"], 0);
    assert!(m["sizeBytes"].as_u64().unwrap() > 10_000, "{m}");
    let poster = recording.with_file_name(m["poster"].as_str().unwrap());
    assert!(poster.exists(), "{m}");
    let (status, _) = w2.terminate();
    assert!(status.success());
}

#[test]
fn hls_recording_and_layout_follow_the_spec_while_live_and_a_stopped_recording_is_final() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(free_port(), json!([]));
    cfg["hls"]["enabled"] = json!(false);
    cfg["recording"] = json!(false);
    let w = Worker::start(dir, &cfg);
    let root = w.dir.as_ref().unwrap().path().to_owned();
    assert!(w.status()["hls"].is_null() && w.status()["recording"].is_null());
    let until = |what: &str, ok: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ok() {
            assert!(Instant::now() < deadline, "{what}: {}", w.status());
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    // The config file is re-read every 2 s, as a mounted ConfigMap or the local backend rewrite it.
    cfg["hls"]["enabled"] = json!(true);
    cfg["recording"] = json!(true);
    cfg["layout"] = json!("spotlight");
    std::fs::write(root.join("config.json"), cfg.to_string()).unwrap();
    until("HLS never started", &|| {
        root.join("data/hls/show/index.m3u8").exists() && w.status()["recording"].is_string()
    });
    // The spec's layout (the broadcast settings) reaches the scene too.
    assert_eq!(w.http("GET", "/scene", None).1["layout"], "spotlight");
    let recording = w.recording();
    std::thread::sleep(Duration::from_secs(3));
    cfg["recording"] = json!(false);
    std::fs::write(root.join("config.json"), cfg.to_string()).unwrap();
    let manifest = PathBuf::from(format!("{}.json", recording.display()));
    until("the stopped recording was never finalized", &|| {
        manifest.exists()
    });
    assert!(w.status()["recording"].is_null());
    let m: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    assert_eq!(m["broadcast"], "show");
    assert!(m["durationMs"].as_u64().unwrap() >= 2000, "{m}");
    let poster = recording.with_file_name(m["poster"].as_str().unwrap());
    assert!(poster.exists());
    let probe = ffprobe(&recording, "stream=codec_name");
    assert_eq!(probe["streams"][0]["codec_name"], "h264", "{probe}");
    // The show and its HLS go on; the encoder never restarted.
    let frames = w.status()["frames"].as_u64().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(w.status()["frames"].as_u64().unwrap() > frames);
    assert_eq!(w.status()["encoderRestarts"], 0);
    let (status, _dir) = w.terminate();
    assert!(status.success());
}

#[test]
fn a_decoder_follows_its_tiles_size_and_the_tile_never_blanks_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(free_port(), json!([]));
    cfg["hls"]["enabled"] = json!(false);
    cfg["recording"] = json!(false);
    let w = Worker::start(dir, &cfg);
    let inputs = w.dir.as_ref().unwrap().path().join("data/inputs");
    let ann = || w.status()["inputs"]["ann"].clone();
    let wait = |what: &str, ok: &dyn Fn(&Value) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let a = ann();
            if ok(&a) {
                return a;
            }
            assert!(Instant::now() < deadline, "{what}: {a}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // Alone on stage, Ann's tile is most of the canvas: she is decoded at that size at once.
    w.scene(json!({"type": "join", "id": "ann", "name": "Ann"}));
    w.scene(json!({"type": "camera", "id": "ann", "on": true}));
    w.scene(json!({"type": "add-to-stage", "id": "ann"}));
    let mut senders = w.camera("ann", 30);
    let alone = wait("Ann's video never arrived", &|a| a["live"] == true);
    let big = alone["decodeSize"].clone();
    assert_eq!(alone["resizes"], 0, "{alone}");
    assert!(big[0].as_u64().unwrap() > 500, "{alone}");

    // Bo joins the stage: Ann's tile halves, a decoder at the new size takes over, and every
    // status read in between still shows her live, with frames still counting.
    w.scene(json!({"type": "join", "id": "bo", "name": "Bo"}));
    w.scene(json!({"type": "camera", "id": "bo", "on": true}));
    w.scene(json!({"type": "add-to-stage", "id": "bo"}));
    let mut frames = alone["videoFrames"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut overlapped = false;
    let after = loop {
        let a = ann();
        assert_eq!(a["live"], true, "the tile showed a placeholder: {a}");
        let now = a["videoFrames"].as_u64().unwrap();
        assert!(now >= frames, "{a}");
        frames = now;
        // Make before break: the new decoder runs beside the old until its first picture
        // (at least FFmpeg's start and a keyframe: far longer than one poll).
        overlapped |= a["decoders"] == 2;
        if a["decodeSize"] != big && a["decoders"] == 1 {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "Ann was never decoded smaller: {a}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(
        overlapped,
        "the old decoder stopped before the new one showed"
    );
    let small = &after["decodeSize"];
    assert!(
        small[0].as_u64() < big[0].as_u64() && small[1].as_u64() < big[1].as_u64(),
        "{big} -> {small}"
    );
    assert_eq!(after["resizes"], 1, "{after}");
    std::thread::sleep(Duration::from_secs(1));
    let later = ann();
    assert!(
        later["videoFrames"].as_u64() > after["videoFrames"].as_u64(),
        "{later}"
    );
    // The old decoder is gone, process and all.
    let sdp = format!("{}/ann-video-", inputs.display());
    let running = std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| std::fs::read(e.ok()?.path().join("cmdline")).ok())
        .filter(|c| String::from_utf8_lossy(c).contains(&sdp))
        .count();
    assert_eq!(running, 1, "Ann's video decoders");

    // Bo leaves: Ann's tile grows back, and so does her picture.
    w.scene(json!({"type": "leave", "id": "bo"}));
    wait("Ann was never decoded at her solo size again", &|a| {
        a["decodeSize"] == big && a["decoders"] == 1 && a["live"] == true
    });
    for s in &mut senders {
        let _ = s.kill();
        let _ = s.wait();
    }
}

/// A playlist's `#EXT-X-PART` as (duration, file, independent).
type Part = (f64, String, bool);

/// A playlist's parts grouped by the segment they belong to (`None` for the one still being
/// written).
fn parts_by_segment(playlist: &str) -> Vec<(Option<String>, Vec<Part>)> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let mut lines = playlist.lines();
    while let Some(line) = lines.next() {
        if let Some(attrs) = line.strip_prefix("#EXT-X-PART:") {
            let duration = attrs
                .split(',')
                .find_map(|a| a.strip_prefix("DURATION="))
                .unwrap()
                .parse()
                .unwrap();
            let uri = attrs.split('"').nth(1).unwrap().to_owned();
            parts.push((duration, uri, attrs.contains("INDEPENDENT=YES")));
        } else if line.starts_with("#EXTINF:") {
            out.push((lines.next().map(str::to_owned), std::mem::take(&mut parts)));
        }
    }
    out.push((None, parts));
    out
}

#[test]
fn low_latency_hls_serves_parts_of_a_third_of_a_second_that_add_up_to_segments() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(free_port(), json!([]));
    cfg["hls"]["lowLatency"] = json!(true);
    cfg["recording"] = json!(false);
    let w = Worker::start(dir, &cfg);
    let hls = w.dir.as_ref().unwrap().path().join("data/hls/show");
    w.scene(json!({"type": "join", "id": "ann", "name": "Ann"}));
    w.scene(json!({"type": "camera", "id": "ann", "on": true}));
    w.scene(json!({"type": "add-to-stage", "id": "ann"}));
    let mut senders = w.camera("ann", 30);
    let deadline = Instant::now() + Duration::from_secs(30);
    let playlist = loop {
        let text = std::fs::read_to_string(hls.join("index.m3u8")).unwrap_or_default();
        if text.matches("#EXTINF").count() >= 3 {
            break text;
        }
        assert!(Instant::now() < deadline, "no three segments: {text}");
        std::thread::sleep(Duration::from_millis(200));
    };
    for tag in [
        "#EXT-X-VERSION:9",
        "#EXT-X-PART-INF:PART-TARGET=0.400",
        "#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.200",
        "#EXT-X-MAP:URI=\"init0.mp4\"",
        "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p",
    ] {
        assert!(playlist.contains(tag), "{tag} in {playlist}");
    }
    let init = std::fs::read(hls.join("init0.mp4")).unwrap();
    let mut checked = 0;
    for (segment, parts) in parts_by_segment(&playlist) {
        for (i, (duration, _, independent)) in parts.iter().enumerate() {
            assert!(*duration > 0.0 && *duration <= 0.4, "{playlist}");
            // Segments start at a keyframe, so their first parts play on their own.
            assert!(i > 0 || *independent, "{playlist}");
        }
        let Some(segment) = segment else { continue };
        if parts.is_empty() {
            continue;
        }
        // A complete segment is its parts, byte for byte, and plays on its own after the init.
        let bytes = std::fs::read(hls.join(&segment)).unwrap();
        let joined: Vec<u8> = parts
            .iter()
            .flat_map(|(_, p, _)| std::fs::read(hls.join(p)).unwrap())
            .collect();
        assert_eq!(bytes, joined, "{segment}");
        let playable = hls.join("check.mp4");
        std::fs::write(&playable, [init.clone(), bytes].concat()).unwrap();
        let v = ffprobe(&playable, "stream=codec_name,width,height");
        let codecs: Vec<&str> = v["streams"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|s| s["codec_name"].as_str())
            .collect();
        assert_eq!(codecs, ["h264", "aac"], "{segment}: {v}");
        checked += 1;
    }
    assert!(checked >= 2, "{playlist}");

    // Ending the show ends the playlist, and what it lists plays from start to end.
    let (status, dir) = w.terminate();
    assert!(status.success());
    let hls = dir.path().join("data/hls/show");
    let playlist = std::fs::read_to_string(hls.join("index.m3u8")).unwrap();
    assert!(playlist.ends_with("#EXT-X-ENDLIST\n"), "{playlist}");
    assert!(!playlist.contains("PRELOAD-HINT"), "{playlist}");
    let listed: f64 = playlist
        .lines()
        .filter_map(|l| {
            l.strip_prefix("#EXTINF:")?
                .trim_end_matches(',')
                .parse::<f64>()
                .ok()
        })
        .sum();
    let v = ffprobe(&hls.join("index.m3u8"), "format=duration");
    let played: f64 = v["format"]["duration"].as_str().unwrap().parse().unwrap();
    assert!(
        (played - listed).abs() < 0.5,
        "{played} s played of {listed} s listed"
    );
    for s in &mut senders {
        let _ = s.kill();
        let _ = s.wait();
    }
}

#[test]
fn a_worker_without_its_control_token_does_not_start_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("compositor.json"),
        config(free_port(), json!([])).to_string(),
    )
    .unwrap();
    let sfu = json!({"broadcast": "show", "maxParticipants": 3,
                     "signallingPort": free_port(), "mediaPort": free_port()});
    std::fs::write(d.join("sfu.json"), sfu.to_string()).unwrap();
    std::fs::write(d.join("short"), "tooshort").unwrap();
    for (role, file) in [
        ("compositor", "missing"),
        ("sfu", "missing"),
        ("compositor", "short"),
        ("sfu", "short"),
    ] {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_castyard-media-worker"));
        cmd.arg(role)
            .arg("--config")
            .arg(d.join(format!("{role}.json")))
            .arg("--control-token-file")
            .arg(d.join(file));
        if role == "compositor" {
            cmd.arg("--data-dir").arg(d.join("data"));
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{role}: {stderr}");
        assert!(stderr.contains("control token"), "{role} {file}: {stderr}");
    }
}

/// An RTMPS destination: stunnel with `cert` in front of `nginx`, reached at 127.0.0.1 (so the
/// certificate is checked against its IP SANs).
fn rtmps(name: &str, relay: &TlsRelay) -> Value {
    json!({"name": name, "kind": "custom", "url": format!("rtmps://127.0.0.1:{}/live", relay.port),
           "streamKeySecretRef": {"name": "keys", "key": name}, "enabled": true})
}

fn keys(dir: &Path, names: &[&str]) {
    std::fs::create_dir_all(dir.join("keys/keys")).unwrap();
    for n in names {
        std::fs::write(dir.join("keys/keys").join(n), format!("stream-key-{n}\n")).unwrap();
    }
}

/// The codecs nginx recorded for a stream key, once its file has them.
fn recorded_codecs(rec: &Path, key: &str) -> String {
    let file = rec.join(format!("{key}.flv"));
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let v = ffprobe(&file, "stream=codec_name");
        let codecs: Vec<&str> = v["streams"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["codec_name"].as_str())
            .collect();
        if codecs.contains(&"h264") && codecs.contains(&"aac") {
            return codecs.join(",");
        }
        assert!(
            Instant::now() < until,
            "{} never held H.264 and AAC: {v}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn rtmps_reaches_a_destination_trusted_through_an_extra_ca_and_tls_failures_say_why() {
    let ca = TestCa::new();
    let stranger = TestCa::new();
    let rec = tempfile::tempdir().unwrap();
    let nginx = RtmpServer::start_with(None, Some(rec.path()));
    let (cert, key) = ca.server(&["127.0.0.1", "localhost"], false);
    let good = TlsRelay::start(nginx.port, &cert, &key);
    let (cert, key) = stranger.server(&["127.0.0.1"], false);
    let untrusted = TlsRelay::start(nginx.port, &cert, &key);
    let (cert, key) = ca.server(&["rtmp.example.com"], false);
    let misnamed = TlsRelay::start(nginx.port, &cert, &key);
    let (cert, key) = ca.server(&["127.0.0.1"], true);
    let expired = TlsRelay::start(nginx.port, &cert, &key);

    let dir = tempfile::tempdir().unwrap();
    let names = ["good", "plain", "untrusted", "misnamed", "expired"];
    keys(dir.path(), &names);
    let ca_file = dir.path().join("extra-ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let cfg = config(
        free_port(),
        json!([
            rtmps("good", &good),
            destination("plain", nginx.port),
            rtmps("untrusted", &untrusted),
            rtmps("misnamed", &misnamed),
            rtmps("expired", &expired)
        ]),
    );
    let log = dir.path().join("compositor.log");
    let log_file = std::fs::File::create(&log).unwrap();
    let w = Worker::start_with(dir, &cfg, |c| {
        c.arg("--extra-ca-file")
            .arg(&ca_file)
            // Only the flag's CA (and the built-in roots) vouch for the test's servers.
            .env_remove("SSL_CERT_FILE")
            .env_remove("SSL_CERT_DIR")
            .stderr(log_file);
    });
    w.wait_destination("good", "Live", Duration::from_secs(15));
    w.wait_destination("plain", "Live", Duration::from_secs(15));
    for (name, reason) in [
        ("untrusted", "unknown issuer"),
        ("misnamed", "name mismatch"),
        ("expired", "expired"),
    ] {
        let d = w.wait_destination(name, "Retrying", Duration::from_secs(15));
        assert_eq!(d["errorKind"], "Tls", "{d}");
        let error = d["lastError"].as_str().unwrap();
        assert!(error.starts_with(&format!("TLS: {reason}")), "{d}");
    }
    let metrics = w.http("GET", "/metrics", None).1;
    let metrics = metrics.as_str().unwrap();
    assert!(
        metrics.contains(
            r#"castyard_compositor_destination_failures_total{broadcast="show",destination="misnamed",kind="tls"}"#
        ),
        "{metrics}"
    );
    // The failing ones touch nothing else: the good ones stay live, the recording runs.
    assert_eq!(w.destination("good")["state"], "Live");
    assert_eq!(w.destination("plain")["state"], "Live");
    let from = w.media_secs();
    while w.media_secs() < from + 3.0 {
        std::thread::sleep(Duration::from_millis(200));
    }
    let recording = w.recording();
    let (status, _dir) = w.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(recorded_codecs(rec.path(), "stream-key-good"), "h264,aac");
    assert_eq!(recorded_codecs(rec.path(), "stream-key-plain"), "h264,aac");
    assert!(
        ffprobe(&recording, "stream=codec_name")
            .to_string()
            .contains("h264")
    );
    // Neither a stream key nor a private key reaches the log.
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("unknown issuer"), "the failures are logged");
    for secret in ["stream-key-", "PRIVATE KEY"] {
        assert!(!text.contains(secret), "{secret} in the log: {text}");
    }
    drop((good, untrusted, misnamed, expired, nginx));
}

#[test]
fn rtmps_trusts_the_system_store_named_by_ssl_cert_file() {
    let ca = TestCa::new();
    let rec = tempfile::tempdir().unwrap();
    let nginx = RtmpServer::start_with(None, Some(rec.path()));
    let (cert, key) = ca.server(&["localhost"], false);
    let relay = TlsRelay::start(nginx.port, &cert, &key);
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), &["system"]);
    let store = dir.path().join("store.pem");
    std::fs::write(&store, &ca.pem).unwrap();
    // By name this time: the certificate is checked against the URL's host, localhost.
    let dest = json!({"name": "system", "kind": "custom",
        "url": format!("rtmps://localhost:{}/live", relay.port),
        "streamKeySecretRef": {"name": "keys", "key": "system"}, "enabled": true});
    let cfg = config(free_port(), json!([dest]));
    let w = Worker::start_with(dir, &cfg, |c| {
        c.env("SSL_CERT_FILE", &store).env_remove("SSL_CERT_DIR");
    });
    w.wait_destination("system", "Live", Duration::from_secs(15));
    let (status, _dir) = w.terminate();
    assert!(status.success(), "{status}");
    assert_eq!(recorded_codecs(rec.path(), "stream-key-system"), "h264,aac");
    drop((relay, nginx));
}
