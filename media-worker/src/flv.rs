//! One live stream's FLV tags fanned out to late joiners (HTTP-FLV viewers, restream outputs):
//! each starts with the codec headers and the current GOP, so its first frame is a keyframe.

use std::sync::Mutex;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::sync::broadcast;

pub const AUDIO: u8 = 8;
pub const VIDEO: u8 = 9;

/// Tags a subscriber may fall behind by before it is dropped (a slow viewer never slows the
/// publisher or anyone else).
const BUFFER: usize = 1024;
/// The GOP cache is bounded, so a publisher that never sends a keyframe cannot grow it forever.
const MAX_GOP_BYTES: usize = 16 << 20;

#[derive(Clone, Debug)]
pub struct Tag {
    pub kind: u8,
    pub timestamp_ms: u32,
    pub data: Bytes,
}

impl Tag {
    fn is_video_keyframe(&self) -> bool {
        self.kind == VIDEO && self.data.first().is_some_and(|b| b >> 4 == 1)
    }

    /// AVC or AAC sequence headers: what a decoder needs before any frame.
    fn is_sequence_header(&self) -> bool {
        match self.kind {
            VIDEO => {
                self.data.first().is_some_and(|b| b & 0x0f == 7) && self.data.get(1) == Some(&0)
            }
            AUDIO => {
                self.data.first().is_some_and(|b| b >> 4 == 10) && self.data.get(1) == Some(&0)
            }
            _ => false,
        }
    }

    /// The tag as FLV bytes: header, body, and the PreviousTagSize that follows it.
    pub fn encode(&self) -> Bytes {
        let size = self.data.len() as u32;
        let mut b = BytesMut::with_capacity(15 + self.data.len());
        b.put_u8(self.kind);
        b.put_slice(&size.to_be_bytes()[1..]);
        b.put_slice(&self.timestamp_ms.to_be_bytes()[1..]);
        b.put_u8(self.timestamp_ms.to_be_bytes()[0]);
        b.put_slice(&[0, 0, 0]);
        b.put_slice(&self.data);
        b.put_u32(size + 11);
        b.freeze()
    }
}

/// The FLV file header (audio and video present) and PreviousTagSize0.
pub const HEADER: [u8; 13] = [b'F', b'L', b'V', 1, 5, 0, 0, 0, 9, 0, 0, 0, 0];

/// Reads an FLV stream (an encoder's output) tag by tag until it ends, handing each audio and
/// video tag to `each`; script data is skipped.
pub fn read_tags(mut r: impl std::io::Read, mut each: impl FnMut(Tag)) -> std::io::Result<()> {
    let mut header = [0u8; 13];
    r.read_exact(&mut header)?;
    if &header[..3] != b"FLV" {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not an FLV stream",
        ));
    }
    let mut head = [0u8; 11];
    loop {
        match r.read_exact(&mut head) {
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            other => other?,
        }
        let size = u32::from_be_bytes([0, head[1], head[2], head[3]]) as usize;
        let timestamp_ms = u32::from_be_bytes([head[7], head[4], head[5], head[6]]);
        let mut data = vec![0u8; size + 4];
        r.read_exact(&mut data)?;
        data.truncate(size);
        if matches!(head[0], AUDIO | VIDEO) {
            each(Tag {
                kind: head[0],
                timestamp_ms,
                data: Bytes::from(data),
            });
        }
    }
}

#[derive(Default)]
struct Start {
    video_header: Option<Tag>,
    audio_header: Option<Tag>,
    gop: Vec<Tag>,
    gop_bytes: usize,
}

pub struct Channel {
    tx: broadcast::Sender<Tag>,
    start: Mutex<Start>,
}

impl Default for Channel {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(BUFFER).0,
            start: Mutex::default(),
        }
    }
}

