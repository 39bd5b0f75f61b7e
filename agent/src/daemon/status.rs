//! `status.json`, what `portcullis status` reads: per-policy state and what
//! is in force. [`StatusFile`] is its one writer.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What `portcullis status` shows: per-policy state and what is in force.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct AgentStatus {
    pub mode: String,
    pub updated: String,
    pub endpoints: usize,
    pub learned_addresses: usize,
    pub policies: Vec<PolicyState>,
    /// The last rejected input, if the newest version could not be used.
    pub last_error: Option<String>,
    /// Endpoints whose policy could not be written whole: all their
    /// traffic is denied until it fits.
    #[serde(default)]
    pub endpoint_failures: Vec<EndpointFailure>,
    /// Map writes that failed outside an endpoint's policy.
    #[serde(default)]
    pub apply_errors: Vec<String>,
    /// Learned addresses left out of the full ipcache (not allowed).
    #[serde(default)]
    pub ipcache_left_out: usize,
    /// Learned-address refusals since start, by reason.
    #[serde(default)]
    pub learn_refused: BTreeMap<String, u64>,
    /// The last input read that failed for lack of resources (retried; the
    /// previous policy stays in force). Not an invalid policy.
    #[serde(default)]
    pub inputs_unreadable: Option<String>,
    /// Addresses the node owns, from the kernel: all `host` (identity 1),
    /// also when the topology or Node object does not list them.
    #[serde(default)]
    pub node_addresses: Vec<IpAddr>,
}

/// An endpoint whose policy is not in the kernel (fails closed).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointFailure {
    pub endpoint: String,
    pub reason: String,
}

/// One policy object's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PolicyState {
    pub kind: String,
    pub namespace: Option<String>,
    pub name: String,
    pub valid: bool,
    pub reason: Option<String>,
    /// Whether it is in the kernel for every endpoint it selects.
    #[serde(default = "yes")]
    pub applied: bool,
    /// Endpoints it selects whose policy could not be written (they fail
    /// closed).
    #[serde(default)]
    pub not_applied_on: Vec<String>,
}

fn yes() -> bool {
    true
}

/// What of the enforcer `status` shows.
pub(super) struct StatusView<'a> {
    pub(super) endpoints: usize,
    pub(super) learned_addresses: usize,
    /// Endpoints (`ns/pod`) that failed closed, with why.
    pub(super) failed: &'a BTreeMap<String, String>,
    /// Policies selecting a failed endpoint -> the endpoints.
    pub(super) failed_policies: &'a BTreeMap<(String, Option<String>, String), Vec<String>>,
    pub(super) apply_errors: &'a [String],
    pub(super) ipcache_left_out: usize,
    /// Bumped whenever what the last apply left out changes.
    pub(super) generation: u64,
    pub(super) learn_refused: &'a BTreeMap<String, u64>,
    pub(super) node_addresses: Vec<IpAddr>,
}

/// How often, at most, applies on learning or expiry rewrite the file.
const REFRESH_EVERY: Duration = Duration::from_millis(250);

/// The daemon's `status.json` and what it was last written from. The file
/// is serialised and written on a thread of its own (the newest status
/// wins), off the agent's loop: with 10,000 policies it is megabytes.
pub(super) struct StatusFile {
    dir: PathBuf,
    /// Shared with the writer until written (changed copy-on-write).
    status: Arc<AgentStatus>,
    writer: std::sync::mpsc::Sender<Arc<AgentStatus>>,
    /// The enforcer's `outcome_gen` the file shows.
    generation: u64,
    last_refresh: Instant,
}

impl StatusFile {
    /// The first status, after the first apply; written at once.
    pub(super) fn new(
        dir: &Path,
        mode: &str,
        policies: Vec<PolicyState>,
        view: &StatusView<'_>,
    ) -> Self {
        let mut file = StatusFile {
            dir: dir.to_path_buf(),
            writer: start_writer(dir),
            status: Arc::new(AgentStatus {
                mode: mode.into(),
                updated: crate::time::now().to_string(),
                endpoints: view.endpoints,
                learned_addresses: view.learned_addresses,
                policies,
                last_error: None,
                ..Default::default()
            }),
            generation: 0,
            last_refresh: Instant::now(),
        };
        Arc::make_mut(&mut file.status).set_apply_state(view);
        file.generation = view.generation;
        // At once: the agent says it is ready after this.
        write_file(&file.dir, &file.status);
        file
    }

