//! The SFU role: a WebRTC studio for a host and guests on one UDP port (str0m, ICE-lite).
//! Layers point one way: `forward` (media) <- `room` (people) <- `server` (sockets, HTTP).

pub mod estimate;
pub mod forward;
pub mod io;
pub mod layers;
pub mod room;
pub mod server;
/// The signalling protocol lives in `castyard-proto`: the API relays it and the studio speaks it.
pub use castyard_proto::signal;
pub mod speaker;
pub mod tap;
