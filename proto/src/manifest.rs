//! The manifest a finished recording leaves beside its file (written by the compositor, read
//! by the API's library).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Written as `<recording>.mp4.json` once the file is final, so a half-written recording is
/// never listed. It names files, never paths: the reader resolves them in the manifest's own
/// directory, so a manifest cannot point anywhere else.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// The broadcast's resource name (its folder under the media root).
    pub broadcast: String,
    pub file: String,
    pub poster: Option<String>,
    pub duration_ms: u64,
    pub size_bytes: u64,
    /// 0 for the recording, N for the file a restarted recorder continued in.
    pub part: u32,
    pub finished_at_ms: i64,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    #[error("the manifest is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
}

fn ensure(ok: bool, why: impl FnOnce() -> String) -> Result<(), ManifestError> {
    if ok {
        Ok(())
    } else {
        Err(ManifestError::Invalid(why()))
    }
}

pub const SUFFIX: &str = ".json";
/// A manifest the library has taken is renamed to this, so it is read once.
pub const DONE_SUFFIX: &str = ".registered";

fn file_name(p: &Path) -> Result<String, ManifestError> {
    p.file_name()
        .and_then(|n| n.to_str())
        .map(str::to_owned)
        .ok_or_else(|| ManifestError::Invalid(format!("{} has no UTF-8 file name", p.display())))
}

/// A plain file name in the manifest's directory (no separators, no `..`).
fn plain(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.contains(['/', '\\', '\0'])
        && Path::new(name).components().count() == 1
}

impl Manifest {
    pub fn new(
        broadcast: &str,
        recording: &Path,
        poster: Option<&Path>,
        duration_ms: u64,
        size_bytes: u64,
        part: u32,
        finished_at_ms: i64,
    ) -> Result<Self, ManifestError> {
        Ok(Self {
            broadcast: broadcast.to_owned(),
            file: file_name(recording)?,
            poster: poster.map(file_name).transpose()?,
            duration_ms,
            size_bytes,
            part,
            finished_at_ms,
        })
    }

    /// Writes the manifest beside the recording, atomically (a reader never sees half of it).
    pub fn write(&self, dir: &Path) -> Result<PathBuf, ManifestError> {
        let path = dir.join(format!("{}{SUFFIX}", self.file));
        let tmp = dir.join(format!(".{}{SUFFIX}.tmp", self.file));
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }

    /// Reads and checks one manifest: its names are plain and its recording exists.
    pub fn read(path: &Path) -> Result<Self, ManifestError> {
        let m: Self = serde_json::from_slice(&std::fs::read(path)?)?;
        ensure(plain(&m.file), || {
            format!("recording name {:?} is not a plain file name", m.file)
        })?;
        ensure(m.file.ends_with(".mp4"), || {
            format!("recording {:?} is not an MP4", m.file)
        })?;
        if let Some(p) = &m.poster {
            ensure(plain(p), || {
                format!("poster name {p:?} is not a plain file name")
            })?;
        }
        ensure(plain(&m.broadcast), || {
            format!("broadcast {:?} is not a name", m.broadcast)
        })?;
        Ok(m)
    }

    /// Marks a manifest as taken by the library.
    pub fn mark_registered(path: &Path) -> std::io::Result<()> {
        let mut done = path.as_os_str().to_owned();
        done.push(DONE_SUFFIX);
        std::fs::rename(path, done)
    }
}
