//! Test harness: an app on SQLite or a fresh Postgres database, and request helpers.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use castyard_api::backend::BroadcastBackend;
use castyard_api::backend::embedded::EmbeddedBackend;
use castyard_api::crypto::MasterKey;
use castyard_api::db::Db;
use castyard_api::realtime::Hub;
use castyard_api::{AppState, Mode, Settings};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// Runs one scenario on SQLite and on PostgreSQL.
macro_rules! both {
    ($($name:ident),* $(,)?) => {
        $(mod $name {
            #[tokio::test]
            async fn sqlite() {
                super::$name(crate::common::TestApp::sqlite().await).await
            }
            #[tokio::test]
            async fn postgres() {
                super::$name(crate::common::TestApp::postgres().await).await
            }
        })*
    };
}
pub(crate) use both;

pub struct TestApp {
    pub state: AppState,
    pub router: axum::Router,
    pub embedded: Arc<EmbeddedBackend>,
    pub _dir: tempfile::TempDir,
}

/// The server's Postgres; `make test` sets it (see scripts/test-deps.sh).
pub fn postgres_base_url() -> String {
    std::env::var("CASTYARD_TEST_POSTGRES").unwrap_or_else(|_| {
        panic!("CASTYARD_TEST_POSTGRES is not set: run `make test`, or point it at a Postgres server, e.g. postgres://castyard:castyard@127.0.0.1:5432")
    })
}

/// A new, empty database on the test server, so tests never see each other's rows.
pub async fn fresh_postgres_url() -> String {
    let base = postgres_base_url();
    let name = format!("castyard_test_{}", uuid::Uuid::new_v4().simple());
    let admin = Db::connect(&format!("{base}/postgres"))
        .await
        .expect("connect to test Postgres");
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin.pool)
        .await
        .expect("create test database");
    admin.pool.close().await;
    format!("{base}/{name}")
}

pub fn test_settings(dir: &std::path::Path) -> Settings {
    let mut s = Settings::new(
        Mode::Embedded,
        dir.to_path_buf(),
        "http://castyard.test".into(),
    );
    s.upload_limit = 256 * 1024;
    s.json_limit = 16 * 1024;
    s.auth_burst = 1000;
    s
}

impl TestApp {
    pub async fn sqlite() -> Self {
        Self::sqlite_with(|_| {}).await
    }

    pub async fn sqlite_with(tune: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        Self::build(&url, dir, tune, None).await
    }

    pub async fn postgres() -> Self {
        Self::postgres_with(|_| {}).await
    }

    pub async fn postgres_with(tune: impl FnOnce(&mut Settings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::build(&fresh_postgres_url().await, dir, tune, None).await
    }

    pub async fn with_backend(backend: Arc<dyn BroadcastBackend>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}?mode=rwc", dir.path().join("test.db").display());
        Self::build(&url, dir, |_| {}, Some(backend)).await
    }

    pub async fn build(
        url: &str,
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut Settings),
        backend: Option<Arc<dyn BroadcastBackend>>,
    ) -> Self {
        let db = Db::connect(url).await.unwrap();
        db.migrate().await.unwrap();
        let mut s = test_settings(dir.path());
        tune(&mut s);
        let hub = Hub::in_process(&s.replica_id);
        let embedded = Arc::new(EmbeddedBackend::new());
        let backend = backend.unwrap_or_else(|| embedded.clone());
        let state = AppState::new(db, s, &MasterKey::generate(), hub, backend);
        let router = castyard_api::app(state.clone());
        Self {
            state,
            router,
            embedded,
            _dir: dir,
        }
    }

    pub async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            json,
            bytes,
        }
    }

    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Reply {
        let mut b = Request::builder().method(method).uri(path);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = match body {
            Some(v) => b
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(v.to_string())),
            None => b.body(Body::empty()),
        };
        self.send(req.unwrap()).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> Reply {
        self.call(Method::POST, path, token, Some(body)).await
    }

    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<Body>,
    ) -> Reply {
        let mut b = Request::builder()
            .method(method)
            .uri(path)
            .header(header::CONTENT_TYPE, content_type);
        if let Some(t) = token {
            b = b.header(header::AUTHORIZATION, format!("Bearer {t}"));
        }
        self.send(b.body(body.into()).unwrap()).await
    }

    /// Registers a host and returns its access token.
    pub async fn host(&self, email: &str) -> String {
        let r = self
            .post(
                "/api/auth/register",
                None,
                json!({"email": email, "password": "correct horse battery", "displayName": "Host"}),
            )
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json["accessToken"].as_str().unwrap().to_owned()
    }

    pub async fn create_broadcast(&self, token: &str, body: Value) -> Value {
        let r = self.post("/api/broadcasts", Some(token), body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.json);
        r.json
    }

    pub async fn count(&self, table: &str) -> i64 {
        use sqlx::Row;
        sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
            .fetch_one(&self.state.db.pool)
            .await
            .unwrap()
            .try_get("n")
            .unwrap()
    }

    /// Row counts of every table, to show a refused request changed nothing.
    pub async fn snapshot(&self) -> Vec<i64> {
        let mut out = vec![];
        for t in [
            "users",
            "sessions",
            "broadcasts",
            "destinations",
            "participants",
            "recordings",
            "chat_messages",
            "uploads",
        ] {
            out.push(self.count(t).await);
        }
        out
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub json: Value,
    pub bytes: Vec<u8>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    /// Asserts the status and our one error shape, returning the code.
    pub fn error(&self, status: StatusCode) -> String {
        assert_eq!(self.status, status, "body: {}", self.text());
        let code = self.json["error"]["code"]
            .as_str()
            .unwrap_or_else(|| panic!("not an error body: {}", self.text()));
        assert!(
            self.json["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{}",
            self.text()
        );
        code.to_owned()
    }
}

/// Runs a browser script from `frontend/e2e/` (Debian chromium through playwright-core) and
/// returns the JSON of its last line; a failed expectation fails the test with its output.
pub fn e2e(script: &str, args: &[&str]) -> Value {
    let frontend = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../frontend");
    let out = std::process::Command::new("node")
        .current_dir(&frontend)
        .arg(format!("e2e/{script}"))
        .args(args)
        .output()
        .expect("node runs (scripts/test-deps.sh installs it with chromium and playwright-core)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let last = stdout.lines().last().unwrap_or_default();
    // What the browser saw, in the test's output (shown by `--no-capture` or on failure).
    println!("{script}: {last}");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{e}: {last}"))
}
