//! The database: one pool over SQLite (embedded) or PostgreSQL (cluster), migrated on start.

use std::str::FromStr;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions, install_default_drivers};
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, ConnectOptions, Executor};

/// The DDL is portable (see the migration's header), so both databases take the same files.
static MIGRATOR: Migrator = sqlx::migrate!(); // api/migrations

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Sqlite,
    Postgres,
}

/// One set of SQL for both databases: queries use `$n` placeholders, which SQLite accepts too,
/// and only portable types (TEXT, BIGINT).
#[derive(Clone, Debug)]
pub struct Db {
    /// Reads, and everything on Postgres.
    pub pool: AnyPool,
    /// Writes. On SQLite a single connection, so writers queue here (async) instead of
    /// colliding on the database lock and sleeping in SQLite's busy handler; WAL lets the
    /// readers in `pool` run beside it. On Postgres the same pool as `pool`.
    pub writer: AnyPool,
    pub kind: Kind,
    pub url: String,
}

/// Postgres may come up after the API (a fresh cluster, a failover): retried, visibly, for
/// about a minute before giving up.
const POSTGRES_ATTEMPTS: usize = 8;

/// One pool, retried with backoff (1 s doubling to 10 s) while the server is unreachable; each
/// failure is logged, so a waiting API is never silent.
pub async fn connect_postgres(
    options: &AnyConnectOptions,
    attempts: usize,
    attempt_timeout: std::time::Duration,
) -> anyhow::Result<AnyPool> {
    use backon::Retryable;
    let connect = || {
        AnyPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(attempt_timeout)
            .connect_with(options.clone())
    };
    connect
        .retry(
            backon::ExponentialBuilder::default()
                .with_min_delay(std::time::Duration::from_secs(1))
                .with_max_delay(std::time::Duration::from_secs(10))
                .with_max_times(attempts.saturating_sub(1)),
        )
        .notify(|e, wait| {
            tracing::warn!(error = %e, retry_in = ?wait, "the database is unreachable; retrying")
        })
        .await
        .map_err(|e| anyhow::anyhow!("the database is unreachable after {attempts} attempts: {e}"))
}

impl Db {
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        install_default_drivers();
        let kind = if url.starts_with("sqlite:") {
            Kind::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Kind::Postgres
        } else {
            anyhow::bail!("unsupported database URL scheme (use sqlite: or postgres:)");
        };
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let sqlite_pool = |max: u32| {
            AnyPoolOptions::new()
                .max_connections(max)
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        // WAL lets readers run beside the one writer; the busy timeout turns
                        // writer contention into waiting instead of SQLITE_BUSY errors.
                        conn.execute(
                            "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000;",
                        )
                        .await?;
                        Ok(())
                    })
                })
        };
        let (pool, writer) = match kind {
            // An in-memory database exists once per connection: one pool must do for both.
            Kind::Sqlite if url.contains(":memory:") => {
                let p = sqlite_pool(1).connect_with(options).await?;
                (p.clone(), p)
            }
            Kind::Sqlite => {
                let writer = sqlite_pool(1).connect_with(options.clone()).await?;
                let pool = sqlite_pool(8).connect_with(options).await?;
                (pool, writer)
            }
            Kind::Postgres => {
                let p = connect_postgres(
                    &options,
                    POSTGRES_ATTEMPTS,
                    std::time::Duration::from_secs(10),
                )
                .await?;
                (p.clone(), p)
            }
        };
        Ok(Self {
            pool,
            writer,
            kind,
            url: url.to_owned(),
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    pub async fn ping(&self) -> bool {
        sqlx::query("SELECT 1").execute(&self.pool).await.is_ok()
    }
}

/// Milliseconds since the Unix epoch, the one time format stored.
pub fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339, the one time format sent.
pub fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
