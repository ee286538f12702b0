//! The compositor role: decodes on-stage tracks, paints the scene, encodes once and fans out.

pub mod canvas;
pub mod encode;
pub mod input;
pub mod layout;
pub mod link;
pub mod mix;
pub mod outputs;
pub mod paint;
pub mod recording;
pub mod scene;
pub mod server;

/// Debian's fonts-dejavu-core; the image installs it.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";
