//! Layout maths: where each on-stage tile goes on the canvas, for every layout and 1-10 tiles.
//! Pure: canvas size, layout and tiles in, rectangles out.

use castyard_crd::Layout;

/// A rectangle on the canvas, in pixels. Every edge is even, as 4:2:0 chroma needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub w: u32,
    pub h: u32,
}

impl Rect {
    pub fn right(&self) -> u32 {
        self.x + self.w
    }

    pub fn bottom(&self) -> u32 {
        self.y + self.h
    }

    pub fn overlaps(&self, o: &Rect) -> bool {
        self.x < o.right() && o.x < self.right() && self.y < o.bottom() && o.y < self.bottom()
    }

    pub fn contains(&self, o: &Rect) -> bool {
        o.x >= self.x && o.y >= self.y && o.right() <= self.right() && o.bottom() <= self.bottom()
    }

    /// The largest rectangle of the given aspect ratio centred inside this one.
    pub fn fit(&self, aspect: f64) -> Rect {
        let aspect = if aspect.is_finite() && aspect > 0.0 {
            aspect
        } else {
            16.0 / 9.0
        };
        let (w, h) = if f64::from(self.w) / f64::from(self.h.max(1)) > aspect {
            ((f64::from(self.h) * aspect) as u32, self.h)
        } else {
            (self.w, (f64::from(self.w) / aspect) as u32)
        };
        let (w, h) = (even(w).max(2), even(h).max(2));
        Rect {
            x: even(self.x + (self.w - w.min(self.w)) / 2),
            y: even(self.y + (self.h - h.min(self.h)) / 2),
            w: w.min(self.w),
            h: h.min(self.h),
        }
    }
}

fn even(v: u32) -> u32 {
    v & !1
}

/// One participant's picture on stage.
#[derive(Clone, Debug, PartialEq)]
pub struct Tile {
    pub id: String,
    /// Width over height of its video (16:9 for a camera, anything for a screen).
    pub aspect: f64,
    pub screen: bool,
}

/// Where one tile is drawn: `frame` is its slot, `video` the picture fitted inside it
/// (letterboxed, never stretched or cropped).
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    pub id: String,
    pub frame: Rect,
    pub video: Rect,
}

/// Space between tiles and around the edge, as a fraction of the canvas height.
const GAP: f64 = 0.02;

/// Places `tiles` (on-stage order) on a `width`×`height` canvas. `featured` is the tile the
/// spotlight, sidebar, solo and picture-in-picture layouts put first (the pinned participant
/// or the active speaker); the first tile when it is None or not on stage. A screen share on
/// stage takes the main slot with the cameras beside it, in every layout but solo and grid.
pub fn place(
    width: u32,
    height: u32,
    layout: Layout,
    tiles: &[Tile],
    featured: Option<&str>,
) -> Vec<Placement> {
    if tiles.is_empty() || width < 16 || height < 16 {
        return Vec::new();
    }
    let gap = even((f64::from(height) * GAP) as u32).max(2);
    let canvas = Rect {
        x: 0,
        y: 0,
        w: even(width),
        h: even(height),
    };
    let inner = Rect {
        x: gap,
        y: gap,
        w: canvas.w - 2 * gap,
        h: canvas.h - 2 * gap,
    };
    // The main tile: a screen share first, then the featured one, then the first.
    let main = tiles
        .iter()
        .position(|t| t.screen)
        .filter(|_| !matches!(layout, Layout::Grid | Layout::Solo))
        .or_else(|| featured.and_then(|f| tiles.iter().position(|t| t.id == f)))
        .unwrap_or(0);
    let others: Vec<&Tile> = tiles
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != main)
        .map(|(_, t)| t)
        .collect();
    let main_tile = &tiles[main];
    let mut out = Vec::with_capacity(tiles.len());
    let mut put = |t: &Tile, frame: Rect| {
        out.push(Placement {
            id: t.id.clone(),
            video: frame.fit(t.aspect),
            frame,
        })
    };
    match layout {
        Layout::Grid => {
            for (t, r) in tiles.iter().zip(grid(inner, tiles, gap)) {
                put(t, r);
            }
        }
        Layout::Solo => put(main_tile, inner),
        Layout::PictureInPicture => {
            put(main_tile, canvas);
            // One inset, bottom right, a quarter of the width.
            if let Some(t) = others.first() {
                let w = even(canvas.w / 4);
                let h = even((f64::from(w) / 16.0 * 9.0) as u32);
                put(
                    t,
                    Rect {
                        x: canvas.w - w - gap,
                        y: canvas.h - h - gap,
                        w,
                        h,
                    },
                );
            }
        }
        Layout::Spotlight if others.is_empty() => put(main_tile, inner),
        Layout::Spotlight => {
            // The featured tile on top, the rest in one row beneath it.
            let strip_h = even(inner.h / 5);
            let top = Rect {
                h: inner.h - strip_h - gap,
                ..inner
            };
            put(main_tile, top);
            let strip = Rect {
                y: top.bottom() + gap,
                h: strip_h,
                ..inner
            };
            for (t, r) in others.iter().zip(row(strip, others.len(), gap)) {
                put(t, r);
            }
        }
        Layout::Sidebar if others.is_empty() => put(main_tile, inner),
        Layout::Sidebar => {
            // The featured tile (or the screen) on the left, the rest stacked on the right.
            let side_w = even(inner.w / 4);
            let left = Rect {
                w: inner.w - side_w - gap,
                ..inner
            };
            put(main_tile, left);
            let side = Rect {
                x: left.right() + gap,
                w: side_w,
                ..inner
            };
            for (t, r) in others.iter().zip(column(side, others.len(), gap)) {
                put(t, r);
            }
        }
    }
    out
}

