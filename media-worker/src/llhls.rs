//! Low-latency HLS (RFC 8216bis): FFmpeg cuts the show into fragmented-MP4 fragments of a third
//! of a second; each is a partial segment, parts from a keyframe on begin segments, and the
//! playlist (parts, preload hint, blocking reload) is written here.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use mp4_atom::{Decode as _, Moof, Moov};
use tokio::io::{AsyncRead, AsyncReadExt};

/// FFmpeg's fragment length (`-frag_duration`, µs): ten frames at 30 fps.
pub const PART_MICROS: u32 = 333_333;
/// The longest part the playlist promises. FFmpeg cuts a fragment at the first packet past
/// [`PART_MICROS`], so a part can run a frame (or an audio packet) over it.
const PART_TARGET: f64 = 0.4;
/// Complete segments kept in the playlist; their files stay a little longer than they are
/// listed, for players still fetching them.
const LISTED: usize = 6;
/// Segments whose parts are still listed (the spec asks for the last three target durations).
const WITH_PARTS: usize = 2;
const KEPT: usize = LISTED + 2;

/// `sample_is_non_sync_sample` in ISO BMFF sample flags.
const NON_SYNC: u32 = 0x0001_0000;

#[derive(Clone, Debug, PartialEq)]
struct Part {
    /// Global part number: its file is `p<n>.m4s`, so the next part's name is known before
    /// anyone knows whether it starts a segment (the preload hint).
    n: u64,
    seconds: f64,
    independent: bool,
}

#[derive(Clone, Debug, Default, PartialEq)]
struct Segment {
    msn: u64,
    parts: Vec<Part>,
    bytes: Vec<u8>,
}

impl Segment {
    fn seconds(&self) -> f64 {
        self.parts.iter().map(|p| p.seconds).sum()
    }
}

/// The tracks the init segment declares: which one's samples time the parts.
#[derive(Clone, Debug)]
struct Tracks {
    /// Track id, timescale, default sample duration and flags (from `trex`), and whether
    /// it is video; video first.
    tracks: Vec<(u32, u32, u32, u32, bool)>,
}

impl Tracks {
    fn from_moov(moov: &Moov) -> Self {
        let mut tracks: Vec<_> = moov
            .trak
            .iter()
            .map(|t| {
                let id = t.tkhd.track_id;
                let trex = moov
                    .mvex
                    .as_ref()
                    .and_then(|m| m.trex.iter().find(|x| x.track_id == id));
                (
                    id,
                    t.mdia.mdhd.timescale.max(1),
                    trex.map_or(0, |x| x.default_sample_duration),
                    trex.map_or(0, |x| x.default_sample_flags),
                    t.mdia.hdlr.handler == b"vide".into(),
                )
            })
            .collect();
        tracks.sort_by_key(|t| !t.4);
        Self { tracks }
    }

    /// The fragment's length in seconds and whether it starts with a keyframe, read from its
    /// first track (video when there is video).
    fn describe(&self, moof: &Moof) -> (f64, bool) {
        for &(id, timescale, trex_duration, trex_flags, video) in &self.tracks {
            let Some(traf) = moof.traf.iter().find(|t| t.tfhd.track_id == id) else {
                continue;
            };
            let duration = traf.tfhd.default_sample_duration.unwrap_or(trex_duration);
            let flags = traf.tfhd.default_sample_flags.unwrap_or(trex_flags);
            let mut ticks = 0u64;
            let mut first = None;
            for run in &traf.trun {
                for s in run.samples.iter() {
                    first.get_or_insert(s.flags.unwrap_or(flags));
                    ticks += u64::from(s.duration.unwrap_or(duration));
                }
            }
            let independent = !video || first.is_some_and(|f| f & NON_SYNC == 0);
            return (ticks as f64 / f64::from(timescale), independent);
        }
        (0.0, false)
    }
}

/// Writes the playlist, segments and parts into `dir` as fragments arrive.
pub struct Packager {
    dir: PathBuf,
    segment_seconds: f64,
    /// The init segment's name: a restarted packager writes a new one.
    init: String,
    tracks: Option<Tracks>,
    done: Vec<Segment>,
    current: Segment,
    next_part: u64,
    target: u64,
    ended: bool,
}

