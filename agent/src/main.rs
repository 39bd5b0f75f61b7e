//! `portcullis`: the node agent and its CLI.

mod agentd;
mod capacity;
mod cli;
mod fdlimit;
mod fqdn;
mod k8s;
mod l7log;
mod learn_guard;
mod metrics;
mod node_addrs;
mod policy_cli;
mod service_map;

// The daemon (`lab::netns::enter`) and the `status`/`observe` defaults
// (`lab::STATE_DIR`) still name the lab through this path; the lab itself
// lives in `conformance/lab`.
use portcullis_lab as lab;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use tracing_subscriber::Layer;

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
    /// The local lab: a node, pods and a world made of network namespaces.
    Lab {
        #[command(subcommand)]
        command: cli::lab::LabCommand,
    },
    /// The node agent: owns the eBPF maps and enforces the policy files.
    Agent(Box<agentd::AgentArgs>),
    /// The agent's per-policy state (valid / invalid with reason) and what
    /// is in force.
    Status {
        #[arg(long, default_value = "text")]
        output: String,
        /// The agent's state directory (default: the lab's).
        #[arg(long, default_value = lab::STATE_DIR)]
        state_dir: PathBuf,
    },
    /// Stream flow events (verdicts of the datapath) from the agent.
    Observe {
        /// `text` (one line per flow) or `json`.
        #[arg(long, default_value = "text")]
        output: String,
        /// Keep streaming new events instead of printing the recent ones.
        #[arg(long, short)]
        follow: bool,
        /// The agent's state directory (default: the lab's).
        #[arg(long, default_value = lab::STATE_DIR)]
        state_dir: PathBuf,
    },
}

fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Access-log events go to `portcullis observe` (the layer below), not to
    // the log file: one line per request or DNS query is too much for it.
    // `PORTCULLIS_LOG=info` brings them back.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new("info,portcullis::proxy::access=off")
        });
    tracing_subscriber::registry()
        .with(l7log::AccessLogLayer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy { command } => return policy_cli::run(command),
        Command::Agent(args) => agentd::run(*args),
        Command::Observe {
            output,
            follow,
            state_dir,
        } => agentd::observe(&state_dir, output == "json", follow),
        Command::Lab { command } => cli::lab::run(command),
        Command::Status { output, state_dir } => agentd::print_status(&state_dir, output == "json"),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
