//! `portcullis status`: the agent's per-policy state.

use crate::daemon::status::AgentStatus;
use anyhow::{Context, Result};
use std::path::Path;

/// `portcullis status`: the agent's view of its inputs.
pub fn run(state_dir: &Path, json: bool) -> Result<()> {
    let path = state_dir.join("status.json");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading {} (is the agent running?)", path.display()))?;
    if json {
        println!("{text}");
        return Ok(());
    }
    let st: AgentStatus = serde_json::from_str(&text)?;
    println!(
        "mode: {}   updated: {}   endpoints: {}   learned addresses: {}",
        st.mode, st.updated, st.endpoints, st.learned_addresses
    );
    if let Some(e) = &st.last_error {
        println!(
            "last rejected input (previous policy stays in force):\n  {}",
            e.replace('\n', "\n  ")
        );
    }
    if let Some(e) = &st.inputs_unreadable {
        println!("inputs unreadable (retrying; previous policy stays in force): {e}");
    }
    for f in &st.endpoint_failures {
        println!("FAILED CLOSED endpoint {}: {}", f.endpoint, f.reason);
    }
    for e in &st.apply_errors {
        println!("APPLY ERROR {e}");
    }
    if st.ipcache_left_out > 0 {
        println!(
            "ipcache full: {} learned addresses left out (not allowed)",
            st.ipcache_left_out
        );
    }
    for (reason, n) in &st.learn_refused {
        println!("learned addresses refused ({reason}): {n}");
    }
    for p in &st.policies {
        let name = match &p.namespace {
            Some(ns) => format!("{}/{}", ns, p.name),
            None => p.name.clone(),
        };
        let (state, why) = if !p.valid {
            ("INVALID", p.reason.clone())
        } else if !p.applied {
            (
                "FAILED",
                Some(format!(
                    "not applied on {} (failed closed)",
                    p.not_applied_on.join(", ")
                )),
            )
        } else {
            ("valid", p.reason.clone())
        };
        println!(
            "{:<8} {:<32} {}{}",
            state,
            name,
            p.kind,
            why.map(|r| format!(": {r}")).unwrap_or_default()
        );
    }
    Ok(())
}
