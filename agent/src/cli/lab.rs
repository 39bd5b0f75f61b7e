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
    /// Create the lab and start the agent in its node namespace; a topology
    /// with two nodes or more in `nodes:` makes a cluster lab (a namespace
    /// and an agent per node, joined by an underlay, fed by the lab's API
    /// server).
    Up {
        #[arg(long)]
        topology: PathBuf,
        #[arg(long = "policy", required = true)]
        policies: Vec<PathBuf>,
        /// Kubernetes mode: serve the topology and policies from the lab's
        /// API server and run the agents with `--kubernetes` against it
        /// (the default for a cluster lab).
        #[arg(long, conflicts_with = "files")]
        kubernetes: bool,
        /// File mode: the agents read the topology and policy files (the
        /// default for a one-node lab).
        #[arg(long)]
        files: bool,
        /// Build only this node of a topology with `nodes:` (it must be
        /// `lab-node`); the other nodes' pods are addresses only.
        #[arg(long)]
        node: Option<String>,
        /// One more argument for the lab's agent (repeat it; kept across
        /// `restart-agent`), e.g. `--agent-arg=--dns-max-ips --agent-arg=8`.
        #[arg(long = "agent-arg", allow_hyphen_values = true)]
        agent_args: Vec<String>,
    },
    /// Remove everything the lab made (also after a crash).
    Down,
    /// Run a command in a node (by name; `node` is the first), `world` or
    /// a pod (`NS/POD`).
    Exec {
        target: String,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// Run the multi-tenant isolation scenario end to end with real traffic
    /// on a two-node cluster lab (pods 1-4 on node-1, 5-8 on node-2) and
    /// print the observed matrix next to the expected one.
    Demo {
        /// Leave the lab up afterwards.
        #[arg(long)]
        keep: bool,
        /// Run it from Kubernetes API objects (the default on two nodes).
        #[arg(long)]
        kubernetes: bool,
        /// Run it on the one-node lab (file mode unless --kubernetes).
        #[arg(long)]
        one_node: bool,
    },
    /// (internal) the lab's API server of Kubernetes mode.
    #[command(hide = true)]
    FakeApiserver {
        #[arg(long)]
        topology: PathBuf,
        #[arg(long = "policy")]
        policies: Vec<PathBuf>,
        /// The agents' kubeconfig.
        #[arg(long)]
        kubeconfig_out: PathBuf,
        /// The user's kubeconfig (127.0.0.1).
        #[arg(long)]
        user_kubeconfig_out: PathBuf,
        /// The namespace of the agents' listener.
        #[arg(long)]
        agents_netns: String,
        /// The agents' listener's address.
        #[arg(long)]
        agents_listen: std::net::SocketAddr,
    },
    /// List the lab's nodes and their agents (pid, running or not).
    Status,
    /// Wait until every node's agent has applied the lab's policy files as
    /// they are now (through the lab's API server in Kubernetes mode).
    WaitApplied {
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 10)]
        timeout: u64,
    },
    /// Restart the lab's agents, or one node's (pinned maps keep enforcing
    /// meanwhile).
    RestartAgent {
        /// Only this node's agent.
        #[arg(long)]
        node: Option<String>,
    },
    /// Stop the lab's agents, or one node's, without starting them again
    /// (maps stay pinned and programs attached: enforcement goes on).
    StopAgent {
        /// Only this node's agent.
        #[arg(long)]
        node: Option<String>,
    },
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
        /// Answer raw-protocol probes of these IP protocol numbers (GRE 47, ESP 50, ...).
        #[arg(long, value_delimiter = ',')]
        raw: Vec<u8>,
        /// Bind the raw responders to these addresses (default: the wildcard addresses).
        #[arg(long, value_delimiter = ',')]
        raw_bind: Vec<std::net::IpAddr>,
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
            files,
            node,
            agent_args,
        } => {
            let options = lab::UpOptions {
                inputs: if kubernetes {
                    lab::Inputs::Kubernetes
                } else if files {
                    lab::Inputs::Files
                } else {
                    lab::Inputs::Auto
                },
                only_node: node,
                agent_args,
            };
            let state = lab::up_with(&topology, &policies, &me, &options)?;
            print_up(&state);
            Ok(())
        }
        LabCommand::WaitApplied { timeout } => {
            let state = lab::LabState::read()?;
            let took = state.wait_applied(std::time::Duration::from_secs(timeout))?;
            println!(
                "every agent ({}) applied the policy files in {} ms",
                state.nodes.len(),
                took.as_millis()
            );
            Ok(())
        }
        LabCommand::Status => {
            let state = lab::LabState::read()?;
            print_status(&state);
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
        LabCommand::Demo {
            keep,
            kubernetes,
            one_node,
        } => wire::demo::run(&me, keep, kubernetes, one_node),
        LabCommand::FakeApiserver {
            topology,
            policies,
            kubeconfig_out,
            user_kubeconfig_out,
            agents_netns,
            agents_listen,
        } => lab::fake_api::run_fake_apiserver(
            &topology,
            &policies,
            &lab::fake_api::ApiServerPaths {
                kubeconfig_out,
                user_kubeconfig_out,
                agents_netns,
                agents_listen,
            },
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
        LabCommand::RestartAgent { node } => {
            let mut state = lab::LabState::read()?;
            for i in nodes_named(&state, node.as_deref())? {
                let n = state.nodes[i].clone();
                lab::stop_node_agent(&n);
                let pid = lab::start_node_agent(&state, &n, &me)?;
                state.nodes[i].agent_pid = Some(pid);
                state.write()?;
                println!("agent of node {} restarted (pid {pid})", n.name);
            }
            Ok(())
        }
        LabCommand::StopAgent { node } => {
            let mut state = lab::LabState::read()?;
            for i in nodes_named(&state, node.as_deref())? {
                lab::stop_node_agent(&state.nodes[i]);
                state.nodes[i].agent_pid = None;
                println!(
                    "agent of node {} stopped; its pinned programs and maps keep enforcing",
                    state.nodes[i].name
                );
            }
            state.write()?;
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
        LabCommand::Serve {
            tcp,
            udp,
            udp_bind,
            raw,
            raw_bind,
        } => {
            let raw = lab::probe::serve_raw(&raw, &raw_bind)?;
            lab::probe::serve(&tcp, &udp, &udp_bind)?;
            for t in raw {
                let _ = t.join();
            }
            Ok(())
        }
    }
}

/// The positions of the nodes `name` names (every node for `None`).
fn nodes_named(state: &lab::LabState, name: Option<&str>) -> anyhow::Result<Vec<usize>> {
    match name {
        None => Ok((0..state.nodes.len()).collect()),
        Some(n) => {
            let node = state.node(n)?;
            Ok(vec![
                state
                    .nodes
                    .iter()
                    .position(|x| x.name == node.name)
                    .unwrap_or(0),
            ])
        }
    }
}

/// Whether process `pid` is alive.
fn alive(pid: Option<u32>) -> bool {
    pid.is_some_and(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
}

fn print_status(state: &lab::LabState) {
    println!(
        "{} lab, {} mode, {} pods",
        if state.cluster { "cluster" } else { "one-node" },
        if state.kubernetes {
            "Kubernetes (API server)"
        } else {
            "file"
        },
        state.pods.len() + state.remote_pods.len()
    );
    println!(
        "{:<16} {:<22} {:>5} {:>8} {:<8} state dir",
        "NODE", "NAMESPACE", "PODS", "AGENT", "STATUS"
    );
    for n in &state.nodes {
        let pods = if state.cluster {
            state.pod_nodes.iter().filter(|(_, x)| *x == n.name).count()
        } else {
            state.pods.len()
        };
        println!(
            "{:<16} {:<22} {:>5} {:>8} {:<8} {}",
            n.name,
            n.netns,
            pods,
            n.agent_pid.map_or_else(|| "-".into(), |p| p.to_string()),
            if alive(n.agent_pid) {
                "running"
            } else {
                "stopped"
            },
            n.state_dir.display()
        );
    }
    if state.kubernetes {
        println!(
            "kubectl:         export KUBECONFIG={}",
            lab::paths::user_kubeconfig().display()
        );
    }
}

fn print_up(state: &lab::LabState) {
    println!(
        "lab is up: {} pods on {} node(s)",
        state.pods.len(),
        state.nodes.len()
    );
    print_status(state);
    println!(
        "enter a pod:     portcullis lab exec NS/POD -- CMD   (e.g. {} -- ping -c1 10.201.0.1)",
        state.pods.first().map(|p| p.0.as_str()).unwrap_or("NS/POD")
    );
    if state.cluster {
        println!(
            "enter a node:    portcullis lab exec NODE -- CMD   (e.g. {} -- ip route)",
            state.nodes[0].name
        );
    } else {
        println!("enter the node:  portcullis lab exec node -- CMD");
    }
    println!("enter the world: portcullis lab exec world -- CMD");
    println!("flows:           portcullis observe [--node NAME|all] [--follow] [--output json]");
    println!("tear down:       portcullis lab down");
    if state.kubernetes {
        println!(
            "export KUBECONFIG={}",
            lab::paths::user_kubeconfig().display()
        );
    }
}

/// The agents `portcullis observe --node NAME|all` follows: each lab node
/// named (every node for `all`) with its state directory.
pub fn observed_nodes(name: &str) -> anyhow::Result<Vec<(Option<String>, std::path::PathBuf)>> {
    let state = lab::LabState::read()?;
    let nodes: Vec<&lab::LabNode> = if name == "all" {
        state.nodes.iter().collect()
    } else {
        vec![state.node(name)?]
    };
    Ok(nodes
        .into_iter()
        .map(|n| (Some(n.name.clone()), n.state_dir.clone()))
        .collect())
}

/// The state directory of the lab node `name`'s agent (`portcullis status
/// --node NAME`).
pub fn node_state_dir(name: &str) -> anyhow::Result<std::path::PathBuf> {
    Ok(lab::LabState::read()?.node(name)?.state_dir.clone())
}
