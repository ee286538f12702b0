//! The show's picture as planar I420 and the few ways it is drawn on: colour, scaled video,
//! pictures with alpha (logo, overlay, text) and discs (avatars).

use ab_glyph::{Font as _, FontArc, PxScale, ScaleFont as _};
use fast_image_resize::images::{Image, ImageRef};
use fast_image_resize::{FilterType, PixelType, ResizeAlg, ResizeOptions, Resizer};

use super::layout::Rect;

/// A colour in BT.601 limited range, the colour space x264 and FFmpeg assume for yuv420p.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Yuv {
    pub y: u8,
    pub u: u8,
    pub v: u8,
}

impl Yuv {
    pub const BLACK: Yuv = Yuv {
        y: 16,
        u: 128,
        v: 128,
    };
    pub const WHITE: Yuv = Yuv {
        y: 235,
        u: 128,
        v: 128,
    };

    pub fn from_rgb(r: u8, g: u8, b: u8) -> Self {
        let (r, g, b) = (f32::from(r), f32::from(g), f32::from(b));
        let y = 16.0 + 0.257 * r + 0.504 * g + 0.098 * b;
        let u = 128.0 - 0.148 * r - 0.291 * g + 0.439 * b;
        let v = 128.0 + 0.439 * r - 0.368 * g - 0.071 * b;
        Self {
            y: y.round().clamp(0.0, 255.0) as u8,
            u: u.round().clamp(0.0, 255.0) as u8,
            v: v.round().clamp(0.0, 255.0) as u8,
        }
    }

    /// `#rrggbb`, as the scene validated it.
    pub fn from_hex(hex: &str) -> Option<Self> {
        let h = hex.strip_prefix('#')?;
        if h.len() != 6 {
            return None;
        }
        let n = u32::from_str_radix(h, 16).ok()?;
        Some(Self::from_rgb((n >> 16) as u8, (n >> 8) as u8, n as u8))
    }

    /// The same hue, darker: panels behind text.
    pub fn darker(self, by: f32) -> Self {
        Self {
            y: (16.0 + (f32::from(self.y) - 16.0) * (1.0 - by)) as u8,
            u: (128.0 + (f32::from(self.u) - 128.0) * (1.0 - by)) as u8,
            v: (128.0 + (f32::from(self.v) - 128.0) * (1.0 - by)) as u8,
        }
    }
}

/// One I420 picture: the Y plane, then U, then V, each without padding. Width and height are
/// even.
#[derive(Clone, Debug, PartialEq)]
pub struct Frame {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

impl Frame {
    pub fn new(width: u32, height: u32) -> Self {
        let (w, h) = (width as usize, height as usize);
        let mut data = vec![16; w * h];
        data.resize(w * h * 3 / 2, 128);
        Self {
            width,
            height,
            data,
        }
    }

    pub fn bytes(width: u32, height: u32) -> usize {
        width as usize * height as usize * 3 / 2
    }

    /// A frame over bytes a decoder wrote, or None when their length does not match.
    pub fn from_bytes(width: u32, height: u32, data: Vec<u8>) -> Option<Self> {
        (width.is_multiple_of(2)
            && height.is_multiple_of(2)
            && data.len() == Self::bytes(width, height))
        .then_some(Self {
            width,
            height,
            data,
        })
    }

    fn planes_mut(&mut self) -> [(&mut [u8], usize); 3] {
        let w = self.width as usize;
        let luma = w * self.height as usize;
        let (y, uv) = self.data.split_at_mut(luma);
        let (u, v) = uv.split_at_mut(luma / 4);
        [(y, w), (u, w / 2), (v, w / 2)]
    }

    fn planes(&self) -> [(&[u8], usize); 3] {
        let w = self.width as usize;
        let luma = w * self.height as usize;
        let (y, uv) = self.data.split_at(luma);
        let (u, v) = uv.split_at(luma / 4);
        [(y, w), (u, w / 2), (v, w / 2)]
    }

    /// The part of `r` inside the frame, with even edges.
    fn clip(&self, r: Rect) -> Option<Rect> {
        let x = r.x.min(self.width) & !1;
        let y = r.y.min(self.height) & !1;
        let right = r.right().min(self.width) & !1;
        let bottom = r.bottom().min(self.height) & !1;
        (right > x && bottom > y).then_some(Rect {
            x,
            y,
            w: right - x,
            h: bottom - y,
        })
    }

