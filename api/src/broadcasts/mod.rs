//! The broadcasts domain: SQL in `store`, the rules in `service`, the JSON shapes and the read
//! cache in `view`. Routes parse, call the service and answer.

pub mod service;
pub mod store;
pub mod view;

/// The Broadcast custom resource's name (and the label on its workers' metrics).
pub fn resource_name(id: &str) -> String {
    format!("bc-{id}")
}
