//! Conformance: data-driven cases (topology + policies + probes with
//! expected verdicts) and the runners that execute them against the
//! policy model and, later, end to end in the lab.

pub mod case;
pub mod model;

pub use case::{Case, Expect, Probe, load_cases};
