//! The policy churn bench's tool (`benches/policy_churn.sh` drives it):
//!
//! - `gen`: writes the deterministic cluster (topology with pod placement,
//!   one file per policy, the flip policy's two versions);
//! - `edits`: rewrites the flip policy file again and again and times, from
//!   each write, the first TCP probe from the client pod that sees the new
//!   verdict, and the agent's own realization time when it exports
//!   `portcullis_policy_realization_seconds`;
//! - `remote`: rewrites the topology with one remote pod added, removed or
//!   relabelled at a time and times when the agent has realized it (from
//!   the same metric);
//! - `probe`: waits until a probe sees a verdict (cold start);
//! - `report`: the Markdown table from the figures of both agents.

#![forbid(unsafe_code)]

mod drive;
mod generate;
mod report;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(about = "Policy churn bench: cluster generator, change drivers and report")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write the cluster into DIR.
    Gen {
        #[arg(long)]
        out: PathBuf,
        #[command(flatten)]
        cfg: generate::GenConfig,
    },
    /// Flip the flip policy COUNT times; one JSON line per edit on stdout.
    Edits(drive::EditArgs),
    /// COUNT remote pod changes; one JSON line per change on stdout.
    Remote(drive::RemoteArgs),
    /// Probe until the verdict is VERDICT; prints the milliseconds waited.
    Probe(drive::ProbeArgs),
    /// Write the Markdown report from the figures files.
    Report(report::ReportArgs),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Gen { out, cfg } => {
            cfg.check().map_err(anyhow::Error::msg)?;
            cfg.write(&out)?;
            eprintln!(
                "wrote {} policies, {} pods ({} local) in {} namespaces to {}",
                cfg.policies,
                cfg.pods,
                cfg.local,
                cfg.namespaces,
                out.display()
            );
            Ok(())
        }
        Command::Edits(a) => drive::edits(&a),
        Command::Remote(a) => drive::remote(&a),
        Command::Probe(a) => drive::probe_until(&a),
        Command::Report(a) => report::write(&a),
    }
}

#[cfg(test)]
mod tests;
