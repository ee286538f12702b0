//! Paints one output frame from the scene and the latest picture of each source: background,
//! tiles (video, avatar or placeholder) with name tags, banner, ticker, logo, overlay, slate.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use super::canvas::{Font, Frame, Scaler, Sprite, Yuv};
use super::layout::{self, Rect};
use super::scene::{BannerStyle, Brand, Scene, SceneExt as _, Slate, asset_id};

/// What a tile's source has to show right now.
#[derive(Clone, Debug)]
pub enum Feed {
    /// The latest decoded picture; `seq` changes with every new one.
    Live { seq: u64, frame: Arc<Frame> },
    /// Expected but not arriving (not yet, or lost): a placeholder, never a frozen picture.
    Waiting,
}

/// The default look before a brand is set: a dark slate blue.
const BACKGROUND: Yuv = Yuv {
    y: 40,
    u: 136,
    v: 124,
};
const TILE: Yuv = Yuv {
    y: 28,
    u: 132,
    v: 126,
};
const ACCENT: Yuv = Yuv {
    y: 82,
    u: 190,
    v: 108,
};
/// Text caches are cleared past this, so a ticker that changes every second cannot grow them.
const MAX_CACHED: usize = 256;

struct BrandLook {
    brand: Brand,
    color: Yuv,
    background: Option<Frame>,
    logo: Option<Sprite>,
    overlay: Option<Sprite>,
}

pub struct Painter {
    width: u32,
    height: u32,
    fps: u32,
    font: Font,
    assets: PathBuf,
    scaler: Scaler,
    scaled: HashMap<String, (u64, u32, u32, Frame)>,
    /// Each video tile's picture size in the last frame painted, for its decoder.
    sizes: Vec<(String, (u32, u32))>,
    texts: HashMap<(String, u32, Yuv), Option<Sprite>>,
    brand: Option<BrandLook>,
}

impl std::hash::Hash for Yuv {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        [self.y, self.u, self.v].hash(h);
    }
}

impl Painter {
    pub fn new(width: u32, height: u32, fps: u32, font: Font, assets: PathBuf) -> Self {
        Self {
            width,
            height,
            fps: fps.max(1),
            font,
            assets,
            scaler: Scaler::default(),
            scaled: HashMap::new(),
            sizes: Vec::new(),
            texts: HashMap::new(),
            brand: None,
        }
    }

    fn canvas(&self) -> Rect {
        Rect {
            x: 0,
            y: 0,
            w: self.width,
            h: self.height,
        }
    }

    fn text(&mut self, text: &str, px: u32, c: Yuv) -> Option<Sprite> {
        if self.texts.len() > MAX_CACHED {
            self.texts.clear();
        }
        let font = &self.font;
        self.texts
            .entry((text.to_owned(), px, c))
            .or_insert_with(|| font.render(text, px as f32, c))
            .clone()
    }

    fn load(&self, id: &Option<String>, max_w: u32, max_h: u32) -> Option<Sprite> {
        let id = id.as_deref().filter(|id| asset_id(id))?;
        match image::open(self.assets.join(id)) {
            Ok(img) => Some(Sprite::from_image(&img, max_w, max_h)),
            Err(e) => {
                tracing::warn!(asset = %id, error = %e, "brand asset unreadable; drawn without it");
                None
            }
        }
    }

    /// Brand pictures are decoded and scaled when the brand changes, not every frame.
    fn brand(&mut self, brand: &Brand) -> &BrandLook {
        if self.brand.as_ref().is_none_or(|b| &b.brand != brand) {
            let (w, h) = (self.width, self.height);
            let background = self.load(&brand.background, w, h).map(|s| {
                // Cover the canvas: the background is opaque and centred.
                let mut f = Frame::new(w, h);
                f.fill(self.canvas(), BACKGROUND);
                s.draw(
                    &mut f,
                    i64::from((w - s.width) / 2),
                    i64::from((h - s.height) / 2),
                    self.canvas(),
                );
                f
            });
            self.brand = Some(BrandLook {
                brand: brand.clone(),
                color: brand
                    .color
                    .as_deref()
                    .and_then(Yuv::from_hex)
                    .unwrap_or(ACCENT),
                background,
                logo: self.load(&brand.logo, w / 6, h / 8),
                overlay: self.load(&brand.overlay, w, h),
            });
        }
        self.brand.as_ref().expect("set above")
    }

