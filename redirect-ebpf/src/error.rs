use std::io;
use std::path::PathBuf;

/// Everything that can go wrong loading, attaching or updating the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// The pin directory could not be prepared.
    #[error(
        "bpffs at {path}: {source}; run as root (CAP_SYS_ADMIN) or mount one yourself with `mount -t bpf bpf {path}`"
    )]
    Bpffs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A pinned map from an earlier run has a different shape than this build.
    #[error(
        "pinned map {path} does not match this build ({what}: pinned {pinned}, built {built}); \
         it was left untouched so the running programs keep enforcing; remove the pin \
         directory to start over (this drops all datapath state)"
    )]
    PinnedMapMismatch {
        path: PathBuf,
        what: &'static str,
        pinned: u64,
        built: u64,
    },
    /// The object could not be loaded (maps created or reused).
    #[error("load eBPF object: {0}")]
    Load(#[source] Box<aya::EbpfError>),
    /// A program could not be loaded, attached or looked up.
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    /// A map operation failed.
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    /// The embedded object lacks a program or map the loader expects.
    #[error("the embedded eBPF object has no {kind} `{name}` (build mismatch)")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    /// A TC link could not be pinned, updated or removed.
    #[error("tc link pin {path}: {source}")]
    LinkPin {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A policy key or value that the datapath cannot represent.
    #[error("invalid policy key: {0}")]
    InvalidPolicyKey(&'static str),
    /// An `ip` command (proxy routing) failed.
    #[error(
        "`{command}` failed: {detail}; check that iproute2 is installed and you have CAP_NET_ADMIN"
    )]
    Command { command: String, detail: String },
    /// The flow event reader was already handed out.
    #[error("the flow event reader was already taken")]
    EventsTaken,
    /// Setting up asynchronous polling of the ring buffer failed.
    #[error("poll the events ring buffer: {0}")]
    EventsPoll(#[source] io::Error),
}

impl DatapathError {
    pub(crate) fn map(name: &'static str, source: aya::maps::MapError) -> Self {
        Self::Map {
            name,
            source: Box::new(source),
        }
    }

    pub(crate) fn program(name: &'static str, source: aya::programs::ProgramError) -> Self {
        Self::Program {
            name,
            source: Box::new(source),
        }
    }
}
