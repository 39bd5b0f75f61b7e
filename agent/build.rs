//! Generates Hubble's Observer API (messages, tonic client and server, and
//! their proto3 JSON) from `proto/`, compiled by protox: the build needs no
//! protoc. The encoded descriptor set is kept for gRPC reflection.

use prost::Message;
use std::path::PathBuf;

const PROTOS: [&str; 3] = [
    "proto/flow/flow.proto",
    "proto/relay/relay.proto",
    "proto/observer/observer.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptors = protox::compile(PROTOS, ["proto"])?;
    let encoded = descriptors.encode_to_vec();
    std::fs::write(out.join("hubble_descriptor.bin"), &encoded)?;
    tonic_prost_build::configure()
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_fds(descriptors)?;
    pbjson_build::Builder::new()
        .register_descriptors(&encoded)?
        .preserve_proto_field_names()
        .extern_path(".google.protobuf", "::pbjson_types")
        .build(&[".flow", ".relay", ".observer"])?;
    Ok(())
}
