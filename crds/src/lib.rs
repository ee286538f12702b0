//! The `Broadcast` custom resource (castyard.dev/v1alpha1) and the pure mapping to its workloads.
#![forbid(unsafe_code)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub mod validate;
pub mod workloads;
pub use workloads::{CompositorConfig, DesiredWorkloads, SfuConfig, desired_workloads};

#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;

pub const GROUP: &str = "castyard.dev";
pub const VERSION: &str = "v1alpha1";
/// Guests beside the host; StreamYard's limit and ours.
pub const MAX_GUESTS: u8 = 10;
pub const MAX_DESTINATIONS: usize = 10;

/// A show: its desired state, output format, scene preset and where it goes.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "castyard.dev",
    version = "v1alpha1",
    kind = "Broadcast",
    plural = "broadcasts",
    shortname = "bc",
    category = "castyard",
    namespaced,
    status = "BroadcastStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Live","type":"integer","description":"Destinations receiving the show","jsonPath":".status.liveDestinations"}"#,
    printcolumn = r#"{"name":"Guests","type":"integer","jsonPath":".status.guests"}"#,
    printcolumn = r#"{"name":"Message","type":"string","description":"What is wrong, when something is","jsonPath":".status.message"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("oldSelf.state != 'Ended' || self.state == 'Ended'").message("an Ended broadcast cannot be started again"))]
pub struct BroadcastSpec {
    #[schemars(length(min = 1, max = 200))]
    pub title: String,
    #[serde(default)]
    #[schemars(length(max = 5000))]
    pub description: String,
    /// What the owner wants now; the operator reports what is in `status.phase`.
    #[serde(default)]
    pub state: DesiredState,
    /// Record the composed show to fragmented MP4.
    #[serde(default)]
    pub recording: bool,
    #[serde(default)]
    pub output: OutputSpec,
    #[serde(default)]
    pub layout: Layout,
    #[serde(default)]
    #[schemars(length(max = 10))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    #[x_kube(validation = Rule::new("self.all(d, self.exists_one(e, e.name == d.name))").message("destination names must be unique"))]
    pub destinations: Vec<Destination>,
    #[serde(default)]
    pub hls: HlsSpec,
    #[serde(default)]
    pub ingest: IngestSpec,
    /// Guests allowed on the studio besides the host.
    #[serde(default = "default_max_guests")]
    #[schemars(range(min = 1, max = 10))]
    pub max_guests: u8,
    /// RFC 3339 time the show is announced for; informational only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(extend("format" = "date-time"))]
    pub scheduled_start: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_resources: Option<WorkerResources>,
}

fn default_max_guests() -> u8 {
    MAX_GUESTS
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DesiredState {
    #[default]
    Backstage,
    Live,
    Ended,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutputSpec {
    #[serde(default)]
    pub resolution: Resolution,
    #[serde(default = "default_fps")]
    #[schemars(range(min = 15, max = 60))]
    pub fps: u32,
    #[serde(default = "default_video_kbps")]
    #[schemars(range(min = 300, max = 20000))]
    pub video_bitrate_kbps: u32,
    #[serde(default = "default_audio_kbps")]
    #[schemars(range(min = 32, max = 320))]
    pub audio_bitrate_kbps: u32,
}

impl Default for OutputSpec {
    fn default() -> Self {
        Self {
            resolution: Resolution::default(),
            fps: default_fps(),
            video_bitrate_kbps: default_video_kbps(),
            audio_bitrate_kbps: default_audio_kbps(),
        }
    }
}

fn default_fps() -> u32 {
    30
}
fn default_video_kbps() -> u32 {
    4500
}
fn default_audio_kbps() -> u32 {
    160
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Resolution {
    #[default]
    #[serde(rename = "720p")]
    P720,
    #[serde(rename = "1080p")]
    P1080,
}

impl Resolution {
    pub fn dimensions(self) -> (u32, u32) {
        match self {
            Resolution::P720 => (1280, 720),
            Resolution::P1080 => (1920, 1080),
        }
    }
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    #[default]
    Grid,
    Spotlight,
    Sidebar,
    Solo,
    PictureInPicture,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Destination {
    /// Unique within the broadcast; a DNS label so it can name metrics and child objects.
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    pub name: String,
    pub kind: DestinationKind,
    /// The ingest URL without the stream key.
    #[schemars(length(max = 2048), regex(pattern = r"^rtmps?://[^\s/?#]+(/[^\s]*)?$"))]
    pub url: String,
    pub stream_key_secret_ref: SecretKeyRef,
    #[serde(default = "default_true")]
    pub enabled: bool,
}

fn default_true() -> bool {
    true
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DestinationKind {
    Youtube,
    Facebook,
    Twitch,
    Custom,
}

/// Where a stream key lives; the key itself never enters the CR.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct SecretKeyRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HlsSpec {
    #[serde(default = "default_true")]
    pub enabled: bool,
    #[serde(default)]
    pub low_latency: bool,
}

impl Default for HlsSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            low_latency: false,
        }
    }
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestSpec {
    /// Accept an RTMP publisher (OBS) as the show or as a studio source.
    #[serde(default)]
    pub rtmp: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerResources {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sfu: Option<ResourceRequirements>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compositor: Option<ResourceRequirements>,
}

/// What the operator observed; written only through the status subresource.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// What is wrong, when something is: the first failing condition as `Reason: message`
    /// (`kubectl get broadcasts` shows it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub destinations: Vec<DestinationStatus>,
    /// Count of destinations in state Live, kept for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub live_destinations: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub guests: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recording: Option<RecordingStatus>,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    Pending,
    Backstage,
    Starting,
    Live,
    Ending,
    Ended,
    Failed,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    /// host:port of the SFU's control and signalling port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signalling: Option<String>,
    /// host:port of the SFU's single media UDP port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_udp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hls: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingest: Option<String>,
    /// host:port of the compositor's control port (live scene changes), while it runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub control: Option<String>,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationStatus {
    pub name: String,
    pub state: DestinationState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// What kind of failure `lastError` is (a TLS failure, say, whose reason is in the error).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_kind: Option<DestinationErrorKind>,
    #[serde(default)]
    pub retries: u32,
    #[serde(default)]
    pub bitrate_kbps: u32,
}

/// Why a destination failed: in its status, the studio and the metrics' `kind` label.
#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum DestinationErrorKind {
    /// No TCP connection: the name does not resolve, the port refuses, or nothing answers.
    Unreachable,
    /// The TLS handshake failed: an untrusted issuer, a name mismatch, an expired certificate.
    Tls,
    /// Not an RTMP server, or one that answered out of protocol.
    Protocol,
    /// The server refused the connection or the publish (a wrong stream key, usually).
    Rejected,
    /// The connection dropped mid-show, or the destination fell behind.
    Dropped,
}

impl DestinationErrorKind {
    /// The metrics label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Unreachable => "unreachable",
            Self::Tls => "tls",
            Self::Protocol => "protocol",
            Self::Rejected => "rejected",
            Self::Dropped => "dropped",
        }
    }
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DestinationState {
    #[default]
    Idle,
    Connecting,
    Live,
    Retrying,
    Failed,
}

#[cfg_attr(feature = "utoipa", derive(utoipa::ToSchema))]
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordingStatus {
    pub active: bool,
    /// Recording id in the API's recordings table.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(default)]
    pub bytes: u64,
}

/// The CRD as YAML, exactly as committed in crds/broadcast.yaml.
pub fn crd_yaml() -> String {
    let crd = Broadcast::crd();
    serde_yaml::to_string(&crd).expect("a CRD always serialises")
}
