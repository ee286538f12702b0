//! The media thread's UDP socket: receives in batches and sends a pass's datagrams with GSO.
//!
//! A forwarded video frame is five or six RTP packets of one size to each subscriber, and a
//! `sendto` per packet was a third of the SFU's CPU. One pass of the media loop queues every
//! datagram it makes; `flush` hands runs of equal-sized datagrams to one destination to the
//! kernel as a single GSO send (quinn-udp does the `UDP_SEGMENT` plumbing and falls back to
//! one datagram per call where the kernel lacks it).

use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::time::Duration;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};
use quinn_udp::{BATCH_SIZE, RecvMeta, Transmit, UdpSocketState};

/// The largest datagram we accept: SRTP over a 1500-byte path, with room to spare.
const MAX_DATAGRAM: usize = 2048;
/// A GSO send carries at most 64 KiB of payload.
const MAX_GSO_BYTES: usize = 65_000;
/// Datagrams taken per wake before the loop polls the room again, so that a flood on the
/// socket cannot starve timers and signalling.
const MAX_RECV_PER_WAKE: usize = 256;
/// Asked of the kernel so that a burst (a keyframe to every subscriber) is not dropped; it
/// caps the value at net.core.wmem_max.
const SEND_BUFFER: usize = 4 << 20;

pub struct MediaSocket {
    socket: UdpSocket,
    state: UdpSocketState,
    poll: Poll,
    events: Events,
    /// The datagrams of one pass, back to back, and where each starts.
    bytes: Vec<u8>,
    queued: Vec<(SocketAddr, usize, usize)>,
    recv_buf: Vec<u8>,
    /// The last receive stopped at its cap, not because the socket was empty.
    more: bool,
    /// Datagrams the kernel refused (a full send buffer): counted, not retried; RTP's own
    /// retransmission covers them as it covers loss on the path.
    pub dropped: u64,
    /// Send calls made: fewer than datagrams when GSO joins them.
    pub sends: u64,
}

