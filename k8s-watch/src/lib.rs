//! The Kubernetes mode of the portcullis agent: list+watch the policy
//! objects (NetworkPolicy, CiliumNetworkPolicy,
//! CiliumClusterwideNetworkPolicy) and the topology they are resolved
//! against (this node's pods, namespaces, nodes, the kube-apiserver's
//! addresses), and publish a [`Snapshot`] after every change.
//!
//! Decide vs. do: [`convert`] turns API objects into `policy-model` terms
//! and [`store`] keeps the objects and builds snapshots; both are pure and
//! unit-tested. [`watch`] is the thin I/O around them (kube-rs watchers, a
//! debounce, a `tokio::sync::watch` channel). With the `fake` feature,
//! [`fake`] is an in-process API server speaking the list/watch protocol,
//! for this crate's tests and the agent's.
#![forbid(unsafe_code)]

pub mod convert;
mod metrics;
pub mod secrets;
mod snapshot;
pub mod store;
pub mod watch;

#[cfg(feature = "fake")]
pub mod fake;

pub use metrics::WatchMetrics;
pub use policy_model::rules::PolicyKind;
pub use snapshot::{PolicyKey, PolicyObject, PolicyStatus, Snapshot, policy_digest};
pub use watch::{PodScope, WatchConfig, WatchError, Watcher};
