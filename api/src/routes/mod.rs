//! The HTTP routes, one module per area; each exposes a `router()`.

pub mod auth;
pub mod broadcasts;
pub mod recordings;
pub mod scene;
pub mod status;
pub mod studio;
pub mod uploads;
pub mod ws;

/// The path parameter of every `/{id}` route: the OpenAPI document must declare it, or
/// generated clients and fuzzers cannot call the operation.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct IdPath {
    /// The id (a UUID) of the broadcast, recording, stream or upload the path names.
    #[param(format = Uuid)]
    #[allow(dead_code)]
    id: String,
}

/// The path parameters of a broadcast's destination.
#[derive(utoipa::IntoParams)]
#[into_params(parameter_in = Path)]
pub struct DestinationPath {
    /// The broadcast's id.
    #[param(format = Uuid)]
    #[allow(dead_code)]
    id: String,
    /// The destination's id.
    #[param(format = Uuid)]
    #[allow(dead_code)]
    dest_id: String,
}
