//! Time for the operator binary to converge N Broadcasts against the kmock emulator, and its
//! peak RSS, for 10 and for 1,000 in the same run, printed with their ratios. `make bench`.

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::{Duration, Instant};

use castyard_crd::Broadcast;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use support::{Emulator, Operator};

struct Run {
    n: usize,
    converge: Duration,
    peak_rss_kib: u64,
    operator_cpu: f64,
    emulator_cpu: f64,
}

/// VmHWM: the process's peak resident set, in KiB.
fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn run(n: usize) -> Run {
    let emulator = Emulator::start();
    let client = emulator.client();
    let broadcasts: Api<Broadcast> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    // Every Broadcast exists before the operator starts: its first list sees all N at once,
    // each with the control-token Secret the API writes beside it.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    stream::iter(0..n)
        .map(|i| {
            let (api, secrets) = (broadcasts.clone(), secrets.clone());
            async move {
                let name = format!("show-{i:04}");
                secrets
                    .create(
                        &PostParams::default(),
                        &support::control_token_secret(&name),
                    )
                    .await?;
                let mut b = Broadcast::test().named(&name);
                b.metadata.uid = None;
                api.create(&PostParams::default(), &b).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await
        .expect("creating broadcasts");

    let emulator_cpu_before = support::cpu_seconds(emulator.pid());
    let started = Instant::now();
    let operator = Operator::start(&emulator, "bench", &[]);
    // Converged: every Broadcast's status observes its generation. A watch sees each status
    // write as it lands, where polling lists would load the emulator it measures.
    let mut done = std::collections::BTreeSet::new();
    let mut events =
        std::pin::pin!(watcher(broadcasts.clone(), watcher::Config::default()).applied_objects());
    while done.len() < n {
        let b = tokio::time::timeout(Duration::from_secs(600), events.next())
            .await
            .unwrap_or_else(|_| panic!("no convergence: {}/{n}", done.len()))
            .expect("watch ended")
            .expect("watch");
        if b.status.as_ref().and_then(|s| s.observed_generation) == Some(1) {
            done.insert(b.name_any());
        }
    }
    let converge = started.elapsed();
    let calls = support::http_get(
        emulator.url.trim_start_matches("http://").parse().unwrap(),
        "/_emulator/calls",
    )
    .await
    .unwrap_or_default();
    eprintln!("API calls for {n}: {calls}");
    let sfus = pods.list(&ListParams::default()).await.expect("pods");
    assert_eq!(sfus.items.len(), n, "one SFU pod per broadcast");
    Run {
        n,
        converge,
        peak_rss_kib: peak_rss_kib(operator.pid()),
        operator_cpu: support::cpu_seconds(operator.pid()),
        emulator_cpu: support::cpu_seconds(emulator.pid()) - emulator_cpu_before,
    }
}

#[tokio::main]
async fn main() {
    let small = run(10).await;
    let large = run(1000).await;
    for r in [&small, &large] {
        println!(
            "operator converge {:>5} broadcasts: {:>7.2} s, peak RSS {:>6.1} MiB, \
             CPU: operator {:.2} s, emulator {:.2} s",
            r.n,
            r.converge.as_secs_f64(),
            r.peak_rss_kib as f64 / 1024.0,
            r.operator_cpu,
            r.emulator_cpu
        );
    }
    println!(
        "ratio 1000/10: time {:.1}x, peak RSS {:.2}x (targets: 1000 in < 10 s, RSS < 64 MiB)",
        large.converge.as_secs_f64() / small.converge.as_secs_f64(),
        large.peak_rss_kib as f64 / small.peak_rss_kib.max(1) as f64
    );
}
