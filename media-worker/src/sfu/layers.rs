//! Simulcast layer choice: from the layers a publisher sends, the bandwidth a subscriber has
//! and the size it renders at, which one it gets.

use str0m::media::Rid;

/// Our clients publish three layers named as LiveKit names them: quarter, half and full
/// resolution. Each rung's nominal height and bitrate at 720p30.
const LADDER: [(&str, u32, u64); 3] = [
    ("q", 180, 150_000),
    ("h", 360, 500_000),
    ("f", 720, 1_500_000),
];

/// What one subscriber's video needs at most: the top rung.
pub const TOP_BITRATE: u64 = LADDER[2].2;

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
