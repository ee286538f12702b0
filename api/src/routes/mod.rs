//! The HTTP routes, one module per area; each exposes a `router()`.

pub mod auth;
pub mod broadcasts;
pub mod recordings;
pub mod scene;
pub mod status;
pub mod studio;
pub mod uploads;
pub mod ws;
