//! Loopback load on the API (authenticated list, create) beside a minimal axum hello-world in the
//! same run, printing requests/s, p50/p99 and the ratio to hello-world. `make bench` runs it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Body;
use axum::routing::get;
use castyard_api::backend::embedded::EmbeddedBackend;
use castyard_api::crypto::MasterKey;
use castyard_api::db::Db;
use castyard_api::realtime::Hub;
use castyard_api::{AppState, Mode, Settings};
use http_body_util::BodyExt;
use hyper::{Method, Request};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

struct Outcome {
    rps: f64,
    p50_us: u64,
    p99_us: u64,
    errors: u64,
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap()
    });
    addr
}

/// `concurrency` keep-alive clients send requests back to back for `secs`.
async fn load(
    client: &Client<HttpConnector, Body>,
    make: Arc<dyn Fn() -> Request<Body> + Send + Sync>,
    concurrency: usize,
    secs: f64,
) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let started = Instant::now();
    let mut tasks = vec![];
    for _ in 0..concurrency {
        let client = client.clone();
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(50_000);
            let mut errors = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                match client.request(make()).await {
                    Ok(resp) => {
                        let ok = resp.status().is_success();
                        let _ = resp.into_body().collect().await;
                        if ok {
                            lat.push(t.elapsed().as_micros() as u64);
                        } else {
                            errors += 1;
                        }
                    }
                    Err(_) => errors += 1,
                }
            }
            (lat, errors)
        }));
    }
    let mut all = vec![];
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await.unwrap();
        all.extend(l);
        errors += e;
    }
    let elapsed = started.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    Outcome {
        rps: all.len() as f64 / elapsed,
        p50_us: pct(0.50),
        p99_us: pct(0.99),
        errors,
    }
}

fn row(name: &str, o: &Outcome, reference: f64) {
    println!(
        "{name:<34} {:>10.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   errors {:>4}   ratio {:>5.2}",
        o.rps,
        o.p50_us as f64 / 1000.0,
        o.p99_us as f64 / 1000.0,
        o.errors,
        o.rps / reference
    );
}

fn main() {
    let secs: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}?mode=rwc", dir.path().join("bench.db").display())).await.unwrap();
        db.migrate().await.unwrap();
        let settings = Settings::new(Mode::Embedded, dir.path().to_path_buf(), "http://127.0.0.1".into());
        let hub = Hub::in_process(&settings.replica_id);
        let state = AppState::new(db, settings, &MasterKey::generate(), hub, Arc::new(EmbeddedBackend::new()));
        let api = serve(castyard_api::app(state)).await;
        let hello = serve(Router::new().route("/", get(|| async { "Hello, World!" }))).await;

        let client: Client<HttpConnector, Body> = Client::builder(TokioExecutor::new()).pool_max_idle_per_host(concurrency).build_http();
        let reg = Request::post(format!("http://{api}/api/auth/register"))
            .header("content-type", "application/json")
            .body(Body::from(r#"{"email":"bench@example.com","password":"benchmark password","displayName":"Bench"}"#))
            .unwrap();
        let body = client.request(reg).await.unwrap().into_body().collect().await.unwrap().to_bytes();
        let token = serde_json::from_slice::<serde_json::Value>(&body).unwrap()["accessToken"].as_str().unwrap().to_owned();
        let auth = format!("Bearer {token}");
        let create_body = r#"{"title":"Bench show","destinations":[{"name":"yt","kind":"youtube","url":"rtmp://a.rtmp.youtube.com/live2","streamKey":"bench-key-00001234"}]}"#;
        // A realistic list: a host with a season of shows, each with a destination.
        for _ in 0..20 {
            let req = Request::post(format!("http://{api}/api/broadcasts"))
                .header("content-type", "application/json")
                .header("authorization", &auth)
                .body(Body::from(create_body))
                .unwrap();
            assert!(client.request(req).await.unwrap().status().is_success());
        }

        println!("castyard API benchmark: {concurrency} keep-alive connections, {secs} s per scenario, SQLite, loopback");
        let hello_o = load(&client, Arc::new(move || Request::get(format!("http://{hello}/")).body(Body::empty()).unwrap()), concurrency, secs).await;
        // The same stack (metrics, routing) without the database: separates our overhead from SQLite's.
        let health = load(&client, Arc::new(move || Request::get(format!("http://{api}/healthz")).body(Body::empty()).unwrap()), concurrency, secs).await;
        let a = auth.clone();
        let list = load(
            &client,
            Arc::new(move || Request::get(format!("http://{api}/api/broadcasts?limit=20")).header("authorization", &a).body(Body::empty()).unwrap()),
            concurrency,
            secs,
        )
        .await;
        let a = auth.clone();
        let create = load(
            &client,
            Arc::new(move || {
                Request::builder()
                    .method(Method::POST)
                    .uri(format!("http://{api}/api/broadcasts"))
                    .header("content-type", "application/json")
                    .header("authorization", &a)
                    .body(Body::from(create_body))
                    .unwrap()
            }),
            concurrency,
            secs,
        )
        .await;
        let a = auth.clone();
        let get_one_path = {
            let req = Request::get(format!("http://{api}/api/broadcasts?limit=1")).header("authorization", &a).body(Body::empty()).unwrap();
            let b = client.request(req).await.unwrap().into_body().collect().await.unwrap().to_bytes();
            let id = serde_json::from_slice::<serde_json::Value>(&b).unwrap()[0]["id"].as_str().unwrap().to_owned();
            format!("http://{api}/api/broadcasts/{id}")
        };
        let get_one = load(
            &client,
            Arc::new(move || Request::get(&get_one_path).header("authorization", &a).body(Body::empty()).unwrap()),
            concurrency,
            secs,
        )
        .await;

        println!();
        row("axum hello-world (reference)", &hello_o, hello_o.rps);
        row("GET /healthz (no database)", &health, hello_o.rps);
        row("GET /api/broadcasts/{id}", &get_one, hello_o.rps);
        row("GET /api/broadcasts (20 items)", &list, hello_o.rps);
        row("POST /api/broadcasts", &create, hello_o.rps);
        println!();
        let verdict = |r: f64| if r >= 0.5 { "meets" } else { "MISSES" };
        println!("target: at least 0.50x hello-world throughput on SQLite");
        println!("  GET one: {:.2}x ({})", get_one.rps / hello_o.rps, verdict(get_one.rps / hello_o.rps));
        println!("  list:    {:.2}x ({})", list.rps / hello_o.rps, verdict(list.rps / hello_o.rps));
        println!("  create:  {:.2}x ({})", create.rps / hello_o.rps, verdict(create.rps / hello_o.rps));
    });
}
