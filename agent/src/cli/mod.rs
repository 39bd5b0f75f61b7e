//! The CLI commands that are not the daemon.

pub mod policy;
