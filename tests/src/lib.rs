//! Helpers for the end-to-end suites in `tests/e2e/`: locating the `gauntlet` binary built by
//! this workspace, free loopback ports, and waiting for servers to come up.
//!
//! Tests only ever bind and connect to loopback addresses.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Path of the `gauntlet` binary in the workspace's target directory, building it if needed.
pub fn gauntlet_binary() -> anyhow::Result<PathBuf> {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
            let workspace = manifest_dir
                .parent()
                .ok_or("no workspace directory")?
                .to_path_buf();
            let status = std::process::Command::new(env!("CARGO"))
                .args(["build", "--quiet", "--bin", "gauntlet"])
                .current_dir(&workspace)
                .status()
                .map_err(|error| format!("cannot run cargo: {error}"))?;
            if !status.success() {
                return Err(format!("building gauntlet failed: {status}"));
            }
            let target = std::env::var_os("CARGO_TARGET_DIR")
                .map_or_else(|| workspace.join("target"), PathBuf::from);
            Ok(target.join("debug").join("gauntlet"))
        })
        .clone()
        .map_err(anyhow::Error::msg)
}

/// A loopback address with a port that was free a moment ago.
pub fn free_loopback_address() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// Polls `url` until it answers 200 or `timeout` passes.
pub async fn wait_until_ok(url: &str, timeout: Duration) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + timeout;
    loop {
        match client.get(url).send().await {
            Ok(response) if response.status().is_success() => return Ok(()),
            result => {
                if Instant::now() >= deadline {
                    anyhow::bail!("{url} did not become ready within {timeout:?}: {result:?}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
