//! Whether this machine's FFmpeg can make a show: found, new enough, with the encoders the
//! compositor uses, and able to encode a frame with them. Each failure is one line naming the fix.

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The oldest FFmpeg the compositor's command lines are tested with (Debian 12 ships 5.1).
pub const MIN_VERSION: (u32, u32) = (5, 0);
/// The encoders every show uses (see `compositor::encode`).
pub const ENCODERS: [&str; 2] = ["libx264", "aac"];

/// What was found, for the start-up log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ffmpeg {
    /// As FFmpeg prints it ("5.1.6-0+deb12u1", or a git build's "N-…").
    pub version: String,
}

fn run(program: &Path, args: &[&str]) -> std::io::Result<Output> {
    Command::new(program)
        .args(["-hide_banner", "-nostdin"])
        .args(args)
        .stdin(Stdio::null())
        .output()
}

fn last_line(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_owned()
}

/// `5.1.6-0+deb12u1` → (5, 1); a git build (`N-113316-g…`) has no number to compare.
fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().and_then(|m| m.parse().ok()).unwrap_or(0);
    Some((major, minor))
}

/// Runs `program` three times (version, encoder list, a one-frame encode): about a tenth of
/// a second, done once at start.
pub fn check(program: &Path) -> Result<Ffmpeg, String> {
    let shown = program.display();
    let out = match run(program, &["-version"]) {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(if program.components().count() == 1 {
                format!("{shown} not found on PATH: apt-get install ffmpeg, or set CASTYARD_FFMPEG")
            } else {
                format!("{shown} does not exist: install FFmpeg, or set CASTYARD_FFMPEG")
            });
        }
        Err(e) => return Err(format!("{shown} cannot run: {e}; set CASTYARD_FFMPEG")),
    };
    if !out.status.success() {
        return Err(format!(
            "{shown} -version failed ({}): {}",
            out.status,
            last_line(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text
        .split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .unwrap_or("unknown")
        .to_owned();
    if let Some(found) = parse_version(&version)
        && found < MIN_VERSION
    {
        return Err(format!(
            "FFmpeg {version} is too old: {}.{} or newer is needed (apt-get install ffmpeg)",
            MIN_VERSION.0, MIN_VERSION.1
        ));
    }
    let out = run(program, &["-encoders"]).map_err(|e| format!("{shown} cannot run: {e}"))?;
    let list = String::from_utf8_lossy(&out.stdout);
    // Lines look like " V....D libx264  libx264 H.264 / AVC ...".
    let has = |enc: &str| {
        list.lines()
            .any(|l| l.split_whitespace().nth(1) == Some(enc))
    };
    let missing: Vec<&str> = ENCODERS.into_iter().filter(|e| !has(e)).collect();
    if !missing.is_empty() {
        return Err(format!(
            "FFmpeg {version} lacks the {} encoder{}: install a build with libx264 and AAC \
             (Debian's and Ubuntu's ffmpeg package has both), or set CASTYARD_FFMPEG",
            missing.join(" and "),
            if missing.len() > 1 { "s" } else { "" }
        ));
    }
    // Listed is not working: a broken library or a stub binary fails here, not mid-show.
    let out = run(
        program,
        &[
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "color=size=64x64:rate=1",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=sample_rate=48000",
            "-frames:v",
            "1",
            "-t",
            "0.1",
            "-c:v",
            "libx264",
            "-c:a",
            "aac",
            "-f",
            "null",
            "-",
        ],
    )
    .map_err(|e| format!("{shown} cannot run: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "FFmpeg {version} cannot encode a test frame with libx264 and AAC ({}): {}",
            out.status,
            last_line(&out.stderr)
        ));
    }
    Ok(Ffmpeg { version })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake(dir: &Path, script: &str) -> std::path::PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join("ffmpeg");
        std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn debians_ffmpeg_passes() {
        let found = check(Path::new("ffmpeg")).expect("the test machine has Debian's FFmpeg");
        assert!(parse_version(&found.version).is_some_and(|v| v >= MIN_VERSION));
    }

    #[test]
    fn each_failure_names_its_fix() {
        let err = check(Path::new("castyard-no-such-ffmpeg")).unwrap_err();
        assert_eq!(
            err,
            "castyard-no-such-ffmpeg not found on PATH: apt-get install ffmpeg, or set CASTYARD_FFMPEG"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = check(&dir.path().join("nope")).unwrap_err();
        assert!(err.ends_with("does not exist: install FFmpeg, or set CASTYARD_FFMPEG"));

        let old = fake(dir.path(), "echo 'ffmpeg version 4.2.7 Copyright'");
        assert!(
            check(&old)
                .unwrap_err()
                .contains("4.2.7 is too old: 5.0 or newer")
        );

        let no_x264 = fake(
            dir.path(),
            r#"case "$3" in -version) echo 'ffmpeg version 6.0';; -encoders) echo ' A....D aac  AAC';; esac"#,
        );
        let err = check(&no_x264).unwrap_err();
        assert!(err.contains("lacks the libx264 encoder"), "{err}");

        let broken = fake(
            dir.path(),
            r#"case "$3" in -version) echo 'ffmpeg version 6.0';; -encoders) printf ' V....D libx264 x\n A....D aac a\n';; *) echo 'libx264: cannot open shared object' >&2; exit 1;; esac"#,
        );
        let err = check(&broken).unwrap_err();
        assert!(
            err.contains("cannot encode a test frame")
                && err.ends_with("cannot open shared object"),
            "{err}"
        );
    }

    #[test]
    fn versions_compare_by_number() {
        assert_eq!(parse_version("5.1.6-0+deb12u1"), Some((5, 1)));
        assert_eq!(parse_version("7.0"), Some((7, 0)));
        assert_eq!(parse_version("N-113316-gabc"), None);
    }
}
