//! Every SQL statement on the broadcasts and destinations tables: rows in, stored values out.
//! Nothing here knows the caller, the backend or the JSON shapes.

use castyard_crd::{BroadcastSpec, DesiredState, Destination, SecretKeyRef};
use sqlx::{AnyConnection, Row};

use crate::db::now_ms;
use crate::error::{Error, Result};

/// The stored form of a broadcast: the spec without destinations, which have their own rows.
#[derive(Clone)]
pub struct Stored {
    pub id: String,
    pub name: String,
    pub spec: BroadcastSpec,
    pub started_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A destination's row: its spec entry and its key, sealed.
#[derive(Clone)]
pub struct StoredDestination {
    pub id: String,
    pub dest: Destination,
    pub sealed_key: String,
    pub last4: String,
    pub created_at: i64,
}

const COLUMNS: &str = "id, name, spec, started_at, ended_at, created_at, updated_at";
const DEST_COLUMNS: &str =
    "id, broadcast_id, name, kind, url, key_ciphertext, key_last4, enabled, created_at";

fn stored(row: &sqlx::any::AnyRow) -> Result<Stored> {
    let spec: String = row.try_get("spec")?;
    Ok(Stored {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        spec: serde_json::from_str(&spec).map_err(anyhow::Error::from)?,
        started_at: row.try_get("started_at")?,
        ended_at: row.try_get("ended_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

fn destination(r: &sqlx::any::AnyRow) -> Result<StoredDestination> {
    let kind: String = r.try_get("kind")?;
    let name: String = r.try_get("name")?;
    Ok(StoredDestination {
        id: r.try_get("id")?,
        dest: Destination {
            stream_key_secret_ref: SecretKeyRef {
                name: String::new(),
                key: name.clone(),
            },
            name,
            kind: serde_json::from_value(serde_json::Value::String(kind))
                .map_err(anyhow::Error::from)?,
            url: r.try_get("url")?,
            enabled: r.try_get::<i64, _>("enabled")? != 0,
        },
        sealed_key: r.try_get("key_ciphertext")?,
        last4: r.try_get("key_last4")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The state column, which queries outside this module filter on.
fn state_str(s: DesiredState) -> &'static str {
    match s {
        DesiredState::Backstage => "Backstage",
        DesiredState::Live => "Live",
        DesiredState::Ended => "Ended",
    }
}

/// `owner`'s broadcast `id` (already parsed), or 404.
pub async fn load_owned(conn: &mut AnyConnection, owner: &str, id: &str) -> Result<Stored> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM broadcasts WHERE id = $1 AND owner_id = $2"
    ))
    .bind(id)
    .bind(owner)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("broadcast"))?;
    stored(&row)
}

/// Broadcast `id` whoever owns it, with its owner, or 404.
pub async fn load_with_owner(conn: &mut AnyConnection, id: &str) -> Result<(Stored, String)> {
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, owner_id FROM broadcasts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("broadcast"))?;
    Ok((stored(&row)?, row.try_get("owner_id")?))
}

/// Broadcasts that have not ended.
pub async fn load_unended(conn: &mut AnyConnection) -> Result<Vec<Stored>> {
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM broadcasts WHERE ended_at IS NULL"
    ))
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(stored).collect()
}

