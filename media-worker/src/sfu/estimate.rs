//! A subscriber's bandwidth from the loss its receiver reports: GCC's loss-based controller.
//!
//! str0m's TWCC estimator comes with its leaky-bucket pacer, and that pacer was 40% of the
//! SFU's CPU and queued media for seconds while its estimate ramped up from its start value
//! (an SFU forwards what publishers already paced). Without it, each subscriber's bandwidth
//! follows draft-ietf-rmcat-gcc-02 §6: over 10% loss the estimate falls by half the loss,
//! under 2% it grows by 5% a second, in between it holds. Until the first loss it is unknown,
//! and the layers are chosen by the rendered size alone. A peer that sends REMB is believed
//! instead.

use std::time::{Duration, Instant};

/// Loss reports are folded in at most this often (str0m's stats interval).
const EVERY: Duration = Duration::from_millis(900);
/// Never below what a quarter layer and the audio need.
const FLOOR_BPS: u64 = 150_000;
/// Above this the estimate no longer limits anything: back to "unknown".
const CEILING_BPS: u64 = 50_000_000;

#[derive(Debug)]
pub struct LossBased {
    estimate: Option<u64>,
    since: Instant,
    sent_bytes: u64,
    worst_loss: Option<f32>,
}

impl LossBased {
    pub fn new(now: Instant) -> Self {
        Self {
            estimate: None,
            since: now,
            sent_bytes: 0,
            worst_loss: None,
        }
    }

    /// What one outgoing stream sent since its last report, and the loss its receiver
    /// reported (the fraction lost, from RTCP receiver reports).
    pub fn sent(&mut self, bytes: u64, loss: Option<f32>) {
        self.sent_bytes += bytes;
        if let Some(l) = loss.filter(|l| l.is_finite()) {
            self.worst_loss = Some(self.worst_loss.map_or(l, |w| w.max(l)));
        }
    }

    /// Folds in what was reported since the last update; `Some` when the estimate changed.
    pub fn update(&mut self, now: Instant) -> Option<Option<u64>> {
        let span = now.saturating_duration_since(self.since);
        if span < EVERY {
            return None;
        }
        let rate = (self.sent_bytes as f64 * 8.0 / span.as_secs_f64()) as u64;
        let loss = self.worst_loss.take();
        self.since = now;
        self.sent_bytes = 0;
        let before = self.estimate;
        self.estimate = match (loss, self.estimate) {
            (None, e) => e,
            // Cut from what was actually sent: an estimate above it says nothing.
            (Some(l), e) if l > 0.10 => {
                let base = e.map_or(rate, |e| e.min(rate.max(FLOOR_BPS)));
                Some(((base as f64 * (1.0 - 0.5 * f64::from(l))).round() as u64).max(FLOOR_BPS))
            }
            (Some(l), Some(e)) if l < 0.02 => {
                let grown = (e as f64 * 1.05).round() as u64 + 1_000;
                (grown < CEILING_BPS).then_some(grown)
            }
            (Some(_), e) => e,
        };
        (self.estimate != before).then_some(self.estimate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn second(l: &mut LossBased, at: &mut Instant, bytes: u64, loss: f32) -> Option<u64> {
        l.sent(bytes, Some(loss));
        *at += Duration::from_secs(1);
        l.update(*at);
        l.estimate
    }

    #[test]
    fn no_loss_leaves_the_estimate_unknown() {
        let mut at = Instant::now();
        let mut l = LossBased::new(at);
        for _ in 0..5 {
            assert_eq!(second(&mut l, &mut at, 500_000, 0.0), None);
        }
    }

    #[test]
    fn heavy_loss_cuts_from_the_rate_sent_then_little_loss_grows_it_back() {
        let mut at = Instant::now();
        let mut l = LossBased::new(at);
        // 4 Mbit/s sent, 20% lost: 4M x 0.9.
        let cut = second(&mut l, &mut at, 500_000, 0.2).unwrap();
        assert_eq!(cut, 3_600_000);
        // Still 20% at 2 Mbit/s sent: from the rate, not the older estimate.
        let cut = second(&mut l, &mut at, 250_000, 0.2).unwrap();
        assert_eq!(cut, 1_800_000);
        // 5% holds; 1% grows by 5%.
        assert_eq!(second(&mut l, &mut at, 225_000, 0.05), Some(1_800_000));
        assert_eq!(second(&mut l, &mut at, 225_000, 0.01), Some(1_891_000));
        // A long clean run gives up limiting altogether.
        let mut e = Some(0);
        for _ in 0..200 {
            e = second(&mut l, &mut at, 225_000, 0.0);
        }
        assert_eq!(e, None);
    }

    #[test]
    fn the_estimate_never_falls_below_a_quarter_layer() {
        let mut at = Instant::now();
        let mut l = LossBased::new(at);
        for _ in 0..20 {
            second(&mut l, &mut at, 1_000, 0.9);
        }
        assert_eq!(l.estimate, Some(FLOOR_BPS));
    }

    #[test]
    fn reports_are_folded_in_once_a_second_with_the_worst_loss() {
        let at = Instant::now();
        let mut l = LossBased::new(at);
        l.sent(250_000, Some(0.0));
        l.sent(250_000, Some(0.5));
        assert_eq!(l.update(at + Duration::from_millis(100)), None, "too soon");
        assert_eq!(
            l.update(at + Duration::from_secs(1)),
            Some(Some(3_000_000)),
            "4 Mbit/s at 50% loss"
        );
    }
}
