//! Build script: puts the web UI's third-party assets (the uPlot charting library, installed by
//! npm from `ui/package-lock.json`) into `OUT_DIR`, where `src/http/ui.rs` embeds them.

use std::path::{Path, PathBuf};
use std::process::Command;

const VENDORED_ASSETS: [&str; 2] = ["uPlot.iife.min.js", "uPlot.min.css"];

fn main() {
    let manifest_dir = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").unwrap_or_default());
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").unwrap_or_default());
    let ui = manifest_dir.join("ui");
    println!("cargo:rerun-if-changed=ui/package.json");
    println!("cargo:rerun-if-changed=ui/package-lock.json");
    let dist = ui.join("node_modules").join("uplot").join("dist");
    if !VENDORED_ASSETS
        .iter()
        .all(|asset| dist.join(asset).is_file())
    {
        install_ui_packages(&ui);
    }
    for asset in VENDORED_ASSETS {
        let from = dist.join(asset);
        if let Err(error) = std::fs::copy(&from, out_dir.join(asset)) {
            fail(&format!("cannot copy {}: {error}", from.display()));
        }
    }
}

fn install_ui_packages(ui: &Path) {
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(ui)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!("`npm ci` in {} failed ({status})", ui.display())),
        Err(error) => fail(&format!("cannot run npm ({error})")),
    }
}

fn fail(reason: &str) -> ! {
    eprintln!(
        "error: the web UI's charting library could not be installed: {reason}. \
         Install Node.js and npm, then run `npm ci` in gateway/ui."
    );
    std::process::exit(1);
}
