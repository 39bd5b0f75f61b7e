//! The portcullis policy engine: pure, no I/O beyond reading policy files.
//!
//! Pipeline (as Cilium's `pkg/policy`): policy objects ([`api`]) are
//! translated into internal rules ([`rules`]); selectors are evaluated
//! against the identities of a [`topology`]; each endpoint gets an
//! [`EndpointPolicy`](resolve::EndpointPolicy) holding the map state the
//! kernel needs and the L7 rule sets of its redirected ports; [`explain`]
//! answers "is this flow allowed, and why".
#![forbid(unsafe_code)]

pub mod api;
pub mod l7;