    pub fn fill(&mut self, r: Rect, c: Yuv) {
        let Some(r) = self.clip(r) else { return };
        for (i, (plane, stride)) in self.planes_mut().into_iter().enumerate() {
            let (value, sub) = match i {
                0 => (c.y, 1),
                1 => (c.u, 2),
                _ => (c.v, 2),
            };
            let (x, w) = ((r.x / sub) as usize, (r.w / sub) as usize);
            for row in (r.y / sub) as usize..((r.y + r.h) / sub) as usize {
                plane[row * stride + x..row * stride + x + w].fill(value);
            }
        }
    }

    /// Copies `src` with its top-left corner at (x, y), clipped to the frame.
    pub fn blit(&mut self, src: &Frame, x: u32, y: u32) {
        let Some(r) = self.clip(Rect {
            x,
            y,
            w: src.width,
            h: src.height,
        }) else {
            return;
        };
        for (i, ((dst, ds), (from, ss))) in
            self.planes_mut().into_iter().zip(src.planes()).enumerate()
        {
            let sub = if i == 0 { 1 } else { 2 };
            let (dx, w) = ((r.x / sub) as usize, (r.w / sub) as usize);
            let skip_x = ((r.x - x) / sub) as usize;
            for row in 0..(r.h / sub) as usize {
                let sr = row + ((r.y - y) / sub) as usize;
                let dr = row + (r.y / sub) as usize;
                dst[dr * ds + dx..dr * ds + dx + w]
                    .copy_from_slice(&from[sr * ss + skip_x..sr * ss + skip_x + w]);
            }
        }
    }

    /// A filled disc of `radius` around (cx, cy), for avatars.
    pub fn disc(&mut self, cx: u32, cy: u32, radius: u32, c: Yuv) {
        let r2 = i64::from(radius) * i64::from(radius);
        let (w, h) = (self.width, self.height);
        for (i, (plane, stride)) in self.planes_mut().into_iter().enumerate() {
            let (value, sub) = match i {
                0 => (c.y, 1u32),
                1 => (c.u, 2),
                _ => (c.v, 2),
            };
            let (pw, ph) = (w / sub, h / sub);
            let (cx, cy, rad) = (cx / sub, cy / sub, radius / sub);
            for py in cy.saturating_sub(rad)..(cy + rad).min(ph) {
                for px in cx.saturating_sub(rad)..(cx + rad).min(pw) {
                    let dx = i64::from(px * sub) - i64::from(cx * sub);
                    let dy = i64::from(py * sub) - i64::from(cy * sub);
                    if dx * dx + dy * dy <= r2 {
                        plane[py as usize * stride + px as usize] = value;
                    }
                }
            }
        }
    }
}

/// Scales frames with SIMD (fast_image_resize), one plane at a time.
pub struct Scaler {
    resizer: Resizer,
    options: ResizeOptions,
}

impl Default for Scaler {
    fn default() -> Self {
        Self {
            resizer: Resizer::new(),
            options: ResizeOptions::new().resize_alg(ResizeAlg::Convolution(FilterType::Bilinear)),
        }
    }
}

impl Scaler {
    /// The size [`Scaler::scale`] makes of `width`×`height`: even, at least 2×2.
    pub fn even(width: u32, height: u32) -> (u32, u32) {
        (width.max(2) & !1, height.max(2) & !1)
    }

    /// `src` at `width`×`height` (both made even).
    pub fn scale(&mut self, src: &Frame, width: u32, height: u32) -> Frame {
        let (width, height) = Self::even(width, height);
        if (width, height) == (src.width, src.height) {
            return src.clone();
        }
        let mut out = Frame::new(width, height);
        for (i, ((dst, _), (from, _))) in out.planes_mut().into_iter().zip(src.planes()).enumerate()
        {
            let sub = if i == 0 { 1 } else { 2 };
            let from = ImageRef::new(src.width / sub, src.height / sub, from, PixelType::U8)
                .expect("the plane holds width×height bytes");
            let mut to = Image::from_slice_u8(width / sub, height / sub, dst, PixelType::U8)
                .expect("the plane holds width×height bytes");
            self.resizer
                .resize(&from, &mut to, &self.options)
                .expect("U8 to U8 always resizes");
        }
        out
    }
}

/// A picture with alpha, converted to I420 once so that drawing it each frame is a blend.
#[derive(Clone, Debug)]
pub struct Sprite {
    pub width: u32,
    pub height: u32,
    frame: Frame,
    /// Alpha at full resolution, and averaged over each 2×2 block for chroma.
    alpha: Vec<u8>,
    alpha_chroma: Vec<u8>,
}

impl Sprite {
    /// From straight (not premultiplied) RGBA.
    pub fn from_rgba(width: u32, height: u32, rgba: &[u8]) -> Self {
        let (width, height) = (width & !1, height & !1);
        let stride = rgba.len() / height.max(1) as usize;
        let mut frame = Frame::new(width, height);
        let mut alpha = vec![0; (width * height) as usize];
        let mut alpha_chroma = vec![0; (width * height / 4) as usize];
        let (w, h) = (width as usize, height as usize);
        {
            let [(y, _), (u, _), (v, _)] = frame.planes_mut();
            for row in 0..h {
                for col in 0..w {
                    let p = &rgba[row * stride + col * 4..row * stride + col * 4 + 4];
                    let c = Yuv::from_rgb(p[0], p[1], p[2]);
                    y[row * w + col] = c.y;
                    alpha[row * w + col] = p[3];
                    if row % 2 == 0 && col % 2 == 0 {
                        let i = row / 2 * (w / 2) + col / 2;
                        u[i] = c.u;
                        v[i] = c.v;
                        let base = row * stride + col * 4 + 3;
                        let a = [base, base + 4, base + stride, base + stride + 4]
                            .iter()
                            .map(|&o| u32::from(rgba[o]))
                            .sum::<u32>();
                        alpha_chroma[i] = (a / 4) as u8;
                    }
                }
            }
        }
        Self {
            width,
            height,
            frame,
            alpha,
            alpha_chroma,
        }
    }

