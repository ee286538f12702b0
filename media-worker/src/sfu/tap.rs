//! Plain RTP copies of on-stage tracks for the compositor: each track's frames re-packetized
//! (VP8, H.264, Opus) onto one continuous RTP stream, and the compositor's keyframe requests
//! (RTCP PLI or FIR) picked out of what it sends back.

use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtp::codecs::{h264::H264Payloader, opus::OpusPayloader, vp8::Vp8Payloader};
use rtp::packetizer::Payloader;
use str0m::format::Codec;
use str0m::media::{MediaData, MediaKind, Mid, Rid};

use super::forward::PeerId;
use super::layers::{Admit, LayerPick};

/// Payload bytes per packet: with the RTP, UDP and IP headers well under any path's MTU.
const MTU: usize = 1200;
/// FFmpeg answers RTCP to where it last heard RTCP from, so a sender report every so often
/// tells it where our media socket is (and keeps that fresh if the SFU's address changes).
const REPORT_EVERY: Duration = Duration::from_secs(1);
/// The compositor decodes what fits its canvas: a 720p show needs no more than 720p layers.
pub const COMPOSITOR_VIEW: (u32, u32) = (1280, 720);

/// One track copied to one address, as the room asks for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TapSpec {
    pub origin: PeerId,
    pub mid: Mid,
    pub kind: MediaKind,
    pub dest: SocketAddr,
    pub payload_type: u8,
}

/// What the forwarder does after a frame went through a tap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapNeed {
    Nothing,
    /// No keyframe yet on this layer (or on the track, when `None`): ask the publisher.
    Keyframe(Option<Rid>),
}

#[derive(Debug)]
pub struct Tap {
    pub spec: TapSpec,
    layer: LayerPick,
    payloader: Option<Box<dyn Payloader + Send + Sync>>,
    ssrc: u32,
    seq: u16,
    last_ts: u32,
    /// Video sends nothing until a keyframe: the decoder could not start on anything else.
    started: bool,
    next_report: Instant,
    pub packets: u64,
    bytes: u64,
}

impl Tap {
    pub fn new(now: Instant, spec: TapSpec) -> Self {
        // Distinct per tap so that a restarted copy is a new stream to the decoder.
        let random: u64 = rand::random();
        let ssrc = random as u32 | 1;
        Self {
            spec,
            layer: LayerPick::new(now, Some(COMPOSITOR_VIEW)),
            payloader: None,
            ssrc,
            seq: (random >> 32) as u16,
            last_ts: 0,
            started: false,
            next_report: now,
            packets: 0,
            bytes: 0,
        }
    }

    pub fn matches(&self, origin: PeerId, mid: Mid) -> bool {
        self.spec.origin == origin && self.spec.mid == mid
    }

    /// The layer the copy carries, for keyframe requests.
    pub fn layer(&self) -> Option<Rid> {
        self.layer.current
    }

    /// Copies one frame, sending its packets through `send`.
    pub fn frame(
        &mut self,
        now: Instant,
        data: &MediaData,
        send: &mut dyn FnMut(SocketAddr, &[u8]),
    ) -> TapNeed {
        match self.layer.admit(now, data, None) {
            Admit::Send => {}
            Admit::Skip => return TapNeed::Nothing,
            Admit::WaitKeyframe(rid) => return TapNeed::Keyframe(Some(rid)),
        }
        let video = self.spec.kind == MediaKind::Video;
        if video && !self.started {
            if !data.is_keyframe() {
                return TapNeed::Keyframe(data.rid);
            }
            self.started = true;
        }
        let spec = data.params.spec();
        let payloader = self.payloader.get_or_insert_with(|| match spec.codec {
            Codec::H264 => Box::new(H264Payloader::default()),
            Codec::Vp8 => Box::new(Vp8Payloader::default()),
            _ => Box::new(OpusPayloader),
        });
        let Ok(payloads) = payloader.payload(MTU, &Bytes::copy_from_slice(&data.data)) else {
            return TapNeed::Nothing;
        };
        let ts = data.time.rebase(spec.clock_rate).numer() as u32;
        self.last_ts = ts;
        let last = payloads.len().saturating_sub(1);
        let mut buf = Vec::with_capacity(12 + MTU);
        for (i, payload) in payloads.iter().enumerate() {
            buf.clear();
            // RFC 3550 fixed header: version 2, no padding, extension or CSRCs; the marker ends
            // a video frame.
            buf.push(0x80);
            buf.push(((video && i == last) as u8) << 7 | (self.spec.payload_type & 0x7f));
            buf.extend_from_slice(&self.seq.to_be_bytes());
            buf.extend_from_slice(&ts.to_be_bytes());
            buf.extend_from_slice(&self.ssrc.to_be_bytes());
            buf.extend_from_slice(payload);
            send(self.spec.dest, &buf);
            self.seq = self.seq.wrapping_add(1);
            self.packets += 1;
            self.bytes += payload.len() as u64;
        }
        if now >= self.next_report {
            self.next_report = now + REPORT_EVERY;
            send(self.rtcp_dest(), &self.sender_report());
        }
        TapNeed::Nothing
    }

    /// Where the decoder listens for RTCP, and sends its own from: the RTP port plus one.
    pub fn rtcp_dest(&self) -> SocketAddr {
        SocketAddr::new(self.spec.dest.ip(), self.spec.dest.port().wrapping_add(1))
    }

    fn sender_report(&self) -> Vec<u8> {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        // NTP time: seconds since 1900, then the fraction of a second in 1/2^32.
        let secs = (since.as_secs() + 2_208_988_800) as u32;
        let frac = ((u64::from(since.subsec_nanos()) << 32) / 1_000_000_000) as u32;
        let mut b = vec![0x80, 200, 0, 6];
        for word in [
            self.ssrc,
            secs,
            frac,
            self.last_ts,
            self.packets as u32,
            self.bytes as u32,
        ] {
            b.extend_from_slice(&word.to_be_bytes());
        }
        b
    }
}

/// Whether a compound RTCP packet holds a keyframe request: a PLI (payload-specific feedback,
/// format 1) or a FIR (format 4), RFC 4585 and RFC 5104.
pub fn wants_keyframe(mut rtcp: &[u8]) -> bool {
    while rtcp.len() >= 4 {
        if rtcp[0] >> 6 != 2 {
            return false;
        }
        let fmt = rtcp[0] & 0x1f;
        if rtcp[1] == 206 && (fmt == 1 || fmt == 4) {
            return true;
        }
        let words = usize::from(u16::from_be_bytes([rtcp[2], rtcp[3]]));
        let Some(rest) = rtcp.get(4 + words * 4..) else {
            return false;
        };
        rtcp = rest;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyframe_requests_are_found_in_compound_packets() {
        let rr = [0x80, 201, 0, 1, 0, 0, 0, 1];
        let pli = [0x81, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 2];
        let fir = [0x84, 206, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0];
        let nack = [0x81, 205, 0, 3, 0, 0, 0, 1, 0, 0, 0, 2, 0, 5, 0, 0];
        assert!(wants_keyframe(&[rr.as_slice(), &pli].concat()));
        assert!(wants_keyframe(&fir));
        assert!(!wants_keyframe(&rr));
        assert!(!wants_keyframe(&nack));
        // Truncated or not RTCP at all: nothing, and no panic.
        assert!(!wants_keyframe(&pli[..3]));
        assert!(!wants_keyframe(&[0x80, 201, 0, 40]));
        assert!(!wants_keyframe(b"GET / HTTP/1.1"));
    }
}
