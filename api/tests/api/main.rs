//! API integration tests: every endpoint through `oneshot`, on SQLite and PostgreSQL.

mod common;

mod auth;
mod broadcasts;
mod cli;
mod files;
mod first_run;
mod fuzz;
mod ingest;
mod kubernetes;
mod layout;
mod metrics_catalog;
mod realtime;
mod secrets;
mod service;
mod sockets;
mod studio;
