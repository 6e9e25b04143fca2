//! Pipeline runs through the HTTP API: parsers and steps over cataloged datasets, Parquet outputs,
//! `pipeline` provenance for every invocation (successful or failed), and a hostile plugin failing
//! alone while the server keeps answering.

use std::collections::BTreeMap;

use axum::http::{Method, StatusCode};
use lake_host::config::{PluginOverride, PluginsConfig};
use serde_json::json;

use crate::http_api::TestLake;

async fn lake_with_plugins() -> TestLake {
    lake_with_plugins_and(crate::http_api::settings(1 << 30)).await
}

async fn lake_with_plugins_and(settings: lake_host::lake::Settings) -> TestLake {
    lake_with_csv_limit(settings, None).await
}

async fn lake_with_csv_limit(
    settings: lake_host::lake::Settings,
    csv_timeout: Option<f64>,
) -> TestLake {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::copy(
        crate::hostile::components().join("hostile-spin.wasm"),
        dir.path().join("hostile-spin.wasm"),
    )
    .expect("copy");
    let mut overrides = BTreeMap::new();
    overrides.insert(
        "hostile-spin".to_owned(),
        PluginOverride {
            timeout_secs: Some(1.5),
            ..Default::default()
        },
    );
    if let Some(secs) = csv_timeout {
        overrides.insert(
            "csv".to_owned(),
            PluginOverride {
                timeout_secs: Some(secs),
                ..Default::default()
            },
        );
    }
    let cfg = PluginsConfig {
        dir: dir.path().to_path_buf(),
        cache_dir: crate::plugins::shared_cache(),
        overrides,
        ..PluginsConfig::default()
    };
    let plugins = lake_host::plugins::Plugins::open(&cfg).expect("plugins");
    let t = crate::http_api::embedded_settings(settings, Some(plugins)).await;
    drop(dir);
    t
}

