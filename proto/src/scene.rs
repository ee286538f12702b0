//! The scene state machine: who is on stage, the layout, banners, ticker, brand and slate,
//! changed only by validated commands; the compositor applies it, the API checks and relays it.

use std::collections::BTreeMap;

use castyard_crd::Layout;
use serde::{Deserialize, Serialize};

/// At most this many people on stage (a host and ten guests, less one backstage at least).
pub const MAX_ON_STAGE: usize = 10;
pub const MAX_NAME_CHARS: usize = 60;
pub const MAX_BANNER_CHARS: usize = 200;
pub const MAX_TICKER_CHARS: usize = 500;
/// Per-participant gain: 0 (silent) to 2 (+6 dB).
pub const MAX_GAIN: f32 = 2.0;

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Participant {
    pub name: String,
    pub on_stage: bool,
    /// Whether the camera is on: without it the tile shows an avatar with the name.
    pub video: bool,
    /// The camera's width over height.
    pub aspect: f64,
    pub muted: bool,
    pub gain: f32,
    /// The aspect of a screen share, while sharing.
    pub screen: Option<f64>,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BannerStyle {
    /// Across the bottom of the show.
    Banner,
    /// Name and title, bottom left.
    LowerThird,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Banner {
    pub text: String,
    pub style: BannerStyle,
}

/// Brand assets are upload ids (logo, background, overlay), resolved to files by the worker.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Brand {
    /// #rrggbb
    pub color: Option<String>,
    pub logo: Option<String>,
    pub background: Option<String>,
    pub overlay: Option<String>,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Slate {
    /// "Starting soon", with an optional line of text.
    StartingSoon { text: Option<String> },
    /// Counts down to a Unix time in milliseconds.
    Countdown { until_ms: i64 },
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Scene {
    pub layout: Layout,
    pub participants: BTreeMap<String, Participant>,
    /// On-stage ids in the order they were put there; the tiles follow it.
    pub stage: Vec<String>,
    pub pinned: Option<String>,
    pub active_speaker: Option<String>,
    pub banner: Option<Banner>,
    pub ticker: Option<String>,
    pub brand: Brand,
    pub slate: Option<Slate>,
    /// Bumped by every applied command, so readers can tell a newer scene.
    pub version: u64,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Command {
    Join {
        id: String,
        name: String,
    },
    Leave {
        id: String,
    },
    AddToStage {
        id: String,
    },
    RemoveFromStage {
        id: String,
    },
    SetLayout {
        layout: Layout,
    },
    Pin {
        id: Option<String>,
    },
    ActiveSpeaker {
        id: Option<String>,
    },
    Camera {
        id: String,
        on: bool,
        aspect: Option<f64>,
    },
    ScreenShare {
        id: String,
        aspect: Option<f64>,
    },
    Mute {
        id: String,
        muted: bool,
    },
    Gain {
        id: String,
        gain: f32,
    },
    ShowBanner {
        banner: Banner,
    },
    HideBanner,
    Ticker {
        text: Option<String>,
    },
    SetBrand {
        brand: Brand,
    },
    ShowSlate {
        slate: Slate,
    },
    HideSlate,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SceneError {
    #[error("no participant {0:?}")]
    UnknownParticipant(String),
    #[error("participant {0:?} has already joined")]
    AlreadyJoined(String),
    #[error("the stage is full ({MAX_ON_STAGE} people)")]
    StageFull,
    #[error("{field} must be 1-{max} characters without control characters")]
    BadText { field: &'static str, max: usize },
    #[error("gain must be between 0 and {MAX_GAIN}")]
    BadGain,
    #[error("aspect ratio must be between 0.2 and 5")]
    BadAspect,
    #[error("brand colour must be #rrggbb")]
    BadColor,
    #[error("{0} must be an upload id (letters, digits, '.', '_', '-'; at most 128)")]
    BadAsset(&'static str),
}

fn text(field: &'static str, s: &str, max: usize) -> Result<String, SceneError> {
    let t = s.trim();
    if t.is_empty() || t.chars().count() > max || t.chars().any(char::is_control) {
        return Err(SceneError::BadText { field, max });
    }
    Ok(t.to_owned())
}

/// Upload ids name files in the assets folder, so nothing that could climb out of it passes.
pub fn asset_id(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

fn aspect(a: Option<f64>, default: f64) -> Result<f64, SceneError> {
    match a {
        None => Ok(default),
        Some(a) if a.is_finite() && (0.2..=5.0).contains(&a) => Ok(a),
        Some(_) => Err(SceneError::BadAspect),
    }
}

impl Scene {
    fn participant(&mut self, id: &str) -> Result<&mut Participant, SceneError> {
        self.participants
            .get_mut(id)
            .ok_or_else(|| SceneError::UnknownParticipant(id.to_owned()))
    }

    /// Applies one command. A refused command leaves the scene exactly as it was.
    pub fn apply(&mut self, cmd: Command) -> Result<(), SceneError> {
        let mut next = self.clone();
        next.apply_to(cmd)?;
        next.version = self.version + 1;
        *self = next;
        Ok(())
    }

    fn apply_to(&mut self, cmd: Command) -> Result<(), SceneError> {
        match cmd {
            Command::Join { id, name } => {
                let name = text("name", &name, MAX_NAME_CHARS)?;
                if self.participants.contains_key(&id) {
                    return Err(SceneError::AlreadyJoined(id));
                }
                self.participants.insert(
                    id,
                    Participant {
                        name,
                        on_stage: false,
                        video: false,
                        aspect: 16.0 / 9.0,
                        muted: false,
                        gain: 1.0,
                        screen: None,
                    },
                );
            }
            Command::Leave { id } => {
                self.participant(&id)?;
                self.participants.remove(&id);
                self.stage.retain(|s| *s != id);
                for slot in [&mut self.pinned, &mut self.active_speaker] {
                    if slot.as_deref() == Some(&id) {
                        *slot = None;
                    }
                }
            }
            Command::AddToStage { id } => {
                if self.participant(&id)?.on_stage {
                    return Ok(());
                }
                if self.stage.len() >= MAX_ON_STAGE {
                    return Err(SceneError::StageFull);
                }
                self.participant(&id)?.on_stage = true;
                self.stage.push(id);
            }
            Command::RemoveFromStage { id } => {
                self.participant(&id)?.on_stage = false;
                self.stage.retain(|s| *s != id);
                if self.pinned.as_deref() == Some(&id) {
                    self.pinned = None;
                }
            }
            Command::SetLayout { layout } => self.layout = layout,
            Command::Pin { id } => {
                if let Some(id) = &id {
                    self.participant(id)?;
                }
                self.pinned = id;
            }
            Command::ActiveSpeaker { id } => {
                if let Some(id) = &id {
                    self.participant(id)?;
                }
                self.active_speaker = id;
            }
            Command::Camera { id, on, aspect: a } => {
                let a = aspect(a, self.participant(&id)?.aspect)?;
                let p = self.participant(&id)?;
                p.video = on;
                p.aspect = a;
            }
            Command::ScreenShare { id, aspect: a } => {
                let a = a.map(|a| aspect(Some(a), 0.0)).transpose()?;
                self.participant(&id)?.screen = a;
            }
            Command::Mute { id, muted } => self.participant(&id)?.muted = muted,
            Command::Gain { id, gain } => {
                if !(0.0..=MAX_GAIN).contains(&gain) {
                    return Err(SceneError::BadGain);
                }
                self.participant(&id)?.gain = gain;
            }
            Command::ShowBanner { banner } => {
                self.banner = Some(Banner {
                    text: text("banner", &banner.text, MAX_BANNER_CHARS)?,
                    style: banner.style,
                });
            }
            Command::HideBanner => self.banner = None,
            Command::Ticker { text: t } => {
                self.ticker = t
                    .map(|t| text("ticker", &t, MAX_TICKER_CHARS))
                    .transpose()?;
            }
            Command::SetBrand { brand } => {
                if let Some(c) = &brand.color {
                    let hex = c.strip_prefix('#').unwrap_or("");
                    if hex.len() != 6 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                        return Err(SceneError::BadColor);
                    }
                }
                for (field, id) in [
                    ("logo", &brand.logo),
                    ("background", &brand.background),
                    ("overlay", &brand.overlay),
                ] {
                    if id.as_deref().is_some_and(|id| !asset_id(id)) {
                        return Err(SceneError::BadAsset(field));
                    }
                }
                self.brand = brand;
            }
            Command::ShowSlate { slate } => {
                if let Slate::StartingSoon { text: Some(t) } = &slate {
                    text("slate", t, MAX_BANNER_CHARS)?;
                }
                self.slate = Some(slate);
            }
            Command::HideSlate => self.slate = None,
        }
        Ok(())
    }

    /// Who the featured slot shows: the pinned participant, else the active speaker, when on
    /// stage.
    pub fn featured(&self) -> Option<&str> {
        [&self.pinned, &self.active_speaker]
            .into_iter()
            .flatten()
            .find(|id| self.participants.get(*id).is_some_and(|p| p.on_stage))
            .map(String::as_str)
    }
}
