//! The `castyard` binary: parses the command line and hands over to the library.
use clap::Parser;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    castyard_api::cli::run(castyard_api::cli::Cli::parse()).await
}