async fn raw_upload(t: &TestLake, name: &str, file: &str, bytes: &[u8]) -> String {
    let id = t
        .create(json!({"name": name, "source": "upload", "tags": ["demo"]}))
        .await;
    let (s, v) = t.upload(&id, file, bytes).await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parse_then_select_with_lineage_and_provenance() {
    let t = lake_with_plugins().await;
    let (_, plugins) = t.call(Method::GET, "/plugins", None).await;
    let names: Vec<&str> = plugins["plugins"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    assert!(
        names.contains(&"csv") && names.contains(&"select") && names.contains(&"hostile-spin"),
        "{plugins}"
    );
    let (_, csv) = t.call(Method::GET, "/plugins/csv", None).await;
    assert_eq!(
        (csv["kind"].as_str(), csv["wit_version"].as_str()),
        (Some("parser"), Some("0.1.0"))
    );

    let iris = std::fs::read(crate::plugins::shared().join("fixtures/csv/iris.csv")).expect("iris");
    let raw = raw_upload(&t, "iris", "iris.csv", &iris).await;
    let (s, run) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "csv", "inputs": [raw]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{run}");
    assert_eq!(run["status"], "succeeded");
    let d = &run["details"];
    assert_eq!(d["plugin"], "csv");
    assert_eq!(d["component_sha256"], csv["sha256"]);
    assert_eq!(d["wit_version"], "0.1.0");
    assert_eq!(d["rows"], 150);
    assert_eq!(d["columns"], 5);
    assert!(
        d["limits"]["memory_bytes"].as_u64().is_some_and(|m| m > 0),
        "{d}"
    );
    assert!(
        d["usage"]["peak_memory_bytes"]
            .as_u64()
            .is_some_and(|m| m > 0),
        "{d}"
    );
    assert!(d["usage"]["wall"].as_f64().is_some(), "{d}");
    let parsed = run["output"].as_str().expect("output dataset").to_owned();
    let (_, ds) = t
        .call(Method::GET, &format!("/catalog/{parsed}"), None)
        .await;
    assert_eq!(
        (ds["layer"].as_str(), ds["metadata"]["rows"].as_u64()),
        (Some("processed"), Some(150))
    );
    let (_, files) = t
        .call(Method::GET, &format!("/catalog/{parsed}/files"), None)
        .await;
    assert_eq!(files[0]["name"], "table.parquet");

    let (s, sel) = t
        .call(Method::POST, "/pipelines/run", Some(json!({"plugin": "select", "inputs": [parsed], "params": {"columns": ["species", "petal_width"]}, "target_layer": "curated", "name": "iris species"})))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{sel}");
    let selected = sel["output"].as_str().expect("output").to_owned();
    let (_, sd) = t
        .call(Method::GET, &format!("/catalog/{selected}"), None)
        .await;
    assert_eq!(
        (sd["layer"].as_str(), sd["name"].as_str()),
        (Some("curated"), Some("iris species"))
    );
    assert_eq!(sd["metadata"]["columns"][0]["name"], "species");

    // Lineage: raw -> parsed -> selected, each edge a pipeline step.
    let (_, g) = t
        .call(Method::GET, &format!("/provenance/{selected}/graph"), None)
        .await;
    let ids: Vec<&str> = g["nodes"]
        .as_array()
        .expect("nodes")
        .iter()
        .filter_map(|n| n["id"].as_str())
        .collect();
    assert_eq!(ids, [raw.as_str(), parsed.as_str(), selected.as_str()]);
    assert!(
        g["edges"]
            .as_array()
            .expect("edges")
            .iter()
            .all(|e| e["action"] == "pipeline"),
        "{g}"
    );
    let (_, runs) = t.call(Method::GET, "/pipelines/runs?limit=10", None).await;
    assert_eq!(runs[0]["id"], sel["id"], "newest first");
    let (s, one) = t
        .call(
            Method::GET,
            &format!("/pipelines/runs/{}", run["id"].as_str().expect("id")),
            None,
        )
        .await;
    assert_eq!(
        (s, one["details"]["plugin"].as_str()),
        (StatusCode::OK, Some("csv"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_runs_are_recorded_with_their_error() {
    let t = lake_with_plugins().await;
    let bad =
        std::fs::read(crate::plugins::shared().join("fixtures/csv/bad.csv")).expect("bad.csv");
    let raw = raw_upload(&t, "bad", "bad.csv", &bad).await;
    let (s, v) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "csv", "inputs": [raw]})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(v["error"]["code"], "invalid_input");
    assert!(
        v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("line 2")),
        "{v}"
    );
    let run_id = v["error"]["run_id"].as_str().expect("run id").to_owned();
    let (_, run) = t
        .call(Method::GET, &format!("/pipelines/runs/{run_id}"), None)
        .await;
    assert_eq!(
        (run["status"].as_str(), run["output"].as_str()),
        (Some("failed"), None)
    );
    assert_eq!(run["details"]["error"]["code"], "invalid_input");
    assert_eq!(run["inputs"], json!([raw]));
    let (_, lineage) = t
        .call(Method::GET, &format!("/provenance/{raw}"), None)
        .await;
    assert!(
        lineage["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["action"] == "pipeline" && e["parameters"]["status"] == "failed"),
        "{lineage}"
    );
    let (_, page) = t.call(Method::GET, "/catalog?layer=processed", None).await;
    assert_eq!(page["items"], json!([]), "a failed run leaves no dataset");

    // Request errors record nothing and say what is wrong.
    let (s, v) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "nope", "inputs": [raw]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("not_found"))
    );
    let (s, v) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "csv", "inputs": [raw, raw]})),
        )
        .await;
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("invalid_request"))
    );
    let (s, v) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "select", "inputs": [raw], "params": {"columns": ["a"]}})),
        )
        .await;
    assert_eq!(
        s,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a raw CSV is not a table yet: {v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_plugin_fails_alone_while_the_server_answers() {
    let t = lake_with_plugins().await;
    let raw = raw_upload(&t, "anything", "x.csv", b"a\n1\n").await;
    let spin = {
        let app = t.app.clone();
        let body = json!({"plugin": "hostile-spin", "inputs": [raw]}).to_string();
        tokio::spawn(async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post("/pipelines/run")
                .header("content-type", "application/json")
                .body(axum::body::Body::from(body))
                .expect("req");
            let resp = app.oneshot(req).await.expect("resp");
            let status = resp.status();
            let bytes = http_body_util::BodyExt::collect(resp.into_body())
                .await
                .expect("body")
                .to_bytes();
            (
                status,
                serde_json::from_slice::<serde_json::Value>(&bytes).expect("json"),
            )
        })
    };
    // While the plugin spins, catalog requests are answered.
    for _ in 0..20 {
        let (s, _) = t.call(Method::GET, "/catalog", None).await;
        assert_eq!(s, StatusCode::OK);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(
        !spin.is_finished(),
        "the hostile plugin should still be spinning"
    );
    let (s, v) = spin.await.expect("join");
    assert_eq!(
        (s, v["error"]["code"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("timeout")),
        "{v}"
    );
    let (_, run) = t
        .call(
            Method::GET,
            &format!(
                "/pipelines/runs/{}",
                v["error"]["run_id"].as_str().expect("run id")
            ),
            None,
        )
        .await;
    assert_eq!(run["details"]["error"]["code"], "timeout");
    assert_eq!(run["details"]["limits"]["timeout"], 1.5);
}

/// A run names at most 16 inputs and one dataset at most twice; more is refused before anything
/// is read or recorded (one id named 60 times decoded 60 copies of its table at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_takes_a_bounded_number_of_inputs() {
    let t = lake_with_plugins().await;
    let id = raw_upload(&t, "plates", "plates.csv", b"well,od\nA1,0.5\n").await;
    let (s, v) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "csv", "inputs": [id]})),
        )
        .await;
    assert!(s.is_success(), "{v}");
    let (_, runs_before) = t.call(Method::GET, "/pipelines/runs", None).await;
    assert_eq!(
        runs_before.as_array().map(Vec::len),
        Some(1),
        "{runs_before}"
    );
    for (inputs, want) in [
        (vec![id.clone(); 60], "at most 16"),
        (vec![id.clone(); 3], "more than twice"),
    ] {
        let (s, v) = t
            .call(
                Method::POST,
                "/pipelines/run",
                Some(json!({"plugin": "merge", "inputs": inputs, "params": {"on": "well"}})),
            )
            .await;
        assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
        let m = v["error"]["message"].as_str().unwrap_or("");
        assert!(m.contains(want), "{m}");
    }
    let (_, runs_after) = t.call(Method::GET, "/pipelines/runs", None).await;
    assert_eq!(
        runs_before, runs_after,
        "nothing recorded for a refused run"
    );
}

