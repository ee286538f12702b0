//! The media worker's roles and what they share; `main.rs` only parses the command line.
#![forbid(unsafe_code)]

pub mod bot;
pub mod compositor;
pub mod control_auth;
pub mod flv;
pub mod ingest;
pub mod llhls;
pub mod metrics;
pub mod preflight;
pub mod remux;
pub mod rtmp_out;
pub mod sfu;
#[doc(hidden)]
pub mod testkit;
pub mod tls;
