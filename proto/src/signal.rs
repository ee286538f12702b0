//! The signalling protocol: JSON messages between a participant (relayed by the API) and the
//! SFU, parsed with their limits so that bad input is an error and never a change.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A browser's offer with three simulcast layers is about 10 KB; anything far larger is abuse.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Camera, microphone, screen and its audio: a peer declares at most this many sources.
const MAX_SOURCES: usize = 8;

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Role {
    Host,
    Guest,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Host => "host",
            Role::Guest => "guest",
        }
    }
}

/// What a published track carries.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "camelCase")]
pub enum Source {
    Camera,
    Microphone,
    Screen,
    ScreenAudio,
}

/// Who a connection is: set by the API, which authenticated the user, never by the browser.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub participant: String,
    pub name: String,
    pub role: Role,
}

/// What a participant sends.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Deserialize, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ClientMessage {
    /// An offer from the participant: what it publishes (its mids and their sources) and any
    /// change on its side. Answered with `answer`.
    Offer {
        sdp: String,
        #[serde(default)]
        sources: BTreeMap<String, Source>,
    },
    /// The answer to an `offer` from the SFU.
    Answer {
        sdp: String,
    },
    Mute {
        source: Source,
        muted: bool,
    },
    /// The size a received track is rendered at (0x0 when hidden): steers simulcast.
    View {
        mid: String,
        width: u32,
        height: u32,
    },
    /// Host only: moves a participant on or off stage.
    #[serde(rename_all = "camelCase")]
    Stage {
        participant: String,
        on_stage: bool,
    },
    Leave,
    Ping,
}

/// Why a message was refused; the connection stays.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SignalError {
    #[error("message is {0} bytes, over the limit of {MAX_MESSAGE}")]
    TooLarge(usize),
    #[error("unrecognised message: {0}")]
    BadMessage(String),
    #[error("malformed SDP: {0}")]
    BadSdp(String),
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
}

impl SignalError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::TooLarge(_) => "too_large",
            Self::BadMessage(_) => "bad_message",
            Self::BadSdp(_) => "bad_sdp",
            Self::Forbidden(_) => "forbidden",
            Self::NotFound(_) => "not_found",
            Self::Conflict(_) => "conflict",
        }
    }
}

pub fn parse(text: &str) -> Result<ClientMessage, SignalError> {
    if text.len() > MAX_MESSAGE {
        return Err(SignalError::TooLarge(text.len()));
    }
    let msg: ClientMessage =
        serde_json::from_str(text).map_err(|e| SignalError::BadMessage(e.to_string()))?;
    if let ClientMessage::Offer { sources, .. } = &msg
        && (sources.len() > MAX_SOURCES || sources.keys().any(|m| m.is_empty() || m.len() > 16))
    {
        return Err(SignalError::BadMessage(format!(
            "sources: at most {MAX_SOURCES} mids of 1 to 16 characters"
        )));
    }
    Ok(msg)
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantInfo {
    pub id: String,
    pub name: String,
    pub role: Role,
    pub on_stage: bool,
    pub publishing: Vec<Source>,
    pub muted: Vec<Source>,
}

/// One track a participant receives: which mid carries whose what.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TrackInfo {
    pub mid: String,
    pub participant: String,
    pub source: Source,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParticipantStats {
    pub participant: String,
    pub bitrate_in_bps: u64,
    pub bitrate_out_bps: u64,
    pub packet_loss: f32,
    pub rtt_ms: Option<u64>,
    pub jitter_ms: Option<u64>,
}

/// What the SFU sends.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum ServerMessage {
    #[serde(rename_all = "camelCase")]
    Joined {
        participant: String,
        role: Role,
        participants: Vec<ParticipantInfo>,
        active_speaker: Option<String>,
    },
    /// Our answer to the participant's offer, with the tracks it receives.
    Answer {
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// Tracks to receive came or went: the participant answers with `answer`.
    Offer {
        sdp: String,
        tracks: Vec<TrackInfo>,
    },
    /// A participant joined or changed (stage, mutes, what it publishes).
    Participant(ParticipantInfo),
    ParticipantLeft {
        participant: String,
    },
    ActiveSpeaker {
        participant: Option<String>,
    },
    /// Host only, every few seconds.
    Stats {
        participants: Vec<ParticipantStats>,
    },
    Pong,
    Error {
        code: String,
        message: String,
    },
    /// The SFU ends this connection (left, replaced by a newer one, or its media failed).
    Bye {
        reason: String,
    },
}

impl ServerMessage {
    pub fn error(e: &SignalError) -> Self {
        Self::Error {
            code: e.code().into(),
            message: e.to_string(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("server messages serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_message_parses() {
        assert_eq!(
            parse(r#"{"type":"offer","sdp":"v=0","sources":{"0":"camera","1":"microphone"}}"#),
            Ok(ClientMessage::Offer {
                sdp: "v=0".into(),
                sources: [
                    ("0".into(), Source::Camera),
                    ("1".into(), Source::Microphone)
                ]
                .into()
            })
        );
        assert_eq!(
            parse(r#"{"type":"stage","participant":"p","onStage":true}"#),
            Ok(ClientMessage::Stage {
                participant: "p".into(),
                on_stage: true
            })
        );
        assert_eq!(parse(r#"{"type":"leave"}"#), Ok(ClientMessage::Leave));
        assert!(parse(r#"{"type":"mute","source":"screen","muted":true}"#).is_ok());
        assert!(parse(r#"{"type":"view","mid":"3","width":320,"height":180}"#).is_ok());
    }

    #[test]
    fn bad_messages_are_named() {
        let unknown = parse(r#"{"type":"selfDestruct"}"#).unwrap_err();
        assert_eq!(unknown.code(), "bad_message");
        assert!(unknown.to_string().contains("selfDestruct"), "{unknown}");
        assert_eq!(parse("not json").unwrap_err().code(), "bad_message");
        assert_eq!(
            parse(r#"{"type":"mute","source":"camera","muted":true,"x":1}"#)
                .unwrap_err()
                .code(),
            "bad_message"
        );
        let big = format!(r#"{{"type":"offer","sdp":"{}"}}"#, "a".repeat(MAX_MESSAGE));
        assert_eq!(parse(&big).unwrap_err().code(), "too_large");
        let many: BTreeMap<String, &str> = (0..9).map(|i| (i.to_string(), "camera")).collect();
        let msg = serde_json::json!({"type": "offer", "sdp": "v=0", "sources": many});
        assert_eq!(parse(&msg.to_string()).unwrap_err().code(), "bad_message");
    }

    #[test]
    fn server_messages_are_tagged() {
        let m = ServerMessage::ActiveSpeaker {
            participant: Some("p1".into()),
        };
        assert_eq!(
            m.to_json(),
            r#"{"type":"activeSpeaker","participant":"p1"}"#
        );
        let m = ServerMessage::Participant(ParticipantInfo {
            id: "p".into(),
            name: "Ann".into(),
            role: Role::Guest,
            on_stage: false,
            publishing: vec![Source::Camera],
            muted: vec![],
        });
        assert_eq!(
            m.to_json(),
            r#"{"type":"participant","id":"p","name":"Ann","role":"guest","onStage":false,"publishing":["camera"],"muted":[]}"#
        );
    }
}
