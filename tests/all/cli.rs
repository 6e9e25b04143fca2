//! The `lake` command line against the embedded default, in a scratch directory: the catalog,
//! promotion and lineage commands share the service the HTTP API uses.

use std::process::Command;

pub(crate) fn lake(dir: &std::path::Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_lake"))
        .args(args)
        .current_dir(dir)
        .env_remove("LAKE_CONFIG")
        .env("LAKE_LOG", "warn")
        .output()
        .expect("run lake");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn register_upload_promote_lineage_and_refused_delete() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let (ok, out, err) = lake(d, &["migrate"]);
    assert!(ok, "{err}");

    let (ok, out2, err) = lake(
        d,
        &[
            "catalog",
            "register",
            "--name",
            "iris",
            "--source",
            "upload",
            "--tags",
            "demo,plants",
            "--metadata",
            r#"{"species": 3}"#,
        ],
    );
    assert!(ok, "{out}{err}");
    let id = json(&out2)["id"].as_str().expect("id").to_owned();

    let file = d.join("iris.csv");
    std::fs::write(&file, "sepal,petal\n5.1,1.4\n").expect("write");
    let (ok, out, err) = lake(
        d,
        &["catalog", "upload", &id, file.to_str().expect("utf-8")],
    );
    assert!(ok, "{err}");
    assert_eq!(json(&out)["file_count"], 1);
    let (ok, out, _) = lake(d, &["catalog", "files", &id]);
    assert!(ok);
    assert_eq!(
        json(&out)[0]["sha256"],
        lake_host::blob::Sha256::of(b"sepal,petal\n5.1,1.4\n")
            .to_hex()
            .as_str()
    );

    let (ok, out, err) = lake(d, &["catalog", "list", "--tags", "plants", "--q", "IRIS"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["items"][0]["id"], id.as_str());

    let (ok, out, err) = lake(
        d,
        &[
            "promote",
            &id,
            "--to",
            "processed",
            "--notes",
            "from the CLI",
        ],
    );
    assert!(ok, "{err}");
    let target = json(&out)["id"].as_str().expect("id").to_owned();
    let (ok, _, err) = lake(d, &["promote", &id, "--to", "archive"]);
    assert!(!ok && err.contains("adjacent"), "{err}");

    let (ok, out, _) = lake(d, &["lineage", &target]);
    assert!(ok);
    let l = json(&out);
    assert_eq!(l["ancestors"], serde_json::json!([id]));
    assert!(
        l["entries"]
            .as_array()
            .expect("entries")
            .iter()
            .any(|e| e["notes"] == "from the CLI")
    );
    let (ok, out, _) = lake(d, &["lineage", &id, "--graph"]);
    assert!(ok);
    assert_eq!(json(&out)["edges"][0]["to"], target.as_str());

    let (ok, _, err) = lake(d, &["catalog", "delete", &id]);
    assert!(!ok && err.contains("never deleted"), "{err}");
    let (ok, out, _) = lake(d, &["layers"]);
    assert!(ok);
    assert_eq!(json(&out)[0]["datasets"], 1);
    let (ok, out, _) = lake(d, &["catalog", "stats"]);
    assert!(ok);
    assert_eq!(json(&out)["total_datasets"], 2);
}

#[test]
fn plugin_run_parses_a_local_file_and_steps_over_parquet() {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let cache = crate::plugins::shared_cache();
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_lake"))
            .args(args)
            .current_dir(d)
            .env_remove("LAKE_CONFIG")
            .env("LAKE_LOG", "warn")
            .env("LAKE_PLUGINS__CACHE_DIR", &cache)
            .output()
            .expect("run lake");
        (
            out.status.code(),
            json(&String::from_utf8_lossy(&out.stdout)),
        )
    };
    let iris = crate::plugins::shared().join("fixtures/csv/iris.csv");
    let (code, out) = run(&[
        "plugin",
        "run",
        "csv",
        iris.to_str().expect("utf-8"),
        "--out",
        "iris.parquet",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out["plugin"], "csv");
    assert_eq!(out["result"]["rows"], 150);
    assert_eq!(out["result"]["columns"][4]["name"], "species");
    assert!(out["usage"]["peak_memory_bytes"].as_u64().expect("peak") > 0);
    assert!(d.join("iris.parquet").is_file());

    let (code, out) = run(&[
        "plugin",
        "run",
        "select",
        "iris.parquet",
        "--params",
        r#"{"columns": ["species"]}"#,
        "--out",
        "species.parquet",
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out["result"]["rows"], 150);
    assert_eq!(
        out["result"]["columns"].as_array().expect("columns").len(),
        1
    );

    // The caller's mistake: exit code 2 and the plugin's own error.
    let (code, out) = run(&[
        "plugin",
        "run",
        "select",
        "iris.parquet",
        "--params",
        r#"{"columns": ["nope"]}"#,
    ]);
    assert_eq!(code, Some(2), "{out}");
    assert_eq!(out["result"]["error"]["code"], "invalid_params");
}

/// `lake upload`, `lake merge` and `lake save-merged` against a running server.
#[test]
fn upload_merge_and_save_through_a_running_lake() {
    let (_server, url, _dir) = crate::walkthrough::start(&[]);
    let work = tempfile::tempdir().expect("tempdir");
    let d = work.path();
    let fixtures = crate::walkthrough::repo_root().join("tests/fixtures");
    let samples = fixtures.join("samples.csv");
    let expression = fixtures.join("expression.csv");
    let missing = d.join("missing.csv");
    let args = |a: &[&str]| -> Vec<String> {
        a.iter()
            .map(|s| (*s).to_owned())
            .chain(["--server".to_owned(), url.clone()])
            .collect()
    };
    let run = |a: Vec<String>| {
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        lake(d, &refs)
    };

    // Every file is tried; the missing one fails the command and is named.
    let (ok, out, err) = run(args(&[
        "upload",
        samples.to_str().expect("path"),
        missing.to_str().expect("path"),
        expression.to_str().expect("path"),
    ]));
    assert!(!ok, "a missing file fails the command");
    assert!(err.contains("missing.csv"), "{err}");
    let lines: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_eq!(lines[0]["rows"], 6, "{out}");
    assert_eq!(lines[1]["rows"], 8, "{out}");
    let (s, e) = (
        lines[0]["file_id"].as_str().expect("id"),
        lines[1]["file_id"].as_str().expect("id"),
    );

    // Uploading again is a duplicate, not an error.
    let (ok, out, err) = run(args(&["upload", samples.to_str().expect("path")]));
    assert!(ok, "{err}");
    assert_eq!(json(&out)["duplicate"], true, "{out}");

    let (ok, out, err) = run(args(&[
        "merge",
        e,
        s,
        "--on",
        "sample_id",
        "--preview",
        "2",
    ]));
    assert!(ok, "{err}");
    let m = json(&out);
    assert_eq!(
        (m["rows"].as_u64(), m["preview"].as_array().map(Vec::len)),
        (Some(6), Some(2)),
        "{m}"
    );
    let key = m["cache_key"].as_str().expect("cache key");

    let (ok, out, err) = run(args(&["merge", e, s, "--on", "nope"]));
    assert!(!ok, "{out}");
    assert!(
        err.contains("422") && err.contains("sample_id"),
        "the error lists the columns: {err}"
    );

    let (ok, out, err) = run(args(&[
        "save-merged",
        key,
        "--name",
        "cli merge",
        "--format",
        "csv",
    ]));
    assert!(ok, "{err}");
    let saved = json(&out);
    assert_eq!(saved["rows"], 6, "{saved}");
    assert_eq!(saved["file"]["name"], "cli_merge.csv", "{saved}");

    // No server: a clear message, not a panic.
    let (ok, _, err) = lake(
        d,
        &[
            "upload",
            samples.to_str().expect("path"),
            "--server",
            "http://127.0.0.1:9",
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("no lake answers at http://127.0.0.1:9"),
        "{err}"
    );
}
