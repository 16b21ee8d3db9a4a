//! Build script: puts the web UI's third-party assets (the uPlot charting library, installed by
//! npm from `ui/package-lock.json`) into `OUT_DIR`, where `src/http/ui.rs` embeds them; and
//! writes `builtin_plugins.rs`, the table of the built-in plugin components that
//! `scripts/build-plugins` has built (`plugins/target/components/`), which `src/sidecar`
//! embeds so the binary carries its plugins (an empty table when they are not built).

use std::path::{Path, PathBuf};
use std::process::Command;

const VENDORED_ASSETS: [&str; 2] = ["uPlot.iife.min.js", "uPlot.min.css"];

/// The components the roles look for (`gauntlet sidecar`, `gauntlet compact`).
const BUILTIN_PLUGINS: [&str; 2] = ["sidecar.wasm", "compactor.wasm"];

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
    embed_plugins(&manifest_dir, &out_dir);
}

/// Writes `builtin_plugins.rs`: a `&[(&str, &[u8])]` expression of the built-in components
/// found in `plugins/target/components/`, each included with `include_bytes!`.
fn embed_plugins(manifest_dir: &Path, out_dir: &Path) {
    let plugins = manifest_dir.join("..").join("plugins");
    let components = plugins.join("target").join("components");
    // The nearest folder that exists: building the plugins later changes it, which runs this
    // again (a missing path would run it at every build).
    if let Some(watched) = [&components, &plugins.join("target"), &plugins]
        .into_iter()
        .find(|dir| dir.is_dir())
    {
        println!("cargo:rerun-if-changed={}", watched.display());
    }
    let mut table = String::from("&[\n");
    for file in BUILTIN_PLUGINS {
        let path = components.join(file);
        if path.is_file() {
            println!("cargo:rerun-if-changed={}", path.display());
            table.push_str(&format!(
                "    ({file:?}, include_bytes!({:?}) as &[u8]),\n",
                path.display().to_string()
            ));
        }
    }
    table.push(']');
    let target = out_dir.join("builtin_plugins.rs");
    if let Err(error) = std::fs::write(&target, table) {
        eprintln!("error: cannot write {}: {error}", target.display());
        std::process::exit(1);
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
