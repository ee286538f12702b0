//! `castyard-media-worker sfu|compositor`: one binary, two roles (each lands with its issue).
use clap::{Parser, Subcommand};

/// Castyard's per-broadcast media worker.
#[derive(Parser, Debug)]
#[command(name = "castyard-media-worker", version)]
struct Cli {
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand, Debug)]
enum Role {
    /// WebRTC SFU: one UDP port for all peers, forwards on-stage tracks to the compositor.
    Sfu,
    /// Compositor: mixes on-stage tracks into one show, encodes once, fans out to every output.
    Compositor,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "castyard-media-worker: the {:?} role is not built yet",
        cli.role
    );
    std::process::ExitCode::from(2)
}
