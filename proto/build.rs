//! Generates the gRPC code. protoc comes from `protoc-bin-vendored`, so the
//! build needs no system package.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "petrel/v1/agent.proto",
        "petrel/v1/peer.proto",
        "petrel/v1/rib.proto",
        "petrel/v1/watch.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["."])?;
    Ok(())
}
