//! Acceptance for plugin authors: a plugin scaffolded by `lake plugin new` is short (at most 15
//! lines of code in `src/lib.rs`), passes its own test natively (`cargo test`), builds as
//! `sdk/README.md` says, and runs in the host's sandbox: the step through `POST /pipelines/run`
//! and into lineage, the parser over bytes.

use std::path::{Path, PathBuf};
use std::process::Command;

use arrow_array::cast::AsArray;
use axum::http::{Method, StatusCode};
use lake_host::config::PluginsConfig;
use serde_json::json;

/// Lines of code: neither blank nor comments (`//`, `//!`, `///`).
fn code_lines(source: &str) -> usize {
    source
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//"))
        .count()
}

/// Runs `lake plugin new NAME --kind KIND` in `dir`; checks the size of its `src/lib.rs`, that it
/// is formatted, and that its own test passes natively; builds the component as `sdk/README.md`
/// says and returns its path.
fn scaffold_and_build(dir: &Path, name: &str, kind: &str) -> PathBuf {
    let out = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["plugin", "new", name, "--kind", kind, "--dir"])
        .arg(dir)
        .output()
        .expect("lake plugin new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crate_dir = dir.join(name);
    let lib = std::fs::read_to_string(crate_dir.join("src/lib.rs")).expect("lib.rs");
    let lines = code_lines(&lib);
    assert!(
        lines <= 15,
        "a scaffolded {kind} is at most 15 lines of code, not {lines}:\n{lib}"
    );
    let status = Command::new("rustfmt")
        .args(["--edition", "2024", "--check"])
        .arg(crate_dir.join("src/lib.rs"))
        .status()
        .expect("rustfmt");
    assert!(status.success(), "the scaffolded {kind} is formatted");

    // One cached target directory for every scaffold: the dependencies build once.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let cargo = |args: &[&str]| {
        Command::new(env!("CARGO"))
            .args(args)
            .current_dir(&crate_dir)
            .env("CARGO_TARGET_DIR", &target)
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .output()
            .expect("cargo")
    };
    // Its own test, natively, as the scaffold's README says.
    let test = cargo(&["test"]);
    let report = String::from_utf8_lossy(&test.stdout);
    assert!(
        test.status.success(),
        "the scaffolded {kind}'s test must pass natively:\n{report}\n{}",
        String::from_utf8_lossy(&test.stderr)
    );
    assert!(
        report.contains("test result: ok. 2 passed"),
        "the scaffolded {kind}'s tests ran:\n{report}"
    );

    // The build command of sdk/README.md.
    let build = cargo(&["build", "--release", "--target", "wasm32-wasip2"]);
    assert!(
        build.status.success(),
        "the scaffolded plugin must build as generated:\n{}",
        String::from_utf8_lossy(&build.stderr)
    );
    target
        .join("wasm32-wasip2/release")
        .join(format!("{}.wasm", name.replace('-', "_")))
}

