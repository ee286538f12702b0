//! Simulcast layer choice: from the layers a publisher sends, the bandwidth a subscriber has
//! and the size it renders at, which one it gets.

use std::time::{Duration, Instant};

use str0m::media::{MediaData, Rid};

/// A simulcast layer not heard from for this long is treated as paused by the browser.
const LAYER_STALE: Duration = Duration::from_secs(2);
/// Layer bitrates are measured over this window.
const RATE_WINDOW: Duration = Duration::from_secs(1);
/// How often a receiver's layer is re-chosen: often enough to follow the estimate, seldom
/// enough not to flap between layers.
const RECHOOSE: Duration = Duration::from_millis(500);

/// Our clients publish three layers named as LiveKit names them: quarter, half and full
/// resolution. Each rung's nominal height and bitrate at 720p30.
const LADDER: [(&str, u32, u64); 3] = [
    ("q", 180, 150_000),
    ("h", 360, 500_000),
    ("f", 720, 1_500_000),
];

fn rung(rid: &Rid) -> usize {
    // An unknown name is ranked as the middle rung: usable, never preferred at the extremes.
    LADDER
        .iter()
        .position(|(name, _, _)| **rid == **name)
        .unwrap_or(1)
}

/// A layer a publisher is sending, with its bitrate as measured passing through the SFU once
/// a full window of it was seen.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Available {
    pub rid: Rid,
    pub bitrate: Option<u64>,
}

impl Available {
    fn bitrate(&self) -> u64 {
        self.bitrate.unwrap_or(LADDER[rung(&self.rid)].2)
    }
}

/// The layer to forward: the smallest that covers the rendered height (or the largest when
/// the size is unknown), then stepped down until its bitrate (measured, else nominal) fits
/// the subscriber's share of the estimated bandwidth. `None` only if nothing is available.
pub fn choose(
    available: &[Available],
    share_bps: Option<u64>,
    view: Option<(u32, u32)>,
) -> Option<Rid> {
    let mut sorted: Vec<Available> = available.to_vec();
    sorted.sort_by_key(|a| rung(&a.rid));
    sorted.dedup_by_key(|a| a.rid);
    let mut pick = sorted.len().checked_sub(1)?;
    if let Some((_, height)) = view {
        // Rendering at 0x0 (a hidden tile) still gets the smallest layer, never nothing: the
        // browser would show a frozen frame when it is shown again.
        if let Some(i) = sorted
            .iter()
            .position(|a| u64::from(LADDER[rung(&a.rid)].1) * 4 >= u64::from(height) * 3)
        {
            pick = pick.min(i);
        }
    }
    if let Some(share) = share_bps {
        while pick > 0 && sorted[pick].bitrate() > share {
            pick -= 1;
        }
    }
    Some(sorted[pick].rid)
}

/// One simulcast layer as it passes by: when it last carried media, and its bitrate.
#[derive(Debug)]
struct Seen {
    rid: Rid,
    last: Instant,
    window_start: Instant,
    window_bytes: u64,
    bitrate: Option<u64>,
}

impl Seen {
    fn count(&mut self, now: Instant, bytes: usize) {
        self.last = now;
        self.window_bytes += bytes as u64;
        let span = now.saturating_duration_since(self.window_start);
        if span >= RATE_WINDOW {
            self.bitrate = Some((self.window_bytes as f64 * 8.0 / span.as_secs_f64()) as u64);
            self.window_start = now;
            self.window_bytes = 0;
        }
    }
}

/// What a receiver does with one frame of a simulcast track.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Send,
    /// Not on this receiver's layer.
    Skip,
    /// The receiver switches to this layer at its next keyframe: ask the publisher for one.
    WaitKeyframe(Rid),
}

/// The layer one receiver (a subscriber's track, or the compositor's copy) gets, switched
/// only at keyframes so that the picture never breaks up.
#[derive(Debug)]
pub struct LayerPick {
    /// The layer being forwarded, and the one we are switching to at its next keyframe.
    pub current: Option<Rid>,
    target: Option<Rid>,
    /// The size the receiver renders the track at.
    view: Option<(u32, u32)>,
    /// The publisher's layers as seen passing by.
    seen: Vec<Seen>,
    next_choice: Instant,
}

impl LayerPick {
    pub fn new(now: Instant, view: Option<(u32, u32)>) -> Self {
        Self {
            current: None,
            target: None,
            view,
            seen: Vec::new(),
            next_choice: now,
        }
    }

