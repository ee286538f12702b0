//! Every metric the alerts and the dashboard query is exported by a binary, and the table in
//! docs/metrics.md lists exactly what the binaries export.

use std::collections::BTreeSet;

fn repo(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The sample names a text exposition's `# TYPE` lines promise, as PromQL sees them.
fn sample_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').expect("# TYPE name kind");
        match kind {
            "counter" => names.insert(format!("{name}_total")),
            "histogram" => {
                for s in ["bucket", "sum", "count"] {
                    names.insert(format!("{name}_{s}"));
                }
                true
            }
            _ => names.insert(name.to_owned()),
        };
    }
    names
}

/// What each binary exports once it has seen some activity: prometheus-client leaves a family
/// out of the exposition until it has a series, so one series of each is recorded here.
fn exported() -> BTreeSet<String> {
    use castyard_media_worker::metrics as mw;
    let api = castyard_api::metrics::Metrics::new();
    let route = |status| castyard_api::metrics::RequestLabels {
        method: "GET".into(),
        route: "/api/broadcasts".into(),
        status,
    };
    api.requests.get_or_create(&route(200)).inc();
    api.duration
        .get_or_create(&castyard_api::metrics::RouteLabels {
            method: "GET".into(),
            route: "/api/broadcasts".into(),
        })
        .observe(0.01);
    api.chat_messages
        .get_or_create(&castyard_api::metrics::ChannelLabels {
            channel: "public".into(),
        })
        .inc();
    api.viewers
        .get_or_create(&castyard_api::metrics::BroadcastLabels {
            broadcast: "bc".into(),
        })
        .set(1);

    api.ingest
        .publishing
        .get_or_create(&mw::BroadcastLabels {
            broadcast: "bc".into(),
        })
        .set(1);
    api.ingest
        .received_bytes
        .get_or_create(&mw::BroadcastLabels {
            broadcast: "bc".into(),
        })
        .inc();
    api.ingest
        .flv_viewers
        .get_or_create(&mw::BroadcastLabels {
            broadcast: "bc".into(),
        })
        .set(1);
    api.ingest
        .set_destination_state("bc", "youtube", mw::DestinationState::Live);
    let ingest_destination = mw::BroadcastDestinationLabels {
        broadcast: "bc".into(),
        destination: "youtube".into(),
    };
    api.ingest
        .destination_retries
        .get_or_create(&ingest_destination)
        .inc();
    api.ingest
        .destination_sent_bytes
        .get_or_create(&ingest_destination)
        .inc();
    api.ingest
        .destination_failures
        .get_or_create(&mw::BroadcastDestinationKindLabels {
            broadcast: "bc".into(),
            destination: "youtube".into(),
            kind: "tls".into(),
        })
        .inc();

    let operator = castyard_operator::metrics::Metrics::default();
    operator.failure("kube");
    operator.set_phase("ns", "bc", Some(castyard_crd::Phase::Live));

    let sfu = mw::SfuMetrics::new("bc");
    let media = mw::MediaLabels {
        participant: "p".into(),
        kind: "video".into(),
    };
    let participant = mw::ParticipantLabels {
        participant: "p".into(),
    };
    sfu.participants
        .get_or_create(&mw::RoleLabels {
            role: "host".into(),
        })
        .set(1);
    sfu.received_bytes.get_or_create(&media).inc();
    sfu.sent_bytes.get_or_create(&media).inc();
    sfu.received_packets.get_or_create(&participant).inc();
    sfu.lost_packets.get_or_create(&participant).inc();
    sfu.rtt.get_or_create(&participant).set(0.02);
    sfu.jitter.get_or_create(&participant).set(0.001);

    let compositor = mw::CompositorMetrics::new("bc");
    let destination = mw::DestinationLabels {
        destination: "youtube".into(),
    };
    compositor.set_destination_state("youtube", mw::DestinationState::Live);
    compositor
        .destination_retries
        .get_or_create(&destination)
        .inc();
    compositor
        .destination_sent_bytes
        .get_or_create(&destination)
        .inc();
    compositor
        .destination_failures
        .get_or_create(&mw::DestinationKindLabels {
            destination: "youtube".into(),
            kind: "tls".into(),
        })
        .inc();

    [
        api.encode(),
        operator.encode(),
        sfu.encode(),
        compositor.encode(),
    ]
    .iter()
    .flat_map(|t| sample_names(t))
    .collect()
}

fn mentioned(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("castyard_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

#[test]
fn alerts_and_dashboard_query_only_exported_metrics() {
    let exported = exported();
    for file in [
        "charts/castyard/files/alerts.yaml",
        "charts/castyard/files/dashboard.json",
    ] {
        let used = mentioned(&repo(file));
        assert!(!used.is_empty(), "{file} queries no castyard metric");
        let missing: Vec<_> = used.difference(&exported).collect();
        assert!(missing.is_empty(), "{file} queries unexported {missing:?}");
    }
}

#[test]
fn the_metrics_page_lists_exactly_the_exported_metrics() {
    let readme = repo("docs/metrics.md");
    let listed: BTreeSet<String> = readme
        .lines()
        .filter_map(|l| l.strip_prefix("| `castyard_"))
        .map(|l| format!("castyard_{}", &l[..l.find('`').expect("closing backtick")]))
        .collect();
    // The page names a histogram once, without its _bucket/_sum/_count suffix.
    let documented: BTreeSet<String> = exported()
        .into_iter()
        .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
        .map(|n| n.strip_suffix("_bucket").map(str::to_owned).unwrap_or(n))
        .collect();
    assert_eq!(
        listed.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in docs/metrics.md but not exported"
    );
    assert_eq!(
        documented.difference(&listed).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "exported but not in docs/metrics.md"
    );
}
