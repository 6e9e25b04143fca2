//! Builds the bundled plugins in `plugins/` for `wasm32-wasip2` and embeds them in the binary, so
//! `cargo run -- serve` needs no extra step.
//!
//! The guests need the `wasm32-wasip2` standard library; when rustup has not installed it yet, the
//! build adds it (`rustup target add`), so a fresh machine needs no step of its own before
//! `cargo run`. The plugins are those `plugins/bundled.txt` lists, built one cargo invocation per
//! kind: the SDK generates one world per cargo feature, so parsers, steps and connectors must not
//! share a build (features would unify `parser` and `step` into every component), but plugins of
//! one kind can, and cargo then compiles them in parallel. The builds share one target directory (`<target>/wasm-plugins`) so dependencies
//! compile once and stay cached. `LAKE_SKIP_PLUGIN_BUILD=1` embeds no plugins (for docs or quick
//! checks).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A bundled plugin: a line of `plugins/bundled.txt`.
struct Bundled {
    name: String,
    package: String,
    kind: String,
}

/// The values of the `parallel` column (the host's `plugins::Parallel`, `-` for none). The host
/// reads the column itself (`plugins/parallel.rs`); the build only refuses a bad value.
const PARALLEL: [&str; 2] = ["-", "delimited-records"];

/// Reads `plugins/bundled.txt`: `name package kind parallel` per line, `#` comments.
fn bundled(root: &Path) -> Vec<Bundled> {
    let path = root.join("plugins/bundled.txt");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_whitespace().collect::<Vec<_>>()[..] {
            [name, package, kind, parallel]
                if ["parser", "step", "connector"].contains(&kind)
                    && PARALLEL.contains(&parallel)
                    && (parallel == "-" || kind == "parser") =>
            {
                Bundled {
                    name: name.to_owned(),
                    package: package.to_owned(),
                    kind: kind.to_owned(),
                }
            }
            _ => panic!(
                "{}: {l:?} is not `name package parser|step|connector -|delimited-records` (only a parser takes input in pieces)",
                path.display()
            ),
        })
        .collect()
}

const TARGET: &str = "wasm32-wasip2";

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
        ensure_target();
        // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out.
        let target_dir = out
            .ancestors()
            .nth(4)
            .map_or_else(|| out.join("wasm-plugins"), |t| t.join("wasm-plugins"));
        let plugins = bundled(&root);
        for kind in ["parser", "step", "connector"] {
            let packages: Vec<&str> = plugins
                .iter()
                .filter(|p| p.kind == kind)
                .map(|p| p.package.as_str())
                .collect();
            if !packages.is_empty() {
                build_plugins(&root, &target_dir, kind, &packages);
            }
        }
        for Bundled { name, package, .. } in &plugins {
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

/// Adds the guests' target with rustup when this toolchain lacks its standard library. Without
/// rustup (a toolchain installed otherwise) the plugin build below says what is missing.
fn ensure_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()));
    if sysroot.is_some_and(|s| s.join("lib/rustlib").join(TARGET).is_dir()) {
        return;
    }
    println!("cargo:warning=adding the {TARGET} target with rustup (the bundled plugins need it)");
    let mut cmd = Command::new("rustup");
    cmd.args(["target", "add", TARGET]);
    // Inside `cargo +toolchain` or a rust-toolchain.toml, add it to the toolchain that builds.
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        cmd.args(["--toolchain", &toolchain]);
    }
    match cmd.status() {
        Ok(s) if s.success() => {}
        Ok(s) => println!("cargo:warning=`rustup target add {TARGET}` failed ({s})"),
        Err(e) => println!("cargo:warning=could not run rustup to add {TARGET}: {e}"),
    }
}

fn build_plugins(root: &Path, target_dir: &Path, kind: &str, packages: &[&str]) {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--target", TARGET])
        .args(packages.iter().flat_map(|p| ["-p", p]))
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
        .unwrap_or_else(|e| panic!("running cargo for the {kind} plugins: {e}"));
    assert!(
        status.success(),
        "building the {kind} plugins for {TARGET} failed (is the target installed? `rustup target add {TARGET}`)"
    );
}
