//! Pure mapping from a Broadcast spec to the media workers it needs and their configuration.

use serde::{Deserialize, Serialize};

use crate::{Broadcast, BroadcastSpec, DesiredState, Destination, HlsSpec, IngestSpec, Layout};

/// The SFU's TCP port for control and signalling (the API relays browsers to it).
pub const SFU_SIGNALLING_PORT: u16 = 7880;
/// The SFU's single UDP port, shared by every peer (ICE-lite).
pub const SFU_MEDIA_PORT: u16 = 7882;
/// The compositor's control port (scene changes, health, metrics).
pub const COMPOSITOR_CONTROL_PORT: u16 = 7890;
pub const RTMP_INGEST_PORT: u16 = 1935;

/// What should run for one broadcast. Both operator backends (pods, child processes) start
/// exactly this, so embedded and cluster mode cannot drift apart.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DesiredWorkloads {
    pub sfu: Option<SfuConfig>,
    pub compositor: Option<CompositorConfig>,
}

impl DesiredWorkloads {
    pub fn none() -> Self {
        Self {
            sfu: None,
            compositor: None,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SfuConfig {
    pub broadcast: String,
    /// Host plus guests: the SFU refuses joins beyond this.
    pub max_participants: u32,
    pub signalling_port: u16,
    pub media_port: u16,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct CompositorConfig {
    pub broadcast: String,
    pub width: u32,
    pub height: u32,
    pub fps: u32,
    pub video_bitrate_kbps: u32,
    pub audio_bitrate_kbps: u32,
    pub layout: Layout,
    /// Only enabled destinations; their keys are resolved from the secret refs by the backend.
    pub destinations: Vec<Destination>,
    pub hls: HlsSpec,
    pub recording: bool,
    pub ingest: IngestSpec,
    /// Where the compositor pulls on-stage tracks from (the SFU's signalling address).
    pub sfu: Option<String>,
    pub control_port: u16,
}

/// Backstage -> SFU; Live or recording -> SFU + compositor (unless an RTMP ingest is the show);
/// Ended -> nothing.
/// An ingest-only show (OBS) needs no SFU while no studio is open, but the studio may
/// pull the ingest in as a source, so the SFU stays whenever the broadcast is not ended.
pub fn desired_workloads(broadcast: &Broadcast) -> DesiredWorkloads {
    let name = broadcast.metadata.name.clone().unwrap_or_default();
    workloads_for(&name, &broadcast.spec)
}

pub fn workloads_for(name: &str, spec: &BroadcastSpec) -> DesiredWorkloads {
    if spec.state == DesiredState::Ended {
        return DesiredWorkloads::none();
    }
    let sfu = SfuConfig {
        broadcast: name.to_owned(),
        max_participants: u32::from(spec.max_guests) + 1,
        signalling_port: SFU_SIGNALLING_PORT,
        media_port: SFU_MEDIA_PORT,
    };
    // With RTMP ingest on, the OBS feed is the show: the ingest remuxes, records and restreams
    // it, and a compositor would publish a second, empty show to the same destinations.
    let needs_compositor =
        (spec.state == DesiredState::Live || spec.recording) && !spec.ingest.rtmp;
    let compositor = needs_compositor.then(|| {
        let (width, height) = spec.output.resolution.dimensions();
        CompositorConfig {
            broadcast: name.to_owned(),
            width,
            height,
            fps: spec.output.fps,
            video_bitrate_kbps: spec.output.video_bitrate_kbps,
            audio_bitrate_kbps: spec.output.audio_bitrate_kbps,
            layout: spec.layout,
            // Destinations only go out while live; a recording made backstage stays private.
            destinations: if spec.state == DesiredState::Live {
                spec.destinations
                    .iter()
                    .filter(|d| d.enabled)
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            },
            hls: HlsSpec {
                enabled: spec.hls.enabled && spec.state == DesiredState::Live,
                low_latency: spec.hls.low_latency,
            },
            recording: spec.recording,
            ingest: spec.ingest.clone(),
            sfu: Some(format!("{name}-sfu:{SFU_SIGNALLING_PORT}")),
            control_port: COMPOSITOR_CONTROL_PORT,
        }
    });
    DesiredWorkloads {
        sfu: Some(sfu),
        compositor,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Resolution;

    #[test]
    fn backstage_runs_only_the_sfu() {
        let b = Broadcast::test();
        let w = desired_workloads(&b);
        let sfu = w.sfu.expect("sfu");
        assert_eq!(sfu.broadcast, "show");
        assert_eq!(sfu.max_participants, 11);
        assert!(w.compositor.is_none());
    }

    #[test]
    fn live_adds_a_compositor_with_only_enabled_destinations() {
        let b = Broadcast::test()
            .live()
            .with_destination("yt", "rtmp://a.rtmp.youtube.com/live2")
            .with_disabled_destination("fb", "rtmps://live-api-s.facebook.com:443/rtmp/")
            .resolution(Resolution::P1080);
        let w = desired_workloads(&b);
        assert!(w.sfu.is_some());
        let c = w.compositor.expect("compositor");
        assert_eq!((c.width, c.height, c.fps), (1920, 1080, 30));
        let names: Vec<_> = c.destinations.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["yt"]);
        assert!(c.hls.enabled);
        assert_eq!(c.sfu.as_deref(), Some("show-sfu:7880"));
    }

    #[test]
    fn recording_backstage_composes_but_sends_nowhere() {
        let b = Broadcast::test()
            .recording()
            .with_destination("yt", "rtmp://a.rtmp.youtube.com/live2");
        let c = desired_workloads(&b).compositor.expect("compositor");
        assert!(c.recording);
        assert!(c.destinations.is_empty());
        assert!(!c.hls.enabled);
    }

    #[test]
    fn an_rtmp_ingest_is_the_show_so_no_compositor_competes_with_it() {
        let mut b = Broadcast::test()
            .live()
            .recording()
            .with_destination("yt", "rtmp://a.rtmp.youtube.com/live2");
        b.spec.ingest.rtmp = true;
        let w = desired_workloads(&b);
        assert!(w.sfu.is_some());
        assert!(w.compositor.is_none());
    }

    #[test]
    fn ended_runs_nothing() {
        let b = Broadcast::test().live().recording().ended();
        assert_eq!(desired_workloads(&b), DesiredWorkloads::none());
    }

    #[test]
    fn max_guests_bounds_the_sfu() {
        let b = Broadcast::test().max_guests(3);
        assert_eq!(desired_workloads(&b).sfu.unwrap().max_participants, 4);
    }
}
