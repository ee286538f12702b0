//! /api/broadcasts: a host's shows and their destinations; every change is stored and handed to
//! the backend in one step, so a refused backend call leaves the database unchanged.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use castyard_crd::validate::{validate_rtmp_url, validate_spec};
use castyard_crd::{
    BroadcastSpec, DesiredState, Destination, DestinationKind, DestinationStatus, Endpoints,
    HlsSpec, IngestSpec, Layout, OutputSpec, Phase, SecretKeyRef,
};
use serde::{Deserialize, Serialize};
use sqlx::{AnyConnection, Row};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::auth::{AuthUser, TokenKind, claims};
use crate::backend::{DesiredBroadcast, StreamKey, keys_secret_name};
use crate::crypto::mask;
use crate::db::{new_id, now_ms, rfc3339};
use crate::error::{Error, ErrorBody, JsonBody, PathParams, QueryParams, Result, parse_id};
use crate::realtime::{BroadcastEvent, Event};
use crate::state::AppState;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list, create))
        .routes(routes!(get_one, update, remove))
        .routes(routes!(start))
        .routes(routes!(end))
        .routes(routes!(invite))
        .routes(routes!(add_destination))
        .routes(routes!(remove_destination))
        .routes(routes!(test_destination))
        .routes(routes!(new_ingest_key, revoke_ingest_key))
        .routes(routes!(crate::routes::studio::upgrade))
        .routes(routes!(
            crate::routes::scene::get_scene,
            crate::routes::scene::post_scene
        ))
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IngestKeyView {
    /// Shown this once: only its hash is stored. Paste it into OBS as the stream key.
    pub stream_key: String,
    /// OBS's "Server": rtmp://host:port/live.
    pub server_url: String,
    /// Server and key together, for ffmpeg and other tools.
    pub url: String,
}

/// Generate the broadcast's RTMP ingest key (OBS), replacing any previous one: the old key is
/// refused from now on, though a publish already running goes on.
#[utoipa::path(post, path = "/{id}/ingest-key", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 201, body = IngestKeyView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the broadcast has ended, or this server has no RTMP ingest")))]
async fn new_ingest_key(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<IngestKeyView>)> {
    let server_url = state
        .settings
        .ingest_url
        .clone()
        .ok_or_else(|| Error::Conflict("this server does not run the RTMP ingest".into()))?;
    let (stream_key, hash) = crate::crypto::new_token();
    set_ingest_key(&state, &user, &id, Some(&hash)).await?;
    Ok((
        StatusCode::CREATED,
        Json(IngestKeyView {
            url: format!("{server_url}/{stream_key}"),
            stream_key,
            server_url,
        }),
    ))
}

/// Revoke the broadcast's RTMP ingest key: publishing with it is refused from now on.
#[utoipa::path(delete, path = "/{id}/ingest-key", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn revoke_ingest_key(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode> {
    set_ingest_key(&state, &user, &id, None).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Stores an ingest key's hash (None revokes); only a broadcast that has not ended takes one.