impl MediaSocket {
    pub fn bind(addr: SocketAddr) -> io::Result<Self> {
        let std = std::net::UdpSocket::bind(addr)?;
        let state = UdpSocketState::new((&std).into())?;
        let _ = state.set_send_buffer_size((&std).into(), SEND_BUFFER);
        let mut socket = UdpSocket::from_std(std);
        let poll = Poll::new()?;
        poll.registry()
            .register(&mut socket, Token(0), Interest::READABLE)?;
        // With GRO a receive buffer holds up to `gro_segments` datagrams.
        let slot = MAX_DATAGRAM * state.gro_segments();
        Ok(Self {
            socket,
            state,
            poll,
            events: Events::with_capacity(4),
            bytes: Vec::with_capacity(256 * 1024),
            queued: Vec::with_capacity(256),
            recv_buf: vec![0; slot * BATCH_SIZE],
            more: false,
            dropped: 0,
            sends: 0,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Queues a datagram for the next `flush`.
    pub fn queue(&mut self, to: SocketAddr, data: &[u8]) {
        self.queued.push((to, self.bytes.len(), data.len()));
        self.bytes.extend_from_slice(data);
    }

    /// Sends everything queued: each run of datagrams to one address whose sizes are equal
    /// (the last may be shorter, as GSO allows) goes in one call.
    pub fn flush(&mut self) {
        let max_segments = self.state.max_gso_segments().max(1);
        let mut i = 0;
        while i < self.queued.len() {
            let (to, start, size) = self.queued[i];
            let mut end = start + size;
            let mut j = i + 1;
            while j < self.queued.len() && j - i < max_segments {
                let (next_to, next_start, next_size) = self.queued[j];
                if next_to != to
                    || next_start != end
                    || next_size > size
                    || end - start + next_size > MAX_GSO_BYTES
                {
                    break;
                }
                end += next_size;
                j += 1;
                if next_size < size {
                    break;
                }
            }
            let transmit = Transmit {
                destination: to,
                ecn: None,
                contents: &self.bytes[start..end],
                segment_size: (j - i > 1).then_some(size),
                src_ip: None,
            };
            self.sends += 1;
            match self.state.try_send((&self.socket).into(), &transmit) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.dropped += (j - i) as u64;
                }
                // An unreachable peer (ICMP) loses its datagrams, like any loss on the path;
                // a vanished peer is reaped by its silence.
                Err(e) => tracing::debug!(%to, "media socket send: {e}"),
            }
            i = j;
        }
        self.queued.clear();
        self.bytes.clear();
    }

    /// Waits until a datagram may be there or `timeout` passes.
    pub fn wait(&mut self, timeout: Duration) {
        if self.more {
            return;
        }
        if let Err(e) = self.poll.poll(&mut self.events, Some(timeout))
            && e.kind() != io::ErrorKind::Interrupted
        {
            tracing::warn!("media socket poll: {e}");
        }
    }

    /// Hands each datagram that has arrived to `f`, up to a cap per call.
    pub fn receive(&mut self, mut f: impl FnMut(SocketAddr, &[u8])) {
        let slot = self.recv_buf.len() / BATCH_SIZE;
        let mut taken = 0;
        self.more = false;
        while taken < MAX_RECV_PER_WAKE {
            let mut metas = [RecvMeta::default(); BATCH_SIZE];
            let mut bufs: Vec<IoSliceMut<'_>> = self
                .recv_buf
                .chunks_mut(slot)
                .map(IoSliceMut::new)
                .collect();
            match self
                .state
                .recv((&self.socket).into(), &mut bufs, &mut metas)
            {
                Ok(n) => {
                    for (meta, buf) in metas.iter().zip(bufs.iter()).take(n) {
                        let stride = meta.stride.max(1);
                        for datagram in buf[..meta.len].chunks(stride) {
                            f(meta.addr, datagram);
                            taken += 1;
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // ICMP port unreachable from a vanished peer surfaces here on Linux; the
                // datagrams behind it are still to be read.
                Err(e) => {
                    tracing::debug!("media socket: {e}");
                    taken += 1;
                }
            }
        }
        self.more = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair() -> (MediaSocket, std::net::UdpSocket) {
        let sock = MediaSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let peer = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        (sock, peer)
    }

    #[test]
    fn every_queued_datagram_arrives_whole_and_in_order() {
        let (mut sock, peer) = pair();
        let other = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        other
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let to = peer.local_addr().unwrap();
        // A frame of equal packets with a short tail, a lone audio packet elsewhere, then
        // packets of growing size (which cannot share a GSO send).
        let mut sent: Vec<Vec<u8>> = Vec::new();
        for i in 0..5u8 {
            let d = vec![i; if i == 4 { 300 } else { 1100 }];
            sock.queue(to, &d);
            sent.push(d);
        }
        sock.queue(other.local_addr().unwrap(), &[9; 80]);
        for i in 0..3u8 {
            let d = vec![20 + i; 100 + usize::from(i)];
            sock.queue(to, &d);
            sent.push(d);
        }
        sock.flush();
        assert_eq!(sock.dropped, 0);
        if sock.state.max_gso_segments() > 1 {
            // The frame's five go together; the growing three cannot.
            assert_eq!(sock.sends, 1 + 1 + 3);
        }
        let mut buf = [0u8; 4096];
        for want in &sent {
            let n = peer.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], &want[..]);
        }
        let n = other.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], &[9; 80]);
    }

    #[test]
    fn a_burst_is_received_datagram_by_datagram_from_its_sender() {
        let (mut sock, peer) = pair();
        let at = sock.local_addr().unwrap();
        for i in 0..40u8 {
            peer.send_to(&[i; 500], at).unwrap();
        }
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while got.len() < 40 && std::time::Instant::now() < deadline {
            sock.wait(Duration::from_millis(100));
            sock.receive(|from, d| {
                assert_eq!(from, peer.local_addr().unwrap());
                got.push(d.to_vec());
            });
        }
        assert_eq!(got.len(), 40);
        for (i, d) in got.iter().enumerate() {
            assert_eq!(d, &vec![i as u8; 500]);
        }
    }

    #[test]
    fn waiting_on_an_empty_socket_returns_after_the_timeout() {
        let (mut sock, _peer) = pair();
        sock.wait(Duration::from_millis(20));
        let mut n = 0;
        sock.receive(|_, _| n += 1);
        assert_eq!(n, 0);
    }
}