/// `n` equal cells in a row, each at most 16:9-shaped, centred in `area`.
fn row(area: Rect, n: usize, gap: u32) -> Vec<Rect> {
    let n32 = n as u32;
    let cell_w = even((area.w - gap * (n32 - 1)) / n32).min(even(area.h * 16 / 9));
    let used = cell_w * n32 + gap * (n32 - 1);
    let x0 = even(area.x + (area.w - used) / 2);
    (0..n32)
        .map(|i| Rect {
            x: x0 + i * (cell_w + gap),
            y: area.y,
            w: cell_w,
            h: area.h,
        })
        .collect()
}

/// `n` equal cells in a column, each at most 16:9-shaped, centred in `area`.
fn column(area: Rect, n: usize, gap: u32) -> Vec<Rect> {
    let n32 = n as u32;
    let cell_h = even((area.h - gap * (n32 - 1)) / n32).min(even(area.w * 9 / 16));
    let used = cell_h * n32 + gap * (n32 - 1);
    let y0 = even(area.y + (area.h - used) / 2);
    (0..n32)
        .map(|i| Rect {
            x: area.x,
            y: y0 + i * (cell_h + gap),
            w: area.w,
            h: cell_h,
        })
        .collect()
}

/// The grid whose tiles are largest: every column count is tried, and the one giving the
/// biggest fitted picture (at the tiles' own aspect ratios) wins. A short last row is centred.
fn grid(area: Rect, tiles: &[Tile], gap: u32) -> Vec<Rect> {
    let n = tiles.len() as u32;
    let aspect = tiles.iter().map(|t| t.aspect).sum::<f64>() / f64::from(n);
    let best_cols = (1..=n)
        .max_by(|&a, &b| {
            let size = |cols: u32| {
                let rows = n.div_ceil(cols);
                let cell = Rect {
                    x: 0,
                    y: 0,
                    w: (area.w - gap * (cols - 1)) / cols,
                    h: (area.h - gap * (rows - 1)) / rows,
                };
                let f = cell.fit(aspect);
                u64::from(f.w) * u64::from(f.h)
            };
            // Ties go to fewer columns (a)…
            size(a).cmp(&size(b)).then(b.cmp(&a))
        })
        .unwrap_or(1);
    let cols = best_cols;
    let rows = n.div_ceil(cols);
    let cell_w = even((area.w - gap * (cols - 1)) / cols);
    let cell_h = even((area.h - gap * (rows - 1)) / rows);
    // Shrink the cells to the pictures' shape so the grid is compact and centred.
    let shape = Rect {
        x: 0,
        y: 0,
        w: cell_w,
        h: cell_h,
    }
    .fit(aspect);
    let (cw, ch) = (shape.w, shape.h);
    let grid_h = ch * rows + gap * (rows - 1);
    let y0 = even(area.y + (area.h - grid_h) / 2);
    let mut out = Vec::with_capacity(n as usize);
    for r in 0..rows {
        let in_row = (n - r * cols).min(cols);
        let row_w = cw * in_row + gap * (in_row - 1);
        let x0 = even(area.x + (area.w - row_w) / 2);
        for c in 0..in_row {
            out.push(Rect {
                x: x0 + c * (cw + gap),
                y: y0 + r * (ch + gap),
                w: cw,
                h: ch,
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: u32 = 1280;
    const H: u32 = 720;

    fn cams(n: usize) -> Vec<Tile> {
        (0..n)
            .map(|i| Tile {
                id: format!("p{i}"),
                aspect: 16.0 / 9.0,
                screen: false,
            })
            .collect()
    }

    const LAYOUTS: [Layout; 5] = [
        Layout::Grid,
        Layout::Spotlight,
        Layout::Sidebar,
        Layout::Solo,
        Layout::PictureInPicture,
    ];

    fn canvas() -> Rect {
        Rect {
            x: 0,
            y: 0,
            w: W,
            h: H,
        }
    }

    #[test]
    fn every_layout_and_count_stays_on_canvas_even_and_in_its_frame() {
        for layout in LAYOUTS {
            for n in 1..=10 {
                for (w, h) in [(W, H), (1920, 1080)] {
                    let tiles = cams(n);
                    let placed = place(w, h, layout, &tiles, None);
                    let canvas = Rect { x: 0, y: 0, w, h };
                    for p in &placed {
                        for r in [p.frame, p.video] {
                            assert!(canvas.contains(&r), "{layout:?} n={n}: {r:?} off canvas");
                            assert!(
                                [r.x, r.y, r.w, r.h].iter().all(|v| v % 2 == 0),
                                "{layout:?} n={n}: {r:?} has an odd edge"
                            );
                            assert!(r.w > 0 && r.h > 0);
                        }
                        assert!(p.frame.contains(&p.video), "{layout:?} n={n}: {p:?}");
                    }
                    let expect = match layout {
                        Layout::Solo => 1,
                        Layout::PictureInPicture => n.min(2),
                        _ => n,
                    };
                    assert_eq!(placed.len(), expect, "{layout:?} n={n}");
                }
            }
        }
    }

    #[test]
    fn tiles_never_overlap_except_the_picture_in_picture_inset() {
        for layout in [Layout::Grid, Layout::Spotlight, Layout::Sidebar] {
            for n in 1..=10 {
                let placed = place(W, H, layout, &cams(n), None);
                for (i, a) in placed.iter().enumerate() {
                    for b in &placed[i + 1..] {
                        assert!(
                            !a.frame.overlaps(&b.frame),
                            "{layout:?} n={n}: {a:?} overlaps {b:?}"
                        );
                    }
                }
            }
        }
        let pip = place(W, H, Layout::PictureInPicture, &cams(2), None);
        assert!(
            pip[0].frame.contains(&pip[1].frame),
            "the inset sits on the main picture"
        );
    }

    #[test]
    fn pictures_keep_their_aspect_ratio() {
        let mut tiles = cams(3);
        tiles[1].aspect = 4.0 / 3.0;
        tiles[2].aspect = 9.0 / 16.0; // a phone held upright
        for layout in LAYOUTS {
            for p in place(W, H, layout, &tiles, None) {
                let t = tiles.iter().find(|t| t.id == p.id).unwrap();
                // Exact up to rounding both edges to even pixels.
                let (w, h) = (f64::from(p.video.w), f64::from(p.video.h));
                assert!(
                    (w - h * t.aspect).abs() <= 2.0 || (h - w / t.aspect).abs() <= 2.0,
                    "{layout:?}: {} drawn {w}x{h}, is {:.3}",
                    p.id,
                    t.aspect
                );
            }
        }
    }

    #[test]
    fn grids_are_balanced_and_use_the_canvas() {
        let shape = |n: usize| {
            let placed = place(W, H, Layout::Grid, &cams(n), None);
            let mut rows: Vec<u32> = placed.iter().map(|p| p.frame.y).collect();
            rows.dedup();
            (rows.len(), placed[0].frame.w)
        };
        assert_eq!(shape(1).0, 1);
        assert_eq!(shape(2).0, 1, "two side by side");
        assert_eq!(shape(4).0, 2, "two by two");
        assert!(shape(9).0 == 3, "three by three");
        assert!(shape(10).0 <= 4);
        // One tile fills most of the canvas width or height.
        let one = place(W, H, Layout::Grid, &cams(1), None);
        assert!(one[0].frame.w >= W * 9 / 10 || one[0].frame.h >= H * 9 / 10);
        // A short last row is centred.
        let three = place(W, H, Layout::Grid, &cams(3), None);
        let last = three.last().unwrap().frame;
        if last.y != three[0].frame.y {
            let mid = last.x + last.w / 2;
            assert!((mid as i64 - (W / 2) as i64).abs() <= 2, "{three:?}");
        }
    }

    #[test]
    fn the_featured_tile_or_a_screen_share_takes_the_main_slot() {
        let tiles = cams(4);
        for layout in [
            Layout::Spotlight,
            Layout::Sidebar,
            Layout::Solo,
            Layout::PictureInPicture,
        ] {
            let placed = place(W, H, layout, &tiles, Some("p2"));
            assert_eq!(placed[0].id, "p2", "{layout:?}");
            let biggest = placed.iter().max_by_key(|p| p.frame.w * p.frame.h).unwrap();
            assert_eq!(biggest.id, "p2", "{layout:?}");
        }
        // Unknown featured id: the first tile.
        assert_eq!(place(W, H, Layout::Solo, &tiles, Some("gone"))[0].id, "p0");
        let mut with_screen = cams(3);
        with_screen.push(Tile {
            id: "screen".into(),
            aspect: 16.0 / 10.0,
            screen: true,
        });
        for layout in [Layout::Spotlight, Layout::Sidebar, Layout::PictureInPicture] {
            let placed = place(W, H, layout, &with_screen, Some("p1"));
            assert_eq!(placed[0].id, "screen", "{layout:?}: the screen leads");
        }
        let sidebar = place(W, H, Layout::Sidebar, &with_screen, None);
        assert!(
            sidebar[0].frame.w > W / 2,
            "the screen gets most of the width"
        );
        assert_eq!(sidebar.len(), 4, "the speakers stay beside it");
    }

    #[test]
    fn degenerate_input_places_nothing() {
        assert!(place(W, H, Layout::Grid, &[], None).is_empty());
        assert!(place(8, 8, Layout::Grid, &cams(2), None).is_empty());
        let r = canvas().fit(f64::NAN);
        assert_eq!((r.w, r.h), (W, H), "a bad aspect falls back to 16:9");
    }
}