async fn set_ingest_key(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    hash: Option<&str>,
) -> Result<()> {
    let mut tx = state.db.writer.begin().await?;
    let b = load_owned(&mut tx, user, id).await?;
    if hash.is_some() && b.spec.state == DesiredState::Ended {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    sqlx::query("UPDATE broadcasts SET ingest_key_hash = $1 WHERE id = $2")
        .bind(hash)
        .bind(&b.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The enabled destinations of a broadcast with their keys decrypted, for the ingest to
/// restream to.
pub async fn restream_targets(
    state: &AppState,
    id: &str,
) -> Result<Vec<castyard_media_worker::rtmp_out::Target>> {
    let mut conn = state.db.pool.acquire().await?;
    load_destinations(&mut conn, id)
        .await?
        .into_iter()
        .filter(|d| d.dest.enabled)
        .map(|d| {
            Ok(castyard_media_worker::rtmp_out::Target {
                stream_key: state.keys.decrypt(&d.id, &d.sealed_key)?,
                name: d.dest.name,
                url: d.dest.url,
            })
        })
        .collect()
}

/// A broadcast whose RTMP ingest started or stopped: its state, times and watchers follow.
/// The ingest is the show, so no workers are started for it.
pub async fn ingest_transition(state: &AppState, id: &str, to: DesiredState) -> Result<()> {
    let mut tx = state.db.writer.begin().await?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS}, owner_id FROM broadcasts WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or(Error::NotFound("broadcast"))?;
    let owner: String = row.try_get("owner_id")?;
    let mut b = stored(&row)?;
    if b.spec.state == to || b.spec.state == DesiredState::Ended {
        return Ok(());
    }
    enter(&mut b, to);
    store(&mut tx, &mut b).await?;
    // Live from an ingest needs no compositor (the ingest is the show), so the workers stay as
    // they were; an end stops them all.
    if to == DesiredState::Ended {
        apply(state, &mut tx, &b).await?;
    }
    tx.commit().await?;
    changed(state, &owner);
    let event = match to {
        DesiredState::Live => BroadcastEvent::Started,
        _ => BroadcastEvent::Ended,
    };
    state
        .hub
        .publish(Event::Broadcast {
            broadcast_id: b.id,
            event,
        })
        .await;
    Ok(())
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewDestination {
    /// Unique within the broadcast; lowercase letters, digits and '-'.
    pub name: String,
    pub kind: DestinationKind,
    /// rtmp:// or rtmps:// ingest URL, without the key.
    pub url: String,
    /// Write-only: stored encrypted, shown back only as its last four characters.
    pub stream_key: String,
    #[serde(default)]
    pub enabled: Option<bool>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateBroadcast {
    pub title: String,
    #[serde(default)]
    pub description: Option<String>,
    /// RFC 3339.
    #[serde(default)]
    pub scheduled_start: Option<String>,
    #[serde(default)]
    pub recording: Option<bool>,
    #[serde(default)]
    pub output: Option<OutputSpec>,
    #[serde(default)]
    pub layout: Option<Layout>,
    #[serde(default)]
    pub hls: Option<HlsSpec>,
    #[serde(default)]
    pub ingest: Option<IngestSpec>,
    #[serde(default)]
    pub max_guests: Option<u8>,
    #[serde(default)]
    pub destinations: Vec<NewDestination>,
}

/// Fields left out stay as they are; an empty `scheduledStart` clears it.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateBroadcast {
    pub title: Option<String>,
    pub description: Option<String>,
    pub scheduled_start: Option<String>,
    pub recording: Option<bool>,
    pub output: Option<OutputSpec>,
    pub layout: Option<Layout>,
    pub hls: Option<HlsSpec>,
    pub ingest: Option<IngestSpec>,
    pub max_guests: Option<u8>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationView {
    pub id: String,
    pub name: String,
    pub kind: DestinationKind,
    pub url: String,
    pub enabled: bool,
    /// Masked, e.g. "••••1234"; the key itself is never sent back.
    pub stream_key: String,
    pub created_at: String,
}

/// One condition of the Broadcast's status.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConditionView {
    #[serde(rename = "type")]
    pub type_: String,
    /// True, False or Unknown.
    pub status: String,
    /// Machine-readable: Ready, Creating, EncoderUnavailable, DestinationsFailing, …
    pub reason: String,
    pub message: String,
    pub last_transition_time: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BroadcastView {
    pub id: String,
    /// The object name in Kubernetes (and of the embedded workers).
    pub name: String,
    pub title: String,
    pub description: String,
    /// What the host asked for.
    pub state: DesiredState,
    /// What the reconciler observed; absent until it reports.
    pub phase: Option<Phase>,
    /// What is wrong, when something is (`EncoderUnavailable: ffmpeg not found …`): what the
    /// studio shows in its banner.
    pub message: Option<String>,
    /// The reconciler's conditions (SfuReady, CompositorReady, DestinationsHealthy), as the
    /// Broadcast's status has them.
    pub conditions: Vec<ConditionView>,
    pub recording: bool,
    pub output: OutputSpec,
    pub layout: Layout,
    pub hls: HlsSpec,
    pub ingest: IngestSpec,
    pub max_guests: u8,
    pub scheduled_start: Option<String>,
    pub destinations: Vec<DestinationView>,
    /// Per-destination health as last reported (live, retrying, failed, bitrate).
    pub destination_status: Vec<DestinationStatus>,
    pub endpoints: Option<Endpoints>,
    pub started_at: Option<String>,
    pub ended_at: Option<String>,
    pub created_at: String,
    pub updated_at: String,
    pub watch_url: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InviteView {
    pub token: String,
    /// Open this in a browser to join the studio as a guest.
    pub url: String,
    pub expires_at: String,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DestinationTestResult {
    pub ok: bool,
    /// Time to complete the RTMP handshake.
    pub latency_ms: Option<u64>,
    pub error: Option<String>,
    /// What kind of failure `error` is: the same a live show would report (Tls with the reason
    /// for an untrusted, mismatched or expired certificate).
    pub error_kind: Option<castyard_crd::DestinationErrorKind>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Page {
    /// 1 to 100, default 50.
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

fn valid_stream_key(key: &str) -> Result<()> {
    let n = key.chars().count();
    if n == 0 || n > 512 || key.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Error::validation(
            "streamKey must be 1 to 512 characters without spaces",
        ));
    }
    Ok(())
}

/// The stored form of a broadcast: the spec without destinations, which have their own rows.
#[derive(Clone)]
pub(crate) struct Stored {
    id: String,
    pub(crate) name: String,
    spec: BroadcastSpec,
    started_at: Option<i64>,
    ended_at: Option<i64>,
    created_at: i64,
    updated_at: i64,
}

#[derive(Clone)]
struct StoredDestination {
    id: String,
    dest: Destination,
    sealed_key: String,
    last4: String,
    created_at: i64,
}

const COLUMNS: &str = "id, name, spec, started_at, ended_at, created_at, updated_at";

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

pub(crate) async fn load_owned(
    conn: &mut AnyConnection,
    user: &AuthUser,
    id: &str,
) -> Result<Stored> {
    user.require_host()?;
    let id = parse_id(id, "broadcast")?;
    let row = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM broadcasts WHERE id = $1 AND owner_id = $2"
    ))
    .bind(&id)
    .bind(&user.id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or(Error::NotFound("broadcast"))?;
    stored(&row)
}

const DEST_COLUMNS: &str =
    "id, broadcast_id, name, kind, url, key_ciphertext, key_last4, enabled, created_at";

/// All of one host's broadcasts with their destinations, newest first: what the read cache holds.
pub struct OwnerBroadcasts {
    items: Vec<(Stored, Vec<StoredDestination>)>,
    /// Each item as the list endpoint renders it (no status), so a page is a concatenation.
    list_json: Vec<String>,
    by_id: std::collections::HashMap<String, usize>,
}

/// An owner's broadcasts, newest first, with their destinations: all of them, or one page.
/// Two queries whatever the page size (never one per broadcast).
async fn load_owner(
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

async fn load_all(
    state: &AppState,
    conn: &mut AnyConnection,
    owner: &str,
) -> Result<OwnerBroadcasts> {
    let items = load_owner(conn, owner, None).await?;
    let list_json = items
        .iter()
        .map(|(b, d)| {
            serde_json::to_string(&render(state, b.clone(), d.clone(), Default::default()))
        })
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::from)?;
    let by_id = items
        .iter()
        .enumerate()
        .map(|(i, (b, _))| (b.id.clone(), i))
        .collect();
    Ok(OwnerBroadcasts {
        items,
        list_json,
        by_id,
    })
}

/// The owner's broadcasts from the read cache (SQLite), or None where there is no cache.
async fn cached(state: &AppState, owner: &str) -> Result<Option<std::sync::Arc<OwnerBroadcasts>>> {
    let Some(cache) = &state.broadcasts else {
        return Ok(None);
    };
    match cache.get(owner) {
        Ok(hit) => Ok(Some(hit)),
        Err(ticket) => {
            let mut conn = state.db.pool.acquire().await?;
            let all = load_all(state, &mut conn, owner).await?;
            Ok(Some(cache.fill(owner, ticket, all)))
        }
    }
}

/// Called after every committed change to an owner's broadcasts or destinations.
fn changed(state: &AppState, owner: &str) {
    if let Some(cache) = &state.broadcasts {
        cache.invalidate(owner);
    }
}

async fn load_destinations(
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

/// The full desired broadcast: spec with destinations pointing at the keys Secret, plus the keys.
fn desired(
    state: &AppState,
    b: &Stored,
    dests: &[StoredDestination],
    control_token: castyard_proto::ControlToken,
) -> Result<DesiredBroadcast> {
    let secret = keys_secret_name(&b.name);
    let mut spec = b.spec.clone();
    let mut stream_keys = BTreeMap::new();
    spec.destinations = dests
        .iter()
        .map(|d| {
            let mut dest = d.dest.clone();
            dest.stream_key_secret_ref = SecretKeyRef {
                name: secret.clone(),
                key: dest.name.clone(),
            };
            let key = state.keys.decrypt(&d.id, &d.sealed_key)?;
            stream_keys.insert(dest.name.clone(), StreamKey(key));
            Ok(dest)
        })
        .collect::<anyhow::Result<_>>()?;
    Ok(DesiredBroadcast {
        name: b.name.clone(),
        spec,
        stream_keys,
        control_token,
    })
}

/// The Broadcast custom resource's name (and the label on its workers' metrics).
pub fn resource_name(id: &str) -> String {
    format!("bc-{id}")
}

/// Hands every broadcast not yet ended to the backend again, as at start-up in embedded mode,
/// where the workers went away with the previous process. Returns how many.
pub async fn resync(state: &AppState) -> Result<usize> {
    let mut conn = state.db.pool.acquire().await?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM broadcasts WHERE ended_at IS NULL"
    ))
    .fetch_all(&mut *conn)
    .await?;
    let mut n = 0;
    for row in &rows {
        let b = stored(row)?;
        if b.spec.state == castyard_crd::DesiredState::Ended {
            continue;
        }
        apply(state, &mut conn, &b).await?;
        n += 1;
    }
    Ok(n)
}

/// Hands the broadcast to the backend; returns the destinations it read, for the reply.
async fn apply(
    state: &AppState,
    conn: &mut AnyConnection,
    b: &Stored,
) -> Result<Vec<StoredDestination>> {
    let dests = load_destinations(conn, &b.id).await?;
    let token = crate::control::token(state, conn, &b.id).await?;
    let d = desired(state, b, &dests, token)?;
    state.backend.apply(&d).await.map_err(Error::Backend)?;
    Ok(dests)
}

async fn view(
    state: &AppState,
    conn: &mut AnyConnection,
    b: Stored,
    with_status: bool,
) -> Result<BroadcastView> {
    let dests = load_destinations(conn, &b.id).await?;
    let status = if with_status {
        observed(state, &b.name).await
    } else {
        Default::default()
    };
    Ok(render(state, b, dests, status))
}

/// The reconciler's last report. Informational: an unreachable backend must not hide the broadcast.
async fn observed(state: &AppState, name: &str) -> castyard_crd::BroadcastStatus {
    state
        .backend
        .status(name)
        .await
        .unwrap_or_else(|e| {
            tracing::warn!(error = %e, broadcast = %name, "status unavailable");
            None
        })
        .unwrap_or_default()
}

fn render(
    state: &AppState,
    b: Stored,
    dests: Vec<StoredDestination>,
    status: castyard_crd::BroadcastStatus,
) -> BroadcastView {
    let s = b.spec;
    BroadcastView {
        watch_url: format!("{}/watch/{}", state.settings.public_url, b.id),
        id: b.id,
        name: b.name,
        title: s.title,
        description: s.description,
        state: s.state,
        phase: status.phase,
        message: status.message,
        conditions: status
            .conditions
            .into_iter()
            .map(|c| ConditionView {
                type_: c.type_,
                status: c.status,
                reason: c.reason,
                message: c.message,
                last_transition_time: c.last_transition_time.0.to_string(),
            })
            .collect(),
        recording: s.recording,
        output: s.output,
        layout: s.layout,
        hls: s.hls,
        ingest: s.ingest,
        max_guests: s.max_guests,
        scheduled_start: s.scheduled_start,
        destinations: dests
            .into_iter()
            .map(|d| DestinationView {
                id: d.id,
                name: d.dest.name,
                kind: d.dest.kind,
                url: d.dest.url,
                enabled: d.dest.enabled,
                stream_key: format!("••••{}", d.last4),
                created_at: rfc3339(d.created_at),
            })
            .collect(),
        destination_status: status.destinations,
        endpoints: status.endpoints,
        started_at: b.started_at.map(rfc3339),
        ended_at: b.ended_at.map(rfc3339),
        created_at: rfc3339(b.created_at),
        updated_at: rfc3339(b.updated_at),
    }
}

fn check_spec(spec: &BroadcastSpec, dest_count: usize) -> Result<()> {
    if dest_count > castyard_crd::MAX_DESTINATIONS {
        return Err(Error::validation(format!(
            "at most {} destinations",
            castyard_crd::MAX_DESTINATIONS
        )));
    }
    validate_spec(spec).map_err(Error::Validation)
}

async fn insert_destination(
    state: &AppState,
    conn: &mut AnyConnection,
    broadcast_id: &str,
    d: &NewDestination,
) -> Result<String> {
    valid_stream_key(&d.stream_key)?;
    let id = new_id();
    let sealed = state.keys.encrypt(&id, &d.stream_key);
    let last4: String = mask(&d.stream_key).trim_start_matches('•').to_owned();
    sqlx::query(
        "INSERT INTO destinations (id, broadcast_id, name, kind, url, key_ciphertext, key_last4, enabled, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(&id)
    .bind(broadcast_id)
    .bind(&d.name)
    .bind(serde_json::to_value(d.kind).map_err(anyhow::Error::from)?.as_str().unwrap_or("custom"))
    .bind(&d.url)
    .bind(&sealed)
    .bind(&last4)
    .bind(i64::from(d.enabled.unwrap_or(true)))
    .bind(now_ms())
    .execute(&mut *conn)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(db) if db.is_unique_violation() => {
            Error::Conflict(format!("a destination named {:?} already exists", d.name))
        }
        e => e.into(),
    })?;
    Ok(id)
}

fn spec_destination(d: &NewDestination) -> Destination {
    Destination {
        name: d.name.clone(),
        kind: d.kind,
        url: d.url.clone(),
        stream_key_secret_ref: SecretKeyRef {
            name: "pending".into(),
            key: d.name.clone(),
        },
        enabled: d.enabled.unwrap_or(true),
    }
}

/// The signed-in host's broadcasts, newest first.
#[utoipa::path(get, path = "/", operation_id = "list_broadcasts", tag = "broadcasts", security(("bearer" = [])), params(Page),
    responses((status = 200, body = Vec<BroadcastView>), (status = 401, body = ErrorBody)))]
async fn list(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(page): QueryParams<Page>,
) -> Result<Response> {
    user.require_host()?;
    let limit = page.limit.unwrap_or(50);
    let offset = page.offset.unwrap_or(0);
    if !(1..=100).contains(&limit) || offset < 0 {
        return Err(Error::BadRequest(
            "limit must be 1 to 100 and offset at least 0".into(),
        ));
    }
    if let Some(all) = cached(&state, &user.id).await? {
        let page: Vec<&str> = all
            .list_json
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(String::as_str)
            .collect();
        let body = format!("[{}]", page.join(","));
        return Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response());
    }
    let mut conn = state.db.pool.acquire().await?;
    let views: Vec<BroadcastView> = load_owner(&mut conn, &user.id, Some((limit, offset)))
        .await?
        .into_iter()
        .map(|(b, dests)| render(&state, b, dests, Default::default()))
        .collect();
    Ok(Json(views).into_response())
}

