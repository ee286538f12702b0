//! The `castyard` binary itself: `up` starts, prints its URL, serves, and shuts down on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn up_serves_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["up", "--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path().join("data"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(
        first.trim(),
        format!("Castyard is running at http://127.0.0.1:{port}")
    );

    let data = dir.path().join("data");
    assert!(
        data.join("castyard.db").exists(),
        "SQLite lives in the data directory"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("master.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the generated key is private");
    }
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    use std::io::{Read, Write};
    s.write_all(b"GET /api/status HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(resp.contains("\"mode\":\"embedded\""), "{resp}");

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "castyard did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(exit.success(), "{exit:?}");
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(err.contains("shut down cleanly"), "{err}");
}

#[test]
fn help_documents_every_flag_and_bad_flags_fail() {
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["up", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--listen",
        "--data-dir",
        "--public-url",
        "CASTYARD_LISTEN",
        "CASTYARD_DATA_DIR",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from `castyard up --help`"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["api", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--database-url",
        "DATABASE_URL",
        "--encryption-key",
        "--namespace",
        "--backend",
    ] {
        assert!(
            help.contains(flag),
            "{flag} missing from `castyard api --help`"
        );
    }
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args(["up", "--listen", "not-an-address"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--listen"));
    let out = Command::new(env!("CARGO_BIN_EXE_castyard"))
        .args([
            "api",
            "--database-url",
            "mysql://x",
            "--encryption-key",
            "c2hvcnQ=",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("32 bytes"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
