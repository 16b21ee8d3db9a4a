//! Facts about this build, reported by `--version`, `/metrics` (`gauntlet_build_info`) and
//! `/api/v1/status/buildinfo`.

/// The crate version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The Rust compiler version this workspace requires, reported as `goVersion`'s counterpart.
pub const RUST_VERSION: &str = env!("CARGO_PKG_RUST_VERSION");
