//! The rules of a broadcast's life: who may change it, what a change must satisfy, the
//! transitions Backstage -> Live -> Ended, and handing the result to the backend. Every change
//! is stored and handed to the backend in one step, so a refused backend call leaves the
//! database unchanged.

use std::collections::BTreeMap;

use castyard_crd::validate::{validate_rtmp_url, validate_spec};
use castyard_crd::{
    BroadcastSpec, DesiredState, Destination, DestinationKind, HlsSpec, IngestSpec, Layout,
    OutputSpec, SecretKeyRef,
};
use serde::Deserialize;
use sqlx::AnyConnection;
use utoipa::ToSchema;

use super::resource_name;
use super::store::{self, Stored, StoredDestination};
use super::view::{
    self, BroadcastView, DestinationTestResult, DestinationView, IngestKeyView, InviteView,
};
use crate::auth::{AuthUser, TokenKind, claims};
use crate::backend::{DesiredBroadcast, StreamKey, keys_secret_name};
use crate::crypto::mask;
use crate::db::{new_id, now_ms, rfc3339};
use crate::error::{Error, Result, parse_id};
use crate::realtime::{BroadcastEvent, Event};
use crate::state::AppState;

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

/// The host's own broadcast `id`, or 404 (403 for a guest or viewer).
pub async fn owned(conn: &mut AnyConnection, user: &AuthUser, id: &str) -> Result<Stored> {
    user.require_host()?;
    let id = parse_id(id, "broadcast")?;
    store::load_owned(conn, &user.id, &id).await
}

/// One page of the host's broadcasts, newest first, as a JSON array (the cache keeps each
/// item rendered).
pub async fn list(state: &AppState, user: &AuthUser, limit: i64, offset: i64) -> Result<String> {
    user.require_host()?;
    if !(1..=100).contains(&limit) || offset < 0 {
        return Err(Error::BadRequest(
            "limit must be 1 to 100 and offset at least 0".into(),
        ));
    }
    if let Some(all) = cached(state, &user.id).await? {
        let page: Vec<&str> = all
            .list_json
            .iter()
            .skip(offset as usize)
            .take(limit as usize)
            .map(String::as_str)
            .collect();
        return Ok(format!("[{}]", page.join(",")));
    }
    let mut conn = state.db.pool.acquire().await?;
    let views: Vec<BroadcastView> = store::load_owner(&mut conn, &user.id, Some((limit, offset)))
        .await?
        .into_iter()
        .map(|(b, dests)| view::render(&state.settings.public_url, b, dests, Default::default()))
        .collect();
    Ok(serde_json::to_string(&views).map_err(anyhow::Error::from)?)
}

/// One broadcast with the reconciler's latest status.
pub async fn get(state: &AppState, user: &AuthUser, id: &str) -> Result<BroadcastView> {
    user.require_host()?;
    if let Some(all) = cached(state, &user.id).await? {
        let id = parse_id(id, "broadcast")?;
        let (b, d) = all
            .by_id
            .get(&id)
            .map(|&i| &all.items[i])
            .ok_or(Error::NotFound("broadcast"))?;
        let status = observed(state, &b.name).await;
        return Ok(view::render(
            &state.settings.public_url,
            b.clone(),
            d.clone(),
            status,
        ));
    }
    let mut conn = state.db.pool.acquire().await?;
    let b = owned(&mut conn, user, id).await?;
    let dests = store::load_destinations(&mut conn, &b.id).await?;
    let status = observed(state, &b.name).await;
    Ok(view::render(&state.settings.public_url, b, dests, status))
}

/// A new broadcast (Backstage) with its destinations, handed to the backend.
pub async fn create(
    state: &AppState,
    user: &AuthUser,
    req: CreateBroadcast,
) -> Result<BroadcastView> {
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
    let (_, control_token) = crate::control::new_sealed(state, &b.id);
    store::insert(&mut tx, &b, &user.id, &control_token).await?;
    for d in &req.destinations {
        insert_destination(state, &mut tx, &b.id, d).await?;
    }
    let dests = match apply(state, &mut tx, &b).await {
        Ok(d) => d,
        Err(e) => {
            // The backend may have applied part of it; take that back before reporting.
            let _ = state.backend.delete(&b.name).await;
            return Err(e);
        }
    };
    let v = view::render(&state.settings.public_url, b, dests, Default::default());
    tx.commit().await?;
    changed(state, &user.id);
    Ok(v)
}

