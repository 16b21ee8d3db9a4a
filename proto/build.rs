//! Generates the Rust messages and tonic client/server code from the `.proto` files in this
//! crate, with the `protoc` shipped by `protoc-bin-vendored` so no system install is needed.
//! It must never fetch anything or depend on a `protoc` found on `PATH`.

use std::error::Error;
use std::path::PathBuf;

/// Every `.proto` file of the crate, relative to the crate root.
const PROTOS: &[&str] = &[
    "thanos/types.proto",
    "thanos/store.proto",
    "thanos/info.proto",
    "thanos/prometheus_copy.proto",
    "prometheus/types.proto",
    "prometheus/remote.proto",
];

fn main() -> Result<(), Box<dyn Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for dir in ["thanos", "prometheus"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }

    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Chunk bytes are shared, not copied, from the receive buffer through to the engine.
    config.bytes([
        ".thanos.Chunk.data",
        ".prometheus.Chunk.data",
        ".prometheus_copy.Chunk.data",
    ]);

    // A downsampled chunk's aggregates are rare; boxed, they keep every raw chunk at a third
    // of the size (304 → 104 bytes), which is most of the memory an answer's structs take.
    for aggregate in ["count", "sum", "min", "max", "counter"] {
        config.boxed(format!(".thanos.AggrChunk.{aggregate}"));
    }

    let protos: Vec<PathBuf> = PROTOS.iter().map(|p| root.join(p)).collect();
    let includes = [root, protoc_bin_vendored::include_path()?];
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_with_config(config, &protos, &includes)?;
    Ok(())
}