    /// New inputs were applied; `last_error`: the rejections still
    /// standing (their objects' previous versions are in force).
    ///
    /// `policies`: the per-policy states, `None` when they are as last
    /// recorded (building them for 10,000 objects on every pod change
    /// costs more than the change).
    pub(super) fn record_applied(
        &mut self,
        policies: Option<Vec<PolicyState>>,
        view: &StatusView<'_>,
        last_error: Option<String>,
    ) {
        let st = Arc::make_mut(&mut self.status);
        st.updated = crate::time::now().to_string();
        st.endpoints = view.endpoints;
        st.learned_addresses = view.learned_addresses;
        if let Some(policies) = policies {
            st.policies = policies;
        }
        st.last_error = last_error;
        st.inputs_unreadable = None;
        st.set_apply_state(view);
        self.generation = view.generation;
        self.write();
    }

    /// New inputs could not be read for lack of resources (retried).
    pub(super) fn record_unreadable(&mut self, error: &str) {
        let st = Arc::make_mut(&mut self.status);
        st.updated = crate::time::now().to_string();
        st.inputs_unreadable = Some(error.to_string());
        self.write();
    }

    /// The rejections standing now (`None`: none): the objects they name
    /// keep their previous version in force. Written when it changed.
    /// The rejections standing as last recorded.
    pub(super) fn last_error(&self) -> Option<&str> {
        self.status.last_error.as_deref()
    }

    pub(super) fn set_last_error(&mut self, error: Option<String>) {
        if self.status.last_error == error {
            return;
        }
        let st = Arc::make_mut(&mut self.status);
        st.updated = crate::time::now().to_string();
        st.last_error = error;
        self.write();
    }

    /// When [`Self::refresh`] will write a change of `generation` it has
    /// not written yet.
    pub(super) fn due(&self, generation: u64) -> Option<Instant> {
        (generation != self.generation).then(|| self.last_refresh + REFRESH_EVERY)
    }

    /// Applies on learning or expiry change what failed: the file follows
    /// (a few times a second at most).
    pub(super) fn refresh(&mut self, view: &StatusView<'_>) {
        if view.generation == self.generation || self.last_refresh.elapsed() < REFRESH_EVERY {
            return;
        }
        self.last_refresh = Instant::now();
        self.generation = view.generation;
        let st = Arc::make_mut(&mut self.status);
        st.updated = crate::time::now().to_string();
        st.learned_addresses = view.learned_addresses;
        st.set_apply_state(view);
        self.write();
    }

    /// Hands the status to the writer (written in the background; if the
    /// writer is gone, here).
    fn write(&self) {
        if self.writer.send(self.status.clone()).is_err() {
            write_file(&self.dir, &self.status);
        }
    }
}

/// Writes `status.json` in `dir` (through a temporary file and a rename).
fn write_file(dir: &Path, status: &AgentStatus) {
    let tmp = dir.join("status.json.tmp");
    let text = serde_json::to_vec_pretty(status).unwrap_or_default();
    if std::fs::write(&tmp, text).is_ok() {
        let _ = std::fs::rename(tmp, dir.join("status.json"));
    }
}

/// The thread that writes `status.json`: of the statuses waiting, only the
/// newest is written.
fn start_writer(dir: &Path) -> std::sync::mpsc::Sender<Arc<AgentStatus>> {
    let (tx, rx) = std::sync::mpsc::channel::<Arc<AgentStatus>>();
    let dir = dir.to_path_buf();
    let spawned = std::thread::Builder::new()
        .name("status".into())
        .spawn(move || {
            while let Ok(first) = rx.recv() {
                let newest = rx.try_iter().last().unwrap_or(first);
                write_file(&dir, &newest);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no status writer thread; status.json is written on the loop");
    }
    tx
}

impl AgentStatus {
    /// The enforcer's apply failures and node state, as `status` shows them.
    fn set_apply_state(&mut self, view: &StatusView<'_>) {
        self.endpoint_failures = view
            .failed
            .iter()
            .map(|(endpoint, reason)| EndpointFailure {
                endpoint: endpoint.clone(),
                reason: reason.clone(),
            })
            .collect();
        self.apply_errors = view.apply_errors.to_vec();
        self.ipcache_left_out = view.ipcache_left_out;
        self.learn_refused = view.learn_refused.clone();
        self.node_addresses = view.node_addresses.clone();
        for p in &mut self.policies {
            let key = (p.kind.clone(), p.namespace.clone(), p.name.clone());
            match view.failed_policies.get(&key) {
                Some(pods) => {
                    p.applied = false;
                    p.not_applied_on = pods.clone();
                }
                None => {
                    p.applied = true;
                    p.not_applied_on.clear();
                }
            }
        }
    }
}