/// Changes a broadcast's settings; not allowed once it has ended.
pub async fn update(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    req: UpdateBroadcast,
) -> Result<BroadcastView> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = owned(&mut tx, user, id).await?;
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
    let dests = save(state, &mut tx, &mut b).await?;
    let v = view::render(&state.settings.public_url, b, dests, Default::default());
    tx.commit().await?;
    changed(state, &user.id);
    state
        .hub
        .publish(Event::Broadcast {
            broadcast_id: v.id.clone(),
            event: BroadcastEvent::Updated,
        })
        .await;
    Ok(v)
}

/// Deletes a broadcast, its workers and its destinations. Recordings are kept.
pub async fn remove(state: &AppState, user: &AuthUser, id: &str) -> Result<()> {
    let mut tx = state.db.writer.begin().await?;
    let b = owned(&mut tx, user, id).await?;
    store::delete(&mut tx, &b.id).await?;
    state
        .backend
        .delete(&b.name)
        .await
        .map_err(Error::Backend)?;
    tx.commit().await?;
    changed(state, &user.id);
    Ok(())
}

/// Moves the host's broadcast to `to` (go live, end); the same state again changes nothing.
pub async fn transition(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    to: DesiredState,
) -> Result<BroadcastView> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = owned(&mut tx, user, id).await?;
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
    let dests = if from != to {
        enter(&mut b, to);
        save(state, &mut tx, &mut b).await?
    } else {
        store::load_destinations(&mut tx, &b.id).await?
    };
    let v = view::render(&state.settings.public_url, b, dests, Default::default());
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