    /// Paints frame number `frame_no` of the show; `now_ms` (Unix time) drives countdowns.
    pub fn paint(
        &mut self,
        scene: &Scene,
        feeds: &dyn Fn(&str) -> Feed,
        frame_no: u64,
        now_ms: i64,
        out: &mut Frame,
    ) {
        let canvas = self.canvas();
        self.sizes.clear();
        let look = self.brand(&scene.brand);
        let color = look.color;
        match &look.background {
            Some(bg) => out.data.copy_from_slice(&bg.data),
            None => out.fill(canvas, BACKGROUND),
        }
        if let Some(slate) = &scene.slate {
            self.slate(slate, now_ms, color, out);
        } else {
            self.tiles(scene, feeds, color, out);
            self.banners(scene, frame_no, color, out);
        }
        let look = self.brand.as_ref().expect("set above");
        if let Some(logo) = &look.logo {
            let m = self.height / 30;
            logo.draw(
                out,
                i64::from(self.width - logo.width - m),
                i64::from(m),
                canvas,
            );
        }
        if let Some(overlay) = &look.overlay {
            overlay.draw(
                out,
                i64::from((self.width - overlay.width) / 2),
                i64::from((self.height - overlay.height) / 2),
                canvas,
            );
        }
    }

    /// The size each video tile on stage showed its source at in the last frame: the size its
    /// decoder should produce.
    pub fn tile_sizes(&self) -> &[(String, (u32, u32))] {
        &self.sizes
    }

    fn centred(&mut self, text: &str, px: u32, cy: u32, c: Yuv, out: &mut Frame) {
        if let Some(s) = self.text(text, px, c) {
            let x = i64::from(self.width / 2) - i64::from(s.width / 2);
            s.draw(
                out,
                x,
                i64::from(cy) - i64::from(s.height / 2),
                self.canvas(),
            );
        }
    }

    fn slate(&mut self, slate: &Slate, now_ms: i64, color: Yuv, out: &mut Frame) {
        let h = self.height;
        out.fill(
            Rect {
                x: 0,
                y: h * 2 / 5,
                w: self.width,
                h: h / 5,
            },
            color.darker(0.3),
        );
        match slate {
            Slate::StartingSoon { text } => {
                self.centred("Starting soon", h / 10, h / 2, Yuv::WHITE, out);
                if let Some(t) = text {
                    self.centred(t, h / 22, h * 7 / 10, Yuv::WHITE, out);
                }
            }
            Slate::Countdown { until_ms } => {
                let left = ((until_ms - now_ms).max(0) + 999) / 1000;
                let clock = format!("{:02}:{:02}", left / 60, left % 60);
                self.centred("Starting in", h / 22, h * 3 / 10, Yuv::WHITE, out);
                self.centred(&clock, h / 8, h / 2, Yuv::WHITE, out);
            }
        }
    }

