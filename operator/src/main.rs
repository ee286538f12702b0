//! `castyard-operator`: the Broadcast controller's entry point (the reconciler lands with its issue).
use clap::Parser;

/// Reconciles castyard.dev Broadcasts into per-broadcast SFU and compositor pods.
#[derive(Parser, Debug)]
#[command(name = "castyard-operator", version)]
struct Cli {
    /// Namespace to watch; all namespaces when unset.
    #[arg(long, env = "CASTYARD_NAMESPACE")]
    namespace: Option<String>,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    eprintln!(
        "castyard-operator: the reconciler is not built yet (namespace: {}); see the operator issue",
        cli.namespace.as_deref().unwrap_or("all")
    );
    std::process::ExitCode::from(2)
}
