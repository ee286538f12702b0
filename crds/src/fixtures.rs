//! Chained Broadcast builders for tests: `Broadcast::test().live().with_destination(..)`.

use crate::{
    Broadcast, BroadcastSpec, DesiredState, Destination, DestinationKind, Resolution, SecretKeyRef,
};

impl Broadcast {
    /// A minimal Backstage broadcast named "show" in namespace "default".
    pub fn test() -> Self {
        let spec: BroadcastSpec =
            serde_json::from_value(serde_json::json!({ "title": "Test show" })).expect("spec");
        let mut b = Broadcast::new("show", spec);
        b.metadata.namespace = Some("default".into());
        b.metadata.uid = Some("4f1c2a4e-0000-4000-8000-000000000001".into());
        b.metadata.generation = Some(1);
        b
    }
    pub fn named(mut self, name: &str) -> Self {
        self.metadata.name = Some(name.into());
        self
    }
    pub fn in_namespace(mut self, ns: &str) -> Self {
        self.metadata.namespace = Some(ns.into());
        self
    }
    pub fn live(mut self) -> Self {
        self.spec.state = DesiredState::Live;
        self
    }
    pub fn ended(mut self) -> Self {
        self.spec.state = DesiredState::Ended;
        self
    }
    pub fn recording(mut self) -> Self {
        self.spec.recording = true;
        self
    }
    pub fn max_guests(mut self, n: u8) -> Self {
        self.spec.max_guests = n;
        self
    }
    pub fn resolution(mut self, r: Resolution) -> Self {
        self.spec.output.resolution = r;
        self
    }
    pub fn with_destination(mut self, name: &str, url: &str) -> Self {
        self.spec
            .destinations
            .push(test_destination(name, url, true));
        self
    }
    pub fn with_disabled_destination(mut self, name: &str, url: &str) -> Self {
        self.spec
            .destinations
            .push(test_destination(name, url, false));
        self
    }
}

fn test_destination(name: &str, url: &str, enabled: bool) -> Destination {
    Destination {
        name: name.into(),
        kind: DestinationKind::Custom,
        url: url.into(),
        stream_key_secret_ref: SecretKeyRef {
            name: "show-stream-keys".into(),
            key: name.into(),
        },
        enabled,
    }
}