    fn tiles(&mut self, scene: &Scene, feeds: &dyn Fn(&str) -> Feed, color: Yuv, out: &mut Frame) {
        let tiles = scene.tiles();
        let placements = layout::place(
            self.width,
            self.height,
            scene.layout,
            &tiles,
            scene.featured(),
        );
        // Scaled pictures of sources no longer on stage are dropped.
        self.scaled
            .retain(|id, _| placements.iter().any(|p| &p.id == id));
        for (p, tile) in placements.iter().zip(&tiles) {
            let owner = p.id.split('/').next().unwrap_or(&p.id);
            let Some(who) = scene.participants.get(owner) else {
                continue;
            };
            out.fill(p.frame, TILE);
            let speaking = !tile.screen && scene.active_speaker.as_deref() == Some(owner);
            if speaking {
                let b = (self.height / 180).max(2) & !1;
                out.fill(p.frame, color);
                out.fill(
                    Rect {
                        x: p.frame.x + b,
                        y: p.frame.y + b,
                        w: p.frame.w.saturating_sub(2 * b),
                        h: p.frame.h.saturating_sub(2 * b),
                    },
                    TILE,
                );
            }
            let showing = tile.screen || who.video;
            match showing.then(|| feeds(&p.id)) {
                Some(Feed::Live { seq, frame }) => {
                    let v = p.video;
                    let size = Scaler::even(v.w, v.h);
                    self.sizes.push((p.id.clone(), size));
                    if (frame.width, frame.height) == size {
                        // Decoded at the tile's size: copied as it is.
                        self.scaled.remove(&p.id);
                        out.blit(&frame, v.x, v.y);
                    } else {
                        // A decoder at the new size is starting (or could not): scaled here.
                        let fresh = self
                            .scaled
                            .get(&p.id)
                            .is_none_or(|(s, w, h, _)| (*s, *w, *h) != (seq, v.w, v.h));
                        if fresh {
                            let scaled = self.scaler.scale(&frame, v.w, v.h);
                            self.scaled.insert(p.id.clone(), (seq, v.w, v.h, scaled));
                        }
                        let (_, _, _, pic) = &self.scaled[&p.id];
                        out.blit(pic, v.x, v.y);
                    }
                }
                Some(Feed::Waiting) => {
                    self.sizes
                        .push((p.id.clone(), Scaler::even(p.video.w, p.video.h)));
                    let px = (p.frame.h / 14).max(12);
                    let label = if tile.screen {
                        "Screen share reconnecting…"
                    } else {
                        "Reconnecting…"
                    };
                    if let Some(s) = self.text(label, px, Yuv::WHITE) {
                        s.draw(
                            out,
                            i64::from(p.frame.x + p.frame.w / 2) - i64::from(s.width / 2),
                            i64::from(p.frame.y + p.frame.h / 2) - i64::from(s.height / 2),
                            p.frame,
                        );
                    }
                }
                None => self.avatar(&who.name, p.frame, color, out),
            }
            if !tile.screen {
                self.name_tag(&who.name, who.muted, p.video, color, out);
            }
        }
    }

    fn avatar(&mut self, name: &str, frame: Rect, color: Yuv, out: &mut Frame) {
        let r = (frame.w.min(frame.h) / 5).max(4);
        let (cx, cy) = (frame.x + frame.w / 2, frame.y + frame.h / 2);
        out.disc(cx, cy, r, color);
        let initials: String = name
            .split_whitespace()
            .filter_map(|w| w.chars().next())
            .take(2)
            .flat_map(char::to_uppercase)
            .collect();
        if let Some(s) = self.text(&initials, r, Yuv::WHITE) {
            s.draw(
                out,
                i64::from(cx) - i64::from(s.width / 2),
                i64::from(cy) - i64::from(s.height / 2),
                frame,
            );
        }
    }

    fn name_tag(&mut self, name: &str, muted: bool, video: Rect, color: Yuv, out: &mut Frame) {
        let px = (video.h / 16).clamp(12, 40);
        let label = if muted {
            format!("{name} (muted)")
        } else {
            name.to_owned()
        };
        let Some(s) = self.text(&label, px, Yuv::WHITE) else {
            return;
        };
        let pad = (px / 3) & !1;
        let panel = Rect {
            x: video.x + pad,
            y: (video.bottom().saturating_sub(s.height + 3 * pad)) & !1,
            w: (s.width + 2 * pad).min(video.w.saturating_sub(2 * pad)) & !1,
            h: (s.height + 2 * pad) & !1,
        };
        out.fill(panel, color.darker(0.4));
        s.draw(
            out,
            i64::from(panel.x + pad),
            i64::from(panel.y + pad),
            panel,
        );
    }

