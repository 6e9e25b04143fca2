//! `lake plugin new`: scaffolds a plugin crate that builds as-is and passes its own test.
//!
//! The plugin is the SDK's shortest form (a `LineParser` or a `MapBatches` step, a dozen lines in
//! `src/lib.rs`); its test (`tests/NAME.rs`) runs it natively with `lake_sdk::testing`.

use std::path::{Path, PathBuf};

use crate::plugins::Kind;

/// Why a scaffold could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ScaffoldError {
    /// The name is not a plain lowercase identifier.
    #[error(
        "plugin names are 2 to 40 lowercase letters, digits and '-', starting with a letter; {0:?} is not"
    )]
    BadName(String),
    /// Only parsers and steps can be scaffolded for now.
    #[error("scaffolding a {0} is not supported yet; use --kind parser or --kind step")]
    Unsupported(Kind),
    /// The directory exists.
    #[error("{0} already exists; choose another name or directory")]
    Exists(PathBuf),
    /// Writing failed.
    #[error("writing the scaffold: {0}")]
    Io(#[from] std::io::Error),
}

/// Writes `dir/NAME/` with a Cargo manifest and a working plugin of the given kind; returns its path.
pub fn new_plugin(
    name: &str,
    kind: Kind,
    dir: &Path,
    sdk_path: &Path,
) -> Result<PathBuf, ScaffoldError> {
    let ok = (2..=40).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if !ok {
        return Err(ScaffoldError::BadName(name.to_owned()));
    }
    // The plugin's name, version and description come from this manifest (`lake_sdk::Info`).
    let (template, test, feature, description) = match kind {
        Kind::Step => (
            include_str!("scaffold/step.rs.txt"),
            include_str!("scaffold/step_test.rs.txt"),
            "step",
            "Appends a column of row numbers",
        ),
        Kind::Parser => (
            include_str!("scaffold/parser.rs.txt"),
            include_str!("scaffold/parser_test.rs.txt"),
            "parser",
            "One row per line of text",
        ),
        Kind::Connector => return Err(ScaffoldError::Unsupported(kind)),
    };
    let root = dir.join(name);
    if root.exists() {
        return Err(ScaffoldError::Exists(root));
    }
    let crate_name = name.replace('-', "_");
    let type_name: String = name
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next()
                .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                .unwrap_or_default()
        })
        .collect();
    let fill = |t: &str| {
        t.replace("{{name}}", name)
            .replace("{{crate}}", &crate_name)
            .replace("{{type}}", &type_name)
    };
    let manifest = format!(
        r#"[package]
name = "{name}"
description = "{description}"
version = "0.1.0"
edition = "2024"
rust-version = "1.95"
publish = false

# A standalone workspace, so the plugin builds wherever it is placed.
[workspace]

[lib]
# cdylib: the WebAssembly component; rlib: native unit tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
lake-sdk = {{ path = {sdk:?}, features = ["{feature}"] }}
serde = {{ version = "1", features = ["derive"] }}

[profile.release]
opt-level = 3
panic = "abort"
strip = "debuginfo"
"#,
        sdk = sdk_path.display().to_string(),
    );
    std::fs::create_dir_all(root.join("src"))?;
    std::fs::create_dir_all(root.join("tests"))?;
    std::fs::write(root.join("Cargo.toml"), manifest)?;
    std::fs::write(root.join("src/lib.rs"), fill(template))?;
    std::fs::write(
        root.join("tests").join(format!("{crate_name}.rs")),
        fill(test),
    )?;
    std::fs::write(root.join(".gitignore"), "/target\n")?;
    std::fs::write(
        root.join("README.md"),
        format!(
            "# {name}\n\nA lake {kind} plugin.\n\n```sh\ncargo test                                      # tests/{crate_name}.rs, natively\ncargo build --release --target wasm32-wasip2    # the component\ncp target/wasm32-wasip2/release/{crate_name}.wasm <lake>/lake-data/plugins/\n```\n\nRestart `lake serve`; `GET /plugins` lists it. See the lake's `sdk/README.md`.\n"
        ),
    )?;
    Ok(root)
}
