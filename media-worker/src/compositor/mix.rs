//! The show's audio: every on-stage, unmuted source at its gain, summed, then a limiter so
//! that loud moments are turned down instead of clipped.

/// The ceiling, a little under full scale (about -1 dBFS).
const CEILING: f32 = 29_000.0;
/// The limiter lets go over about 100 ms.
const RELEASE_PER_FRAME: f32 = 1.0 / 4_800.0;

/// A peak limiter with instant attack: no sample ever goes past the ceiling.
#[derive(Debug)]
pub struct Limiter {
    gain: f32,
}

impl Default for Limiter {
    fn default() -> Self {
        Self { gain: 1.0 }
    }
}

impl Limiter {
    /// Limits interleaved stereo `mix` and returns it as s16le bytes, as the encoder reads it.
    pub fn apply(&mut self, mix: &[f32], out: &mut Vec<u8>) {
        out.clear();
        out.reserve(mix.len() * 2);
        for pair in mix.chunks(2) {
            let peak = pair.iter().fold(0.0f32, |m, s| m.max(s.abs()));
            let needed = if peak > CEILING { CEILING / peak } else { 1.0 };
            self.gain = if needed < self.gain {
                needed
            } else {
                (self.gain + RELEASE_PER_FRAME).min(1.0)
            };
            for s in pair {
                let v = (s * self.gain).round().clamp(-CEILING, CEILING) as i16;
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
    }

    pub fn gain(&self) -> f32 {
        self.gain
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(bytes: &[u8]) -> Vec<i16> {
        bytes
            .chunks(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    #[test]
    fn quiet_audio_passes_unchanged() {
        let mut l = Limiter::default();
        let mut out = Vec::new();
        l.apply(&[1000.0, -2000.0, 0.0, 32.0], &mut out);
        assert_eq!(samples(&out), [1000, -2000, 0, 32]);
    }

    #[test]
    fn three_loud_voices_never_clip_and_the_gain_recovers() {
        let mut l = Limiter::default();
        let mut out = Vec::new();
        // Three sources at full scale summed: three times what an i16 holds.
        let loud: Vec<f32> = (0..9600)
            .map(|i| 3.0 * 32_767.0 * (i as f32 / 20.0).sin())
            .collect();
        l.apply(&loud, &mut out);
        let s = samples(&out);
        assert!(s.iter().all(|v| f32::from(v.unsigned_abs()) <= CEILING));
        assert!(
            s.iter()
                .any(|v| f32::from(v.unsigned_abs()) > CEILING * 0.9)
        );
        assert!(l.gain() < 0.5);
        l.apply(&vec![100.0; 48_000], &mut out);
        assert!((l.gain() - 1.0).abs() < 1e-3, "released after silence");
    }
}