/// A run whose caller goes away while its plugin runs is stopped and still recorded: its entry
/// says `cancelled`, names the plugin, its input and how long it ran, and nothing else is kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_whose_caller_goes_away_is_recorded_as_cancelled() {
    use std::time::{Duration, Instant};
    let t = lake_with_plugins().await;
    let raw = raw_upload(&t, "anything", "x.csv", b"a\n1\n").await;
    let gone = tokio::time::timeout(
        Duration::from_millis(400),
        t.call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "hostile-spin", "inputs": [raw]})),
        ),
    )
    .await;
    assert!(
        gone.is_err(),
        "the spinning plugin answered within 0.4 s: {gone:?}"
    );
    let waited = Instant::now();
    let run = loop {
        let (s, runs) = t.call(Method::GET, "/pipelines/runs", None).await;
        assert_eq!(s, StatusCode::OK, "{runs}");
        let spins: Vec<&serde_json::Value> = runs
            .as_array()
            .expect("runs")
            .iter()
            .filter(|r| r["details"]["plugin"] == "hostile-spin")
            .collect();
        assert!(spins.len() <= 1, "one invocation, one entry: {runs}");
        if let Some(run) = spins.first() {
            break (*run).clone();
        }
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the abandoned run was never recorded: {runs}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(run["status"], "failed", "{run}");
    assert_eq!(run["details"]["error"]["code"], "cancelled", "{run}");
    assert_eq!(run["inputs"], json!([raw]));
    assert_eq!(run["details"]["input_file"], "x.csv");
    let wall = run["details"]["usage"]["wall"].as_f64().expect("wall");
    assert!((0.3..1.5).contains(&wall), "ran {wall} s of a 1.5 s limit");
    // The plugin was stopped, not left to reach its limit and record a second entry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (_, runs) = t.call(Method::GET, "/pipelines/runs", None).await;
    let spins = runs
        .as_array()
        .expect("runs")
        .iter()
        .filter(|r| r["details"]["plugin"] == "hostile-spin")
        .count();
    assert_eq!(spins, 1, "{runs}");
    let (_, page) = t.call(Method::GET, "/catalog?layer=processed", None).await;
    assert_eq!(
        page["items"],
        json!([]),
        "an abandoned run leaves no dataset"
    );
}