/// Create a broadcast (Backstage) with its destinations.
#[utoipa::path(post, path = "/", tag = "broadcasts", security(("bearer" = [])), request_body = CreateBroadcast,
    responses((status = 201, body = BroadcastView), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 502, body = ErrorBody)))]
async fn create(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<CreateBroadcast>,
) -> Result<(StatusCode, Json<BroadcastView>)> {
    user.require_host()?;
    let mut spec: BroadcastSpec = serde_json::from_value(serde_json::json!({ "title": req.title }))
        .map_err(anyhow::Error::from)?;
    spec.description = req.description.unwrap_or_default();
    spec.scheduled_start = req.scheduled_start.filter(|s| !s.is_empty());
    spec.recording = req.recording.unwrap_or(false);
    if let Some(o) = req.output {
        spec.output = o;
    }
    if let Some(l) = req.layout {
        spec.layout = l;
    }
    if let Some(h) = req.hls {
        spec.hls = h;
    }
    if let Some(i) = req.ingest {
        spec.ingest = i;
    }
    if let Some(m) = req.max_guests {
        spec.max_guests = m;
    }
    spec.destinations = req.destinations.iter().map(spec_destination).collect();
    check_spec(&spec, req.destinations.len())?;
    for d in &req.destinations {
        valid_stream_key(&d.stream_key)?;
    }
    spec.destinations.clear();

    let id = new_id();
    let now = now_ms();
    let b = Stored {
        name: resource_name(&id),
        id,
        spec,
        started_at: None,
        ended_at: None,
        created_at: now,
        updated_at: now,
    };
    let mut tx = state.db.writer.begin().await?;
    let (_, control_token) = crate::control::new_sealed(&state, &b.id);
    sqlx::query("INSERT INTO broadcasts (id, owner_id, name, title, state, spec, created_at, updated_at, control_token) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)")
        .bind(&b.id)
        .bind(&user.id)
        .bind(&b.name)
        .bind(&b.spec.title)
        .bind(state_str(b.spec.state))
        .bind(serde_json::to_string(&b.spec).map_err(anyhow::Error::from)?)
        .bind(now)
        .bind(now)
        .bind(control_token)
        .execute(&mut *tx)
        .await?;
    for d in &req.destinations {
        insert_destination(&state, &mut tx, &b.id, d).await?;
    }
    let dests = match apply(&state, &mut tx, &b).await {
        Ok(d) => d,
        Err(e) => {
            // The backend may have applied part of it; take that back before reporting.
            let _ = state.backend.delete(&b.name).await;
            return Err(e);
        }
    };
    let v = render(&state, b, dests, Default::default());
    tx.commit().await?;
    changed(&state, &user.id);
    Ok((StatusCode::CREATED, Json(v)))
}

