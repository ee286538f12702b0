//! The scene state machine: who is on stage, the layout, banners, ticker, brand and slate,
//! changed only by validated commands and saved as JSON so a restarted compositor resumes it.

use std::collections::BTreeMap;
use std::path::Path;

use castyard_crd::Layout;
use serde::{Deserialize, Serialize};

use super::layout::Tile;

/// At most this many people on stage (a host and ten guests, less one backstage at least).
pub const MAX_ON_STAGE: usize = 10;
pub const MAX_NAME_CHARS: usize = 60;
pub const MAX_BANNER_CHARS: usize = 200;
pub const MAX_TICKER_CHARS: usize = 500;
/// Per-participant gain: 0 (silent) to 2 (+6 dB).
pub const MAX_GAIN: f32 = 2.0;

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

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BannerStyle {
    /// Across the bottom of the show.
    Banner,
    /// Name and title, bottom left.
    LowerThird,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Banner {
    pub text: String,
    pub style: BannerStyle,
}

/// Brand assets are upload ids (logo, background, overlay), resolved to files by the worker.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Brand {
    /// #rrggbb
    pub color: Option<String>,
    pub logo: Option<String>,
    pub background: Option<String>,
    pub overlay: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Slate {
    /// "Starting soon", with an optional line of text.
    StartingSoon { text: Option<String> },
    /// Counts down to a Unix time in milliseconds.
    Countdown { until_ms: i64 },
}

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

    /// The pictures on stage, in stage order: each camera (or avatar), then any screen share.
    pub fn tiles(&self) -> Vec<Tile> {
        let mut out = Vec::new();
        for id in &self.stage {
            let p = &self.participants[id];
            out.push(Tile {
                id: id.clone(),
                aspect: p.aspect,
                screen: false,
            });
            if let Some(a) = p.screen {
                out.push(Tile {
                    id: format!("{id}/screen"),
                    aspect: a,
                    screen: true,
                });
            }
        }
        out
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

    /// Writes the scene atomically (a temporary file renamed over the old one), so a crash
    /// never leaves half a scene.
    pub fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }

    /// The saved scene, or an empty one when there is none yet.
    pub fn load(path: &Path) -> std::io::Result<Self> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(std::io::Error::other),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(s: &mut Scene, id: &str) {
        s.apply(Command::Join {
            id: id.into(),
            name: format!("Person {id}"),
        })
        .unwrap();
    }

    fn stage(s: &mut Scene, id: &str) {
        s.apply(Command::AddToStage { id: id.into() }).unwrap();
    }

    #[test]
    fn joining_staging_and_leaving_keep_the_stage_order() {
        let mut s = Scene::default();
        for id in ["host", "a", "b"] {
            join(&mut s, id);
        }
        assert!(s.tiles().is_empty(), "joining puts people backstage");
        stage(&mut s, "b");
        stage(&mut s, "host");
        stage(&mut s, "b"); // twice is once
        let ids: Vec<String> = s.tiles().into_iter().map(|t| t.id).collect();
        assert_eq!(ids, ["b", "host"]);
        s.apply(Command::Leave { id: "b".into() }).unwrap();
        assert_eq!(s.stage, ["host"]);
        assert!(!s.participants.contains_key("b"));
        s.apply(Command::RemoveFromStage { id: "host".into() })
            .unwrap();
        assert!(s.tiles().is_empty());
        assert!(
            s.participants["host"].name == "Person host",
            "backstage, not gone"
        );
    }

    #[test]
    fn the_stage_holds_ten() {
        let mut s = Scene::default();
        for i in 0..11 {
            join(&mut s, &format!("p{i}"));
        }
        for i in 0..10 {
            stage(&mut s, &format!("p{i}"));
        }
        let before = s.clone();
        assert_eq!(
            s.apply(Command::AddToStage { id: "p10".into() }),
            Err(SceneError::StageFull)
        );
        assert_eq!(s, before);
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut s = Scene::default();
        join(&mut s, "a");
        let before = s.clone();
        for bad in [
            Command::Join {
                id: "a".into(),
                name: "again".into(),
            },
            Command::Join {
                id: "b".into(),
                name: "   ".into(),
            },
            Command::Join {
                id: "c".into(),
                name: "x".repeat(61),
            },
            Command::Join {
                id: "d".into(),
                name: "bell\u{7}".into(),
            },
            Command::Leave {
                id: "nobody".into(),
            },
            Command::AddToStage {
                id: "nobody".into(),
            },
            Command::Pin {
                id: Some("nobody".into()),
            },
            Command::Gain {
                id: "a".into(),
                gain: 2.5,
            },
            Command::Gain {
                id: "a".into(),
                gain: f32::NAN,
            },
            Command::Camera {
                id: "a".into(),
                on: true,
                aspect: Some(0.0),
            },
            Command::ScreenShare {
                id: "a".into(),
                aspect: Some(f64::INFINITY),
            },
            Command::ShowBanner {
                banner: Banner {
                    text: "".into(),
                    style: BannerStyle::Banner,
                },
            },
            Command::Ticker {
                text: Some("t".repeat(501)),
            },
            Command::SetBrand {
                brand: Brand {
                    color: Some("red".into()),
                    ..Brand::default()
                },
            },
        ] {
            assert!(s.apply(bad.clone()).is_err(), "{bad:?} accepted");
            assert_eq!(s, before, "{bad:?} changed the scene");
        }
    }

    #[test]
    fn the_featured_slot_prefers_the_pinned_then_the_speaker_on_stage() {
        let mut s = Scene::default();
        for id in ["a", "b", "c"] {
            join(&mut s, id);
            stage(&mut s, id);
        }
        assert_eq!(s.featured(), None);
        s.apply(Command::ActiveSpeaker {
            id: Some("b".into()),
        })
        .unwrap();
        assert_eq!(s.featured(), Some("b"));
        s.apply(Command::Pin {
            id: Some("c".into()),
        })
        .unwrap();
        assert_eq!(s.featured(), Some("c"));
        s.apply(Command::RemoveFromStage { id: "c".into() })
            .unwrap();
        assert_eq!(s.featured(), Some("b"), "unpinned when taken off stage");
        s.apply(Command::Leave { id: "b".into() }).unwrap();
        assert_eq!(s.featured(), None);
    }

    #[test]
    fn a_screen_share_is_a_second_tile_of_its_own_shape() {
        let mut s = Scene::default();
        join(&mut s, "a");
        stage(&mut s, "a");
        s.apply(Command::ScreenShare {
            id: "a".into(),
            aspect: Some(1.6),
        })
        .unwrap();
        let tiles = s.tiles();
        assert_eq!(tiles.len(), 2);
        assert!(tiles[1].screen && (tiles[1].aspect - 1.6).abs() < 1e-9);
        s.apply(Command::ScreenShare {
            id: "a".into(),
            aspect: None,
        })
        .unwrap();
        assert_eq!(s.tiles().len(), 1);
    }

    #[test]
    fn every_change_bumps_the_version_and_a_saved_scene_comes_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("scene.json");
        assert_eq!(Scene::load(&path).unwrap(), Scene::default());
        let mut s = Scene::default();
        join(&mut s, "a");
        stage(&mut s, "a");
        for cmd in [
            Command::SetLayout {
                layout: Layout::Sidebar,
            },
            Command::ShowBanner {
                banner: Banner {
                    text: "Welcome!".into(),
                    style: BannerStyle::LowerThird,
                },
            },
            Command::Ticker {
                text: Some("Breaking: Rust 2024".into()),
            },
            Command::SetBrand {
                brand: Brand {
                    color: Some("#ff8800".into()),
                    logo: Some("u1".into()),
                    ..Brand::default()
                },
            },
            Command::ShowSlate {
                slate: Slate::Countdown {
                    until_ms: 1_800_000_000_000,
                },
            },
            Command::Gain {
                id: "a".into(),
                gain: 1.5,
            },
        ] {
            let v = s.version;
            s.apply(cmd).unwrap();
            assert_eq!(s.version, v + 1);
        }
        s.save(&path).unwrap();
        assert_eq!(Scene::load(&path).unwrap(), s);
        // Commands arrive as JSON on the control channel.
        let cmd: Command =
            serde_json::from_str(r#"{"type":"set-layout","layout":"picture-in-picture"}"#).unwrap();
        assert_eq!(
            cmd,
            Command::SetLayout {
                layout: Layout::PictureInPicture
            }
        );
        assert!(serde_json::from_str::<Command>(r#"{"type":"explode"}"#).is_err());
    }
}
