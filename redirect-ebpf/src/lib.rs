//! The kernel datapath of portcullis.
//!
//! Three TC programs written in C (`bpf/portcullis.c`, built by `build.rs`
//! with clang and embedded here) decide L3/L4 policy in the kernel and hand
//! L7 flows to the proxy with BPF TPROXY (`bpf_sk_assign`):
//!
//! * `from_pod`: TC ingress on the node side of a pod veth;
//! * `to_pod`: TC egress on the same veth;
//! * `from_uplink`: TC ingress on the node's uplink;
//! * `to_uplink`: TC egress on the uplink (the proxy's upstream flows to
//!   pods on other nodes, remembered so their replies reach the proxy).
//!
//! [`Datapath`] loads them, pins their maps (reusing pins from an earlier
//! run so enforcement never pauses), attaches them with pinned TCX links that
//! outlive the agent, and updates the maps with deltas.
//!
//! Byte order: [`PolicyKey`] is network byte order (the contract with the
//! agent), built only by [`PolicyKey::new`]; everything else in the public
//! API is host byte order.

#![deny(unsafe_code)]

mod abi;
pub mod cgroup;
mod datapath;
mod error;
mod events;
#[allow(unsafe_code)]
mod raw;
mod routing;
mod vocabulary;

#[cfg(test)]
mod tests;

pub use abi::{
    CtEntry, CtKey, DatapathConfig, EndpointInfo, EventBudget, FlowEvent, FragEntry, FragKey,
    IpcacheKey, IpcacheValue, PolicyKey, PolicyValue,
};
pub use datapath::{Counters, Datapath, MAP_NAMES};
pub use error::DatapathError;
pub use events::{AsyncFlowEvents, FlowEvents};
pub use routing::{PROXY_ROUTE_TABLE, install_proxy_routing};
pub use vocabulary::*;
