//! The manifest a finished recording leaves beside its file, from which the API registers it in the library.

use std::path::{Path, PathBuf};

pub use castyard_proto::manifest::Manifest;

use castyard_proto::manifest::{DONE_SUFFIX, SUFFIX};

/// Manifests not yet taken under `<media_root>/<broadcast>/recordings/`.
pub fn pending(media_root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(broadcasts) = std::fs::read_dir(media_root) else {
        return out;
    };
    for b in broadcasts.flatten() {
        let Ok(files) = std::fs::read_dir(b.path().join("recordings")) else {
            continue;
        };
        for f in files.flatten() {
            let name = f.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(&format!(".mp4{SUFFIX}")) && !name.starts_with('.') {
                out.push(f.path());
            }
        }
    }
    out.sort();
    out
}

/// Recordings a killed compositor left without a manifest in `dir`: each `.mp4` with neither a
/// manifest nor a taken one beside it. Only a compositor starting on its own data asks (before
/// it records anything), or the API once the broadcast has long ended, so none of them is still
/// being written.
pub fn orphans(dir: &Path) -> Vec<PathBuf> {
    let Ok(files) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = files
        .flatten()
        .map(|f| f.path())
        .filter(|p| {
            let name = p.file_name().map(|n| n.to_string_lossy().into_owned());
            name.is_some_and(|n| n.ends_with(".mp4") && !n.starts_with('.'))
                && !p.with_extension(format!("mp4{SUFFIX}")).exists()
                && !p
                    .with_extension(format!("mp4{SUFFIX}{DONE_SUFFIX}"))
                    .exists()
        })
        .collect();
    out.sort();
    out
}

/// The part number in a recording's name (`<name>.partN.mp4`), 0 for the first.
pub fn part_of(path: &Path) -> u32 {
    path.file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.rsplit_once(".part"))
        .and_then(|(_, n)| n.parse().ok())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orphans_are_recordings_without_any_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for f in [
            "bc-1.mp4",
            "bc-1.mp4.json",
            "bc-2.mp4",
            "bc-2.mp4.json.registered",
            "bc-3.mp4",
            "bc-3.part2.mp4",
            ".hidden.mp4",
            "bc-3.jpg",
        ] {
            std::fs::write(d.join(f), b"x").unwrap();
        }
        assert_eq!(orphans(d), [d.join("bc-3.mp4"), d.join("bc-3.part2.mp4")]);
        assert_eq!(part_of(&d.join("bc-3.part2.mp4")), 2);
        assert_eq!(part_of(&d.join("bc-3.mp4")), 0);
        assert!(orphans(&d.join("missing")).is_empty());
    }

    const B: &str = "bc-0b7c4a52-2f0e-4b43-9a3e-1f6f3d7f6a01";

    #[test]
    fn written_manifests_are_found_read_and_taken_once() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(B).join("recordings");
        std::fs::create_dir_all(&dir).unwrap();
        let rec = dir.join(format!("{B}-1.mp4"));
        std::fs::write(&rec, b"x").unwrap();
        let m = Manifest::new(B, &rec, Some(&rec.with_extension("jpg")), 5000, 1, 0, 7).unwrap();
        let path = m.write(&dir).unwrap();
        assert_eq!(pending(root.path()), vec![path.clone()]);
        assert_eq!(Manifest::read(&path).unwrap(), m);
        Manifest::mark_registered(&path).unwrap();
        assert!(pending(root.path()).is_empty());
    }

    #[test]
    fn manifests_that_point_elsewhere_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let base = Manifest {
            broadcast: B.into(),
            file: "a.mp4".into(),
            poster: None,
            duration_ms: 1,
            size_bytes: 1,
            part: 0,
            finished_at_ms: 0,
        };
        let cases = [
            Manifest {
                file: "../../castyard.db.mp4".into(),
                ..base.clone()
            },
            Manifest {
                file: "/etc/passwd.mp4".into(),
                ..base.clone()
            },
            Manifest {
                file: "a.txt".into(),
                ..base.clone()
            },
            Manifest {
                poster: Some("../master.key".into()),
                ..base.clone()
            },
            Manifest {
                broadcast: "../x".into(),
                ..base.clone()
            },
        ];
        for (i, m) in cases.iter().enumerate() {
            let p = dir.path().join(format!("{i}.mp4.json"));
            std::fs::write(&p, serde_json::to_vec(m).unwrap()).unwrap();
            assert!(Manifest::read(&p).is_err(), "{m:?} was accepted");
        }
        let p = dir.path().join("garbage.mp4.json");
        std::fs::write(&p, b"{not json").unwrap();
        assert!(Manifest::read(&p).is_err());
    }
}
