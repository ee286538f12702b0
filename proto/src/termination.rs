//! Why a worker stopped: the one line it leaves behind and its supervisor (the kubelet or the
//! local backend) shows the user.
//!
//! Kubernetes copies a container's termination-message file into the pod's status
//! (`lastState.terminated.message`, 4 KiB at most); the local backend reads the same file. The
//! line is JSON with a stable `reason` (the Broadcast condition's reason) and a `message` that
//! says what to do.

use std::path::Path;

use serde::{Deserialize, Serialize};

/// Where Kubernetes looks for the message unless the pod says otherwise.
pub const KUBERNETES_PATH: &str = "/dev/termination-log";

/// Kubernetes keeps no more of the file than this.
const MAX_BYTES: usize = 4096;

/// Stable reasons, as they appear in conditions, Events and the API.
pub mod reason {
    /// FFmpeg is missing, too old, or lacks an encoder the compositor uses.
    pub const ENCODER_UNAVAILABLE: &str = "EncoderUnavailable";
    /// The worker's config file is missing or not valid.
    pub const CONFIG_INVALID: &str = "ConfigInvalid";
    /// The control token file is missing or not a token.
    pub const CONTROL_TOKEN_MISSING: &str = "ControlTokenMissing";
    /// A port the worker must listen on is taken.
    pub const PORT_UNAVAILABLE: &str = "PortUnavailable";
    /// Anything else the worker could not recover from.
    pub const WORKER_ERROR: &str = "WorkerError";
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Termination {
    pub reason: String,
    pub message: String,
}

impl Termination {
    pub fn new(reason: &str, message: impl Into<String>) -> Self {
        Self {
            reason: reason.to_owned(),
            message: message.into(),
        }
    }

    /// Writes the message where the supervisor reads it; a worker that cannot is still
    /// exiting, so the error is only returned for the caller to log.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let mut t = self.clone();
        // Room for the JSON around it; cut on a character boundary.
        while serde_json::to_vec(&t).map_or(0, |v| v.len()) > MAX_BYTES {
            let keep = t.message.len().saturating_sub(256);
            let mut at = keep;
            while !t.message.is_char_boundary(at) {
                at -= 1;
            }
            t.message.truncate(at);
        }
        let line = serde_json::to_string(&t).map_err(std::io::Error::other)?;
        std::fs::write(path, line + "\n")
    }

    /// What a supervisor found: our JSON line, or, when something else ended the process (a
    /// panic, the kernel's OOM killer, a log tail Kubernetes fell back to), that text as the
    /// message of a `WorkerError`.
    pub fn parse(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.is_empty() {
            return None;
        }
        Some(serde_json::from_str(text).unwrap_or_else(|_| {
            // A log tail: its last line is the one that says why.
            let last = text.lines().last().unwrap_or(text);
            Self::new(reason::WORKER_ERROR, last.trim())
        }))
    }

    /// Reads and removes the file, so a message is reported for the exit that left it only.
    pub fn take(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        let _ = std::fs::remove_file(path);
        Self::parse(&text)
    }
}

impl std::fmt::Display for Termination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.message)
    }
}

impl std::error::Error for Termination {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_message_is_read_back_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination");
        let t = Termination::new(reason::ENCODER_UNAVAILABLE, "ffmpeg not found on PATH");
        t.write(&path).unwrap();
        assert_eq!(Termination::take(&path), Some(t));
        assert_eq!(Termination::take(&path), None, "taken once");
    }

    #[test]
    fn a_long_message_fits_what_kubernetes_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("termination");
        Termination::new(reason::WORKER_ERROR, "é".repeat(5000))
            .write(&path)
            .unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() <= MAX_BYTES as u64 + 1);
        let back = Termination::take(&path).unwrap();
        assert!(back.message.starts_with("éé"));
    }

    #[test]
    fn text_that_is_not_ours_becomes_a_worker_error_with_its_last_line() {
        let t = Termination::parse("starting\nthread 'main' panicked at boom\n").unwrap();
        assert_eq!(t.reason, reason::WORKER_ERROR);
        assert_eq!(t.message, "thread 'main' panicked at boom");
        assert_eq!(Termination::parse("  \n"), None);
    }
}