    /// A solid coverage mask (text) in one colour.
    pub fn from_mask(width: u32, height: u32, mask: &[u8], c: Yuv) -> Self {
        let (width, height) = (width.max(2) & !1, height.max(2) & !1);
        let (w, h) = (width as usize, height as usize);
        let mut frame = Frame::new(width, height);
        frame.fill(
            Rect {
                x: 0,
                y: 0,
                w: width,
                h: height,
            },
            c,
        );
        let alpha = mask[..w * h].to_vec();
        let mut alpha_chroma = vec![0; w * h / 4];
        for row in (0..h).step_by(2) {
            for col in (0..w).step_by(2) {
                let s = u32::from(mask[row * w + col])
                    + u32::from(mask[row * w + col + 1])
                    + u32::from(mask[(row + 1) * w + col])
                    + u32::from(mask[(row + 1) * w + col + 1]);
                alpha_chroma[row / 2 * (w / 2) + col / 2] = (s / 4) as u8;
            }
        }
        Self {
            width,
            height,
            frame,
            alpha,
            alpha_chroma,
        }
    }

    /// A decoded image file (PNG, JPEG) scaled to fit `max_w`×`max_h`, keeping its aspect.
    pub fn from_image(img: &image::DynamicImage, max_w: u32, max_h: u32) -> Self {
        let img = img.resize(max_w, max_h, image::imageops::FilterType::Triangle);
        let rgba = img.to_rgba8();
        Self::from_rgba(rgba.width(), rgba.height(), rgba.as_raw())
    }

    /// Blends onto `dst` with the top-left corner at (x, y); `clip` bounds what is touched
    /// (a scrolling ticker stays inside its band).
    pub fn draw(&self, dst: &mut Frame, x: i64, y: i64, clip: Rect) {
        let Some(clip) = dst.clip(clip) else { return };
        let (x, y) = (x & !1, y & !1);
        let x0 = x.max(i64::from(clip.x));
        let y0 = y.max(i64::from(clip.y));
        let x1 = (x + i64::from(self.width)).min(i64::from(clip.right()));
        let y1 = (y + i64::from(self.height)).min(i64::from(clip.bottom()));
        if x1 <= x0 || y1 <= y0 {
            return;
        }
        let src = self.frame.planes();
        for (i, (plane, stride)) in dst.planes_mut().into_iter().enumerate() {
            let sub = if i == 0 { 1 } else { 2 };
            let alpha = if i == 0 {
                &self.alpha
            } else {
                &self.alpha_chroma
            };
            let (from, ss) = src[i];
            for dy in (y0 / sub)..(y1 / sub) {
                let sy = (dy - y / sub) as usize;
                for dx in (x0 / sub)..(x1 / sub) {
                    let sx = (dx - x / sub) as usize;
                    let a = u32::from(alpha[sy * ss + sx]);
                    if a == 0 {
                        continue;
                    }
                    let d = &mut plane[dy as usize * stride + dx as usize];
                    let s = u32::from(from[sy * ss + sx]);
                    *d = ((s * a + u32::from(*d) * (255 - a) + 127) / 255) as u8;
                }
            }
        }
    }
}

/// Text rendering with a TrueType font (ab_glyph).
#[derive(Clone)]
pub struct Font(FontArc);

impl Font {
    pub fn from_bytes(bytes: Vec<u8>) -> anyhow::Result<Self> {
        Ok(Self(FontArc::try_from_vec(bytes)?))
    }