fn state_str(s: DesiredState) -> &'static str {
    match s {
        DesiredState::Backstage => "Backstage",
        DesiredState::Live => "Live",
        DesiredState::Ended => "Ended",
    }
}

/// One broadcast, with the reconciler's latest status.
#[utoipa::path(get, path = "/{id}", operation_id = "get_broadcast", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<BroadcastView>> {
    user.require_host()?;
    if let Some(all) = cached(&state, &user.id).await? {
        let id = parse_id(&id, "broadcast")?;
        let (b, d) = all
            .by_id
            .get(&id)
            .map(|&i| &all.items[i])
            .ok_or(Error::NotFound("broadcast"))?;
        let status = observed(&state, &b.name).await;
        return Ok(Json(render(&state, b.clone(), d.clone(), status)));
    }
    let mut conn = state.db.pool.acquire().await?;
    let b = load_owned(&mut conn, &user, &id).await?;
    Ok(Json(view(&state, &mut conn, b, true).await?))
}

/// Change a broadcast's settings; not allowed once it has ended.
#[utoipa::path(patch, path = "/{id}", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])), request_body = UpdateBroadcast,
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(req): JsonBody<UpdateBroadcast>,
) -> Result<Json<BroadcastView>> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = load_owned(&mut tx, &user, &id).await?;
    if b.spec.state == DesiredState::Ended {
        return Err(Error::Conflict(
            "the broadcast has ended and can no longer be changed".into(),
        ));
    }
    let s = &mut b.spec;
    if let Some(v) = req.title {
        s.title = v;
    }
    if let Some(v) = req.description {
        s.description = v;
    }
    if let Some(v) = req.scheduled_start {
        s.scheduled_start = Some(v).filter(|v| !v.is_empty());
    }
    if let Some(v) = req.recording {
        s.recording = v;
    }
    if let Some(v) = req.output {
        s.output = v;
    }
    if let Some(v) = req.layout {
        s.layout = v;
    }
    if let Some(v) = req.hls {
        s.hls = v;
    }
    if let Some(v) = req.ingest {
        s.ingest = v;
    }
    if let Some(v) = req.max_guests {
        s.max_guests = v;
    }
    check_spec(s, 0)?;
    let dests = save(&state, &mut tx, &mut b).await?;
    let v = render(&state, b, dests, Default::default());
    tx.commit().await?;
    changed(&state, &user.id);
    state
        .hub
        .publish(Event::Broadcast {
            broadcast_id: v.id.clone(),
            event: BroadcastEvent::Updated,
        })
        .await;
    Ok(Json(v))
}

