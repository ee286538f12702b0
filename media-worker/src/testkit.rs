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
    child: Child,
    dir: PathBuf,
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
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Self { port, child, dir };
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let mut child = child;
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "nginx-rtmp did not start: {}",
            std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
        );
    }
}

impl Drop for RtmpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
