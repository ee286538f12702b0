//! What a compositor reports (`GET /status`) and how a source is registered with it
//! (`PUT /inputs/{id}/{kind}`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use castyard_crd::DestinationStatus;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CompositorStatus {
    pub destinations: Vec<DestinationStatus>,
    pub frames: u64,
    pub media_ms: u32,
    pub encoder_restarts: u64,
    pub recording: Option<PathBuf>,
    pub hls: Option<PathBuf>,
    /// Each decoding source by its tile id.
    pub inputs: BTreeMap<String, InputStatus>,
}

/// What one input has decoded so far.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct InputStatus {
    pub video_frames: u64,
    pub audio_samples: u64,
    /// Times the decoder asked the SFU for a keyframe.
    pub keyframe_requests: u64,
    /// A picture newer than the staleness limit: the tile shows it, not a placeholder.
    pub live: bool,
    /// The size pictures are decoded at (the tile's), once one is decoded.
    pub decode_size: Option<[u32; 2]>,
    /// Video decoders running: two while one at a new size takes over.
    pub decoders: usize,
    /// Video decoders started at a new size since the input was added.
    pub resizes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VideoCodec {
    Vp8,
    H264,
}

/// What the SFU (or a test) will send for one source.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InputRequest {
    pub video: Option<VideoCodec>,
    #[serde(default = "video_pt")]
    pub video_payload_type: u8,
    /// Opus audio; a screen share usually has none.
    #[serde(default)]
    pub audio: bool,
    #[serde(default = "audio_pt")]
    pub audio_payload_type: u8,
}

fn video_pt() -> u8 {
    96
}

fn audio_pt() -> u8 {
    111
}

/// Where to send the RTP (RTCP goes to the port above each).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InputPorts {
    pub video_port: Option<u16>,
    pub audio_port: Option<u16>,
}

/// Which of a participant's sources an input is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InputKind {
    Camera,
    Screen,
}

impl InputKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Camera => "camera",
            Self::Screen => "screen",
        }
    }
}
