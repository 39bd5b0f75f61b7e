//! `portcullis`: the node agent and its CLI.

mod policy_cli;
mod service_map;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// portcullis: Kubernetes and Cilium network policy, enforced by eBPF and a
/// Rust L7 proxy.
#[derive(Parser)]
#[command(name = "portcullis", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate, explain and visualise policies (no privileges needed).
    Policy {
        #[command(subcommand)]
        command: policy_cli::PolicyCommand,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Policy { command } => policy_cli::run(command),
    }
}
