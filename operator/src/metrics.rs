//! The operator's Prometheus metrics (prometheus-client) and its /metrics, /healthz, /readyz server.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use castyard_crd::Phase;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub error: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    pub phase: String,
}

/// One series per Broadcast, valued 1, for its current phase: what "stuck in Starting"
/// alerts and the per-broadcast dashboard select on. `broadcast_namespace`, because Prometheus
/// gives `namespace` to the operator pod's own.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BroadcastPhaseLabels {
    pub broadcast_namespace: String,
    pub broadcast: String,
    pub phase: String,
}

pub struct Metrics {
    registry: Registry,
    pub reconciles: Counter,
    pub failures: Family<ErrorLabels, Counter>,
    pub duration: Histogram,
    by_phase: Family<PhaseLabels, Gauge>,
    broadcast_phase: Family<BroadcastPhaseLabels, Gauge>,
    /// The last phase of each Broadcast (namespace/name), from which the gauges are derived.
    phases: Mutex<HashMap<String, Phase>>,
}

const PHASES: [Phase; 7] = [
    Phase::Pending,
    Phase::Backstage,
    Phase::Starting,
    Phase::Live,
    Phase::Ending,
    Phase::Ended,
    Phase::Failed,
];

fn phase_name(p: Phase) -> String {
    format!("{p:?}")
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("castyard_operator");
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconciles run", reconciles.clone());
        let failures = Family::<ErrorLabels, Counter>::default();
        registry.register(
            "reconcile_failures",
            "Failed reconciles by error kind",
            failures.clone(),
        );
        let duration = Histogram::new(exponential_buckets(0.001, 2.0, 14));
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one Broadcast",
            duration.clone(),
        );
        let by_phase = Family::<PhaseLabels, Gauge>::default();
        registry.register("broadcasts", "Broadcasts by phase", by_phase.clone());
        for p in PHASES {
            by_phase
                .get_or_create(&PhaseLabels {
                    phase: phase_name(p),
                })
                .set(0);
        }
        let broadcast_phase = Family::<BroadcastPhaseLabels, Gauge>::default();
        registry.register(
            "broadcast_phase",
            "1 for each Broadcast's current phase",
            broadcast_phase.clone(),
        );
        Self {
            registry,
            broadcast_phase,
            reconciles,
            failures,
            duration,
            by_phase,
            phases: Mutex::default(),
        }
    }
}

impl Metrics {
    /// Records a Broadcast's phase (None once it is gone) and refreshes the phase gauges.
    pub fn set_phase(&self, namespace: &str, name: &str, phase: Option<Phase>) {
        let labels = |p: Phase| BroadcastPhaseLabels {
            broadcast_namespace: namespace.to_owned(),
            broadcast: name.to_owned(),
            phase: phase_name(p),
        };
        let key = format!("{namespace}/{name}");
        let mut phases = self.phases.lock().expect("lock poisoned");
        let old = match phase {
            Some(p) => phases.insert(key, p),
            None => phases.remove(&key),
        };
        if let Some(old) = old.filter(|&o| Some(o) != phase) {
            self.broadcast_phase.remove(&labels(old));
        }
        if let Some(p) = phase {
            self.broadcast_phase.get_or_create(&labels(p)).set(1);
        }
        for p in PHASES {
            let n = phases.values().filter(|&&v| v == p).count() as i64;
            self.by_phase
                .get_or_create(&PhaseLabels {
                    phase: phase_name(p),
                })
                .set(n);
        }
    }

    pub fn failure(&self, label: &str) {
        self.failures
            .get_or_create(&ErrorLabels {
                error: label.to_owned(),
            })
            .inc();
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding into a String cannot fail");
        out
    }
}

/// /metrics, /healthz and /readyz.
pub fn router(metrics: Arc<Metrics>) -> axum::Router {
    use axum::routing::get;
    axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        m.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ready" }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phase_gauges_count_broadcasts() {
        let m = Metrics::default();
        m.set_phase("a", "one", Some(Phase::Live));
        m.set_phase("a", "two", Some(Phase::Live));
        m.set_phase("a", "two", Some(Phase::Ended));
        m.set_phase("a", "three", Some(Phase::Backstage));
        m.set_phase("a", "three", None);
        m.failure("kube");
        let text = m.encode();
        assert!(
            text.contains(r#"castyard_operator_broadcasts{phase="Live"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"castyard_operator_broadcasts{phase="Ended"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"castyard_operator_broadcasts{phase="Backstage"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"castyard_operator_reconcile_failures_total{error="kube"} 1"#),
            "{text}"
        );
        // Each Broadcast has exactly its current phase; a gone one has none.
        let series: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("castyard_operator_broadcast_phase{"))
            .collect();
        assert_eq!(series.len(), 2, "{text}");
        assert!(text.contains(
            r#"castyard_operator_broadcast_phase{broadcast_namespace="a",broadcast="two",phase="Ended"} 1"#
        ), "{text}");
    }
}