/// Stores the broadcast and applies it; returns its destinations as `apply` does.
async fn save(
    state: &AppState,
    conn: &mut AnyConnection,
    b: &mut Stored,
) -> Result<Vec<StoredDestination>> {
    store(conn, b).await?;
    apply(state, conn, b).await
}

/// Writes the broadcast's row, without telling the backend.
async fn store(conn: &mut AnyConnection, b: &mut Stored) -> Result<()> {
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

/// Moves the broadcast to `to`, stamping when it first went live and when it ended.
fn enter(b: &mut Stored, to: DesiredState) {
    b.spec.state = to;
    let now = now_ms();
    match to {
        DesiredState::Live => b.started_at = b.started_at.or(Some(now)),
        DesiredState::Ended => b.ended_at = Some(now),
        DesiredState::Backstage => {}
    }
}

/// Delete a broadcast, its workers and its destinations. Recordings are kept.
#[utoipa::path(delete, path = "/{id}", operation_id = "delete_broadcast", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody), (status = 502, body = ErrorBody)))]
async fn remove(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode> {
    let mut tx = state.db.writer.begin().await?;
    let b = load_owned(&mut tx, &user, &id).await?;
    sqlx::query("DELETE FROM broadcasts WHERE id = $1")
        .bind(&b.id)
        .execute(&mut *tx)
        .await?;
    state
        .backend
        .delete(&b.name)
        .await
        .map_err(Error::Backend)?;
    tx.commit().await?;
    changed(&state, &user.id);
    Ok(StatusCode::NO_CONTENT)
}

async fn transition(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    to: DesiredState,
) -> Result<BroadcastView> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = load_owned(&mut tx, user, id).await?;
    let from = b.spec.state;
    if from == DesiredState::Ended && to != DesiredState::Ended {
        return Err(Error::Conflict(
            "an ended broadcast cannot be started again".into(),
        ));
    }
    // Refused before anything starts: a compositor without FFmpeg would only crash-loop.
    if to == DesiredState::Live
        && from != to
        && let Some(why) = &state.settings.cannot_go_live
    {
        return Err(Error::Conflict(format!(
            "this server cannot go live: {why}"
        )));
    }
    if from != to {
        enter(&mut b, to);
    }
    let v = if from != to {
        let dests = save(state, &mut tx, &mut b).await?;
        render(state, b, dests, Default::default())
    } else {
        view(state, &mut tx, b, false).await?
    };
    tx.commit().await?;
    changed(state, &user.id);
    if from != to {
        let event = if to == DesiredState::Live {
            BroadcastEvent::Started
        } else {
            BroadcastEvent::Ended
        };
        state
            .hub
            .publish(Event::Broadcast {
                broadcast_id: v.id.clone(),
                event,
            })
            .await;
    }
    Ok(v)
}

/// Go live: the compositor starts and sends to every enabled destination.
#[utoipa::path(post, path = "/{id}/start", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody, description = "the broadcast has ended, or this server cannot go live (its FFmpeg is missing or unable: the message says how to fix it)")))]
async fn start(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<BroadcastView>> {
    transition(&state, &user, &id, DesiredState::Live)
        .await
        .map(Json)
}

/// End the show: outputs are finalized and the workers stop. Final.
#[utoipa::path(post, path = "/{id}/end", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 200, body = BroadcastView), (status = 404, body = ErrorBody)))]
async fn end(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<Json<BroadcastView>> {
    transition(&state, &user, &id, DesiredState::Ended)
        .await
        .map(Json)
}

/// A signed, expiring link that lets a guest join this broadcast's studio.
#[utoipa::path(post, path = "/{id}/invites", params(crate::routes::IdPath), tag = "broadcasts", security(("bearer" = [])),
    responses((status = 201, body = InviteView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn invite(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<(StatusCode, Json<InviteView>)> {
    let mut conn = state.db.pool.acquire().await?;
    let b = load_owned(&mut conn, &user, &id).await?;
    if b.spec.state == DesiredState::Ended {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    let mut c = claims(&user.id, TokenKind::Invite, state.settings.invite_ttl);
    c.bid = Some(b.id.clone());
    let token = state.jwt.issue(&c);
    Ok((
        StatusCode::CREATED,
        Json(InviteView {
            url: format!(
                "{}/join/{}?invite={}",
                state.settings.public_url, b.id, token
            ),
            token,
            expires_at: rfc3339(c.exp * 1000),
        }),
    ))
}

/// Add a destination; while live it starts receiving the show at once.
#[utoipa::path(post, path = "/{id}/destinations", params(crate::routes::IdPath), tag = "destinations", security(("bearer" = [])), request_body = NewDestination,
    responses((status = 201, body = DestinationView), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn add_destination(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(req): JsonBody<NewDestination>,
) -> Result<(StatusCode, Json<DestinationView>)> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = load_owned(&mut tx, &user, &id).await?;
    if b.spec.state == DesiredState::Ended {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    let existing = load_destinations(&mut tx, &b.id).await?;
    if existing.iter().any(|d| d.dest.name == req.name) {
        return Err(Error::Conflict(format!(
            "a destination named {:?} already exists",
            req.name
        )));
    }
    let mut spec = b.spec.clone();
    spec.destinations = existing
        .iter()
        .map(|d| d.dest.clone())
        .chain([spec_destination(&req)])
        .collect();
    check_spec(&spec, spec.destinations.len())?;
    let dest_id = insert_destination(&state, &mut tx, &b.id, &req).await?;
    let dests = save(&state, &mut tx, &mut b).await?;
    let v = render(&state, b, dests, Default::default());
    tx.commit().await?;
    changed(&state, &user.id);
    let d = v
        .destinations
        .into_iter()
        .find(|d| d.id == dest_id)
        .ok_or_else(|| anyhow::anyhow!("inserted destination vanished"))?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// Remove a destination; the others are not touched.
#[utoipa::path(delete, path = "/{id}/destinations/{dest_id}", params(crate::routes::DestinationPath), tag = "destinations", security(("bearer" = [])),
    responses((status = 204), (status = 404, body = ErrorBody)))]
async fn remove_destination(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams((id, dest_id)): PathParams<(String, String)>,
) -> Result<StatusCode> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = load_owned(&mut tx, &user, &id).await?;
    let dest_id = parse_id(&dest_id, "destination")?;
    let gone = sqlx::query("DELETE FROM destinations WHERE id = $1 AND broadcast_id = $2")
        .bind(&dest_id)
        .bind(&b.id)
        .execute(&mut *tx)
        .await?;
    if gone.rows_affected() == 0 {
        return Err(Error::NotFound("destination"));
    }
    save(&state, &mut tx, &mut b).await?;
    tx.commit().await?;
    changed(&state, &user.id);
    Ok(StatusCode::NO_CONTENT)
}

/// Check that the destination's server answers an RTMP handshake (the key is not sent).
#[utoipa::path(post, path = "/{id}/destinations/{dest_id}/test", params(crate::routes::DestinationPath), tag = "destinations", security(("bearer" = [])),
    responses((status = 200, body = DestinationTestResult), (status = 404, body = ErrorBody)))]
async fn test_destination(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams((id, dest_id)): PathParams<(String, String)>,
) -> Result<Json<DestinationTestResult>> {
    let mut conn = state.db.pool.acquire().await?;
    let b = load_owned(&mut conn, &user, &id).await?;
    let dest_id = parse_id(&dest_id, "destination")?;
    let url: String =
        sqlx::query("SELECT url FROM destinations WHERE id = $1 AND broadcast_id = $2")
            .bind(&dest_id)
            .bind(&b.id)
            .fetch_optional(&mut *conn)
            .await?
            .ok_or(Error::NotFound("destination"))?
            .try_get("url")?;
    drop(conn);
    validate_rtmp_url(&url).map_err(Error::Validation)?;
    let result = match crate::rtmp_probe::handshake(&url, state.settings.rtmp_probe_timeout).await {
        Ok(d) => DestinationTestResult {
            ok: true,
            latency_ms: Some(d.as_millis() as u64),
            error: None,
            error_kind: None,
        },
        Err(f) => DestinationTestResult {
            ok: false,
            latency_ms: None,
            error: Some(f.message),
            error_kind: Some(f.kind),
        },
    };
    Ok(Json(result))
}