    fn banners(&mut self, scene: &Scene, frame_no: u64, color: Yuv, out: &mut Frame) {
        let (w, h) = (self.width, self.height);
        let ticker_h = (h / 18) & !1;
        let mut bottom = h;
        if let Some(text) = &scene.ticker {
            let band = Rect {
                x: 0,
                y: h - ticker_h,
                w,
                h: ticker_h,
            };
            out.fill(band, Yuv::BLACK);
            if let Some(s) = self.text(text, ticker_h * 2 / 3, Yuv::WHITE) {
                // Right to left at an eighth of the width per second, then round again.
                let speed = u64::from(w / 8);
                let travel = u64::from(w + s.width);
                let x = i64::from(w) - ((frame_no * speed / u64::from(self.fps)) % travel) as i64;
                s.draw(out, x, i64::from(band.y + (ticker_h - s.height) / 2), band);
            }
            bottom -= ticker_h;
        }
        let Some(banner) = &scene.banner else { return };
        let px = h / 24;
        let Some(s) = self.text(&banner.text, px, Yuv::WHITE) else {
            return;
        };
        let pad = (px / 2) & !1;
        let margin = (h / 30) & !1;
        let panel = match banner.style {
            BannerStyle::Banner => Rect {
                x: margin,
                y: bottom - margin - s.height - 2 * pad,
                w: w - 2 * margin,
                h: s.height + 2 * pad,
            },
            BannerStyle::LowerThird => Rect {
                x: margin,
                y: bottom - 3 * margin - s.height - 2 * pad,
                w: (s.width + 2 * pad).min(w * 2 / 3) & !1,
                h: s.height + 2 * pad,
            },
        };
        out.fill(panel, color);
        s.draw(
            out,
            i64::from(panel.x + pad),
            i64::from(panel.y + pad),
            panel,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compositor::scene::{Banner, Command};

    fn font() -> Font {
        Font::from_bytes(std::fs::read(crate::compositor::DEFAULT_FONT).expect("fonts-dejavu-core"))
            .unwrap()
    }

    fn luma(f: &Frame, x: u32, y: u32) -> u8 {
        f.data[(y * f.width + x) as usize]
    }

    fn scene(ids: &[&str]) -> Scene {
        let mut s = Scene::default();
        for id in ids {
            s.apply(Command::Join {
                id: (*id).into(),
                name: format!("Guest {id}"),
            })
            .unwrap();
            s.apply(Command::Camera {
                id: (*id).into(),
                on: true,
                aspect: None,
            })
            .unwrap();
            s.apply(Command::AddToStage { id: (*id).into() }).unwrap();
        }
        s
    }

    fn white(w: u32, h: u32) -> Arc<Frame> {
        let mut f = Frame::new(w, h);
        f.fill(Rect { x: 0, y: 0, w, h }, Yuv::WHITE);
        Arc::new(f)
    }

    #[test]
    fn live_video_fills_its_tile_and_a_lost_one_does_not_freeze() {
        let mut p = Painter::new(640, 360, 30, font(), PathBuf::from("/nonexistent"));
        let s = scene(&["a", "b"]);
        let placements = layout::place(640, 360, s.layout, &s.tiles(), None);
        let pic = white(1280, 720);
        let mut out = Frame::new(640, 360);
        let feeds = |id: &str| match id {
            "a" => Feed::Live {
                seq: 1,
                frame: pic.clone(),
            },
            _ => Feed::Waiting,
        };
        p.paint(&s, &feeds, 0, 0, &mut out);
        let a = placements[0].video;
        let b = placements[1].video;
        assert_eq!(
            luma(&out, a.x + a.w / 2, a.y + 4),
            235,
            "a's video is drawn"
        );
        assert_ne!(
            luma(&out, b.x + b.w / 2, b.y + 4),
            235,
            "b's tile is a placeholder"
        );
    }

    #[test]
    fn a_picture_at_its_tiles_size_is_copied_and_every_video_tile_says_its_size() {
        let mut p = Painter::new(640, 360, 30, font(), PathBuf::from("/nonexistent"));
        let mut s = scene(&["a", "b", "c"]);
        s.apply(Command::Camera {
            id: "c".into(),
            on: false,
            aspect: None,
        })
        .unwrap();
        let placements = layout::place(640, 360, s.layout, &s.tiles(), None);
        let a = placements[0].video;
        // A picture whose every pixel differs from its neighbours: any scaling would show.
        let mut pic = Frame::new(a.w, a.h);
        for (i, px) in pic.data[..(a.w * a.h) as usize].iter_mut().enumerate() {
            *px = 16 + (i % 7 * 30) as u8;
        }
        let pic = Arc::new(pic);
        let feeds = |id: &str| match id {
            "a" => Feed::Live {
                seq: 1,
                frame: pic.clone(),
            },
            _ => Feed::Waiting,
        };
        let mut out = Frame::new(640, 360);
        p.paint(&s, &feeds, 0, 0, &mut out);
        for (x, y) in [(0, 0), (1, 0), (5, 3), (a.w - 1, 2)] {
            assert_eq!(
                luma(&out, a.x + x, a.y + y),
                pic.data[(y * a.w + x) as usize]
            );
        }
        let b = placements[1].video;
        assert_eq!(
            p.tile_sizes(),
            [("a".to_owned(), (a.w, a.h)), ("b".to_owned(), (b.w, b.h))],
            "c's camera is off: its avatar needs no decoder size"
        );
    }

    #[test]
    fn banner_and_ticker_draw_at_the_bottom() {
        let mut p = Painter::new(640, 360, 30, font(), PathBuf::from("/nonexistent"));
        let mut s = Scene::default();
        let mut bare = Frame::new(640, 360);
        p.paint(&s, &|_| Feed::Waiting, 0, 0, &mut bare);
        s.apply(Command::ShowBanner {
            banner: Banner {
                text: "Hello".into(),
                style: BannerStyle::Banner,
            },
        })
        .unwrap();
        s.apply(Command::Ticker {
            text: Some("News".into()),
        })
        .unwrap();
        let mut out = Frame::new(640, 360);
        p.paint(&s, &|_| Feed::Waiting, 0, 0, &mut out);
        let changed = |y0: u32, y1: u32| {
            (y0..y1).any(|y| (0..640).any(|x| luma(&out, x, y) != luma(&bare, x, y)))
        };
        assert!(changed(340, 360), "the ticker band");
        assert!(changed(280, 340), "the banner above it");
        assert!(!changed(0, 200), "the top is untouched");
    }

    #[test]
    fn an_avatar_stands_in_for_a_camera_that_is_off() {
        let mut p = Painter::new(640, 360, 30, font(), PathBuf::from("/nonexistent"));
        let mut s = scene(&["a"]);
        s.apply(Command::Camera {
            id: "a".into(),
            on: false,
            aspect: None,
        })
        .unwrap();
        let pic = white(640, 360);
        let mut out = Frame::new(640, 360);
        let feeds = |_: &str| Feed::Live {
            seq: 1,
            frame: pic.clone(),
        };
        p.paint(&s, &feeds, 0, 0, &mut out);
        let tile = layout::place(640, 360, s.layout, &s.tiles(), None)[0].frame;
        // The disc in the accent colour sits at the tile's centre; the camera's white is not drawn.
        let (cx, cy) = (tile.x + tile.w / 2, tile.y + tile.h / 2 + tile.h / 8);
        assert_eq!(luma(&out, cx, cy), ACCENT.y);
    }
}
