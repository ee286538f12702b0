//! The compositor's side of the scene (`castyard-proto` holds the scene and its commands): the
//! tiles it draws, and the JSON file that lets a restarted compositor resume it.

use std::path::Path;

pub use castyard_proto::scene::*;

use super::layout::Tile;

pub trait SceneExt: Sized {
    fn tiles(&self) -> Vec<Tile>;
    fn save(&self, path: &Path) -> std::io::Result<()>;
    fn load(path: &Path) -> std::io::Result<Self>;
}

impl SceneExt for Scene {
    /// The pictures on stage, in stage order: each camera (or avatar), then any screen share.
    fn tiles(&self) -> Vec<Tile> {
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

    /// Writes the scene atomically (a temporary file renamed over the old one), so a crash
    /// never leaves half a scene.
    fn save(&self, path: &Path) -> std::io::Result<()> {
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(tmp, path)
    }

    /// The saved scene, or an empty one when there is none yet.
    fn load(path: &Path) -> std::io::Result<Self> {
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
    use castyard_crd::Layout;

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
