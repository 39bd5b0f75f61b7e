//! The portcullis policy engine: pure, no I/O beyond reading policy files.
//!
//! Pipeline (as Cilium's `pkg/policy`): policy objects ([`api`]) are loaded
//! ([`load`]) and translated into internal rules ([`rules`]); a
//! [`Cluster`](resolve::Cluster) allocates identities for a [`topology`],
//! the CIDRs policies name and the addresses learned from DNS, and
//! evaluates every selector once; each endpoint gets an
//! [`EndpointPolicy`](resolve::EndpointPolicy) holding the map state the
//! kernel needs ([`mapstate`]) and the L7 rule sets of its redirected
//! ports ([`l7`]); [`explain`] answers "is this flow allowed, and why".
//! [`incremental`] keeps one node's resolution up to date one input change
//! at a time and hands out deltas; the from-scratch resolution is its
//! specification.
#![forbid(unsafe_code)]

pub mod api;
pub mod explain;
pub mod identity;
pub mod incremental;
pub mod l7;
pub mod labels;
pub mod load;
pub mod mapstate;
pub mod matrix;
pub mod origin;
pub mod resolve;
pub mod rules;
pub mod topology;

pub use explain::{
    Explanation, FlowPeer, FlowQuery, L7Request, Layer, TlsRequestSpec, Verdict, explain,
};
pub use identity::NumericIdentity;
pub use l7::L7Parser;
pub use load::{LoadError, PolicySet};
pub use mapstate::{MapChange, MapKey, MapState, MapValue, MapVerdict, PortKey};
pub use resolve::{Cluster, EndpointPolicy, FqdnCache};
pub use rules::{Direction, Protocol};
pub use topology::Topology;
