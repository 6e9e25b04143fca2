//! Acceptance for plugin authors: a plugin scaffolded by `lake plugin new`, built as `sdk/README.md`
//! says, and dropped into the plugin directory runs through `POST /pipelines/run` and shows up in
//! lineage.

use std::path::PathBuf;
use std::process::Command;

use axum::http::{Method, StatusCode};
use lake_host::config::PluginsConfig;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaffolded_step_builds_and_runs_in_a_pipeline() {
    let work = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(["plugin", "new", "row-numbers", "--kind", "step", "--dir"])
        .arg(work.path())
        .output()
        .expect("lake plugin new");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crate_dir = work.path().join("row-numbers");

    // The build command of sdk/README.md, with a cached target directory.
    let target = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("scaffold-target");
    let status = Command::new(env!("CARGO"))
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .status()
        .expect("cargo build");
    assert!(
        status.success(),
        "the scaffolded plugin must build as generated"
    );

    let plugin_dir = work.path().join("plugins");
    std::fs::create_dir_all(&plugin_dir).expect("plugin dir");
    std::fs::copy(
        target.join("wasm32-wasip2/release/row_numbers.wasm"),
        plugin_dir.join("row_numbers.wasm"),
    )
    .expect("drop in");
    let cfg = PluginsConfig {
        dir: plugin_dir,
        cache_dir: crate::plugins::shared_cache(),
        ..PluginsConfig::default()
    };
    let plugins = lake_host::plugins::Plugins::open(&cfg).expect("plugins");
    assert!(plugins.rejected().is_empty(), "{:?}", plugins.rejected());
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
