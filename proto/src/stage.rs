//! The SFU's stage as the compositor reads it (`GET /stage`), and the compositor's requests for
//! plain RTP copies of on-stage tracks (`PUT /forwards`).

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

use crate::signal::Source;

/// One on-stage participant as the compositor sees it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StageEntry {
    pub participant: String,
    pub name: String,
    pub publishing: Vec<Source>,
    pub muted: Vec<Source>,
    pub speaking: bool,
    /// Published tracks whose codec is known (a frame arrived): what can be decoded.
    #[serde(default)]
    pub tracks: Vec<StageTrack>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct StageTrack {
    pub source: Source,
    pub codec: TrackCodec,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum TrackCodec {
    Vp8,
    H264,
    Opus,
}

/// The compositor's request for a copy of one on-stage track, as plain RTP to `addr`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ForwardRequest {
    pub participant: String,
    pub source: Source,
    pub addr: SocketAddr,
    pub payload_type: u8,
    /// The receiver needs a keyframe now (its decoder started or lost packets).
    #[serde(default)]
    pub keyframe: bool,
}

/// A forward request and whether it is being served (the participant is on stage and
/// publishes that source).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ForwardState {
    #[serde(flatten)]
    pub request: ForwardRequest,
    pub active: bool,
}