    /// A new rendered size, acted on at the next frame rather than up to `RECHOOSE` later.
    pub fn set_view(&mut self, view: Option<(u32, u32)>, now: Instant) {
        self.view = view;
        self.next_choice = now;
    }

    /// Frames without a rid (no simulcast) always pass; `share_bps` is the receiver's share
    /// of its estimated bandwidth, if it has an estimate.
    pub fn admit(&mut self, now: Instant, data: &MediaData, share_bps: Option<u64>) -> Admit {
        let Some(rid) = data.rid else {
            return Admit::Send;
        };
        let seen = match self.seen.iter().position(|s| s.rid == rid) {
            Some(i) => &mut self.seen[i],
            None => {
                self.seen.push(Seen {
                    rid,
                    last: now,
                    window_start: now,
                    window_bytes: 0,
                    bitrate: None,
                });
                self.seen.last_mut().expect("just pushed")
            }
        };
        seen.count(now, data.data.len());
        if now >= self.next_choice {
            let fresh: Vec<Available> = self
                .seen
                .iter()
                .filter(|s| now.saturating_duration_since(s.last) < LAYER_STALE)
                .map(|s| Available {
                    rid: s.rid,
                    bitrate: s.bitrate,
                })
                .collect();
            self.target = choose(&fresh, share_bps, self.view);
            self.next_choice = now + RECHOOSE;
        }
        if self.current != Some(rid) {
            if self.target != Some(rid) {
                return Admit::Skip;
            }
            if !data.is_keyframe() {
                // The old layer goes on until the new one's keyframe: no frozen picture.
                return Admit::WaitKeyframe(rid);
            }
            self.current = Some(rid);
        }
        Admit::Send
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rids(names: &[&str]) -> Vec<Available> {
        names
            .iter()
            .map(|n| Available {
                rid: Rid::from(*n),
                bitrate: None,
            })
            .collect()
    }

    #[test]
    fn with_nothing_known_the_full_layer_is_sent() {
        assert_eq!(
            choose(&rids(&["q", "h", "f"]), None, None),
            Some(Rid::from("f"))
        );
        assert_eq!(choose(&rids(&["f", "q"]), None, None), Some(Rid::from("f")));
        assert_eq!(choose(&[], None, None), None);
    }

    #[test]
    fn a_small_tile_gets_a_small_layer() {
        let all = rids(&["q", "h", "f"]);
        assert_eq!(choose(&all, None, Some((320, 180))), Some(Rid::from("q")));
        assert_eq!(choose(&all, None, Some((640, 360))), Some(Rid::from("h")));
        assert_eq!(choose(&all, None, Some((480, 270))), Some(Rid::from("h")));
        assert_eq!(choose(&all, None, Some((1920, 1080))), Some(Rid::from("f")));
        assert_eq!(choose(&all, None, Some((0, 0))), Some(Rid::from("q")));
    }

    #[test]
    fn little_bandwidth_steps_down_but_never_to_nothing() {
        let all = rids(&["q", "h", "f"]);
        assert_eq!(choose(&all, Some(2_000_000), None), Some(Rid::from("f")));
        assert_eq!(choose(&all, Some(800_000), None), Some(Rid::from("h")));
        assert_eq!(choose(&all, Some(200_000), None), Some(Rid::from("q")));
        assert_eq!(choose(&all, Some(10_000), None), Some(Rid::from("q")));
        // Both limits apply: the smaller wins.
        assert_eq!(
            choose(&all, Some(200_000), Some((1280, 720))),
            Some(Rid::from("q"))
        );
    }

    #[test]
    fn measured_bitrates_beat_nominal_ones() {
        // A static screen in the camera track: every layer is cheap, so the top one fits.
        let cheap: Vec<Available> = ["q", "h", "f"]
            .iter()
            .map(|n| Available {
                rid: Rid::from(*n),
                bitrate: Some(100_000),
            })
            .collect();
        assert_eq!(choose(&cheap, Some(300_000), None), Some(Rid::from("f")));
    }

    #[test]
    fn a_paused_layer_is_not_chosen() {
        // The browser stopped sending "f" (its own bandwidth limit): the best left is sent.
        assert_eq!(
            choose(&rids(&["q", "h"]), None, Some((1280, 720))),
            Some(Rid::from("h"))
        );
    }
}
