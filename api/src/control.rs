//! Each broadcast's control token: made with the broadcast, sealed in the database, and carried
//! to its workers by the one typed client.

use castyard_proto::{ControlToken, WorkerClient};
use sqlx::{AnyConnection, Row as _};

use crate::error::Result;
use crate::state::AppState;

/// The associated data the token is sealed with, so a sealed token moved to another row (or
/// mistaken for a stream key) does not open.
fn aad(broadcast_id: &str) -> String {
    format!("control-token:{broadcast_id}")
}

/// A new token and its sealed form, for a broadcast being created.
pub fn new_sealed(state: &AppState, broadcast_id: &str) -> (ControlToken, String) {
    let token = ControlToken::generate();
    let sealed = state.keys.encrypt(&aad(broadcast_id), token.expose());
    (token, sealed)
}

/// The broadcast's token; one made before tokens existed gets one now (the first writer wins,
/// so two replicas cannot hand out different tokens).
pub async fn token(
    state: &AppState,
    conn: &mut AnyConnection,
    broadcast_id: &str,
) -> Result<ControlToken> {
    let read = |row: sqlx::any::AnyRow| row.try_get::<Option<String>, _>("control_token");
    let select = "SELECT control_token FROM broadcasts WHERE id = $1";
    let sealed = match sqlx::query(select)
        .bind(broadcast_id)
        .fetch_optional(&mut *conn)
        .await?
    {
        None => return Err(crate::error::Error::NotFound("broadcast")),
        Some(row) => read(row)?,
    };
    let sealed = match sealed {
        Some(s) => s,
        None => {
            let (_, fresh) = new_sealed(state, broadcast_id);
            sqlx::query(
                "UPDATE broadcasts SET control_token = $1 WHERE id = $2 AND control_token IS NULL",
            )
            .bind(&fresh)
            .bind(broadcast_id)
            .execute(&mut *conn)
            .await?;
            let row = sqlx::query(select)
                .bind(broadcast_id)
                .fetch_one(&mut *conn)
                .await?;
            read(row)?.unwrap_or(fresh)
        }
    };
    open(state, broadcast_id, &sealed)
}

fn open(state: &AppState, broadcast_id: &str, sealed: &str) -> Result<ControlToken> {
    let text = state.keys.decrypt(&aad(broadcast_id), sealed)?;
    Ok(ControlToken::parse(&text).map_err(anyhow::Error::from)?)
}

/// The client for one broadcast's workers (a read; the writer only for a token still to make).
pub async fn client(state: &AppState, broadcast_id: &str) -> Result<WorkerClient> {
    let row = sqlx::query("SELECT control_token FROM broadcasts WHERE id = $1")
        .bind(broadcast_id)
        .fetch_optional(&state.db.pool)
        .await?
        .ok_or(crate::error::Error::NotFound("broadcast"))?;
    let token = match row.try_get::<Option<String>, _>("control_token")? {
        Some(sealed) => open(state, broadcast_id, &sealed)?,
        None => {
            let mut conn = state.db.writer.acquire().await?;
            token(state, &mut conn, broadcast_id).await?
        }
    };
    Ok(WorkerClient::new(token))
}