/// A step run reads at most `plugins.max_step_input_bytes` of Parquet from its inputs (a dataset
/// named twice counts twice): past it the run is refused before anything is read or recorded,
/// and says which setting to raise. A parser, which streams its input, is not bound by it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_run_reads_a_bounded_number_of_bytes() {
    let mut s = crate::http_api::settings(1 << 30);
    s.max_step_input_bytes = 1;
    let t = lake_with_plugins_and(s).await;
    let raw = raw_upload(&t, "plates", "plates.csv", b"well,od\nA1,0.5\nA2,0.7\n").await;
    let (s, parsed) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "csv", "inputs": [raw]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{parsed}");
    let table = parsed["output"].as_str().expect("output").to_owned();
    let size = parsed["details"]["output_file"]["size"]
        .as_u64()
        .expect("size");
    let (_, before) = t.call(Method::GET, "/pipelines/runs", None).await;
    let (s, v) = t
        .call(
            Method::POST,
            "/pipelines/run",
            Some(json!({"plugin": "select", "inputs": [table], "params": {"columns": ["well"]}})),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let m = v["error"]["message"].as_str().unwrap_or("");
    assert!(
        m.contains(&format!("{size} bytes")) && m.contains("plugins.max_step_input_bytes"),
        "{m}"
    );
    let (_, after) = t.call(Method::GET, "/pipelines/runs", None).await;
    assert_eq!(before, after, "nothing recorded for a refused run");
}

/// An upload is parsed while its bytes arrive, so over a slow link the parse can run out of time
/// waiting for them: it is then parsed again from the stored bytes, and the file gets its table.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_upload_still_gets_its_table() {
    use futures::StreamExt;
    let t = lake_with_csv_limit(crate::http_api::settings(1 << 30), Some(4.0)).await;
    // The first chunk is more than the 16 MiB a parse reads ahead before it starts, so the parse
    // runs at once; the rest comes 1.5 s apart, past the parser's 4 s limit (which counts the
    // time it waits for bytes).
    let mut first = b"a,b\n".to_vec();
    let mut rows = 0u64;
    while first.len() <= 17 << 20 {
        first.extend_from_slice(format!("{rows},{}\n", rows * 2).as_bytes());
        rows += 1;
    }
    let mut chunks = vec![bytes::Bytes::from(first)];
    chunks.extend((0..3).map(|i| bytes::Bytes::from(format!("-{i},0\n"))));
    let body: lake_host::blob::ByteStream = Box::pin(
        futures::stream::iter(chunks)
            .enumerate()
            .then(|(i, c)| async move {
                if i > 0 {
                    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
                }
                Ok(c)
            }),
    );
    let info = t
        .lake
        .files()
        .upload("slow.csv", body)
        .await
        .expect("the upload");
    assert_eq!(info.parse_error, None);
    assert_eq!((info.rows, info.columns), (Some(rows + 3), Some(2)));
    assert!(info.dataset_ids.table.is_some());
}
