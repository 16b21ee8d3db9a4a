//! Declares the `fuzzing` cfg that cargo-fuzz sets, under which checksum mismatches are
//! ignored so fuzzers reach the decoders behind them.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fuzzing)");
}
