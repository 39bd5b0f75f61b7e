//! The incremental policy engine of one node: the inputs a node agent
//! watches (policy objects, pods, namespaces, learned names, node
//! addresses) change one at a time, and each change yields a [`Delta`]:
//! the ipcache and policy map writes, endpoints added or removed, and the
//! L7 rule sets that changed. From-scratch resolution
//! ([`Cluster::with_numbering`]) is the specification: after every change
//! the engine's [`NodeState`] equals it (the property test in
//! `tests/incremental.rs` checks this).
//!
//! Numbers are stable: a label set keeps its identity and a local pod its
//! endpoint id while they exist, so the kernel maps keyed by them only
//! see what changed (see [`Numbering`] for the reuse rules).

mod change;
mod delta;
mod engine;

pub use change::{Change, Hosts, PolicyKey};
pub use delta::{Delta, EndpointChange, IpcacheChange, NodeState, Realized};
pub use engine::IncrementalCluster;

#[cfg(test)]
mod tests;
