//! Prometheus metrics for the API (prometheus-client) and the middleware that records requests.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::state::AppState;

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

pub async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = req.method().to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let span = tracing::info_span!("request", %method, %route);
    let resp = tracing::Instrument::instrument(next.run(req), span.clone()).await;
    // The route template only: raw URIs can carry tokens (`?token=` on file and socket URLs).
    span.in_scope(|| {
        tracing::info!(
            status = resp.status().as_u16(),
            elapsed_ms = start.elapsed().as_millis() as u64,
            "request"
        )
    });
    state
        .metrics
        .duration
        .get_or_create(&RouteLabels {
            method: method.clone(),
            route: route.clone(),
        })
        .observe(start.elapsed().as_secs_f64());
    state
        .metrics
        .requests
        .get_or_create(&RequestLabels {
            method,
            route,
            status: resp.status().as_u16(),
        })
        .inc();
    resp
}

pub async fn serve(State(state): State<AppState>) -> impl IntoResponse {
    // Read at scrape time, so a broadcast nobody watches any more drops out of the family.
    state.metrics.viewers.clear();
    for (id, count) in state.hub.local_viewer_counts() {
        state
            .metrics
            .viewers
            .get_or_create(&BroadcastLabels {
                broadcast: crate::routes::broadcasts::resource_name(&id),
            })
            .set(count as i64);
    }
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
}
