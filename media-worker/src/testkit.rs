//! Real parts for tests (an RTMP server to publish to), shared by this crate's and the API's
//! test suites; not used by the worker itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command};

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh control token written where a worker reads it (`<dir>/control-token`, 0600), and
/// the path to pass as `--control-token-file`.
pub fn control_token(dir: &std::path::Path) -> (castyard_proto::ControlToken, PathBuf) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let token = castyard_proto::ControlToken::generate();
    let path = dir.join("control-token");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut f, token.expose().as_bytes()).unwrap();
    (token, path)
}

/// nginx with Debian's RTMP module on a free loopback port, stopped on drop.
pub struct RtmpServer {
    pub port: u16,
    _daemon: Daemon,
}

/// A test's helper process and its folder: stopped and removed on drop.
struct Daemon {
    child: Child,
    dir: PathBuf,
}

impl Daemon {
    /// Waits (5 s at most) until `child` listens on `port`; otherwise stops it and fails
    /// with its log.
    fn listening(port: u16, child: Child, dir: PathBuf, what: &str, log: &str) -> Self {
        let daemon = Self { child, dir };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return daemon;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(daemon.dir.join(log)).unwrap_or_default();
        drop(daemon);
        panic!("{what} did not start: {log}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl RtmpServer {
    pub fn start() -> Self {
        Self::start_with(None, None)
    }

    /// On a given port (to bring a stopped destination back), recording every stream it
    /// receives to `<record>/<key>.flv`.
    pub fn start_with(port: Option<u16>, record: Option<&std::path::Path>) -> Self {
        let port = port.unwrap_or_else(free_port);
        let record = match record {
            Some(dir) => format!("record all; record_path {};", dir.display()),
            None => "record off;".into(),
        };
        let dir =
            std::env::temp_dir().join(format!("castyard-nginx-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        let conf = dir.join("nginx.conf");
        std::fs::write(
            &conf,
            format!(
                "load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;\n\
                 daemon off;\nmaster_process off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
                 events {{}}\n\
                 rtmp {{ server {{ listen 127.0.0.1:{port}; application live {{ live on; {record} }} }} }}\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("nginx")
            .args([
                "-c",
                conf.to_str().unwrap(),
                "-p",
                dir.to_str().unwrap(),
                "-e",
                dir.join("error.log").to_str().unwrap(),
            ])
            .spawn()
            .expect(
                "nginx is installed (scripts/test-deps.sh installs nginx and libnginx-mod-rtmp)",
            );
        Self {
            port,
            _daemon: Daemon::listening(port, child, dir, "nginx-rtmp", "error.log"),
        }
    }
}

/// A certificate authority made for one test, and the server certificates it signs (rcgen).
pub struct TestCa {
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
    /// The CA's certificate, PEM: what a client must trust.
    pub pem: String,
}

impl Default for TestCa {
    fn default() -> Self {
        Self::new()
    }
}

impl TestCa {
    pub fn new() -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        // A name of its own: two test CAs are two issuers, as two real CAs are.
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        params.distinguished_name.push(
            rcgen::DnType::CommonName,
            format!("Castyard test CA {} {n}", std::process::id()),
        );
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        Self { params, key, pem }
    }

    /// A server certificate and its key (PEM) for `names` (DNS names or IP addresses),
    /// valid from yesterday for a year, or expired yesterday.
    pub fn server(&self, names: &[&str], expired: bool) -> (String, String) {
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        let now = time::OffsetDateTime::now_utc();
        let day = time::Duration::days(1);
        (params.not_before, params.not_after) = if expired {
            (now - 30 * day, now - day)
        } else {
            (now - day, now + 365 * day)
        };
        let key = rcgen::KeyPair::generate().unwrap();
        let issuer = rcgen::Issuer::from_params(&self.params, &self.key);
        let cert = params.signed_by(&key, &issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// stunnel4 terminating TLS on a free loopback port in front of a plain TCP server (an
/// nginx-rtmp), as an RTMPS ingest endpoint does; stopped on drop.
pub struct TlsRelay {
    pub port: u16,
    _daemon: Daemon,
}

impl TlsRelay {
    pub fn start(upstream: u16, cert_pem: &str, key_pem: &str) -> Self {
        let port = free_port();
        let dir =
            std::env::temp_dir().join(format!("castyard-stunnel-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a temporary folder");
        std::fs::write(dir.join("cert.pem"), cert_pem).unwrap();
        std::fs::write(dir.join("key.pem"), key_pem).unwrap();
        let conf = dir.join("stunnel.conf");
        std::fs::write(
            &conf,
            format!(
                "foreground = yes\npid =\noutput = {d}/stunnel.log\n\
                 [rtmps]\naccept = 127.0.0.1:{port}\nconnect = 127.0.0.1:{upstream}\n\
                 cert = {d}/cert.pem\nkey = {d}/key.pem\n",
                d = dir.display()
            ),
        )
        .unwrap();
        let child = Command::new("stunnel4")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("stunnel4 is installed (scripts/test-deps.sh installs it)");
        Self {
            port,
            _daemon: Daemon::listening(port, child, dir, "stunnel", "stunnel.log"),
        }
    }
}