impl Packager {
    /// Continues the numbering of what a previous packager left in `dir`, so that players
    /// polling the playlist see the show go on rather than start again.
    pub fn new(dir: &Path, segment_seconds: u32) -> Self {
        let (mut msn, mut part) = (0, 0);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(n) = number(&name, "s") {
                    msn = msn.max(n + 1);
                }
                if let Some(n) = number(&name, "p") {
                    part = part.max(n + 1);
                }
            }
        }
        Self {
            dir: dir.into(),
            segment_seconds: f64::from(segment_seconds.max(1)),
            init: format!("init{msn}.mp4"),
            tracks: None,
            done: Vec::new(),
            current: Segment {
                msn,
                ..Segment::default()
            },
            next_part: part,
            target: u64::from(segment_seconds.max(1)),
            ended: false,
        }
    }

    /// Reads FFmpeg's fragmented MP4 to its end, publishing as it goes; then ends the playlist.
    pub async fn run(mut self, mut mp4: impl AsyncRead + Unpin) -> anyhow::Result<()> {
        let mut init = Vec::new();
        let mut pending = Vec::new();
        let mut moof = None;
        while let Some((kind, atom)) = next_atom(&mut mp4).await? {
            match &kind {
                b"ftyp" => init.extend_from_slice(&atom),
                b"moov" => {
                    let moov = Moov::decode(&mut &atom[..]).context("FFmpeg's moov")?;
                    self.tracks = Some(Tracks::from_moov(&moov));
                    init.extend_from_slice(&atom);
                    write(&self.dir.join(&self.init), &init).await?;
                }
                b"moof" => {
                    let parsed = Moof::decode(&mut &atom[..]).context("FFmpeg's moof")?;
                    moof = Some(parsed);
                    pending.extend_from_slice(&atom);
                }
                b"mdat" => {
                    pending.extend_from_slice(&atom);
                    if let (Some(m), Some(t)) = (moof.take(), &self.tracks) {
                        let (seconds, independent) = t.describe(&m);
                        self.part(std::mem::take(&mut pending), seconds, independent)
                            .await?;
                    }
                }
                // The random-access index FFmpeg appends at the end is of no use to a player.
                b"mfra" => {}
                _ => pending.extend_from_slice(&atom),
            }
        }
        self.end().await
    }

    async fn part(
        &mut self,
        bytes: Vec<u8>,
        seconds: f64,
        independent: bool,
    ) -> anyhow::Result<()> {
        // A segment ends where a keyframe starts a part once it is long enough.
        if independent
            && !self.current.parts.is_empty()
            && self.current.seconds() + seconds / 2.0 >= self.segment_seconds
        {
            self.close_segment().await?;
        }
        let n = self.next_part;
        self.next_part += 1;
        write(&self.dir.join(format!("p{n}.m4s")), &bytes).await?;
        self.current.bytes.extend_from_slice(&bytes);
        self.current.parts.push(Part {
            n,
            seconds,
            independent,
        });
        self.publish().await
    }

    async fn close_segment(&mut self) -> anyhow::Result<()> {
        let next = Segment {
            msn: self.current.msn + 1,
            ..Segment::default()
        };
        let mut seg = std::mem::replace(&mut self.current, next);
        write(
            &self.dir.join(format!("s{}.m4s", seg.msn)),
            &std::mem::take(&mut seg.bytes),
        )
        .await?;
        // A segment longer than promised (keyframes came late: an encoder restart) raises the
        // target for the segments after it.
        self.target = self.target.max(seg.seconds().round() as u64);
        self.done.push(seg);
        if self.done.len() > KEPT {
            let old = self.done.remove(0);
            let _ = tokio::fs::remove_file(self.dir.join(format!("s{}.m4s", old.msn))).await;
            for p in &old.parts {
                let _ = tokio::fs::remove_file(self.dir.join(format!("p{}.m4s", p.n))).await;
            }
        }
        Ok(())
    }

    async fn end(&mut self) -> anyhow::Result<()> {
        if !self.current.parts.is_empty() {
            self.close_segment().await?;
        }
        self.ended = true;
        // Nothing was published when nothing came: no playlist to end.
        if !self.done.is_empty() {
            self.publish().await?;
        }
        Ok(())
    }

    async fn publish(&self) -> anyhow::Result<()> {
        write(&self.dir.join("index.m3u8"), self.playlist().as_bytes()).await
    }

    fn playlist(&self) -> String {
        let listed = &self.done[self.done.len().saturating_sub(LISTED)..];
        let first = listed.first().map_or(self.current.msn, |s| s.msn);
        let mut out = String::new();
        let _ = write!(
            out,
            "#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:{}\n\
             #EXT-X-PART-INF:PART-TARGET={PART_TARGET:.3}\n\
             #EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK={:.3}\n\
             #EXT-X-MEDIA-SEQUENCE:{first}\n#EXT-X-INDEPENDENT-SEGMENTS\n#EXT-X-MAP:URI=\"{}\"\n",
            self.target,
            PART_TARGET * 3.0,
            self.init,
        );
        let parts_from = self.done.len().saturating_sub(WITH_PARTS);
        for (i, seg) in listed.iter().enumerate() {
            if self.done.len() - listed.len() + i >= parts_from {
                parts(&mut out, &seg.parts);
            }
            let _ = write!(out, "#EXTINF:{:.5},\ns{}.m4s\n", seg.seconds(), seg.msn);
        }
        if self.ended {
            out.push_str("#EXT-X-ENDLIST\n");
        } else {
            parts(&mut out, &self.current.parts);
            let _ = writeln!(
                out,
                "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p{}.m4s\"",
                self.next_part
            );
        }
        out
    }
}

