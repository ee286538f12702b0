//! Every type that crosses a Castyard process boundary, and the one client for worker control ports.
//!
//! Roles (API, operator, SFU, compositor) import this crate and never each other: a change to
//! the wire is a change here, seen by both sides at compile time.
#![forbid(unsafe_code)]

pub mod client;
pub mod error;
pub mod manifest;
pub mod scene;
pub mod signal;
pub mod stage;
pub mod status;
pub mod termination;
pub mod token;

pub use client::{CallError, WorkerClient};
pub use error::ErrorBody;
pub use token::{AuthError, ControlToken};