/// A signed, expiring link for a guest to join the studio of a broadcast that has not ended.
pub async fn invite(state: &AppState, user: &AuthUser, id: &str) -> Result<InviteView> {
    let mut conn = state.db.pool.acquire().await?;
    let b = owned(&mut conn, user, id).await?;
    if b.spec.state == DesiredState::Ended {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    let mut c = claims(&user.id, TokenKind::Invite, state.settings.invite_ttl);
    c.bid = Some(b.id.clone());
    let token = state.jwt.issue(&c);
    Ok(InviteView {
        url: format!(
            "{}/join/{}?invite={}",
            state.settings.public_url, b.id, token
        ),
        token,
        expires_at: rfc3339(c.exp * 1000),
    })
}

/// Adds a destination; while live it starts receiving the show at once.
pub async fn add_destination(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    req: NewDestination,
) -> Result<DestinationView> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = owned(&mut tx, user, id).await?;
    if b.spec.state == DesiredState::Ended {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    let existing = store::load_destinations(&mut tx, &b.id).await?;
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
    let dest_id = insert_destination(state, &mut tx, &b.id, &req).await?;
    let dests = save(state, &mut tx, &mut b).await?;
    let v = view::render(&state.settings.public_url, b, dests, Default::default());
    tx.commit().await?;
    changed(state, &user.id);
    Ok(v.destinations
        .into_iter()
        .find(|d| d.id == dest_id)
        .ok_or_else(|| anyhow::anyhow!("inserted destination vanished"))?)
}

/// Removes a destination; the others are not touched.
pub async fn remove_destination(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    dest_id: &str,
) -> Result<()> {
    let mut tx = state.db.writer.begin().await?;
    let mut b = owned(&mut tx, user, id).await?;
    let dest_id = parse_id(dest_id, "destination")?;
    store::delete_destination(&mut tx, &b.id, &dest_id).await?;
    save(state, &mut tx, &mut b).await?;
    tx.commit().await?;
    changed(state, &user.id);
    Ok(())
}

/// Whether the destination's server answers an RTMP handshake (the key is not sent).
pub async fn test_destination(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    dest_id: &str,
) -> Result<DestinationTestResult> {
    let mut conn = state.db.pool.acquire().await?;
    let b = owned(&mut conn, user, id).await?;
    let dest_id = parse_id(dest_id, "destination")?;
    let url = store::destination_url(&mut conn, &b.id, &dest_id).await?;
    drop(conn);
    validate_rtmp_url(&url).map_err(Error::Validation)?;
    Ok(
        match crate::rtmp_probe::handshake(&url, state.settings.rtmp_probe_timeout).await {
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
        },
    )
}

/// A new RTMP ingest key (OBS), replacing any previous one: the old key is refused from now
/// on, though a publish already running goes on.
pub async fn new_ingest_key(state: &AppState, user: &AuthUser, id: &str) -> Result<IngestKeyView> {
    let server_url = state
        .settings
        .ingest_url
        .clone()
        .ok_or_else(|| Error::Conflict("this server does not run the RTMP ingest".into()))?;
    let (stream_key, hash) = crate::crypto::new_token();
    set_ingest_key(state, user, id, Some(&hash)).await?;
    Ok(IngestKeyView {
        url: format!("{server_url}/{stream_key}"),
        stream_key,
        server_url,
    })
}

/// Revokes the broadcast's RTMP ingest key.
pub async fn revoke_ingest_key(state: &AppState, user: &AuthUser, id: &str) -> Result<()> {
    set_ingest_key(state, user, id, None).await
}

/// Stores an ingest key's hash (None revokes); only a broadcast that has not ended takes one.
async fn set_ingest_key(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    hash: Option<&str>,
) -> Result<()> {
    let mut tx = state.db.writer.begin().await?;
    let b = owned(&mut tx, user, id).await?;
    if hash.is_some() && b.spec.state == DesiredState::Ended {
        return Err(Error::Conflict("the broadcast has ended".into()));
    }
    store::set_ingest_key_hash(&mut tx, &b.id, hash).await?;
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
    store::load_destinations(&mut conn, id)
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
    let (mut b, owner) = store::load_with_owner(&mut tx, id).await?;
    if b.spec.state == to || b.spec.state == DesiredState::Ended {
        return Ok(());
    }
    enter(&mut b, to);
    store::update(&mut tx, &mut b).await?;
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

/// Hands every broadcast not yet ended to the backend again, as at start-up in embedded mode,
/// where the workers went away with the previous process. Returns how many.
pub async fn resync(state: &AppState) -> Result<usize> {
    let mut conn = state.db.pool.acquire().await?;
    let mut n = 0;
    for b in store::load_unended(&mut conn).await? {
        if b.spec.state == DesiredState::Ended {
            continue;
        }
        apply(state, &mut conn, &b).await?;
        n += 1;
    }
    Ok(n)
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

fn check_spec(spec: &BroadcastSpec, dest_count: usize) -> Result<()> {
    if dest_count > castyard_crd::MAX_DESTINATIONS {
        return Err(Error::validation(format!(
            "at most {} destinations",
            castyard_crd::MAX_DESTINATIONS
        )));
    }
    validate_spec(spec).map_err(Error::Validation)
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

/// Seals the destination's key and stores it; returns its id.
async fn insert_destination(
    state: &AppState,
    conn: &mut AnyConnection,
    broadcast_id: &str,
    d: &NewDestination,
) -> Result<String> {
    valid_stream_key(&d.stream_key)?;
    let id = new_id();
    let row = StoredDestination {
        sealed_key: state.keys.encrypt(&id, &d.stream_key),
        last4: mask(&d.stream_key).trim_start_matches('•').to_owned(),
        dest: spec_destination(d),
        created_at: now_ms(),
        id,
    };
    store::insert_destination(conn, broadcast_id, &row).await?;
    Ok(row.id)
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

/// Stores the broadcast and applies it; returns its destinations as `apply` does.
async fn save(
    state: &AppState,
    conn: &mut AnyConnection,
    b: &mut Stored,
) -> Result<Vec<StoredDestination>> {
    store::update(conn, b).await?;
    apply(state, conn, b).await
}

/// Hands the broadcast to the backend; returns the destinations it read, for the reply.
async fn apply(
    state: &AppState,
    conn: &mut AnyConnection,
    b: &Stored,
) -> Result<Vec<StoredDestination>> {
    let dests = store::load_destinations(conn, &b.id).await?;
    let token = crate::control::token(state, conn, &b.id).await?;
    let d = desired(state, b, &dests, token)?;
    state.backend.apply(&d).await.map_err(Error::Backend)?;
    Ok(dests)
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

/// The owner's broadcasts from the read cache, or None where there is none (Postgres).
async fn cached(
    state: &AppState,
    owner: &str,
) -> Result<Option<std::sync::Arc<view::OwnerBroadcasts>>> {
    let Some(cache) = &state.broadcasts else {
        return Ok(None);
    };
    let all = view::cached(cache, &state.db.pool, &state.settings.public_url, owner).await?;
    Ok(Some(all))
}

/// Called after every committed change to an owner's broadcasts or destinations.
fn changed(state: &AppState, owner: &str) {
    if let Some(cache) = &state.broadcasts {
        cache.invalidate(owner);
    }
}
