//! Active speaker detection from RFC 6464 audio levels: smoothed per participant, with a
//! threshold for speech and a hold time so the highlight does not flicker between speakers.

use std::time::{Duration, Instant};

/// Levels are -dBov: 0 is the loudest, 127 silence. Speech sits around 20-40, rooms at 60+.
const SPEECH_LEVEL: f32 = 55.0;
/// A new speaker must be this many dB louder than the current one to take over early.
const HYSTERESIS: f32 = 6.0;
/// The current speaker keeps the highlight at least this long, unless they fall silent.
const HOLD: Duration = Duration::from_millis(1500);
/// A participant whose audio stopped arriving is not speaking.
const SILENT_AFTER: Duration = Duration::from_millis(500);
/// Per packet (50 a second): about 200 ms to follow a change.
const SMOOTHING: f32 = 0.1;

#[derive(Debug)]
struct Level<K> {
    key: K,
    /// Smoothed loudness in dB above silence (127 - level).
    loudness: f32,
    last: Instant,
}

#[derive(Debug)]
pub struct SpeakerDetector<K> {
    levels: Vec<Level<K>>,
    current: Option<K>,
    since: Option<Instant>,
}

impl<K: Clone + PartialEq> Default for SpeakerDetector<K> {
    fn default() -> Self {
        Self {
            levels: Vec::new(),
            current: None,
            since: None,
        }
    }
}

impl<K: Clone + PartialEq> SpeakerDetector<K> {
    pub fn observe(&mut self, key: &K, level: u8, now: Instant) {
        let loudness = 127.0 - f32::from(level.min(127));
        match self.levels.iter_mut().find(|l| l.key == *key) {
            Some(l) => {
                l.loudness += (loudness - l.loudness) * SMOOTHING;
                l.last = now;
            }
            None => self.levels.push(Level {
                key: key.clone(),
                loudness: loudness * SMOOTHING,
                last: now,
            }),
        }
    }

    pub fn forget(&mut self, key: &K) {
        self.levels.retain(|l| l.key != *key);
    }

    pub fn current(&self) -> Option<&K> {
        self.current.as_ref()
    }

    fn speaking(&self, l: &Level<K>, now: Instant) -> bool {
        now.saturating_duration_since(l.last) < SILENT_AFTER && l.loudness >= 127.0 - SPEECH_LEVEL
    }

    /// Re-decides who is speaking; returns the new speaker (or `Some(None)` for nobody) when
    /// it changed.
    pub fn tick(&mut self, now: Instant) -> Option<Option<K>> {
        let loudest = self
            .levels
            .iter()
            .filter(|l| self.speaking(l, now))
            .max_by(|a, b| a.loudness.total_cmp(&b.loudness));
        let current = self
            .current
            .as_ref()
            .and_then(|k| self.levels.iter().find(|l| l.key == *k))
            .filter(|l| self.speaking(l, now));
        let next = match (current, loudest) {
            (_, None) => None,
            (None, Some(l)) => Some(l.key.clone()),
            (Some(c), Some(l)) if c.key == l.key => Some(c.key.clone()),
            (Some(c), Some(l)) => {
                let held = self
                    .since
                    .is_some_and(|s| now.saturating_duration_since(s) >= HOLD);
                if held || l.loudness >= c.loudness + HYSTERESIS {
                    Some(l.key.clone())
                } else {
                    Some(c.key.clone())
                }
            }
        };
        if next == self.current {
            return None;
        }
        self.current = next.clone();
        self.since = Some(now);
        Some(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `ms` of 20 ms packets from each (key, level) and ticks every 100 ms; returns the
    /// changes seen.
    fn talk(
        d: &mut SpeakerDetector<&'static str>,
        now: &mut Instant,
        ms: u64,
        who: &[(&'static str, u8)],
    ) -> Vec<Option<&'static str>> {
        let mut changes = Vec::new();
        for step in 0..ms / 20 {
            *now += Duration::from_millis(20);
            for (k, level) in who {
                d.observe(k, *level, *now);
            }
            if step % 5 == 4
                && let Some(c) = d.tick(*now)
            {
                changes.push(c);
            }
        }
        changes
    }

    #[test]
    fn a_quiet_room_has_no_speaker() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        assert!(talk(&mut d, &mut now, 2000, &[("a", 90), ("b", 127)]).is_empty());
        assert_eq!(d.current(), None);
    }

    #[test]
    fn the_one_who_talks_is_the_speaker_until_silent() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        assert_eq!(
            talk(&mut d, &mut now, 1000, &[("a", 30), ("b", 100)]),
            vec![Some("a")]
        );
        // a stops: after the smoothing decays, nobody is speaking.
        assert_eq!(
            talk(&mut d, &mut now, 2000, &[("a", 100), ("b", 100)]),
            vec![None]
        );
    }

    #[test]
    fn a_short_interjection_does_not_steal_the_highlight() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        talk(&mut d, &mut now, 600, &[("a", 30), ("b", 110)]);
        assert_eq!(d.current(), Some(&"a"));
        // b speaks about as loud as a, briefly: a keeps it within the hold time.
        assert!(talk(&mut d, &mut now, 400, &[("a", 30), ("b", 28)]).is_empty());
        // b goes on talking while a goes quiet: b takes over.
        assert_eq!(
            talk(&mut d, &mut now, 2000, &[("a", 110), ("b", 28)]),
            vec![Some("b")]
        );
    }

    #[test]
    fn a_vanished_participant_stops_speaking() {
        let mut d = SpeakerDetector::default();
        let mut now = Instant::now();
        talk(&mut d, &mut now, 1000, &[("a", 30)]);
        assert_eq!(d.current(), Some(&"a"));
        now += Duration::from_secs(1);
        assert_eq!(d.tick(now), Some(None));
    }
}
