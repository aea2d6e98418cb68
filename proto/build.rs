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
    "sluice/v1/iam.proto",
    "sluice/v1/events.proto",
    "sluice/v1/scheduler.proto",
    "sluice/internal/v1/node.proto",
    // Files Sluice does not own (KEDA's contract) live under third_party/,
    // kept as their authors publish them.
    "third_party/externalscaler/externalscaler.proto",
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
    // What the public port's reflection lists: not the node-to-node
    // services, nor the one workers serve to nodes.
    let mut public = fds.clone();
    public
        .file
        .retain(|f| !f.package().starts_with("sluice.internal"));
    for f in &mut public.file {
        f.service.retain(|s| s.name() != "WorkerHost");
    }
    std::fs::write(
        out_dir.join("sluice_public_descriptor.bin"),
        public.encode_to_vec(),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
