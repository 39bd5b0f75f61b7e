//! The policy objects exactly as users write them in YAML: Kubernetes
//! `NetworkPolicy` and Cilium's `CiliumNetworkPolicy` /
//! `CiliumClusterwideNetworkPolicy` (`cilium.io/v2`).
//!
//! These types only describe the wire shape. Spec structs reject unknown
//! fields so a typo (`toPort:`) is an error with its path instead of a
//! silently ignored rule; `metadata` accepts anything Kubernetes adds.

mod cilium;
mod k8s;
mod meta;

pub use cilium::*;
pub use k8s::*;
pub use meta::*;
