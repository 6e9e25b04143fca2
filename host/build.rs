//! Builds the bundled plugins in `plugins/` for `wasm32-wasip2` and embeds them in the binary, so
//! `cargo run -- serve` needs no extra step.
//!
//! Each plugin is built in its own cargo invocation: the SDK generates one world per feature, and a
//! shared build would unify the `parser` and `step` features into every component. The nested
//! builds share one target directory (`<target>/wasm-plugins`) so dependencies compile once and stay
//! cached between builds. `LAKE_SKIP_PLUGIN_BUILD=1` embeds no plugins (for docs or quick checks).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Bundled plugins: (plugin name, package name).
const PLUGINS: &[(&str, &str)] = &[
    ("csv", "plugin-csv"),
    ("select", "plugin-select"),
    ("xlsx", "plugin-xlsx"),
    ("filter", "plugin-filter"),
    ("rename", "plugin-rename"),
    ("cast", "plugin-cast"),
    ("merge", "plugin-merge"),
    ("geo-soft", "plugin-geo-soft"),
    ("geo-matrix", "plugin-geo-matrix"),
    ("uniprot-entries", "plugin-uniprot-entries"),
    ("pubmed", "plugin-pubmed"),
    ("uniprot", "plugin-uniprot"),
    ("ncbi", "plugin-ncbi"),
    ("geo", "plugin-geo"),
];

fn main() {
    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host/ has a parent")
        .to_path_buf();
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    for dir in ["plugins", "sdk", "wit"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    println!("cargo:rerun-if-env-changed=LAKE_SKIP_PLUGIN_BUILD");

    let mut entries = Vec::new();
    if std::env::var_os("LAKE_SKIP_PLUGIN_BUILD").is_none() {
        // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
        let target_dir = out
            .ancestors()
            .nth(4)
            .map_or_else(|| out.join("wasm-plugins"), |t| t.join("wasm-plugins"));
        for (name, package) in PLUGINS {
            build_plugin(&root, &target_dir, package);
            let wasm = target_dir
                .join("wasm32-wasip2/release")
                .join(format!("{}.wasm", package.replace('-', "_")));
            assert!(
                wasm.exists(),
                "plugin {name} built but {} is missing",
                wasm.display()
            );
            entries.push((name.to_string(), wasm));
        }
    }
    let mut code = String::from(
        "/// Bundled components: (name, bytes).\npub static BUNDLED: &[(&str, &[u8])] = &[\n",
    );
    for (name, path) in &entries {
        code.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    code.push_str("];\n");
    std::fs::write(out.join("bundled_plugins.rs"), code).expect("write bundled_plugins.rs");
}

fn build_plugin(root: &Path, target_dir: &Path, name: &str) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args([
        "build",
        "--release",
        "--target",
        "wasm32-wasip2",
        "-p",
        name,
    ])
    .arg("--manifest-path")
    .arg(root.join("plugins/Cargo.toml"))
    .arg("--target-dir")
    .arg(target_dir);
    // The outer build's settings are for the host, not for wasm guests.
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_BUILD_TARGET",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_RUSTFLAGS",
        "CARGO_PROFILE_RELEASE_DEBUG",
        "CARGO_PRIMARY_PACKAGE",
    ] {
        cmd.env_remove(var);
    }
    // WebAssembly SIMD (on in wasmtime by default): memchr and friends scan 16 bytes at a time, which
    // made the csv plugin's direct reader a quarter faster in the sandbox (BENCHMARKS.md).
    cmd.env("CARGO_ENCODED_RUSTFLAGS", "-Ctarget-feature=+simd128");
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("running cargo for plugin {name}: {e}"));
    assert!(
        status.success(),
        "building plugin {name} for wasm32-wasip2 failed (is the target installed? `rustup target add wasm32-wasip2`)"
    );
}
