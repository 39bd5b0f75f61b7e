//! Conformance: data-driven cases (topology + policies + probes with
//! expected verdicts) and the runners that execute them against the
//! policy model (`model`) and end to end in the lab (`wire`, over the
//! `portcullis-lab` package).

#![forbid(unsafe_code)]

pub mod case;
pub mod model;
pub mod wire;

pub use case::{Case, Expect, Probe, load_cases};