    /// `text` on one line, `px` high, in colour `c`; None for text with nothing to draw.
    pub fn render(&self, text: &str, px: f32, c: Yuv) -> Option<Sprite> {
        let font = self.0.as_scaled(PxScale::from(px));
        let mut glyphs = Vec::new();
        let mut caret = 0.0f32;
        let mut last = None;
        for ch in text.chars() {
            let id = font.glyph_id(ch);
            if let Some(prev) = last {
                caret += font.kern(prev, id);
            }
            glyphs.push(
                id.with_scale_and_position(
                    PxScale::from(px),
                    ab_glyph::point(caret, font.ascent()),
                ),
            );
            caret += font.h_advance(id);
            last = Some(id);
        }
        let width = (caret.ceil() as u32 + 2).next_multiple_of(2);
        let height = ((font.ascent() - font.descent()).ceil() as u32 + 2).next_multiple_of(2);
        if caret <= 0.0 {
            return None;
        }
        let mut mask = vec![0u8; (width * height) as usize];
        for g in glyphs {
            if let Some(outlined) = self.0.outline_glyph(g) {
                let b = outlined.px_bounds();
                outlined.draw(|gx, gy, cov| {
                    let px = b.min.x as i64 + i64::from(gx);
                    let py = b.min.y as i64 + i64::from(gy);
                    if px >= 0 && py >= 0 && (px as u32) < width && (py as u32) < height {
                        let i = py as usize * width as usize + px as usize;
                        mask[i] = mask[i].max((cov * 255.0) as u8);
                    }
                });
            }
        }
        Some(Sprite::from_mask(width, height, &mask, c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(f: &Frame, x: u32, y: u32) -> (u8, u8, u8) {
        let [(yp, ys), (u, cs), (v, _)] = f.planes();
        let (cx, cy) = ((x / 2) as usize, (y / 2) as usize);
        (
            yp[y as usize * ys + x as usize],
            u[cy * cs + cx],
            v[cy * cs + cx],
        )
    }

    #[test]
    fn fill_and_blit_stay_inside_their_rectangles() {
        let mut f = Frame::new(64, 32);
        let red = Yuv::from_rgb(255, 0, 0);
        f.fill(
            Rect {
                x: 10,
                y: 4,
                w: 20,
                h: 10,
            },
            red,
        );
        assert_eq!(at(&f, 10, 4), (red.y, red.u, red.v));
        assert_eq!(at(&f, 29, 13), (red.y, red.u, red.v));
        assert_eq!(at(&f, 30, 13), (16, 128, 128));
        let mut tile = Frame::new(8, 8);
        tile.fill(
            Rect {
                x: 0,
                y: 0,
                w: 8,
                h: 8,
            },
            Yuv::WHITE,
        );
        // Partly off the right edge: clipped, nothing panics.
        f.blit(&tile, 60, 0);
        assert_eq!(at(&f, 63, 7).0, 235);
        assert_eq!(at(&f, 59, 7).0, 16);
    }

    #[test]
    fn scaling_keeps_a_flat_colour() {
        let mut f = Frame::new(1280, 720);
        let c = Yuv::from_rgb(20, 120, 220);
        f.fill(
            Rect {
                x: 0,
                y: 0,
                w: 1280,
                h: 720,
            },
            c,
        );
        let s = Scaler::default().scale(&f, 401, 225);
        assert_eq!((s.width, s.height), (400, 224));
        assert_eq!(at(&s, 200, 100), (c.y, c.u, c.v));
    }

    #[test]
    fn sprites_blend_by_alpha() {
        let mut f = Frame::new(16, 16);
        // A white 4×4 picture, opaque on the left half, transparent on the right.
        let mut rgba = vec![255u8; 4 * 4 * 4];
        for row in 0..4 {
            for col in 2..4 {
                rgba[(row * 4 + col) * 4 + 3] = 0;
            }
        }
        let s = Sprite::from_rgba(4, 4, &rgba);
        s.draw(
            &mut f,
            4,
            4,
            Rect {
                x: 0,
                y: 0,
                w: 16,
                h: 16,
            },
        );
        assert_eq!(at(&f, 4, 4).0, 235);
        assert_eq!(at(&f, 6, 4).0, 16);
    }

    #[test]
    fn colours_from_hex() {
        assert_eq!(Yuv::from_hex("#000000"), Some(Yuv::BLACK));
        assert_eq!(Yuv::from_hex("#ffffff"), Some(Yuv::WHITE));
        assert_eq!(Yuv::from_hex("fff"), None);
    }
}
