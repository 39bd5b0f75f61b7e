//! `portcullis`: the node agent and its CLI.

#![forbid(unsafe_code)]

mod access_log;
mod cli;
mod daemon;
mod hubble;
mod k8s;
mod metrics;
mod service_map;
mod state_dir;
mod time;

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
        command: cli::policy::PolicyCommand,
    },
    /// The local lab: a node, pods and a world made of network namespaces.
    Lab {
        #[command(subcommand)]
        command: cli::lab::LabCommand,
    },
    /// The node agent: owns the eBPF maps and enforces the policy files.
    Agent(Box<daemon::AgentArgs>),
    /// The agent's per-policy state (valid / invalid with reason) and what
    /// is in force.
    Status {
        #[arg(long, default_value = "text")]
        output: String,
        /// The agent's state directory (default: the one the agent
        /// recorded in /run/portcullis/state-dir, else /run/portcullis/agent).
        #[arg(long, conflicts_with = "node")]
        state_dir: Option<PathBuf>,
        /// A lab node's agent by name (`node`: the first).
        #[arg(long)]
        node: Option<String>,
    },
    /// Every node's Hubble observer behind one Observer API (Hubble Relay).
    Relay {
        /// TCP address to serve on.
        #[arg(long, default_value = "127.0.0.1:4245")]
        listen: String,
        /// A node's observer: NAME=unix:///path or NAME=host:port (repeat).
        #[arg(long)]
        peer: Vec<hubble::fan_in::Peer>,
        /// Every node of the running lab (their agents' hubble.sock).
        #[arg(long)]
        lab: bool,
    },
    /// Flows from the agent's Hubble Observer API, with Hubble's filter
    /// flags: compact lines, or `-o json` as `hubble observe -o json`.
    Observe {
        #[command(flatten)]
        args: Box<cli::observe::ObserveArgs>,
        /// The agent's state directory (default: the one the agent
        /// recorded in /run/portcullis/state-dir, else /run/portcullis/agent).
        #[arg(long, conflicts_with_all = ["node", "server"])]
        state_dir: Option<PathBuf>,
        /// A lab node's agent by name, or `all` for every node's, merged
        /// (each flow names its node).
        #[arg(long, conflicts_with = "server")]
        node: Option<String>,
    },
}

/// The observers `observe` asks: `--server`, a lab node's (or every
/// node's) socket, or the agent's socket in its state directory.
fn observe_servers(
    args: &cli::observe::ObserveArgs,
    state_dir: Option<PathBuf>,
    node: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    let socket = |dir: &std::path::Path| format!("unix://{}", dir.join("hubble.sock").display());
    Ok(match (&args.server, node) {
        (Some(s), _) => vec![s.clone()],
        (None, Some(node)) => cli::lab::observed_nodes(node)?
            .iter()
            .map(|(_, dir)| socket(dir))
            .collect(),
        (None, None) => vec![socket(&state_dir::resolve(state_dir))],
    })
}

/// `portcullis relay`: serves until killed.
fn run_relay(listen: &str, mut peers: Vec<hubble::fan_in::Peer>, lab: bool) -> anyhow::Result<()> {
    use anyhow::Context;
    if lab {
        for (name, dir) in cli::lab::observed_nodes("all")? {
            peers.push(hubble::fan_in::Peer {
                name: name.unwrap_or_else(|| "lab-node".into()),
                address: format!("unix://{}", dir.join("hubble.sock").display()),
            });
        }
    }
    if peers.is_empty() {
        anyhow::bail!("no peer: give --peer NAME=ADDRESS or --lab");
    }
    let addr = listen
        .parse()
        .with_context(|| format!("--listen {listen:?}: not an address:port"))?;
    hubble::server::spawn(
        "relay",
        hubble::fan_in::Relay {
            peers,
            slots: hubble::server::stream_slots(),
        },
        hubble::server::Listen {
            unix: None,
            tcp: Some(addr),
        },
    )?;
    eprintln!("relay: serving Hubble's Observer API on {listen}");
    loop {
        std::thread::park();
    }
}

fn main() -> ExitCode {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    // Access-log events go to `portcullis observe` (the layer below), not to
    // the log file: one line per request or DNS query is too much for it.
    // `PORTCULLIS_LOG=info` brings them back.
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("PORTCULLIS_LOG").unwrap_or_else(|_| {
            tracing_subscriber::EnvFilter::new(format!("info,{}=off", access_log::ACCESS_TARGET))
        });
    tracing_subscriber::registry()
        .with(access_log::AccessLogLayer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_filter(filter),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Policy { command } => return cli::policy::run(command),
        Command::Agent(args) => daemon::run(*args),
        Command::Observe {
            args,
            state_dir,
            node,
        } => observe_servers(&args, state_dir, node.as_deref())
            .and_then(|servers| cli::observe::run(&servers, &args)),
        Command::Relay { listen, peer, lab } => run_relay(&listen, peer, lab),
        Command::Lab { command } => cli::lab::run(command),
        Command::Status {
            output,
            state_dir,
            node,
        } => match node {
            Some(node) => cli::lab::node_state_dir(&node)
                .and_then(|dir| cli::status::run(&dir, output == "json")),
            None => cli::status::run(&state_dir::resolve(state_dir), output == "json"),
        },
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}