/// The plugins of a directory holding only `wasm`, dropped in as a lab would; none is rejected.
fn load_dropped_in(work: &std::path::Path, wasm: &std::path::Path) -> lake_host::plugins::Plugins {
    let plugin_dir = work.join("plugins");
    std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
    let file = wasm.file_name().expect("a wasm file");
    std::fs::copy(wasm, plugin_dir.join(file)).expect("drop in");
    let cfg = PluginsConfig {
        dir: plugin_dir,
        cache_dir: crate::plugins::shared_cache(),
        ..PluginsConfig::default()
    };
    let plugins = lake_host::plugins::Plugins::open(&cfg).expect("plugins");
    assert!(plugins.rejected().is_empty(), "{:?}", plugins.rejected());
    plugins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_step_builds_and_runs_in_a_pipeline() {
    let work = tempfile::tempdir().expect("tempdir");
    let wasm = scaffold_and_build(work.path(), "row-numbers", "step");
    let plugins = load_dropped_in(work.path(), &wasm);
    let t = crate::http_api::embedded_with(1 << 30, Some(plugins)).await;

    let (_, manifest) = t.call(Method::GET, "/plugins/row-numbers", None).await;
    assert_eq!(
        (manifest["kind"].as_str(), manifest["version"].as_str()),
        (Some("step"), Some("0.1.0")),
        "{manifest}"
    );

    let raw = t.create(json!({"name": "iris", "source": "upload"})).await;
    let iris = std::fs::read(crate::plugins::shared().join("fixtures/csv/iris.csv")).expect("iris");
    t.upload(&raw, "iris.csv", &iris).await;
    let (s, parsed) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "csv", "inputs": [raw]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{parsed}");
    let parsed = parsed["output"].as_str().expect("output").to_owned();
    let (s, run) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "row-numbers", "inputs": [parsed], "params": {"column": "n"}})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    assert_eq!(run["details"]["columns"], 6);
    assert_eq!(run["details"]["rows"], 150);
    let output = run["output"].as_str().expect("output").to_owned();
    let (_, d) = t
        .call(Method::GET, &format!("/catalog/{output}"), None)
        .await;
    assert_eq!(
        d["metadata"]["columns"][5],
        json!({"name": "n", "type": "UInt64"})
    );

    let (_, g) = t
        .call(Method::GET, &format!("/provenance/{output}/graph"), None)
        .await;
    let ids: Vec<&str> = g["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, [raw.as_str(), parsed.as_str(), output.as_str()]);
    let (_, lineage) = t
        .call(Method::GET, &format!("/provenance/{output}"), None)
        .await;
    let last = lineage["entries"]
        .as_array()
        .and_then(|e| e.last())
        .expect("entries")
        .clone();
    assert_eq!(
        (
            last["parameters"]["plugin"].as_str(),
            last["parameters"]["component_sha256"].as_str()
        ),
        (Some("row-numbers"), manifest["sha256"].as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_parser_passes_its_test_and_parses_in_the_sandbox() {
    let work = tempfile::tempdir().expect("tempdir");
    let wasm = scaffold_and_build(work.path(), "text-lines", "parser");
    let plugins = load_dropped_in(work.path(), &wasm);
    // Name, version and description come from the scaffold's Cargo.toml.
    let manifest = plugins.manifest("text-lines").await.expect("loaded");
    assert_eq!(
        (
            manifest.kind.to_string(),
            manifest.version.as_str(),
            manifest.description.as_str()
        ),
        ("parser".to_owned(), "0.1.0", "One row per line of text")
    );

    // Bytes in chunks that cut lines, through the sandboxed component.
    let input = b"alpha\r\nbeta\n\ngamma".to_vec();
    let chunks: Vec<std::io::Result<bytes::Bytes>> = input
        .chunks(3)
        .map(|c| Ok(bytes::Bytes::copy_from_slice(c)))
        .collect();
    let table = plugins
        .parse(
            "text-lines",
            Vec::new(),
            Box::pin(futures::stream::iter(chunks)),
        )
        .await
        .result
        .expect("parse");
    let names: Vec<&str> = table
        .schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect();
    assert_eq!(names, ["line"]);
    let lines: Vec<&str> = table
        .batches
        .iter()
        .flat_map(|b| b.column(0).as_string::<i32>().iter().flatten())
        .collect();
    assert_eq!(lines, ["alpha", "beta", "", "gamma"]);

    // Its errors reach the host as the plugin's: invalid input naming the line.
    let bad = vec![Ok(bytes::Bytes::from_static(b"fine\n\xff\n"))];
    let err = plugins
        .parse(
            "text-lines",
            Vec::new(),
            Box::pin(futures::stream::iter(bad)),
        )
        .await
        .result
        .expect_err("not UTF-8");
    assert!(err.to_string().contains("line 2"), "{err}");
}
