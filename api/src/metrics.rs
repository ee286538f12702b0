//! The API's Prometheus metrics (prometheus-client): the registry and its families. `web`
//! records requests into them and serves them.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The route template (`/api/broadcasts/{id}`), never the raw path, to bound cardinality.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastLabels {
    /// The Broadcast resource name, as on the media workers' metrics.
    pub broadcast: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ChannelLabels {
    pub channel: String,
}

pub struct Metrics {
    pub registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Family<RouteLabels, Histogram>,
    pub ws_connections: Gauge,
    pub chat_messages: Family<ChannelLabels, Counter>,
    pub rate_limited: Counter,
    /// This replica's watch-page viewers; Prometheus sums the replicas.
    pub viewers: Family<BroadcastLabels, Gauge>,
    /// The RTMP ingest's, as `castyard_api_ingest_…`, when this process runs it.
    pub ingest: castyard_media_worker::metrics::IngestMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("castyard_api");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            requests.clone(),
        );
        let duration = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.0005, 2.0, 16))
        });
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route",
            duration.clone(),
        );
        let ws_connections = Gauge::default();
        registry.register(
            "websocket_connections",
            "Open realtime WebSocket connections",
            ws_connections.clone(),
        );
        let chat_messages = Family::<ChannelLabels, Counter>::default();
        registry.register(
            "chat_messages",
            "Chat messages accepted, by channel",
            chat_messages.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited",
            "Requests refused by a rate limit",
            rate_limited.clone(),
        );
        let viewers = Family::<BroadcastLabels, Gauge>::default();
        registry.register(
            "viewers",
            "Viewers on the watch page connected to this replica, by broadcast",
            viewers.clone(),
        );
        let ingest = castyard_media_worker::metrics::IngestMetrics::default();
        ingest.register(&mut registry);
        Self {
            registry,
            ingest,
            viewers,
            requests,
            duration,
            ws_connections,
            chat_messages,
            rate_limited,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
