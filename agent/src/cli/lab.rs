//! `portcullis lab ...`: the local lab (`portcullis_lab`) and the wire
//! conformance runner and demo (`conformance::wire`), driven from the CLI.
//! The lab starts the agent from this very binary (`current_exe`).

use clap::Subcommand;
use conformance::wire;
use portcullis_lab as lab;
use std::path::PathBuf;

// The `lab` subcommands (their doc comments are the help text).
#[derive(Subcommand)]
pub enum LabCommand {
    /// Create the lab and start the agent in its node namespace.
    Up {
        #[arg(long)]
        topology: PathBuf,
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        /// Kubernetes mode: serve the topology and policies from a fake API
        /// server and run the agent with `--kubernetes` against it.
        #[arg(long)]
        kubernetes: bool,
        /// One more argument for the lab's agent (repeat it; kept across
        /// `restart-agent`), e.g. `--agent-arg=--dns-max-ips --agent-arg=8`.
        #[arg(long = "agent-arg", allow_hyphen_values = true)]
        agent_args: Vec<String>,
    },
    /// Remove everything the lab made (also after a crash).
    Down,
    /// Run a command in `node`, `world` or a pod (`NS/POD`).
    Exec {
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run the multi-tenant isolation scenario end to end with real traffic
    /// and print the observed matrix next to the expected one.
    Demo {
        /// Leave the lab up afterwards.
        #[arg(long)]
        keep: bool,
        /// Run it from Kubernetes API objects (fake API server, list+watch).
        #[arg(long)]
        kubernetes: bool,
    },
    /// (internal) the fake API server of Kubernetes mode.
    #[command(hide = true)]
    FakeApiserver {
        #[arg(long)]
        topology: PathBuf,
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        #[arg(long)]
        kubeconfig_out: PathBuf,
    },
    /// Restart the lab's agent (pinned maps keep enforcing meanwhile).
    RestartAgent,
    /// Stop the lab's agent without starting it again (maps stay pinned and
    /// programs attached: enforcement goes on).
    StopAgent,
    /// Detach the programs from every lab interface (for benchmarks);
    /// `restart-agent` attaches them again.
    Detach,
    /// Run every L3/L4 conformance probe end to end in the lab (real
    /// connects, UDP exchanges and pings, IPv4 and IPv6) next to the model.
    Conformance(Box<wire::WireArgs>),
    /// (benchmarks) TCP request/response rate from a pod to an echo
    /// responder (`lab serve`); prints one JSON line.
    Rr {
        /// Source pod `NS/POD`.
        #[arg(long)]
        from: String,
        /// Destination `IP:PORT` (a `lab serve` TCP port).
        #[arg(long)]
        to: std::net::SocketAddr,
        #[arg(long, default_value_t = 4)]
        connections: usize,
        #[arg(long, default_value_t = 64)]
        size: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
    },
    /// (internal) serve TCP and UDP responders inside a pod.
    #[command(hide = true)]
    Serve {
        #[arg(long, value_delimiter = ',')]
        tcp: Vec<u16>,
        #[arg(long, value_delimiter = ',')]
        udp: Vec<u16>,
        /// Bind UDP to these addresses (default: the wildcard addresses).
        #[arg(long, value_delimiter = ',')]
        udp_bind: Vec<std::net::IpAddr>,
    },
}

/// Runs one `portcullis lab` subcommand.
pub fn run(cmd: LabCommand) -> anyhow::Result<()> {
    let me = std::env::current_exe()?;
    match cmd {
        LabCommand::Up {
            topology,
            policies,
            kubernetes,
            agent_args,
        } => {
            let state = lab::up(&topology, &policies, &me, kubernetes, &agent_args)?;
            println!(
                "lab is up: {} pods, agent pid {}",
                state.pods.len(),
                state.agent_pid.unwrap_or(0)
            );
            println!(
                "enter a pod:     portcullis lab exec NS/POD -- CMD   (e.g. {} -- ping -c1 10.201.0.1)",
                state.pods.first().map(|p| p.0.as_str()).unwrap_or("NS/POD")
            );
            println!("enter the node:  portcullis lab exec node -- CMD");
            println!("enter the world: portcullis lab exec world -- CMD");
            println!("flows:           portcullis observe [--follow] [--output json]");
            println!("tear down:       portcullis lab down");
            Ok(())
        }
        LabCommand::Down => {
            lab::down()?;
            println!("lab removed");
            Ok(())
        }
        LabCommand::Exec { target, command } => {
            let status = lab::exec(&target, &command)?;
            std::process::exit(status.code().unwrap_or(1));
        }
        LabCommand::Demo { keep, kubernetes } => wire::demo::run(&me, keep, kubernetes),
        LabCommand::FakeApiserver {
            topology,
            policies,
            kubeconfig_out,
        } => lab::fake_api::run_fake_apiserver(
            &topology,
            &policies,
            &kubeconfig_out,
            &lab::paths::secrets_dir(),
        ),
        LabCommand::Rr {
            from,
            to,
            connections,
            size,
            seconds,
        } => {
            let state = lab::LabState::read()?;
            let ns = state.namespace_of(&from)?;
            let r = lab::probe::request_response(
                &ns,
                to,
                connections,
                size,
                std::time::Duration::from_secs(seconds),
            )?;
            println!("{}", serde_json::to_string(&r)?);
            Ok(())
        }
        LabCommand::RestartAgent => {
            let mut state = lab::LabState::read()?;
            lab::stop_agent();
            state.agent_pid = Some(lab::start_agent(&state, &me)?);
            state.write()?;
            println!("agent restarted (pid {})", state.agent_pid.unwrap_or(0));
            Ok(())
        }
        LabCommand::StopAgent => {
            lab::LabState::read()?;
            lab::stop_agent();
            println!("agent stopped; the pinned programs and maps keep enforcing");
            Ok(())
        }
        LabCommand::Detach => {
            lab::LabState::read()?;
            lab::detach()?;
            println!(
                "programs detached and the agent stopped; `portcullis lab restart-agent` attaches them again"
            );
            Ok(())
        }
        LabCommand::Conformance(args) => {
            let (_, failed, _) = wire::run(&me, &args)?;
            if failed > 0 {
                anyhow::bail!("{failed} end-to-end probes disagree with the model");
            }
            Ok(())
        }
        LabCommand::Serve { tcp, udp, udp_bind } => lab::probe::serve(&tcp, &udp, &udp_bind),
    }
}
