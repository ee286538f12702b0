//! `castyard-media-worker sfu|compositor`: one binary, two roles (each lands with its issue).
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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
    Sfu(Common),
    /// Compositor: mixes on-stage tracks into one show, encodes once, fans out to every output.
    Compositor(Common),
}

/// What the operator (a pod) and the local backend (a child process) both pass.
#[derive(Args, Debug)]
struct Common {
    /// The worker's JSON config; rewritten in place when the broadcast changes.
    #[arg(long)]
    config: PathBuf,
    /// Stream keys as files, `<secret>/<key>`, as Kubernetes mounts Secrets.
    #[arg(long, default_value = "/var/run/secrets/castyard")]
    keys_dir: PathBuf,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let (name, common) = match &cli.role {
        Role::Sfu(c) => ("sfu", c),
        Role::Compositor(c) => ("compositor", c),
    };
    if let Err(e) = std::fs::metadata(&common.config) {
        eprintln!(
            "castyard-media-worker: cannot read {}: {e}",
            common.config.display()
        );
        return std::process::ExitCode::from(2);
    }
    eprintln!("castyard-media-worker: the {name} role is not built yet");
    std::process::ExitCode::from(2)
}
