//! The CLI's subcommands that live outside `main.rs`.

pub mod lab;
