//! Generates the gRPC code from `sluice/**/*.proto` with a pure-Rust protobuf
//! compiler (protox), so building Sluice needs no `protoc` binary.

use std::path::PathBuf;

use prost::Message;

const PROTOS: &[&str] = &[
    "sluice/v1/errors.proto",
    "sluice/v1/queues.proto",
    "sluice/v1/topics.proto",
    "sluice/v1/streams.proto",
    "sluice/v1/functions.proto",
    "sluice/v1/workers.proto",
    "sluice/v1/cluster.proto",
    "sluice/internal/v1/node.proto",
    "externalscaler/externalscaler.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    // Served by gRPC server reflection so generic clients can list and call
    // the services without the .proto files.
    std::fs::write(out_dir.join("sluice_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