/// An owner's broadcasts, newest first, with their destinations: all of them, or one page
/// (limit, offset). Two queries whatever the page size (never one per broadcast).
pub async fn load_owner(
    conn: &mut AnyConnection,
    owner: &str,
    page: Option<(i64, i64)>,
) -> Result<Vec<(Stored, Vec<StoredDestination>)>> {
    let (limit, offset) = page.unwrap_or((-1, 0));
    // LIMIT -1 is "no limit" in SQLite and an error in Postgres, hence the two forms.
    let window = if page.is_some() {
        "LIMIT $2 OFFSET $3"
    } else {
        ""
    };
    let ids = format!(
        "SELECT id FROM broadcasts WHERE owner_id = $1 ORDER BY created_at DESC, id {window}"
    );
    let sql = format!(
        "SELECT {COLUMNS} FROM broadcasts WHERE id IN ({ids}) ORDER BY created_at DESC, id"
    );
    let mut q = sqlx::query(&sql).bind(owner);
    let dest_sql = format!(
        "SELECT {DEST_COLUMNS} FROM destinations WHERE broadcast_id IN ({ids}) ORDER BY created_at, name"
    );
    let mut dq = sqlx::query(&dest_sql).bind(owner);
    if page.is_some() {
        q = q.bind(limit).bind(offset);
        dq = dq.bind(limit).bind(offset);
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let dest_rows = dq.fetch_all(&mut *conn).await?;
    let mut by_broadcast: std::collections::HashMap<String, Vec<StoredDestination>> =
        std::collections::HashMap::new();
    for r in &dest_rows {
        by_broadcast
            .entry(r.try_get("broadcast_id")?)
            .or_default()
            .push(destination(r)?);
    }
    rows.iter()
        .map(|row| {
            let b = stored(row)?;
            let dests = by_broadcast.remove(&b.id).unwrap_or_default();
            Ok((b, dests))
        })
        .collect()
}

pub async fn load_destinations(
    conn: &mut AnyConnection,
    broadcast_id: &str,
) -> Result<Vec<StoredDestination>> {
    let rows = sqlx::query(&format!(
        "SELECT {DEST_COLUMNS} FROM destinations WHERE broadcast_id = $1 ORDER BY created_at, name"
    ))
    .bind(broadcast_id)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter().map(destination).collect()
}

/// A destination's URL, or 404.
pub async fn destination_url(
    conn: &mut AnyConnection,
    broadcast_id: &str,
    dest_id: &str,
) -> Result<String> {
    Ok(
        sqlx::query("SELECT url FROM destinations WHERE id = $1 AND broadcast_id = $2")
            .bind(dest_id)
            .bind(broadcast_id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Error::NotFound("destination"))?
            .try_get("url")?,
    )
}

pub async fn insert(
    conn: &mut AnyConnection,
    b: &Stored,
    owner: &str,
    sealed_control_token: &str,
) -> Result<()> {
    sqlx::query("INSERT INTO broadcasts (id, owner_id, name, title, state, spec, created_at, updated_at, control_token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&b.id)
        .bind(owner)
        .bind(&b.name)
        .bind(&b.spec.title)
        .bind(state_str(b.spec.state))
        .bind(serde_json::to_string(&b.spec).map_err(anyhow::Error::from)?)
        .bind(b.created_at)
        .bind(b.updated_at)
        .bind(sealed_control_token)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Writes the broadcast's row, stamping `updated_at`.
pub async fn update(conn: &mut AnyConnection, b: &mut Stored) -> Result<()> {
    b.updated_at = now_ms();
    sqlx::query("UPDATE broadcasts SET title = $1, state = $2, spec = $3, started_at = $4, ended_at = $5, updated_at = $6 WHERE id = $7")
        .bind(&b.spec.title)
        .bind(state_str(b.spec.state))
        .bind(serde_json::to_string(&b.spec).map_err(anyhow::Error::from)?)
        .bind(b.started_at)
        .bind(b.ended_at)
        .bind(b.updated_at)
        .bind(&b.id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut AnyConnection, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM broadcasts WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// The ingest key's hash; None revokes it.
pub async fn set_ingest_key_hash(
    conn: &mut AnyConnection,
    id: &str,
    hash: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE broadcasts SET ingest_key_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// A destination whose key is already sealed; its name must be new in the broadcast (409).
pub async fn insert_destination(
    conn: &mut AnyConnection,
    broadcast_id: &str,
    d: &StoredDestination,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO destinations (id, broadcast_id, name, kind, url, key_ciphertext, key_last4, enabled, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&d.id)
    .bind(broadcast_id)
    .bind(&d.dest.name)
    .bind(serde_json::to_value(d.dest.kind).map_err(anyhow::Error::from)?.as_str().unwrap_or("custom"))
    .bind(&d.dest.url)
    .bind(&d.sealed_key)
    .bind(&d.last4)
    .bind(i64::from(d.dest.enabled))
    .bind(d.created_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("a destination named {:?} already exists", d.dest.name))
        }
        e => e.into(),
    })?;
    Ok(())
}

/// Deletes a destination of the broadcast, or 404.
pub async fn delete_destination(
    conn: &mut AnyConnection,
    broadcast_id: &str,
    dest_id: &str,
) -> Result<()> {
    let gone = sqlx::query("DELETE FROM destinations WHERE id = $1 AND broadcast_id = $2")
        .bind(dest_id)
        .bind(broadcast_id)
        .execute(&mut *conn)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(Error::NotFound("destination"));
    }
    Ok(())
}