impl Channel {
    pub fn push(&self, tag: Tag) {
        let mut s = self.start.lock().expect("lock poisoned");
        if tag.is_sequence_header() {
            if tag.kind == VIDEO {
                s.video_header = Some(tag.clone());
            } else {
                s.audio_header = Some(tag.clone());
            }
        } else {
            if tag.is_video_keyframe() {
                s.gop.clear();
                s.gop_bytes = 0;
            }
            // Until the first keyframe there is nothing a joiner could start from.
            if !s.gop.is_empty() || tag.is_video_keyframe() {
                s.gop_bytes += tag.data.len();
                if s.gop_bytes <= MAX_GOP_BYTES {
                    s.gop.push(tag.clone());
                } else {
                    s.gop.clear();
                }
            }
        }
        // Sent under the lock, so a subscriber sees each tag exactly once: in its start or live.
        let _ = self.tx.send(tag);
    }

    /// The tags to start with (codec headers, then the current GOP) and the live tags after them.
    pub fn subscribe(&self) -> (Vec<Tag>, broadcast::Receiver<Tag>) {
        let s = self.start.lock().expect("lock poisoned");
        let rx = self.tx.subscribe();
        let mut first: Vec<Tag> = s
            .video_header
            .iter()
            .chain(s.audio_header.iter())
            .cloned()
            .map(|mut t| {
                // Headers go out at the GOP's time, so the stream's clock never runs backwards.
                t.timestamp_ms = s.gop.first().map_or(0, |g| g.timestamp_ms);
                t
            })
            .collect();
        first.extend(s.gop.iter().cloned());
        (first, rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn video(ts: u32, key: bool) -> Tag {
        Tag {
            kind: VIDEO,
            timestamp_ms: ts,
            data: Bytes::from(vec![if key { 0x17 } else { 0x27 }, 1, 0, 0, 0, 9]),
        }
    }

    #[test]
    fn a_joiner_starts_with_the_headers_and_the_last_keyframe() {
        let c = Channel::default();
        c.push(video(0, false)); // before any keyframe: useless to a joiner
        c.push(Tag {
            kind: VIDEO,
            timestamp_ms: 0,
            data: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1]),
        });
        c.push(Tag {
            kind: AUDIO,
            timestamp_ms: 0,
            data: Bytes::from_static(&[0xaf, 0, 0x12, 0x10]),
        });
        c.push(video(1000, true));
        c.push(video(1033, false));
        c.push(video(2000, true));
        c.push(video(2033, false));
        let (first, mut rx) = c.subscribe();
        let times: Vec<u32> = first.iter().map(|t| t.timestamp_ms).collect();
        assert_eq!(times, [2000, 2000, 2000, 2033]);
        assert!(first[0].is_sequence_header() && first[0].kind == VIDEO);
        assert!(first[1].is_sequence_header() && first[1].kind == AUDIO);
        assert!(first[2].is_video_keyframe());
        c.push(video(2066, false));
        assert_eq!(rx.try_recv().unwrap().timestamp_ms, 2066);
    }

    #[test]
    fn encoded_tags_read_back() {
        let mut stream = HEADER.to_vec();
        let tags = [video(0, true), video(0x0100_0021, false)];
        for t in &tags {
            stream.extend_from_slice(&t.encode());
        }
        let mut got = Vec::new();
        read_tags(&stream[..], |t| got.push(t)).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[1].timestamp_ms, 0x0100_0021);
        assert_eq!(got[1].data, tags[1].data);
        assert!(read_tags(&b"GIF89a-and-more"[..], |_| ()).is_err());
    }

    #[test]
    fn tags_encode_as_flv() {
        let t = Tag {
            kind: AUDIO,
            timestamp_ms: 0x0102_0304,
            data: Bytes::from_static(&[0xaf, 1]),
        };
        assert_eq!(
            &t.encode()[..],
            &[8, 0, 0, 2, 2, 3, 4, 1, 0, 0, 0, 0xaf, 1, 0, 0, 0, 13]
        );
    }
}
