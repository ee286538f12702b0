//! The SFU's and the compositor's Prometheus metrics, each series labelled with its broadcast.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

/// A gauge of seconds or ratios.
pub type FloatGauge = Gauge<f64, AtomicU64>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RoleLabels {
    /// host, guest or ingest.
    pub role: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParticipantLabels {
    pub participant: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MediaLabels {
    pub participant: String,
    /// audio or video.
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationLabels {
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationKindLabels {
    pub destination: String,
    /// unreachable, tls, protocol, rejected or dropped.
    pub kind: String,
}

/// Every failure kind, for dropping a destination's series.
const KINDS: [castyard_crd::DestinationErrorKind; 5] = [
    castyard_crd::DestinationErrorKind::Unreachable,
    castyard_crd::DestinationErrorKind::Tls,
    castyard_crd::DestinationErrorKind::Protocol,
    castyard_crd::DestinationErrorKind::Rejected,
    castyard_crd::DestinationErrorKind::Dropped,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DestinationStateLabels {
    pub destination: String,
    pub state: String,
}

/// What a destination output is doing, one series each, the current one valued 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DestinationState {
    Connecting,
    Live,
    Retrying,
    Failed,
    Stopped,
}

impl From<crate::rtmp_out::State> for DestinationState {
    fn from(s: crate::rtmp_out::State) -> Self {
        match s {
            crate::rtmp_out::State::Connecting => Self::Connecting,
            crate::rtmp_out::State::Live => Self::Live,
            crate::rtmp_out::State::Retrying => Self::Retrying,
        }
    }
}

impl DestinationState {
    pub const ALL: [Self; 5] = [
        Self::Connecting,
        Self::Live,
        Self::Retrying,
        Self::Failed,
        Self::Stopped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Connecting => "connecting",
            Self::Live => "live",
            Self::Retrying => "retrying",
            Self::Failed => "failed",
            Self::Stopped => "stopped",
        }
    }
}

impl From<castyard_crd::DestinationState> for DestinationState {
    fn from(s: castyard_crd::DestinationState) -> Self {
        use castyard_crd::DestinationState as S;
        match s {
            S::Idle => Self::Stopped,
            S::Connecting => Self::Connecting,
            S::Live => Self::Live,
            S::Retrying => Self::Retrying,
            S::Failed => Self::Failed,
        }
    }
}

fn broadcast_registry(prefix: &str, broadcast: &str) -> Registry {
    // A per-broadcast process: the label is constant, so it is attached once to every series
    // rather than relabelled by Prometheus, which the embedded mode does not have.
    Registry::with_prefix_and_labels(
        prefix,
        [("broadcast".into(), broadcast.to_owned().into())].into_iter(),
    )
}

fn encode(registry: &Registry) -> String {
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, registry)
        .expect("encoding into a String cannot fail");
    out
}

pub struct SfuMetrics {
    registry: Registry,
    pub participants: Family<RoleLabels, Gauge>,
    pub on_stage: Gauge,
    pub received_bytes: Family<MediaLabels, Counter>,
    pub sent_bytes: Family<MediaLabels, Counter>,
    pub received_packets: Family<ParticipantLabels, Counter>,
    pub lost_packets: Family<ParticipantLabels, Counter>,
    pub rtt: Family<ParticipantLabels, FloatGauge>,
    pub jitter: Family<ParticipantLabels, FloatGauge>,
    pub forwarded_packets: Counter,
    pub keyframe_requests: Counter,
    pub send_dropped: Counter,
}

impl SfuMetrics {
    pub fn new(broadcast: &str) -> Self {
        let mut r = broadcast_registry("castyard_sfu", broadcast);
        let participants = Family::<RoleLabels, Gauge>::default();
        r.register(
            "participants",
            "Participants connected, by role",
            participants.clone(),
        );
        let on_stage = Gauge::default();
        r.register("on_stage", "Participants on stage", on_stage.clone());
        let received_bytes = Family::<MediaLabels, Counter>::default();
        r.register(
            "received_bytes",
            "RTP payload bytes received from each publisher",
            received_bytes.clone(),
        );
        let sent_bytes = Family::<MediaLabels, Counter>::default();
        r.register(
            "sent_bytes",
            "RTP payload bytes sent to each subscriber",
            sent_bytes.clone(),
        );
        let received_packets = Family::<ParticipantLabels, Counter>::default();
        r.register(
            "received_packets",
            "RTP packets received from each publisher",
            received_packets.clone(),
        );
        let lost_packets = Family::<ParticipantLabels, Counter>::default();
        r.register(
            "lost_packets",
            "RTP packets from each publisher that never arrived",
            lost_packets.clone(),
        );
        let rtt = Family::<ParticipantLabels, FloatGauge>::default();
        r.register(
            "rtt_seconds",
            "Round-trip time to each participant",
            rtt.clone(),
        );
        let jitter = Family::<ParticipantLabels, FloatGauge>::default();
        r.register(
            "jitter_seconds",
            "Interarrival jitter of each publisher's media",
            jitter.clone(),
        );
        let forwarded_packets = Counter::default();
        r.register(
            "forwarded_packets",
            "RTP packets forwarded to subscribers and the compositor",
            forwarded_packets.clone(),
        );
        let keyframe_requests = Counter::default();
        r.register(
            "keyframe_requests",
            "Keyframe requests sent to publishers, for subscribers and the compositor",
            keyframe_requests.clone(),
        );
        let send_dropped = Counter::default();
        r.register(
            "send_dropped_packets",
            "Datagrams the kernel refused to send (a full socket buffer: the host is overloaded)",
            send_dropped.clone(),
        );
        Self {
            registry: r,
            participants,
            on_stage,
            received_bytes,
            sent_bytes,
            received_packets,
            lost_packets,
            rtt,
            jitter,
            forwarded_packets,
            keyframe_requests,
            send_dropped,
        }
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

pub struct CompositorMetrics {
    registry: Registry,
    pub frames: Counter,
    pub dropped_frames: Counter,
    pub target_fps: Gauge,
    pub encoder_speed: FloatGauge,
    destination_state: Family<DestinationStateLabels, Gauge>,
    pub destination_retries: Family<DestinationLabels, Counter>,
    pub destination_failures: Family<DestinationKindLabels, Counter>,
    pub destination_sent_bytes: Family<DestinationLabels, Counter>,
}

impl CompositorMetrics {
    pub fn new(broadcast: &str) -> Self {
        let mut r = broadcast_registry("castyard_compositor", broadcast);
        let frames = Counter::default();
        r.register("frames", "Frames composed and encoded", frames.clone());
        let dropped_frames = Counter::default();
        r.register(
            "dropped_frames",
            "Frames skipped because composing or encoding fell behind",
            dropped_frames.clone(),
        );
        let target_fps = Gauge::default();
        r.register(
            "target_fps",
            "The output frame rate the broadcast asks for",
            target_fps.clone(),
        );
        let encoder_speed = FloatGauge::default();
        r.register(
            "encoder_speed_ratio",
            "Media seconds encoded per wall-clock second (below 1 is slower than real time)",
            encoder_speed.clone(),
        );
        let destination_state = Family::<DestinationStateLabels, Gauge>::default();
        r.register(
            "destination_state",
            "1 for each destination's current state",
            destination_state.clone(),
        );
        let destination_retries = Family::<DestinationLabels, Counter>::default();
        r.register(
            "destination_retries",
            "Reconnection attempts to each destination",
            destination_retries.clone(),
        );
        let destination_failures = Family::<DestinationKindLabels, Counter>::default();
        r.register(
            "destination_failures",
            "Failures of each destination by kind (unreachable, tls, protocol, rejected, dropped)",
            destination_failures.clone(),
        );
        let destination_sent_bytes = Family::<DestinationLabels, Counter>::default();
        r.register(
            "destination_sent_bytes",
            "Bytes sent to each destination",
            destination_sent_bytes.clone(),
        );
        Self {
            registry: r,
            frames,
            dropped_frames,
            target_fps,
            encoder_speed,
            destination_state,
            destination_retries,
            destination_failures,
            destination_sent_bytes,
        }
    }

    /// Sets a destination's state: its series for that state is 1, every other 0.
    pub fn set_destination_state(&self, destination: &str, state: DestinationState) {
        for s in DestinationState::ALL {
            let labels = DestinationStateLabels {
                destination: destination.to_owned(),
                state: s.as_str().to_owned(),
            };
            self.destination_state
                .get_or_create(&labels)
                .set(i64::from(s == state));
        }
    }

    /// Drops a removed destination's series.
    pub fn forget_destination(&self, destination: &str) {
        for s in DestinationState::ALL {
            self.destination_state.remove(&DestinationStateLabels {
                destination: destination.to_owned(),
                state: s.as_str().to_owned(),
            });
        }
        let d = DestinationLabels {
            destination: destination.to_owned(),
        };
        self.destination_retries.remove(&d);
        self.destination_sent_bytes.remove(&d);
        for kind in KINDS {
            self.destination_failures.remove(&DestinationKindLabels {
                destination: destination.to_owned(),
                kind: kind.label().to_owned(),
            });
        }
    }

    pub fn encode(&self) -> String {
        encode(&self.registry)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastLabels {
    pub broadcast: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastDestinationLabels {
    pub broadcast: String,
    pub destination: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastDestinationStateLabels {
    pub broadcast: String,
    pub destination: String,
    pub state: String,
}

/// The RTMP ingest's metrics. One ingest serves every broadcast, so each series names its
/// broadcast; the host process registers these in its own registry.
#[derive(Clone, Default)]
pub struct IngestMetrics {
    pub publishing: Family<BroadcastLabels, Gauge>,
    pub received_bytes: Family<BroadcastLabels, Counter>,
    pub flv_viewers: Family<BroadcastLabels, Gauge>,
    destination_state: Family<BroadcastDestinationStateLabels, Gauge>,
    pub destination_retries: Family<BroadcastDestinationLabels, Counter>,
    pub destination_failures: Family<BroadcastDestinationKindLabels, Counter>,
    pub destination_sent_bytes: Family<BroadcastDestinationLabels, Counter>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastDestinationKindLabels {
    pub broadcast: String,
    pub destination: String,
    pub kind: String,
}

impl IngestMetrics {
    /// Registers under `<prefix>_ingest_…`.
    pub fn register(&self, registry: &mut Registry) {
        let r = registry.sub_registry_with_prefix("ingest");
        r.register(
            "publishing",
            "1 while the broadcast's RTMP publisher is connected",
            self.publishing.clone(),
        );
        r.register(
            "received_bytes",
            "Media bytes received from the RTMP publisher",
            self.received_bytes.clone(),
        );
        r.register(
            "flv_viewers",
            "HTTP-FLV viewers of the live ingest",
            self.flv_viewers.clone(),
        );
        r.register(
            "destination_state",
            "1 for each restream destination's current state",
            self.destination_state.clone(),
        );
        r.register(
            "destination_retries",
            "Reconnection attempts to each restream destination",
            self.destination_retries.clone(),
        );
        r.register(
            "destination_failures",
            "Failures of each restream destination by kind (unreachable, tls, protocol, rejected, dropped)",
            self.destination_failures.clone(),
        );
        r.register(
            "destination_sent_bytes",
            "Media bytes sent to each restream destination",
            self.destination_sent_bytes.clone(),
        );
    }

    pub fn set_destination_state(
        &self,
        broadcast: &str,
        destination: &str,
        state: DestinationState,
    ) {
        for s in DestinationState::ALL {
            self.destination_state
                .get_or_create(&BroadcastDestinationStateLabels {
                    broadcast: broadcast.to_owned(),
                    destination: destination.to_owned(),
                    state: s.as_str().to_owned(),
                })
                .set(i64::from(s == state));
        }
    }

    /// Drops an ended broadcast's series, so the families do not grow with every show.
    pub fn forget(&self, broadcast: &str, destinations: &[String]) {
        let b = BroadcastLabels {
            broadcast: broadcast.to_owned(),
        };
        self.publishing.remove(&b);
        self.received_bytes.remove(&b);
        self.flv_viewers.remove(&b);
        for d in destinations {
            let l = BroadcastDestinationLabels {
                broadcast: broadcast.to_owned(),
                destination: d.clone(),
            };
            self.destination_retries.remove(&l);
            self.destination_sent_bytes.remove(&l);
            for kind in KINDS {
                self.destination_failures
                    .remove(&BroadcastDestinationKindLabels {
                        broadcast: broadcast.to_owned(),
                        destination: d.clone(),
                        kind: kind.label().to_owned(),
                    });
            }
            for s in DestinationState::ALL {
                self.destination_state
                    .remove(&BroadcastDestinationStateLabels {
                        broadcast: broadcast.to_owned(),
                        destination: d.clone(),
                        state: s.as_str().to_owned(),
                    });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_carries_its_broadcast() {
        let m = SfuMetrics::new("bc-1");
        m.lost_packets
            .get_or_create(&ParticipantLabels {
                participant: "p".into(),
            })
            .inc_by(3);
        let text = m.encode();
        assert!(
            text.contains(r#"castyard_sfu_lost_packets_total{broadcast="bc-1",participant="p"} 3"#),
            "{text}"
        );
    }

    #[test]
    fn a_destination_is_in_exactly_one_state_until_forgotten() {
        let m = CompositorMetrics::new("bc-1");
        m.set_destination_state("yt", DestinationState::Live);
        m.set_destination_state("yt", DestinationState::Retrying);
        let text = m.encode();
        let ones: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("castyard_compositor_destination_state{") && l.ends_with(" 1")
            })
            .collect();
        assert_eq!(
            ones,
            [
                r#"castyard_compositor_destination_state{broadcast="bc-1",destination="yt",state="retrying"} 1"#
            ]
        );
        m.forget_destination("yt");
        assert!(!m.encode().contains(r#"destination="yt""#));
    }
}