fn parts(out: &mut String, parts: &[Part]) {
    for p in parts {
        let _ = write!(
            out,
            "#EXT-X-PART:DURATION={:.5},URI=\"p{}.m4s\"",
            p.seconds, p.n
        );
        out.push_str(if p.independent {
            ",INDEPENDENT=YES\n"
        } else {
            "\n"
        });
    }
}

/// `<prefix><digits>.m4s`'s number.
fn number(name: &str, prefix: &str) -> Option<u64> {
    let n = name.strip_prefix(prefix)?.strip_suffix(".m4s")?;
    (!n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .then(|| n.parse().ok())
        .flatten()
}

/// Whether `name` is a file the packager writes (for a server that must serve nothing else).
pub fn is_file(name: &str) -> bool {
    number(name, "s").is_some()
        || number(name, "p").is_some()
        || name
            .strip_prefix("init")
            .and_then(|n| n.strip_suffix(".mp4"))
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// A part's file, for a server holding a request for the part the preload hint names.
pub fn part_number(name: &str) -> Option<u64> {
    number(name, "p")
}

/// What a playlist holds, for blocking playlist reload: the last complete segment's media
/// sequence number, the parts of the segment after it, and whether the playlist has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub next_msn: u64,
    pub parts: u64,
    pub ended: bool,
}

impl Progress {
    pub fn of(playlist: &str) -> Option<Self> {
        let mut msn = None;
        let (mut segments, mut parts, mut ended) = (0u64, 0u64, false);
        for line in playlist.lines() {
            if let Some(n) = line.strip_prefix("#EXT-X-MEDIA-SEQUENCE:") {
                msn = n.trim().parse::<u64>().ok();
            } else if line.starts_with("#EXTINF:") {
                segments += 1;
                parts = 0;
            } else if line.starts_with("#EXT-X-PART:") {
                parts += 1;
            } else if line.starts_with("#EXT-X-ENDLIST") {
                ended = true;
            }
        }
        Some(Self {
            next_msn: msn? + segments,
            parts,
            ended,
        })
    }

    /// Whether segment `msn` (or its part `part`) is in the playlist.
    pub fn has(&self, msn: u64, part: Option<u64>) -> bool {
        self.ended
            || msn < self.next_msn
            || (msn == self.next_msn && part.is_some_and(|p| p < self.parts))
    }
}

async fn next_atom(r: &mut (impl AsyncRead + Unpin)) -> anyhow::Result<Option<([u8; 4], Vec<u8>)>> {
    let mut head = [0u8; 8];
    match r.read_exact(&mut head).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    let kind: [u8; 4] = head[4..8].try_into().expect("four bytes");
    let mut atom = head.to_vec();
    let size = match u32::from_be_bytes(head[..4].try_into().expect("four bytes")) {
        1 => {
            let mut large = [0u8; 8];
            r.read_exact(&mut large).await?;
            atom.extend_from_slice(&large);
            u64::from_be_bytes(large)
        }
        n => u64::from(n),
    };
    anyhow::ensure!(
        (atom.len() as u64..1 << 30).contains(&size),
        "an MP4 atom of {size} bytes"
    );
    let start = atom.len();
    atom.resize(size as usize, 0);
    r.read_exact(&mut atom[start..]).await?;
    Ok(Some((kind, atom)))
}

/// Whole or not at all: a player never reads half a playlist or half a part.
async fn write(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let tmp = path.with_extension("tmp");
    tokio::fs::write(&tmp, bytes)
        .await
        .with_context(|| format!("writing {}", tmp.display()))?;
    tokio::fs::rename(&tmp, path)
        .await
        .with_context(|| format!("renaming to {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn feed(p: &mut Packager, parts: &[(f64, bool)]) {
        for (i, &(seconds, independent)) in parts.iter().enumerate() {
            let bytes = format!("part{}-{i};", p.next_part).into_bytes();
            p.part(bytes, seconds, independent).await.unwrap();
        }
    }

    /// Six parts of a third of a second, the first a keyframe: one GOP of 2 s.
    fn gop() -> Vec<(f64, bool)> {
        (0..6).map(|i| (1.0 / 3.0, i == 0)).collect()
    }

    #[tokio::test]
    async fn parts_become_segments_at_keyframes_and_the_playlist_says_what_is_coming() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Packager::new(dir.path(), 2);
        feed(&mut p, &gop()).await;
        feed(&mut p, &gop()[..2]).await;
        let text = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
        assert!(text.starts_with("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n"));
        assert!(text.contains("#EXT-X-PART-INF:PART-TARGET=0.400\n"));
        assert!(text.contains("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.200\n"));
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:0\n"));
        assert!(text.contains("#EXT-X-MAP:URI=\"init0.mp4\"\n"));
        assert!(text.contains(
            "#EXT-X-PART:DURATION=0.33333,URI=\"p0.m4s\",INDEPENDENT=YES\n\
             #EXT-X-PART:DURATION=0.33333,URI=\"p1.m4s\"\n"
        ));
        assert!(text.contains("#EXTINF:2.00000,\ns0.m4s\n"));
        assert!(text.contains("URI=\"p6.m4s\",INDEPENDENT=YES\n"));
        assert!(text.ends_with(
            "#EXT-X-PART:DURATION=0.33333,URI=\"p7.m4s\"\n\
             #EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"p8.m4s\"\n"
        ));
        // A segment is its parts, byte for byte.
        let parts: Vec<u8> = (0..6)
            .flat_map(|n| std::fs::read(dir.path().join(format!("p{n}.m4s"))).unwrap())
            .collect();
        assert_eq!(std::fs::read(dir.path().join("s0.m4s")).unwrap(), parts);
        assert_eq!(
            Progress::of(&text),
            Some(Progress {
                next_msn: 1,
                parts: 2,
                ended: false
            })
        );

        p.end().await.unwrap();
        let text = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
        assert!(
            text.ends_with("#EXTINF:0.66667,\ns1.m4s\n#EXT-X-ENDLIST\n"),
            "{text}"
        );
        assert!(!text.contains("PRELOAD-HINT"));
    }

    #[tokio::test]
    async fn old_segments_leave_the_playlist_then_the_disk_and_a_restart_numbers_on() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = Packager::new(dir.path(), 2);
        for _ in 0..12 {
            feed(&mut p, &gop()).await;
        }
        let text = std::fs::read_to_string(dir.path().join("index.m3u8")).unwrap();
        // Eleven GOPs are complete (the twelfth is being written): the last six are listed,
        // with parts for the last two.
        assert!(text.contains("#EXT-X-MEDIA-SEQUENCE:5\n"), "{text}");
        assert_eq!(text.matches("#EXTINF").count(), LISTED);
        assert_eq!(text.matches("#EXT-X-PART:").count(), 6 * 3);
        assert!(!dir.path().join("s2.m4s").exists() && !dir.path().join("p12.m4s").exists());
        assert!(dir.path().join("s3.m4s").exists() && dir.path().join("p18.m4s").exists());

        // A new packager (the remuxer restarted) goes on from there, with its own init segment.
        let q = Packager::new(dir.path(), 2);
        assert_eq!(
            (q.current.msn, q.next_part, q.init.as_str()),
            (11, 72, "init11.mp4")
        );
    }

    #[test]
    fn blocking_reload_knows_what_a_playlist_holds() {
        let text = "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-PART:DURATION=0.3,URI=\"p1.m4s\"\n\
                    #EXTINF:2.0,\ns7.m4s\n#EXTINF:2.0,\ns8.m4s\n\
                    #EXT-X-PART:DURATION=0.3,URI=\"p9.m4s\"\n";
        let p = Progress::of(text).unwrap();
        assert_eq!(
            p,
            Progress {
                next_msn: 9,
                parts: 1,
                ended: false
            }
        );
        assert!(p.has(8, None) && p.has(9, Some(0)));
        assert!(!p.has(9, None) && !p.has(9, Some(1)) && !p.has(10, Some(0)));
        assert!(Progress::of("#EXTM3U\n").is_none());
        let ended = Progress::of(&format!("{text}#EXT-X-ENDLIST\n")).unwrap();
        assert!(
            ended.has(100, Some(3)),
            "an ended playlist holds all there will be"
        );
    }

    #[test]
    fn only_the_packagers_names_are_its_files() {
        for ok in ["s0.m4s", "p123.m4s", "init7.mp4"] {
            assert!(is_file(ok), "{ok}");
        }
        for bad in [
            "s.m4s",
            "p1.ts",
            "init.mp4",
            "../s1.m4s",
            "s1.m4s.tmp",
            "index.m3u8",
        ] {
            assert!(!is_file(bad), "{bad}");
        }
        assert_eq!(part_number("p42.m4s"), Some(42));
    }
}
