//! Hubble's Observer API: the messages (generated from `agent/proto`), the
//! agent's flow ring and server, the filters, and the relay.

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod flow {
    include!(concat!(env!("OUT_DIR"), "/flow.rs"));
    include!(concat!(env!("OUT_DIR"), "/flow.serde.rs"));
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod relay {
    include!(concat!(env!("OUT_DIR"), "/relay.rs"));
    include!(concat!(env!("OUT_DIR"), "/relay.serde.rs"));
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod observer {
    include!(concat!(env!("OUT_DIR"), "/observer.rs"));
    include!(concat!(env!("OUT_DIR"), "/observer.serde.rs"));
}

/// The encoded descriptors of the three files, for gRPC reflection.
pub const DESCRIPTORS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/hubble_descriptor.bin"));

pub mod convert;
pub mod fan_in;
pub mod filter;
pub mod ring;
pub mod server;
